//! The warm path: per sandbox configuration, one jailed zygote with the heavy
//! modules imported hands every request to a fresh runner process (see
//! `nsjail/zygote.py` for the process tree and the control protocol).
//!
//! The gateway keeps the kernel-enforced parts: it creates the run's cgroup,
//! moves the runner into it before writing the script, kills the cgroup on
//! timeout and reads its usage, exactly as for a cold run.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{self, ControlMessage, MsgFlags};
use serde::Deserialize;
use serde_json::json;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::capture::read_capped;
use super::cgroup::{Cgroups, RunCgroup};
use super::launch::nsjail_command;
use super::limits::{JailPaths, Limits, MIB};
use super::outcome::{parse_frame, signal_from_exit_code, RawRun};
use super::process::{pipe, pipe_reader};
use super::{Job, SandboxError, Teardown};

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
            preload: vec!["numpy".into(), "pandas".into()],
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

impl WarmPoolStatus {
    /// The counts as the `pyexec_warm_pool` gauge names its states.
    pub fn gauges(&self) -> [(&'static str, u64); 5] {
        [
            ("zygotes", self.zygotes as u64),
            ("zygotes_started", self.zygotes_started),
            ("zygote_failures", self.zygote_failures),
            ("runs", self.runs),
            (
                "runs_that_waited_for_a_runner",
                self.runs_that_waited_for_a_runner,
            ),
        ]
    }
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

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Reply {
    Ready {
        python: String,
    },
    Exit {
        pid: i32,
        code: i32,
    },
    /// A runner is forked and waiting: the gateway moves it into a group of
    /// its own now, so that no cgroup migration is left for the request.
    Runner {
        pid: i32,
    },
}

/// A waiting runner already moved into a group of its own, with its host pid.
struct Spare {
    cgroup: RunCgroup,
    host_pid: i32,
}

/// The preparation of one waiting runner's group. The request that takes
/// the runner and the preparation both lock it: a request never sees a
/// half-moved runner, and a preparation that comes too late does nothing.
#[derive(Default)]
struct SpareSlot {
    claimed: bool,
    spare: Option<Spare>,
}

/// A runner the zygote handed over: its pid in the zygote's namespace and
/// the channel its request goes through. Dropping it (zygote retired) closes
/// the channel, and the runner exits.
struct ReadyRunner {
    pid: i32,
    channel: OwnedFd,
}

struct Zygote {
    generation: u64,
    control: AsyncFd<OwnedFd>,
    /// Runners handed over by the zygote that have no request yet, oldest first.
    ready: Mutex<VecDeque<ReadyRunner>>,
    runner_arrived: tokio::sync::Notify,
    /// Where each runner's exit code goes, by its pid in the zygote's namespace.
    exits: Mutex<HashMap<i32, oneshot::Sender<i32>>>,
    alive: AtomicBool,
    runs: AtomicU64,
    started_at: Instant,
    nsjail_pid: Option<u32>,
    /// The zygote's own host pid (pid 1 of the jail), found once.
    host_pid: std::sync::OnceLock<Option<i32>>,
    /// Whether the zygote makes runners at idle priority (see `hurry`).
    idle_refills: bool,
    cgroup: Mutex<Option<RunCgroup>>,
    /// Waiting runners by their pid in the zygote's namespace.
    spares: Mutex<HashMap<i32, Arc<Mutex<SpareSlot>>>>,
    _nsjail: Mutex<Option<tokio::process::Child>>,
}

/// A retired zygote's own group and its waiting runners' groups.
type ZygoteGroups = (Option<RunCgroup>, Vec<(i32, Arc<Mutex<SpareSlot>>)>);

impl Zygote {
    /// Its group (nsjail, the zygote and the runners still waiting) and the
    /// waiting runners' own groups, to be destroyed: the zygote is done.
    fn take_groups(&self) -> ZygoteGroups {
        self.alive.store(false, Ordering::Release);
        let spares = self.spares.lock().unwrap().drain().collect();
        (self.cgroup.lock().unwrap().take(), spares)
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // Only reached when no run holds it any more: killing the group ends
        // the zygote and its idle runners.
        let (cgroup, spares) = self.take_groups();
        if let Some(cgroup) = cgroup {
            drop(super::background::run(move || {
                cgroup.destroy();
                drop(spares);
            }));
        }
        tracing::info!(
            generation = self.generation,
            runs = self.runs.load(Ordering::Relaxed),
            "warm zygote retired"
        );
    }
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
                tracing::info!(generation, python = %python, preload = ?self.config.preload, "warm zygote ready");
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

    async fn run_on(
        &self,
        zygote: &Arc<Zygote>,
        job: &Job,
        limits: &Limits,
    ) -> Result<(Result<RawRun, SandboxError>, Teardown), SandboxError> {
        self.runs.fetch_add(1, Ordering::Relaxed);
        zygote.runs.fetch_add(1, Ordering::Relaxed);
        let broken = |what: &str| {
            zygote.alive.store(false, Ordering::Release);
            SandboxError::LaunchFailed(format!("the warm zygote failed: {what}"))
        };
        let io_error = |e: std::io::Error| SandboxError::LaunchFailed(format!("pipe: {e}"));
        let (stdin_read, stdin_write) = pipe().map_err(io_error)?;
        let (stdout_read, stdout_write) = pipe().map_err(io_error)?;
        let (stderr_read, stderr_write) = pipe().map_err(io_error)?;
        let (result_read, result_write) = pipe().map_err(io_error)?;

        let runner = zygote
            .take_runner(&self.runs_that_waited)
            .await
            .ok_or_else(|| broken("no runner became ready"))?;
        let runner_pid = runner.pid;
        let (exit_tx, exit_rx) = oneshot::channel();
        zygote.exits.lock().unwrap().insert(runner_pid, exit_tx);
        let took = json!({"op": "took", "pid": runner_pid}).to_string();
        if zygote.send(took.as_bytes(), &[]).await.is_err() {
            return Err(broken("the control channel is closed"));
        }
        let request = json!({
            "cpu_seconds": limits.cpu_seconds,
            "file_size_bytes": limits.file_size_bytes,
            "tmpfs_bytes": limits.tmpfs_bytes,
            "tmpfs_inodes": super::limits::tmpfs_inodes(limits.tmpfs_bytes),
        })
        .to_string();
        let fds = [
            stdin_read.as_raw_fd(),
            stdout_write.as_raw_fd(),
            stderr_write.as_raw_fd(),
            result_write.as_raw_fd(),
        ];
        let placed = {
            let (zygote, cgroups, limits) = (zygote.clone(), self.cgroups.clone(), limits.clone());
            // Blocking: cgroupfs writes, and possibly waiting for the
            // runner's preparation to finish.
            tokio::task::spawn_blocking(move || zygote.place_runner(runner_pid, &limits, &cgroups))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
        };
        let (run_cgroup, host_pid) =
            placed.map_err(|e| broken(&format!("cannot place the runner in its cgroup: {e}")))?;
        if zygote.idle_refills {
            // It warmed up as SCHED_IDLE; its request runs as any other process of the jail.
            if let Err(e) = schedule_normally(host_pid) {
                return Err(broken(&format!("cannot reschedule the runner: {e}")));
            }
        }
        // Straight to the runner, now in its own cgroup; it mounts its /proc
        // and /tmp, then waits for the script on stdin.
        if let Err(e) = send_with_fds(runner.channel.as_raw_fd(), request.as_bytes(), &fds) {
            tracing::error!(error = %e, "a warm runner could not be given its request");
            return Err(SandboxError::LaunchFailed(
                "the warm runner could not be given its request".into(),
            ));
        }
        drop((runner, stdin_read, stdout_write, stderr_write, result_write));
        let stdout = tokio::spawn(read_capped(
            pipe_reader(stdout_read).map_err(io_error)?,
            limits.output_bytes,
        ));
        let stderr = tokio::spawn(read_capped(
            pipe_reader(stderr_read).map_err(io_error)?,
            limits.output_bytes,
        ));
        let mut result = tokio::spawn(read_capped(
            pipe_reader(result_read).map_err(io_error)?,
            limits.result_bytes,
        ));

        // The runner is pid 1 of its own pid namespace: its pidfd turns
        // readable only once it and everything it started are gone, and
        // killing it kills them all.
        let runner_exit = match ProcessExit::watch(host_pid) {
            Ok(exit) => exit,
            Err(e) => {
                let error = broken(&format!("cannot watch the runner: {e}"));
                return Ok((Err(error), Teardown::new(run_cgroup, None)));
            }
        };
        // Only now, inside its cgroup, does the runner get the script.
        let payload = serde_json::to_vec(job).expect("a job always serializes");
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + limits.wall_timeout;
        let mut stdin = match tokio::net::unix::pipe::Sender::from_owned_fd(stdin_write) {
            Ok(stdin) => stdin,
            Err(e) => {
                let error = SandboxError::LaunchFailed(format!("pipe: {e}"));
                return Ok((Err(error), Teardown::new(run_cgroup, Some(runner_exit))));
            }
        };
        let feeder = tokio::spawn(async move {
            let _ = stdin.write_all(&payload).await;
        });
        let joined = |r: Result<_, tokio::task::JoinError>| r.unwrap_or_default();

        // The harness lets go of stdout and stderr and closes the result pipe
        // right after its report, so a run that reported is over here, before
        // the runner has finished exiting.
        let limit = super::time_limit(run_cgroup.cpu_meter(), deadline, limits.cpu_seconds);
        tokio::pin!(limit);
        let mut limit_reached = None;
        let reported = tokio::select! {
            captured = &mut result => Some(joined(captured)),
            reached = &mut limit => {
                limit_reached = Some(reached);
                None
            }
        };
        let reported = match reported {
            Some(result) if parse_frame(&result.bytes).is_some() => {
                let duration = started.elapsed();
                runner_exit.kill();
                run_cgroup.kill_now();
                feeder.abort();
                let raw = RawRun {
                    stdout: joined(stdout.await),
                    stderr: joined(stderr.await),
                    result,
                    code: None,
                    signal: None,
                    timed_out: None,
                    duration,
                };
                return Ok((Ok(raw), Teardown::new(run_cgroup, Some(runner_exit))));
            }
            other => other,
        };

        // No report: the runner's end says what happened.
        if limit_reached.is_none() {
            limit_reached = tokio::select! {
                () = runner_exit.wait() => None,
                reached = &mut limit => Some(reached),
            };
        }
        let timed_out = limit_reached;
        if timed_out.is_some() {
            run_cgroup.kill_now();
            runner_exit.kill();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), runner_exit.wait()).await;
        let duration = started.elapsed();
        run_cgroup.kill_now();
        feeder.abort();
        let (stdout, stderr) = (joined(stdout.await), joined(stderr.await));
        let result = match reported {
            Some(result) => result,
            None => joined(result.await),
        };
        let code = if timed_out.is_some() {
            None
        } else {
            // The zygote reports the exit code a moment after the exit; it
            // drops the sender when it is gone itself.
            match tokio::time::timeout(Duration::from_secs(5), exit_rx).await {
                Ok(Ok(code)) => Some(code),
                Ok(Err(_)) if result.bytes.is_empty() => {
                    let error = broken("it died during the run");
                    return Ok((Err(error), Teardown::new(run_cgroup, Some(runner_exit))));
                }
                _ => None,
            }
        };
        if code.is_none() && timed_out.is_none() && result.bytes.is_empty() {
            zygote.alive.store(false, Ordering::Release);
        }
        let raw = RawRun {
            stdout,
            stderr,
            result,
            code,
            signal: code.and_then(signal_from_exit_code),
            timed_out,
            duration,
        };
        Ok((Ok(raw), Teardown::new(run_cgroup, Some(runner_exit))))
    }
}

impl Zygote {
    /// Moves a waiting runner into a group of its own (generous limits until
    /// a request sets its own) and remembers it. A failure only means that
    /// request will move it itself.
    fn prepare_spare(&self, namespace_pid: i32, slot: &Mutex<SpareSlot>, cgroups: &Cgroups) {
        let mut slot = slot.lock().unwrap();
        if slot.claimed {
            return;
        }
        let Some(host_pid) = self.host_pid_of(namespace_pid) else {
            return;
        };
        let name = format!("spare-{}-{namespace_pid}", self.generation);
        let Ok(cgroup) = cgroups.create_group(&name, 1024 * MIB, 1024) else {
            return;
        };
        if cgroup.attach_pid(host_pid).is_ok() {
            slot.spare = Some(Spare { cgroup, host_pid });
        }
    }

