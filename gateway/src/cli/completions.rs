//! `callisto completions SHELL`: the command line's completion script for a
//! shell, generated from the same definitions that parse it.

use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// Prints the completion script of `shell` on standard output.
pub fn run(shell: Shell) -> anyhow::Result<ExitCode> {
    let mut command = super::Cli::command();
    clap_complete::generate(shell, &mut command, "callisto", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand, and every flag and positional argument of every
    /// subcommand, says what it is in `--help`.
    #[test]
    fn every_command_and_argument_has_help_text() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if ["help", "version"].contains(&id) {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::super::Cli::command(), "callisto", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn completions_cover_every_command() {
        let mut out = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut super::super::Cli::command(),
            "callisto",
            &mut out,
        );
        let script = String::from_utf8(out).unwrap();
        for word in [
            "serve",
            "repo",
            "webhook",
            "store",
            "verify",
            "backup",
            "--with-key",
        ] {
            assert!(script.contains(word), "{word} is not completed");
        }
    }
}
