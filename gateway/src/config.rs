//! Every setting of the gateway, and where it comes from: in rising order,
//! the defaults here, a TOML file (`--config`), `CALLISTO_*` environment
//! variables, then flags. The layering is done once, in [`Config::load`].
//!
//! Environment variables name a setting by its path, upper-cased, with `__`
//! between levels: `CALLISTO_LISTEN`, `CALLISTO_DELIVERY__TIMEOUT_SECS`,
//! `CALLISTO_DELIVERY__RETRY_SCHEDULE_SECS=5,60,600`. A variable that names
//! no setting is an error, so that a typo is not silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Attempts a retry schedule may add at most.
pub const MAX_RETRY_STEPS: usize = 50;
/// The longest delay between two attempts: 30 days.
pub const MAX_RETRY_DELAY_SECS: u64 = 30 * 86_400;

/// `CALLISTO_*` variables that are not settings of `serve`.
const NOT_SETTINGS: [&str; 9] = [
    "CALLISTO_URL",
    "CALLISTO_CONFIG",
    "CALLISTO_BLESS",
    "CALLISTO_GUEST_TARGET_DIR",
    "CALLISTO_LOG_FORMAT_OVERRIDE",
    "CALLISTO_CHECKOUT",
    "CALLISTO_BUILD_COMMIT",
    "CALLISTO_BUILD_DATE",
    "CALLISTO_REGISTRY_PASSWORD",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The gateway's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP server (admin API, ingest, health, metrics).
    pub listen: SocketAddr,
    /// Where the redb file, the compiled-plugin cache, installed plugins and
    /// generated tokens live.
    pub data_dir: PathBuf,
    /// Bearer token of the admin API. Generated into
    /// `<data_dir>/admin.token` on first start when unset.
    pub admin_token: Option<String>,
    /// Bearer token registries send with their notifications. Generated into
    /// `<data_dir>/ingest.token` on first start when unset.
    pub ingest_token: Option<String>,
    /// The key (32 bytes, base64) that encrypts webhook secrets and registry
    /// passwords in the database. Generated into `<data_dir>/secret.key` on
    /// first start when unset; keep a copy apart from the data.
    pub secret_key: Option<String>,
    /// The file holding that key (base64 of 32 bytes), default
    /// `<data_dir>/secret.key`. Replicas sharing one PostgreSQL database
    /// point this at the same key (a mounted secret); a file named here is
    /// never created, so a replica missing it refuses to start rather than
    /// seal with a key of its own.
    pub seal_key_file: Option<PathBuf>,
    /// Start with a new, empty store although the data directory shows that
    /// one existed (its tokens or key are there, its `callisto.redb` is
    /// not). Off: such a start is refused, since the store was likely lost.
    pub allow_fresh_store: bool,
    /// Start with the sealing key given although the store's secrets were
    /// sealed with another (or its key file is gone). The stored webhook
    /// secrets and registry passwords must then be entered again.
    pub allow_new_secret_key: bool,
    /// Deliver to loopback, private, link-local and other non-public
    /// addresses. Off by default: a webhook URL must not reach into the
    /// gateway's own network.
    pub allow_private_targets: bool,
    /// Networks (CIDR) webhooks may reach even though they are private, e.g.
    /// `["10.20.0.0/16"]`.
    pub allowed_networks: Vec<String>,
    /// A tracing filter, e.g. `info` or `callisto=debug,info`.
    pub log: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Export traces over OTLP/HTTP (protobuf) to this collector, e.g.
    /// `http://127.0.0.1:4318`; off when unset.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported traces.
    pub otlp_service_name: String,
    /// Events and finished deliveries older than this are pruned.
    pub retention_days: u32,
    /// Where the store is: `redb` (the default: `<data_dir>/callisto.redb`)
    /// or a PostgreSQL URL, `postgres://user:pass@host:port/db` (add
    /// `?sslmode=require` for TLS), for a store in PostgreSQL.
    pub store: String,
    /// Memory for the database's page cache, in MiB. More keeps more of the
    /// log in memory; the operating system caches the file as well.
    pub store_cache_mib: usize,
    pub listener: ListenerConfig,
    pub ingest: IngestConfig,
    pub delivery: DeliveryConfig,
    pub plugins: PluginConfig,
    pub poll: PollConfig,
    pub console: ConsoleConfig,
    /// Serve HTTPS instead of HTTP.
    pub tls: Option<TlsConfig>,
    /// A registry proxy on a listener of its own: off unless configured.
    pub proxy: Option<ProxyConfig>,
}

