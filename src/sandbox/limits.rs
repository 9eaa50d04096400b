//! Per-run limits and the nsjail command line built from them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;

/// What one run may use. Every field is enforced by the kernel or by the
/// gateway's own reading of the run's pipes, never by trusting the script.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Wall-clock time from start to the last byte of the result.
    pub wall_timeout: Duration,
    /// CPU time of the jailed process (RLIMIT_CPU) and, summed over the run's
    /// cgroup, the threshold above which a kill is reported as a timeout.
    pub cpu_seconds: u64,
    /// Memory of the whole run (cgroup memory controller).
    pub memory_bytes: u64,
    /// Processes and threads of the whole run (cgroup pids controller).
    pub max_pids: u64,
    /// Largest file the script may write (RLIMIT_FSIZE, whole MiB).
    pub file_size_bytes: u64,
    /// Size of the run's private `/tmp`.
    pub tmpfs_bytes: u64,
    /// Size of the run's private `/dev/shm` (multiprocessing's locks and
    /// queues, `shared_memory`). Its pages are charged to the run's memory.
    pub shm_bytes: u64,
    /// Bytes kept of stdout and of stderr each, counted as they go on the
    /// wire (JSON-escaped); the rest is drained and flagged.
    pub output_bytes: u64,
    /// Largest JSON result accepted on the result channel.
    pub result_bytes: u64,
    /// Files returned from `/tmp/out`, at most.
    pub output_files: u64,
    /// Their decoded bytes together, at most.
    pub output_file_bytes: u64,
}

impl Limits {
    /// The most the result channel carries: the result, and the output
    /// files as base64 with their paths (a path is at most 8 names of 255
    /// bytes, JSON-escaped).
    pub fn result_channel_bytes(&self) -> u64 {
        const FRAME_BYTES: u64 = 256;
        const PATH_BYTES: u64 = 8 * 256 * 6;
        self.result_bytes
            + FRAME_BYTES
            + self.output_file_bytes.div_ceil(3) * 4
            + self.output_files * (PATH_BYTES + FRAME_BYTES)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            wall_timeout: Duration::from_secs(30),
            cpu_seconds: 30,
            memory_bytes: 256 * MIB,
            max_pids: 32,
            file_size_bytes: 16 * MIB,
            tmpfs_bytes: 32 * MIB,
            shm_bytes: 32 * MIB,
            output_bytes: MIB,
            result_bytes: MIB,
            output_files: 32,
            output_file_bytes: 8 * MIB,
        }
    }
}

/// Where the jail's parts are on the host.
#[derive(Debug, Clone)]
pub struct JailPaths {
    pub nsjail_bin: PathBuf,
    /// Base config (protobuf text): namespaces, uid map, read-only mounts.
    pub base_config: PathBuf,
    /// Optional tenant-specific config loaded after the base one.
    pub extra_config: Option<PathBuf>,
    pub seccomp_policy: Option<PathBuf>,
    /// The warm zygote's policy: the cold one without the namespace and
    /// mount bans, which each runner stacks back on itself.
    pub zygote_seccomp_policy: Option<PathBuf>,
    pub harness: PathBuf,
    /// Files bound read-only into the jail: `(source, path in the jail)`.
    pub extra_files: Vec<(PathBuf, PathBuf)>,
    /// The Python interpreter to run, e.g. `/opt/pyexec/python/bin/python3`.
    pub python_bin: PathBuf,
    /// The tree that holds the interpreter's environment (a venv or a prefix),
    /// bound read-only at the same path inside the jail.
    pub python_root: PathBuf,
}

/// Where the harness sits inside the jail.
pub const JAIL_HARNESS_PATH: &str = "/pyexec/harness.py";
/// The result channel's fd number inside and outside the jail.
pub const RESULT_FD: i32 = 3;
/// nsjail's own log, kept apart from the script's stderr.
pub const NSJAIL_LOG_FD: i32 = 4;

