use callisto_plugin_discord::Discord;
use callisto_plugin_sdk::Plugin;
use callisto_plugin_sdk::testing::{self, assert_golden};

/// The golden files of this checkout, read where the test runs.
fn golden(name: &str) -> String {
    format!(
        "{}/tests/golden/{name}",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
    )
}

#[test]
fn pushed_deleted_and_test() {
    let pushed =
        Discord::format(&testing::pushed("demo/app", "v1"), &testing::webhook(&[])).unwrap();
    let body = pushed.body_json();
    assert_eq!(body["content"], "`127.0.0.1:5000/demo/app:v1` pushed");
    assert_eq!(body["embeds"][0]["color"], 0x2e_cc71);
    assert_eq!(body["allowed_mentions"]["parse"], serde_json::json!([]));
    assert_golden(golden("pushed.http"), &pushed);
    let deleted =
        Discord::format(&testing::deleted("demo/app", "v1"), &testing::webhook(&[])).unwrap();
    assert_golden(golden("deleted.http"), &deleted);
    let test = Discord::format(
        &testing::webhook_test("demo/app"),
        &testing::webhook(&[
            ("username", "Callisto"),
            ("avatar_url", "https://example.com/a.png"),
        ]),
    )
    .unwrap();
    assert_eq!(test.body_json()["username"], "Callisto");
    assert_golden(golden("webhook-test.http"), &test);
}

#[test]
fn refuses_unknown_keys() {
    let bad = testing::webhook(&[("user_name", "x")]).config;
    assert!(
        Discord::validate_config(&bad)
            .unwrap_err()
            .contains("`user_name`")
    );
}
