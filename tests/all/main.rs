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

/// The gateway binary as a process with its state in `data`, sharing the
/// compiled-plugin cache: for tests that `kill -9` or restart it.
pub async fn gateway_process(data: &std::path::Path) -> callisto_tests::gateway::GatewayProcess {
    callisto_tests::gateway::GatewayProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_callisto-e2e")),
        data,
        &[(
            "CALLISTO_PLUGINS__CACHE_DIR",
            shared_cache_dir().to_str().unwrap(),
        )],
    )
    .await
}

/// An HTTP client for a gateway process, and `demo/app` created on it
/// with `webhooks` (the API's JSON form).
pub async fn demo_repository_at(url: &str, webhooks: serde_json::Value) -> reqwest::Client {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let created = http
        .post(format!("{url}/api/v1/repositories"))
        .bearer_auth(callisto_tests::gateway::ADMIN_TOKEN)
        .json(&serde_json::json!({"name": "demo/app", "webhooks": webhooks}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    http
}
