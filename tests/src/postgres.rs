//! A throwaway PostgreSQL cluster for the tests: `initdb` in a temporary
//! directory, `postgres` on a free loopback port (the socket in that
//! directory too), started once per test binary, and a fresh database for
//! each test that asks.
//!
//! The cluster runs as the `postgres` user when the tests run as root
//! (`initdb` refuses root). It is watched by a small shell that reads the
//! test process's end of a pipe: when the test binary exits, however it
//! exits, the pipe closes, the shell stops the server and removes the
//! directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// The running cluster.
pub struct Cluster {
    pub port: u16,
    bin: PathBuf,
    /// Held open for as long as the test binary runs: its closing stops the
    /// server.
    _watchdog: Mutex<(Child, ChildStdin)>,
}

static CLUSTER: LazyLock<Cluster> = LazyLock::new(|| Cluster::start().expect("start PostgreSQL"));
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The directory of Debian's PostgreSQL binaries (the newest installed).
fn bin_dir() -> Result<PathBuf, String> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            format!("/usr/lib/postgresql: {e}; install Debian's `postgresql` (tests/run does)")
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl Cluster {
    fn start() -> Result<Self, String> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("callisto-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        let port = free_port();
        let script = r#"
set -e
"$BIN/initdb" -D "$DIR/data" -U callisto -A trust -E UTF8 --no-sync >"$DIR/initdb.log" 2>&1
"$BIN/postgres" -D "$DIR/data" -p "$PORT" -k "$DIR" -c listen_addresses=127.0.0.1 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
    >"$DIR/postgres.log" 2>&1 &
pid=$!
read -r _ || true
kill -INT "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
rm -rf "$DIR"
"#;
        let mut command = as_postgres(script, &dir)?;
        command
            .env("BIN", &bin)
            .env("DIR", &dir)
            .env("PORT", port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        let mut child = command
            .spawn()
            .map_err(|e| format!("starting PostgreSQL: {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let cluster = Self {
            port,
            bin,
            _watchdog: Mutex::new((child, stdin)),
        };
        cluster.wait_ready(&dir)?;
        Ok(cluster)
    }

    fn wait_ready(&self, dir: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
                return Err(format!(
                    "PostgreSQL did not start in 60 s\ninitdb: {}\npostgres: {}",
                    log("initdb.log"),
                    log("postgres.log")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs SQL as the cluster's superuser, in database `postgres`.
    pub fn sql(&self, sql: &str) {
        psql(&self.bin, self.port, sql);
    }

    /// Runs SQL in the database at `url`; returns what it printed (unaligned,
    /// tuples only).
    pub fn sql_in(&self, url: &str, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-A", "-t", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql -c {sql:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://callisto@127.0.0.1:{}/{name}", self.port)
    }
}

/// The shared cluster, started on first use.
pub fn cluster() -> &'static Cluster {
    &CLUSTER
}

/// A new, empty database in the shared cluster; returns its URL.
pub fn database() -> String {
    let cluster = cluster();
    let name = format!(
        "test_{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::Relaxed)
    );
    cluster.sql(&format!("CREATE DATABASE {name}"));
    cluster.url(&name)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Statics are not dropped; the watchdog's pipe closing at exit is
        // what stops the server. This is for a cluster dropped early.
        if let Ok(mut guard) = self._watchdog.lock() {
            let _ = guard.1.write_all(b"stop\n");
        }
    }
}

/// A cluster of its own, for a test that stops and starts PostgreSQL (the
/// shared one serves tests running meanwhile). Managed with `pg_ctl`;
/// watched like the shared one, so it goes when the test binary exits.
pub struct OwnCluster {
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    options: String,
    _watchdog: Mutex<(Child, ChildStdin)>,
}

impl OwnCluster {
    /// Tuned for tests: no fsync.
    pub fn start() -> Result<Self, String> {
        Self::start_with("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    }

    /// With PostgreSQL's default durability (fsync, synchronous commit), as
    /// a benchmark against redb's synced commits needs.
    pub fn start_durable() -> Result<Self, String> {
        Self::start_with("")
    }

    /// The server's processes (the postmaster and its children), to
    /// measure the CPU they use.
    pub fn pids(&self) -> Vec<u32> {
        let Some(main) = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        else {
            return Vec::new();
        };
        let mut pids = vec![main];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|stat| {
                        let rest = &stat[stat.rfind(')')? + 2..];
                        rest.split(' ').nth(1)?.parse::<u32>().ok()
                    });
                if parent == Some(main) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    fn start_with(tuning: &str) -> Result<Self, String> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("callisto-pg-own-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        let port = free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 {tuning}",
            dir.display()
        );
        let script = r#"
set -e
"$BIN/initdb" -D "$DIR/data" -U callisto -A trust -E UTF8 --no-sync >"$DIR/initdb.log" 2>&1
"$BIN/pg_ctl" -D "$DIR/data" -o "$OPTIONS" -l "$DIR/postgres.log" -w start >/dev/null
echo started
read -r _ || true
"$BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
rm -rf "$DIR"
"#;
        let mut command = as_postgres(script, &dir)?;
        command
            .env("BIN", &bin)
            .env("DIR", &dir)
            .env("OPTIONS", &options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| format!("starting PostgreSQL: {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("piped stdout")),
            &mut line,
        )
        .map_err(|e| e.to_string())?;
        if line.trim() != "started" {
            let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            return Err(format!(
                "PostgreSQL did not start\ninitdb: {}\npostgres: {}",
                log("initdb.log"),
                log("postgres.log")
            ));
        }
        let cluster = Self {
            port,
            bin,
            dir,
            options,
            _watchdog: Mutex::new((child, stdin)),
        };
        cluster.sql("CREATE DATABASE callisto");
        Ok(cluster)
    }

    /// The URL of its database `callisto`.
    pub fn url(&self) -> String {
        format!("postgres://callisto@127.0.0.1:{}/callisto", self.port)
    }

    fn pg_ctl(&self, args: &str) {
        let script = format!(r#""$BIN/pg_ctl" -D "$DIR/data" {args}"#);
        let status = as_postgres(&script, &self.dir)
            .expect("run pg_ctl")
            .env("BIN", &self.bin)
            .env("DIR", &self.dir)
            .env("OPTIONS", &self.options)
            .stdout(Stdio::null())
            .status()
            .expect("run pg_ctl");
        assert!(status.success(), "pg_ctl {args} failed");
    }

    /// Stops the server at once, as a crash or a failover would.
    pub fn stop(&self) {
        self.pg_ctl("-m immediate -w stop");
    }

    /// Starts it again on the same port.
    pub fn start_again(&self) {
        self.pg_ctl(r#"-o "$OPTIONS" -l "$DIR/postgres.log" -w start"#);
    }

    /// Runs SQL as the cluster's superuser, in database `postgres`.
    pub fn sql(&self, sql: &str) {
        psql(&self.bin, self.port, sql);
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        if let Ok(mut guard) = self._watchdog.lock() {
            let _ = guard.1.write_all(b"stop\n");
            let _ = guard.0.wait();
        }
    }
}

/// Runs SQL as the superuser of the cluster on `port`, in database
/// `postgres`.
fn psql(bin: &Path, port: u16, sql: &str) {
    let output = Command::new(bin.join("psql"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "callisto", "-d", "postgres", "-v", "ON_ERROR_STOP=1"])
        .args(["-q", "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "psql -c {sql:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `sh -c script`, as the `postgres` user when running as root (PostgreSQL
/// refuses to run as root), with `dir` handed to that user.
fn as_postgres(script: &str, dir: &Path) -> Result<Command, String> {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("chown of the cluster's directory to postgres failed".into());
        }
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", script]);
        Ok(c)
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        Ok(c)
    }
}
