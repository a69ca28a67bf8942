//! Delivery operations per webhook (issue 14): custom headers, rate limits,
//! FIFO ordering, disabling an endpoint that keeps failing, bulk retry,
//! secret rotation, retention, operational events, client certificates and
//! egress through a proxy, each against real receivers on loopback.

use std::process::Output;
use std::time::Duration;

use callisto::test_util::TestGateway;
use callisto_tests::receiver::Receiver;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::delivery::{eventually, get, ingest, push_envelope, repository};

const BIN: &str = env!("CARGO_BIN_EXE_callisto-e2e");
const WAIT: Duration = Duration::from_secs(20);

/// Runs the CLI against the in-process gateway, off the test's runtime.
async fn cli(gw: &TestGateway, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env("CALLISTO_URL", &gw.url)
        .env("CALLISTO_ADMIN_TOKEN", &gw.admin_token)
        .env_remove("CALLISTO_DATA_DIR")
        .output()
        .await
        .expect("run the CLI")
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn send(gw: &TestGateway, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
    let response = gw.api(method, path).json(&body).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn custom_headers_are_sent_checked_redacted_and_patched() {
    let gw = crate::gateway().await;
    let rx = Receiver::start().await;
    let repo = repository(
        &gw,
        json!([{
            "url": rx.url("/hook"),
            "headers": {"X-Team": "core", "Authorization": "Bearer s3cret-value"}
        }]),
    )
    .await;
    let webhook = &repo.webhooks.as_ref().unwrap()[0];
    assert_eq!(webhook.headers["x-team"], "core");
    assert_eq!(webhook.headers["authorization"], "<redacted>");

    ingest(&gw, &push_envelope("v1")).await;
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("x-team"), Some("core"));
    assert_eq!(got[0].header("authorization"), Some("Bearer s3cret-value"));

    // The attempt's record shows the header, not the credential.
    let path = format!("/webhooks/{}/deliveries", webhook.id);
    let page = eventually(&gw, &path, |p| p["items"][0]["state"] == "succeeded").await;
    let delivery = get(
        &gw,
        &format!("/deliveries/{}", page["items"][0]["id"].as_str().unwrap()),
    )
    .await;
    let recorded = delivery.to_string();
    assert!(!recorded.contains("s3cret-value"), "{recorded}");
    assert!(recorded.contains("<redacted>"), "{recorded}");

    // Refused like a plugin's headers, with a JSON error naming the problem.
    for (bad, word) in [
        (json!({"Host": "evil"}), "host"),
        (json!({"Connection": "close"}), "connection"),
        (
            json!({"webhook-signature": "v1,forged"}),
            "webhook-signature",
        ),
        (json!({"X-A": "1\r\nX-B: 2"}), "not valid HTTP"),
        (json!({"bad name": "1"}), "not valid HTTP"),
        (json!({"X-A": "1", "x-a": "2"}), "twice"),
    ] {
        let (status, body) = send(
            &gw,
            Method::PATCH,
            &format!("/webhooks/{}", webhook.id),
            json!({"headers": bad}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(word), "{message}");
    }

    // A merge patch: one set, one removed, the rest kept.
    let (status, body) = send(
        &gw,
        Method::PATCH,
        &format!("/webhooks/{}", webhook.id),
        json!({"headers": {"x-env": "prod", "authorization": null}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["headers"], json!({"x-team": "core", "x-env": "prod"}));

    // The CLI sets and removes them too.
    let out = cli(
        &gw,
        &[
            "webhook",
            "set",
            &webhook.id,
            "--header",
            "X-Region: eu",
            "--remove-header",
            "x-team",
        ],
    )
    .await;
    let text = stdout_ok(&out);
    assert!(text.contains("x-region: eu"), "{text}");
    let now = gw.client().webhook(&webhook.id).await.unwrap();
    assert_eq!(
        now.headers.into_iter().collect::<Vec<_>>(),
        vec![
            ("x-env".to_owned(), "prod".to_owned()),
            ("x-region".to_owned(), "eu".to_owned())
        ]
    );
    let out = cli(&gw, &["webhook", "set", &webhook.id, "--header", "nocolon"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Name: value"));

    rx.clear();
    ingest(&gw, &push_envelope("v2")).await;
    eventually(&gw, &path, |p| {
        p["items"].as_array().unwrap().len() == 2 && p["items"][0]["state"] != "pending"
    })
    .await;
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("x-region"), Some("eu"));
    assert_eq!(got[0].header("x-team"), None);
    assert_eq!(got[0].header("authorization"), None);
}

/// The tag of the event a request delivers.
fn tag(request: &callisto_tests::receiver::Received) -> String {
    request.json()["tag"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_rate_limit_holds_across_retries_and_redeliveries() {
    let gw = crate::gateway().await;
    let rx = Receiver::start().await;
    // Four failures first: their retries are due at once, and must wait
    // for the bucket like everything else.
    rx.respond_with([500, 500, 500, 500]);
    let repo = repository(
        &gw,
        json!([{"url": rx.url("/hook"), "rate_limit_per_sec": 2, "retry_schedule_secs": [0, 0, 0]}]),
    )
    .await;
    let webhook = repo.webhooks.as_ref().unwrap()[0].clone();
    assert_eq!(webhook.rate_limit_per_sec, Some(2));
    for i in 0..6 {
        ingest(&gw, &push_envelope(&format!("v{i}"))).await;
    }
    let got = rx.wait_for(10, WAIT).await;
    // A redelivery counts too.
    let page = eventually(&gw, &format!("/webhooks/{}/deliveries", webhook.id), |p| {
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["state"] == "succeeded")
            .count()
            == 6
    })
    .await;
    for d in page["items"].as_array().unwrap().iter().take(2) {
        gw.client()
            .redeliver(d["id"].as_str().unwrap())
            .await
            .unwrap();
    }
    let got = {
        let more = rx.wait_for(12, WAIT).await;
        assert!(more.len() >= got.len());
        more
    };
    // A bucket of 2 refilled at 2/s: any n arrivals span at least
    // (n - 2) / 2 seconds (a few ms of slack for the clocks).
    for i in 0..got.len() {
        for j in i + 1..got.len() {
            let n = (j - i + 1) as f64;
            let span = got[j].at.duration_since(got[i].at).as_secs_f64();
            assert!(
                span + 0.05 >= (n - 2.0) / 2.0,
                "{n} requests within {span:.3} s, over 2/s"
            );
        }
    }

    // Refused out of range; the CLI changes and removes it.
    let (status, body) = send(
        &gw,
        Method::PATCH,
        &format!("/webhooks/{}", webhook.id),
        json!({"rate_limit_per_sec": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rate_limit_per_sec")
    );
    let out = cli(&gw, &["webhook", "set", &webhook.id, "--rate-limit", "50"]).await;
    assert!(stdout_ok(&out).contains("at most 50/s"));
    let out = cli(&gw, &["webhook", "set", &webhook.id, "--no-rate-limit"]).await;
    assert!(stdout_ok(&out).contains("no rate limit"));
    assert_eq!(
        gw.client()
            .webhook(&webhook.id)
            .await
            .unwrap()
            .rate_limit_per_sec,
        None
    );
}

#[tokio::test]
async fn fifo_sends_one_at_a_time_and_the_next_waits_for_retries_and_death() {
    let gw = crate::gateway().await;
    let (fifo, parallel) = (Receiver::start().await, Receiver::start().await);
    // The first delivery fails three times and dies (a schedule of two
    // retries); the others succeed.
    fifo.respond_with([500, 500, 500]);
    parallel.respond_with([500, 500, 500]);
    repository(
        &gw,
        json!([
            {"url": fifo.url("/fifo"), "ordering": "fifo", "retry_schedule_secs": [1, 1]},
            {"url": parallel.url("/parallel"), "retry_schedule_secs": [1, 1]}
        ]),
    )
    .await;
    ingest(&gw, &push_envelope("v1")).await;
    // v1's first attempt is under way (or done) before the others exist.
    fifo.wait_for(1, WAIT).await;
    parallel.wait_for(1, WAIT).await;
    ingest(&gw, &push_envelope("v2")).await;
    ingest(&gw, &push_envelope("v3")).await;
    let got = fifo.wait_for(5, WAIT).await;
    let tags: Vec<String> = got.iter().map(tag).collect();
    assert_eq!(tags, ["v1", "v1", "v1", "v2", "v3"]);
    // Without FIFO the later ones do not wait for v1's retries.
    let got = parallel.wait_for(5, WAIT).await;
    let tags: Vec<String> = got.iter().map(tag).collect();
    assert_ne!(tags, ["v1", "v1", "v1", "v2", "v3"], "parallel waited");
}

#[tokio::test]
async fn fifo_is_set_and_shown_by_the_cli() {
    let gw = crate::gateway().await;
    let rx = Receiver::start().await;
    let repo = repository(&gw, json!([{"url": rx.url("/hook")}])).await;
    let id = repo.webhooks.as_ref().unwrap()[0].id.clone();
    let out = cli(&gw, &["webhook", "set", &id, "--ordering", "fifo"]).await;
    assert!(stdout_ok(&out).contains("ordering fifo"));
    let out = cli(&gw, &["webhook", "set", &id, "--ordering", "random"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`random` is not `parallel` or `fifo`"));
    let (status, body) = send(
        &gw,
        Method::PATCH,
        &format!("/webhooks/{id}"),
        json!({"ordering": "random"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn a_failing_endpoint_is_disabled_with_the_reason_and_reenabling_offers_what_piled_up() {
    let gw = crate::gateway_with(|c| {
        c.delivery.disable_after_dead = 2;
        c.delivery.disable_after_failing_secs = 2;
    })
    .await;
    let (dies, slow) = (Receiver::start().await, Receiver::start().await);
    dies.set_default(500);
    slow.set_default(503);
    let repo = repository(
        &gw,
        json!([
            // One attempt each: every delivery dies at once.
            {"url": dies.url("/dies"), "retry_schedule_secs": []},
            // Retried after 3 s: failing for longer than 2 s, nothing dead.
            {"url": slow.url("/slow"), "retry_schedule_secs": [3, 3]}
        ]),
    )
    .await;
    let hooks = repo.webhooks.unwrap();
    let (a, b) = (hooks[0].id.clone(), hooks[1].id.clone());
    ingest(&gw, &push_envelope("v1")).await;
    ingest(&gw, &push_envelope("v2")).await;

    let w = eventually(&gw, &format!("/webhooks/{a}"), |w| w["enabled"] == false).await;
    let reason = w["disabled_reason"].as_str().unwrap();
    assert!(reason.starts_with("2 deliveries died in a row"), "{reason}");
    assert!(
        w["failing_since"].is_string() && w["disabled_at"].is_string(),
        "{w}"
    );
    let w = eventually(&gw, &format!("/webhooks/{b}"), |w| w["enabled"] == false).await;
    let reason = w["disabled_reason"].as_str().unwrap();
    assert!(reason.starts_with("every attempt failed since"), "{reason}");

    // Disabled: a new push makes nothing for them.
    ingest(&gw, &push_envelope("v3")).await;
    let sent = dies.wait_quiet(Duration::from_millis(500)).await;
    let deliveries = get(&gw, &format!("/webhooks/{a}/deliveries")).await;
    assert_eq!(
        sent.len(),
        2,
        "{:?} {deliveries}",
        sent.iter().map(tag).collect::<Vec<_>>()
    );

    // Re-enabled by the CLI: it says what piled up and how to send it.
    dies.set_default(200);
    let before: Vec<String> = sent
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    let out = cli(&gw, &["webhook", "enable", &a]).await;
    let text = stdout_ok(&out);
    assert!(text.contains("enabled webhook"), "{text}");
    assert!(text.contains("2 deliveries failed or died since"), "{text}");
    let hint = format!("callisto webhook retry {a} --since ");
    let since = text[text.find(&hint).expect(&text) + hint.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('`');
    let out = cli(&gw, &["webhook", "retry", &a, "--since", since]).await;
    assert!(stdout_ok(&out).contains("2 failed or dead deliveries"));
    let got = dies.wait_for(4, WAIT).await;
    let mut again: Vec<String> = got[2..]
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    again.sort();
    let mut before = before;
    before.sort();
    assert_eq!(again, before, "the same deliveries, the same ids");

    // Re-enabled by the API: its pending retries resume; nothing died.
    slow.set_default(200);
    let (status, body) = send(
        &gw,
        Method::POST,
        &format!("/webhooks/{b}/enable"),
        json!({"redeliver": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["piled_up"], 0, "{body}");
    assert!(body["failing_since"].is_string(), "{body}");
    assert_eq!(body["webhook"]["enabled"], true);
    assert!(body["webhook"]["disabled_reason"].is_null());
    eventually(
        &gw,
        &format!("/webhooks/{b}/deliveries?state=succeeded"),
        |p| p["items"].as_array().unwrap().len() == 2,
    )
    .await;
}

#[tokio::test]
async fn a_failing_endpoint_holds_one_slot_and_costs_a_healthy_one_nothing() {
    let gw = crate::gateway().await;
    let (down, healthy) = (Receiver::start().await, Receiver::start().await);
    down.set_default(500);
    down.set_delay(Duration::from_millis(200));
    repository(
        &gw,
        json!([
            {"url": down.url("/down"), "retry_schedule_secs": []},
            {"url": healthy.url("/ok")}
        ]),
    )
    .await;
    for i in 0..12 {
        ingest(&gw, &push_envelope(&format!("v{i}"))).await;
    }
    // The healthy receiver gets everything, whatever the other does.
    healthy.wait_for(12, WAIT).await;
    down.wait_for(5, WAIT).await;
    // Four at a time until five failed in a row; then one probe at a time
    // after a growing pause: never all twelve in the first second and a half
    // (in parallel they would all be there in about 0.6 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = down.requests().len();
    assert!(sent <= 9, "{sent} attempts to an endpoint that is down");
}

#[tokio::test]
async fn a_bulk_retry_resends_failed_and_dead_deliveries_since_a_time() {
    let gw = crate::gateway().await;
    let rx = Receiver::start().await;
    rx.set_default(500);
    let repo = repository(
        &gw,
        json!([{"url": rx.url("/hook"), "retry_schedule_secs": []}]),
    )
    .await;
    let id = repo.webhooks.unwrap()[0].id.clone();
    ingest(&gw, &push_envelope("v1")).await;
    ingest(&gw, &push_envelope("v2")).await;
    let path = format!("/webhooks/{id}/deliveries?state=dead");
    eventually(&gw, &path, |p| p["items"].as_array().unwrap().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = callisto::event::Timestamp::now().to_rfc3339_millis();
    tokio::time::sleep(Duration::from_millis(20)).await;
    ingest(&gw, &push_envelope("v3")).await;
    eventually(&gw, &path, |p| p["items"].as_array().unwrap().len() == 3).await;

    // Counted, then sent: only what was made since the time.
    let client = gw.client();
    let dry = client.retry_failed(&id, &between, true).await.unwrap();
    assert_eq!((dry.redelivered, dry.dry_run), (1, true));
    let out = cli(
        &gw,
        &["webhook", "retry", &id, "--since", "1h", "--dry-run"],
    )
    .await;
    assert!(stdout_ok(&out).contains("3 failed or dead deliveries since"));
    rx.set_default(200);
    rx.clear();
    let out = cli(&gw, &["webhook", "retry", &id, "--since", &between]).await;
    assert!(stdout_ok(&out).contains("1 failed or dead deliveries since"));
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(tag(&got[0]), "v3");
    let done = client
        .retry_failed(&id, "2000-01-01T00:00:00Z", false)
        .await
        .unwrap();
    assert_eq!(done.redelivered, 2);
    let got = rx.wait_for(3, WAIT).await;
    let mut tags: Vec<String> = got.iter().map(tag).collect();
    tags.sort();
    assert_eq!(tags, ["v1", "v2", "v3"]);

    // Bad input is refused, naming the problem.
    let (status, body) = send(
        &gw,
        Method::POST,
        &format!("/webhooks/{id}/retry"),
        json!({"since": "yesterday"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("RFC 3339")
    );
    let (status, _) = send(
        &gw,
        Method::POST,
        "/webhooks/wh_missing/retry",
        json!({"since": between}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let out = cli(&gw, &["webhook", "retry", &id, "--since", "soon"]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither an RFC 3339 time"));
}

/// Whether `signature` (one `v1,<base64>` entry) signs `request` with
/// `secret`, computed independently of the gateway.
fn signs(request: &callisto_tests::receiver::Received, signature: &str, secret: &str) -> bool {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use hmac::{Hmac, Mac};
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => STANDARD.decode(b64).unwrap(),
        None => secret.as_bytes().to_vec(),
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(
        format!(
            "{}.{}.",
            request.header("webhook-id").unwrap(),
            request.header("webhook-timestamp").unwrap()
        )
        .as_bytes(),
    );
    mac.update(&request.body);
    signature == format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_old_one_during_the_grace_period() {
    let gw = crate::gateway().await;
    let rx = Receiver::start().await;
    let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let repo = repository(&gw, json!([{"url": rx.url("/hook"), "secret": old}])).await;
    let id = repo.webhooks.unwrap()[0].id.clone();

    let rotated = gw
        .client()
        .rotate_secret(&id, &Default::default())
        .await
        .unwrap();
    let new = rotated.secret.clone().expect("the generated secret, once");
    assert!(new.starts_with("whsec_") && new != old);
    assert!(rotated.previous_secret_until.is_some());
    assert!(gw.client().webhook(&id).await.unwrap().secret.is_none());

    ingest(&gw, &push_envelope("v1")).await;
    let got = rx.wait_for(1, WAIT).await;
    let header = got[0].header("webhook-signature").unwrap();
    let signatures: Vec<&str> = header.split(' ').collect();
    assert_eq!(signatures.len(), 2, "{header}");
    assert!(
        signs(&got[0], signatures[0], &new),
        "the first is the new secret's"
    );
    assert!(
        signs(&got[0], signatures[1], old),
        "the second is the old secret's"
    );

    // Rotated again without grace, by the CLI: one signature, the newest.
    let out = cli(
        &gw,
        &[
            "webhook",
            "rotate-secret",
            &id,
            "--secret",
            "newest-secret",
            "--grace",
            "0",
        ],
    )
    .await;
    let text = stdout_ok(&out);
    assert!(text.contains("the old secret no longer signs"), "{text}");
    assert!(
        !text.contains("newest-secret"),
        "a given secret is not echoed: {text}"
    );
    rx.clear();
    ingest(&gw, &push_envelope("v2")).await;
    let got = rx.wait_for(1, WAIT).await;
    let header = got[0].header("webhook-signature").unwrap();
    assert!(!header.contains(' '), "{header}");
    assert!(signs(&got[0], header, "newest-secret"));

    let (status, body) = send(
        &gw,
        Method::POST,
        &format!("/webhooks/{id}/rotate-secret"),
        json!({"grace_secs": 99_999_999}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("grace_secs")
    );
}

#[tokio::test]
async fn a_webhook_keeps_its_deliveries_for_its_own_retention() {
    let gw = crate::gateway().await;
    let rx = Receiver::start().await;
    let repo = repository(
        &gw,
        json!([{"url": rx.url("/hook"), "retention_days": 400}]),
    )
    .await;
    let id = repo.webhooks.unwrap()[0].id.clone();
    assert_eq!(
        gw.client().webhook(&id).await.unwrap().retention_days,
        Some(400)
    );
    let out = cli(&gw, &["webhook", "set", &id, "--retention-days", "7"]).await;
    assert!(stdout_ok(&out).contains("kept 7 days"));
    let out = cli(&gw, &["webhook", "set", &id, "--default-retention"]).await;
    assert!(stdout_ok(&out).contains("the gateway's retention"));
    assert_eq!(gw.client().webhook(&id).await.unwrap().retention_days, None);
    let (status, body) = send(
        &gw,
        Method::PATCH,
        &format!("/webhooks/{id}"),
        json!({"retention_days": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retention_days")
    );
}

#[tokio::test]
async fn operational_events_reach_the_webhooks_that_subscribe_through_the_same_pipeline() {
    let gw = crate::gateway_with(|c| c.delivery.disable_after_dead = 1).await;
    let (ops, bad, other) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    bad.set_default(500);
    let installed = gw
        .api(Method::PUT, "/plugins/hostile")
        .header("content-type", "application/wasm")
        .body(callisto_tests::guests::HOSTILE)
        .send()
        .await
        .unwrap();
    assert_eq!(installed.status(), StatusCode::CREATED);
    // A system repository of the operator's choosing, with the subscriber.
    let system: callisto::api::input::RepositoryInput = serde_json::from_value(json!({
        "name": "callisto/ops",
        "webhooks": [{"url": ops.url("/ops"), "secret": "ops-secret", "operational_events": true}]
    }))
    .unwrap();
    let system = gw.client().create_repository(&system).await.unwrap();
    assert!(system.webhooks.as_ref().unwrap()[0].operational_events);
    let repo = repository(
        &gw,
        json!([
            {"url": bad.url("/bad"), "retry_schedule_secs": []},
            {"url": other.url("/broken"), "plugin": "hostile", "config": {"mode": "error"}}
        ]),
    )
    .await;
    let hooks = repo.webhooks.unwrap();
    let (bad_id, broken_id) = (hooks[0].id.clone(), hooks[1].id.clone());

    ingest(&gw, &push_envelope("v1")).await;
    let got = ops.wait_for(3, WAIT).await;
    let mut kinds: Vec<String> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["delivery.dead", "plugin.failing", "webhook.disabled"]
    );
    for request in &got {
        // Signed like every delivery.
        crate::delivery::verify_standard(request, "ops-secret");
        let event = request.json();
        assert!(
            event["id"].as_str().unwrap().starts_with("opev_"),
            "{event}"
        );
        match event["type"].as_str().unwrap() {
            "delivery.dead" | "webhook.disabled" => {
                assert_eq!(event["webhook_id"], bad_id.as_str())
            }
            _ => {
                assert_eq!(event["webhook_id"], broken_id.as_str());
                assert_eq!(event["plugin"], "hostile");
            }
        }
    }
    // The registry's own events do not reach the subscriber (its
    // repository had none), and they are recorded as its deliveries.
    let subscriber = &system.webhooks.as_ref().unwrap()[0].id;
    let page = eventually(&gw, &format!("/webhooks/{subscriber}/deliveries"), |p| {
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["state"] == "succeeded")
            .count()
            == 3
    })
    .await;
    assert_eq!(page["items"][0]["plugin"], "callisto.operational");
    let out = cli(
        &gw,
        &["webhook", "set", subscriber, "--no-operational-events"],
    )
    .await;
    assert!(!stdout_ok(&out).contains("receives operational events"));
}

/// A CA; a server certificate for `localhost` and a client certificate,
/// both signed by it: (CA, server cert, server key, client cert, client
/// key), in PEM.
fn mtls_pki() -> (String, String, String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Callisto mTLS test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client
        .distinguished_name
        .push(rcgen::DnType::CommonName, "callisto webhook");
    client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = client.signed_by(&client_key, &ca).unwrap();
    (
        ca.pem(),
        server.pem(),
        server_key.serialize_pem(),
        client.pem(),
        client_key.serialize_pem(),
    )
}

/// An HTTPS receiver on loopback that requires a client certificate signed
/// by `ca_pem`: a connection without one fails its handshake. Counts the
/// requests it answered.
async fn mtls_receiver(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    https_receiver(ca_pem, cert_pem, key_pem, true).await
}

/// An HTTPS receiver on loopback, requiring a client certificate signed by
/// `ca_pem` if `require_client_cert`.
async fn https_receiver(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    require_client_cert: bool,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::pem::PemObject;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client_cert {
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(certs, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, counter) = (acceptor.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                // The handshake checked the certificate; be sure one came.
                if require_client_cert
                    && tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .is_none_or(|c| c.is_empty())
                {
                    return;
                }
                let service = hyper::service::service_fn(
                    move |_req: hyper::Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, count)
}

#[tokio::test]
async fn a_webhook_presents_its_client_certificate_to_a_receiver_that_requires_one() {
    let (ca, server_cert, server_key, client_cert, client_key) = mtls_pki();
    let (port, answered) = mtls_receiver(&ca, &server_cert, &server_key).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let gw = crate::gateway_with(|c| c.delivery.ca_bundle = Some(ca_file.clone())).await;
    let url = format!("https://localhost:{port}/hook");
    let repo = repository(
        &gw,
        json!([
            {"url": url, "retry_schedule_secs": [],
             "client_certificate": {"certificate": client_cert, "private_key": client_key}},
            {"url": url, "retry_schedule_secs": []}
        ]),
    )
    .await;
    let hooks = repo.webhooks.unwrap();
    let (with, without) = (hooks[0].id.clone(), hooks[1].id.clone());
    assert_eq!(
        hooks[0].client_certificate_sha256.as_ref().map(String::len),
        Some(64)
    );
    assert!(hooks[1].client_certificate_sha256.is_none());
    let shown = serde_json::to_string(&hooks[0]).unwrap();
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");

    ingest(&gw, &push_envelope("v1")).await;
    eventually(&gw, &format!("/webhooks/{with}/deliveries"), |p| {
        p["items"][0]["state"] == "succeeded"
    })
    .await;
    let refused = eventually(&gw, &format!("/webhooks/{without}/deliveries"), |p| {
        p["items"][0]["state"] == "dead"
    })
    .await;
    assert!(refused["items"][0]["last_status"].is_null(), "{refused}");
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Test Webhook presents it too.
    let tested = gw.client().test_webhook(&with).await.unwrap();
    assert_eq!(tested.result, "success", "{}", tested.summary);

    // At rest, the key is sealed: the store file never holds it in clear.
    let key_body: String = client_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let store = std::fs::read(gw.data.path().join("callisto.redb")).unwrap();
    let needle = &key_body.as_bytes()[..40];
    assert!(
        !store.windows(needle.len()).any(|w| w == needle),
        "the key is in clear in the store"
    );

    // A key that does not fit, or no PEM at all, is refused.
    let (_, _, _, other_cert, _) = mtls_pki();
    let (status, body) = send(
        &gw,
        Method::PATCH,
        &format!("/webhooks/{with}"),
        json!({"client_certificate": {"certificate": other_cert, "private_key": client_key}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client_certificate"),
        "{body}"
    );
    let (status, _) = send(
        &gw,
        Method::PATCH,
        &format!("/webhooks/{with}"),
        json!({"client_certificate": {"certificate": "nope", "private_key": "nope"}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Removed: the receiver refuses the next attempt.
    let (status, body) = send(
        &gw,
        Method::PATCH,
        &format!("/webhooks/{with}"),
        json!({"client_certificate": null}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["client_certificate_sha256"].is_null());
}

#[tokio::test]
async fn attempts_go_through_a_connect_proxy_and_the_address_policy_still_judges_the_receiver() {
    use callisto_tests::proxy::ConnectProxy;
    let (ca, server_cert, server_key, _, _) = mtls_pki();
    let (port, answered) = https_receiver(&ca, &server_cert, &server_key, false).await;
    let proxy = ConnectProxy::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let url = format!("https://localhost:{port}/hook");

    // Through the proxy, to a receiver the policy permits.
    let gw = crate::gateway_with(|c| {
        c.delivery.ca_bundle = Some(ca_file.clone());
        c.delivery.proxy = Some(proxy.url());
    })
    .await;
    let repo = repository(&gw, json!([{"url": url, "retry_schedule_secs": []}])).await;
    let id = repo.webhooks.unwrap()[0].id.clone();
    ingest(&gw, &push_envelope("v1")).await;
    eventually(&gw, &format!("/webhooks/{id}/deliveries"), |p| {
        p["items"][0]["state"] == "succeeded"
    })
    .await;
    assert_eq!(proxy.targets(), [format!("localhost:{port}")]);
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 1);
    drop(gw);

    // The same receiver, refused by the policy (loopback not allowed): the
    // gateway resolves it itself and never asks the proxy.
    let gw = crate::gateway_with(|c| {
        c.allow_private_targets = false;
        c.delivery.ca_bundle = Some(ca_file.clone());
        c.delivery.proxy = Some(proxy.url());
    })
    .await;
    let repo = repository(&gw, json!([{"url": url, "retry_schedule_secs": []}])).await;
    let id = repo.webhooks.unwrap()[0].id.clone();
    ingest(&gw, &push_envelope("v1")).await;
    let page = eventually(&gw, &format!("/webhooks/{id}/deliveries"), |p| {
        p["items"][0]["state"] == "dead"
    })
    .await;
    let error = page["items"][0]["last_error"].as_str().unwrap();
    assert!(
        error.contains("refused to connect to non-public address"),
        "{error}"
    );
    assert_eq!(
        proxy.targets().len(),
        1,
        "the proxy was asked for a refused receiver"
    );
}

#[tokio::test]
async fn a_remote_repository_that_keeps_failing_to_poll_is_told_once() {
    // Failed polls are retried within a second: three come quickly.
    let gw = crate::gateway_with(|c| c.poll.max_backoff_secs = 1).await;
    let ops = Receiver::start().await;
    let system: callisto::api::input::RepositoryInput = serde_json::from_value(json!({
        "name": "callisto/ops",
        "webhooks": [{"url": ops.url("/ops"), "operational_events": true}]
    }))
    .unwrap();
    gw.client().create_repository(&system).await.unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let remote: callisto::api::input::RepositoryInput = serde_json::from_value(json!({
        "name": "demo/app", "kind": "remote", "registry": format!("127.0.0.1:{closed}"),
        "insecure": true, "poll_interval_secs": 10
    }))
    .unwrap();
    let remote = gw.client().create_repository(&remote).await.unwrap();
    let got = ops.wait_for(1, WAIT).await;
    let event = got[0].json();
    assert_eq!(event["type"], "poll.failing", "{event}");
    assert_eq!(event["repository_id"], remote.id.as_str());
    assert!(
        event["reason"]
            .as_str()
            .unwrap()
            .contains("3 polls in a row failed"),
        "{event}"
    );
    // Later failures of the same run make no more.
    eventually(&gw, &format!("/repositories/{}", remote.id), |r| {
        r["poll"]["consecutive_errors"].as_u64() >= Some(5)
    })
    .await;
    assert_eq!(ops.wait_quiet(Duration::from_millis(300)).await.len(), 1);
}
