//! `GET /openapi.json`: the OpenAPI 3.1 document of the API, generated from
//! the code. Each handler's `#[utoipa::path]` names its route and responses,
//! and the router registers the handlers through those same annotations
//! (`super::api_routes`), so the document cannot list a route the server
//! does not serve, or miss one it does.
//!
//! The bodies are the serde types the handlers really read and write
//! (`ExecuteRequest`, `ExecuteResult`, `Problem`, `HealthBody`,
//! `StatusBody`), each deriving its own schema; `tests/api/openapi.rs` checks
//! real responses against the document.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Object, RefOr, Required, Type};
use utoipa::{IntoResponses, Modify, OpenApi};

use super::bodies::{ExecuteRequest, ExecuteResult};
use super::error::{Problem, ProblemKind};
use super::health::{HealthBody, StatusBody};

/// The document's fixed parts; `super::openapi()` adds the paths.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "pyexec",
        description = "Runs untrusted Python scripts' `main()` inside nsjail and returns what it returned. \
Errors are RFC 9457 `application/problem+json`.",
        license(name = "Apache-2.0")
    ),
    servers((url = "http://localhost:8080", description = "A server started by scripts/run.sh; a deployment is at its own URL")),
    components(schemas(ExecuteRequest, ExecuteResult, Problem, HealthBody, StatusBody)),
    modifiers(&BearerAuth),
    tags((name = "execute", description = "Run a script"),
         (name = "discovery", description = "The caller's runtime, limits and quota use"),
         (name = "operations", description = "Health, probes and this document (metrics are on the operator listener)"))
)]
pub struct ApiDoc;

/// When each status of `POST /execute` is answered; the problem kinds of
/// each come from [`ProblemKind`], so a new kind is documented with its
/// status without being listed here.
const EXECUTE_PROBLEMS: &[(u16, &str)] = &[
    (
        400,
        "The body is not JSON, `script` is missing or not a string, a field has the wrong type, `args` is not an object, an unknown field, a NUL byte; an input file with a bad path or bad base64 (the detail names it).",
    ),
    (
        401,
        "Missing, malformed, unknown or expired bearer token (`WWW-Authenticate: Bearer`).",
    ),
    (403, "Valid credential of a disabled tenant."),
    (408, "The body did not arrive within the read timeout."),
    (
        413,
        "Body over the server's limit plus the tenant's input-file allowance, script over the tenant's `maxScriptBytes`, or input files over `maxInputFiles`/`maxInputBytes` (the detail names the limit).",
    ),
    (415, "Not `Content-Type: application/json`."),
    (
        422,
        "The script ran (or was compiled) and produced no result, or left output files over the tenant's limits.",
    ),
    (
        429,
        "The tenant's rate limit or daily quota is used up (`Retry-After`).",
    ),
    (
        503,
        "The sandbox is not ready, every slot and the queue are busy, or a body with input files finds no room in the server's budget of large bodies (`Retry-After`).",
    ),
    (500, "A bug of ours; nothing about the host is said."),
];

/// The problem kinds answered with `status` on `POST /execute` (`not-found`
/// is the fallback route's).
fn kinds_of_status(status: u16) -> Vec<&'static str> {
    ProblemKind::ALL
        .iter()
        .filter(|k| k.status().as_u16() == status)
        .map(|k| k.slug())
        .collect()
}

fn string_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Object::with_type(Type::String))
        .description(Some(description))
        .build()
}

fn integer_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Object::with_type(Type::Integer))
        .description(Some(description))
        .build()
}

fn problem_response(status: u16, when: &str) -> ResponseBuilder {
    let kinds = kinds_of_status(status)
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut response = ResponseBuilder::new()
        .description(format!("{when} Problem type: {kinds}."))
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "Problem",
                ))))
                .build(),
        );
    if matches!(status, 429 | 503) {
        response = response.header(
            "Retry-After",
            integer_header("Seconds until a retry can succeed."),
        );
    }
    if status == 401 {
        response = response.header(
            "WWW-Authenticate",
            string_header("`Bearer realm=\"pyexec\"`"),
        );
    }
    response
}

fn rate_limit_headers(response: ResponseBuilder) -> ResponseBuilder {
    response
        .header(
            "RateLimit",
            string_header("IETF draft: what is left (`r`) and when it is back (`t`, seconds) per policy, e.g. `\"burst\";r=19;t=1`. Only for tenants with a rate limit or a daily execution quota."),
        )
        .header(
            "RateLimit-Policy",
            string_header("IETF draft: the tenant's policies, e.g. `\"burst\";q=20;w=2, \"daily\";q=10000;w=86400`."),
        )
}

fn server_timing(response: ResponseBuilder) -> ResponseBuilder {
    response.header(
        "Server-Timing",
        string_header("W3C Server-Timing: each phase the request went through (`auth`, `rate`, `validate`, `quota`, `queue`, `runner` and `handover` or `cgroup`, `run`) and `total`, in milliseconds, e.g. `auth;dur=0.065, run;dur=3.976, total;dur=5.750`."),
    )
}

/// The responses of `POST /execute`, with their headers.
pub struct ExecuteResponses;

