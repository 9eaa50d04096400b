//! The warm path: per sandbox configuration, one jailed zygote with the heavy
//! modules imported hands every request to a fresh runner process (see
//! `nsjail/zygote.py` for the process tree and the control protocol).
//!
//! The gateway keeps the kernel-enforced parts: it creates the run's cgroup,
//! moves the runner into it before writing the script, kills the cgroup on
//! timeout and reads its usage, exactly as for a cold run.
//!
//! Here: the pool of zygotes by configuration. `zygote` is one zygote and
//! its runners, `run` one request on a runner, `protocol` the control
//! socket, `processes` pidfds, output and scheduling.

mod processes;
mod protocol;
mod run;
mod zygote;

pub(crate) use processes::ProcessExit;

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket;
use parking_lot::Mutex;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use super::capture::read_capped;
use super::cgroup::Cgroups;
use super::launch::nsjail_command;
use super::limits::{JailPaths, Limits, MIB};
use super::outcome::RawRun;
use super::process::{pipe, pipe_reader};
use super::{Job, SandboxError, Teardown};
use processes::{LogSource, can_reschedule_others, forward_lines};
use protocol::set_nonblocking;
use zygote::{Zygote, read_replies};

/// When a zygote is replaced by a fresh one: every runner shares the zygote's
/// address-space layout, so it is not kept forever.
#[derive(Debug, Clone)]
pub struct WarmConfig {
    /// Modules imported once by each zygote.
    pub preload: Vec<String>,
    pub recycle_after_runs: u64,
    pub recycle_after: Duration,
    /// How many runners can be in flight on one zygote (sizes its pids limit).
    pub max_in_flight: usize,
    /// The zygote and its runners get ready as SCHED_IDLE, so that getting a
    /// runner ready never slows down a script that is running. Needs
    /// CAP_SYS_NICE in the gateway, which puts each runner (and the zygote,
    /// when a request waits for one) back to normal scheduling.
    pub idle_warm_up: bool,
}

impl Default for WarmConfig {
    fn default() -> Self {
        Self {
            preload: crate::defaults::WARM_PRELOAD
                .iter()
                .map(|m| m.to_string())
                .collect(),
            recycle_after_runs: 2000,
            recycle_after: Duration::from_secs(600),
            max_in_flight: 8,
            idle_warm_up: can_reschedule_others(),
        }
    }
}

/// What `/health` shows of the warm pool.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WarmPoolStatus {
    pub zygotes: usize,
    /// Host pids of the zygotes' nsjail supervisors.
    pub zygote_pids: Vec<u32>,
    pub zygotes_started: u64,
    pub zygote_failures: u64,
    pub runs: u64,
    /// Runs that found no ready runner and waited for one to be made: the
    /// pool is refilled more slowly than requests come (a saturated machine).
    pub runs_that_waited_for_a_runner: u64,
}

/// Zygotes by sandbox configuration (the tenant-specific nsjail config).
pub struct WarmPool {
    config: WarmConfig,
    cgroups: Arc<Cgroups>,
    zygotes: tokio::sync::Mutex<HashMap<Option<PathBuf>, Arc<Zygote>>>,
    generation: AtomicU64,
    failures: AtomicU64,
    runs: AtomicU64,
    runs_that_waited: AtomicU64,
}

impl WarmPool {
    pub fn new(config: WarmConfig, cgroups: Arc<Cgroups>) -> Self {
        Self {
            config,
            cgroups,
            zygotes: Default::default(),
            generation: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            runs_that_waited: AtomicU64::new(0),
        }
    }

    pub fn status(&self) -> WarmPoolStatus {
        let zygote_pids: Vec<u32> = self
            .zygotes
            .try_lock()
            .map(|z| z.values().filter_map(|z| z.nsjail_pid).collect())
            .unwrap_or_default();
        WarmPoolStatus {
            zygotes: zygote_pids.len(),
            zygote_pids,
            zygotes_started: self.generation.load(Ordering::Relaxed),
            zygote_failures: self.failures.load(Ordering::Relaxed),
            runs: self.runs.load(Ordering::Relaxed),
            runs_that_waited_for_a_runner: self.runs_that_waited.load(Ordering::Relaxed),
        }
    }

    /// Stops every zygote and waits until it, its waiting runners and their
    /// groups are gone: a stopping server leaves nothing of its warm path.
    pub async fn retire_all(&self) {
        let zygotes: Vec<Arc<Zygote>> = self.zygotes.lock().await.drain().map(|(_, z)| z).collect();
        let groups: Vec<_> = zygotes.iter().map(|z| z.take_groups()).collect();
        let _ = super::background::run(move || {
            for (cgroup, spares) in groups {
                if let Some(cgroup) = cgroup {
                    cgroup.destroy();
                }
                drop(spares);
            }
        })
        .await;
    }

    async fn zygote_for(
        &self,
        paths: &JailPaths,
        env: &[(String, String)],
    ) -> Result<Arc<Zygote>, SandboxError> {
        let mut zygotes = self.zygotes.lock().await;
        if let Some(zygote) = zygotes.get(&paths.extra_config) {
            let fresh = zygote.runs.load(Ordering::Relaxed) < self.config.recycle_after_runs
                && zygote.started_at.elapsed() < self.config.recycle_after;
            if zygote.alive.load(Ordering::Acquire) && fresh {
                return Ok(zygote.clone());
            }
            if !zygote.alive.load(Ordering::Acquire) {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    generation = zygote.generation,
                    "warm zygote died; starting a new one"
                );
            }
            zygotes.remove(&paths.extra_config);
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let zygote = self.start_zygote(generation, paths, env).await?;
        zygotes.insert(paths.extra_config.clone(), zygote.clone());
        Ok(zygote)
    }

