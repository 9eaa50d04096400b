//! One cgroup per run, v1 or v2, owned by the gateway.
//!
//! nsjail is placed into the run's cgroup before it executes (from the forked
//! child, see [`CgroupAttach::attach_self_raw`]), so the jail and everything it
//! spawns inherit it. The gateway sets the limits, reads the OOM-kill count, CPU
//! time and peak memory after the run, kills whatever is left and removes it.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::background;
use super::limits::Limits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl CgroupVersion {
    pub fn label(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        }
    }
}

#[derive(Debug)]
enum Layout {
    /// One directory per controller hierarchy.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpuacct: PathBuf,
    },
    V2 {
        base: PathBuf,
    },
}

/// The v1 controllers a run's group is made in.
pub(super) const V1_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpuacct"];

/// The group a v1 container's gateway keeps writable below its namespace's
/// root; its instance groups are created inside (see `privileges`).
pub(super) const DELEGATED_GROUP: &str = "pyexec";

/// The gateway's own parent group(s) under which each run gets a leaf.
#[derive(Debug)]
pub struct Cgroups {
    layout: Layout,
    next_run: AtomicU64,
}

/// What the kernel counted for one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunUsage {
    pub oom_kills: u64,
    pub cpu_time: Duration,
    pub peak_memory_bytes: u64,
}

#[derive(Debug)]
pub struct RunCgroup {
    dirs: Vec<PathBuf>,
    attach: CgroupAttach,
    version: CgroupVersion,
}

/// Where a group's kernel-kept CPU time is read.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    file: PathBuf,
    version: CgroupVersion,
}

impl CpuMeter {
    pub fn read(&self) -> Duration {
        match self.version {
            CgroupVersion::V1 => Duration::from_nanos(
                fs::read_to_string(&self.file)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0),
            ),
            CgroupVersion::V2 => Duration::from_micros(keyed_value(&self.file, "usage_usec")),
        }
    }
}

/// The `cgroup.procs` files of a run, ready for a forked child to write to
/// without allocating.
#[derive(Debug, Clone)]
pub struct CgroupAttach {
    procs_files: Vec<CString>,
}

