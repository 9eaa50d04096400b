//! Daily quotas per tenant: executions and sandbox CPU-seconds, per UTC day.
//!
//! CPU time is what the run's cgroup measured (`RunUsage::cpu_time`), never
//! what the script reports. An execution is reserved before the run (so
//! concurrent requests cannot all slip under the limit) and handed back if
//! the sandbox never started it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::StoreUnavailable;
use crate::tenants::QuotaPolicy;

pub const DAY_SECS: u64 = 86_400;

/// Today's use of one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaUsage {
    pub executions: u64,
    pub cpu: Duration,
    /// Until the next UTC midnight, when both counters start again.
    pub resets_in: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaDenied {
    /// Which quota ran out: `executions` or `cpu_seconds` (a metric label).
    pub exhausted: &'static str,
    pub detail: String,
    pub retry_after: Duration,
}

/// Why an execution may not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaError {
    Denied(QuotaDenied),
    /// The shared store could not answer and the tenant fails closed.
    Unavailable(StoreUnavailable),
}

impl From<QuotaDenied> for QuotaError {
    fn from(denied: QuotaDenied) -> Self {
        QuotaError::Denied(denied)
    }
}

/// Where quota counters live: in memory per instance, or shared by every
/// replica in Redis (`super::redis::RedisQuotaStore`). Only `begin_execution`
/// can fail: usage that happened is never refused, a shared store buffers it.
#[async_trait]
pub trait QuotaStore: Send + Sync + 'static {
    /// Counts one execution for today unless a limit is already reached.
    async fn begin_execution(
        &self,
        tenant: &str,
        quota: &QuotaPolicy,
    ) -> Result<QuotaUsage, QuotaError>;
    /// Hands back an execution that never ran (the sandbox was unavailable).
    async fn cancel_execution(&self, tenant: &str);
    /// Adds the CPU time a run used.
    async fn add_cpu_time(&self, tenant: &str, cpu: Duration);
    async fn usage(&self, tenant: &str) -> QuotaUsage;
}

/// The wall clock, replaceable in tests to cross midnight at will.
pub type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

#[derive(Debug, Default, Clone, Copy)]
struct Day {
    index: u64,
    executions: u64,
    cpu: Duration,
}

pub struct InMemoryQuotaStore {
    clock: WallClock,
    days: Mutex<HashMap<String, Day>>,
}

impl Default for InMemoryQuotaStore {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemTime::now))
    }
}

impl InMemoryQuotaStore {
    pub fn with_clock(clock: WallClock) -> Self {
        Self {
            clock,
            days: Mutex::new(HashMap::new()),
        }
    }

    fn today(&self) -> (u64, Duration) {
        utc_day(&self.clock)
    }

    /// Runs `f` on the tenant's counters for today (a new day starts at zero).
    fn with_day<T>(&self, tenant: &str, f: impl FnOnce(&mut Day, Duration) -> T) -> T {
        let (index, resets_in) = self.today();
        let mut days = self.days.lock();
        let day = days.entry(tenant.to_string()).or_default();
        if day.index != index {
            *day = Day {
                index,
                ..Day::default()
            };
        }
        f(day, resets_in)
    }
}

/// Today's UTC day number on `clock` and the time left in it.
pub fn utc_day(clock: &WallClock) -> (u64, Duration) {
    let since_epoch = clock().duration_since(UNIX_EPOCH).unwrap_or_default();
    let index = since_epoch.as_secs() / DAY_SECS;
    let midnight = Duration::from_secs((index + 1) * DAY_SECS);
    (index, midnight.saturating_sub(since_epoch))
}

/// `YYYY-MM-DD` (UTC) of a Unix time, by Howard Hinnant's days-to-civil
/// algorithm; a date crate for one line of output is not worth it.
pub fn utc_date(unix_secs: u64) -> String {
    let z = (unix_secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Whether one more execution fits in `quota` after `executions` runs and
/// `cpu` CPU time today; every store decides with this one rule.
pub fn check_limits(
    quota: &QuotaPolicy,
    executions: u64,
    cpu: Duration,
    resets_in: Duration,
) -> Result<(), QuotaDenied> {
    if let Some(limit) = quota.executions_per_day {
        if executions >= limit {
            return Err(QuotaDenied {
                exhausted: "executions",
                detail: format!(
                    "The tenant has used its {limit} executions for today (UTC); the quota resets at midnight UTC."
                ),
                retry_after: resets_in,
            });
        }
    }
    if let Some(limit) = quota.cpu_seconds_per_day {
        if cpu >= Duration::from_secs(limit) {
            return Err(QuotaDenied {
                exhausted: "cpu_seconds",
                detail: format!(
                    "The tenant has used its {limit} CPU-seconds for today (UTC); the quota resets at midnight UTC."
                ),
                retry_after: resets_in,
            });
        }
    }
    Ok(())
}

fn usage_of(day: &Day, resets_in: Duration) -> QuotaUsage {
    QuotaUsage {
        executions: day.executions,
        cpu: day.cpu,
        resets_in,
    }
}

#[async_trait]
impl QuotaStore for InMemoryQuotaStore {
    async fn begin_execution(
        &self,
        tenant: &str,
        quota: &QuotaPolicy,
    ) -> Result<QuotaUsage, QuotaError> {
        self.with_day(tenant, |day, resets_in| {
            check_limits(quota, day.executions, day.cpu, resets_in)?;
            day.executions += 1;
            Ok(usage_of(day, resets_in))
        })
    }

    async fn cancel_execution(&self, tenant: &str) {
        self.with_day(tenant, |day, _| {
            day.executions = day.executions.saturating_sub(1)
        });
    }

    async fn add_cpu_time(&self, tenant: &str, cpu: Duration) {
        self.with_day(tenant, |day, _| day.cpu += cpu);
    }

    async fn usage(&self, tenant: &str) -> QuotaUsage {
        self.with_day(tenant, |day, resets_in| usage_of(day, resets_in))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn utc_dates_follow_the_civil_calendar() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_795_748_587), "2026-11-27");
    }

    #[tokio::test]
    async fn limits_hold_until_utc_midnight_then_reset() {
        // 23:59:00 UTC on some day.
        let now = Arc::new(AtomicU64::new(20_000 * DAY_SECS + DAY_SECS - 60));
        let clock_now = now.clone();
        let store = InMemoryQuotaStore::with_clock(Arc::new(move || {
            UNIX_EPOCH + Duration::from_secs(clock_now.load(Ordering::SeqCst))
        }));
        let quota = QuotaPolicy {
            executions_per_day: Some(2),
            cpu_seconds_per_day: Some(1),
            ..QuotaPolicy::default()
        };
        store.begin_execution("a", &quota).await.unwrap();
        store.begin_execution("a", &quota).await.unwrap();
        let QuotaError::Denied(denied) = store.begin_execution("a", &quota).await.unwrap_err()
        else {
            panic!("an in-memory store is always available")
        };
        assert_eq!(denied.retry_after, Duration::from_secs(60));
        // A cancelled run gives its execution back.
        store.cancel_execution("a").await;
        store.begin_execution("a", &quota).await.unwrap();
        now.fetch_add(60, Ordering::SeqCst);
        store.begin_execution("a", &quota).await.unwrap();
        store.add_cpu_time("a", Duration::from_millis(1500)).await;
        let QuotaError::Denied(denied) = store.begin_execution("a", &quota).await.unwrap_err()
        else {
            panic!("an in-memory store is always available")
        };
        assert!(denied.detail.contains("CPU-seconds"), "{}", denied.detail);
        assert_eq!(store.usage("a").await.executions, 1);
    }
}
