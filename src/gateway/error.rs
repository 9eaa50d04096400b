//! The gateway's one error type: every rejection becomes an RFC 9457
//! `application/problem+json` body that also carries `error` for clients of
//! the original API.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::sandbox::{Outcome, Output};

pub const PROBLEM_BASE: &str = "https://pyexec.dev/problems/";

/// An RFC 9457 problem, the body of every error. `error` repeats `detail` for
/// clients of the original API. When the script ran, `stdout`/`stderr` are
/// included; `line`/`column` come with `syntax-error` (when Python named
/// them), `exception`/`traceback` with `runtime-error`. A field that does not
/// apply is left out, never `null`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `https://pyexec.dev/problems/<kind>`, e.g. `…/missing-main`.
    #[schema(example = "https://pyexec.dev/problems/missing-main")]
    pub r#type: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub column: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub exception: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub traceback: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub stdout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub stderr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub stdout_truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub stderr_truncated: Option<bool>,
}

/// The `error` of a Bearer challenge (RFC 6750 §3.1). A request with no
/// credential at all, or with another scheme, gets a challenge without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// A Bearer credential that is not well formed.
    InvalidRequest,
    /// A token that is unknown, expired, or fails verification.
    InvalidToken,
}

impl BearerError {
    fn code(self) -> &'static str {
        match self {
            BearerError::InvalidRequest => "invalid_request",
            BearerError::InvalidToken => "invalid_token",
        }
    }
}

/// `WWW-Authenticate: Bearer realm="pyexec"`, with the error and its
/// description when a credential was sent. The description is the problem's
/// detail, kept to the characters RFC 6750 allows in it.
fn bearer_challenge(challenge: Option<BearerError>, detail: &str) -> HeaderValue {
    let mut value = String::from("Bearer realm=\"pyexec\"");
    if let Some(error) = challenge {
        let description: String = detail
            .chars()
            .filter(|c| matches!(c, ' ' | '!' | '#'..='[' | ']'..='~'))
            .collect();
        value.push_str(&format!(
            ", error=\"{}\", error_description=\"{description}\"",
            error.code()
        ));
    }
    HeaderValue::from_str(&value).expect("visible ASCII only")
}

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
    /// No usable credential: the 401 challenge says why (RFC 6750 §3).
    Unauthorized {
        detail: String,
        challenge: Option<BearerError>,
    },
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
    /// A route that exists, with a method it does not serve (axum adds the
    /// `Allow` header).
    MethodNotAllowed,
    /// A bug of ours. The detail is logged, never sent.
    Internal(String),
}

/// Every problem type of the API contract, with its status and title. A
/// new outcome of a run is a compile error here until it has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    TooLarge,
    UnsupportedMediaType,
    RequestTimeout,
    SyntaxError,
    MissingMain,
    RuntimeError,
    NonJsonResult,
    OutputTooLarge,
    Timeout,
    MemoryLimit,
    SandboxKilled,
    RateLimited,
    QuotaExceeded,
    Unavailable,
    NotFound,
    MethodNotAllowed,
    Internal,
}

impl ProblemKind {
    pub const ALL: [ProblemKind; 20] = [
        ProblemKind::InvalidRequest,
        ProblemKind::Unauthorized,
        ProblemKind::Forbidden,
        ProblemKind::TooLarge,
        ProblemKind::UnsupportedMediaType,
        ProblemKind::RequestTimeout,
        ProblemKind::SyntaxError,
        ProblemKind::MissingMain,
        ProblemKind::RuntimeError,
        ProblemKind::NonJsonResult,
        ProblemKind::OutputTooLarge,
        ProblemKind::Timeout,
        ProblemKind::MemoryLimit,
        ProblemKind::SandboxKilled,
        ProblemKind::RateLimited,
        ProblemKind::QuotaExceeded,
        ProblemKind::Unavailable,
        ProblemKind::NotFound,
        ProblemKind::MethodNotAllowed,
        ProblemKind::Internal,
    ];

