//! Who may use the admin API: the bearer admin token (compared in constant
//! time), or a console session cookie with its CSRF defence.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;

use super::ApiError;
use super::App;
use super::session::{self, Lookup};

/// Whether `Authorization: Bearer <token>` carries `expected`. The
/// comparison takes the same time wherever the first difference is.
pub fn bearer_matches(headers: &HeaderMap, expected: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    // The scheme is case-insensitive (RFC 9110, 11.1).
    let Some((scheme, token)) = value.trim_start().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    crate::secrets::same(token.trim().as_bytes(), expected.as_bytes())
}

/// Middleware guarding the admin API: the bearer token, or a console
/// session (a write through a session also needs its CSRF token).
pub async fn require_admin(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if bearer_matches(request.headers(), &app.tokens.admin) {
        return Ok(next.run(request).await);
    }
    let Some(id) = session::cookie(request.headers()) else {
        return Err(ApiError::unauthorized());
    };
    match app.sessions.get(id) {
        Lookup::Valid(s) => {
            session::check_write(request.method(), request.headers(), &s)?;
            Ok(next.run(request).await)
        }
        Lookup::Expired => Err(session::expired()),
        Lookup::Unknown => Err(ApiError::unauthorized()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn the_scheme_is_case_insensitive_the_token_is_not() {
        for ok in [
            "Bearer secret-0123",
            "bearer secret-0123",
            "BEARER secret-0123",
            "BeArEr  secret-0123",
        ] {
            assert!(bearer_matches(&with(ok), "secret-0123"), "{ok}");
        }
        for refused in [
            "Bearer SECRET-0123",
            "Basic secret-0123",
            "Bearersecret-0123",
            "secret-0123",
            "Bearer ",
        ] {
            assert!(!bearer_matches(&with(refused), "secret-0123"), "{refused}");
        }
        assert!(!bearer_matches(&HeaderMap::new(), "secret-0123"));
    }
}
