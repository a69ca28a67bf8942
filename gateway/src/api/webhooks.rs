//! `/api/v1/webhooks` and a repository's webhooks: create, change, test,
//! replay, history.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::input::{self, ApiJson, ApiPath, ApiQuery, ReplayInput, WebhookInput, WebhookPatch};
use super::views::{
    AttemptView, DeliveryView, Page, PageQuery, ResponseView, SentRequestView, WebhookView,
};
use super::{ApiError, ErrorBody};
use crate::deliver::attempt::{self, Outbound};
use crate::deliver::signature;
use crate::event::{Event, EventType, RepositoryRef, Source, Timestamp, new_id};
use crate::fanout;
use crate::plugin::{EventInput, Runner, WebhookInput as PluginWebhook};
use crate::server::App;
use crate::store::{
    self, Delivery, DeliveryKind, DeliveryState, Next, Reader, Repository, RepositoryKind,
    StoreError, Webhook,
};

/// A validated webhook, its secret in clear (to test it before it is
/// saved), and the secret to show once if it was generated.
pub struct NewWebhook {
    pub webhook: Webhook,
    pub secret: Option<String>,
    pub generated_secret: Option<String>,
}

impl NewWebhook {
    pub fn view(&self) -> WebhookView {
        WebhookView {
            secret: self.generated_secret.clone(),
            ..WebhookView::from(&self.webhook)
        }
    }
}

/// Checks a webhook as the form's "Add Notification" would: URL, plugin,
/// the plugin's verdict on the configuration, the schedule, the secret.
pub async fn prepare_webhook(
    app: &App,
    repository_id: &str,
    input: WebhookInput,
) -> Result<NewWebhook, ApiError> {
    let url = input::validate_url(&input.url)?;
    let plugin = input.plugin.unwrap_or_else(|| "default".to_owned());
    let config = input::config_pairs(input.config)?;
    validate_plugin_config(app, &plugin, &config).await?;
    input::validate_schedule(&input.retry_schedule_secs)?;
    let (secret, generated_secret) = match input.secret.as_deref() {
        Some("generate") => {
            let s = signature::generate_secret();
            (Some(s.clone()), Some(s))
        }
        Some(s) => {
            input::validate_secret(s)?;
            (Some(s.to_owned()), None)
        }
        None => (None, None),
    };
    let now = Timestamp::now();
    Ok(NewWebhook {
        webhook: Webhook {
            id: new_id("wh"),
            repository_id: repository_id.to_owned(),
            url,
            secret: secret.as_deref().map(|s| app.sealer.seal(s)),
            plugin,
            config,
            enabled: input.enabled.unwrap_or(true),
            retry_schedule_secs: input.retry_schedule_secs,
            disabled_reason: None,
            created_at: now,
            updated_at: now,
        },
        secret,
        generated_secret,
    })
}

/// The plugin must exist and accept the configuration; its own message is
/// the answer's.
async fn validate_plugin_config(
    app: &App,
    name: &str,
    config: &[(String, String)],
) -> Result<(), ApiError> {
    let plugin = app.plugins.get(name).ok_or_else(|| {
        let known: Vec<String> = app
            .plugins
            .list()
            .iter()
            .map(|p| p.name().to_owned())
            .collect();
        ApiError::bad_request(format!(
            "plugin `{name}` is not installed (installed: {})",
            known.join(", ")
        ))
    })?;
    let config = config.to_vec();
    tokio::task::spawn_blocking(move || plugin.validate_config(&config))
        .await
        .map_err(|e| ApiError::internal(format!("validating the configuration: {e}")))??;
    Ok(())
}

