//! `GET /metrics` on the operator listener: Prometheus text format, no auth
//! (the listener is for the platform's scraper, never the public port; the
//! series name tenants, never a script, key or client).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use crate::telemetry;

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
        m.set_warm_pool(pool.gauges());
    }
    if let Some(redis) = &state.redis {
        m.set_redis(&redis.health());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
}