/// The registry proxy: a second listener that forwards the distribution API
/// (`/v2/...`) to one upstream registry and records the manifest pushes and
/// deletions that pass through it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address of the proxy's listener, e.g. `0.0.0.0:5001`.
    pub listen: SocketAddr,
    /// The registry behind the proxy, e.g. `http://127.0.0.1:5000` or
    /// `https://registry.internal`. The operator chose it, so the address
    /// policy for webhooks (`allow_private_targets`) does not apply to it.
    pub upstream: String,
    /// PEM certificates trusted for an HTTPS upstream, beyond the system's
    /// and webpki's roots (a private CA).
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// Seconds to connect to the upstream (TCP and TLS).
    #[serde(default = "ProxyConfig::default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Seconds the upstream may take to answer once the request (its body
    /// included) was sent. Streaming the bodies is not limited: a large layer
    /// may take as long as it takes while bytes flow.
    #[serde(default = "ProxyConfig::default_response_timeout_secs")]
    pub response_timeout_secs: u64,
    /// Largest manifest accepted in a `PUT` (the distribution spec asks
    /// registries to accept at least 4 MiB); larger ones get `413`.
    #[serde(default = "ProxyConfig::default_max_manifest_bytes")]
    pub max_manifest_bytes: usize,
    /// Serve the proxy over HTTPS (clients such as Docker insist on it for
    /// anything but loopback).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

impl ProxyConfig {
    fn default_connect_timeout_secs() -> u64 {
        5
    }
    fn default_response_timeout_secs() -> u64 {
        120
    }
    fn default_max_manifest_bytes() -> usize {
        4 << 20
    }

    /// A proxy of `upstream` on `listen`, with the defaults.
    pub fn new(listen: SocketAddr, upstream: &str) -> Self {
        Self {
            listen,
            upstream: upstream.to_owned(),
            ca_bundle: None,
            connect_timeout_secs: Self::default_connect_timeout_secs(),
            response_timeout_secs: Self::default_response_timeout_secs(),
            max_manifest_bytes: Self::default_max_manifest_bytes(),
            tls: None,
        }
    }

    /// The upstream's origin, checked: `http` or `https`, a host, and no
    /// path, query or credentials (the client's own credentials pass
    /// through; the proxy has none of its own).
    pub fn upstream_url(&self) -> Result<url::Url, ConfigError> {
        let bad = |why: &str| {
            ConfigError::Invalid(format!(
                "proxy.upstream `{}` {why} (expected e.g. http://127.0.0.1:5000)",
                self.upstream
            ))
        };
        let url = url::Url::parse(self.upstream.trim()).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("is not an http or https URL"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("names no host"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("has a path or query; give only scheme, host and port"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "carries credentials; clients authenticate to the registry themselves",
            ));
        }
        Ok(url)
    }
}

/// The web console at `/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Seconds a console sign-in lasts; then the browser must sign in with
    /// the admin token again. Sessions live in the gateway's memory: a
    /// restart signs everyone out, and with several gateways a session is
    /// good on the one that made it.
    pub session_ttl_secs: u64,
    /// Mark the session cookie `Secure` even though the gateway itself
    /// serves plain HTTP: for a reverse proxy that terminates TLS. (It is
    /// always `Secure` when the gateway serves TLS.)
    pub secure_cookie: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            session_ttl_secs: 12 * 3600,
            secure_cookie: false,
        }
    }
}

/// The listener's certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Polling remote repositories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollConfig {
    /// Repositories polled at once.
    pub concurrency: usize,
    /// Manifest requests in flight within one poll.
    pub head_concurrency: usize,
    /// Requests per minute per registry host, shared by its repositories.
    pub requests_per_minute: u32,
    /// Tags asked per page of the tag list.
    pub page_size: usize,
    /// Timeout of one registry request.
    pub timeout_secs: u64,
    /// Longest wait between polls of a failing repository.
    pub max_backoff_secs: u64,
    /// Each interval varies by up to this fraction either way.
    pub jitter: f64,
}

impl Default for PollConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            head_concurrency: 8,
            requests_per_minute: 600,
            page_size: 1000,
            timeout_secs: 30,
            max_backoff_secs: 3600,
            jitter: 0.1,
        }
    }
}

