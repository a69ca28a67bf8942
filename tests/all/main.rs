//! Callisto's end-to-end tests, in one binary so that wasmtime and the
//! gateway are linked once.

mod api;
mod builtins;
mod cli_admin;
mod cli_plugin;
mod coalesce;
mod console;
mod delivery;
mod durability;
mod faults;
mod hostile;
mod ingest;
mod openapi;
mod ops;
mod plugin_host;
mod proxy;
mod reconcile;
mod registry_push;
mod remote;
mod replicas;
mod store_engines;
mod store_ops;
mod tls;
mod vendors;

/// A compiled-plugin cache shared by every test (and every run), so that
/// each test's plugin host does not compile the built-ins again. Entries are
/// keyed by the component's hash, so a changed plugin never hits a stale one.
pub fn shared_cache_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache");
    std::fs::create_dir_all(&dir).expect("create the shared cache directory");
    dir
}

/// A gateway for one test, sharing the compiled-plugin cache.
pub async fn gateway() -> callisto::test_util::TestGateway {
    gateway_with(|_| {}).await
}

pub async fn gateway_with(
    tweak: impl FnOnce(&mut callisto::config::Config),
) -> callisto::test_util::TestGateway {
    callisto::test_util::TestGateway::start_with(|c| {
        c.plugins.cache_dir = Some(shared_cache_dir());
        tweak(c);
    })
    .await
}
