//! The registry proxy with real clients against a real registry: skopeo
//! pushing, pulling and deleting through it to Debian's `docker-registry`,
//! a hand-written chunked upload (POST, PATCH, PATCH, PUT: the flow
//! `oci-client` and containerd use, written out with reqwest since
//! `oci-client` is not a dependency of the workspace), a 1 GiB blob, and
//! failures of the upstream and of the gateway itself.

use std::time::Duration;

use bytes::Bytes;
use callisto::config::ProxyConfig;
use callisto::test_util::TestGateway;
use callisto_tests::gateway::{ADMIN_TOKEN, GatewayProcess, free_port};
use callisto_tests::oci::{
    ImageLayout, OCI_INDEX, OCI_MANIFEST, RegistryClient, RichLayout, skopeo,
};
use callisto_tests::registry::Registry;
use serde_json::Value;
use sha2::{Digest, Sha256};

async fn registry(htpasswd: Option<(&str, &str)>) -> Registry {
    let mut builder = Registry::builder();
    if let Some((user, password)) = htpasswd {
        builder = builder.htpasswd(user, password);
    }
    builder
        .start()
        .await
        .expect("docker-registry starts (is the docker-registry package installed?)")
}

/// A gateway proxying `upstream`.
async fn proxied(upstream: &str, tweak: impl FnOnce(&mut ProxyConfig)) -> TestGateway {
    let mut proxy = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), upstream);
    tweak(&mut proxy);
    crate::gateway_with(|c| c.proxy = Some(proxy)).await
}

fn proxy_host(gw: &TestGateway) -> String {
    gw.proxy_url
        .as_deref()
        .expect("the proxy runs")
        .trim_start_matches("http://")
        .to_owned()
}

