//! The gateway as a separate process: for what an in-process server cannot
//! show, such as `kill -9`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";
pub const INGEST_TOKEN: &str = "e2e-ingest-token-0123456789";

/// A `callisto serve` child process.
pub struct GatewayProcess {
    binary: PathBuf,
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub port: u16,
    pub url: String,
    env: Vec<(String, String)>,
    log: PathBuf,
}

/// A free loopback port (the OS picks it; it is free when this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl GatewayProcess {
    /// Starts `binary serve` on a free port with its state in `data_dir`,
    /// the test tokens, loopback receivers allowed, and `env` on top.
    pub async fn start(binary: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut process = Self {
            binary: binary.to_owned(),
            child: None,
            data_dir: data_dir.to_owned(),
            port,
            url: format!("http://127.0.0.1:{port}"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log: data_dir.with_extension("log"),
        };
        process.spawn().await;
        process
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the gateway log");
        let mut cmd = Command::new(&self.binary);
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CALLISTO_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("CALLISTO_DATA_DIR", &self.data_dir)
            .env("CALLISTO_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("CALLISTO_INGEST_TOKEN", INGEST_TOKEN)
            .env("CALLISTO_ALLOW_PRIVATE_TARGETS", "true")
            .env("CALLISTO_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start the gateway"));
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let client = crate::http();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "the gateway exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not get ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: no shutdown, no flush, nothing.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("SIGKILL the gateway");
            let _ = child.wait().await;
        }
    }

    /// SIGTERM, then waits for a graceful exit.
    pub async fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
            }
            let exited = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
            assert!(
                exited.is_ok(),
                "the gateway did not stop on SIGTERM:\n{}",
                self.log()
            );
        }
    }

    /// Starts again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.spawn().await;
    }

    /// The process id while it runs (to read its memory in `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl GatewayProcess {
    /// Changes an environment variable for the next (re)start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }
}
