//! Temporary tenant policy folders and files.

use std::path::{Path, PathBuf};

/// A temporary policies folder.
pub struct PolicyDir {
    dir: tempfile::TempDir,
}

impl PolicyDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `<name>.yaml` by rename, as a ConfigMap update does, so the
    /// watcher never reads half a file.
    pub fn write(&self, name: &str, yaml: &str) {
        let tmp = self.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.path().join(format!("{name}.yaml"))).unwrap();
    }

    /// Writes any other file (keys, secrets) and returns its path.
    pub fn write_file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.path().join(format!("{name}.yaml"))).unwrap();
    }
}

/// A tenant policy with one API key and `spec_extra` (YAML lines indented
/// by two spaces, e.g. `"  cache: {enabled: true}\n"`).
pub fn tenant_yaml(name: &str, api_key: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: pyexec.dev/v1\nkind: Tenant\nmetadata:\n  name: {name}\nspec:\n  auth:\n    apiKeys:\n      - sha256: {}\n{spec_extra}",
        hex::encode(pyexec::tenants::hash_api_key(api_key))
    )
}
