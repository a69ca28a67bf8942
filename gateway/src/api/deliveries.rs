//! `/api/v1/deliveries`

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::App;
use super::input::ApiPath;
use super::views::{AttemptView, DeliveryView};
use super::{ApiError, ErrorBody};

/// One delivery with every attempt: the request sent (headers and body) and
/// the response (status, headers, body), or the error.
#[utoipa::path(get, path = "/api/v1/deliveries/{id}", tag = "deliveries",
    params(("id" = String, Path)),
    responses((status = 200, body = DeliveryView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeliveryView>, ApiError> {
    let delivery = app
        .store
        .delivery(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery", &id))?;
    let body = delivery
        .request
        .as_ref()
        .map(|r| r.body.as_slice())
        .unwrap_or_default();
    let attempts = app
        .store
        .attempts(&id)
        .await?
        .iter()
        .map(|a| AttemptView::new(a, body))
        .collect();
    Ok(Json(DeliveryView::new(&delivery, Some(attempts))))
}

/// Send a delivery again now, with the same `webhook-id`, whatever its
/// state. Test deliveries are not redelivered: test again instead.
#[utoipa::path(post, path = "/api/v1/deliveries/{id}/redeliver", tag = "deliveries",
    params(("id" = String, Path)),
    responses((status = 202, body = DeliveryView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn redeliver(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<DeliveryView>), ApiError> {
    let delivery = app.store.redeliver(&id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(DeliveryView::new(&delivery, None)),
    ))
}
