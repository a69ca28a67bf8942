use callisto_plugin_sdk::Plugin;
use callisto_plugin_sdk::testing::{self, assert_golden};
use callisto_plugin_template::Template;

/// The golden files of this checkout, read where the test runs.
fn golden(name: &str) -> String {
    format!(
        "{}/tests/golden/{name}",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
    )
}

#[test]
fn a_json_template_escapes_values_and_may_embed_the_event() {
    let webhook = testing::webhook(&[(
        "template",
        r#"{"text": "{{image}} {{ type }} by {{actor}}", "tag": "{{tag}}", "digest": "{{short_digest}}", "event": {{event}}}"#,
    )]);
    let mut event = testing::pushed("demo/app", "v1");
    event.actor = Some("a \"quoted\" name".into());
    let request = testing::run::<Template>(&event, &webhook).unwrap().unwrap();
    let body = request.body_json();
    assert_eq!(
        body["text"],
        "127.0.0.1:5000/demo/app:v1 image.pushed by a \"quoted\" name"
    );
    assert_eq!(body["event"]["id"], event.id.as_str());
    assert_golden(golden("pushed.http"), &request);
}

#[test]
fn a_text_template_goes_in_as_it_is() {
    let webhook = testing::webhook(&[
        ("template", "{{repository}}:{{tag}} {{type}}\n"),
        ("content_type", "text/plain; charset=utf-8"),
    ]);
    let request = testing::run::<Template>(&testing::deleted("demo/app", "v1"), &webhook)
        .unwrap()
        .unwrap();
    assert_eq!(request.body_str(), "demo/app:v1 image.deleted\n");
    assert_golden(golden("deleted.http"), &request);
}

#[test]
fn mistakes_are_named_when_the_webhook_is_saved() {
    let unknown = testing::webhook(&[("template", "{{tga}}")]).config;
    assert!(
        Template::validate_config(&unknown)
            .unwrap_err()
            .contains("`{{tga}}`")
    );
    let not_json = testing::webhook(&[("template", "tag {{tag}}")]).config;
    assert!(
        Template::validate_config(&not_json)
            .unwrap_err()
            .contains("JSON")
    );
    let open = testing::webhook(&[("template", "{\"a\": \"{{tag\"}")]).config;
    assert!(
        Template::validate_config(&open)
            .unwrap_err()
            .contains("never closed")
    );
    let missing = testing::webhook(&[]).config;
    assert!(
        Template::validate_config(&missing)
            .unwrap_err()
            .contains("template")
    );
}
