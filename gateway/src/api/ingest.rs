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
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Serialize;

use super::auth::bearer_matches;
use super::input::read_body;
use super::{ApiError, App};

use crate::changes::{Notification, Recorded, TagChange};
use crate::config::{DOCKER_HUB_API, QUAY_API};
use crate::ingest::distribution::{self, Envelope};
use crate::ingest::{Invalid, Read, cloudevents, dockerhub, github, harbor, quay};
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
    let mut read = Read::default();
    for n in &envelope.events {
        match distribution::classify(n) {
            Ok(change) => read.accepted.push(distribution::accept(n, change)),
            Err(reason) => read.ignored.push(reason.as_str()),
        }
    }
    answer(&app, read).await
}

/// Records what a request read, once every repository name in it passed,
/// and answers `202` once it is durable.
async fn answer(
    app: &Arc<App>,
    read: Read,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    for n in &read.accepted {
        crate::records::check_repository_name(&n.repository)
            .map_err(|e| ApiError::bad_request(format!("repository `{}`: {e}", n.repository)))?;
    }
    for reason in &read.ignored {
        Metrics::count(&app.metrics.ingest_ignored, "reason", reason);
    }
    let ignored = read.ignored.len();
    let recorded = record(app, read.accepted).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(IngestResponse {
            events: recorded.events.into_iter().map(|e| e.id).collect(),
            duplicates: recorded.duplicates,
            ignored,
        }),
    ))
}

type Answer = Result<(StatusCode, Json<IngestResponse>), ApiError>;

/// The body, once the content type is JSON (or unsaid).
async fn json_body(
    app: &App,
    headers: &HeaderMap,
    body: Body,
    accept: &[&str],
) -> Result<bytes::Bytes, ApiError> {
    if let Some(ct) = content_type(headers)
        && !accept.iter().any(|t| t.eq_ignore_ascii_case(&ct))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "content type `{ct}` is not accepted here (expected {})",
                accept.join(", ")
            ),
        ));
    }
    let deadline = Duration::from_secs(app.config.listener.body_read_timeout_secs);
    read_body(body, app.config.ingest.max_body_bytes, deadline).await
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers.get(header::CONTENT_TYPE).map(|ct| {
        ct.to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    })
}

fn invalid(e: Invalid) -> ApiError {
    ApiError::bad_request(e.0)
}

/// `?token=<ingest token>` (for senders that cannot set a header), or the
/// usual bearer header.
fn url_token_matches(app: &App, query: Option<&str>, headers: &HeaderMap) -> bool {
    let given = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    match given {
        Some(t) => crate::secrets::same(t.as_bytes(), app.tokens.ingest.as_bytes()),
        None => bearer_matches(headers, &app.tokens.ingest),
    }
}

/// `POST /ingest/harbor`
#[utoipa::path(
    post,
    path = "/ingest/harbor",
    tag = "ingest",
    request_body(content = String, description = "A Harbor webhook payload, Default or CloudEvents format", content_type = "application/json"),
    responses(
        (status = 202, description = "Recorded durably", body = IngestResponse),
        (status = 400, description = "Not a Harbor payload", body = super::ErrorBody),
        (status = 401, description = "Missing or wrong auth header", body = super::ErrorBody),
        (status = 413, description = "Body over the limit", body = super::ErrorBody),
        (status = 415, description = "Not JSON", body = super::ErrorBody),
        (status = 503, description = "Storage is failing; retry", body = super::ErrorBody),
    ),
    security(("ingest_token" = []))
)]
pub async fn harbor(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Answer {
    // Harbor sends its policy's "Auth Header" verbatim as `Authorization`.
    let authorised = match &app.config.ingest.harbor_auth_header {
        Some(expected) => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| crate::secrets::same(v.trim().as_bytes(), expected.trim().as_bytes())),
        None => bearer_matches(&headers, &app.tokens.ingest),
    };
    if !authorised {
        return Err(ApiError::unauthorized());
    }
    let bytes = json_body(
        &app,
        &headers,
        body,
        &["application/json", "application/cloudevents+json"],
    )
    .await?;
    answer(&app, harbor::read(&bytes).map_err(invalid)?).await
}

