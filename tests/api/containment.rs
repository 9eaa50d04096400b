//! What a script cannot do: every case runs in the real nsjail, and after each
//! the server still serves.

use crate::common::{SpawnedServer, TestServer, server, server_config};
use serde_json::json;

async fn still_serving() {
    let r = server().run("def main():\n    return 'alive'").await;
    assert_eq!(r.assert_ok(), "alive");
}

#[tokio::test]
async fn a_busy_loop_ends_at_the_wall_timeout() {
    let r = server()
        .execute(
            json!({"script": "def main():\n    while True:\n        pass", "timeout_ms": 1500}),
        )
        .await;
    r.assert_problem(422, "timeout");
    still_serving().await;
}

#[tokio::test]
async fn a_fork_bomb_is_bounded_by_the_pids_limit() {
    let script = r#"
import os
def main():
    children = 0
    errors = 0
    for _ in range(200):
        try:
            pid = os.fork()
        except OSError:
            errors += 1
            continue
        if pid == 0:
            import time
            time.sleep(30)
            os._exit(0)
        children += 1
    return {"children": children, "errors": errors}
"#;
    let r = server()
        .execute(json!({"script": script, "timeout_ms": 10000}))
        .await;
    let result = r.assert_ok();
    assert!(result["children"].as_u64().unwrap() < 32, "{result}");
    assert!(result["errors"].as_u64().unwrap() > 150, "{result}");
    still_serving().await;
}

#[tokio::test]
async fn the_network_is_unreachable_including_the_gateways_own_port() {
    let port = server().base.rsplit(':').next().unwrap().to_string();
    let script = format!(
        r#"
import socket
def main():
    results = {{}}
    for name, addr in [("gateway", ("127.0.0.1", {port})), ("public", ("8.8.8.8", 53)), ("metadata", ("169.254.169.254", 80))]:
        try:
            s = socket.socket()
            s.settimeout(2)
            s.connect(addr)
            results[name] = "connected"
        except OSError as e:
            results[name] = type(e).__name__
    try:
        socket.getaddrinfo("example.com", 80)
        results["dns"] = "resolved"
    except OSError as e:
        results["dns"] = type(e).__name__
    import os
    results["interfaces"] = sorted(os.listdir("/sys/class/net")) if os.path.exists("/sys/class/net") else []
    return results
"#
    );
    let r = server().run(&script).await;
    let result = r.assert_ok();
    for name in ["gateway", "public", "metadata", "dns"] {
        assert_ne!(result[name], "connected", "{name}: {result}");
        assert_ne!(result[name], "resolved", "{name}: {result}");
    }
    still_serving().await;
}

#[tokio::test]
async fn writes_outside_tmp_fail_and_inside_tmp_succeed() {
    let script = r#"
def main():
    outcomes = {}
    for path in ["/etc/hosts", "/etc/resolv.conf", "/usr/evil", "/evil", "/opt/pyexec/python/evil", "/proc/sys/kernel/hostname", "/tmp/ok"]:
        try:
            with open(path, "w") as f:
                f.write("x")
            outcomes[path] = "written"
        except OSError as e:
            outcomes[path] = type(e).__name__
    return outcomes
"#;
    let result = server().run(script).await.assert_ok().clone();
    assert_eq!(result["/tmp/ok"], "written");
    for (path, outcome) in result.as_object().unwrap() {
        if path != "/tmp/ok" {
            assert_ne!(outcome, "written", "{path} was writable");
        }
    }
}

#[tokio::test]
async fn the_environment_is_built_from_scratch() {
    assert_eq!(
        std::env::var("PYEXEC_TEST_SECRET_CANARY").as_deref(),
        Ok("canary-value"),
        "the gateway's environment must hold the canary (.cargo/config.toml sets it)"
    );
    let script = r#"
import os
def main():
    return dict(os.environ)
"#;
    let result = server().run(script).await.assert_ok().clone();
    let env = result.as_object().unwrap();
    assert_eq!(env["HOME"], "/tmp");
    assert!(!result.to_string().contains("canary-value"));
    assert!(!result.to_string().contains(crate::common::API_KEY));
    for name in env.keys() {
        assert!(
            !name.starts_with("PYEXEC") && !name.contains("KEY") && !name.contains("TOKEN"),
            "{name} leaked into the jail"
        );
    }
}

