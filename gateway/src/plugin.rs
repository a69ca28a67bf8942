//! The plugin host: WebAssembly components that decide each webhook's
//! filtering and payload, run in a sandbox with capped memory and CPU.
//!
//! - [`PluginHost`] loads plugins (built-in ones embedded in the binary, and
//!   users' from `<data dir>/plugins/*.wasm`), checks each against the
//!   `callisto:plugin` world, caches compiled code on disk and swaps
//!   replacements atomically.
//! - [`Plugin::run`] and friends call a plugin on a fresh instance: what Test
//!   Webhook and configuration checks use.
//! - [`Runner`] keeps one warm instance per webhook for fan-out: instantiating
//!   costs several times more than the calls themselves, and an instance that
//!   only ever sees one webhook's events cannot leak another's.

mod cache;
mod check;
pub mod error;
mod instance;
mod output;
mod runtime;
mod sandbox;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use wasmtime::component::ComponentExportIndex;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use crate::records::{Request, SignatureScheme};
pub use error::{CallError, Fault, LoadError};
pub use runtime::Limits;
pub use sandbox::LogLine;

use cache::ArtifactCache;
use instance::Instance;
use runtime::Runtime;
use sandbox::Sandbox;

use crate::event::{Event, EventSource, EventType};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "callisto:plugin/plugin@0.1.0",
    });
    pub use self::callisto::plugin::types as wit;
}

use bindings::wit;

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The interface of world `plugin-with-handle` that exports `handle`.
const HANDLER_INTERFACE: &str = "callisto:plugin/handler@0.1.0";

/// [`output::check`] for the fuzzer, which cannot build a plugin's reply.
#[cfg(feature = "fuzzing")]
pub fn check_output_for_fuzzing(
    content_type: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    scheme: u8,
    max_body: usize,
) -> Result<Request, CallError> {
    let signature = match scheme % 3 {
        0 => wit::SignatureScheme::StandardWebhooks,
        1 => wit::SignatureScheme::Europa,
        _ => wit::SignatureScheme::None,
    };
    output::check(
        "fuzz",
        wit::Request {
            content_type,
            headers,
            body,
            signature,
        },
        max_body,
    )
}

/// The names of the plugins compiled into the binary.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN_PLUGINS.iter().map(|(name, _)| *name)
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    /// Keys the plugin reads beyond the standard `events`, `tags`,
    /// `exclude_tags` and `tag_regex`.
    pub config_keys: Vec<ConfigKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ConfigKey {
    pub name: String,
    pub description: String,
    pub required: bool,
}

impl From<wit::PluginInfo> for PluginInfo {
    fn from(info: wit::PluginInfo) -> Self {
        Self {
            name: info.name,
            version: info.version,
            description: info.description,
            config_keys: info
                .config_keys
                .into_iter()
                .map(|k| ConfigKey {
                    name: k.name,
                    description: k.description,
                    required: k.required,
                })
                .collect(),
        }
    }
}

/// An event converted once into the form plugins receive, then passed to
/// every webhook's plugin.
pub struct EventInput(wit::Event);

impl From<&Event> for EventInput {
    fn from(e: &Event) -> Self {
        let t = e.occurred_at;
        EventInput(wit::Event {
            id: e.id.clone(),
            type_: match e.kind {
                EventType::ImagePushed => wit::EventType::ImagePushed,
                EventType::ImageDeleted => wit::EventType::ImageDeleted,
                EventType::WebhookTest => wit::EventType::WebhookTest,
            },
            // The plugin world (0.1.0) knows two sources; a new case would
            // break every installed plugin. A vendor's webhook is, to a
            // plugin, what it has always been: the registry told us.
            source: match e.source {
                EventSource::Remote => wit::EventSource::Remote,
                // The 0.1.0 plugin world knows two sources, and a new case
                // is a breaking change there (see wit/plugin.wit): plugins
                // of this world see a registry's own pushes, and the
                // proxy's, as `local`.
                EventSource::Local
                | EventSource::Harbor
                | EventSource::Dockerhub
                | EventSource::Quay
                | EventSource::Github
                | EventSource::Zot
                | EventSource::Proxy => wit::EventSource::Local,
            },
            repository: wit::Repository {
                id: e.repository.id.clone(),
                name: e.repository.name.clone(),
                registry: e.repository.registry.clone(),
            },
            tag: e.tag.clone(),
            digest: e.digest.clone(),
            previous_digest: e.previous_digest.clone(),
            media_type: e.media_type.clone(),
            size: e.size,
            actor: e.actor.clone(),
            occurred_at: wit::Timestamp {
                seconds: t.unix_seconds(),
                nanoseconds: t.nanosecond(),
            },
        })
    }
}