/// Add a webhook to a repository.
#[utoipa::path(post, path = "/api/v1/repositories/{id}/webhooks", tag = "webhooks",
    params(("id" = String, Path, description = "Repository id")), request_body = WebhookInput,
    responses((status = 201, body = WebhookView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn create(
    State(app): State<Arc<App>>,
    ApiPath(repo_id): ApiPath<String>,
    ApiJson(input): ApiJson<WebhookInput>,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
    if app.store.read()?.repository(&repo_id)?.is_none() {
        return Err(ApiError::not_found("repository", &repo_id));
    }
    let new = prepare_webhook(&app, &repo_id, input).await?;
    let stored = new.webhook.clone();
    app.store
        .write(move |txn| {
            if txn.repository(&stored.repository_id)?.is_none() {
                return Err(StoreError::not_found("repository", &stored.repository_id));
            }
            store::repos::put_webhook(txn, &stored)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(new.view())))
}

/// A repository's webhooks.
#[utoipa::path(get, path = "/api/v1/repositories/{id}/webhooks", tag = "webhooks",
    params(("id" = String, Path, description = "Repository id")),
    responses((status = 200, body = Vec<WebhookView>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    ApiPath(repo_id): ApiPath<String>,
) -> Result<Json<Vec<WebhookView>>, ApiError> {
    let txn = app.store.read()?;
    if txn.repository(&repo_id)?.is_none() {
        return Err(ApiError::not_found("repository", &repo_id));
    }
    Ok(Json(
        txn.webhooks_of(&repo_id)?
            .iter()
            .map(WebhookView::from)
            .collect(),
    ))
}

fn load(app: &App, id: &str) -> Result<Webhook, ApiError> {
    app.store
        .read()?
        .webhook(id)?
        .ok_or_else(|| ApiError::not_found("webhook", id))
}

/// One webhook.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path)),
    responses((status = 200, body = WebhookView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WebhookView>, ApiError> {
    Ok(Json(WebhookView::from(&load(&app, &id)?)))
}

/// Change a webhook. Enabling a webhook resumes its pending deliveries.
#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path)), request_body = WebhookPatch,
    responses((status = 200, body = WebhookView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn patch(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<WebhookPatch>,
) -> Result<Json<WebhookView>, ApiError> {
    let mut webhook = load(&app, &id)?;
    let was_enabled = webhook.enabled;
    if let Some(url) = &patch.url {
        webhook.url = input::validate_url(url)?;
    }
    if let Some(plugin) = patch.plugin {
        webhook.plugin = plugin;
    }
    if let Some(config) = patch.config {
        webhook.config = input::config_pairs(Some(config))?;
    }
    validate_plugin_config(&app, &webhook.plugin, &webhook.config).await?;
    let mut generated = None;
    match patch.secret {
        Some(Some(s)) if s == "generate" => {
            let s = signature::generate_secret();
            webhook.secret = Some(app.sealer.seal(&s));
            generated = Some(s);
        }
        Some(Some(s)) => {
            input::validate_secret(&s)?;
            webhook.secret = Some(app.sealer.seal(&s));
        }
        Some(None) => webhook.secret = None,
        None => {}
    }
    if let Some(enabled) = patch.enabled {
        webhook.enabled = enabled;
        if enabled {
            webhook.disabled_reason = None;
        }
    }
    if let Some(schedule) = patch.retry_schedule_secs {
        input::validate_schedule(&schedule)?;
        webhook.retry_schedule_secs = schedule;
    }
    webhook.updated_at = Timestamp::now();
    let stored = webhook.clone();
    app.store
        .write(move |txn| {
            if txn.webhook(&stored.id)?.is_none() {
                return Err(StoreError::not_found("webhook", &stored.id));
            }
            store::repos::put_webhook(txn, &stored)
        })
        .await?;
    if webhook.enabled && !was_enabled {
        app.sender.due(&webhook.id, Timestamp::now());
    }
    Ok(Json(WebhookView {
        secret: generated,
        ..WebhookView::from(&webhook)
    }))
}

/// Delete a webhook; its pending deliveries end as `failed`.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn delete(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    app.store
        .write(move |txn| store::repos::delete_webhook(txn, &id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The answer of Test Webhook.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    /// `success` or `error`.
    pub result: &'static str,
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// `Success (200)`, `Error (500)`, `Error: connection refused`,
    /// `Error: plugin slack: ...`.
    pub summary: String,
    /// What was sent, signature included; absent when the plugin failed.
    pub request: Option<SentRequestView>,
    pub response: Option<ResponseView>,
    pub duration_ms: u64,
    /// The delivery recording this test (saved webhooks only).
    pub delivery_id: Option<String>,
}

/// A `webhook.test` event for `repo`: the newest known tag, if any, makes
/// the sample look like what the webhook will really get.
fn test_event(app: &App, repo: &Repository) -> Result<Event, ApiError> {
    let txn = app.store.read()?;
    let newest = txn
        .tags_of(&repo.id)?
        .into_iter()
        .max_by_key(|(_, k)| k.updated_at);
    let (tag, digest, media_type) = match newest {
        Some((tag, known)) => (tag, known.digest, known.media_type),
        None => (
            "latest".to_owned(),
            "sha256:0000000000000000000000000000000000000000000000000000000000000000".to_owned(),
            None,
        ),
    };
    Ok(Event {
        id: new_id("evt"),
        kind: EventType::WebhookTest,
        source: match repo.kind {
            RepositoryKind::Local => Source::Local,
            RepositoryKind::Remote => Source::Remote,
        },
        repository: RepositoryRef {
            id: repo.id.clone(),
            name: repo.name.clone(),
            registry: repo.registry.clone(),
        },
        tag: Some(tag),
        digest: Some(digest),
        previous_digest: None,
        media_type,
        size: None,
        actor: None,
        occurred_at: Timestamp::now(),
    })
}

/// Runs the plugin, the signature and the sender once, synchronously, with
/// the normal timeouts. Returns the answer and the attempt (for the history
/// of a saved webhook).
async fn run_test(
    app: &App,
    repo: &Repository,
    webhook: &Webhook,
    secret: Option<&str>,
    message_id: &str,
) -> Result<
    (
        TestResult,
        Option<(Event, store::Attempt, crate::plugin::Request)>,
    ),
    ApiError,
> {
    let event = test_event(app, repo)?;
    let plugin = app.plugins.get(&webhook.plugin).ok_or_else(|| {
        ApiError::bad_request(format!("plugin `{}` is not installed", webhook.plugin))
    })?;
    let (input, hook) = (
        EventInput::from(&event),
        PluginWebhook::new(&webhook.id, &webhook.url, &webhook.config),
    );
    let formatted = tokio::task::spawn_blocking(move || plugin.format(&input, &hook))
        .await
        .map_err(|e| ApiError::internal(format!("running the plugin: {e}")))?;
    let request = match formatted {
        Ok(request) => request,
        Err(e) => {
            return Ok((
                TestResult {
                    result: "error",
                    status: None,
                    summary: format!("Error: {e}"),
                    request: None,
                    response: None,
                    duration_ms: 0,
                    delivery_id: None,
                },
                None,
            ));
        }
    };
    let sent = attempt::send(
        &app.client,
        &app.policy,
        Outbound {
            url: &webhook.url,
            request: &request,
            secret,
            message_id,
        },
        1,
        app.config.delivery.response_body_limit,
    )
    .await;
    let view = AttemptView::new(&sent.attempt, &request.body);
    let summary = match (&sent.attempt.response, &sent.attempt.error) {
        (Some(r), _) if sent.attempt.succeeded => format!("Success ({})", r.status),
        (Some(r), _) => format!("Error ({})", r.status),
        (None, Some(e)) => format!("Error: {e}"),
        (None, None) => "Error".to_owned(),
    };
    let result = TestResult {
        result: if sent.attempt.succeeded {
            "success"
        } else {
            "error"
        },
        status: sent.status(),
        summary,
        request: Some(view.request),
        response: view.response,
        duration_ms: sent.attempt.duration_ms,
        delivery_id: None,
    };
    Ok((result, Some((event, sent.attempt, request))))
}

/// Test a saved webhook. The test appears in its history as a delivery of
/// kind `test`, never retried.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/test", tag = "webhooks",
    params(("id" = String, Path)),
    responses((status = 200, body = TestResult), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn test_saved(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TestResult>, ApiError> {
    let webhook = load(&app, &id)?;
    let repo = app
        .store
        .read()?
        .repository(&webhook.repository_id)?
        .ok_or_else(|| ApiError::not_found("repository", &webhook.repository_id))?;
    let delivery_id = new_id("dlv");
    let secret = webhook
        .secret
        .as_ref()
        .map(|s| app.sealer.open(s))
        .transpose()
        .map_err(|e| ApiError::conflict(e.to_string()))?;
    let (mut result, sent) =
        run_test(&app, &repo, &webhook, secret.as_deref(), &delivery_id).await?;
    let now = Timestamp::now();
    let mut delivery = Delivery {
        id: delivery_id.clone(),
        kind: DeliveryKind::Test,
        event_id: String::new(),
        webhook_id: webhook.id.clone(),
        repository_id: repo.id.clone(),
        plugin: webhook.plugin.clone(),
        state: DeliveryState::Failed,
        request: None,
        attempts: 0,
        next_attempt_at: None,
        last_error: Some(result.summary.clone()),
        last_status: result.status,
        created_at: now,
        updated_at: now,
    };
    let attempt = match sent {
        Some((event, attempt, request)) => {
            delivery.event_id = event.id;
            delivery.request = Some(request);
            Some(attempt)
        }
        None => None,
    };
    app.store
        .write(move |txn| {
            store::deliveries::create(txn, &delivery)?;
            if let Some(attempt) = attempt {
                let next = if attempt.succeeded {
                    Next::Succeeded
                } else {
                    Next::Failed
                };
                store::deliveries::record_attempt(txn, &delivery.id, &attempt, &next)?;
            }
            Ok(())
        })
        .await?;
    result.delivery_id = Some(delivery_id);
    Ok(Json(result))
}

/// Test a webhook before saving it (the form before "Add Notification").
/// Nothing is stored.
#[utoipa::path(post, path = "/api/v1/repositories/{id}/webhooks/test", tag = "webhooks",
    params(("id" = String, Path, description = "Repository id")), request_body = WebhookInput,
    responses((status = 200, body = TestResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn test_unsaved(
    State(app): State<Arc<App>>,
    ApiPath(repo_id): ApiPath<String>,
    ApiJson(input): ApiJson<WebhookInput>,
) -> Result<Json<TestResult>, ApiError> {
    let repo = app
        .store
        .read()?
        .repository(&repo_id)?
        .ok_or_else(|| ApiError::not_found("repository", &repo_id))?;
    let new = prepare_webhook(&app, &repo_id, input).await?;
    let (result, _) = run_test(
        &app,
        &repo,
        &new.webhook,
        new.secret.as_deref(),
        &new_id("dlv"),
    )
    .await?;
    Ok(Json(result))
}

/// What a replay did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResult {
    /// Events of the repository from `since` on.
    pub events: usize,
    /// New deliveries (pending, or failed when the plugin failed).
    pub deliveries: Vec<String>,
    /// Events the webhook's filter declined.
    pub filtered: usize,
}

/// Events a replay covers at most per request.
const MAX_REPLAY: usize = 10_000;

/// Run fan-out again for this webhook, from an event on: new deliveries
/// (new ids) for every event the webhook wants.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/replay", tag = "webhooks",
    params(("id" = String, Path)), request_body = ReplayInput,
    responses((status = 202, body = ReplayResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn replay(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<ReplayInput>,
) -> Result<(StatusCode, Json<ReplayResult>), ApiError> {
    let webhook = load(&app, &id)?;
    let txn = app.store.read()?;
    let (seq, since) = store::events::by_id(&txn, &input.since)?
        .ok_or_else(|| ApiError::not_found("event", &input.since))?;
    if since.repository.id != webhook.repository_id {
        return Err(ApiError::bad_request(format!(
            "event {} belongs to another repository than webhook {}",
            input.since, webhook.id
        )));
    }
    let events = store::events::of_repository_from(&txn, &webhook.repository_id, seq)?;
    drop(txn);
    if events.len() > MAX_REPLAY {
        return Err(ApiError::bad_request(format!(
            "{} events from {}: replay at most {MAX_REPLAY} at a time (pick a later event)",
            events.len(),
            input.since
        )));
    }
    let count = events.len();
    let (plugins, metrics, hook) = (app.plugins.clone(), app.metrics.clone(), webhook.clone());
    let deliveries = tokio::task::spawn_blocking(move || {
        let mut runner = Runner::new(1);
        events
            .iter()
            .flat_map(|(_, e)| {
                fanout::plan(
                    &plugins,
                    &mut runner,
                    &metrics,
                    e,
                    std::slice::from_ref(&hook),
                    DeliveryKind::Event,
                )
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("replaying: {e}")))?;
    let ids: Vec<String> = deliveries.iter().map(|d| d.id.clone()).collect();
    let filtered = count - deliveries.len();
    let any_pending = deliveries.iter().any(|d| d.state == DeliveryState::Pending);
    app.store
        .write(move |txn| {
            if txn.webhook(&webhook.id)?.is_none() {
                return Err(StoreError::not_found("webhook", &webhook.id));
            }
            for d in &deliveries {
                store::deliveries::create(txn, d)?;
            }
            Ok(())
        })
        .await?;
    if any_pending {
        app.sender.due(&id, Timestamp::now());
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayResult {
            events: count,
            deliveries: ids,
            filtered,
        }),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// `pending`, `succeeded`, `failed` or `dead`.
    pub state: Option<DeliveryState>,
    /// Items per page (1-500, default 50).
    pub limit: Option<usize>,
    /// The cursor from the previous page's `next`.
    pub before: Option<String>,
}

/// A webhook's deliveries, newest first.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "deliveries",
    params(("id" = String, Path), DeliveryQuery),
    responses((status = 200, body = Page<DeliveryView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn deliveries(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<Page<DeliveryView>>, ApiError> {
    let txn = app.store.read()?;
    if txn.webhook(&id)?.is_none() {
        return Err(ApiError::not_found("webhook", &id));
    }
    let limit = PageQuery {
        limit: q.limit,
        before: None,
    }
    .limit();
    let (items, more) =
        store::deliveries::list_for_webhook(&txn, &id, q.state, q.before.as_deref(), limit)?;
    let next = more.then(|| items.last().map(|d| d.id.clone())).flatten();
    Ok(Json(Page {
        items: items.iter().map(|d| DeliveryView::new(d, None)).collect(),
        next,
    }))
}
