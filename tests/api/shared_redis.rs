//! Several replicas sharing one Redis: two real gateways on their own random
//! ports, one real `redis-server` started by the test, the real sandbox.
//! Rate limits, quotas and cached results hold across both; when Redis hangs
//! or dies each tenant's `spec.redis.onFailure` holds, and once it is back
//! the quota usage of the outage is in Redis exactly once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{
    PolicyDir, RedisServer, SpawnOptions, SpawnedServer, TestServer, redis_server_config,
    tenant_yaml,
};
use pyexec::stores::quota::{QuotaError, QuotaStore};
use pyexec::stores::rate::{InMemoryRateStore, RateStore};
use pyexec::stores::redis::{RedisBackend, RedisQuotaStore, RedisRateStore};
use pyexec::tenants::{OnFailure, QuotaPolicy, RateLimitPolicy};
use serde_json::{Value, json};

const ALPHA_KEY: &str = "pyx_alpha_shared_key";
const BETA_KEY: &str = "pyx_beta_shared_key";
const OK_SCRIPT: &str = "def main():\n    return {'ok': True}";
const RANDOM_SCRIPT: &str =
    "def main(n):\n    import os\n    return {'n': n, 'nonce': os.urandom(8).hex()}";

fn ok_body() -> Value {
    json!({ "script": OK_SCRIPT })
}

/// Two gateways ("replicas") on the policies of `dir`, sharing `redis`.
fn two_replicas(dir: &PolicyDir, redis: &RedisServer) -> (TestServer, TestServer) {
    (
        TestServer::start(redis_server_config(dir.path(), redis), true),
        TestServer::start(redis_server_config(dir.path(), redis), true),
    )
}

/// Polls `probe` until it returns `Some` (the deadline only bounds a hang).
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, probe: impl Fn() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn redis_health(server: &TestServer) -> Value {
    server.debug_state().await["redis"].clone()
}

/// Roomy limits, so that only Redis's state decides what happens.
const ROOMY_LIMITS: &str =
    "  rateLimit: {requestsPerSecond: 100, burst: 100}\n  quota: {executionsPerDay: 100}\n";

/// A counter (`executions`, `cpu_us`) of `tenant`'s UTC day as Redis holds it.
fn quota_in_redis(redis: &RedisServer, tenant: &str, field: &str) -> i64 {
    let day = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    redis::cmd("HGET")
        .arg(format!("pyexec:quota:{tenant}:{day}"))
        .arg(field)
        .query::<Option<i64>>(&mut redis.connection())
        .unwrap()
        .unwrap_or(0)
}

/// A policies folder with the tenant `alpha` and its `spec` lines.
fn alpha_policies(spec: &str) -> PolicyDir {
    let dir = PolicyDir::new();
    dir.write("alpha", &tenant_yaml("alpha", ALPHA_KEY, spec));
    dir
}

/// `alpha` with roomy limits and `spec.redis.onFailure`.
fn alpha_failing(on_failure: &str) -> PolicyDir {
    alpha_policies(&format!(
        "{ROOMY_LIMITS}  redis: {{onFailure: {on_failure}}}\n"
    ))
}

fn executions_in_redis(redis: &RedisServer, tenant: &str) -> i64 {
    quota_in_redis(redis, tenant, "executions")
}

#[tokio::test]
async fn the_redis_gcra_decides_like_the_in_memory_one() {
    let redis = RedisServer::start();
    let backend = RedisBackend::connect(&redis.settings()).await.unwrap();
    let local: Arc<dyn RateStore> = Arc::new(InMemoryRateStore::new());
    let shared = RedisRateStore::new(backend, local.clone());
    // Slow enough that nothing refills while the test runs.
    let policy = RateLimitPolicy {
        requests_per_second: 0.01,
        burst: 4,
        on_failure: OnFailure::FailClosed,
    };
    for _ in 0..6 {
        let (expected, got) = (
            local.check("t", &policy).await.unwrap(),
            shared.check("t", &policy).await.unwrap(),
        );
        assert_eq!(
            (got.allowed, got.remaining),
            (expected.allowed, expected.remaining)
        );
        let wait = if got.allowed {
            got.reset
        } else {
            got.retry_after
        };
        assert!(
            !wait.is_zero() && wait <= Duration::from_secs(400),
            "{got:?}"
        );
    }
}

