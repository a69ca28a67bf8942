//! The durable state of the gateway: the event log and every record around
//! it (repositories, webhooks, deliveries, attempts, known tags, the
//! fan-out cursor).
//!
//! The rest of the gateway speaks to it in the domain's words: append what a
//! registry reported, apply a poll, plan deliveries and move the fan-out
//! cursor, record an attempt. No engine type crosses this boundary. After
//! each commit the store announces what it committed (events appended,
//! deliveries due), and fan-out and the sender wake from that.
//!
//! The engine is one redb file. Reads go straight to redb (MVCC: they never
//! wait for writers); writes are group-committed by one writer thread (see
//! `writer`), and ingest requests are batched before that (see `ingest`).

mod announce;
mod api;
mod deliveries;
mod events;
mod ingest;
mod records;
mod repos;
mod retention;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};

pub use announce::Due;
pub use api::PlanBatch;
pub use deliveries::{DueDelivery, Next};
pub use events::EventFilter;
pub use retention::Pruned;

use crate::records::{Attempt, Delivery, KnownTag, Repository, Webhook};
use announce::Announcer;
use records::StoredEvent;

use schema::{META, SCHEMA_VERSION};
use writer::Writer;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error(
        "{path} has schema version {found}, but this callisto understands version {supported}; \
         it was left untouched (use the callisto release that wrote it, or a newer one)"
    )]
    SchemaVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("storage failed: {0}")]
    Storage(Arc<redb::Error>),
    #[error("a {table} record does not decode: {reason}")]
    Corrupt { table: &'static str, reason: String },
    #[error("a write in the same batch failed: {0}")]
    Batch(String),
    #[error("the store has stopped accepting writes")]
    WriterGone,
    #[error("the store is recovering from a storage failure (a full disk?); retry shortly")]
    Unavailable,
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
}

impl StoreError {
    /// Whether the storage itself failed (as opposed to a missing record or
    /// a conflict): the request may succeed later, the data is intact.
    pub fn is_storage(&self) -> bool {
        matches!(
            self,
            StoreError::Storage(_)
                | StoreError::Corrupt { .. }
                | StoreError::Batch(_)
                | StoreError::WriterGone
                | StoreError::Unavailable
        )
    }

    pub(crate) fn not_found(kind: &'static str, id: &str) -> Self {
        StoreError::NotFound {
            kind,
            id: id.to_owned(),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Storage(Arc::new(redb::Error::from(e)))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

/// The gateway's store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    // Fields drop in order: the ingest batcher's thread is joined first (it
    // holds a writer handle), then `db`, then `writer`, whose last handle
    // joins the writer thread: the file is closed when the last `Store`
    // goes.
    ingest: ingest::Batcher,
    db: Arc<Handle>,
    writer: Writer,
    path: PathBuf,
    announce: Announcer,
}

/// The open database, shared by readers and the writer. After an I/O
/// failure (a full disk) redb refuses every later write until the file is
/// reopened; the writer then takes the database out of the handle, reopens
/// it once the disk takes writes again, and puts it back. Meanwhile reads
/// and writes fail fast, as unavailable, rather than hang.
pub(crate) struct Handle {
    db: std::sync::RwLock<Option<Arc<Database>>>,
}

impl Handle {
    fn current(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Unavailable)
    }

    fn take(&self) -> Option<Arc<Database>> {
        self.db.write().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn put(&self, db: Arc<Database>) {
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = Some(db);
    }
}

impl Store {
    /// Opens (or creates) the store at `path`. A file written by an unknown
    /// schema version, or one redb finds damaged, is refused with a message
    /// saying so, and is not modified.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, 64 << 20)
    }

    /// [`Store::open`] with a page cache of `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        // redb asserts, rather than errors, on some damaged pages: that,
        // too, is a damaged file. The checks below read before anything
        // writes, so the file is still as it was.
        std::panic::catch_unwind(|| Self::open_checked(path, cache_bytes)).unwrap_or_else(|_| {
            Err(StoreError::Open {
                path: path.to_owned(),
                reason: "the file is damaged (its pages cannot be read); it was left as it is: restore it from a backup".into(),
            })
        })
    }

