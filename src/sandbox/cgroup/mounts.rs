//! The cgroup filesystems this process sees, read from /proc/self/mountinfo
//! and /proc/self/cgroup: which hierarchy holds which controllers, whether a
//! view is the container's own namespace, and where this instance may create
//! its groups.

use std::path::{Path, PathBuf};

use super::DELEGATED_GROUP;

#[derive(Debug)]
pub(in crate::sandbox) struct CgroupMount {
    pub(in crate::sandbox) fstype: String,
    pub(in crate::sandbox) root: String,
    pub(in crate::sandbox) mount_point: PathBuf,
    options: Vec<String>,
    /// Mounted `ro` (the per-mount flag, not the superblock's).
    pub(in crate::sandbox) read_only: bool,
}

/// Where this instance's groups go in one hierarchy: below the gateway's own
/// group when the view is writable (a host, a privileged container, a v2
/// view the binary remounted), else in the subtree the binary delegated to
/// itself on a v1 container view (see `privileges`).
pub(super) fn writable_parent(
    mounts: &[CgroupMount],
    view: &CgroupMount,
    own_path: &str,
) -> Result<PathBuf, String> {
    if !view.read_only {
        return Ok(view.path_for(own_path));
    }
    mounts
        .iter()
        .find(|m| {
            m.fstype == view.fstype
                && m.options == view.options
                && !m.read_only
                && m.is_delegated()
                && m.mount_point == view.mount_point.join(DELEGATED_GROUP)
        })
        .map(|m| m.mount_point.clone())
        .ok_or_else(|| read_only_message(view, own_path))
}

/// What to do about a read-only cgroup view, by what kind of view it is.
fn read_only_message(view: &CgroupMount, own_path: &str) -> String {
    let place = view.mount_point.display();
    if !view.is_own_namespace_view(own_path) {
        format!(
            "the cgroup filesystem at {place} is mounted read-only and is not this container's own cgroup namespace, so the gateway cannot create a cgroup per run: give the container its own namespace (docker run --cgroupns=private; the default only on cgroup v2 hosts) with --cap-add SYS_ADMIN, so the gateway can make its view writable at start"
        )
    } else {
        format!(
            "the cgroup filesystem at {place} is mounted read-only, so the gateway cannot create a cgroup per run: the pyexec binary makes its own namespace's view writable when it starts, which needs --cap-add SYS_ADMIN and --security-opt apparmor=unconfined"
        )
    }
}

impl CgroupMount {
    pub(in crate::sandbox) fn has(&self, controller: &str) -> bool {
        self.options.iter().any(|o| o == controller)
    }

    /// Whether this view is the container's own cgroup namespace, seen from
    /// its root group or from the delegated group the gateway moved into (a
    /// second pyexec in the container finds itself there). Outside one, the
    /// view may be the host's.
    pub(in crate::sandbox) fn is_own_namespace_view(&self, own_path: &str) -> bool {
        self.root == "/" && (own_path == "/" || own_path == format!("/{DELEGATED_GROUP}"))
    }

    /// The subtree bind a v1 container's gateway keeps for itself, not a view
    /// of the hierarchy.
    pub(in crate::sandbox) fn is_delegated(&self) -> bool {
        Path::new(&self.root).file_name() == Some(std::ffi::OsStr::new(DELEGATED_GROUP))
    }

    /// The directory of a group given its path as /proc/self/cgroup shows it.
    fn path_for(&self, group: &str) -> PathBuf {
        let relative = group
            .strip_prefix(self.root.as_str())
            .unwrap_or(group)
            .trim_start_matches('/');
        self.mount_point.join(relative)
    }
}

