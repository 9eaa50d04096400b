//! The HTTP gateway: router, handlers and the state they share.

mod auth;
mod bodies;
mod cache_control;
pub mod connection;
mod discovery;
pub mod error;
mod execute;
mod health;
mod large_bodies;
mod metrics;
pub mod openapi;
mod operator;
mod ratelimit_headers;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware;
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::JWT_LEEWAY_SECS;
pub use bodies::{ExecuteRequest, ExecuteResult, OutputFileBody, success_body};
pub use error::{ApiError, Problem};

use crate::defaults;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::stores::Stores;
use crate::stores::cache::ResultCache;
use crate::stores::quota::QuotaStore;
use crate::stores::rate::RateStore;
use crate::stores::redis::{
    RedisBackend, RedisCache, RedisQuotaStore, RedisRateStore, RedisSettings,
};
use crate::tenants::PolicyStore;
use crate::tenants::policy::LoadContext;
use connection::{ConnectionLimits, OPERATOR_MAX_CONNECTIONS, Server};

/// Everything `Application::build` needs: plain data, made from the flags by
/// `config`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where `/metrics` and `/debug/state` are served.
    pub operator_listen: SocketAddr,
    pub connections: ConnectionLimits,
    pub max_body_bytes: usize,
    /// Bytes of bodies over `max_body_bytes` (those with input files) read
    /// and held at once, over all tenants.
    pub large_body_buffer_bytes: usize,
    /// Deadline for a request's headers, and again for its body.
    pub read_timeout: Duration,
    pub sandbox: SandboxConfig,
    /// The bootstrap tenant's API key; generated at start when unset.
    pub bootstrap_api_key: Option<String>,
    /// Tenant policies folder; `None` serves the bootstrap tenant only.
    pub policies_dir: Option<PathBuf>,
    /// Result cache capacity in bytes; 0 turns it off.
    pub cache_bytes: u64,
    /// Shared state in Redis; `None` keeps it in memory.
    pub redis: Option<RedisSettings>,
}

#[derive(Clone)]
pub struct AppState {
    pub sandbox: Arc<Sandbox>,
    pub policies: Arc<PolicyStore>,
    pub rate: Arc<dyn RateStore>,
    pub quota: Arc<dyn QuotaStore>,
    pub cache: ResultCache,
    /// The cache's second tier, shared by every replica (with Redis).
    pub shared_cache: Option<RedisCache>,
    /// For `/health`: whether Redis answers, and what happened while not.
    pub redis: Option<Arc<RedisBackend>>,
    pub max_body_bytes: usize,
    /// Room for bodies over `max_body_bytes` held at once.
    pub large_bodies: Arc<large_bodies::LargeBodies>,
    /// How long a client has to send its request headers, and again its body.
    pub read_timeout: Duration,
    pub draining: Arc<AtomicBool>,
}

/// A bound, not yet serving gateway. Tests build it on port 0 and ask for the
/// port; `serve` builds it on the configured address.
pub struct Application {
    listener: TcpListener,
    operator_listener: TcpListener,
    router: Router,
    state: AppState,
    connections: ConnectionLimits,
    /// The bootstrap key when the server generated it (to print once).
    pub generated_api_key: Option<String>,
}

impl Application {
    pub async fn build(config: ServerConfig) -> anyhow::Result<Self> {
        Self::build_with(config, Stores::default()).await
    }

