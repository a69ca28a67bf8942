//! Deliveries, their attempts, and the index of what is due when.

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::records::{decode, encode};
use super::schema::{ATTEMPTS, DELIVERIES, DUE, EVENT_DELIVERIES, WEBHOOK_DELIVERIES};
use super::{DueDelivery, Next, StoreError};
use crate::event::Timestamp;
use crate::records::{Attempt, Delivery, DeliveryKind, DeliveryState};
use crate::store::{Fold, Gathering};

fn due_ms(t: Timestamp) -> u64 {
    t.unix_millis().max(0) as u64
}

pub fn get(txn: &ReadTransaction, id: &str) -> Result<Option<Delivery>, StoreError> {
    let table = txn.open_table(DELIVERIES)?;
    let value = table.get(id)?;
    value.map(|v| decode("deliveries", v.value())).transpose()
}

fn get_mut(txn: &WriteTransaction, id: &str) -> Result<Option<Delivery>, StoreError> {
    let table = txn.open_table(DELIVERIES)?;
    let value = table.get(id)?;
    value.map(|v| decode("deliveries", v.value())).transpose()
}

/// Stores a new delivery with its indexes; a pending one enters the due
/// index at `next_attempt_at`.
pub fn create(txn: &WriteTransaction, delivery: &Delivery) -> Result<(), StoreError> {
    txn.open_table(DELIVERIES)?
        .insert(delivery.id.as_str(), encode(delivery).as_slice())?;
    txn.open_table(WEBHOOK_DELIVERIES)?
        .insert((delivery.webhook_id.as_str(), delivery.id.as_str()), ())?;
    txn.open_table(EVENT_DELIVERIES)?
        .insert((delivery.event_id.as_str(), delivery.id.as_str()), ())?;
    if delivery.state == DeliveryState::Pending {
        let at = delivery.next_attempt_at.unwrap_or_else(Timestamp::now);
        txn.open_table(DUE)?.insert(
            (
                delivery.webhook_id.as_str(),
                due_ms(at),
                delivery.id.as_str(),
            ),
            (),
        )?;
    }
    Ok(())
}

/// Folds a gathering delivery into a later one of its burst: it leaves
/// the due index and is never sent on its own.
pub fn fold(txn: &WriteTransaction, fold: &Fold, now: Timestamp) -> Result<(), StoreError> {
    let mut delivery = get_mut(txn, &fold.delivery_id)?
        .ok_or_else(|| StoreError::not_found("delivery", &fold.delivery_id))?;
    let due = delivery.next_attempt_at;
    crate::store::apply_fold(&mut delivery, fold, now)?;
    if let Some(at) = due {
        txn.open_table(DUE)?.remove((
            delivery.webhook_id.as_str(),
            due_ms(at),
            delivery.id.as_str(),
        ))?;
    }
    txn.open_table(DELIVERIES)?
        .insert(delivery.id.as_str(), encode(&delivery).as_slice())?;
    Ok(())
}

/// Deliveries looked at, latest due first, for the one still gathering
/// a burst: it is normally the latest, unless a retry is due later.
const GATHERING_LOOKS: usize = 8;

/// The latest due delivery of `webhook_id` still gathering a burst.
pub fn gathering(
    txn: &ReadTransaction,
    webhook_id: &str,
    after: Timestamp,
) -> Result<Option<Gathering>, StoreError> {
    let due = txn.open_table(DUE)?;
    let from = due_ms(after).saturating_add(1);
    let rows = due.range((webhook_id, from, "")..=(webhook_id, u64::MAX, "\u{10ffff}"))?;
    for row in rows.rev().take(GATHERING_LOOKS) {
        let (k, _) = row?;
        let (_, _, id) = k.value();
        let Some(d) = get(txn, id)? else { continue };
        if let Some(gathering) = crate::store::gathering_of(d, after) {
            return Ok(Some(gathering));
        }
    }
    Ok(None)
}

/// Records an attempt and moves the delivery on. Returns the updated
/// delivery, or `None` if it was deleted meanwhile (retention).
pub fn record_attempt(
    txn: &WriteTransaction,
    id: &str,
    attempt: &Attempt,
    next: &Next,
) -> Result<Option<Delivery>, StoreError> {
    let Some(mut delivery) = get_mut(txn, id)? else {
        return Ok(None);
    };
    if let Some(at) = delivery.next_attempt_at {
        txn.open_table(DUE)?
            .remove((delivery.webhook_id.as_str(), due_ms(at), id))?;
    }
    crate::store::apply_attempt(&mut delivery, attempt, next);
    if let Some(at) = delivery.next_attempt_at {
        txn.open_table(DUE)?
            .insert((delivery.webhook_id.as_str(), due_ms(at), id), ())?;
    }
    txn.open_table(ATTEMPTS)?
        .insert((id, attempt.number), encode(attempt).as_slice())?;
    txn.open_table(DELIVERIES)?
        .insert(id, encode(&delivery).as_slice())?;
    Ok(Some(delivery))
}

