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

use super::seccomp::{self, Jail};

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

const COLD_POLICY: &str = "seccomp.kafel";
const ZYGOTE_POLICY: &str = "seccomp-zygote.kafel";

/// The folder, removed when the sandbox is dropped.
#[derive(Debug)]
pub struct JailFiles {
    dir: PathBuf,
}

impl JailFiles {
    /// Creates the folder (root-owned, 0755, a fresh random name, so nothing
    /// can have been planted there before) and its read-only files, from the
    /// jail's own files in `nsjail_dir`. Without the harness or the seccomp
    /// rules nothing may run, so either missing is an error.
    pub fn create(nsjail_dir: &Path) -> Result<Self, String> {
        let harness = nsjail_dir.join("harness.py");
        let code = fs::read(&harness)
            .map_err(|e| format!("cannot read the harness {}: {e}", harness.display()))?;
        let rules = nsjail_dir.join("seccomp.kafel");
        let rule_groups = fs::read_to_string(&rules).map_err(|e| {
            format!(
                "cannot read the seccomp rules {}: {e}; no jail runs without its filter",
                rules.display()
            )
        })?;
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
        // The warm path's zygote sits beside the harness, for the same reason.
        if let Ok(zygote) = fs::read(nsjail_dir.join("zygote.py")) {
            write("zygote.py", &zygote)?;
        }
        write(
            COLD_POLICY,
            seccomp::policy(&rule_groups, Jail::Cold).as_bytes(),
        )?;
        write(
            ZYGOTE_POLICY,
            seccomp::policy(&rule_groups, Jail::Zygote).as_bytes(),
        )?;
        for (name, contents) in ETC_FILES {
            write(name, contents.as_bytes())?;
        }
        Ok(files)
    }

    pub fn harness(&self) -> PathBuf {
        self.dir.join("harness.py")
    }

    /// The seccomp policy of a cold jail (and of every warm runner, under its
    /// own filter).
    pub fn cold_policy(&self) -> PathBuf {
        self.dir.join(COLD_POLICY)
    }

    /// The warm zygote's seccomp policy.
    pub fn zygote_policy(&self) -> PathBuf {
        self.dir.join(ZYGOTE_POLICY)
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
    fn files_are_copied_read_only_into_a_neutral_folder_and_removed_on_drop() {
        let nsjail_dir = std::env::temp_dir().join(format!("nsjail-dir-{}", std::process::id()));
        fs::create_dir_all(&nsjail_dir).unwrap();
        fs::write(nsjail_dir.join("harness.py"), "print('harness')").unwrap();
        // Without the seccomp rules there is no jail.
        let missing = JailFiles::create(&nsjail_dir).unwrap_err();
        assert!(missing.contains("seccomp"), "{missing}");
        fs::write(
            nsjail_dir.join("seccomp.kafel"),
            "POLICY p { KILL { ptrace } }\n",
        )
        .unwrap();
        let files = JailFiles::create(&nsjail_dir).unwrap();
        let copy = files.harness();
        assert_eq!(fs::read_to_string(&copy).unwrap(), "print('harness')");
        assert!(copy.to_string_lossy().contains("/pyexec-jail-"));
        for policy in [files.cold_policy(), files.zygote_policy()] {
            let text = fs::read_to_string(policy).unwrap();
            assert!(text.starts_with("POLICY p") && text.ends_with("DEFAULT ALLOW\n"));
        }
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
        fs::remove_dir_all(nsjail_dir).unwrap();
    }
}
