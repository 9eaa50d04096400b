//! The HTTP gateway: router, handlers and the state they share.

mod auth;
pub mod error;
mod execute;
mod health;
mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

pub use error::ApiError;
pub use execute::{success_body, ExecuteRequest};

use crate::config::ServerConfig;
use crate::sandbox::Sandbox;
use crate::tenants::TenantRegistry;

#[derive(Clone)]
pub struct AppState {
    pub sandbox: Arc<Sandbox>,
    pub tenants: Arc<TenantRegistry>,
    pub max_body_bytes: usize,
    pub draining: Arc<AtomicBool>,
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
        let sandbox = Sandbox::new(config.sandbox);
        let state = AppState {
            sandbox: sandbox.clone(),
            tenants: Arc::new(TenantRegistry::with_bootstrap_key(&api_key)),
            max_body_bytes: config.max_body_bytes,
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
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let draining = self.state.draining.clone();
        let (drain_started, drain_deadline) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(async move {
            shutdown.await;
            draining.store(true, Ordering::SeqCst);
            tracing::info!("shutting down: no new connections, finishing in-flight runs");
            let _ = drain_started.send(());
        });
        // axum waits for every connection without a limit; the platform does
        // not (Cloud Run kills 10 s after SIGTERM), and spans must be flushed
        // before that.
        tokio::select! {
            served = server => served?,
            _ = async {
                if drain_deadline.await.is_ok() {
                    tokio::time::sleep(DRAIN_TIMEOUT).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!(timeout_s = DRAIN_TIMEOUT.as_secs(), "in-flight requests did not finish in time; stopping anyway");
            }
        }
        Ok(())
    }
}

/// How long in-flight runs may finish after SIGTERM (Cloud Run gives 10 s;
/// the rest is for flushing spans).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/execute", post(execute::execute))
        .route("/health", get(health::health))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
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
