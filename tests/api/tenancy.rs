//! Tenancy through real HTTP and the real sandbox: policies, API keys and
//! JWTs, rate limits, quotas, the result cache, hot reload and per-tenant
//! sandbox limits.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{PolicyDir, TestServer, policy_server_config, tenant_yaml};
use base64::Engine;
use governor::clock::FakeRelativeClock;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pyexec::stores::Stores;
use pyexec::stores::quota::InMemoryQuotaStore;
use pyexec::stores::rate::InMemoryRateStore;
use serde_json::{Value, json};

const ALPHA_KEY: &str = "pyx_alpha_test_key";
const BETA_KEY: &str = "pyx_beta_test_key";
const HMAC_SECRET: &str = "an-hmac-secret-of-at-least-32-bytes-for-tests";
const OK_SCRIPT: &str = "def main():\n    return {'ok': True}";

fn ok_body() -> Value {
    json!({ "script": OK_SCRIPT })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

/// An RSA key pair made now with the openssl CLI: (private PEM, public PEM).
fn rsa_key_pair(dir: &PolicyDir) -> (Vec<u8>, Vec<u8>) {
    let private = dir.path().join("idp.key.pem");
    let public = dir.path().join("idp.pub.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
        && Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap()
            .success();
    assert!(ok, "openssl could not make a test key");
    let private_pem = std::fs::read(&private).unwrap();
    // The private key never stays in the policies folder.
    std::fs::remove_file(&private).unwrap();
    (private_pem, std::fs::read(&public).unwrap())
}

/// A server whose rate limits run on a clock the test moves: time passes
/// only when the test says so, so no sleeps and no flakes.
fn server_with_rate_clock(dir: &PolicyDir) -> (TestServer, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    let stores = Stores {
        rate: Arc::new(InMemoryRateStore::with_clock(clock.clone())),
        ..Stores::default()
    };
    let server = TestServer::start_with_stores(policy_server_config(dir.path()), stores, true);
    (server, clock)
}

/// The `alpha` tenant (API key) plus the `hs` tenant (HS256 JWTs).
fn auth_policies() -> PolicyDir {
    let dir = PolicyDir::new();
    dir.write("alpha", &tenant_yaml("alpha", ALPHA_KEY, ""));
    dir.write("off", &tenant_yaml("off", BETA_KEY, "  disabled: true\n"));
    dir.write_file("hs.secret", HMAC_SECRET.as_bytes());
    dir.write(
        "hs",
        "apiVersion: pyexec.dev/v1\nkind: Tenant\nmetadata:\n  name: hs\nspec:\n  auth:\n    jwt:\n      issuer: https://hs.example\n      audience: pyexec\n      algorithms: [HS256]\n      hmacSecretFile: hs.secret\n",
    );
    dir
}

#[tokio::test]
async fn auth_matrix_no_token_malformed_unknown_removed_key_valid_key_and_valid_jwt() {
    let dir = auth_policies();
    let server = TestServer::start(policy_server_config(dir.path()), true);

    let r = server.execute_with(ok_body(), None, &[]).await;
    r.assert_problem(401, "unauthorized");
    assert!(r.header("www-authenticate").is_some());
    let r = server
        .execute_with(
            ok_body(),
            None,
            &[("authorization", "Basic YWxhZGRpbjpvcGVu")],
        )
        .await;
    r.assert_problem(401, "unauthorized");
    assert!(r.body["detail"].as_str().unwrap().contains("Malformed"));
    let r = server
        .execute_with_key(ok_body(), "pyx_not_a_known_key")
        .await;
    r.assert_problem(401, "unauthorized");

    server
        .execute_with_key(ok_body(), ALPHA_KEY)
        .await
        .assert_ok();
    server
        .execute_with_key(ok_body(), BETA_KEY)
        .await
        .assert_problem(403, "forbidden");
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(HMAC_SECRET.as_bytes()),
        &json!({"iss": "https://hs.example", "aud": "pyexec", "sub": "ci", "exp": now() + 600}),
    );
    server.execute_with_key(ok_body(), &token).await.assert_ok();

    // Removing the tenant's file revokes its key as soon as the reload lands.
    let before = server.policy_revision().await;
    dir.remove("alpha");
    server
        .wait_for_policies(|p| p["revision"] != before.as_str())
        .await;
    server
        .execute_with_key(ok_body(), ALPHA_KEY)
        .await
        .assert_problem(401, "unauthorized");
    // The bootstrap tenant keeps working alongside the policy tenants.
    server.execute(ok_body()).await.assert_ok();
}

#[tokio::test]
async fn jwt_attacks_are_refused_with_401() {
    let dir = PolicyDir::new();
    let (private_pem, public_pem) = rsa_key_pair(&dir);
    dir.write(
        "rs",
        "apiVersion: pyexec.dev/v1\nkind: Tenant\nmetadata:\n  name: rs\nspec:\n  auth:\n    jwt:\n      issuer: https://idp.example\n      audience: pyexec\n      algorithms: [RS256]\n      publicKeyFile: idp.pub.pem\n",
    );
    let server = TestServer::start(policy_server_config(dir.path()), true);
    let rsa = EncodingKey::from_rsa_pem(&private_pem).unwrap();
    let claims = |extra: Value| {
        let mut c =
            json!({"iss": "https://idp.example", "aud": "pyexec", "sub": "u1", "exp": now() + 600});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };

    // The real thing works.
    let valid = sign(Algorithm::RS256, &rsa, &claims(json!({})));
    server.execute_with_key(ok_body(), &valid).await.assert_ok();

    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims(json!({})))
    );
    let attacks = [
        ("alg none", "none", alg_none),
        (
            // The classic confusion: HS256 keyed with the tenant's public key.
            "HS256 with the RS256 public key",
            "accepts only",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(&public_pem),
                &claims(json!({})),
            ),
        ),
        (
            "expired",
            "expired",
            sign(Algorithm::RS256, &rsa, &claims(json!({"exp": now() - 600}))),
        ),
        (
            "not yet valid",
            "not valid yet",
            sign(Algorithm::RS256, &rsa, &claims(json!({"nbf": now() + 600}))),
        ),
        (
            "wrong audience",
            "audience",
            sign(
                Algorithm::RS256,
                &rsa,
                &claims(json!({"aud": "someone-else"})),
            ),
        ),
        (
            "unknown issuer",
            "issuer",
            sign(
                Algorithm::RS256,
                &rsa,
                &claims(json!({"iss": "https://evil.example"})),
            ),
        ),
        (
            "missing exp",
            "`exp`",
            sign(Algorithm::RS256, &rsa, &claims(json!({"exp": null}))),
        ),
        (
            "exp as a string",
            "`exp`",
            sign(
                Algorithm::RS256,
                &rsa,
                &claims(json!({"exp": (now() + 600).to_string()})),
            ),
        ),
        ("tampered payload", "signature", {
            let mut parts: Vec<String> = valid.split('.').map(str::to_string).collect();
            parts[1] = b64(&claims(json!({"sub": "admin"})));
            parts.join(".")
        }),
    ];
    let runs = server.runs_started().await;
    for (name, reason, token) in attacks {
        let r = server.execute_with_key(ok_body(), &token).await;
        assert_eq!(
            (r.status, r.problem()),
            (401, "unauthorized"),
            "{name}: {}",
            r.body
        );
        let detail = r.body["detail"].as_str().unwrap();
        assert!(detail.contains(reason), "{name}: {detail}");
    }
    assert_eq!(
        server.runs_started().await,
        runs,
        "no attack reached the sandbox"
    );
}

