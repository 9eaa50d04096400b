//! Files in and out of a run, in the suite's mode: input files written under
//! the run's `/tmp` before `main()`, every regular file left in `/tmp/out`
//! returned byte-exact, and the limits, bad paths and hostile files a script
//! or a client can try.

use crate::common::{PolicyDir, TestServer, policy_server_config, server, tenant_yaml};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn file(path: &str, bytes: &[u8]) -> Value {
    json!({"path": path, "content": b64(bytes)})
}

/// The returned files as (path, size, decoded bytes).
fn returned(body: &Value) -> Vec<(String, u64, Vec<u8>)> {
    body["files"]
        .as_array()
        .expect("`files` is always a list")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap(),
                STANDARD.decode(f["content"].as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_csv_in_nested_folders_is_read_by_pandas() {
    let script = r#"
import pandas as pd

def main():
    sales = pd.read_csv("data/2026/sales.csv")
    notes = open("notes.txt").read()
    return {"total": int(sales["amount"].sum()), "rows": len(sales), "notes": notes}
"#;
    let r = server()
        .execute(json!({"script": script, "files": [
            file("./data//2026/sales.csv", b"region,amount\nnorth,10\nsouth,32\n"),
            file("notes.txt", "café\n".as_bytes()),
        ]}))
        .await;
    assert_eq!(
        r.assert_ok(),
        &json!({"total": 42, "rows": 2, "notes": "café\n"})
    );
    assert_eq!(r.body["files"], json!([]), "nothing was left in /tmp/out");
}

#[tokio::test]
async fn a_csv_and_a_binary_file_come_back_byte_exact_and_sorted() {
    let script = r#"
import os
import pandas as pd

def main():
    frame = pd.DataFrame({"n": [1, 2, 3], "square": [1, 4, 9]})
    frame.to_csv("/tmp/out/table.csv", index=False)
    os.makedirs("/tmp/out/bin", exist_ok=True)
    with open("/tmp/out/bin/all-bytes", "wb") as f:
        f.write(bytes(range(256)) * 3)
    open("/tmp/out/empty", "w").close()
    open("/tmp/scratch.txt", "w").write("not returned: outside /tmp/out")
    return "written"
"#;
    let r = server().execute(json!({"script": script})).await;
    assert_eq!(r.assert_ok(), &json!("written"));
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(768).collect();
    assert_eq!(
        returned(&r.body),
        vec![
            ("bin/all-bytes".to_string(), 768, all_bytes),
            ("empty".to_string(), 0, vec![]),
            (
                "table.csv".to_string(),
                21,
                b"n,square\n1,1\n2,4\n3,9\n".to_vec()
            ),
        ]
    );
}

#[tokio::test]
async fn bad_paths_and_bad_base64_are_refused_naming_the_file() {
    let script = "def main():\n    return 1";
    let deep = "a/b/c/d/e/f/g/h/i.csv";
    let long = format!("{}.csv", "n".repeat(252));
    let cases = [
        (json!([{"path": "../escape", "content": ""}]), "files[0]"),
        (json!([{"path": "/etc/passwd", "content": ""}]), "files[0]"),
        (json!([{"path": "a/../../x", "content": ""}]), "files[0]"),
        (json!([{"path": "a\u{0}b", "content": ""}]), "files[0]"),
        (json!([{"path": "", "content": ""}]), "files[0]"),
        (json!([{"path": "./", "content": ""}]), "files[0]"),
        (json!([{"path": deep, "content": ""}]), "files[0]"),
        (json!([{"path": long, "content": ""}]), "files[0]"),
        (
            json!([file("ok", b""), {"path": "x", "content": "not base64!"}]),
            "`x`",
        ),
        (json!([{"path": "x", "content": "aGVsbG8"}]), "`x`"),
        (json!([{"path": "x"}]), "`x`"),
        (
            json!([{"path": "x", "content": "", "mode": 755}]),
            "files[0]",
        ),
        (
            json!([file("a.csv", b"1"), file("./a.csv", b"2")]),
            "`a.csv`",
        ),
        (json!([file("a", b"1"), file("a/b", b"2")]), "`a/b`"),
        (json!([file("a/b", b"1"), file("a", b"2")]), "`a`"),
        (json!([file("out", b"")]), "`out`"),
        (json!(["data.csv"]), "files[0]"),
        (json!({"path": "x", "content": ""}), "`files`"),
    ];
    for (files, named) in cases {
        let r = server()
            .execute(json!({"script": script, "files": files}))
            .await;
        r.assert_problem(400, "invalid-request");
        let detail = r.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(named), "{files}: {detail}");
    }
    // The long name is one byte over NAME_MAX; one byte less is a file.
    let r = server()
        .execute(json!({"script": script, "files": [file(&"n".repeat(255), b"")]}))
        .await;
    assert_eq!(r.assert_ok(), &json!(1));
}

#[tokio::test]
async fn input_over_the_tenants_limits_is_413_naming_the_limit() {
    let dir = PolicyDir::new();
    dir.write(
        "small",
        &tenant_yaml(
            "small",
            "small-files-key",
            "  sandbox:\n    maxInputFiles: 2\n    maxInputBytes: 1000\n    fileSizeMiB: 1\n",
        ),
    );
    let server = TestServer::start(policy_server_config(dir.path()), true);
    let script = "import os\ndef main():\n    return sorted(os.listdir('.'))";
    let send = |files: Value| {
        server.execute_with_key(json!({"script": script, "files": files}), "small-files-key")
    };
    let r = send(json!([file("a", b"1"), file("b", b"2")])).await;
    assert_eq!(r.assert_ok(), &json!(["a", "b", "out"]));

    let r = send(json!([file("a", b""), file("b", b""), file("c", b"")])).await;
    r.assert_problem(413, "too-large");
    assert!(r.body["detail"].as_str().unwrap().contains("maxInputFiles"));

    let r = send(json!([file("a", &[7; 600]), file("b", &[7; 600])])).await;
    r.assert_problem(413, "too-large");
    assert!(r.body["detail"].as_str().unwrap().contains("maxInputBytes"));

    // The body limit follows the allowance: a body far over the script and
    // input allowance is refused before it is read whole, saying so.
    let r = send(json!([file("a", &vec![0; 4 << 20])])).await;
    r.assert_problem(413, "too-large");
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("maxInputBytes") || detail.contains("body"),
        "{detail}"
    );
}