    /// The runner's own group with the request's limits, named as a run, and
    /// its host pid: the prepared spare when there is one, else a new group
    /// the runner is moved into now.
    fn place_runner(
        &self,
        namespace_pid: i32,
        limits: &Limits,
        cgroups: &Cgroups,
    ) -> std::io::Result<(RunCgroup, i32)> {
        let slot = self.spares.lock().unwrap().remove(&namespace_pid);
        let spare = slot.and_then(|slot| {
            let mut slot = slot.lock().unwrap();
            slot.claimed = true;
            slot.spare.take()
        });
        if let Some(Spare {
            mut cgroup,
            host_pid,
        }) = spare
        {
            cgroup.set_limits(limits.memory_bytes, limits.max_pids)?;
            cgroup.rename(&cgroups.next_run_name())?;
            return Ok((cgroup, host_pid));
        }
        let cgroup = cgroups.create_run(limits, false)?;
        let host_pid = self
            .host_pid_of(namespace_pid)
            .ok_or_else(|| std::io::Error::other("the runner vanished"))?;
        cgroup.attach_pid(host_pid)?;
        Ok((cgroup, host_pid))
    }
}

/// A process's exit through its pidfd: readiness, and a kill that cannot hit
/// a recycled pid.
pub(crate) struct ProcessExit {
    pidfd: AsyncFd<OwnedFd>,
}

impl ProcessExit {
    fn watch(pid: i32) -> std::io::Result<Self> {
        // SAFETY: pidfd_open returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the fd was just created and is owned here alone.
        let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) };
        // SAFETY: the OwnedFd moves into the AsyncFd and closes when it drops.
        let pidfd =
            unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self { pidfd })
    }

    pub(crate) async fn wait(&self) {
        // A pidfd stays readable once the process has exited.
        let _ = self.pidfd.readable().await;
    }

    fn kill(&self) {
        // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

impl Zygote {
    /// The oldest ready runner, waiting up to 10 s for one (the zygote is
    /// told a request waits, so it makes one at once). `None` when the zygote
    /// is gone or made none in time.
    async fn take_runner(&self, runs_that_waited: &AtomicU64) -> Option<ReadyRunner> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut told = false;
        loop {
            let arrived = self.runner_arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(runner) = self.pop_ready_runner() {
                return Some(runner);
            }
            if !self.alive.load(Ordering::Acquire) {
                return None;
            }
            if !told {
                runs_that_waited.fetch_add(1, Ordering::Relaxed);
                self.hurry();
                let wait = json!({"op": "wait"}).to_string();
                self.send(wait.as_bytes(), &[]).await.ok()?;
                told = true;
            }
            tokio::time::timeout_at(deadline, arrived).await.ok()?;
        }
    }

    /// A request waits for a runner: the zygote, which makes runners at idle
    /// priority while none is waited for, now makes them at the jail's normal
    /// priority (it goes back to idle on its own once none is waited for).
    fn hurry(&self) {
        if !self.idle_refills {
            return;
        }
        let Some(pid) = *self.host_pid.get_or_init(|| self.host_pid_of(1)) else {
            return;
        };
        if let Err(e) = schedule_normally(pid) {
            tracing::warn!(error = %e, "cannot hurry the warm zygote");
        }
    }

    /// The oldest ready runner already moved into a group of its own, else
    /// the oldest one: the move waits for an RCU grace period, and a request
    /// should not wait for it.
    fn pop_ready_runner(&self) -> Option<ReadyRunner> {
        let mut ready = self.ready.lock().unwrap();
        let spares = self.spares.lock().unwrap();
        let prepared = ready.iter().position(|runner| {
            spares
                .get(&runner.pid)
                .and_then(|slot| slot.try_lock().ok().map(|slot| slot.spare.is_some()))
                .unwrap_or(false)
        });
        ready.remove(prepared.unwrap_or(0))
    }

    async fn send(&self, message: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
        loop {
            let mut guard = self.control.writable().await?;
            let sent =
                guard.try_io(|inner| send_with_fds(inner.get_ref().as_raw_fd(), message, fds));
            match sent {
                Ok(result) => return result.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }

    /// The host pid of a runner, found among the zygote group's processes by
    /// its pid in the zygote's namespace (the second `NSpid` field).
    fn host_pid_of(&self, namespace_pid: i32) -> Option<i32> {
        let cgroup = self.cgroup.lock().unwrap();
        cgroup.as_ref()?.remaining_pids().into_iter().find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|status| {
                    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
                    line.split_whitespace().nth(2)?.parse::<i32>().ok()
                })
                == Some(namespace_pid)
        })
    }
}

