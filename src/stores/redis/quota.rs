//! Daily quotas shared by every replica, written idempotently.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;

use super::{CallError, QuotaOp, RedisBackend, quota_keys};
use crate::stores::quota::{
    DAY_SECS, QuotaError, QuotaStore, QuotaUsage, WallClock, check_limits, utc_day,
};
use crate::tenants::QuotaPolicy;

/// Daily quotas shared by every replica. While Redis is down, tenants that
/// fall back per replica are checked against the last counts Redis gave
/// plus this replica's buffered usage.
pub struct RedisQuotaStore {
    backend: Arc<RedisBackend>,
    clock: WallClock,
    /// (day, executions, CPU µs) as Redis last reported them, per tenant.
    last_seen: Mutex<HashMap<String, (u64, i64, i64)>>,
}

impl RedisQuotaStore {
    pub fn new(backend: Arc<RedisBackend>, clock: WallClock) -> Self {
        Self {
            backend,
            clock,
            last_seen: Mutex::new(HashMap::new()),
        }
    }

    fn remember(&self, tenant: &str, day: u64, executions: i64, cpu_us: i64) {
        self.last_seen
            .lock()
            .insert(tenant.to_string(), (day, executions, cpu_us));
    }

    /// This replica's best knowledge of today's usage while Redis is down.
    fn local_view(&self, tenant: &str, day: u64) -> (i64, i64) {
        let (e, c) = match self.last_seen.lock().get(tenant) {
            Some(&(seen_day, e, c)) if seen_day == day => (e, c),
            _ => (0, 0),
        };
        let (pe, pc) = self.backend.pending_usage(tenant, day);
        (e + pe, c + pc)
    }
}

fn usage(executions: i64, cpu_us: i64, resets_in: Duration) -> QuotaUsage {
    QuotaUsage {
        executions: executions.max(0) as u64,
        cpu: Duration::from_micros(cpu_us.max(0) as u64),
        resets_in,
    }
}

#[async_trait]
impl QuotaStore for RedisQuotaStore {
    async fn begin_execution(
        &self,
        tenant: &str,
        quota: &QuotaPolicy,
    ) -> Result<QuotaUsage, QuotaError> {
        let (day, resets_in) = utc_day(&self.clock);
        let (counters, ops) = quota_keys(tenant, day);
        let mut op = QuotaOp::new(tenant, day);
        op.executions = 1;
        let limit = |v: Option<u64>, scale: u64| v.map_or(-1, |v| v.saturating_mul(scale) as i64);
        let answer = self
            .backend
            .call(async |conn: &mut ConnectionManager| {
                self.backend
                    .begin
                    .key(&counters)
                    .key(&ops)
                    .arg(&op.id)
                    .arg(limit(quota.executions_per_day, 1))
                    .arg(limit(quota.cpu_seconds_per_day, 1_000_000))
                    .arg((day + 1) * DAY_SECS)
                    .invoke_async::<(i64, i64, i64)>(conn)
                    .await
            })
            .await;
        let failure = match answer {
            Ok((allowed, e, c)) => {
                self.remember(tenant, day, e, c);
                let now = usage(e, c, resets_in);
                if allowed == 1 {
                    return Ok(now);
                }
                check_limits(quota, now.executions, now.cpu, resets_in)?;
                // Redis counted a limit this replica's policy does not have
                // (a reload in between): refuse like it did.
                return Err(QuotaError::Denied(crate::stores::quota::QuotaDenied {
                    exhausted: "executions",
                    detail: "The tenant's daily quota is used up; it resets at midnight UTC."
                        .into(),
                    retry_after: resets_in,
                }));
            }
            Err(failure) => failure,
        };
        // The begin may still reach Redis later: if this execution does not
        // go ahead, withdraw it so that it is never counted.
        let withdraw = |backend: &RedisBackend| {
            if failure == CallError::Failed {
                let mut revoke = QuotaOp::new(tenant, day);
                revoke.revokes = Some(op.id.clone());
                backend.buffer(revoke, failure);
            }
        };
        if let Err(unavailable) = self.backend.on_failure(quota.on_failure) {
            withdraw(&self.backend);
            return Err(QuotaError::Unavailable(unavailable));
        }
        let (e, c) = self.local_view(tenant, day);
        let now = usage(e, c, resets_in);
        if let Err(denied) = check_limits(quota, now.executions, now.cpu, resets_in) {
            withdraw(&self.backend);
            return Err(denied.into());
        }
        // Same id as the begin that failed: if that one ran after all, the
        // replay changes nothing.
        self.backend.buffer(op, failure);
        Ok(usage(e + 1, c, resets_in))
    }

    async fn cancel_execution(&self, tenant: &str) {
        let (day, _) = utc_day(&self.clock);
        let mut op = QuotaOp::new(tenant, day);
        op.executions = -1;
        self.backend.apply_or_buffer(op).await;
    }

    async fn add_cpu_time(&self, tenant: &str, cpu: Duration) {
        let (day, _) = utc_day(&self.clock);
        let mut op = QuotaOp::new(tenant, day);
        op.cpu_us = cpu.as_micros().min(i64::MAX as u128) as i64;
        self.backend.apply_or_buffer(op).await;
    }

    async fn usage(&self, tenant: &str) -> QuotaUsage {
        let (day, resets_in) = utc_day(&self.clock);
        let (counters, _) = quota_keys(tenant, day);
        let answer = self
            .backend
            .call(async |conn: &mut ConnectionManager| {
                redis::cmd("HMGET")
                    .arg(&counters)
                    .arg("executions")
                    .arg("cpu_us")
                    .query_async::<(Option<i64>, Option<i64>)>(conn)
                    .await
            })
            .await;
        match answer {
            Ok((e, c)) => {
                let (e, c) = (e.unwrap_or(0), c.unwrap_or(0));
                self.remember(tenant, day, e, c);
                usage(e, c, resets_in)
            }
            Err(_) => {
                let (e, c) = self.local_view(tenant, day);
                usage(e, c, resets_in)
            }
        }
    }
}