/// Makes a delivery pending again, due now: a redelivery. It keeps its id
/// (the `webhook-id` receivers de-duplicate on) and its attempt count.
pub fn redeliver(txn: &WriteTransaction, id: &str, now: Timestamp) -> Result<Delivery, StoreError> {
    let mut delivery = get_mut(txn, id)?.ok_or_else(|| StoreError::not_found("delivery", id))?;
    if delivery.kind == DeliveryKind::Test {
        return Err(StoreError::Conflict(format!(
            "{id} records a test; test the webhook again instead"
        )));
    }
    if delivery.request.is_none() {
        return Err(StoreError::Conflict(format!(
            "delivery {id} has no request to send: its plugin failed ({}); replay the event instead",
            delivery.last_error.as_deref().unwrap_or("unknown error")
        )));
    }
    let mut due = txn.open_table(DUE)?;
    if let Some(at) = delivery.next_attempt_at {
        due.remove((delivery.webhook_id.as_str(), due_ms(at), id))?;
    }
    delivery.state = DeliveryState::Pending;
    delivery.next_attempt_at = Some(now);
    delivery.updated_at = now;
    due.insert((delivery.webhook_id.as_str(), due_ms(now), id), ())?;
    drop(due);
    txn.open_table(DELIVERIES)?
        .insert(id, encode(&delivery).as_slice())?;
    Ok(delivery)
}

/// The deliveries of `webhook_id` that a bulk retry from `since` sends
/// again: failed or dead at or after it, of an event, with a request. When
/// a delivery failed is not in its id, so this reads the webhook's whole
/// history (an operator's request, bounded by retention).
pub fn failed_since(
    index: &impl ReadableTable<(&'static str, &'static str), ()>,
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    webhook_id: &str,
    since: Timestamp,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for row in index.range((webhook_id, "")..(webhook_id, "\u{10ffff}"))? {
        let (k, _) = row?;
        let (_, id) = k.value();
        let Some(v) = table.get(id)? else { continue };
        let delivery: Delivery = decode("deliveries", v.value())?;
        if crate::store::retriable(&delivery, since) {
            out.push(id.to_owned());
        }
    }
    Ok(out)
}

/// Ends every pending delivery of a webhook as `failed` with `reason`.
pub fn cancel_pending(
    txn: &WriteTransaction,
    webhook_id: &str,
    reason: &str,
) -> Result<usize, StoreError> {
    let entries: Vec<(u64, String)> = {
        let due = txn.open_table(DUE)?;
        let mut out = Vec::new();
        for row in due.range((webhook_id, 0u64, "")..)? {
            let (k, _) = row?;
            let (wh, at, id) = k.value();
            if wh != webhook_id {
                break;
            }
            out.push((at, id.to_owned()));
        }
        out
    };
    let mut due = txn.open_table(DUE)?;
    let mut table = txn.open_table(DELIVERIES)?;
    for (at, id) in &entries {
        due.remove((webhook_id, *at, id.as_str()))?;
        let value = table.get(id.as_str())?.map(|v| v.value().to_vec());
        if let Some(bytes) = value {
            let mut delivery: Delivery = decode("deliveries", &bytes)?;
            delivery.state = DeliveryState::Failed;
            delivery.next_attempt_at = None;
            delivery.last_error = Some(reason.to_owned());
            delivery.updated_at = Timestamp::now();
            table.insert(id.as_str(), encode(&delivery).as_slice())?;
        }
    }
    Ok(entries.len())
}

/// Up to `limit` deliveries of `webhook_id` due at or before `now_ms`,
/// earliest first.
pub fn due_for(
    txn: &ReadTransaction,
    webhook_id: &str,
    now_ms: u64,
    limit: usize,
) -> Result<Vec<DueDelivery>, StoreError> {
    let due = txn.open_table(DUE)?;
    let mut out = Vec::new();
    for row in due.range((webhook_id, 0u64, "")..=(webhook_id, now_ms, "\u{10ffff}"))? {
        let (k, _) = row?;
        let (_, at, id) = k.value();
        out.push(DueDelivery {
            due_ms: at,
            id: id.to_owned(),
        });
        if out.len() == limit {
            break;
        }
    }
    Ok(out)
}