/// `POST /ingest/dockerhub?token=...`
#[utoipa::path(
    post,
    path = "/ingest/dockerhub",
    tag = "ingest",
    params(("token" = Option<String>, Query, description = "The ingest token (Docker Hub sends no headers)")),
    request_body(content = String, description = "A Docker Hub webhook payload", content_type = "application/json"),
    responses(
        (status = 202, description = "Recorded durably", body = IngestResponse),
        (status = 400, description = "Not a Docker Hub payload", body = super::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::ErrorBody),
        (status = 413, description = "Body over the limit", body = super::ErrorBody),
        (status = 415, description = "Not JSON", body = super::ErrorBody),
        (status = 422, description = "The registry does not have the announced tag", body = super::ErrorBody),
        (status = 502, description = "The registry could not be asked", body = super::ErrorBody),
        (status = 503, description = "Storage is failing; retry", body = super::ErrorBody),
    ),
)]
pub async fn dockerhub(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    if !url_token_matches(&app, query.as_deref(), &headers) {
        return Err(ApiError::unauthorized());
    }
    let bytes = json_body(&app, &headers, body, &["application/json"]).await?;
    let settings = app.config.ingest.dockerhub.clone();
    let host = settings
        .host(DOCKER_HUB_API)
        .unwrap_or_else(|| crate::poll::reference::DOCKER_HUB.to_owned());
    let read = dockerhub::read(&bytes, &host).map_err(invalid)?;
    let read = confirm(
        &app,
        settings.url(DOCKER_HUB_API),
        settings.verify,
        read,
        |n, _| n.dedupe_key.clone(),
    )
    .await?;
    answer(&app, read).await
}

/// `POST /ingest/quay?token=...`
#[utoipa::path(
    post,
    path = "/ingest/quay",
    tag = "ingest",
    params(("token" = Option<String>, Query, description = "The ingest token")),
    request_body(content = String, description = "A Quay repo_push notification", content_type = "application/json"),
    responses(
        (status = 202, description = "Recorded durably", body = IngestResponse),
        (status = 400, description = "Not a repo_push notification", body = super::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::ErrorBody),
        (status = 413, description = "Body over the limit", body = super::ErrorBody),
        (status = 415, description = "Not JSON", body = super::ErrorBody),
        (status = 422, description = "The registry does not have an announced tag", body = super::ErrorBody),
        (status = 502, description = "The registry could not be asked", body = super::ErrorBody),
        (status = 503, description = "Storage is failing; retry", body = super::ErrorBody),
    ),
)]
pub async fn quay(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    if !url_token_matches(&app, query.as_deref(), &headers) {
        return Err(ApiError::unauthorized());
    }
    let bytes = json_body(&app, &headers, body, &["application/json"]).await?;
    let settings = app.config.ingest.quay.clone();
    let read = quay::read(&bytes).map_err(invalid)?;
    let read = confirm(
        &app,
        settings.url(QUAY_API),
        settings.verify,
        read,
        |n, digest| {
            let tag = match &n.change {
                TagChange::Pushed { tag, .. } | TagChange::Announced { tag } => tag.as_str(),
                _ => "",
            };
            quay::confirmed_key(&n.repository, tag, digest)
        },
    )
    .await?;
    answer(&app, read).await
}

/// With `verify` on, asks the registry for each announced tag's digest:
/// the announcement becomes a push of that digest (keyed by `key`), or is
/// refused when the registry has no such tag. Off, the announcements stand.
async fn confirm(
    app: &Arc<App>,
    registry: &str,
    verify: bool,
    mut read: Read,
    key: impl Fn(&Notification, &str) -> String,
) -> Result<Read, ApiError> {
    if !verify {
        return Ok(read);
    }
    for n in &mut read.accepted {
        let TagChange::Announced { tag } = &n.change else {
            continue;
        };
        let manners = crate::poll::registry::Manners {
            http: app.registry_client.clone(),
            policy: app.policy.clone(),
            budget: app.registry_budget.clone(),
            metrics: app.metrics.clone(),
            page_size: 1,
        };
        let digest = crate::poll::confirm_tag(manners, registry, &n.repository, tag)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "registry_unavailable",
                    format!("confirming {}:{tag} with {}: {e}", n.repository, registry),
                )
            })?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "not_in_registry",
                    format!("{} has no tag `{tag}` in {}", n.repository, registry),
                )
            })?;
        n.dedupe_key = key(n, &digest);
        n.change = TagChange::Pushed {
            tag: tag.clone(),
            digest,
            media_type: None,
            size: None,
        };
    }
    Ok(read)
}

