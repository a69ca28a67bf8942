//! The `callisto` command line: the server, plugin tools, and a client of
//! the admin API.

mod client;
mod completions;
mod plugin;
mod scaffold;
pub mod serve;
mod store;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `0.1.0 (3b3c6b4 2026-11-29)`: the package version, then the commit built
/// and its date, or `unknown` (gateway/build/commit.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("CALLISTO_BUILD_INFO"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "callisto",
    version = VERSION,
    about = "A webhook gateway for container registries"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(serve::ServeArgs),
    /// Work with plugins: start one, list, check and run them in the real
    /// sandbox.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Repositories: add, list, show, rm.
    Repo {
        #[command(subcommand)]
        command: client::RepoCommand,
        #[command(flatten)]
        conn: client::Connection,
    },
    /// Webhooks of a repository: add, list, test, filtered, rm.
    Webhook {
        #[command(subcommand)]
        command: client::WebhookCommand,
        #[command(flatten)]
        conn: client::Connection,
    },
    /// The event log, newest first.
    Events {
        #[command(flatten)]
        args: client::EventsArgs,
        #[command(flatten)]
        conn: client::Connection,
    },
    /// A webhook's deliveries, newest first.
    Deliveries {
        #[command(flatten)]
        args: client::DeliveriesArgs,
        #[command(flatten)]
        conn: client::Connection,
    },
    /// Send a delivery again now, with the same webhook-id.
    Redeliver {
        /// The delivery's id.
        id: String,
        #[command(flatten)]
        conn: client::Connection,
    },
    /// The store file: verify, backup, restore.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Print the completion script of a shell.
    ///
    /// For example `callisto completions bash >
    /// ~/.local/share/bash-completion/completions/callisto`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// The whole `callisto` binary: parse the command line, run, report.
///
/// `serve` is what `callisto serve` runs once its settings are loaded: the
/// binary passes the server's start (the wiring sits above the CLI).
pub fn main(serve: serve::Serve) -> ExitCode {
    let cli = Cli::parse();
    match cli.run(serve) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

impl Cli {
    pub fn run(self, serve: serve::Serve) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Serve(args) => args.run(serve),
            Command::Plugin(cmd) => cmd.run(),
            Command::Repo { command, conn } => client::repo(conn, command),
            Command::Webhook { command, conn } => client::webhook(conn, command),
            Command::Events { args, conn } => client::events(conn, args),
            Command::Deliveries { args, conn } => client::deliveries(conn, args),
            Command::Redeliver { id, conn } => client::redeliver(conn, &id),
            Command::Store(cmd) => cmd.run(),
            Command::Completions { shell } => completions::run(shell),
        }
    }
}
