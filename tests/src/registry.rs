//! A real container registry for the end-to-end tests: the Debian
//! `docker-registry` package, which is CNCF Distribution 2.8.
//!
//! Callisto's input is the registry's notification stream, so the tests run
//! the real thing rather than a fake that would only say what we believe it
//! says. Each [`Registry`] is its own process on its own free loopback port,
//! with its storage and config in a temporary directory, so tests can run in
//! parallel and leave nothing behind.
//!
//! What Distribution 2.8.2 (Debian's `docker-registry`) does, as observed
//! with these helpers (the tests of the harness print it):
//!
//! * It is ready in about 30 ms; [`RegistryBuilder::start`] still allows
//!   [`READY_TIMEOUT`]. A restart on the same port is as quick.
//! * Each notification is a `POST` to the endpoint's URL with
//!   `Content-Type: application/vnd.docker.distribution.events.v1+json`,
//!   `User-Agent: Go-http-client/1.1`, the configured headers (here
//!   `Authorization: Bearer <token>`) and `Accept-Encoding: gzip`. The body is
//!   an envelope `{"events": [...]}` that always held exactly one event: one
//!   event per registry request, each sent on its own, in order.
//! * An event is `{id, timestamp, action, target, request, actor, source}`.
//!   `target` has `repository`, `digest`, `mediaType`, `size` (and the old
//!   `length`), `url`, and `tag` when the request named one; `request` has
//!   the client's `addr`, `host`, `method` and `useragent`; `source.addr` is
//!   `<hostname>:<port>`; `actor` is `{}`, or `{"name": "<user>"}` with
//!   htpasswd.
//! * A push makes one `push` event per blob uploaded (`mediaType`
//!   `application/octet-stream`, no tag) and then one for the manifest (its
//!   media type and `tag`). `HEAD`/`GET` of an existing blob or manifest
//!   makes a `pull` event (a manifest `HEAD` by tag carries the tag), so a
//!   skopeo re-push makes two blob `pull`s and a manifest `push`; a miss
//!   (404) makes none. Deleting a manifest makes a `delete` event with the
//!   digest but no media type or tag, then one `delete` per tag that pointed
//!   at it, with the tag and no digest.
//! * Events are sent from an in-memory queue right away: on loopback the
//!   manifest's event arrives before the `PUT` has returned to the pusher.
//! * Any 2xx or 3xx answer counts as delivered. A failed delivery (4xx, 5xx,
//!   refused, or slower than `timeout`) is retried forever and holds back
//!   the events queued behind it: the first `threshold` attempts go back to
//!   back, then one every `backoff` (so 0 ms, 1 ms, 2 ms, 1 s, 2 s, ... with
//!   the settings here). The event `id` stays the same across attempts, so a
//!   receiver slower than `timeout` records the same event again and again.
//!   A receiver that comes back gets the held-back events in order within
//!   about a `backoff`. The queue lives in memory only: it is lost when the
//!   process is killed, so [`Registry::restart`] drops undelivered events.
//! * `DELETE` of a manifest needs `storage.delete.enabled`, which is on.
//! * `GET /v2/<repo>/tags/list` lists tags in directory order, not sorted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Where the Debian package puts the binary.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// The longest a (re)start may take before the test fails with the log.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The name of the notification endpoint that [`RegistryBuilder::notify`] adds.
pub const ENDPOINT_NAME: &str = "callisto";

/// The realm of `auth.htpasswd`.
pub const REALM: &str = "callisto-test";

/// Options for a [`Registry`]; see [`Registry::builder`].
#[derive(Debug, Default, Clone)]
pub struct RegistryBuilder {
    notify: Option<(String, String)>,
    htpasswd: Option<(String, String)>,
}

impl RegistryBuilder {
    /// Sends the registry's notifications to `url` with
    /// `Authorization: Bearer <bearer_token>`: one endpoint named
    /// [`ENDPOINT_NAME`] with `timeout: 2s`, `threshold: 3`, `backoff: 1s` and
    /// no ignored media types. Calling it again replaces the endpoint.
    pub fn notify(mut self, url: &str, bearer_token: &str) -> Self {
        self.notify = Some((url.to_owned(), bearer_token.to_owned()));
        self
    }

