//! Where per-tenant state lives: request-rate limits, daily quotas and the
//! result cache, each in this process's memory and, for several replicas,
//! in Redis (`redis`), behind the traits the gateway calls. No HTTP here.

pub mod cache;
pub mod quota;
pub mod rate;
pub mod redis;

use std::sync::Arc;

use quota::{InMemoryQuotaStore, QuotaStore};
use rate::{InMemoryRateStore, RateStore};

/// A shared store (Redis) could not answer and the tenant's policy says to
/// fail closed (`spec.redis.onFailure: failClosed`): the request gets 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreUnavailable;

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
