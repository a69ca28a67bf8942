//! Wiring: opens the store, loads plugins, starts fan-out, the sender, the
//! poller and retention, and serves HTTP until asked to stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod listener;
mod plugin_sync;
mod tls;

use crate::api::App;
use crate::config::{Config, Tokens};
use crate::deliver;
use crate::fanout;
use crate::filtered::FilteredEvents;
use crate::metrics::Metrics;
use crate::net::{self, Policy};
use crate::plugin::{HostDirs, PluginHost};
use crate::poll;
use crate::seal::Sealer;
use crate::store::{self, Store};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(
        "{path} does not exist, but the data directory shows a store was there ({traces}): restore callisto.redb from a backup; to start with an empty store instead, start with --allow-fresh-store"
    )]
    StoreMissing {
        path: std::path::PathBuf,
        traces: String,
    },
    #[error("loading plugins: {0}")]
    Plugins(#[from] crate::plugin::LoadError),
    #[error("tokens: {0}")]
    Tokens(std::io::Error),
    #[error(transparent)]
    Seal(#[from] crate::seal::SealError),
    #[error(transparent)]
    Client(#[from] net::client::ClientError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Proxy(#[from] crate::proxy::BuildError),
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running gateway.
pub struct Running {
    pub addr: SocketAddr,
    /// The registry proxy's address, when `[proxy]` is configured.
    pub proxy_addr: Option<SocketAddr>,
    pub app: Arc<App>,
    /// Token files generated at this start.
    pub generated_tokens: Vec<std::path::PathBuf>,
    /// Stops the HTTP server (first: no new work comes in).
    stop_http: watch::Sender<bool>,
    http: JoinHandle<()>,
    /// Stops the workers, once requests in flight are answered.
    stop_workers: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Graceful shutdown: stop accepting, let requests and attempts in
    /// flight finish (or leave them safely pending), then return.
    pub async fn shutdown(self) {
        let _ = self.stop_http.send(true);
        let _ = self.http.await;
        let _ = self.stop_workers.send(true);
        for task in self.workers {
            let _ = task.await;
        }
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Starts the gateway on `config.listen` (port 0 picks a free port).
pub async fn start(config: Config) -> Result<Running, ServeError> {
    create_private_dir(&config.data_dir)?;
    let location = match config.postgres_url() {
        Some(url) => store::Location::Postgres(url.to_owned()),
        None => {
            check_history(&config)?;
            store::Location::Redb(config.redb_path())
        }
    };
    let cache = config.store_cache_mib.max(1) << 20;
    let store = Store::open_at(&location, cache).await?;
    tracing::debug!(store = %store.describe(), "store open");
    let (tokens, generated_tokens) = Tokens::resolve(&config).map_err(ServeError::Tokens)?;
    let sealer = open_sealer(&config, &store).await?;

    let limits = crate::plugin::Limits::from(&config.plugins);
    let mut dirs = HostDirs::in_data_dir(&config.data_dir);
    if let Some(cache) = &config.plugins.cache_dir {
        dirs.cache = Some(cache.clone());
    }
    let plugins = Arc::new(
        tokio::task::spawn_blocking(move || PluginHost::new(limits, dirs))
            .await
            .expect("loading plugins does not panic")?,
    );
    // With PostgreSQL, the plugins installed through any gateway, before
    // fan-out may need them.
    let plugins_in_store = plugin_sync::sync(&store, &plugins).await?;
    return_freed_memory();
    let policy = Arc::new(
        Policy::new(config.allow_private_targets, &config.allowed_networks)
            .map_err(ServeError::Config)?,
    );
    let ca_bundle = match &config.delivery.ca_bundle {
        Some(path) => std::fs::read(path).map_err(|e| {
            ServeError::Config(format!("delivery.ca_bundle {}: {e}", path.display()))
        })?,
        None => Vec::new(),
    };
    let client = net::client::build(&config.delivery, policy.clone(), &ca_bundle)?;
    let webhook_clients = Arc::new(net::client::WebhookClients::new(
        client.clone(),
        config.delivery.clone(),
        policy.clone(),
        ca_bundle.clone(),
    ));
    let registry_client =
        net::client::build_for_registries(&config.poll, policy.clone(), &ca_bundle)?;
    let tls = config
        .tls
        .as_ref()
        .map(|t| tls::server_config(&t.cert, &t.key))
        .transpose()
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let metrics = Arc::new(Metrics::new());
    let filtered = Arc::new(FilteredEvents::new());

    let (stop_workers, stop_rx) = watch::channel(false);
    let sender_task = deliver::spawn(
        deliver::Context {
            store: store.clone(),
            clients: webhook_clients.clone(),
            policy: policy.clone(),
            config: config.delivery.clone(),
            metrics: metrics.clone(),
            sealer: sealer.clone(),
        },
        stopped(stop_rx.clone()),
    );
    let warm = (config.plugins.instances as usize / 2).max(1);
    let fanout_task = fanout::spawn(
        fanout::Context {
            store: store.clone(),
            plugins: plugins.clone(),
            metrics: metrics.clone(),
            filtered: filtered.clone(),
            plugin_failing: Default::default(),
        },
        warm,
        stopped(stop_rx.clone()),
    );
    let (poller, poll_task) = poll::spawn(
        poll::Context {
            store: store.clone(),
            metrics: metrics.clone(),
            policy: policy.clone(),
            http: registry_client.clone(),
            config: config.poll.clone(),
            sealer: sealer.clone(),
        },
        stopped(stop_rx.clone()),
    );

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen,
        source,
    })?;

    // Bound before anything is served, so a port in use stops the start.
    let proxy_listener = match &config.proxy {
        Some(proxy) => {
            let listener =
                TcpListener::bind(proxy.listen)
                    .await
                    .map_err(|source| ServeError::Listen {
                        addr: proxy.listen,
                        source,
                    })?;
            let addr = listener.local_addr().map_err(|source| ServeError::Listen {
                addr: proxy.listen,
                source,
            })?;
            let tls = proxy
                .tls
                .as_ref()
                .map(|t| tls::server_config(&t.cert, &t.key))
                .transpose()
                .map_err(|e| ServeError::Config(format!("proxy.tls: {e}")))?;
            Some((listener, addr, tls))
        }
        None => None,
    };

    let retention_days = config.retention_days;
    let sessions = crate::api::session::Sessions::new(std::time::Duration::from_secs(
        config.console.session_ttl_secs,
    ));
    let registry_budget = poll::registry::Budget::new(config.poll.requests_per_minute);
    let app = Arc::new(App {
        config,
        tokens,
        store: store.clone(),
        plugins,
        poller,
        metrics,
        filtered,
        client,
        registry_budget,
        registry_client,
        webhook_clients,
        policy,
        sealer,
        ready: AtomicBool::new(false),
        plugin_users: tokio::sync::RwLock::new(()),
        sessions,
    });
    let mut workers = vec![fanout_task, sender_task, poll_task];
    if plugins_in_store {
        workers.push(tokio::spawn(plugin_sync::follow(
            store.clone(),
            app.plugins.clone(),
            stopped(stop_rx.clone()),
        )));
    }
    workers.push(tokio::spawn(retention(
        store,
        retention_days,
        stopped(stop_rx.clone()),
    )));

    let router = crate::api::router(app.clone()).merge(crate::console::router(app.clone()));
    let (stop_http, http_rx) = watch::channel(false);
    let http_stop = stopped(http_rx.clone());
    let limits = app.config.listener.clone();
    let http_task = match tls {
        None => tokio::spawn(listener::serve(listener, router, limits, http_stop)),
        Some(tls) => {
            let listener = tls::TlsListener::new(listener, tls)
                .map_err(|source| ServeError::Listen { addr, source })?;
            tokio::spawn(listener::serve(listener, router, limits, http_stop))
        }
    };
    let mut proxy_addr = None;
    // The proxy's listener first: it stops with the HTTP server, before the
    // stages.
    let mut tasks = vec![];
    if let (Some((listener, paddr, tls)), Some(config)) = (proxy_listener, &app.config.proxy) {
        let proxy = crate::proxy::Proxy::new(
            config,
            paddr,
            Duration::from_secs(app.config.listener.body_read_timeout_secs),
            app.store.clone(),
            app.metrics.clone(),
        )?;
        tracing::info!(
            addr = %paddr,
            upstream = proxy.upstream_origin(),
            "registry proxy listening"
        );
        let router = crate::proxy::router(Arc::new(proxy));
        let stop = stopped(http_rx.clone());
        let limits = app.config.listener.clone();
        tasks.push(match tls {
            None => tokio::spawn(listener::serve(listener, router, limits, stop)),
            Some(tls) => {
                let listener =
                    tls::TlsListener::new(listener, tls).map_err(|source| ServeError::Listen {
                        addr: paddr,
                        source,
                    })?;
                tokio::spawn(listener::serve(listener, router, limits, stop))
            }
        });
        proxy_addr = Some(paddr);
    }
    app.ready.store(true, Ordering::Release);
    tasks.extend(workers);
    Ok(Running {
        addr,
        proxy_addr,
        app,
        generated_tokens,
        stop_http,
        http: http_task,
        stop_workers,
        workers: tasks,
    })
}

/// Refuses to make a new store in a data directory that shows one existed:
/// a lost `callisto.redb` must be noticed, not silently replaced by an
/// empty one that would drop every undelivered event.
fn check_history(config: &Config) -> Result<(), ServeError> {
    if config.redb_path().exists() || config.allow_fresh_store {
        return Ok(());
    }
    let traces: Vec<&str> = ["admin.token", "ingest.token", "secret.key", "cache"]
        .into_iter()
        .filter(|name| config.data_dir.join(name).exists())
        .collect();
    if traces.is_empty() {
        return Ok(());
    }
    Err(ServeError::StoreMissing {
        path: config.redb_path(),
        traces: traces.join(", "),
    })
}

/// The sealing key, checked against the one the store's secrets were sealed
/// with: a replaced or missing key would make every stored secret
/// unreadable, and deliveries would fail forever.
async fn open_sealer(config: &Config, store: &Store) -> Result<Sealer, ServeError> {
    let recorded = store.sealing_key_id().await?;
    let key_path = config.seal_key_path();
    if config.secret_key.is_none() && config.seal_key_file.is_some() && !key_path.exists() {
        return Err(crate::seal::SealError::NotGiven { path: key_path }.into());
    }
    let may_create = recorded.is_none() || config.allow_new_secret_key;
    let sealer = Sealer::load(&key_path, config.secret_key.as_deref(), may_create)?;
    match recorded {
        Some(id) if id == sealer.key_id() => {}
        Some(_) if !config.allow_new_secret_key => {
            let origin = if config.secret_key.is_some() {
                "CALLISTO_SECRET_KEY".to_owned()
            } else {
                key_path.display().to_string()
            };
            return Err(crate::seal::SealError::Mismatch { origin }.into());
        }
        _ => store.set_sealing_key_id(sealer.key_id()).await?,
    }
    Ok(sealer)
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), ServeError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ServeError::DataDir {
            path: dir.to_owned(),
            source,
        })
}

/// Prunes what is older than the retention period, a batch at a time, every
/// few minutes.
async fn retention(
    store: Store,
    days: u32,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    let cutoff_of = |days: u32| {
        crate::event::Timestamp::from_unix_millis(
            crate::event::Timestamp::now().unix_millis() - i64::from(days) * 86_400_000,
        )
    };
    loop {
        // Webhooks with a retention of their own: their deliveries are
        // pruned at their age, not the gateway's.
        let own: Vec<(String, u32)> = match store.webhooks().await {
            Ok(webhooks) => webhooks
                .into_iter()
                .filter_map(|w| Some((w.id, w.retention_days?)))
                .collect(),
            Err(e) => {
                tracing::warn!("pruning: cannot list webhooks: {e}");
                Vec::new()
            }
        };
        for (webhook, days) in &own {
            loop {
                match store.prune_webhook(webhook, cutoff_of(*days), 1000).await {
                    Ok(0) => break,
                    Ok(n) => tracing::info!(webhook, deliveries = n, "pruned"),
                    Err(e) => {
                        tracing::warn!(webhook, "pruning failed: {e}");
                        break;
                    }
                }
            }
        }
        let own: std::collections::HashSet<String> = own.into_iter().map(|(id, _)| id).collect();
        loop {
            let cutoff = cutoff_of(days);
            match store.prune(cutoff, 1000, &own).await {
                Ok(pruned) if pruned.is_empty() => break,
                Ok(pruned) => tracing::info!(
                    events = pruned.events,
                    deliveries = pruned.deliveries,
                    "pruned"
                ),
                Err(e) => {
                    tracing::warn!("pruning failed: {e}");
                    break;
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(Duration::from_secs(300)) => {}
        }
    }
}

/// `callisto serve`: runs the gateway on a runtime of its own until SIGTERM
/// or Ctrl-C, then shuts it down gracefully.
pub fn serve_until_signal(config: Config) -> Result<(), ServeError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?
        .block_on(run(config))
}

/// Runs the gateway until SIGTERM or Ctrl-C, then shuts it down gracefully.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let running = start(config).await?;
    let app = &running.app;
    tracing::info!(
        addr = %running.addr,
        data_dir = %app.config.data_dir.display(),
        plugins = app.plugins.list().len(),
        "callisto listening on http://{}",
        running.addr
    );
    tracing::info!(
        "console: {}://{}/ (sign in with the admin token)",
        if app.config.tls.is_some() {
            "https"
        } else {
            "http"
        },
        running.addr
    );
    for path in &running.generated_tokens {
        tracing::info!(
            "generated a token, stored in {} (mode 0600)",
            path.display()
        );
    }
    if app.config.allow_private_targets {
        tracing::warn!(
            "allow_private_targets is on: webhooks may reach loopback and private networks"
        );
    }
    signal().await;
    tracing::info!("shutting down: finishing requests and attempts in flight");
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// Compiling the plugins on a first start allocates some 25 MiB across
/// glibc's per-thread arenas; once freed it stays mapped, so an idle
/// gateway would look twice its size to whoever watches its resident
/// memory. Handing it back once, after loading, costs a millisecond.
#[allow(unsafe_code)]
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` has no preconditions; it only releases free
    // pages of the allocator's own heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}