    /// Requires HTTP Basic auth (`auth.htpasswd`) with this one user.
    pub fn htpasswd(mut self, user: &str, password: &str) -> Self {
        self.htpasswd = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Writes the config, starts the registry on a free loopback port and
    /// waits until it answers.
    pub async fn start(self) -> anyhow::Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("callisto-registry-")
            .tempdir()?;
        if let Some((user, password)) = &self.htpasswd {
            // The lowest bcrypt cost: the registry checks the hash on every request.
            let hash = bcrypt::hash(password, 4)?;
            std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n"))?;
        }
        let log = dir.path().join("registry.log");
        std::fs::File::create(&log)?;

        let mut registry = Registry {
            options: self,
            port: 0,
            dir,
            log,
            child: None,
        };
        // Another process may take the free port between our probe and the
        // registry's bind; a few fresh ports make that harmless.
        let mut last_error = None;
        for _ in 0..3 {
            registry.port = free_port()?;
            registry.write_config()?;
            match registry.spawn_and_wait().await {
                Ok(()) => return Ok(registry),
                Err(error) => {
                    registry.stop().await;
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.expect("three attempts were made"))
    }
}

/// A running `docker-registry serve <config.yml>`; killed on drop, and its
/// temporary directory (config, storage, log) removed.
pub struct Registry {
    options: RegistryBuilder,
    port: u16,
    dir: tempfile::TempDir,
    log: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Registry {
    /// Options for a new registry: anonymous and without notifications
    /// unless told otherwise.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// `127.0.0.1:PORT`, as in image references (`<host>/<repo>:<tag>`).
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding config, storage and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registry's storage root, kept across [`Registry::restart`].
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// Everything the registry printed so far, over all its runs; print it
    /// when a test fails.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|error| format!("(no log: {error})"))
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the registry (SIGKILL) and waits for it to exit. Notifications
    /// it had not delivered yet are lost. Does nothing if it is not running.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Stops the registry if needed and starts it again on the same port,
    /// with the same config and storage, so pushed content survives; waits
    /// until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.append_to_log("--- restart ---\n");
        self.spawn_and_wait().await
    }

    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_ready().await
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().append(true).open(&self.log)?;
        let child = tokio::process::Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!("start {REGISTRY_BIN} (is the docker-registry package installed?)")
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls `GET /v2/` until it answers 200 (401 with htpasswd), failing
    /// early with the log if the process exits.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let expected = if self.options.htpasswd.is_some() {
            401
        } else {
            200
        };
        let http = crate::oci::http_client();
        let url = format!("{}/v2/", self.url());
        let started = Instant::now();
        loop {
            if !self.is_running() {
                bail!(
                    "docker-registry exited before it was ready; its log:\n{}",
                    self.log()
                );
            }
            if let Ok(response) = http.get(&url).send().await {
                let status = response.status().as_u16();
                if status == expected {
                    return Ok(());
                }
                bail!(
                    "GET {url} answered {status}, not {expected}; the log:\n{}",
                    self.log()
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "docker-registry was not ready after {READY_TIMEOUT:?}; its log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn write_config(&self) -> anyhow::Result<()> {
        std::fs::write(self.config_path(), self.config_yaml())?;
        Ok(())
    }

    /// The registry's `config.yml`. Strings are written as double-quoted
    /// YAML scalars (JSON strings), so paths and tokens need no care.
    fn config_yaml(&self) -> String {
        let q = |s: &str| serde_json::to_string(s).expect("a string serialises");
        let mut yaml = String::new();
        yaml.push_str("version: 0.1\n");
        yaml.push_str("log:\n  level: warn\n  accesslog:\n    disabled: true\n");
        let root = self.data_dir();
        let _ = write!(
            yaml,
            "storage:\n  filesystem:\n    rootdirectory: {}\n",
            q(&root.to_string_lossy())
        );
        yaml.push_str("  delete:\n    enabled: true\n");
        // A fixed secret: without one the registry makes a random one per
        // run (and warns), which would break uploads across a restart.
        let _ = write!(
            yaml,
            "http:\n  addr: {}\n  secret: {}\n",
            q(&self.host()),
            q("callisto-test-secret")
        );
        if self.options.htpasswd.is_some() {
            let path = self.dir.path().join("htpasswd");
            let _ = write!(
                yaml,
                "auth:\n  htpasswd:\n    realm: {}\n    path: {}\n",
                q(REALM),
                q(&path.to_string_lossy())
            );
        }
        if let Some((url, token)) = &self.options.notify {
            yaml.push_str("notifications:\n  endpoints:\n");
            let _ = write!(
                yaml,
                "    - name: {}\n      url: {}\n",
                q(ENDPOINT_NAME),
                q(url)
            );
            let _ = write!(
                yaml,
                "      headers:\n        Authorization: [{}]\n",
                q(&format!("Bearer {token}"))
            );
            yaml.push_str("      timeout: 2s\n      threshold: 3\n      backoff: 1s\n      ignoredmediatypes: []\n");
        }
        yaml
    }

    fn append_to_log(&self, line: &str) {
        use std::io::Write;
        if let Ok(mut log) = std::fs::OpenOptions::new().append(true).open(&self.log) {
            let _ = log.write_all(line.as_bytes());
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // `kill_on_drop` would do it too; being explicit keeps the order
        // clear: the process dies before its directory is removed.
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A port that was free a moment ago: bind 127.0.0.1:0, read the port, let
/// the listener go.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
