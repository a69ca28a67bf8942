//! The records around the event log: repositories, their webhooks and
//! known tags, deliveries and their attempts, and the request a delivery
//! sends. Plain data shared by every layer above; how they are stored is the
//! store's business (MessagePack with field names in redb, so that a field
//! added later reads as its default from older records).

use serde::{Deserialize, Serialize};

use crate::event::{RepositoryRef, Timestamp, new_id};

/// How the host signs a request; chosen by the plugin, applied by the host
/// with the webhook's secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureScheme {
    StandardWebhooks,
    Europa,
    None,
}

/// The request a plugin formatted: always a POST to the webhook's URL.
/// Deliveries store it as it is, so every attempt sends the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub signature: SignatureScheme,
}

/// A secret as stored: encrypted. It can only be read back with the
/// `seal::Sealer` that made it, which keeps plaintext out of records by
/// type.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(String);

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealed(..)")
    }
}

impl Sealed {
    /// Wraps what a `Sealer` made (or a store read back).
    pub fn from_stored(ciphertext: String) -> Self {
        Self(ciphertext)
    }

    /// The stored form, for the `Sealer` to open.
    pub fn as_stored(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RepositoryKind {
    /// The registry sends its notifications to Callisto.
    Local,
    /// Callisto polls the registry.
    Remote,
}

impl RepositoryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RepositoryKind::Local => "local",
            RepositoryKind::Remote => "remote",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InitialSync {
    /// One event per tag found on the first poll.
    #[default]
    Notify,
    /// Learn the tags of the first poll without events.
    Silent,
}

/// How to reach a registry Callisto polls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSettings {
    pub poll_interval_secs: u64,
    #[serde(default)]
    pub initial_sync: InitialSync,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub username: Option<String>,
    /// Write-only in the API; encrypted at rest.
    #[serde(default)]
    pub password: Option<Sealed>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub exclude_tags: Vec<String>,
    #[serde(default)]
    pub max_tags: Option<u32>,
}

/// The outcome of the latest polls of a remote repository.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollStatus {
    #[serde(default)]
    pub synced: bool,
    #[serde(default)]
    pub last_poll_at: Option<Timestamp>,
    #[serde(default)]
    pub last_duration_ms: Option<u64>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub consecutive_errors: u32,
    #[serde(default)]
    pub next_poll_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    pub id: String,
    pub name: String,
    pub kind: RepositoryKind,
    /// For a local repository, narrows which registry's notifications match
    /// (the host the registry reports); for a remote one, the host polled.
    pub registry: Option<String>,
    #[serde(default)]
    pub remote: Option<RemoteSettings>,
    #[serde(default)]
    pub poll: PollStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Whether `name` is a repository path as the distribution specification
/// defines it: lowercase components of letters and digits, separated by
/// `.`, `_`, `__` or dashes, joined by `/`, 255 characters at most. Names
/// are compared as they are, so `Demo/App` is not a name (no registry
/// accepts it) rather than another spelling of `demo/app`; the admin API
/// and every ingest route apply this one rule.
pub fn check_repository_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| {
        let shown: String = name.chars().take(80).collect();
        let more = if name.chars().count() > 80 { "..." } else { "" };
        Err(format!(
            "name `{shown}{more}` is not a repository path: {why}"
        ))
    };
    if name.is_empty() || name.len() > 255 {
        return bad("it must have 1 to 255 characters");
    }
    for component in name.split('/') {
        if component.is_empty() {
            return bad("empty path component");
        }
        if !component
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return bad("use lowercase letters, digits, `.`, `_`, `-` and `/`");
        }
        let bytes = component.as_bytes();
        if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
            return bad("each component starts and ends with a letter or digit");
        }
    }
    Ok(())
}

impl Repository {
    /// Whether a poll that makes events should stay silent: the first sync
    /// of a remote repository set to `initial_sync = silent`.
    pub fn poll_is_silent(&self) -> bool {
        !self.poll.synced
            && self
                .remote
                .as_ref()
                .is_some_and(|s| s.initial_sync == InitialSync::Silent)
    }

    /// Records a successful poll at `now`: synced, and the next one due a
    /// poll interval later. The same on every store engine.
    pub fn polled(&mut self, now: Timestamp, duration_ms: u64) {
        let interval = self.remote.as_ref().map_or(60, |s| s.poll_interval_secs);
        self.poll = PollStatus {
            synced: true,
            last_poll_at: Some(now),
            last_duration_ms: Some(duration_ms),
            last_error: None,
            consecutive_errors: 0,
            next_poll_at: Some(Timestamp::from_unix_millis(
                now.unix_millis()
                    .saturating_add((interval as i64).saturating_mul(1000)),
            )),
        };
    }