    fn open_checked(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.to_owned(),
            reason,
        };
        let describe = |e: redb::DatabaseError| match e {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(what)) => {
                format!("the file is damaged ({what}); restore it from a backup")
            }
            redb::DatabaseError::DatabaseAlreadyOpen => {
                "another callisto process has it open".to_owned()
            }
            other => other.to_string(),
        };
        let existed = path.exists();
        // Look before opening for writing: opening read-write updates the
        // header, and a file this version does not understand must be left
        // exactly as it is. A file that needs crash recovery cannot be read
        // this way; it is checked right after recovery instead.
        if existed {
            match redb::ReadOnlyDatabase::open(path) {
                Ok(db) => {
                    let found = schema_version(&db).map_err(|e| open_err(e.to_string()))?;
                    check_version(path, found, &db)?;
                    verify(&db).map_err(|e| {
                        open_err(format!(
                            "the file is damaged ({e}); it was left as it is: restore it from a backup"
                        ))
                    })?;
                }
                Err(redb::DatabaseError::RepairAborted) => {}
                Err(e) => return Err(open_err(describe(e))),
            }
        }
        let mut builder = redb::Builder::new();
        builder.set_cache_size(cache_bytes);
        let db = if existed {
            builder.open(path)
        } else {
            builder.create(path)
        }
        .map_err(|e| open_err(describe(e)))?;
        match schema_version(&db).map_err(|e| open_err(e.to_string()))? {
            None if !has_tables(&db)? => init(&db).map_err(|e| open_err(e.to_string()))?,
            found => check_version(path, found, &db)?,
        }

        let handle = Arc::new(Handle {
            db: std::sync::RwLock::new(Some(Arc::new(db))),
        });
        let writer = Writer::start(handle.clone(), path.to_owned(), cache_bytes);
        let announce = Announcer::default();
        Ok(Self {
            ingest: ingest::Batcher::start(writer.clone(), announce.clone()),
            writer,
            db: handle,
            path: path.to_owned(),
            announce,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a write transaction shared with other writers queued at
    /// the same time, and returns its result once the transaction is durably
    /// committed. `f` must check before it writes (see `writer`).
    async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    {
        self.writer
            .submit(true, f)
            .await
            .unwrap_or(Err(StoreError::WriterGone))
    }

    /// [`Store::write`] for what may be lost in a crash because it is redone
    /// after one (an attempt's record, a cursor that made no delivery): it
    /// is visible at once and on disk within a fraction of a second, without
    /// waiting for a sync of its own.
    async fn write_lazy<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    {
        self.writer
            .submit(false, f)
            .await
            .unwrap_or(Err(StoreError::WriterGone))
    }

    /// A consistent snapshot to read from.
    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.current()?.begin_read()?)
    }
}

fn has_tables(db: &impl ReadableDatabase) -> Result<bool, StoreError> {
    let read = db.begin_read()?;
    Ok(read.list_tables()?.next().is_some())
}