/// Queued signals any one run may hold (`RLIMIT_SIGPENDING`). The kernel
/// charges them to the owner of the jail's user namespace, root, whose own
/// limit (~96,000 here) is the whole host's: a run that filled it made every
/// `timer_create` of the host fail. 64 is far more than Python or
/// multiprocessing queue, and bounded by it N runs hold at most 64 N.
pub const JAIL_PENDING_SIGNALS: u64 = 64;
/// POSIX message queue bytes (`RLIMIT_MSGQUEUE`), charged to root the same
/// way; nothing a script needs uses them, so none.
pub const JAIL_MESSAGE_QUEUE_BYTES: u64 = 0;
/// Memory a run may lock (`RLIMIT_MEMLOCK`, KiB): `SHM_LOCK` segments are
/// charged to root too. mlock of a few pages still works.
pub const JAIL_LOCKED_KIB: u64 = 64;

/// Host variables copied into the jail. Older OpenBLAS builds crash on some
/// processors unless told the core type; nothing else of the host's
/// environment ever enters.
pub const PASSTHROUGH_ENV: &[&str] = &["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"];

/// The jail's environment, built from scratch.
pub fn jail_environment(host_env: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", "/tmp"),
        ("TMPDIR", "/tmp"),
        ("LANG", "C.UTF-8"),
        ("LC_ALL", "C.UTF-8"),
        // Single-threaded numeric libraries: predictable CPU use per run and
        // safe to fork in the warm path.
        ("OMP_NUM_THREADS", "1"),
        ("OPENBLAS_NUM_THREADS", "1"),
        ("MKL_NUM_THREADS", "1"),
        ("NUMEXPR_NUM_THREADS", "1"),
        ("MPLCONFIGDIR", "/tmp"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for name in PASSTHROUGH_ENV {
        if let Some(value) = host_env(name) {
            env.push((name.to_string(), value));
        }
    }
    env
}

/// Where the zygote sits inside the jail.
pub const JAIL_ZYGOTE_PATH: &str = "/pyexec/zygote.py";

impl JailPaths {
    /// The parts every jail shares: configs, seccomp, the runtime and harness
    /// binds, the result/control fd, the log fd and the environment.
    fn common_argv(
        &self,
        seccomp_policy: Option<&PathBuf>,
        env: &[(String, String)],
    ) -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::with_capacity(48);
        argv.extend(["--config".into(), self.base_config.clone().into()]);
        if let Some(extra) = &self.extra_config {
            argv.extend(["--config".into(), extra.clone().into()]);
        }
        if let Some(policy) = seccomp_policy {
            argv.extend(["--seccomp_policy".into(), policy.clone().into()]);
        }
        for flag in [
            "--log_fd",
            &NSJAIL_LOG_FD.to_string(),
            "--pass_fd",
            &RESULT_FD.to_string(),
            "--proc_path",
            "/proc",
            "--rlimit_msgqueue",
            &JAIL_MESSAGE_QUEUE_BYTES.to_string(),
            "--rlimit_memlock",
            &JAIL_LOCKED_KIB.to_string(),
            "--bindmount_ro",
            &bind_spec(&self.python_root, &self.python_root),
            "--bindmount_ro",
            &bind_spec(&self.harness, Path::new(JAIL_HARNESS_PATH)),
        ] {
            argv.push(flag.into());
        }
        for (src, dst) in &self.extra_files {
            argv.push("--bindmount_ro".into());
            argv.push(bind_spec(src, dst).into());
        }
        for (key, value) in env {
            argv.push("--env".into());
            argv.push(format!("{key}={value}").into());
        }
        argv
    }

    /// nsjail's argv for one cold run of the harness. No script text, argument
    /// or secret is ever on it: those travel on stdin.
    pub fn cold_argv(&self, limits: &Limits, env: &[(String, String)]) -> Vec<OsString> {
        let mut argv = self.common_argv(self.seccomp_policy.as_ref(), env);
        // nsjail's own timer is a backstop two seconds behind the gateway's.
        let backstop = limits.wall_timeout.as_secs_f64().ceil() as u64 + 2;
        for flag in [
            "--time_limit",
            &backstop.to_string(),
            "--rlimit_cpu",
            &limits.cpu_seconds.max(1).to_string(),
            "--rlimit_fsize",
            &limits.file_size_bytes.div_ceil(MIB).max(1).to_string(),
            "--mount",
            &tmpfs_mount("/tmp", limits.tmpfs_bytes),
            "--mount",
            &tmpfs_mount("/dev/shm", limits.shm_bytes),
            "--",
        ] {
            argv.push(flag.into());
        }
        argv.push(self.python_bin.clone().into());
        // -I: ignore PYTHON* variables and user site; -B: no .pyc writes.
        argv.extend(["-I".into(), "-B".into(), JAIL_HARNESS_PATH.into()]);
        argv
    }

    /// nsjail's argv for a warm zygote. It lives until retired, so it has no
    /// time or CPU limit of its own; each runner sets the request's limits on
    /// itself and lives in the request's cgroup.
    pub fn zygote_argv(
        &self,
        env: &[(String, String)],
        preload: &[String],
        ready_runners: usize,
        idle_warm_up: bool,
    ) -> Vec<OsString> {
        let zygote = self.harness.with_file_name("zygote.py");
        let mut argv = self.common_argv(self.zygote_seccomp_policy.as_ref(), env);
        for flag in [
            "--proc_rw",
            "--time_limit",
            "0",
            "--rlimit_cpu",
            "inf",
            "--rlimit_fsize",
            "inf",
            "--mount",
            "none:/tmp:tmpfs:size=1048576,mode=1777",
            // Only where each runner mounts its own `/dev/shm`.
            "--mount",
            "none:/dev/shm:tmpfs:size=4096,nr_inodes=1,mode=755",
            "--bindmount_ro",
            &bind_spec(&zygote, Path::new(JAIL_ZYGOTE_PATH)),
            "--",
        ] {
            argv.push(flag.into());
        }
        argv.push(self.python_bin.clone().into());
        argv.extend(["-I".into(), "-B".into(), JAIL_ZYGOTE_PATH.into()]);
        argv.push(format!("--ready={ready_runners}").into());
        if idle_warm_up {
            argv.push("--idle-warm-up".into());
        }
        argv.extend(preload.iter().map(OsString::from));
        argv
    }
}