/// A unique name for this gateway instance's parent group: several servers
/// (and tests) may share one host.
fn instance_name() -> String {
    format!(
        "pyexec-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

impl Cgroups {
    /// Finds the cgroup hierarchy and creates this instance's parent group.
    /// The error says what is missing and how to provide it.
    pub fn setup() -> Result<Self, String> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let mounts = parse_cgroup_mounts(&mountinfo);
        let v1_has = |c: &str| mounts.iter().any(|m| m.fstype == "cgroup" && m.has(c));
        let layout = if v1_has("memory") {
            let dir_for = |controller: &str| -> Result<PathBuf, String> {
                let mount = mounts
                    .iter()
                    .find(|m| m.fstype == "cgroup" && m.has(controller) && !m.is_delegated())
                    .ok_or_else(|| {
                        format!(
                            "cgroup v1 controller '{controller}' is not mounted; mount it at /sys/fs/cgroup/{controller}"
                        )
                    })?;
                let own_path = own_group_path(&own, mount);
                let dir = writable_parent(&mounts, mount, &own_path)?.join(instance_name());
                ensure_group_dir(&dir, controller)?;
                Ok(dir)
            };
            Layout::V1 {
                memory: dir_for("memory")?,
                pids: dir_for("pids")?,
                cpuacct: dir_for("cpuacct")?,
            }
        } else if let Some(mount) = mounts.iter().find(|m| m.fstype == "cgroup2") {
            let own_path = own_group_path(&own, mount);
            let parent = writable_parent(&mounts, mount, &own_path)?;
            enable_v2_controllers(&parent)?;
            let base = parent.join(instance_name());
            ensure_group_dir(&base, "unified")?;
            write(&base.join("cgroup.subtree_control"), "+memory +pids +cpu")
                .or_else(|_| write(&base.join("cgroup.subtree_control"), "+memory +pids"))
                .map_err(|e| {
                    format!(
                        "cannot enable the memory and pids controllers in {}: {e}",
                        base.display()
                    )
                })?;
            Layout::V2 { base }
        } else {
            return Err("no cgroup filesystem is mounted: mount cgroup2 at /sys/fs/cgroup (or the v1 memory, pids and cpuacct controllers)".into());
        };
        Ok(Self {
            layout,
            next_run: AtomicU64::new(0),
        })
    }

    pub fn version(&self) -> CgroupVersion {
        match self.layout {
            Layout::V1 { .. } => CgroupVersion::V1,
            Layout::V2 { .. } => CgroupVersion::V2,
        }
    }

    fn instance_dirs(&self) -> Vec<&PathBuf> {
        match &self.layout {
            Layout::V1 {
                memory,
                pids,
                cpuacct,
            } => vec![memory, pids, cpuacct],
            Layout::V2 { base } => vec![base],
        }
    }

    /// Run groups that still exist under this instance, in any controller.
    pub fn live_runs(&self) -> Vec<PathBuf> {
        self.instance_dirs()
            .into_iter()
            .filter_map(|dir| fs::read_dir(dir).ok())
            .flat_map(|entries| entries.flatten())
            .filter(|e| e.file_name().to_string_lossy().starts_with("run-"))
            .map(|e| e.path())
            .collect()
    }

    /// Creates the leaf group of one run with its limits set. A cold run's
    /// supervisor (nsjail) lives in the group too, so it gets one more pid:
    /// the script sees the same limit in both modes.
    pub fn create_run(&self, limits: &Limits, supervised: bool) -> io::Result<RunCgroup> {
        let name = self.next_run_name();
        let pids = limits.max_pids + u64::from(supervised);
        self.create_group(&name, limits.memory_bytes, pids)
    }

    /// Creates a leaf group below this instance's parent with memory and pids limits.
    pub fn create_group(
        &self,
        name: &str,
        memory_bytes: u64,
        max_pids: u64,
    ) -> io::Result<RunCgroup> {
        let run = match &self.layout {
            Layout::V1 {
                memory: mem_dir,
                pids: pids_dir,
                cpuacct,
            } => {
                let dirs = vec![mem_dir.join(name), pids_dir.join(name), cpuacct.join(name)];
                for dir in &dirs {
                    fs::create_dir(dir)?;
                }
                let run = RunCgroup::new(dirs, CgroupVersion::V1);
                let _ = write(&run.dirs[0].join("memory.swappiness"), "0");
                run
            }
            Layout::V2 { base } => {
                let dir = base.join(name);
                fs::create_dir(&dir)?;
                let run = RunCgroup::new(vec![dir], CgroupVersion::V2);
                let _ = write(&run.dirs[0].join("memory.swap.max"), "0");
                run
            }
        };
        run.set_limits(memory_bytes, max_pids)?;
        Ok(run)
    }

    /// A fresh name for a run's group.
    pub fn next_run_name(&self) -> String {
        format!("run-{}", self.next_run.fetch_add(1, Ordering::Relaxed))
    }
}

impl Cgroups {
    /// Removes this instance's parent groups; a group that still has runs
    /// in it stays (the last run's teardown, or the next start, removes it).
    pub fn remove_instance(&self) {
        for dir in self.instance_dirs() {
            let _ = fs::remove_dir(dir);
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.remove_instance();
    }
}

impl RunCgroup {
    fn new(dirs: Vec<PathBuf>, version: CgroupVersion) -> Self {
        Self {
            attach: CgroupAttach::for_dirs(&dirs),
            dirs,
            version,
        }
    }

    pub fn attach_handle(&self) -> CgroupAttach {
        self.attach.clone()
    }

    /// Sets the memory and pids limits; lowering them below what the group
    /// already uses fails, so a group is limited before its run starts.
    pub fn set_limits(&self, memory_bytes: u64, max_pids: u64) -> io::Result<()> {
        let (memory, pids) = (memory_bytes.to_string(), max_pids.to_string());
        match self.version {
            CgroupVersion::V1 => {
                // memory first: memsw may never be below it, and it only
                // exists where swap accounting does.
                write(&self.dirs[0].join("memory.limit_in_bytes"), &memory)?;
                let _ = write(&self.dirs[0].join("memory.memsw.limit_in_bytes"), &memory);
                write(&self.dirs[1].join("pids.max"), &pids)
            }
            CgroupVersion::V2 => {
                write(&self.dirs[0].join("memory.max"), &memory)?;
                write(&self.dirs[0].join("pids.max"), &pids)
            }
        }
    }

    /// Renames the group in every hierarchy (cgroupfs allows it, and moving
    /// no process is involved).
    pub fn rename(&mut self, name: &str) -> io::Result<()> {
        let mut result = Ok(());
        for dir in &mut self.dirs {
            let target = dir.with_file_name(name);
            if let Err(e) = fs::rename(&*dir, &target) {
                result = Err(e);
                break;
            }
            *dir = target;
        }
        // Whatever was renamed, the group is still ours to clean up.
        self.attach = CgroupAttach::for_dirs(&self.dirs);
        result
    }

    /// Moves another process (with its threads) into this group.
    pub fn attach_pid(&self, pid: i32) -> io::Result<()> {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }
}

impl CgroupAttach {
    fn for_dirs(dirs: &[PathBuf]) -> Self {
        let procs_files = dirs
            .iter()
            .map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).unwrap())
            .collect();
        Self { procs_files }
    }

    /// Moves the calling process into the run's group. Runs in the child
    /// between fork and exec, so it only makes raw system calls.
    pub fn attach_self_raw(&self) -> io::Result<()> {
        for file in &self.procs_files {
            // SAFETY: plain open/write/close on a NUL-terminated path; "0" means
            // the writing process in both cgroup versions.
            unsafe {
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

impl RunCgroup {
    pub fn usage(&self) -> RunUsage {
        let read_u64 = |path: PathBuf| -> u64 {
            fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        };
        match self.version {
            CgroupVersion::V1 => RunUsage {
                oom_kills: keyed_value(&self.dirs[0].join("memory.oom_control"), "oom_kill"),
                peak_memory_bytes: read_u64(self.dirs[0].join("memory.max_usage_in_bytes")),
                cpu_time: self.cpu_time(),
            },
            CgroupVersion::V2 => RunUsage {
                oom_kills: keyed_value(&self.dirs[0].join("memory.events"), "oom_kill"),
                peak_memory_bytes: read_u64(self.dirs[0].join("memory.peak")),
                cpu_time: self.cpu_time(),
            },
        }
    }

    /// CPU time used by every process of the group so far.
    pub fn cpu_time(&self) -> Duration {
        self.cpu_meter().read()
    }

    /// The group's CPU counter, to be read while the group is borrowed
    /// elsewhere (the run's watch).
    pub fn cpu_meter(&self) -> CpuMeter {
        let file = match self.version {
            CgroupVersion::V1 => self.dirs[2].join("cpuacct.usage"),
            CgroupVersion::V2 => self.dirs[0].join("cpu.stat"),
        };
        CpuMeter {
            file,
            version: self.version,
        }
    }

    /// Pids still in the group (nsjail and anything the jail left behind).
    pub fn remaining_pids(&self) -> Vec<i32> {
        let procs = match self.version {
            CgroupVersion::V1 => self.dirs[1].join("cgroup.procs"),
            CgroupVersion::V2 => self.dirs[0].join("cgroup.procs"),
        };
        fs::read_to_string(procs)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// SIGKILLs every process of the run, repeating until the group is empty
    /// (a process may fork while it is being killed; pids.max bounds that).
    /// It sleeps between rounds, so only the teardown calls it, off the
    /// async workers; a run in progress uses [`RunCgroup::kill_now`].
    fn kill_all(&self) {
        if self.kill_now() {
            return;
        }
        for _ in 0..100 {
            if self.remaining_pids().is_empty() {
                return;
            }
            self.kill_now();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Sends SIGKILL to every process of the run without waiting for them to
    /// go. True when the kernel did it for the whole group (cgroup.kill, v2),
    /// which also catches processes forked meanwhile.
    pub fn kill_now(&self) -> bool {
        if self.version == CgroupVersion::V2
            && write(&self.dirs[0].join("cgroup.kill"), "1").is_ok()
        {
            return true;
        }
        for pid in self.remaining_pids() {
            // SAFETY: kill(2) with a pid read from this run's own cgroup.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        false
    }

    /// Kills every process and removes the group's directories (blocking).
    /// Removal of a dying process's group can fail for a moment, so it is
    /// retried briefly.
    fn remove_now(&mut self) {
        self.kill_all();
        for dir in self.dirs.clone() {
            for attempt in 0..200 {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) if attempt < 199 => {
                        self.kill_all();
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "could not remove a run's cgroup")
                    }
                }
            }
        }
        // Nothing is left for a later drop to do.
        self.dirs.clear();
    }

    /// Kills what is left and removes the group (blocking: call it off the
    /// async threads). Dropping the group does the same, so a run whose
    /// request is abandoned (client gone, drain deadline) leaves nothing either.
    pub fn destroy(self) {
        drop(self);
    }
}

impl Drop for RunCgroup {
    /// Kills what is left at once. Waiting for it to go and removing the
    /// group wait for the kernel, so on an async worker (a request dropped
    /// mid-run: its client went away) that part goes to the background
    /// threads; there, and off the runtime, it is done here.
    fn drop(&mut self) {
        if self.dirs.is_empty() {
            return;
        }
        let on_async_worker =
            tokio::runtime::Handle::try_current().is_ok() && !background::is_background_thread();
        if on_async_worker {
            self.kill_now();
            let mut rest = RunCgroup::new(std::mem::take(&mut self.dirs), self.version);
            drop(background::run(move || rest.remove_now()));
        } else {
            self.remove_now();
        }
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value)
}

fn keyed_value(path: &Path, key: &str) -> u64 {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let (k, v) = line.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0)
}

/// Removes the groups of pyexec instances that died without cleaning up (a
/// SIGKILLed server, a test process): empty groups whose owner pid is gone.
fn remove_stale_instances(parent: &Path) {
    for dir in super::process::stale_entries(parent, "pyexec-") {
        // A group can only be removed once its children (runs, zygotes) are.
        if let Ok(children) = fs::read_dir(&dir) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = fs::remove_dir(child.path());
            }
        }
        let _ = fs::remove_dir(&dir);
    }
}

fn ensure_group_dir(dir: &Path, controller: &str) -> Result<(), String> {
    if let Some(parent) = dir.parent() {
        remove_stale_instances(parent);
    }
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!(
            "cannot create the cgroup {} ({controller}): {e}; run as root with a writable cgroup filesystem (in Docker: --cgroupns=private --cap-add SYS_ADMIN --security-opt apparmor=unconfined, see deploy/README.md)",
            dir.display()
        )),
    }
}

