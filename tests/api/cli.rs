//! `pyexec run`: the same sandbox and JSON as the API, with exit codes.

use std::process::Command;

fn pyexec_run(script: &str, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("script.py");
    std::fs::write(&file, script).unwrap();
    let config = crate::common::sandbox_config();
    let output = Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .arg("--log-format=json")
        .arg("run")
        .arg(&file)
        .args(["--nsjail".as_ref(), config.nsjail_bin.as_os_str()])
        .args(["--python".as_ref(), config.python_bin.as_os_str()])
        .args(["--nsjail-dir".as_ref(), config.nsjail_dir.as_os_str()])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (
        output.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn run_prints_the_api_json_and_exits_0_on_success() {
    let (code, json, stderr) = pyexec_run(
        "def main(n):\n    print('hi')\n    return {'double': n * 2}",
        &["--args", r#"{"n": 4}"#],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json["result"]["double"], 8);
    assert_eq!(json["stdout"], "hi\n");
}

#[test]
fn run_exits_1_with_the_problem_on_a_script_error() {
    let (code, json, _) = pyexec_run("def main():\n    raise KeyError('k')", &[]);
    assert_eq!(code, 1);
    assert!(json["type"].as_str().unwrap().ends_with("runtime-error"));
    let (code, json, _) = pyexec_run(
        "import time\ndef main():\n    time.sleep(10)",
        &["--timeout-ms", "500"],
    );
    assert_eq!(code, 1);
    assert!(json["type"].as_str().unwrap().ends_with("timeout"));
}

#[test]
fn run_exits_2_on_usage_errors_and_a_missing_sandbox() {
    let (code, _, _) = pyexec_run("def main():\n    return 1", &["--args", "not json"]);
    assert_eq!(code, 2);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.py");
    std::fs::write(&file, "def main():\n    return 1").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .args([
            "run",
            file.to_str().unwrap(),
            "--nsjail",
            "/nonexistent/nsjail",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nsjail is not at"));
}

fn pyexec(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn policy_check_accepts_the_shipped_examples_and_names_file_field_and_reason() {
    let repo = crate::common::repo_path("");
    let policies = repo.join("policies");
    let nsjail = repo.join("nsjail");
    let output = pyexec(&[
        "policy",
        "check",
        policies.to_str().unwrap(),
        "--nsjail-dir",
        nsjail.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{output:?}");
    let dir = crate::common::PolicyDir::new();
    dir.write(
        "broken",
        &crate::common::tenant_yaml(
            "broken",
            "k",
            "  rateLimit: {requestsPerSecond: 5, brust: 1}\n",
        ),
    );
    let output = pyexec(&["policy", "check", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("broken.yaml: spec.rateLimit: unknown field `brust`"),
        "{stderr}"
    );
}

#[test]
fn keys_new_prints_a_key_and_the_hash_to_paste() {
    let output = pyexec(&["keys", "new", "--tenant", "acme"]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let key = stdout
        .split_whitespace()
        .find(|w| w.starts_with("pyx_"))
        .unwrap();
    let hash = hex::encode(pyexec::tenants::hash_api_key(key));
    assert!(stdout.contains(&format!("- sha256: {hash}")), "{stdout}");
}

#[tokio::test]
async fn token_mints_an_hs256_jwt_the_server_accepts() {
    let dir = crate::common::PolicyDir::new();
    dir.write_file("secret", b"a-local-hmac-secret-that-is-long-enough-1234");
    dir.write(
        "local",
        "apiVersion: pyexec.dev/v1\nkind: Tenant\nmetadata:\n  name: local\nspec:\n  auth:\n    jwt:\n      issuer: local-dev\n      algorithms: [HS256]\n      hmacSecretFile: secret\n",
    );
    let policies = dir.path().to_str().unwrap();
    let output = pyexec(&[
        "token",
        "--tenant",
        "local",
        "--ttl",
        "1h",
        "--policies",
        policies,
    ]);
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert_eq!(token.split('.').count(), 3);

    let server =
        crate::common::TestServer::start(crate::common::policy_server_config(dir.path()), true);
    server
        .execute_with_key(
            serde_json::json!({"script": "def main():\n    return 7"}),
            &token,
        )
        .await
        .assert_ok();

    let output = pyexec(&["token", "--tenant", "nobody", "--policies", policies]);
    assert_eq!(output.status.code(), Some(2));
}

/// A person running one script gets its answer alone: no log lines unless
/// `-v` asks for them.
#[test]
fn run_is_quiet_unless_verbose() {
    let script = "def main():\n    return 1";
    let (code, json, stderr) = pyexec_run(script, &[]);
    assert_eq!((code, json["result"].clone()), (0, serde_json::json!(1)));
    assert_eq!(stderr, "", "stderr holds log lines");
    let (code, json, stderr) = pyexec_run(script, &["-v"]);
    assert_eq!((code, json["result"].clone()), (0, serde_json::json!(1)));
    assert!(stderr.contains("\"severity\":\"INFO\""), "{stderr}");
}

/// `--policies DIR --tenant T` runs with that tenant's limits, so an operator
/// can reproduce a tenant's failure locally.
#[test]
fn run_applies_a_tenants_policy_when_asked() {
    let dir = crate::common::PolicyDir::new();
    dir.write(
        "tight",
        &crate::common::tenant_yaml(
            "tight",
            "pyx_tight_cli_key",
            "  sandbox:\n    wallTimeoutMs: 1000\n",
        ),
    );
    let script = "import time\ndef main():\n    time.sleep(3)\n    return 'slept'";
    let policies = dir.path().to_str().unwrap();
    let (code, json, stderr) = pyexec_run(script, &["--policies", policies, "--tenant", "tight"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        json["type"].as_str().unwrap().ends_with("/timeout"),
        "{json}"
    );
    // Without it, the built-in tenant's 30 s limit lets the script finish.
    let (code, json, _) = pyexec_run(script, &[]);
    assert_eq!(
        (code, json["result"].clone()),
        (0, serde_json::json!("slept"))
    );
    let (code, _, stderr) = pyexec_run(script, &["--policies", policies, "--tenant", "nobody"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no tenant `nobody`"), "{stderr}");
}

/// Every flag of every command says what it is for in `--help`.
#[test]
fn every_flag_has_help_text() {
    for command in [
        &["serve"][..],
        &["run"],
        &["policy", "check"],
        &["keys", "new"],
        &["token"],
    ] {
        let output = pyexec(&[command, &["--help"]].concat());
        let help = String::from_utf8_lossy(&output.stdout).to_string();
        let options = help.split("Options:").nth(1).expect("an Options section");
        let mut lines = options.lines().filter(|l| !l.trim().is_empty()).peekable();
        while let Some(line) = lines.next() {
            let flag = line.trim_start();
            if !flag.starts_with('-') {
                continue;
            }
            // The help is on the flag's line, or (long help) on the next.
            let described = flag.contains("  ")
                || lines
                    .peek()
                    .is_some_and(|next| !next.trim_start().starts_with('-'));
            assert!(described, "{command:?}: `{flag}` has no help text");
        }
    }
}

/// `--listen` takes host names, and a port in use is one clear line that
/// names the address.
#[test]
fn serve_listens_on_host_names_and_names_an_address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = crate::common::sandbox_config();
    let output = Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .args(["--log-format=text", "serve", "--listen"])
        .arg(addr.to_string())
        // A host name is accepted (resolved at start).
        .args(["--metrics-listen", "localhost:0"])
        .args(["--nsjail-dir".as_ref(), config.nsjail_dir.as_os_str()])
        .env("PYEXEC_API_KEY", crate::common::API_KEY)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let about: Vec<&str> = all.lines().filter(|l| l.contains("in use")).collect();
    assert_eq!(about.len(), 1, "{all}");
    assert!(about[0].contains(&addr.to_string()), "{}", about[0]);
    let refused = pyexec(&["serve", "--listen", "no-such-host.invalid:80"]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("expected HOST:PORT"), "{stderr}");
}

#[test]
fn run_takes_input_files_and_writes_the_returned_files_into_out() {
    let data = tempfile::tempdir().unwrap();
    let csv = data.path().join("sales.csv");
    std::fs::write(&csv, "amount\n10\n32\n").unwrap();
    let out = data.path().join("results");
    let (code, json, stderr) = pyexec_run(
        r#"
import os
import pandas as pd

def main():
    total = int(pd.read_csv("sales.csv").amount.sum()) + int(pd.read_csv("in/again.csv").amount.sum())
    os.makedirs("/tmp/out/nested", exist_ok=True)
    open("/tmp/out/nested/total.txt", "w").write(str(total))
    open("/tmp/out/raw.bin", "wb").write(bytes([0, 255, 10]))
    return total
"#,
        &[
            "--file",
            csv.to_str().unwrap(),
            "--file",
            &format!("{}=in/again.csv", csv.display()),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json["result"], 84);
    assert_eq!(
        std::fs::read_to_string(out.join("nested/total.txt")).unwrap(),
        "84"
    );
    assert_eq!(std::fs::read(out.join("raw.bin")).unwrap(), [0, 255, 10]);

    // A path the API refuses is refused here the same way, before any run.
    let (code, json, _) = pyexec_run(
        "def main():\n    return 1",
        &["--file", &format!("{}=../escape.csv", csv.display())],
    );
    assert_eq!(code, 2);
    assert!(json["type"].as_str().unwrap().ends_with("invalid-request"));
}
