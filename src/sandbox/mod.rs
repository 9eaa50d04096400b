//! Everything that touches nsjail and the jailed interpreter. No HTTP here:
//! the gateway and the `pyexec run` command both call [`Sandbox::execute`].

mod background;
mod capture;
pub mod cgroup;
mod cold;
mod deadline;
pub mod files;
mod jail_files;
mod launch;
pub mod limits;
mod outcome;
mod preflight;
pub mod privileges;
mod process;
mod seccomp;
mod slots;
mod trace;
mod warm;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::telemetry;

pub use cgroup::{CgroupVersion, Cgroups, RunUsage};
pub use limits::{JailPaths, KIB, Limits, MIB};
pub use outcome::{Outcome, Output, RunReport, SandboxError};
pub use slots::{GroupUse, RunShare};
pub use warm::{WarmConfig, WarmPoolStatus};

use jail_files::JailFiles;
use launch::python_root;
use outcome::{classify, conclude};
use preflight::preflight;
use slots::{SlotPermit, Slots};

/// How a run gets its interpreter: a fresh nsjail and Python per run
/// (`cold`), or a fork of a pre-started jailed interpreter (`warm`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    #[default]
    Warm,
    Cold,
}

impl SandboxMode {
    pub fn label(self) -> &'static str {
        match self {
            SandboxMode::Warm => "warm",
            SandboxMode::Cold => "cold",
        }
    }
}

/// Everything a tenant's policy decides about its runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SandboxPolicy {
    pub mode: SandboxMode,
    pub limits: Limits,
    /// A tenant-specific nsjail config loaded after `base.cfg`.
    pub nsjail_config: Option<PathBuf>,
    /// The queue the runs wait in and the slots they may hold at once.
    pub share: RunShare,
}

/// Where to find the jail's parts and how many runs may share the machine.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub nsjail_bin: PathBuf,
    pub python_bin: PathBuf,
    /// Folder with `base.cfg`, `harness.py` and `seccomp.kafel`.
    pub nsjail_dir: PathBuf,
    /// Runs at once; more wait in a bounded queue.
    pub max_concurrent: usize,
    pub max_queued: usize,
    /// How long a queued run waits for a slot before it is turned away.
    pub queue_timeout: Duration,
    /// Overrides every policy's mode (benchmarks and tests use it).
    pub forced_mode: Option<SandboxMode>,
    pub warm: WarmConfig,
}

