//! The event log: append (with source de-duplication), read in order for
//! fan-out, list for the API.

use redb::{ReadTransaction, ReadableTable, Table, WriteTransaction};

use super::records::{StoredEvent, StoredEventRef, decode, encode};
use super::schema::{DEDUPE, EVENT_IDS, EVENTS};
use super::{EventFilter, StoreError};
use crate::event::Event;

/// The log's write side, its tables opened once for a whole batch of
/// appends: opening a table is a lookup of its own, and ingest appends many
/// events per transaction.
pub struct Log<'txn> {
    events: Table<'txn, u64, &'static [u8]>,
    ids: Table<'txn, &'static str, u64>,
    dedupe: Table<'txn, &'static str, u64>,
    next_seq: u64,
}

impl<'txn> Log<'txn> {
    pub fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let events = txn.open_table(EVENTS)?;
        // Never below the fan-out cursor: after retention pruned every
        // event, numbering must go on from where fan-out stands, or new
        // events would sit behind the cursor and never be fanned out.
        let last = events.last()?.map_or(0, |(k, _)| k.value());
        let next_seq = last.max(super::fanout_cursor(txn)?) + 1;
        Ok(Self {
            events,
            ids: txn.open_table(EVENT_IDS)?,
            dedupe: txn.open_table(DEDUPE)?,
            next_seq,
        })
    }

    /// Whether a source key (e.g. the registry's event id) was recorded.
    pub fn seen(&self, dedupe_key: &str) -> Result<bool, StoreError> {
        Ok(self.dedupe.get(dedupe_key)?.is_some())
    }

    /// Leaves a short-lived mark (for what a later notification must not
    /// repeat); [`Log::take_mark`] consumes it.
    pub fn mark(&mut self, key: &str) -> Result<(), StoreError> {
        self.dedupe.insert(key, 0u64)?;
        Ok(())
    }

    /// Whether `key` was marked, removing the mark.
    pub fn take_mark(&mut self, key: &str) -> Result<bool, StoreError> {
        Ok(self.dedupe.remove(key)?.is_some())
    }

    /// Appends an event; returns its sequence number.
    pub fn append(&mut self, event: &Event, dedupe_key: Option<&str>) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        let stored = StoredEventRef { event, dedupe_key };
        self.events.insert(seq, encode(&stored).as_slice())?;
        self.ids.insert(event.id.as_str(), seq)?;
        if let Some(key) = dedupe_key {
            self.dedupe.insert(key, seq)?;
        }
        self.next_seq += 1;
        Ok(seq)
    }
}

/// Up to `limit` events after sequence number `after`, in order.
pub fn after(
    txn: &ReadTransaction,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, Event)>, StoreError> {
    let table = txn.open_table(EVENTS)?;
    let mut out = Vec::new();
    for row in table.range(after + 1..)?.take(limit) {
        let (k, v) = row?;
        let stored: StoredEvent = decode("events", v.value())?;
        out.push((k.value(), stored.event));
    }
    Ok(out)
}

/// An event and its sequence number.
pub fn by_id(txn: &ReadTransaction, id: &str) -> Result<Option<(u64, Event)>, StoreError> {
    let Some(seq) = txn.open_table(EVENT_IDS)?.get(id)?.map(|v| v.value()) else {
        return Ok(None);
    };
    let table = txn.open_table(EVENTS)?;
    match table.get(seq)? {
        Some(v) => Ok(Some((
            seq,
            decode::<StoredEvent>("events", v.value())?.event,
        ))),
        None => Ok(None),
    }
}

/// Events matching `filter`, newest first, and whether more remain.
pub fn list(txn: &ReadTransaction, filter: &EventFilter) -> Result<(Vec<Event>, bool), StoreError> {
    let table = txn.open_table(EVENTS)?;
    let upper = match &filter.before {
        Some(id) => match txn.open_table(EVENT_IDS)?.get(id.as_str())? {
            Some(seq) => seq.value(),
            None => return Err(StoreError::not_found("event", id)),
        },
        None => u64::MAX,
    };
    let mut out = Vec::new();
    let mut more = false;
    for row in table.range(..upper)?.rev() {
        let (_, v) = row?;
        let event = decode::<StoredEvent>("events", v.value())?.event;
        if filter.since.is_some_and(|since| event.occurred_at < since)
            || filter.until.is_some_and(|until| event.occurred_at > until)
            || filter.kind.is_some_and(|k| k != event.kind)
            || filter
                .repository_id
                .as_deref()
                .is_some_and(|r| r != event.repository.id)
        {
            continue;
        }
        if out.len() == filter.limit {
            more = true;
            break;
        }
        out.push(event);
    }
    Ok((out, more))
}

/// Events of `repository_id` from sequence number `from` on (a replay).
pub fn of_repository_from(
    txn: &ReadTransaction,
    repository_id: &str,
    from: u64,
) -> Result<Vec<(u64, Event)>, StoreError> {
    let table = txn.open_table(EVENTS)?;
    let mut out = Vec::new();
    for row in table.range(from..)? {
        let (k, v) = row?;
        let event = decode::<StoredEvent>("events", v.value())?.event;
        if event.repository.id == repository_id {
            out.push((k.value(), event));
        }
    }
    Ok(out)
}