/// The log's events, oldest first.
async fn events_of(http: &reqwest::Client, url: &str, token: &str) -> Vec<Value> {
    let page: Value = http
        .get(format!("{url}/api/v1/events?limit=200"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut items = page["items"].as_array().cloned().unwrap_or_default();
    items.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    items
}

async fn events(gw: &TestGateway) -> Vec<Value> {
    events_of(&gw.http, &gw.url, &gw.admin_token).await
}

/// A client with no overall timeout, for bodies that take a while.
fn streaming_client() -> reqwest::Client {
    callisto::net::client::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[tokio::test]
async fn skopeo_push_pull_and_delete_through_the_proxy_are_events() {
    let registry = registry(None).await;
    let gw = proxied(&registry.url(), |_| {}).await;
    let proxy = proxy_host(&gw);
    let image = RichLayout::multi_layer("proxy-multi", 3).unwrap();

    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-no-creds",
        &image.reference(),
        &format!("docker://{proxy}/demo/app:v1"),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}\nregistry log:\n{}", registry.log()));

    let log = events(&gw).await;
    assert_eq!(log.len(), 1, "{log:#?}");
    let e = &log[0];
    assert_eq!(e["type"], "image.pushed");
    assert_eq!(e["source"], "proxy");
    assert_eq!(e["repository"]["name"], "demo/app");
    assert_eq!(e["repository"]["registry"], registry.host());
    assert_eq!(e["tag"], "v1");
    assert_eq!(e["digest"], image.top.digest.as_str());
    assert_eq!(e["media_type"], OCI_MANIFEST);
    assert_eq!(e["size"], image.top.bytes.len());
    assert!(e["actor"].is_null());
    // The registry has it: the proxy forwarded, it did not keep.
    let direct = RegistryClient::new(&registry.host(), None);
    assert_eq!(
        direct.digest("demo/app", "v1").await.unwrap().as_deref(),
        Some(image.top.digest.as_str())
    );

    // The same PUT again (a client's retry): the registry says 201 again,
    // the log has it once.
    let again = gw
        .http
        .put(format!("http://{proxy}/v2/demo/app/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(image.top.bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(events(&gw).await.len(), 1);

    // v1 moves to another image, then back (a rollback): two events, each
    // naming the digest it moved from.
    let other = ImageLayout::new("proxy-other").unwrap();
    let through = RegistryClient::new(&proxy, None);
    through.push_image("demo/app", "v1", &other).await.unwrap();
    let back = gw
        .http
        .put(format!("http://{proxy}/v2/demo/app/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(image.top.bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 201);
    let log = events(&gw).await;
    assert_eq!(log.len(), 3, "{log:#?}");
    assert_eq!(log[1]["digest"], other.manifest_digest());
    assert_eq!(log[1]["previous_digest"], image.top.digest.as_str());
    assert_eq!(log[2]["digest"], image.top.digest.as_str());
    assert_eq!(log[2]["previous_digest"], other.manifest_digest());

    // An upload's Location leads back to the proxy, not to the registry.
    let started = gw
        .http
        .post(format!("http://{proxy}/v2/demo/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("http://{proxy}/v2/demo/app/blobs/uploads/")),
        "{location}"
    );

    // A pull through the proxy makes no event.
    let pulled = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--src-no-creds",
        &format!("docker://{proxy}/demo/app:v1"),
        &format!("oci:{}:pulled", pulled.path().display()),
    ])
    .await
    .unwrap();
    let index: Value =
        serde_json::from_slice(&std::fs::read(pulled.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], image.top.digest.as_str());
    assert_eq!(events(&gw).await.len(), 3);

    // skopeo deletes by digest: the tag on it goes, one image.deleted.
    skopeo(&[
        "delete",
        "--tls-verify=false",
        "--no-creds",
        &format!("docker://{proxy}/demo/app:v1"),
    ])
    .await
    .unwrap();
    let log = events(&gw).await;
    assert_eq!(log.len(), 4, "{log:#?}");
    assert_eq!(log[3]["type"], "image.deleted");
    assert_eq!(log[3]["source"], "proxy");
    assert_eq!(log[3]["tag"], "v1");
    assert_eq!(log[3]["digest"], image.top.digest.as_str());
    assert_eq!(direct.digest("demo/app", "v1").await.unwrap(), None);

    // Outside the distribution API, nothing is forwarded.
    let other = gw
        .http
        .get(format!("http://{proxy}/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn with_htpasswd_the_client_authenticates_to_the_registry_and_is_named() {
    let registry = registry(Some(("alice", "s3cret-pass"))).await;
    let gw = proxied(&registry.url(), |_| {}).await;
    let proxy = proxy_host(&gw);

    // The challenge comes from the registry, untouched.
    let ping = gw
        .http
        .get(format!("http://{proxy}/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 401);
    let challenge = ping.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("callisto-test"), "{challenge}");

    let image = ImageLayout::new("proxy-auth").unwrap();
    let layout = format!("oci:{}:latest", image.path().display());
    let target = format!("docker://{proxy}/team/app:v1");
    let refused = skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-no-creds",
        &layout,
        &target,
    ])
    .await;
    assert!(refused.is_err(), "an anonymous push went through");
    assert!(events(&gw).await.is_empty());

    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-creds=alice:s3cret-pass",
        &layout,
        &target,
    ])
    .await
    .unwrap();
    skopeo(&[
        "delete",
        "--tls-verify=false",
        "--creds=alice:s3cret-pass",
        &target,
    ])
    .await
    .unwrap();
    let log = events(&gw).await;
    assert_eq!(log.len(), 2, "{log:#?}");
    assert_eq!(log[0]["type"], "image.pushed");
    assert_eq!(log[0]["actor"], "alice");
    assert_eq!(log[0]["digest"], image.manifest_digest());
    assert_eq!(log[1]["type"], "image.deleted");
    assert_eq!(log[1]["actor"], "alice");
}

#[tokio::test]
async fn a_multi_arch_index_is_its_platform_manifests_and_the_tagged_index() {
    let registry = registry(None).await;
    let gw = proxied(&registry.url(), |_| {}).await;
    let proxy = proxy_host(&gw);
    let image = RichLayout::multi_arch("proxy-index", &["amd64", "arm64"]).unwrap();

    skopeo(&[
        "copy",
        "--quiet",
        "--all",
        "--dest-tls-verify=false",
        "--dest-no-creds",
        &image.reference(),
        &format!("docker://{proxy}/demo/multi:v2"),
    ])
    .await
    .unwrap();

    let log = events(&gw).await;
    assert_eq!(log.len(), 3, "{log:#?}");
    let mut untagged: Vec<&str> = log
        .iter()
        .filter(|e| e["tag"].is_null())
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    untagged.sort();
    let mut platforms: Vec<&str> = image.platforms.iter().map(|b| b.digest.as_str()).collect();
    platforms.sort();
    assert_eq!(untagged, platforms);
    let tagged: Vec<&Value> = log.iter().filter(|e| e["tag"] == "v2").collect();
    assert_eq!(tagged.len(), 1);
    assert_eq!(tagged[0]["digest"], image.top.digest.as_str());
    assert_eq!(tagged[0]["media_type"], OCI_INDEX);
    assert!(log.iter().all(|e| e["type"] == "image.pushed"));
}

#[tokio::test]
async fn chunked_uploads_ranges_mounts_and_lists_pass_through() {
    let registry = registry(None).await;
    let gw = proxied(&registry.url(), |_| {}).await;
    let base = gw.proxy_url.clone().unwrap();
    let http = &gw.http;

    let blob: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let digest = format!("sha256:{}", hex(&Sha256::digest(&blob)));

    let start = http
        .post(format!("{base}/v2/demo/chunks/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 202);
    let mut location = start.headers()["location"].to_str().unwrap().to_owned();
    for (from, to) in [(0usize, 100_000usize), (100_000, 300_000)] {
        assert!(location.starts_with(&base), "{location}");
        let chunk = http
            .patch(&location)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{from}-{}", to - 1))
            .body(blob[from..to].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(chunk.status(), 202, "{:?}", chunk.text().await);
        assert_eq!(chunk.headers()["range"], format!("0-{}", to - 1).as_str());
        location = chunk.headers()["location"].to_str().unwrap().to_owned();
    }
    let sep = if location.contains('?') { '&' } else { '?' };
    let done = http
        .put(format!("{location}{sep}digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 201);

    // A range read.
    let part = http
        .get(format!("{base}/v2/demo/chunks/blobs/{digest}"))
        .header("range", "bytes=1000-1009")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &blob[1000..1010]);

    // A cross-repository mount.
    let mount = http
        .post(format!(
            "{base}/v2/demo/other/blobs/uploads/?mount={digest}&from=demo/chunks"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(mount.status(), 201);
    let head = http
        .head(format!("{base}/v2/demo/other/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "300000");

    // A manifest through the same client, then the lists.
    let image = ImageLayout::new("proxy-chunks").unwrap();
    let through = RegistryClient::new(base.trim_start_matches("http://"), None);
    through
        .push_image("demo/chunks", "t1", &image)
        .await
        .unwrap();
    assert_eq!(through.tags("demo/chunks").await.unwrap(), ["t1"]);
    let catalog: Value = http
        .get(format!("{base}/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let repos = catalog["repositories"].as_array().unwrap();
    assert!(repos.iter().any(|r| r == "demo/other"), "{catalog}");
    let log = events(&gw).await;
    assert_eq!(log.len(), 1, "blobs and mounts make no event: {log:#?}");
    assert_eq!(log[0]["tag"], "t1");
}

/// Sends `chunks` chunks of 1 MiB into `tx`, hashing them; stops early if
/// the receiving side is gone. Returns the digest of what was generated and
/// how many chunks were sent.
async fn generate(
    tx: &mut http_body_util::channel::Sender<Bytes>,
    chunks: usize,
) -> (String, usize) {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i % 253) as u8;
    }
    for n in 0..chunks {
        buf[..8].copy_from_slice(&(n as u64).to_le_bytes());
        let chunk = Bytes::copy_from_slice(&buf);
        hasher.update(&chunk);
        if tx.send_data(chunk).await.is_err() {
            return (String::new(), n);
        }
    }
    (format!("sha256:{}", hex(&hasher.finalize())), chunks)
}

/// Starts a blob upload through `base` and returns the `PATCH` in flight,
/// fed by the returned sender.
async fn streaming_patch(
    http: &reqwest::Client,
    base: &str,
    repo: &str,
) -> (
    String,
    http_body_util::channel::Sender<Bytes>,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) {
    let start = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 202);
    let location = start.headers()["location"].to_str().unwrap().to_owned();
    let (tx, body) = http_body_util::channel::Channel::<Bytes>::new(2);
    let patch = http
        .patch(&location)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap(body));
    (location, tx, tokio::spawn(patch.send()))
}

#[tokio::test]
async fn an_upstream_stopped_mid_push_fails_the_push_and_records_nothing() {
    let mut registry = registry(None).await;
    let gw = proxied(&registry.url(), |_| {}).await;
    let base = gw.proxy_url.clone().unwrap();
    let http = streaming_client();

    let (_, mut tx, patch) = streaming_patch(&http, &base, "demo/stopped").await;
    let (_, _) = generate(&mut tx, 16).await;
    registry.stop().await;
    let (_, sent) = generate(&mut tx, 256).await;
    drop(tx);
    // Either the connection is cut (an error) or the proxy answers 5xx.
    if let Ok(r) = patch.await.unwrap() {
        assert!(
            r.status().is_server_error(),
            "{} after {sent} MiB",
            r.status()
        );
    }

    // A manifest with the registry gone: 502 in the registry's error shape.
    let image = ImageLayout::new("stopped").unwrap();
    let put = gw
        .http
        .put(format!("{base}/v2/demo/stopped/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(image.manifest().to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 502);
    let body: Value = put.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
    assert!(events(&gw).await.is_empty());
    // The admin API is unaffected.
    let ready = gw
        .http
        .get(format!("{}/readyz", gw.url))
        .send()
        .await
        .unwrap();
    assert!(ready.status().is_success());
}

#[tokio::test]
async fn a_silent_upstream_times_out_and_never_holds_the_admin_api() {
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = format!("http://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in silent.incoming().take(4) {
            open.push(stream);
        }
        std::thread::sleep(Duration::from_secs(10));
    });
    let gw = proxied(&upstream, |p| p.response_timeout_secs = 2).await;
    let base = gw.proxy_url.clone().unwrap();

    let pending = gw.http.get(format!("{base}/v2/demo/app/tags/list")).send();
    tokio::pin!(pending);
    // While the proxied request waits, the admin API answers.
    let admin = tokio::select! {
        r = &mut pending => panic!("the proxied request ended first: {r:?}"),
        r = gw.http.get(format!("{}/api/v1/events", gw.url)).bearer_auth(&gw.admin_token).send() => r.unwrap(),
    };
    assert_eq!(admin.status(), 200);
    let answer = pending.await.unwrap();
    assert_eq!(answer.status(), 504);
    drop(held);
}

/// The gateway as a process, proxying `registry`.
async fn gateway_process(data: &std::path::Path, upstream: &str) -> (GatewayProcess, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let gw = GatewayProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_callisto-e2e")),
        data,
        &[
            ("CALLISTO_PROXY__LISTEN", &listen),
            ("CALLISTO_PROXY__UPSTREAM", upstream),
        ],
    )
    .await;
    (gw, format!("http://{listen}"))
}

#[tokio::test]
async fn kill_9_of_the_gateway_mid_push_leaves_nothing_half_recorded() {
    let registry = registry(None).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, base) = gateway_process(&dir.path().join("data"), &registry.url()).await;
    let http = streaming_client();

    let (_, mut tx, patch) = streaming_patch(&http, &base, "demo/killed").await;
    generate(&mut tx, 16).await;
    gw.kill9().await;
    generate(&mut tx, 64).await;
    drop(tx);
    let outcome = patch.await.unwrap();
    assert!(
        outcome.is_err(),
        "the push got an answer although the gateway was killed: {outcome:?}"
    );

    gw.restart().await;

    // Killed again with a manifest half sent: the registry never got it,
    // the log has nothing.
    let image = ImageLayout::new("killed").unwrap();
    let through = RegistryClient::new(base.trim_start_matches("http://"), None);
    for blob in image.blobs() {
        through.push_blob("demo/killed", blob).await.unwrap();
    }
    let manifest = image.manifest();
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes>::new(1);
    let put = tokio::spawn(
        http.put(format!("{base}/v2/demo/killed/manifests/v1"))
            .header("content-type", OCI_MANIFEST)
            .header("content-length", manifest.len())
            .body(reqwest::Body::wrap(body))
            .send(),
    );
    tx.send_data(Bytes::copy_from_slice(&manifest[..manifest.len() / 2]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.kill9().await;
    drop(tx);
    assert!(put.await.unwrap().is_err());
    gw.restart().await;
    let direct = RegistryClient::new(&registry.host(), None);
    assert_eq!(direct.digest("demo/killed", "v1").await.unwrap(), None);
    let log = events_of(&crate_http(), &gw.url, ADMIN_TOKEN).await;
    assert!(log.is_empty(), "{log:#?}");

    // The client pushes again, through the restarted gateway: one event.
    through
        .push_image("demo/killed", "v1", &image)
        .await
        .unwrap();
    let log = events_of(&crate_http(), &gw.url, ADMIN_TOKEN).await;
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0]["digest"], image.manifest_digest());
}

fn crate_http() -> reqwest::Client {
    callisto_tests::http()
}

/// Resident memory of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Samples the RSS of `pid` until dropped; the peak is read at the end.
struct RssWatch {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssWatch {
    fn start(pid: u32) -> Self {
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                p.fetch_max(rss(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { peak, task }
    }

    fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const GIB_IN_MIB: usize = 1024;
/// Well under what buffering a 1 GiB blob would take, well over what the
/// gateway needs at rest plus its buffers.
const RSS_CEILING: u64 = 200 << 20;

#[tokio::test]
async fn a_gigabyte_blob_streams_both_ways_in_flat_memory() {
    let registry = registry(None).await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, base) = gateway_process(&dir.path().join("data"), &registry.url()).await;
    let pid = gw.pid().unwrap();
    let at_rest = rss(pid);
    let http = streaming_client();

    let watch = RssWatch::start(pid);
    let (location, mut tx, patch) = streaming_patch(&http, &base, "demo/big").await;
    let (digest, sent) = generate(&mut tx, GIB_IN_MIB).await;
    assert_eq!(sent, GIB_IN_MIB);
    drop(tx);
    let patched = patch.await.unwrap().unwrap();
    assert_eq!(patched.status(), 202);
    let location = patched
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or(location);
    let sep = if location.contains('?') { '&' } else { '?' };
    let done = http
        .put(format!("{location}{sep}digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 201, "{:?}", done.text().await);
    let push_peak = watch.peak();

    // And back, hashing as it comes.
    let watch = RssWatch::start(pid);
    let mut pulled = http
        .get(format!("{base}/v2/demo/big/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(pulled.status(), 200);
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    while let Some(chunk) = pulled.chunk().await.unwrap() {
        total += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(total, (GIB_IN_MIB as u64) << 20);
    assert_eq!(format!("sha256:{}", hex(&hasher.finalize())), digest);
    let pull_peak = watch.peak();
    eprintln!(
        "gateway RSS: at rest {} MiB, peak during the 1 GiB push {} MiB, during the pull {} MiB",
        at_rest >> 20,
        push_peak >> 20,
        pull_peak >> 20
    );
    assert!(push_peak > 0 && pull_peak > 0);
    assert!(push_peak < RSS_CEILING, "push peak {push_peak}");
    assert!(pull_peak < RSS_CEILING, "pull peak {pull_peak}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The gateway's disk fills up: a push the registry accepted but the log
/// could not hold answers 503 (never 201 without its event); the client's
/// retry, once space returns, is one event.
#[tokio::test]
async fn a_failed_commit_answers_503_and_the_retry_is_one_event() {
    let disk = match crate::faults::SmallDisk::mount(16) {
        Ok(disk) => disk,
        Err(reason) => {
            println!(
                "SKIPPED a_failed_commit_answers_503_and_the_retry_is_one_event: cannot mount a tmpfs here ({reason})"
            );
            return;
        }
    };
    let registry = registry(None).await;
    let mut config = callisto::test_util::test_config(&disk.path().join("data"));
    config.plugins.cache_dir = Some(crate::shared_cache_dir());
    config.proxy = Some(ProxyConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        &registry.url(),
    ));
    let gw = TestGateway::start_in(tempfile::tempdir().unwrap(), config).await;
    let base = gw.proxy_url.clone().unwrap();
    let image = ImageLayout::new("full-disk").unwrap();
    RegistryClient::new(base.trim_start_matches("http://"), None)
        .push_image("demo/full", "first", &image)
        .await
        .unwrap();
    let put = |tag: String| {
        gw.http
            .put(format!("{base}/v2/demo/full/manifests/{tag}"))
            .header("content-type", OCI_MANIFEST)
            .body(image.manifest().to_vec())
            .send()
    };

    let filler = disk.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut accepted = 1;
    let mut refused_tag = None;
    for i in 0..2000 {
        let r = put(format!("t{i}")).await.unwrap();
        match r.status().as_u16() {
            201 => accepted += 1,
            503 => {
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
                refused_tag = Some(format!("t{i}"));
                break;
            }
            other => panic!("a full disk answered {other}"),
        }
    }
    let refused_tag = refused_tag.expect("the disk never filled up");
    std::fs::remove_file(&filler).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = put(refused_tag.clone()).await.unwrap();
        if r.status() == 201 {
            break;
        }
        assert_eq!(r.status(), 503);
        assert!(tokio::time::Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And once more, as a client whose answer was lost would.
    assert_eq!(put(refused_tag.clone()).await.unwrap().status(), 201);
    let log = events(&gw).await;
    assert_eq!(log.len(), accepted + 1, "{log:#?}");
    assert_eq!(
        log.iter()
            .filter(|e| e["tag"] == refused_tag.as_str())
            .count(),
        1
    );
}

#[tokio::test]
async fn a_manifest_over_the_limit_is_refused_and_never_forwarded() {
    let registry = registry(None).await;
    let gw = proxied(&registry.url(), |p| p.max_manifest_bytes = 64 << 10).await;
    let base = gw.proxy_url.clone().unwrap();
    let mut manifest: Value =
        serde_json::from_slice(ImageLayout::new("big").unwrap().manifest()).unwrap();
    manifest["annotations"] = serde_json::json!({"padding": "x".repeat(100 << 10)});
    let r = gw
        .http
        .put(format!("{base}/v2/demo/big/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(serde_json::to_vec(&manifest).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_INVALID");
    assert!(events(&gw).await.is_empty());
    let direct = RegistryClient::new(&registry.host(), None);
    assert_eq!(direct.digest("demo/big", "v1").await.unwrap(), None);
}

/// TLS on both sides, with the gateway itself: an outer proxy serves HTTPS
/// (`[proxy.tls]`) in front of the registry, and an inner one reaches it as
/// an `https` upstream trusted through `ca_bundle`. A skopeo push through
/// the inner one crosses both, each rewriting upload locations to itself.
#[tokio::test]
async fn tls_on_the_listener_and_to_an_https_upstream() {
    let registry = registry(None).await;
    let pki = crate::tls::pki();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();

    let outer = proxied(&registry.url(), |p| {
        p.tls = Some(callisto::config::TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        })
    })
    .await;
    let outer_port = outer
        .proxy_url
        .as_deref()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .to_owned();
    let outer_url = format!("https://localhost:{outer_port}");
    let without_ca = proxied(&outer_url, |_| {}).await;
    let inner = proxied(&outer_url, |p| p.ca_bundle = Some(ca.clone())).await;

    // Not trusted without the CA: the inner proxy says 502.
    let refused = without_ca
        .http
        .get(format!("{}/v2/", without_ca.proxy_url.as_deref().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 502);

    let image = ImageLayout::new("tls-chain").unwrap();
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-no-creds",
        &format!("oci:{}:latest", image.path().display()),
        &format!("docker://{}/demo/tls:v1", proxy_host(&inner)),
    ])
    .await
    .unwrap();
    for gw in [&inner, &outer] {
        let log = events(gw).await;
        assert_eq!(log.len(), 1, "{log:#?}");
        assert_eq!(log[0]["digest"], image.manifest_digest());
    }
    assert_eq!(
        events(&inner).await[0]["repository"]["registry"],
        format!("localhost:{outer_port}")
    );
    assert_eq!(
        events(&outer).await[0]["repository"]["registry"],
        registry.host()
    );
}