/// One message on a SOCK_SEQPACKET socket, with fds, without blocking.
fn send_with_fds(socket: RawFd, message: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let rights = [ControlMessage::ScmRights(fds)];
    socket::sendmsg::<()>(
        socket,
        &[IoSlice::new(message)],
        if fds.is_empty() { &[] } else { &rights },
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(|_| ())
    .map_err(std::io::Error::from)
}

/// One message on a SOCK_SEQPACKET socket and the fds that came with it
/// (close-on-exec); a `WouldBlock` error when none is waiting.
fn receive_with_fds(socket: RawFd, buffer: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(buffer)];
    let message = socket::recvmsg::<()>(
        socket,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fds = Vec::new();
    for control in message.cmsgs().map_err(std::io::Error::from)? {
        if let socket::ControlMessageOwned::ScmRights(received) = control {
            // SAFETY: the kernel just installed these fds for this process.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }),
            );
        }
    }
    Ok((message.bytes, fds))
}

async fn read_replies(
    zygote: std::sync::Weak<Zygote>,
    cgroups: Arc<Cgroups>,
    ready: oneshot::Sender<String>,
) {
    let mut ready = Some(ready);
    let mut buffer = vec![0u8; 4096];
    loop {
        let Some(strong) = zygote.upgrade() else {
            return;
        };
        let (received, mut fds) = {
            let Ok(mut guard) = strong.control.readable().await else {
                break;
            };
            match guard.try_io(|inner| receive_with_fds(inner.get_ref().as_raw_fd(), &mut buffer)) {
                Ok(Ok(received)) => received,
                Ok(Err(_)) => (0, Vec::new()),
                Err(_would_block) => continue,
            }
        };
        if received == 0 {
            strong.alive.store(false, Ordering::Release);
            // Dropping the senders tells every waiting run the zygote is gone.
            strong.exits.lock().unwrap().clear();
            strong.ready.lock().unwrap().clear();
            strong.runner_arrived.notify_waiters();
            tracing::warn!(generation = strong.generation, "warm zygote exited");
            return;
        }
        let Ok(reply) = serde_json::from_slice::<Reply>(&buffer[..received]) else {
            tracing::error!("unreadable message from the warm zygote");
            continue;
        };
        match reply {
            Reply::Ready { python } => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(python);
                }
            }
            Reply::Exit { pid, code } => {
                if let Some(tx) = strong.exits.lock().unwrap().remove(&pid) {
                    let _ = tx.send(code);
                }
                // A runner that died while waiting is no use to anyone.
                strong.ready.lock().unwrap().retain(|r| r.pid != pid);
                strong.spares.lock().unwrap().remove(&pid);
            }
            Reply::Runner { pid } => {
                let Some(channel) = fds.pop() else {
                    tracing::error!("the warm zygote handed over a runner without its channel");
                    continue;
                };
                // Registered before any request can take this runner; the
                // move itself waits for an RCU grace period (milliseconds),
                // so it runs off any request.
                let slot = Arc::new(Mutex::new(SpareSlot::default()));
                strong.spares.lock().unwrap().insert(pid, slot.clone());
                strong
                    .ready
                    .lock()
                    .unwrap()
                    .push_back(ReadyRunner { pid, channel });
                strong.runner_arrived.notify_one();
                let (zygote, cgroups) = (Arc::downgrade(&strong), cgroups.clone());
                drop(super::background::run(move || {
                    if let Some(zygote) = zygote.upgrade() {
                        zygote.prepare_spare(pid, &slot, &cgroups);
                    }
                }));
            }
        }
    }
}

