//! Hostile registries and hostile clients: each hole found by probing the
//! running gateway, shown closed against a real local server that would
//! record the forbidden request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use callisto::api::input::RepositoryInput;
use callisto::test_util::TestGateway;
use callisto_tests::gateway::GatewayProcess;
use callisto_tests::receiver::Receiver;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::delivery::{PUSH, eventually, push_envelope};

/// Counts every connection made to it, and answers none: where a forbidden
/// request would land.
struct Trap {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Trap {
    async fn on(ip: &str) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind the trap");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Self { addr, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A registry on 127.0.0.1 whose every answer is `reply`.
async fn fake_registry(
    reply: impl Fn() -> (StatusCode, HeaderMap) + Clone + Send + Sync + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || {
        let reply = reply.clone();
        async move { reply() }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A gateway that may reach 127.0.0.1 (its registries and receivers) and
/// nothing else private: 127.0.0.2 is as forbidden as any internal host.
async fn guarded_gateway() -> TestGateway {
    crate::gateway_with(|c| {
        c.allow_private_targets = false;
        c.allowed_networks = vec!["127.0.0.1/32".into()];
    })
    .await
}

/// Adds a remote repository on `registry` and waits for its first poll to
/// fail; returns the poll's error.
async fn failed_poll(gw: &TestGateway, registry: &str) -> String {
    let input: RepositoryInput = serde_json::from_value(json!({
        "name": "team/app", "kind": "remote", "registry": registry, "insecure": true
    }))
    .unwrap();
    let repo = gw.client().create_repository(&input).await.unwrap();
    let view = eventually(gw, &format!("/repositories/{}", repo.id), |r| {
        r["poll"]["last_error"].is_string()
    })
    .await;
    view["poll"]["last_error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_registry_cannot_send_the_poller_to_a_private_token_realm() {
    let trap = Trap::on("127.0.0.2").await;
    let realm = format!("http://{}/token", trap.addr);
    let registry = fake_registry(move || {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::WWW_AUTHENTICATE,
            format!(r#"Bearer realm="{realm}",service="fake",scope="repository:team/app:pull""#)
                .parse()
                .unwrap(),
        );
        (StatusCode::UNAUTHORIZED, headers)
    })
    .await;
    let gw = guarded_gateway().await;
    let error = failed_poll(&gw, &registry.to_string()).await;
    assert!(error.contains("non-public address"), "{error}");
    assert_eq!(trap.hits(), 0, "the token realm was requested");
}

#[tokio::test]
async fn a_registry_cannot_redirect_the_poller_into_the_network() {
    let trap = Trap::on("127.0.0.2").await;
    let target = format!("http://{}/v2/team/app/tags/list", trap.addr);
    let registry = fake_registry(move || {
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, target.parse().unwrap());
        (StatusCode::TEMPORARY_REDIRECT, headers)
    })
    .await;
    let gw = guarded_gateway().await;
    let error = failed_poll(&gw, &registry.to_string()).await;
    assert!(error.contains("non-public address"), "{error}");
    assert_eq!(trap.hits(), 0, "the redirect was followed");
}

#[tokio::test]
async fn a_name_with_an_allowed_and_a_refused_address_reaches_only_the_allowed_one() {
    // `localhost` resolves to ::1 and 127.0.0.1; only ::1 is allowed, and
    // nothing listens there on this port. The old check accepted the name
    // because one address was allowed, then connected to the other.
    let trap = Trap::on("127.0.0.1").await;
    let gw = crate::gateway_with(|c| {
        c.allow_private_targets = false;
        c.allowed_networks = vec!["::1/128".into()];
    })
    .await;
    let error = failed_poll(&gw, &format!("localhost:{}", trap.addr.port())).await;
    assert!(!error.is_empty());
    assert_eq!(
        trap.hits(),
        0,
        "a refused address of the name was connected to"
    );
}

#[tokio::test]
async fn a_proxy_in_the_environment_does_not_carry_webhooks_past_the_guard() {
    let proxy = Trap::on("127.0.0.1").await;
    let receiver = Receiver::start().await;
    let data = tempfile::tempdir().unwrap();
    let proxy_url = format!("http://{}", proxy.addr);
    let mut gw = GatewayProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_callisto-e2e")),
        &data.path().join("data"),
        &[
            ("CALLISTO_ALLOW_PRIVATE_TARGETS", "false"),
            ("HTTP_PROXY", &proxy_url),
            ("HTTPS_PROXY", &proxy_url),
            ("ALL_PROXY", &proxy_url),
            ("http_proxy", &proxy_url),
        ],
    )
    .await;
    let client = callisto::client::Client::new(
        &gw.url,
        callisto_tests::gateway::ADMIN_TOKEN,
        callisto_tests::http(),
    );
    let input: RepositoryInput = serde_json::from_value(json!({"name": "demo/app"})).unwrap();
    let repo = client.create_repository(&input).await.unwrap();
    // A name, not an IP literal: only the resolver's check stands between
    // it and loopback.
    let url = format!("http://localhost:{}/hook", receiver.port());
    let result = client
        .test_unsaved(
            &repo.id,
            &serde_json::from_value(json!({ "url": url })).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(result.result, "error", "{result:?}");
    assert!(result.summary.contains("non-public address"), "{result:?}");
    assert_eq!(proxy.hits(), 0, "the webhook went through the proxy");
    assert!(receiver.requests().is_empty());
    gw.terminate().await;
}

/// Reads until the server closes the connection; true if it did within
/// `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_and_the_gateway_stays_responsive() {
    let gw = crate::gateway_with(|c| {
        c.listener.header_read_timeout_secs = 1;
        c.listener.body_read_timeout_secs = 1;
        c.listener.max_connections = 64;
    })
    .await;
    let addr = gw.url.trim_start_matches("http://").to_owned();
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    let mut half_header = TcpStream::connect(&addr).await.unwrap();
    half_header
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut stalled_body = TcpStream::connect(&addr).await.unwrap();
    stalled_body
        .write_all(
            format!(
                "POST /ingest/distribution HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"events\":",
                gw.ingest_token
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    // Meanwhile, others are served. (A fresh connection each time: the
    // server closes idle keep-alive connections after a second here, and a
    // pooled one could be reused just as it closes.)
    let fresh = || {
        reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let health = fresh()
        .get(format!("{}/healthz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let named = silent.iter_mut().map(|s| ("silent", s)).chain([
        ("half a header", &mut half_header),
        ("a stalled body", &mut stalled_body),
        ("idle keep-alive", &mut idle),
    ]);
    for (what, stream) in named {
        assert!(
            closed_within(stream, Duration::from_secs(5)).await,
            "a connection with {what} was still open after the timeouts"
        );
    }
    // Still serving after all of it.
    let health = fresh()
        .get(format!("{}/healthz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_stalled_body_is_answered_408() {
    let gw = crate::gateway_with(|c| c.listener.body_read_timeout_secs = 1).await;
    let addr = gw.url.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /ingest/distribution HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
                gw.ingest_token
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

#[tokio::test]
async fn ingest_applies_the_repository_name_rules_of_the_api() {
    let gw = crate::gateway().await;
    for bad in [
        "x".repeat(100_000),
        "Demo/App".to_owned(),
        "demo/аpp".to_owned(), // a Cyrillic а
        "demo//app".to_owned(),
    ] {
        let envelope = PUSH.replace(
            "\"repository\": \"demo/app\"",
            &format!("\"repository\": {}", json!(bad)),
        );
        assert_ne!(envelope, PUSH);
        let response = gw
            .http
            .post(format!("{}/ingest/distribution", gw.url))
            .bearer_auth(&gw.ingest_token)
            .header("content-type", "application/json")
            .body(envelope)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{}",
            &bad[..bad.len().min(20)]
        );
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("is not a repository path"),
            "{body}"
        );
    }
    assert!(gw.client().repositories().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let gw = crate::gateway().await;
    let response = gw
        .http
        .post(format!("{}/ingest/distribution", gw.url))
        .header("authorization", format!("BEARER {}", gw.ingest_token))
        .header("content-type", "application/json")
        .body(push_envelope("v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let response = gw
        .http
        .get(format!("{}/api/v1/repositories", gw.url))
        .header("authorization", format!("bEaReR {}", gw.admin_token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn numbers_out_of_range_are_refused_by_name() {
    let gw = crate::gateway().await;
    for (body, named) in [
        (
            json!({"name": "team/a", "kind": "remote", "registry": "example.com", "poll_interval_secs": u64::MAX}),
            "poll_interval_secs",
        ),
        (
            json!({"name": "team/b", "webhooks": [{"url": "https://example.com/h", "retry_schedule_secs": [i64::MAX]}]}),
            "retry_schedule_secs",
        ),
    ] {
        let response = gw
            .api(reqwest::Method::POST, "/repositories")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let answer: Value = response.json().await.unwrap();
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(named),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn deleting_a_plugin_and_adding_a_webhook_that_uses_it_never_both_win() {
    let gw = crate::gateway().await;
    let client = gw.client();
    let input: RepositoryInput = serde_json::from_value(json!({"name": "demo/app"})).unwrap();
    let repo = client.create_repository(&input).await.unwrap();
    for round in 0..15 {
        let put = gw
            .api(reqwest::Method::PUT, "/plugins/my-discord")
            .header("content-type", "application/wasm")
            .body(callisto_tests::guests::DISCORD.to_vec())
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success(), "round {round}: {}", put.status());
        let webhook = serde_json::from_value(json!({
            "url": "https://example.com/hook", "plugin": "my-discord"
        }))
        .unwrap();
        let (created, deleted) = tokio::join!(
            client.create_webhook(&repo.id, &webhook),
            gw.api(reqwest::Method::DELETE, "/plugins/my-discord")
                .send()
        );
        let deleted = deleted.unwrap().status();
        match created {
            // The webhook won: the plugin must still be there.
            Ok(w) => {
                assert_eq!(deleted, StatusCode::CONFLICT, "round {round}");
                client.delete_webhook(&w.id).await.unwrap();
            }
            // The deletion won: the webhook was refused.
            Err(e) => {
                assert_eq!(deleted, StatusCode::NO_CONTENT, "round {round}");
                assert_eq!(e.status(), Some(400), "round {round}: {e}");
            }
        }
        let installed: Vec<String> = client
            .plugins()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        for w in client.webhooks(&repo.id).await.unwrap() {
            assert!(installed.contains(&w.plugin), "round {round}: {w:?}");
        }
    }
}

#[tokio::test]
async fn a_lost_sealing_key_or_store_refuses_to_start_until_told() {
    let receiver = Receiver::start().await;
    let gw = crate::gateway().await;
    crate::delivery::repository(
        &gw,
        json!([{"url": receiver.url("/h"), "secret": "generate"}]),
    )
    .await;
    let config = gw.app().config.clone();
    let data = gw.stop().await;

    // The key file is gone: its secrets would be unreadable.
    let key = data.path().join("secret.key");
    let saved_key = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let err = callisto::server::start(config.clone()).await.err().unwrap();
    assert!(
        err.to_string().contains("secret.key is missing")
            && err.to_string().contains("--allow-new-secret-key"),
        "{err}"
    );
    assert!(
        !key.exists(),
        "a new key was made behind the operator's back"
    );

    // Another key: refused too.
    let other = callisto::config::Config {
        secret_key: Some(base64_key([9; 32])),
        ..config.clone()
    };
    let err = callisto::server::start(other).await.err().unwrap();
    assert!(err.to_string().contains("is not the one"), "{err}");

    // The right key back: it starts.
    std::fs::write(&key, &saved_key).unwrap();
    callisto::server::start(config.clone())
        .await
        .expect("starts with its key")
        .shutdown()
        .await;

    // The store is gone: refused, named, and nothing is created.
    let store = data.path().join("callisto.redb");
    std::fs::remove_file(&store).unwrap();
    let err = callisto::server::start(config.clone()).await.err().unwrap();
    assert!(
        err.to_string().contains("callisto.redb does not exist")
            && err.to_string().contains("--allow-fresh-store"),
        "{err}"
    );
    assert!(!store.exists());
    let fresh = callisto::config::Config {
        allow_fresh_store: true,
        ..config
    };
    callisto::server::start(fresh)
        .await
        .expect("starts fresh when told")
        .shutdown()
        .await;
    drop(data);
}

fn base64_key(bytes: [u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn events_are_counted_when_committed_even_if_the_client_left() {
    let gw = crate::gateway().await;
    let impatient = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..150 {
        let (client, url, token) = (impatient.clone(), gw.url.clone(), gw.ingest_token.clone());
        tasks.spawn(async move {
            let _ = client
                .post(format!("{url}/ingest/distribution"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(push_envelope(&format!("t{i}")))
                .timeout(Duration::from_micros(200 + fastrand::u64(..3000)))
                .send()
                .await;
        });
    }
    while tasks.join_next().await.is_some() {}
    // Let what was accepted commit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut committed = 0;
    let mut before = None;
    loop {
        let page = gw
            .client()
            .events(&callisto::api::events::EventQuery {
                limit: Some(500),
                before: before.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        committed += page.items.len();
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    let metrics = gw.metrics().await;
    let counted: usize = metrics
        .lines()
        .find(|l| l.starts_with("callisto_events_ingested_total{source=\"local\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().unwrap());
    assert_eq!(counted, committed, "{metrics}");
}
