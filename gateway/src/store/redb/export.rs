//! Reading a whole redb store, a chunk at a time, for moving it into
//! PostgreSQL (`callisto store copy`). Read-only, from a file no gateway
//! has open: one read transaction sees one consistent state.

use std::path::Path;

use redb::{ReadTransaction, ReadableDatabase, ReadableTable};

use super::schema::{ATTEMPTS, DELIVERIES, EVENTS, REPOSITORIES, TAGS, WEBHOOKS};
use super::{MetaRead, StoreError};
use crate::records::{Delivery, Repository, Webhook};
use crate::store::records::{StoredEvent, decode};

pub struct Export {
    txn: ReadTransaction,
}

impl Export {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = super::open_read_only(path)?;
        Ok(Self {
            txn: db.begin_read()?,
        })
    }

    pub fn fanout_cursor(&self) -> Result<u64, StoreError> {
        self.txn.meta_u64("fanout_cursor")
    }

    pub fn seal_key_id(&self) -> Result<Option<String>, StoreError> {
        super::api::meta_text(&self.txn, super::api::SEAL_KEY_ID)
    }

    /// Up to `n` events after sequence number `after`, in order.
    pub fn events(&self, after: u64, n: usize) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        let table = self.txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for row in table.range(after.saturating_add(1)..)?.take(n) {
            let (seq, bytes) = row?;
            out.push((seq.value(), decode("events", bytes.value())?));
        }
        Ok(out)
    }

    pub fn repositories(&self) -> Result<Vec<Repository>, StoreError> {
        let table = self.txn.open_table(REPOSITORIES)?;
        table
            .iter()?
            .map(|row| decode("repositories", row?.1.value()))
            .collect()
    }

    /// Every known tag: (repository id, tag, encoded record).
    pub fn tags(&self) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
        let table = self.txn.open_table(TAGS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            let (repo, tag) = key.value();
            out.push((repo.to_owned(), tag.to_owned(), value.value().to_vec()));
        }
        Ok(out)
    }

    pub fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        let table = self.txn.open_table(WEBHOOKS)?;
        table
            .iter()?
            .map(|row| decode("webhooks", row?.1.value()))
            .collect()
    }

    /// Up to `n` deliveries with ids after `after`, by id (creation order).
    pub fn deliveries(&self, after: &str, n: usize) -> Result<Vec<Delivery>, StoreError> {
        let table = self.txn.open_table(DELIVERIES)?;
        let mut out = Vec::new();
        for row in table.range(after..)? {
            let (id, bytes) = row?;
            if id.value() == after {
                continue;
            }
            out.push(decode("deliveries", bytes.value())?);
            if out.len() == n {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `n` attempts after (delivery id, number): (delivery id,
    /// number, encoded record).
    pub fn attempts(
        &self,
        after: (&str, u32),
        n: usize,
    ) -> Result<Vec<(String, u32, Vec<u8>)>, StoreError> {
        let table = self.txn.open_table(ATTEMPTS)?;
        let mut out = Vec::new();
        for row in table.range(after..)? {
            let (key, bytes) = row?;
            let (delivery, number) = key.value();
            if (delivery, number) == after {
                continue;
            }
            out.push((delivery.to_owned(), number, bytes.value().to_vec()));
            if out.len() == n {
                break;
            }
        }
        Ok(out)
    }
}
