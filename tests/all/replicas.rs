//! Several `callisto serve` processes on one PostgreSQL database, as
//! operators run them behind a load balancer: what one replica's death or
//! the database's absence costs, proven with real processes.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callisto_tests::gateway::{ADMIN_TOKEN, GatewayProcess, INGEST_TOKEN};
use callisto_tests::guests;
use callisto_tests::receiver::Receiver;
use serde_json::{Value, json};

use crate::delivery::{push_envelope, verify_standard};

/// `n` gateways on the database at `url`, sharing one sealing key file
/// (`CALLISTO_SEAL_KEY_FILE`), as replicas do.
struct Replicas {
    gateways: Vec<GatewayProcess>,
    _dirs: tempfile::TempDir,
}

impl Replicas {
    async fn start(n: usize, url: &str, extra: &[(&str, &str)]) -> Self {
        Self::start_with_key(n, url, None, extra).await
    }

    async fn start_with_key(
        n: usize,
        url: &str,
        key: Option<&Path>,
        extra: &[(&str, &str)],
    ) -> Self {
        let dirs = tempfile::tempdir().unwrap();
        let key = match key {
            Some(key) => key.to_owned(),
            None => {
                let key = dirs.path().join("seal.key");
                std::fs::write(&key, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=\n").unwrap();
                key
            }
        };
        let cache = crate::shared_cache_dir();
        let mut gateways = Vec::new();
        for i in 0..n {
            let mut env = vec![
                ("CALLISTO_STORE", url),
                ("CALLISTO_SEAL_KEY_FILE", key.to_str().unwrap()),
                ("CALLISTO_PLUGINS__CACHE_DIR", cache.to_str().unwrap()),
                ("CALLISTO_DELIVERY__TIMEOUT_SECS", "2"),
            ];
            env.extend_from_slice(extra);
            gateways.push(
                GatewayProcess::start(binary(), &dirs.path().join(format!("replica-{i}")), &env)
                    .await,
            );
        }
        Self {
            gateways,
            _dirs: dirs,
        }
    }

    fn url(&self, i: usize) -> &str {
        &self.gateways[i].url
    }

    fn logs(&self) -> String {
        self.gateways
            .iter()
            .enumerate()
            .map(|(i, g)| format!("--- replica {i}\n{}", tail(&g.log())))
            .collect()
    }
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_callisto-e2e"))
}

fn tail(log: &str) -> &str {
    &log[log.len().saturating_sub(6000)..]
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `GET {gateway}/api/v1{path}` with the admin token, as JSON.
async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    gateway: &str,
    path: &str,
) -> T {
    http.get(format!("{gateway}/api/v1{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn create_repository(http: &reqwest::Client, gateway: &str, webhooks: Value) -> Value {
    let created = http
        .post(format!("{gateway}/api/v1/repositories"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "demo/app", "webhooks": webhooks}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    created.json().await.unwrap()
}

/// Posts one push envelope; `Some(event id)` when it was answered 202.
async fn post_push(http: &reqwest::Client, gateway: &str, tag: &str) -> Result<String, u16> {
    let sent = http
        .post(format!("{gateway}/ingest/distribution"))
        .bearer_auth(INGEST_TOKEN)
        .header(
            "content-type",
            "application/vnd.docker.distribution.events.v1+json",
        )
        .body(push_envelope(tag))
        .send()
        .await;
    match sent {
        Ok(r) if r.status() == 202 => {
            let body: Value = r.json().await.map_err(|_| 0u16)?;
            Ok(body["events"][0].as_str().unwrap().to_owned())
        }
        Ok(r) => Err(r.status().as_u16()),
        Err(_) => Err(0),
    }
}

/// Waits until the receiver holds a request for every event in `want`.
async fn wait_delivered(
    receiver: &Receiver,
    want: &HashSet<String>,
    within: Duration,
    logs: impl Fn() -> String,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got: HashSet<String> = receiver
            .requests()
            .iter()
            .filter_map(|r| r.json()["id"].as_str().map(str::to_owned))
            .collect();
        let missing: Vec<&String> = want.iter().filter(|id| !got.contains(*id)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} acknowledged events were never delivered (e.g. {:?})\n{}",
            missing.len(),
            want.len(),
            missing.first(),
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `kill -9` of one of three replicas while 2,000 pushes are posted across
/// all three: every push answered 202 (by any replica) is delivered, each
/// event with one `webhook-id`; an event arrives twice only if its attempt
/// was in flight on the dead replica, and never more than twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_one_of_three_replicas_loses_nothing_acknowledged() {
    const PUSHES: usize = 2000;
    const CONCURRENCY: usize = 24;
    let url = tokio::task::spawn_blocking(callisto_tests::postgres::database)
        .await
        .unwrap();
    let mut replicas = Replicas::start(
        3,
        &url,
        &[("CALLISTO_DELIVERY__CONCURRENCY_PER_WEBHOOK", "8")],
    )
    .await;
    let receiver = Receiver::start().await;
    // A little latency, so that attempts are in flight when the kill comes.
    receiver.set_delay(Duration::from_millis(5));
    let http = http();
    create_repository(
        &http,
        replicas.url(0),
        json!([{"url": receiver.url("/hook"), "retry_schedule_secs": [1, 1, 2, 2, 5]}]),
    )
    .await;

    let urls: Vec<String> = (0..3).map(|i| replicas.url(i).to_owned()).collect();
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut posters = Vec::new();
    for _ in 0..CONCURRENCY {
        let (http, urls, acknowledged, next) = (
            http.clone(),
            urls.clone(),
            acknowledged.clone(),
            next.clone(),
        );
        posters.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= PUSHES {
                    return;
                }
                // Round robin, as a load balancer would; a push refused by
                // the dead replica is retried on the next one, as a
                // registry retries a failed notification.
                for attempt in 0..3 {
                    let gateway = &urls[(i + attempt) % urls.len()];
                    if let Ok(id) = post_push(&http, gateway, &format!("t{i}")).await {
                        acknowledged.lock().unwrap().push(id);
                        break;
                    }
                }
            }
        }));
    }
    while acknowledged.lock().unwrap().len() < PUSHES / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    replicas.gateways[2].kill9().await;
    for poster in posters {
        poster.await.unwrap();
    }
    let acknowledged: HashSet<String> = acknowledged.lock().unwrap().iter().cloned().collect();
    assert_eq!(
        acknowledged.len(),
        PUSHES,
        "the live replicas take every push the dead one refused\n{}",
        replicas.logs()
    );
    // The dead replica's claims expire (the request timeout plus 30 s),
    // then the others send what it held.
    wait_delivered(&receiver, &acknowledged, Duration::from_secs(150), || {
        replicas.logs()
    })
    .await;
    let requests = receiver.wait_quiet(Duration::from_secs(2)).await;

