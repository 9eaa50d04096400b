//! `GET /metrics` on the operator listener: Prometheus text format, no auth
//! (the listener is for the platform's scraper, never the public port; the
//! series name tenants, never a script, key or client).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use crate::telemetry::{self, RedisSample, WarmPoolSample};

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let m = telemetry::metrics();
    // Sampled now, so the gauges are never stale.
    let status = state.sandbox.status();
    m.set_sandbox_state(
        state.sandbox.queue_depth(),
        status.max_concurrent,
        state.sandbox.is_ready(),
    );
    let slot_use = state.sandbox.slot_use();
    m.set_slot_use(
        slot_use
            .iter()
            .map(|(tenant, used)| (tenant.as_str(), used.running, used.waiting)),
    );
    if let Some(pool) = &status.warm_pool {
        m.set_warm_pool(WarmPoolSample {
            zygotes: pool.zygotes as u64,
            zygotes_started: pool.zygotes_started,
            zygote_failures: pool.zygote_failures,
            runs: pool.runs,
            runs_that_waited_for_a_runner: pool.runs_that_waited_for_a_runner,
        });
    }
    // Each daily quota against today's use, so a tenant running out shows
    // before its requests are refused (one store read per tenant with a quota).
    let registry = state.policies.registry();
    for tenant in registry.tenants() {
        let quota = &tenant.quota;
        if quota.executions_per_day.is_none() && quota.cpu_seconds_per_day.is_none() {
            continue;
        }
        let usage = state.quota.usage(&tenant.name).await;
        if let Some(limit) = quota.executions_per_day {
            m.set_quota(&tenant.name, "executions", limit, usage.executions);
        }
        if let Some(limit) = quota.cpu_seconds_per_day {
            m.set_quota(&tenant.name, "cpu_seconds", limit, usage.cpu.as_secs());
        }
    }
    if let Some(redis) = &state.redis {
        let health = redis.health();
        let count = |field: &str| health[field].as_u64().unwrap_or(0);
        m.set_redis(RedisSample {
            available: health["available"] == true,
            buffered_quota_writes: count("buffered_quota_writes"),
            failures: count("failures"),
            per_replica_decisions: count("per_replica_decisions"),
            refused: count("refused"),
            flushed_quota_writes: count("flushed_quota_writes"),
            cache_values_too_large: count("cache_values_too_large"),
        });
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
}
