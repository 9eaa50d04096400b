//! Tenants: who may run scripts, with which credentials, limits and cache.
//!
//! A tenant comes from a policy file (`policy`) or is the built-in bootstrap
//! tenant. The live set is a [`TenantRegistry`] snapshot held by a
//! [`PolicyStore`], swapped whole on reload (`reload`).

pub mod policy;
pub mod reload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use reload::{PolicyStore, ReloadStatus};

use crate::sandbox::{RunShare, SandboxPolicy};

/// The name of the tenant that exists without any policy file.
pub const BOOTSTRAP_TENANT: &str = "default";

#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    /// A disabled tenant's valid credentials get 403, not 401: the caller
    /// learns the tenant is switched off rather than that its key is wrong.
    pub disabled: bool,
    pub sandbox: SandboxPolicy,
    pub request: RequestLimits,
    /// Content hash of the policy file (`builtin` for the bootstrap tenant);
    /// part of every cache key.
    pub revision: String,
    /// The policy's file name, for messages.
    pub source: String,
    pub api_key_hashes: Vec<KeyHash>,
    pub jwt: Option<JwtPolicy>,
    /// `None`: no request-rate limit.
    pub rate_limit: Option<RateLimitPolicy>,
    pub quota: QuotaPolicy,
    pub cache: CachePolicy,
}

impl Tenant {
    pub fn bootstrap() -> Self {
        Self {
            name: BOOTSTRAP_TENANT.into(),
            disabled: false,
            sandbox: SandboxPolicy {
                share: RunShare {
                    group: BOOTSTRAP_TENANT.into(),
                    max_concurrent_runs: None,
                },
                ..SandboxPolicy::default()
            },
            request: RequestLimits::default(),
            revision: "builtin".into(),
            source: "built-in".into(),
            api_key_hashes: Vec::new(),
            jwt: None,
            rate_limit: None,
            quota: QuotaPolicy::default(),
            // Off: scripts may be non-deterministic; a policy opts in.
            cache: CachePolicy {
                enabled: false,
                ttl: policy::DEFAULT_CACHE_TTL,
            },
        }
    }
}

/// What one request may bring: checked by the gateway before anything runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_script_bytes: usize,
    /// Input files (`files`) at most, and their decoded bytes together.
    pub max_input_files: usize,
    pub max_input_bytes: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_script_bytes: crate::defaults::MAX_SCRIPT_BYTES,
            max_input_files: 64,
            max_input_bytes: 8 * crate::sandbox::MIB,
        }
    }
}

#[derive(Clone)]
pub struct JwtPolicy {
    pub issuer: String,
    pub audience: Option<String>,
    /// Pinned: a token whose header names anything else is refused.
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
    /// Kept only so that `pyexec token` can mint HS* tokens locally.
    pub hmac_secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for JwtPolicy {
    // Never prints key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtPolicy")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitPolicy {
    pub requests_per_second: f64,
    pub burst: u32,
    /// What to do when the shared (Redis) store cannot answer.
    pub on_failure: OnFailure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaPolicy {
    pub executions_per_day: Option<u64>,
    pub cpu_seconds_per_day: Option<u64>,
    /// What to do when the shared (Redis) store cannot answer.
    pub on_failure: OnFailure,
}

/// `spec.redis.onFailure`: how a tenant's rate limit and quota behave while
/// the shared store (Redis) is slow or down. Without Redis it changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OnFailure {
    /// Refuse with 503 `unavailable`: limits are never looser than configured.
    FailClosed,
    /// Decide on this replica's own state (limits then multiply by the
    /// replica count) and buffer quota usage until Redis is back.
    #[default]
    PerReplica,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::FailClosed => "failClosed",
            OnFailure::PerReplica => "perReplica",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    pub enabled: bool,
    pub ttl: Duration,
}

pub type KeyHash = [u8; 32];

pub fn hash_api_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// Every tenant the gateway knows, found by the hash of a presented key or by
/// a JWT's issuer. Immutable: a reload builds a new one.
#[derive(Debug, Default)]
pub struct TenantRegistry {
    api_keys: Vec<(KeyHash, Arc<Tenant>)>,
    issuers: BTreeMap<String, Arc<Tenant>>,
    tenants: BTreeMap<String, Arc<Tenant>>,
}

impl TenantRegistry {
    pub fn with_bootstrap_key(api_key: &str) -> Self {
        Self::new(Some(api_key), Vec::new())
    }

    /// The bootstrap tenant (when it has a key) plus the policy tenants.
    ///
    /// A tenant without `spec.sandbox.maxConcurrentRuns` gets the sandbox's
    /// default share (half of the slots); the only tenant of a server gets
    /// every slot, as nobody else could use them.
    pub fn new(bootstrap_key: Option<&str>, tenants: Vec<Tenant>) -> Self {
        let mut all = Vec::with_capacity(tenants.len() + 1);
        if let Some(key) = bootstrap_key {
            let mut tenant = Tenant::bootstrap();
            tenant.api_key_hashes = vec![hash_api_key(key)];
            all.push(tenant);
        }
        all.extend(tenants);
        let alone = all.len() == 1;
        let mut registry = Self::default();
        for mut tenant in all {
            let share = &mut tenant.sandbox.share;
            if alone && share.max_concurrent_runs.is_none() {
                share.max_concurrent_runs = Some(usize::MAX);
            }
            registry.insert(tenant);
        }
        registry
    }

    fn insert(&mut self, tenant: Tenant) {
        let tenant = Arc::new(tenant);
        for hash in &tenant.api_key_hashes {
            self.api_keys.push((*hash, tenant.clone()));
        }
        if let Some(jwt) = &tenant.jwt {
            self.issuers.insert(jwt.issuer.clone(), tenant.clone());
        }
        self.tenants.insert(tenant.name.clone(), tenant);
    }

    /// Compares the presented key's hash with every known hash in constant
    /// time, so timing tells nothing about how close a guess was.
    pub fn find_by_api_key(&self, presented: &str) -> Option<Arc<Tenant>> {
        let presented = hash_api_key(presented);
        let mut found = None;
        for (hash, tenant) in &self.api_keys {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(tenant.clone());
            }
        }
        found
    }

    /// The tenant whose JWT issuer is `iss` (issuers are public, no secret
    /// is compared here).
    pub fn find_by_issuer(&self, iss: &str) -> Option<Arc<Tenant>> {
        self.issuers.get(iss).cloned()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.get(name).cloned()
    }

    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.values()
    }
}

/// A fresh random API key: 32 bytes of the OS's randomness, hex-encoded.
pub fn generate_api_key() -> String {
    format!("pyx_{}", hex::encode(rand::random::<[u8; 32]>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_only_tenant_gets_every_slot_and_two_tenants_get_the_default_share() {
        let alone = TenantRegistry::with_bootstrap_key("k1");
        let share = &alone.get(BOOTSTRAP_TENANT).unwrap().sandbox.share;
        assert_eq!(share.max_concurrent_runs, Some(usize::MAX));
        let mut other = Tenant::bootstrap();
        other.name = "other".into();
        other.sandbox.share.group = "other".into();
        let two = TenantRegistry::new(Some("k1"), vec![other]);
        for tenant in two.tenants() {
            assert_eq!(
                tenant.sandbox.share.max_concurrent_runs, None,
                "{}",
                tenant.name
            );
        }
    }
}
