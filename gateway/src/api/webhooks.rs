//! `/api/v1/webhooks` and a repository's webhooks: create, change, test,
//! replay, history.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::App;
use super::input::{self, ApiJson, ApiPath, ApiQuery, ReplayInput, WebhookInput, WebhookPatch};
use super::views::{
    AttemptView, DeliveryView, FilteredView, Page, PageQuery, ResponseView, SentRequestView,
    WebhookView,
};
use super::{ApiError, ErrorBody};
use crate::deliver::test::{Outcome, Tester};
use crate::event::{Timestamp, new_id};
use crate::fanout;
use crate::records::{ClientCertificate, DeliveryState, Repository, Webhook};

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
            let s = crate::secrets::generate_webhook_secret();
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
            headers: input::validate_headers(input.headers.unwrap_or_default())?,
            rate_limit_per_sec: input::validate_rate_limit(input.rate_limit_per_sec)?,
            ordering: input.ordering.unwrap_or_default(),
            failing_since: None,
            dead_in_a_row: 0,
            disabled_at: None,
            previous_secret: None,
            previous_secret_until: None,
            retention_days: input::validate_retention(input.retention_days)?,
            coalesce_secs: input::validate_coalesce(input.coalesce_secs)?,
            operational_events: input.operational_events.unwrap_or(false),
            client_certificate: match &input.client_certificate {
                Some(c) => {
                    input::validate_client_certificate(c)?;
                    Some(ClientCertificate {
                        cert_pem: c.certificate.clone(),
                        key: app.sealer.seal(&c.private_key),
                    })
                }
                None => None,
            },
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
    let (_, config) = crate::host_filter::split(config).map_err(ApiError::bad_request)?;
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
    if app.store.repository(&repo_id).await?.is_none() {
        return Err(ApiError::not_found("repository", &repo_id));
    }
    let _plugin_stays = app.plugin_users.read().await;
    let new = prepare_webhook(&app, &repo_id, input).await?;
    app.store.create_webhook(new.webhook.clone()).await?;
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
    Ok(Json(
        app.store
            .webhooks_of(&repo_id)
            .await?
            .iter()
            .map(WebhookView::from)
            .collect(),
    ))
}

