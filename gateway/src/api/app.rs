//! What every request handler may use: the settings, the store, the
//! pipeline's handles and the outbound client. Built by `server` at start.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::config::{Config, Tokens};
use crate::filtered::FilteredEvents;
use crate::metrics::Metrics;
use crate::net::Policy;
use crate::plugin::PluginHost;
use crate::poll::Poller;
use crate::seal::Sealer;
use crate::store::Store;

/// Everything a request handler may need.
pub struct App {
    pub config: Config,
    pub tokens: Tokens,
    pub store: Store,
    pub plugins: Arc<PluginHost>,
    pub poller: Poller,
    pub metrics: Arc<Metrics>,
    /// What each webhook's filter declined lately (fan-out records it).
    pub filtered: Arc<FilteredEvents>,
    pub client: reqwest::Client,
    /// The guarded client for registries, and the pace they are asked at:
    /// an ingest may confirm a tag with its registry.
    pub registry_client: reqwest::Client,
    pub registry_budget: crate::poll::registry::Budget,
    /// The webhook clients, with a client certificate or without.
    pub webhook_clients: Arc<crate::net::client::WebhookClients>,
    pub policy: Arc<Policy>,
    pub sealer: Sealer,
    pub ready: AtomicBool,
    /// Held shared while a webhook is checked against the installed plugins
    /// and saved, exclusively while a plugin is removed: a webhook can never
    /// be saved naming a plugin that is being removed.
    pub plugin_users: tokio::sync::RwLock<()>,
    /// Console sign-ins.
    pub sessions: super::session::Sessions,
}
