//! `callisto store verify` on the real binary: against a running gateway,
//! an intact store, and a store with a damaged record.

use std::path::Path;
use std::process::Output;

use callisto_tests::gateway::{ADMIN_TOKEN, GatewayProcess, INGEST_TOKEN};
use sha2::Digest;

use crate::delivery::push_envelope;

const BIN: &str = env!("CARGO_BIN_EXE_callisto-e2e");

/// Runs the CLI without blocking the test's runtime.
async fn cli(args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("CALLISTO_DATA_DIR")
        .env_remove("CALLISTO_CONFIG")
        .env_remove("CALLISTO_URL")
        .env_remove("CALLISTO_ADMIN_TOKEN")
        .output()
        .await
        .expect("run the CLI")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn digest(path: &Path) -> Vec<u8> {
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

async fn start(data: &Path) -> GatewayProcess {
    GatewayProcess::start(
        Path::new(BIN),
        data,
        &[(
            "CALLISTO_PLUGINS__CACHE_DIR",
            crate::shared_cache_dir().to_str().unwrap(),
        )],
    )
    .await
}

async fn post_event(gw: &GatewayProcess, tag: &str) {
    let r = callisto_tests::http()
        .post(format!("{}/ingest/distribution", gw.url))
        .bearer_auth(INGEST_TOKEN)
        .header("content-type", "application/json")
        .body(push_envelope(tag))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn verify_checks_every_record_names_a_damaged_table_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut gw = start(&dir).await;
    let marker = "/verify-marker-0123456789abcdef";
    let created = callisto_tests::http()
        .post(format!("{}/api/v1/repositories", gw.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"name": "demo/app", "webhooks": [
            {"url": format!("http://127.0.0.1:9{marker}"), "enabled": false}
        ]}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    for i in 0..20 {
        post_event(&gw, &format!("v{i}")).await;
    }
    let dir_arg = dir.to_str().unwrap();

    // A running gateway holds the file: refused, saying what to do instead.
    let out = cli(&["store", "verify", "--data-dir", dir_arg]).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is open in a running gateway") && stderr.contains("callisto store backup"),
        "{stderr}"
    );

    gw.terminate().await;
    let file = dir.join("callisto.redb");
    let out = cli(&["store", "verify", "--data-dir", dir_arg]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("intact"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["events", "20", "ok"]),
        "{stdout}"
    );

    // Break the webhook's record: its URL is no longer UTF-8. Every copy
    // of the page is hit, live or not.
    let mut bytes = std::fs::read(&file).unwrap();
    let mut hits = 0;
    let mut at = 0;
    while let Some(i) = bytes[at..]
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
    {
        bytes[at + i..at + i + marker.len()].fill(0xff);
        at += i + marker.len();
        hits += 1;
    }
    assert!(hits > 0, "the webhook's URL is not in the file");
    std::fs::write(&file, &bytes).unwrap();
    let before = digest(&file);

    let out = cli(&["store", "verify", "--data-dir", dir_arg]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("webhooks") && l.contains("DAMAGED")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["events", "20", "ok"]),
        "the other tables are still checked: {stdout}"
    );
    assert!(
        stderr.contains("is damaged in one table (webhooks)") && stderr.contains("restore"),
        "{stderr}"
    );
    assert!(digest(&file) == before, "verify modified the file");

    // The same check of a file named directly (a backup, say).
    let out = cli(&["store", "verify", file.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = cli(&[
        "store",
        "verify",
        tmp.path().join("nope.redb").to_str().unwrap(),
    ])
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("there is no such file"), "{stderr}");
}
