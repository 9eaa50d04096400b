//! `spec.sandbox`: a tenant's limits, mode, share of the slots and nsjail
//! configuration, checked against the server's bounds.

use std::path::PathBuf;
use std::time::Duration;

use super::LoadContext;
use super::schema::SandboxSpec;
use crate::sandbox::{Limits, MIB, RunShare, SandboxPolicy};
use crate::tenants::RequestLimits;

pub(super) fn sandbox_policy(
    spec: SandboxSpec,
    tenant: &str,
    ctx: &LoadContext,
) -> Result<(SandboxPolicy, RequestLimits), String> {
    let defaults = Limits::default();
    let request_defaults = RequestLimits::default();
    let range = |value: Option<u64>, field: &str, min: u64, max: u64, default: u64| match value {
        None => Ok(default),
        Some(v) if (min..=max).contains(&v) => Ok(v),
        Some(v) => Err(format!(
            "spec.sandbox.{field}: must be from {min} to {max}, not {v}"
        )),
    };
    let wall_ms = range(
        spec.wall_timeout_ms,
        "wallTimeoutMs",
        100,
        crate::defaults::MAX_WALL_TIMEOUT_MS,
        defaults.wall_timeout.as_millis() as u64,
    )?;
    let limits = Limits {
        wall_timeout: Duration::from_millis(wall_ms),
        cpu_seconds: range(
            spec.cpu_seconds,
            "cpuSeconds",
            1,
            3600,
            defaults.cpu_seconds,
        )?,
        // The cgroup also holds nsjail itself, so very small values cannot work.
        memory_bytes: range(
            spec.memory_mib,
            "memoryMiB",
            32,
            65_536,
            defaults.memory_bytes / MIB,
        )? * MIB,
        max_pids: range(spec.max_pids, "maxPids", 4, 4096, defaults.max_pids)?,
        file_size_bytes: range(
            spec.file_size_mib,
            "fileSizeMiB",
            1,
            4096,
            defaults.file_size_bytes / MIB,
        )? * MIB,
        tmpfs_bytes: range(
            spec.tmpfs_mib,
            "tmpfsMiB",
            1,
            4096,
            defaults.tmpfs_bytes / MIB,
        )? * MIB,
        shm_bytes: range(spec.shm_mib, "shmMiB", 1, 4096, defaults.shm_bytes / MIB)? * MIB,
        output_bytes: range(
            spec.max_output_bytes,
            "maxOutputBytes",
            1024,
            64 * MIB,
            defaults.output_bytes,
        )?,
        result_bytes: range(
            spec.max_result_bytes,
            "maxResultBytes",
            1024,
            64 * MIB,
            defaults.result_bytes,
        )?,
        output_files: range(
            spec.max_output_files,
            "maxOutputFiles",
            0,
            10_000,
            defaults.output_files,
        )?,
        output_file_bytes: range(
            spec.max_output_file_bytes,
            "maxOutputFileBytes",
            0,
            256 * MIB,
            defaults.output_file_bytes,
        )?,
    };
    let request = RequestLimits {
        max_script_bytes: range(
            spec.max_script_bytes,
            "maxScriptBytes",
            64,
            MIB,
            request_defaults.max_script_bytes as u64,
        )? as usize,
        max_input_files: range(
            spec.max_input_files,
            "maxInputFiles",
            0,
            10_000,
            request_defaults.max_input_files as u64,
        )? as usize,
        max_input_bytes: range(
            spec.max_input_bytes,
            "maxInputBytes",
            0,
            256 * MIB,
            // A small /tmp shrinks the default allowance rather than
            // making every policy that narrows tmpfsMiB spell it out.
            request_defaults.max_input_bytes.min(limits.tmpfs_bytes),
        )?,
    };
    // The input files are written to the run's /tmp: a limit that /tmp
    // cannot hold would turn an accepted request into a failed run.
    if request.max_input_bytes > limits.tmpfs_bytes {
        return Err(format!(
            "spec.sandbox.maxInputBytes: {} is more than the run's /tmp holds (tmpfsMiB: {})",
            request.max_input_bytes,
            limits.tmpfs_bytes / MIB
        ));
    }
    let max_concurrent_runs = spec
        .max_concurrent_runs
        .map(|n| range(Some(n), "maxConcurrentRuns", 1, 4096, 1).map(|n| n as usize))
        .transpose()?;
    let nsjail_config = spec
        .nsjail_config
        .map(|name| nsjail_config_path(&name, ctx))
        .transpose()?;
    Ok((
        SandboxPolicy {
            mode: spec.mode.unwrap_or_default(),
            limits,
            nsjail_config,
            share: RunShare {
                group: tenant.to_string(),
                max_concurrent_runs,
            },
        },
        request,
    ))
}

/// A tenant config is a plain file name inside the nsjail folder: a policy
/// must not point nsjail at an arbitrary host file.
fn nsjail_config_path(name: &str, ctx: &LoadContext) -> Result<PathBuf, String> {
    let field = "spec.sandbox.nsjailConfig";
    let plain = !name.is_empty()
        && name != "base.cfg"
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.');
    if !plain {
        return Err(format!(
            "{field}: `{name}` must be the plain name of a file in the nsjail folder (no path, not base.cfg)"
        ));
    }
    let path = ctx.nsjail_dir.join(name);
    if !path.is_file() {
        return Err(format!(
            "{field}: `{name}` does not exist in the nsjail folder"
        ));
    }
    Ok(std::fs::canonicalize(&path).unwrap_or(path))
}