#[tokio::test]
async fn tmp_is_not_shared_between_two_runs() {
    // A run's /tmp starts with only the empty folder of output files.
    let write = "def main():\n    open('/tmp/left-behind', 'w').write('secret')\n    import os\n    return sorted(os.listdir('/tmp'))";
    assert_eq!(
        server().run(write).await.assert_ok(),
        &json!(["left-behind", "out"])
    );
    let read = "import os\ndef main():\n    return os.listdir('/tmp'), os.listdir('/tmp/out')";
    assert_eq!(server().run(read).await.assert_ok(), &json!([["out"], []]));
}

#[tokio::test]
async fn the_script_runs_unprivileged_with_no_capabilities_and_no_new_privs() {
    let script = r#"
def main():
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    import os
    return {k: status[k].strip() for k in ["Uid", "CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp"]} | {"pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}
"#;
    let result = server().run(script).await.assert_ok().clone();
    assert!(result["Uid"].as_str().unwrap().starts_with("65534"));
    assert_eq!(result["CapEff"], "0000000000000000");
    assert_eq!(result["CapPrm"], "0000000000000000");
    assert_eq!(result["NoNewPrivs"], "1");
    // Its own pid namespace: only the script itself is visible.
    assert_eq!(result["pids"], json!([1]));
}

#[tokio::test]
async fn host_files_and_the_gateways_folder_are_invisible() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let script = format!(
        r#"
import os
def main():
    return {{p: os.path.exists(p) for p in ["{repo}", "/root", "/home", "/var", "/etc/shadow", "/sys", "/opt/pyexec/bin/nsjail", "/pyexec/harness.py"]}}
"#
    );
    let result = server().run(&script).await.assert_ok().clone();
    for (path, exists) in result.as_object().unwrap() {
        let expected = path == "/pyexec/harness.py";
        assert_eq!(exists, expected, "{path}");
    }
}

#[tokio::test]
async fn output_floods_are_truncated_and_flagged() {
    let script = "import sys\ndef main():\n    sys.stdout.write('x' * (3 * 1024 * 1024))\n    sys.stderr.write('y' * (2 * 1024 * 1024))\n    return 'done'";
    let r = server().run(script).await;
    assert_eq!(r.assert_ok(), "done");
    assert_eq!(r.body["stdout"].as_str().unwrap().len(), 1024 * 1024);
    assert_eq!(r.body["stdout_truncated"], true);
    assert_eq!(r.body["stderr_truncated"], true);
}

#[tokio::test]
async fn escaped_output_is_capped_as_it_goes_on_the_wire() {
    // Each control character is six bytes in JSON (`\u0001`): the cap
    // counts those, so 1 MiB of them cannot become a 6 MiB answer.
    let script =
        "import sys\ndef main():\n    sys.stdout.write('\\x01' * (1024 * 1024))\n    return 'done'";
    let r = server().run(script).await;
    assert_eq!(r.assert_ok(), "done");
    let stdout = r.body["stdout"].as_str().unwrap();
    assert!(stdout.chars().all(|c| c == '\u{1}') && !stdout.is_empty());
    let on_the_wire = serde_json::to_string(stdout).unwrap().len() - 2;
    assert!(on_the_wire <= 1024 * 1024, "{on_the_wire} escaped bytes");
    assert!(on_the_wire > 1024 * 1024 - 6);
    assert_eq!(r.body["stdout_truncated"], true);
}

#[tokio::test]
async fn concurrent_runs_beyond_the_slots_queue_and_all_finish() {
    let runs = (0..10).map(|i| async move {
        server()
            .execute(json!({"script": "import time\ndef main(i):\n    time.sleep(0.3)\n    return i", "args": {"i": i}}))
            .await
    });
    let responses = futures_util::future::join_all(runs).await;
    for (i, r) in responses.iter().enumerate() {
        assert_eq!(r.assert_ok(), &json!(i));
    }
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let mut config = server_config();
    config.sandbox.max_concurrent = 1;
    config.sandbox.max_queued = 0;
    let small = TestServer::start(config, true);
    let slow = json!({"script": "import time\ndef main():\n    time.sleep(3)\n    return 1"});
    let first = small.execute(slow.clone());
    let second = async {
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        small.execute(slow.clone()).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.assert_ok(), 1);
    second.assert_problem(503, "unavailable");
    assert!(second.header("retry-after").is_some());
}

