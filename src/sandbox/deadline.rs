//! A run's two time limits: its wall-clock deadline and the CPU time its
//! cgroup may use, whichever comes first. Both paths, cold and warm, wait on
//! this while the run goes on.

use std::time::Duration;

use super::cgroup::CpuMeter;
use super::outcome::TimeLimit;

/// How often a running run's cgroup CPU time is read. A run may go over its
/// CPU limit by at most this times the cores it can use.
const CPU_WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Resolves when the run reaches its wall-clock deadline or its cgroup has
/// used its CPU limit, whichever comes first.
pub(super) async fn time_limit(
    cpu: CpuMeter,
    deadline: tokio::time::Instant,
    cpu_seconds: u64,
) -> TimeLimit {
    let cpu_limit = Duration::from_secs(cpu_seconds.max(1));
    let wall = tokio::time::sleep_until(deadline);
    tokio::pin!(wall);
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + CPU_WATCH_INTERVAL,
        CPU_WATCH_INTERVAL,
    );
    loop {
        tokio::select! {
            () = &mut wall => return TimeLimit::Wall,
            _ = ticks.tick() => {
                // One small cgroupfs read (a counter the kernel keeps).
                if cpu.read() >= cpu_limit {
                    return TimeLimit::Cpu;
                }
            }
        }
    }
}