/// Inodes of the run's `/tmp`: one per 2 KiB of its size (16,384 for the
/// default 32 MiB). tmpfs would otherwise allow millions, and each costs
/// kernel memory, so creating empty files ended in the memory limit instead
/// of a plain ENOSPC on `/tmp`.
pub fn tmpfs_inodes(tmpfs_bytes: u64) -> u64 {
    (tmpfs_bytes / (2 * KIB)).max(1024)
}

/// nsjail's `--mount` of a private tmpfs at `dst`.
fn tmpfs_mount(dst: &str, bytes: u64) -> String {
    format!(
        "none:{dst}:tmpfs:size={bytes},nr_inodes={},mode=1777",
        tmpfs_inodes(bytes)
    )
}

fn bind_spec(src: &Path, dst: &Path) -> String {
    format!("{}:{}", src.display(), dst.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> JailPaths {
        JailPaths {
            nsjail_bin: "/opt/nsjail".into(),
            base_config: "/cfg/base.cfg".into(),
            extra_config: None,
            seccomp_policy: Some("/cfg/seccomp.kafel".into()),
            zygote_seccomp_policy: Some("/cfg/seccomp-zygote.kafel".into()),
            harness: "/cfg/harness.py".into(),
            extra_files: vec![("/run/x/hosts".into(), "/etc/hosts".into())],
            python_bin: "/opt/py/bin/python3".into(),
            python_root: "/opt/py".into(),
        }
    }

    fn argv_strings(limits: &Limits, env: &[(String, String)]) -> Vec<String> {
        paths()
            .cold_argv(limits, env)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    fn value_after(argv: &[String], flag: &str) -> Vec<String> {
        argv.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    #[test]
    fn default_limits_become_nsjail_flags() {
        let argv = argv_strings(&Limits::default(), &[]);
        assert_eq!(value_after(&argv, "--rlimit_cpu"), ["30"]);
        assert_eq!(value_after(&argv, "--rlimit_fsize"), ["16"]);
        assert_eq!(value_after(&argv, "--time_limit"), ["32"]);
        assert_eq!(value_after(&argv, "--pass_fd"), ["3"]);
        assert_eq!(value_after(&argv, "--log_fd"), ["4"]);
        assert_eq!(
            value_after(&argv, "--mount"),
            [
                "none:/tmp:tmpfs:size=33554432,nr_inodes=16384,mode=1777",
                "none:/dev/shm:tmpfs:size=33554432,nr_inodes=16384,mode=1777"
            ]
        );
        assert_eq!(
            value_after(&argv, "--seccomp_policy"),
            ["/cfg/seccomp.kafel"]
        );
    }

    #[test]
    fn custom_limits_are_rounded_up_to_what_nsjail_accepts() {
        let limits = Limits {
            wall_timeout: Duration::from_millis(1500),
            cpu_seconds: 0,
            file_size_bytes: MIB + 1,
            tmpfs_bytes: 4 * MIB,
            shm_bytes: MIB,
            ..Limits::default()
        };
        let argv = argv_strings(&limits, &[]);
        assert_eq!(value_after(&argv, "--time_limit"), ["4"]);
        assert_eq!(value_after(&argv, "--rlimit_cpu"), ["1"]);
        assert_eq!(value_after(&argv, "--rlimit_fsize"), ["2"]);
        assert_eq!(
            value_after(&argv, "--mount"),
            [
                "none:/tmp:tmpfs:size=4194304,nr_inodes=2048,mode=1777",
                "none:/dev/shm:tmpfs:size=1048576,nr_inodes=1024,mode=1777"
            ]
        );
    }

    #[test]
    fn runtime_and_harness_are_bound_read_only_and_the_command_follows_the_separator() {
        let argv = argv_strings(&Limits::default(), &[]);
        assert_eq!(
            value_after(&argv, "--bindmount_ro"),
            [
                "/opt/py:/opt/py",
                "/cfg/harness.py:/pyexec/harness.py",
                "/run/x/hosts:/etc/hosts"
            ]
        );
        let separator = argv.iter().position(|a| a == "--").unwrap();
        assert_eq!(
            &argv[separator + 1..],
            ["/opt/py/bin/python3", "-I", "-B", "/pyexec/harness.py"]
        );
        assert_eq!(argv[0..2], ["--config", "/cfg/base.cfg"]);
        assert_eq!(value_after(&argv, "--proc_path"), ["/proc"]);
        assert!(!argv.contains(&"--proc_rw".to_string()));
    }

    #[test]
    fn the_zygote_has_no_time_limit_and_a_writable_proc_for_its_runners() {
        let argv: Vec<String> = paths()
            .zygote_argv(&[], &["numpy".into(), "pandas".into()], 4, false)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(value_after(&argv, "--time_limit"), ["0"]);
        assert_eq!(
            value_after(&argv, "--seccomp_policy"),
            ["/cfg/seccomp-zygote.kafel"]
        );
        assert!(argv.contains(&"--proc_rw".to_string()));
        assert!(
            value_after(&argv, "--bindmount_ro")
                .contains(&"/cfg/zygote.py:/pyexec/zygote.py".to_string())
        );
        let separator = argv.iter().position(|a| a == "--").unwrap();
        assert_eq!(
            &argv[separator + 1..],
            [
                "/opt/py/bin/python3",
                "-I",
                "-B",
                "/pyexec/zygote.py",
                "--ready=4",
                "numpy",
                "pandas"
            ]
        );
    }

    #[test]
    fn environment_is_built_from_scratch_with_only_the_allowlisted_host_values() {
        let env = jail_environment(|name| match name {
            "OPENBLAS_CORETYPE" => Some("Haswell".into()),
            "AWS_SECRET_ACCESS_KEY" | "PYEXEC_API_KEY" => Some("secret".into()),
            _ => None,
        });
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"OPENBLAS_CORETYPE"));
        assert!(names.contains(&"HOME"));
        assert!(!env.iter().any(|(_, v)| v == "secret"));
        let argv = argv_strings(&Limits::default(), &env);
        assert!(value_after(&argv, "--env").contains(&"HOME=/tmp".to_string()));
        assert!(!argv.iter().any(|a| a.contains("secret")));
    }
}
