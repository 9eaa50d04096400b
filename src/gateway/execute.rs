//! `POST /execute`: authenticate, rate-limit, validate, then answer from the
//! cache or run (within the daily quota).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use tracing::{Instrument, Span};

use super::AppState;
use super::auth::Authenticated;
use super::bodies::{ExecuteRequest, success_body};
use super::cache_control::{CacheAnswer, RequestDirectives};
use super::error::ApiError;
use super::large_bodies::Room;
use super::ratelimit_headers;
use crate::sandbox::{Job, SandboxError, SandboxPolicy};
use crate::stores::StoreUnavailable;
use crate::stores::cache::{self, CachedResult};
use crate::stores::quota::{QuotaError, QuotaUsage};
use crate::stores::rate::{RateDecision, ceil_secs};
use crate::telemetry::{self, spans};
use crate::tenants::{RateLimitPolicy, Tenant};

/// Run a script's `main()` in a fresh sandbox and return what it returned.
///
/// The answer may come from the tenant's result cache (see `Cache-Status`).
/// Every failure is an RFC 9457 problem.
#[utoipa::path(post, path = "/execute", tag = "execute",
    request_body(content = ExecuteRequest, content_type = "application/json"),
    responses(super::openapi::ExecuteResponses), security(("bearer" = [])))]
pub async fn execute(
    State(state): State<AppState>,
    Authenticated(tenant): Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Rate first (before the body is read): a flood costs as little as possible.
    let rate = match check_rate(&state, &tenant).await {
        Ok(rate) => rate,
        Err(e) => return e.into_response(),
    };
    let charged = OnceLock::new();
    let mut response = match &rate {
        Some((policy, decision)) if !decision.allowed => {
            rate_limited(policy, decision).into_response()
        }
        _ => run_request(&state, &tenant, &headers, body, &charged)
            .await
            .unwrap_or_else(IntoResponse::into_response),
    };
    // The usage this request's own run was admitted with; asked for only
    // when it did not run (a cache hit, a refusal).
    let quota = match (tenant.quota.executions_per_day, charged.into_inner()) {
        (None, _) => None,
        (Some(_), Some(usage)) => Some(usage),
        (Some(_), None) => Some(state.quota.usage(&tenant.name).await),
    };
    response.headers_mut().extend(ratelimit_headers::headers(
        rate.as_ref().map(|(policy, decision)| (*policy, decision)),
        quota.map(|usage| (&tenant.quota, usage.executions, usage.resets_in)),
    ));
    response
}

/// The tenant's rate limit decision for this request, if it has a limit.
async fn check_rate<'t>(
    state: &AppState,
    tenant: &'t Tenant,
) -> Result<Option<(&'t RateLimitPolicy, RateDecision)>, ApiError> {
    // The stage's span is there for every request, limited or not, so a
    // trace always shows the same steps.
    let span = spans::rate_limit(&tenant.name);
    let started = Instant::now();
    let Some(policy) = &tenant.rate_limit else {
        spans::record_outcome(&span, "ok");
        return Ok(None);
    };
    let checked = state
        .rate
        .check(&tenant.name, policy)
        .instrument(span.clone())
        .await;
    telemetry::request::record_phase("rate", started.elapsed());
    let decision = match checked {
        Ok(decision) => decision,
        Err(StoreUnavailable) => {
            spans::record_outcome(&span, "unavailable");
            return Err(shared_store_unavailable());
        }
    };
    spans::record_outcome(
        &span,
        if decision.allowed {
            "ok"
        } else {
            "rate-limited"
        },
    );
    if !decision.allowed {
        telemetry::metrics().rate_limited(&tenant.name);
    }
    Ok(Some((policy, decision)))
}

fn rate_limited(policy: &RateLimitPolicy, decision: &RateDecision) -> ApiError {
    ApiError::RateLimited {
        detail: format!(
            "The tenant's rate limit of {} requests per second (burst {}) is reached; retry after {} s.",
            policy.requests_per_second,
            policy.burst,
            ceil_secs(decision.retry_after).max(1)
        ),
        retry_after_secs: ceil_secs(decision.retry_after),
    }
}

