//! `GET /metrics`: Prometheus text format, no auth (scrapers sit inside the
//! platform; nothing in it names a script, key or client).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use crate::telemetry;

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let m = telemetry::metrics();
    // Sampled now, so the gauges are never stale.
    m.set_sandbox_state(
        state.sandbox.queue_depth(),
        state.sandbox.status().max_concurrent,
        state.sandbox.is_ready(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
}
