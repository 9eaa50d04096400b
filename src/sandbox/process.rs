//! Process plumbing shared by the cold and warm paths: pipes, file
//! descriptors placed in a child, and the leftovers of pyexec processes that
//! are gone.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Puts `fd` at `target` in the child (clearing close-on-exec there). A first
/// dup to a high number keeps the two targets from clobbering each other.
pub(super) fn place_fd(fd: i32, target: i32) -> std::io::Result<()> {
    // SAFETY: fcntl/dup2/close on fds this process owns.
    unsafe {
        let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64);
        if high < 0 || libc::dup2(high, target) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::close(high);
    }
    Ok(())
}

/// Entries of `parent` named `<prefix><pid>-…` whose owning pyexec process is
/// gone (a SIGKILLed server, a finished test binary): what it should have
/// removed on the way out. Symlinks are never returned.
pub(super) fn stale_entries(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let owner = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            let is_dir = std::fs::symlink_metadata(entry.path()).is_ok_and(|m| m.is_dir());
            owner.is_some_and(|pid| {
                is_dir && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
            })
        })
        .map(|entry| entry.path())
        .collect()
}

pub(super) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both fds, which we then own.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        use std::os::fd::FromRawFd;
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

pub(super) fn pipe_reader(fd: OwnedFd) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
}