/// Limits of the HTTP listener, against clients that hold connections
/// without using them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Seconds a connection may take to send a request's headers, counted
    /// from when the server starts waiting for them; also how long an idle
    /// keep-alive connection is kept.
    pub header_read_timeout_secs: u64,
    /// Seconds a request may take to send its whole body.
    pub body_read_timeout_secs: u64,
    /// Seconds between HTTP/2 keep-alive pings of an idle connection.
    pub idle_timeout_secs: u64,
    /// Connections open at once at most; more wait to be accepted.
    pub max_connections: usize,
    /// Seconds requests in flight may take to finish at shutdown.
    pub shutdown_grace_secs: u64,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 30,
            body_read_timeout_secs: 60,
            idle_timeout_secs: 60,
            max_connections: 1024,
            shutdown_grace_secs: 30,
        }
    }
}

/// `POST /ingest/...`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest notification body accepted; larger ones get `413`.
    pub max_body_bytes: usize,
    /// The whole `Authorization` value Harbor's webhook policy sends (its
    /// "Auth Header"), when it is not `Bearer <ingest_token>`.
    pub harbor_auth_header: Option<String>,
    /// The secret of GitHub's webhooks (`X-Hub-Signature-256`), when it is
    /// not the ingest token.
    pub github_secret: Option<String>,
    /// Docker Hub's webhooks (`/ingest/dockerhub`).
    pub dockerhub: ConfirmConfig,
    /// Quay's `repo_push` notifications (`/ingest/quay`).
    pub quay: ConfirmConfig,
}

/// A registry whose webhook names a pushed tag without its digest, and is
/// not signed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfirmConfig {
    /// The registry's API, e.g. `https://registry-1.docker.io` (Docker
    /// Hub's, the default of `[ingest.dockerhub]`) or `https://quay.io`
    /// (the default of `[ingest.quay]`): its host is the repositories'
    /// registry, and `verify` asks it.
    pub registry: Option<String>,
    /// Confirm each announced tag with a manifest `HEAD` before the event
    /// is emitted: a tag the registry does not have is refused (`422`),
    /// and the event carries the digest the registry answered, so that the
    /// push and a poll of the same repository are recognised as one.
    pub verify: bool,
}

impl ConfirmConfig {
    /// The registry's URL, or `default` when unset.
    pub fn url<'a>(&'a self, default: &'a str) -> &'a str {
        self.registry.as_deref().unwrap_or(default)
    }

    /// `host[:port]` of the registry.
    pub fn host(&self, default: &str) -> Option<String> {
        let url = url::Url::parse(self.url(default)).ok()?;
        let host = url.host_str()?;
        Some(match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        })
    }
}

/// Docker Hub's registry API, what `[ingest.dockerhub]` asks by default.
pub const DOCKER_HUB_API: &str = "https://registry-1.docker.io";
/// Quay's, for `[ingest.quay]`.
pub const QUAY_API: &str = "https://quay.io";

/// Sending webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    pub connect_timeout_secs: u64,
    /// Whole attempt, connecting to the end of the response body.
    pub timeout_secs: u64,
    /// Delays between attempts: after the first (immediate) attempt fails,
    /// the second comes after the first delay, and so on. Its length plus one
    /// is the number of attempts. A webhook may override it.
    pub retry_schedule_secs: Vec<u64>,
    /// Each delay varies by up to this fraction either way, so that retries
    /// of many deliveries do not arrive together.
    pub jitter: f64,
    /// A receiver's `Retry-After` is honoured up to this many seconds.
    pub retry_after_max_secs: u64,
    /// Attempts in flight to one webhook at most, so one slow receiver
    /// cannot take every connection.
    pub concurrency_per_webhook: usize,
    /// Attempts in flight in all.
    pub max_in_flight: usize,
    /// A webhook whose every attempt has failed for this long is disabled,
    /// with the reason (0: never). Five days, as Svix does.
    pub disable_after_failing_secs: u64,
    /// A webhook is disabled once this many of its deliveries died without
    /// a success between them (0: never).
    pub disable_after_dead: u32,
    /// Response bodies are recorded up to this many bytes.
    pub response_body_limit: usize,
    /// PEM certificates trusted for HTTPS receivers, beyond the system's
    /// and webpki's roots (a private CA).
    pub ca_bundle: Option<PathBuf>,
    /// An HTTP proxy every webhook attempt goes through
    /// (`http://[user:password@]host:port`; HTTPS receivers by `CONNECT`),
    /// for networks with no direct egress. The address policy still applies
    /// to each receiver, resolved by the gateway before the request.
    pub proxy: Option<String>,
}