impl SandboxConfig {
    pub fn default_concurrency() -> usize {
        2 * std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// One script to run.
#[derive(Debug, Clone)]
pub struct Job {
    pub script: String,
    pub args: serde_json::Map<String, Value>,
    /// Written under the run's `/tmp` before the script runs; paths
    /// already checked ([`files::normalize_path`]).
    pub files: Vec<files::RunFile>,
}

impl Job {
    /// What the harness reads on stdin: the job, and how much of `/tmp/out`
    /// it may return (the gateway checks the frame against the same).
    fn stdin_payload(&self, limits: &Limits) -> Vec<u8> {
        #[derive(Serialize)]
        struct StdinPayload<'a> {
            script: &'a str,
            args: &'a serde_json::Map<String, Value>,
            files: &'a [files::RunFile],
            output_files: u64,
            output_file_bytes: u64,
        }
        serde_json::to_vec(&StdinPayload {
            script: &self.script,
            args: &self.args,
            files: &self.files,
            output_files: limits.output_files,
            output_file_bytes: limits.output_file_bytes,
        })
        .expect("a job always serializes")
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum SelfTest {
    Pending,
    Passed,
    Failed(String),
}

impl SelfTest {
    /// `pending`, `passed` or `failed`, without a failure's detail.
    pub fn label(&self) -> &'static str {
        match self {
            SelfTest::Pending => "pending",
            SelfTest::Passed => "passed",
            SelfTest::Failed(_) => "failed",
        }
    }
}

/// What `/health` and `/readyz` report about the sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxStatus {
    pub nsjail: bool,
    pub python: Option<String>,
    /// The distributions the jail's Python has, (name, version) sorted by
    /// name, as the self-test found them inside the jail.
    pub packages: Vec<(String, String)>,
    pub cgroup: Option<&'static str>,
    /// What the self-test's script found; `None` until it has run.
    pub temp_writable: Option<bool>,
    pub self_test: SelfTest,
    /// What is missing, each with how to fix it.
    pub problems: Vec<String>,
    pub max_concurrent: usize,
    /// The warm path's own self-test; a failure there sends warm runs cold.
    pub warm_self_test: SelfTest,
    pub warm_pool: Option<WarmPoolStatus>,
}

pub struct Sandbox {
    paths: JailPaths,
    /// Owns the folder the harness, zygote and `/etc` files are bound from.
    jail_files: Option<JailFiles>,
    cgroups: Option<Arc<Cgroups>>,
    warm: Option<warm::WarmPool>,
    jail_env: Vec<(String, String)>,
    slots: Arc<Slots>,
    /// Finished runs still being torn down (a runner's address space freed,
    /// its cgroup removed): as many as there are slots.
    teardowns: Arc<Semaphore>,
    /// Jails started for requests (not the self-test): lets tests and
    /// `/health` see that a cache hit started none.
    runs_started: AtomicU64,
    config: SandboxConfig,
    status: RwLock<SandboxStatus>,
}

/// How long a stopping server waits for runs still being torn down.
const SHUTDOWN_IDLE_WAIT: Duration = Duration::from_secs(1);

const SELF_TEST_SCRIPT: &str = r#"
def main():
    import os, platform
    from importlib import metadata
    with open("/tmp/.pyexec-self-test", "w") as f:
        f.write("ok")
    packages = sorted({(d.metadata["Name"], d.version) for d in metadata.distributions()
                       if d.metadata["Name"]})
    return {"python": platform.python_version(), "uid": os.getuid(),
            "tmp_writable": os.path.exists("/tmp/.pyexec-self-test"),
            "packages": packages}
"#;

impl Sandbox {
    /// Checks what the jail needs and sets up this instance's cgroups. It
    /// never fails: what is missing is recorded and makes every run answer
    /// [`SandboxError::Unavailable`] until fixed, since nothing may ever run
    /// outside the jail.
    pub fn new(mut config: SandboxConfig) -> Arc<Self> {
        // nsjail resolves bind sources from its own working directory.
        if let Ok(absolute) = std::fs::canonicalize(&config.nsjail_dir) {
            config.nsjail_dir = absolute;
        }
        let mut problems = privileges::problems();
        problems.extend(preflight(&config));
        let cgroups = match Cgroups::setup() {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                problems.push(e);
                None
            }
        };
        let python_root = python_root(&config.python_bin);
        let jail_files = if problems.is_empty() {
            JailFiles::create(&config.nsjail_dir)
                .map_err(|e| problems.push(e))
                .ok()
        } else {
            None
        };
        let paths = JailPaths {
            nsjail_bin: config.nsjail_bin.clone(),
            base_config: config.nsjail_dir.join("base.cfg"),
            extra_config: None,
            seccomp_policy: jail_files.as_ref().map(JailFiles::cold_policy),
            zygote_seccomp_policy: jail_files.as_ref().map(JailFiles::zygote_policy),
            harness: jail_files
                .as_ref()
                .map_or_else(|| config.nsjail_dir.join("harness.py"), JailFiles::harness),
            extra_files: jail_files
                .as_ref()
                .map(JailFiles::etc_binds)
                .unwrap_or_default(),
            python_bin: config.python_bin.clone(),
            python_root,
        };
        for problem in &problems {
            tracing::error!(problem = %problem, "sandbox unavailable: no script will run until this is fixed");
        }
        let status = SandboxStatus {
            nsjail: config.nsjail_bin.is_file(),
            python: None,
            packages: Vec::new(),
            cgroup: cgroups.as_ref().map(|c| c.version().label()),
            temp_writable: None,
            self_test: SelfTest::Pending,
            problems,
            max_concurrent: config.max_concurrent,
            warm_self_test: SelfTest::Pending,
            warm_pool: None,
        };
        let warm = cgroups.as_ref().map(|cgroups| {
            warm::WarmPool::new(
                WarmConfig {
                    max_in_flight: config.max_concurrent,
                    ..config.warm.clone()
                },
                cgroups.clone(),
            )
        });
        Arc::new(Self {
            paths,
            jail_files,
            cgroups,
            warm,
            jail_env: limits::jail_environment(|name| std::env::var(name).ok()),
            slots: Slots::new(
                config.max_concurrent,
                config.max_queued,
                config.queue_timeout,
            ),
            teardowns: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            runs_started: AtomicU64::new(0),
            config,
            status: RwLock::new(status),
        })
    }

