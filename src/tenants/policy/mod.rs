//! Tenant policy files: one YAML document per tenant, shaped like a
//! Kubernetes object so it can live in a ConfigMap and be reviewed in git.
//!
//! Parsing is strict (`deny_unknown_fields` everywhere): a typo must never
//! silently leave a limit at its default. Every error names the file, the
//! field and the reason.
//!
//! Here: reading a folder and a file. `schema` is the file's shape, `jwt`
//! and `sandbox` turn those sections into the tenant's policy.

mod jwt;
mod sandbox;
mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{CachePolicy, KeyHash, QuotaPolicy, RateLimitPolicy, Tenant};
use jwt::jwt_policy;
use sandbox::sandbox_policy;
use schema::PolicyFile;

pub const API_VERSION: &str = "pyexec.dev/v1";
pub const KIND: &str = "Tenant";

pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);

/// What reading one file needs besides the file.
#[derive(Debug, Clone)]
pub struct LoadContext {
    /// Folder holding `base.cfg`; a policy's `nsjailConfig` names a file in it.
    pub nsjail_dir: PathBuf,
}

/// One file's problems, already phrased as `file: field: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The files of a policies folder that are tenant policies: `*.yaml` and
/// `*.yml`, not hidden. ConfigMap mounts keep their real files under hidden
/// `..data`/`..<timestamp>` folders and link them from the top, so the top
/// level is what counts.
pub fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        // Follows symlinks: ConfigMap files are links into `..data`.
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every policy in `dir`. All or nothing: one bad file fails the whole
/// folder, so a half-applied change never reaches the gateway.
pub fn load_dir(dir: &Path, ctx: &LoadContext) -> Result<Vec<Tenant>, Vec<PolicyError>> {
    let files = policy_files(dir).map_err(|e| {
        vec![PolicyError(format!(
            "cannot read the policies folder {}: {e}",
            dir.display()
        ))]
    })?;
    let mut tenants: Vec<Tenant> = Vec::new();
    let mut errors = Vec::new();
    for file in &files {
        match load_file(file, ctx) {
            Ok(found) => tenants.extend(found),
            Err(e) => errors.push(e),
        }
    }
    // Cross-file rules: names, issuers and keys each belong to one tenant.
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    let mut issuers: BTreeMap<&str, &str> = BTreeMap::new();
    let mut keys: BTreeMap<KeyHash, &str> = BTreeMap::new();
    for tenant in &tenants {
        let file = tenant.source.as_str();
        if let Some(other) = names.insert(&tenant.name, file) {
            errors.push(PolicyError(format!(
                "{file}: metadata.name: tenant `{}` is also defined in {other}",
                tenant.name
            )));
        }
        if let Some(jwt) = &tenant.jwt {
            if let Some(other) = issuers.insert(&jwt.issuer, file) {
                errors.push(PolicyError(format!(
                    "{file}: spec.auth.jwt.issuer: issuer `{}` is also used in {other}; tokens are routed to their tenant by issuer",
                    jwt.issuer
                )));
            }
        }
        for hash in &tenant.api_key_hashes {
            if let Some(other) = keys.insert(*hash, file) {
                errors.push(PolicyError(format!(
                    "{file}: spec.auth.apiKeys: the key {} is also listed in {other}",
                    hex::encode(hash)
                )));
            }
        }
    }
    if errors.is_empty() {
        Ok(tenants)
    } else {
        Err(errors)
    }
}

/// Reads and validates one policy file. A file may hold several tenants as
/// YAML documents separated by `---`: a platform that mounts one secret as
/// one file (Cloud Run's Secret Manager volumes) can then carry them all.
pub fn load_file(path: &Path, ctx: &LoadContext) -> Result<Vec<Tenant>, PolicyError> {
    // Errors name the file, not the host folder: they may reach /health.
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let text = std::fs::read(path).map_err(|e| PolicyError(format!("{file}: cannot read: {e}")))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let documents = split_documents(&text).map_err(|e| PolicyError(format!("{file}: {e}")))?;
    if documents.len() <= 1 {
        // One document: parsed from the file's own text, so errors keep
        // their line numbers.
        return parse(&text, &file, base, ctx)
            .map(|tenant| vec![tenant])
            .map_err(|e| PolicyError(format!("{file}: {e}")));
    }
    documents
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            let name = format!("{file} (document {})", i + 1);
            parse(doc.as_bytes(), &name, base, ctx).map_err(|e| PolicyError(format!("{name}: {e}")))
        })
        .collect()
}