#[tokio::test]
async fn output_over_the_limits_is_422_with_the_scripts_stdout() {
    let many = r#"
def main():
    print("writing")
    for i in range(1000):
        open(f"/tmp/out/{i:04}.txt", "w").write("x")
    return "done"
"#;
    let big = r#"
def main():
    print("writing")
    for i in range(3):
        with open(f"/tmp/out/{i}.bin", "wb") as f:
            f.write(b"\0" * (3 << 20))
    return "done"
"#;
    for (script, limit) in [(many, "maxOutputFiles"), (big, "maxOutputFileBytes")] {
        let r = server().execute(json!({"script": script})).await;
        r.assert_problem(422, "output-too-large");
        let detail = r.body["detail"].as_str().unwrap();
        assert!(detail.contains(limit), "{detail}");
        assert_eq!(r.body["stdout"], json!("writing\n"));
    }
    // The service keeps serving the next request.
    let r = server().run("def main():\n    return 'after'").await;
    assert_eq!(r.assert_ok(), &json!("after"));
}

#[tokio::test]
async fn symlinks_and_special_files_in_out_are_never_followed() {
    let script = r#"
import os

def main():
    os.symlink("/etc/passwd", "/tmp/out/passwd")
    os.symlink("/etc", "/tmp/out/etc")
    os.symlink("/proc/self/environ", "/tmp/out/environ")
    os.mkfifo("/tmp/out/fifo")
    open("/tmp/out/real.txt", "w").write("mine")
    return "planted"
"#;
    let r = server().execute(json!({"script": script})).await;
    assert_eq!(r.assert_ok(), &json!("planted"));
    assert_eq!(
        returned(&r.body),
        vec![("real.txt".to_string(), 4, b"mine".to_vec())]
    );
    let text = r.body.to_string();
    assert!(!text.contains("root:"), "{text}");
}

#[tokio::test]
async fn an_output_file_the_script_made_unreadable_is_an_error_not_a_silent_gap() {
    let script = "import os\ndef main():\n    open('/tmp/out/a', 'w').write('x')\n    os.chmod('/tmp/out/a', 0)\n    return 1";
    let r = server().run(script).await;
    r.assert_problem(422, "runtime-error");
    let detail = r.body["detail"].as_str().unwrap();
    assert!(detail.contains("/tmp/out"), "{detail}");
}

