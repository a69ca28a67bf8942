//! `POST /ingest/distribution` with the envelopes a real registry sent
//! (`tests/fixtures/distribution`), against the real gateway.

use callisto::test_util::TestGateway;
use reqwest::{Method, StatusCode};
use serde_json::Value;

const PUSH: &str = include_str!("../fixtures/distribution/push-manifest-tag-v1.json");
const BLOB: &str = include_str!("../fixtures/distribution/push-blob.json");
const PULL: &str = include_str!("../fixtures/distribution/pull-manifest-get.json");
const CONTENT_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

async fn post(
    gw: &TestGateway,
    body: impl Into<reqwest::Body>,
    token: Option<&str>,
    ct: &str,
) -> reqwest::Response {
    let mut req = gw
        .http
        .post(format!("{}/ingest/distribution", gw.url))
        .header("content-type", ct)
        .body(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap()
}

async fn error_code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.expect("errors are JSON");
    (
        status,
        body["error"]["code"]
            .as_str()
            .expect("error.code")
            .to_owned(),
    )
}

async fn events(gw: &TestGateway) -> Vec<Value> {
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

#[tokio::test]
async fn a_pushed_tag_becomes_one_event_even_when_resent() {
    let gw = crate::gateway().await;
    let token = gw.ingest_token.clone();
    let first = post(&gw, PUSH, Some(&token), CONTENT_TYPE).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["events"].as_array().unwrap().len(), 1);

    // The registry resends after a timeout, with the same event id.
    let again: Value = post(&gw, PUSH, Some(&token), CONTENT_TYPE)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["events"].as_array().unwrap().len(), 0);
    assert_eq!(again["duplicates"], 1);

    let events = events(&gw).await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["id"], first["events"][0]);
    assert_eq!(e["type"], "image.pushed");
    assert_eq!(e["source"], "local");
    assert_eq!(e["repository"]["name"], "demo/app");
    assert_eq!(e["repository"]["registry"], "127.0.0.1:5000");
    assert_eq!(e["tag"], "v1");
    assert_eq!(
        e["digest"],
        "sha256:a2293004e1641d49c7d7341229010c763ee4bf9d76adb835fcc8c8ba3af87582"
    );
    assert_eq!(
        e["media_type"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(e["size"], 401);
    assert_eq!(e["occurred_at"], "2026-11-28T20:25:52Z");
    assert!(e["previous_digest"].is_null());

    // The repository was created as a local one, as a registry would.
    let repos: Value = gw
        .api(Method::GET, "/repositories")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(repos.as_array().unwrap().len(), 1);
    assert_eq!(repos[0]["name"], "demo/app");
    assert_eq!(repos[0]["kind"], "local");
    let tags: Value = gw
        .api(
            Method::GET,
            &format!("/repositories/{}/tags", repos[0]["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags[0]["tag"], "v1");
}

#[tokio::test]
async fn blobs_and_pulls_are_acknowledged_and_ignored() {
    let gw = crate::gateway().await;
    for body in [BLOB, PULL] {
        let r = post(&gw, body, Some(&gw.ingest_token), CONTENT_TYPE).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let r: Value = r.json().await.unwrap();
        assert_eq!(r["ignored"], 1);
    }
    assert!(events(&gw).await.is_empty());
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("callisto_ingest_ignored_total{reason=\"blob_push\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("callisto_ingest_ignored_total{reason=\"pull\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_new_digest_for_a_known_tag_carries_the_previous_one() {
    let gw = crate::gateway().await;
    post(&gw, PUSH, Some(&gw.ingest_token), CONTENT_TYPE).await;
    let repush = PUSH
        .replace(
            "20337bb7-412d-48f2-a1cc-b3747b9596dc",
            "20337bb7-412d-48f2-a1cc-b3747b9596dd",
        )
        .replace(
            "a2293004e1641d49c7d7341229010c763ee4bf9d76adb835fcc8c8ba3af87582",
            "1111111111111111111111111111111111111111111111111111111111111111",
        );
    post(&gw, repush, Some(&gw.ingest_token), CONTENT_TYPE).await;
    let events = events(&gw).await;
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0]["digest"],
        "sha256:1111111111111111111111111111111111111111111111111111111111111111"
    );
    assert_eq!(
        events[0]["previous_digest"],
        "sha256:a2293004e1641d49c7d7341229010c763ee4bf9d76adb835fcc8c8ba3af87582"
    );

    // Deleting the manifest by digest deletes the tag that pointed to it.
    let delete = r#"{"events":[{"id":"del-1","timestamp":"2026-11-28T21:00:00Z","action":"delete",
        "target":{"repository":"demo/app","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111"},
        "request":{"host":"127.0.0.1:5000"}}]}"#;
    let r = post(&gw, delete, Some(&gw.ingest_token), CONTENT_TYPE).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let events = crate::ingest::events(&gw).await;
    assert_eq!(events[0]["type"], "image.deleted");
    assert_eq!(events[0]["tag"], "v1");
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let gw = crate::gateway().await;
    let token = gw.ingest_token.clone();
    assert_eq!(
        error_code(post(&gw, PUSH, None, CONTENT_TYPE).await).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    assert_eq!(
        error_code(post(&gw, PUSH, Some("wrong-token-wrong-token"), CONTENT_TYPE).await).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    assert_eq!(
        error_code(post(&gw, PUSH, Some(&gw.admin_token), CONTENT_TYPE).await)
            .await
            .0,
        StatusCode::UNAUTHORIZED,
        "the admin token is not the ingest token"
    );
    assert_eq!(
        error_code(post(&gw, "{not json", Some(&token), CONTENT_TYPE).await).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
    assert_eq!(
        error_code(post(&gw, r#"{"events": {"id": 1}}"#, Some(&token), CONTENT_TYPE).await).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
    assert_eq!(
        error_code(
            post(
                &gw,
                r#"{"events": [{"id": "x", "action": "push"}]}"#,
                Some(&token),
                CONTENT_TYPE
            )
            .await
        )
        .await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
    let huge = format!(r#"{{"events": [], "pad": "{}"}}"#, "x".repeat(1 << 20));
    assert_eq!(
        error_code(post(&gw, huge, Some(&token), CONTENT_TYPE).await).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into())
    );
    assert_eq!(
        error_code(post(&gw, PUSH, Some(&token), "text/plain").await).await,
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type".into()
        )
    );
    assert!(events(&gw).await.is_empty());
    // All three content types a registry may use are accepted.
    for ct in [
        CONTENT_TYPE,
        "application/vnd.docker.distribution.events.v2+json",
        "application/json",
    ] {
        assert_eq!(
            post(&gw, BLOB, Some(&token), ct).await.status(),
            StatusCode::ACCEPTED,
            "{ct}"
        );
    }
}
