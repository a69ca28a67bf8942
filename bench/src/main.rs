//! Callisto's benchmark suite: drives the real release binary and prints
//! each figure beside a baseline measured in the same run, on the same
//! machine, so that the ratio means something wherever it runs.
//!
//! - ingest: durable ingest events/s (wrk, 64 connections, unique events)
//!   against the same server's `/healthz` requests/s;
//! - deliver: 10,000 events ingested to 10,000 webhooks received, per
//!   second, against wrk posting straight to the same receiver; and the
//!   sender alone, draining 10,000 queued deliveries (a replay);
//! - plugin: filter + format per event through the sandbox (warm instance),
//!   against the same formatting done natively;
//! - memory: resident memory idle and with 100,000 pending deliveries;
//!   startup: from start to ready with the built-in plugins cached;
//! - startup history: from start to ready with a store of many events,
//!   against the same with an empty store (opening reads no records);
//! - poll: a remote repository of 1,000 tags on a local docker-registry:
//!   the first sync and an unchanged poll, time and registry requests,
//!   against the same requests made by a bare HTTP client;
//! - proxy: a 1 GiB blob pushed and pulled through the registry proxy, a
//!   manifest PUT's latency, and memory meanwhile, against the same client
//!   straight to the same docker-registry.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::process::Command;

mod proxy;

use callisto_tests::gateway::{ADMIN_TOKEN as ADMIN, GatewayProcess, INGEST_TOKEN as INGEST};
const PUSH: &str = include_str!("../../tests/fixtures/distribution/push-manifest-tag-v1.json");

struct Row {
    name: &'static str,
    value: f64,
    unit: &'static str,
    baseline_name: &'static str,
    baseline: f64,
    note: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    callisto::net::client::install_crypto_provider();
    let mut args = std::env::args().skip(1);
    let mut binary = None;
    let mut filter = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--binary" => binary = args.next().map(PathBuf::from),
            other => filter.push(other.to_owned()),
        }
    }
    let binary = binary.context("--binary <path to the release callisto>")?;
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));

    let mut rows = Vec::new();
    if wanted("ingest") {
        rows.push(ingest(&binary).await?);
    }
    if wanted("plugin") {
        rows.extend(plugins());
    }
    if wanted("memory") || wanted("startup") {
        rows.extend(memory_and_startup(&binary).await?);
    }
    if wanted("startup history") {
        rows.push(startup_with_history(&binary).await?);
    }
    if wanted("poll") {
        rows.extend(poll(&binary).await?);
    }
    if wanted("proxy") {
        rows.extend(proxy::proxy(&binary).await?);
    }
    if wanted("deliver") {
        rows.push(deliver(&binary).await?);
        rows.push(drain(&binary).await?);
    }
    if wanted("replicas") {
        rows.extend(replicas(&binary).await?);
    }
    print_table(&rows);
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<34} {:>14} {:<8}  {:<34} {:>14}  {:>7}",
        "benchmark", "value", "unit", "baseline (same run)", "value", "ratio"
    );
    for r in rows {
        println!(
            "{:<34} {:>14.1} {:<8}  {:<34} {:>14.1}  {:>7.2}",
            r.name,
            r.value,
            r.unit,
            r.baseline_name,
            r.baseline,
            r.value / r.baseline
        );
        if !r.note.is_empty() {
            println!("    {}", r.note);
        }
    }
}

/// A release gateway process with its state in a temporary directory: the
/// end-to-end tests' `GatewayProcess`, quieter.
struct Gateway {
    process: GatewayProcess,
    url: String,
    _data: tempfile::TempDir,
}

impl Gateway {
    async fn start(binary: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let mut env = env.to_vec();
        env.push(("CALLISTO_LOG", "warn"));
        let process = GatewayProcess::start(binary, &data.path().join("data"), &env).await;
        Ok(Self {
            url: process.url.clone(),
            process,
            _data: data,
        })
    }

    async fn stop(mut self) {
        self.process.kill9().await;
    }
}

/// Runs wrk and returns its requests per second.
async fn wrk(
    url: &str,
    script: Option<&Path>,
    connections: u32,
    seconds: u32,
) -> anyhow::Result<f64> {
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-c{connections}"))
        .arg("-t2")
        .arg(format!("-d{seconds}s"))
        .arg("--latency");
    if let Some(script) = script {
        cmd.arg("-s").arg(script);
    }
    let out = cmd
        .arg(url)
        .output()
        .await
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    let non2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .map(|v| v.trim().to_owned());
    if let Some(n) = non2xx {
        bail!("wrk saw {n} non-2xx answers from {url}:\n{text}");
    }
    Ok(rate)
}

