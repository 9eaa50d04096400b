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

mod mounts;

use mounts::writable_parent;
pub(super) use mounts::{CgroupMount, own_group_path, parse_cgroup_mounts};

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

    /// This instance's group name, the same in every controller: a
    /// process whose /proc/PID/cgroup names `/<it>/run-` is in one of its runs.
    pub fn instance(&self) -> String {
        self.instance_dirs()[0]
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
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
            background::pause(Duration::from_millis(1));
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
                        background::pause(Duration::from_millis(5));
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
