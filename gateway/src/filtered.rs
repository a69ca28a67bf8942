//! The events each webhook's filter declined lately: a count and the last
//! [`KEPT`] per webhook, each with its reason, for
//! `GET /api/v1/webhooks/{id}/filtered`, `callisto webhook filtered` and
//! (as counters by plugin and rule) `/metrics`. Fan-out records; the API
//! reads.
//!
//! Kept in memory, not in the store, on purpose. A declined event makes no
//! delivery; recording it durably would add a write to fan-out's path for
//! every event a webhook does not want (for a webhook that keeps `v*` tags,
//! most of them), to answer a question about recent behaviour: "why did my
//! webhook not fire?". What a restart loses is that recent history; the
//! event log still holds every event, and a replay (or `callisto plugin
//! run` on the event) shows again what the filter says. With several
//! replicas, each shows what it planned itself. Memory is bounded by the
//! number of webhooks: [`KEPT`] entries each, and a webhook's entries go
//! when it is deleted.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::event::{EventType, Timestamp};

/// Filtered events kept per webhook.
pub const KEPT: usize = 20;

/// One event a webhook's filter declined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilteredEvent {
    pub event_id: String,
    pub kind: EventType,
    pub tag: Option<String>,
    /// The webhook's plugin when it declined.
    pub plugin: String,
    /// `events`, `tags`, `exclude_tags`, `tag_regex`, `plugin` (the
    /// plugin's own rule) or `unexplained`.
    pub rule: &'static str,
    /// What the plugin said, when it said something.
    pub reason: Option<String>,
    /// When fan-out ran the filter.
    pub at: Timestamp,
}

/// What a webhook's filter declined since this process started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookFiltered {
    pub count: u64,
    /// Newest first, at most [`KEPT`].
    pub recent: Vec<FilteredEvent>,
}

/// Every webhook's [`WebhookFiltered`], shared by fan-out and the API.
#[derive(Debug, Default)]
pub struct FilteredEvents {
    webhooks: Mutex<HashMap<String, Ring>>,
}

#[derive(Debug, Default)]
struct Ring {
    count: u64,
    recent: VecDeque<FilteredEvent>,
}

impl FilteredEvents {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&self, webhook_id: &str, event: FilteredEvent) {
        let mut webhooks = self.webhooks.lock().unwrap();
        let ring = match webhooks.get_mut(webhook_id) {
            Some(ring) => ring,
            None => webhooks.entry(webhook_id.to_owned()).or_default(),
        };
        ring.count += 1;
        if ring.recent.len() == KEPT {
            ring.recent.pop_front();
        }
        ring.recent.push_back(event);
    }

    /// What `webhook_id`'s filter declined; empty for a webhook that
    /// declined nothing (or that this process never planned for).
    pub fn of(&self, webhook_id: &str) -> WebhookFiltered {
        let webhooks = self.webhooks.lock().unwrap();
        match webhooks.get(webhook_id) {
            Some(ring) => WebhookFiltered {
                count: ring.count,
                recent: ring.recent.iter().rev().cloned().collect(),
            },
            None => WebhookFiltered::default(),
        }
    }

    /// Drops a deleted webhook's entries.
    pub fn forget(&self, webhook_id: &str) {
        self.webhooks.lock().unwrap().remove(webhook_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filtered(n: usize) -> FilteredEvent {
        FilteredEvent {
            event_id: format!("evt_{n}"),
            kind: EventType::ImagePushed,
            tag: Some(format!("x{n}")),
            plugin: "default".into(),
            rule: "tags",
            reason: Some(format!("tags=v*: tag `x{n}` matches none of the globs")),
            at: Timestamp::now(),
        }
    }

    #[test]
    fn keeps_a_count_and_the_newest_per_webhook() {
        let log = FilteredEvents::new();
        for n in 0..KEPT + 5 {
            log.record("wh_a", filtered(n));
        }
        log.record("wh_b", filtered(100));
        let a = log.of("wh_a");
        assert_eq!(a.count, (KEPT + 5) as u64);
        assert_eq!(a.recent.len(), KEPT);
        assert_eq!(a.recent[0].event_id, format!("evt_{}", KEPT + 4));
        assert_eq!(a.recent[KEPT - 1].event_id, "evt_5");
        assert_eq!(log.of("wh_b").count, 1);
        assert_eq!(log.of("wh_none"), WebhookFiltered::default());
        log.forget("wh_a");
        assert_eq!(log.of("wh_a").count, 0);
    }
}
