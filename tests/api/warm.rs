//! The warm path's own promises: every request still gets a fresh, jailed
//! process; the zygote's state never leaks between requests; a dead zygote is
//! replaced; zygotes are recycled.

use std::sync::OnceLock;

use crate::common::{TestServer, server_config};
use pyexec::sandbox::SandboxMode;
use serde_json::json;

fn warm_config() -> pyexec::gateway::ServerConfig {
    let mut config = server_config();
    config.sandbox.forced_mode = Some(SandboxMode::Warm);
    config
}

fn warm_server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| TestServer::start(warm_config(), true))
}

#[tokio::test]
async fn the_warm_self_test_passes_and_a_zygote_is_running() {
    let health = warm_server().health().await;
    assert_eq!(health["sandbox"]["warm_self_test"]["state"], "passed");
    let state = warm_server().debug_state().await;
    assert_eq!(state["sandbox"]["warm_pool"]["zygotes"], 1);
}

#[tokio::test]
async fn random_generators_are_reseeded_in_every_request() {
    let script = "import random\ndef main():\n    import numpy as np\n    return [random.random(), float(np.random.rand()), np.random.randint(0, 2**31)]";
    let first = warm_server().run(script).await.assert_ok().clone();
    let second = warm_server().run(script).await.assert_ok().clone();
    for i in 0..3 {
        assert_ne!(first[i], second[i], "draw {i} repeated: {first} {second}");
    }
}

#[tokio::test]
async fn a_request_runs_with_normal_scheduling_whatever_its_runner_warmed_up_with() {
    // Runners may warm up as SCHED_IDLE (when the gateway can put them back);
    // a script must never be left there, where any busy CPU starves it.
    let script = "import os\ndef main():\n    return [os.sched_getscheduler(0) == os.SCHED_OTHER, os.nice(0)]";
    for _ in 0..3 {
        let result = warm_server().run(script).await.assert_ok().clone();
        assert_eq!(result, json!([true, 19]));
    }
    // And where the gateway cannot move runners back (a container without
    // CAP_SYS_NICE on the host), runners never go idle in the first place.
    let mut config = warm_config();
    config.sandbox.warm.idle_warm_up = false;
    let server = TestServer::start(config, true);
    for _ in 0..3 {
        let result = server.run(script).await.assert_ok().clone();
        assert_eq!(result, json!([true, 19]));
    }
}

#[tokio::test]
async fn what_one_request_changes_in_the_interpreter_is_gone_in_the_next() {
    let polluter = r#"
import builtins, json, sys, pandas
def main():
    builtins.LEAKED = "secret of request one"
    json.dumps = lambda *a, **k: '"forged"'
    pandas.LEAK = 1
    sys.modules["leaky_module"] = object()
    return "polluted"
"#;
    assert_eq!(warm_server().run(polluter).await.assert_ok(), "polluted");
    let observer = r#"
import builtins, json, sys, pandas
def main():
    return {
        "builtins": hasattr(builtins, "LEAKED"),
        "json": json.dumps([1]),
        "pandas": hasattr(pandas, "LEAK"),
        "module": "leaky_module" in sys.modules,
    }
"#;
    assert_eq!(
        warm_server().run(observer).await.assert_ok(),
        &json!({"builtins": false, "json": "[1]", "pandas": false, "module": false})
    );
}

#[tokio::test]
async fn a_runner_cannot_make_new_namespaces_or_mounts() {
    let script = r#"
import ctypes, os
def main():
    libc = ctypes.CDLL(None, use_errno=True)
    results = {}
    results["unshare_user"] = libc.unshare(0x10000000) == 0
    results["mount"] = libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None) == 0
    status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
    results["caps"] = [status[k].strip() for k in ("CapEff", "CapPrm", "CapBnd")]
    results["pid"] = os.getpid()
    return results
"#;
    let result = warm_server().run(script).await.assert_ok().clone();
    assert_eq!(result["unshare_user"], false);
    assert_eq!(result["mount"], false);
    assert_eq!(
        result["caps"],
        json!(["0000000000000000", "0000000000000000", "0000000000000000"])
    );
    assert_eq!(result["pid"], 1);
}