#[tokio::test]
async fn rate_limit_burst_then_429_then_recovery_and_x_forwarded_for_changes_nothing() {
    let dir = PolicyDir::new();
    for (name, key) in [("alpha", ALPHA_KEY), ("beta", BETA_KEY)] {
        let limit = "  rateLimit: {requestsPerSecond: 1, burst: 2}\n";
        dir.write(name, &tenant_yaml(name, key, limit));
    }
    let (server, clock) = server_with_rate_clock(&dir);

    let first = server.execute_with_key(ok_body(), ALPHA_KEY).await;
    first.assert_ok();
    assert_eq!(first.header("ratelimit-policy"), Some("\"burst\";q=2;w=2"));
    assert_eq!(first.header("ratelimit"), Some("\"burst\";r=1;t=1"));
    // Requests that fail validation still spend the budget (rate is checked first).
    let second = server
        .execute_with(
            json!({"script": 1}),
            Some(ALPHA_KEY),
            &[("x-forwarded-for", "10.0.0.1")],
        )
        .await;
    second.assert_problem(400, "invalid-request");
    assert_eq!(second.header("ratelimit"), Some("\"burst\";r=0;t=2"));
    for spoof in ["10.0.0.2", "203.0.113.9, 10.0.0.3"] {
        let r = server
            .execute_with(
                ok_body(),
                Some(ALPHA_KEY),
                &[("x-forwarded-for", spoof), ("x-real-ip", spoof)],
            )
            .await;
        r.assert_problem(429, "rate-limited");
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.header("ratelimit"), Some("\"burst\";r=0;t=1"));
    }
    // Another tenant's budget is its own.
    server
        .execute_with_key(ok_body(), BETA_KEY)
        .await
        .assert_ok();

    clock.advance(Duration::from_secs(1));
    server
        .execute_with_key(ok_body(), ALPHA_KEY)
        .await
        .assert_ok();
    server
        .execute_with_key(ok_body(), ALPHA_KEY)
        .await
        .assert_problem(429, "rate-limited");
}