/// A begin that times out on a frozen Redis runs when Redis wakes up. For a
/// perReplica tenant the execution went ahead and is counted once (the
/// buffered replay carries the same id); for a failClosed tenant it was
/// refused and is not counted at all.
#[tokio::test]
async fn a_timed_out_quota_write_that_runs_late_is_counted_exactly_once() {
    let redis = RedisServer::start();
    // Two replicas, so that each meets the frozen Redis with a real send
    // (after a first failure a replica stops sending).
    let replica = || async {
        let backend = RedisBackend::connect(&redis.settings()).await.unwrap();
        let store = RedisQuotaStore::new(backend.clone(), Arc::new(std::time::SystemTime::now));
        (backend, store)
    };
    let (kept_backend, kept) = replica().await;
    let (refused_backend, refused) = replica().await;
    let quota = |on_failure| QuotaPolicy {
        executions_per_day: Some(10),
        on_failure,
        ..QuotaPolicy::default()
    };
    let per_replica = quota(OnFailure::PerReplica);
    kept.begin_execution("kept", &per_replica).await.unwrap();

    redis.pause();
    let usage = kept.begin_execution("kept", &per_replica).await.unwrap();
    assert_eq!(usage.executions, 2, "decided on the last count seen");
    assert!(matches!(
        refused
            .begin_execution("refused", &quota(OnFailure::FailClosed))
            .await,
        Err(QuotaError::Unavailable(_))
    ));
    kept.add_cpu_time("kept", Duration::from_millis(1500)).await;

    redis.resume();
    for backend in [&kept_backend, &refused_backend] {
        eventually("the buffer is written", || async {
            let health = backend.health();
            (health["available"] == true && health["buffered_quota_writes"] == 0).then_some(())
        })
        .await;
    }
    assert_eq!(executions_in_redis(&redis, "kept"), 2);
    assert_eq!(executions_in_redis(&redis, "refused"), 0);
    assert_eq!(quota_in_redis(&redis, "kept", "cpu_us"), 1_500_000);
    assert_eq!(kept.usage("kept").await.executions, 2);
}

#[tokio::test]
async fn a_tenants_burst_is_limited_across_both_replicas() {
    let redis = RedisServer::start();
    let dir = PolicyDir::new();
    // One request per 100 s after a burst of 3: nothing refills during the test.
    let limit = "  rateLimit: {requestsPerSecond: 0.01, burst: 3}\n";
    dir.write("alpha", &tenant_yaml("alpha", ALPHA_KEY, limit));
    dir.write("beta", &tenant_yaml("beta", BETA_KEY, limit));
    let (a, b) = two_replicas(&dir, &redis);
    // Invalid bodies still spend the budget and start no sandbox.
    let invalid = json!({"script": 1});

    let r = a.execute_with_key(invalid.clone(), ALPHA_KEY).await;
    r.assert_problem(400, "invalid-request");
    assert_eq!(r.header("ratelimit-policy"), Some("\"burst\";q=3;w=300"));
    assert!(r.header("ratelimit").unwrap().starts_with("\"burst\";r=2;"));
    let r = b.execute_with_key(invalid.clone(), ALPHA_KEY).await;
    assert!(r.header("ratelimit").unwrap().starts_with("\"burst\";r=1;"));
    a.execute_with_key(ok_body(), ALPHA_KEY).await.assert_ok();
    for server in [&b, &a] {
        let r = server.execute_with_key(ok_body(), ALPHA_KEY).await;
        r.assert_problem(429, "rate-limited");
        assert!(r.header("retry-after").is_some());
        assert!(r.header("ratelimit").unwrap().starts_with("\"burst\";r=0;"));
    }
    // Another tenant's burst is its own, on either replica.
    b.execute_with_key(ok_body(), BETA_KEY).await.assert_ok();
    assert_eq!(redis_health(&a).await["failures"], 0);
}