#[tokio::test]
async fn a_killed_zygote_costs_no_later_request() {
    let server = TestServer::start(warm_config(), true);
    let before = server.debug_state().await;
    let pid = before["sandbox"]["warm_pool"]["zygote_pids"][0]
        .as_i64()
        .unwrap();
    // SAFETY: kill(2) on the zygote supervisor this test's server started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    // The first request may see the zygote die under it (503); every later
    // one succeeds, on a runner the dying zygote handed over while it was
    // still alive or on a new zygote, which the pool starts once it sees
    // the old one gone.
    let mut answers = Vec::new();
    for _ in 0..40 {
        answers.push(server.run("def main():\n    return 'served'").await);
        let started =
            server.debug_state().await["sandbox"]["warm_pool"]["zygotes_started"].as_u64();
        if answers.len() >= 3 && started >= Some(2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for r in &answers[1..] {
        assert_eq!(r.assert_ok(), "served");
    }
    assert!(answers[0].status == 200 || answers[0].status == 503);
    let after = server.debug_state().await;
    let pool = &after["sandbox"]["warm_pool"];
    assert!(pool["zygotes_started"].as_u64().unwrap() >= 2, "{pool}");
    assert_ne!(pool["zygote_pids"][0].as_i64().unwrap(), pid);
}

#[tokio::test]
async fn zygotes_are_recycled_after_their_run_budget() {
    let mut config = warm_config();
    config.sandbox.warm.recycle_after_runs = 2;
    let server = TestServer::start(config, true);
    for i in 0..5 {
        let r = server
            .execute(json!({"script": "def main(i):\n    return i", "args": {"i": i}}))
            .await;
        assert_eq!(r.assert_ok(), &json!(i));
    }
    let pool = server.debug_state().await["sandbox"]["warm_pool"].clone();
    assert!(pool["zygotes_started"].as_u64().unwrap() >= 3, "{pool}");
    assert_eq!(pool["zygote_failures"], 0, "{pool}");
}

#[tokio::test]
async fn concurrent_runners_cannot_reach_each_other_over_sockets() {
    // Runners share the zygote's network namespace: only unix sockets are
    // made (the corpus's abstract_unix_socket case shows they cannot meet
    // another run's), and socketpair (local to one run) keeps working.
    let script = r#"
import socket
def main():
    outcomes = {}
    for name, family, kind in [("tcp", socket.AF_INET, socket.SOCK_STREAM), ("udp", socket.AF_INET, socket.SOCK_DGRAM), ("unix", socket.AF_UNIX, socket.SOCK_STREAM)]:
        try:
            s = socket.socket(family, kind)
            s.close()
            outcomes[name] = "created"
        except OSError as e:
            outcomes[name] = type(e).__name__
    a, b = socket.socketpair()
    a.sendall(b"ping")
    outcomes["socketpair"] = b.recv(4).decode()
    return outcomes
"#;
    assert_eq!(
        warm_server().run(script).await.assert_ok(),
        &json!({"tcp": "PermissionError", "udp": "PermissionError", "unix": "created", "socketpair": "ping"})
    );
}

#[tokio::test]
async fn runners_made_for_waiting_requests_are_as_fresh_as_any() {
    // Under a burst the pool runs dry; a runner made for a request that
    // already waits skips the warm-up, and must still be reseeded and
    // answer exactly what a warmed-up one does.
    let server = &TestServer::start(warm_config(), true);
    let mut draws = std::collections::HashSet::new();
    for burst in 0..5 {
        let requests = (0..32).map(|i| {
            // Distinct texts: identical scripts would be answered from the cache.
            let script = format!(
                "# burst {burst}, request {i}\nimport pandas as pd, numpy as np\ndef main():\n    \
                 frame = pd.DataFrame({{'values': np.arange(1, 11)}})\n    \
                 return [float(frame['values'].mean()), int(np.random.randint(0, 2**62))]"
            );
            async move { server.run(&script).await }
        });
        for response in futures_util::future::join_all(requests).await {
            let result = response.assert_ok();
            assert_eq!(result[0], json!(5.5));
            assert!(
                draws.insert(result[1].as_u64().unwrap()),
                "a draw repeated: {result}"
            );
        }
        let pool = server.debug_state().await["sandbox"]["warm_pool"].clone();
        if pool["runs_that_waited_for_a_runner"].as_u64().unwrap() > 0 {
            return;
        }
    }
    panic!("five bursts of 32 never found the pool empty");
}