#[tokio::test]
async fn quotas_stop_a_tenant_for_the_rest_of_the_utc_day_then_reset() {
    let dir = PolicyDir::new();
    dir.write(
        "alpha",
        &tenant_yaml("alpha", ALPHA_KEY, "  quota: {executionsPerDay: 2}\n"),
    );
    dir.write(
        "beta",
        &tenant_yaml("beta", BETA_KEY, "  quota: {cpuSecondsPerDay: 1}\n"),
    );
    // A name no other test uses: the metrics registry is the process's.
    const WATCHED_KEY: &str = "pyx_quota_watched_tenant_key";
    dir.write(
        "quota-watched",
        &tenant_yaml(
            "quota-watched",
            WATCHED_KEY,
            "  quota: {executionsPerDay: 3, cpuSecondsPerDay: 50}\n",
        ),
    );
    // 23:00 UTC; the test moves the store's clock past midnight.
    let seconds = Arc::new(AtomicU64::new(20_000 * 86_400 + 23 * 3600));
    let clock_seconds = seconds.clone();
    let stores = Stores {
        quota: Arc::new(InMemoryQuotaStore::with_clock(Arc::new(move || {
            UNIX_EPOCH + Duration::from_secs(clock_seconds.load(Ordering::SeqCst))
        }))),
        ..Stores::default()
    };
    let server = TestServer::start_with_stores(policy_server_config(dir.path()), stores, true);

    let r = server.execute_with_key(ok_body(), ALPHA_KEY).await;
    r.assert_ok();
    assert_eq!(r.header("ratelimit-policy"), Some("\"daily\";q=2;w=86400"));
    assert_eq!(r.header("ratelimit"), Some("\"daily\";r=1;t=3600"));
    // A failed script is still an execution.
    server
        .execute_with_key(
            json!({"script": "def main():\n    raise ValueError()"}),
            ALPHA_KEY,
        )
        .await
        .assert_problem(422, "runtime-error");
    let r = server.execute_with_key(ok_body(), ALPHA_KEY).await;
    r.assert_problem(429, "quota-exceeded");
    assert_eq!(r.header("retry-after"), Some("3600"));
    assert_eq!(r.header("ratelimit"), Some("\"daily\";r=0;t=3600"));

    // CPU-seconds come from the sandbox's own accounting.
    let burn = "def main():\n    import time\n    t = time.process_time()\n    while time.process_time() - t < 1.2:\n        pass\n    return 1";
    server
        .execute_with_key(json!({"script": burn}), BETA_KEY)
        .await
        .assert_ok();
    let r = server.execute_with_key(ok_body(), BETA_KEY).await;
    r.assert_problem(429, "quota-exceeded");
    assert!(r.body["detail"].as_str().unwrap().contains("CPU-seconds"));

    // The operator sees each quota against today's use before it runs out.
    server
        .execute_with_key(ok_body(), WATCHED_KEY)
        .await
        .assert_ok();
    let text = server.scrape().await;
    let series = |name: &str, quota: &str| {
        crate::common::sample(
            &text,
            &format!(r#"pyexec_quota_{name}{{quota="{quota}",tenant="quota-watched"}}"#),
        )
    };
    assert_eq!(series("limit", "executions"), 3.0, "{text}");
    assert_eq!(series("used", "executions"), 1.0);
    assert_eq!(series("limit", "cpu_seconds"), 50.0);
    assert_eq!(series("used", "cpu_seconds"), 0.0);

    seconds.fetch_add(3600, Ordering::SeqCst);
    server
        .execute_with_key(ok_body(), ALPHA_KEY)
        .await
        .assert_ok();
    server
        .execute_with_key(ok_body(), BETA_KEY)
        .await
        .assert_ok();
}

const RANDOM_SCRIPT: &str =
    "def main(n):\n    import os\n    return {'n': n, 'nonce': os.urandom(8).hex()}";

#[tokio::test]
async fn cache_hits_start_no_sandbox_and_never_cross_tenants_or_policy_revisions() {
    let dir = PolicyDir::new();
    let cached = "  cache: {enabled: true, ttlSeconds: 600}\n";
    dir.write("alpha", &tenant_yaml("alpha", ALPHA_KEY, cached));
    dir.write("beta", &tenant_yaml("beta", BETA_KEY, cached));
    let server = TestServer::start(policy_server_config(dir.path()), true);
    let body = json!({"script": RANDOM_SCRIPT, "args": {"n": 1}});

    let miss = server.execute_with_key(body.clone(), ALPHA_KEY).await;
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    let nonce = miss.assert_ok()["nonce"].clone();
    let runs = server.runs_started().await;
    let hit = server.execute_with_key(body.clone(), ALPHA_KEY).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.assert_ok()["nonce"], nonce);
    assert_eq!(server.runs_started().await, runs, "a hit starts no sandbox");

    // Same script and args, other tenant: its own run.
    let other = server.execute_with_key(body.clone(), BETA_KEY).await;
    assert_eq!(other.header("x-cache"), Some("MISS"));
    assert_ne!(other.assert_ok()["nonce"], nonce);
    // Other args: another key.
    let r = server
        .execute_with_key(
            json!({"script": RANDOM_SCRIPT, "args": {"n": 2}}),
            ALPHA_KEY,
        )
        .await;
    assert_eq!(r.header("x-cache"), Some("MISS"));

    // Bypasses run the script and leave the entry alone.
    let mut no_cache = body.clone();
    no_cache["cache"] = json!(false);
    let r = server.execute_with_key(no_cache, ALPHA_KEY).await;
    assert_eq!(r.header("x-cache"), Some("BYPASS"));
    assert_ne!(r.assert_ok()["nonce"], nonce);
    // Failures are never cached.
    let failing = json!({"script": "def main():\n    raise RuntimeError('x')"});
    for _ in 0..2 {
        let r = server.execute_with_key(failing.clone(), ALPHA_KEY).await;
        r.assert_problem(422, "runtime-error");
    }

    // A policy edit (even a comment) is a new revision and a new key space.
    let before = server.policy_revision().await;
    dir.write(
        "alpha",
        &format!("{}# edited\n", tenant_yaml("alpha", ALPHA_KEY, cached)),
    );
    server
        .wait_for_policies(|p| p["revision"] != before.as_str())
        .await;
    let r = server.execute_with_key(body, ALPHA_KEY).await;
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert_ne!(r.assert_ok()["nonce"], nonce);
}

