//! Client connections: accepting them, closing the ones that idle or stall,
//! capping how many are open, and bounding the bytes of large responses
//! that wait for slow readers.
//!
//! hyper parses HTTP, times out half-sent HTTP/1 headers and keeps HTTP/2
//! alive with PINGs that must be answered; what it has no timer for is a
//! connection that never starts a request (hyper-util's protocol detection
//! waits forever, and HTTP/2 has no idle timeout) and a response its client
//! never reads (HTTP/2 flow control stops the writes without the socket ever
//! blocking). Both are watched here, per connection, from what the requests
//! and their response bodies do.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, Response, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

mod activity;
mod body;

use activity::Activity;
use body::{Content, Lingering, ResponseBody, Room};

use super::error::ApiError;
use crate::telemetry;

/// Connections past the cap that may still ask the health probes.
pub const PROBE_LANE: usize = 16;
/// Responses up to this size are sent as they are; larger ones take room
/// in the response budget until their client has read them.
pub const HELD_ABOVE: usize = 16 * 1024;
/// What a held response hands hyper at a time, and an HTTP/2 stream's send
/// buffer: hyper takes a chunk as soon as a stream has any window at all,
/// so this is what a stream may hold outside the budget.
const CHUNK: usize = 16 * 1024;
/// HTTP/2 streams a connection may have at once.
const MAX_STREAMS: u32 = 16;
/// The slowest a client may read a response: past `write_timeout` plus its
/// size at this rate, it is dropped even if it reads now and then.
const MIN_READ_BYTES_PER_SEC: u64 = 64 * 1024;
/// How often each connection looks at its deadlines.
const TICK: Duration = Duration::from_millis(250);
/// How long a probe-lane connection may stay without a request, and how
/// long it may live at all: it is for one probe, not for keeping.
const PROBE_LANE_IDLE: Duration = Duration::from_millis(500);
const PROBE_LANE_LIFETIME: Duration = Duration::from_secs(1);
/// How long a connection asked to close gracefully (GOAWAY, or no more
/// keep-alive) may take before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// File descriptors kept for everything that is not a client connection:
/// the process's own, the sandbox's pipes per slot, the operator listener.
const FDS_RESERVED: u64 = 128 + OPERATOR_MAX_CONNECTIONS as u64 + PROBE_LANE as u64;
const FDS_PER_SLOT: u64 = 16;
/// The operator listener is for a scraper and a person or two.
pub const OPERATOR_MAX_CONNECTIONS: usize = 32;

/// How many connections, and for how long a response may wait for its reader.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub write_timeout: Duration,
    /// Bytes of held responses (over [`HELD_ABOVE`]) at once.
    pub response_buffer_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            write_timeout: Duration::from_secs(10),
            response_buffer_bytes: 64 * 1024 * 1024,
        }
    }
}

impl ConnectionLimits {
    /// The defaults for this process: the connections get what the hard
    /// limit on open files (the soft one is raised to it when the server
    /// starts, [`raise_open_file_limit`]) leaves after the sandbox's share,
    /// so that accepting never fails for want of a descriptor (at most 4096).
    pub fn for_this_process(max_concurrent: usize) -> Self {
        use nix::sys::resource::{Resource, getrlimit};
        let fds = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(_, hard)| hard);
        let reserved = FDS_RESERVED + FDS_PER_SLOT * max_concurrent as u64;
        Self {
            max_connections: fds.saturating_sub(reserved).clamp(1, 4096) as usize,
            ..Self::default()
        }
    }
}

/// Lets the process open as many files as its hard limit allows (raising
/// the soft limit needs no privilege); the sandbox's jails set their own.
pub fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// Which requests a connection may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Full,
    /// Accepted past the cap: probes are answered, anything else gets 503,
    /// and the connection closes after each answer.
    ProbesOnly,
}

/// One listener with its router and limits.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

struct Shared {
    router: Router,
    builder: Builder<TokioExecutor>,
    max_connections: usize,
    read_timeout: Duration,
    write_timeout: Duration,
    /// Room for held responses, in KiB.
    response_budget: Arc<Semaphore>,
    response_budget_kib: u32,
    open: watch::Sender<usize>,
    /// The public listener counts into the metrics; the operator's does not.
    public: bool,
    /// One warning per 10 s when connections are refused or cannot be
    /// accepted, with how many there were since the last one.
    log_gate: DefaultDirectRateLimiter,
    unlogged: AtomicU64,
}

