use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::config::{Config, Flags, LogFormat};

/// Runs the gateway with the settings loaded; given by `main`.
pub type Serve = fn(Config) -> anyhow::Result<()>;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML configuration file.
    #[arg(long, env = "CALLISTO_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Where state lives [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where the store is: `redb` (the file in the data directory) or a
    /// PostgreSQL URL, postgres://user:pass@host:port/db [default: redb].
    #[arg(long)]
    store: Option<String>,
    /// Deliver to loopback and private addresses too.
    #[arg(long)]
    allow_private_targets: bool,
    /// Log lines as `text` or `json`.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Start with an empty store although the data directory shows one
    /// existed (its callisto.redb is gone).
    #[arg(long)]
    allow_fresh_store: bool,
    /// Start with this sealing key although the store's secrets were sealed
    /// with another; they must then be entered again.
    #[arg(long)]
    allow_new_secret_key: bool,
}

impl ServeArgs {
    /// Loads the settings, starts logging, and hands the server's start to
    /// `serve`: the binary's wiring, which this layer does not reach up to.
    pub fn run(self, serve: Serve) -> anyhow::Result<ExitCode> {
        let flags = Flags {
            listen: self.listen,
            data_dir: self.data_dir,
            allow_private_targets: self.allow_private_targets,
            log_format: self.log_format,
            allow_fresh_store: self.allow_fresh_store,
            allow_new_secret_key: self.allow_new_secret_key,
            store: self.store,
        };
        let config = Config::load(self.config.as_deref(), std::env::vars(), &flags)?;
        let _telemetry = crate::telemetry::init(&config)?;
        serve(config)?;
        Ok(ExitCode::SUCCESS)
    }
}
