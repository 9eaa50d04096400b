//! State shared by every replica, in Redis: GCRA rate limits, daily quotas and
//! the second tier of the result cache. Selected by `PYEXEC_REDIS_URL`; without
//! it everything stays in memory.
//!
//! Every call has a deadline (`--redis-timeout-ms`). The first failure marks
//! Redis as down: from then on calls are not even tried (no request pays the
//! timeout again) and each tenant's `spec.redis.onFailure` decides: refuse
//! with 503, or decide on this replica's own state. A background probe pings
//! Redis; when it answers, the quota usage buffered meanwhile is written
//! first, then shared decisions resume.
//!
//! Quota writes are idempotent: each carries an id that Redis remembers for
//! the day. A write that timed out may still run later (the command was
//! already on the wire); replaying it from the buffer with the same id then
//! does nothing, so usage is neither lost nor counted twice.
//!
//! This module is the connection and its health ([`RedisBackend`]); the
//! three stores built on it are in `rate`, `quota` and `cache`.

mod cache;
mod quota;
mod rate;

pub use cache::RedisCache;
pub use quota::RedisQuotaStore;
pub use rate::RedisRateStore;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::{Value, json};

use super::StoreUnavailable;
use super::quota::DAY_SECS;
use crate::tenants::OnFailure;

/// Largest result body written to the shared cache: bigger ones stay in the
/// replica's own cache only, so one tenant cannot fill Redis's memory.
pub const MAX_SHARED_CACHE_VALUE: usize = 256 * 1024;
/// How often a replica that lost Redis checks whether it is back.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// How to reach Redis. The URL may hold a password, so `Debug` hides it.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS.
    pub url: String,
    /// Deadline of every call; past it the call counts as a failure.
    pub timeout: Duration,
    /// PEM CA that signed the server's certificate (Memorystore's own CA);
    /// without it the system roots are used.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Why a call gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallError {
    /// Redis is known to be down: nothing was sent.
    Skipped,
    /// Sent (or attempted) and failed or timed out: it may still run later.
    Failed,
}

/// One change to a tenant's counters for one UTC day.
#[derive(Debug, Clone)]
struct QuotaOp {
    tenant: String,
    day: u64,
    /// Remembered by Redis for the day: the op applies at most once.
    id: String,
    executions: i64,
    cpu_us: i64,
    /// Withdraws the begin with this id: it is undone if it ran, and
    /// prevented from running if it has not yet.
    revokes: Option<String>,
    /// Never sent to Redis: later buffered usage may be added to it, so a
    /// long outage buffers one op per tenant and day, not one per request.
    /// An op that was sent (and may still run) keeps its deltas as they were.
    mergeable: bool,
}

impl QuotaOp {
    fn new(tenant: &str, day: u64) -> Self {
        Self {
            tenant: tenant.to_string(),
            day,
            id: new_op_id(),
            executions: 0,
            cpu_us: 0,
            revokes: None,
            mergeable: false,
        }
    }
}

fn new_op_id() -> String {
    hex::encode(rand::random::<[u8; 12]>())
}

fn quota_keys(tenant: &str, day: u64) -> (String, String) {
    (
        format!("pyexec:quota:{tenant}:{day}"),
        format!("pyexec:quota:{tenant}:{day}:ops"),
    )
}

/// Counters for `/health` (and what an operator alerts on).
#[derive(Default)]
struct Stats {
    /// Calls that failed or timed out.
    failures: AtomicU64,
    /// Rate or quota decisions taken on this replica's state (perReplica).
    per_replica_decisions: AtomicU64,
    /// Requests refused with 503 because Redis was down (failClosed).
    refused: AtomicU64,
    /// Buffered quota writes later written to Redis.
    flushed: AtomicU64,
    /// Results too large for the shared cache (kept in this replica only).
    cache_too_large: AtomicU64,
}

/// The connection to Redis, its health and the buffer of quota writes that
/// wait for it. Shared by the three Redis-backed stores.
pub struct RedisBackend {
    conn: ConnectionManager,
    timeout: Duration,
    tls: bool,
    up: AtomicBool,
    stats: Stats,
    pending: Mutex<Vec<QuotaOp>>,
    gcra: Script,
    begin: Script,
    apply: Script,
}

