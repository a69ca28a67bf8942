//! `/api/v1/plugins`

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use utoipa::ToSchema;

use super::App;
use super::input::ApiPath;
use super::{ApiError, ErrorBody};
use crate::plugin::{ConfigKey, Plugin};

/// Largest component accepted.
pub const MAX_PLUGIN_BYTES: usize = 32 << 20;

#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct PluginView {
    pub name: String,
    pub version: String,
    pub description: String,
    /// `builtin` or `installed`.
    pub source: String,
    /// Hex SHA-256 of the component.
    pub sha256: String,
    pub size: usize,
    /// Keys beyond the standard `events`, `tags`, `exclude_tags`, `tag_regex`.
    pub config_keys: Vec<ConfigKey>,
    /// Fan-out reaches it in one call per event (it exports `handle`).
    pub handler: bool,
}

impl From<&Plugin> for PluginView {
    fn from(p: &Plugin) -> Self {
        Self {
            name: p.name().to_owned(),
            version: p.info().version.clone(),
            description: p.info().description.clone(),
            source: if p.is_builtin() {
                "builtin"
            } else {
                "installed"
            }
            .to_owned(),
            sha256: p.sha256().to_owned(),
            size: p.size(),
            config_keys: p.info().config_keys.clone(),
            handler: p.has_handle(),
        }
    }
}

/// Built-in and installed plugins.
#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins",
    responses((status = 200, body = Vec<PluginView>), (status = 401, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn list(State(app): State<Arc<App>>) -> Json<Vec<PluginView>> {
    Json(
        app.plugins
            .list()
            .iter()
            .map(|p| PluginView::from(p.as_ref()))
            .collect(),
    )
}

/// Install or replace a plugin (`application/wasm`). It is validated and
/// compiled before it is accepted; a replacement swaps atomically and calls
/// in flight finish on the old one.
#[utoipa::path(put, path = "/api/v1/plugins/{name}", tag = "plugins",
    params(("name" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses(
        (status = 201, description = "Installed", body = PluginView),
        (status = 200, description = "Replaced", body = PluginView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn put(
    State(app): State<Arc<App>>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<PluginView>), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.eq_ignore_ascii_case("application/wasm") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("upload the component as application/wasm, not `{ct}`"),
        ));
    }
    let deadline = std::time::Duration::from_secs(app.config.listener.body_read_timeout_secs);
    let wasm = super::input::read_body(body, MAX_PLUGIN_BYTES, deadline).await?;
    let existed = app.plugins.get(&name).is_some();
    let plugins = app.plugins.clone();
    let (prepared, wasm) = tokio::task::spawn_blocking(move || {
        let prepared = plugins.prepare(&name, &wasm);
        (prepared, wasm)
    })
    .await
    .map_err(|e| ApiError::internal(format!("installing: {e}")))?;
    let prepared = prepared?;
    // Kept by the store first (with PostgreSQL, where every gateway on the
    // database loads it from), then installed here.
    app.store.save_plugin(prepared.name(), &wasm).await?;
    let installed = app.plugins.put(prepared, &wasm)?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(PluginView::from(installed.as_ref()))))
}

/// Remove an installed plugin; `409` while a webhook uses it.
#[utoipa::path(delete, path = "/api/v1/plugins/{name}", tag = "plugins",
    params(("name" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn delete(
    State(app): State<Arc<App>>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let _no_new_users = app.plugin_users.write().await;
    let users: Vec<String> = app
        .store
        .webhooks()
        .await?
        .into_iter()
        .filter(|w| w.plugin == name)
        .map(|w| w.id)
        .collect();
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "plugin `{name}` is used by webhook(s) {}; change or delete them first",
            users.join(", ")
        )));
    }
    if app.plugins.get(&name).is_some_and(|p| !p.is_builtin()) {
        app.store.remove_plugin(&name).await?;
    }
    app.plugins.remove(&name)?;
    Ok(StatusCode::NO_CONTENT)
}
