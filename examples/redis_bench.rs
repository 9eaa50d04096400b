//! What the Redis path adds per request, against the in-memory stores, in
//! one run: `scripts/redis-bench.sh` starts a private redis-server and runs
//! this with `PYEXEC_REDIS_URL` pointing at it.
//!
//! Two measurements, each alternating memory and Redis call by call so that
//! machine noise hits both alike:
//! - store calls: a rate check, a quota begin + usage read, a cache lookup;
//! - HTTP: `POST /execute` answered from the cache (no sandbox run) by a
//!   gateway with in-memory stores and one with Redis. A cache hit still
//!   does the rate check and the quota read for the headers, so the
//!   difference is the per-request cost of sharing state.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyexec::gateway::Application;
use pyexec::gateway::ServerConfig;
use pyexec::sandbox::SandboxConfig;
use pyexec::stores::cache::ResultCache;
use pyexec::stores::quota::{InMemoryQuotaStore, QuotaStore};
use pyexec::stores::rate::{InMemoryRateStore, RateStore};
use pyexec::stores::redis::{
    RedisBackend, RedisCache, RedisQuotaStore, RedisRateStore, RedisSettings,
};
use pyexec::tenants::{OnFailure, QuotaPolicy, RateLimitPolicy, Tenant};

const API_KEY: &str = "pyx_redis_bench_key";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("PYEXEC_REDIS_URL")
        .map_err(|_| anyhow::anyhow!("set PYEXEC_REDIS_URL (scripts/redis-bench.sh does)"))?;
    let iterations: usize = std::env::var("BENCH_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5000);
    let settings = RedisSettings {
        url,
        timeout: Duration::from_millis(250),
        ca_file: std::env::var_os("PYEXEC_REDIS_CA_FILE").map(Into::into),
    };
    println!("pyexec Redis bench: {iterations} iterations per row, latency in µs\n");
    stores(&settings, iterations).await?;
    http(&settings, iterations).await?;
    Ok(())
}

/// p50 and p99 of a sample, in µs.
fn percentiles(mut sample: Vec<Duration>) -> (f64, f64) {
    sample.sort();
    let at = |q: f64| {
        let i = ((sample.len() as f64 * q).ceil() as usize).clamp(1, sample.len()) - 1;
        sample[i].as_secs_f64() * 1e6
    };
    (at(0.50), at(0.99))
}

fn row(name: &str, memory: Vec<Duration>, redis: Vec<Duration>) {
    let (m50, m99) = percentiles(memory);
    let (r50, r99) = percentiles(redis);
    println!(
        "{name:<34} {m50:>9.1} {m99:>9.1} {r50:>9.1} {r99:>9.1} {:>+10.1} {:>+10.1}",
        r50 - m50,
        r99 - m99
    );
}

fn header(title: &str) {
    println!("{title}");
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "", "mem p50", "mem p99", "redis p50", "redis p99", "added p50", "added p99"
    );
}

async fn time<T>(f: impl Future<Output = T>) -> Duration {
    let start = Instant::now();
    f.await;
    start.elapsed()
}

async fn stores(settings: &RedisSettings, n: usize) -> anyhow::Result<()> {
    let backend = RedisBackend::connect(settings).await?;
    anyhow::ensure!(backend.is_up(), "Redis does not answer");
    let memory_rate = InMemoryRateStore::new();
    let redis_rate = RedisRateStore::new(backend.clone(), Arc::new(InMemoryRateStore::new()));
    let memory_quota = InMemoryQuotaStore::default();
    let redis_quota = RedisQuotaStore::new(backend.clone(), Arc::new(std::time::SystemTime::now));
    let rate = RateLimitPolicy {
        requests_per_second: 1e6,
        burst: 1_000_000,
        on_failure: OnFailure::FailClosed,
    };
    let quota = QuotaPolicy {
        executions_per_day: Some(1 << 40),
        on_failure: OnFailure::FailClosed,
        ..QuotaPolicy::default()
    };
    // A 1 KiB result body, as a small script's answer is.
    let body = bytes::Bytes::from(vec![b'x'; 1024]);
    let mut tenant = Tenant::bootstrap();
    tenant.name = "bench".into();
    let memory_cache = ResultCache::new(1 << 20);
    let moka = memory_cache.inner().unwrap();
    let redis_cache = RedisCache::new(backend.clone());
    let key = [7u8; 32];
    moka.insert(
        key,
        Arc::new(pyexec::stores::cache::CachedResult::fresh(
            body.clone(),
            Duration::from_secs(600),
        )),
    )
    .await;
    redis_cache
        .put(&tenant, &key, &body, Duration::from_secs(600))
        .await;

    let (mut rate_m, mut rate_r) = (Vec::new(), Vec::new());
    let (mut quota_m, mut quota_r) = (Vec::new(), Vec::new());
    let (mut cache_m, mut cache_r) = (Vec::new(), Vec::new());
    for _ in 0..n {
        rate_m.push(time(memory_rate.check("bench", &rate)).await);
        rate_r.push(time(redis_rate.check("bench", &rate)).await);
        quota_m.push(
            time(async {
                memory_quota.begin_execution("bench", &quota).await.unwrap();
                memory_quota.usage("bench").await
            })
            .await,
        );
        quota_r.push(
            time(async {
                redis_quota.begin_execution("bench", &quota).await.unwrap();
                redis_quota.usage("bench").await
            })
            .await,
        );
        cache_m.push(time(async { moka.get(&key).await.unwrap() }).await);
        cache_r.push(time(async { redis_cache.get(&tenant, &key).await.unwrap() }).await);
    }
    anyhow::ensure!(
        backend.health()["failures"] == 0,
        "Redis calls failed during the bench: {}",
        backend.health()
    );
    header("store calls");
    row("rate check (GCRA)", rate_m, rate_r);
    row("quota begin + usage", quota_m, quota_r);
    row("cache lookup (1 KiB)", cache_m, cache_r);
    println!();
    Ok(())
}