async fn load(app: &App, id: &str) -> Result<Webhook, ApiError> {
    app.store
        .webhook(id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook", id))
}

async fn load_repository(app: &App, id: &str) -> Result<Repository, ApiError> {
    app.store
        .repository(id)
        .await?
        .ok_or_else(|| ApiError::not_found("repository", id))
}

fn tester(app: &App) -> Tester<'_> {
    Tester {
        store: &app.store,
        plugins: &app.plugins,
        clients: &app.webhook_clients,
        sealer: &app.sealer,
        policy: &app.policy,
        body_limit: app.config.delivery.response_body_limit,
    }
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
    Ok(Json(WebhookView::from(&load(&app, &id).await?)))
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
    let _plugin_stays = app.plugin_users.read().await;
    let mut webhook = load(&app, &id).await?;
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
    let secret_replaced = patch.secret.is_some();
    match patch.secret {
        Some(Some(s)) if s == "generate" => {
            let s = crate::secrets::generate_webhook_secret();
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
    if secret_replaced {
        // Replaced outright: rotation with a grace period is
        // `POST /webhooks/{id}/rotate-secret`.
        webhook.previous_secret = None;
        webhook.previous_secret_until = None;
    }
    if let Some(enabled) = patch.enabled {
        webhook.enabled = enabled;
        if enabled && !webhook.enabled {
            webhook.disabled_reason = None;
            webhook.disabled_at = None;
            // A fresh start: the streak that disabled it is over.
            webhook.failing_since = None;
            webhook.dead_in_a_row = 0;
        }
    }
    if let Some(schedule) = patch.retry_schedule_secs {
        input::validate_schedule(&schedule)?;
        webhook.retry_schedule_secs = schedule;
    }
    if let Some(rate) = patch.rate_limit_per_sec {
        webhook.rate_limit_per_sec = input::validate_rate_limit(rate)?;
    }
    if let Some(days) = patch.retention_days {
        webhook.retention_days = input::validate_retention(days)?;
    }
    if let Some(secs) = patch.coalesce_secs {
        webhook.coalesce_secs = input::validate_coalesce(secs)?;
    }
    match &patch.client_certificate {
        Some(Some(c)) => {
            input::validate_client_certificate(c)?;
            webhook.client_certificate = Some(ClientCertificate {
                cert_pem: c.certificate.clone(),
                key: app.sealer.seal(&c.private_key),
            });
        }
        Some(None) => webhook.client_certificate = None,
        None => {}
    }
    if let Some(subscribed) = patch.operational_events {
        webhook.operational_events = subscribed;
    }
    if let Some(ordering) = patch.ordering {
        webhook.ordering = ordering;
    }
    if let Some(headers) = patch.headers {
        webhook.headers = input::patch_headers(&webhook.headers, headers)?;
    }
    webhook.updated_at = Timestamp::now();
    app.store.update_webhook(webhook.clone()).await?;
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
    app.store.delete_webhook(&id).await?;
    app.filtered.forget(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// The answer of Test Webhook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TestResult {
    /// `success` or `error`.
    pub result: String,
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
    /// Set when the webhook's filter declines the sample event: why, as its
    /// plugin said. The test was sent anyway (a test always reaches the
    /// receiver), but a real event like it would not be. The standard
    /// filter passes every `webhook.test` event; a plugin's own may not.
    pub filtered: Option<String>,
}

impl TestResult {
    fn new(outcome: &Outcome, delivery_id: Option<String>) -> Self {
        let (request, response, duration_ms, filtered) = match outcome {
            Outcome::Sent {
                request,
                sent,
                filtered,
                ..
            } => {
                let view = AttemptView::new(&sent.attempt, &request.body);
                (
                    Some(view.request),
                    view.response,
                    sent.attempt.duration_ms,
                    filtered.as_ref().map(ToString::to_string),
                )
            }
            Outcome::PluginFailed { .. } => (None, None, 0, None),
        };
        Self {
            result: if outcome.succeeded() {
                "success"
            } else {
                "error"
            }
            .to_owned(),
            status: outcome.status(),
            summary: outcome.summary(),
            request,
            response,
            duration_ms,
            delivery_id,
            filtered,
        }
    }
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
    let webhook = load(&app, &id).await?;
    let repo = load_repository(&app, &webhook.repository_id).await?;
    let secret = webhook
        .secret
        .as_ref()
        .map(|s| app.sealer.open(s))
        .transpose()
        .map_err(|e| ApiError::conflict(e.to_string()))?;
    let (outcome, delivery_id) = tester(&app)
        .run_saved(&repo, &webhook, secret.as_deref())
        .await?;
    Ok(Json(TestResult::new(&outcome, Some(delivery_id))))
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
    let repo = load_repository(&app, &repo_id).await?;
    let new = prepare_webhook(&app, &repo_id, input).await?;
    let outcome = tester(&app)
        .run(&repo, &new.webhook, new.secret.as_deref(), &new_id("dlv"))
        .await?;
    Ok(Json(TestResult::new(&outcome, None)))
}

/// What a replay did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplayResult {
    /// Events of the repository from `since` on.
    pub events: usize,
    /// New deliveries (pending, or failed when the plugin failed).
    pub deliveries: Vec<String>,
    /// Events the webhook's filter declined.
    pub filtered: usize,
}

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
    let webhook = load(&app, &id).await?;
    let replayed = fanout::replay(
        &app.store,
        &app.plugins,
        &app.metrics,
        &app.filtered,
        webhook,
        &input.since,
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayResult {
            events: replayed.events,
            deliveries: replayed.deliveries,
            filtered: replayed.filtered,
        }),
    ))
}

/// `POST /api/v1/webhooks/{id}/retry`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryInput {
    /// Deliveries made at or after this RFC 3339 time.
    pub since: String,
    /// Only count what would be sent again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// What a bulk retry did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RetryResult {
    /// Failed or dead deliveries made pending again (or, in a dry run,
    /// that would be).
    pub redelivered: usize,
    pub dry_run: bool,
}

fn parse_since(since: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse_rfc3339(since)
        .map_err(|e| ApiError::bad_request(format!("since `{since}` is not an RFC 3339 time: {e}")))
}

/// Send again every failed or dead delivery of the webhook made since a
/// time, keeping their ids (receivers de-duplicate on `webhook-id`).
/// Deliveries whose plugin failed have no request to send: replay their
/// events instead.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/retry", tag = "deliveries",
    params(("id" = String, Path)), request_body = RetryInput,
    responses((status = 202, body = RetryResult), (status = 200, body = RetryResult, description = "A dry run"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn retry(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<RetryInput>,
) -> Result<(StatusCode, Json<RetryResult>), ApiError> {
    let since = parse_since(&input.since)?;
    let redelivered = app.store.retry_failed(&id, since, input.dry_run).await?;
    let status = if input.dry_run {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        Json(RetryResult {
            redelivered,
            dry_run: input.dry_run,
        }),
    ))
}

/// `POST /api/v1/webhooks/{id}/rotate-secret`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateInput {
    /// The new secret, or `"generate"` (the default) for a new `whsec_`
    /// secret that the answer shows once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// How long attempts carry the old secret's signature too (default
    /// 86400, a day; at most 30 days; 0 for none).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 2592000)]
    pub grace_secs: Option<u64>,
}