#[tokio::test]
async fn a_quota_spent_on_one_replica_is_exhausted_on_the_other() {
    let redis = RedisServer::start();
    let dir = alpha_policies("  quota: {executionsPerDay: 2}\n");
    let (a, b) = two_replicas(&dir, &redis);

    let r = a.execute_with_key(ok_body(), ALPHA_KEY).await;
    r.assert_ok();
    assert!(r.header("ratelimit").unwrap().starts_with("\"daily\";r=1;"));
    let r = b.execute_with_key(ok_body(), ALPHA_KEY).await;
    r.assert_ok();
    assert!(r.header("ratelimit").unwrap().starts_with("\"daily\";r=0;"));
    for server in [&a, &b] {
        let r = server.execute_with_key(ok_body(), ALPHA_KEY).await;
        r.assert_problem(429, "quota-exceeded");
        assert!(r.body["detail"].as_str().unwrap().contains("2 executions"));
        assert!(r.header("retry-after").is_some());
    }
    assert_eq!(executions_in_redis(&redis, "alpha"), 2);
    // Each replica reports the same day's use, from Redis.
    for server in [&a, &b] {
        let usage = server.get("/usage", Some(ALPHA_KEY)).await;
        assert_eq!(usage.status, 200, "{}", usage.body);
        assert_eq!(
            usage.body["executions"],
            json!({"used": 2, "limit": 2, "remaining": 0})
        );
    }
}

#[tokio::test]
async fn a_result_cached_by_one_replica_is_a_hit_on_the_other_never_for_another_tenant() {
    // With a password: it must never show up in what the gateway says.
    let password = "s3cret-redis-password-for-tests";
    let redis = RedisServer::start_with_password(password);
    let dir = PolicyDir::new();
    let cached = "  cache: {enabled: true, ttlSeconds: 600}\n";
    dir.write("alpha", &tenant_yaml("alpha", ALPHA_KEY, cached));
    dir.write("beta", &tenant_yaml("beta", BETA_KEY, cached));
    let (a, b) = two_replicas(&dir, &redis);
    let body = json!({"script": RANDOM_SCRIPT, "args": {"n": 1}});

    let miss = a.execute_with_key(body.clone(), ALPHA_KEY).await;
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    let nonce = miss.assert_ok()["nonce"].clone();
    let runs_b = b.runs_started().await;
    let hit = b.execute_with_key(body.clone(), ALPHA_KEY).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.assert_ok()["nonce"], nonce);
    assert_eq!(
        b.runs_started().await,
        runs_b,
        "a shared hit starts no sandbox"
    );

    // Same script and args, other tenant, on either replica: its own run.
    let other = b.execute_with_key(body.clone(), BETA_KEY).await;
    assert_eq!(other.header("x-cache"), Some("MISS"));
    assert_ne!(other.assert_ok()["nonce"], nonce);
    let other_a = a.execute_with_key(body.clone(), BETA_KEY).await;
    assert_eq!(other_a.header("x-cache"), Some("HIT"));
    assert_eq!(other_a.assert_ok()["nonce"], other.body["result"]["nonce"]);

    // The keys are namespaced by tenant and policy revision.
    let revision = a.debug_state().await["policies"]["tenants"]["alpha"]
        .as_str()
        .unwrap()
        .to_string();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("pyexec:cache:*")
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("pyexec:cache:alpha:{revision}:"))),
        "{keys:?}"
    );

    // Results over the shared cache's size cap stay on their replica.
    let big = json!({"script": "def main():\n    import os\n    return os.urandom(8).hex() + 'x' * 300000"});
    let r = a.execute_with_key(big.clone(), ALPHA_KEY).await;
    assert_eq!(r.header("x-cache"), Some("MISS"));
    let r = b.execute_with_key(big, ALPHA_KEY).await;
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert_eq!(redis_health(&a).await["cache_values_too_large"], 1);

    let health = a.health().await;
    assert_eq!(health["redis"]["available"], true);
    assert_eq!(health["cache"]["shared"], true);
    assert!(!health.to_string().contains(password));
    assert!(!a.debug_state().await.to_string().contains(password));
}