/// The pending delivery of `webhook_id` made first (ids sort by creation),
/// for FIFO ordering. The due index is keyed by due time, so this reads a
/// webhook's whole backlog; only FIFO webhooks ask, once per attempt.
pub fn oldest_pending(
    txn: &ReadTransaction,
    webhook_id: &str,
) -> Result<Option<DueDelivery>, StoreError> {
    let due = txn.open_table(DUE)?;
    let mut oldest: Option<DueDelivery> = None;
    for row in due.range((webhook_id, 0u64, "")..=(webhook_id, u64::MAX, "\u{10ffff}"))? {
        let (k, _) = row?;
        let (_, at, id) = k.value();
        if oldest.as_ref().is_none_or(|o| id < o.id.as_str()) {
            oldest = Some(DueDelivery {
                due_ms: at,
                id: id.to_owned(),
            });
        }
    }
    Ok(oldest)
}

/// Every webhook with pending deliveries, and when its earliest is due.
pub fn webhooks_due(txn: &ReadTransaction) -> Result<Vec<(String, u64)>, StoreError> {
    let due = txn.open_table(DUE)?;
    let mut out = Vec::new();
    let mut from = String::new();
    loop {
        let Some(row) = due.range((from.as_str(), 0u64, "")..)?.next() else {
            break;
        };
        let (k, _) = row?;
        let (webhook, at, _) = k.value();
        out.push((webhook.to_owned(), at));
        // Jump past this webhook's entries: ids never contain NUL.
        from = format!("{webhook}\0");
    }
    Ok(out)
}

/// How many deliveries are pending, for the `pending` gauge.
pub fn pending_count(txn: &ReadTransaction) -> Result<u64, StoreError> {
    Ok(txn.open_table(DUE)?.len()?)
}

/// A webhook's deliveries, newest first, optionally in one state, before a
/// cursor (a delivery id). Returns the page and whether more remain.
pub fn list_for_webhook(
    txn: &ReadTransaction,
    webhook_id: &str,
    state: Option<DeliveryState>,
    before: Option<&str>,
    limit: usize,
) -> Result<(Vec<Delivery>, bool), StoreError> {
    let index = txn.open_table(WEBHOOK_DELIVERIES)?;
    let table = txn.open_table(DELIVERIES)?;
    let upper = before.unwrap_or("\u{10ffff}");
    let mut out = Vec::new();
    for row in index.range((webhook_id, "")..(webhook_id, upper))?.rev() {
        let (k, _) = row?;
        let (_, id) = k.value();
        let Some(v) = table.get(id)? else { continue };
        let delivery: Delivery = decode("deliveries", v.value())?;
        if state.is_some_and(|s| s != delivery.state) {
            continue;
        }
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push(delivery);
    }
    Ok((out, false))
}

/// An event's deliveries, oldest first.
pub fn for_event(txn: &ReadTransaction, event_id: &str) -> Result<Vec<Delivery>, StoreError> {
    let index = txn.open_table(EVENT_DELIVERIES)?;
    let table = txn.open_table(DELIVERIES)?;
    let mut out = Vec::new();
    for row in index.range((event_id, "")..)? {
        let (k, _) = row?;
        let (event, id) = k.value();
        if event != event_id {
            break;
        }
        if let Some(v) = table.get(id)? {
            out.push(decode("deliveries", v.value())?);
        }
    }
    Ok(out)
}

/// A delivery's attempts, in order.
pub fn attempts(txn: &ReadTransaction, delivery_id: &str) -> Result<Vec<Attempt>, StoreError> {
    let table = txn.open_table(ATTEMPTS)?;
    let mut out = Vec::new();
    for row in table.range((delivery_id, 0u32)..=(delivery_id, u32::MAX))? {
        let (_, v) = row?;
        out.push(decode("attempts", v.value())?);
    }
    Ok(out)
}

/// Deletes a delivery with its attempts and index entries.
pub(crate) fn delete(txn: &WriteTransaction, delivery: &Delivery) -> Result<(), StoreError> {
    let id = delivery.id.as_str();
    if let Some(at) = delivery.next_attempt_at {
        txn.open_table(DUE)?
            .remove((delivery.webhook_id.as_str(), due_ms(at), id))?;
    }
    txn.open_table(WEBHOOK_DELIVERIES)?
        .remove((delivery.webhook_id.as_str(), id))?;
    txn.open_table(EVENT_DELIVERIES)?
        .remove((delivery.event_id.as_str(), id))?;
    let mut attempts = txn.open_table(ATTEMPTS)?;
    let numbers: Vec<u32> = attempts
        .range((id, 0u32)..=(id, u32::MAX))?
        .map(|r| r.map(|(k, _)| k.value().1))
        .collect::<Result<_, _>>()?;
    for n in numbers {
        attempts.remove((id, n))?;
    }
    txn.open_table(DELIVERIES)?.remove(id)?;
    Ok(())
}
