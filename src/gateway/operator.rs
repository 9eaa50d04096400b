//! The operator listener (`--metrics-listen`, loopback by default): what
//! the platform scrapes and what a person debugging the server reads, kept
//! off the public port because it names tenants, revisions and pids.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{AppState, metrics};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .route("/debug/state", get(debug_state))
        .with_state(state)
}

/// Everything `/health` leaves out: each tenant's revision and slots in
/// use, the last reload's errors in full, the zygotes' pids.
async fn debug_state(State(state): State<AppState>) -> Json<Value> {
    let sandbox = state.sandbox.status();
    let (cache_entries, cache_bytes) = state.cache.stats();
    Json(json!({
        "policies": state.policies.status(),
        "sandbox": {
            "ready": state.sandbox.is_ready(),
            "self_test": sandbox.self_test,
            "problems": sandbox.problems,
            "max_concurrent": sandbox.max_concurrent,
            "queue_depth": state.sandbox.queue_depth(),
            "slots_by_tenant": state.sandbox.slot_use(),
            "warm_self_test": sandbox.warm_self_test,
            "warm_pool": sandbox.warm_pool,
            "runs_started": state.sandbox.runs_started(),
        },
        "cache": {
            "enabled": state.cache.is_enabled(),
            "entries": cache_entries,
            "weighted_bytes": cache_bytes,
            "shared": state.shared_cache.is_some(),
        },
        "redis": state.redis.as_ref().map_or_else(|| json!({"enabled": false}), |r| r.health()),
    }))
}
