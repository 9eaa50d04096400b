//! The per-request side of telemetry: the server span (continuing an incoming
//! W3C `traceparent`), the request's metrics, and what later stages learn
//! about the request (tenant, script hash, outcome).
//!
//! What a stage learns is kept in a task-local for the request, so a handler
//! deep down can say "the tenant is acme" with [`set_tenant`] and the server
//! span, the request's log lines and its metric labels all get it, without
//! threading a handle through every function.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use parking_lot::Mutex;
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::metrics::{NO_TENANT, metrics};
use super::otel::{HeaderExtractor, HeaderInjector};

tokio::task_local! {
    static REQUEST: Arc<RequestInfo>;
}

struct RequestInfo {
    request_id: String,
    span: Span,
    tenant: OnceLock<String>,
    outcome: Mutex<Option<&'static str>>,
}

/// Routes polled by probes and scrapers: their spans and access logs are at
/// DEBUG so they neither fill Cloud Trace nor the log.
fn is_probe(route: &str) -> bool {
    matches!(route, "/health" | "/livez" | "/readyz" | "/metrics")
}

/// Axum middleware: one server span per request. It must run after the
/// request id middleware (so the id is set) and after routing (so the route
/// template, not the raw path, names the span).
pub async fn trace_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let name = format!("{method} {route}");
    let probe = is_probe(&route);
    // Both spans have the same fields; only the level differs.
    macro_rules! server_span {
        ($level:ident) => {
            tracing::$level!(
                "request",
                otel.name = %name,
                otel.kind = "server",
                otel.status_code = Empty,
                http.request.method = %method,
                http.route = %route,
                http.response.status_code = Empty,
                request_id = %request_id,
                tenant = Empty,
                script.sha256 = Empty,
                outcome = Empty,
                error.type = Empty,
            )
        };
    }
    let span = if probe {
        server_span!(debug_span)
    } else {
        server_span!(info_span)
    };
    // Continue the caller's trace; a missing or malformed traceparent starts
    // a new one. (Errors only when no OpenTelemetry layer is installed.)
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    let _ = span.set_parent(parent);

    let info = Arc::new(RequestInfo {
        request_id,
        span: span.clone(),
        tenant: OnceLock::new(),
        outcome: Mutex::new(None),
    });
    metrics().http_request_started();
    let mut unanswered = Unanswered {
        info: Some(info.clone()),
        route: route.clone(),
        started,
    };
    let mut response = REQUEST
        .scope(info.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    unanswered.info = None;

    let status = response.status();
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let outcome = *info.outcome.lock();
    if let Some(outcome) = outcome {
        span.record("outcome", outcome);
        if outcome != "success" {
            span.record("error.type", outcome);
        }
    }
    // The response names the trace, so a client can hand its id to an operator.
    TraceContextPropagator::new()
        .inject_context(&span.context(), &mut HeaderInjector(response.headers_mut()));

    let tenant = info.tenant.get().map_or(NO_TENANT, String::as_str);
    let took = started.elapsed();
    metrics().http_request_finished(tenant, &route, status.as_u16(), took);
    let latency_ms = took.as_secs_f64() * 1000.0;
    // The access log line, inside the span so it carries the trace fields, and
    // back in the request's context so it carries its id and tenant.
    let log = || {
        if probe || method == Method::OPTIONS {
            tracing::debug!(status = status.as_u16(), latency_ms, route = %route, "request completed");
        } else {
            tracing::info!(
                status = status.as_u16(),
                latency_ms,
                route = %route,
                outcome = outcome.unwrap_or(""),
                "request completed"
            );
        }
    };
    REQUEST.sync_scope(info.clone(), || span.in_scope(log));
    response
}

/// Set once the drain deadline has passed: requests dropped after it were
/// cut off by the server stopping, not by their clients.
static STOPPED_AT_DRAIN_DEADLINE: AtomicBool = AtomicBool::new(false);

/// The gateway stops waiting for in-flight requests: every one still
/// unanswered is logged as cut off by the shutdown.
pub fn drain_deadline_passed() {
    STOPPED_AT_DRAIN_DEADLINE.store(true, Ordering::SeqCst);
}

/// Counts and logs a request whose future was dropped before it answered:
/// hyper drops it when the client closes the connection (and the run's jail
/// is killed with it), logged as 499, nginx's "client closed request"; or
/// the server stopped at its drain deadline, logged as 503.
struct Unanswered {
    info: Option<Arc<RequestInfo>>,
    route: String,
    started: Instant,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(info) = self.info.take() else {
            return;
        };
        let tenant = info.tenant.get().map_or(NO_TENANT, String::as_str);
        let took = self.started.elapsed();
        let (status, outcome) = if STOPPED_AT_DRAIN_DEADLINE.load(Ordering::SeqCst) {
            (503, "server-stopped")
        } else {
            (499, "client-closed")
        };
        metrics().http_request_finished(tenant, &self.route, status, took);
        info.span.record("outcome", outcome);
        info.span.record("error.type", outcome);
        let span = info.span.clone();
        let route = &self.route;
        REQUEST.sync_scope(info.clone(), || {
            span.in_scope(|| {
                if status == 503 {
                    tracing::warn!(
                        status,
                        latency_ms = took.as_secs_f64() * 1000.0,
                        route = %route,
                        outcome,
                        "request abandoned: the server stopped at its drain deadline"
                    )
                } else {
                    tracing::info!(
                        status,
                        latency_ms = took.as_secs_f64() * 1000.0,
                        route = %route,
                        outcome,
                        "request abandoned: the client closed the connection"
                    )
                }
            })
        });
    }
}

/// Records the authenticated tenant on the request (span, logs, metrics).
pub fn set_tenant(tenant: &str) {
    let _ = REQUEST.try_with(|info| {
        let _ = info.tenant.set(tenant.to_string());
        info.span.record("tenant", tenant);
    });
}

/// The request's tenant, once authentication found it.
pub fn tenant() -> Option<String> {
    REQUEST
        .try_with(|info| info.tenant.get().cloned())
        .ok()
        .flatten()
}

/// Records how the request ended: `success` or the problem type suffix.
pub fn set_outcome(outcome: &'static str) {
    let _ = REQUEST.try_with(|info| {
        *info.outcome.lock() = Some(outcome);
    });
}

/// Records the script's hash prefix on the server span.
pub fn set_script_sha256(prefix: &str) {
    let _ = REQUEST.try_with(|info| {
        info.span.record("script.sha256", prefix);
    });
}

/// The request id and tenant of the request being served, for log lines.
pub(crate) fn current_ids() -> Option<(String, Option<String>)> {
    REQUEST
        .try_with(|info| (info.request_id.clone(), info.tenant.get().cloned()))
        .ok()
}
