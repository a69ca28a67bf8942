//! A property-based run over the OpenAPI document (schemathesis): generated
//! requests for every documented operation, checked for 5xx and for answers
//! that break the document's own schemas, status codes or content types.

use std::path::Path;
use std::process::Command;

use callisto_tests::gateway::{ADMIN_TOKEN, GatewayProcess};
use serde_json::json;

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let version = Command::new("schemathesis").arg("--version").output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "schemathesis is not installed: `pip install schemathesis` (./tests/run does it)"
    );
    let data = tempfile::tempdir().unwrap();
    let gw = GatewayProcess::start(
        Path::new(env!("CARGO_BIN_EXE_callisto-e2e")),
        &data.path().join("data"),
        &[(
            "CALLISTO_PLUGINS__CACHE_DIR",
            crate::shared_cache_dir().to_str().unwrap(),
        )],
    )
    .await;
    // Something to find, so that reads do not all answer 404.
    let http = callisto_tests::http();
    let created = http
        .post(format!("{}/api/v1/repositories", gw.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "demo/app", "webhooks": [{"url": "http://127.0.0.1:9/unreachable"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let url = gw.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("schemathesis")
            .args(["run", &format!("{url}/api/v1/openapi.json")])
            .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
            .args([
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance,response_headers_conformance",
            ])
            // A component upload is not something schemathesis can generate.
            .args(["--exclude-method", "PUT"])
            .args(["--max-examples", "20", "--workers", "2", "--max-time", "60"])
            .args(["--seed", "20261128"])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .output()
            .expect("run schemathesis")
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    assert!(report.contains("passed"), "{report}");
}
