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
use std::time::{Duration, Instant};

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
    /// How long each phase of the request took, in the order they ended,
    /// for its `Server-Timing` header.
    phases: Mutex<Vec<(&'static str, Duration)>>,
}

/// Routes polled by probes and scrapers: their spans and access logs are at
/// DEBUG so they neither fill Cloud Trace nor the log.
pub fn is_probe(route: &str) -> bool {
    matches!(route, "/health" | "/livez" | "/readyz" | "/metrics")
}

/// What the HTTP semantic conventions and Cloud Logging's `httpRequest` say
/// about one request, read once from it.
struct RequestFacts {
    method: Method,
    /// The matched route template; `None` for a 404 (the conventions name
    /// such a span by its method alone).
    route: Option<String>,
    path: String,
    protocol_version: &'static str,
    server_address: Option<String>,
    server_port: Option<u16>,
    user_agent: Option<String>,
    client_address: Option<String>,
    request_size: Option<u64>,
}

/// The longest user agent kept: it is the client's free text.
const USER_AGENT_LIMIT: usize = 256;

impl RequestFacts {
    fn of(request: &Request) -> Self {
        let headers = request.headers();
        let header = |name: axum::http::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let host = header(axum::http::header::HOST)
            .or_else(|| request.uri().authority().map(|a| a.to_string()));
        let authority = host
            .as_deref()
            .and_then(|h| h.parse::<axum::http::uri::Authority>().ok());
        Self {
            method: request.method().clone(),
            route: request
                .extensions()
                .get::<MatchedPath>()
                .map(|p| p.as_str().to_string()),
            path: request.uri().path().to_string(),
            protocol_version: match request.version() {
                axum::http::Version::HTTP_09 => "0.9",
                axum::http::Version::HTTP_10 => "1.0",
                axum::http::Version::HTTP_2 => "2",
                axum::http::Version::HTTP_3 => "3",
                _ => "1.1",
            },
            server_address: authority.as_ref().map(|a| a.host().to_string()),
            server_port: authority.as_ref().and_then(|a| a.port_u16()),
            user_agent: header(axum::http::header::USER_AGENT)
                .map(|ua| ua.chars().take(USER_AGENT_LIMIT).collect()),
            client_address: request
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|peer| peer.0.ip().to_string()),
            request_size: header(axum::http::header::CONTENT_LENGTH).and_then(|l| l.parse().ok()),
        }
    }

    /// `{method} {route}`, or the method alone without a route.
    fn span_name(&self) -> String {
        match &self.route {
            Some(route) => format!("{} {route}", self.method),
            None => self.method.to_string(),
        }
    }

    /// The route for metrics and logs (`unmatched` for a 404).
    fn route_label(&self) -> &str {
        self.route.as_deref().unwrap_or("unmatched")
    }
}

