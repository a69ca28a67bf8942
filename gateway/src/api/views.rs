//! What the API shows of the store's records. Secrets never appear: a view
//! says `has_secret` instead.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::event::{Event, EventType, Timestamp};
use crate::filtered::{FilteredEvent, WebhookFiltered};
use crate::plugin::{Request, SignatureScheme};
use crate::records::{
    Attempt, Delivery, DeliveryKind, DeliveryOrder, DeliveryState, InitialSync, KnownTag,
    PollStatus, Repository, RepositoryKind, Webhook,
};

/// A body as JSON can carry it: text when it is UTF-8, base64 otherwise.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BodyView {
    /// `utf8` or `base64`.
    pub encoding: String,
    pub data: String,
    pub size: usize,
}

impl BodyView {
    pub fn new(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self {
                encoding: "utf8".to_owned(),
                data: text.to_owned(),
                size: bytes.len(),
            },
            Err(_) => Self {
                encoding: "base64".to_owned(),
                data: base64::engine::general_purpose::STANDARD.encode(bytes),
                size: bytes.len(),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub repository_id: String,
    pub url: String,
    pub plugin: String,
    /// The plugin configuration, key → value.
    pub config: BTreeMap<String, String>,
    pub enabled: bool,
    /// Secrets are write-only: this says whether one is set.
    pub has_secret: bool,
    /// Only in the answer that generated it (`"secret": "generate"`), once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub retry_schedule_secs: Option<Vec<u64>>,
    /// Why the gateway disabled the webhook, if it did (e.g. `410 Gone`).
    pub disabled_reason: Option<String>,
    /// Custom headers sent with every attempt, name → value; the value of
    /// one that carries a credential (`authorization`, `x-api-key`, ...)
    /// shows as `<redacted>`.
    pub headers: BTreeMap<String, String>,
    /// Attempts per second at most, if limited.
    pub rate_limit_per_sec: Option<u32>,
    pub ordering: DeliveryOrder,
    /// When its current run of failed attempts began, if it is failing.
    #[schema(value_type = Option<String>)]
    pub failing_since: Option<Timestamp>,
    /// When the gateway disabled it, if it did.
    #[schema(value_type = Option<String>)]
    pub disabled_at: Option<Timestamp>,
    /// Until when attempts are signed with the previous secret too, after
    /// a rotation.
    #[schema(value_type = Option<String>)]
    pub previous_secret_until: Option<Timestamp>,
    /// Days its finished deliveries are kept, if not the gateway's.
    pub retention_days: Option<u32>,
    /// Seconds a burst of events is gathered into one delivery, if set.
    pub coalesce_secs: Option<u32>,
    /// Whether it also receives Callisto's operational events.
    pub operational_events: bool,
    /// The SHA-256 fingerprint (hex) of the client certificate it presents
    /// (mTLS), if it has one; the key is never shown.
    pub client_certificate_sha256: Option<String>,
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    #[schema(value_type = String)]
    pub updated_at: Timestamp,
}

impl From<&Webhook> for WebhookView {
    fn from(w: &Webhook) -> Self {
        Self {
            id: w.id.clone(),
            repository_id: w.repository_id.clone(),
            url: w.url.clone(),
            plugin: w.plugin.clone(),
            config: w.config.iter().cloned().collect(),
            enabled: w.enabled,
            has_secret: w.secret.is_some(),
            secret: None,
            retry_schedule_secs: w.retry_schedule_secs.clone(),
            disabled_reason: w.disabled_reason.clone(),
            headers: w
                .headers
                .iter()
                .map(|(name, value)| {
                    let shown = if crate::records::is_sensitive_header(name) {
                        crate::records::REDACTED.to_owned()
                    } else {
                        value.clone()
                    };
                    (name.clone(), shown)
                })
                .collect(),
            rate_limit_per_sec: w.rate_limit_per_sec,
            ordering: w.ordering,
            failing_since: w.failing_since,
            disabled_at: w.disabled_at,
            previous_secret_until: w.previous_secret.as_ref().and(w.previous_secret_until),
            retention_days: w.retention_days,
            coalesce_secs: w.coalesce_secs,
            operational_events: w.operational_events,
            client_certificate_sha256: w.client_certificate.as_ref().and_then(|c| {
                use sha2::Digest;
                let der = rustls_pemfile::certs(&mut c.cert_pem.as_bytes())
                    .next()?
                    .ok()?;
                Some(
                    sha2::Sha256::digest(der.as_ref())
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                )
            }),
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PollView {
    #[schema(value_type = Option<String>)]
    pub last_poll_at: Option<Timestamp>,
    pub last_duration_ms: Option<u64>,
    pub last_error: Option<String>,
    pub consecutive_errors: u32,
    #[schema(value_type = Option<String>)]
    pub next_poll_at: Option<Timestamp>,
    /// Whether the first sync is done.
    pub synced: bool,
    pub tags_known: usize,
}

impl PollView {
    pub fn new(p: &PollStatus, tags_known: usize) -> Self {
        Self {
            last_poll_at: p.last_poll_at,
            last_duration_ms: p.last_duration_ms,
            last_error: p.last_error.clone(),
            consecutive_errors: p.consecutive_errors,
            next_poll_at: p.next_poll_at,
            synced: p.synced,
            tags_known,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RepositoryView {
    pub id: String,
    pub name: String,
    pub kind: RepositoryKind,
    pub registry: Option<String>,
    /// Remote repositories only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_interval_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_sync: Option<InitialSync>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Credentials are write-only: this says whether a password is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_credentials: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tags: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll: Option<PollView>,
    /// Present when the request asked for them (create, read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Vec<WebhookView>>,
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    #[schema(value_type = String)]
    pub updated_at: Timestamp,
}

impl RepositoryView {
    pub fn new(r: &Repository, tags_known: usize, webhooks: Option<Vec<WebhookView>>) -> Self {
        let remote = r.remote.as_ref();
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            kind: r.kind,
            registry: r.registry.clone(),
            poll_interval_secs: remote.map(|s| s.poll_interval_secs),
            initial_sync: remote.map(|s| s.initial_sync),
            insecure: remote.map(|s| s.insecure),
            username: remote.and_then(|s| s.username.clone()),
            has_credentials: remote.map(|s| s.password.is_some()),
            tags: remote.map(|s| s.tags.clone()),
            exclude_tags: remote.map(|s| s.exclude_tags.clone()),
            max_tags: remote.and_then(|s| s.max_tags),
            poll: remote.map(|_| PollView::new(&r.poll, tags_known)),
            webhooks,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TagView {
    pub tag: String,
    pub digest: String,
    pub media_type: Option<String>,
    #[schema(value_type = String)]
    pub updated_at: Timestamp,
}

impl TagView {
    pub fn new(tag: String, k: KnownTag) -> Self {
        Self {
            tag,
            digest: k.digest,
            media_type: k.media_type,
            updated_at: k.updated_at,
        }
    }
}

/// The request a plugin formatted, as stored on the delivery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FormattedView {
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub signature: SignatureScheme,
    pub body: BodyView,
}

impl From<&Request> for FormattedView {
    fn from(r: &Request) -> Self {
        Self {
            content_type: r.content_type.clone(),
            headers: r.headers.clone(),
            signature: r.signature,
            body: BodyView::new(&r.body),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// Also the `webhook-id` header of every attempt.
    pub id: String,
    pub kind: DeliveryKind,
    pub event_id: String,
    pub webhook_id: String,
    pub repository_id: String,
    pub plugin: String,
    pub state: DeliveryState,
    pub attempts: u32,
    #[schema(value_type = Option<String>)]
    pub next_attempt_at: Option<Timestamp>,
    /// The plugin's error, or the last attempt's.
    pub last_error: Option<String>,
    pub last_status: Option<u16>,
    /// Absent when the plugin failed.
    pub request: Option<FormattedView>,
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    #[schema(value_type = String)]
    pub updated_at: Timestamp,
    /// The earlier events of the burst it carries besides `event_id`
    /// (a coalescing window), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folded: Vec<String>,
    /// For a `folded` delivery: the delivery that took its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded_into: Option<String>,
    /// Every attempt (in the single-delivery view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_log: Option<Vec<AttemptView>>,
}

impl DeliveryView {
    pub fn new(d: &Delivery, attempts: Option<Vec<AttemptView>>) -> Self {
        Self {
            id: d.id.clone(),
            kind: d.kind,
            event_id: d.event_id.clone(),
            webhook_id: d.webhook_id.clone(),
            repository_id: d.repository_id.clone(),
            plugin: d.plugin.clone(),
            state: d.state,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_error: d.last_error.clone(),
            last_status: d.last_status,
            request: d.request.as_ref().map(FormattedView::from),
            created_at: d.created_at,
            updated_at: d.updated_at,
            folded: d.folded.clone(),
            folded_into: d.folded_into.clone(),
            attempt_log: attempts,
        }
    }
}

/// An HTTP request as sent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SentRequestView {
    pub method: String,
    pub url: String,
    /// Every header sent, signature included.
    pub headers: Vec<(String, String)>,
    pub body: BodyView,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResponseView {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: BodyView,
    /// The body was longer than the recording limit.
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    pub number: u32,
    #[schema(value_type = String)]
    pub started_at: Timestamp,
    pub duration_ms: u64,
    pub succeeded: bool,
    pub request: SentRequestView,
    /// Absent when no answer came (refused, timed out).
    pub response: Option<ResponseView>,
    pub error: Option<String>,
}

impl AttemptView {
    pub fn new(a: &Attempt, body: &[u8]) -> Self {
        Self {
            number: a.number,
            started_at: a.started_at,
            duration_ms: a.duration_ms,
            succeeded: a.succeeded,
            request: SentRequestView {
                method: "POST".to_owned(),
                url: a.url.clone(),
                headers: a.request_headers.clone(),
                body: BodyView::new(body),
            },
            response: a.response.as_ref().map(|r| ResponseView {
                status: r.status,
                headers: r.headers.clone(),
                body: BodyView::new(&r.body),
                truncated: r.truncated,
            }),
            error: a.error.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventWithDeliveries {
    #[serde(flatten)]
    pub event: Event,
    pub deliveries: Vec<DeliveryView>,
}

/// A page of a list, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `before` to get the next page; absent on the last page.
    pub next: Option<String>,
}

/// Query of list routes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page (1-500, default 50).
    pub limit: Option<usize>,
    /// The cursor from the previous page's `next`.
    pub before: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(50).clamp(1, 500)
    }
}

/// What a webhook's filter declined lately, kept in this gateway's memory
/// since it started (not in the store; with several replicas, what this one
/// planned).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FilteredView {
    pub webhook_id: String,
    /// Events the webhook's filter declined since the gateway started.
    pub count: u64,
    /// The latest of them, newest first (at most 20).
    pub recent: Vec<FilteredEventView>,
}

/// One event a webhook's filter declined, and why.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FilteredEventView {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub tag: Option<String>,
    /// The webhook's plugin.
    pub plugin: String,
    /// The rule that declined it: `events`, `tags`, `exclude_tags`,
    /// `tag_regex`, `plugin` (the plugin's own rule) or `unexplained`.
    pub rule: String,
    /// What the plugin said, e.g. `tags=v*: tag `latest` matches none of the
    /// globs`; absent when it said nothing.
    pub reason: Option<String>,
    /// When fan-out ran the filter.
    #[schema(value_type = String)]
    pub filtered_at: Timestamp,
}

impl FilteredView {
    pub fn new(webhook_id: &str, filtered: WebhookFiltered) -> Self {
        Self {
            webhook_id: webhook_id.to_owned(),
            count: filtered.count,
            recent: filtered
                .recent
                .into_iter()
                .map(FilteredEventView::from)
                .collect(),
        }
    }
}

impl From<FilteredEvent> for FilteredEventView {
    fn from(e: FilteredEvent) -> Self {
        Self {
            event_id: e.event_id,
            kind: e.kind,
            tag: e.tag,
            plugin: e.plugin,
            rule: e.rule.to_owned(),
            reason: e.reason,
            filtered_at: e.at,
        }
    }
}