/// The non-empty YAML documents of a file, each re-serialised on its own.
fn split_documents(text: &[u8]) -> Result<Vec<String>, String> {
    use serde::Deserialize;
    let mut documents = Vec::new();
    for document in yaml_serde::Deserializer::from_slice(text) {
        let value = yaml_serde::Value::deserialize(document).map_err(|e| e.to_string())?;
        if !value.is_null() {
            documents.push(yaml_serde::to_string(&value).map_err(|e| e.to_string())?);
        }
    }
    Ok(documents)
}

/// Parses a policy document. `base` resolves relative key file paths.
pub fn parse(text: &[u8], file: &str, base: &Path, ctx: &LoadContext) -> Result<Tenant, String> {
    // yaml_serde's messages carry the field path and the line.
    let doc: PolicyFile = yaml_serde::from_slice(text).map_err(|e| e.to_string())?;
    if doc.api_version != API_VERSION {
        return Err(format!(
            "apiVersion: must be `{API_VERSION}`, not `{}`",
            doc.api_version
        ));
    }
    if doc.kind != KIND {
        return Err(format!("kind: must be `{KIND}`, not `{}`", doc.kind));
    }
    let name = doc.metadata.name;
    if !valid_name(&name) {
        return Err(format!(
            "metadata.name: `{name}` must be 1-63 lowercase letters, digits or '-', starting with a letter"
        ));
    }
    if name == super::BOOTSTRAP_TENANT {
        return Err(format!(
            "metadata.name: `{name}` is reserved for the built-in bootstrap tenant"
        ));
    }
    let spec = doc.spec;
    let on_failure = spec.redis.on_failure.unwrap_or_default();
    let mut api_key_hashes = Vec::new();
    for (i, key) in spec.auth.api_keys.iter().enumerate() {
        let hash = parse_key_hash(&key.sha256)
            .map_err(|reason| format!("spec.auth.apiKeys[{i}].sha256: {reason}"))?;
        api_key_hashes.push(hash);
    }
    let jwt = spec.auth.jwt.map(|jwt| jwt_policy(jwt, base)).transpose()?;
    if api_key_hashes.is_empty() && jwt.is_none() {
        return Err(
            "spec.auth: the tenant has no credential; add apiKeys (see `pyexec keys new`) or jwt"
                .into(),
        );
    }
    let rate_limit = spec
        .rate_limit
        .map(|r| {
            if !(r.requests_per_second.is_finite()
                && r.requests_per_second > 0.0
                && r.requests_per_second <= 1_000_000.0)
            {
                return Err(format!(
                    "spec.rateLimit.requestsPerSecond: must be above 0 and at most 1000000, not {}",
                    r.requests_per_second
                ));
            }
            if r.burst == 0 {
                return Err("spec.rateLimit.burst: must be at least 1".to_string());
            }
            Ok(RateLimitPolicy {
                requests_per_second: r.requests_per_second,
                burst: r.burst,
                on_failure,
            })
        })
        .transpose()?;
    let quota = QuotaPolicy {
        executions_per_day: positive(spec.quota.executions_per_day, "spec.quota.executionsPerDay")?,
        cpu_seconds_per_day: positive(
            spec.quota.cpu_seconds_per_day,
            "spec.quota.cpuSecondsPerDay",
        )?,
        on_failure,
    };
    let (sandbox, request) = sandbox_policy(spec.sandbox, &name, ctx)?;
    let ttl = match spec.cache.ttl_seconds {
        None => DEFAULT_CACHE_TTL,
        Some(s @ 1..=604_800) => Duration::from_secs(s),
        Some(s) => {
            return Err(format!(
                "spec.cache.ttlSeconds: must be from 1 to 604800 (a week), not {s}"
            ));
        }
    };
    Ok(Tenant {
        name,
        disabled: spec.disabled,
        sandbox,
        request,
        revision: revision_of(text),
        source: file.to_string(),
        api_key_hashes,
        jwt,
        rate_limit,
        quota,
        cache: CachePolicy {
            enabled: spec.cache.enabled,
            ttl,
        },
    })
}

