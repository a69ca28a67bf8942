//! `callisto store verify|backup|restore` on the real binary: verify
//! against a running gateway, an intact store and a damaged record; a
//! backup of a running gateway taken while it ingests, restored into a new
//! data directory, served by a new gateway with every event, webhook and
//! delivery, and secrets that still sign.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use callisto::api::events::EventQuery;
use callisto::api::webhooks::DeliveryQuery;
use callisto::client::Client;
use callisto::event::Event;
use callisto::test_util::TestGateway;
use callisto_tests::gateway::{ADMIN_TOKEN, GatewayProcess, INGEST_TOKEN};
use callisto_tests::receiver::Receiver;
use serde_json::{Value, json};
use sha2::Digest;

use crate::delivery::{ingest, push_envelope, verify_standard};

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

/// Every event, newest first, through the typed client.
async fn all_events(client: &Client) -> Vec<Event> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = client
            .events(&EventQuery {
                limit: Some(500),
                before: before.clone(),
                ..EventQuery::default()
            })
            .await
            .unwrap();
        out.extend(page.items);
        match page.next {
            Some(next) => before = Some(next),
            None => return out,
        }
    }
}

/// Every delivery of a webhook, each with its attempts, as the API shows
/// them.
async fn all_deliveries(client: &Client, webhook: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = client
            .deliveries(
                webhook,
                &DeliveryQuery {
                    state: None,
                    limit: Some(500),
                    before: before.clone(),
                },
            )
            .await
            .unwrap();
        for d in &page.items {
            let full = client.delivery(&d.id).await.unwrap();
            out.push(serde_json::to_value(full).unwrap());
        }
        match page.next {
            Some(next) => before = Some(next),
            None => return out,
        }
    }
}

/// Runs the CLI with the gateway's URL and token.
async fn cli_to(gw: &TestGateway, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env("CALLISTO_URL", &gw.url)
        .env("CALLISTO_ADMIN_TOKEN", &gw.admin_token)
        .env_remove("CALLISTO_DATA_DIR")
        .env_remove("CALLISTO_SECRET_KEY")
        .output()
        .await
        .expect("run the CLI")
}

