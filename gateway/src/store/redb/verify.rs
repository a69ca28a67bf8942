//! The full check of a store file, on demand (`callisto store verify`):
//! every record of every table is read and decoded. Opening a store does
//! not do this, so that start-up does not grow with the history; damage
//! that redb itself notices on open is still refused at start.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use redb::{
    MultimapTableDefinition, MultimapTableHandle, ReadOnlyDatabase, ReadTransaction,
    ReadableDatabase, ReadableMultimapTable, ReadableTable, TableDefinition, TableHandle,
};

use super::schema::{self, Check};
use super::{StoreError, open_read_only};

/// What `verify` found, table by table.
#[derive(Debug, Clone)]
pub struct Report {
    pub path: PathBuf,
    pub schema_version: u32,
    /// Every table of the schema, in schema order.
    pub tables: Vec<TableReport>,
    /// Tables in the file that this version's schema does not have.
    pub unknown_tables: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TableReport {
    pub name: String,
    /// Records read (for a multimap table: key-value pairs), up to the
    /// damage if there is some.
    pub records: u64,
    /// What is wrong with it, if anything.
    pub damage: Option<String>,
}

impl Report {
    pub fn is_damaged(&self) -> bool {
        self.tables.iter().any(|t| t.damage.is_some())
    }

    /// The records of the table called `name`.
    pub fn records(&self, name: &str) -> u64 {
        self.tables
            .iter()
            .find(|t| t.name == name)
            .map_or(0, |t| t.records)
    }
}

/// Reads every record of the store at `path` and decodes it, changing
/// nothing (the file is opened read-only). Damage in a table is reported in
/// that table's entry, and the other tables are still checked. The file
/// cannot be checked while a gateway has it open (`StoreError::InUse`), nor
/// when it is of another schema version or so damaged it does not open.
pub fn verify_file(path: &Path) -> Result<Report, StoreError> {
    let db = open_read_only(path)?;
    std::panic::catch_unwind(AssertUnwindSafe(|| verify_db(path, &db))).unwrap_or_else(|panic| {
        Err(StoreError::Open {
            path: path.to_owned(),
            reason: format!(
                "the file is damaged ({}); it was left as it is: restore it from a backup",
                panic_message(panic.as_ref())
            ),
        })
    })
}

fn verify_db(path: &Path, db: &ReadOnlyDatabase) -> Result<Report, StoreError> {
    let txn = db.begin_read()?;
    let mut check = Checker {
        txn: &txn,
        tables: Vec::new(),
    };
    schema::each(&mut check)?;
    let known: Vec<String> = check.tables.iter().map(|t| t.name.clone()).collect();
    let mut unknown_tables: Vec<String> = txn
        .list_tables()?
        .map(|t| t.name().to_owned())
        .chain(txn.list_multimap_tables()?.map(|t| t.name().to_owned()))
        .filter(|name| !known.contains(name))
        .collect();
    unknown_tables.sort();
    Ok(Report {
        path: path.to_owned(),
        schema_version: super::schema::SCHEMA_VERSION,
        tables: check.tables,
        unknown_tables,
    })
}

struct Checker<'a> {
    txn: &'a ReadTransaction,
    tables: Vec<TableReport>,
}

impl Checker<'_> {
    /// Runs `scan` on one table, turning an error or a panic of redb (which
    /// asserts on some damaged pages) into that table's damage.
    fn scan(
        &mut self,
        name: &str,
        scan: impl FnOnce(&mut u64) -> Result<(), String>,
    ) -> Result<(), StoreError> {
        let mut records = 0;
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| scan(&mut records)));
        let damage = match result {
            Ok(Ok(())) => None,
            Ok(Err(reason)) => Some(reason),
            Err(panic) => Some(format!(
                "its pages cannot be read ({})",
                panic_message(panic.as_ref())
            )),
        };
        self.tables.push(TableReport {
            name: name.to_owned(),
            records,
            damage,
        });
        Ok(())
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "redb panicked".to_owned())
}

/// Keys come out of a table in order; a damaged page often breaks that.
fn in_order<K: redb::Key>(previous: &mut Option<Vec<u8>>, key: &[u8]) -> Result<(), String> {
    if let Some(p) = previous
        && K::compare(p, key) != std::cmp::Ordering::Less
    {
        return Err("keys out of order".into());
    }
    *previous = Some(key.to_vec());
    Ok(())
}

impl schema::Tables for Checker<'_> {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        def: TableDefinition<'static, K, V>,
        check: Option<Check>,
    ) -> Result<(), StoreError> {
        let txn = self.txn;
        self.scan(def.name(), |records| {
            let table = match txn.open_table(def) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            let mut previous = None;
            for row in table.iter().map_err(|e| e.to_string())? {
                let (k, v) = row.map_err(|e| e.to_string())?;
                in_order::<K>(&mut previous, K::as_bytes(&k.value()).as_ref())?;
                if let Some(check) = check {
                    let value = v.value();
                    check(V::as_bytes(&value).as_ref())
                        .map_err(|e| format!("the record at key {:?} {e}", k.value()))?;
                }
                *records += 1;
            }
            Ok(())
        })
    }

    fn multimap<K: redb::Key + 'static, V: redb::Key + 'static>(
        &mut self,
        def: MultimapTableDefinition<'static, K, V>,
    ) -> Result<(), StoreError> {
        let txn = self.txn;
        self.scan(def.name(), |records| {
            let table = match txn.open_multimap_table(def) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            let mut previous = None;
            for row in table.iter().map_err(|e| e.to_string())? {
                let (k, values) = row.map_err(|e| e.to_string())?;
                in_order::<K>(&mut previous, K::as_bytes(&k.value()).as_ref())?;
                let mut previous_value = None;
                for v in values {
                    let v = v.map_err(|e| e.to_string())?;
                    in_order::<V>(&mut previous_value, V::as_bytes(&v.value()).as_ref())?;
                    *records += 1;
                }
            }
            Ok(())
        })
    }
}