    pub fn status(&self) -> SandboxStatus {
        let mut status = self.status.read().clone();
        status.warm_pool = self.warm.as_ref().map(|w| w.status());
        status
    }

    /// The jail's Python version, once the self-test has found it: part of
    /// every cache key. Cheaper than [`Sandbox::status`], which copies
    /// everything and asks the warm pool too.
    pub fn python_version(&self) -> Option<String> {
        self.status.read().python.clone()
    }

    /// The jail's installed distributions, (name, version), once the
    /// self-test has listed them.
    pub fn installed_packages(&self) -> Vec<(String, String)> {
        self.status.read().packages.clone()
    }

    /// The modules every warm interpreter has imported before a request.
    pub fn preloaded_modules(&self) -> &[String] {
        &self.config.warm.preload
    }

    pub fn is_ready(&self) -> bool {
        self.status.read().self_test == SelfTest::Passed
    }

    /// Runs a known script through the real jail and records the result;
    /// until it passes, `/readyz` is 503 and no request runs.
    pub async fn run_self_test(&self) -> Result<(), String> {
        let cold = match self.status().problems.first() {
            Some(problem) => Err(problem.clone()),
            None => self.self_test_in(SandboxMode::Cold).await,
        };
        // The warm path is tested only when it may be used; a failure there
        // is loud but not fatal: warm runs then go cold, still in the jail.
        let warm = match (&cold, self.config.forced_mode) {
            (Ok(_), None | Some(SandboxMode::Warm)) if self.warm.is_some() => {
                Some(self.self_test_in(SandboxMode::Warm).await)
            }
            _ => None,
        };
        let mut status = self.status.write();
        match warm {
            Some(Ok(_)) => status.warm_self_test = SelfTest::Passed,
            Some(Err(reason)) => {
                tracing::error!(reason = %reason, "warm sandbox self-test failed: warm runs will run cold");
                status.warm_self_test = SelfTest::Failed(reason);
            }
            None => {}
        }
        match cold {
            Ok(value) => {
                status.python = value["python"].as_str().map(str::to_string);
                status.packages =
                    serde_json::from_value(value["packages"].clone()).unwrap_or_default();
                status.temp_writable = value["tmp_writable"].as_bool();
                status.self_test = SelfTest::Passed;
                tracing::info!(
                    python = status.python.as_deref(),
                    cgroup = status.cgroup,
                    warm_self_test = status.warm_self_test.label(),
                    "sandbox self-test passed"
                );
                Ok(())
            }
            Err(reason) => {
                tracing::error!(reason = %reason, "sandbox self-test failed: no script will run");
                status.self_test = SelfTest::Failed(reason.clone());
                Err(reason)
            }
        }
    }

    async fn self_test_in(&self, mode: SandboxMode) -> Result<Value, String> {
        let job = Job {
            script: SELF_TEST_SCRIPT.to_string(),
            args: Default::default(),
            files: Vec::new(),
        };
        let limits = Limits {
            wall_timeout: Duration::from_secs(60),
            ..Limits::default()
        };
        let finished = self.run_in_mode(&job, &limits, None, mode).await;
        let report = match finished {
            Ok((report, teardown)) => {
                teardown.finish().await;
                Ok(report)
            }
            Err(e) => Err(e),
        };
        match report {
            Ok(RunReport {
                outcome: Outcome::Success { result: value, .. },
                ..
            }) => Ok(value),
            Ok(report) => Err(format!(
                "the {} self-test script ended as {}: {:?} (stderr: {})",
                mode.label(),
                report.outcome.label(),
                report.outcome,
                report.stderr.text.trim()
            )),
            Err(e) => Err(format!("{} self-test: {e}", mode.label())),
        }
    }