/// A policy's revision: the SHA-256 of its bytes, so any edit (even a
/// comment) gives a new revision and a new cache key space.
pub fn revision_of(text: &[u8]) -> String {
    hex::encode(&Sha256::digest(text)[..8])
}

fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn parse_key_hash(hex_hash: &str) -> Result<KeyHash, String> {
    let bytes = hex::decode(hex_hash.trim()).map_err(|_| {
        "must be the 64 hex digits of the key's SHA-256 (run `pyexec keys new`), not the key itself"
            .to_string()
    })?;
    bytes.try_into().map_err(|_| {
        "must be the 64 hex digits of the key's SHA-256 (run `pyexec keys new`)".to_string()
    })
}

fn positive(value: Option<u64>, field: &str) -> Result<Option<u64>, String> {
    match value {
        Some(0) => Err(format!(
            "{field}: must be at least 1 (leave it out for no limit)"
        )),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{MIB, SandboxMode};
    use crate::tenants::OnFailure;

    fn ctx() -> LoadContext {
        LoadContext {
            nsjail_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("nsjail"),
        }
    }

    const KEY_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000001";

    fn doc(spec: &str) -> String {
        format!(
            "apiVersion: pyexec.dev/v1\nkind: Tenant\nmetadata:\n  name: acme\nspec:\n  auth:\n    apiKeys:\n      - sha256: {KEY_HASH}\n{spec}"
        )
    }

    #[test]
    fn a_file_of_several_documents_holds_several_tenants() {
        let dir = tempfile::tempdir().unwrap();
        let other = doc("").replace("name: acme", "name: beta").replace(
            KEY_HASH,
            "0000000000000000000000000000000000000000000000000000000000000002",
        );
        std::fs::write(
            dir.path().join("tenants.yaml"),
            format!("{}---\n{other}---\n", doc("")),
        )
        .unwrap();
        let tenants = load_dir(dir.path(), &ctx()).unwrap();
        let names: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["acme", "beta"]);
    }

    #[test]
    fn a_bad_document_in_a_multi_document_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = doc("").replace("name: acme", "name: Bad_Name");
        std::fs::write(
            dir.path().join("tenants.yaml"),
            format!("{}---\n{bad}", doc("")),
        )
        .unwrap();
        let errors = load_dir(dir.path(), &ctx()).unwrap_err();
        assert!(
            errors[0]
                .0
                .starts_with("tenants.yaml (document 2): metadata.name"),
            "{errors:?}"
        );
    }

    fn parse_doc(text: &str) -> Result<Tenant, String> {
        parse(text.as_bytes(), "acme.yaml", Path::new("."), &ctx())
    }

    #[test]
    fn a_full_policy_maps_onto_the_tenant() {
        let tenant = parse_doc(&doc(
            "  rateLimit: {requestsPerSecond: 5, burst: 10}\n  quota: {executionsPerDay: 100, cpuSecondsPerDay: 60}\n  sandbox:\n    mode: cold\n    wallTimeoutMs: 2000\n    cpuSeconds: 2\n    memoryMiB: 64\n    maxPids: 8\n    maxScriptBytes: 2048\n    maxOutputBytes: 4096\n    tmpfsMiB: 4\n    maxConcurrentRuns: 3\n  cache: {enabled: true, ttlSeconds: 60}\n",
        ))
        .unwrap();
        assert_eq!(tenant.name, "acme");
        assert_eq!(tenant.sandbox.mode, SandboxMode::Cold);
        assert_eq!(tenant.sandbox.limits.memory_bytes, 64 * MIB);
        assert_eq!(tenant.sandbox.limits.wall_timeout, Duration::from_secs(2));
        assert_eq!(tenant.sandbox.limits.tmpfs_bytes, 4 * MIB);
        assert_eq!(tenant.request.max_script_bytes, 2048);
        assert_eq!(tenant.sandbox.share.group, "acme");
        assert_eq!(tenant.sandbox.share.max_concurrent_runs, Some(3));
        assert_eq!(tenant.rate_limit.unwrap().burst, 10);
        assert_eq!(tenant.quota.executions_per_day, Some(100));
        assert!(tenant.cache.enabled);
        assert_eq!(tenant.cache.ttl, Duration::from_secs(60));
        assert_eq!(tenant.revision.len(), 16);
        // Without `spec.redis`, limits fall back per replica when Redis fails.
        assert_eq!(tenant.quota.on_failure, OnFailure::PerReplica);
    }

    #[test]
    fn redis_on_failure_reaches_both_limits_and_typos_are_refused() {
        let tenant = parse_doc(&doc(
            "  rateLimit: {requestsPerSecond: 5, burst: 10}\n  redis: {onFailure: failClosed}\n",
        ))
        .unwrap();
        assert_eq!(tenant.rate_limit.unwrap().on_failure, OnFailure::FailClosed);
        assert_eq!(tenant.quota.on_failure, OnFailure::FailClosed);
        let err = parse_doc(&doc("  redis: {onFailure: failOpen}\n")).unwrap_err();
        assert!(
            err.contains("failOpen") && err.contains("spec.redis"),
            "{err}"
        );
        let err = parse_doc(&doc("  redis: {onfailure: failClosed}\n")).unwrap_err();
        assert!(err.contains("onfailure"), "{err}");
    }

    #[test]
    fn unknown_fields_are_errors_that_name_the_field() {
        let err = parse_doc(&doc("  sandbox:\n    memoryMb: 64\n")).unwrap_err();
        assert!(err.contains("memoryMb"), "{err}");
        assert!(err.contains("spec.sandbox"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field_and_the_reason() {
        for (spec, field) in [
            ("  sandbox:\n    memoryMiB: 1\n", "spec.sandbox.memoryMiB"),
            (
                "  sandbox:\n    maxConcurrentRuns: 0\n",
                "spec.sandbox.maxConcurrentRuns",
            ),
            (
                "  rateLimit: {requestsPerSecond: 0, burst: 1}\n",
                "spec.rateLimit.requestsPerSecond",
            ),
            (
                "  quota: {executionsPerDay: 0}\n",
                "spec.quota.executionsPerDay",
            ),
            (
                "  sandbox:\n    nsjailConfig: ../../etc/passwd\n",
                "spec.sandbox.nsjailConfig",
            ),
            (
                "  cache: {enabled: true, ttlSeconds: 0}\n",
                "spec.cache.ttlSeconds",
            ),
        ] {
            let err = parse_doc(&doc(spec)).unwrap_err();
            assert!(err.starts_with(field), "{spec}: {err}");
        }
    }

    #[test]
    fn wrong_kind_version_name_or_key_are_refused() {
        let good = doc("");
        for (from, to, field) in [
            ("pyexec.dev/v1", "v2", "apiVersion"),
            ("kind: Tenant", "kind: Pod", "kind"),
            ("name: acme", "name: Acme_Corp", "metadata.name"),
            ("name: acme", "name: default", "metadata.name"),
            (KEY_HASH, "pyx_plaintext_key", "spec.auth.apiKeys[0].sha256"),
        ] {
            let err = parse_doc(&good.replace(from, to)).unwrap_err();
            assert!(err.starts_with(field), "{to}: {err}");
        }
    }

    #[test]
    fn jwt_settings_are_checked_against_the_key() {
        let jwt = |body: &str| {
            format!(
                "apiVersion: pyexec.dev/v1\nkind: Tenant\nmetadata:\n  name: acme\nspec:\n  auth:\n    jwt:\n{body}"
            )
        };
        let err = parse_doc(&jwt(
            "      issuer: x\n      algorithms: [none]\n      hmacSecretEnv: X\n",
        ))
        .unwrap_err();
        assert!(err.contains("algorithms[0]"), "{err}");
        let err = parse_doc(&jwt(
            "      issuer: x\n      algorithms: [HS256, RS256]\n      hmacSecretEnv: X\n",
        ))
        .unwrap_err();
        assert!(err.contains("one kind of key"), "{err}");
        let err = parse_doc(&jwt("      issuer: x\n      algorithms: [HS256]\n")).unwrap_err();
        assert!(err.contains("exactly one"), "{err}");
        let err = parse_doc(&jwt(
            "      issuer: x\n      algorithms: [HS256]\n      hmacSecretEnv: PYEXEC_TEST_UNSET_VARIABLE\n",
        ))
        .unwrap_err();
        assert!(err.contains("is not set"), "{err}");
    }

    #[test]
    fn any_edit_changes_the_revision() {
        let a = parse_doc(&doc("")).unwrap();
        let b = parse_doc(&format!("{}# a comment\n", doc(""))).unwrap();
        assert_ne!(a.revision, b.revision);
    }
}