    let mut ids_of_event: HashMap<String, HashSet<String>> = HashMap::new();
    let mut count_of_event: HashMap<String, usize> = HashMap::new();
    for r in &requests {
        let event = r.json()["id"].as_str().unwrap().to_owned();
        let webhook_id = r.header("webhook-id").expect("a webhook-id").to_owned();
        ids_of_event
            .entry(event.clone())
            .or_default()
            .insert(webhook_id);
        *count_of_event.entry(event).or_default() += 1;
    }
    for (event, ids) in &ids_of_event {
        assert_eq!(
            ids.len(),
            1,
            "event {event} arrived under several webhook-ids: {ids:?}"
        );
    }
    let repeated = count_of_event.values().filter(|n| **n > 1).count();
    let most = count_of_event.values().max().copied().unwrap_or(0);
    println!(
        "{} pushes acknowledged by 3 replicas (one killed); {} requests received; {repeated} events repeated",
        acknowledged.len(),
        requests.len()
    );
    assert!(most <= 2, "an event arrived {most} times");
    // Repeats are what the dead replica had in flight: at most its
    // concurrency per webhook (8).
    assert!(
        repeated <= 8,
        "{repeated} events repeated: more than the dead replica could have had in flight"
    );
    for g in &mut replicas.gateways {
        g.terminate().await;
    }
}

