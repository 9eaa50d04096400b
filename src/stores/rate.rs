//! Request-rate limits per tenant (GCRA via `governor`), kept in this
//! process; `redis` has the shared version.
//!
//! The key is the tenant's name, which comes from the verified credential:
//! no client header (X-Forwarded-For included) can change whose budget a
//! request spends.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use parking_lot::Mutex;

use super::StoreUnavailable;
use crate::tenants::RateLimitPolicy;

/// One rate decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateDecision {
    pub allowed: bool,
    /// Requests that could be made right now.
    pub remaining: u32,
    /// Time until the full burst is available again.
    pub reset: Duration,
    /// When refused: time until the next request is allowed.
    pub retry_after: Duration,
}

/// Where rate-limit state lives: in memory per instance, or shared by every
/// replica in Redis (`super::redis::RedisRateStore`).
#[async_trait]
pub trait RateStore: Send + Sync + 'static {
    /// Spends one request of `tenant`'s budget if there is one. `Err` only
    /// from a shared store that could not answer and whose tenant fails closed.
    async fn check(
        &self,
        tenant: &str,
        policy: &RateLimitPolicy,
    ) -> Result<RateDecision, StoreUnavailable>;
}

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, StateInformationMiddleware>;
/// Each tenant's limiter with the policy it was built for.
type Limiters<C> = HashMap<String, (RateLimitPolicy, Arc<Limiter<C>>)>;

/// One GCRA limiter per tenant, rebuilt when the tenant's policy changes.
/// Generic over the clock so tests can move time instead of sleeping.
pub struct InMemoryRateStore<C: Clock = DefaultClock> {
    clock: C,
    limiters: Mutex<Limiters<C>>,
}

impl InMemoryRateStore<DefaultClock> {
    pub fn new() -> Self {
        Self::with_clock(DefaultClock::default())
    }
}

impl Default for InMemoryRateStore<DefaultClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock + Clone> InMemoryRateStore<C> {
    pub fn with_clock(clock: C) -> Self {
        Self {
            clock,
            limiters: Mutex::new(HashMap::new()),
        }
    }

    fn limiter(&self, tenant: &str, policy: &RateLimitPolicy) -> Arc<Limiter<C>> {
        let mut limiters = self.limiters.lock();
        match limiters.get(tenant) {
            Some((current, limiter)) if current == policy => limiter.clone(),
            _ => {
                let limiter = Arc::new(
                    RateLimiter::direct_with_clock(quota_of(policy), self.clock.clone())
                        .with_middleware::<StateInformationMiddleware>(),
                );
                limiters.insert(tenant.to_string(), (*policy, limiter.clone()));
                limiter
            }
        }
    }
}

#[async_trait]
impl<C> RateStore for InMemoryRateStore<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    async fn check(
        &self,
        tenant: &str,
        policy: &RateLimitPolicy,
    ) -> Result<RateDecision, StoreUnavailable> {
        let limiter = self.limiter(tenant, policy);
        let period = replenish_interval(policy);
        Ok(match limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                RateDecision {
                    allowed: true,
                    remaining,
                    reset: period * policy.burst.saturating_sub(remaining),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                RateDecision {
                    allowed: false,
                    remaining: 0,
                    reset: period * policy.burst,
                    retry_after: wait,
                }
            }
        })
    }
}

/// The GCRA emission interval: one request's share of the burst.
pub fn replenish_interval(policy: &RateLimitPolicy) -> Duration {
    Duration::from_secs_f64(1.0 / policy.requests_per_second).max(Duration::from_nanos(1))
}

fn quota_of(policy: &RateLimitPolicy) -> Quota {
    let burst = NonZeroU32::new(policy.burst.max(1)).expect("burst is at least 1");
    Quota::with_period(replenish_interval(policy))
        .expect("a positive period")
        .allow_burst(burst)
}

/// Whole seconds, rounded up: a client that waits this long is let in.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[tokio::test]
    async fn burst_then_refusal_then_recovery_on_a_fake_clock() {
        let clock = FakeRelativeClock::default();
        let store = InMemoryRateStore::with_clock(clock.clone());
        let policy = RateLimitPolicy {
            requests_per_second: 1.0,
            burst: 2,
            on_failure: Default::default(),
        };
        assert_eq!(store.check("a", &policy).await.unwrap().remaining, 1);
        assert_eq!(store.check("a", &policy).await.unwrap().remaining, 0);
        let refused = store.check("a", &policy).await.unwrap();
        assert!(!refused.allowed);
        assert_eq!(ceil_secs(refused.retry_after), 1);
        // Another tenant has its own budget.
        assert!(store.check("b", &policy).await.unwrap().allowed);
        clock.advance(Duration::from_secs(1));
        assert!(store.check("a", &policy).await.unwrap().allowed);
    }
}