    /// Records a failed poll: one more error in a row, retried at `next`.
    pub fn poll_failed(&mut self, error: String, duration_ms: u64, next: Timestamp) {
        self.poll.last_poll_at = Some(Timestamp::now());
        self.poll.last_duration_ms = Some(duration_ms);
        self.poll.last_error = Some(error);
        self.poll.consecutive_errors += 1;
        self.poll.next_poll_at = Some(next);
    }

    /// A local repository as a registry's first notification for it makes
    /// it: named, for any registry, with no settings.
    pub fn new_local(name: &str) -> Self {
        let now = Timestamp::now();
        Self {
            id: new_id("repo"),
            name: name.to_owned(),
            kind: RepositoryKind::Local,
            registry: None,
            remote: None,
            poll: PollStatus::default(),
            created_at: now,
            updated_at: now,
        }
    }

    /// The repository as its events carry it.
    pub fn reference(&self) -> RepositoryRef {
        RepositoryRef {
            id: self.id.clone(),
            name: self.name.clone(),
            registry: self.registry.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    pub repository_id: String,
    pub url: String,
    /// Write-only in the API; encrypted at rest.
    pub secret: Option<Sealed>,
    pub plugin: String,
    pub config: Vec<(String, String)>,
    pub enabled: bool,
    /// Delays between attempts, overriding the gateway's schedule.
    #[serde(default)]
    pub retry_schedule_secs: Option<Vec<u64>>,
    /// Why the gateway disabled it (a `410 Gone`), if it did.
    #[serde(default)]
    pub disabled_reason: Option<String>,
    /// Headers the operator set, sent with every attempt (names in
    /// lowercase, checked like a plugin's). One of them replaces a header
    /// of the same name from the plugin: the operator knows the receiver.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Attempts per second at most, retries and redeliveries included: a
    /// token bucket holding one second's worth, so a receiver that was
    /// down is not flooded when it comes back.
    #[serde(default)]
    pub rate_limit_per_sec: Option<u32>,
    #[serde(default)]
    pub ordering: DeliveryOrder,
    /// When its current streak of failed attempts began; a success ends
    /// the streak.
    #[serde(default)]
    pub failing_since: Option<Timestamp>,
    /// Deliveries that died since its last success.
    #[serde(default)]
    pub dead_in_a_row: u32,
    /// When the gateway disabled it (with `disabled_reason`).
    #[serde(default)]
    pub disabled_at: Option<Timestamp>,
    /// The secret before the latest rotation: attempts are signed with it
    /// too until `previous_secret_until`, so receivers switch without
    /// downtime. Encrypted at rest, never shown.
    #[serde(default)]
    pub previous_secret: Option<Sealed>,
    #[serde(default)]
    pub previous_secret_until: Option<Timestamp>,
    /// Days its finished deliveries are kept, instead of the gateway's
    /// `retention_days` (the events stay the log's).
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// It also receives Callisto's operational events (`webhook.disabled`,
    /// `delivery.dead`, `poll.failing`, `plugin.failing`).
    #[serde(default)]
    pub operational_events: bool,
    /// The client certificate it presents to receivers that ask for one
    /// (mTLS).
    #[serde(default)]
    pub client_certificate: Option<ClientCertificate>,
    /// Seconds a burst of events is gathered for before one delivery
    /// carries it: the first event's delivery waits this long, and each
    /// event within it replaces the one before (its request is sent, the
    /// earlier events are listed). `None`: every event is sent at once.
    #[serde(default)]
    pub coalesce_secs: Option<u32>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A webhook's client certificate: the PEM chain as given, its private key
/// sealed like a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCertificate {
    pub cert_pem: String,
    pub key: Sealed,
}

/// In which order a webhook's deliveries go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryOrder {
    /// Several in flight (up to the concurrency per webhook), each retried
    /// on its own schedule: a failing delivery holds up no other.
    #[default]
    Parallel,
    /// One in flight, oldest first; the next waits until it succeeds, dies
    /// or fails, retries included.
    Fifo,
}

/// What the API and the attempt records show instead of the value of a
/// custom header that carries a credential.
pub const REDACTED: &str = "<redacted>";

/// Whether a custom header's value is a credential (`authorization`,
/// `cookie`, `x-api-key`, `x-auth-token`, ...): like a secret, it is sent
/// but never shown again.
pub fn is_sensitive_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "authorization"
        || name == "cookie"
        || ["token", "secret", "key", "auth", "password", "session"]
            .iter()
            .any(|word| name.contains(word))
}