fn ok(out: &Output) -> (String, String) {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

fn failed(out: &Output) -> String {
    let (stdout, stderr) = text(out);
    assert!(!out.status.success(), "succeeded:\n{stdout}\n{stderr}");
    stderr
}

#[tokio::test]
async fn a_backup_taken_while_ingesting_restores_into_a_new_gateway_with_everything() {
    let gw = crate::gateway_with(|c| c.delivery.retry_schedule_secs = vec![1, 1]).await;
    let receiver = Receiver::start().await;
    let explicit = "explicit-secret-0123456789";
    let repo = crate::delivery::repository(
        &gw,
        json!([
            {"url": receiver.url("/a"), "secret": "generate"},
            {"url": receiver.url("/b"), "secret": explicit},
        ]),
    )
    .await;
    let hooks = repo.webhooks.clone().unwrap();
    let generated = hooks[0].secret.clone().expect("the generated secret, once");
    let secrets = [
        (hooks[0].id.clone(), generated),
        (hooks[1].id.clone(), explicit.to_owned()),
    ];

    // History: ten pushes to two webhooks, one delivery failing once, and a
    // Test Webhook of each.
    receiver.respond_with([500]);
    for i in 0..10 {
        ingest(&gw, &push_envelope(&format!("v{i}"))).await;
    }
    for (id, _) in &secrets {
        assert_eq!(
            gw.client().test_webhook(id).await.unwrap().result,
            "success"
        );
        crate::delivery::eventually(
            &gw,
            &format!("/webhooks/{id}/deliveries?state=succeeded&limit=100"),
            |p| p["items"].as_array().unwrap().len() == 11,
        )
        .await;
    }
    let client = gw.client();
    let events_before = all_events(&client).await;
    assert_eq!(events_before.len(), 10);
    let mut deliveries_before = Vec::new();
    for (id, _) in &secrets {
        deliveries_before.extend(all_deliveries(&client, id).await);
    }
    assert_eq!(deliveries_before.len(), 22);
    assert!(
        deliveries_before.iter().any(|d| d["attempts"] == 2),
        "one delivery was retried"
    );
    let webhooks_before = serde_json::to_value(client.webhooks(&repo.id).await.unwrap()).unwrap();

    // Back up while the gateway keeps ingesting.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let ingesting = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let (http, url, token) = (gw.http.clone(), gw.url.clone(), gw.ingest_token.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .post(format!("{url}/ingest/distribution"))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(push_envelope(&format!("during{i}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                acked.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    while acked.load(Ordering::Relaxed) < 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("callisto.backup");
    let file_arg = file.to_str().unwrap();
    let (stdout, stderr) = ok(&cli_to(&gw, &["store", "backup", file_arg, "--with-key"]).await);
    stop.store(true, Ordering::Relaxed);
    ingesting.await.unwrap();
    assert!(
        stdout.contains("every record verified") && stdout.contains(&format!("to {file_arg}")),
        "{stdout}"
    );
    let key_file = out_dir.path().join("callisto.backup.key");
    let key_source = gw.data.path().join("secret.key");
    assert!(
        stdout.contains(&format!("copied the sealing key {}", key_source.display())),
        "{stdout}\n{stderr}"
    );
    for private in [&file, &key_file] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", private.display());
    }
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().trim(),
        std::fs::read_to_string(&key_source).unwrap().trim()
    );
    assert!(
        !out_dir.path().join("callisto.backup.partial").exists(),
        "no partial file is left"
    );
    let leftovers: Vec<_> = std::fs::read_dir(gw.data.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".backup-"))
        .collect();
    assert!(leftovers.is_empty(), "the gateway left {leftovers:?}");

    // Without --with-key it says where the key is and what to do.
    let second = out_dir.path().join("second.backup");
    let (_, stderr) = ok(&cli_to(&gw, &["store", "backup", second.to_str().unwrap()]).await);
    assert!(
        stderr.contains("does not contain the sealing key")
            && stderr.contains(&key_source.display().to_string())
            && stderr.contains("--with-key"),
        "{stderr}"
    );
    // A backup never overwrites a file.
    let e = failed(&cli_to(&gw, &["store", "backup", file_arg]).await);
    assert!(e.contains("never overwrites"), "{e}");
    // The running gateway's file cannot be read behind its back.
    let e = failed(
        &cli_to(
            &gw,
            &[
                "store",
                "backup",
                "--data-dir",
                gw.data.path().to_str().unwrap(),
                out_dir.path().join("direct.backup").to_str().unwrap(),
            ],
        )
        .await,
    );
    assert!(
        e.contains("is open in a running gateway") && e.contains("without --data-dir"),
        "{e}"
    );

    // Restore into a new data directory, with the key.
    let restored = tempfile::tempdir().unwrap();
    let restored_arg = restored.path().to_str().unwrap();
    let key_arg = key_file.to_str().unwrap();
    let (stdout, _) = ok(&cli_to(
        &gw,
        &[
            "store",
            "restore",
            file_arg,
            "--data-dir",
            restored_arg,
            "--key",
            key_arg,
        ],
    )
    .await);
    assert!(
        stdout.starts_with("restored ") && stdout.contains(&format!("from {file_arg} into")),
        "{stdout}"
    );
    // Never over an existing store.
    let e = failed(
        &cli_to(
            &gw,
            &[
                "store",
                "restore",
                file_arg,
                "--data-dir",
                restored_arg,
                "--key",
                key_arg,
            ],
        )
        .await,
    );
    assert!(e.contains("already holds a store"), "{e}");
    // A key that is not the gateway's is refused, and nothing is left.
    let wrong_key = out_dir.path().join("wrong.key");
    {
        use base64::Engine as _;
        std::fs::write(
            &wrong_key,
            base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        )
        .unwrap();
    }
    let elsewhere = tempfile::tempdir().unwrap();
    let e = failed(
        &cli_to(
            &gw,
            &[
                "store",
                "restore",
                file_arg,
                "--data-dir",
                elsewhere.path().to_str().unwrap(),
                "--key",
                wrong_key.to_str().unwrap(),
            ],
        )
        .await,
    );
    assert!(e.contains("does not open the backup's secrets"), "{e}");
    assert!(!elsewhere.path().join("callisto.redb").exists());
    // Without a key it restores, and warns, pointing at the kept key.
    let (_, stderr) = ok(&cli_to(
        &gw,
        &[
            "store",
            "restore",
            file_arg,
            "--data-dir",
            elsewhere.path().to_str().unwrap(),
        ],
    )
    .await);
    assert!(
        stderr.contains("no sealing key was given") && stderr.contains(&format!("--key {key_arg}")),
        "{stderr}"
    );

    // The original's final history; the restored one is a prefix of it.
    let events_now = all_events(&client).await;
    let mut config = callisto::test_util::test_config(restored.path());
    config.plugins.cache_dir = Some(crate::shared_cache_dir());
    let gw2 = TestGateway::start_in(restored, config).await;
    let client2 = gw2.client();
    let events_restored = all_events(&client2).await;
    let n = events_restored.len();
    // Ten before, and at least the five acknowledged before the backup began.
    assert!(
        n >= 15 && n <= events_now.len(),
        "{n} of {}",
        events_now.len()
    );
    assert_eq!(
        events_restored,
        events_now[events_now.len() - n..],
        "the backup is one snapshot: the oldest events, none missing"
    );
    assert_eq!(events_restored[n - 10..], events_before[..]);
    assert_eq!(
        serde_json::to_value(client2.webhooks(&repo.id).await.unwrap()).unwrap(),
        webhooks_before
    );
    for d in &deliveries_before {
        let id = d["id"].as_str().unwrap();
        let restored = serde_json::to_value(client2.delivery(id).await.unwrap()).unwrap();
        assert_eq!(&restored, d, "delivery {id}");
    }

    // Secrets still open: Test Webhook signs with them.
    for ((id, secret), path) in secrets.iter().zip(["/a", "/b"]) {
        let result = client2.test_webhook(id).await.unwrap();
        assert_eq!(result.summary, "Success (200)", "{id}");
        let test = receiver
            .requests()
            .into_iter()
            .rfind(|r| r.path == path && r.json()["type"] == "webhook.test")
            .expect("the test request");
        verify_standard(&test, secret);
    }

    // With no gateway running, a data directory is backed up directly.
    let restored = gw2.stop().await;
    let offline = out_dir.path().join("offline.backup");
    let (stdout, _) = ok(&cli(&[
        "store",
        "backup",
        "--data-dir",
        restored.path().to_str().unwrap(),
        offline.to_str().unwrap(),
        "--with-key",
    ])
    .await);
    assert!(stdout.contains("every record verified"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(out_dir.path().join("offline.backup.key")).unwrap(),
        std::fs::read_to_string(&key_file).unwrap()
    );
}