/// The plugin sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginConfig {
    /// CPU time of one plugin call.
    pub deadline_ms: u64,
    /// Linear memory of one plugin instance.
    pub memory_mib: usize,
    /// Largest body a plugin may return.
    pub max_body_kib: usize,
    /// Plugin instances alive at once (warm ones kept per webhook included).
    pub instances: u32,
    /// Where compiled plugins are cached (default `<data_dir>/cache`). Safe
    /// to share between gateways of the same version.
    pub cache_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("a valid address"),
            data_dir: PathBuf::from("data"),
            admin_token: None,
            ingest_token: None,
            secret_key: None,
            seal_key_file: None,
            allow_fresh_store: false,
            allow_new_secret_key: false,
            allow_private_targets: false,
            allowed_networks: Vec::new(),
            log: "info".to_owned(),
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            otlp_service_name: "callisto".to_owned(),
            retention_days: 30,
            store: "redb".to_owned(),
            store_cache_mib: 32,
            listener: ListenerConfig::default(),
            ingest: IngestConfig::default(),
            delivery: DeliveryConfig::default(),
            plugins: PluginConfig::default(),
            poll: PollConfig::default(),
            console: ConsoleConfig::default(),
            tls: None,
            proxy: None,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            harbor_auth_header: None,
            github_secret: None,
            dockerhub: ConfirmConfig::default(),
            quay: ConfirmConfig::default(),
        }
    }
}

impl DeliveryConfig {
    /// When the sender gives up on an endpoint.
    pub fn disable_policy(&self) -> crate::records::DisablePolicy {
        crate::records::DisablePolicy {
            failing_for_ms: (self.disable_after_failing_secs > 0)
                .then(|| self.disable_after_failing_secs.saturating_mul(1000)),
            dead_in_a_row: (self.disable_after_dead > 0).then_some(self.disable_after_dead),
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            connect_timeout_secs: 5,
            timeout_secs: 15,
            // Immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
            retry_schedule_secs: vec![5, 300, 1800, 7200, 18_000, 36_000, 36_000],
            jitter: 0.2,
            retry_after_max_secs: 3600,
            concurrency_per_webhook: 4,
            max_in_flight: 256,
            disable_after_failing_secs: 5 * 86_400,
            disable_after_dead: 0,
            response_body_limit: 64 << 10,
            ca_bundle: None,
            proxy: None,
        }
    }
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self {
            deadline_ms: 100,
            memory_mib: 16,
            max_body_kib: 1024,
            instances: 256,
            cache_dir: None,
        }
    }
}

/// What flags override, applied last.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub allow_private_targets: bool,
    pub log_format: Option<LogFormat>,
    pub allow_fresh_store: bool,
    pub allow_new_secret_key: bool,
    pub store: Option<String>,
}

impl Config {
    /// Whether the console's session cookie is sent over HTTPS only.
    pub fn secure_cookie(&self) -> bool {
        self.tls.is_some() || self.console.secure_cookie
    }