/// A wrk script posting Distribution envelopes, each with a new event id.
fn ingest_script(dir: &Path) -> anyhow::Result<PathBuf> {
    let envelope: Value = serde_json::from_str(PUSH)?;
    // A new tag each time too: a push of a tag already at that digest is
    // rightly no event.
    let body = serde_json::to_string(&envelope)?
        .replace("20337bb7-412d-48f2-a1cc-b3747b9596dc", "%s")
        .replace(r#""tag":"v1""#, r#""tag":"t%s""#);
    // Each run gets its own ids: Lua's unseeded random would repeat the
    // last run's, and the gateway would rightly answer them as duplicates.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let lua = format!(
        r#"
local counter = 0
local template = [==[{body}]==]
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("prefix", "{run}-" .. threads)
end
request = function()
  counter = counter + 1
  local id = prefix .. "-" .. counter
  local body = string.format(template, id, id)
  return wrk.format("POST", nil, {{
    ["Authorization"] = "Bearer {INGEST}",
    ["Content-Type"] = "application/vnd.docker.distribution.events.v1+json",
  }}, body)
end
"#
    );
    let path = dir.join("ingest.lua");
    std::fs::write(&path, lua)?;
    Ok(path)
}

/// Durable ingest against the same server's health check.
async fn ingest(binary: &Path) -> anyhow::Result<Row> {
    let gw = Gateway::start(binary, &[]).await?;
    let dir = tempfile::tempdir()?;
    let script = ingest_script(dir.path())?;
    let health = wrk(&format!("{}/healthz", gw.url), None, 64, 10).await?;
    let ingest = wrk(
        &format!("{}/ingest/distribution", gw.url),
        Some(&script),
        64,
        10,
    )
    .await?;
    // Every 202 is an event durably in the log: count them to be sure.
    let http = reqwest::Client::new();
    let page: Value = http
        .get(format!("{}/api/v1/events?limit=1", gw.url))
        .bearer_auth(ADMIN)
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        page["items"].as_array().is_some_and(|i| !i.is_empty()),
        "no events were recorded"
    );
    gw.stop().await;
    Ok(Row {
        name: "durable ingest (64 conns)",
        value: ingest,
        unit: "events/s",
        baseline_name: "/healthz, same server (64 conns)",
        baseline: health,
        note: String::new(),
    })
}

