//! Console sign-in sessions: the browser trades the admin token once for a
//! random session cookie, so that the token is neither kept by the page nor
//! ever put in a URL. The admin API then accepts the cookie as it accepts
//! the bearer token, except that a request that changes something must
//! also prove it came from the console's own page (CSRF): it carries the
//! session's CSRF token in a header, which another site cannot read, and
//! the browser's `Sec-Fetch-Site`/`Origin` must not name another site.
//!
//! Sessions live in memory, keyed by a hash of the cookie: a restart signs
//! every browser out, which is the safe side for an admin credential.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{ApiError, App, ErrorBody};
use crate::event::Timestamp;

/// The cookie's name.
pub const COOKIE: &str = "callisto_session";
/// The header a cookie-authenticated write carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Sent back by the page in [`CSRF_HEADER`] on every write.
    pub csrf: String,
    expires: Instant,
    /// The same moment as `expires`, to tell the page.
    pub expires_at: Timestamp,
}

/// What a cookie is worth.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// No cookie, or one this gateway never issued (or forgot).
    Unknown,
    /// A session that was good and has expired.
    Expired,
    Valid(Session),
}

/// The sessions this gateway issued.
pub struct Sessions {
    ttl: Duration,
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            by_hash: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new session: its cookie value and what it holds. Expired sessions
    /// are dropped here, so the map holds no more than the live ones and
    /// those that expired since the last sign-in.
    pub fn create(&self) -> (String, Session) {
        let id = crate::secrets::random_token();
        let session = Session {
            csrf: crate::secrets::random_token(),
            expires: Instant::now() + self.ttl,
            expires_at: Timestamp::from_unix_millis(
                Timestamp::now().unix_millis() + self.ttl.as_millis() as i64,
            ),
        };
        let mut map = self.by_hash.lock().expect("sessions lock");
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        map.insert(key(&id), session.clone());
        (id, session)
    }

    pub fn get(&self, id: &str) -> Lookup {
        let mut map = self.by_hash.lock().expect("sessions lock");
        let k = key(id);
        match map.get(&k) {
            None => Lookup::Unknown,
            Some(s) if s.expires <= Instant::now() => {
                map.remove(&k);
                Lookup::Expired
            }
            Some(s) => Lookup::Valid(s.clone()),
        }
    }

    pub fn remove(&self, id: &str) {
        self.by_hash.lock().expect("sessions lock").remove(&key(id));
    }
}

/// The session cookie's value, from any `Cookie` header.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a new session: not readable by scripts, never sent by
/// another site's requests, only over TLS when the gateway serves TLS.
pub fn set_cookie(id: &str, ttl: Duration, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        ttl.as_secs()
    ))
    .expect("a token is a valid header value")
}

/// `Set-Cookie` that makes the browser forget the session.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}"
    ))
    .expect("a valid header value")
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// Refuses a request that the browser says another site made: a
/// `Sec-Fetch-Site` other than `same-origin` (or `none`, typed by the user),
/// or an `Origin` that is not this host. Requests without either header
/// (curl, old browsers on same-origin GETs) pass; they are judged by the
/// CSRF token.
pub fn check_same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return Err(forbidden(&format!(
                "the browser says this request came from another site (Sec-Fetch-Site: {site})"
            )));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let origin_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        if host.is_empty() || origin_host != Some(host) {
            return Err(forbidden(&format!(
                "the request's Origin `{origin}` is not this gateway"
            )));
        }
    }
    Ok(())
}

/// A cookie-authenticated request that may change something must come from
/// this origin and carry the session's CSRF token.
pub fn check_write(
    method: &Method,
    headers: &HeaderMap,
    session: &Session,
) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    check_same_origin(headers)?;
    let given = headers
        .get(CSRF_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if given.is_empty() || !crate::secrets::same(given, session.csrf.as_bytes()) {
        return Err(forbidden(
            "a console request that changes something needs the session's X-CSRF-Token header",
        ));
    }
    Ok(())
}

/// `401` for a session that expired: the console shows the sign-in form
/// with this message.
pub fn expired() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "the console session has expired: sign in again with the admin token",
    )
}

/// `POST /console/session`: the admin token, typed into the console's
/// sign-in form. It travels in the body, never in a URL.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignIn {
    pub token: String,
}

