//! Health, liveness and readiness.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::error::ApiError;
use super::AppState;

/// The original service's health JSON plus what the sandbox self-test found.
/// 503 while the sandbox cannot run scripts, so a probe on it is meaningful.
#[utoipa::path(get, path = "/health", tag = "operations", responses(
    (status = 200, description = "Scripts can run.", body = super::openapi::HealthBody),
    (status = 503, description = "Scripts cannot run; `sandbox.problems` says why and how to fix it.", body = super::openapi::HealthBody)))]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let sandbox = state.sandbox.status();
    let ready = state.sandbox.is_ready();
    let (cache_entries, cache_bytes) = state.cache.stats();
    let body = json!({
        "status": if ready { "healthy" } else { "unhealthy" },
        "nsjail": sandbox.nsjail,
        "python": sandbox.python,
        "temp_dir": "/tmp",
        "temp_writable": sandbox.temp_writable,
        "cgroup": sandbox.cgroup,
        "sandbox": {
            "self_test": sandbox.self_test,
            "problems": sandbox.problems,
            "max_concurrent": sandbox.max_concurrent,
            "queue_depth": state.sandbox.queue_depth(),
            "warm_self_test": sandbox.warm_self_test,
            "warm_pool": sandbox.warm_pool,
            "runs_started": state.sandbox.runs_started(),
        },
        "policies": state.policies.status(),
        "cache": {
            "enabled": state.cache.is_enabled(),
            "entries": cache_entries,
            "weighted_bytes": cache_bytes,
            "shared": state.shared_cache.is_some(),
        },
        "redis": state.redis.as_ref().map_or_else(|| json!({"enabled": false}), |r| r.health()),
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
            Json(json!({"status": "not ready", "self_test": state.sandbox.status().self_test})),
        );
    }
    (StatusCode::OK, Json(json!({"status": "ready"})))
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}
