//! The WebAssembly side: bindings generated from `wit/`, and conversions
//! between them and the SDK's own types. Kept private so that plugin code
//! depends only on the SDK's API.

use crate::log::PANIC_PREFIX;
use crate::{
    Config, Event, EventSource, EventType, LogLevel, Plugin, Repository, Request, SignatureScheme,
    Timestamp, Webhook,
};

pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "callisto:plugin/plugin-with-handle@0.1.0",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "callisto_plugin_sdk::__private::bindings",
        runtime_path: "callisto_plugin_sdk::__private::wit_bindgen::rt",
    });
}

use bindings::callisto::plugin::types as wit;

/// Installs, once per instance, a panic hook that sends the panic's message
/// and location to the host. Without it the panic message goes to the
/// guest's stderr, which the sandbox discards, and the host sees only an
/// anonymous `unreachable` trap.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info.payload_as_str().unwrap_or("Box<dyn Any>");
            let line = match info.location() {
                Some(at) => format!(
                    "{PANIC_PREFIX}{}:{}:{}: {message}",
                    at.file(),
                    at.line(),
                    at.column()
                ),
                None => format!("{PANIC_PREFIX}an unknown location: {message}"),
            };
            log(LogLevel::Error, &line);
        }));
    });
}

pub fn log(level: LogLevel, message: &str) {
    let level = match level {
        LogLevel::Trace => wit::LogLevel::Trace,
        LogLevel::Debug => wit::LogLevel::Debug,
        LogLevel::Info => wit::LogLevel::Info,
        LogLevel::Warn => wit::LogLevel::Warn,
        LogLevel::Error => wit::LogLevel::Error,
    };
    bindings::log(level, message);
}

pub fn describe<P: Plugin>() -> wit::PluginInfo {
    install_panic_hook();
    let info = P::describe();
    wit::PluginInfo {
        name: info.name,
        version: info.version,
        description: info.description,
        config_keys: info
            .config_keys
            .into_iter()
            .map(|k| wit::ConfigKey {
                name: k.name,
                description: k.description,
                required: k.required,
            })
            .collect(),
    }
}

pub fn validate_config<P: Plugin>(config: Vec<(String, String)>) -> Result<(), String> {
    install_panic_hook();
    P::validate_config(&Config::new(config))
}

pub fn filter<P: Plugin>(event: wit::Event, webhook: wit::Webhook) -> bool {
    install_panic_hook();
    P::filter(&event.into(), &webhook.into())
}

pub fn format<P: Plugin>(event: wit::Event, webhook: wit::Webhook) -> Result<wit::Request, String> {
    install_panic_hook();
    P::format(&event.into(), &webhook.into()).map(Into::into)
}

pub fn handle<P: Plugin>(
    event: wit::Event,
    webhook: wit::Webhook,
) -> Result<Option<wit::Request>, String> {
    install_panic_hook();
    let (event, webhook) = (event.into(), webhook.into());
    if !P::filter(&event, &webhook) {
        return Ok(None);
    }
    P::format(&event, &webhook).map(|r| Some(r.into()))
}

impl From<wit::Event> for Event {
    fn from(e: wit::Event) -> Self {
        Event {
            id: e.id,
            kind: match e.type_ {
                wit::EventType::ImagePushed => EventType::ImagePushed,
                wit::EventType::ImageDeleted => EventType::ImageDeleted,
                wit::EventType::WebhookTest => EventType::WebhookTest,
            },
            source: match e.source {
                wit::EventSource::Local => EventSource::Local,
                wit::EventSource::Remote => EventSource::Remote,
            },
            repository: Repository {
                id: e.repository.id,
                name: e.repository.name,
                registry: e.repository.registry,
            },
            tag: e.tag,
            digest: e.digest,
            previous_digest: e.previous_digest,
            media_type: e.media_type,
            size: e.size,
            actor: e.actor,
            occurred_at: Timestamp {
                seconds: e.occurred_at.seconds,
                nanoseconds: e.occurred_at.nanoseconds,
            },
        }
    }
}

impl From<wit::Webhook> for Webhook {
    fn from(w: wit::Webhook) -> Self {
        Webhook {
            id: w.id,
            url: w.url,
            config: Config::new(w.config),
        }
    }
}

impl From<Request> for wit::Request {
    fn from(r: Request) -> Self {
        wit::Request {
            content_type: r.content_type,
            headers: r.headers,
            body: r.body,
            signature: match r.signature {
                SignatureScheme::StandardWebhooks => wit::SignatureScheme::StandardWebhooks,
                SignatureScheme::Europa => wit::SignatureScheme::Europa,
                SignatureScheme::None => wit::SignatureScheme::None,
            },
        }
    }
}
