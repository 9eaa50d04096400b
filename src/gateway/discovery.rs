//! `GET /runtime` and `GET /usage`: what the calling tenant's scripts run
//! on and under, and how much of today's quota it has used. Both answer
//! the caller's own tenant only (its credential picks it), so they say
//! nothing about any other.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Authenticated;
use super::error::{ApiError, Problem};
use super::openapi::CredentialProblems;
use crate::sandbox::{MIB, SandboxMode};
use crate::stores::quota::{DAY_SECS, utc_date};

/// The jail's Python and the calling tenant's limits.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimeBody {
    /// The Python version scripts run on, e.g. `3.11.2`.
    #[schema(example = "3.11.2")]
    pub python: String,
    /// Every distribution installed in the jail's Python, sorted by name.
    pub packages: Vec<PackageBody>,
    /// How this tenant's runs start: `warm` (a pre-started interpreter) or `cold`.
    #[schema(example = "warm")]
    pub mode: &'static str,
    /// The modules a warm interpreter has imported before the script runs
    /// (empty when the tenant's runs are cold).
    #[schema(example = json!(["numpy", "pandas"]))]
    pub preloaded: Vec<String>,
    pub limits: TenantLimitsBody,
}

/// One installed distribution.
#[derive(Debug, Serialize, ToSchema)]
pub struct PackageBody {
    #[schema(example = "pandas")]
    pub name: String,
    #[schema(example = "2.3.3")]
    pub version: String,
}

/// The calling tenant's limits, as its policy sets them (names as in the
/// policy file, values in the units of their names).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantLimitsBody {
    pub wall_timeout_ms: u64,
    pub cpu_seconds: u64,
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
    pub max_pids: u64,
    #[serde(rename = "tmpfsMiB")]
    pub tmpfs_mib: u64,
    #[serde(rename = "shmMiB")]
    pub shm_mib: u64,
    #[serde(rename = "fileSizeMiB")]
    pub file_size_mib: u64,
    pub max_script_bytes: u64,
    pub max_output_bytes: u64,
    pub max_result_bytes: u64,
    pub max_input_files: u64,
    pub max_input_bytes: u64,
    pub max_output_files: u64,
    pub max_output_file_bytes: u64,
}

/// The calling tenant's use of today's quota (UTC).
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageBody {
    /// The UTC day counted, `YYYY-MM-DD`.
    #[schema(example = "2026-12-04")]
    pub day: String,
    /// When both counters start again: the next UTC midnight (RFC 3339).
    #[schema(example = "2026-12-05T00:00:00Z")]
    pub resets_at: String,
    pub executions: ExecutionsCounter,
    pub cpu_seconds: CpuSecondsCounter,
}

/// Today's executions; `limit` and `remaining` are absent when the tenant
/// has no such limit.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionsCounter {
    pub used: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub remaining: Option<u64>,
}

/// Today's sandbox CPU-seconds, as the runs' cgroups measured them;
/// `limit` and `remaining` are absent when the tenant has no such limit.
#[derive(Debug, Serialize, ToSchema)]
pub struct CpuSecondsCounter {
    pub used: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub remaining: Option<f64>,
}

/// The caller's runtime: Python, packages, preloads and its own limits.
///
/// The Python version and the packages are what the sandbox self-test found
/// inside the real jail; the limits are those of the caller's tenant policy.
#[utoipa::path(get, path = "/runtime", tag = "discovery",
    responses(
        (status = 200, description = "The runtime and the caller's limits.", body = RuntimeBody),
        CredentialProblems,
        (status = 503, description = "The sandbox has not yet run its self-test.", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn runtime(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<Json<RuntimeBody>, ApiError> {
    let python = state
        .sandbox
        .python_version()
        .ok_or_else(|| ApiError::Unavailable {
            detail: "The sandbox has not finished its self-test; retry in a moment.".into(),
            retry_after_secs: 1,
        })?;
    let mode = state.sandbox.effective_mode(&tenant.sandbox);
    let limits = &tenant.sandbox.limits;
    let request = &tenant.request;
    Ok(Json(RuntimeBody {
        python,
        packages: state
            .sandbox
            .installed_packages()
            .into_iter()
            .map(|(name, version)| PackageBody { name, version })
            .collect(),
        mode: mode.label(),
        preloaded: match mode {
            SandboxMode::Warm => state.sandbox.preloaded_modules().to_vec(),
            SandboxMode::Cold => Vec::new(),
        },
        limits: TenantLimitsBody {
            wall_timeout_ms: limits.wall_timeout.as_millis() as u64,
            cpu_seconds: limits.cpu_seconds,
            memory_mib: limits.memory_bytes / MIB,
            max_pids: limits.max_pids,
            tmpfs_mib: limits.tmpfs_bytes / MIB,
            shm_mib: limits.shm_bytes / MIB,
            file_size_mib: limits.file_size_bytes / MIB,
            max_script_bytes: request.max_script_bytes as u64,
            max_output_bytes: limits.output_bytes,
            max_result_bytes: limits.result_bytes,
            max_input_files: request.max_input_files as u64,
            max_input_bytes: request.max_input_bytes,
            max_output_files: limits.output_files,
            max_output_file_bytes: limits.output_file_bytes,
        },
    }))
}

/// The caller's quota use today (UTC): executions and CPU-seconds.
///
/// Each counter comes with its limit, from the store the quota itself uses
/// (Redis when configured, so every replica answers the same).
#[utoipa::path(get, path = "/usage", tag = "discovery",
    responses(
        (status = 200, description = "Today's use of the caller's quota.", body = UsageBody),
        CredentialProblems),
    security(("bearer" = [])))]
pub async fn usage(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
) -> Json<UsageBody> {
    let usage = state.quota.usage(&tenant.name).await;
    // `resets_in` always ends at a UTC midnight: rounding to the nearest
    // one absorbs the moments between the store's clock reading and ours.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let midnight = (now + usage.resets_in.as_secs() + DAY_SECS / 2) / DAY_SECS * DAY_SECS;
    Json(UsageBody {
        day: utc_date(midnight - DAY_SECS),
        resets_at: format!("{}T00:00:00Z", utc_date(midnight)),
        executions: ExecutionsCounter {
            used: usage.executions,
            limit: tenant.quota.executions_per_day,
            remaining: tenant
                .quota
                .executions_per_day
                .map(|limit| limit.saturating_sub(usage.executions)),
        },
        cpu_seconds: CpuSecondsCounter {
            used: usage.cpu.as_secs_f64(),
            limit: tenant.quota.cpu_seconds_per_day,
            remaining: tenant
                .quota
                .cpu_seconds_per_day
                .map(|limit| (limit as f64 - usage.cpu.as_secs_f64()).max(0.0)),
        },
    })
}
