//! One live plugin instance and the calls into it, with every failure
//! classified as the plugin's error, a fault or the host's.

use std::sync::Arc;

use wasmtime::component::{ComponentExportIndex, TypedFunc};
use wasmtime::{Store, Trap};

use super::bindings::{self, wit};
use super::error::{CallError, Fault};
use super::output;
use super::runtime::Runtime;
use super::sandbox::{LogLine, Sandbox};
use super::{Filtered, Verdict};
use crate::records::Request;

/// The optional `handle` export: filter and format in one call.
type HandleFunc = TypedFunc<
    (&'static wit::Event, &'static wit::Webhook),
    (Result<Option<wit::Request>, String>,),
>;

/// A live instance of one plugin. Dropped after any fault: a trapped
/// component instance cannot be entered again.
pub(crate) struct Instance {
    store: Store<Sandbox>,
    bindings: bindings::Plugin,
    handle: Option<HandleFunc>,
    calls: u32,
}

impl Instance {
    /// Instantiates the plugin; `handle` is the index of its `handle` export,
    /// if it has one.
    pub fn new(
        runtime: &Runtime,
        pre: &bindings::PluginPre<Sandbox>,
        handle: Option<&ComponentExportIndex>,
        plugin: &Arc<str>,
    ) -> Result<Self, CallError> {
        let mut store = Store::new(
            &runtime.engine,
            Sandbox::new(plugin.clone(), runtime.limits.memory),
        );
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(runtime.limits.deadline_ticks());
        let instance = match pre.instance_pre().instantiate(&mut store) {
            Ok(instance) => instance,
            Err(err) => return Err(classify(runtime, &store, plugin, err)),
        };
        let host_error = |e: wasmtime::Error| CallError::Host {
            plugin: plugin.to_string(),
            message: format!("{e:#}"),
        };
        let bindings = bindings::Plugin::new(&mut store, &instance).map_err(host_error)?;
        let handle = match handle {
            Some(index) => Some(
                instance
                    .get_typed_func::<(&wit::Event, &wit::Webhook), (Result<Option<wit::Request>, String>,)>(
                        &mut store, index,
                    )
                    .map_err(host_error)?,
            ),
            None => None,
        };
        Ok(Self {
            store,
            bindings,
            handle,
            calls: 0,
        })
    }

    /// `filter` then `format`, through `handle` when the plugin has it (one
    /// crossing instead of two).
    pub fn run(
        &mut self,
        runtime: &Runtime,
        event: &wit::Event,
        webhook: &wit::Webhook,
    ) -> Result<Verdict, CallError> {
        let Some(handle) = self.handle else {
            if !self.filter(runtime, event, webhook)? {
                return Ok(Verdict::Filtered(self.declined()));
            }
            return self.format(runtime, event, webhook).map(Verdict::Send);
        };
        self.arm(runtime);
        let result = handle.call(&mut self.store, (event, webhook));
        let plugin = self.name();
        match result {
            Ok((Ok(Some(request)),)) => {
                output::check(&plugin, request, runtime.limits.max_body).map(Verdict::Send)
            }
            Ok((Ok(None),)) => Ok(Verdict::Filtered(self.declined())),
            Ok((Err(message),)) => Err(CallError::Returned {
                plugin: plugin.to_string(),
                message,
            }),
            Err(e) => Err(classify(runtime, &self.store, &plugin, e)),
        }
    }

    /// Why the last call's filter declined the event, as the plugin said.
    pub fn declined(&mut self) -> Filtered {
        Filtered {
            reason: self.store.data_mut().call.declined.take(),
        }
    }

    /// Keeps every line the plugin logs from now on, for [`Instance::logs`].
    pub fn capture_logs(&mut self) {
        self.store.data_mut().captured = Some(Vec::new());
    }

    /// The lines kept since [`Instance::capture_logs`].
    pub fn logs(&mut self) -> Vec<LogLine> {
        self.store.data_mut().captured.take().unwrap_or_default()
    }

    /// Calls so far, and the bytes of linear memory in use: what the
    /// instance cache looks at to decide whether to recycle.
    pub fn wear(&self) -> (u32, usize) {
        (self.calls, self.store.data().limiter.used)
    }

    fn arm(&mut self, runtime: &Runtime) {
        self.calls += 1;
        self.store.data_mut().begin_call();
        self.store
            .set_epoch_deadline(runtime.limits.deadline_ticks());
    }

    fn name(&self) -> Arc<str> {
        self.store.data().plugin.clone()
    }

    pub fn describe(&mut self, runtime: &Runtime) -> Result<wit::PluginInfo, CallError> {
        self.arm(runtime);
        let result = self.bindings.call_describe(&mut self.store);
        result.map_err(|e| classify(runtime, &self.store, &self.name(), e))
    }

    pub fn validate_config(
        &mut self,
        runtime: &Runtime,
        config: &[(String, String)],
    ) -> Result<(), CallError> {
        self.arm(runtime);
        let result = self.bindings.call_validate_config(&mut self.store, config);
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(CallError::Returned {
                plugin: self.name().to_string(),
                message,
            }),
            Err(e) => Err(classify(runtime, &self.store, &self.name(), e)),
        }
    }

    pub fn filter(
        &mut self,
        runtime: &Runtime,
        event: &wit::Event,
        webhook: &wit::Webhook,
    ) -> Result<bool, CallError> {
        self.arm(runtime);
        let result = self.bindings.call_filter(&mut self.store, event, webhook);
        result.map_err(|e| classify(runtime, &self.store, &self.name(), e))
    }

    pub fn format(
        &mut self,
        runtime: &Runtime,
        event: &wit::Event,
        webhook: &wit::Webhook,
    ) -> Result<Request, CallError> {
        self.arm(runtime);
        let result = self.bindings.call_format(&mut self.store, event, webhook);
        let plugin = self.name();
        match result {
            Ok(Ok(request)) => output::check(&plugin, request, runtime.limits.max_body),
            Ok(Err(message)) => Err(CallError::Returned {
                plugin: plugin.to_string(),
                message,
            }),
            Err(e) => Err(classify(runtime, &self.store, &plugin, e)),
        }
    }
}

/// Tells a fault (the guest was stopped) from a host failure.
fn classify(
    runtime: &Runtime,
    store: &Store<Sandbox>,
    plugin: &str,
    err: wasmtime::Error,
) -> CallError {
    let plugin = plugin.to_owned();
    if store.data().limiter.denied {
        return CallError::Fault {
            plugin,
            fault: Fault::Memory {
                limit: runtime.limits.memory,
            },
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Fault {
            plugin,
            fault: Fault::Timeout {
                deadline: runtime.limits.deadline,
            },
        },
        Some(trap) => CallError::Fault {
            plugin,
            fault: Fault::Trap {
                // A panic says what went wrong and where; the trap that
                // follows it (`unreachable` in the abort) says nothing more.
                message: match &store.data().call.panic {
                    Some(panic) => panic.clone(),
                    None => trap_message(*trap, &err),
                },
            },
        },
        None => CallError::Host {
            plugin,
            message: format!("{err:#}"),
        },
    }
}

/// The trap and the innermost guest function, which is what a plugin author
/// needs to find the fault (`unreachable` in `core::panicking::panic`).
fn trap_message(trap: Trap, err: &wasmtime::Error) -> String {
    let frame = err
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(|bt| {
            bt.frames()
                .first()
                .and_then(|f| f.func_name().map(str::to_owned))
        });
    match frame {
        Some(func) => format!("{trap} in {func}"),
        None => trap.to_string(),
    }
}
