//! The HTTP API: health and metrics, ingest, and the admin API under
//! `/api/v1` (bearer admin token, or a console session cookie), and the
//! console's sign-in (`/console/session`). Every error has one shape, built in
//! [`ApiError`]; the OpenAPI document is generated from the handlers.

mod app;
pub mod auth;
pub mod deliveries;
mod error;
pub mod events;
pub mod ingest;
pub mod input;
pub mod plugins;
pub mod repositories;
pub mod session;
pub mod store;
pub mod system;
pub mod views;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

pub use app::App;
pub use error::{ApiError, ErrorBody, ErrorDetail};

#[derive(OpenApi)]
#[openapi(
    info(title = "Callisto", description = "A webhook gateway for container registries"),
    paths(
        system::healthz, system::readyz, system::metrics,
        ingest::distribution,
        ingest::harbor,
        ingest::dockerhub,
        ingest::quay,
        ingest::github,
        ingest::cloudevents,
        repositories::create, repositories::list, repositories::get, repositories::patch,
        repositories::delete, repositories::tags, repositories::poll,
        webhooks::create, webhooks::list, webhooks::get, webhooks::patch, webhooks::delete,
        webhooks::test_saved, webhooks::test_unsaved, webhooks::replay, webhooks::deliveries,
        webhooks::filtered, webhooks::retry, webhooks::enable,
        webhooks::rotate_secret,
        events::list, events::get,
        deliveries::get, deliveries::redeliver,
        plugins::list, plugins::put, plugins::delete,
        store::backup,
        session::sign_in, session::current, session::sign_out,
        openapi_json,
    ),
    modifiers(&Security),
    tags(
        (name = "repositories", description = "Local and remote repositories"),
        (name = "webhooks", description = "Notifications of a repository, Test Webhook, replay"),
        (name = "deliveries", description = "What was sent, every attempt, redelivery"),
        (name = "events", description = "The event log"),
        (name = "plugins", description = "Built-in and installed plugins"),
        (name = "store", description = "The store as a whole: a consistent backup"),
        (name = "ingest", description = "Registry notifications"),
        (name = "system", description = "Health and metrics"),
        (name = "console", description = "The web console's sign-in: the admin token for a session cookie"),
    )
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        for name in ["admin_token", "ingest_token"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "system",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

pub fn router(app: Arc<App>) -> Router {
    let body_deadline = input::BodyDeadline(std::time::Duration::from_secs(
        app.config.listener.body_read_timeout_secs,
    ));
    let admin = Router::new()
        .route(
            "/repositories",
            post(repositories::create).get(repositories::list),
        )
        .route(
            "/repositories/{id}",
            get(repositories::get)
                .patch(repositories::patch)
                .delete(repositories::delete),
        )
        .route("/repositories/{id}/tags", get(repositories::tags))
        .route("/repositories/{id}/poll", post(repositories::poll))
        .route(
            "/repositories/{id}/webhooks",
            post(webhooks::create).get(webhooks::list),
        )
        .route(
            "/repositories/{id}/webhooks/test",
            post(webhooks::test_unsaved),
        )
        .route(
            "/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::patch)
                .delete(webhooks::delete),
        )
        .route("/webhooks/{id}/test", post(webhooks::test_saved))
        .route("/webhooks/{id}/replay", post(webhooks::replay))
        .route("/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/webhooks/{id}/filtered", get(webhooks::filtered))
        .route("/webhooks/{id}/retry", post(webhooks::retry))
        .route("/webhooks/{id}/enable", post(webhooks::enable))
        .route(
            "/webhooks/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route("/events", get(events::list))
        .route("/events/{id}", get(events::get))
        .route("/deliveries/{id}", get(deliveries::get))
        .route("/deliveries/{id}/redeliver", post(deliveries::redeliver))
        .route("/plugins", get(plugins::list))
        .route("/plugins/{name}", put(plugins::put).delete(plugins::delete))
        .route("/store/backup", get(store::backup))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_admin,
        ));

    Router::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route("/ingest/distribution", post(ingest::distribution))
        .route("/ingest/harbor", post(ingest::harbor))
        .route("/ingest/dockerhub", post(ingest::dockerhub))
        .route("/ingest/quay", post(ingest::quay))
        .route("/ingest/github", post(ingest::github))
        .route("/ingest/cloudevents", post(ingest::cloudevents))
        .route("/api/v1/openapi.json", get(openapi_json))
        .route(
            "/console/session",
            post(session::sign_in)
                .get(session::current)
                .delete(session::sign_out),
        )
        .nest("/api/v1", admin)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(axum::Extension(body_deadline))
        .with_state(app)
}
