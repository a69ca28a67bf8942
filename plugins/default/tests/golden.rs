use callisto_plugin_default::DefaultPlugin;
use callisto_plugin_sdk::testing::{self, assert_golden};
use callisto_plugin_sdk::{EventType, Plugin};

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
fn pushed() {
    let mut event = testing::pushed("demo/app", "v1");
    event.previous_digest =
        Some("sha256:1111111111111111111111111111111111111111111111111111111111111111".into());
    let request = DefaultPlugin::format(&event, &testing::webhook(&[])).unwrap();
    assert_golden(golden("pushed.http"), &request);
    // The body is the event's own JSON, with every field present.
    let body = request.body_json();
    assert_eq!(body["type"], "image.pushed");
    assert_eq!(body["occurred_at"], "2026-11-28T20:25:52Z");
    assert!(body["actor"].is_null());
}

#[test]
fn deleted() {
    let event = testing::deleted("demo/app", "v1");
    let request = DefaultPlugin::format(&event, &testing::webhook(&[])).unwrap();
    assert_golden(golden("deleted.http"), &request);
}

#[test]
fn honours_standard_filter_keys() {
    let webhook = testing::webhook(&[("tags", "v*")]);
    assert!(DefaultPlugin::filter(
        &testing::pushed("demo/app", "v2"),
        &webhook
    ));
    assert!(!DefaultPlugin::filter(
        &testing::pushed("demo/app", "latest"),
        &webhook
    ));
    let test = testing::webhook_test("demo/app");
    assert_eq!(test.kind, EventType::WebhookTest);
    assert!(DefaultPlugin::filter(&test, &webhook));
}

#[test]
fn refuses_unknown_keys() {
    let config = testing::webhook(&[("channel", "#x")]).config;
    let err = DefaultPlugin::validate_config(&config).unwrap_err();
    assert!(err.contains("unknown config key `channel`"), "{err}");
}