/// A receiver that answers 200 and counts.
async fn receiver(count: Arc<AtomicU64>) -> anyhow::Result<SocketAddr> {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let count = count.clone();
                    async move {
                        use http_body_util::BodyExt;
                        let _ = req.into_body().collect().await;
                        count.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// 10,000 events in, 10,000 webhooks out, against wrk posting straight to
/// the same receiver.
async fn deliver(binary: &Path) -> anyhow::Result<Row> {
    const EVENTS: u64 = 10_000;
    let count = Arc::new(AtomicU64::new(0));
    let addr = receiver(count.clone()).await?;
    let direct = wrk(&format!("http://{addr}/hook"), None, 64, 10).await?;
    count.store(0, Ordering::SeqCst);

    let gw = Gateway::start(binary, &[]).await?;
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/api/v1/repositories", gw.url))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "demo/app", "webhooks": [{"url": format!("http://{addr}/hook"), "secret": "bench-secret"}]}))
        .send()
        .await?;
    anyhow::ensure!(
        created.status().is_success(),
        "creating the repository: {}",
        created.text().await?
    );

    let pid = gw.process.pid().context("the gateway's pid")?;
    let profile = Profile::start(pid, "deliver").await?;
    let cpu0 = cpu_secs(pid);
    let started = Instant::now();
    post_events(&http, &gw.url, EVENTS, "bench").await?;
    let ingested = started.elapsed();
    wait_received(&count, EVENTS).await?;
    let elapsed = started.elapsed();
    let cpu = cpu_secs(pid) - cpu0;
    profile.stop().await?;
    gw.stop().await;
    Ok(Row {
        name: "end to end, ingest to receiver",
        value: EVENTS as f64 / elapsed.as_secs_f64(),
        unit: "webhooks/s",
        baseline_name: "wrk straight to the receiver",
        baseline: direct,
        note: format!(
            "10,000 events ingested in {:.2} s, all delivered after {:.2} s (one webhook, default settings); gateway CPU {:.0} µs per webhook",
            ingested.as_secs_f64(),
            elapsed.as_secs_f64(),
            cpu / EVENTS as f64 * 1e6,
        ),
    })
}

/// `perf record` attached to a gateway while a row's load runs, when
/// `CALLISTO_BENCH_PERF` names a directory: the data for the accounting
/// of CPU per webhook by stage (docs/performance.md). DWARF call graphs
/// from the release binary's unwind tables, so no special build is needed.
struct Profile {
    child: Option<tokio::process::Child>,
}

impl Profile {
    async fn start(pid: u32, row: &str) -> anyhow::Result<Self> {
        let Some(dir) = std::env::var_os("CALLISTO_BENCH_PERF") else {
            return Ok(Self { child: None });
        };
        let out = PathBuf::from(dir).join(format!("{row}.perf.data"));
        let child = Command::new("perf")
            .args(["record", "-F", "1999", "--call-graph", "dwarf,16384", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("running perf")?;
        // perf needs a moment to attach to every thread.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(Self { child: Some(child) })
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().context("perf's pid")?;
            Command::new("kill")
                .arg("-INT")
                .arg(pid.to_string())
                .status()
                .await?;
            child.wait().await?;
        }
        Ok(())
    }
}

/// CPU time (user + system) a process has used so far, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    // utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

struct ReplicaRun {
    rate: f64,
    gateway_cpu: f64,
    database_cpu: f64,
}

/// 10,000 events in, spread over `n` gateways on `store` (the redb file
/// when `None`), 10,000 webhooks out; with the CPU the gateways and the
/// database used.
async fn run_replicas(
    binary: &Path,
    store: Option<&str>,
    n: usize,
    database: Option<&callisto_tests::postgres::OwnCluster>,
) -> anyhow::Result<ReplicaRun> {
    const EVENTS: u64 = 10_000;
    let count = Arc::new(AtomicU64::new(0));
    let addr = receiver(count.clone()).await?;
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("seal.key");
    std::fs::write(&key, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=\n")?;
    let cache = dir.path().join("cache");
    let mut env = vec![
        (
            "CALLISTO_SEAL_KEY_FILE",
            key.to_str().context("a UTF-8 path")?,
        ),
        (
            "CALLISTO_PLUGINS__CACHE_DIR",
            cache.to_str().context("a UTF-8 path")?,
        ),
        ("CALLISTO_LOG", "error"),
    ];
    if let Some(url) = store {
        env.push(("CALLISTO_STORE", url));
    }
    let mut gateways = Vec::new();
    for i in 0..n {
        gateways
            .push(GatewayProcess::start(binary, &dir.path().join(format!("gw{i}")), &env).await);
    }
    let urls: Vec<String> = gateways.iter().map(|g| g.url.clone()).collect();
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/api/v1/repositories", urls[0]))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "demo/app", "webhooks": [{"url": format!("http://{addr}/hook"), "secret": "bench-secret"}]}))
        .send()
        .await?;
    anyhow::ensure!(
        created.status().is_success(),
        "creating the repository: {}",
        created.text().await?
    );
    let pids: Vec<u32> = gateways.iter().filter_map(|g| g.pid()).collect();
    let db_pids = database.map(|d| d.pids()).unwrap_or_default();
    let cpu = |pids: &[u32]| pids.iter().map(|p| cpu_secs(*p)).sum::<f64>();
    let (gw0, db0) = (cpu(&pids), cpu(&db_pids));
    let started = Instant::now();
    post_events_across(&http, &urls, EVENTS, "replicas").await?;
    wait_received(&count, EVENTS).await?;
    let elapsed = started.elapsed();
    // The database's backends come and go with the pools: sample again.
    let db_pids_after = database.map(|d| d.pids()).unwrap_or_default();
    let run = ReplicaRun {
        rate: EVENTS as f64 / elapsed.as_secs_f64(),
        gateway_cpu: cpu(&pids) - gw0,
        database_cpu: cpu(&db_pids_after) - db0,
    };
    for mut g in gateways {
        g.terminate().await;
    }
    Ok(run)
}

/// End to end through PostgreSQL with one, two and three gateways on one
/// database (with PostgreSQL's default durability: fsync and synchronous
/// commit), against one gateway on redb, same run.
async fn replicas(binary: &Path) -> anyhow::Result<Vec<Row>> {
    let cluster = tokio::task::spawn_blocking(callisto_tests::postgres::OwnCluster::start_durable)
        .await?
        .map_err(anyhow::Error::msg)?;
    let redb = run_replicas(binary, None, 1, None).await?;
    let mut rows = Vec::new();
    for n in 1..=3 {
        cluster.sql(&format!("CREATE DATABASE bench{n}"));
        let url = format!("postgres://callisto@127.0.0.1:{}/bench{n}", cluster.port);
        let run = run_replicas(binary, Some(&url), n, Some(&cluster)).await?;
        let total = run.gateway_cpu + run.database_cpu;
        rows.push(Row {
            name: ["end to end, PostgreSQL, 1 gateway", "end to end, PostgreSQL, 2 gateways", "end to end, PostgreSQL, 3 gateways"][n - 1],
            value: run.rate,
            unit: "webhooks/s",
            baseline_name: "one gateway on redb",
            baseline: redb.rate,
            note: format!(
                "CPU per webhook: gateways {:.0} µs, PostgreSQL {:.0} µs ({:.0}% of the CPU used); redb gateway {:.0} µs",
                run.gateway_cpu / 10_000.0 * 1e6,
                run.database_cpu / 10_000.0 * 1e6,
                if total > 0.0 { run.database_cpu / total * 100.0 } else { 0.0 },
                redb.gateway_cpu / 10_000.0 * 1e6,
            ),
        });
    }
    Ok(rows)
}

/// Waits until the receiver has counted `expected` webhooks (five minutes
/// at most).
async fn wait_received(count: &AtomicU64, expected: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while count.load(Ordering::Relaxed) < expected {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {expected} delivered",
            count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Posts `count` distinct push envelopes from 64 connections.
async fn post_events(
    http: &reqwest::Client,
    url: &str,
    count: u64,
    prefix: &str,
) -> anyhow::Result<()> {
    post_events_across(http, &[url.to_owned()], count, prefix).await
}

/// [`post_events`] spread round robin over several gateways, as a load
/// balancer in front of replicas would.
async fn post_events_across(
    http: &reqwest::Client,
    urls: &[String],
    count: u64,
    prefix: &str,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut posters = Vec::new();
    let urls: Arc<Vec<String>> = Arc::new(
        urls.iter()
            .map(|u| format!("{u}/ingest/distribution"))
            .collect(),
    );
    for _ in 0..64 {
        let (http, urls, next, prefix) =
            (http.clone(), urls.clone(), next.clone(), prefix.to_owned());
        posters.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                let url = &urls[i as usize % urls.len()];
                // A new tag each time: a push of a tag already at that
                // digest is rightly no event.
                let body = PUSH
                    .replace(
                        "20337bb7-412d-48f2-a1cc-b3747b9596dc",
                        &format!("{prefix}-{i}"),
                    )
                    .replace("\"tag\": \"v1\"", &format!("\"tag\": \"{prefix}-{i}\""));
                let r = http
                    .post(url)
                    .bearer_auth(INGEST)
                    .header(
                        "content-type",
                        "application/vnd.docker.distribution.events.v1+json",
                    )
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 202, "ingest answered {}", r.status());
            }
        }));
    }
    for p in posters {
        p.await??;
    }
    Ok(())
}

/// The sender alone: 10,000 deliveries queued at once (a replay of 10,000
/// events to a new webhook), drained to a local receiver.
async fn drain(binary: &Path) -> anyhow::Result<Row> {
    const EVENTS: u64 = 10_000;
    let count = Arc::new(AtomicU64::new(0));
    let addr = receiver(count.clone()).await?;
    let direct = wrk(&format!("http://{addr}/hook"), None, 4, 5).await?;
    count.store(0, Ordering::SeqCst);

    let gw = Gateway::start(binary, &[]).await?;
    let http = reqwest::Client::new();
    post_events(&http, &gw.url, EVENTS, "drain").await?;
    let repos: Value = http
        .get(format!("{}/api/v1/repositories", gw.url))
        .bearer_auth(ADMIN)
        .send()
        .await?
        .json()
        .await?;
    let repo = repos[0]["id"]
        .as_str()
        .context("the repository")?
        .to_owned();
    let webhook: Value = http
        .post(format!("{}/api/v1/repositories/{repo}/webhooks", gw.url))
        .bearer_auth(ADMIN)
        .json(&json!({"url": format!("http://{addr}/hook"), "secret": "bench-secret"}))
        .send()
        .await?
        .json()
        .await?;
    let webhook = webhook["id"].as_str().context("the webhook")?.to_owned();
    // The oldest event: the last page of the list.
    let mut before: Option<String> = None;
    let first = loop {
        let mut url = format!("{}/api/v1/events?limit=500", gw.url);
        if let Some(b) = &before {
            url.push_str(&format!("&before={b}"));
        }
        let page: Value = http
            .get(url)
            .bearer_auth(ADMIN)
            .send()
            .await?
            .json()
            .await?;
        match page["next"].as_str() {
            Some(next) => before = Some(next.to_owned()),
            None => {
                break page["items"]
                    .as_array()
                    .and_then(|i| i.last())
                    .context("events")?["id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
            }
        }
    };
    let pid = gw.process.pid().context("the gateway's pid")?;
    let profile = Profile::start(pid, "drain").await?;
    let cpu0 = cpu_secs(pid);
    let started = Instant::now();
    let replay = http
        .post(format!("{}/api/v1/webhooks/{webhook}/replay", gw.url))
        .bearer_auth(ADMIN)
        .json(&json!({"since": first}))
        .send()
        .await?;
    anyhow::ensure!(replay.status() == 202, "replay: {}", replay.text().await?);
    let queued = started.elapsed();
    wait_received(&count, EVENTS).await?;
    let elapsed = started.elapsed();
    let cpu = cpu_secs(pid) - cpu0;
    profile.stop().await?;
    gw.stop().await;
    Ok(Row {
        name: "sender draining a queue",
        value: EVENTS as f64 / elapsed.as_secs_f64(),
        unit: "webhooks/s",
        baseline_name: "wrk to the receiver, 4 conns",
        baseline: direct,
        note: format!(
            "10,000 deliveries made by a replay in {:.2} s, all received after {:.2} s (one webhook, 4 in flight, signed); gateway CPU {:.0} µs per webhook, replay included",
            queued.as_secs_f64(),
            elapsed.as_secs_f64(),
            cpu / EVENTS as f64 * 1e6,
        ),
    })
}

/// The gateway's count of requests made to registries.
async fn poll_requests(http: &reqwest::Client, url: &str) -> anyhow::Result<f64> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix("callisto_poll_requests_total "))
        .and_then(|v| v.trim().parse().ok())
        .context("no callisto_poll_requests_total in /metrics")
}

