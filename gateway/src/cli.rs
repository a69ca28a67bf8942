//! The `callisto` command line: the server, plugin tools, and a client of
//! the admin API.

mod plugin;
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
    /// Work with plugins: list, check and run them in the real sandbox.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
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
        }
    }
}