#[tokio::test]
async fn per_replica_tenants_keep_running_while_redis_hangs_and_their_usage_is_counted_once() {
    let mut redis = RedisServer::start();
    let dir = alpha_failing("perReplica");
    let (a, b) = two_replicas(&dir, &redis);
    a.execute_with_key(ok_body(), ALPHA_KEY).await.assert_ok();
    assert_eq!(executions_in_redis(&redis, "alpha"), 1);

    // Frozen: calls time out, and the first one may still run when Redis wakes.
    redis.pause();
    for server in [&a, &a, &b] {
        let r = server.execute_with_key(ok_body(), ALPHA_KEY).await;
        r.assert_ok();
        assert!(r.header("ratelimit").is_some());
    }
    for server in [&a, &b] {
        let health = redis_health(server).await;
        assert_eq!(health["available"], false, "{health}");
        assert!(health["per_replica_decisions"].as_u64().unwrap() >= 1);
        // Only the rate check met the frozen Redis; the rest was never sent,
        // so each replica's usage of the day is one buffered write.
        assert_eq!(health["buffered_quota_writes"], 1, "{health}");
    }

    redis.resume();
    for server in [&a, &b] {
        eventually("Redis is back and the buffer is written", || async {
            let health = redis_health(server).await;
            (health["available"] == true && health["buffered_quota_writes"] == 0).then_some(())
        })
        .await;
    }
    // 1 before + 3 during the outage; timed-out writes were not counted twice.
    assert_eq!(executions_in_redis(&redis, "alpha"), 4);
    let r = b.execute_with_key(ok_body(), ALPHA_KEY).await;
    r.assert_ok();
    assert!(
        r.header("ratelimit").unwrap().contains("\"daily\";r=95;"),
        "{:?}",
        r.header("ratelimit")
    );
    assert!(
        quota_in_redis(&redis, "alpha", "cpu_us") > 0,
        "the runs' CPU time reached Redis too"
    );
    redis.stop();
}

#[tokio::test]
async fn fail_closed_tenants_get_503_while_redis_is_down_and_recover_when_it_returns() {
    let mut redis = RedisServer::start();
    let dir = alpha_failing("failClosed");
    // No `spec.redis`: the default, perReplica.
    dir.write("beta", &tenant_yaml("beta", BETA_KEY, ROOMY_LIMITS));
    let (a, b) = two_replicas(&dir, &redis);
    a.execute_with_key(ok_body(), ALPHA_KEY).await.assert_ok();
    let runs = a.runs_started().await;

    redis.stop();
    for server in [&a, &b, &a] {
        let r = server.execute_with_key(ok_body(), ALPHA_KEY).await;
        r.assert_problem(503, "unavailable");
        assert!(r.header("retry-after").is_some());
        let detail = r.body["detail"].as_str().unwrap();
        assert!(detail.contains("fails closed"), "{detail}");
        assert!(!detail.contains(&redis.port.to_string()), "{detail}");
        // The default (perReplica) tenant keeps working beside it.
        server
            .execute_with_key(ok_body(), BETA_KEY)
            .await
            .assert_ok();
    }
    assert_eq!(a.runs_started().await, runs + 2, "only beta's runs started");
    let health = redis_health(&a).await;
    assert_eq!(health["available"], false);
    assert!(health["refused"].as_u64().unwrap() >= 2);
    // The same counters reach Prometheus.
    let metrics = a.scrape().await;
    assert!(metrics.contains("pyexec_redis_available 0"), "{metrics}");
    assert!(metrics.contains("pyexec_redis_refusals_total"));

    // Back (empty: no persistence): shared decisions resume on both.
    redis.restart();
    for server in [&a, &b] {
        eventually("alpha is served again", || async {
            let r = server.execute_with_key(ok_body(), ALPHA_KEY).await;
            (r.status == 200).then_some(())
        })
        .await;
    }
    // beta's two outage runs on `a` and one on `b` were buffered and written.
    for server in [&a, &b] {
        eventually("the buffer is written", || async {
            (redis_health(server).await["buffered_quota_writes"] == 0).then_some(())
        })
        .await;
    }
    assert_eq!(executions_in_redis(&redis, "beta"), 3);
    assert_eq!(executions_in_redis(&redis, "alpha"), 2);
    assert_eq!(a.health().await["status"], "healthy");
}

