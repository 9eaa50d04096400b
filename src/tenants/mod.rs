//! Tenants: who may run scripts, and with which sandbox limits.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::sandbox::{SandboxPolicy, KIB};

/// The name of the tenant that exists without any policy file.
pub const BOOTSTRAP_TENANT: &str = "default";

#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    pub sandbox: SandboxPolicy,
    pub max_script_bytes: usize,
}

impl Tenant {
    pub fn bootstrap() -> Self {
        Self {
            name: BOOTSTRAP_TENANT.into(),
            sandbox: SandboxPolicy::default(),
            max_script_bytes: 10 * KIB as usize,
        }
    }
}

pub type KeyHash = [u8; 32];

pub fn hash_api_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// Every tenant the gateway knows, found by the hash of a presented key.
#[derive(Debug, Default)]
pub struct TenantRegistry {
    api_keys: Vec<(KeyHash, Arc<Tenant>)>,
}

impl TenantRegistry {
    pub fn with_bootstrap_key(api_key: &str) -> Self {
        Self {
            api_keys: vec![(hash_api_key(api_key), Arc::new(Tenant::bootstrap()))],
        }
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
}

/// A fresh random API key: 32 bytes of the OS's randomness, hex-encoded.
pub fn generate_api_key() -> String {
    format!("pyx_{}", hex::encode(rand::random::<[u8; 32]>()))
}