/// `POST /ingest/github`
#[utoipa::path(
    post,
    path = "/ingest/github",
    tag = "ingest",
    request_body(content = String, description = "A GitHub `registry_package` or `package` webhook", content_type = "application/json"),
    params(
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=` and the hex HMAC-SHA256 of the body"),
        ("X-GitHub-Event" = String, Header, description = "`registry_package`, `package` or `ping`"),
        ("X-GitHub-Delivery" = String, Header, description = "The delivery's id, the same on a redelivery"),
    ),
    responses(
        (status = 202, description = "Recorded durably", body = IngestResponse),
        (status = 400, description = "Not a GitHub package webhook, or a header is missing", body = super::ErrorBody),
        (status = 401, description = "Missing or wrong signature", body = super::ErrorBody),
        (status = 413, description = "Body over the limit", body = super::ErrorBody),
        (status = 415, description = "Not JSON", body = super::ErrorBody),
        (status = 503, description = "Storage is failing; retry", body = super::ErrorBody),
    ),
)]
pub async fn github(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Answer {
    let bytes = json_body(&app, &headers, body, &["application/json"]).await?;
    let secret = app
        .config
        .ingest
        .github_secret
        .as_deref()
        .unwrap_or(&app.tokens.ingest);
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !github::signature_matches(secret, &bytes, text("x-hub-signature-256")) {
        return Err(ApiError::unauthorized());
    }
    let event = text("x-github-event")
        .ok_or_else(|| ApiError::bad_request("the X-GitHub-Event header is missing"))?;
    let delivery = text("x-github-delivery")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| ApiError::bad_request("the X-GitHub-Delivery header is missing"))?;
    answer(
        &app,
        github::read(event, delivery, &bytes).map_err(invalid)?,
    )
    .await
}

/// `POST /ingest/cloudevents`
#[utoipa::path(
    post,
    path = "/ingest/cloudevents",
    tag = "ingest",
    request_body(content = String, description = "A CloudEvent over HTTP: binary mode (`ce-*` headers, the data as the body) or structured mode (`application/cloudevents+json`)", content_type = "application/cloudevents+json"),
    responses(
        (status = 202, description = "Recorded durably", body = IngestResponse),
        (status = 400, description = "Not a CloudEvent, or not Zot's", body = super::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::ErrorBody),
        (status = 413, description = "Body over the limit", body = super::ErrorBody),
        (status = 415, description = "Neither mode's content type", body = super::ErrorBody),
        (status = 503, description = "Storage is failing; retry", body = super::ErrorBody),
    ),
    security(("ingest_token" = []))
)]
pub async fn cloudevents(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Answer {
    if !bearer_matches(&headers, &app.tokens.ingest)
        && !basic_password_matches(&headers, &app.tokens.ingest)
    {
        return Err(ApiError::unauthorized());
    }
    let structured = content_type(&headers).as_deref() == Some("application/cloudevents+json");
    let bytes = json_body(
        &app,
        &headers,
        body,
        &["application/json", "application/cloudevents+json"],
    )
    .await?;
    let read = if structured {
        cloudevents::read_structured(&bytes)
    } else {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let Some(specversion) = text("ce-specversion") else {
            return Err(ApiError::bad_request(
                "neither a structured CloudEvent (application/cloudevents+json) nor a binary one (no ce-specversion header)",
            ));
        };
        let attributes = cloudevents::Attributes {
            specversion,
            id: text("ce-id").unwrap_or_default(),
            source: text("ce-source").unwrap_or_default(),
            kind: text("ce-type").unwrap_or_default(),
            time: text("ce-time"),
        };
        cloudevents::read_binary(&attributes, &bytes)
    }
    .map_err(invalid)?;
    answer(&app, read).await
}

/// Zot may authenticate with a username and password instead of a token:
/// any username, the ingest token as the password.
fn basic_password_matches(headers: &HeaderMap, expected: &str) -> bool {
    use base64::Engine;
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return false;
    };
    decoded
        .split_once(':')
        .is_some_and(|(_, password)| crate::secrets::same(password.as_bytes(), expected.as_bytes()))
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