impl Server {
    pub fn new(
        listener: TcpListener,
        router: Router,
        limits: &ConnectionLimits,
        read_timeout: Duration,
        public: bool,
    ) -> Self {
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // Waiting for a request's head, the first or a kept-alive one.
            .header_read_timeout(read_timeout)
            .max_buf_size(64 * 1024);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .max_concurrent_streams(MAX_STREAMS)
            .max_send_buf_size(CHUNK)
            .max_header_list_size(64 * 1024);
        let response_budget_kib =
            u32::try_from(limits.response_buffer_bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let ten_seconds = Quota::with_period(Duration::from_secs(10))
            .expect("a non-zero period")
            .allow_burst(NonZeroU32::MIN);
        Self {
            listener,
            shared: Arc::new(Shared {
                router,
                builder,
                max_connections: limits.max_connections.max(1),
                read_timeout,
                write_timeout: limits.write_timeout,
                response_budget: Arc::new(Semaphore::new(response_budget_kib as usize)),
                response_budget_kib,
                open: watch::Sender::new(0),
                public,
                log_gate: RateLimiter::direct(ten_seconds),
                unlogged: AtomicU64::new(0),
            }),
        }
    }

    /// Accepts until `stop` turns true, then asks every connection to close
    /// once its requests are answered and waits for that at most `drain`.
    /// Connections still open at the deadline are cut off here: their
    /// requests are dropped (and logged as cut off by the server) before
    /// this returns, while logging and tracing still run.
    pub async fn run(self, mut stop: watch::Receiver<bool>, drain: Duration) {
        let shared = self.shared;
        let mut connections = JoinSet::new();
        loop {
            // Finished connections leave the set as new ones come.
            while connections.try_join_next().is_some() {}
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => (stream, peer),
                    Err(e) => {
                        // Out of file descriptors and the like: the listener
                        // itself is fine, so wait a moment and go on.
                        shared.warn_throttled(|unlogged| {
                            tracing::warn!(error = %e, unlogged, "cannot accept a connection");
                        });
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = stopped(&mut stop) => break,
            };
            let open = *shared.open.borrow();
            let lane = if open < shared.max_connections {
                Lane::Full
            } else if open < shared.max_connections + PROBE_LANE {
                shared.refused("probes-only");
                Lane::ProbesOnly
            } else {
                shared.refused("closed");
                continue;
            };
            // Small JSON responses: without TCP_NODELAY, Nagle's algorithm
            // and the client's delayed ACK add tens of milliseconds to
            // keep-alive requests.
            let _ = stream.set_nodelay(true);
            let counted = Counted::new(shared.clone());
            connections.spawn(serve_connection(counted, stream, peer, lane, stop.clone()));
        }
        drop(self.listener);
        let mut open = shared.open.subscribe();
        let drained = tokio::time::timeout(drain, open.wait_for(|n| *n == 0))
            .await
            .is_ok();
        if !drained && shared.public {
            telemetry::request::drain_deadline_passed();
            tracing::warn!(
                timeout_s = drain.as_secs(),
                "in-flight requests did not finish in time; stopping anyway"
            );
        }
        connections.shutdown().await;
    }
}

impl Shared {
    fn refused(&self, reason: &'static str) {
        if !self.public {
            return;
        }
        telemetry::metrics().connection_refused(reason);
        let max_connections = self.max_connections;
        self.warn_throttled(|unlogged| {
            tracing::warn!(
                max_connections,
                unlogged,
                "connection limit reached: new connections get 503 (health probes answer) or are closed"
            );
        });
    }

