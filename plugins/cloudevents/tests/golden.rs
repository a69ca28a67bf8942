use callisto_plugin_cloudevents::CloudEvents;
use callisto_plugin_sdk::Plugin;
use callisto_plugin_sdk::testing::{self, assert_golden};

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
fn structured_mode_envelope() {
    let event = testing::pushed("demo/app", "v1");
    let request = CloudEvents::format(&event, &testing::webhook(&[])).unwrap();
    assert_eq!(request.content_type, "application/cloudevents+json");
    let body = request.body_json();
    for attr in [
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "subject",
        "datacontenttype",
        "data",
    ] {
        assert!(!body[attr].is_null(), "missing {attr}");
    }
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["id"], event.id);
    assert_eq!(body["type"], "io.callisto.image.pushed");
    assert_eq!(body["source"], "//127.0.0.1:5000/demo/app");
    assert_eq!(body["subject"], "v1");
    assert_eq!(
        body["data"],
        serde_json::from_slice::<serde_json::Value>(&event.to_json()).unwrap()
    );
    assert_golden(golden("pushed.http"), &request);
}

#[test]
fn deleted_and_source_override() {
    let request = CloudEvents::format(
        &testing::deleted("demo/app", "v1"),
        &testing::webhook(&[("source", "urn:callisto:prod")]),
    )
    .unwrap();
    let body = request.body_json();
    assert_eq!(body["type"], "io.callisto.image.deleted");
    assert_eq!(body["source"], "urn:callisto:prod");
    assert_golden(golden("deleted.http"), &request);
}
