//! The wasmtime engine every plugin of a host shares: configuration, the
//! linker, and the thread that advances epochs.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use super::bindings;
use super::error::LoadError;
use super::sandbox::Sandbox;

/// What a plugin may use. The defaults suit formatting a JSON payload with
/// room to spare; raising them trades gateway memory for plugin freedom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// CPU time of one call (`filter`, `format`, ...). Enforced with epoch
    /// interruption, so it is wall-clock time in steps of [`Limits::tick`].
    pub deadline: Duration,
    /// Linear memory of one instance, in bytes.
    pub memory: usize,
    /// Size of the body `format` may return, in bytes.
    pub max_body: usize,
    /// How many instances may exist at once (cached per webhook plus those
    /// in use). Bounds the pooling allocator's reservation.
    pub instances: u32,
    /// How often the epoch advances; the deadline is rounded up to it.
    pub tick: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(100),
            memory: 16 << 20,
            max_body: callisto_plugin_sdk::MAX_BODY,
            instances: 256,
            tick: Duration::from_millis(5),
        }
    }
}

impl From<&crate::config::PluginConfig> for Limits {
    fn from(config: &crate::config::PluginConfig) -> Self {
        Self {
            deadline: Duration::from_millis(config.deadline_ms),
            memory: config.memory_mib << 20,
            max_body: config.max_body_kib << 10,
            instances: config.instances,
            ..Limits::default()
        }
    }
}

impl Limits {
    /// The deadline in epoch ticks. At least two: with one, the tick already
    /// under way may end the call at once.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        let tick = self.tick.as_nanos().max(1);
        (self.deadline.as_nanos().div_ceil(tick) as u64).max(1) + 1
    }
}

pub(crate) struct Runtime {
    pub engine: Engine,
    pub linker: Linker<Sandbox>,
    pub limits: Limits,
    /// Dropping it stops the epoch thread.
    _ticker: mpsc::Sender<()>,
}

impl Runtime {
    pub fn new(limits: Limits) -> Result<Self, LoadError> {
        let mut pool = PoolingAllocationConfig::default();
        // One memory and a few tables per plugin instance (Rust guests have
        // one core module); size the pool to the instance budget.
        pool.total_component_instances(limits.instances)
            .total_core_instances(limits.instances * 2)
            .total_memories(limits.instances)
            .total_tables(limits.instances * 2)
            .max_memory_size(limits.memory)
            // Keep the first pages of a recycled slot resident: the guest's
            // stack and data live there, and zeroing beats faulting them in.
            .linear_memory_keep_resident(64 << 10)
            .table_keep_resident(16 << 10);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .parallel_compilation(true)
            // wasmtime's default 4 GiB reservation per memory slot is kept on
            // purpose: it lets compiled code skip bounds checks, which makes
            // a call ~40% cheaper than with slots sized to the memory cap.
            // It is address space, not memory: 1 TiB for 256 slots.
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| LoadError::Engine(format!("linking WASI: {e:#}")))?;
        bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(format!("linking the plugin world: {e:#}")))?;

        let (ticker, stop) = mpsc::channel::<()>();
        let tick_engine = engine.clone();
        let tick = limits.tick;
        thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(tick) {
                    tick_engine.increment_epoch();
                }
            })
            .map_err(|e| LoadError::Engine(format!("starting the epoch thread: {e}")))?;

        Ok(Self {
            engine,
            linker,
            limits,
            _ticker: ticker,
        })
    }
}