trait LogSource: tokio::io::AsyncRead + Unpin + Send {}
impl<T: tokio::io::AsyncRead + Unpin + Send> LogSource for T {}

/// The zygote's own output (import warnings, runner set-up failures) goes to
/// the server log; scripts never write here.
async fn forward_lines(stream: Box<dyn LogSource>, source: &'static str, generation: u64) {
    let mut lines = tokio::io::BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!(source, generation, line = %line.chars().take(2000).collect::<String>(), "warm zygote output");
    }
}

fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Puts a process that runs as SCHED_IDLE back to normal scheduling.
fn schedule_normally(pid: i32) -> std::io::Result<()> {
    let normal = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on a host pid with a valid param.
    if unsafe { libc::sched_setscheduler(pid, libc::SCHED_OTHER, &normal) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether this process may put another user's SCHED_IDLE process back to
/// normal scheduling: CAP_SYS_NICE in the host's user namespace (a container's
/// own user namespace does not count, whatever its capability sets say). Tried
/// on a thread of its own, whose move back from SCHED_IDLE needs the same
/// capability unless RLIMIT_NICE allows nice 0 (then nothing can be told).
fn can_reschedule_others() -> bool {
    // Tried once per process: the answer does not change while it runs.
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(try_rescheduling)
}

fn try_rescheduling() -> bool {
    let mut nice_limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NICE, &mut nice_limit) } != 0
        || nice_limit.rlim_cur >= 20
    {
        return false;
    }
    std::thread::spawn(|| {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler on the calling thread (pid 0), valid param.
        unsafe {
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0
                && libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) == 0
        }
    })
    .join()
    .unwrap_or(false)
}
