use callisto_plugin_sdk::Plugin;
use callisto_plugin_sdk::testing::{self, assert_golden};
use callisto_plugin_slack::Slack;

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
fn pushed_names_repository_tag_digest_and_registry() {
    let event = testing::pushed("demo/app", "v1");
    let request = Slack::format(&event, &testing::webhook(&[])).unwrap();
    let body = request.body_json();
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("demo/app:v1"), "{text}");
    assert!(text.contains("127.0.0.1:5000"), "{text}");
    let blocks = body["blocks"].to_string();
    assert!(blocks.contains("a2293004e164"), "{blocks}");
    assert_golden(golden("pushed.http"), &request);
}

#[test]
fn deleted_and_test() {
    let deleted =
        Slack::format(&testing::deleted("demo/app", "v1"), &testing::webhook(&[])).unwrap();
    assert_golden(golden("deleted.http"), &deleted);
    let test = Slack::format(
        &testing::webhook_test("demo/app"),
        &testing::webhook(&[("username", "callisto")]),
    )
    .unwrap();
    assert_eq!(test.body_json()["username"], "callisto");
    assert_golden(golden("webhook-test.http"), &test);
}

#[test]
fn accepts_its_own_keys_and_refuses_others() {
    let ok = testing::webhook(&[("channel", "#deploys"), ("tags", "v*")]).config;
    assert_eq!(Slack::validate_config(&ok), Ok(()));
    let bad = testing::webhook(&[("chanel", "#deploys")]).config;
    assert!(
        Slack::validate_config(&bad)
            .unwrap_err()
            .contains("`chanel`")
    );
}
