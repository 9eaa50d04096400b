//! The files the jail gets from the gateway rather than from the host's
//! system folders: the harness and the three `/etc` files name resolution
//! reads (`hosts`, `hostname`, `resolv.conf`).
//!
//! A bind mount's source path is visible inside the jail, in
//! `/proc/self/mountinfo`. Binding the harness straight from the repository
//! told every script where the service is installed (`/srv/app/nsjail/...`),
//! and binding Docker's `/etc/hosts` names the container's id on the host. So
//! they are copied once, at start, into a private folder of neutral name, and
//! the `/etc` files are written from scratch: the jail has no network, so the
//! host's resolver settings would be of no use to it anyway.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `/etc` files of the jail and their fixed contents.
const ETC_FILES: &[(&str, &str)] = &[
    (
        "hosts",
        "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost sandbox\n",
    ),
    ("hostname", "sandbox\n"),
    (
        "resolv.conf",
        "# The jail has no network: nothing resolves outside it.\n",
    ),
];

const ZYGOTE_POLICY: &str = "seccomp-zygote.kafel";

/// The `USE` section of the warm zygote's policy: everything of the cold
/// policy but the bans on new namespaces and mounts, which the zygote needs to
/// build each runner and which each runner re-imposes on itself.
const ZYGOTE_USE: &str =
    "USE pyexec_kill,\nUSE pyexec_no_kernel_interfaces,\nUSE pyexec_no_sockets\nDEFAULT ALLOW\n";

/// Derives the zygote's policy from the cold one by replacing its `USE`
/// section (the file keeps it last for this reason).
fn zygote_policy(cold: &str) -> Result<String, String> {
    let start = cold
        .lines()
        .position(|line| line.starts_with("USE "))
        .ok_or("seccomp.kafel has no USE section")?;
    let mut policy: String = cold.lines().take(start).flat_map(|l| [l, "\n"]).collect();
    policy.push_str(ZYGOTE_USE);
    Ok(policy)
}

/// The folder, removed when the sandbox is dropped.
#[derive(Debug)]
pub struct JailFiles {
    dir: PathBuf,
}

impl JailFiles {
    /// Creates the folder (root-owned, 0755, a fresh random name, so nothing
    /// can have been planted there before) and its read-only files.
    pub fn create(harness: &Path) -> Result<Self, String> {
        let code = fs::read(harness)
            .map_err(|e| format!("cannot read the harness {}: {e}", harness.display()))?;
        let parent = std::env::temp_dir();
        remove_stale(&parent);
        let dir = parent.join(format!(
            "pyexec-jail-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let files = Self { dir };
        let write = |name: &str, bytes: &[u8]| -> Result<(), String> {
            let path = files.dir.join(name);
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o444)
                .open(&path)
                .and_then(|mut f| f.write_all(bytes))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        };
        write("harness.py", &code)?;
        // The warm path's zygote sits beside the harness, for the same reason,
        // with the seccomp policy it runs under.
        if let Ok(zygote) = fs::read(harness.with_file_name("zygote.py")) {
            write("zygote.py", &zygote)?;
        }
        if let Ok(policy) = fs::read_to_string(harness.with_file_name("seccomp.kafel")) {
            write(ZYGOTE_POLICY, zygote_policy(&policy)?.as_bytes())?;
        }
        for (name, contents) in ETC_FILES {
            write(name, contents.as_bytes())?;
        }
        Ok(files)
    }

    pub fn harness(&self) -> PathBuf {
        self.dir.join("harness.py")
    }

    /// The warm zygote's seccomp policy, when the jail has one.
    pub fn zygote_policy(&self) -> Option<PathBuf> {
        Some(self.dir.join(ZYGOTE_POLICY)).filter(|p| p.exists())
    }

    /// `(source on the host, path in the jail)` of each `/etc` file.
    pub fn etc_binds(&self) -> Vec<(PathBuf, PathBuf)> {
        ETC_FILES
            .iter()
            .map(|(name, _)| (self.dir.join(name), Path::new("/etc").join(name)))
            .collect()
    }
}

/// Removes the folders of pyexec processes that ended without dropping their
/// sandbox (a killed server, a finished test binary): `pyexec-jail-<pid>-*`
/// whose pid is gone. Only real directories are touched, never symlinks.
fn remove_stale(parent: &Path) {
    for dir in super::process::stale_entries(parent, "pyexec-jail-") {
        let _ = fs::remove_dir_all(dir);
    }
}

impl JailFiles {
    /// Removes the folder now (a stopping server), not only when dropped.
    pub fn remove(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for JailFiles {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zygote_policy_keeps_every_rule_but_the_namespace_and_mount_bans() {
        let cold = include_str!("../../nsjail/seccomp.kafel");
        let zygote = zygote_policy(cold).unwrap();
        assert!(zygote.contains("POLICY pyexec_no_new_namespaces"));
        let uses: Vec<&str> = zygote.lines().filter(|l| l.starts_with("USE ")).collect();
        assert_eq!(
            uses,
            [
                "USE pyexec_kill,",
                "USE pyexec_no_kernel_interfaces,",
                "USE pyexec_no_sockets"
            ]
        );
        assert!(cold.contains("USE pyexec_no_new_namespaces,"));
        assert!(zygote.trim_end().ends_with("DEFAULT ALLOW"));
    }

    #[test]
    fn files_are_copied_read_only_into_a_neutral_folder_and_removed_on_drop() {
        let harness = std::env::temp_dir().join(format!("harness-{}.py", std::process::id()));
        fs::write(&harness, "print('harness')").unwrap();
        let files = JailFiles::create(&harness).unwrap();
        let copy = files.harness();
        assert_eq!(fs::read_to_string(&copy).unwrap(), "print('harness')");
        assert!(copy.to_string_lossy().contains("/pyexec-jail-"));
        let binds = files.etc_binds();
        assert_eq!(binds[0].1, Path::new("/etc/hosts"));
        assert!(
            fs::read_to_string(&binds[0].0)
                .unwrap()
                .contains("localhost")
        );
        let dir = files.dir.clone();
        drop(files);
        assert!(!dir.exists());
        fs::remove_file(harness).unwrap();
    }
}
