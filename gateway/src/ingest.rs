//! Where events come from a registry's own notifications.
//!
//! A registry holds every later notification behind one that fails, so this
//! endpoint answers fast, answers `202` only once the events are durably in
//! the log (sharing the commit with concurrent requests), and never answers
//! `5xx` to valid input unless storage itself fails.

pub mod distribution;

use std::sync::Arc;

use tokio::sync::oneshot;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use serde::Serialize;

use crate::api::ApiError;
use crate::api::auth::bearer_matches;
use crate::metrics::Metrics;
use crate::server::App;
use crate::store::{Store, StoreError};
use distribution::{Accepted, Envelope, Recorded};

enum Message {
    Record(Vec<Accepted>, oneshot::Sender<Result<Recorded, StoreError>>),
    Stop,
}

/// Requests recorded per transaction at most.
const MAX_REQUESTS_PER_BATCH: usize = 1024;

/// Records ingest requests in batches: while one batch commits, the next
/// requests queue, and then go in together, as one write job that opens the
/// log's tables once. Each request is answered when its batch is durable.
///
/// It is a thread, not a task: the moment a commit ends it must hand the
/// writer the next batch, and a task would wait its turn behind every HTTP
/// connection on the runtime's workers, leaving the writer idle.
#[derive(Clone)]
pub struct Recorder {
    queue: std::sync::mpsc::Sender<Message>,
}

impl Recorder {
    /// Starts the recorder; it runs until `shutdown`, which the server
    /// fires once requests in flight are answered.
    pub fn spawn(
        store: Store,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, rx) = std::sync::mpsc::channel::<Message>();
        let thread = std::thread::Builder::new()
            .name("ingest-recorder".into())
            .spawn(move || record_batches(&store, &rx))
            .expect("start the ingest recorder thread");
        let stop = queue.clone();
        let task = tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(Message::Stop);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        });
        (Self { queue }, task)
    }

    /// Records one request's notifications; returns once they are durable.
    pub async fn record(&self, accepted: Vec<Accepted>) -> Result<Recorded, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Message::Record(accepted, tx))
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.unwrap_or(Err(StoreError::WriterGone))
    }
}

fn record_batches(store: &Store, rx: &std::sync::mpsc::Receiver<Message>) {
    let mut stopping = false;
    while !stopping {
        let mut requests = Vec::new();
        let mut replies = Vec::new();
        let mut next = match rx.recv() {
            Ok(m) => Some(m),
            Err(_) => return,
        };
        while let Some(m) = next.take() {
            match m {
                Message::Record(accepted, reply) => {
                    requests.push(accepted);
                    replies.push(reply);
                }
                Message::Stop => stopping = true,
            }
            if requests.len() < MAX_REQUESTS_PER_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if requests.is_empty() {
            continue;
        }
        tracing::trace!(requests = requests.len(), "ingest batch");
        match store.write_blocking(true, move |txn| distribution::record(txn, &requests)) {
            Ok(recorded) => {
                for (reply, r) in replies.into_iter().zip(recorded) {
                    let _ = reply.send(Ok(r));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// What an ingest request did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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

/// Reads a body up to `limit` bytes: `413` beyond.
pub async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::too_large(limit))
        }
        Err(e) => Err(ApiError::bad_request(format!("cannot read the body: {e}"))),
    }
}

/// `POST /ingest/distribution`
#[utoipa::path(
    post,
    path = "/ingest/distribution",
    tag = "ingest",
    request_body(content = String, description = "A Distribution notification envelope", content_type = "application/vnd.docker.distribution.events.v1+json"),
    responses(
        (status = 202, description = "Recorded durably", body = IngestResponse),
        (status = 400, description = "Not an envelope", body = crate::api::ErrorBody),
        (status = 401, description = "Missing or wrong ingest token", body = crate::api::ErrorBody),
        (status = 413, description = "Body over the limit", body = crate::api::ErrorBody),
        (status = 415, description = "Not a notification content type", body = crate::api::ErrorBody),
        (status = 503, description = "Storage is failing; retry", body = crate::api::ErrorBody),
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
    let bytes = read_body(body, app.config.ingest.max_body_bytes).await?;
    let envelope: Envelope = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("not a Distribution notification envelope: {e}"))
    })?;

    let mut accepted = Vec::new();
    let mut ignored = 0;
    for n in &envelope.events {
        match distribution::classify(n) {
            Ok(change) => accepted.push(Accepted::new(n, change)),
            Err(reason) => {
                ignored += 1;
                Metrics::count(&app.metrics.ingest_ignored, "reason", reason.as_str());
            }
        }
    }
    let recorded = if accepted.is_empty() {
        Recorded::default()
    } else {
        app.recorder.record(accepted).await?
    };
    if recorded.duplicates > 0 {
        app.metrics
            .ingest_ignored
            .get_or_create(&vec![("reason", "duplicate".to_owned())])
            .inc_by(recorded.duplicates as u64);
    }
    if !recorded.events.is_empty() {
        app.metrics
            .events
            .get_or_create(&vec![("source", "local".to_owned())])
            .inc_by(recorded.events.len() as u64);
        app.fanout.wake();
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(IngestResponse {
            events: recorded.events.into_iter().map(|e| e.id).collect(),
            duplicates: recorded.duplicates,
            ignored,
        }),
    ))
}