/// What one attempt says of its webhook's endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptHealth {
    pub at: Timestamp,
    pub succeeded: bool,
    /// The delivery died with this attempt (its schedule is spent).
    pub dead: bool,
    /// The receiver answered `410 Gone`.
    pub gone: bool,
}

/// When the gateway gives up on an endpoint that keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisablePolicy {
    /// Every attempt failed for this long (ms), whatever the deliveries.
    pub failing_for_ms: Option<u64>,
    /// This many deliveries died without a success between them.
    pub dead_in_a_row: Option<u32>,
}

impl Webhook {
    /// The previous secret, while its grace period lasts at `now`.
    pub fn previous_secret_at(&self, now: Timestamp) -> Option<&Sealed> {
        self.previous_secret
            .as_ref()
            .filter(|_| self.previous_secret_until.is_some_and(|until| until > now))
    }

    /// Whether an attempt changes the webhook's failing streak, so that a
    /// healthy webhook's attempts write nothing but themselves: the sender
    /// asks first, and the store applies [`Webhook::note_attempt`] to the
    /// record as it is in the attempt's transaction.
    pub fn attempt_changes(&self, h: &AttemptHealth, policy: &DisablePolicy) -> bool {
        if h.succeeded {
            return self.failing_since.is_some() || self.dead_in_a_row > 0;
        }
        h.gone || h.dead || self.failing_since.is_none() || self.disable_reason(h, policy).is_some()
    }

    /// Applies an attempt to the failing streak; returns why the webhook is
    /// now disabled, if this attempt disabled it.
    pub fn note_attempt(&mut self, h: &AttemptHealth, policy: &DisablePolicy) -> Option<String> {
        if h.succeeded {
            self.failing_since = None;
            self.dead_in_a_row = 0;
            return None;
        }
        // Judged on the streak before this attempt, which it then joins.
        let reason = self.disable_reason(h, policy);
        self.failing_since.get_or_insert(h.at);
        if h.dead {
            self.dead_in_a_row = self.dead_in_a_row.saturating_add(1);
        }
        let reason = reason?;
        if !self.enabled {
            return None;
        }
        self.enabled = false;
        self.disabled_reason = Some(format!("{reason} at {}", h.at));
        self.disabled_at = Some(h.at);
        self.updated_at = h.at;
        Some(reason)
    }

