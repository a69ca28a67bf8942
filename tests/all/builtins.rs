//! The built-in plugins people asked for, through the real gateway: one
//! push, one webhook each, each receiver gets its own shape.

use std::time::Duration;

use callisto_tests::receiver::Receiver;
use serde_json::json;

use crate::delivery::{eventually, ingest, push_envelope, repository};

const WAIT: Duration = Duration::from_secs(30);
const PUSH: &str = include_str!("../fixtures/distribution/push-manifest-tag-v1.json");

#[tokio::test]
async fn discord_teams_github_dispatch_flux_and_template_each_get_their_shape() {
    let gw = crate::gateway().await;
    let r: Vec<Receiver> = futures_join(5).await;
    repository(
        &gw,
        json!([
            {"url": r[0].url("/discord"), "plugin": "discord", "config": {"username": "Callisto"}},
            {"url": r[1].url("/teams"), "plugin": "teams"},
            {"url": r[2].url("/repos/o/r/dispatches"), "plugin": "github-dispatch",
             "config": {"token": "github_pat_0123456789abcdef"}},
            {"url": r[3].url("/hook/abc"), "plugin": "flux"},
            {"url": r[4].url("/t"), "plugin": "template",
             "config": {"template": "{\"msg\": \"{{image}} {{type}}\"}"}},
        ]),
    )
    .await;
    let answer = gw
        .http
        .post(format!("{}/ingest/distribution", gw.url))
        .bearer_auth(&gw.ingest_token)
        .header("content-type", "application/json")
        .body(PUSH)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);

    let discord = r[0].wait_for(1, WAIT).await[0].json();
    assert_eq!(discord["username"], "Callisto");
    assert_eq!(discord["embeds"][0]["fields"][1]["value"], "v1");
    let teams = r[1].wait_for(1, WAIT).await[0].json();
    assert_eq!(teams["attachments"][0]["content"]["type"], "AdaptiveCard");
    let dispatch = &r[2].wait_for(1, WAIT).await[0];
    assert_eq!(
        dispatch.header("authorization"),
        Some("Bearer github_pat_0123456789abcdef")
    );
    assert_eq!(dispatch.json()["event_type"], "image-pushed");
    let flux = r[3].wait_for(1, WAIT).await[0].json();
    assert_eq!(flux["image"], "127.0.0.1:5000/demo/app:v1");
    let template = r[4].wait_for(1, WAIT).await[0].json();
    assert_eq!(
        template,
        json!({"msg": "127.0.0.1:5000/demo/app:v1 image.pushed"})
    );

    // A template that cannot make JSON is refused when the webhook is saved.
    let bad = gw
        .api(reqwest::Method::POST, "/repositories")
        .json(&json!({"name": "demo/other", "webhooks": [
            {"url": r[4].url("/t"), "plugin": "template", "config": {"template": "{{tga}}"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("{{tga}}"),
        "{body}"
    );
}

async fn futures_join(n: usize) -> Vec<Receiver> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Receiver::start().await);
    }
    out
}

#[tokio::test]
async fn semver_newer_sends_only_tags_newer_than_every_version_known() {
    let gw = crate::gateway().await;
    let receiver = Receiver::start().await;
    let repo = repository(
        &gw,
        json!([{"url": receiver.url("/h"), "plugin": "slack", "config": {"semver": "newer"}}]),
    )
    .await;
    let hook = repo.webhooks.as_ref().unwrap()[0].id.clone();
    ingest(&gw, &push_envelope("v1.0.0")).await;
    receiver.wait_for(1, WAIT).await;
    // An older version, a tag that is no version, then a newer one.
    for tag in ["v0.9.0", "latest", "v1.1"] {
        ingest(&gw, &push_envelope(tag)).await;
    }
    let got = receiver.wait_for(2, WAIT).await;
    receiver.wait_quiet(Duration::from_millis(700)).await;
    assert_eq!(receiver.requests().len(), 2);
    assert!(
        got[1].json()["text"]
            .as_str()
            .unwrap()
            .contains("demo/app:v1.1")
    );
    let filtered = eventually(&gw, &format!("/webhooks/{hook}/filtered"), |f| {
        f["count"] == 2
    })
    .await;
    let rules: Vec<&str> = filtered["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["semver", "semver"]);

    // A value the filter does not take is named when the webhook is saved.
    let bad = gw
        .api(
            reqwest::Method::POST,
            &format!("/repositories/{}/webhooks", repo.id),
        )
        .json(&json!({"url": receiver.url("/h"), "config": {"semver": "newest"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("newest"),
        "{body}"
    );
}
