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
