//! Bearer-token authentication: the tenant comes from the credential only.
//!
//! A token with the three dot-separated parts of a JWS is a JWT; anything
//! else is an API key (they never contain dots).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine;
use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;

use super::AppState;
use super::error::{ApiError, BearerError};
use crate::telemetry::{self, spans};
use crate::tenants::{Tenant, TenantRegistry};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const JWT_LEEWAY_SECS: u64 = 30;

/// The enabled tenant a request's bearer token names. As an extractor it
/// runs before the handler reads the body; its rejection is the request's
/// 401 or 403. The tenant is named in the request's telemetry from here on.
pub struct Authenticated(pub Arc<Tenant>);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // One registry snapshot per request: a reload never changes it mid-way.
        let started = std::time::Instant::now();
        let registry = state.policies.registry();
        let span = spans::authenticate();
        let tenant = span.in_scope(|| authenticate(&registry, &parts.headers));
        telemetry::request::record_phase("auth", started.elapsed());
        spans::record_outcome(&span, tenant.as_ref().map_or_else(|e| e.kind(), |_| "ok"));
        let tenant = tenant?;
        telemetry::request::set_tenant(&tenant.name);
        span.record("pyexec.tenant", tenant.name.as_str());
        if tenant.disabled {
            return Err(ApiError::Forbidden(format!(
                "The tenant `{}` is disabled by its policy.",
                tenant.name
            )));
        }
        Ok(Self(tenant))
    }
}

pub fn authenticate(
    registry: &TenantRegistry,
    headers: &HeaderMap,
) -> Result<Arc<Tenant>, ApiError> {
    let token = bearer_token(headers)?;
    if token.split('.').count() == 3 {
        return authenticate_jwt(registry, token);
    }
    registry
        .find_by_api_key(token)
        .ok_or_else(|| unauthorized("The bearer token is not a known API key."))
}

/// A token was sent and is not valid.
fn unauthorized(detail: impl Into<String>) -> ApiError {
    ApiError::Unauthorized {
        detail: detail.into(),
        challenge: Some(BearerError::InvalidToken),
    }
}

/// Routes the token to a tenant by its `iss` (read without trust, only to
/// choose the key), then verifies it with that tenant's key, pinned
/// algorithms, issuer and audience.
fn authenticate_jwt(registry: &TenantRegistry, token: &str) -> Result<Arc<Tenant>, ApiError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| {
        unauthorized(
            "The JWT header is malformed or names an unsupported algorithm (`none` is never accepted).",
        )
    })?;
    let issuer = unverified_issuer(token)?;
    let tenant = registry
        .find_by_issuer(&issuer)
        .ok_or_else(|| unauthorized("The JWT's issuer is not a known tenant issuer."))?;
    let jwt = tenant
        .jwt
        .as_ref()
        .expect("tenants are indexed by issuer only when they have JWT settings");
    if !jwt.algorithms.contains(&header.alg) {
        return Err(unauthorized(format!(
            "The JWT is signed with {:?}; this tenant accepts only {:?}.",
            header.alg, jwt.algorithms
        )));
    }
    let mut validation = Validation::new(header.alg);
    validation.algorithms = jwt.algorithms.clone();
    validation.leeway = JWT_LEEWAY_SECS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_issuer(&[&jwt.issuer]);
    let mut required = vec!["exp", "iss"];
    match &jwt.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    jsonwebtoken::decode::<serde_json::Value>(token, &jwt.key, &validation).map_err(|e| {
        unauthorized(match e.kind() {
            ErrorKind::ExpiredSignature => "The JWT has expired (`exp`).".to_string(),
            ErrorKind::ImmatureSignature => "The JWT is not valid yet (`nbf`).".to_string(),
            ErrorKind::InvalidAudience => {
                "The JWT's audience (`aud`) is not this tenant's.".to_string()
            }
            ErrorKind::InvalidIssuer => "The JWT's issuer (`iss`) is not this tenant's.".into(),
            ErrorKind::MissingRequiredClaim(claim) => {
                format!("The JWT lacks the required `{claim}` claim.")
            }
            ErrorKind::InvalidClaimFormat(claim) => {
                format!("The JWT's `{claim}` claim has the wrong type (a NumericDate is a number).")
            }
            ErrorKind::InvalidSignature => "The JWT's signature does not verify.".into(),
            ErrorKind::InvalidAlgorithm => {
                "The JWT's algorithm does not match this tenant's key.".into()
            }
            _ => "The JWT is malformed.".into(),
        })
    })?;
    Ok(tenant)
}

/// The `iss` claim, decoded but not trusted.
fn unverified_issuer(token: &str) -> Result<String, ApiError> {
    let payload = token.split('.').nth(1).unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| unauthorized("The JWT payload is not base64url."))?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| unauthorized("The JWT payload is not a JSON object."))?;
    match claims.get("iss") {
        Some(serde_json::Value::String(iss)) => Ok(iss.clone()),
        _ => Err(unauthorized(
            "The JWT lacks the required `iss` claim (it names the tenant's issuer).",
        )),
    }
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized {
            detail: "Missing Authorization header: send `Authorization: Bearer <API key or JWT>`."
                .into(),
            challenge: None,
        })?;
    let value = value
        .to_str()
        .map_err(|_| malformed(Some(BearerError::InvalidRequest)))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme: the challenge only says which one to use.
        return Err(malformed(None));
    }
    let token = token.trim();
    if token.is_empty() || token.contains(' ') {
        return Err(malformed(Some(BearerError::InvalidRequest)));
    }
    Ok(token)
}

fn malformed(challenge: Option<BearerError>) -> ApiError {
    ApiError::Unauthorized {
        detail:
            "Malformed Authorization header: expected `Authorization: Bearer <API key or JWT>`."
                .into(),
        challenge,
    }
}
