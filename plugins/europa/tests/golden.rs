use callisto_plugin_europa::Europa;
use callisto_plugin_sdk::testing::{self, assert_golden};
use callisto_plugin_sdk::{EventSource, Plugin, SignatureScheme};

/// The golden files of this checkout, read where the test runs: a test
/// binary built in another checkout sharing the target directory must not
/// compare against that one's files.
fn golden(name: &str) -> String {
    format!(
        "{}/tests/golden/{name}",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
    )
}

#[test]
fn pushed_body_is_byte_for_byte_the_europa_payload() {
    let event = testing::pushed("demo/app", "v1");
    let request = Europa::format(&event, &testing::webhook(&[])).unwrap();
    assert_eq!(
        request.body_str(),
        r#"{"event":"DockerImagePush","image":{"tags":["v1"],"sha":"sha256:a2293004e1641d49c7d7341229010c763ee4bf9d76adb835fcc8c8ba3af87582","size":null,"pushed":"2026-11-28T20:25:52.778Z"},"repository":{"name":"demo/app","region":"","provider":"EUROPA"}}"#
    );
    assert_eq!(request.content_type, "application/json");
    assert_eq!(
        request.header_value("x-europa-event"),
        Some("DockerImagePush")
    );
    assert!(request.header_value("x-europa-event-id").is_some());
    assert_eq!(request.signature, SignatureScheme::Europa);
    assert_golden(golden("pushed.http"), &request);
}

#[test]
fn a_delete_still_says_push_with_a_null_sha() {
    let event = testing::deleted("demo/app", "v1");
    let request = Europa::format(&event, &testing::webhook(&[])).unwrap();
    let body = request.body_json();
    assert_eq!(body["event"], "DockerImagePush");
    assert!(body["image"]["sha"].is_null());
    assert_eq!(body["image"]["tags"][0], "v1");
    assert_golden(golden("deleted.http"), &request);
}

#[test]
fn remote_provider_is_dockerhub_or_private() {
    let mut event = testing::pushed("library/alpine", "3.20");
    event.source = EventSource::Remote;
    event.repository.registry = Some("registry-1.docker.io".into());
    let hub = Europa::format(&event, &testing::webhook(&[])).unwrap();
    assert_eq!(hub.body_json()["repository"]["provider"], "DOCKERHUB");
    assert_golden(golden("remote-dockerhub.http"), &hub);

    event.repository.registry = Some("ghcr.io".into());
    let private = Europa::format(&event, &testing::webhook(&[])).unwrap();
    assert_eq!(private.body_json()["repository"]["provider"], "PRIVATE");
}

#[test]
fn event_id_header_differs_per_webhook() {
    let event = testing::pushed("demo/app", "v1");
    let mut other = testing::webhook(&[]);
    other.id = "wh_other".into();
    let a = Europa::format(&event, &testing::webhook(&[])).unwrap();
    let b = Europa::format(&event, &other).unwrap();
    assert_ne!(
        a.header_value("x-europa-event-id"),
        b.header_value("x-europa-event-id")
    );
}
