//! The result cache's second tier, shared by every replica.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;

use super::{MAX_SHARED_CACHE_VALUE, RedisBackend};
use crate::stores::cache::CacheKey;
use crate::tenants::Tenant;

/// The result cache's second tier: results one replica computed are hits on
/// every other. A failure is a miss, never an error.
#[derive(Clone)]
pub struct RedisCache {
    backend: Arc<RedisBackend>,
}

impl RedisCache {
    pub fn new(backend: Arc<RedisBackend>) -> Self {
        Self { backend }
    }

    /// `pyexec:cache:<tenant>:<policy revision>:<hex of the in-process key>`:
    /// the in-process key already covers tenant and revision; having them in
    /// the name too lets an operator see (and delete) one tenant's entries.
    pub fn key(tenant: &Tenant, key: &CacheKey) -> String {
        format!(
            "pyexec:cache:{}:{}:{}",
            tenant.name,
            tenant.revision,
            hex::encode(key)
        )
    }

    /// A cached body and the time it has left.
    pub async fn get(&self, tenant: &Tenant, key: &CacheKey) -> Option<(Bytes, Duration)> {
        let name = Self::key(tenant, key);
        let (body, ttl_ms) = self
            .backend
            .call(async |conn: &mut ConnectionManager| {
                redis::pipe()
                    .get(&name)
                    .pttl(&name)
                    .query_async::<(Option<Vec<u8>>, i64)>(conn)
                    .await
            })
            .await
            .ok()?;
        // PTTL is negative for a key that just expired or has no expiry.
        let body = body.filter(|_| ttl_ms > 0)?;
        Some((Bytes::from(body), Duration::from_millis(ttl_ms as u64)))
    }

    pub async fn put(&self, tenant: &Tenant, key: &CacheKey, body: &Bytes, ttl: Duration) {
        if body.len() > MAX_SHARED_CACHE_VALUE {
            self.backend
                .stats
                .cache_too_large
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let name = Self::key(tenant, key);
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let _ = self
            .backend
            .call(async |conn: &mut ConnectionManager| {
                redis::cmd("SET")
                    .arg(&name)
                    .arg(body.as_ref())
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<()>(conn)
                    .await
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_are_namespaced_by_tenant_and_policy_revision() {
        let mut tenant = Tenant::bootstrap();
        tenant.name = "acme".into();
        tenant.revision = "0123456789abcdef".into();
        assert_eq!(
            RedisCache::key(&tenant, &[0xab; 32]),
            format!("pyexec:cache:acme:0123456789abcdef:{}", "ab".repeat(32))
        );
    }
}