pub(in crate::sandbox) fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let fstype = *right.first()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            Some(CgroupMount {
                fstype: fstype.to_string(),
                root: left.get(3)?.to_string(),
                mount_point: PathBuf::from(left.get(4)?),
                read_only: left
                    .get(5)
                    .is_some_and(|o| o.split(',').any(|flag| flag == "ro")),
                options: right
                    .get(2)
                    .map(|o| o.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The gateway's own group in the hierarchy `mount` shows, as
/// /proc/self/cgroup names it ("/" when not listed).
pub(in crate::sandbox) fn own_group_path(proc_self_cgroup: &str, mount: &CgroupMount) -> String {
    let found = if mount.fstype == "cgroup2" {
        proc_self_cgroup
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(str::to_string)
    } else {
        mount
            .options
            .iter()
            .find_map(|c| own_v1_path(proc_self_cgroup, c))
    };
    found.unwrap_or_else(|| "/".into())
}

fn own_v1_path(proc_self_cgroup: &str, controller: &str) -> Option<String> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
35 25 0:30 / /sys/fs/cgroup/memory rw,relatime shared:13 - cgroup cgroup rw,memory
36 25 0:31 / /sys/fs/cgroup/pids rw,relatime shared:14 - cgroup cgroup rw,pids
37 25 0:32 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
38 25 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_mounts_are_found_with_their_controllers() {
        let mounts = parse_cgroup_mounts(MOUNTINFO);
        assert_eq!(mounts.len(), 4);
        assert!(mounts[0].has("memory"));
        assert!(mounts[2].has("cpuacct"));
        assert_eq!(mounts[3].fstype, "cgroup2");
        assert!(mounts.iter().all(|m| !m.read_only));
    }

    #[test]
    fn a_read_only_container_cgroup_mount_is_recognised() {
        // Docker's non-privileged container: its own cgroup namespace, ro.
        let mounts = parse_cgroup_mounts(
            "603 599 0:61 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw\n",
        );
        assert!(mounts[0].read_only);
    }

    #[test]
    fn a_read_only_view_outside_a_private_namespace_asks_for_one() {
        // A group path other than "/" means the view is not the container's
        // own namespace (Docker's default on v1 hosts).
        let mounts = parse_cgroup_mounts(
            "603 599 0:61 /docker/abc /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory\n",
        );
        let message = writable_parent(&mounts, &mounts[0], "/docker/abc").unwrap_err();
        assert!(message.contains("--cgroupns=private"), "{message}");
        assert!(message.contains("--cap-add SYS_ADMIN"), "{message}");
    }

    #[test]
    fn a_v1_container_view_is_used_through_its_delegated_subtree() {
        // What `privileges` leaves behind in a v1 container: the namespace's
        // view read-only again, its `pyexec` subtree bound writable, and the
        // gateway itself in that subtree.
        let mounts = parse_cgroup_mounts(
            "\
700 690 0:40 / /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory
701 700 0:40 /pyexec /sys/fs/cgroup/memory/pyexec rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory
",
        );
        let view = mounts.iter().find(|m| !m.is_delegated()).unwrap();
        assert_eq!(view.mount_point, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(
            writable_parent(&mounts, view, "/pyexec").unwrap(),
            Path::new("/sys/fs/cgroup/memory/pyexec")
        );
        // Without the delegated bind the same view is reported, naming the
        // grants the binary needs to make it.
        let message = writable_parent(&mounts[..1], view, "/pyexec").unwrap_err();
        assert!(message.contains("SYS_ADMIN"), "{message}");
        assert!(!message.contains("--cgroupns"), "{message}");
    }

    #[test]
    fn own_group_path_is_resolved_below_the_mount_root() {
        let mounts = parse_cgroup_mounts(MOUNTINFO);
        let own = "4:memory:/process_api/x\n3:cpu,cpuacct:/docker/abc/inner\n0::/\n";
        let memory = own_v1_path(own, "memory").unwrap();
        assert_eq!(
            mounts[0].path_for(&memory),
            Path::new("/sys/fs/cgroup/memory/process_api/x")
        );
        let cpu = own_v1_path(own, "cpuacct").unwrap();
        assert_eq!(
            mounts[2].path_for(&cpu),
            Path::new("/sys/fs/cgroup/cpu,cpuacct/inner")
        );
        assert_eq!(own_v1_path(own, "pids"), None);
    }
}
