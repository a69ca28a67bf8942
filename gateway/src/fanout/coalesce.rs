//! Coalescing windows: a webhook with `coalesce_secs` gets one delivery
//! per burst of events instead of one per event.
//!
//! The plugin world formats one event per call, so a burst is folded on
//! the host's side, in the store, where it survives a crash: the first
//! event's delivery is made due a window later; each later event of the
//! burst gets its own delivery (as every event does), due at the same
//! moment, which takes the earlier one's place. The earlier one becomes
//! `Folded` and is never sent; the newest carries the ids of the events
//! it replaced in its record and in the `callisto-folded-events` header.
//! What is sent is therefore the newest state, formatted by the plugin:
//! what a deploy bot or a chat channel wants after a CI job pushed five
//! tags.
//!
//! The window starts with the burst's first event and does not slide: a
//! steady stream still gets one delivery per window.

use std::collections::HashMap;
use std::time::Duration;

use crate::event::Timestamp;
use crate::records::{Delivery, DeliveryKind, DeliveryState};
use crate::store::{Fold, Gathering};

/// The header listing the events a delivery carries besides its own,
/// oldest first, comma-separated.
pub const HEADER: &str = "callisto-folded-events";

/// Events one delivery carries at most, its own included; the next event
/// starts a new burst. Keeps the header and the record bounded.
pub const MAX_EVENTS: usize = 100;

/// A gathering delivery due sooner than this is left to the sender: the
/// fold is committed well before the sender could claim it.
pub const MARGIN: Duration = Duration::from_secs(2);

/// Folds the deliveries of one fan-out batch (in event order) for the
/// webhooks with a window (`windows`, seconds by webhook id). `open` is
/// each such webhook's gathering delivery as the store has it. Returns the
/// stored deliveries to fold; those of the batch itself are folded here.
pub fn fold(
    deliveries: &mut [Delivery],
    windows: &HashMap<String, u32>,
    mut open: HashMap<String, Gathering>,
    now: Timestamp,
) -> Vec<Fold> {
    let mut folds = Vec::new();
    // The batch's own gathering delivery of each webhook, by index.
    let mut gathering: HashMap<String, usize> = HashMap::new();
    let soonest = later(now, MARGIN);
    for i in 0..deliveries.len() {
        let d = &deliveries[i];
        let Some(&secs) = windows.get(&d.webhook_id) else {
            continue;
        };
        if d.state != DeliveryState::Pending || d.kind != DeliveryKind::Event {
            continue;
        }
        let webhook = d.webhook_id.clone();
        let prior = match gathering.get(&webhook) {
            Some(&j) => Some((Some(j), gathering_of(&deliveries[j]))),
            None => open.remove(&webhook).map(|g| (None, g)),
        };
        let prior = prior.filter(|(_, g)| g.due > soonest && g.folded.len() + 1 < MAX_EVENTS);
        match prior {
            Some((j, g)) => {
                let into = deliveries[i].id.clone();
                match j {
                    Some(j) => {
                        let earlier = &mut deliveries[j];
                        earlier.state = DeliveryState::Folded;
                        earlier.folded_into = Some(into);
                        earlier.next_attempt_at = None;
                    }
                    None => folds.push(Fold {
                        delivery_id: g.delivery_id,
                        into,
                    }),
                }
                let mut folded = g.folded;
                folded.push(g.event_id);
                carry(&mut deliveries[i], folded, g.due);
            }
            None => {
                deliveries[i].next_attempt_at =
                    Some(later(now, Duration::from_secs(u64::from(secs))));
            }
        }
        gathering.insert(webhook, i);
    }
    folds
}

fn later(t: Timestamp, by: Duration) -> Timestamp {
    Timestamp::from_unix_nanos(t.unix_nanos() + by.as_nanos() as i128)
}

fn gathering_of(d: &Delivery) -> Gathering {
    Gathering {
        delivery_id: d.id.clone(),
        event_id: d.event_id.clone(),
        folded: d.folded.clone(),
        due: d.next_attempt_at.unwrap_or(d.created_at),
    }
}

