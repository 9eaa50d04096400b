//! Result cache: successful results only, byte-weighted, per-tenant TTL, and
//! single flight (concurrent identical requests share one run).
//!
//! The key is a SHA-256 over the tenant, its policy revision, the runtime
//! version, the script and the canonical `args`, so one tenant can never read
//! another's result and any policy or runtime change starts a fresh key space.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use moka::future::Cache;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::sandbox::Job;
use crate::tenants::Tenant;

pub type CacheKey = [u8; 32];

/// A cached 200 body, when it was computed and how long it may be served.
#[derive(Debug)]
pub struct CachedResult {
    pub body: Bytes,
    /// How long it may be served from `stored_at`.
    pub ttl: Duration,
    /// When the run that computed it ended (on another replica for an entry
    /// from Redis: its age there is kept).
    pub stored_at: Instant,
}

impl CachedResult {
    /// An answer computed just now.
    pub fn fresh(body: Bytes, ttl: Duration) -> Self {
        Self {
            body,
            ttl,
            stored_at: Instant::now(),
        }
    }

    /// An answer computed `age` ago that may be served for `left` more.
    pub fn aged(body: Bytes, age: Duration, left: Duration) -> Self {
        let now = Instant::now();
        Self {
            body,
            ttl: age + left,
            stored_at: now.checked_sub(age).unwrap_or(now),
        }
    }

    /// Its age (RFC 9111 §5.1).
    pub fn age(&self) -> Duration {
        self.stored_at.elapsed()
    }

    /// How much longer it may be served.
    pub fn ttl_left(&self) -> Duration {
        self.ttl.saturating_sub(self.age())
    }
}

struct TenantTtl;

impl Expiry<CacheKey, Arc<CachedResult>> for TenantTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedResult>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl_left())
    }

    /// A refreshed entry (`Cache-Control: no-cache`) starts its TTL again.
    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedResult>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl_left())
    }
}

#[derive(Clone)]
pub struct ResultCache {
    /// `None` when the server's cache size is 0.
    inner: Option<Cache<CacheKey, Arc<CachedResult>>>,
}

impl ResultCache {
    pub fn new(max_bytes: u64) -> Self {
        let inner = (max_bytes > 0).then(|| {
            Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_key: &CacheKey, value: &Arc<CachedResult>| {
                    u32::try_from(value.body.len() + 64).unwrap_or(u32::MAX)
                })
                .expire_after(TenantTtl)
                .build()
        });
        Self { inner }
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    pub fn inner(&self) -> Option<&Cache<CacheKey, Arc<CachedResult>>> {
        self.inner.as_ref()
    }

    /// (entries, weighted bytes) for `/health`; approximate by design.
    pub fn stats(&self) -> (u64, u64) {
        self.inner
            .as_ref()
            .map_or((0, 0), |c| (c.entry_count(), c.weighted_size()))
    }
}

/// The cache key of a request: its script, arguments and input files (each
/// path and content, in the request's order, which is the order they are
/// written in).
pub fn key(tenant: &Tenant, runtime: &str, job: &Job) -> CacheKey {
    let mut hasher = Sha256::new();
    let args = canonical_json(&Value::Object(job.args.clone()));
    let file_count = (job.files.len() as u64).to_be_bytes();
    // Length-prefixed parts: no two different inputs share a byte stream.
    let parts = [
        b"pyexec-cache-v2".as_slice(),
        tenant.name.as_bytes(),
        tenant.revision.as_bytes(),
        runtime.as_bytes(),
        job.script.as_bytes(),
        args.as_bytes(),
        file_count.as_slice(),
    ]
    .into_iter()
    .chain(
        job.files
            .iter()
            .flat_map(|file| [file.path.as_bytes(), file.content.as_bytes()]),
    );
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// JSON with object keys sorted at every level, so `{"a":1,"b":2}` and
/// `{"b":2,"a":1}` are the same request whatever the map's order.
pub fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical_json(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", inner.join(","))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::files::RunFile;
    use serde_json::json;

    fn job(script: &str, args: Value, files: &[(&str, &str)]) -> Job {
        Job {
            script: script.into(),
            args: args.as_object().unwrap().clone(),
            files: files
                .iter()
                .map(|(path, content)| RunFile {
                    path: path.to_string(),
                    content: content.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_key_depends_on_tenant_revision_runtime_script_args_and_files_but_not_key_order() {
        let a = Tenant::bootstrap();
        let args = || json!({"x": 1, "y": {"b": 1, "a": 2}});
        let base = key(&a, "3.11.2", &job("s", args(), &[]));
        let same = key(
            &a,
            "3.11.2",
            &job("s", json!({"y": {"a": 2, "b": 1}, "x": 1}), &[]),
        );
        assert_eq!(base, same);
        let with_file = key(&a, "3.11.2", &job("s", args(), &[("d.csv", "YQ==")]));
        let mut b = Tenant::bootstrap();
        b.name = "other".into();
        let mut revised = Tenant::bootstrap();
        revised.revision = "abc".into();
        for other in [
            key(&b, "3.11.2", &job("s", args(), &[])),
            key(&revised, "3.11.2", &job("s", args(), &[])),
            key(&a, "3.12.0", &job("s", args(), &[])),
            key(&a, "3.11.2", &job("t", args(), &[])),
            key(
                &a,
                "3.11.2",
                &job("s", json!({"x": 2, "y": {"b": 1, "a": 2}}), &[]),
            ),
            with_file,
            key(&a, "3.11.2", &job("s", args(), &[("d.csv", "Yg==")])),
            key(&a, "3.11.2", &job("s", args(), &[("e.csv", "YQ==")])),
            key(
                &a,
                "3.11.2",
                &job("s", args(), &[("d.csv", "YQ=="), ("e.csv", "")]),
            ),
        ] {
            assert_ne!(base, other);
        }
        assert_ne!(
            with_file,
            key(&a, "3.11.2", &job("s", args(), &[("d.csv", "Yg==")]))
        );
    }
}
