//! The redb engine: one file. Reads go straight to redb (MVCC: they never
//! wait for writers); writes are group-committed by one writer thread (see
//! `writer`), and ingest requests are batched before that (see `ingest`).

mod api;
mod backup;
mod deliveries;
mod events;
mod export;
mod ingest;
mod repos;
mod retention;
mod schema;
mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};

pub use backup::{Backup, backup_file};
pub use export::Export;
pub use verify::{Report, TableReport, verify_file};

use super::StoreError;
use super::announce::{self, Announcer};
use super::records;
pub use super::types::{Claim, DueDelivery, EventFilter, Next, PlanBatch, Pruned};

use schema::{META, SCHEMA_VERSION};
use writer::Writer;

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

/// The gateway's store in one redb file. Cheap to clone.
#[derive(Clone)]
pub struct RedbStore {
    // Fields drop in order: the ingest batcher's thread is joined first (it
    // holds a writer handle), then `db`, then `writer`, whose last handle
    // joins the writer thread: the file is closed when the last `RedbStore`
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

impl RedbStore {
    pub async fn check(&self) -> Result<(), StoreError> {
        self.db.current().map(|_| ())
    }

    /// Opens (or creates) the store at `path`. A file written by an unknown
    /// schema version, or one redb finds damaged, is refused with a message
    /// saying so, and is not modified. It reads the header and the schema
    /// version, not the records, so it takes as long whatever the history:
    /// [`verify_file`] is the full check.
    #[cfg(test)]
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, 64 << 20, Announcer::default())
    }

    /// [`RedbStore::open`] with a page cache of `cache_bytes`.
    pub(super) fn open_with_cache(
        path: &Path,
        cache_bytes: usize,
        announce: Announcer,
    ) -> Result<Self, StoreError> {
        // redb asserts, rather than errors, on some damaged pages: that,
        // too, is a damaged file. The checks below read before anything
        // writes, so the file is still as it was.
        std::panic::catch_unwind(|| Self::open_checked(path, cache_bytes, announce.clone())).unwrap_or_else(|_| {
            Err(StoreError::Open {
                path: path.to_owned(),
                reason: "the file is damaged (its pages cannot be read); it was left as it is: restore it from a backup".into(),
            })
        })
    }

    fn open_checked(
        path: &Path,
        cache_bytes: usize,
        announce: Announcer,
    ) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.to_owned(),
            reason,
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
                }
                Err(redb::DatabaseError::RepairAborted) => {}
                Err(e) => return Err(open_error(path, e)),
            }
        }
        let mut builder = redb::Builder::new();
        builder.set_cache_size(cache_bytes);
        let db = if existed {
            builder.open(path)
        } else {
            builder.create(path)
        }
        .map_err(|e| open_error(path, e))?;
        match schema_version(&db).map_err(|e| open_err(e.to_string()))? {
            None if !has_tables(&db)? => init(&db).map_err(|e| open_err(e.to_string()))?,
            found => check_version(path, found, &db)?,
        }

        let handle = Arc::new(Handle {
            db: std::sync::RwLock::new(Some(Arc::new(db))),
        });
        let writer = Writer::start(handle.clone(), path.to_owned(), cache_bytes);
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

    /// [`RedbStore::write`] for what may be lost in a crash because it is redone
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

/// What an open of `path` that redb refused means, for the operator.
fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    let reason = match e {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            return StoreError::InUse {
                path: path.to_owned(),
            };
        }
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(what)) => {
            format!("the file is damaged ({what}); it was left as it is: restore it from a backup")
        }
        redb::DatabaseError::RepairAborted => {
            "it was not closed cleanly (the gateway was killed or crashed), \
             and reading it needs the recovery a start does: start `callisto serve` on it once, \
             stop it, and try again"
                .to_owned()
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(e))
            if e.kind() == std::io::ErrorKind::NotFound =>
        {
            "there is no such file".to_owned()
        }
        other => other.to_string(),
    };
    StoreError::Open {
        path: path.to_owned(),
        reason,
    }
}

/// Opens an existing store read-only, changing nothing, for the tools that
/// read a whole file (verify, an offline backup). Refused, as by
/// [`RedbStore::open`], when the file is damaged, of another schema version or
/// not a store; and when a gateway has it open.
fn open_read_only(path: &Path) -> Result<redb::ReadOnlyDatabase, StoreError> {
    let damaged = || {
        StoreError::Open {
        path: path.to_owned(),
        reason: "the file is damaged (its pages cannot be read); it was left as it is: restore it from a backup".into(),
    }
    };
    std::panic::catch_unwind(|| {
        let db = redb::ReadOnlyDatabase::open(path).map_err(|e| open_error(path, e))?;
        match schema_version(&db)? {
            None if !has_tables(&db)? => Err(StoreError::Open {
                path: path.to_owned(),
                reason: "it holds no tables: not a callisto store".into(),
            }),
            found => check_version(path, found, &db).map(|()| db),
        }
    })
    .unwrap_or_else(|_| Err(damaged()))
}

fn has_tables(db: &impl ReadableDatabase) -> Result<bool, StoreError> {
    let read = db.begin_read()?;
    Ok(read.list_tables()?.next().is_some())
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
    struct Create<'a>(&'a WriteTransaction);
    impl schema::Tables for Create<'_> {
        fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
            &mut self,
            def: redb::TableDefinition<'static, K, V>,
            _: Option<schema::Check>,
        ) -> Result<(), StoreError> {
            self.0.open_table(def)?;
            Ok(())
        }
        fn multimap<K: redb::Key + 'static, V: redb::Key + 'static>(
            &mut self,
            def: redb::MultimapTableDefinition<'static, K, V>,
        ) -> Result<(), StoreError> {
            self.0.open_multimap_table(def)?;
            Ok(())
        }
    }
    let txn = db.begin_write()?;
    schema::each(&mut Create(&txn))?;
    {
        let mut meta = txn.open_table(META)?;
        meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
        meta.insert("fanout_cursor", 0u64.to_le_bytes().as_slice())?;
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
