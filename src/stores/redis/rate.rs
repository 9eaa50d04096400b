//! Rate limits shared by every replica: GCRA in Redis, on Redis's clock.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use super::RedisBackend;
use crate::stores::StoreUnavailable;
use crate::stores::rate::{RateDecision, RateStore, replenish_interval};
use crate::tenants::RateLimitPolicy;

/// Rate limits shared by every replica; `local` decides while Redis is down
/// for tenants that fall back per replica.
pub struct RedisRateStore {
    backend: Arc<RedisBackend>,
    local: Arc<dyn RateStore>,
}

impl RedisRateStore {
    pub fn new(backend: Arc<RedisBackend>, local: Arc<dyn RateStore>) -> Self {
        Self { backend, local }
    }
}

#[async_trait]
impl RateStore for RedisRateStore {
    async fn check(
        &self,
        tenant: &str,
        policy: &RateLimitPolicy,
    ) -> Result<RateDecision, StoreUnavailable> {
        let interval_us = (replenish_interval(policy).as_micros() as u64).max(1);
        let key = format!("pyexec:rate:{tenant}");
        let answer = self
            .backend
            .call(async |conn: &mut ConnectionManager| {
                self.backend
                    .gcra
                    .key(&key)
                    .arg(interval_us)
                    .arg(policy.burst)
                    .invoke_async::<(i64, i64, i64, i64)>(conn)
                    .await
            })
            .await;
        match answer {
            Ok((allowed, remaining, retry_us, reset_us)) => {
                let micros = |us: i64| Duration::from_micros(us.max(0) as u64);
                Ok(RateDecision {
                    allowed: allowed == 1,
                    remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
                    reset: micros(reset_us),
                    retry_after: micros(retry_us),
                })
            }
            Err(_) => {
                self.backend.on_failure(policy.on_failure)?;
                self.local.check(tenant, policy).await
            }
        }
    }
}