/// Makes `d` carry the `folded` events, due when the burst's window ends.
fn carry(d: &mut Delivery, folded: Vec<String>, due: Timestamp) {
    if let Some(request) = d.request.as_mut() {
        request.headers.retain(|(name, _)| name != HEADER);
        request.headers.push((HEADER.to_owned(), folded.join(",")));
    }
    d.folded = folded;
    d.next_attempt_at = Some(due);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Request, SignatureScheme};

    fn delivery(webhook: &str, event: &str) -> Delivery {
        let now = Timestamp::from_unix_millis(1_000_000);
        Delivery {
            id: format!("dlv_{event}_{webhook}"),
            kind: DeliveryKind::Event,
            event_id: event.into(),
            webhook_id: webhook.into(),
            repository_id: "repo_1".into(),
            plugin: "default".into(),
            state: DeliveryState::Pending,
            request: Some(Request {
                content_type: "application/json".into(),
                headers: vec![],
                body: event.as_bytes().to_vec(),
                signature: SignatureScheme::StandardWebhooks,
            }),
            attempts: 0,
            next_attempt_at: Some(now),
            last_error: None,
            last_status: None,
            created_at: now,
            updated_at: now,
            folded: vec![],
            folded_into: None,
        }
    }

    fn header(d: &Delivery) -> Option<&str> {
        d.request
            .as_ref()?
            .headers
            .iter()
            .find(|(n, _)| n == HEADER)
            .map(|(_, v)| v.as_str())
    }

    const NOW: i64 = 1_000_000;

    #[test]
    fn a_burst_in_one_batch_leaves_one_delivery_due_a_window_after_its_first_event() {
        let mut ds = vec![
            delivery("wh_a", "evt_1"),
            delivery("wh_b", "evt_1"),
            delivery("wh_a", "evt_2"),
            delivery("wh_a", "evt_3"),
        ];
        let windows = HashMap::from([("wh_a".to_owned(), 30)]);
        let now = Timestamp::from_unix_millis(NOW);
        let folds = fold(&mut ds, &windows, HashMap::new(), now);
        assert!(folds.is_empty(), "nothing stored to fold");
        let due = Timestamp::from_unix_millis(NOW + 30_000);
        assert_eq!(ds[0].state, DeliveryState::Folded);
        assert_eq!(ds[0].folded_into.as_deref(), Some("dlv_evt_2_wh_a"));
        assert_eq!(ds[2].state, DeliveryState::Folded);
        assert_eq!(ds[2].folded_into.as_deref(), Some("dlv_evt_3_wh_a"));
        assert_eq!(ds[3].state, DeliveryState::Pending);
        assert_eq!(ds[3].next_attempt_at, Some(due));
        assert_eq!(ds[3].folded, ["evt_1", "evt_2"]);
        assert_eq!(header(&ds[3]), Some("evt_1,evt_2"));
        // A webhook without a window is untouched.
        assert_eq!(ds[1].state, DeliveryState::Pending);
        assert_eq!(ds[1].next_attempt_at, Some(now));
        assert_eq!(header(&ds[1]), None);
    }

    #[test]
    fn a_stored_gathering_delivery_is_folded_through_the_store() {
        let mut ds = vec![delivery("wh_a", "evt_9")];
        let windows = HashMap::from([("wh_a".to_owned(), 30)]);
        let due = Timestamp::from_unix_millis(NOW + 20_000);
        let open = HashMap::from([(
            "wh_a".to_owned(),
            Gathering {
                delivery_id: "dlv_old".into(),
                event_id: "evt_8".into(),
                folded: vec!["evt_7".into()],
                due,
            },
        )]);
        let folds = fold(&mut ds, &windows, open, Timestamp::from_unix_millis(NOW));
        assert_eq!(
            folds,
            [Fold {
                delivery_id: "dlv_old".into(),
                into: "dlv_evt_9_wh_a".into()
            }]
        );
        assert_eq!(
            ds[0].next_attempt_at,
            Some(due),
            "the window does not slide"
        );
        assert_eq!(ds[0].folded, ["evt_7", "evt_8"]);
    }

    #[test]
    fn a_burst_about_to_be_sent_or_full_is_not_folded_into() {
        let windows = HashMap::from([("wh_a".to_owned(), 30)]);
        let now = Timestamp::from_unix_millis(NOW);
        for (due_in_ms, folded) in [(1_000, 0), (20_000, MAX_EVENTS - 1)] {
            let mut ds = vec![delivery("wh_a", "evt_9")];
            let open = HashMap::from([(
                "wh_a".to_owned(),
                Gathering {
                    delivery_id: "dlv_old".into(),
                    event_id: "evt_8".into(),
                    folded: (0..folded).map(|i| format!("evt_{i}")).collect(),
                    due: Timestamp::from_unix_millis(NOW + due_in_ms),
                },
            )]);
            assert!(fold(&mut ds, &windows, open, now).is_empty());
            assert_eq!(
                ds[0].next_attempt_at,
                Some(Timestamp::from_unix_millis(NOW + 30_000)),
                "a new burst"
            );
            assert!(ds[0].folded.is_empty());
        }
    }

    #[test]
    fn failed_deliveries_are_neither_folded_nor_folded_into() {
        let mut ds = vec![delivery("wh_a", "evt_1"), delivery("wh_a", "evt_2")];
        ds[1].state = DeliveryState::Failed;
        ds[1].request = None;
        ds[1].next_attempt_at = None;
        let windows = HashMap::from([("wh_a".to_owned(), 30)]);
        fold(
            &mut ds,
            &windows,
            HashMap::new(),
            Timestamp::from_unix_millis(NOW),
        );
        assert_eq!(ds[0].state, DeliveryState::Pending);
        assert_eq!(ds[1].state, DeliveryState::Failed);
    }
}
