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
//! 2. on v1 the gateway keeps only a subtree of its own writable and moves
//!    itself into it: in every v1 hierarchy it creates [`DELEGATED_GROUP`]
//!    and joins it, in those it makes run groups in it also binds that subtree
//!    onto itself, and then it remounts the view read-only again. The
//!    container's own `memory.limit_in_bytes` & co. stay out of reach, and
//!    since the gateway no longer sits in the namespace's root group, a cgroup
//!    namespace it might create later (the route to a fresh v1 mount without
//!    CAP_SYS_ADMIN: a new user namespace owns it) is rooted below the
//!    container's group, whose limits bound everything under it;
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
    CgroupMount, DELEGATED_GROUP, V1_CONTROLLERS, own_group_path, parse_cgroup_mounts,
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
            mount.fstype == "cgroup" && !mount.is_delegated()
        } else {
            mount.fstype == "cgroup2"
        };
        // A writable view (a host, a privileged container) is used as it is;
        // cpu,cpuacct is one mount under two names and is handled once.
        if !wanted || !mount.read_only || seen.contains(&mount.mount_point.as_path()) {
            continue;
        }
        seen.push(&mount.mount_point);
        let own_path = own_group_path(&own, mount);
        // Any other view is left alone; Cgroups::setup says which flag is
        // missing.
        if !mount.is_own_namespace_view(&own_path) {
            continue;
        }
        if !is_v1 && !mount.has("nsdelegate") {
            problems.push(format!(
                "the host's cgroup2 at {} is mounted without nsdelegate, so a writable view would expose the container's own limits: mount it with nsdelegate (systemd does) or run on a host that does",
                mount.mount_point.display()
            ));
            continue;
        }
        let result = if is_v1 {
            delegate_v1_hierarchy(mount, &mounts)
        } else {
            remount(&mount.mount_point, false).map_err(|e| Step::Remount.failed(e))
        };
        if let Err(problem) = result {
            problems.push(problem.describe(&mount.mount_point));
        }
    }
    problems
}

/// What went wrong at which step of preparing a view, for a message that
/// points at the grant it needs.
struct StepFailure {
    step: Step,
    error: io::Error,
}

#[derive(Clone, Copy)]
enum Step {
    Remount,
    CreateGroup,
    CopyCpuset,
    Join,
    Bind,
    RemountReadOnly,
}

impl Step {
    fn failed(self, error: io::Error) -> StepFailure {
        StepFailure { step: self, error }
    }
}

impl StepFailure {
    fn describe(&self, view: &Path) -> String {
        let error = &self.error;
        let place = view.display();
        match self.step {
            Step::Remount => {
                let fix = match error.raw_os_error() {
                    Some(libc::EPERM) => {
                        "the container lacks CAP_SYS_ADMIN (or its mounts are locked by a user namespace of its own): add --cap-add SYS_ADMIN"
                    }
                    Some(libc::EACCES) => {
                        "a security profile refuses mount(2): add --security-opt apparmor=unconfined (or the SELinux equivalent)"
                    }
                    _ => "see deploy/README.md for the grants the container needs",
                };
                format!(
                    "cannot make the container's cgroup view at {place} writable ({error}): {fix}"
                )
            }
            Step::RemountReadOnly => format!(
                "cannot make the container's cgroup view at {place} read-only again ({error}), so the gateway would reach the container's own limits: see deploy/README.md"
            ),
            Step::CreateGroup | Step::CopyCpuset | Step::Join | Step::Bind => {
                let what = match self.step {
                    Step::CreateGroup => "create",
                    Step::CopyCpuset => "give the parent's CPUs and memory nodes to",
                    Step::Join => "move the gateway into",
                    _ => "bind",
                };
                format!(
                    "cannot {what} the gateway's cgroup {place}/{DELEGATED_GROUP} ({error}): the container's cgroup view must be its own (--cgroupns=private) and writable by root at start"
                )
            }
        }
    }
}