    /// Defaults, then `file`, then the `CALLISTO_*` variables of `env`, then
    /// `flags`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Flags,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::File {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        // Checked before the environment applies, so that an error names
        // the file when it is the file's.
        if let Some(path) = file {
            toml::Value::Table(table.clone())
                .try_into::<Config>()
                .map_err(|e| ConfigError::File {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?;
        }

        let shape = toml::Value::try_from(Config::with_every_field()).expect("config serializes");
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("CALLISTO_") && !NOT_SETTINGS.contains(&k.as_str()))
            .collect();
        vars.sort();
        for (name, raw) in vars {
            let path: Vec<String> = name["CALLISTO_".len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            let env_err = |message: String| ConfigError::Env {
                name: name.clone(),
                message,
            };
            let kind = lookup(&shape, &path).ok_or_else(|| env_err("names no setting".into()))?;
            let value = parse_env_value(kind, &raw).map_err(env_err)?;
            set(&mut table, &path, value);
        }

        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        if let Some(listen) = flags.listen {
            config.listen = listen;
        }
        if let Some(dir) = &flags.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(store) = &flags.store {
            config.store = store.clone();
        }
        if flags.allow_private_targets {
            config.allow_private_targets = true;
        }
        config.allow_fresh_store |= flags.allow_fresh_store;
        config.allow_new_secret_key |= flags.allow_new_secret_key;
        if let Some(format) = flags.log_format {
            config.log_format = format;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot: every number within a range that
    /// makes sense, named when it is not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const DAY: u64 = 86_400;
        if self.store != "redb"
            && !(self.store.starts_with("postgres://") || self.store.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid(
                "store must be `redb` or a PostgreSQL URL (postgres://user:pass@host:port/db)"
                    .into(),
            ));
        }
        let whole: [(&str, u64, u64, u64); 29] = [
            ("retention_days", self.retention_days.into(), 1, 3650),
            ("store_cache_mib", self.store_cache_mib as u64, 1, 65_536),
            (
                "listener.header_read_timeout_secs",
                self.listener.header_read_timeout_secs,
                1,
                3600,
            ),
            (
                "listener.body_read_timeout_secs",
                self.listener.body_read_timeout_secs,
                1,
                3600,
            ),
            (
                "listener.idle_timeout_secs",
                self.listener.idle_timeout_secs,
                1,
                3600,
            ),
            (
                "listener.max_connections",
                self.listener.max_connections as u64,
                1,
                1_000_000,
            ),
            (
                "listener.shutdown_grace_secs",
                self.listener.shutdown_grace_secs,
                0,
                3600,
            ),
            (
                "ingest.max_body_bytes",
                self.ingest.max_body_bytes as u64,
                1024,
                64 << 20,
            ),
            (
                "delivery.connect_timeout_secs",
                self.delivery.connect_timeout_secs,
                1,
                300,
            ),
            ("delivery.timeout_secs", self.delivery.timeout_secs, 1, 3600),
            (
                "delivery.retry_after_max_secs",
                self.delivery.retry_after_max_secs,
                0,
                30 * DAY,
            ),
            (
                "delivery.concurrency_per_webhook",
                self.delivery.concurrency_per_webhook as u64,
                1,
                1024,
            ),
            (
                "delivery.max_in_flight",
                self.delivery.max_in_flight as u64,
                1,
                100_000,
            ),
            (
                "delivery.disable_after_failing_secs",
                self.delivery.disable_after_failing_secs,
                0,
                365 * DAY,
            ),
            (
                "delivery.disable_after_dead",
                self.delivery.disable_after_dead.into(),
                0,
                1_000_000,
            ),
            (
                "delivery.response_body_limit",
                self.delivery.response_body_limit as u64,
                0,
                16 << 20,
            ),
            ("plugins.deadline_ms", self.plugins.deadline_ms, 1, 60_000),
            (
                "plugins.memory_mib",
                self.plugins.memory_mib as u64,
                1,
                4096,
            ),
            (
                "plugins.max_body_kib",
                self.plugins.max_body_kib as u64,
                1,
                65_536,
            ),
            (
                "plugins.instances",
                self.plugins.instances.into(),
                4,
                100_000,
            ),
            ("poll.concurrency", self.poll.concurrency as u64, 1, 1024),
            (
                "poll.head_concurrency",
                self.poll.head_concurrency as u64,
                1,
                1024,
            ),
            (
                "poll.requests_per_minute",
                self.poll.requests_per_minute.into(),
                1,
                1_000_000,
            ),
            ("poll.page_size", self.poll.page_size as u64, 1, 10_000),
            (
                "console.session_ttl_secs",
                self.console.session_ttl_secs,
                1,
                30 * DAY,
            ),
            ("poll.timeout_secs", self.poll.timeout_secs, 1, 600),
            (
                "poll.max_backoff_secs",
                self.poll.max_backoff_secs,
                1,
                30 * DAY,
            ),
            (
                "delivery.retry_schedule_secs (its length)",
                self.delivery.retry_schedule_secs.len() as u64,
                0,
                MAX_RETRY_STEPS as u64,
            ),
            (
                "delivery.retry_schedule_secs (each delay)",
                self.delivery
                    .retry_schedule_secs
                    .iter()
                    .copied()
                    .max()
                    .unwrap_or(0),
                0,
                MAX_RETRY_DELAY_SECS,
            ),
        ];
        for (name, value, min, max) in whole {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be between {min} and {max} (it is {value})"
                )));
            }
        }
        for (name, jitter) in [
            ("delivery.jitter", self.delivery.jitter),
            ("poll.jitter", self.poll.jitter),
        ] {
            if !(0.0..1.0).contains(&jitter) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be at least 0 and below 1 (it is {jitter})"
                )));
            }
        }
        for (name, token) in [
            ("admin_token", &self.admin_token),
            ("ingest_token", &self.ingest_token),
            ("ingest.harbor_auth_header", &self.ingest.harbor_auth_header),
            ("ingest.github_secret", &self.ingest.github_secret),
        ] {
            if token.as_ref().is_some_and(|t| t.len() < 16) {
                return Err(ConfigError::Invalid(format!(
                    "{name}: tokens must be at least 16 characters"
                )));
            }
        }
        if self.admin_token.is_some() && self.admin_token == self.ingest_token {
            return Err(ConfigError::Invalid(
                "admin_token and ingest_token must differ: a registry holding the ingest token must not get the admin API".into(),
            ));
        }
        for (name, c) in [
            ("ingest.dockerhub.registry", &self.ingest.dockerhub),
            ("ingest.quay.registry", &self.ingest.quay),
        ] {
            let Some(registry) = &c.registry else {
                continue;
            };
            let scheme_ok =
                url::Url::parse(registry).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !scheme_ok || c.host("").is_none() {
                return Err(ConfigError::Invalid(format!(
                    "{name}: `{registry}` is not an http(s) URL"
                )));
            }
        }
        if let Some(proxy) = &self.proxy {
            proxy.upstream_url()?;
            for (name, value, min, max) in [
                (
                    "proxy.connect_timeout_secs",
                    proxy.connect_timeout_secs,
                    1,
                    300,
                ),
                (
                    "proxy.response_timeout_secs",
                    proxy.response_timeout_secs,
                    1,
                    3600,
                ),
                (
                    "proxy.max_manifest_bytes",
                    proxy.max_manifest_bytes as u64,
                    64 << 10,
                    64 << 20,
                ),
            ] {
                if !(min..=max).contains(&value) {
                    return Err(ConfigError::Invalid(format!(
                        "{name} must be between {min} and {max} (it is {value})"
                    )));
                }
            }
            if proxy.listen == self.listen && self.listen.port() != 0 {
                return Err(ConfigError::Invalid(
                    "proxy.listen must differ from listen: the proxy has a listener of its own"
                        .into(),
                ));
            }
        }
        for net in &self.allowed_networks {
            let net = net.trim();
            if net.parse::<ipnet::IpNet>().is_err() && net.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "allowed_networks: `{net}` is not an address or CIDR network"
                )));
            }
        }
        Ok(())
    }

    /// The configuration with every optional field set, so that its TOML
    /// shape has every path an environment variable may name.
    fn with_every_field() -> Self {
        Self {
            admin_token: Some(String::new()),
            ingest_token: Some(String::new()),
            ingest: IngestConfig {
                harbor_auth_header: Some(String::new()),
                github_secret: Some(String::new()),
                dockerhub: ConfirmConfig {
                    registry: Some(String::new()),
                    verify: false,
                },
                quay: ConfirmConfig {
                    registry: Some(String::new()),
                    verify: false,
                },
                ..IngestConfig::default()
            },
            secret_key: Some(String::new()),
            seal_key_file: Some(PathBuf::new()),
            otlp_endpoint: Some(String::new()),
            allowed_networks: vec![String::new()],
            plugins: PluginConfig {
                cache_dir: Some(PathBuf::new()),
                ..PluginConfig::default()
            },
            delivery: DeliveryConfig {
                ca_bundle: Some(PathBuf::new()),
                ..DeliveryConfig::default()
            },
            tls: Some(TlsConfig {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            }),
            proxy: Some(ProxyConfig {
                ca_bundle: Some(PathBuf::new()),
                tls: Some(TlsConfig {
                    cert: PathBuf::new(),
                    key: PathBuf::new(),
                }),
                ..ProxyConfig::new(
                    "127.0.0.1:0".parse().expect("a valid address"),
                    "http://127.0.0.1",
                )
            }),
            ..Self::default()
        }
    }

    /// The PostgreSQL URL of `store`, if it names one (else the store is
    /// the redb file).
    pub fn postgres_url(&self) -> Option<&str> {
        (self.store != "redb").then_some(self.store.as_str())
    }

    pub fn redb_path(&self) -> PathBuf {
        self.data_dir.join("callisto.redb")
    }

    /// Where the sealing key is read from, unless `secret_key` gives it.
    pub fn seal_key_path(&self) -> PathBuf {
        self.seal_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("secret.key"))
    }
}

