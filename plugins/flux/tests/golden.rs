use callisto_plugin_flux::Flux;
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
fn pushes_call_the_receiver_deletions_do_not() {
    let webhook = testing::webhook(&[]);
    let pushed = testing::run::<Flux>(&testing::pushed("demo/app", "v1"), &webhook)
        .unwrap()
        .expect("a push calls the Receiver");
    assert_eq!(pushed.body_json()["image"], "127.0.0.1:5000/demo/app:v1");
    assert_golden(golden("pushed.http"), &pushed);
    assert!(
        testing::run::<Flux>(&testing::deleted("demo/app", "v1"), &webhook)
            .unwrap()
            .is_none()
    );
    // The standard keys still apply.
    let only_v = testing::webhook(&[("tags", "v*")]);
    assert!(
        testing::run::<Flux>(&testing::pushed("demo/app", "latest"), &only_v)
            .unwrap()
            .is_none()
    );
    let test = Flux::format(&testing::webhook_test("demo/app"), &webhook).unwrap();
    assert_golden(golden("webhook-test.http"), &test);
}
