//! The sandbox's spans and metrics: `sandbox.queue` (the wait for a slot)
//! and `sandbox.run` (one run in the jail), recorded from the sandbox's own
//! types so that telemetry, the floor below, needs to know none of them.

use std::time::Duration;

use tracing::Span;
use tracing::field::Empty;

use super::outcome::{RunReport, SandboxError};
use crate::telemetry::metrics::{NO_TENANT, metrics};
use crate::telemetry::request;
use crate::telemetry::spans::{record_outcome, script_sha256_prefix};

/// Waiting for a sandbox slot.
pub(super) fn sandbox_queue(queue_depth: usize) -> Span {
    tracing::info_span!(
        "sandbox.queue",
        pyexec.sandbox.queue_depth = queue_depth as i64,
        pyexec.outcome = Empty
    )
}

/// Records the end of the wait; a refusal is counted by its reason.
pub(super) fn record_queue<T>(span: &Span, waited: &Result<T, SandboxError>) {
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
pub(super) struct RunSpan {
    span: Span,
    mode: &'static str,
    finished: bool,
}

/// Starts the span of one run. The mode is the one the run is meant to get;
/// the report's mode is recorded when it ends.
pub(super) fn sandbox_run(script: &str, mode: &'static str) -> RunSpan {
    let span = tracing::info_span!(
        "sandbox.run",
        pyexec.sandbox.mode = mode,
        pyexec.script.sha256_prefix = %script_sha256_prefix(script),
        pyexec.outcome = Empty,
        pyexec.sandbox.exit_signal = Empty,
        pyexec.sandbox.duration_ms = Empty,
        pyexec.sandbox.cpu_time_ms = Empty,
        pyexec.sandbox.peak_memory_bytes = Empty,
        pyexec.sandbox.stdout_bytes = Empty,
        pyexec.sandbox.stderr_bytes = Empty,
        pyexec.sandbox.stdout_truncated = Empty,
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
    pub(super) fn span(&self) -> Span {
        self.span.clone()
    }

    /// Records how the run ended on its span and in the metrics.
    pub(super) fn finish(mut self, result: &Result<RunReport, SandboxError>) {
        self.finished = true;
        let (span, mode) = (&self.span, self.mode);
        match result {
            Ok(report) => {
                let outcome = report.outcome.label();
                span.record("pyexec.sandbox.mode", report.mode.label());
                record_outcome(span, outcome);
                if let Some(signal) = report.signal {
                    span.record("pyexec.sandbox.exit_signal", signal);
                }
                span.record("pyexec.sandbox.duration_ms", millis(report.duration));
                span.record("pyexec.sandbox.cpu_time_ms", millis(report.usage.cpu_time));
                span.record(
                    "pyexec.sandbox.peak_memory_bytes",
                    report.usage.peak_memory_bytes as i64,
                );
                span.record(
                    "pyexec.sandbox.stdout_bytes",
                    report.stdout.text.len() as i64,
                );
                span.record(
                    "pyexec.sandbox.stderr_bytes",
                    report.stderr.text.len() as i64,
                );
                span.record("pyexec.sandbox.stdout_truncated", report.stdout.truncated);
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
