//! The policy file's shape, exactly as it is written: every struct refuses
//! unknown fields, so a typo never leaves a limit at its default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::sandbox::SandboxMode;
use crate::tenants::OnFailure;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct PolicyFile {
    pub(super) api_version: String,
    pub(super) kind: String,
    pub(super) metadata: Metadata,
    pub(super) spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Metadata {
    pub(super) name: String,
    /// Accepted (and ignored) so that files can carry Kubernetes-style labels.
    #[serde(default)]
    #[allow(dead_code)]
    pub(super) labels: BTreeMap<String, String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub(super) annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Spec {
    /// Keeps the file (and its keys known) but refuses its requests with 403.
    #[serde(default)]
    pub(super) disabled: bool,
    #[serde(default)]
    pub(super) auth: AuthSpec,
    pub(super) rate_limit: Option<RateLimitSpec>,
    #[serde(default)]
    pub(super) quota: QuotaSpec,
    #[serde(default)]
    pub(super) sandbox: SandboxSpec,
    #[serde(default)]
    pub(super) cache: CacheSpec,
    #[serde(default)]
    pub(super) redis: RedisSpec,
}

/// How the tenant's limits behave when the shared store (Redis) fails.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RedisSpec {
    pub(super) on_failure: Option<OnFailure>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct AuthSpec {
    #[serde(default)]
    pub(super) api_keys: Vec<ApiKeySpec>,
    pub(super) jwt: Option<JwtSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ApiKeySpec {
    /// Hex SHA-256 of the key (`pyexec keys new` prints it). Never the key.
    pub(super) sha256: String,
    /// Free text, e.g. who holds the key; helps rotation.
    #[serde(default)]
    #[allow(dead_code)]
    pub(super) description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct JwtSpec {
    pub(super) issuer: String,
    pub(super) audience: Option<String>,
    pub(super) algorithms: Vec<String>,
    pub(super) hmac_secret_env: Option<String>,
    pub(super) hmac_secret_file: Option<PathBuf>,
    pub(super) public_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RateLimitSpec {
    pub(super) requests_per_second: f64,
    pub(super) burst: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct QuotaSpec {
    pub(super) executions_per_day: Option<u64>,
    pub(super) cpu_seconds_per_day: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct SandboxSpec {
    pub(super) mode: Option<SandboxMode>,
    pub(super) wall_timeout_ms: Option<u64>,
    pub(super) cpu_seconds: Option<u64>,
    #[serde(rename = "memoryMiB")]
    pub(super) memory_mib: Option<u64>,
    pub(super) max_pids: Option<u64>,
    pub(super) max_script_bytes: Option<u64>,
    pub(super) max_output_bytes: Option<u64>,
    pub(super) max_result_bytes: Option<u64>,
    #[serde(rename = "tmpfsMiB")]
    pub(super) tmpfs_mib: Option<u64>,
    pub(super) max_input_files: Option<u64>,
    pub(super) max_input_bytes: Option<u64>,
    pub(super) max_output_files: Option<u64>,
    pub(super) max_output_file_bytes: Option<u64>,
    #[serde(rename = "shmMiB")]
    pub(super) shm_mib: Option<u64>,
    #[serde(rename = "fileSizeMiB")]
    pub(super) file_size_mib: Option<u64>,
    pub(super) nsjail_config: Option<String>,
    pub(super) max_concurrent_runs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct CacheSpec {
    #[serde(default)]
    pub(super) enabled: bool,
    pub(super) ttl_seconds: Option<u64>,
}
