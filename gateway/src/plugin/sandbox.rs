//! What a plugin instance's store holds: an empty WASI context, the memory
//! limiter and the log budget, and the one import the host grants (`log`).

use std::sync::Arc;

use callisto_plugin_sdk::PANIC_PREFIX;
use callisto_plugin_sdk::filter::DECLINED_PREFIX;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{self, wit};

/// Log lines a plugin may write per instance before the host drops them.
const LOG_BUDGET: u32 = 100;
/// Longest log line kept, in bytes.
const LOG_LINE_MAX: usize = 2048;

pub(crate) struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) plugin: Arc<str>,
    log_budget: u32,
    /// What the plugin said during the current call.
    pub(crate) call: CallNotes,
    /// Every line logged, when the caller wants them (`callisto plugin
    /// run`), besides the gateway's log.
    pub(crate) captured: Option<Vec<LogLine>>,
}

/// Lines of the current call the host acts on, beyond logging them.
#[derive(Debug, Default)]
pub(crate) struct CallNotes {
    /// The SDK's panic line (`panicked at src/lib.rs:12:5: ...`), the last
    /// one of the call: what the trap that follows is reported as.
    pub(crate) panic: Option<String>,
    /// Why the plugin's filter declined the event: its first
    /// `filtered out: ...` debug line of the call, without the prefix.
    pub(crate) declined: Option<String>,
}

/// One line a plugin logged, as the gateway logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: tracing::Level,
    pub message: String,
}

impl Sandbox {
    pub(crate) fn new(plugin: Arc<str>, memory_cap: usize) -> Self {
        // Nothing granted: no preopened directories, environment, arguments
        // or network. stdin is closed and stdout/stderr go nowhere.
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter {
                cap: memory_cap,
                used: 0,
                denied: false,
            },
            plugin,
            log_budget: LOG_BUDGET,
            call: CallNotes::default(),
            captured: None,
        }
    }

    /// Forgets what the previous call said.
    pub(crate) fn begin_call(&mut self) {
        self.call = CallNotes::default();
    }

    fn emit(&mut self, level: tracing::Level, message: String) {
        let plugin = &*self.plugin;
        match level {
            tracing::Level::TRACE => tracing::trace!(plugin, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(plugin, "{message}"),
            tracing::Level::ERROR => tracing::error!(plugin, "{message}"),
        }
        if let Some(lines) = &mut self.captured {
            lines.push(LogLine { level, message });
        }
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::PluginImports for Sandbox {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        let mut message = message;
        if message.len() > LOG_LINE_MAX {
            let mut end = LOG_LINE_MAX;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let level = match level {
            wit::LogLevel::Trace => tracing::Level::TRACE,
            wit::LogLevel::Debug => tracing::Level::DEBUG,
            wit::LogLevel::Info => tracing::Level::INFO,
            wit::LogLevel::Warn => tracing::Level::WARN,
            wit::LogLevel::Error => tracing::Level::ERROR,
        };
        // Two lines are kept for the call and logged whatever the budget:
        // a panic line (the last thing the instance says; the trap follows)
        // and the call's first reason for filtering the event out (the SDK
        // writes one per declined event, so a filter that declines most
        // events does not spend the budget of the lines that matter).
        let panic = level == tracing::Level::ERROR && message.starts_with(PANIC_PREFIX);
        let declined = level == tracing::Level::DEBUG
            && self.call.declined.is_none()
            && message.starts_with(DECLINED_PREFIX);
        if panic {
            self.call.panic = Some(message.clone());
        } else if declined {
            self.call.declined = Some(message[DECLINED_PREFIX.len()..].to_owned());
        } else if self.log_budget == 0 {
            return;
        } else {
            self.log_budget -= 1;
        }
        self.emit(level, message);
        if self.log_budget == 0 && !panic && !declined {
            self.emit(
                tracing::Level::WARN,
                "plugin log budget spent; dropping its further lines".to_owned(),
            );
        }
    }
}

impl wit::Host for Sandbox {}

/// Caps linear memory and remembers that it refused, so that the trap that
/// follows (a Rust guest aborts when allocation fails) is reported as the
/// memory cap rather than as an anonymous `unreachable`.
pub(crate) struct Limiter {
    cap: usize,
    pub(crate) used: usize,
    pub(crate) denied: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.denied = true;
            return Ok(false);
        }
        self.used = desired;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 65_536)
    }
}