/// The client's `Cache-Control` as RFC 9111 reads it, and what the answer
/// says about the cache (RFC 9211 `Cache-Status`, `Age`, `X-Cache`).
#[tokio::test]
async fn cache_control_directives_refresh_skip_or_bound_the_stored_answer() {
    let dir = PolicyDir::new();
    let cached = "  cache: {enabled: true, ttlSeconds: 600}\n";
    dir.write("alpha", &tenant_yaml("alpha", ALPHA_KEY, cached));
    let server = TestServer::start(policy_server_config(dir.path()), true);
    let body = json!({"script": RANDOM_SCRIPT, "args": {"n": 7}});
    let send = |cache_control: Option<&'static str>| {
        let headers: Vec<(&str, &str)> = cache_control
            .map(|v| ("cache-control", v))
            .into_iter()
            .collect();
        let (server, body) = (&server, body.clone());
        async move { server.execute_with(body, Some(ALPHA_KEY), &headers).await }
    };
    let nonce = |r: &crate::common::Response| r.assert_ok()["nonce"].clone();

    let first = send(None).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(
        first.header("cache-status"),
        Some("pyexec; fwd=miss; stored")
    );
    assert_eq!(first.header("age"), None);
    let hit = send(None).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(nonce(&hit), nonce(&first));
    let status = hit.header("cache-status").unwrap();
    assert!(status.starts_with("pyexec; hit; ttl="), "{status}");
    let ttl: u64 = status.rsplit('=').next().unwrap().parse().unwrap();
    assert!((590..=600).contains(&ttl), "{status}");
    assert!(hit.header("age").unwrap().parse::<u64>().unwrap() <= 10);
    // An age bound the stored answer meets: served.
    let r = send(Some("max-age=3600")).await;
    assert_eq!(
        (r.header("x-cache"), nonce(&r)),
        (Some("HIT"), nonce(&first))
    );

    // no-cache runs the script and stores the new answer in place of the
    // old one: the next plain request gets the new one.
    let refreshed = send(Some("no-cache")).await;
    assert_eq!(refreshed.header("x-cache"), Some("MISS"));
    assert_eq!(
        refreshed.header("cache-status"),
        Some("pyexec; fwd=request; stored")
    );
    assert_ne!(nonce(&refreshed), nonce(&first));
    let after = send(None).await;
    assert_eq!(
        (after.header("x-cache"), nonce(&after)),
        (Some("HIT"), nonce(&refreshed))
    );
    // max-age=0 is the same request.
    let zero = send(Some("max-age=0")).await;
    assert_eq!(zero.header("x-cache"), Some("MISS"));
    assert_ne!(nonce(&zero), nonce(&refreshed));
    assert_eq!(nonce(&send(None).await), nonce(&zero));
    // An age bound the stored answer misses: refreshed too.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let bounded = send(Some("max-age=1")).await;
    assert_eq!(bounded.header("x-cache"), Some("MISS"));
    assert_ne!(nonce(&bounded), nonce(&zero));

    // no-store: runs, and leaves the stored answer as it was.
    let stored = nonce(&send(None).await);
    let r = send(Some("no-store")).await;
    assert_eq!(r.header("x-cache"), Some("BYPASS"));
    assert_eq!(r.header("cache-status"), Some("pyexec; fwd=request"));
    assert_ne!(nonce(&r), stored);
    assert_eq!(nonce(&send(None).await), stored);
}

