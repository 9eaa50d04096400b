//! The HTTP gateway: router, handlers and the state they share.

mod auth;
pub mod cache;
pub mod error;
mod execute;
mod health;
mod metrics;
pub mod openapi;
pub mod quota;
pub mod ratelimit;
pub mod redis;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::JWT_LEEWAY_SECS;
pub use error::ApiError;
pub use execute::{success_body, ExecuteRequest};

use crate::config::ServerConfig;
use crate::sandbox::Sandbox;
use crate::tenants::policy::LoadContext;
use crate::tenants::PolicyStore;
use cache::ResultCache;
use quota::{InMemoryQuotaStore, QuotaStore};
use ratelimit::{InMemoryRateStore, RateStore};
use redis::{RedisBackend, RedisCache, RedisQuotaStore, RedisRateStore};

/// A shared store (Redis) could not answer and the tenant's policy says to
/// fail closed (`spec.redis.onFailure: failClosed`): the request gets 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreUnavailable;

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
    /// How long a client has to send its request headers, and again its body.
    pub read_timeout: Duration,
    pub draining: Arc<AtomicBool>,
}

/// Where rate-limit and quota state lives (in memory unless replaced, e.g.
/// by tests that move the clock). With Redis configured, `rate` is what a
/// tenant falls back to while Redis is down and `clock` dates the shared
/// quota counters.
#[derive(Clone)]
pub struct Stores {
    pub rate: Arc<dyn RateStore>,
    pub quota: Arc<dyn QuotaStore>,
    pub clock: quota::WallClock,
}

impl Default for Stores {
    fn default() -> Self {
        Self {
            rate: Arc::new(InMemoryRateStore::new()),
            quota: Arc::new(InMemoryQuotaStore::default()),
            clock: Arc::new(std::time::SystemTime::now),
        }
    }
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

/// A bound, not yet serving gateway. Tests build it on port 0 and ask for the
/// port; `serve` builds it on the configured address.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    /// The bootstrap key when the server generated it (to print once).
    pub generated_api_key: Option<String>,
}

impl Application {
    pub async fn build(config: ServerConfig) -> anyhow::Result<Self> {
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
        let stores = config.stores;
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
            read_timeout: config.read_timeout,
            draining: Arc::new(AtomicBool::new(false)),
        };
        let listener = TcpListener::bind(config.listen).await?;
        // The self-test runs in the background: /livez answers at once and
        // /readyz turns 200 when the real jail has run a script.
        tokio::spawn(async move {
            let _ = sandbox.run_self_test().await;
        });
        Ok(Self {
            router: router(state.clone()),
            listener,
            state,
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

    pub fn sandbox(&self) -> Arc<Sandbox> {
        self.state.sandbox.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting, marks the
    /// server as draining (so /readyz turns 503) and lets in-flight requests
    /// finish for at most [`DRAIN_TIMEOUT`].
    ///
    /// hyper is driven directly rather than through `axum::serve`, which sets
    /// no timer: without one a client that trickles its headers a byte at a
    /// time holds its connection (and a task) forever. Here the headers must
    /// arrive within `read_timeout`, and the body handler applies the same
    /// deadline to the body.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.state.read_timeout);
        builder.http2().timer(TokioTimer::new());
        let service = TowerToHyperService::new(self.router);
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        // Small JSON responses: without TCP_NODELAY, Nagle's
                        // algorithm and the client's delayed ACK add tens of
                        // milliseconds to keep-alive requests.
                        let _ = stream.set_nodelay(true);
                        stream
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: the listener
                        // itself is fine, so wait a moment and go on.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service.clone())
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                // A client that hangs up or sends garbage ends its own connection.
                let _ = connection.await;
            });
        }
        self.state.draining.store(true, Ordering::SeqCst);
        tracing::info!("shutting down: no new connections, finishing in-flight runs");
        drop(self.listener);
        // hyper waits for every connection without a limit; the platform does
        // not (Cloud Run kills 10 s after SIGTERM), and spans must be flushed
        // before that.
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout_s = DRAIN_TIMEOUT.as_secs(),
                "in-flight requests did not finish in time; stopping anyway"
            );
        }
        self.state.sandbox.shutdown().await;
        Ok(())
    }
}

/// How long in-flight runs may finish after SIGTERM (Cloud Run gives 10 s;
/// the rest is for flushing spans).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

/// Every route, each registered through its handler's `#[utoipa::path]`:
/// the one list both the router and the OpenAPI document are made from.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(execute::execute))
        .routes(routes!(health::health))
        .routes(routes!(health::livez))
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi::openapi_json))
}

/// The OpenAPI document of the routes [`router`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = api_routes().into_openapi();
    // After the paths are in: these headers belong to every operation.
    utoipa::Modify::modify(&openapi::CommonHeaders, &mut document);
    document
}

pub fn router(state: AppState) -> Router {
    let (routes, _) = api_routes().split_for_parts();
    routes
        .fallback(health::not_found)
        // The server span; inside the request id layer so it sees the id.
        .layer(middleware::from_fn(
            crate::telemetry::request::trace_request,
        ))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Echoes a sane client `X-Request-Id` or makes one, on every response.
async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| hex::encode(rand::random::<[u8; 16]>()));
    let value = HeaderValue::from_str(&id).expect("request ids are checked ASCII");
    request.headers_mut().insert("x-request-id", value.clone());
    let mut response = next.run(request).await;
    response.headers_mut().insert("x-request-id", value);
    response
}
