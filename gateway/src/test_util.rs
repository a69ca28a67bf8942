//! Starting a real gateway for tests, in the manner of mini-redis's server
//! tests: the whole server on `127.0.0.1:0`, its state in a temporary
//! directory, spoken to over HTTP.

use std::time::Duration;

use crate::config::Config;
use crate::server::{self, Running};

/// A gateway running in this process.
pub struct TestGateway {
    running: Option<Running>,
    pub data: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `http://127.0.0.1:PORT` of the registry proxy, when configured.
    pub proxy_url: Option<String>,
    pub admin_token: String,
    pub ingest_token: String,
    pub http: reqwest::Client,
}

/// A configuration for tests: a free port, a temporary data directory,
/// loopback receivers allowed, short timeouts.
pub fn test_config(data: &std::path::Path) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.to_owned(),
        allow_private_targets: true,
        admin_token: Some("test-admin-token-0123456789".into()),
        ingest_token: Some("test-ingest-token-0123456789".into()),
        ..Config::default()
    };
    config.delivery.timeout_secs = 5;
    config.delivery.connect_timeout_secs = 2;
    config
}

impl TestGateway {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with the test configuration changed by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let data = tempfile::tempdir().expect("temporary data directory");
        let mut config = test_config(data.path());
        tweak(&mut config);
        Self::start_in(data, config).await
    }

    /// Starts on an existing data directory (a restart).
    pub async fn start_in(data: tempfile::TempDir, config: Config) -> Self {
        let running = server::start(config).await.expect("the gateway starts");
        let url = format!("http://{}", running.addr);
        let proxy_url = running.proxy_addr.map(|a| format!("http://{a}"));
        let admin_token = running.app.tokens.admin.clone();
        let ingest_token = running.app.tokens.ingest.clone();
        Self {
            running: Some(running),
            data,
            url,
            proxy_url,
            admin_token,
            ingest_token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .no_proxy()
                .build()
                .unwrap(),
        }
    }

    pub fn app(&self) -> &std::sync::Arc<crate::api::App> {
        &self.running.as_ref().expect("running").app
    }

    /// A request to the admin API, with the admin token.
    pub fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(&self.admin_token)
    }

    /// The typed admin API client, with the admin token.
    pub fn client(&self) -> crate::client::Client {
        crate::client::Client::new(&self.url, &self.admin_token, self.http.clone())
    }

    /// The Prometheus text of `/metrics` (which needs no token).
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the metrics text")
    }

    /// Stops gracefully and hands back the data directory, for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
        self.data
    }
}