#[tokio::test]
async fn concurrent_identical_requests_share_one_run() {
    let dir = PolicyDir::new();
    dir.write(
        "alpha",
        &tenant_yaml("alpha", ALPHA_KEY, "  cache: {enabled: true}\n"),
    );
    let server = Arc::new(TestServer::start(policy_server_config(dir.path()), true));
    let runs = server.runs_started().await;
    let body = json!({"script": "def main():\n    import os, time\n    time.sleep(0.5)\n    return os.urandom(8).hex()"});
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (server, body) = (server.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            server.execute_with_key(body, ALPHA_KEY).await
        }));
    }
    let mut results = Vec::new();
    let mut misses = 0;
    for task in tasks {
        let r = task.await.unwrap();
        misses += usize::from(r.header("x-cache") == Some("MISS"));
        results.push(r.assert_ok().clone());
    }
    assert_eq!(misses, 1);
    assert!(results.iter().all(|r| *r == results[0]));
    assert_eq!(server.runs_started().await, runs + 1);
}

#[tokio::test]
async fn hot_reload_changes_a_limit_without_restart_and_a_broken_file_keeps_the_old_policy() {
    let dir = PolicyDir::new();
    dir.write(
        "alpha",
        &tenant_yaml("alpha", ALPHA_KEY, "  sandbox: {maxScriptBytes: 100}\n"),
    );
    let server = TestServer::start(policy_server_config(dir.path()), true);
    let script = format!("def main():\n    return 1\n# {}\n", "x".repeat(150));
    let body = json!({ "script": script });
    server
        .execute_with_key(body.clone(), ALPHA_KEY)
        .await
        .assert_problem(413, "too-large");

    let before = server.policy_revision().await;
    dir.write(
        "alpha",
        &tenant_yaml("alpha", ALPHA_KEY, "  sandbox: {maxScriptBytes: 1000}\n"),
    );
    let policies = server
        .wait_for_policies(|p| p["revision"] != before.as_str())
        .await;
    server
        .execute_with_key(body.clone(), ALPHA_KEY)
        .await
        .assert_ok();
    // Reading the folder must not itself look like a change: no reloads
    // happen while nothing is edited. The pause only gives a feedback loop
    // (a reload every debounce of 150 ms) time to show; a correct watcher
    // passes whatever the pause.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        server.debug_state().await["policies"]["reloads"],
        policies["reloads"],
        "the watcher reacts to its own reads"
    );

    // A typo: the reload is refused, logged and reported; the last good
    // policy stays in force.
    let good = policies["revision"].as_str().unwrap().to_string();
    dir.write(
        "alpha",
        &tenant_yaml("alpha", ALPHA_KEY, "  sandbox: {maxScriptByte: 10}\n"),
    );
    let policies = server
        .wait_for_policies(|p| p["last_error"].as_array().is_some_and(|e| !e.is_empty()))
        .await;
    let error = policies["last_error"][0].as_str().unwrap();
    assert!(error.starts_with("alpha.yaml: spec.sandbox"), "{error}");
    assert!(error.contains("maxScriptByte"), "{error}");
    assert!(
        !error.contains(dir.path().to_str().unwrap()),
        "no host path: {error}"
    );
    assert_eq!(policies["revision"], good.as_str());
    server.execute_with_key(body, ALPHA_KEY).await.assert_ok();
}