/// cgroup v2 only lets a group without processes hand controllers to its
/// children. In a container the gateway usually sits in the namespace's root
/// group, so it first moves every process there into a leaf of its own.
fn enable_v2_controllers(parent: &Path) -> Result<(), String> {
    let control = parent.join("cgroup.subtree_control");
    let wanted = "+memory +pids";
    if write(&control, wanted).is_ok() {
        let _ = write(&control, "+cpu");
        return Ok(());
    }
    let leaf = parent.join("pyexec-gateway");
    ensure_group_dir(&leaf, "unified")?;
    let procs = fs::read_to_string(parent.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines() {
        let _ = write(&leaf.join("cgroup.procs"), pid.trim());
    }
    write(&control, wanted).map_err(|e| {
        format!(
            "cannot enable the memory and pids controllers in {}: {e}; give the container its own cgroup namespace (docker run --cgroupns=private) or delegate a cgroup to the service",
            parent.display()
        )
    })?;
    let _ = write(&control, "+cpu");
    Ok(())
}

#[derive(Debug)]
pub(super) struct CgroupMount {
    pub(super) fstype: String,
    pub(super) root: String,
    pub(super) mount_point: PathBuf,
    options: Vec<String>,
    /// Mounted `ro` (the per-mount flag, not the superblock's).
    pub(super) read_only: bool,
}

/// Where this instance's groups go in one hierarchy: below the gateway's own
/// group when the view is writable (a host, a privileged container, a v2
/// view the binary remounted), else in the subtree the binary delegated to
/// itself on a v1 container view (see `privileges`).
fn writable_parent(
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
    pub(super) fn has(&self, controller: &str) -> bool {
        self.options.iter().any(|o| o == controller)
    }

    /// Whether this view is the container's own cgroup namespace, seen from
    /// its root group or from the delegated group the gateway moved into (a
    /// second pyexec in the container finds itself there). Outside one, the
    /// view may be the host's.
    pub(super) fn is_own_namespace_view(&self, own_path: &str) -> bool {
        self.root == "/" && (own_path == "/" || own_path == format!("/{DELEGATED_GROUP}"))
    }

    /// The subtree bind a v1 container's gateway keeps for itself, not a view
    /// of the hierarchy.
    pub(super) fn is_delegated(&self) -> bool {
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

pub(super) fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
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
pub(super) fn own_group_path(proc_self_cgroup: &str, mount: &CgroupMount) -> String {
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