/// Polls until the repository's `last_poll_at` moves past `after`.
async fn wait_polled(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    after: Option<String>,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let repo: Value = http
            .get(format!("{url}/api/v1/repositories/{id}"))
            .bearer_auth(ADMIN)
            .send()
            .await?
            .json()
            .await?;
        let at = repo["poll"]["last_poll_at"].as_str().map(str::to_owned);
        if at.is_some() && at > after {
            anyhow::ensure!(
                repo["poll"]["last_error"].is_null(),
                "poll failed: {}",
                repo["poll"]["last_error"]
            );
            return Ok(repo);
        }
        anyhow::ensure!(Instant::now() < deadline, "the repository was never polled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A remote repository of 1,000 tags: the first sync and an unchanged poll.
async fn poll(binary: &Path) -> anyhow::Result<Vec<Row>> {
    use callisto_tests::oci::{ImageLayout, RegistryClient};
    use callisto_tests::registry::Registry;
    const TAGS: usize = 1000;
    let registry = Registry::builder().start().await?;
    let client = RegistryClient::new(&registry.host(), None);
    let layout = ImageLayout::new("bench")?;
    client.push_image("bench/many", "t0000", &layout).await?;
    for i in 1..TAGS {
        client
            .put_manifest("bench/many", &format!("t{i:04}"), &layout)
            .await?;
    }

    // Baseline: the same requests from a bare client, 8 at a time, as the
    // poller makes them (one tag list, one manifest HEAD per tag).
    let bare = callisto_tests::oci::http_client();
    let started = Instant::now();
    let list: Value = bare
        .get(format!("{}/v2/bench/many/tags/list?n=1000", registry.url()))
        .send()
        .await?
        .json()
        .await?;
    let tags: Vec<String> = list["tags"]
        .as_array()
        .context("tags")?
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (bare, next, tags, base) = (bare.clone(), next.clone(), tags.clone(), registry.url());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(tag) = tags.get(i) else { return Ok::<_, anyhow::Error>(()) };
                let r = bare
                    .head(format!("{base}/v2/bench/many/manifests/{tag}"))
                    .header("accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json")
                    .send()
                    .await?;
                anyhow::ensure!(r.headers().contains_key("docker-content-digest"), "no digest for {tag}");
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let bare_ms = started.elapsed().as_secs_f64() * 1000.0;
    let bare_requests = 1.0 + tags.len() as f64;

    let gw = Gateway::start(binary, &[("CALLISTO_POLL__REQUESTS_PER_MINUTE", "1000000")]).await?;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/api/v1/repositories", gw.url))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "bench/many", "registry": registry.host(), "kind": "remote", "insecure": true,
                      "initial_sync": "silent", "poll_interval_secs": 3600}))
        .send()
        .await?
        .json()
        .await?;
    let id = created["id"].as_str().context("the repository")?.to_owned();
    let first = wait_polled(&http, &gw.url, &id, None).await?;
    let first_ms = first["poll"]["last_duration_ms"]
        .as_f64()
        .context("duration")?;
    let first_requests = poll_requests(&http, &gw.url).await?;
    anyhow::ensure!(
        first["poll"]["tags_known"] == TAGS,
        "learned {} tags",
        first["poll"]["tags_known"]
    );

    http.post(format!("{}/api/v1/repositories/{id}/poll", gw.url))
        .bearer_auth(ADMIN)
        .send()
        .await?;
    let second = wait_polled(
        &http,
        &gw.url,
        &id,
        first["poll"]["last_poll_at"].as_str().map(str::to_owned),
    )
    .await?;
    let unchanged_ms = second["poll"]["last_duration_ms"]
        .as_f64()
        .context("duration")?;
    let unchanged_requests = poll_requests(&http, &gw.url).await? - first_requests;
    gw.stop().await;
    Ok(vec![
        Row {
            name: "first sync, 1,000 tags",
            value: first_ms,
            unit: "ms",
            baseline_name: "same requests, bare client",
            baseline: bare_ms,
            note: format!("{first_requests} registry requests (bare client: {bare_requests})"),
        },
        Row {
            name: "unchanged poll, 1,000 tags",
            value: unchanged_requests,
            unit: "requests",
            baseline_name: "one list + one HEAD per tag",
            baseline: bare_requests,
            note: format!("{unchanged_ms} ms (bare client: {bare_ms:.0} ms)"),
        },
    ])
}