#[tokio::test]
async fn each_tenant_gets_its_own_memory_limit() {
    let dir = PolicyDir::new();
    dir.write(
        "small",
        &tenant_yaml("small", ALPHA_KEY, "  sandbox: {memoryMiB: 64}\n"),
    );
    dir.write(
        "large",
        &tenant_yaml("large", BETA_KEY, "  sandbox: {memoryMiB: 256}\n"),
    );
    let server = TestServer::start(policy_server_config(dir.path()), true);
    // 100 MiB, every page touched.
    let body = json!({"script": "def main():\n    b = bytearray(100 * 1024 * 1024)\n    for i in range(0, len(b), 4096):\n        b[i] = 1\n    return len(b)"});
    let r = server.execute_with_key(body.clone(), ALPHA_KEY).await;
    r.assert_problem(422, "memory-limit");
    assert!(r.body["detail"].as_str().unwrap().contains("64 MiB"));
    let r = server.execute_with_key(body, BETA_KEY).await;
    assert_eq!(r.assert_ok(), &json!(100 * 1024 * 1024));
}

#[tokio::test]
async fn the_operator_listener_reports_each_policy_revision() {
    let dir = auth_policies();
    let server = TestServer::start(policy_server_config(dir.path()), false);
    let health = server.debug_state().await;
    let tenants = health["policies"]["tenants"].as_object().unwrap();
    assert_eq!(tenants.len(), 3);
    assert_eq!(tenants["alpha"].as_str().unwrap().len(), 16);
    assert_eq!(health["policies"]["revision"].as_str().unwrap().len(), 16);
}

#[tokio::test]
async fn a_configmap_style_symlink_swap_is_picked_up() {
    // The layout Kubernetes mounts: files link into `..data`, which links to
    // a timestamped folder; an update makes a new folder and renames a new
    // `..data` link over the old one. Only the top folder sees that rename.
    let dir = PolicyDir::new();
    let root = dir.path();
    let publish = |version: &str, spec_extra: &str| {
        let folder = root.join(format!("..{version}"));
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(
            folder.join("alpha.yaml"),
            tenant_yaml("alpha", ALPHA_KEY, spec_extra),
        )
        .unwrap();
        let tmp = root.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
        std::fs::rename(&tmp, root.join("..data")).unwrap();
    };
    publish("v1", "  sandbox: {maxScriptBytes: 100}\n");
    std::os::unix::fs::symlink("..data/alpha.yaml", root.join("alpha.yaml")).unwrap();
    let server = TestServer::start(policy_server_config(root), true);
    let body = json!({ "script": format!("def main():\n    return 2\n# {}\n", "x".repeat(150)) });
    server
        .execute_with_key(body.clone(), ALPHA_KEY)
        .await
        .assert_problem(413, "too-large");

    let before = server.policy_revision().await;
    publish("v2", "  sandbox: {maxScriptBytes: 1000}\n");
    server
        .wait_for_policies(|p| p["revision"] != before.as_str())
        .await;
    assert_eq!(
        server.execute_with_key(body, ALPHA_KEY).await.assert_ok(),
        &json!(2)
    );
}

