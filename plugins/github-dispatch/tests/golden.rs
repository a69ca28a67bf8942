use callisto_plugin_github_dispatch::GithubDispatch;
use callisto_plugin_sdk::Plugin;
use callisto_plugin_sdk::testing::{self, assert_golden};

/// The golden files of this checkout, read where the test runs.
fn golden(name: &str) -> String {
    format!(
        "{}/tests/golden/{name}",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
    )
}

const TOKEN: (&str, &str) = ("token", "github_pat_0123456789abcdef");

#[test]
fn a_repository_dispatch_with_the_event_as_client_payload() {
    let pushed = GithubDispatch::format(
        &testing::pushed("demo/app", "v1"),
        &testing::webhook(&[TOKEN]),
    )
    .unwrap();
    assert_eq!(
        pushed.header_value("authorization"),
        Some("Bearer github_pat_0123456789abcdef")
    );
    assert_eq!(
        pushed.header_value("x-github-api-version"),
        Some("2022-11-28")
    );
    let body = pushed.body_json();
    assert_eq!(body["event_type"], "image-pushed");
    assert_eq!(body["client_payload"]["tag"], "v1");
    assert!(
        body["client_payload"].as_object().unwrap().len() <= 10,
        "GitHub's limit"
    );
    assert_golden(golden("pushed.http"), &pushed);
    let deleted = GithubDispatch::format(
        &testing::deleted("demo/app", "v1"),
        &testing::webhook(&[TOKEN, ("event_type", "deploy")]),
    )
    .unwrap();
    assert_eq!(deleted.body_json()["event_type"], "deploy");
    assert_golden(golden("deleted.http"), &deleted);
}

#[test]
fn the_token_is_required_and_event_type_bounded() {
    let none = testing::webhook(&[]).config;
    assert!(
        GithubDispatch::validate_config(&none)
            .unwrap_err()
            .contains("token")
    );
    let long = "x".repeat(101);
    let bad = testing::webhook(&[TOKEN, ("event_type", long.as_str())]).config;
    assert!(
        GithubDispatch::validate_config(&bad)
            .unwrap_err()
            .contains("event_type")
    );
    assert_eq!(
        GithubDispatch::validate_config(&testing::webhook(&[TOKEN]).config),
        Ok(())
    );
}
