//! `callisto store ...`: the store file itself, for operators: check every
//! record of it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::config::{Config, Flags};
use crate::store::{self, StoreError};

/// Where a store command finds the gateway's data directory.
#[derive(Debug, Clone, Args)]
pub struct DataDir {
    /// The gateway's data directory [default: as `callisto serve` finds it:
    /// $CALLISTO_DATA_DIR, the configuration's `data_dir`, else ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The gateway's TOML configuration file, to find `data_dir` in.
    #[arg(long, env = "CALLISTO_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl DataDir {
    /// The data directory `callisto serve` would use with the same
    /// environment, file and flag.
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        let config = Config::load(self.config.as_deref(), std::env::vars(), &Flags::default())
            .context("reading the configuration to find the data directory (or pass --data-dir)")?;
        Ok(config.data_dir)
    }
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Read every record of every table and report damage, naming the
    /// table; changes nothing. Exits 0 if intact, 2 if damaged, 1 if it
    /// could not check (e.g. a gateway has the file open).
    Verify {
        /// A store file to check instead of `<data dir>/callisto.redb`
        /// (e.g. a backup).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        dir: DataDir,
    },
}

impl StoreCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            StoreCommand::Verify { file, dir } => {
                let path = match file {
                    Some(file) => file,
                    None => dir.resolve()?.join("callisto.redb"),
                };
                verify(&path)
            }
        }
    }
}

/// What to do about an error the store gives for a file it was asked to
/// read as a whole.
fn explain(e: StoreError, what: &str) -> anyhow::Error {
    match e {
        StoreError::InUse { path } => anyhow::anyhow!(
            "{} is open in a running gateway, which holds it locked; {what}",
            path.display()
        ),
        other => other.into(),
    }
}

/// Runs `f` with redb's assertions on damaged pages kept off the terminal:
/// they are caught and reported as damage.
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = f();
    std::panic::set_hook(hook);
    out
}

fn verify(path: &Path) -> anyhow::Result<ExitCode> {
    let report = quietly(|| store::verify_file(path)).map_err(|e| {
        explain(
            e,
            "to check a running gateway's store, back it up (`callisto store backup FILE`) \
             and verify the copy (`callisto store verify FILE`)",
        )
    })?;
    println!(
        "{} (schema version {})",
        report.path.display(),
        report.schema_version
    );
    let rows = report
        .tables
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.records.to_string(),
                match &t.damage {
                    None => "ok".to_owned(),
                    Some(d) => format!("DAMAGED: {d}"),
                },
            ]
        })
        .collect();
    super::client::table(&["TABLE", "RECORDS", "STATE"], rows);
    if !report.unknown_tables.is_empty() {
        println!(
            "tables this callisto does not know (left unchecked): {}",
            report.unknown_tables.join(", ")
        );
    }
    let damaged: Vec<&str> = report
        .tables
        .iter()
        .filter(|t| t.damage.is_some())
        .map(|t| t.name.as_str())
        .collect();
    if damaged.is_empty() {
        println!(
            "intact: every record of {} tables reads and decodes",
            report.tables.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {} is damaged in {} ({}); nothing was changed. Restore it from a backup \
             (`callisto store restore FILE --data-dir NEWDIR`)",
            report.path.display(),
            if damaged.len() == 1 {
                "one table".to_owned()
            } else {
                format!("{} tables", damaged.len())
            },
            damaged.join(", ")
        );
        Ok(ExitCode::from(2))
    }
}
