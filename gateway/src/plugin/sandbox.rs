//! What a plugin instance's store holds: an empty WASI context, the memory
//! limiter and the log budget, and the one import the host grants (`log`).

use std::sync::Arc;

use callisto_plugin_sdk::PANIC_PREFIX;
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
}

/// Lines of the current call the host acts on, beyond logging them.
#[derive(Debug, Default)]
pub(crate) struct CallNotes {
    /// The SDK's panic line (`panicked at src/lib.rs:12:5: ...`), the last
    /// one of the call: what the trap that follows is reported as.
    pub(crate) panic: Option<String>,
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
        }
    }

    /// Forgets what the previous call said.
    pub(crate) fn begin_call(&mut self) {
        self.call = CallNotes::default();
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
        // A panic line is kept and logged whatever the budget: it is the
        // last thing the instance says (the trap follows), and the one line
        // that explains the fault.
        let panic = matches!(level, wit::LogLevel::Error) && message.starts_with(PANIC_PREFIX);
        if panic {
            self.call.panic = Some(message.clone());
        } else if self.log_budget == 0 {
            return;
        } else {
            self.log_budget -= 1;
        }
        let plugin = &*self.plugin;
        match level {
            wit::LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            wit::LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            wit::LogLevel::Info => tracing::info!(plugin, "{message}"),
            wit::LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            wit::LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
        if self.log_budget == 0 && !panic {
            tracing::warn!(
                plugin,
                "plugin log budget spent; dropping its further lines"
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
