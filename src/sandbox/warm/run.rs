//! One run on a warm runner: its group, its pipes, the request to the
//! zygote, the watch on its limits and what it left.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::WarmPool;
use super::processes::{ProcessExit, schedule_normally};
use super::protocol::{Command, RunRequest, send_with_fds};
use super::zygote::Zygote;
use crate::sandbox::capture::read_capped;
use crate::sandbox::limits::Limits;
use crate::sandbox::outcome::{RawRun, parse_frame, signal_from_exit_code};
use crate::sandbox::process::{pipe, pipe_reader};
use crate::sandbox::{Job, SandboxError, Teardown};

impl WarmPool {
    pub(super) async fn run_on(
        &self,
        zygote: &Arc<Zygote>,
        job: &Job,
        limits: &Limits,
    ) -> Result<(Result<RawRun, SandboxError>, Teardown), SandboxError> {
        let handing_over = Instant::now();
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
        // Apart from the hand-over: a request that waits here found the
        // ready pool empty, which is the machine's CPU, not this request.
        crate::telemetry::request::record_phase("runner", handing_over.elapsed());
        let handing_over = Instant::now();
        let runner_pid = runner.pid;
        let (exit_tx, exit_rx) = oneshot::channel();
        zygote.exits.lock().insert(runner_pid, exit_tx);
        let took = Command::Took { pid: runner_pid }.encode();
        if zygote.send(took.as_bytes(), &[]).await.is_err() {
            return Err(broken("the control channel is closed"));
        }
        let request = serde_json::to_string(&RunRequest {
            cpu_seconds: limits.cpu_seconds,
            file_size_bytes: limits.file_size_bytes,
            tmpfs_bytes: limits.tmpfs_bytes,
            tmpfs_inodes: crate::sandbox::limits::tmpfs_inodes(limits.tmpfs_bytes),
            shm_bytes: limits.shm_bytes,
            shm_inodes: crate::sandbox::limits::tmpfs_inodes(limits.shm_bytes),
        })
        .expect("a run request serializes");
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
            limits.result_channel_bytes(),
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
        let payload = job.stdin_payload(limits);
        crate::telemetry::request::record_phase("handover", handing_over.elapsed());
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
        let limit = crate::sandbox::deadline::time_limit(
            run_cgroup.cpu_meter(),
            deadline,
            limits.cpu_seconds,
        );
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
            Some(result) if parse_frame(&result.bytes, limits).is_some() => {
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
