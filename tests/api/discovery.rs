//! `GET /runtime` and `GET /usage`: each answers the caller's own tenant,
//! from the real jail's Python and the quota's own store, and nothing to a
//! caller without a credential.

use crate::common::{
    API_KEY, PolicyDir, TestServer, forced_mode_from_env, policy_server_config, server, tenant_yaml,
};
use pyexec::sandbox::SandboxMode;
use serde_json::json;

const SMALL_KEY: &str = "pyx_discovery_small_tenant_key";
const OTHER_KEY: &str = "pyx_discovery_other_tenant_key";

#[tokio::test]
async fn runtime_lists_the_jails_python_and_packages_as_a_script_sees_them() {
    let r = server().get("/runtime", Some(API_KEY)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // What a script in the jail reports is what /runtime says.
    let seen = server()
        .run("import platform, numpy, pandas\ndef main():\n    return [platform.python_version(), numpy.__version__, pandas.__version__]")
        .await;
    let seen = seen.assert_ok();
    assert_eq!(r.body["python"], seen[0]);
    let version_of = |name: &str| {
        r.body["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["version"].clone())
    };
    assert_eq!(version_of("numpy"), Some(seen[1].clone()));
    assert_eq!(version_of("pandas"), Some(seen[2].clone()));
    let names: Vec<&str> = r.body["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    // Preloaded only where a warm interpreter does the preloading.
    match forced_mode_from_env() {
        Some(SandboxMode::Cold) => {
            assert_eq!(r.body["mode"], "cold");
            assert_eq!(r.body["preloaded"], json!([]));
        }
        _ => {
            assert_eq!(r.body["mode"], "warm");
            assert_eq!(r.body["preloaded"], json!(["numpy", "pandas"]));
        }
    }
    assert_eq!(r.body["limits"]["wallTimeoutMs"], 30000);
    assert_eq!(r.body["limits"]["maxInputFiles"], 64);
}

#[tokio::test]
async fn each_tenant_sees_its_own_limits_and_usage_and_a_stranger_sees_nothing() {
    let dir = PolicyDir::new();
    dir.write(
        "small",
        &tenant_yaml(
            "small",
            SMALL_KEY,
            "  sandbox:\n    memoryMiB: 128\n    wallTimeoutMs: 5000\n    maxInputFiles: 3\n  quota:\n    executionsPerDay: 5\n    cpuSecondsPerDay: 60\n",
        ),
    );
    dir.write("other", &tenant_yaml("other", OTHER_KEY, ""));
    let server = TestServer::start(policy_server_config(dir.path()), true);

    let small = server.get("/runtime", Some(SMALL_KEY)).await;
    assert_eq!(small.status, 200, "{}", small.body);
    assert_eq!(small.body["limits"]["memoryMiB"], 128);
    assert_eq!(small.body["limits"]["wallTimeoutMs"], 5000);
    assert_eq!(small.body["limits"]["maxInputFiles"], 3);
    let other = server.get("/runtime", Some(OTHER_KEY)).await;
    assert_eq!(other.body["limits"]["memoryMiB"], 256);
    // Nothing names a tenant: the caller knows which one it is.
    assert!(!small.body.to_string().contains("small"));

    for _ in 0..2 {
        let r = server
            .execute_with_key(
                json!({"script": "def main():\n    return sum(range(10**6))", "cache": false}),
                SMALL_KEY,
            )
            .await;
        r.assert_ok();
    }
    let usage = server.get("/usage", Some(SMALL_KEY)).await;
    assert_eq!(usage.status, 200, "{}", usage.body);
    assert_eq!(
        usage.body["executions"],
        json!({"used": 2, "limit": 5, "remaining": 3})
    );
    let cpu = &usage.body["cpu_seconds"];
    assert!(
        cpu["used"].as_f64().unwrap() > 0.0,
        "{usage:?}",
        usage = usage.body
    );
    assert_eq!(cpu["limit"], 60);
    let day = usage.body["day"].as_str().unwrap();
    let resets_at = usage.body["resets_at"].as_str().unwrap();
    assert_eq!(day.len(), 10);
    assert!(
        resets_at.ends_with("T00:00:00Z") && resets_at[..10] > *day,
        "{resets_at}"
    );

    // Another tenant's counters are its own; without limits it has none.
    let other = server.get("/usage", Some(OTHER_KEY)).await;
    assert_eq!(other.body["executions"], json!({"used": 0}));
    assert_eq!(other.body["cpu_seconds"], json!({"used": 0.0}));

    for path in ["/runtime", "/usage"] {
        let r = server.get(path, None).await;
        r.assert_problem(401, "unauthorized");
        assert!(r.header("www-authenticate").is_some());
        let r = server.get(path, Some("pyx_not_a_key")).await;
        r.assert_problem(401, "unauthorized");
        assert!(!r.body.to_string().contains("small"));
    }
}
