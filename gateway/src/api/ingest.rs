//! `POST /ingest/...`: registries' notifications, over HTTP.
//!
//! A registry holds every later notification behind one that fails, so this
//! endpoint answers fast, answers `202` only once the events are durably in
//! the log (sharing the commit with concurrent requests), and never answers
//! `5xx` to valid input unless storage itself fails.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Serialize;

use super::auth::bearer_matches;
use super::input::read_body;
use super::{ApiError, App};
use crate::changes::{Notification, Recorded};
use crate::ingest::distribution::{self, Envelope};
use crate::metrics::Metrics;

/// What an ingest request did.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct IngestResponse {
    /// Ids of the events appended to the log.
    pub events: Vec<String>,
    /// Notifications seen before (a registry's retry), acknowledged again.
    pub duplicates: usize,
    /// Notifications that make no event (blob pushes, pulls).
    pub ignored: usize,
}

const CONTENT_TYPES: [&str; 3] = [
    "application/vnd.docker.distribution.events.v1+json",
    "application/vnd.docker.distribution.events.v2+json",
    "application/json",
];

/// `POST /ingest/distribution`
#[utoipa::path(
    post,
    path = "/ingest/distribution",
    tag = "ingest",
    request_body(content = String, description = "A Distribution notification envelope", content_type = "application/vnd.docker.distribution.events.v1+json"),
    responses(
        (status = 202, description = "Recorded durably", body = IngestResponse),
        (status = 400, description = "Not an envelope", body = super::ErrorBody),
        (status = 401, description = "Missing or wrong ingest token", body = super::ErrorBody),
        (status = 413, description = "Body over the limit", body = super::ErrorBody),
        (status = 415, description = "Not a notification content type", body = super::ErrorBody),
        (status = 503, description = "Storage is failing; retry", body = super::ErrorBody),
    ),
    security(("ingest_token" = []))
)]
pub async fn distribution(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    if !bearer_matches(&headers, &app.tokens.ingest) {
        return Err(ApiError::unauthorized());
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        if !CONTENT_TYPES.iter().any(|t| t.eq_ignore_ascii_case(ct)) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "content type `{ct}` is not a Distribution notification (expected {})",
                    CONTENT_TYPES.join(", ")
                ),
            ));
        }
    }
    let deadline = Duration::from_secs(app.config.listener.body_read_timeout_secs);
    let bytes = read_body(body, app.config.ingest.max_body_bytes, deadline).await?;
    let envelope: Envelope = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("not a Distribution notification envelope: {e}"))
    })?;

    // Checked before anything is recorded: one bad name refuses the whole
    // envelope, which a registry (whose own names always pass) never sends.
    for n in &envelope.events {
        crate::records::check_repository_name(&n.target.repository)
            .map_err(|e| ApiError::bad_request(format!("target.repository: {e}")))?;
    }
    let mut accepted = Vec::new();
    let mut ignored = 0;
    for n in &envelope.events {
        match distribution::classify(n) {
            Ok(change) => accepted.push(distribution::accept(n, change)),
            Err(reason) => {
                ignored += 1;
                Metrics::count(&app.metrics.ingest_ignored, "reason", reason.as_str());
            }
        }
    }
    let recorded = record(&app, accepted).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(IngestResponse {
            events: recorded.events.into_iter().map(|e| e.id).collect(),
            duplicates: recorded.duplicates,
            ignored,
        }),
    ))
}

/// Records notifications and counts what was committed. The work runs in
/// its own task so that it completes, and is counted, even when the client
/// goes away while its events commit.
async fn record(app: &Arc<App>, accepted: Vec<Notification>) -> Result<Recorded, ApiError> {
    let app = app.clone();
    let span = tracing::info_span!(
        "ingest",
        notifications = accepted.len(),
        event.ids = tracing::field::Empty
    );
    let task = tokio::spawn(
        async move {
            let span = tracing::Span::current();
            let recorded = app.store.record_notifications(accepted).await?;
            if !recorded.events.is_empty() {
                let ids: Vec<&str> = recorded.events.iter().map(|e| e.id.as_str()).collect();
                span.record("event.ids", ids.join(",").as_str());
            }
            if recorded.duplicates > 0 {
                app.metrics
                    .ingest_ignored
                    .get_or_create(&vec![("reason", "duplicate".to_owned())])
                    .inc_by(recorded.duplicates as u64);
            }
            if let Some(first) = recorded.events.first() {
                app.metrics
                    .events
                    .get_or_create(&vec![("source", first.source.as_str().to_owned())])
                    .inc_by(recorded.events.len() as u64);
            }
            Ok::<_, crate::store::StoreError>(recorded)
        }
        .instrument(span),
    );
    task.await
        .map_err(|e| ApiError::internal(format!("recording notifications: {e}")))?
        .map_err(ApiError::from)
}
