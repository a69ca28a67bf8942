//! A consistent copy of a store in a new file: one read transaction (a
//! snapshot: what was committed when it began, and nothing after) copied
//! table by table into a new redb file. The live store keeps taking writes
//! meanwhile; the copy is a store like any other, opened by `RedbStore::open`
//! and checked by `verify_file`.
//!
//! The sealing key is not in the store, so not in the copy either: a
//! backup's secrets can only be opened with the key of the gateway that
//! sealed them.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, MultimapTableDefinition, MultimapTableHandle, ReadTransaction,
    ReadableDatabase, ReadableMultimapTable, ReadableTable, TableDefinition, TableHandle,
};

use super::schema::{self, Check};
use super::{RedbStore, StoreError, open_read_only};

/// Records copied per write transaction, so that copying a large table does
/// not hold all of it in one transaction.
const CHUNK: u64 = 50_000;

/// What a backup copied.
#[derive(Debug, Clone, Default)]
pub struct Backup {
    pub path: PathBuf,
    /// Records per table, in schema order.
    pub tables: Vec<(String, u64)>,
    /// The size of the file written.
    pub bytes: u64,
}

impl Backup {
    /// The records of the table called `name`.
    pub fn records(&self, name: &str) -> u64 {
        self.tables
            .iter()
            .find(|(t, _)| t == name)
            .map_or(0, |(_, n)| *n)
    }
}

impl RedbStore {
    /// Writes a consistent copy of the store, as it is now, to a new file at
    /// `dest` (refused if it exists). Writers are not held up; what they
    /// commit after the copy began is not in it.
    pub async fn backup_to(&self, dest: &Path) -> Result<Backup, StoreError> {
        let snapshot = self.read()?;
        let dest = dest.to_owned();
        tokio::task::spawn_blocking(move || copy(&snapshot, &dest, CHUNK))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Backup {
                    path: PathBuf::new(),
                    reason: format!("the copy stopped: {e}"),
                })
            })
    }
}

/// [`RedbStore::backup_to`] for a store no gateway has open: the file at `src`
/// is opened read-only (`StoreError::InUse` if a gateway has it).
pub fn backup_file(src: &Path, dest: &Path) -> Result<Backup, StoreError> {
    let db = open_read_only(src)?;
    let snapshot = db.begin_read()?;
    copy(&snapshot, dest, CHUNK)
}

/// Copies every table of `from` into a new file at `dest`, `chunk` records
/// per write transaction.
pub(super) fn copy(from: &ReadTransaction, dest: &Path, chunk: u64) -> Result<Backup, StoreError> {
    let fail = |reason: String| StoreError::Backup {
        path: dest.to_owned(),
        reason,
    };
    // Refuse tables this version does not know rather than leave them out.
    let mut known = Vec::new();
    schema::each(&mut Names(&mut known))?;
    let unknown: Vec<String> = from
        .list_tables()?
        .map(|t| t.name().to_owned())
        .chain(from.list_multimap_tables()?.map(|t| t.name().to_owned()))
        .filter(|name| !known.contains(name))
        .collect();
    if !unknown.is_empty() {
        return Err(fail(format!(
            "the store holds tables this callisto does not know ({}); it would not copy them",
            unknown.join(", ")
        )));
    }
    // A new file only, never written over one; private, as the data
    // directory is.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(|e| fail(e.to_string()))?;
    let db = redb::Builder::new()
        .create_with_backend(
            redb::backends::FileBackend::new(file).map_err(|e| fail(e.to_string()))?,
        )
        .map_err(|e| fail(e.to_string()))?;
    let mut copier = Copier {
        from,
        to: &db,
        chunk,
        tables: Vec::new(),
    };
    schema::each(&mut copier)?;
    let tables = copier.tables;
    // The chunks were committed without syncing; this makes them durable.
    let mut last = db.begin_write()?;
    last.set_durability(Durability::Immediate)
        .map_err(|e| fail(e.to_string()))?;
    last.commit()?;
    db.close().map_err(|e| fail(e.to_string()))?;
    let bytes = std::fs::metadata(dest)
        .map_err(|e| fail(e.to_string()))?
        .len();
    Ok(Backup {
        path: dest.to_owned(),
        tables,
        bytes,
    })
}

/// The names of the schema's tables.
struct Names<'a>(&'a mut Vec<String>);

impl schema::Tables for Names<'_> {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        def: TableDefinition<'static, K, V>,
        _: Option<Check>,
    ) -> Result<(), StoreError> {
        self.0.push(def.name().to_owned());
        Ok(())
    }

    fn multimap<K: redb::Key + 'static, V: redb::Key + 'static>(
        &mut self,
        def: MultimapTableDefinition<'static, K, V>,
    ) -> Result<(), StoreError> {
        self.0.push(def.name().to_owned());
        Ok(())
    }
}

struct Copier<'a> {
    from: &'a ReadTransaction,
    to: &'a Database,
    chunk: u64,
    tables: Vec<(String, u64)>,
}

impl Copier<'_> {
    /// A write transaction for one chunk, committed without a sync.
    fn chunk(&self) -> Result<redb::WriteTransaction, StoreError> {
        let mut txn = self.to.begin_write()?;
        txn.set_durability(Durability::None)
            .map_err(|e| StoreError::Backup {
                path: PathBuf::new(),
                reason: e.to_string(),
            })?;
        Ok(txn)
    }
}

impl schema::Tables for Copier<'_> {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        def: TableDefinition<'static, K, V>,
        _: Option<Check>,
    ) -> Result<(), StoreError> {
        let mut copied = 0u64;
        let source = match self.from.open_table(def) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let mut rows = source.as_ref().map(|t| t.iter()).transpose()?;
        loop {
            let txn = self.chunk()?;
            let mut done = true;
            {
                let mut table = txn.open_table(def)?;
                if let Some(rows) = rows.as_mut() {
                    for row in rows.by_ref() {
                        let (k, v) = row?;
                        table.insert(k.value(), v.value())?;
                        copied += 1;
                        if copied.is_multiple_of(self.chunk) {
                            done = false;
                            break;
                        }
                    }
                }
            }
            txn.commit()?;
            if done {
                break;
            }
        }
        self.tables.push((def.name().to_owned(), copied));
        Ok(())
    }

    fn multimap<K: redb::Key + 'static, V: redb::Key + 'static>(
        &mut self,
        def: MultimapTableDefinition<'static, K, V>,
    ) -> Result<(), StoreError> {
        // Multimap tables are indexes of a few entries per key: one chunk.
        let mut copied = 0u64;
        let txn = self.chunk()?;
        {
            let mut table = txn.open_multimap_table(def)?;
            match self.from.open_multimap_table(def) {
                Ok(source) => {
                    for row in source.iter()? {
                        let (k, values) = row?;
                        for v in values {
                            table.insert(k.value(), v?.value())?;
                            copied += 1;
                        }
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        txn.commit()?;
        self.tables.push((def.name().to_owned(), copied));
        Ok(())
    }
}