#[tokio::test]
async fn sighup_reloads_what_the_watcher_cannot_see() {
    // A secret rotated in a subfolder changes no file the (non-recursive)
    // watcher looks at; SIGHUP is how an operator says "reload now".
    let dir = PolicyDir::new();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    let old_secret = "the-old-hmac-secret-of-at-least-32-bytes!";
    let new_secret = "the-new-hmac-secret-of-at-least-32-bytes!";
    dir.write_file("secrets/hs.secret", old_secret.as_bytes());
    dir.write(
        "hs",
        "apiVersion: pyexec.dev/v1\nkind: Tenant\nmetadata:\n  name: hs\nspec:\n  auth:\n    jwt:\n      issuer: https://rotating.example\n      algorithms: [HS256]\n      hmacSecretFile: secrets/hs.secret\n",
    );
    let server = TestServer::start(policy_server_config(dir.path()), true);
    let token = |secret: &str| {
        sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(secret.as_bytes()),
            &json!({"iss": "https://rotating.example", "exp": now() + 600}),
        )
    };
    server
        .execute_with_key(ok_body(), &token(old_secret))
        .await
        .assert_ok();

    let reloads = server.debug_state().await["policies"]["reloads"]
        .as_u64()
        .unwrap();
    dir.write_file("secrets/hs.secret", new_secret.as_bytes());
    // SAFETY: signalling our own process; the server installed a handler.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    server
        .wait_for_policies(|p| p["reloads"].as_u64() > Some(reloads))
        .await;
    server
        .execute_with_key(ok_body(), &token(new_secret))
        .await
        .assert_ok();
    server
        .execute_with_key(ok_body(), &token(old_secret))
        .await
        .assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn a_cache_hit_spends_rate_budget_but_no_quota() {
    let dir = PolicyDir::new();
    dir.write(
        "alpha",
        &tenant_yaml(
            "alpha",
            ALPHA_KEY,
            "  rateLimit: {requestsPerSecond: 1, burst: 2}\n  quota: {executionsPerDay: 1}\n  cache: {enabled: true}\n",
        ),
    );
    let (server, clock) = server_with_rate_clock(&dir);

    let r = server.execute_with_key(ok_body(), ALPHA_KEY).await;
    assert_eq!(r.header("x-cache"), Some("MISS"));
    // The one execution of the day is spent, yet the hit is served: it runs nothing.
    let r = server.execute_with_key(ok_body(), ALPHA_KEY).await;
    assert_eq!(r.header("x-cache"), Some("HIT"));
    let state = r.header("ratelimit").unwrap();
    assert!(
        state.starts_with("\"burst\";r=0;t=2, \"daily\";r=0;t="),
        "{state}"
    );
    // …but it did spend the rate budget.
    server
        .execute_with_key(ok_body(), ALPHA_KEY)
        .await
        .assert_problem(429, "rate-limited");
    clock.advance(Duration::from_secs(1));
    server
        .execute_with_key(json!({"script": "def main():\n    return 2"}), ALPHA_KEY)
        .await
        .assert_problem(429, "quota-exceeded");
}