    /// The last segment of the problem's type URI.
    pub fn slug(self) -> &'static str {
        match self {
            ProblemKind::InvalidRequest => "invalid-request",
            ProblemKind::Unauthorized => "unauthorized",
            ProblemKind::Forbidden => "forbidden",
            ProblemKind::TooLarge => "too-large",
            ProblemKind::UnsupportedMediaType => "unsupported-media-type",
            ProblemKind::RequestTimeout => "request-timeout",
            ProblemKind::SyntaxError => "syntax-error",
            ProblemKind::MissingMain => "missing-main",
            ProblemKind::RuntimeError => "runtime-error",
            ProblemKind::NonJsonResult => "non-json-result",
            ProblemKind::OutputTooLarge => "output-too-large",
            ProblemKind::Timeout => "timeout",
            ProblemKind::MemoryLimit => "memory-limit",
            ProblemKind::SandboxKilled => "sandbox-killed",
            ProblemKind::RateLimited => "rate-limited",
            ProblemKind::QuotaExceeded => "quota-exceeded",
            ProblemKind::Unavailable => "unavailable",
            ProblemKind::NotFound => "not-found",
            ProblemKind::MethodNotAllowed => "method-not-allowed",
            ProblemKind::Internal => "internal",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::InvalidRequest => "Invalid request",
            ProblemKind::Unauthorized => "Unauthorized",
            ProblemKind::Forbidden => "Forbidden",
            ProblemKind::TooLarge => "Request too large",
            ProblemKind::UnsupportedMediaType => "Unsupported media type",
            ProblemKind::RequestTimeout => "Request timeout",
            ProblemKind::SyntaxError => "Syntax error",
            ProblemKind::MissingMain => "Missing main function",
            ProblemKind::RuntimeError => "Runtime error",
            ProblemKind::NonJsonResult => "Result is not JSON",
            ProblemKind::OutputTooLarge => "Output files over the limit",
            ProblemKind::Timeout => "Time limit reached",
            ProblemKind::MemoryLimit => "Memory limit reached",
            ProblemKind::SandboxKilled => "Killed by the sandbox",
            ProblemKind::RateLimited => "Rate limit reached",
            ProblemKind::QuotaExceeded => "Quota exhausted",
            ProblemKind::Unavailable => "Service unavailable",
            ProblemKind::NotFound => "Not found",
            ProblemKind::MethodNotAllowed => "Method not allowed",
            ProblemKind::Internal => "Internal error",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ProblemKind::InvalidRequest => StatusCode::BAD_REQUEST,
            ProblemKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ProblemKind::Forbidden => StatusCode::FORBIDDEN,
            ProblemKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProblemKind::SyntaxError
            | ProblemKind::MissingMain
            | ProblemKind::RuntimeError
            | ProblemKind::NonJsonResult
            | ProblemKind::OutputTooLarge
            | ProblemKind::Timeout
            | ProblemKind::MemoryLimit
            | ProblemKind::SandboxKilled => StatusCode::UNPROCESSABLE_ENTITY,
            ProblemKind::RateLimited | ProblemKind::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            ProblemKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProblemKind::NotFound => StatusCode::NOT_FOUND,
            ProblemKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem a run's outcome is. A success is never a problem: handed
    /// one, this is our bug.
    pub fn of_outcome(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::SyntaxError { .. } => ProblemKind::SyntaxError,
            Outcome::MissingMain(_) => ProblemKind::MissingMain,
            Outcome::RuntimeError { .. } => ProblemKind::RuntimeError,
            Outcome::NonJsonResult(_) => ProblemKind::NonJsonResult,
            Outcome::OutputTooLarge(_) => ProblemKind::OutputTooLarge,
            Outcome::Timeout { .. } => ProblemKind::Timeout,
            Outcome::MemoryLimit { .. } => ProblemKind::MemoryLimit,
            Outcome::Killed { .. } => ProblemKind::SandboxKilled,
            Outcome::Success { .. } => ProblemKind::Internal,
        }
    }
}

impl ApiError {
    pub fn problem(&self) -> ProblemKind {
        match self {
            ApiError::InvalidRequest(_) => ProblemKind::InvalidRequest,
            ApiError::Unauthorized { .. } => ProblemKind::Unauthorized,
            ApiError::Forbidden(_) => ProblemKind::Forbidden,
            ApiError::TooLarge(_) => ProblemKind::TooLarge,
            ApiError::UnsupportedMediaType(_) => ProblemKind::UnsupportedMediaType,
            ApiError::RequestTimeout(_) => ProblemKind::RequestTimeout,
            ApiError::Script(failure) => ProblemKind::of_outcome(&failure.outcome),
            ApiError::RateLimited { .. } => ProblemKind::RateLimited,
            ApiError::QuotaExceeded { .. } => ProblemKind::QuotaExceeded,
            ApiError::Unavailable { .. } => ProblemKind::Unavailable,
            ApiError::NotFound => ProblemKind::NotFound,
            ApiError::MethodNotAllowed => ProblemKind::MethodNotAllowed,
            ApiError::Internal(_) => ProblemKind::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.problem().status()
    }

    /// The problem type suffix of the API contract.
    pub fn kind(&self) -> &'static str {
        self.problem().slug()
    }

