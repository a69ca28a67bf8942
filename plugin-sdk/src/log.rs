/// Severity of a [`log`] line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Writes a line to the gateway's log, tagged with the plugin's name. The
/// host may drop lines from a plugin that logs too much. Natively (in a
/// plugin's unit tests) the line goes to standard error.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::wasm::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[plugin {level:?}] {message}");
}

/// How the line that the SDK's panic hook logs (at error level, just before
/// the panic traps) begins: `panicked at src/lib.rs:12:5: tag missing`. The
/// host keeps the last such line of a call and reports it as the fault, so
/// that a delivery's error names the panic rather than an anonymous trap.
pub const PANIC_PREFIX: &str = "panicked at ";