fn lookup<'a>(shape: &'a toml::Value, path: &[String]) -> Option<&'a toml::Value> {
    path.iter()
        .try_fold(shape, |value, key| value.as_table()?.get(key.as_str()))
        .filter(|v| !v.is_table())
}

/// Reads an environment value as the type the setting has.
fn parse_env_value(kind: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    let raw = raw.trim();
    Ok(match kind {
        toml::Value::String(_) => toml::Value::String(raw.to_owned()),
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.parse()
                .map_err(|_| format!("`{raw}` is not a whole number"))?,
        ),
        toml::Value::Float(_) => toml::Value::Float(
            raw.parse()
                .map_err(|_| format!("`{raw}` is not a number"))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" | "" => false,
            _ => return Err(format!("`{raw}` is not true or false")),
        }),
        toml::Value::Array(items) => {
            let item_kind = items
                .first()
                .cloned()
                .unwrap_or(toml::Value::String(String::new()));
            let list = raw.trim_start_matches('[').trim_end_matches(']');
            toml::Value::Array(
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|item| parse_env_value(&item_kind, item.trim_matches('"')))
                    .collect::<Result<_, _>>()?,
            )
        }
        other => {
            return Err(format!(
                "cannot be set from the environment ({})",
                other.type_str()
            ));
        }
    })
}