/// The webhook as a plugin sees it: no secret.
pub struct WebhookInput(wit::Webhook);

impl WebhookInput {
    pub fn new(id: &str, url: &str, config: &[(String, String)]) -> Self {
        WebhookInput(wit::Webhook {
            id: id.to_owned(),
            url: url.to_owned(),
            config: config.to_vec(),
        })
    }

    pub fn id(&self) -> &str {
        &self.0.id
    }
}

/// What a plugin decided for one event and one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send this request (checked: the host will send it as it is).
    Send(Request),
    /// The webhook does not want the event.
    Filtered(Filtered),
}

impl Verdict {
    /// The request to send; `None` when filtered out.
    pub fn into_request(self) -> Option<Request> {
        match self {
            Verdict::Send(request) => Some(request),
            Verdict::Filtered(_) => None,
        }
    }
}

/// Why a plugin's filter declined an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// What the plugin said: the SDK's standard filter names the rule and
    /// what did not match (`tags=v*: tag `latest` matches none of the
    /// globs`), a plugin's own filter says what it likes with
    /// `filter::decline`. `None`: it gave no reason (a plugin built without
    /// the SDK, or with an SDK from before reasons).
    pub reason: Option<String>,
}

impl Filtered {
    /// The rule that declined, for counting: `events`, `tags`,
    /// `exclude_tags`, `tag_regex`, `plugin` (the plugin's own) or
    /// `unexplained`.
    pub fn rule(&self) -> &'static str {
        self.reason
            .as_deref()
            .map_or("unexplained", callisto_plugin_sdk::filter::rule_of)
    }
}

impl std::fmt::Display for Filtered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reason {
            Some(reason) => f.write_str(reason),
            None => f.write_str("the plugin's filter declined it without saying why"),
        }
    }
}

/// A loaded plugin, ready to instantiate. Shared by `Arc`: replacing a
/// plugin swaps the host's map entry, and calls in flight finish on the
/// `Arc` they hold.
pub struct Plugin {
    name: Arc<str>,
    info: PluginInfo,
    sha256: String,
    size: usize,
    builtin: bool,
    pre: bindings::PluginPre<Sandbox>,
    /// The `handle` export, when the component has it (SDK plugins do).
    handle: Option<ComponentExportIndex>,
    runtime: Arc<Runtime>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.info.version)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Hex SHA-256 of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn is_builtin(&self) -> bool {
        self.builtin
    }

    fn instantiate(&self) -> Result<Instance, CallError> {
        Instance::new(&self.runtime, &self.pre, self.handle.as_ref(), &self.name)
    }

    /// Whether fan-out reaches this plugin in one call per event (the
    /// `handle` export) rather than two.
    pub fn has_handle(&self) -> bool {
        self.handle.is_some()
    }

    /// Asks the plugin whether it accepts a webhook configuration.
    pub fn validate_config(&self, config: &[(String, String)]) -> Result<(), CallError> {
        self.instantiate()?.validate_config(&self.runtime, config)
    }

    /// `filter`, then `format` if the webhook wants the event, on a fresh
    /// instance. `Ok(None)`: filtered out.
    pub fn run(
        &self,
        event: &EventInput,
        webhook: &WebhookInput,
    ) -> Result<Option<Request>, CallError> {
        self.instantiate()?
            .run(&self.runtime, &event.0, &webhook.0)
            .map(Verdict::into_request)
    }

    /// Like [`Plugin::run`], with the reason of a filtered event and every
    /// line the plugin logged (whatever the gateway's log filter keeps):
    /// what `callisto plugin run` shows.
    pub fn run_logged(
        &self,
        event: &EventInput,
        webhook: &WebhookInput,
    ) -> (Result<Verdict, CallError>, Vec<LogLine>) {
        let mut instance = match self.instantiate() {
            Ok(instance) => instance,
            Err(e) => return (Err(e), Vec::new()),
        };
        instance.capture_logs();
        let verdict = instance.run(&self.runtime, &event.0, &webhook.0);
        (verdict, instance.logs())
    }

    /// Test Webhook's call: `filter`, then `format` whatever `filter` said
    /// (a test reaches the receiver whatever the webhook filters), on one
    /// fresh instance.
    pub fn test(&self, event: &EventInput, webhook: &WebhookInput) -> Result<Tested, CallError> {
        let mut instance = self.instantiate()?;
        let filtered = match instance.filter(&self.runtime, &event.0, &webhook.0)? {
            true => None,
            false => Some(instance.declined()),
        };
        let request = instance.format(&self.runtime, &event.0, &webhook.0)?;
        Ok(Tested { request, filtered })
    }
}

