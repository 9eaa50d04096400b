//! The defaults that more than one part of the service relies on, each
//! defined once. Below every floor: plain values, no imports of ours.

use std::time::Duration;

/// The largest script a tenant may send unless its policy says otherwise
/// (`spec.limits.maxScriptBytes`), as the original service allowed.
pub const MAX_SCRIPT_BYTES: usize = 10 * 1024;

/// The longest wall-clock limit a tenant's policy may set
/// (`spec.sandbox.wallTimeoutMs`), and so the largest `timeout_ms`.
pub const MAX_WALL_TIMEOUT_MS: u64 = 600_000;

/// What each warm zygote imports once, before it forks any runner
/// (`--preload`, `PYEXEC_WARM_PRELOAD`): the libraries scripts use most.
pub const WARM_PRELOAD: &[&str] = &["numpy", "pandas"];

/// The same list as the command-line default.
pub const WARM_PRELOAD_FLAG: &str = "numpy,pandas";

// The shutdown budget. After SIGTERM the platform kills the process after
// its grace period (Cloud Run: 10 s; deploy/k8s sets 15 s). In that time the
// runs in flight finish, the last spans are flushed and the runtime stops.

/// Cloud Run's time between SIGTERM and SIGKILL, the tightest platform.
pub const PLATFORM_GRACE: Duration = Duration::from_secs(10);
/// How long in-flight runs may finish after SIGTERM.
pub const DRAIN_TIMEOUT: Duration = Duration::from_millis(7_500);
/// How long the span exporter may take to send what is still batched.
pub const SPAN_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long tasks still on the runtime (abandoned runs) get to stop.
pub const RUNTIME_STOP_TIMEOUT: Duration = Duration::from_millis(400);

const _: () = assert!(
    DRAIN_TIMEOUT.as_millis() + SPAN_FLUSH_TIMEOUT.as_millis() + RUNTIME_STOP_TIMEOUT.as_millis()
        < PLATFORM_GRACE.as_millis(),
    "the shutdown budget must end before the platform's kill"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preload_flag_names_the_preload_list() {
        assert_eq!(WARM_PRELOAD.join(","), WARM_PRELOAD_FLAG);
    }
}