fn sandbox_config() -> SandboxConfig {
    let from_env = |name: &str, default: &str| {
        std::path::PathBuf::from(std::env::var(name).unwrap_or_else(|_| default.into()))
    };
    SandboxConfig {
        nsjail_bin: from_env("PYEXEC_NSJAIL", "/opt/pyexec/bin/nsjail"),
        python_bin: from_env("PYEXEC_PYTHON", "/opt/pyexec/python/bin/python3"),
        nsjail_dir: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("nsjail"),
        max_concurrent: 2,
        max_queued: 16,
        queue_timeout: Duration::from_secs(30),
        forced_mode: None,
        warm: Default::default(),
    }
}

/// A gateway on a random port serving one tenant with a rate limit, a
/// quota and the cache; with Redis when `redis` is set.
async fn gateway(
    policies: &std::path::Path,
    redis: Option<RedisSettings>,
) -> anyhow::Result<String> {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse()?,
        operator_listen: "127.0.0.1:0".parse()?,
        connections: Default::default(),
        max_body_bytes: 1 << 20,
        large_body_buffer_bytes: 256 << 20,
        read_timeout: Duration::from_secs(10),
        sandbox: sandbox_config(),
        bootstrap_api_key: None,
        policies_dir: Some(policies.to_path_buf()),
        cache_bytes: 16 << 20,
        redis,
    };
    let app = Application::build(config).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until(std::future::pending()));
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map_or(true, |r| !r.status().is_success())
    {
        anyhow::ensure!(Instant::now() < deadline, "the gateway never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(base)
}

async fn http(settings: &RedisSettings, n: usize) -> anyhow::Result<()> {
    let policies = tempfile::tempdir()?;
    std::fs::write(
        policies.path().join("bench.yaml"),
        format!(
            "apiVersion: pyexec.dev/v1\nkind: Tenant\nmetadata:\n  name: bench\nspec:\n  auth:\n    apiKeys:\n      - sha256: {}\n  rateLimit: {{requestsPerSecond: 1000000, burst: 1000000}}\n  quota: {{executionsPerDay: 1000000000}}\n  cache: {{enabled: true, ttlSeconds: 3600}}\n  redis: {{onFailure: failClosed}}\n",
            hex::encode(pyexec::tenants::hash_api_key(API_KEY))
        ),
    )?;
    let memory = gateway(policies.path(), None).await?;
    let redis = gateway(policies.path(), Some(settings.clone())).await?;
    let client = reqwest::Client::new();
    let body = serde_json::json!({"script": "def main():\n    return {'ok': True}"});
    let post = |base: &str| {
        client
            .post(format!("{base}/execute"))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
    };
    for base in [&memory, &redis] {
        // The one run that fills the cache.
        let r = post(base).await?;
        anyhow::ensure!(
            r.status().is_success(),
            "warm-up run failed: {}",
            r.status()
        );
    }
    let (mut m, mut r) = (Vec::new(), Vec::new());
    for _ in 0..n {
        for (base, sample) in [(&memory, &mut m), (&redis, &mut r)] {
            let start = Instant::now();
            let response = post(base).await?;
            let hit = response
                .headers()
                .get("x-cache")
                .is_some_and(|v| v == "HIT");
            anyhow::ensure!(
                response.status().is_success() && hit,
                "expected a cache hit, got {}",
                response.status()
            );
            response.bytes().await?;
            sample.push(start.elapsed());
        }
    }
    header("HTTP POST /execute, cache hits");
    row("rate check + cache + quota header", m, r);
    Ok(())
}
