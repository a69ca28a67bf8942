//! Retention: events and deliveries older than the configured age are
//! deleted in the background, a bounded batch per transaction so that
//! pruning never holds the writer for long.

use std::collections::HashSet;

use redb::{ReadableTable, WriteTransaction};

use super::records::{StoredEvent, decode};
use super::schema::{DEDUPE, DELIVERIES, EVENT_IDS, EVENTS, WEBHOOK_DELIVERIES};
use super::{Pruned, StoreError};
use crate::event::Timestamp;
use crate::records::{Delivery, DeliveryState};

/// The creation time of a record from its ULID id (`evt_...`, `dlv_...`).
fn created_ms(id: &str) -> Option<u64> {
    let (_, ulid) = id.split_once('_')?;
    ulid::Ulid::from_string(ulid).ok().map(|u| u.timestamp_ms())
}

/// Deletes up to `batch` events and `batch` deliveries created before
/// `cutoff`, but the deliveries of the webhooks in `own` (those with a
/// retention of their own, pruned by [`prune_webhook`]). Pending deliveries
/// are kept whatever their age: they are still owed to someone.
pub fn prune(
    txn: &WriteTransaction,
    cutoff: Timestamp,
    batch: usize,
    own: &HashSet<String>,
) -> Result<Pruned, StoreError> {
    let cutoff_ms = cutoff.unix_millis().max(0) as u64;
    let mut pruned = Pruned::default();

    let old_events: Vec<(u64, StoredEvent)> = {
        let events = txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for row in events.iter()?.take(batch) {
            let (k, v) = row?;
            let stored: StoredEvent = decode("events", v.value())?;
            if created_ms(&stored.event.id).is_none_or(|ms| ms >= cutoff_ms) {
                break;
            }
            out.push((k.value(), stored));
        }
        out
    };
    {
        let mut events = txn.open_table(EVENTS)?;
        let mut ids = txn.open_table(EVENT_IDS)?;
        let mut dedupe = txn.open_table(DEDUPE)?;
        for (seq, stored) in &old_events {
            events.remove(*seq)?;
            ids.remove(stored.event.id.as_str())?;
            if let Some(key) = &stored.dedupe_key {
                dedupe.remove(key.as_str())?;
            }
        }
    }
    pruned.events = old_events.len();

    let old_deliveries: Vec<Delivery> = {
        let table = txn.open_table(DELIVERIES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            if created_ms(k.value()).is_none_or(|ms| ms >= cutoff_ms) || out.len() == batch {
                break;
            }
            let delivery: Delivery = decode("deliveries", v.value())?;
            if delivery.state != DeliveryState::Pending && !own.contains(&delivery.webhook_id) {
                out.push(delivery);
            }
        }
        out
    };
    for delivery in &old_deliveries {
        super::deliveries::delete(txn, delivery)?;
    }
    pruned.deliveries = old_deliveries.len();
    Ok(pruned)
}

/// Deletes up to `batch` finished deliveries of `webhook_id` created before
/// `cutoff`: a webhook's own retention.
pub fn prune_webhook(
    txn: &WriteTransaction,
    webhook_id: &str,
    cutoff: Timestamp,
    batch: usize,
) -> Result<usize, StoreError> {
    let cutoff_ms = cutoff.unix_millis().max(0) as u64;
    let old: Vec<Delivery> = {
        let index = txn.open_table(WEBHOOK_DELIVERIES)?;
        let table = txn.open_table(DELIVERIES)?;
        let mut out = Vec::new();
        for row in index.range((webhook_id, "")..(webhook_id, "\u{10ffff}"))? {
            let (k, _) = row?;
            let (_, id) = k.value();
            if created_ms(id).is_none_or(|ms| ms >= cutoff_ms) || out.len() == batch {
                break;
            }
            let Some(v) = table.get(id)? else { continue };
            let delivery: Delivery = decode("deliveries", v.value())?;
            if delivery.state != DeliveryState::Pending {
                out.push(delivery);
            }
        }
        out
    };
    for delivery in &old {
        super::deliveries::delete(txn, delivery)?;
    }
    Ok(old.len())
}