    /// Why this attempt would disable the webhook, if it would (judged on
    /// the streak as it was before the attempt).
    pub fn disable_reason(&self, h: &AttemptHealth, policy: &DisablePolicy) -> Option<String> {
        if h.gone {
            return Some("the receiver answered 410 Gone".to_owned());
        }
        let dead = self.dead_in_a_row + u32::from(h.dead);
        if let Some(limit) = policy.dead_in_a_row
            && dead >= limit
        {
            return Some(format!("{dead} deliveries died in a row"));
        }
        let since = self.failing_since.unwrap_or(h.at);
        if let Some(span) = policy.failing_for_ms
            && h.at.unix_millis().saturating_sub(since.unix_millis()) >= span as i64
        {
            return Some(format!("every attempt failed since {since}"));
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    Succeeded,
    /// Will not be attempted: the plugin failed, or the webhook is gone.
    Failed,
    /// Every attempt of the schedule failed; kept and redeliverable.
    Dead,
    /// Never sent on its own: a later event of the same burst came within
    /// the webhook's coalescing window, and the delivery made for it
    /// (`folded_into`) carries this one's event too.
    Folded,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Succeeded => "succeeded",
            DeliveryState::Failed => "failed",
            DeliveryState::Dead => "dead",
            DeliveryState::Folded => "folded",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryKind {
    /// Made by fan-out (or a replay) for an event of the log.
    Event,
    /// A Test Webhook of a saved webhook: one attempt, never retried.
    Test,
}

/// One (event, webhook) pair: the request the plugin formatted, and where
/// its attempts stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// `dlv_...`; also the `webhook-id` header of every attempt.
    pub id: String,
    pub kind: DeliveryKind,
    pub event_id: String,
    pub webhook_id: String,
    pub repository_id: String,
    pub plugin: String,
    pub state: DeliveryState,
    /// The request to send; absent when the plugin failed.
    pub request: Option<Request>,
    /// Attempts made so far.
    pub attempts: u32,
    pub next_attempt_at: Option<Timestamp>,
    /// The plugin's error, or the last attempt's.
    pub last_error: Option<String>,
    pub last_status: Option<u16>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The earlier events of a burst this delivery carries besides its own
    /// (a coalescing window), oldest first; their deliveries are `Folded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folded: Vec<String>,
    /// For a `Folded` delivery: the delivery that took its place. That one
    /// may itself have been folded into a later one, while the burst went on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded_into: Option<String>,
}

impl Delivery {
    /// A delivery of `event_id` to `webhook` with a fresh id (its
    /// `webhook-id`): pending and due now when it has a request to send,
    /// failed with `error` when it has none.
    pub fn new(
        kind: DeliveryKind,
        event_id: &str,
        webhook: &Webhook,
        request: Result<Request, String>,
        now: Timestamp,
    ) -> Self {
        let (state, request, next_attempt_at, last_error) = match request {
            Ok(request) => (DeliveryState::Pending, Some(request), Some(now), None),
            Err(error) => (DeliveryState::Failed, None, None, Some(error)),
        };
        Self {
            id: new_id("dlv"),
            kind,
            event_id: event_id.to_owned(),
            webhook_id: webhook.id.clone(),
            repository_id: webhook.repository_id.clone(),
            plugin: webhook.plugin.clone(),
            state,
            request,
            attempts: 0,
            next_attempt_at,
            last_error,
            last_status: None,
            created_at: now,
            updated_at: now,
            folded: Vec::new(),
            folded_into: None,
        }
    }
}

/// One HTTP attempt of a delivery, as sent and as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    pub started_at: Timestamp,
    pub duration_ms: u64,
    pub url: String,
    /// Every header sent, signature included. The body is the delivery's.
    pub request_headers: Vec<(String, String)>,
    pub response: Option<AttemptResponse>,
    /// Why no response, or why the response was not a success.
    pub error: Option<String>,
    pub succeeded: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Up to the recording limit (64 KiB by default).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub truncated: bool,
}

/// What the log knows of a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownTag {
    pub digest: String,
    #[serde(default)]
    pub media_type: Option<String>,
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook() -> Webhook {
        let now = Timestamp::from_unix_millis(0);
        Webhook {
            id: "wh_1".into(),
            repository_id: "repo_1".into(),
            url: "http://127.0.0.1:9/".into(),
            secret: None,
            plugin: "default".into(),
            config: vec![],
            enabled: true,
            retry_schedule_secs: None,
            disabled_reason: None,
            headers: vec![],
            rate_limit_per_sec: None,
            ordering: DeliveryOrder::Parallel,
            failing_since: None,
            dead_in_a_row: 0,
            disabled_at: None,
            previous_secret: None,
            previous_secret_until: None,
            retention_days: None,
            coalesce_secs: None,
            operational_events: false,
            client_certificate: None,
            created_at: now,
            updated_at: now,
        }
    }

    fn failed(at_ms: i64, dead: bool) -> AttemptHealth {
        AttemptHealth {
            at: Timestamp::from_unix_millis(at_ms),
            succeeded: false,
            dead,
            gone: false,
        }
    }

    #[test]
    fn a_streak_disables_after_the_span_or_the_dead_count_and_a_success_ends_it() {
        let policy = DisablePolicy {
            failing_for_ms: Some(10_000),
            dead_in_a_row: Some(3),
        };
        let mut w = webhook();
        assert!(w.attempt_changes(&failed(1_000, false), &policy));
        assert_eq!(w.note_attempt(&failed(1_000, false), &policy), None);
        // Failing already, nothing new: nothing to write.
        assert!(!w.attempt_changes(&failed(2_000, false), &policy));
        assert_eq!(w.note_attempt(&failed(2_000, true), &policy), None);
        assert_eq!(w.note_attempt(&failed(3_000, true), &policy), None);
        assert_eq!(w.dead_in_a_row, 2);
        let reason = w.note_attempt(&failed(4_000, true), &policy).unwrap();
        assert_eq!(reason, "3 deliveries died in a row");
        assert!(!w.enabled && w.disabled_at.is_some());

        let mut w = webhook();
        w.note_attempt(&failed(1_000, false), &policy);
        assert_eq!(w.note_attempt(&failed(10_999, false), &policy), None);
        assert!(w.attempt_changes(&failed(11_000, false), &policy));
        let reason = w.note_attempt(&failed(11_000, false), &policy).unwrap();
        assert!(reason.starts_with("every attempt failed since"), "{reason}");

        let mut w = webhook();
        w.note_attempt(&failed(1_000, true), &policy);
        let ok = AttemptHealth {
            succeeded: true,
            ..failed(2_000, false)
        };
        assert!(w.attempt_changes(&ok, &policy));
        w.note_attempt(&ok, &policy);
        assert_eq!((w.failing_since, w.dead_in_a_row), (None, 0));
        assert!(!w.attempt_changes(&ok, &policy));
    }
}
