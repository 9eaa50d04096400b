//! The messages between the gateway and a zygote (`nsjail/zygote.py` is the
//! other end): one JSON object per SOCK_SEQPACKET packet, file descriptors
//! passed as SCM_RIGHTS.
//!
//! On the zygote's control socket:
//!
//! | from | message | means |
//! | --- | --- | --- |
//! | zygote | [`Reply::Ready`] `{"op": "ready", "python"}` | once, after the preload |
//! | zygote | [`Reply::Runner`] `{"op": "runner", "pid"}` + [its channel] | a runner is forked and waits |
//! | zygote | [`Reply::Exit`] `{"op": "exit", "pid", "code"}` | a runner ended: its code, or 128 + signal |
//! | gateway | [`Command::Took`] `{"op": "took", "pid"}` | that runner has a request |
//! | gateway | [`Command::Wait`] `{"op": "wait"}` | a request found no ready runner |
//!
//! On a runner's own channel, so that no request waits for the zygote: the
//! gateway sends one [`RunRequest`] with [stdin, stdout, stderr, result].

use std::io::IoSlice;
use std::os::fd::{OwnedFd, RawFd};

use nix::sys::socket::{self, ControlMessage, MsgFlags};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Reply {
    Ready {
        python: String,
    },
    Exit {
        pid: i32,
        code: i32,
    },
    /// A runner is forked and waiting: the gateway moves it into a group of
    /// its own now, so that no cgroup migration is left for the request.
    Runner {
        pid: i32,
    },
}

#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Command {
    Took { pid: i32 },
    Wait,
}

/// The limits a runner applies to itself before it reads its script (the
/// kernel-enforced memory, pids and CPU limits are its cgroup's).
#[derive(Serialize)]
pub(super) struct RunRequest {
    pub(super) cpu_seconds: u64,
    pub(super) file_size_bytes: u64,
    pub(super) tmpfs_bytes: u64,
    pub(super) tmpfs_inodes: u64,
    pub(super) shm_bytes: u64,
    pub(super) shm_inodes: u64,
}

impl Command {
    pub(super) fn encode(&self) -> String {
        serde_json::to_string(self).expect("a command serializes")
    }
}

/// One message on a SOCK_SEQPACKET socket, with fds, without blocking.
pub(super) fn send_with_fds(socket: RawFd, message: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let rights = [ControlMessage::ScmRights(fds)];
    socket::sendmsg::<()>(
        socket,
        &[IoSlice::new(message)],
        if fds.is_empty() { &[] } else { &rights },
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(|_| ())
    .map_err(std::io::Error::from)
}

/// One message on a SOCK_SEQPACKET socket and the fds that came with it
/// (close-on-exec); a `WouldBlock` error when none is waiting.
pub(super) fn receive_with_fds(
    socket: RawFd,
    buffer: &mut [u8],
) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(buffer)];
    let message = socket::recvmsg::<()>(
        socket,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fds = Vec::new();
    for control in message.cmsgs().map_err(std::io::Error::from)? {
        if let socket::ControlMessageOwned::ScmRights(received) = control {
            // SAFETY: the kernel just installed these fds for this process.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }),
            );
        }
    }
    Ok((message.bytes, fds))
}

pub(super) fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_shape_zygote_py_reads_and_writes() {
        assert_eq!(
            Command::Took { pid: 7 }.encode(),
            r#"{"op":"took","pid":7}"#
        );
        assert_eq!(Command::Wait.encode(), r#"{"op":"wait"}"#);
        let request = RunRequest {
            cpu_seconds: 5,
            file_size_bytes: 1,
            tmpfs_bytes: 2,
            tmpfs_inodes: 3,
            shm_bytes: 4,
            shm_inodes: 5,
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"cpu_seconds":5,"file_size_bytes":1,"tmpfs_bytes":2,"tmpfs_inodes":3,"shm_bytes":4,"shm_inodes":5}"#
        );
        let runner: Reply = serde_json::from_str(r#"{"op": "runner", "pid": 12}"#).unwrap();
        assert!(matches!(runner, Reply::Runner { pid: 12 }));
        let exit: Reply =
            serde_json::from_str(r#"{"op": "exit", "pid": 12, "code": 137}"#).unwrap();
        assert!(matches!(exit, Reply::Exit { pid: 12, code: 137 }));
        assert!(serde_json::from_str::<Reply>(r#"{"op": "took", "pid": 1}"#).is_err());
    }
}
