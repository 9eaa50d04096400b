//! The gateway's one error type: every rejection becomes an RFC 9457
//! `application/problem+json` body that also carries `error` for clients of
//! the original API.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::sandbox::{Outcome, Output};

pub const PROBLEM_BASE: &str = "https://pyexec.dev/problems/";

#[derive(Debug, Clone)]
pub struct ScriptFailure {
    pub outcome: Outcome,
    pub stdout: Output,
    pub stderr: Output,
}

/// Clone: a single-flight run's failure is handed to every request that
/// waited for it.
#[derive(Debug, Clone)]
pub enum ApiError {
    InvalidRequest(String),
    Unauthorized(String),
    Forbidden(String),
    TooLarge(String),
    UnsupportedMediaType(String),
    /// The client did not send its body in time.
    RequestTimeout(String),
    /// The script ran (or was compiled) and did not produce a result.
    Script(Box<ScriptFailure>),
    RateLimited {
        detail: String,
        retry_after_secs: u64,
    },
    QuotaExceeded {
        detail: String,
        retry_after_secs: u64,
    },
    Unavailable {
        detail: String,
        retry_after_secs: u64,
    },
    /// No such route.
    NotFound,
    /// A bug of ours. The detail is logged, never sent.
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Script(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } | ApiError::QuotaExceeded { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem type suffix of the API contract.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid-request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::TooLarge(_) => "too-large",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::RequestTimeout(_) => "request-timeout",
            ApiError::Script(failure) => failure.outcome.label(),
            ApiError::RateLimited { .. } => "rate-limited",
            ApiError::QuotaExceeded { .. } => "quota-exceeded",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::NotFound => "not-found",
            ApiError::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self.kind() {
            "invalid-request" => "Invalid request",
            "unauthorized" => "Unauthorized",
            "forbidden" => "Forbidden",
            "too-large" => "Request too large",
            "unsupported-media-type" => "Unsupported media type",
            "request-timeout" => "Request timeout",
            "syntax-error" => "Syntax error",
            "missing-main" => "Missing main function",
            "runtime-error" => "Runtime error",
            "non-json-result" => "Result is not JSON",
            "timeout" => "Time limit reached",
            "memory-limit" => "Memory limit reached",
            "sandbox-killed" => "Killed by the sandbox",
            "rate-limited" => "Rate limit reached",
            "quota-exceeded" => "Quota exhausted",
            "unavailable" => "Service unavailable",
            "not-found" => "Not found",
            _ => "Internal error",
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::InvalidRequest(d)
            | ApiError::Unauthorized(d)
            | ApiError::Forbidden(d)
            | ApiError::TooLarge(d)
            | ApiError::UnsupportedMediaType(d)
            | ApiError::RequestTimeout(d) => d.clone(),
            ApiError::Script(failure) => match &failure.outcome {
                Outcome::SyntaxError { message, .. } => format!("Syntax error: {message}"),
                Outcome::MissingMain(message) => format!("Validation error: {message}"),
                Outcome::RuntimeError {
                    exception, message, ..
                } if message.is_empty() => format!("main() raised {exception}"),
                Outcome::RuntimeError {
                    exception, message, ..
                } => format!("main() raised {exception}: {message}"),
                Outcome::NonJsonResult(message) => {
                    format!("main() must return JSON-serializable data: {message}")
                }
                Outcome::Timeout { detail }
                | Outcome::MemoryLimit { detail }
                | Outcome::Killed { detail } => detail.clone(),
                Outcome::Success(_) => "the script succeeded".into(),
            },
            ApiError::RateLimited { detail, .. }
            | ApiError::QuotaExceeded { detail, .. }
            | ApiError::Unavailable { detail, .. } => detail.clone(),
            ApiError::NotFound => {
                "No such endpoint: the API is POST /execute, GET /health, /livez, /readyz and /openapi.json."
                    .into()
            }
            ApiError::Internal(_) => {
                "An internal error occurred; it has been logged with this request's id.".into()
            }
        }
    }

    pub fn body(&self) -> Value {
        let detail = self.detail();
        let mut body = Map::new();
        body.insert(
            "type".into(),
            json!(format!("{PROBLEM_BASE}{}", self.kind())),
        );
        body.insert("title".into(), json!(self.title()));
        body.insert("status".into(), json!(self.status().as_u16()));
        body.insert("detail".into(), json!(detail));
        body.insert("error".into(), json!(detail));
        if let ApiError::Script(failure) = self {
            let ScriptFailure {
                outcome,
                stdout,
                stderr,
            } = failure.as_ref();
            match outcome {
                Outcome::SyntaxError { line, column, .. } => {
                    body.insert("line".into(), json!(line));
                    body.insert("column".into(), json!(column));
                }
                Outcome::RuntimeError {
                    exception,
                    traceback,
                    ..
                } => {
                    body.insert("exception".into(), json!(exception));
                    body.insert("traceback".into(), json!(traceback));
                }
                _ => {}
            }
            body.insert("stdout".into(), json!(stdout.text));
            body.insert("stderr".into(), json!(stderr.text));
            body.insert("stdout_truncated".into(), json!(stdout.truncated));
            body.insert("stderr_truncated".into(), json!(stderr.truncated));
        }
        Value::Object(body)
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited {
                retry_after_secs, ..
            }
            | ApiError::QuotaExceeded {
                retry_after_secs, ..
            }
            | ApiError::Unavailable {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(cause = %cause, "internal error");
        }
        // telemetry (issue 6): the problem type names the request's outcome.
        crate::telemetry::request::set_outcome(self.kind());
        let status = self.status();
        let mut response = (status, self.body().to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"pyexec\""),
            );
        }
        if let Some(secs) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}