#[tokio::test]
async fn without_nsjail_nothing_runs_and_the_server_says_why() {
    let mut config = server_config();
    config.sandbox.nsjail_bin = "/nonexistent/nsjail".into();
    let broken = TestServer::start(config, false);
    let health = crate::common::Response::read(
        broken
            .client
            .get(broken.url("/health"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(health.status, 503);
    assert_eq!(health.body["nsjail"], false);
    // No script ran, so nothing is known of the jail's Python or /tmp.
    assert_eq!(health.body["python"], "unknown");
    assert_eq!(health.body["temp_writable"], "unknown");
    assert!(
        health.body["sandbox"]["problems"][0]
            .as_str()
            .unwrap()
            .contains("nsjail is not at")
    );
    let ready = broken
        .client
        .get(broken.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let r = broken.run("def main():\n    return 1").await;
    r.assert_problem(503, "unavailable");
    assert!(!r.body.to_string().contains("/nonexistent"));
}

#[tokio::test]
async fn a_request_abandoned_by_its_client_leaves_no_run_behind() {
    let server = TestServer::start(server_config(), true);
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(1500))
        .build()
        .unwrap();
    let abandoned = impatient
        .post(server.url("/execute"))
        .bearer_auth(crate::common::API_KEY)
        .json(&json!({"script": "import time\ndef main():\n    time.sleep(25)"}))
        .send()
        .await;
    assert!(abandoned.is_err(), "the client gave up first");
    // The server drops the request with its connection; the run's processes
    // and cgroup go with it instead of sleeping on to the wall-clock limit.
    let sandbox = server.sandbox.as_ref().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !sandbox.live_run_cgroups().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned run is still there: {:?}",
            sandbox.live_run_cgroups()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// What a `pyexec serve` with host pid `pid` has on the host: its cgroups in
/// any hierarchy, processes inside them, its jail-files folder.
fn traces_of_server(pid: i32) -> Vec<String> {
    let prefix = format!("pyexec-{pid}-");
    let mut found = Vec::new();
    let mut dirs = vec![(std::path::PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_dir && name.starts_with(&prefix) {
                found.push(format!("cgroup {}", entry.path().display()));
            } else if is_dir && depth < 4 {
                dirs.push((entry.path(), depth + 1));
            }
        }
    }
    let marker = format!("/{prefix}");
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cgroups = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if cgroups.contains(&marker) {
            found.push(format!("process {}", entry.file_name().to_string_lossy()));
        }
    }
    let jail_files = format!("pyexec-jail-{pid}-");
    for entry in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(&jail_files) {
            found.push(format!("folder {}", entry.path().display()));
        }
    }
    found
}

/// A real server that has run a script (so its warm pool, when the mode is
/// warm, is full of waiting runners in groups of their own).
async fn server_that_has_run_a_script() -> SpawnedServer {
    let server = SpawnedServer::start(&[]);
    let r = server
        .api
        .run("import pandas\ndef main():\n    return len(pandas.DataFrame({'a': [1, 2]}))")
        .await;
    assert_eq!(r.assert_ok(), 2);
    assert!(
        !traces_of_server(server.pid()).is_empty(),
        "a serving server has cgroups, or this check sees nothing"
    );
    server
}

#[tokio::test]
async fn a_server_stopped_with_sigterm_leaves_no_cgroup_process_or_folder() {
    let mut server = server_that_has_run_a_script().await;
    server.sigterm();
    assert!(server.wait_exit().success());
    assert_eq!(traces_of_server(server.pid()), Vec::<String>::new());
}

#[tokio::test]
async fn a_crashed_server_leaves_no_process_and_the_next_start_removes_its_cgroups() {
    let mut crashed = server_that_has_run_a_script().await;
    crashed.sigkill();
    crashed.wait_exit();
    let pid = crashed.pid();
    // The jails end with the gateway's sockets and pipes; give them a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let processes = || -> Vec<String> {
        traces_of_server(pid)
            .into_iter()
            .filter(|t| t.starts_with("process"))
            .collect()
    };
    while !processes().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(processes(), Vec::<String>::new());
    let mut next = SpawnedServer::start(&[]);
    assert_eq!(traces_of_server(pid), Vec::<String>::new());
    next.sigterm();
    next.wait_exit();
}
