//! The `callisto` binary: the command line, with `callisto serve` wired to
//! the server here, at the top, so that the CLI (an interface) never
//! reaches up to the server.

fn main() -> std::process::ExitCode {
    callisto::cli::main(|config| Ok(callisto::server::serve_until_signal(config)?))
}