/// Validates the body, then answers from the cache or runs the script.
async fn run_request(
    state: &AppState,
    tenant: &Arc<Tenant>,
    headers: &HeaderMap,
    body: Body,
    charged: &OnceLock<QuotaUsage>,
) -> Result<Response, ApiError> {
    let validate = spans::validate();
    let started = Instant::now();
    // Held until the answer: the body's bytes live on in the job.
    let mut _large_body_room = None;
    let request = async {
        require_json(headers)?;
        let limit = BodyLimit::of(state.max_body_bytes, tenant);
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        _large_body_room = reserve_large_body(state, tenant, declared, &limit)?;
        let body = read_body(body, declared, &limit, state.read_timeout).await?;
        Span::current().record("http.request.body.size", body.len() as i64);
        ExecuteRequest::parse(&body, tenant)
    }
    .instrument(validate.clone())
    .await;
    telemetry::request::record_phase("validate", started.elapsed());
    spans::record_outcome(&validate, outcome_of(&request));
    let request = request?;
    let script_sha = spans::script_sha256_prefix(&request.script);
    validate.record("pyexec.script.sha256_prefix", script_sha.as_str());
    telemetry::request::set_script_sha256(&script_sha);

    let cache_opt_out = request.cache == Some(false);
    let (policy, job) = request.into_run(tenant);
    let directives = RequestDirectives::of(headers);
    // The runtime version is part of the key: a Python upgrade must not
    // serve results computed by the old one.
    let runtime = state.sandbox.python_version();
    let cache_span = spans::cache_lookup(&tenant.name);
    let cache = state.cache.inner().filter(|_| tenant.cache.enabled);
    let (Some(cache), Some(runtime), false, false) =
        (cache, runtime, cache_opt_out, directives.no_store)
    else {
        // The client's own choice (`cache: false`, `no-store`) forwards it;
        // a cache that is off for the server or tenant bypasses it.
        let answer = if cache_opt_out || directives.no_store {
            CacheAnswer::Forwarded { stored: false }
        } else {
            CacheAnswer::Bypass
        };
        spans::record_cache(&cache_span, &tenant.name, answer.label());
        let body = run_job(state, tenant, &job, &policy, charged).await?;
        telemetry::request::set_outcome("success");
        return Ok(json_response(body, answer));
    };
    let key = cache::key(tenant, &runtime, &job);
    // A stored answer older than the client accepts (`no-cache` accepts
    // none) is not served: the script runs and its answer replaces it.
    let too_old = match directives.max_age {
        Some(max) if max.is_zero() => true,
        Some(_) => cache
            .get(&key)
            .await
            .is_some_and(|stored| !directives.accepts(stored.age())),
        None => false,
    };
    if too_old {
        let body = run_job(state, tenant, &job, &policy, charged).await?;
        cache
            .insert(
                key,
                Arc::new(CachedResult::fresh(body.clone(), tenant.cache.ttl)),
            )
            .await;
        if let Some(shared) = &state.shared_cache {
            shared.put(tenant, &key, &body, tenant.cache.ttl).await;
        }
        let answer = CacheAnswer::Forwarded { stored: true };
        spans::record_cache(&cache_span, &tenant.name, answer.label());
        telemetry::request::set_outcome("success");
        return Ok(json_response(body, answer));
    }
    let ran_here = AtomicBool::new(false);
    // Single flight: concurrent requests with this key wait for one run.
    // Only `Ok` values are stored, so failures are never cached.
    let cached = cache
        .try_get_with(key, async {
            // Second tier: another replica may have run it already (and
            // recently enough for this client).
            if let Some(shared) = &state.shared_cache {
                if let Some((body, left)) = shared.get(tenant, &key).await {
                    let age = tenant.cache.ttl.saturating_sub(left);
                    if directives.accepts(age) {
                        return Ok(Arc::new(CachedResult::aged(
                            body,
                            age,
                            left.min(tenant.cache.ttl),
                        )));
                    }
                }
            }
            ran_here.store(true, Ordering::Relaxed);
            let body = run_job(state, tenant, &job, &policy, charged).await?;
            if let Some(shared) = &state.shared_cache {
                // Awaited (within the Redis deadline) so that the next
                // request, on any replica, finds it.
                shared.put(tenant, &key, &body, tenant.cache.ttl).await;
            }
            Ok::<_, ApiError>(Arc::new(CachedResult::fresh(body, tenant.cache.ttl)))
        })
        .await
        .map_err(|shared| Arc::try_unwrap(shared).unwrap_or_else(|arc| (*arc).clone()))?;
    let answer = if ran_here.load(Ordering::Relaxed) {
        CacheAnswer::Miss
    } else {
        CacheAnswer::Hit {
            age: cached.age(),
            ttl_left: cached.ttl_left(),
        }
    };
    spans::record_cache(&cache_span, &tenant.name, answer.label());
    telemetry::request::set_outcome("success");
    Ok(json_response(cached.body.clone(), answer))
}

/// One real run, charged to the tenant's daily quota: its 200 body. The
/// usage the run was admitted with goes to `charged`, for the response's
/// `RateLimit` headers.
async fn run_job(
    state: &AppState,
    tenant: &Tenant,
    job: &Job,
    policy: &SandboxPolicy,
    charged: &OnceLock<QuotaUsage>,
) -> Result<Bytes, ApiError> {
    let quota_span = spans::quota(&tenant.name);
    let started = Instant::now();
    let admitted = state
        .quota
        .begin_execution(&tenant.name, &tenant.quota)
        .instrument(quota_span.clone())
        .await
        .map_err(|e| match e {
            QuotaError::Denied(denied) => {
                telemetry::metrics().quota_exceeded(&tenant.name, denied.exhausted);
                ApiError::QuotaExceeded {
                    detail: denied.detail,
                    retry_after_secs: ceil_secs(denied.retry_after),
                }
            }
            QuotaError::Unavailable(StoreUnavailable) => shared_store_unavailable(),
        });
    telemetry::request::record_phase("quota", started.elapsed());
    spans::record_outcome(&quota_span, outcome_of(&admitted));
    let usage = admitted?;
    let report = match state.sandbox.execute(job, policy).await {
        Ok(report) => report,
        Err(e) => {
            // Nothing ran: the execution is not charged.
            state.quota.cancel_execution(&tenant.name).await;
            let _ = charged.set(QuotaUsage {
                executions: usage.executions.saturating_sub(1),
                ..usage
            });
            return Err(sandbox_error(e));
        }
    };
    let _ = charged.set(usage);
    state
        .quota
        .add_cpu_time(&tenant.name, report.usage.cpu_time)
        .await;
    let result = success_body(report)?;
    Ok(Bytes::from(
        serde_json::to_vec(&result).expect("a result is JSON already"),
    ))
}