    /// Runs one job in a fresh jail, waiting in the bounded queue for a slot.
    pub async fn execute(
        &self,
        job: &Job,
        policy: &SandboxPolicy,
    ) -> Result<RunReport, SandboxError> {
        if !self.is_ready() {
            let status = self.status();
            let reason = match status.self_test {
                SelfTest::Failed(reason) => reason,
                _ => status
                    .problems
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "the sandbox self-test has not passed yet".into()),
            };
            telemetry::metrics().sandbox_rejected("unavailable");
            return Err(SandboxError::Unavailable(reason));
        }
        // telemetry (issue 6): the wait and the run are spans of their own.
        let queue = trace::sandbox_queue(self.queue_depth());
        let waited = Instant::now();
        let permit = self
            .acquire_slot(&policy.share)
            .instrument(queue.clone())
            .await;
        telemetry::request::record_phase("queue", waited.elapsed());
        trace::record_queue(&queue, &permit);
        let permit = permit?;
        self.runs_started.fetch_add(1, Ordering::Relaxed);
        let mode = self.effective_mode(policy);
        let run = trace::sandbox_run(&job.script, mode.label());
        let finished = self
            .run_in_mode(job, &policy.limits, policy.nsjail_config.clone(), mode)
            .instrument(run.span())
            .await;
        let report = finished.map(|(report, teardown)| {
            // The answer does not wait for the teardown (a runner's address
            // space takes milliseconds to free). The slot is handed on once
            // the run has a teardown place: at most as many runs die at once
            // as can run, so runs alive or dying never exceed twice the slots.
            let teardowns = self.teardowns.clone();
            tokio::spawn(async move {
                let dying = teardowns.acquire_owned().await;
                drop(permit);
                teardown.finish().await;
                drop(dying);
            });
            report
        });
        run.finish(&report);
        report
    }

    /// Waits until no run is in flight or being torn down: every process of
    /// every finished run is gone and its cgroup removed. Tests use it before
    /// they look for leftovers.
    pub async fn wait_until_idle(&self) {
        let all = u32::try_from(self.config.max_concurrent.max(1)).unwrap_or(u32::MAX);
        self.slots.wait_until_idle().await;
        let _dying = self.teardowns.acquire_many(all).await;
    }

    /// Leaves nothing of this server on the host: waits (a bounded time) for
    /// the runs still being torn down, stops every warm zygote with its
    /// waiting runners, and removes this instance's cgroups and jail files.
    /// Called once the gateway has stopped serving; a run abandoned after
    /// this is killed and removed when its request is dropped.
    pub async fn shutdown(&self) {
        let _ = tokio::time::timeout(SHUTDOWN_IDLE_WAIT, self.wait_until_idle()).await;
        if let Some(warm) = &self.warm {
            warm.retire_all().await;
        }
        if let Some(cgroups) = self.cgroups.clone() {
            let _ = background::run(move || cgroups.remove_instance()).await;
        }
        if let Some(files) = &self.jail_files {
            files.remove();
        }
    }

    /// The cgroups of runs that still exist, as `controller/instance/run-N`
    /// paths. Empty whenever no run is in flight; tests use it to prove that
    /// nothing of a finished run is left behind.
    pub fn live_run_cgroups(&self) -> Vec<PathBuf> {
        self.cgroups
            .as_ref()
            .map(|c| c.live_runs())
            .unwrap_or_default()
    }

    /// The name of this sandbox's cgroup instance group (several sandboxes
    /// may share a host or a process); `None` without cgroups.
    pub fn cgroup_instance(&self) -> Option<String> {
        self.cgroups.as_ref().map(|c| c.instance())
    }

    /// Jails started by [`Sandbox::execute`] since the start.
    pub fn runs_started(&self) -> u64 {
        self.runs_started.load(Ordering::Relaxed)
    }

    /// Runs that are waiting for a slot right now.
    pub fn queue_depth(&self) -> usize {
        self.slots.queue_depth()
    }

    /// Slots held and runs waiting, by group (tenant), for operators.
    pub fn slot_use(&self) -> std::collections::BTreeMap<String, GroupUse> {
        self.slots.usage()
    }

    /// The slots a share's runs may hold at once on this server.
    pub fn slots_for(&self, share: &RunShare) -> usize {
        self.slots.cap_of(share)
    }

    async fn acquire_slot(&self, share: &RunShare) -> Result<SlotPermit, SandboxError> {
        self.slots
            .acquire(share)
            .await
            .map_err(|_| SandboxError::Saturated)
    }

    /// The mode a policy's runs get on this server: the forced one if any,
    /// and never a warm path whose self-test failed.
    pub fn effective_mode(&self, policy: &SandboxPolicy) -> SandboxMode {
        let wanted = self.config.forced_mode.unwrap_or(policy.mode);
        let warm_usable = self.warm.is_some()
            && !matches!(self.status.read().warm_self_test, SelfTest::Failed(_));
        if wanted == SandboxMode::Warm && warm_usable {
            SandboxMode::Warm
        } else {
            SandboxMode::Cold
        }
    }

    async fn run_in_mode(
        &self,
        job: &Job,
        limits: &Limits,
        nsjail_config: Option<PathBuf>,
        mode: SandboxMode,
    ) -> Result<(RunReport, Teardown), SandboxError> {
        let cgroups = self
            .cgroups
            .as_ref()
            .ok_or_else(|| SandboxError::Unavailable("cgroups are not available".into()))?;
        let warm = self.warm.as_ref().filter(|_| mode == SandboxMode::Warm);
        let paths = JailPaths {
            extra_config: nsjail_config,
            ..self.paths.clone()
        };
        // Either way the run ends up in a cgroup of its own: cold runs put
        // nsjail in a new one; a warm run's runner already waits in one.
        let (raw, teardown) = match warm {
            Some(warm) => warm.run(job, limits, &paths, &self.jail_env).await?,
            None => {
                // cgroupfs writes wait on kernel locks: off the async worker,
                // on tokio's blocking pool (this request waits for it; the
                // background threads are for work nobody waits for).
                let (cgroups, run_limits) = (cgroups.clone(), limits.clone());
                let creating = Instant::now();
                let run_cgroup =
                    tokio::task::spawn_blocking(move || cgroups.create_run(&run_limits, true))
                        .await
                        .map_err(|e| SandboxError::LaunchFailed(format!("cgroup task: {e}")))?
                        .map_err(|e| {
                            SandboxError::LaunchFailed(format!(
                                "cannot create the run's cgroup: {e}"
                            ))
                        })?;
                telemetry::request::record_phase("cgroup", creating.elapsed());
                let raw = self.run_cold(job, limits, &paths, &run_cgroup).await;
                (raw, Teardown::new(run_cgroup, None))
            }
        };
        // Every process of the run has been sent SIGKILL by now; what they
        // use while dying is not the script's.
        let usage = teardown.cgroup.usage();
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) => {
                teardown.finish().await;
                return Err(e);
            }
        };
        telemetry::request::record_phase("run", raw.duration);
        let outcome = classify(conclude(&raw, limits), &usage, raw.signal, limits);
        let report = RunReport {
            outcome,
            stdout: Output::new(raw.stdout, limits.output_bytes),
            stderr: Output::new(raw.stderr, limits.output_bytes),
            duration: raw.duration,
            usage,
            signal: raw.signal,
            mode: if warm.is_some() {
                SandboxMode::Warm
            } else {
                SandboxMode::Cold
            },
        };
        Ok((report, teardown))
    }
}

/// What is left of a run once its answer is known: its cgroup, whose
/// processes have all been sent SIGKILL, and on the warm path the runner
/// whose exit ends the run's pid namespace.
pub(crate) struct Teardown {
    cgroup: cgroup::RunCgroup,
    runner_exit: Option<warm::ProcessExit>,
}

impl Teardown {
    fn new(cgroup: cgroup::RunCgroup, runner_exit: Option<warm::ProcessExit>) -> Self {
        Self {
            cgroup,
            runner_exit,
        }
    }

    /// Waits for the last process to go and removes the cgroup.
    async fn finish(self) {
        if let Some(exit) = &self.runner_exit {
            let _ = tokio::time::timeout(Duration::from_secs(5), exit.wait()).await;
        }
        let cgroup = self.cgroup;
        let _ = background::run(move || cgroup.destroy()).await;
    }
}
