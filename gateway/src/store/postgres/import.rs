//! Moving a redb store into an empty PostgreSQL database, in one
//! transaction: either all of it is there, or nothing is. Records keep their
//! ids, the log its sequence numbers, fan-out its cursor and the secrets
//! their sealing (so the same key must be given to the replicas).

use std::collections::HashSet;

use super::{Doing, PgStore, StoreError, create_delivery, put_repository, put_webhook};
use crate::records::DeliveryKind;
use crate::store::redb::Export;

/// Rows read and written per round trip.
const CHUNK: usize = 1000;

/// What an import moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub events: u64,
    pub repositories: u64,
    pub tags: u64,
    pub webhooks: u64,
    pub deliveries: u64,
    pub attempts: u64,
    pub plugins: u64,
}

impl PgStore {
    /// Copies `source` (and the installed `plugins`, name and component)
    /// into this database, which must hold no repository, webhook, event or
    /// delivery yet.
    pub async fn import(
        &self,
        source: &Export,
        plugins: &[(String, Vec<u8>)],
    ) -> Result<Imported, StoreError> {
        let mut conn = self.conn().await?;
        let txn =
            super::Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        super::lock(&txn, super::LOG_LOCK).await?;
        let held: i64 = txn
            .query_one(
                "SELECT (SELECT count(*) FROM repositories) + (SELECT count(*) FROM webhooks)
                      + (SELECT count(*) FROM events) + (SELECT count(*) FROM deliveries)",
                &[],
            )
            .await
            .doing("checking the database is empty")?
            .get(0);
        if held > 0 {
            return Err(StoreError::Conflict(format!(
                "the PostgreSQL database already holds {held} records; a store is copied only \
                 into an empty one (a new database, migrated by `callisto serve` or by this copy)"
            )));
        }
        let mut n = Imported::default();

        for repo in source.repositories()? {
            put_repository(&txn, &repo).await?;
            n.repositories += 1;
        }
        for (repo, tag, record) in source.tags()? {
            txn.execute(
                "INSERT INTO tags (repository_id, tag, record) VALUES ($1, $2, $3)",
                &[&repo, &tag, &record],
            )
            .await
            .doing("copying a tag")?;
            n.tags += 1;
        }
        for webhook in source.webhooks()? {
            put_webhook(&txn, &webhook).await?;
            n.webhooks += 1;
        }

        let mut last = 0;
        loop {
            let events = source.events(last, CHUNK)?;
            let Some((seq, _)) = events.last() else { break };
            last = *seq;
            for (seq, stored) in &events {
                super::insert_event(
                    &txn,
                    Some(*seq as i64),
                    &stored.event,
                    stored.dedupe_key.as_deref(),
                )
                .await?;
                n.events += 1;
            }
        }
        // Appends go on after the last sequence number the file used.
        txn.execute(
            "SELECT setval('events_seq', greatest($1::bigint, 1), $1::bigint > 0)",
            &[&(source.fanout_cursor()?.max(last) as i64)],
        )
        .await
        .doing("moving the log's sequence on")?;
        txn.execute(
            "UPDATE meta SET value = $1 WHERE key = 'fanout_cursor'",
            &[&source.fanout_cursor()?.to_string()],
        )
        .await
        .doing("copying the fan-out cursor")?;
        if let Some(id) = source.seal_key_id()? {
            txn.execute(
                "INSERT INTO meta (key, value) VALUES ('seal_key_id', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&id],
            )
            .await
            .doing("copying the sealing key's id")?;
        }

        // Fan-out planned one delivery per (event, webhook); a replay made
        // more, later (ids sort by creation): the first is the planned one.
        let mut planned: HashSet<(String, String)> = HashSet::new();
        let mut after = String::new();
        loop {
            let deliveries = source.deliveries(&after, CHUNK)?;
            let Some(d) = deliveries.last() else { break };
            after = d.id.clone();
            for d in &deliveries {
                let first = d.kind == DeliveryKind::Event
                    && planned.insert((d.event_id.clone(), d.webhook_id.clone()));
                create_delivery(&txn, d, first).await?;
                n.deliveries += 1;
            }
        }
        let mut after = (String::new(), 0u32);
        loop {
            let attempts = source.attempts((&after.0, after.1), CHUNK)?;
            let Some((id, number, _)) = attempts.last() else {
                break;
            };
            after = (id.clone(), *number);
            for (delivery, number, record) in &attempts {
                txn.execute(
                    "INSERT INTO attempts (delivery_id, number, record) VALUES ($1, $2, $3)",
                    &[delivery, &(*number as i32), record],
                )
                .await
                .doing("copying an attempt")?;
                n.attempts += 1;
            }
        }
        for (name, wasm) in plugins {
            super::insert_plugin(&txn, name, wasm).await?;
            n.plugins += 1;
        }
        txn.commit().await.doing("committing the copy")?;
        Ok(n)
    }
}
