//! Nothing acknowledged is lost: `kill -9` of the gateway process while a
//! client posts 2,000 envelopes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callisto_tests::gateway::{ADMIN_TOKEN, INGEST_TOKEN};
use callisto_tests::receiver::Receiver;
use serde_json::{Value, json};

use crate::delivery::push_envelope;

const ENVELOPES: usize = 2000;
const CONCURRENCY: usize = 32;

#[tokio::test]
async fn every_event_answered_202_survives_kill_9_and_is_delivered() {
    let data = tempfile::tempdir().unwrap();
    let mut gateway = crate::gateway_process(&data.path().join("data")).await;
    let receiver = Receiver::start().await;
    let http = crate::demo_repository_at(
        &gateway.url,
        json!([{"url": receiver.url("/hook"), "retry_schedule_secs": [1, 1, 1, 1, 1]}]),
    )
    .await;

    // Post from many connections; kill the gateway once a quarter is in.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = format!("{}/ingest/distribution", gateway.url);
    let mut posters = Vec::new();
    for _ in 0..CONCURRENCY {
        let (http, url, acknowledged, next) = (
            http.clone(),
            url.clone(),
            acknowledged.clone(),
            next.clone(),
        );
        posters.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= ENVELOPES {
                    return;
                }
                let sent = http
                    .post(&url)
                    .bearer_auth(INGEST_TOKEN)
                    .header(
                        "content-type",
                        "application/vnd.docker.distribution.events.v1+json",
                    )
                    .body(push_envelope(&format!("t{i}")))
                    .send()
                    .await;
                if let Ok(response) = sent
                    && response.status() == 202
                    && let Ok(body) = response.json::<Value>().await
                {
                    let id = body["events"][0].as_str().unwrap().to_owned();
                    acknowledged.lock().unwrap().push(id);
                }
            }
        }));
    }
    while acknowledged.lock().unwrap().len() < ENVELOPES / 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gateway.kill9().await;
    for poster in posters {
        poster.await.unwrap();
    }
    let acknowledged: Vec<String> = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= ENVELOPES / 4);
    assert!(
        acknowledged.len() < ENVELOPES,
        "the kill came too late to prove anything"
    );

    gateway.restart().await;
    // Every acknowledged event is in the log...
    for id in &acknowledged {
        let r = http
            .get(format!("{}/api/v1/events/{id}", gateway.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "acknowledged event {id} was lost:\n{}",
            gateway.log()
        );
    }
    // ...and is delivered (at least once; receivers de-duplicate by webhook-id).
    let want: HashSet<&str> = acknowledged.iter().map(String::as_str).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let got: HashSet<String> = receiver
            .requests()
            .iter()
            .map(|r| r.json()["id"].as_str().unwrap().to_owned())
            .collect();
        let missing = want.iter().filter(|id| !got.contains(**id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} of {} acknowledged events were never delivered",
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let requests = receiver.requests();
    let unique: HashSet<&str> = requests
        .iter()
        .filter_map(|r| r.header("webhook-id"))
        .collect();
    println!(
        "acknowledged {} of {ENVELOPES} before kill -9; {} deliveries received, {} distinct webhook-ids",
        acknowledged.len(),
        requests.len(),
        unique.len()
    );
    gateway.terminate().await;
}