fn set(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let (last, parents) = path.split_last().expect("a path has a key");
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        current = entry.as_table_mut().expect("made a table above");
    }
    current.insert(last.clone(), value);
}

/// The admin and ingest tokens: configured, or read from (or generated
/// into) files in the data directory, readable by the owner only.
#[derive(Clone)]
pub struct Tokens {
    pub admin: String,
    pub ingest: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens { .. }")
    }
}

impl Tokens {
    /// Returns the tokens and the files it generated (to say where they
    /// are, never what they are).
    pub fn resolve(config: &Config) -> std::io::Result<(Tokens, Vec<PathBuf>)> {
        let mut generated = Vec::new();
        let mut get = |configured: &Option<String>, file: &str| -> std::io::Result<String> {
            if let Some(token) = configured {
                return Ok(token.clone());
            }
            let path = config.data_dir.join(file);
            match std::fs::read_to_string(&path) {
                Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
                Ok(_) => Err(std::io::Error::other(format!(
                    "{} is empty",
                    path.display()
                ))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let token = crate::secrets::random_token();
                    crate::secrets::write_private(&path, &token)?;
                    generated.push(path);
                    Ok(token)
                }
                Err(e) => Err(e),
            }
        };
        let admin = get(&config.admin_token, "admin.token")?;
        let ingest = get(&config.ingest_token, "ingest.token")?;
        Ok((Tokens { admin, ingest }, generated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::load(None, env(&[]), &Flags::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert_eq!(
            c.delivery.retry_schedule_secs,
            [5, 300, 1800, 7200, 18000, 36000, 36000]
        );
        assert_eq!(c.delivery.concurrency_per_webhook, 4);
        assert_eq!(c.retention_days, 30);
        assert!(!c.allow_private_targets);
    }

    #[test]
    fn file_then_environment_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("callisto.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nretention_days = 7\n[delivery]\ntimeout_secs = 30\nconcurrency_per_webhook = 2\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("CALLISTO_RETENTION_DAYS", "14"),
                ("CALLISTO_DELIVERY__TIMEOUT_SECS", "20"),
                ("CALLISTO_DELIVERY__RETRY_SCHEDULE_SECS", "1, 2,3"),
                ("CALLISTO_ALLOW_PRIVATE_TARGETS", "true"),
                ("CALLISTO_ADMIN_TOKEN", "12345678901234567890"),
                ("CALLISTO_LOG", "debug"),
                ("CALLISTO_URL", "http://ignored"),
                ("HOME", "/root"),
            ]),
            &Flags {
                listen: Some("127.0.0.1:9100".parse().unwrap()),
                ..Flags::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(c.retention_days, 14);
        assert_eq!(c.delivery.timeout_secs, 20);
        assert_eq!(c.delivery.concurrency_per_webhook, 2);
        assert_eq!(c.delivery.retry_schedule_secs, [1, 2, 3]);
        assert!(c.allow_private_targets);
        // A numeric token stays a string.
        assert_eq!(c.admin_token.as_deref(), Some("12345678901234567890"));
        assert_eq!(c.log, "debug");
    }

    #[test]
    fn the_console_session_settings_come_from_the_environment() {
        let c = Config::load(None, env(&[]), &Flags::default()).unwrap();
        assert_eq!(c.console.session_ttl_secs, 12 * 3600);
        assert!(!c.secure_cookie());
        let c = Config::load(
            None,
            env(&[
                ("CALLISTO_CONSOLE__SESSION_TTL_SECS", "60"),
                ("CALLISTO_CONSOLE__SECURE_COOKIE", "true"),
            ]),
            &Flags::default(),
        )
        .unwrap();
        assert_eq!(c.console.session_ttl_secs, 60);
        assert!(c.secure_cookie());
        let zero = Config::load(
            None,
            env(&[("CALLISTO_CONSOLE__SESSION_TTL_SECS", "0")]),
            &Flags::default(),
        );
        assert!(
            zero.unwrap_err()
                .to_string()
                .contains("console.session_ttl_secs"),
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err =
            Config::load(None, env(&[("CALLISTO_LISTN", "x")]), &Flags::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable CALLISTO_LISTN: names no setting"
        );
        let err = Config::load(
            None,
            env(&[("CALLISTO_RETENTION_DAYS", "soon")]),
            &Flags::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`soon` is not a whole number"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[delivery]\ntimeout = 3\n").unwrap();
        let err = Config::load(Some(&file), env(&[]), &Flags::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&file.display().to_string()) && msg.contains("unknown field `timeout`"),
            "{msg}"
        );

        let err = Config::load(
            None,
            env(&[("CALLISTO_ADMIN_TOKEN", "short")]),
            &Flags::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("at least 16"), "{err}");
    }

    #[test]
    fn numbers_out_of_range_and_shared_tokens_are_refused_by_name() {
        for (var, value, named) in [
            ("CALLISTO_POLL__CONCURRENCY", "0", "poll.concurrency"),
            (
                "CALLISTO_DELIVERY__TIMEOUT_SECS",
                "0",
                "delivery.timeout_secs",
            ),
            (
                "CALLISTO_DELIVERY__RETRY_SCHEDULE_SECS",
                "5,9223372036854775807",
                "retry_schedule_secs (each delay)",
            ),
            (
                "CALLISTO_LISTENER__MAX_CONNECTIONS",
                "0",
                "listener.max_connections",
            ),
            ("CALLISTO_RETENTION_DAYS", "0", "retention_days"),
            ("CALLISTO_POLL__JITTER", "1.5", "poll.jitter"),
        ] {
            let err = Config::load(None, env(&[(var, value)]), &Flags::default()).unwrap_err();
            assert!(err.to_string().contains(named), "{var}={value}: {err}");
        }
        let same = "the-same-token-0123456789";
        let err = Config::load(
            None,
            env(&[
                ("CALLISTO_ADMIN_TOKEN", same),
                ("CALLISTO_INGEST_TOKEN", same),
            ]),
            &Flags::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("must differ"), "{err}");
    }

    #[test]
    fn the_proxy_comes_from_the_environment_and_its_upstream_is_checked() {
        let c = Config::load(
            None,
            env(&[
                ("CALLISTO_PROXY__LISTEN", "127.0.0.1:5001"),
                ("CALLISTO_PROXY__UPSTREAM", "http://127.0.0.1:5000"),
            ]),
            &Flags::default(),
        )
        .unwrap();
        let proxy = c.proxy.unwrap();
        assert_eq!(proxy.listen.to_string(), "127.0.0.1:5001");
        assert_eq!(
            proxy.upstream_url().unwrap().as_str(),
            "http://127.0.0.1:5000/"
        );
        assert_eq!(proxy.max_manifest_bytes, 4 << 20);
        assert!(
            Config::load(None, env(&[]), &Flags::default())
                .unwrap()
                .proxy
                .is_none()
        );

        for (upstream, named) in [
            ("ftp://registry", "not an http or https URL"),
            ("http://registry/v2/", "has a path"),
            ("https://user:pw@registry", "carries credentials"),
            ("registry:5000", "not an http"),
        ] {
            let err = Config::load(
                None,
                env(&[
                    ("CALLISTO_PROXY__LISTEN", "127.0.0.1:5001"),
                    ("CALLISTO_PROXY__UPSTREAM", upstream),
                ]),
                &Flags::default(),
            )
            .unwrap_err();
            assert!(err.to_string().contains(named), "{upstream}: {err}");
        }
        let err = Config::load(
            None,
            env(&[("CALLISTO_PROXY__LISTEN", "127.0.0.1:5001")]),
            &Flags::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("upstream"), "{err}");
    }

    #[test]
    fn generated_tokens_are_private_files_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let (first, generated) = Tokens::resolve(&config).unwrap();
        assert_eq!(generated.len(), 2);
        for path in &generated {
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
        assert_ne!(first.admin, first.ingest);
        let (second, generated) = Tokens::resolve(&config).unwrap();
        assert!(generated.is_empty());
        assert_eq!(second.admin, first.admin);
    }
}