    fn warn_throttled(&self, warn: impl FnOnce(u64)) {
        if self.log_gate.check().is_ok() {
            warn(self.unlogged.swap(0, Ordering::Relaxed));
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn closed(&self, reason: &'static str) {
        if self.public {
            telemetry::metrics().connection_closed(reason);
        }
    }

    async fn respond(
        self: Arc<Self>,
        request: Request<Incoming>,
        lane: Lane,
        activity: Arc<Activity>,
    ) -> Response<ResponseBody> {
        let in_flight = activity.request_started();
        let probe = matches!(request.uri().path(), "/livez" | "/readyz" | "/health");
        let mut response = if lane == Lane::ProbesOnly && !probe {
            busy("The server has reached its connection limit; try again shortly.")
        } else {
            // A client that asked for `100 Continue` waits for our answer
            // before it sends the body: reading it would only invite it.
            let linger = !request
                .headers()
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            let read_timeout = self.read_timeout;
            let request =
                request.map(|body| Body::new(Lingering::new(body, linger.then_some(read_timeout))));
            match self.router.clone().oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        };
        if lane == Lane::ProbesOnly {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let (parts, body) = response.into_parts();
        let content = match body.size_hint().exact() {
            Some(len) if len as usize > HELD_ABOVE => match self.hold(body, len as usize).await {
                Ok(held) => held,
                Err(refusal) => {
                    let (parts, body) = refusal.into_parts();
                    let content = Content::Streamed(body);
                    return Response::from_parts(
                        parts,
                        ResponseBody::new(content, in_flight, self.write_timeout),
                    );
                }
            },
            _ => Content::Streamed(body),
        };
        Response::from_parts(
            parts,
            ResponseBody::new(content, in_flight, self.write_timeout),
        )
    }

    /// Takes room for a large response in the budget, waiting for it at
    /// most the write timeout: by then every response that held room
    /// without being read has been dropped with its connection.
    async fn hold(&self, body: Body, len: usize) -> Result<Content, Response<Body>> {
        let kib = u32::try_from(len.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.response_budget_kib);
        let room = tokio::time::timeout(
            self.write_timeout,
            self.response_budget.clone().acquire_many_owned(kib),
        )
        .await;
        let Ok(Ok(permit)) = room else {
            if self.public {
                telemetry::metrics().response_buffer_rejected();
            }
            return Err(busy(
                "The server is holding as many large responses for slow clients as it may; try again shortly.",
            ));
        };
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => Bytes::new(),
        };
        Ok(Content::Held {
            rest: bytes,
            _room: Room::new(permit, len, self.public),
        })
    }
}

/// Resolves once the server is stopping (or its stop switch is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
}

fn busy(detail: &str) -> Response<Body> {
    ApiError::Unavailable {
        detail: detail.into(),
        retry_after_secs: 1,
    }
    .into_response()
}

/// One open connection in the listener's count, until dropped (however
/// its task ends).
struct Counted(Arc<Shared>);

impl Counted {
    fn new(shared: Arc<Shared>) -> Self {
        shared.open.send_modify(|n| *n += 1);
        if shared.public {
            telemetry::metrics().set_connections_open(*shared.open.borrow());
        }
        Self(shared)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n -= 1);
        if self.0.public {
            telemetry::metrics().set_connections_open(*self.0.open.borrow());
        }
    }
}

async fn serve_connection(
    counted: Counted,
    stream: TcpStream,
    peer: SocketAddr,
    lane: Lane,
    mut stop: watch::Receiver<bool>,
) {
    let shared = counted.0.clone();
    let activity = Arc::new(Activity::new());
    let service = {
        let (shared, activity) = (shared.clone(), activity.clone());
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            // The client's address, for the request's span and access log.
            request.extensions_mut().insert(ConnectInfo(peer));
            let respond = shared.clone().respond(request, lane, activity.clone());
            async move { Ok::<_, Infallible>(respond.await) }
        })
    };
    let connection = shared
        .builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let idle_limit = match lane {
        Lane::Full => shared.read_timeout,
        Lane::ProbesOnly => PROBE_LANE_IDLE,
    };
    let opened = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    let mut closing: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = connection.as_mut() => break,
            () = stopped(&mut stop), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if lane == Lane::ProbesOnly && now - opened > PROBE_LANE_LIFETIME {
                    break;
                }
                if activity.stalled(now, shared.write_timeout) {
                    // A client that does not read its response: nothing
                    // graceful can reach it.
                    shared.closed("write-timeout");
                    break;
                }
                match closing {
                    Some(since) if now - since > CLOSE_GRACE && activity.idle_for(now).is_some() => break,
                    Some(_) => {}
                    None => match activity.idle_for(now) {
                        Some(idle) if idle > idle_limit => {
                            if activity.requests() == 0 {
                                // Never said anything (or only a preface):
                                // there is nothing to finish.
                                shared.closed("first-request-timeout");
                                break;
                            }
                            shared.closed("idle");
                            connection.as_mut().graceful_shutdown();
                            closing = Some(now);
                        }
                        _ => {}
                    },
                }
            }
        }
    }
    drop(counted);
}
