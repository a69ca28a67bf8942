//! The `callisto` binary, built inside this package so that the end-to-end
//! tests can start it as a process (`CARGO_BIN_EXE_callisto-e2e`): the same
//! `callisto::cli::main`, wired to the server, as `gateway/src/main.rs`.

fn main() -> std::process::ExitCode {
    callisto::cli::main(|config| Ok(callisto::server::serve_until_signal(config)?))
}
