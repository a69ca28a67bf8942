//! The web console: the registry's Webhooks page, served at `/` from the
//! binary itself (plain HTML, CSS and JavaScript modules embedded at build
//! time, so `cargo run` needs no Node toolchain). The page is a client of
//! the admin API like curl is: it signs in at `/console/session` and then
//! calls the same `/api/v1` routes with its session cookie.
//!
//! Every console response carries a strict Content-Security-Policy (scripts
//! only from this origin, none inline, no framing), so that text a receiver
//! or a registry sent can never run even if it reached the page as markup;
//! the page itself only ever sets `textContent`.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::input::ApiPath;
use crate::api::{ApiError, App};

/// `default-src 'self'` and nothing inline: the page's own modules and
/// stylesheet, its own API, no plugins, no framing, no `<base>` tricks.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The embedded files: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("console/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("console/dom.js"),
    ),
    (
        "repositories.js",
        "text/javascript; charset=utf-8",
        include_str!("console/repositories.js"),
    ),
    (
        "settings.js",
        "text/javascript; charset=utf-8",
        include_str!("console/settings.js"),
    ),
    (
        "deliveries.js",
        "text/javascript; charset=utf-8",
        include_str!("console/deliveries.js"),
    ),
    (
        "events.js",
        "text/javascript; charset=utf-8",
        include_str!("console/events.js"),
    ),
    (
        "plugins.js",
        "text/javascript; charset=utf-8",
        include_str!("console/plugins.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("console/style.css"),
    ),
];

const INDEX: &str = include_str!("console/index.html");

/// Headers every console response carries.
fn secured(mut response: Response, content_type: &'static str) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Always revalidated: a new binary's page is seen at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    secured(INDEX.into_response(), "text/html; charset=utf-8")
}

async fn asset(ApiPath(name): ApiPath<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => secured((*body).into_response(), content_type),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no console file `{name}`"),
        )
        .into_response(),
    }
}

/// `/` and `/console/{file}`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/console/{file}", get(asset))
        .with_state(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module the page imports is served, so a file added to the
    /// console but not to `ASSETS` fails here rather than in a browser.
    #[test]
    fn every_imported_module_is_embedded() {
        let sources = ASSETS.iter().map(|(_, _, s)| *s).chain([INDEX]);
        for source in sources {
            for part in source.split("./").skip(1) {
                let Some(end) = part.find(['"', '\'']) else {
                    continue;
                };
                let name = &part[..end];
                if name.ends_with(".js") || name.ends_with(".css") {
                    assert!(
                        ASSETS.iter().any(|(n, _, _)| *n == name),
                        "`{name}` is imported but not embedded"
                    );
                }
            }
        }
    }

    #[test]
    fn no_inline_script_or_style_in_the_page() {
        assert!(!INDEX.contains("<script>"), "inline script");
        assert!(!INDEX.contains("style="), "inline style");
        assert!(!INDEX.contains("onclick"), "inline handler");
        for (name, _, source) in ASSETS {
            assert!(!source.contains("innerHTML"), "{name} uses innerHTML");
            assert!(
                !source.contains("insertAdjacentHTML"),
                "{name} builds markup"
            );
            assert!(!source.contains("eval("), "{name} evals");
        }
    }
}
