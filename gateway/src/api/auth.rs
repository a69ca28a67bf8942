//! Bearer tokens, compared in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::ApiError;
use super::App;

/// Whether `Authorization: Bearer <token>` carries `expected`. The
/// comparison takes the same time wherever the first difference is.
pub fn bearer_matches(headers: &HeaderMap, expected: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    else {
        return false;
    };
    token.trim().as_bytes().ct_eq(expected.as_bytes()).into()
}

/// Middleware guarding the admin API.
pub async fn require_admin(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if bearer_matches(request.headers(), &app.tokens.admin) {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::unauthorized())
    }
}
