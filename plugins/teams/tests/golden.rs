use callisto_plugin_sdk::Plugin;
use callisto_plugin_sdk::testing::{self, assert_golden};
use callisto_plugin_teams::Teams;

/// The golden files of this checkout, read where the test runs.
fn golden(name: &str) -> String {
    format!(
        "{}/tests/golden/{name}",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
    )
}

#[test]
fn an_adaptive_card_per_event() {
    let pushed = Teams::format(&testing::pushed("demo/app", "v1"), &testing::webhook(&[])).unwrap();
    let body = pushed.body_json();
    assert_eq!(body["type"], "message");
    let card = &body["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    assert_eq!(card["content"]["body"][1]["facts"][1]["value"], "v1");
    assert!(card["content"]["actions"].is_null());
    assert_golden(golden("pushed.http"), &pushed);
    let deleted = Teams::format(
        &testing::deleted("demo/app", "v1"),
        &testing::webhook(&[("link", "https://registry.example.com/demo/app")]),
    )
    .unwrap();
    assert_eq!(
        deleted.body_json()["attachments"][0]["content"]["actions"][0]["url"],
        "https://registry.example.com/demo/app"
    );
    assert_golden(golden("deleted.http"), &deleted);
    let test = Teams::format(&testing::webhook_test("demo/app"), &testing::webhook(&[])).unwrap();
    assert_golden(golden("webhook-test.http"), &test);
}
