//! Several gateways on one PostgreSQL database load the same installed
//! plugins: the store keeps each uploaded plugin, and every gateway loads
//! what it keeps at start and again whenever another gateway installs,
//! replaces or removes one (the store announces it). On redb the plugin
//! directory is the one place installed plugins are kept, and none of this
//! runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::plugin::PluginHost;
use crate::store::{Store, StoreError};

/// Makes the installed plugins those the store keeps. Returns whether the
/// store keeps plugins at all.
pub async fn sync(store: &Store, plugins: &Arc<PluginHost>) -> Result<bool, StoreError> {
    let Some(stored) = store.stored_plugins().await? else {
        return Ok(false);
    };
    let stored: HashMap<String, String> = stored.into_iter().collect();
    for (name, sha256) in &stored {
        if plugins.get(name).is_some_and(|p| p.sha256() == sha256) {
            continue;
        }
        let Some(wasm) = store.plugin_wasm(name).await? else {
            continue; // removed meanwhile: the next sync sees it gone
        };
        let host = plugins.clone();
        let name = name.clone();
        let loaded = tokio::task::spawn_blocking(move || host.install(&name, &wasm).map(|_| name))
            .await
            .expect("installing a plugin does not panic");
        match loaded {
            Ok(name) => tracing::info!(
                plugin = name,
                "loaded a plugin installed on another gateway"
            ),
            // Validated by the gateway that took the upload; one that cannot
            // load it (an older binary?) says so and carries on without it.
            Err(e) => tracing::error!("cannot load a plugin kept in the store: {e}"),
        }
    }
    for plugin in plugins.list() {
        if !plugin.is_builtin() && !stored.contains_key(plugin.name()) {
            match plugins.remove(plugin.name()) {
                Ok(()) => tracing::info!(
                    plugin = plugin.name(),
                    "removed a plugin removed on another gateway"
                ),
                Err(e) => tracing::error!("cannot remove a plugin: {e}"),
            }
        }
    }
    Ok(true)
}

/// Syncs whenever the store announces a change by another gateway (and
/// every few minutes, in case an announcement was missed), until
/// `shutdown`.
pub async fn follow(
    store: Store,
    plugins: Arc<PluginHost>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let mut changed = store.subscribe_plugins();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            c = changed.changed() => if c.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(300)) => {}
        }
        if let Err(e) = sync(&store, &plugins).await {
            tracing::warn!("cannot sync the installed plugins with the store: {e}");
        }
    }
}
