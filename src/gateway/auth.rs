//! Bearer-token authentication: the tenant comes from the credential only.

use std::sync::Arc;

use axum::http::{header, HeaderMap};

use super::error::ApiError;
use crate::tenants::{Tenant, TenantRegistry};

pub fn authenticate(
    registry: &TenantRegistry,
    headers: &HeaderMap,
) -> Result<Arc<Tenant>, ApiError> {
    let token = bearer_token(headers)?;
    registry
        .find_by_api_key(token)
        .ok_or_else(|| ApiError::Unauthorized("The bearer token is not a known API key.".into()))
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthorized(
            "Missing Authorization header: send `Authorization: Bearer <API key>`.".into(),
        )
    })?;
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(malformed());
    }
    Ok(token)
}

fn malformed() -> ApiError {
    ApiError::Unauthorized(
        "Malformed Authorization header: expected `Authorization: Bearer <API key>`.".into(),
    )
}
