//! From an ingested notification to real HTTP receivers: fan-out, signing,
//! retries, restarts, `410 Gone`, redelivery, isolation of a slow receiver.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use callisto::api::ingest::IngestResponse;
use callisto::api::input::RepositoryInput;
use callisto::api::views::RepositoryView;
use callisto::test_util::TestGateway;
use callisto_tests::receiver::{Received, Receiver};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

pub const PUSH: &str = include_str!("../fixtures/distribution/push-manifest-tag-v1.json");
pub const DIGEST: &str = "sha256:a2293004e1641d49c7d7341229010c763ee4bf9d76adb835fcc8c8ba3af87582";
const WAIT: Duration = Duration::from_secs(20);

/// A push of `demo/app:<tag>` as the registry would send it, with a fresh
/// notification id.
pub fn push_envelope(tag: &str) -> String {
    let id = format!("{:032x}", fastrand::u128(..));
    PUSH.replace("20337bb7-412d-48f2-a1cc-b3747b9596dc", &id)
        .replace("\"tag\": \"v1\"", &format!("\"tag\": \"{tag}\""))
}

pub async fn ingest(gw: &TestGateway, envelope: &str) -> IngestResponse {
    let response = gw
        .http
        .post(format!("{}/ingest/distribution", gw.url))
        .bearer_auth(&gw.ingest_token)
        .header(
            "content-type",
            "application/vnd.docker.distribution.events.v1+json",
        )
        .body(envelope.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json().await.unwrap()
}

/// Creates `demo/app` with these webhooks (the API's JSON form); returns
/// the repository with its webhooks.
pub async fn repository(gw: &TestGateway, webhooks: Value) -> RepositoryView {
    let input = RepositoryInput {
        webhooks: serde_json::from_value(webhooks).expect("webhooks as the API takes them"),
        ..serde_json::from_value(json!({"name": "demo/app"})).unwrap()
    };
    gw.client()
        .create_repository(&input)
        .await
        .expect("the repository is created")
}

pub async fn get(gw: &TestGateway, path: &str) -> Value {
    let response = gw.api(Method::GET, path).send().await.unwrap();
    assert!(
        response.status().is_success(),
        "GET {path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Checks a Standard Webhooks signature with an independent HMAC.
pub fn verify_standard(request: &Received, secret: &str) {
    let id = request.header("webhook-id").expect("webhook-id");
    let ts = request
        .header("webhook-timestamp")
        .expect("webhook-timestamp");
    let sig = request
        .header("webhook-signature")
        .expect("webhook-signature");
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => STANDARD.decode(b64).unwrap(),
        None => secret.as_bytes().to_vec(),
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&request.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(sig, expected, "the signature does not verify");
    let ts: i64 = ts.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - ts).abs() < 60, "webhook-timestamp {ts} is not now");
}

/// Polls `path` until `done` holds.
pub async fn eventually(gw: &TestGateway, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let value = get(gw, path).await;
        if done(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GET {path} never satisfied the condition: {value}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_webhooks_receive_a_push_a_disabled_one_does_not_and_filters_apply() {
    let gw = crate::gateway().await;
    let (a, b, off, tagged) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let repo = repository(
        &gw,
        json!([
            {"url": a.url("/a"), "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
            {"url": b.url("/b"), "secret": "plain-secret", "plugin": "cloudevents"},
            {"url": off.url("/off"), "enabled": false},
            {"url": tagged.url("/tagged"), "config": {"tags": "v*"}},
        ]),
    )
    .await;
    assert_eq!(repo.webhooks.as_ref().unwrap().len(), 4);

    let accepted = ingest(&gw, &push_envelope("v1")).await;
    let event_id = accepted.events[0].clone();

    let got = a.wait_for(1, WAIT).await;
    let body = got[0].json();
    assert_eq!(body["id"], event_id.as_str());
    assert_eq!(body["type"], "image.pushed");
    assert_eq!(body["repository"]["name"], "demo/app");
    assert_eq!(body["tag"], "v1");
    assert_eq!(body["digest"], DIGEST);
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    verify_standard(&got[0], "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");

    let got_b = b.wait_for(1, WAIT).await;
    assert_eq!(got_b[0].json()["type"], "io.callisto.image.pushed");
    verify_standard(&got_b[0], "plain-secret");
    assert_ne!(got[0].header("webhook-id"), got_b[0].header("webhook-id"));
    tagged.wait_for(1, WAIT).await;

    // `latest` does not match `v*`: only the unfiltered webhooks get it.
    ingest(&gw, &push_envelope("latest")).await;
    a.wait_for(2, WAIT).await;
    b.wait_for(2, WAIT).await;
    tagged.wait_quiet(Duration::from_millis(500)).await;
    assert_eq!(tagged.requests().len(), 1, "the v* webhook got `latest`");
    assert!(
        off.requests().is_empty(),
        "the disabled webhook got something"
    );
    assert_eq!(a.requests().len(), 2, "exactly once each");

    // The event lists its deliveries.
    let event = get(&gw, &format!("/events/{event_id}")).await;
    assert_eq!(event["deliveries"].as_array().unwrap().len(), 3);
}

/// Attempts reuse their connections (HTTP/1.1 keep-alive): a webhook's
/// deliveries reach its receiver over at most as many connections as it has
/// attempts in flight, not one each.
#[tokio::test]
async fn deliveries_reuse_kept_alive_connections() {
    const PUSHES: usize = 40;
    let gw = crate::gateway().await;
    let receiver = Receiver::start().await;
    repository(&gw, json!([{"url": receiver.url("/hook")}])).await;
    for i in 0..PUSHES {
        ingest(&gw, &push_envelope(&format!("t{i}"))).await;
    }
    let got = receiver.wait_for(PUSHES, WAIT).await;
    let connections: std::collections::HashSet<_> = got.iter().map(|r| r.peer).collect();
    // The gateway's default: 4 attempts in flight per webhook.
    assert!(
        connections.len() <= 4,
        "{PUSHES} deliveries came over {} connections",
        connections.len()
    );
}

#[tokio::test]
async fn a_failing_receiver_gets_retried_until_it_succeeds() {
    let gw = crate::gateway().await;
    let receiver = Receiver::start().await;
    receiver.respond_with([500, 500, 200]);
    let repo = repository(
        &gw,
        json!([{"url": receiver.url("/hook"), "retry_schedule_secs": [1, 1, 1]}]),
    )
    .await;
    let webhook = repo.webhooks.as_ref().unwrap()[0].id.clone();
    ingest(&gw, &push_envelope("v1")).await;

    let got = receiver.wait_for(3, WAIT).await;
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "webhook-id changed between attempts: {ids:?}"
    );
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "the body changed between attempts"
    );

    let page = eventually(&gw, &format!("/webhooks/{webhook}/deliveries"), |p| {
        p["items"][0]["state"] == "succeeded"
    })
    .await;
    let delivery = page["items"][0]["id"].as_str().unwrap();
    assert_eq!(delivery, ids[0]);
    let detail = get(&gw, &format!("/deliveries/{delivery}")).await;
    let attempts = detail["attempt_log"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    let statuses: Vec<_> = attempts
        .iter()
        .map(|a| a["response"]["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 200]);
    assert_eq!(attempts[0]["error"], "the receiver answered 500");
    assert_eq!(attempts[2]["succeeded"], true);
    assert_eq!(attempts[0]["request"]["method"], "POST");
    assert_eq!(attempts[0]["response"]["body"]["data"], "scripted 500");
    assert!(
        attempts[0]["request"]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "webhook-id")
    );
    // Not sent again after success.
    receiver.wait_quiet(Duration::from_millis(1500)).await;
    assert_eq!(receiver.requests().len(), 3);
}

#[tokio::test]
async fn a_long_response_body_is_recorded_up_to_64_kib() {
    let gw = crate::gateway().await;
    let receiver = Receiver::start().await;
    receiver.respond_with_body(200, "x".repeat(200 << 10));
    let repo = repository(&gw, json!([{"url": receiver.url("/hook")}])).await;
    let webhook = repo.webhooks.as_ref().unwrap()[0].id.clone();
    ingest(&gw, &push_envelope("v1")).await;

    let page = eventually(&gw, &format!("/webhooks/{webhook}/deliveries"), |p| {
        p["items"][0]["state"] == "succeeded"
    })
    .await;
    let delivery = page["items"][0]["id"].as_str().unwrap();
    let detail = get(&gw, &format!("/deliveries/{delivery}")).await;
    let response = &detail["attempt_log"][0]["response"];
    assert_eq!(response["status"], 200);
    assert_eq!(response["truncated"], true);
    let kept = response["body"]["data"].as_str().unwrap();
    assert_eq!(kept.len(), 64 << 10, "the first 64 KiB, no more");
    assert!(kept.bytes().all(|b| b == b'x'));
}

#[tokio::test]
async fn a_receiver_down_while_the_gateway_restarts_gets_the_delivery_once_up() {
    let gw = crate::gateway_with(|c| c.delivery.retry_schedule_secs = vec![1; 30]).await;
    let mut receiver = Receiver::start().await;
    repository(&gw, json!([{"url": receiver.url("/hook")}])).await;
    receiver.stop().await;
    let accepted = ingest(&gw, &push_envelope("v1")).await;
    let event_id = accepted.events[0].clone();
    // Let it fail at least once, then stop the gateway.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut config = gw.app().config.clone();
    let data = gw.stop().await;
    config.listen = "127.0.0.1:0".parse().unwrap();

    let gw = TestGateway::start_in(data, config).await;
    receiver.restart().await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].json()["id"], event_id.as_str());
    receiver.wait_quiet(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.requests().len(),
        1,
        "delivered more than once after success"
    );
    gw.stop().await;
}

#[tokio::test]
async fn gone_disables_the_webhook_and_a_spent_schedule_is_dead_but_redeliverable() {
    let gw = crate::gateway().await;
    let (gone, failing) = (Receiver::start().await, Receiver::start().await);
    gone.set_default(410);
    failing.set_default(503);
    let repo = repository(
        &gw,
        json!([
            {"url": gone.url("/gone"), "retry_schedule_secs": [1, 1]},
            {"url": failing.url("/down"), "retry_schedule_secs": [1]},
        ]),
    )
    .await;
    let gone_id = repo.webhooks.as_ref().unwrap()[0].id.clone();
    let failing_id = repo.webhooks.as_ref().unwrap()[1].id.clone();
    ingest(&gw, &push_envelope("v1")).await;

    let webhook = eventually(&gw, &format!("/webhooks/{gone_id}"), |w| {
        w["enabled"] == false
    })
    .await;
    assert!(
        webhook["disabled_reason"].as_str().unwrap().contains("410"),
        "{webhook}"
    );
    assert_eq!(gone.requests().len(), 1, "a 410 is not retried");

    let page = eventually(
        &gw,
        &format!("/webhooks/{failing_id}/deliveries?state=dead"),
        |p| p["items"].as_array().unwrap().len() == 1,
    )
    .await;
    assert_eq!(failing.requests().len(), 2, "one attempt and one retry");
    let delivery = page["items"][0]["id"].as_str().unwrap().to_owned();

    failing.set_default(200);
    let response = gw
        .api(Method::POST, &format!("/deliveries/{delivery}/redeliver"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let got = failing.wait_for(3, WAIT).await;
    assert_eq!(
        got[2].header("webhook-id"),
        Some(delivery.as_str()),
        "a redelivery keeps its webhook-id"
    );
    eventually(&gw, &format!("/deliveries/{delivery}"), |d| {
        d["state"] == "succeeded" && d["attempts"] == 3
    })
    .await;
}

/// A receiver that hangs for a minute holds only its own webhook's slots.
#[tokio::test]
async fn a_slow_receiver_does_not_delay_other_webhooks() {
    let gw = crate::gateway_with(|c| c.delivery.timeout_secs = 90).await;
    let (slow, fast) = (Receiver::start().await, Receiver::start().await);
    slow.set_delay(Duration::from_secs(60));
    repository(
        &gw,
        json!([{"url": slow.url("/slow")}, {"url": fast.url("/fast")}]),
    )
    .await;
    for i in 0..12 {
        ingest(&gw, &push_envelope(&format!("v{i}"))).await;
    }
    let started = std::time::Instant::now();
    fast.wait_for(12, Duration::from_secs(10)).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    // The slow one has its concurrency cap (4) in flight, no more.
    assert_eq!(slow.requests().len(), 4, "the cap per webhook is 4");
}

/// `Retry-After` is honoured (here sooner than the schedule says), and a
/// redirect is an answer, not a place to follow.
#[tokio::test]
async fn retry_after_is_honoured_and_redirects_are_not_followed() {
    let gw = crate::gateway().await;
    let (busy, moved, target) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    busy.respond_with_headers(503, &[("retry-after", "1")]);
    moved.respond_with_headers(302, &[("location", &target.url("/elsewhere"))]);
    repository(
        &gw,
        json!([
            {"url": busy.url("/busy"), "retry_schedule_secs": [3600]},
            {"url": moved.url("/moved"), "retry_schedule_secs": []},
        ]),
    )
    .await;
    ingest(&gw, &push_envelope("v1")).await;
    let started = std::time::Instant::now();
    let got = busy.wait_for(2, Duration::from_secs(15)).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the schedule said an hour"
    );
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_millis(900),
        "retried after {gap:?}, before Retry-After"
    );

    moved.wait_for(1, WAIT).await;
    target.wait_quiet(Duration::from_millis(700)).await;
    assert!(target.requests().is_empty(), "a redirect was followed");
}