impl RedisBackend {
    /// Connects lazily: a replica whose Redis is down still starts (its
    /// tenants then behave as their policies say) and connects when it can.
    pub async fn connect(settings: &RedisSettings) -> anyhow::Result<Arc<Self>> {
        // Messages never repeat the URL: it may carry the password.
        let info = redis::IntoConnectionInfo::into_connection_info(settings.url.as_str()).map_err(
            |_| anyhow::anyhow!("PYEXEC_REDIS_URL is not a valid redis:// or rediss:// URL"),
        )?;
        let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        let address = info.addr().to_string();
        let client = match &settings.ca_file {
            Some(path) => {
                anyhow::ensure!(tls, "--redis-ca-file needs a rediss:// URL");
                let root_cert = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("cannot read the Redis CA file {}: {e}", path.display())
                })?;
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root_cert),
                    },
                )
            }
            None => redis::Client::open(info),
        }
        .map_err(|e| anyhow::anyhow!("Redis client: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(settings.timeout))
            // A TLS handshake may take longer than one call's deadline; the
            // calls themselves stay bounded by `timeout` below.
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_secs(2))))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("Redis connection manager: {e}"))?;
        let backend = Arc::new(Self {
            conn,
            timeout: settings.timeout,
            tls,
            up: AtomicBool::new(true),
            stats: Stats::default(),
            pending: Mutex::new(Vec::new()),
            gcra: Script::new(GCRA_LUA),
            begin: Script::new(BEGIN_LUA),
            apply: Script::new(APPLY_LUA),
        });
        // One unhurried first contact, so that a cold TLS handshake is not
        // mistaken for an outage.
        let mut conn = backend.conn.clone();
        let first = tokio::time::timeout(
            settings.timeout.max(Duration::from_secs(3)),
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        match first {
            Ok(Ok(_)) => tracing::info!(redis = %address, tls, "shared store: Redis reachable"),
            Ok(Err(e)) => backend.mark_down(&format!("first contact failed: {e}")),
            Err(_) => backend.mark_down("first contact timed out"),
        }
        tokio::spawn(probe(Arc::downgrade(&backend)));
        Ok(backend)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Runs one call within the deadline, unless Redis is known to be down.
    async fn call<T>(
        &self,
        f: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, CallError> {
        if !self.is_up() {
            return Err(CallError::Skipped);
        }
        self.call_now(f).await
    }

    async fn call_now<T>(
        &self,
        f: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, CallError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, f(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                self.mark_down(&e.to_string());
                Err(CallError::Failed)
            }
            Err(_) => {
                self.mark_down(&format!("no answer within {:?}", self.timeout));
                Err(CallError::Failed)
            }
        }
    }

    fn mark_down(&self, reason: &str) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        // One warning per outage, not one per request.
        if self.up.swap(false, Ordering::SeqCst) {
            tracing::warn!(
                reason,
                "shared store: Redis unavailable; tenants fail closed (503) or use per-replica limits as their policy says, quota usage is buffered"
            );
        }
    }

    /// Applies a quota write now, or keeps it for when Redis is back.
    async fn apply_or_buffer(&self, op: QuotaOp) {
        if let Err(failure) = self.apply_op(&op, false).await {
            self.buffer(op, failure);
        }
    }

    /// Keeps a quota write for the flush. `failure` says whether it was
    /// sent: one that was keeps its id and deltas (Redis may run it late and
    /// the replay must then be a no-op); one that was not joins the
    /// tenant's other unsent usage of the day.
    fn buffer(&self, mut op: QuotaOp, failure: CallError) {
        let mut pending = self.pending.lock();
        if failure == CallError::Skipped && op.revokes.is_none() {
            if let Some(unsent) = pending
                .iter_mut()
                .find(|p| p.mergeable && p.tenant == op.tenant && p.day == op.day)
            {
                unsent.executions += op.executions;
                unsent.cpu_us += op.cpu_us;
                return;
            }
            op.mergeable = true;
        }
        pending.push(op);
    }

    async fn apply_op(&self, op: &QuotaOp, force: bool) -> Result<(), CallError> {
        let (counters, ops) = quota_keys(&op.tenant, op.day);
        let f = async |conn: &mut ConnectionManager| {
            self.apply
                .key(&counters)
                .key(&ops)
                .arg(&op.id)
                .arg(op.executions)
                .arg(op.cpu_us)
                .arg((op.day + 1) * DAY_SECS)
                .arg(op.revokes.as_deref().unwrap_or(""))
                .invoke_async::<i64>(conn)
                .await
        };
        if force {
            self.call_now(f).await.map(drop)
        } else {
            self.call(f).await.map(drop)
        }
    }

    /// Writes the buffered quota usage in order; stops at the first failure
    /// and keeps the rest. True when nothing is left.
    async fn flush(&self) -> bool {
        let mut ops = std::mem::take(&mut *self.pending.lock());
        let mut done = 0;
        for op in &mut ops {
            if self.apply_op(op, true).await.is_err() {
                // Sent: from now on its deltas are fixed.
                op.mergeable = false;
                break;
            }
            done += 1;
        }
        self.stats.flushed.fetch_add(done as u64, Ordering::Relaxed);
        let mut pending = self.pending.lock();
        if done < ops.len() {
            // Unwritten ops go back in front of any that arrived meanwhile.
            let later = std::mem::take(&mut *pending);
            pending.extend(ops.into_iter().skip(done));
            pending.extend(later);
        }
        pending.is_empty()
    }

    /// Today's buffered usage of a tenant: (executions, CPU µs).
    fn pending_usage(&self, tenant: &str, day: u64) -> (i64, i64) {
        self.pending
            .lock()
            .iter()
            .filter(|op| op.tenant == tenant && op.day == day)
            .fold((0, 0), |(e, c), op| (e + op.executions, c + op.cpu_us))
    }

    /// The `redis` object of `/health`. Never the URL (it may hold a password).
    pub fn health(&self) -> Value {
        let stat = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "enabled": true,
            "available": self.is_up(),
            "tls": self.tls,
            "timeout_ms": self.timeout.as_millis() as u64,
            "failures": stat(&self.stats.failures),
            "per_replica_decisions": stat(&self.stats.per_replica_decisions),
            "refused": stat(&self.stats.refused),
            "buffered_quota_writes": self.pending.lock().len(),
            "flushed_quota_writes": stat(&self.stats.flushed),
            "cache_values_too_large": stat(&self.stats.cache_too_large),
        })
    }

    /// What a tenant gets when Redis did not answer.
    fn on_failure(&self, mode: OnFailure) -> Result<(), StoreUnavailable> {
        match mode {
            OnFailure::FailClosed => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                Err(StoreUnavailable)
            }
            OnFailure::PerReplica => {
                self.stats
                    .per_replica_decisions
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }
}

