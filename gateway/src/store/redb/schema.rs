//! The tables of the redb file, and its schema version.
//!
//! Keys are chosen so that every listing the gateway needs is a range scan:
//! events by sequence, a webhook's deliveries by id (ids sort by time), due
//! deliveries per webhook by due time.

use redb::{MultimapTableDefinition, TableDefinition};

/// Bump on any change to tables or to the encoding of their values, and add
/// a migration; a file of an unknown version is refused untouched.
pub const SCHEMA_VERSION: u32 = 1;

/// `schema_version` (u32 LE), `fanout_cursor` (u64 LE: the last event fanned
/// out).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The event log: sequence number → `StoredEvent`. Append-only but for
/// retention.
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Event id → sequence number.
pub const EVENT_IDS: TableDefinition<&str, u64> = TableDefinition::new("event_ids");
/// Source de-duplication key (e.g. `distribution:<event uuid>`) → sequence
/// number of the event it made. Notifications that make no event (blob
/// pushes, pulls) are not recorded: ignoring them again is harmless.
pub const DEDUPE: TableDefinition<&str, u64> = TableDefinition::new("dedupe");

/// Repository id → `Repository`.
pub const REPOSITORIES: TableDefinition<&str, &[u8]> = TableDefinition::new("repositories");
/// Repository name → repository ids (local and remote may share a name).
pub const REPOSITORY_NAMES: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("repository_names");
/// (repository id, tag) → `KnownTag`.
pub const TAGS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("tags");

/// Webhook id → `Webhook`.
pub const WEBHOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhooks");
/// Repository id → its webhook ids.
pub const REPOSITORY_WEBHOOKS: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("repository_webhooks");

/// Delivery id → `Delivery`.
pub const DELIVERIES: TableDefinition<&str, &[u8]> = TableDefinition::new("deliveries");
/// (webhook id, due Unix ms, delivery id) for every pending delivery.
pub const DUE: TableDefinition<(&str, u64, &str), ()> = TableDefinition::new("due");
/// (webhook id, delivery id): a webhook's history.
pub const WEBHOOK_DELIVERIES: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("webhook_deliveries");
/// (event id, delivery id): an event's deliveries.
pub const EVENT_DELIVERIES: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("event_deliveries");
/// (delivery id, attempt number) → `Attempt`.
pub const ATTEMPTS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("attempts");

/// A check of one record's value beyond reading it: that it decodes.
pub(crate) type Check = fn(&[u8]) -> Result<(), String>;

/// What visits the tables of the schema: creating a store, verifying one
/// and copying one (a backup) go through the same list, [`each`], so that
/// a table added to the schema is created, checked and copied alike.
pub(crate) trait Tables {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        def: TableDefinition<'static, K, V>,
        check: Option<Check>,
    ) -> Result<(), super::StoreError>;

    fn multimap<K: redb::Key + 'static, V: redb::Key + 'static>(
        &mut self,
        def: MultimapTableDefinition<'static, K, V>,
    ) -> Result<(), super::StoreError>;
}

fn decodes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(), String> {
    rmp_serde::from_slice::<T>(bytes)
        .map(drop)
        .map_err(|e| format!("does not decode ({e})"))
}

/// Every table of the schema, in the order they are created.
pub(crate) fn each(t: &mut impl Tables) -> Result<(), super::StoreError> {
    use crate::records::{Attempt, Delivery, KnownTag, Repository, Webhook};
    t.table(META, None)?;
    t.table(EVENTS, Some(decodes::<super::records::StoredEvent>))?;
    t.table(EVENT_IDS, None)?;
    t.table(DEDUPE, None)?;
    t.table(REPOSITORIES, Some(decodes::<Repository>))?;
    t.multimap(REPOSITORY_NAMES)?;
    t.table(TAGS, Some(decodes::<KnownTag>))?;
    t.table(WEBHOOKS, Some(decodes::<Webhook>))?;
    t.multimap(REPOSITORY_WEBHOOKS)?;
    t.table(DELIVERIES, Some(decodes::<Delivery>))?;
    t.table(DUE, None)?;
    t.table(WEBHOOK_DELIVERIES, None)?;
    t.table(EVENT_DELIVERIES, None)?;
    t.table(ATTEMPTS, Some(decodes::<Attempt>))?;
    Ok(())
}