/// Median nanoseconds per call of `f` over `rounds` batches of `batch`.
fn median_ns(rounds: usize, batch: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..batch {
        f();
    }
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            t.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Filter + format through the sandbox (a warm instance, as fan-out uses)
/// against the plugin crate called natively.
fn plugins() -> Vec<Row> {
    use callisto::plugin::{EventInput, HostDirs, Limits, PluginHost, Runner, WebhookInput};
    use callisto_plugin_sdk::{Plugin, testing};
    let host = PluginHost::new(Limits::default(), HostDirs::default()).expect("plugin host");
    // The SDK's sample push is the very `Event` the host passes to plugins.
    let event = testing::pushed("demo/app", "v1");
    let input = EventInput::from(&event);
    let config = vec![("tags".to_owned(), "v*".to_owned())];
    let webhook = WebhookInput::new("wh_bench", "https://example.com/hook", &config);
    let sdk_event = testing::pushed("demo/app", "v1");
    let sdk_webhook = testing::webhook(&[("tags", "v*")]);
    let mut rows = Vec::new();
    for name in ["default", "slack"] {
        let plugin = host.get(name).unwrap();
        let mut runner = Runner::new(4);
        let sandboxed = median_ns(31, 2000, || {
            std::hint::black_box(runner.run(&plugin, &input, &webhook).unwrap());
        });
        let native = median_ns(31, 2000, || {
            let e = std::hint::black_box(&sdk_event);
            let r = if name == "default" {
                callisto_plugin_default::DefaultPlugin::filter(e, &sdk_webhook)
                    .then(|| callisto_plugin_default::DefaultPlugin::format(e, &sdk_webhook))
            } else {
                callisto_plugin_slack::Slack::filter(e, &sdk_webhook)
                    .then(|| callisto_plugin_slack::Slack::format(e, &sdk_webhook))
            };
            std::hint::black_box(r);
        });
        rows.push(Row {
            name: if name == "default" {
                "plugin default, sandboxed"
            } else {
                "plugin slack, sandboxed"
            },
            value: sandboxed / 1000.0,
            unit: "µs/event",
            baseline_name: "the same formatting, native",
            baseline: native / 1000.0,
            note: String::new(),
        });
    }
    rows
}

fn rss_kib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// Resident memory idle and with 100,000 deliveries pending; time from start
/// to ready with the built-in plugins already compiled and cached.
async fn memory_and_startup(binary: &Path) -> anyhow::Result<Vec<Row>> {
    const PENDING: u64 = 100_000;
    let data = tempfile::tempdir()?;
    let start = |data: &Path| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .env("CALLISTO_LISTEN", format!("127.0.0.1:{port}"))
            .env("CALLISTO_DATA_DIR", data)
            .env("CALLISTO_ADMIN_TOKEN", ADMIN)
            .env("CALLISTO_INGEST_TOKEN", INGEST)
            .env("CALLISTO_ALLOW_PRIVATE_TARGETS", "true")
            .env("CALLISTO_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        (cmd, format!("http://127.0.0.1:{port}"))
    };
    let http = reqwest::Client::new();
    let ready = |url: String| {
        let http = http.clone();
        async move {
            let t = Instant::now();
            while http
                .get(format!("{url}/readyz"))
                .send()
                .await
                .map(|r| r.status().is_success())
                .ok()
                != Some(true)
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            t.elapsed()
        }
    };
    // First start compiles the plugins; the second finds them cached.
    let (mut cmd, url) = start(data.path());
    let mut child = cmd.spawn()?;
    let cold = ready(url.clone()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_first = rss_kib(child.id().context("pid")?)?;
    child.kill().await?;
    let (mut cmd, url) = start(data.path());
    let t = Instant::now();
    let mut child = cmd.spawn()?;
    ready(url.clone()).await;
    let warm = t.elapsed();
    // Idle as a gateway runs all its life but its first minute: restarted
    // on its data directory, the plugins compiled there already.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(child.id().context("pid")?)?;

    // 100,000 deliveries pending: a webhook to a port where nothing
    // listens, with a long retry schedule.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let created = http
        .post(format!("{url}/api/v1/repositories"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "demo/app", "webhooks": [{"url": format!("http://127.0.0.1:{closed}/x"), "retry_schedule_secs": [86400]}]}))
        .send()
        .await?;
    anyhow::ensure!(created.status().is_success(), "creating the repository");
    post_events(&http, &url, PENDING, "pending").await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let text = http
            .get(format!("{url}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let pending: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("callisto_deliveries_pending "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        if pending >= PENDING as f64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {pending} deliveries pending"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = rss_kib(child.id().context("pid")?)?;
    child.kill().await?;
    Ok(vec![
        Row {
            name: "resident memory, 100,000 pending",
            value: loaded / 1024.0,
            unit: "MiB",
            baseline_name: "resident memory, idle",
            baseline: idle / 1024.0,
            note: String::new(),
        },
        Row {
            name: "resident memory, idle (plugins cached)",
            value: idle / 1024.0,
            unit: "MiB",
            baseline_name: "idle after a first start (compiling)",
            baseline: idle_first / 1024.0,
            note: String::new(),
        },
        Row {
            name: "start to ready, plugins cached",
            value: warm.as_secs_f64() * 1000.0,
            unit: "ms",
            baseline_name: "first start, compiling plugins",
            baseline: cold.as_secs_f64() * 1000.0,
            note: String::new(),
        },
    ])
}

/// Start to ready with a store holding many events, against the same with
/// an empty store, both warm (plugins cached, the file in the page cache),
/// median of several starts each, alternated. The big store is filled
/// through the API, for about a minute, with envelopes of many events.
async fn startup_with_history(binary: &Path) -> anyhow::Result<Row> {
    const TARGET: u64 = 1_000_000;
    const PER_ENVELOPE: u64 = 2_000;
    const FILL_FOR: Duration = Duration::from_secs(60);
    const ROUNDS: usize = 7;
    let cache = tempfile::tempdir()?;
    let (empty, big) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let cache_dir = cache.path().to_str().context("cache path")?.to_owned();
    let http = reqwest::Client::new();

    // Fill: unique tags, so that every push is a new event.
    let (mut gw, url) = start_gateway(binary, big.path(), &cache_dir)?;
    wait_ready(&http, &url).await?;
    let template: Value = serde_json::from_str(PUSH)?;
    let event = template["events"][0].clone();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut posters = Vec::new();
    for poster in 0..3 {
        let (http, url, next, event) = (http.clone(), url.clone(), next.clone(), event.clone());
        posters.push(tokio::spawn(async move {
            while started.elapsed() < FILL_FOR {
                let first = next.fetch_add(PER_ENVELOPE, Ordering::Relaxed);
                if first >= TARGET {
                    break;
                }
                let events: Vec<Value> = (first..first + PER_ENVELOPE)
                    .map(|i| {
                        let mut e = event.clone();
                        e["id"] = json!(format!("history-{poster}-{i}"));
                        e["target"]["tag"] = json!(format!("t{i}"));
                        e
                    })
                    .collect();
                let r = http
                    .post(format!("{url}/ingest/distribution"))
                    .bearer_auth(INGEST)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&json!({ "events": events }))?)
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 202, "ingest answered {}", r.status());
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for p in posters {
        p.await??;
    }
    let filled = started.elapsed();
    let page: Value = http
        .get(format!("{url}/api/v1/events?limit=1"))
        .bearer_auth(ADMIN)
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        page["items"].as_array().is_some_and(|i| !i.is_empty()),
        "no events were recorded"
    );
    let events = next.load(Ordering::Relaxed).min(TARGET);
    terminate(&mut gw).await?;
    let bytes = std::fs::metadata(big.path().join("callisto.redb"))?.len();

    // Alternate the two stores; the first start of each is not counted.
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..=ROUNDS {
        for (i, dir) in [empty.path(), big.path()].into_iter().enumerate() {
            let (mut gw, url) = start_gateway(binary, dir, &cache_dir)?;
            let t = Instant::now();
            wait_ready(&http, &url).await?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if round > 0 {
                times[i].push(ms);
            }
            terminate(&mut gw).await?;
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (empty_ms, big_ms) = (median(&mut times[0]), median(&mut times[1]));
    Ok(Row {
        name: "start to ready, large store",
        value: big_ms,
        unit: "ms",
        baseline_name: "start to ready, empty store",
        baseline: empty_ms,
        note: format!(
            "{events} events ({:.0} MB file, filled through the API in {:.0} s); median of {ROUNDS} warm starts each; target ≤ 200 ms",
            bytes as f64 / 1e6,
            filled.as_secs_f64()
        ),
    })
}

/// `callisto serve` on `data`, quiet, with the plugin cache in `cache`; the
/// clock starts when this returns. Spawned at once, measured by the caller.
fn start_gateway(
    binary: &Path,
    data: &Path,
    cache: &str,
) -> anyhow::Result<(tokio::process::Child, String)> {
    let port = callisto_tests::gateway::free_port();
    let child = Command::new(binary)
        .arg("serve")
        .env("CALLISTO_LISTEN", format!("127.0.0.1:{port}"))
        .env("CALLISTO_DATA_DIR", data)
        .env("CALLISTO_ADMIN_TOKEN", ADMIN)
        .env("CALLISTO_INGEST_TOKEN", INGEST)
        .env("CALLISTO_PLUGINS__CACHE_DIR", cache)
        .env("CALLISTO_INGEST__MAX_BODY_BYTES", "67108864")
        .env("CALLISTO_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the gateway")?;
    Ok((child, format!("http://127.0.0.1:{port}")))
}

async fn wait_ready(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while http
        .get(format!("{url}/readyz"))
        .send()
        .await
        .map(|r| r.status().is_success())
        .ok()
        != Some(true)
    {
        anyhow::ensure!(Instant::now() < deadline, "{url} did not get ready");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// SIGTERM, and waits for the exit: a clean shutdown, so that the next
/// start needs no crash recovery.
async fn terminate(child: &mut tokio::process::Child) -> anyhow::Result<()> {
    let pid = child.id().context("the gateway already exited")?;
    Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .await?;
    tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .context("the gateway did not stop on SIGTERM")??;
    Ok(())
}