impl IntoResponses for ExecuteResponses {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = BTreeMap::new();
        let ok = ResponseBuilder::new()
            .description("`main()` returned; `result` is its value.")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "ExecuteResult",
                    ))))
                    .build(),
            )
            .header(
                "X-Cache",
                string_header("`HIT` (answered from the result cache, no sandbox started), `MISS` (ran and cached) or `BYPASS` (ran; cache off for the tenant or the request, or `Cache-Control: no-store`)."),
            )
            .header(
                "Cache-Status",
                string_header("RFC 9211: `pyexec; hit; ttl=N`, `pyexec; fwd=miss; stored`, `pyexec; fwd=request; stored` (`no-cache`, `max-age`), `pyexec; fwd=request` (`no-store`) or `pyexec; fwd=bypass`."),
            )
            .header(
                "Age",
                integer_header("RFC 9111: seconds since the cached answer was computed; on a hit only."),
            );
        responses.insert(
            "200".into(),
            server_timing(rate_limit_headers(ok)).build().into(),
        );
        for (status, when) in EXECUTE_PROBLEMS {
            let mut response = server_timing(problem_response(*status, when));
            // 401 and 403 are answered before the tenant's limits are looked at.
            if !matches!(status, 401 | 403) {
                response = rate_limit_headers(response);
            }
            responses.insert(status.to_string(), response.build().into());
        }
        responses
    }
}

/// The 401 and 403 of a route that takes a credential, as `/execute`
/// documents them.
pub struct CredentialProblems;

impl IntoResponses for CredentialProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        EXECUTE_PROBLEMS
            .iter()
            .filter(|(status, _)| matches!(status, 401 | 403))
            .map(|(status, when)| {
                let response = problem_response(*status, when).build().into();
                (status.to_string(), response)
            })
            .collect()
    }
}

/// Every problem kind the API can answer with, for the tests.
pub fn documented_problem_kinds() -> Vec<&'static str> {
    EXECUTE_PROBLEMS
        .iter()
        .flat_map(|(status, _)| kinds_of_status(*status))
        .chain([
            ProblemKind::NotFound.slug(),
            ProblemKind::MethodNotAllowed.slug(),
        ])
        .collect()
}

/// The `bearer` scheme: an API key or a JWT, in `Authorization: Bearer`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("API key or JWT")
                    .description(Some(
                        "A tenant's API key (`pyexec keys new`) or a JWT from the tenant's issuer; \
the built-in tenant's key is `PYEXEC_API_KEY` or the one the server printed at start.",
                    ))
                    .build(),
            ),
        );
    }
}

/// What the request id and trace middleware add to every route: the
/// `X-Request-Id` and `traceparent` request headers (optional) and response
/// headers, and the 404 of the fallback.
pub(super) struct CommonHeaders;

impl Modify for CommonHeaders {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            // Probe spans are recorded at DEBUG only, so by default their
            // answers carry no trace context.
            let traced = !crate::telemetry::request::is_probe(path);
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                // A route without the bearer scheme needs no credential; say
                // so instead of leaving it to a global default.
                operation.security.get_or_insert_with(Vec::new);
                let parameters = operation.parameters.get_or_insert_with(Vec::new);
                parameters.push(
                    ParameterBuilder::new()
                        .name("X-Request-Id")
                        .parameter_in(ParameterIn::Header)
                        .required(Required::False)
                        .description(Some(
                            "Echoed when it is 1-128 of `A-Za-z0-9-_.:`; otherwise one is made.",
                        ))
                        .schema(Some(Object::with_type(Type::String)))
                        .build(),
                );
                parameters.push(
                    ParameterBuilder::new()
                        .name("traceparent")
                        .parameter_in(ParameterIn::Header)
                        .required(Required::False)
                        .description(Some(
                            "W3C trace context: the request's span continues this trace.",
                        ))
                        .schema(Some(Object::with_type(Type::String)))
                        .build(),
                );
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response.headers.insert(
                            "X-Request-Id".into(),
                            string_header("The request's id (echoed or generated); it is in every log line of the request."),
                        );
                        if traced {
                            response.headers.insert(
                                "traceparent".into(),
                                string_header("W3C trace context of the request's server span (`00-<trace id>-<span id>-<flags>`)."),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The bounds of the request body's fields that serde's types cannot say:
/// `timeout_ms` at most the largest any tenant's policy can allow
/// (`spec.sandbox.wallTimeoutMs`; a smaller one may still be over a tenant's
/// own limit, and the 400 names it), a `script` with something in it and no
/// NUL, and `args` keys that are Python identifiers.
pub(super) struct RequestBounds;

impl Modify for RequestBounds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::Schema;
        let Some(RefOr::T(Schema::Object(request))) = openapi
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut("ExecuteRequest"))
        else {
            return;
        };
        fn property<'a>(request: &'a mut Object, name: &str) -> Option<&'a mut Object> {
            match request.properties.get_mut(name) {
                Some(RefOr::T(Schema::Object(object))) => Some(object),
                _ => None,
            }
        }
        if let Some(timeout) = property(request, "timeout_ms") {
            timeout.maximum = Some(crate::defaults::MAX_WALL_TIMEOUT_MS.into());
        }
        if let Some(script) = property(request, "script") {
            script.min_length = Some(1);
            script.pattern = Some(r"^[^\u0000]*[^\s\u0000][^\u0000]*$".into());
        }
        if let Some(args) = property(request, "args") {
            let mut identifier = Object::with_type(Type::String);
            identifier.pattern = Some(r"^[A-Za-z_][A-Za-z0-9_]*$".into());
            args.property_names = Some(Box::new(Schema::Object(identifier)));
        }
    }
}

/// This API's OpenAPI document.
///
/// Built once from the handlers' annotations and the body types.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1).", content_type = "application/json")))]
pub async fn openapi_json() -> impl IntoResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| {
        super::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    });
    ([(header::CONTENT_TYPE, "application/json")], body.as_str())
}