/// One v1 hierarchy of the container's own namespace: the gateway creates
/// `<view>/pyexec` and moves itself in; where run groups are made, that
/// subtree is also bound onto itself so that it alone stays writable; then
/// the view is read-only again. A failure after the first remount still puts
/// the view back read-only.
fn delegate_v1_hierarchy(view: &CgroupMount, mounts: &[CgroupMount]) -> Result<(), StepFailure> {
    remount(&view.mount_point, false).map_err(|e| Step::Remount.failed(e))?;
    let joined = join_delegated_group(view, mounts);
    let restored = remount(&view.mount_point, true).map_err(|e| Step::RemountReadOnly.failed(e));
    joined.and(restored)
}

fn join_delegated_group(view: &CgroupMount, mounts: &[CgroupMount]) -> Result<(), StepFailure> {
    let delegated = view.mount_point.join(DELEGATED_GROUP);
    match std::fs::create_dir(&delegated) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(Step::CreateGroup.failed(e));
        }
        _ => {}
    }
    if view.has("cpuset") {
        // A new cpuset has no CPUs and no memory nodes, and no process may
        // join it until it has.
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let inherited = std::fs::read_to_string(view.mount_point.join(file))
                .and_then(|value| std::fs::write(delegated.join(file), value.trim()));
            inherited.map_err(|e| Step::CopyCpuset.failed(e))?;
        }
    }
    std::fs::write(
        delegated.join("cgroup.procs"),
        std::process::id().to_string(),
    )
    .map_err(|e| Step::Join.failed(e))?;
    let runs_here = V1_CONTROLLERS.iter().any(|c| view.has(c));
    let already_bound = mounts
        .iter()
        .any(|m| m.is_delegated() && m.mount_point == delegated && !m.read_only);
    if runs_here && !already_bound {
        bind_onto_itself(&delegated).map_err(|e| Step::Bind.failed(e))?;
    }
    Ok(())
}

/// A bind mount copies its source's flags, so it is made while the view is
/// writable and stays writable when the view turns read-only.
fn bind_onto_itself(dir: &Path) -> io::Result<()> {
    let path = c_path(dir)?;
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
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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

/// Removes CAP_SYS_ADMIN from this thread's bounding, ambient, inheritable,
/// effective and permitted sets, each tried whatever happened to the others,
/// then checks all five: a set that cannot be read counts as still holding
/// it. A process that never had it (not root) has nothing to do.
fn drop_admin_capability() -> Result<(), String> {
    let cap = Capability::CAP_SYS_ADMIN;
    const SETS: [CapSet; 5] = [
        CapSet::Bounding,
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ];
    let mut errors = Vec::new();
    for set in SETS {
        if caps::has_cap(None, set, cap).unwrap_or(true) {
            if let Err(e) = caps::drop(None, set, cap) {
                errors.push(format!("{set:?}: {e}"));
            }
        }
    }
    let left: Vec<String> = SETS
        .into_iter()
        .filter(|set| caps::has_cap(None, *set, cap).unwrap_or(true))
        .map(|set| format!("{set:?}"))
        .collect();
    if left.is_empty() {
        return Ok(());
    }
    Err(format!(
        "CAP_SYS_ADMIN is still in the {} set(s) after dropping it ({}); dropping it from the bounding set needs CAP_SETPCAP, which Docker grants by default: do not --cap-drop it",
        left.join(", "),
        errors.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_names_its_own_grant() {
        let view = Path::new("/sys/fs/cgroup/memory");
        let describe = |step: Step, errno| {
            step.failed(io::Error::from_raw_os_error(errno))
                .describe(view)
        };
        let eperm = describe(Step::Remount, libc::EPERM);
        assert!(eperm.contains("--cap-add SYS_ADMIN"), "{eperm}");
        assert!(!eperm.contains("apparmor"), "{eperm}");
        let eacces = describe(Step::Remount, libc::EACCES);
        assert!(eacces.contains("apparmor=unconfined"), "{eacces}");
        assert!(!eacces.contains("SYS_ADMIN"), "{eacces}");
        // A step after the remount is not blamed on a missing grant.
        let join = describe(Step::Join, libc::EACCES);
        assert!(join.contains("move the gateway into"), "{join}");
        assert!(!join.contains("apparmor"), "{join}");
        let read_only = describe(Step::RemountReadOnly, libc::EBUSY);
        assert!(read_only.contains("read-only again"), "{read_only}");
    }
}