    fn detail(&self) -> String {
        match self {
            ApiError::Unauthorized { detail, .. } => detail.clone(),
            ApiError::InvalidRequest(d)
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
                Outcome::OutputTooLarge(detail) => {
                    format!("The output files are not returned: {detail}")
                }
                Outcome::Success { .. } => "the script succeeded".into(),
            },
            ApiError::RateLimited { detail, .. }
            | ApiError::QuotaExceeded { detail, .. }
            | ApiError::Unavailable { detail, .. } => detail.clone(),
            ApiError::MethodNotAllowed => {
                "This endpoint does not take that method; the `Allow` header lists the ones it takes."
                    .into()
            }
            ApiError::NotFound => {
                "No such endpoint: the API is POST /execute, GET /health, /livez, /readyz and /openapi.json."
                    .into()
            }
            ApiError::Internal(_) => {
                "An internal error occurred; it has been logged with this request's id.".into()
            }
        }
    }

    /// The problem+json body.
    pub fn body(&self) -> Problem {
        let detail = self.detail();
        let mut problem = Problem {
            r#type: format!("{PROBLEM_BASE}{}", self.kind()),
            title: self.problem().title(),
            status: self.status().as_u16(),
            error: detail.clone(),
            detail,
            line: None,
            column: None,
            exception: None,
            traceback: None,
            stdout: None,
            stderr: None,
            stdout_truncated: None,
            stderr_truncated: None,
        };
        if let ApiError::Script(failure) = self {
            let ScriptFailure {
                outcome,
                stdout,
                stderr,
            } = failure.as_ref();
            match outcome {
                Outcome::SyntaxError { line, column, .. } => {
                    problem.line = *line;
                    problem.column = *column;
                }
                Outcome::RuntimeError {
                    exception,
                    traceback,
                    ..
                } => {
                    problem.exception = Some(exception.clone());
                    problem.traceback = Some(traceback.clone());
                }
                _ => {}
            }
            problem.stdout = Some(stdout.text.clone());
            problem.stderr = Some(stderr.text.clone());
            problem.stdout_truncated = Some(stdout.truncated);
            problem.stderr_truncated = Some(stderr.truncated);
        }
        problem
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
        let body = serde_json::to_string(&self.body()).expect("a problem is plain JSON");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::Unauthorized { detail, challenge } = &self {
            headers.insert(
                header::WWW_AUTHENTICATE,
                bearer_challenge(*challenge, detail),
            );
        }
        if let Some(secs) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_has_its_own_slug_and_title() {
        let mut slugs: Vec<_> = ProblemKind::ALL.iter().map(|k| k.slug()).collect();
        let mut titles: Vec<_> = ProblemKind::ALL.iter().map(|k| k.title()).collect();
        slugs.sort_unstable();
        slugs.dedup();
        titles.sort_unstable();
        titles.dedup();
        assert_eq!(slugs.len(), ProblemKind::ALL.len());
        assert_eq!(titles.len(), ProblemKind::ALL.len());
    }

    #[test]
    fn a_failed_run_is_a_422_named_as_traces_and_metrics_name_its_outcome() {
        let detail = || "d".to_string();
        for outcome in [
            Outcome::SyntaxError {
                message: detail(),
                line: None,
                column: None,
            },
            Outcome::MissingMain(detail()),
            Outcome::RuntimeError {
                exception: detail(),
                message: detail(),
                traceback: detail(),
            },
            Outcome::NonJsonResult(detail()),
            Outcome::OutputTooLarge(detail()),
            Outcome::Timeout { detail: detail() },
            Outcome::MemoryLimit { detail: detail() },
            Outcome::Killed { detail: detail() },
        ] {
            let problem = ProblemKind::of_outcome(&outcome);
            assert_eq!(problem.slug(), outcome.label());
            assert_eq!(problem.status(), StatusCode::UNPROCESSABLE_ENTITY);
            assert_ne!(problem, ProblemKind::Internal);
        }
    }
}
