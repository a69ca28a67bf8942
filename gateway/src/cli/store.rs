//! `callisto store ...`: the store file itself, for operators: check every
//! record of it, back it up (through a running gateway, or directly when
//! none runs), restore a backup into a new data directory. The sealing key
//! is never in a backup: these commands say where it is, and copy it only
//! when asked.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::config::{Config, Flags};
use crate::seal::{KEY_FILE, KeySource, Sealer};
use crate::store::{self, Store, StoreError};

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
    /// Read every record of the store and report damage; changes nothing.
    ///
    /// Every table is checked and a damaged one is named. Exits 0 if
    /// intact, 2 if damaged, 1 if it could not check (e.g. a gateway has
    /// the file open: verify a backup instead).
    Verify {
        /// A store file to check instead of `<data dir>/callisto.redb`
        /// (e.g. a backup).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Write a consistent copy of the store to FILE.
    ///
    /// Through the running gateway (its admin API), or, with --data-dir,
    /// straight from a data directory no gateway has open. The copy is
    /// verified before it is named FILE. The sealing key is not in it: keep
    /// the key too (--with-key copies it).
    Backup {
        /// Where to write the backup; never overwritten.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Also copy the sealing key next to FILE, as FILE.key (mode 0600).
        #[arg(long)]
        with_key: bool,
        /// Read the store of this data directory directly instead of asking
        /// a running gateway (only when no gateway has it open).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// The running gateway's base URL.
        #[arg(long, env = "CALLISTO_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The admin token [default: $CALLISTO_ADMIN_TOKEN, else the
        /// gateway's generated `<data dir>/admin.token`].
        #[arg(long, env = "CALLISTO_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Put a backup into a new data directory.
    ///
    /// The backup is verified first; a directory that already holds a
    /// store is refused; a key that does not open the backup's secrets is
    /// refused.
    Restore {
        /// The backup (a file `callisto store backup` wrote).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The data directory to restore into (made if missing); start the
        /// gateway on it with `callisto serve --data-dir NEWDIR`.
        #[arg(long, value_name = "NEWDIR")]
        data_dir: PathBuf,
        /// The sealing key kept with the backup (FILE.key), so that its
        /// webhook secrets and registry passwords can be read.
        #[arg(long, value_name = "FILE.key")]
        key: Option<PathBuf>,
    },
    /// Copy the store into an empty PostgreSQL database: the way from one
    /// gateway on redb to several on PostgreSQL.
    ///
    /// Stop the gateway first (the redb file must not be open). Everything
    /// moves in one transaction (repositories, known tags, webhooks, the
    /// event log with its sequence numbers and fan-out cursor, deliveries
    /// with their attempts, and the installed plugins), or nothing does.
    /// Secrets stay sealed: start every replica with this data directory's
    /// sealing key (`CALLISTO_SEAL_KEY_FILE`). The redb file is left as it
    /// is.
    Copy {
        /// The PostgreSQL database to copy into, e.g.
        /// postgres://callisto@db:5432/callisto.
        #[arg(long, value_name = "URL")]
        to: String,
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
            StoreCommand::Backup {
                file,
                with_key,
                data_dir,
                url,
                token,
            } => backup(&file, with_key, data_dir.as_deref(), url, token),
            StoreCommand::Restore {
                file,
                data_dir,
                key,
            } => restore(&file, &data_dir, key.as_deref()),
            StoreCommand::Copy { to, dir } => copy(&dir.resolve()?, &to),
        }
    }
}

