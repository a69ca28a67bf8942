//! Coalescing windows (issue 13): a burst of pushes reaches a webhook with
//! `coalesce_secs` as one delivery of the newest event, listing the others,
//! while a webhook without a window gets every event; the burst survives
//! `kill -9`. Real gateways, real receivers on loopback.

use std::time::Duration;

use callisto_tests::gateway::{ADMIN_TOKEN, INGEST_TOKEN};
use callisto_tests::receiver::Receiver;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::delivery::{eventually, get, ingest, push_envelope, repository};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_burst_of_tags_is_one_delivery_of_the_newest_listing_the_others() {
    let gw = crate::gateway().await;
    let (every, burst) = (Receiver::start().await, Receiver::start().await);
    let repo = repository(
        &gw,
        json!([
            {"url": every.url("/every")},
            {"url": burst.url("/burst"), "coalesce_secs": 3},
        ]),
    )
    .await;
    let hooks = repo.webhooks.unwrap();
    let coalesced = hooks.iter().find(|w| w.coalesce_secs == Some(3)).unwrap();

    let mut events = Vec::new();
    for tag in ["1.4.0", "1.4", "latest"] {
        events.push(ingest(&gw, &push_envelope(tag)).await.events[0].clone());
    }
    assert_eq!(
        every.wait_for(3, WAIT).await.len(),
        3,
        "no window: each event"
    );
    let got = burst.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert_eq!(body["id"], events[2].as_str(), "the newest event is sent");
    assert_eq!(body["tag"], "latest");
    assert_eq!(
        got[0].header("callisto-folded-events"),
        Some(format!("{},{}", events[0], events[1]).as_str()),
        "the earlier events are listed, oldest first"
    );

    // The history says which delivery carried which event.
    let path = format!("/webhooks/{}/deliveries", coalesced.id);
    let page = eventually(&gw, &path, |p| {
        p["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|d| d["state"] == "succeeded"))
    })
    .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "one delivery per event, as always: {page}");
    let carrier = items.iter().find(|d| d["state"] == "succeeded").unwrap();
    assert_eq!(got[0].header("webhook-id"), carrier["id"].as_str());
    assert_eq!(carrier["event_id"], events[2].as_str());
    assert_eq!(carrier["folded"], json!([events[0], events[1]]));
    let folded: Vec<&Value> = items.iter().filter(|d| d["state"] == "folded").collect();
    assert_eq!(folded.len(), 2, "{page}");
    for d in &folded {
        assert_eq!(d["attempts"], 0);
        let one = get(&gw, &format!("/deliveries/{}", d["id"].as_str().unwrap())).await;
        assert!(one["folded_into"].as_str().is_some(), "{one}");
    }
    // The window starts with the first event and does not slide.
    let first = folded
        .iter()
        .find(|d| d["event_id"] == events[0].as_str())
        .unwrap();
    let created = callisto::event::Timestamp::parse_rfc3339(first["created_at"].as_str().unwrap())
        .unwrap()
        .unix_millis();
    let one = get(
        &gw,
        &format!("/deliveries/{}", carrier["id"].as_str().unwrap()),
    )
    .await;
    let sent = callisto::event::Timestamp::parse_rfc3339(
        one["attempt_log"][0]["started_at"].as_str().unwrap(),
    )
    .unwrap()
    .unix_millis();
    assert!(
        sent >= created + 2_900,
        "sent {} ms after the burst began, before its 3 s window ended",
        sent - created
    );

    // Nothing more is sent, and a push after the window is a new burst.
    assert_eq!(burst.wait_quiet(Duration::from_secs(1)).await.len(), 1);
    let later = ingest(&gw, &push_envelope("1.5.0")).await.events[0].clone();
    let got = burst.wait_for(2, WAIT).await;
    assert_eq!(got[1].json()["id"], later.as_str());
    assert_eq!(got[1].header("callisto-folded-events"), None);
}

#[tokio::test]
async fn coalesce_secs_is_validated_patched_and_removed() {
    let gw = crate::gateway().await;
    let rx = Receiver::start().await;
    let repo = repository(&gw, json!([{"url": rx.url("/hook")}])).await;
    let id = repo.webhooks.unwrap()[0].id.clone();
    let path = format!("/webhooks/{id}");
    for bad in [json!(0), json!(3601), json!("ten")] {
        let response = gw
            .api(Method::PATCH, &path)
            .json(&json!({"coalesce_secs": bad}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("coalesce_secs")),
            "{body}"
        );
    }
    let set = gw
        .api(Method::PATCH, &path)
        .json(&json!({"coalesce_secs": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    assert_eq!(
        gw.client().webhook(&id).await.unwrap().coalesce_secs,
        Some(60)
    );
    let cleared = gw
        .api(Method::PATCH, &path)
        .json(&json!({"coalesce_secs": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), StatusCode::OK);
    assert_eq!(gw.client().webhook(&id).await.unwrap().coalesce_secs, None);

    // The CLI sets it and says so, and names a bad value.
    let cli = |args: Vec<String>| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_callisto-e2e"))
            .args(args)
            .env("CALLISTO_URL", &gw.url)
            .env("CALLISTO_ADMIN_TOKEN", &gw.admin_token)
            .env_remove("CALLISTO_DATA_DIR")
            .output()
    };
    let set = |v: &str| {
        vec![
            "webhook".into(),
            "set".into(),
            id.clone(),
            "--coalesce".into(),
            v.into(),
        ]
    };
    let out = cli(set("45")).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("gathered for 45 s"));
    assert_eq!(
        gw.client().webhook(&id).await.unwrap().coalesce_secs,
        Some(45)
    );
    let out = cli(set("0")).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("coalesce_secs"));
    let mut off = set("0");
    off.truncate(3);
    off.push("--no-coalesce".into());
    assert!(cli(off).await.unwrap().status.success());
    assert_eq!(gw.client().webhook(&id).await.unwrap().coalesce_secs, None);
}

#[tokio::test]
async fn a_burst_gathering_when_the_gateway_is_killed_is_sent_once_after_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut gateway = crate::gateway_process(&data.path().join("data")).await;
    let receiver = Receiver::start().await;
    let http = crate::demo_repository_at(
        &gateway.url,
        json!([{"url": receiver.url("/hook"), "coalesce_secs": 4}]),
    )
    .await;
    let mut events = Vec::new();
    for tag in ["a", "b", "c"] {
        let response = http
            .post(format!("{}/ingest/distribution", gateway.url))
            .bearer_auth(INGEST_TOKEN)
            .header(
                "content-type",
                "application/vnd.docker.distribution.events.v1+json",
            )
            .body(push_envelope(tag))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        events.push(body["events"][0].as_str().unwrap().to_owned());
    }
    // Wait until fan-out has folded the burst (the deliveries are
    // durable), then kill the gateway inside the window.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page: Value = http
            .get(format!("{}/api/v1/events/{}", gateway.url, events[2]))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page["deliveries"].as_array().is_some_and(|d| !d.is_empty()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not planned: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        receiver.requests().is_empty(),
        "sent before its window ended"
    );
    gateway.kill9().await;
    gateway.restart().await;

    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].json()["id"], events[2].as_str());
    assert_eq!(
        got[0].header("callisto-folded-events"),
        Some(format!("{},{}", events[0], events[1]).as_str())
    );
    assert_eq!(
        receiver.wait_quiet(Duration::from_secs(2)).await.len(),
        1,
        "the folded deliveries are never sent on their own"
    );
}