#[tokio::test]
async fn replicas_share_state_over_tls_with_a_password() {
    let password = "tls-redis-password-for-tests";
    let redis = RedisServer::start_tls(password);
    assert!(redis.url().starts_with("rediss://"));
    let dir = alpha_policies("  quota: {executionsPerDay: 5}\n  cache: {enabled: true}\n");
    let (a, b) = two_replicas(&dir, &redis);
    let body = json!({"script": RANDOM_SCRIPT, "args": {"n": 7}});
    let miss = a.execute_with_key(body.clone(), ALPHA_KEY).await;
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    let hit = b.execute_with_key(body, ALPHA_KEY).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.assert_ok(), miss.assert_ok());
    assert!(hit.header("ratelimit").unwrap().contains("\"daily\";r=4;"));
    let health = b.debug_state().await;
    assert_eq!(health["redis"]["tls"], true);
    assert_eq!(health["redis"]["failures"], 0);
    assert!(!health.to_string().contains(password));
    assert_eq!(executions_in_redis(&redis, "alpha"), 1);
}

/// The real `pyexec serve` process with the password in `PYEXEC_REDIS_URL`:
/// its logs say when Redis goes and comes back, and never show the password.
#[tokio::test]
async fn serve_logs_redis_outages_without_the_password() {
    let password = "never-log-this-redis-password";
    let mut redis = RedisServer::start_with_password(password);
    let dir = alpha_policies("  rateLimit: {requestsPerSecond: 100, burst: 100}\n");
    let url = redis.url();
    let mut server = SpawnedServer::start_with(SpawnOptions {
        envs: &[("PYEXEC_REDIS_URL", url.as_str())],
        policies: Some(dir.path()),
        ..SpawnOptions::default()
    });
    let logged = |needle: &'static str| {
        let server = &server;
        move || {
            let found = server
                .log_lines()
                .into_iter()
                .chain(server.stderr_lines())
                .find(|l| l.contains(needle));
            async move { found }
        }
    };
    let client = server.api.client.clone();
    let url = server.api.url("/execute");
    let execute = || {
        client
            .post(&url)
            .bearer_auth(ALPHA_KEY)
            .json(&json!({"script": 1}))
            .send()
    };
    assert_eq!(execute().await.unwrap().status(), 400);

    redis.stop();
    // perReplica (the default): answered on this replica's own limits.
    assert_eq!(execute().await.unwrap().status(), 400);
    eventually("the outage is logged", logged("Redis unavailable")).await;
    redis.restart();
    eventually("the recovery is logged", logged("Redis is back")).await;

    server.sigterm();
    server.wait_exit();
    let lines: Vec<String> = server
        .log_lines()
        .into_iter()
        .chain(server.stderr_lines())
        .collect();
    let warning = lines
        .iter()
        .find(|l| l.contains("Redis unavailable"))
        .unwrap();
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        !lines.iter().any(|l| l.contains(password)),
        "the password was logged"
    );
}