/// Reads every record of every table and decodes it: damage in the file
/// shows up here, at start, rather than as a failing request later. It
/// changes nothing (the file is opened read-only), so a damaged file is
/// refused as it is, never repaired or reset behind the operator's back.
fn verify(db: &impl ReadableDatabase) -> Result<(), StoreError> {
    fn all<K: redb::Key + 'static, V: redb::Value + 'static>(
        txn: &ReadTransaction,
        name: &'static str,
        def: redb::TableDefinition<K, V>,
        check: impl Fn(V::SelfType<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let table = match txn.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut previous: Option<Vec<u8>> = None;
        for row in table.iter()? {
            let (k, v) = row?;
            // Keys must come out in order: a damaged page often breaks it.
            let key = K::as_bytes(&k.value()).as_ref().to_vec();
            if let Some(p) = &previous
                && K::compare(p, &key) != std::cmp::Ordering::Less
            {
                return Err(StoreError::Corrupt {
                    table: name,
                    reason: "keys out of order".into(),
                });
            }
            previous = Some(key);
            check(v.value())?;
        }
        Ok(())
    }
    let txn = db.begin_read()?;
    all(&txn, "events", schema::EVENTS, |v| {
        records::decode::<StoredEvent>("events", v).map(drop)
    })?;
    all(&txn, "event_ids", schema::EVENT_IDS, |_| Ok(()))?;
    all(&txn, "dedupe", schema::DEDUPE, |_| Ok(()))?;
    all(&txn, "repositories", schema::REPOSITORIES, |v| {
        records::decode::<Repository>("repositories", v).map(drop)
    })?;
    all(&txn, "tags", schema::TAGS, |v| {
        records::decode::<KnownTag>("tags", v).map(drop)
    })?;
    all(&txn, "webhooks", schema::WEBHOOKS, |v| {
        records::decode::<Webhook>("webhooks", v).map(drop)
    })?;
    all(&txn, "deliveries", schema::DELIVERIES, |v| {
        records::decode::<Delivery>("deliveries", v).map(drop)
    })?;
    all(&txn, "due", schema::DUE, |_| Ok(()))?;
    all(
        &txn,
        "webhook_deliveries",
        schema::WEBHOOK_DELIVERIES,
        |_| Ok(()),
    )?;
    all(&txn, "event_deliveries", schema::EVENT_DELIVERIES, |_| {
        Ok(())
    })?;
    all(&txn, "attempts", schema::ATTEMPTS, |v| {
        records::decode::<Attempt>("attempts", v).map(drop)
    })?;
    Ok(())
}

/// The schema version a file records, if any.
fn schema_version(db: &impl ReadableDatabase) -> Result<Option<u32>, StoreError> {
    let read = db.begin_read()?;
    let meta = match read.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(value) = meta.get("schema_version")? else {
        return Ok(None);
    };
    let bytes: [u8; 4] = value.value().try_into().map_err(|_| StoreError::Corrupt {
        table: "meta",
        reason: "the schema version record is not 4 bytes".into(),
    })?;
    Ok(Some(u32::from_le_bytes(bytes)))
}

/// Accepts this version; refuses another, and a file of tables without one.
fn check_version(
    path: &Path,
    found: Option<u32>,
    db: &impl ReadableDatabase,
) -> Result<(), StoreError> {
    match found {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(found) => Err(StoreError::SchemaVersion {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        }),
        None if has_tables(db)? => Err(StoreError::Open {
            path: path.to_owned(),
            reason: "it holds tables but no schema version: not a callisto store".into(),
        }),
        None => Ok(()),
    }
}

/// Creates every table and records the schema version, in one transaction.
fn init(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
        meta.insert("fanout_cursor", 0u64.to_le_bytes().as_slice())?;
        txn.open_table(schema::EVENTS)?;
        txn.open_table(schema::EVENT_IDS)?;
        txn.open_table(schema::DEDUPE)?;
        txn.open_table(schema::REPOSITORIES)?;
        txn.open_multimap_table(schema::REPOSITORY_NAMES)?;
        txn.open_table(schema::TAGS)?;
        txn.open_table(schema::WEBHOOKS)?;
        txn.open_multimap_table(schema::REPOSITORY_WEBHOOKS)?;
        txn.open_table(schema::DELIVERIES)?;
        txn.open_table(schema::DUE)?;
        txn.open_table(schema::WEBHOOK_DELIVERIES)?;
        txn.open_table(schema::EVENT_DELIVERIES)?;
        txn.open_table(schema::ATTEMPTS)?;
    }
    txn.commit()?;
    Ok(())
}

/// Reads the fan-out cursor: the sequence number of the last event fanned
/// out.
fn fanout_cursor(txn: &impl MetaRead) -> Result<u64, StoreError> {
    txn.meta_u64("fanout_cursor")
}

fn set_fanout_cursor(txn: &WriteTransaction, seq: u64) -> Result<(), StoreError> {
    txn.open_table(META)?
        .insert("fanout_cursor", seq.to_le_bytes().as_slice())?;
    Ok(())
}

/// Reading meta counters from either kind of transaction.
trait MetaRead {
    fn meta_u64(&self, key: &str) -> Result<u64, StoreError>;
}

impl MetaRead for ReadTransaction {
    fn meta_u64(&self, key: &str) -> Result<u64, StoreError> {
        let meta = self.open_table(META)?;
        let value = meta.get(key)?;
        Ok(value.map_or(0, |v| u64_from(v.value())))
    }
}

impl MetaRead for WriteTransaction {
    fn meta_u64(&self, key: &str) -> Result<u64, StoreError> {
        let meta = self.open_table(META)?;
        let value = meta.get(key)?;
        Ok(value.map_or(0, |v| u64_from(v.value())))
    }
}

#[cfg(test)]
mod tests;

fn u64_from(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_le_bytes).unwrap_or(0)
}
