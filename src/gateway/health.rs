//! Health, liveness and readiness.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::sandbox::SelfTest;

/// The original service's health JSON plus what the sandbox self-test found.
/// 503 while the sandbox cannot run scripts, so a probe on it is meaningful.
///
/// Anyone who reaches the port may ask, so it says whether the service can
/// serve and why not, and nothing about who it serves: no tenant, revision,
/// pid or policy value (those are on the operator listener's `/debug/state`).
#[utoipa::path(get, path = "/health", tag = "operations", responses(
    (status = 200, description = "Scripts can run.", body = super::openapi::HealthBody),
    (status = 503, description = "Scripts cannot run; `sandbox.problems` says why and how to fix it.", body = super::openapi::HealthBody)))]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let sandbox = state.sandbox.status();
    let ready = state.sandbox.is_ready();
    let body = json!({
        "status": if ready { "healthy" } else { "unhealthy" },
        "nsjail": sandbox.nsjail,
        // Known only once the self-test has run a script in the jail.
        "python": sandbox.python.as_deref().unwrap_or("unknown"),
        "temp_dir": "/tmp",
        "temp_writable": sandbox.temp_writable.map_or(json!("unknown"), |w| json!(w)),
        "cgroup": sandbox.cgroup,
        "sandbox": {
            "self_test": self_test_state(&sandbox.self_test),
            "problems": sandbox.problems,
            "max_concurrent": sandbox.max_concurrent,
            "queue_depth": state.sandbox.queue_depth(),
            "warm_self_test": self_test_state(&sandbox.warm_self_test),
        },
        "policies": {"last_reload": state.policies.status().public_summary()},
        "cache": {
            "enabled": state.cache.is_enabled(),
            "shared": state.shared_cache.is_some(),
        },
        "redis": {
            "enabled": state.redis.is_some(),
            "available": state.redis.as_ref().map(|r| r.is_up()),
        },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

#[utoipa::path(get, path = "/livez", tag = "operations",
    responses((status = 200, description = "The process is up.", body = super::openapi::StatusBody)))]
pub async fn livez() -> impl IntoResponse {
    Json(json!({"status": "alive"}))
}

#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Policies loaded, sandbox self-test passed.", body = super::openapi::StatusBody),
    (status = 503, description = "Not ready yet, or draining after SIGTERM.", body = super::openapi::StatusBody)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.draining.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        );
    }
    if !state.sandbox.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"status": "not ready", "self_test": self_test_state(&state.sandbox.status().self_test)}),
            ),
        );
    }
    (StatusCode::OK, Json(json!({"status": "ready"})))
}

/// A self-test's state without its detail: a failure's text carries the
/// jail's own output (pids, host paths), which `/debug/state` and the log
/// show to operators; `sandbox.problems` says publicly what to fix.
fn self_test_state(test: &SelfTest) -> Value {
    let state = match test {
        SelfTest::Pending => "pending",
        SelfTest::Passed => "passed",
        SelfTest::Failed(_) => "failed",
    };
    json!({ "state": state })
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}
