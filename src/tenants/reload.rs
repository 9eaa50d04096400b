//! The live tenant set and its hot reload: the policies folder is watched
//! (the folder, not the files: ConfigMaps swap a `..data` symlink) and SIGHUP
//! forces a reload. A reload is all or nothing; a bad folder leaves the
//! previous registry in force and says why in the log and in `/health`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use parking_lot::RwLock;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::policy::{self, LoadContext, PolicyError};
use super::{Tenant, TenantRegistry};

/// What the operator listener's `/debug/state` says about the policies;
/// the public `/health` gets [`ReloadStatus::public_summary`] only.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReloadStatus {
    /// Hash over every tenant's revision: changes whenever any policy does.
    pub revision: String,
    /// Each policy tenant's revision, by name.
    pub tenants: std::collections::BTreeMap<String, String>,
    pub reloads: u64,
    /// The errors of the last rejected reload, cleared by a good one.
    pub last_error: Vec<String>,
}

impl ReloadStatus {
    /// The last reload as strangers may see it: `ok`, or which file and
    /// field made it fail, never the value found there (a pasted key, a
    /// secret) nor a tenant's name or revision.
    pub fn public_summary(&self) -> String {
        match self.last_error.first() {
            None => "ok".into(),
            Some(error) => format!("policy reload rejected: {}", file_and_field(error)),
        }
    }
}

/// `file: field` of a `file: field: reason` error, each part kept only when
/// it looks like what it should be; a folder-level error has neither.
fn file_and_field(error: &str) -> String {
    let mut parts = error.splitn(3, ": ");
    let file = parts.next().filter(|f| is_policy_file_name(f));
    let field = parts.next().filter(|f| is_field_path(f));
    let reason = parts.next();
    match (file, field, reason) {
        (Some(file), Some(field), Some(_)) => format!("{file}: {field}"),
        (Some(file), _, _) => file.to_string(),
        (None, _, _) => "the policies folder".to_string(),
    }
}

fn is_policy_file_name(name: &str) -> bool {
    name.len() <= 128
        && (name.ends_with(".yaml") || name.ends_with(".yml"))
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn is_field_path(field: &str) -> bool {
    field.len() <= 128
        && field.starts_with(|c: char| c.is_ascii_alphabetic())
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._[]".contains(&b))
}

pub struct PolicyStore {
    current: ArcSwap<TenantRegistry>,
    dir: Option<PathBuf>,
    ctx: LoadContext,
    bootstrap_key: String,
    status: RwLock<ReloadStatus>,
    /// Serializes reloads (watcher and SIGHUP may fire together).
    reloading: tokio::sync::Mutex<()>,
}

impl PolicyStore {
    /// Loads the folder once. Errors here stop the server from starting: a
    /// deployment with a broken policy must not come up half-configured.
    pub fn load(
        dir: Option<PathBuf>,
        ctx: LoadContext,
        bootstrap_key: String,
    ) -> Result<Arc<Self>, Vec<PolicyError>> {
        let tenants = match &dir {
            Some(dir) if dir.is_dir() => policy::load_dir(dir, &ctx)?,
            Some(dir) => {
                tracing::warn!(dir = %dir.display(), "the policies folder does not exist: only the bootstrap tenant is served");
                Vec::new()
            }
            None => Vec::new(),
        };
        let status = status_of(&tenants, 0);
        tracing::info!(tenants = tenants.len(), revision = %status.revision, "tenant policies loaded");
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(TenantRegistry::new(Some(&bootstrap_key), tenants)),
            dir,
            ctx,
            bootstrap_key,
            status: RwLock::new(status),
            reloading: tokio::sync::Mutex::new(()),
        }))
    }

    /// The registry in force now. Requests keep the snapshot they started
    /// with; a reload never changes it under them.
    pub fn registry(&self) -> Arc<TenantRegistry> {
        self.current.load_full()
    }

    pub fn status(&self) -> ReloadStatus {
        self.status.read().clone()
    }

    pub fn dir(&self) -> Option<&PathBuf> {
        self.dir.as_ref()
    }

    /// Re-reads the folder and swaps the registry in one step, or keeps the
    /// old one and logs why.
    pub async fn reload(self: &Arc<Self>) -> Result<(), Vec<PolicyError>> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let _guard = self.reloading.lock().await;
        let ctx = self.ctx.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            if dir.is_dir() {
                policy::load_dir(&dir, &ctx)
            } else {
                Err(vec![PolicyError(format!(
                    "the policies folder {} is gone",
                    dir.display()
                ))])
            }
        })
        .await
        .unwrap_or_else(|e| Err(vec![PolicyError(format!("reload task failed: {e}"))]));
        let mut status = self.status.write();
        match loaded {
            Ok(tenants) => {
                let next = status_of(&tenants, status.reloads + 1);
                if next.revision != status.revision {
                    tracing::info!(tenants = tenants.len(), revision = %next.revision, "tenant policies reloaded");
                }
                self.current.store(Arc::new(TenantRegistry::new(
                    Some(&self.bootstrap_key),
                    tenants,
                )));
                *status = next;
                Ok(())
            }
            Err(errors) => {
                for error in &errors {
                    tracing::error!(error = %error, "policy reload rejected: the previous policies stay in force");
                }
                status.last_error = errors.iter().map(ToString::to_string).collect();
                Err(errors)
            }
        }
    }

    /// Watches the folder and reloads after each burst of changes; also
    /// reloads on SIGHUP. Runs until the process ends.
    pub fn spawn_watchers(self: &Arc<Self>) {
        let Some(dir) = self.dir.clone() else {
            return;
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let watcher_tx = tx.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if is_change(&event) {
                let _ = watcher_tx.send(());
            }
        })
        .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the policies folder; reload with SIGHUP");
                None
            }
        };
        let store = self.clone();
        tokio::spawn(async move {
            // The watcher lives as long as this task.
            let _watcher = watcher;
            while rx.recv().await.is_some() {
                // Editors and ConfigMap updates touch several entries at once:
                // let the burst settle, then read the folder once.
                tokio::time::sleep(Duration::from_millis(150)).await;
                while rx.try_recv().is_ok() {}
                let _ = store.reload().await;
            }
        });
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::info!("SIGHUP: reloading tenant policies");
                        if tx.send(()).is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
        }
    }
}

