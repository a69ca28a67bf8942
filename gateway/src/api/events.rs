//! `/api/v1/events`

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::App;
use super::input::{ApiPath, ApiQuery};
use super::views::{DeliveryView, EventWithDeliveries, Page, PageQuery};
use super::{ApiError, ErrorBody};
use crate::event::{Event, EventType, Timestamp};
use crate::store::EventFilter;

#[derive(Debug, Clone, Default, serde::Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only this repository's events (its id).
    pub repository: Option<String>,
    /// `image.pushed`, `image.deleted`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// Only events that occurred at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only events that occurred at or before this time (RFC 3339).
    pub until: Option<String>,
    /// Items per page (1-500, default 50).
    pub limit: Option<usize>,
    /// The cursor from the previous page's `next`.
    pub before: Option<String>,
}

fn time(field: &str, value: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    value
        .map(|v| {
            Timestamp::parse_rfc3339(v).map_err(|e| {
                ApiError::bad_request(format!("{field} `{v}` is not an RFC 3339 time: {e}"))
            })
        })
        .transpose()
}

/// Events, newest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(EventQuery),
    responses((status = 200, body = Page<Event>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Json<Page<Event>>, ApiError> {
    let kind = q
        .kind
        .as_deref()
        .map(|k| {
            EventType::parse(k).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "type `{k}` is not an event type (image.pushed, image.deleted)"
                ))
            })
        })
        .transpose()?;
    let filter = EventFilter {
        repository_id: q.repository.clone(),
        kind,
        since: time("since", q.since.as_deref())?,
        until: time("until", q.until.as_deref())?,
        before: q.before.clone(),
        limit: PageQuery {
            limit: q.limit,
            before: None,
        }
        .limit(),
    };
    let (items, more) = app.store.events(&filter).await.map_err(|e| match e {
        crate::store::StoreError::NotFound { id, .. } => {
            ApiError::bad_request(format!("before `{id}` is not the id of an event"))
        }
        other => other.into(),
    })?;
    let next = more.then(|| items.last().map(|e| e.id.clone())).flatten();
    Ok(Json(Page { items, next }))
}

/// One event, with its deliveries.
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "events",
    params(("id" = String, Path)),
    responses((status = 200, body = EventWithDeliveries), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EventWithDeliveries>, ApiError> {
    let event = app
        .store
        .event(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("event", &id))?;
    let deliveries = app
        .store
        .deliveries_of_event(&id)
        .await?
        .iter()
        .map(|d| DeliveryView::new(d, None))
        .collect();
    Ok(Json(EventWithDeliveries { event, deliveries }))
}
