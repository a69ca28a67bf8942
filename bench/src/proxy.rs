//! The registry proxy against the same client talking straight to the same
//! docker-registry, in the same run: a 1 GiB blob pushed (one streamed
//! `PATCH`, then the closing `PUT`) and pulled, the latency of a manifest
//! `PUT` (whose event is committed durably before the answer), and the
//! gateway's memory during the push. Direct and proxied runs alternate, and
//! the best of each is kept, so a burst of load elsewhere on the machine
//! hits both alike.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use callisto_tests::oci::{ImageLayout, OCI_MANIFEST, RegistryClient};
use callisto_tests::registry::Registry;

use super::{Gateway, Row, rss_kib};

const BLOB_MIB: usize = 1024;
const ROUNDS: usize = 2;
const MANIFEST_PUTS: usize = 300;

/// Chunk `n` of the generated blob: 1 MiB, its number in the first bytes.
fn chunk(base: &[u8], n: usize) -> Bytes {
    let mut c = base.to_vec();
    c[..8].copy_from_slice(&(n as u64).to_le_bytes());
    Bytes::from(c)
}

fn base_chunk() -> Vec<u8> {
    (0..1usize << 20).map(|i| (i % 253) as u8).collect()
}

fn blob_digest(base: &[u8]) -> String {
    let mut h = Sha256::new();
    for n in 0..BLOB_MIB {
        h.update(chunk(base, n));
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Pushes the blob to `repo` through `base` (a registry or the proxy):
/// seconds taken.
async fn push(
    http: &reqwest::Client,
    base_url: &str,
    repo: &str,
    data: &Arc<Vec<u8>>,
    digest: &str,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let start = http
        .post(format!("{base_url}/v2/{repo}/blobs/uploads/"))
        .send()
        .await?;
    ensure!(start.status() == 202, "POST upload: {}", start.status());
    let location = start.headers()["location"].to_str()?.to_owned();
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes>::new(4);
    let feed = {
        let data = data.clone();
        tokio::spawn(async move {
            for n in 0..BLOB_MIB {
                if tx.send_data(chunk(&data, n)).await.is_err() {
                    break;
                }
            }
        })
    };
    let patched = http
        .patch(&location)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap(body))
        .send()
        .await?;
    feed.await?;
    ensure!(patched.status() == 202, "PATCH: {}", patched.status());
    let location = patched.headers()["location"].to_str()?.to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let done = http
        .put(format!("{location}{sep}digest={digest}"))
        .send()
        .await?;
    ensure!(done.status() == 201, "PUT: {}", done.status());
    Ok(started.elapsed().as_secs_f64())
}

/// Pulls the blob, reading every byte: seconds taken.
async fn pull(http: &reqwest::Client, url: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut r = http.get(url).send().await?;
    ensure!(r.status() == 200, "GET blob: {}", r.status());
    let mut total = 0usize;
    while let Some(c) = r.chunk().await? {
        total += c.len();
    }
    ensure!(total == BLOB_MIB << 20, "pulled {total} bytes");
    Ok(started.elapsed().as_secs_f64())
}

/// CPU seconds `pid` has used (user and system), from `/proc/<pid>/stat`.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which ends at the last `)`.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// Median milliseconds of a manifest `PUT` to fresh tags through `base`.
async fn manifest_puts(
    http: &reqwest::Client,
    base_url: &str,
    layout: &ImageLayout,
    prefix: &str,
) -> anyhow::Result<f64> {
    let mut ms = Vec::with_capacity(MANIFEST_PUTS);
    for i in 0..MANIFEST_PUTS {
        let started = Instant::now();
        let r = http
            .put(format!(
                "{base_url}/v2/bench/manifests/manifests/{prefix}{i}"
            ))
            .header("content-type", OCI_MANIFEST)
            .body(layout.manifest().to_vec())
            .send()
            .await?;
        ensure!(r.status() == 201, "PUT manifest: {}", r.status());
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}

pub async fn proxy(binary: &Path) -> anyhow::Result<Vec<Row>> {
    let registry = Registry::builder().start().await?;
    let listen = format!("127.0.0.1:{}", callisto_tests::gateway::free_port());
    let gw = Gateway::start(
        binary,
        &[
            ("CALLISTO_PROXY__LISTEN", &listen),
            ("CALLISTO_PROXY__UPSTREAM", &registry.url()),
        ],
    )
    .await?;
    let pid = gw.process.pid().context("the gateway runs")?;
    let proxied = format!("http://{listen}");
    let direct = registry.url();
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(8)
        .build()?;

    let data = Arc::new(base_chunk());
    let digest = blob_digest(&data);
    let at_rest = rss_kib(pid)?;
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(kib) = rss_kib(pid) {
                    peak.fetch_max(kib as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (mut push_direct, mut push_proxy) = (f64::MAX, f64::MAX);
    let (mut pull_direct, mut pull_proxy) = (f64::MAX, f64::MAX);
    let (mut push_cpu, mut pull_cpu) = (f64::MAX, f64::MAX);
    for round in 0..ROUNDS {
        push_direct = push_direct
            .min(push(&http, &direct, &format!("bench/d{round}"), &data, &digest).await?);
        let cpu = cpu_secs(pid);
        push_proxy = push_proxy
            .min(push(&http, &proxied, &format!("bench/p{round}"), &data, &digest).await?);
        push_cpu = push_cpu.min(cpu_secs(pid) - cpu);
        pull_direct = pull_direct
            .min(pull(&http, &format!("{direct}/v2/bench/d{round}/blobs/{digest}")).await?);
        let cpu = cpu_secs(pid);
        pull_proxy = pull_proxy.min(
            pull(
                &http,
                &format!("{proxied}/v2/bench/p{round}/blobs/{digest}"),
            )
            .await?,
        );
        pull_cpu = pull_cpu.min(cpu_secs(pid) - cpu);
    }
    sampler.abort();
    let peak_kib = peak.load(Ordering::Relaxed) as f64;

    let layout = ImageLayout::new("bench-proxy")?;
    RegistryClient::new(&registry.host(), None)
        .push_image("bench/manifests", "seed", &layout)
        .await?;
    let (mut put_direct, mut put_proxy) = (f64::MAX, f64::MAX);
    for round in 0..ROUNDS {
        put_direct =
            put_direct.min(manifest_puts(&http, &direct, &layout, &format!("d{round}-")).await?);
        put_proxy =
            put_proxy.min(manifest_puts(&http, &proxied, &layout, &format!("p{round}-")).await?);
    }
    gw.stop().await;

    let mib_s = |secs: f64| BLOB_MIB as f64 / secs;
    Ok(vec![
        Row {
            name: "proxy push 1 GiB blob",
            value: mib_s(push_proxy),
            unit: "MiB/s",
            baseline_name: "same push straight to registry",
            baseline: mib_s(push_direct),
            note: format!(
                "best of {ROUNDS}; one streamed PATCH, then PUT ?digest; gateway CPU {push_cpu:.2} s per GiB"
            ),
        },
        Row {
            name: "proxy pull 1 GiB blob",
            value: mib_s(pull_proxy),
            unit: "MiB/s",
            baseline_name: "same pull straight from registry",
            baseline: mib_s(pull_direct),
            note: format!("best of {ROUNDS}; gateway CPU {pull_cpu:.2} s per GiB"),
        },
        Row {
            name: "proxy manifest PUT (median)",
            value: put_proxy,
            unit: "ms",
            baseline_name: "same PUT straight to registry",
            baseline: put_direct,
            note: format!(
                "{MANIFEST_PUTS} PUTs to new tags, sequential; added {:.2} ms per PUT (event committed durably first)",
                put_proxy - put_direct
            ),
        },
        Row {
            name: "proxy memory peak, 1 GiB push+pull",
            value: peak_kib / 1024.0,
            unit: "MiB",
            baseline_name: "same gateway at rest",
            baseline: at_rest / 1024.0,
            note: format!("RSS sampled every 20 ms over {ROUNDS} pushes and pulls"),
        },
    ])
}