/// Axum middleware: one server span per request. It must run after the
/// request id middleware (so the id is set) and after routing (so the route
/// template, not the raw path, names the span).
pub async fn trace_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let facts = RequestFacts::of(&request);
    let method = facts.method.clone();
    let route = facts.route_label().to_string();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let name = facts.span_name();
    let probe = is_probe(&route);
    // Both spans have the same fields (the OpenTelemetry HTTP server
    // conventions, then ours under `pyexec.`); only the level differs.
    macro_rules! server_span {
        ($level:ident) => {
            tracing::$level!(
                "request",
                otel.name = %name,
                otel.kind = "server",
                otel.status_code = Empty,
                http.request.method = %method,
                http.route = Empty,
                http.response.status_code = Empty,
                http.request.body.size = Empty,
                http.response.body.size = Empty,
                url.path = %facts.path,
                url.scheme = "http",
                server.address = Empty,
                server.port = Empty,
                network.protocol.name = "http",
                network.protocol.version = facts.protocol_version,
                user_agent.original = Empty,
                client.address = Empty,
                error.type = Empty,
                pyexec.request_id = %request_id,
                pyexec.tenant = Empty,
                pyexec.script.sha256_prefix = Empty,
                pyexec.outcome = Empty,
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
    if let Some(route) = &facts.route {
        span.record("http.route", route.as_str());
    }
    if let Some(address) = &facts.server_address {
        span.record("server.address", address.as_str());
    }
    if let Some(port) = facts.server_port {
        span.record("server.port", i64::from(port));
    }
    if let Some(agent) = &facts.user_agent {
        span.record("user_agent.original", agent.as_str());
    }
    if let Some(client) = &facts.client_address {
        span.record("client.address", client.as_str());
    }
    if let Some(size) = facts.request_size {
        span.record("http.request.body.size", size as i64);
    }

    let info = Arc::new(RequestInfo {
        request_id,
        span: span.clone(),
        tenant: OnceLock::new(),
        outcome: Mutex::new(None),
        phases: Mutex::new(Vec::new()),
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
        span.record("pyexec.outcome", outcome);
        if outcome != "success" {
            span.record("error.type", outcome);
        }
    } else if status.is_server_error() {
        // The conventions' fallback: the status code names the error.
        span.record("error.type", status.as_str());
    }
    let response_size = hyper::body::Body::size_hint(response.body()).exact();
    if let Some(size) = response_size {
        span.record("http.response.body.size", size as i64);
    }
    // Where the time went (W3C Server-Timing), for the requests whose stages
    // said (the `/execute` ones): a client, a browser's dev tools or a
    // benchmark sees each phase without the traces.
    let took = started.elapsed();
    if let Some(timing) = server_timing(&info.phases.lock(), took) {
        response.headers_mut().insert("server-timing", timing);
    }
    // The response names the trace, so a client can hand its id to an operator.
    TraceContextPropagator::new()
        .inject_context(&span.context(), &mut HeaderInjector(response.headers_mut()));

    let tenant = info.tenant.get().map_or(NO_TENANT, String::as_str);
    metrics().http_request_finished(tenant, &route, status.as_u16(), took);
    let latency_ms = took.as_secs_f64() * 1000.0;
    // The access log line, inside the span so it carries the trace fields, and
    // back in the request's context so it carries its id and tenant.
    // Cloud Logging's `httpRequest` (the log formatter nests the
    // `httpRequest.*` fields), so Logs Explorer shows and filters it as a
    // request line; int64 fields are strings, as in the LogEntry JSON.
    let http = HttpRequestLog {
        latency: format!("{:.6}s", took.as_secs_f64()),
        request_size: facts.request_size.map(|n| n.to_string()),
        response_size: response_size.map(|n| n.to_string()),
        protocol: format!("HTTP/{}", facts.protocol_version),
    };
    let log = || {
        macro_rules! access_log {
            ($level:ident) => {
                tracing::$level!(
                    status = status.as_u16(),
                    latency_ms,
                    route = %route,
                    outcome = outcome.unwrap_or(""),
                    httpRequest.requestMethod = %method,
                    httpRequest.requestUrl = %facts.path,
                    httpRequest.status = status.as_u16(),
                    httpRequest.requestSize = http.request_size.as_deref(),
                    httpRequest.responseSize = http.response_size.as_deref(),
                    httpRequest.userAgent = facts.user_agent.as_deref(),
                    httpRequest.remoteIp = facts.client_address.as_deref(),
                    httpRequest.latency = %http.latency,
                    httpRequest.protocol = %http.protocol,
                    "request completed"
                )
            };
        }
        if probe || method == Method::OPTIONS {
            access_log!(debug);
        } else {
            access_log!(info);
        }
    };
    REQUEST.sync_scope(info.clone(), || span.in_scope(log));
    response
}

/// The parts of Cloud Logging's `HttpRequest` that are formatted for it.
struct HttpRequestLog {
    latency: String,
    request_size: Option<String>,
    response_size: Option<String>,
    protocol: String,
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
        info.span.record("pyexec.outcome", outcome);
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
        info.span.record("pyexec.tenant", tenant);
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

/// Records how long one phase of the request took (`auth`, `rate`,
/// `validate`, `quota`, `queue`, `runner`, `handover`, `cgroup`, `run`); a phase
/// recorded twice adds up.
pub fn record_phase(phase: &'static str, took: Duration) {
    let _ = REQUEST.try_with(|info| {
        let mut phases = info.phases.lock();
        match phases.iter_mut().find(|(name, _)| *name == phase) {
            Some((_, total)) => *total += took,
            None => phases.push((phase, took)),
        }
    });
}

/// The `Server-Timing` value: each phase, then `total` (milliseconds, three
/// decimals); `None` when no phase was recorded.
fn server_timing(
    phases: &[(&'static str, Duration)],
    total: Duration,
) -> Option<axum::http::HeaderValue> {
    if phases.is_empty() {
        return None;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let value = phases
        .iter()
        .map(|(name, took)| format!("{name};dur={:.3}", ms(*took)))
        .chain([format!("total;dur={:.3}", ms(total))])
        .collect::<Vec<_>>()
        .join(", ");
    axum::http::HeaderValue::from_str(&value).ok()
}

/// Records the script's hash prefix on the server span.
pub fn set_script_sha256(prefix: &str) {
    let _ = REQUEST.try_with(|info| {
        info.span.record("pyexec.script.sha256_prefix", prefix);
    });
}

/// The request id and tenant of the request being served, for log lines.
pub(crate) fn current_ids() -> Option<(String, Option<String>)> {
    REQUEST
        .try_with(|info| (info.request_id.clone(), info.tenant.get().cloned()))
        .ok()
}
