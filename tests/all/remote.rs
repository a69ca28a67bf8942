//! Remote repositories against a real `docker-registry` on loopback that
//! knows nothing of Callisto: the gateway polls it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use callisto::test_util::TestGateway;
use callisto_tests::gateway::{ADMIN_TOKEN, GatewayProcess};
use callisto_tests::oci::{ImageLayout, RegistryClient};
use callisto_tests::receiver::Receiver;
use callisto_tests::registry::Registry;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::delivery::{eventually, get};

const WAIT: Duration = Duration::from_secs(60);

async fn registry() -> Registry {
    Registry::builder()
        .start()
        .await
        .expect("docker-registry starts")
}

/// Pushes `count` tags `t000`.. of one image; returns its digest.
async fn push_tags(
    client: &RegistryClient,
    repo: &str,
    layout: &ImageLayout,
    count: usize,
) -> String {
    client.push_image(repo, "t000", layout).await.unwrap();
    for i in 1..count {
        client
            .put_manifest(repo, &format!("t{i:03}"), layout)
            .await
            .unwrap();
    }
    layout.manifest_digest()
}

async fn remote(gw: &TestGateway, body: Value) -> Value {
    let response = gw
        .api(Method::POST, "/repositories")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn poll_now(gw: &TestGateway, id: &str) {
    let r = gw
        .api(Method::POST, &format!("/repositories/{id}/poll"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

/// Waits until the repository has been polled after `polls_before` polls.
async fn polled(gw: &TestGateway, id: &str, after: Option<&str>) -> Value {
    eventually(gw, &format!("/repositories/{id}"), |r| {
        r["poll"]["last_poll_at"]
            .as_str()
            .is_some_and(|t| after.is_none_or(|a| t > a))
    })
    .await
}

#[tokio::test]
async fn a_hundred_tags_make_a_hundred_webhooks_then_changes_and_deletes_follow() {
    let registry = registry().await;
    let client = RegistryClient::new(&registry.host(), None);
    let base = ImageLayout::new("base").unwrap();
    let digest = push_tags(&client, "team/app", &base, 100).await;

    // Pages of 40: the listing takes more than one page.
    let gw = crate::gateway_with(|c| c.poll.page_size = 40).await;
    let receiver = Receiver::start().await;
    let repo = remote(
        &gw,
        json!({"name": format!("{}/team/app", registry.host()), "kind": "remote", "insecure": true,
               "poll_interval_secs": 3600, "webhooks": [{"url": receiver.url("/h")}]}),
    )
    .await;
    assert_eq!(repo["registry"], registry.host());
    assert_eq!(repo["name"], "team/app");
    let id = repo["id"].as_str().unwrap().to_owned();

    let got = receiver.wait_for(100, WAIT).await;
    receiver.wait_quiet(Duration::from_millis(1000)).await;
    assert_eq!(
        receiver.requests().len(),
        100,
        "one webhook per tag, no more"
    );
    let tags: HashSet<String> = got
        .iter()
        .map(|r| r.json()["tag"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tags.len(), 100);
    for r in &got {
        let e = r.json();
        assert_eq!(e["type"], "image.pushed");
        assert_eq!(e["source"], "remote");
        assert_eq!(e["digest"], digest.as_str());
        assert_eq!(e["repository"]["registry"], registry.host());
    }
    let view = polled(&gw, &id, None).await;
    assert_eq!(view["poll"]["tags_known"], 100);
    assert_eq!(view["poll"]["synced"], true);
    assert!(view["poll"]["last_error"].is_null());
    assert!(view["poll"]["next_poll_at"].is_string());
    assert_eq!(
        get(&gw, &format!("/repositories/{id}/tags"))
            .await
            .as_array()
            .unwrap()
            .len(),
        100
    );
    let metrics = gw.metrics().await;
    let requests: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("callisto_poll_requests_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the request counter");
    // One HEAD per tag (no tag asked twice), plus a few pages of the list.
    assert!(
        (101..=103).contains(&requests),
        "{requests} registry requests for 100 tags"
    );

    // t005 re-pushed with another image: one event, with the previous digest.
    let other = ImageLayout::new("other").unwrap();
    client.push_image("team/app", "t005", &other).await.unwrap();
    let before = view["poll"]["last_poll_at"].as_str().unwrap().to_owned();
    poll_now(&gw, &id).await;
    let got = receiver.wait_for(101, WAIT).await;
    let e = got[100].json();
    assert_eq!(e["tag"], "t005");
    assert_eq!(e["digest"], other.manifest_digest());
    assert_eq!(e["previous_digest"], digest.as_str());
    let view = polled(&gw, &id, Some(&before)).await;

    // t005 deleted through the registry API: one image.deleted.
    client
        .delete_manifest("team/app", &other.manifest_digest())
        .await
        .unwrap();
    poll_now(&gw, &id).await;
    let got = receiver.wait_for(102, WAIT).await;
    let e = got[101].json();
    assert_eq!(e["type"], "image.deleted");
    assert_eq!(e["tag"], "t005");
    assert_eq!(e["digest"], other.manifest_digest());
    let before = view["poll"]["last_poll_at"].as_str().unwrap().to_owned();
    polled(&gw, &id, Some(&before)).await;
    // An unchanged poll makes nothing.
    let view = get(&gw, &format!("/repositories/{id}")).await;
    let before = view["poll"]["last_poll_at"].as_str().unwrap().to_owned();
    poll_now(&gw, &id).await;
    polled(&gw, &id, Some(&before)).await;
    receiver.wait_quiet(Duration::from_millis(700)).await;
    assert_eq!(receiver.requests().len(), 102);
}

#[tokio::test]
async fn silent_first_sync_then_later_changes_notify() {
    let registry = registry().await;
    let client = RegistryClient::new(&registry.host(), None);
    let layout = ImageLayout::new("quiet").unwrap();
    push_tags(&client, "team/quiet", &layout, 5).await;
    let gw = crate::gateway().await;
    let receiver = Receiver::start().await;
    let repo = remote(
        &gw,
        json!({"name": "team/quiet", "registry": registry.host(), "kind": "remote", "insecure": true,
               "initial_sync": "silent", "poll_interval_secs": 3600, "webhooks": [{"url": receiver.url("/h")}]}),
    )
    .await;
    let id = repo["id"].as_str().unwrap().to_owned();
    let view = polled(&gw, &id, None).await;
    assert_eq!(view["poll"]["tags_known"], 5, "learned");
    receiver.wait_quiet(Duration::from_millis(1000)).await;
    assert!(receiver.requests().is_empty(), "silent means silent");

    client
        .put_manifest("team/quiet", "t005", &layout)
        .await
        .unwrap();
    poll_now(&gw, &id).await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].json()["tag"], "t005");
}

#[tokio::test]
async fn tag_selection_keeps_unwanted_tags_out_of_polls_and_events() {
    let registry = registry().await;
    let client = RegistryClient::new(&registry.host(), None);
    let layout = ImageLayout::new("picky").unwrap();
    // t000..t011; wanted: t00*, not t000, and only the newest three.
    push_tags(&client, "team/picky", &layout, 12).await;
    let gw = crate::gateway().await;
    let receiver = Receiver::start().await;
    let repo = remote(
        &gw,
        json!({"name": "team/picky", "registry": registry.host(), "kind": "remote", "insecure": true,
               "tags": ["t00*"], "exclude_tags": ["t000"], "max_tags": 3,
               "poll_interval_secs": 3600, "webhooks": [{"url": receiver.url("/h")}]}),
    )
    .await;
    let id = repo["id"].as_str().unwrap().to_owned();
    let view = polled(&gw, &id, None).await;
    assert_eq!(view["poll"]["tags_known"], 3, "{view}");

    receiver.wait_for(3, WAIT).await;
    receiver.wait_quiet(Duration::from_millis(1000)).await;
    let mut tags: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.json()["tag"].as_str().unwrap().to_owned())
        .collect();
    tags.sort();
    assert_eq!(tags, ["t007", "t008", "t009"]);
    let known = get(&gw, &format!("/repositories/{id}/tags")).await;
    let mut known: Vec<&str> = known
        .as_array()
        .expect("a list of tags")
        .iter()
        .map(|t| t["tag"].as_str().unwrap())
        .collect();
    known.sort();
    assert_eq!(known, ["t007", "t008", "t009"]);

    // A change to a tag outside the selection makes no event.
    client
        .push_image("team/picky", "t010", &ImageLayout::new("other").unwrap())
        .await
        .unwrap();
    let before = view["poll"]["last_poll_at"].as_str().unwrap().to_owned();
    poll_now(&gw, &id).await;
    polled(&gw, &id, Some(&before)).await;
    receiver.wait_quiet(Duration::from_millis(1000)).await;
    assert_eq!(receiver.requests().len(), 3);
}

#[tokio::test]
async fn credentials_open_an_htpasswd_registry_and_their_absence_is_reported() {
    let registry = Registry::builder()
        .htpasswd("robot", "s3cret-pass")
        .start()
        .await
        .unwrap();
    let client = RegistryClient::new(&registry.host(), Some(("robot", "s3cret-pass")));
    let layout = ImageLayout::new("private").unwrap();
    push_tags(&client, "team/private", &layout, 3).await;
    let gw = crate::gateway().await;
    let receiver = Receiver::start().await;

    let anonymous = remote(
        &gw,
        json!({"name": "team/private", "registry": registry.host(), "kind": "remote", "insecure": true,
               "poll_interval_secs": 3600, "webhooks": [{"url": receiver.url("/anon")}]}),
    )
    .await;
    let view = polled(&gw, anonymous["id"].as_str().unwrap(), None).await;
    let error = view["poll"]["last_error"]
        .as_str()
        .expect("the poll error is shown");
    assert!(error.contains("credentials"), "{error}");
    assert_eq!(view["poll"]["consecutive_errors"], 1);
    assert_eq!(view["poll"]["tags_known"], 0);

    // A second remote repository for the same name needs another registry
    // spelling only in tests; the name clash is a conflict otherwise.
    let clash = gw
        .api(Method::POST, "/repositories")
        .json(&json!({"name": "team/private", "registry": registry.host(), "kind": "remote"}))
        .send()
        .await
        .unwrap();
    assert_eq!(clash.status(), StatusCode::CONFLICT);
    let (status, _) = (
        gw.api(
            Method::DELETE,
            &format!("/repositories/{}", anonymous["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap()
        .status(),
        (),
    );
    assert_eq!(status, StatusCode::NO_CONTENT);

    let authed = remote(
        &gw,
        json!({"name": "team/private", "registry": registry.host(), "kind": "remote", "insecure": true,
               "poll_interval_secs": 3600, "credentials": {"username": "robot", "password": "s3cret-pass"},
               "webhooks": [{"url": receiver.url("/authed")}]}),
    )
    .await;
    assert_eq!(authed["has_credentials"], true);
    assert!(!authed.to_string().contains("s3cret-pass"));
    receiver.wait_for(3, WAIT).await;
    receiver.wait_quiet(Duration::from_millis(500)).await;
    assert!(
        receiver.requests().iter().all(|r| r.path == "/authed"),
        "the anonymous repository made events"
    );
}

#[tokio::test]
async fn a_stopped_registry_is_an_error_with_backoff_and_polling_resumes_after() {
    let mut registry = registry().await;
    let client = RegistryClient::new(&registry.host(), None);
    let layout = ImageLayout::new("flaky").unwrap();
    push_tags(&client, "team/flaky", &layout, 2).await;
    let gw = crate::gateway_with(|c| c.poll.max_backoff_secs = 12).await;
    let receiver = Receiver::start().await;
    let repo = remote(
        &gw,
        json!({"name": "team/flaky", "registry": registry.host(), "kind": "remote", "insecure": true,
               "poll_interval_secs": 10, "webhooks": [{"url": receiver.url("/h")}]}),
    )
    .await;
    let id = repo["id"].as_str().unwrap().to_owned();
    receiver.wait_for(2, WAIT).await;

    registry.stop().await;
    poll_now(&gw, &id).await;
    let view = eventually(&gw, &format!("/repositories/{id}"), |r| {
        r["poll"]["consecutive_errors"] == 1
    })
    .await;
    let error = view["poll"]["last_error"].as_str().unwrap();
    assert!(error.contains("cannot reach the registry"), "{error}");
    // The next try is pushed back, not immediate.
    let next = view["poll"]["next_poll_at"].as_str().unwrap();
    let last = view["poll"]["last_poll_at"].as_str().unwrap();
    assert!(next > last);
    assert_eq!(view["poll"]["tags_known"], 2, "an error forgets nothing");

    registry.restart().await.unwrap();
    client
        .put_manifest("team/flaky", "t002", &layout)
        .await
        .unwrap();
    // No nudge: the scheduled retry finds the registry back and catches up.
    let got = receiver.wait_for(3, WAIT).await;
    assert_eq!(got[2].json()["tag"], "t002");
    let view = eventually(&gw, &format!("/repositories/{id}"), |r| {
        r["poll"]["consecutive_errors"] == 0
    })
    .await;
    assert!(view["poll"]["last_error"].is_null());
    assert_eq!(receiver.requests().len(), 3);
}

/// `kill -9` in the middle of a first sync: the sync is one transaction, so
/// after a restart it is done once, whole.
#[tokio::test]
async fn a_gateway_killed_during_a_first_sync_delivers_each_tag_exactly_once() {
    let registry = registry().await;
    let client = RegistryClient::new(&registry.host(), None);
    let layout = ImageLayout::new("killed").unwrap();
    push_tags(&client, "team/big", &layout, 100).await;

    let data = tempfile::tempdir().unwrap();
    let mut gw = GatewayProcess::start(
        Path::new(env!("CARGO_BIN_EXE_callisto-e2e")),
        &data.path().join("data"),
        &[
            (
                "CALLISTO_PLUGINS__CACHE_DIR",
                crate::shared_cache_dir().to_str().unwrap(),
            ),
            // Slow the first sync down: 2 requests per second after a burst.
            ("CALLISTO_POLL__REQUESTS_PER_MINUTE", "120"),
            ("CALLISTO_POLL__HEAD_CONCURRENCY", "1"),
        ],
    )
    .await;
    let receiver = Receiver::start().await;
    let http = callisto_tests::http();
    let created = http
        .post(format!("{}/api/v1/repositories", gw.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "team/big", "registry": registry.host(), "kind": "remote", "insecure": true,
                      "poll_interval_secs": 3600, "webhooks": [{"url": receiver.url("/h")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    tokio::time::sleep(Duration::from_secs(3)).await;
    gw.kill9().await;
    assert!(
        receiver.requests().is_empty(),
        "the kill came after the sync; the test proves nothing"
    );

    gw.set_env("CALLISTO_POLL__REQUESTS_PER_MINUTE", "6000");
    gw.restart().await;
    let got = receiver.wait_for(100, WAIT).await;
    receiver.wait_quiet(Duration::from_secs(2)).await;
    let requests = receiver.requests();
    let mut per_tag: HashMap<String, usize> = HashMap::new();
    for r in &requests {
        *per_tag
            .entry(r.json()["tag"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(got.len(), 100);
    assert_eq!(
        requests.len(),
        100,
        "doubled: {:?}",
        per_tag.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert_eq!(per_tag.len(), 100, "missing tags");
    gw.terminate().await;
}