/// While Redis is down: ping it; once it answers, write the buffered quota
/// usage, then let shared decisions resume. Ends with the backend.
async fn probe(backend: Weak<RedisBackend>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(backend) = backend.upgrade() else {
            return;
        };
        let pending = !backend.pending.lock().is_empty();
        if backend.is_up() && !pending {
            continue;
        }
        let alive = backend
            .call_now(async |conn: &mut ConnectionManager| {
                redis::cmd("PING").query_async::<String>(conn).await
            })
            .await
            .is_ok();
        if alive && backend.flush().await && !backend.up.swap(true, Ordering::SeqCst) {
            tracing::info!(
                flushed = backend.stats.flushed.load(Ordering::Relaxed),
                "shared store: Redis is back; buffered quota usage written, shared limits resume"
            );
        }
    }
}

/// GCRA in one atomic step, on Redis's clock (replicas' clocks never mix).
/// KEYS[1]: the tenant's theoretical arrival time (µs). ARGV: emission
/// interval (µs), burst. Returns {allowed, remaining, retry-after µs, reset µs},
/// the same numbers the in-memory (governor) store gives.
const GCRA_LUA: &str = include_str!("lua/gcra.lua");

/// Counts one execution unless a limit is reached, atomically across
/// replicas. KEYS: the day's counters (hash), the day's applied op ids (set).
/// ARGV: op id, executions limit, CPU limit µs (-1: none), expire-at (next
/// UTC midnight). An id already applied (or revoked) is not counted again.
/// Returns {allowed, executions, cpu µs}.
const BEGIN_LUA: &str = include_str!("lua/quota_begin.lua");

/// Applies one quota write once. ARGV: op id, executions delta, CPU µs
/// delta, expire-at, id of a begin to revoke (or ''). A revoked begin that
/// never ran is marked so that it never will; one that ran is undone.
const APPLY_LUA: &str = include_str!("lua/quota_apply.lua");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_never_print_the_url_and_its_password() {
        let settings = RedisSettings {
            url: "rediss://default:hunter2@10.0.0.3:6378".into(),
            timeout: Duration::from_millis(200),
            ca_file: None,
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("10.0.0.3"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn a_bad_url_is_refused_without_repeating_it() {
        let settings = RedisSettings {
            url: "http://user:hunter2@example".into(),
            timeout: Duration::from_millis(200),
            ca_file: None,
        };
        let error = RedisBackend::connect(&settings)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("PYEXEC_REDIS_URL") && !error.contains("hunter2"),
            "{error}"
        );
    }
}
