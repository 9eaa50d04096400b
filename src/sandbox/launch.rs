//! Starting nsjail: the command every jail (a cold run, a warm zygote) is
//! started with, and what its log says when it could not build the jail.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::cgroup;
use super::limits::{self, JailPaths};
use super::process::place_fd;

pub(super) fn launch_failed(nsjail_log: &str) -> bool {
    nsjail_log.contains("Couldn't launch the child process")
        || nsjail_log.lines().any(|l| l.starts_with("[F]"))
}

pub(super) fn strip_log_prefix(line: &str) -> &str {
    // "[E][2026-…][1] initNsInternal():361 chdir('/tmp'): …" → the message.
    line.rsplit_once("] ").map_or(line, |(_, msg)| msg)
}

/// An nsjail command with the jail's fixed plumbing: a clean environment,
/// the process moved into `cgroup` before it executes, `fd3` (result or
/// control channel) and the log pipe at their numbers, killed if dropped.
pub(super) fn nsjail_command(
    paths: &JailPaths,
    argv: &[std::ffi::OsString],
    stdin: Stdio,
    cgroup: &cgroup::RunCgroup,
    fd3: &OwnedFd,
    log: &OwnedFd,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(&paths.nsjail_bin);
    command
        .args(argv)
        .env_clear()
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let attach = cgroup.attach_handle();
    let (fd3, log) = (fd3.as_raw_fd(), log.as_raw_fd());
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            attach.attach_self_raw()?;
            // nsjail has no flag for it and leaves it as it finds it: the
            // jail, and every warm runner, inherits it from here.
            let pending = limits::JAIL_PENDING_SIGNALS as libc::rlim_t;
            let limit = libc::rlimit {
                rlim_cur: pending,
                rlim_max: pending,
            };
            if libc::setrlimit(libc::RLIMIT_SIGPENDING, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            place_fd(fd3, limits::RESULT_FD)?;
            place_fd(log, limits::NSJAIL_LOG_FD)
        });
    }
    command
}

/// The folder bound into the jail for the interpreter: the venv or prefix two
/// levels above `bin/python3`.
pub(super) fn python_root(python_bin: &Path) -> PathBuf {
    python_bin
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/usr"))
}