/// What Test Webhook gets from a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tested {
    /// What `format` made of the event.
    pub request: Request,
    /// Set when the webhook's filter declines the event: a real event like
    /// it would not be sent.
    pub filtered: Option<Filtered>,
}

/// Calls plugins for fan-out, keeping one warm instance per webhook.
///
/// Isolation: an instance is keyed by webhook id and by the exact plugin it
/// was made from, so no webhook's calls ever run in an instance that saw
/// another webhook's events, and a replaced plugin is never called through a
/// stale instance. An instance is dropped after any fault, after
/// [`Runner::MAX_CALLS`] calls, and once its memory passes half the cap, so
/// a leaking plugin is recycled before it fails a call.
pub struct Runner {
    capacity: usize,
    slots: HashMap<String, Slot>,
    clock: u64,
}

struct Slot {
    plugin: Arc<Plugin>,
    instance: Instance,
    last_used: u64,
}

impl Runner {
    pub const MAX_CALLS: u32 = 10_000;

    /// A runner keeping at most `capacity` warm instances (least recently
    /// used evicted first). Keep it below [`Limits::instances`].
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            slots: HashMap::new(),
            clock: 0,
        }
    }

    /// Like [`Plugin::run`], on the webhook's warm instance, with the
    /// reason of a filtered event.
    pub fn run(
        &mut self,
        plugin: &Arc<Plugin>,
        event: &EventInput,
        webhook: &WebhookInput,
    ) -> Result<Verdict, CallError> {
        self.clock += 1;
        let key = webhook.id();
        let fresh = match self.slots.get(key) {
            Some(slot) => !Arc::ptr_eq(&slot.plugin, plugin),
            None => true,
        };
        if fresh {
            self.slots.remove(key);
            if self.slots.len() >= self.capacity {
                self.evict_oldest();
            }
            let instance = plugin.instantiate()?;
            self.slots.insert(
                key.to_owned(),
                Slot {
                    plugin: plugin.clone(),
                    instance,
                    last_used: 0,
                },
            );
        }
        let slot = self.slots.get_mut(key).expect("inserted above");
        slot.last_used = self.clock;
        let result = slot.instance.run(&plugin.runtime, &event.0, &webhook.0);
        let (calls, memory) = slot.instance.wear();
        let worn = calls >= Self::MAX_CALLS || memory > plugin.runtime.limits.memory / 2;
        let broken = matches!(
            result,
            Err(CallError::Fault { .. } | CallError::Host { .. })
        );
        if worn || broken {
            self.slots.remove(key);
        }
        result
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn evict_oldest(&mut self) {
        if let Some(key) = self
            .slots
            .iter()
            .min_by_key(|(_, s)| s.last_used)
            .map(|(k, _)| k.clone())
        {
            self.slots.remove(&key);
        }
    }
}

/// Where a host keeps files. Both are optional: without them, plugins are
/// compiled at every start and uploads live in memory only.
#[derive(Debug, Clone, Default)]
pub struct HostDirs {
    /// Compiled components (`<data>/cache`).
    pub cache: Option<PathBuf>,
    /// Installed plugins (`<data>/plugins`).
    pub plugins: Option<PathBuf>,
}