/// Redis did not answer and the tenant's policy fails closed. Says nothing
/// about where Redis is.
fn shared_store_unavailable() -> ApiError {
    ApiError::Unavailable {
        detail: "The shared store of rate limits and quotas is unreachable and this tenant's policy fails closed (spec.redis.onFailure); retry shortly.".into(),
        retry_after_secs: 1,
    }
}

fn sandbox_error(e: SandboxError) -> ApiError {
    match e {
        SandboxError::Unavailable(reason) => {
            tracing::error!(reason = %reason, "sandbox unavailable");
            ApiError::Unavailable {
                detail: "The sandbox is unavailable; GET /health says why.".into(),
                retry_after_secs: 5,
            }
        }
        SandboxError::Saturated => ApiError::Unavailable {
            detail: "Every sandbox is busy and the queue is full; retry shortly.".into(),
            retry_after_secs: 1,
        },
        SandboxError::LaunchFailed(reason) => {
            tracing::error!(reason = %reason, "sandbox launch failed");
            ApiError::Unavailable {
                detail: "The sandbox could not start this run; retry shortly.".into(),
                retry_after_secs: 1,
            }
        }
    }
}

fn json_response(body: Bytes, answer: CacheAnswer) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.extend(answer.headers());
    response
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Send the request as `Content-Type: application/json` (got `{}`).",
            if essence.is_empty() { "none" } else { essence }
        )))
    }
}

/// How large a tenant's request body may be: the server's limit for the
/// script and its arguments, plus the tenant's input files as base64 with
/// room for their paths.
struct BodyLimit {
    script_and_args: usize,
    input_files: usize,
}

impl BodyLimit {
    fn of(server_limit: usize, tenant: &Tenant) -> Self {
        let input = &tenant.request;
        let input_files = if input.max_input_files == 0 {
            0
        } else {
            (input.max_input_bytes as usize).div_ceil(3) * 4 + input.max_input_files * 4096
        };
        Self {
            script_and_args: server_limit,
            input_files,
        }
    }

    fn total(&self) -> usize {
        self.script_and_args + self.input_files
    }

    fn exceeded(&self) -> ApiError {
        ApiError::TooLarge(format!(
            "The request body is larger than the limit of {} bytes ({} for the script and arguments, plus {} for input files, base64-encoded).",
            self.total(),
            self.script_and_args,
            self.input_files
        ))
    }
}

/// Room in the server's budget of large bodies (those over
/// `--max-body-bytes`, which only input files make), taken before such a
/// body is read. A body without a declared length may be as large as its
/// limit, so it takes that much room.
fn reserve_large_body(
    state: &AppState,
    tenant: &Tenant,
    declared: Option<u64>,
    limit: &BodyLimit,
) -> Result<Option<Room>, ApiError> {
    let may_be = declared.map_or(limit.total() as u64, |len| len.min(limit.total() as u64));
    if may_be <= state.max_body_bytes as u64 {
        return Ok(None);
    }
    state
        .large_bodies
        .try_reserve(&tenant.name, may_be)
        .map(Some)
        .ok_or_else(|| ApiError::Unavailable {
            detail: "The server holds as many large request bodies as it may at once, for this tenant or in all (--large-body-buffer-bytes); retry shortly.".into(),
            retry_after_secs: 1,
        })
}

/// Reads at most `limit` bytes: a `declared` length (`Content-Length`) over
/// it is refused before reading, and a chunked body is cut off as soon as it
/// passes it. The whole
/// body must arrive within `deadline`, so a client trickling it cannot hold
/// the connection open indefinitely.
async fn read_body(
    body: Body,
    declared: Option<u64>,
    limit: &BodyLimit,
    deadline: Duration,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || limit.exceeded();
    let limit = limit.total();
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let Ok(collected) = tokio::time::timeout(deadline, Limited::new(body, limit).collect()).await
    else {
        return Err(ApiError::RequestTimeout(format!(
            "The request body did not arrive within {} ms.",
            deadline.as_millis()
        )));
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(_) => Err(ApiError::InvalidRequest(
            "The request body could not be read.".into(),
        )),
    }
}

/// How a stage ended, for its span.
fn outcome_of<T>(result: &Result<T, ApiError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    }
}
