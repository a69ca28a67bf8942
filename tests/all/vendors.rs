//! `POST /ingest/{harbor,dockerhub,quay,github,cloudevents}` with each
//! vendor's own payloads (`tests/fixtures/<vendor>`), against the real
//! gateway; Docker Hub's confirmation against a real `docker-registry`.

use callisto::test_util::TestGateway;
use callisto_tests::oci::{ImageLayout, RegistryClient};
use callisto_tests::registry::Registry;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sha2::Sha256;

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(path),
    )
    .unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

pub async fn events(gw: &TestGateway) -> Vec<Value> {
    let page: Value = gw
        .api(Method::GET, "/events")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().clone()
}

async fn answer(r: reqwest::Result<reqwest::Response>) -> (StatusCode, Value) {
    let r = r.expect("the gateway answers");
    let status = r.status();
    (status, r.json().await.expect("answers are JSON"))
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={:x}", mac.finalize().into_bytes())
}

#[tokio::test]
async fn harbor_in_both_formats_is_recorded_once_per_push() {
    let gw = crate::gateway().await;
    let post = |body: Vec<u8>, auth: Option<String>| {
        let mut r = gw
            .http
            .post(format!("{}/ingest/harbor", gw.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(auth) = auth {
            r = r.header("authorization", auth);
        }
        r.send()
    };
    let bearer = Some(format!("Bearer {}", gw.ingest_token));
    let (status, body) =
        answer(post(fixture("harbor/default-push-artifact.json"), None).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let (status, first) =
        answer(post(fixture("harbor/default-push-artifact.json"), bearer.clone()).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["events"].as_array().unwrap().len(), 1);
    // Harbor retries with the same payload.
    let (_, again) =
        answer(post(fixture("harbor/default-push-artifact.json"), bearer.clone()).await).await;
    assert_eq!(again["duplicates"], 1);
    // The same push told in the CloudEvents format (another policy) is
    // not news: one identity per (repository, tag, digest).
    let (_, ce) = answer(
        post(
            fixture("harbor/cloudevents-push-artifact.json"),
            bearer.clone(),
        )
        .await,
    )
    .await;
    assert_eq!(ce["events"].as_array().unwrap().len(), 0, "{ce}");
    let (_, pulled) = answer(
        post(
            fixture("harbor/cloudevents-pull-artifact.json"),
            bearer.clone(),
        )
        .await,
    )
    .await;
    assert_eq!(pulled["ignored"], 1);

    let (status, deleted) = answer(
        post(
            fixture("harbor/default-delete-artifact.json"),
            bearer.clone(),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{deleted}");
    let events = events(&gw).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["type"], "image.pushed");
    assert_eq!(events[1]["source"], "harbor");
    assert_eq!(events[1]["repository"]["name"], "library/busybox");
    assert_eq!(events[1]["tag"], "1.36");
    assert_eq!(events[1]["actor"], "admin");
    assert_eq!(events[0]["type"], "image.deleted");
    assert_eq!(events[0]["tag"], "1.36");

    let (status, bad) = answer(post(b"{\"type\":1}".to_vec(), bearer).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        bad["error"]["message"].as_str().unwrap().contains("Harbor"),
        "{bad}"
    );
}

#[tokio::test]
async fn harbors_own_auth_header_is_compared_whole() {
    let gw = crate::gateway_with(|c| {
        c.ingest.harbor_auth_header = Some("Basic aGFyYm9yOnMzY3JldC1oYXJib3ItaGVhZGVy".into())
    })
    .await;
    let post = |auth: &str| {
        gw.http
            .post(format!("{}/ingest/harbor", gw.url))
            .header("authorization", auth)
            .body(fixture("harbor/default-push-artifact.json"))
            .send()
    };
    let bearer = format!("Bearer {}", gw.ingest_token);
    assert_eq!(
        post(&bearer).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post("Basic aGFyYm9yOnMzY3JldC1oYXJib3ItaGVhZGVy")
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn docker_hub_carries_its_token_in_the_url() {
    let gw = crate::gateway().await;
    let post = |query: &str, body: Vec<u8>| {
        gw.http
            .post(format!("{}/ingest/dockerhub{query}", gw.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let (status, _) = answer(post("", fixture("dockerhub/push.json")).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = answer(
        post(
            "?token=wrong-wrong-wrong-wrong",
            fixture("dockerhub/push.json"),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let query = format!("?token={}", gw.ingest_token);
    let (status, first) = answer(post(&query, fixture("dockerhub/push.json")).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    // The older form of the same delivery (the time as a float) is a resend.
    let (_, again) = answer(post(&query, fixture("dockerhub/push-legacy.json")).await).await;
    assert_eq!(again["duplicates"], 1, "{again}");
    let events = events(&gw).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["source"], "dockerhub");
    assert_eq!(events[0]["repository"]["name"], "svendowideit/testhook");
    assert_eq!(events[0]["repository"]["registry"], "registry-1.docker.io");
    assert_eq!(events[0]["tag"], "latest");
    assert!(events[0]["digest"].is_null());
    let (status, bad) = answer(post(&query, b"[]".to_vec()).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
}

#[tokio::test]
async fn docker_hub_pushes_are_confirmed_with_the_registry_when_asked() {
    let registry = Registry::builder()
        .start()
        .await
        .expect("docker-registry starts");
    let layout = ImageLayout::new("hub").unwrap();
    RegistryClient::new(&registry.host(), None)
        .push_image("svendowideit/testhook", "latest", &layout)
        .await
        .unwrap();
    let url = registry.url();
    let gw = crate::gateway_with(move |c| {
        c.ingest.dockerhub.registry = Some(url);
        c.ingest.dockerhub.verify = true;
    })
    .await;
    let post = |body: Vec<u8>| {
        gw.http
            .post(format!(
                "{}/ingest/dockerhub?token={}",
                gw.url, gw.ingest_token
            ))
            .body(body)
            .send()
    };
    let (status, body) = answer(post(fixture("dockerhub/push.json")).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let events = events(&gw).await;
    assert_eq!(events[0]["digest"], layout.manifest_digest());
    assert_eq!(events[0]["repository"]["registry"], registry.host());

    // A tag the registry does not have is not believed.
    let forged = String::from_utf8(fixture("dockerhub/push.json"))
        .unwrap()
        .replace("\"tag\": \"latest\"", "\"tag\": \"v9\"");
    let (status, body) = answer(post(forged.into_bytes()).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "not_in_registry");
    assert_eq!(crate::vendors::events(&gw).await.len(), 1);
}

#[tokio::test]
async fn quay_announces_every_updated_tag() {
    let gw = crate::gateway().await;
    let r = gw
        .http
        .post(format!("{}/ingest/quay?token={}", gw.url, gw.ingest_token))
        .header("content-type", "application/json")
        .body(fixture("quay/repo-push-sample.json"))
        .send()
        .await;
    let (status, body) = answer(r).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 2);
    let events = events(&gw).await;
    assert!(events.iter().all(|e| e["source"] == "quay"));
    assert!(
        events
            .iter()
            .all(|e| e["repository"]["name"] == "devtable/simple")
    );
    let r = gw
        .http
        .post(format!("{}/ingest/quay", gw.url))
        .body(fixture("quay/repo-push.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn github_is_verified_by_its_signature_and_deduplicated_by_delivery() {
    let gw = crate::gateway().await;
    let body = fixture("github/registry_package-published-tagged.json");
    let post = |event: &str, delivery: &str, signature: String, body: Vec<u8>| {
        gw.http
            .post(format!("{}/ingest/github", gw.url))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
    };
    let (status, _) = answer(
        post(
            "registry_package",
            "d1",
            sign("not-the-secret-at-all", &body),
            body.clone(),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let good = sign(&gw.ingest_token, &body);
    let (status, first) =
        answer(post("registry_package", "d1", good.clone(), body.clone()).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["events"].as_array().unwrap().len(), 1);
    // A redelivery from GitHub's UI keeps its delivery id.
    let (_, again) = answer(post("registry_package", "d1", good, body.clone()).await).await;
    assert_eq!(again["duplicates"], 1);
    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#.to_vec();
    let (status, pong) =
        answer(post("ping", "d2", sign(&gw.ingest_token, &ping), ping).await).await;
    assert_eq!(
        (status, pong["ignored"].clone()),
        (StatusCode::ACCEPTED, 1.into())
    );

    let events = events(&gw).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["source"], "github");
    assert_eq!(events[0]["repository"]["name"], "codertocat/hello-world");
    assert_eq!(events[0]["repository"]["registry"], "ghcr.io");
    assert_eq!(events[0]["tag"], "v1.2.0");

    let r = gw
        .http
        .post(format!("{}/ingest/github", gw.url))
        .header("x-hub-signature-256", sign(&gw.ingest_token, &body))
        .header("x-github-delivery", "d3")
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, err) = answer(Ok(r)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-GitHub-Event")
    );
}

#[tokio::test]
async fn zot_cloudevents_in_binary_and_structured_mode() {
    let gw = crate::gateway().await;
    let headers: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&fixture("zot/image-updated.binary.headers.json")).unwrap();
    let mut binary = gw
        .http
        .post(format!("{}/ingest/cloudevents", gw.url))
        .bearer_auth(&gw.ingest_token)
        .body(fixture("zot/image-updated.binary.body.json"));
    for (k, v) in &headers {
        binary = binary.header(k, v);
    }
    let (status, body) = answer(binary.send().await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 1);

    // Zot with a username and password: the password is the ingest token.
    let structured = gw
        .http
        .post(format!("{}/ingest/cloudevents", gw.url))
        .basic_auth("zot", Some(&gw.ingest_token))
        .header("content-type", "application/cloudevents+json")
        .body(fixture("zot/image-deleted.structured.json"))
        .send()
        .await
        .unwrap();
    let (status, body) = answer(Ok(structured)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    let events = events(&gw).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["source"], "zot");
    assert_eq!(events[1]["type"], "image.pushed");
    assert_eq!(events[1]["repository"]["name"], "golang");
    assert_eq!(events[1]["tag"], "1.23");
    assert_eq!(events[1]["actor"], "alice");
    assert_eq!(events[0]["type"], "image.deleted");

    // Neither mode.
    let r = gw
        .http
        .post(format!("{}/ingest/cloudevents", gw.url))
        .bearer_auth(&gw.ingest_token)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, err) = answer(Ok(r)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ce-specversion")
    );
    let r = gw
        .http
        .post(format!("{}/ingest/cloudevents", gw.url))
        .header("content-type", "application/cloudevents+json")
        .body(fixture("zot/image-deleted.structured.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