impl HostDirs {
    /// The gateway's layout inside its data directory.
    pub fn in_data_dir(data: &Path) -> Self {
        Self {
            cache: Some(data.join("cache")),
            plugins: Some(data.join("plugins")),
        }
    }
}

/// Every plugin the gateway knows, by name.
pub struct PluginHost {
    runtime: Arc<Runtime>,
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
    /// `<data dir>/plugins`, where uploaded plugins live.
    dir: Option<PathBuf>,
    cache: Option<ArtifactCache>,
    /// Files in `dir` that did not load at start, with the reason.
    startup_errors: Mutex<Vec<(PathBuf, String)>>,
    /// Serializes installs and removals (the map swap itself is atomic).
    install_lock: Mutex<()>,
}

impl PluginHost {
    /// A host with the built-in plugins, the compiled-code cache and the
    /// installed plugins of `dirs`. An installed plugin that does not load is
    /// logged and skipped, never fatal: the gateway must come up to fix it.
    pub fn new(limits: Limits, dirs: HostDirs) -> Result<Self, LoadError> {
        let runtime = Arc::new(Runtime::new(limits)?);
        let cache = match dirs.cache {
            Some(dir) => Some(ArtifactCache::new(dir, &runtime.engine)?),
            None => None,
        };
        let host = Self {
            runtime,
            plugins: RwLock::new(BTreeMap::new()),
            dir: dirs.plugins,
            cache,
            startup_errors: Mutex::new(Vec::new()),
            install_lock: Mutex::new(()),
        };
        for (name, wasm) in BUILTIN_PLUGINS {
            let plugin = host.load_as(wasm, true, name)?;
            if plugin.name() != *name {
                return Err(LoadError::NameMismatch {
                    name: name.to_string(),
                    described: plugin.name().to_owned(),
                });
            }
            host.insert(plugin);
        }
        host.load_dir()?;
        Ok(host)
    }