/// Reading the folder (as a reload does) makes open/close events; reacting
/// to those would reload forever. A writer closing a file is a change (it
/// marks a finished in-place edit), and so is everything else: create,
/// modify, rename, remove, and watcher errors, to be safe.
fn is_change(event: &notify::Result<notify::Event>) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match event {
        Ok(event) => match event.kind {
            notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            notify::EventKind::Access(_) => false,
            _ => true,
        },
        Err(_) => true,
    }
}

fn status_of(tenants: &[Tenant], reloads: u64) -> ReloadStatus {
    let tenants: std::collections::BTreeMap<String, String> = tenants
        .iter()
        .map(|t| (t.name.clone(), t.revision.clone()))
        .collect();
    let mut hasher = Sha256::new();
    for (name, revision) in &tenants {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(revision.as_bytes());
        hasher.update([0]);
    }
    ReloadStatus {
        revision: hex::encode(&hasher.finalize()[..8]),
        tenants,
        reloads,
        last_error: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
    use notify::{Event, EventKind};

    #[test]
    fn reads_are_not_changes_but_writes_renames_and_removals_are() {
        let event = |kind| Ok(Event::new(kind));
        assert!(!is_change(&event(EventKind::Access(AccessKind::Open(
            AccessMode::Read
        )))));
        assert!(!is_change(&event(EventKind::Access(AccessKind::Close(
            AccessMode::Read
        )))));
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Remove(notify::event::RemoveKind::File),
        ] {
            assert!(is_change(&event(kind)), "{kind:?}");
        }
    }
}

#[cfg(test)]
mod public_summary_tests {
    use super::*;

    fn rejected(error: &str) -> String {
        ReloadStatus {
            last_error: vec![error.into()],
            ..ReloadStatus::default()
        }
        .public_summary()
    }

    #[test]
    fn a_rejected_reload_names_file_and_field_but_never_the_value() {
        assert_eq!(ReloadStatus::default().public_summary(), "ok");
        assert_eq!(
            rejected("acme.yaml: spec.sandbox.memoryMiB: 1 is out of range (32 … 65536)"),
            "policy reload rejected: acme.yaml: spec.sandbox.memoryMiB"
        );
        assert_eq!(
            rejected(
                "acme.yaml: spec.auth.apiKeys[0].sha256: `pyx_live_SECRET` is not 64 hex digits"
            ),
            "policy reload rejected: acme.yaml: spec.auth.apiKeys[0].sha256"
        );
        assert_eq!(
            rejected("acme.yaml: invalid type: string \"pyx_live_SECRET: x\", expected a map"),
            "policy reload rejected: acme.yaml"
        );
        assert_eq!(
            rejected("cannot read the policies folder /etc/pyexec/policies: denied"),
            "policy reload rejected: the policies folder"
        );
    }
}