    /// As [`Application::build`], with rate-limit and quota state in `stores`
    /// (tests move their clocks).
    pub async fn build_with(config: ServerConfig, stores: Stores) -> anyhow::Result<Self> {
        let (api_key, generated) = match config.bootstrap_api_key {
            Some(key) => (key, None),
            None => {
                let key = crate::tenants::generate_api_key();
                (key.clone(), Some(key))
            }
        };
        let policies = PolicyStore::load(
            config.policies_dir.clone(),
            LoadContext {
                nsjail_dir: config.sandbox.nsjail_dir.clone(),
            },
            api_key,
        )
        .map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("invalid tenant policies:\n  {}", lines.join("\n  "))
        })?;
        policies.spawn_watchers();
        let (rate, quota, redis) = match &config.redis {
            None => (stores.rate, stores.quota, None),
            Some(settings) => {
                let backend = RedisBackend::connect(settings).await?;
                let rate: Arc<dyn RateStore> =
                    Arc::new(RedisRateStore::new(backend.clone(), stores.rate));
                let quota: Arc<dyn QuotaStore> =
                    Arc::new(RedisQuotaStore::new(backend.clone(), stores.clock));
                (rate, quota, Some(backend))
            }
        };
        let sandbox = Sandbox::new(config.sandbox);
        let state = AppState {
            sandbox: sandbox.clone(),
            policies,
            rate,
            quota,
            shared_cache: redis.clone().map(RedisCache::new),
            redis,
            cache: ResultCache::new(config.cache_bytes),
            max_body_bytes: config.max_body_bytes,
            large_bodies: Arc::new(large_bodies::LargeBodies::new(
                config.large_body_buffer_bytes,
            )),
            read_timeout: config.read_timeout,
            draining: Arc::new(AtomicBool::new(false)),
        };
        connection::raise_open_file_limit();
        let listener = bind(config.listen, "--listen").await?;
        let operator_listener = bind(config.operator_listen, "--metrics-listen").await?;
        // The self-test runs in the background: /livez answers at once and
        // /readyz turns 200 when the real jail has run a script.
        tokio::spawn(async move {
            let _ = sandbox.run_self_test().await;
        });
        Ok(Self {
            router: router(state.clone()),
            listener,
            operator_listener,
            state,
            connections: config.connections,
            generated_api_key: generated,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Where `/metrics` and `/debug/state` are served.
    pub fn operator_addr(&self) -> SocketAddr {
        self.operator_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn sandbox(&self) -> Arc<Sandbox> {
        self.state.sandbox.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting, marks the
    /// server as draining (so /readyz turns 503) and lets in-flight requests
    /// finish for at most [`defaults::DRAIN_TIMEOUT`]. The operator listener serves
    /// until the drain is over.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let public = Server::new(
            self.listener,
            self.router,
            &self.connections,
            self.state.read_timeout,
            true,
        );
        let operator_limits = ConnectionLimits {
            max_connections: OPERATOR_MAX_CONNECTIONS,
            ..self.connections.clone()
        };
        let operator = Server::new(
            self.operator_listener,
            operator::router(self.state.clone()),
            &operator_limits,
            self.state.read_timeout,
            false,
        );
        let (stop_public, stopped) = watch::channel(false);
        let (stop_operator, operator_stopped) = watch::channel(false);
        let operator = tokio::spawn(operator.run(operator_stopped, Duration::from_millis(100)));
        let draining = self.state.draining.clone();
        tokio::spawn(async move {
            shutdown.await;
            draining.store(true, Ordering::SeqCst);
            tracing::info!("shutting down: no new connections, finishing in-flight runs");
            let _ = stop_public.send(true);
        });
        // hyper would wait for every connection without a limit; the
        // platform does not (Cloud Run kills 10 s after SIGTERM), and spans
        // must be flushed before that.
        public.run(stopped, defaults::DRAIN_TIMEOUT).await;
        let _ = stop_operator.send(true);
        let _ = operator.await;
        self.state.sandbox.shutdown().await;
        Ok(())
    }
}

async fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({flag}): {e}"))
}

/// Every route, each registered through its handler's `#[utoipa::path]`:
/// the one list both the router and the OpenAPI document are made from.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(execute::execute))
        .routes(routes!(discovery::runtime))
        .routes(routes!(discovery::usage))
        .routes(routes!(health::health))
        .routes(routes!(health::livez))
        .routes(routes!(health::readyz))
        .routes(routes!(openapi::openapi_json))
}

/// The OpenAPI document of the routes [`router`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = api_routes().into_openapi();
    // After the paths (and the schemas they bring) are in: these headers
    // belong to every operation, and the bound to the request's schema.
    utoipa::Modify::modify(&openapi::CommonHeaders, &mut document);
    utoipa::Modify::modify(&openapi::RequestBounds, &mut document);
    document
}

pub fn router(state: AppState) -> Router {
    let (routes, _) = api_routes().split_for_parts();
    routes
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
        // The server span; inside the request id layer so it sees the id.
        .layer(middleware::from_fn(
            crate::telemetry::request::trace_request,
        ))
        // Every request and its response carry an `X-Request-Id`: the
        // client's when it is safe to log and echo, else a new random one.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(RandomRequestId))
        .layer(middleware::map_request(drop_unsafe_request_id))
        // Credentials print as "Sensitive" if anything ever logs a header map.
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
            header::COOKIE,
        ]))
        // A bug that panics answers 500 (and is logged) instead of ending
        // its connection's task mid-request.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::Internal("a request handler panicked".into()).into_response()
            },
        ))
        .with_state(state)
}

/// A client's `X-Request-Id` is kept only when it is short and made of
/// characters that are safe in a log line and a header; otherwise it is
/// removed here and [`RandomRequestId`] makes one.
async fn drop_unsafe_request_id(mut request: Request) -> Request {
    let safe = |v: &HeaderValue| {
        let v = v.as_bytes();
        !v.is_empty()
            && v.len() <= 128
            && v.iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    };
    let headers = request.headers_mut();
    let all_safe = headers.get_all(X_REQUEST_ID).iter().all(safe);
    if !all_safe || headers.get_all(X_REQUEST_ID).iter().count() > 1 {
        headers.remove(X_REQUEST_ID);
    }
    request
}

const X_REQUEST_ID: &str = "x-request-id";

/// 128 random bits in hex.
#[derive(Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = hex::encode(rand::random::<[u8; 16]>());
        Some(RequestId::new(
            HeaderValue::from_str(&id).expect("hex is a valid header value"),
        ))
    }
}