/// PostgreSQL stopped for 10 s under two replicas: ingest answers 503 (never
/// 202 for what was not committed) and `/readyz` says not ready; once it is
/// back, both recover on their own and everything acknowledged is
/// delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_is_refused_then_recovered_from_on_its_own() {
    // With PostgreSQL's durability on: an immediate shutdown of a cluster
    // with `synchronous_commit = off` (the tests' usual tuning) loses
    // commits it already acknowledged.
    let cluster = tokio::task::spawn_blocking(callisto_tests::postgres::OwnCluster::start_durable)
        .await
        .unwrap()
        .expect("a PostgreSQL cluster of the test's own");
    let url = cluster.url();
    let mut replicas = Replicas::start(2, &url, &[]).await;
    let receiver = Receiver::start().await;
    let http = http();
    create_repository(
        &http,
        replicas.url(0),
        json!([{"url": receiver.url("/hook"), "retry_schedule_secs": [1, 1, 2, 2, 5]}]),
    )
    .await;
    let mut acknowledged = HashSet::new();
    for i in 0..20 {
        let id = post_push(&http, replicas.url(i % 2), &format!("before{i}"))
            .await
            .expect("accepted while the database is up");
        acknowledged.insert(id);
    }

    let cluster = Arc::new(cluster);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop()).await.unwrap();
    let outage = tokio::time::Instant::now();
    let mut refused = 0;
    let mut not_ready = 0;
    while outage.elapsed() < Duration::from_secs(10) {
        for i in 0..2 {
            match post_push(&http, replicas.url(i), &format!("during{refused}")).await {
                Ok(id) => panic!("event {id} answered 202 while the database was down"),
                Err(status) => {
                    assert_eq!(status, 503, "ingest answers 503 while the database is down");
                    refused += 1;
                }
            }
            let ready = http
                .get(format!("{}/readyz", replicas.url(i)))
                .send()
                .await
                .unwrap();
            assert_eq!(ready.status(), 503, "/readyz while the database is down");
            not_ready += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(refused > 4 && not_ready > 4);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start_again())
        .await
        .unwrap();

    // Ready again on their own, and taking pushes.
    for i in 0..2 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http
                .get(format!("{}/readyz", replicas.url(i)))
                .send()
                .await
                .unwrap();
            if ready.status() == 200 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "replica {i} not ready again\n{}",
                replicas.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for i in 0..20 {
        let id = post_push(&http, replicas.url(i % 2), &format!("after{i}"))
            .await
            .unwrap_or_else(|s| panic!("refused with {s} after the database came back"));
        acknowledged.insert(id);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got: HashSet<String> = receiver
            .requests()
            .iter()
            .filter_map(|r| r.json()["id"].as_str().map(str::to_owned))
            .collect();
        let missing: Vec<&String> = acknowledged
            .iter()
            .filter(|id| !got.contains(*id))
            .collect();
        if missing.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let event: Value =
                get_json(&http, replicas.url(0), &format!("/events/{}", missing[0])).await;
            panic!(
                "{} acknowledged events never delivered; the first: {event}\n{}",
                missing.len(),
                replicas.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let requests = receiver.wait_quiet(Duration::from_secs(1)).await;
    let mut ids_of_event: HashMap<String, HashSet<String>> = HashMap::new();
    for r in &requests {
        let body = r.json();
        let event = body["id"].as_str().unwrap().to_owned();
        // A push answered 503 may still have been committed, if the
        // database went away between committing and saying so: a
        // registry retries it with the same id, and it is de-duplicated.
        // Nothing else may arrive.
        assert!(
            acknowledged.contains(&event) || body["tag"].as_str().unwrap().starts_with("during"),
            "delivered an event nobody pushed: {body}"
        );
        ids_of_event
            .entry(event)
            .or_default()
            .insert(r.header("webhook-id").unwrap().to_owned());
    }
    for (event, ids) in &ids_of_event {
        assert_eq!(
            ids.len(),
            1,
            "event {event} arrived under several webhook-ids"
        );
    }
    for g in &mut replicas.gateways {
        g.terminate().await;
    }
}

/// A plugin uploaded through one replica is loaded by the others (a webhook
/// may use it through any of them), and its removal reaches them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plugin_uploaded_through_one_replica_is_loaded_by_every_replica() {
    let url = tokio::task::spawn_blocking(callisto_tests::postgres::database)
        .await
        .unwrap();
    let replicas = Replicas::start(2, &url, &[]).await;
    let http = http();
    let put = http
        .put(format!("{}/api/v1/plugins/hostile", replicas.url(0)))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/wasm")
        .body(guests::HOSTILE)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let uploaded: Value = put.json().await.unwrap();

    let listed = |i: usize| {
        let (http, url) = (http.clone(), replicas.url(i).to_owned());
        async move {
            let plugins: Vec<Value> = get_json(&http, &url, "/plugins").await;
            plugins.into_iter().find(|p| p["name"] == "hostile")
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while listed(1).await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica 1 never loaded the plugin\n{}",
            replicas.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed(1).await.unwrap()["sha256"], uploaded["sha256"]);

    // A third replica started later loads it at start.
    let late = Replicas::start(1, &url, &[]).await;
    let plugins: Vec<Value> = get_json(&http, late.url(0), "/plugins").await;
    assert!(
        plugins.iter().any(|p| p["name"] == "hostile"),
        "a replica started later has the plugin"
    );

    let removed = http
        .delete(format!("{}/api/v1/plugins/hostile", replicas.url(1)))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while listed(0).await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica 0 kept a plugin removed through replica 1\n{}",
            replicas.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A replica given a seal key file that does not exist refuses to start,
/// rather than seal secrets with a key of its own that no other replica has.
#[tokio::test]
async fn a_missing_seal_key_file_is_refused_not_created() {
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("absent.key");
    let out = tokio::process::Command::new(binary())
        .arg("serve")
        .env_clear()
        .env("CALLISTO_DATA_DIR", data.path().join("data"))
        .env("CALLISTO_LISTEN", "127.0.0.1:0")
        .env("CALLISTO_SEAL_KEY_FILE", &key)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("absent.key") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(!key.exists(), "the key file was not created");
}

/// The way from one gateway on redb to replicas on PostgreSQL: `callisto
/// store copy` moves the stopped gateway's store (history, secrets still
/// sealed, installed plugins) into an empty database, and replicas started
/// on it with the same key carry on where it stopped; a second copy into
/// the now full database is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redb_store_copied_into_postgres_carries_on_in_replicas() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let cache = crate::shared_cache_dir();
    let mut single = GatewayProcess::start(
        binary(),
        &data,
        &[("CALLISTO_PLUGINS__CACHE_DIR", cache.to_str().unwrap())],
    )
    .await;
    let receiver = Receiver::start().await;
    let http = http();
    let repo = create_repository(
        &http,
        &single.url,
        json!([{"url": receiver.url("/hook"), "secret": secret}]),
    )
    .await;
    let webhook = repo["webhooks"][0]["id"].as_str().unwrap().to_owned();
    let put = http
        .put(format!("{}/api/v1/plugins/hostile", single.url))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/wasm")
        .body(guests::HOSTILE)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let mut before = HashSet::new();
    for i in 0..3 {
        before.insert(
            post_push(&http, &single.url, &format!("v{i}"))
                .await
                .unwrap(),
        );
    }
    wait_delivered(&receiver, &before, Duration::from_secs(20), || single.log()).await;
    // Recorded as sent before the gateway stops.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page: Value = get_json(
            &http,
            &single.url,
            &format!("/webhooks/{webhook}/deliveries"),
        )
        .await;
        let items = page["items"].as_array().unwrap();
        if items.len() == 3 && items.iter().all(|d| d["state"] == "succeeded") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    single.terminate().await;

    let url = tokio::task::spawn_blocking(callisto_tests::postgres::database)
        .await
        .unwrap();
    let copy = || {
        std::process::Command::new(binary())
            .args(["store", "copy", "--to", &url, "--data-dir"])
            .arg(&data)
            .env_clear()
            .output()
            .unwrap()
    };
    let out = copy();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("events") && stdout.contains("attempts"),
        "{stdout}"
    );

    let replicas = Replicas::start_with_key(2, &url, Some(&data.join("secret.key")), &[]).await;
    for i in 0..2 {
        let page: Value = get_json(
            &http,
            replicas.url(i),
            &format!("/webhooks/{webhook}/deliveries"),
        )
        .await;
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 3, "the history came along: {page}");
        assert!(items.iter().all(|d| d["state"] == "succeeded"), "{page}");
        let plugins: Vec<Value> = get_json(&http, replicas.url(i), "/plugins").await;
        assert!(
            plugins.iter().any(|p| p["name"] == "hostile"),
            "the installed plugin came along"
        );
    }
    // New pushes are delivered, signed with the secret sealed on redb; the
    // old ones are not sent again.
    let after = post_push(&http, replicas.url(1), "v3").await.unwrap();
    let all: HashSet<String> = before.iter().cloned().chain([after.clone()]).collect();
    wait_delivered(&receiver, &all, Duration::from_secs(20), || replicas.logs()).await;
    let requests = receiver.wait_quiet(Duration::from_secs(1)).await;
    assert_eq!(requests.len(), 4, "each event delivered once in all");
    let last = requests
        .iter()
        .find(|r| r.json()["id"] == after.as_str())
        .unwrap();
    verify_standard(last, secret);
    // Its event follows the copied ones in the log.
    let events: Value = get_json(&http, replicas.url(0), "/events").await;
    assert_eq!(events["items"].as_array().unwrap().len(), 4, "{events}");
    assert_eq!(events["items"][0]["id"], after.as_str(), "newest first");

    let again = copy();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already holds"), "{stderr}");
}
