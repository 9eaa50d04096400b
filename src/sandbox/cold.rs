//! The cold path: one nsjail started for one run, its pipes read with caps,
//! its time limits watched, and its exit turned into a [`RawRun`].

use std::process::Stdio;
use std::time::Instant;

use tokio::io::AsyncWriteExt;

use super::capture::{Captured, read_capped};
use super::cgroup::RunCgroup;
use super::deadline::time_limit;
use super::launch::{launch_failed, nsjail_command, strip_log_prefix};
use super::limits::{JailPaths, KIB, Limits};
use super::outcome::{RawRun, signal_from_exit_code};
use super::process::{pipe, pipe_reader};
use super::{Job, Sandbox, SandboxError};

impl Sandbox {
    pub(super) async fn run_cold(
        &self,
        job: &Job,
        limits: &Limits,
        paths: &JailPaths,
        run_cgroup: &RunCgroup,
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

        let payload = job.stdin_payload(limits);
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
        let result = tokio::spawn(read_capped(
            pipe_reader(result_read).map_err(launch_error)?,
            limits.result_channel_bytes(),
        ));
        let nsjail_log = tokio::spawn(read_capped(
            pipe_reader(log_read).map_err(launch_error)?,
            64 * KIB,
        ));

        let deadline = tokio::time::Instant::now() + limits.wall_timeout;
        let (status, timed_out) = tokio::select! {
            status = child.wait() => (status, None),
            limit = time_limit(run_cgroup.cpu_meter(), deadline, limits.cpu_seconds) => {
                run_cgroup.kill_now();
                (child.wait().await, Some(limit))
            }
        };
        // Everything in the jail is gone once its pid 1 is: the readers reach EOF.
        run_cgroup.kill_now();
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
