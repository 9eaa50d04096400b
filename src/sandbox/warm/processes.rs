//! The zygote's processes as the gateway sees them: an exit watched through
//! a pidfd, the zygote's own output forwarded to the log, and scheduling.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use tokio::io::AsyncBufReadExt;
use tokio::io::unix::AsyncFd;

/// A process's exit through its pidfd: readiness, and a kill that cannot hit
/// a recycled pid.
pub(crate) struct ProcessExit {
    pidfd: AsyncFd<OwnedFd>,
}

impl ProcessExit {
    pub(super) fn watch(pid: i32) -> std::io::Result<Self> {
        // SAFETY: pidfd_open returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the fd was just created and is owned here alone.
        let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) };
        // SAFETY: the OwnedFd moves into the AsyncFd and closes when it drops.
        let pidfd =
            unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self { pidfd })
    }

    pub(crate) async fn wait(&self) {
        // A pidfd stays readable once the process has exited.
        let _ = self.pidfd.readable().await;
    }

    pub(super) fn kill(&self) {
        // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

pub(super) trait LogSource: tokio::io::AsyncRead + Unpin + Send {}
impl<T: tokio::io::AsyncRead + Unpin + Send> LogSource for T {}

/// The zygote's own output (import warnings, runner set-up failures) goes to
/// the server log; scripts never write here.
pub(super) async fn forward_lines(
    stream: Box<dyn LogSource>,
    source: &'static str,
    generation: u64,
) {
    let mut lines = tokio::io::BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!(source, generation, line = %line.chars().take(2000).collect::<String>(), "warm zygote output");
    }
}

/// Puts a process that runs as SCHED_IDLE back to normal scheduling.
pub(super) fn schedule_normally(pid: i32) -> std::io::Result<()> {
    let normal = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on a host pid with a valid param.
    if unsafe { libc::sched_setscheduler(pid, libc::SCHED_OTHER, &normal) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether this process may put another user's SCHED_IDLE process back to
/// normal scheduling: CAP_SYS_NICE in the host's user namespace (a container's
/// own user namespace does not count, whatever its capability sets say). Tried
/// on a thread of its own, whose move back from SCHED_IDLE needs the same
/// capability unless RLIMIT_NICE allows nice 0 (then nothing can be told).
pub(super) fn can_reschedule_others() -> bool {
    // Tried once per process: the answer does not change while it runs.
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(try_rescheduling)
}

pub(super) fn try_rescheduling() -> bool {
    let mut nice_limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NICE, &mut nice_limit) } != 0
        || nice_limit.rlim_cur >= 20
    {
        return false;
    }
    std::thread::spawn(|| {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler on the calling thread (pid 0), valid param.
        unsafe {
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0
                && libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) == 0
        }
    })
    .join()
    .unwrap_or(false)
}
