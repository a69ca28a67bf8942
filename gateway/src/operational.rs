//! Callisto's own events — a webhook disabled, a delivery dead, a remote
//! repository failing to poll, a plugin failing — sent to the webhooks
//! that subscribe to them (`operational_events`), through the same
//! pipeline as registry events: each is a delivery of each subscriber,
//! written to the store, claimed, signed, sent, retried and recorded by the
//! sender, under the subscriber's rate limit and ordering. They skip the
//! plugin stage: their body is Callisto's own JSON (below), signed with
//! Standard Webhooks, so a subscriber's receiver must take that JSON.
//!
//! Emitting is off the hot path: it happens when something went wrong, and
//! reads the webhooks once per event.

use serde::Serialize;

use crate::event::{Timestamp, new_id};
use crate::records::{Delivery, DeliveryKind, Request, SignatureScheme};
use crate::store::Store;

/// The `plugin` of an operational event's deliveries: no plugin formats
/// them, and a dead one does not make another `delivery.dead`.
pub const PLUGIN: &str = "callisto.operational";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    #[serde(rename = "webhook.disabled")]
    WebhookDisabled,
    #[serde(rename = "delivery.dead")]
    DeliveryDead,
    #[serde(rename = "poll.failing")]
    PollFailing,
    #[serde(rename = "plugin.failing")]
    PluginFailing,
}

/// An operational event as its subscribers receive it (JSON).
#[derive(Debug, Clone, Serialize)]
pub struct OperationalEvent {
    /// `opev_<ULID>`.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub occurred_at: Timestamp,
    /// What it is about, when it is about one.
    pub repository_id: Option<String>,
    pub webhook_id: Option<String>,
    pub delivery_id: Option<String>,
    pub event_id: Option<String>,
    pub plugin: Option<String>,
    /// What went wrong, in words.
    pub reason: String,
}

impl OperationalEvent {
    pub fn new(kind: Kind, reason: impl Into<String>) -> Self {
        Self {
            id: new_id("opev"),
            kind,
            occurred_at: Timestamp::now(),
            repository_id: None,
            webhook_id: None,
            delivery_id: None,
            event_id: None,
            plugin: None,
            reason: reason.into(),
        }
    }
}

/// Makes one delivery of `event` per enabled subscriber, durably; they are
/// sent like any other. Failures are logged: an operational event is never
/// worth failing what raised it.
pub async fn emit(store: &Store, event: OperationalEvent) {
    let webhooks = match store.webhooks().await {
        Ok(webhooks) => webhooks,
        Err(e) => {
            tracing::warn!("cannot send the operational event {:?}: {e}", event.kind);
            return;
        }
    };
    let body = serde_json::to_vec(&event).expect("operational events serialize");
    let now = Timestamp::now();
    for webhook in webhooks
        .iter()
        .filter(|w| w.enabled && w.operational_events)
    {
        let request = Request {
            content_type: "application/json".to_owned(),
            headers: Vec::new(),
            body: body.clone(),
            signature: SignatureScheme::StandardWebhooks,
        };
        let mut delivery = Delivery::new(DeliveryKind::Event, &event.id, webhook, Ok(request), now);
        delivery.plugin = PLUGIN.to_owned();
        if let Err(e) = store.add_deliveries(&webhook.id, vec![delivery]).await {
            tracing::warn!(
                webhook = webhook.id,
                "cannot queue an operational event: {e}"
            );
        }
    }
}

/// [`emit`] in the background.
pub fn spawn_emit(store: &Store, event: OperationalEvent) {
    let store = store.clone();
    tokio::spawn(async move { emit(&store, event).await });
}