#[tokio::test]
async fn a_tenant_holding_all_its_slots_does_not_make_another_tenant_wait() {
    // The suite's server has 4 slots: each tenant's default share is 2.
    let dir = PolicyDir::new();
    dir.write("greedy", &tenant_yaml("greedy", ALPHA_KEY, ""));
    dir.write("quiet", &tenant_yaml("quiet", BETA_KEY, ""));
    let server = Arc::new(TestServer::start(policy_server_config(dir.path()), true));
    let sandbox = server.sandbox.clone().unwrap();
    let greedy: Vec<_> = (0..8)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(async move {
                let script = format!("import time\ndef main():\n    time.sleep(2)\n    return {i}");
                let body = json!({"script": script, "cache": false});
                server.execute_with_key(body, ALPHA_KEY).await.status
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sandbox.slot_use().get("greedy").map(|u| u.waiting) != Some(6) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            sandbox.slot_use()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sandbox.slot_use()["greedy"].running, 2, "held to its share");
    let quiet = server
        .execute_with_key(json!({"script": OK_SCRIPT, "cache": false}), BETA_KEY)
        .await;
    assert_eq!(quiet.assert_ok(), &json!({"ok": true}));
    let greedy_now = sandbox.slot_use()["greedy"];
    assert!(
        greedy_now.waiting >= 4,
        "the quiet tenant was served while the greedy one still waited: {greedy_now:?}"
    );
    for run in greedy {
        assert_eq!(
            run.await.unwrap(),
            200,
            "the greedy tenant's runs all finish in turn"
        );
    }
}

#[tokio::test]
async fn the_public_port_names_no_tenant_revision_pid_or_policy_value() {
    // File names differ from tenant names: `/health` may name the file of
    // a rejected reload, never a tenant.
    let dir = PolicyDir::new();
    dir.write("t1", &tenant_yaml("zebra-corp", ALPHA_KEY, ""));
    dir.write("t2", &tenant_yaml("yak-labs", BETA_KEY, ""));
    let server = TestServer::start(policy_server_config(dir.path()), true);
    server
        .execute_with_key(json!({"script": OK_SCRIPT, "cache": false}), ALPHA_KEY)
        .await
        .assert_ok();
    let state = server.debug_state().await;
    let secret = "pyx_live_0123456789SECRETabcdef";
    let mut private: Vec<String> = vec![
        "zebra-corp".into(),
        "yak-labs".into(),
        secret.into(),
        "SECRET".into(),
    ];
    private.push(state["policies"]["revision"].as_str().unwrap().into());
    for revision in state["policies"]["tenants"].as_object().unwrap().values() {
        private.push(revision.as_str().unwrap().into());
    }
    for pid in state["sandbox"]["warm_pool"]["zygote_pids"]
        .as_array()
        .into_iter()
        .flatten()
    {
        private.push(pid.to_string());
    }
    let public = |path: &'static str| {
        let server = &server;
        async move {
            let response = server.client.get(server.url(path)).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let assert_nothing_private = |what: &str, text: &str| {
        for secret in &private {
            assert!(
                !text.contains(secret.as_str()),
                "{what} shows {secret}: {text}"
            );
        }
    };
    for path in ["/health", "/livez", "/readyz"] {
        let (status, text) = public(path).await;
        assert_eq!(status, 200, "{path}");
        assert_nothing_private(path, &text);
    }
    assert_eq!(
        public("/metrics").await.0,
        404,
        "metrics are not on the public port"
    );
    let metrics = server.scrape().await;
    assert!(
        metrics.contains("tenant=\"zebra-corp\""),
        "the operator sees tenants"
    );

    // A pasted key where a hash belongs: the reload is rejected, and the
    // public side names the file and the field, never the value.
    dir.write(
        "t1",
        &format!(
            "apiVersion: pyexec.dev/v1\nkind: Tenant\nmetadata:\n  name: zebra-corp\nspec:\n  auth:\n    apiKeys:\n      - sha256: {secret}\n"
        ),
    );
    let policies = server
        .wait_for_policies(|p| !p["last_error"].as_array().unwrap().is_empty())
        .await;
    assert!(policies.to_string().contains("t1.yaml"), "{policies}");
    let health: Value = serde_json::from_str(&public("/health").await.1).unwrap();
    let last_reload = health["policies"]["last_reload"].as_str().unwrap();
    assert!(
        last_reload.starts_with("policy reload rejected: t1.yaml: spec.auth.apiKeys"),
        "{last_reload}"
    );
    assert_nothing_private("/health after a rejected reload", &health.to_string());
    // An unknown tenant's key is answered as any other bad key.
    let unknown = server
        .execute_with_key(ok_body(), "pyx_no_such_tenant_key")
        .await;
    let bad = server.execute_with_key(ok_body(), "garbage").await;
    assert_eq!((unknown.status, bad.status), (401, 401));
    assert_eq!(unknown.body["detail"], bad.body["detail"]);
}

#[tokio::test]
async fn runs_the_sandbox_could_not_start_are_handed_back_to_the_quota() {
    // A tenant whose extra nsjail config binds a path that does not exist:
    // every one of its jails fails to build, which is not its script's doing.
    let nsjail_dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(crate::common::repo_path("nsjail")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), nsjail_dir.path().join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(
        nsjail_dir.path().join("broken.cfg"),
        "mount {\n  src: \"/nonexistent-pyexec-test-path\"\n  dst: \"/broken\"\n  is_bind: true\n}\n",
    )
    .unwrap();
    let dir = PolicyDir::new();
    dir.write(
        "alpha",
        &tenant_yaml(
            "alpha",
            ALPHA_KEY,
            "  quota: {executionsPerDay: 1}\n  sandbox: {nsjailConfig: broken.cfg}\n",
        ),
    );
    let mut config = policy_server_config(dir.path());
    config.sandbox.nsjail_dir = nsjail_dir.path().to_path_buf();
    let server = TestServer::start(config, true);
    let body = json!({"script": OK_SCRIPT, "cache": false});
    for _ in 0..3 {
        let r = server.execute_with_key(body.clone(), ALPHA_KEY).await;
        r.assert_problem(503, "unavailable");
    }
    // Mended: the one execution of the day is still there, then used up.
    let before = server.policy_revision().await;
    dir.write(
        "alpha",
        &tenant_yaml("alpha", ALPHA_KEY, "  quota: {executionsPerDay: 1}\n"),
    );
    server
        .wait_for_policies(|p| p["revision"] != before.as_str())
        .await;
    server
        .execute_with_key(body.clone(), ALPHA_KEY)
        .await
        .assert_ok();
    server
        .execute_with_key(body, ALPHA_KEY)
        .await
        .assert_problem(429, "quota-exceeded");
}
