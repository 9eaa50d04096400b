//! Health, liveness and readiness.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use crate::sandbox::SelfTest;

/// `GET /health`: the original service's fields plus the sandbox, policy and
/// cache state.
#[derive(Serialize, ToSchema)]
pub struct HealthBody {
    /// `healthy` or `unhealthy`.
    status: &'static str,
    /// Whether nsjail was found and runs.
    nsjail: bool,
    /// The jail's Python version; `unknown` until the self-test has run.
    python: String,
    temp_dir: &'static str,
    /// Whether the jail's `/tmp` took a write: `true`, `false`, or `"unknown"`
    /// until the self-test has run.
    #[schema(value_type = Value)]
    temp_writable: Value,
    /// `v1` or `v2`; absent when no cgroup hierarchy could be used.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    cgroup: Option<&'static str>,
    sandbox: SandboxHealth,
    policies: PoliciesHealth,
    cache: CacheHealth,
    redis: RedisHealth,
}

#[derive(Serialize, ToSchema)]
struct SandboxHealth {
    self_test: SelfTestState,
    /// What is missing, each with how to fix it.
    problems: Vec<String>,
    max_concurrent: usize,
    queue_depth: usize,
    /// The warm path's own self-test; a failure there sends warm runs cold.
    warm_self_test: SelfTestState,
}

#[derive(Serialize, ToSchema)]
struct PoliciesHealth {
    /// `ok`, or `policy reload rejected: <file>: <field>`.
    last_reload: String,
}

#[derive(Serialize, ToSchema)]
struct CacheHealth {
    /// Whether results are cached here.
    enabled: bool,
    /// Whether they are shared with other replicas through Redis.
    shared: bool,
}

#[derive(Serialize, ToSchema)]
struct RedisHealth {
    enabled: bool,
    /// Whether Redis answers; absent when it is not configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    available: Option<bool>,
}

/// A self-test's state without its detail: a failure's text carries the
/// jail's own output (pids, host paths), which `/debug/state` and the log
/// show to operators; `sandbox.problems` says publicly what to fix.
#[derive(Serialize, ToSchema)]
struct SelfTestState {
    /// `pending`, `passed` or `failed`.
    state: &'static str,
}

impl SelfTestState {
    fn of(test: &SelfTest) -> Self {
        Self {
            state: test.label(),
        }
    }
}

/// `GET /livez` and `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub struct StatusBody {
    /// `alive`, `ready`, `not ready` or `draining`.
    status: &'static str,
    /// While not ready: the sandbox self-test's state.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    self_test: Option<SelfTestState>,
}

impl StatusBody {
    fn of(status: &'static str) -> Json<Self> {
        Json(Self {
            status,
            self_test: None,
        })
    }
}

/// Whether scripts can run, and why not.
///
/// The original service's health JSON plus what the sandbox self-test found.
/// 503 while the sandbox cannot run scripts, so a probe on it is meaningful.
///
/// Anyone who reaches the port may ask, so it says whether the service can
/// serve and why not, and nothing about who it serves: no tenant, revision,
/// pid or policy value (those are on the operator listener's `/debug/state`).
#[utoipa::path(get, path = "/health", tag = "operations", responses(
    (status = 200, description = "Scripts can run.", body = HealthBody),
    (status = 503, description = "Scripts cannot run; `sandbox.problems` says why and how to fix it.", body = HealthBody)))]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let sandbox = state.sandbox.status();
    let ready = state.sandbox.is_ready();
    let body = HealthBody {
        status: if ready { "healthy" } else { "unhealthy" },
        nsjail: sandbox.nsjail,
        // Known only once the self-test has run a script in the jail.
        python: sandbox.python.unwrap_or_else(|| "unknown".into()),
        temp_dir: "/tmp",
        temp_writable: sandbox.temp_writable.map_or(json!("unknown"), Value::Bool),
        cgroup: sandbox.cgroup,
        sandbox: SandboxHealth {
            self_test: SelfTestState::of(&sandbox.self_test),
            problems: sandbox.problems,
            max_concurrent: sandbox.max_concurrent,
            queue_depth: state.sandbox.queue_depth(),
            warm_self_test: SelfTestState::of(&sandbox.warm_self_test),
        },
        policies: PoliciesHealth {
            last_reload: state.policies.status().public_summary(),
        },
        cache: CacheHealth {
            enabled: state.cache.is_enabled(),
            shared: state.shared_cache.is_some(),
        },
        redis: RedisHealth {
            enabled: state.redis.is_some(),
            available: state.redis.as_ref().map(|r| r.is_up()),
        },
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/livez", tag = "operations",
    responses((status = 200, description = "The process is up.", body = StatusBody)))]
pub async fn livez() -> impl IntoResponse {
    StatusBody::of("alive")
}

/// Readiness: policies loaded and the sandbox self-test passed.
///
/// 503 while starting and while draining after SIGTERM.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Policies loaded, sandbox self-test passed.", body = StatusBody),
    (status = 503, description = "Not ready yet, or draining after SIGTERM.", body = StatusBody)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, StatusBody::of("draining"));
    }
    if !state.sandbox.is_ready() {
        let not_ready = StatusBody {
            status: "not ready",
            self_test: Some(SelfTestState::of(&state.sandbox.status().self_test)),
        };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(not_ready));
    }
    (StatusCode::OK, StatusBody::of("ready"))
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
