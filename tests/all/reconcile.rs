//! Push and poll of one repository, reconciled: a registry's notification
//! (the fast path) and a poll (the safety net) that learn the same change
//! make one event, whichever comes first, and a dropped notification is
//! made up by the next poll. On both store engines, with a real
//! `docker-registry` whose notifications go to an outbox the test forwards
//! from, so that it can drop one on purpose.

use std::time::Duration;

use callisto::test_util::TestGateway;
use callisto_tests::oci::{ImageLayout, RegistryClient};
use callisto_tests::receiver::{Received, Receiver};
use callisto_tests::registry::Registry;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::delivery::{eventually, get};

const WAIT: Duration = Duration::from_secs(30);

async fn gateway_on(postgres: bool) -> TestGateway {
    if !postgres {
        return crate::gateway().await;
    }
    let url = tokio::task::spawn_blocking(callisto_tests::postgres::database)
        .await
        .unwrap();
    crate::gateway_with(move |c| c.store = url).await
}

/// The registry's notification of `tag`'s manifest push, once it is out.
async fn envelope_of(outbox: &Receiver, tag: &str) -> Received {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = outbox.requests().into_iter().find(|r| {
            let e = &r.json()["events"][0];
            e["action"] == "push" && e["target"]["tag"] == tag
        });
        if let Some(r) = found {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the registry never notified the push of {tag}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn forward(gw: &TestGateway, envelope: &Received) -> Value {
    let r = gw
        .http
        .post(format!("{}/ingest/distribution", gw.url))
        .bearer_auth(&gw.ingest_token)
        .header(
            "content-type",
            envelope
                .header("content-type")
                .unwrap_or("application/json"),
        )
        .body(envelope.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    r.json().await.unwrap()
}

async fn poll_and_wait(gw: &TestGateway, id: &str) {
    // `last_poll_at` has whole seconds: start this poll in a new one, so
    // that its mark tells it from the previous poll's.
    let into = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from(1010 - into))).await;
    let before = get(gw, &format!("/repositories/{id}")).await["poll"]["last_poll_at"]
        .as_str()
        .map(str::to_owned);
    let r = gw
        .api(Method::POST, &format!("/repositories/{id}/poll"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    eventually(gw, &format!("/repositories/{id}"), |r| {
        r["poll"]["last_poll_at"]
            .as_str()
            .is_some_and(|t| before.as_deref().is_none_or(|b| t > b))
    })
    .await;
}

async fn pushed_tags(gw: &TestGateway) -> Vec<(String, String)> {
    let page = get(gw, "/events").await;
    let mut tags: Vec<(String, String)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "image.pushed")
        .map(|e| {
            (
                e["tag"].as_str().unwrap().to_owned(),
                e["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    tags.sort();
    tags
}

async fn a_change_fires_once_whichever_way_it_arrives(postgres: bool) {
    let outbox = Receiver::start().await;
    let registry = Registry::builder()
        .notify(&outbox.url("/outbox"), "outbox-token-0123456789")
        .start()
        .await
        .expect("docker-registry starts");
    let client = RegistryClient::new(&registry.host(), None);
    let layout = ImageLayout::new("reconcile").unwrap();
    client.push_image("demo/app", "v1", &layout).await.unwrap();

    let gw = gateway_on(postgres).await;
    let hooks = Receiver::start().await;
    let r = gw
        .api(Method::POST, "/repositories")
        .json(
            &json!({"name": format!("{}/demo/app", registry.host()), "kind": "remote",
                      "insecure": true, "poll_interval_secs": 3600,
                      "webhooks": [{"url": hooks.url("/h")}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let repo: Value = r.json().await.unwrap();
    let id = repo["id"].as_str().unwrap().to_owned();
    // The first poll learns v1 ...
    eventually(&gw, &format!("/repositories/{id}"), |r| {
        r["poll"]["tags_known"] == 1
    })
    .await;
    // ... so the registry's notification of it, arriving late, is not news.
    let late = forward(&gw, &envelope_of(&outbox, "v1").await).await;
    assert_eq!(late["events"], json!([]), "{late}");

    // v2: the notification first, then a poll that finds nothing new.
    client
        .put_manifest("demo/app", "v2", &layout)
        .await
        .unwrap();
    let told = forward(&gw, &envelope_of(&outbox, "v2").await).await;
    assert_eq!(told["events"].as_array().unwrap().len(), 1, "{told}");
    poll_and_wait(&gw, &id).await;

    // v3: its notification is dropped; the poll makes it up.
    client
        .put_manifest("demo/app", "v3", &layout)
        .await
        .unwrap();
    envelope_of(&outbox, "v3").await;
    poll_and_wait(&gw, &id).await;

    assert_eq!(
        pushed_tags(&gw).await,
        [
            ("v1".to_owned(), "remote".to_owned()),
            ("v2".to_owned(), "local".to_owned()),
            ("v3".to_owned(), "remote".to_owned()),
        ]
    );
    hooks.wait_for(3, WAIT).await;
    hooks.wait_quiet(Duration::from_millis(700)).await;
    assert_eq!(hooks.requests().len(), 3, "one webhook per change");
    let known = get(&gw, &format!("/repositories/{id}/tags")).await;
    assert_eq!(known.as_array().unwrap().len(), 3, "{known}");
}

#[tokio::test]
async fn push_and_poll_reconcile_on_redb() {
    a_change_fires_once_whichever_way_it_arrives(false).await;
}

#[tokio::test]
async fn push_and_poll_reconcile_on_postgres() {
    a_change_fires_once_whichever_way_it_arrives(true).await;
}
