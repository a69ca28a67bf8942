//! Write [Callisto](https://github.com/callisto-webhooks/callisto) webhook
//! plugins in Rust.
//!
//! A plugin decides, for one webhook, which registry events it wants and what
//! HTTP request announces each of them. Implement [`Plugin`] on a unit struct
//! and call [`export!`] once:
//!
//! ```
//! use callisto_plugin_sdk::{export, Event, Plugin, PluginInfo, Request, Webhook};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("hello", env!("CARGO_PKG_VERSION"), "A one-line greeting")
//!     }
//!
//!     fn format(event: &Event, _webhook: &Webhook) -> Result<Request, String> {
//!         let text = format!("{} was pushed", event.image_ref());
//!         Ok(Request::json(&serde_json::json!({ "text": text })))
//!     }
//! }
//!
//! export!(Hello);
//! ```
//!
//! The same code compiles natively, so a plugin's own `cargo test` calls
//! `Hello::format(...)` directly, with events from [`testing`]. Only a
//! `wasm32` build links the WebAssembly glue; the bindings generated from the
//! WIT contract stay private to this crate, so plugin code sees plain Rust
//! types and does not change when the bindings generator does.
//!
//! What the host does for you, and a plugin therefore must not try: signing
//! (the secret never enters a plugin; pick a [`SignatureScheme`]), sending,
//! retries and timeouts.

#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]

// The export macro expands in the plugin's crate and names this crate by its
// path; this makes the same path resolve inside the SDK too.
extern crate self as callisto_plugin_sdk;

#[cfg(not(target_arch = "wasm32"))]
mod check;
mod config;
mod event;
pub mod filter;
mod glob;
mod log;
mod request;
pub mod testing;
#[cfg(target_arch = "wasm32")]
mod wasm;

/// The repository an event belongs to ([`RepositoryRef`]).
pub use callisto_event::RepositoryRef as Repository;
pub use callisto_event::{Event, EventSource, EventType, RepositoryRef, Timestamp};
#[cfg(not(target_arch = "wasm32"))]
pub use check::{MAX_BODY, MAX_HEADERS, RESERVED_HEADERS, RequestError};
pub use config::{Config, ConfigError, STANDARD_KEYS};
pub use event::Webhook;
pub use log::{LogLevel, PANIC_PREFIX, log};
pub use request::{Request, SignatureScheme};

/// Who a plugin is and which configuration keys it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The name webhooks refer to the plugin by (lowercase letters, digits
    /// and `-`).
    pub name: String,
    pub version: String,
    /// One line saying what the plugin sends.
    pub description: String,
    /// The keys the plugin reads beyond [`STANDARD_KEYS`].
    pub config_keys: Vec<ConfigKey>,
}

impl PluginInfo {
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            description: description.to_owned(),
            config_keys: Vec::new(),
        }
    }

    /// Declares an optional configuration key.
    pub fn key(mut self, name: &str, description: &str) -> Self {
        self.config_keys.push(ConfigKey {
            name: name.to_owned(),
            description: description.to_owned(),
            required: false,
        });
        self
    }

    /// Declares a key every webhook using this plugin must set.
    pub fn required_key(mut self, name: &str, description: &str) -> Self {
        self.config_keys.push(ConfigKey {
            name: name.to_owned(),
            description: description.to_owned(),
            required: true,
        });
        self
    }
}

/// One configuration key a plugin understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigKey {
    pub name: String,
    pub description: String,
    pub required: bool,
}

/// A webhook plugin. Only [`describe`](Plugin::describe) and
/// [`format`](Plugin::format) are required; the defaults of the other two
/// give every plugin the standard configuration keys (`events`, `tags`,
/// `exclude_tags`, `tag_regex`, see [`filter`]).
///
/// The functions take no `self`: the host may run each call on a fresh
/// instance, so a plugin must not rely on state kept between calls.
pub trait Plugin {
    /// Name, version, description and configuration keys. Called when the
    /// plugin is loaded.
    fn describe() -> PluginInfo;

    /// Checks a webhook's configuration when it is saved; the message is
    /// shown to the user as it is. The default accepts the standard keys and
    /// those declared in [`describe`](Plugin::describe), checks their values,
    /// and insists on the required ones.
    fn validate_config(config: &Config) -> Result<(), String> {
        config
            .validate(&Self::describe().config_keys)
            .map_err(|e| e.to_string())
    }

    /// Whether this webhook wants this event. The default applies the
    /// standard keys ([`filter::standard`]).
    fn filter(event: &Event, webhook: &Webhook) -> bool {
        filter::standard(event, &webhook.config)
    }

    /// The request announcing `event` to `webhook`. An `Err` is recorded on
    /// the delivery as this plugin's error and is not retried.
    fn format(event: &Event, webhook: &Webhook) -> Result<Request, String>;
}

/// Exports a [`Plugin`] implementation as the component's `callisto:plugin`
/// world. Call it once per crate. On targets other than `wasm32` it expands
/// to nothing, so native tests of the plugin need no WebAssembly toolchain.
///
/// The exported functions install a panic hook on their first call: a
/// panic's message and location go to the host through [`log`] at error
/// level (see [`PANIC_PREFIX`]) before the trap, so the delivery's error,
/// the gateway's log and `callisto plugin run` say
/// `panicked at src/lib.rs:12:5: tag missing` rather than `unreachable`.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __CallistoGuest;

            impl $crate::__private::Guest for __CallistoGuest {
                fn describe() -> $crate::__private::bindings::callisto::plugin::types::PluginInfo {
                    $crate::__private::describe::<$plugin>()
                }
                fn validate_config(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::validate_config::<$plugin>(config)
                }
                fn filter(
                    event: $crate::__private::bindings::callisto::plugin::types::Event,
                    webhook: $crate::__private::bindings::callisto::plugin::types::Webhook,
                ) -> bool {
                    $crate::__private::filter::<$plugin>(event, webhook)
                }
                fn format(
                    event: $crate::__private::bindings::callisto::plugin::types::Event,
                    webhook: $crate::__private::bindings::callisto::plugin::types::Webhook,
                ) -> ::std::result::Result<
                    $crate::__private::bindings::callisto::plugin::types::Request,
                    ::std::string::String,
                > {
                    $crate::__private::format::<$plugin>(event, webhook)
                }
            }

            impl $crate::__private::HandlerGuest for __CallistoGuest {
                fn handle(
                    event: $crate::__private::bindings::callisto::plugin::types::Event,
                    webhook: $crate::__private::bindings::callisto::plugin::types::Webhook,
                ) -> ::std::result::Result<
                    ::std::option::Option<
                        $crate::__private::bindings::callisto::plugin::types::Request,
                    >,
                    ::std::string::String,
                > {
                    $crate::__private::handle::<$plugin>(event, webhook)
                }
            }

            $crate::__private::bindings::__export_plugin_world!(
                __CallistoGuest with_types_in $crate::__private::bindings
            );
        };
    };
}

#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub mod __private {
    pub use crate::wasm::bindings::exports::callisto::plugin::handler::Guest as HandlerGuest;
    pub use crate::wasm::bindings::{self, Guest};
    pub use crate::wasm::{describe, filter, format, handle, validate_config};
    pub use wit_bindgen;
}