/// A console session, as the page needs it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// Send it as `X-CSRF-Token` on every request that changes something.
    pub csrf_token: String,
    /// When the session ends; then sign in again.
    #[schema(value_type = String)]
    pub expires_at: Timestamp,
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        Self {
            csrf_token: s.csrf.clone(),
            expires_at: s.expires_at,
        }
    }
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Sign the console in with the admin token: sets an `HttpOnly`,
/// `SameSite=Strict` session cookie (`Secure` under TLS).
#[utoipa::path(post, path = "/console/session", tag = "console",
    request_body = SignIn,
    responses((status = 200, body = SessionView, headers(("set-cookie" = String, description = "The session cookie"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn sign_in(State(app): State<Arc<App>>, request: Request) -> Result<Response, ApiError> {
    check_same_origin(request.headers())?;
    let deadline = super::input::BodyDeadline::of(request.extensions());
    let bytes = super::input::read_body(request.into_body(), 64 << 10, deadline).await?;
    // A body without a token is a sign-in with a wrong one.
    let token = serde_json::from_slice::<SignIn>(&bytes)
        .map(|s| s.token)
        .unwrap_or_default();
    let token = token.trim();
    if token.is_empty() || !crate::secrets::same(token.as_bytes(), app.tokens.admin.as_bytes()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong admin token",
        ));
    }
    let (id, session) = app.sessions.create();
    let mut response = Json(SessionView::from(&session)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&id, app.sessions.ttl(), app.config.secure_cookie()),
    );
    Ok(no_store(response))
}

/// The console's session, for a page that was reloaded: its CSRF token and
/// when it ends.
#[utoipa::path(get, path = "/console/session", tag = "console",
    responses((status = 200, body = SessionView), (status = 401, body = ErrorBody)))]
pub async fn current(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match cookie(&headers).map(|id| app.sessions.get(id)) {
        Some(Lookup::Valid(s)) => Ok(no_store(Json(SessionView::from(&s)).into_response())),
        Some(Lookup::Expired) => Err(expired()),
        _ => Err(ApiError::unauthorized()),
    }
}

/// Sign the console out: the session ends on the gateway and the cookie is
/// cleared.
#[utoipa::path(delete, path = "/console/session", tag = "console",
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn sign_out(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(id) = cookie(&headers) else {
        return Err(ApiError::unauthorized());
    };
    match app.sessions.get(id) {
        Lookup::Valid(s) => check_write(&method, &headers, &s)?,
        Lookup::Expired => return Err(expired()),
        Lookup::Unknown => return Err(ApiError::unauthorized()),
    }
    app.sessions.remove(id);
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie(app.config.secure_cookie()));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_until_it_expires() {
        let sessions = Sessions::new(Duration::from_millis(50));
        let (id, s) = sessions.create();
        assert!(matches!(sessions.get(&id), Lookup::Valid(ref v) if v.csrf == s.csrf));
        assert!(matches!(sessions.get("other"), Lookup::Unknown));
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(sessions.get(&id), Lookup::Expired));
        assert!(matches!(sessions.get(&id), Lookup::Unknown));
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        let h = headers(&[("cookie", "a=1; callisto_session=abc ; b=2")]);
        assert_eq!(cookie(&h), Some("abc"));
        assert_eq!(cookie(&headers(&[("cookie", "callisto_session=")])), None);
        assert_eq!(cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn writes_need_the_csrf_token_and_this_origin() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let (_, s) = sessions.create();
        let post = Method::POST;
        assert!(check_write(&Method::GET, &HeaderMap::new(), &s).is_ok());
        assert!(check_write(&post, &HeaderMap::new(), &s).is_err());
        assert!(check_write(&post, &headers(&[(CSRF_HEADER, "wrong")]), &s).is_err());
        assert!(check_write(&post, &headers(&[(CSRF_HEADER, &s.csrf)]), &s).is_ok());
        let same = [
            (CSRF_HEADER, s.csrf.as_str()),
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert!(check_write(&post, &headers(&same), &s).is_ok());
        let mut cross = same;
        cross[3] = ("sec-fetch-site", "cross-site");
        assert!(check_write(&post, &headers(&cross), &s).is_err());
        let mut other_origin = same;
        other_origin[2] = ("origin", "http://evil.example");
        assert!(check_write(&post, &headers(&other_origin), &s).is_err());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_under_tls() {
        let plain = set_cookie("x", Duration::from_secs(60), false);
        let plain = plain.to_str().unwrap();
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        let tls = set_cookie("x", Duration::from_secs(60), true);
        assert!(tls.to_str().unwrap().ends_with("; Secure"));
    }
}