#[tokio::test]
async fn one_runs_files_are_absent_from_the_next() {
    let script = r#"
import os

def main():
    seen = sorted(os.listdir("/tmp")) + sorted(os.listdir("/tmp/out"))
    open("/tmp/out/left.txt", "w").write("x")
    open("/tmp/left-behind", "w").write("x")
    return seen
"#;
    let first = server()
        .execute(
            json!({"script": script, "cache": false, "files": [file("secret.csv", b"tenant a")]}),
        )
        .await;
    assert_eq!(first.assert_ok(), &json!(["out", "secret.csv"]));
    for _ in 0..3 {
        let next = server()
            .execute(json!({"script": script, "cache": false}))
            .await;
        assert_eq!(next.assert_ok(), &json!(["out"]));
    }
}

#[tokio::test]
async fn the_cache_keys_on_input_content_and_replays_the_output_files() {
    let dir = PolicyDir::new();
    dir.write(
        "cached",
        &tenant_yaml(
            "cached",
            "cached-files-key",
            "  cache:\n    enabled: true\n",
        ),
    );
    let server = TestServer::start(policy_server_config(dir.path()), true);
    let script = r#"
import random

def main():
    data = open("in.txt").read()
    open("/tmp/out/copy.txt", "w").write(data.upper())
    return {"data": data, "nonce": random.random()}
"#;
    let send = |content: &'static [u8]| {
        server.execute_with_key(
            json!({"script": script, "files": [file("in.txt", content)]}),
            "cached-files-key",
        )
    };
    let a = send(b"alpha").await;
    assert_eq!(a.assert_ok()["data"], json!("alpha"));
    let a_again = send(b"alpha").await;
    assert_eq!(
        a_again.header("x-cache"),
        Some("HIT"),
        "{:?}",
        a_again.headers
    );
    assert_eq!(a_again.body["result"], a.body["result"]);
    assert_eq!(
        returned(&a_again.body),
        vec![("copy.txt".to_string(), 5, b"ALPHA".to_vec())]
    );
    let b = send(b"bravo").await;
    assert_ne!(b.header("x-cache"), Some("HIT"));
    assert_eq!(b.assert_ok()["data"], json!("bravo"));
    assert_eq!(
        returned(&b.body),
        vec![("copy.txt".to_string(), 5, b"BRAVO".to_vec())]
    );
}

#[tokio::test]
async fn one_tenants_large_uploads_hold_at_most_half_the_budget() {
    use tokio::io::AsyncWriteExt;
    let dir = PolicyDir::new();
    dir.write("uploader", &tenant_yaml("uploader", "uploader-key", ""));
    dir.write("neighbour", &tenant_yaml("neighbour", "neighbour-key", ""));
    let mut config = policy_server_config(dir.path());
    config.large_body_buffer_bytes = 4 << 20;
    let server = TestServer::start(config, true);
    let script = "import os\ndef main():\n    return os.path.getsize('big.bin')";
    let big = json!({"script": script, "files": [file("big.bin", &vec![1; 1 << 20])]});

    // The uploader declares a 2.5 MiB body and sends nothing: it holds its
    // whole share (half the budget) until the read timeout.
    let address = server.base.trim_start_matches("http://").to_string();
    let mut held = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = "POST /execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer uploader-key\r\nContent-Type: application/json\r\nContent-Length: 2621440\r\n\r\n{";
    held.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Its next large upload finds no room: 503, nothing read or run.
    let r = server.execute_with_key(big.clone(), "uploader-key").await;
    r.assert_problem(503, "unavailable");
    assert!(r.header("retry-after").is_some());
    // Another tenant's large upload, and its ordinary request, are served.
    let r = server.execute_with_key(big.clone(), "neighbour-key").await;
    assert_eq!(r.assert_ok(), &json!(1 << 20));
    let small = json!({"script": script, "files": [file("big.bin", b"12345")]});
    let r = server.execute_with_key(small, "uploader-key").await;
    assert_eq!(r.assert_ok(), &json!(5));

    // Once the held upload is gone its room is given back.
    drop(held);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = server.execute_with_key(big.clone(), "uploader-key").await;
        if r.status == 200 {
            assert_eq!(r.assert_ok(), &json!(1 << 20));
            break;
        }
        r.assert_problem(503, "unavailable");
        assert!(
            std::time::Instant::now() < deadline,
            "the room never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