/// Longest grace period of a secret rotation.
pub const MAX_GRACE_SECS: u64 = 30 * 86_400;

/// Rotate the webhook's secret. Until the grace period ends, every attempt
/// carries two Standard Webhooks signatures, with the new secret and the
/// old one (`webhook-signature: v1,<new> v1,<old>`), so receivers switch
/// without downtime. A rotation during another's grace period drops the
/// oldest secret.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/rotate-secret", tag = "webhooks",
    params(("id" = String, Path)), request_body = RotateInput,
    responses((status = 200, body = WebhookView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn rotate_secret(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<RotateInput>,
) -> Result<Json<WebhookView>, ApiError> {
    let grace = input.grace_secs.unwrap_or(86_400);
    if grace > MAX_GRACE_SECS {
        return Err(ApiError::bad_request(format!(
            "grace_secs: {grace} is over {MAX_GRACE_SECS} (30 days)"
        )));
    }
    let mut webhook = load(&app, &id).await?;
    let (secret, generated) = match input.secret.as_deref() {
        None | Some("generate") => {
            let s = crate::secrets::generate_webhook_secret();
            (s.clone(), Some(s))
        }
        Some(s) => {
            input::validate_secret(s)?;
            (s.to_owned(), None)
        }
    };
    let now = Timestamp::now();
    let old = webhook.secret.replace(app.sealer.seal(&secret));
    (webhook.previous_secret, webhook.previous_secret_until) = match old {
        Some(old) if grace > 0 => (
            Some(old),
            Some(Timestamp::from_unix_millis(
                now.unix_millis() + (grace as i64) * 1000,
            )),
        ),
        _ => (None, None),
    };
    webhook.updated_at = now;
    app.store.update_webhook(webhook.clone()).await?;
    Ok(Json(WebhookView {
        secret: generated,
        ..WebhookView::from(&webhook)
    }))
}

/// `POST /api/v1/webhooks/{id}/enable`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnableInput {
    /// Also send again what failed or died since the webhook started
    /// failing (a bulk retry from `failing_since`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redeliver: bool,
}

/// What enabling a webhook did, and what it offers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnableResult {
    pub webhook: WebhookView,
    /// When the failing streak that disabled it began, if one did.
    #[schema(value_type = Option<String>)]
    pub failing_since: Option<Timestamp>,
    /// Failed or dead deliveries since then: sent again with
    /// `"redeliver": true`, else still waiting for a bulk retry.
    pub piled_up: usize,
    /// Whether they were sent again.
    pub redelivered: bool,
}

/// Enable a webhook. Its pending deliveries resume; with `"redeliver":
/// true` the deliveries that failed or died since it began failing are sent
/// again too. Without it, the answer says how many there are.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/enable", tag = "webhooks",
    params(("id" = String, Path)), request_body = EnableInput,
    responses((status = 200, body = EnableResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn enable(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<EnableInput>,
) -> Result<Json<EnableResult>, ApiError> {
    let mut webhook = load(&app, &id).await?;
    let failing_since = webhook.failing_since.filter(|_| !webhook.enabled);
    if !webhook.enabled {
        webhook.enabled = true;
        webhook.disabled_reason = None;
        webhook.disabled_at = None;
        webhook.failing_since = None;
        webhook.dead_in_a_row = 0;
        webhook.updated_at = Timestamp::now();
        app.store.update_webhook(webhook.clone()).await?;
    }
    let piled_up = match failing_since {
        Some(since) => app.store.retry_failed(&id, since, !input.redeliver).await?,
        None => 0,
    };
    Ok(Json(EnableResult {
        webhook: WebhookView::from(&webhook),
        failing_since,
        piled_up,
        redelivered: input.redeliver && piled_up > 0,
    }))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
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
    let limit = PageQuery {
        limit: q.limit,
        before: None,
    }
    .limit();
    let (items, more) = app
        .store
        .deliveries_of_webhook(&id, q.state, q.before.as_deref(), limit)
        .await?;
    let next = more.then(|| items.last().map(|d| d.id.clone())).flatten();
    Ok(Json(Page {
        items: items.iter().map(|d| DeliveryView::new(d, None)).collect(),
        next,
    }))
}

/// The events this webhook's filter declined lately, and why: a count and
/// the latest 20, kept in the gateway's memory since it started (not in the
/// store).
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/filtered", tag = "webhooks",
    params(("id" = String, Path)),
    responses((status = 200, body = FilteredView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn filtered(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<FilteredView>, ApiError> {
    let webhook = load(&app, &id).await?;
    Ok(Json(FilteredView::new(
        &webhook.id,
        app.filtered.of(&webhook.id),
    )))
}
