//! The child spans of a request, one per gateway stage, with the names Cloud
//! Trace shows: `authenticate`, `validate`, `rate_limit`, `quota` and
//! `cache.lookup`. The sandbox's own `sandbox.queue` and `sandbox.run` are
//! made by `sandbox::trace`, with the helpers here.
//!
//! Every span has an `outcome` field a stage fills in ([`record_outcome`]).
//! Fields hold identifiers and numbers only: never the script, its args, its
//! output, keys or tokens — the exported data leaves the machine.
//!
//! Using one from a stage (the pattern the rate limit and quota use):
//! ```ignore
//! let span = telemetry::spans::rate_limit(&tenant.name);
//! let checked = span.in_scope(|| limiter.check(&tenant));
//! telemetry::spans::record_outcome(&span, if checked.is_ok() { "allowed" } else { "rate-limited" });
//! ```

use sha2::{Digest, Sha256};
use tracing::Span;
use tracing::field::Empty;

use super::metrics::metrics;

/// The first 16 hex digits (64 bits) of the script's SHA-256: enough to
/// group runs of the same script, while the script itself stays private.
pub fn script_sha256_prefix(script: &str) -> String {
    let digest = Sha256::digest(script.as_bytes());
    hex::encode(&digest[..8])
}

pub fn record_outcome(span: &Span, outcome: &str) {
    span.record("pyexec.outcome", outcome);
}

pub fn authenticate() -> Span {
    tracing::info_span!(
        "authenticate",
        pyexec.auth.scheme = "bearer",
        pyexec.tenant = Empty,
        pyexec.outcome = Empty
    )
}

pub fn validate() -> Span {
    tracing::info_span!(
        "validate",
        http.request.body.size = Empty,
        pyexec.script.sha256_prefix = Empty,
        pyexec.outcome = Empty
    )
}

pub fn rate_limit(tenant: &str) -> Span {
    tracing::info_span!("rate_limit", pyexec.tenant = %tenant, pyexec.outcome = Empty)
}

pub fn quota(tenant: &str) -> Span {
    tracing::info_span!("quota", pyexec.tenant = %tenant, pyexec.outcome = Empty)
}

/// `cache.result` is `hit`, `miss` or `bypass`; [`record_cache`] sets it and
/// counts it.
pub fn cache_lookup(tenant: &str) -> Span {
    tracing::info_span!(
        "cache.lookup",
        pyexec.tenant = %tenant,
        pyexec.cache.result = Empty,
        pyexec.outcome = Empty
    )
}

pub fn record_cache(span: &Span, tenant: &str, result: &str) {
    span.record("pyexec.cache.result", result);
    span.record("pyexec.outcome", result);
    metrics().cache_lookup(tenant, result);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_hash_is_a_16_digit_prefix_of_its_sha256() {
        // sha256("") = e3b0c44298fc1c14…
        assert_eq!(script_sha256_prefix(""), "e3b0c44298fc1c14");
    }
}