fn copy(data_dir: &Path, url: &str) -> anyhow::Result<ExitCode> {
    let path = data_dir.join("callisto.redb");
    let plugins_dir = data_dir.join("plugins");
    let mut plugins = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&plugins_dir) {
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "wasm")
                && let Some(name) = path.file_stem().and_then(|s| s.to_str())
            {
                let wasm =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                plugins.push((name.to_owned(), wasm));
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let copied = runtime
        .block_on(store::Store::copy_to_postgres(&path, url, &plugins))
        .map_err(|e| {
            explain(
                e,
                "stop the gateway, then copy (its store must not change meanwhile)",
            )
        })?;
    println!(
        "copied {} into {}",
        path.display(),
        crate::store::redact_url(url)
    );
    super::client::table(
        &["RECORDS", "COUNT"],
        [
            ("repositories", copied.repositories),
            ("tags", copied.tags),
            ("webhooks", copied.webhooks),
            ("events", copied.events),
            ("deliveries", copied.deliveries),
            ("attempts", copied.attempts),
            ("plugins", copied.plugins),
        ]
        .into_iter()
        .map(|(what, n)| vec![what.to_owned(), n.to_string()])
        .collect(),
    );
    println!(
        "start the gateways with --store (CALLISTO_STORE) set to that URL and this data \
         directory's sealing key in CALLISTO_SEAL_KEY_FILE"
    );
    Ok(ExitCode::SUCCESS)
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

/// `FILE` with `suffix` appended to its name: `b.redb` → `b.redb.key`.
fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Removes a file this command made if what follows fails.
struct Partial(Option<PathBuf>);

impl Partial {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn backup(
    file: &Path,
    with_key: bool,
    data_dir: Option<&Path>,
    url: String,
    token: Option<String>,
) -> anyhow::Result<ExitCode> {
    if file.exists() {
        anyhow::bail!(
            "{} exists; a backup never overwrites a file: choose a new name or remove it first",
            file.display()
        );
    }
    // Written under another name, checked, then renamed: FILE is only ever
    // a whole, verified backup.
    let partial = with_suffix(file, ".partial");
    let cleanup = Partial(Some(partial.clone()));
    let key = match data_dir {
        Some(dir) => {
            let src = dir.join("callisto.redb");
            quietly(|| store::backup_file(&src, &partial)).map_err(|e| {
                explain(
                    e,
                    "back it up through the gateway instead: `callisto store backup FILE` \
                     without --data-dir (and --url if it does not listen on http://127.0.0.1:8080)",
                )
            })?;
            let configured = std::env::var("CALLISTO_SECRET_KEY").ok();
            let key_file = std::env::var_os("CALLISTO_SEAL_KEY_FILE")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| dir.join(KEY_FILE));
            match KeySource::of(&key_file, configured.as_deref()) {
                KeySource::File(path) if !path.exists() && configured.is_none() => None,
                source => Some(source),
            }
        }
        None => {
            let cli = super::client::Cli::new(super::client::Connection::new(url, token))?;
            let download = cli.run(async {
                let mut out = tokio::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&partial)
                    .await
                    .map_err(|e| crate::client::ClientError::Write {
                        path: partial.display().to_string(),
                        reason: e.to_string(),
                    })?;
                let got = cli
                    .client
                    .backup(&mut out, &partial.display().to_string())
                    .await?;
                out.sync_all()
                    .await
                    .map_err(|e| crate::client::ClientError::Write {
                        path: partial.display().to_string(),
                        reason: e.to_string(),
                    })?;
                Ok(got)
            })?;
            download.sealing_key.map(|k| match k.as_str() {
                "configured" => KeySource::Configured,
                path => KeySource::File(PathBuf::from(path)),
            })
        }
    };
    let report = quietly(|| store::verify_file(&partial))
        .with_context(|| format!("checking the backup {}", partial.display()))?;
    if report.is_damaged() {
        anyhow::bail!(
            "the copy does not verify (damaged: {}); nothing was kept",
            damaged_tables(&report)
        );
    }
    std::fs::rename(&partial, file)
        .with_context(|| format!("renaming {} to {}", partial.display(), file.display()))?;
    cleanup.keep();
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    println!(
        "backed up {} events, {} webhooks, {} deliveries ({:.1} MB) to {}; every record verified",
        report.records("events"),
        report.records("webhooks"),
        report.records("deliveries"),
        size as f64 / 1e6,
        file.display()
    );

    // The key: never in the backup; said where it is, copied when asked.
    let key_copy = with_suffix(file, ".key");
    match (key, with_key) {
        (Some(KeySource::File(path)), true) => {
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "the backup is in {}, but the sealing key {} cannot be read here \
                     (is the gateway on another machine?); copy it yourself and keep it with the backup",
                    file.display(),
                    path.display()
                )
            })?;
            Sealer::from_key_file(&path)?;
            crate::secrets::write_private(&key_copy, text.trim())
                .with_context(|| format!("copying the sealing key to {}", key_copy.display()))?;
            println!(
                "copied the sealing key {} to {} (mode 0600): keep it as safe as the secrets it opens, \
                 and apart from the backup if you can",
                path.display(),
                key_copy.display()
            );
        }
        (Some(KeySource::File(path)), false) => eprintln!(
            "warning: the backup does not contain the sealing key, without which its webhook secrets \
             and registry passwords cannot be read: keep {} with it (or run again with --with-key to \
             copy it to {})",
            path.display(),
            key_copy.display()
        ),
        (Some(KeySource::Configured), with_key) => {
            let message = "the gateway's sealing key is set in its configuration (secret_key, \
                 CALLISTO_SECRET_KEY), not in a file: keep that value with the backup, without it \
                 the backup's webhook secrets and registry passwords cannot be read";
            if with_key {
                anyhow::bail!("cannot copy the key: {message}");
            }
            eprintln!("warning: {message}");
        }
        (None, with_key) => {
            let message = "the gateway did not say where its sealing key is: keep its \
                 `<data dir>/secret.key` (or its configured secret_key) with the backup";
            if with_key {
                anyhow::bail!("cannot copy the key: {message}");
            }
            eprintln!("warning: {message}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn restore(file: &Path, dir: &Path, key: Option<&Path>) -> anyhow::Result<ExitCode> {
    let target = dir.join("callisto.redb");
    if target.exists() {
        anyhow::bail!(
            "{} already holds a store ({}); restore into a new data directory, \
             or move that store away first",
            dir.display(),
            target.display()
        );
    }
    let report = quietly(|| store::verify_file(file))
        .with_context(|| format!("checking the backup {}", file.display()))?;
    if report.is_damaged() {
        anyhow::bail!(
            "the backup {} is damaged ({}): see `callisto store verify {}`; nothing was restored",
            file.display(),
            damaged_tables(&report),
            file.display()
        );
    }
    let key_target = dir.join(KEY_FILE);
    // The key the restored gateway will use: the one given, else one
    // already in the directory.
    let key_used = key
        .map(Path::to_path_buf)
        .or_else(|| key_target.exists().then(|| key_target.clone()));
    let sealer = key_used.as_deref().map(Sealer::from_key_file).transpose()?;
    if let Some(key) = key
        && key_target.exists()
        && std::fs::read_to_string(&key_target)?.trim() != std::fs::read_to_string(key)?.trim()
    {
        anyhow::bail!(
            "{} already has another sealing key ({}); restore into a new data directory",
            dir.display(),
            key_target.display()
        );
    }

    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("making {}", dir.display()))?;
    }
    // Copied under another name and synced, then renamed: the data
    // directory never holds half a store.
    let partial = dir.join(".callisto.redb.restoring");
    let cleanup = Partial(Some(partial.clone()));
    copy_synced(file, &partial)?;
    if let Some(sealer) = &sealer {
        check_key(&partial, sealer).with_context(|| {
            format!(
                "{} does not open the backup's secrets: it is not the key of the gateway that \
                 made {}; nothing was restored",
                key_used.as_deref().unwrap_or(Path::new("")).display(),
                file.display()
            )
        })?;
    }
    std::fs::rename(&partial, &target)
        .with_context(|| format!("renaming {} to {}", partial.display(), target.display()))?;
    cleanup.keep();
    if let Some(key) = key
        && !key_target.exists()
    {
        let text = std::fs::read_to_string(key)?;
        crate::secrets::write_private(&key_target, text.trim())
            .with_context(|| format!("writing {}", key_target.display()))?;
    }
    println!(
        "restored {} events, {} webhooks, {} deliveries from {} into {}",
        report.records("events"),
        report.records("webhooks"),
        report.records("deliveries"),
        file.display(),
        dir.display()
    );
    if key.is_none() && !key_target.exists() {
        let hint = with_suffix(file, ".key");
        eprintln!(
            "warning: no sealing key was given (--key): the gateway will make a new one, and the \
             backup's webhook secrets and registry passwords will not open until they are set \
             again{}",
            if hint.exists() {
                format!(
                    "; {} is next to the backup: pass --key {}",
                    hint.display(),
                    hint.display()
                )
            } else {
                String::new()
            }
        );
    }
    println!(
        "the tokens are not part of a backup: keep setting CALLISTO_ADMIN_TOKEN and \
         CALLISTO_INGEST_TOKEN as before, or the gateway generates new ones. Start it with: \
         callisto serve --data-dir {}",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn damaged_tables(report: &store::Report) -> String {
    report
        .tables
        .iter()
        .filter(|t| t.damage.is_some())
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn copy_synced(from: &Path, to: &Path) -> anyhow::Result<()> {
    let mut src =
        std::fs::File::open(from).with_context(|| format!("reading {}", from.display()))?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .with_context(|| format!("writing {}", to.display()))?;
    std::io::copy(&mut src, &mut dst).with_context(|| format!("writing {}", to.display()))?;
    dst.sync_all()
        .with_context(|| format!("writing {}", to.display()))?;
    Ok(())
}

/// Opens the first sealed secret of the store at `path` with `sealer`; Ok
/// when there is none.
fn check_key(path: &Path, sealer: &Sealer) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = Store::open(path)?;
    let webhooks = runtime.block_on(store.webhooks())?;
    drop(store);
    if let Some(secret) = webhooks.iter().find_map(|w| w.secret.as_ref()) {
        sealer.open(secret)?;
    }
    Ok(())
}
