//! The `callisto` command line: the server, plugin tools, and a client of
//! the admin API.

mod client;
mod plugin;
mod scaffold;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "callisto",
    version,
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
    /// Repositories: add, list, rm.
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
}

/// The whole `callisto` binary: parse the command line, run, report.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

impl Cli {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Serve(args) => args.run(),
            Command::Plugin(cmd) => cmd.run(),
            Command::Repo { command, conn } => client::repo(conn, command),
            Command::Webhook { command, conn } => client::webhook(conn, command),
            Command::Events { args, conn } => client::events(conn, args),
            Command::Deliveries { args, conn } => client::deliveries(conn, args),
            Command::Redeliver { id, conn } => client::redeliver(conn, &id),
        }
    }
}