    fn load_dir(&self) -> Result<(), LoadError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        std::fs::create_dir_all(dir).map_err(|source| LoadError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        paths.sort();
        for path in paths {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let loaded = std::fs::read(&path)
                .map_err(|source| LoadError::Io {
                    path: path.display().to_string(),
                    source,
                })
                .and_then(|wasm| self.load_named(&stem, &wasm));
            match loaded {
                Ok(plugin) => {
                    self.insert(plugin);
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), "plugin not loaded: {e}");
                    self.startup_errors
                        .lock()
                        .unwrap()
                        .push((path.clone(), e.to_string()));
                }
            }
        }
        Ok(())
    }

    /// Compiles (or loads from the cache) and checks a component, and asks
    /// it who it is. Does not install it.
    pub fn load(&self, wasm: &[u8]) -> Result<Plugin, LoadError> {
        self.load_as(wasm, false, "component")
    }

    /// `label` names the plugin in errors until it has described itself.
    fn load_as(&self, wasm: &[u8], builtin: bool, label: &str) -> Result<Plugin, LoadError> {
        let sha256 = hex(&Sha256::digest(wasm));
        let engine = &self.runtime.engine;
        let component = match &self.cache {
            Some(cache) => cache.load_or_compile(engine, wasm, &sha256)?,
            None => cache::compile(engine, wasm)?,
        };
        check::check_world(engine, &component)?;
        let instance_pre = self
            .runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WorldMismatch {
                reason: format!("{e:#}"),
            })?;
        let pre = bindings::PluginPre::new(instance_pre).map_err(|e| LoadError::WorldMismatch {
            reason: format!("{e:#}"),
        })?;
        let handle = component
            .get_export_index(None, HANDLER_INTERFACE)
            .and_then(|interface| component.get_export_index(Some(&interface), "handle"));
        let provisional: Arc<str> = Arc::from(label);
        // Instantiating also type-checks `handle`: a mismatch is the
        // component's fault, reported as not fitting.
        let mut instance = Instance::new(&self.runtime, &pre, handle.as_ref(), &provisional)
            .map_err(|e| match e {
                CallError::Host { message, .. } if handle.is_some() => LoadError::WorldMismatch {
                    reason: format!("export `handle` does not have the type of world plugin-with-handle: {message}"),
                },
                other => LoadError::Describe(other),
            })?;
        let info: PluginInfo = instance
            .describe(&self.runtime)
            .map_err(LoadError::Describe)?
            .into();
        validate_name(&info.name)?;
        Ok(Plugin {
            name: Arc::from(info.name.as_str()),
            info,
            sha256,
            size: wasm.len(),
            builtin,
            pre,
            handle,
            runtime: self.runtime.clone(),
        })
    }

    fn load_named(&self, name: &str, wasm: &[u8]) -> Result<Plugin, LoadError> {
        validate_name(name)?;
        let plugin = self.load_as(wasm, false, name)?;
        if plugin.name() != name {
            return Err(LoadError::NameMismatch {
                name: name.to_owned(),
                described: plugin.name().to_owned(),
            });
        }
        if BUILTIN_PLUGINS.iter().any(|(b, _)| *b == name) {
            return Err(LoadError::Builtin {
                name: name.to_owned(),
            });
        }
        Ok(plugin)
    }

    fn insert(&self, plugin: Plugin) -> Arc<Plugin> {
        let plugin = Arc::new(plugin);
        self.plugins
            .write()
            .unwrap()
            .insert(plugin.name().to_owned(), plugin.clone());
        plugin
    }

    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.read().unwrap().get(name).cloned()
    }

    /// Every loaded plugin, by name.
    pub fn list(&self) -> Vec<Arc<Plugin>> {
        self.plugins.read().unwrap().values().cloned().collect()
    }

    /// Files of the plugin directory that did not load at start.
    pub fn startup_errors(&self) -> Vec<(PathBuf, String)> {
        self.startup_errors.lock().unwrap().clone()
    }

    /// Validates, compiles and stores an uploaded plugin under `name`, then
    /// swaps it in. Nothing changes unless all of that succeeds.
    pub fn install(&self, name: &str, wasm: &[u8]) -> Result<Arc<Plugin>, LoadError> {
        let plugin = self.prepare(name, wasm)?;
        self.put(plugin, wasm)
    }

    /// Validates and compiles a plugin to be installed under `name`,
    /// without installing it: so that it can be kept in the store first.
    pub fn prepare(&self, name: &str, wasm: &[u8]) -> Result<Plugin, LoadError> {
        self.load_named(name, wasm)
    }

    /// Installs a plugin [`prepare`](Self::prepare)d from `wasm`: stores it
    /// in the plugin directory, then swaps it in.
    pub fn put(&self, plugin: Plugin, wasm: &[u8]) -> Result<Arc<Plugin>, LoadError> {
        let name = plugin.name().to_owned();
        let Some(dir) = &self.dir else {
            return Ok(self.insert(plugin));
        };
        let _guard = self.install_lock.lock().unwrap();
        let path = dir.join(format!("{name}.wasm"));
        cache::write_atomic(&path, wasm).map_err(|source| LoadError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(self.insert(plugin))
    }

    /// Removes an installed plugin (the caller checks that no webhook uses
    /// it). Built-in plugins cannot be removed.
    pub fn remove(&self, name: &str) -> Result<(), LoadError> {
        let _guard = self.install_lock.lock().unwrap();
        match self.get(name) {
            None => {
                return Err(LoadError::NotFound {
                    name: name.to_owned(),
                });
            }
            Some(p) if p.is_builtin() => {
                return Err(LoadError::Builtin {
                    name: name.to_owned(),
                });
            }
            Some(_) => {}
        }
        if let Some(dir) = &self.dir {
            let path = dir.join(format!("{name}.wasm"));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(LoadError::Io {
                        path: path.display().to_string(),
                        source,
                    });
                }
            }
        }
        self.plugins.write().unwrap().remove(name);
        Ok(())
    }

    pub fn limits(&self) -> &Limits {
        &self.runtime.limits
    }
}

fn validate_name(name: &str) -> Result<(), LoadError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(LoadError::InvalidName {
            name: name.to_owned(),
        })
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