    async fn start_zygote(
        &self,
        generation: u64,
        paths: &JailPaths,
        env: &[(String, String)],
    ) -> Result<Arc<Zygote>, SandboxError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            SandboxError::LaunchFailed(format!("cannot start the warm zygote: {what}: {e}"))
        };
        // The zygote's own group holds it and its idle runners; each runner
        // leaves it for its run's group before it sees a script.
        let cgroup = self
            .cgroups
            .create_group(
                &format!("zygote-{generation}"),
                1024 * MIB,
                4 * self.config.max_in_flight as u64 + 16,
            )
            .map_err(|e| fail("cgroup", &e))?;
        let (gateway_end, zygote_end) = socket::socketpair(
            socket::AddressFamily::Unix,
            socket::SockType::SeqPacket,
            None,
            socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| fail("socketpair", &e))?;
        let (log_read, log_write) = pipe().map_err(|e| fail("pipe", &e))?;
        // Twice the runs that can be in flight: a pool refilled in batches
        // still has runners while a batch warms up.
        let ready_runners = (2 * self.config.max_in_flight).clamp(4, 16);
        let argv = paths.zygote_argv(
            env,
            &self.config.preload,
            ready_runners,
            self.config.idle_warm_up,
        );
        let mut command = nsjail_command(
            paths,
            &argv,
            Stdio::null(),
            &cgroup,
            &zygote_end,
            &log_write,
        );
        let mut child = command.spawn().map_err(|e| fail("spawn nsjail", &e))?;
        drop(zygote_end);
        drop(log_write);
        for (stream, source) in [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn LogSource>),
                "zygote stdout",
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn LogSource>),
                "zygote stderr",
            ),
        ] {
            if let Some(stream) = stream {
                tokio::spawn(forward_lines(stream, source, generation));
            }
        }
        let nsjail_log = tokio::spawn(read_capped(
            pipe_reader(log_read).map_err(|e| fail("pipe", &e))?,
            64 * 1024,
        ));

        set_nonblocking(gateway_end.as_raw_fd()).map_err(|e| fail("socket", &e))?;
        // SAFETY: the OwnedFd is moved into the AsyncFd and closed only when it drops.
        let control = unsafe { AsyncFd::register(gateway_end) }.map_err(|e| fail("socket", &e))?;
        let zygote = Arc::new(Zygote {
            generation,
            control,
            ready: Mutex::new(VecDeque::new()),
            runner_arrived: tokio::sync::Notify::new(),
            exits: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
            runs: AtomicU64::new(0),
            started_at: Instant::now(),
            nsjail_pid: child.id(),
            host_pid: std::sync::OnceLock::new(),
            idle_refills: self.config.idle_warm_up,
            cgroup: Mutex::new(Some(cgroup)),
            spares: Mutex::new(HashMap::new()),
            _nsjail: Mutex::new(Some(child)),
        });
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(read_replies(
            Arc::downgrade(&zygote),
            self.cgroups.clone(),
            ready_tx,
        ));
        match tokio::time::timeout(Duration::from_secs(60), ready_rx).await {
            Ok(Ok(python)) => {
                tracing::info!(generation, python = %python, preload = %self.config.preload.join(","), "warm zygote ready");
                Ok(zygote)
            }
            _ => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                zygote.alive.store(false, Ordering::Release);
                let log = nsjail_log.await.unwrap_or_default();
                let log = String::from_utf8_lossy(&log.bytes);
                tracing::error!(nsjail_log = %log, "warm zygote did not become ready");
                Err(SandboxError::LaunchFailed(
                    "the warm zygote did not become ready (see the server log)".into(),
                ))
            }
        }
    }

    /// Runs one job on a fresh runner of the configuration's zygote, inside
    /// `run_cgroup`.
    pub async fn run(
        &self,
        job: &Job,
        limits: &Limits,
        paths: &JailPaths,
        env: &[(String, String)],
    ) -> Result<(Result<RawRun, SandboxError>, Teardown), SandboxError> {
        let zygote = self.zygote_for(paths, env).await?;
        let first = self.run_on(&zygote, job, limits).await;
        // A zygote that died under a run took its runner with it, the script
        // had no part in that, and a sandbox run has no effect outside: the
        // run gets one more try, on a new zygote.
        let lost = match &first {
            Err(_) | Ok((Err(_), _)) => !zygote.alive.load(Ordering::Acquire),
            // Ended without a word, and its zygote is gone with it: not the
            // script's doing either (a script's own end leaves the zygote up).
            Ok((Ok(raw), _)) => {
                raw.result.bytes.is_empty()
                    && raw.timed_out.is_none()
                    && !zygote.alive.load(Ordering::Acquire)
            }
        };
        if !lost {
            return first;
        }
        if let Ok((_, teardown)) = first {
            teardown.finish().await;
        }
        tracing::warn!(
            generation = zygote.generation,
            "the warm zygote died under a run; running it again on a new one"
        );
        let zygote = self.zygote_for(paths, env).await?;
        self.run_on(&zygote, job, limits).await
    }
}
