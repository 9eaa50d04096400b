//! The child spans of a request, one per stage, with the names Cloud Trace
//! shows: `authenticate`, `validate`, `rate_limit`, `quota`, `cache.lookup`,
//! `sandbox.queue` and `sandbox.run`.
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

use std::time::Duration;

use sha2::{Digest, Sha256};
use tracing::field::Empty;
use tracing::Span;

use super::metrics::{metrics, NO_TENANT};
use super::request;
use crate::sandbox::{RunReport, SandboxError};

/// The first 16 hex digits (64 bits) of the script's SHA-256: enough to
/// group runs of the same script, while the script itself stays private.
pub fn script_sha256_prefix(script: &str) -> String {
    let digest = Sha256::digest(script.as_bytes());
    hex::encode(&digest[..8])
}

pub fn record_outcome(span: &Span, outcome: &str) {
    span.record("outcome", outcome);
}

pub fn authenticate() -> Span {
    tracing::info_span!(
        "authenticate",
        auth.scheme = "bearer",
        tenant = Empty,
        outcome = Empty
    )
}

pub fn validate() -> Span {
    tracing::info_span!(
        "validate",
        request.body_bytes = Empty,
        script.sha256 = Empty,
        outcome = Empty
    )
}

pub fn rate_limit(tenant: &str) -> Span {
    tracing::info_span!("rate_limit", tenant = %tenant, outcome = Empty)
}

pub fn quota(tenant: &str) -> Span {
    tracing::info_span!("quota", tenant = %tenant, outcome = Empty)
}

/// `cache.result` is `hit`, `miss` or `bypass`; [`record_cache`] sets it and
/// counts it.
pub fn cache_lookup(tenant: &str) -> Span {
    tracing::info_span!(
        "cache.lookup",
        tenant = %tenant,
        cache.result = Empty,
        outcome = Empty
    )
}

pub fn record_cache(span: &Span, tenant: &str, result: &str) {
    span.record("cache.result", result);
    span.record("outcome", result);
    metrics().cache_lookup(tenant, result);
}

/// Waiting for a sandbox slot.
pub fn sandbox_queue(queue_depth: usize) -> Span {
    tracing::info_span!(
        "sandbox.queue",
        sandbox.queue_depth = queue_depth as i64,
        outcome = Empty
    )
}

/// Records the end of the wait; a refusal is counted by its reason.
pub fn record_queue<T>(span: &Span, waited: &Result<T, SandboxError>) {
    let outcome = match waited {
        Ok(_) => "acquired",
        Err(e) => {
            let reason = rejection_reason(e);
            metrics().sandbox_rejected(reason);
            reason
        }
    };
    record_outcome(span, outcome);
}

fn rejection_reason(error: &SandboxError) -> &'static str {
    match error {
        SandboxError::Saturated => "saturated",
        SandboxError::Unavailable(_) => "unavailable",
        SandboxError::LaunchFailed(_) => "launch-failed",
    }
}

/// One run in the jail: its span, and the in-progress gauge it holds until
/// [`RunSpan::finish`] or, when the request is dropped mid-run (the client
/// went away), until it is dropped.
pub struct RunSpan {
    span: Span,
    mode: &'static str,
    finished: bool,
}

/// Starts the span of one run. The mode is the one the run is meant to get;
/// the report's mode is recorded when it ends.
pub fn sandbox_run(script: &str, mode: &'static str) -> RunSpan {
    let span = tracing::info_span!(
        "sandbox.run",
        sandbox.mode = mode,
        script.sha256 = %script_sha256_prefix(script),
        outcome = Empty,
        exit.signal = Empty,
        duration_ms = Empty,
        cpu_time_ms = Empty,
        peak_memory_bytes = Empty,
        stdout_bytes = Empty,
        stderr_bytes = Empty,
        stdout_truncated = Empty,
        otel.status_code = Empty,
    );
    metrics().sandbox_run_started(mode);
    RunSpan {
        span,
        mode,
        finished: false,
    }
}

impl RunSpan {
    pub fn span(&self) -> Span {
        self.span.clone()
    }

    /// Records how the run ended on its span and in the metrics.
    pub fn finish(mut self, result: &Result<RunReport, SandboxError>) {
        self.finished = true;
        let (span, mode) = (&self.span, self.mode);
        match result {
            Ok(report) => {
                let outcome = report.outcome.label();
                span.record("sandbox.mode", report.mode.label());
                record_outcome(span, outcome);
                if let Some(signal) = report.signal {
                    span.record("exit.signal", signal);
                }
                span.record("duration_ms", millis(report.duration));
                span.record("cpu_time_ms", millis(report.usage.cpu_time));
                span.record("peak_memory_bytes", report.usage.peak_memory_bytes as i64);
                span.record("stdout_bytes", report.stdout.text.len() as i64);
                span.record("stderr_bytes", report.stderr.text.len() as i64);
                span.record("stdout_truncated", report.stdout.truncated);
                metrics().sandbox_run_finished(mode, report.mode.label(), outcome, report.duration);
                let tenant = request::tenant();
                metrics().sandbox_cpu_used(
                    tenant.as_deref().unwrap_or(NO_TENANT),
                    report.usage.cpu_time,
                );
            }
            Err(e) => {
                let reason = rejection_reason(e);
                record_outcome(span, reason);
                span.record("otel.status_code", "ERROR");
                metrics().sandbox_rejected(reason);
                metrics().sandbox_run_ended_without_report(mode);
            }
        }
    }
}

impl Drop for RunSpan {
    fn drop(&mut self) {
        if !self.finished {
            // The request was dropped with the run (its jail is killed with it).
            record_outcome(&self.span, "cancelled");
            metrics().sandbox_run_ended_without_report(self.mode);
        }
    }
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
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
