//! What the `pyexec` binary does with root's powers before it starts its first
//! thread, and then gives up for good.
//!
//! In a container the cgroup views are mounted read-only, and the gateway
//! needs to create a group per run below its own. With a private cgroup
//! namespace it can remount its view writable, which takes CAP_SYS_ADMIN. That
//! capability also lets root in the container mount a fresh cgroup hierarchy
//! and raise the container's own memory limit, and on cgroup v1 (which has no
//! `nsdelegate`) a writable view alone exposes those limit files. So:
//!
//! 1. each read-only view of the container's own namespace is remounted
//!    writable (v1: each controller; v2: the one hierarchy, whose root
//!    `nsdelegate` already protects);
//! 2. on v1 the gateway keeps only a subtree of its own writable: it creates
//!    [`DELEGATED_GROUP`], binds it onto itself and remounts the view read-only
//!    again, so the container's own `memory.limit_in_bytes` & co. stay out of
//!    reach;
//! 3. CAP_SYS_ADMIN leaves every capability set, the bounding set included,
//!    so nothing the gateway does or starts later can mount or remount
//!    anything in the container. nsjail does not need it: a new user namespace
//!    gives the jail all capabilities inside it, whatever the bounding set
//!    outside.
//!
//! Capabilities belong to threads, and a thread inherits its creator's, so
//! this runs before the async runtime or any other thread exists.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

use caps::{CapSet, Capability};

use super::cgroup::{
    own_group_path, parse_cgroup_mounts, CgroupMount, DELEGATED_GROUP, V1_CONTROLLERS,
};

static PROBLEMS: OnceLock<Vec<String>> = OnceLock::new();

/// Prepares the cgroup views and drops CAP_SYS_ADMIN. Call once, from the
/// only thread. What went wrong is kept for [`problems`]: the sandbox reports
/// it and runs nothing.
pub fn prepare_then_drop_admin() {
    let mut problems = prepare_cgroup_views();
    if let Err(e) = drop_admin_capability() {
        problems.push(e);
    }
    let _ = PROBLEMS.set(problems);
}

/// What [`prepare_then_drop_admin`] could not do (empty when it did not run,
/// as in a test process that builds a sandbox itself).
pub fn problems() -> Vec<String> {
    PROBLEMS.get().cloned().unwrap_or_default()
}

fn prepare_cgroup_views() -> Vec<String> {
    let (Ok(mountinfo), Ok(own)) = (
        std::fs::read_to_string("/proc/self/mountinfo"),
        std::fs::read_to_string("/proc/self/cgroup"),
    ) else {
        // Cgroups::setup reports what it cannot read.
        return Vec::new();
    };
    let mounts = parse_cgroup_mounts(&mountinfo);
    let is_v1 = mounts
        .iter()
        .any(|m| m.fstype == "cgroup" && m.has("memory"));
    let mut problems = Vec::new();
    let mut seen: Vec<&Path> = Vec::new();
    for mount in &mounts {
        let wanted = if is_v1 {
            mount.fstype == "cgroup" && V1_CONTROLLERS.iter().any(|c| mount.has(c))
        } else {
            mount.fstype == "cgroup2"
        };
        // cpu,cpuacct is one mount under two names; a view is handled once.
        if !wanted || !mount.read_only || seen.contains(&mount.mount_point.as_path()) {
            continue;
        }
        seen.push(&mount.mount_point);
        let own_path = own_group_path(&own, mount);
        // Outside a private namespace the view may be the host's: left alone,
        // and Cgroups::setup says which flag is missing.
        if own_path != "/" || mount.root != "/" {
            continue;
        }
        let result = if is_v1 {
            remount(&mount.mount_point, false).and_then(|()| delegate_v1_subtree(mount))
        } else {
            remount(&mount.mount_point, false)
        };
        match result {
            Ok(()) => tracing::debug!(path = %mount.mount_point.display(), "cgroup view prepared"),
            Err(e) => problems.push(remount_problem(&mount.mount_point, &e)),
        }
    }
    problems
}

/// Keeps `<view>/pyexec` writable and turns the rest of the view read-only
/// again. A bind mount copies its source's flags, so it is made while the
/// view is writable.
fn delegate_v1_subtree(mount: &CgroupMount) -> io::Result<()> {
    let delegated = mount.mount_point.join(DELEGATED_GROUP);
    match std::fs::create_dir(&delegated) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let path = c_path(&delegated)?;
    // SAFETY: mount(2) with NUL-terminated paths and no data.
    let rc = unsafe {
        libc::mount(
            path.as_ptr(),
            path.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    remount(&mount.mount_point, true)
}

/// Changes one mount's read-only flag (MS_BIND with MS_REMOUNT: the mount's
/// flags, never the filesystem's); nosuid, nodev and noexec stay set.
fn remount(mount_point: &Path, read_only: bool) -> io::Result<()> {
    let target = c_path(mount_point)?;
    let mut flags =
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if read_only {
        flags |= libc::MS_RDONLY;
    }
    // SAFETY: mount(2) with a NUL-terminated path and no data.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
}

/// The one grant each refusal points to.
fn remount_problem(mount_point: &Path, error: &io::Error) -> String {
    let fix = match error.raw_os_error() {
        Some(libc::EPERM) => "the container lacks CAP_SYS_ADMIN: add --cap-add SYS_ADMIN",
        Some(libc::EACCES) => {
            "a security profile refuses mount(2): add --security-opt apparmor=unconfined"
        }
        _ => "see deploy/README.md for the grants the container needs",
    };
    format!(
        "cannot make the container's cgroup view at {} writable ({error}): {fix}",
        mount_point.display()
    )
}

/// Removes CAP_SYS_ADMIN from this thread's bounding, ambient, inheritable,
/// effective and permitted sets, then checks that it is gone. A process that
/// never had it (not root) has nothing to do.
fn drop_admin_capability() -> Result<(), String> {
    let cap = Capability::CAP_SYS_ADMIN;
    let had = |set| caps::has_cap(None, set, cap).unwrap_or(false);
    let failed = |e: caps::errors::CapsError| format!("cannot drop CAP_SYS_ADMIN: {e}");
    if had(CapSet::Bounding) {
        caps::drop(None, CapSet::Bounding, cap).map_err(failed)?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        if had(set) {
            caps::drop(None, set, cap).map_err(failed)?;
        }
    }
    let left: Vec<String> = [CapSet::Bounding, CapSet::Effective, CapSet::Permitted]
        .into_iter()
        .filter(|set| had(*set))
        .map(|set| format!("{set:?}"))
        .collect();
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "CAP_SYS_ADMIN is still in the {} set(s) after dropping it",
            left.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_names_its_own_grant() {
        let path = Path::new("/sys/fs/cgroup/memory");
        let eperm = remount_problem(path, &io::Error::from_raw_os_error(libc::EPERM));
        assert!(eperm.contains("--cap-add SYS_ADMIN"), "{eperm}");
        assert!(!eperm.contains("apparmor"), "{eperm}");
        let eacces = remount_problem(path, &io::Error::from_raw_os_error(libc::EACCES));
        assert!(eacces.contains("apparmor=unconfined"), "{eacces}");
        assert!(!eacces.contains("SYS_ADMIN"), "{eacces}");
    }
}
