//! Faults and hostile input: SSRF, a flapping receiver, a damaged store, a
//! full disk. Each test is bounded in time and cleans up what it started.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use callisto::test_util::TestGateway;
use callisto_tests::gateway::{ADMIN_TOKEN, GatewayProcess, INGEST_TOKEN};
use callisto_tests::receiver::Receiver;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest;

use crate::delivery::{get, ingest, push_envelope, repository};

async fn test_webhook(gw: &TestGateway, url: &str) -> Value {
    let repo = get(gw, "/repositories").await;
    let id = repo[0]["id"].as_str().unwrap();
    let response = gw
        .api(Method::POST, &format!("/repositories/{id}/webhooks/test"))
        .json(&json!({"url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn private_targets_are_refused_by_default_even_behind_a_name() {
    let gw = crate::gateway_with(|c| c.allow_private_targets = false).await;
    let receiver = Receiver::start().await;
    repository(&gw, json!([])).await;
    let port = receiver.port();
    for url in [
        format!("http://127.0.0.1:{port}/literal"),
        // A name that resolves to loopback: checked after DNS.
        format!("http://localhost:{port}/by-name"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://[::1]:9/v6".to_owned(),
        "http://10.0.0.1:9/private".to_owned(),
    ] {
        let result = test_webhook(&gw, &url).await;
        let summary = result["summary"].as_str().unwrap();
        assert_eq!(result["result"], "error", "{url}: {result}");
        assert!(summary.contains("non-public address"), "{url}: {summary}");
    }
    assert!(
        receiver.requests().is_empty(),
        "a refused request reached the receiver"
    );

    // Fan-out deliveries are refused the same way, and say why.
    let repo = get(&gw, "/repositories").await;
    let id = repo[0]["id"].as_str().unwrap();
    let created: Value = gw
        .api(Method::POST, &format!("/repositories/{id}/webhooks"))
        .json(&json!({"url": format!("http://localhost:{port}/fanout"), "retry_schedule_secs": []}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ingest(&gw, &push_envelope("v1")).await;
    let page = crate::delivery::eventually(
        &gw,
        &format!("/webhooks/{}/deliveries", created["id"].as_str().unwrap()),
        |p| p["items"][0]["state"] == "dead",
    )
    .await;
    assert!(
        page["items"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("non-public address")
    );
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn an_allowlisted_network_opens_loopback() {
    let gw = crate::gateway_with(|c| {
        c.allow_private_targets = false;
        c.allowed_networks = vec!["127.0.0.0/8".into(), "::1/128".into()];
    })
    .await;
    let receiver = Receiver::start().await;
    repository(&gw, json!([])).await;
    let result = test_webhook(&gw, &format!("http://localhost:{}/ok", receiver.port())).await;
    assert_eq!(result["summary"], "Success (200)", "{result}");
    let result = test_webhook(&gw, "http://169.254.169.254/latest/meta-data").await;
    assert!(
        result["summary"]
            .as_str()
            .unwrap()
            .contains("non-public address")
    );
}

/// A receiver that keeps going down and coming back gets every delivery in
/// the end: each webhook-id at least once, none missing.
#[tokio::test]
async fn a_flapping_receiver_gets_every_delivery_in_the_end() {
    let gw = crate::gateway_with(|c| {
        c.delivery.retry_schedule_secs = vec![1; 40];
        c.delivery.jitter = 0.0;
        c.delivery.connect_timeout_secs = 1;
    })
    .await;
    let mut receiver = Receiver::start().await;
    let repo = repository(&gw, json!([{"url": receiver.url("/flap")}])).await;
    let webhook = repo.webhooks.as_ref().unwrap()[0].id.clone();
    let mut events = HashSet::new();
    for i in 0..30 {
        let accepted = ingest(&gw, &push_envelope(&format!("f{i}"))).await;
        events.insert(accepted.events[0].clone());
        if i % 5 == 4 {
            receiver.stop().await;
            tokio::time::sleep(Duration::from_millis(700)).await;
            receiver.restart().await;
        }
    }
    for _ in 0..4 {
        receiver.stop().await;
        tokio::time::sleep(Duration::from_millis(900)).await;
        receiver.restart().await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got: HashSet<String> = receiver
            .requests()
            .iter()
            .map(|r| r.json()["id"].as_str().unwrap().to_owned())
            .collect();
        if got == events {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 30 events never arrived",
            events.difference(&got).count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ids: HashSet<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 30, "one webhook-id per delivery");
    crate::delivery::eventually(
        &gw,
        &format!("/webhooks/{webhook}/deliveries?state=succeeded&limit=100"),
        |p| p["items"].as_array().unwrap().len() == 30,
    )
    .await;
}

fn digest(path: &Path) -> Vec<u8> {
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[tokio::test]
async fn a_damaged_store_is_refused_at_start_and_left_as_it_is() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("data");
    let binary = Path::new(env!("CARGO_BIN_EXE_callisto-e2e"));
    let mut gw = GatewayProcess::start(
        binary,
        &dir,
        &[(
            "CALLISTO_PLUGINS__CACHE_DIR",
            crate::shared_cache_dir().to_str().unwrap(),
        )],
    )
    .await;
    let http = callisto_tests::http();
    for i in 0..300 {
        let r = http
            .post(format!("{}/ingest/distribution", gw.url))
            .bearer_auth(INGEST_TOKEN)
            .header("content-type", "application/json")
            .body(push_envelope(&format!("d{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    gw.terminate().await;

    // Garbage over the middle half of the file: live pages are hit.
    let file = dir.join("callisto.redb");
    let len = std::fs::metadata(&file).unwrap().len() as usize;
    let mut bytes = std::fs::read(&file).unwrap();
    for (i, b) in bytes[len / 4..3 * len / 4].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(&file, &bytes).unwrap();
    let before = digest(&file);

    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(binary)
            .arg("serve")
            .env("CALLISTO_DATA_DIR", &dir)
            .env("CALLISTO_LISTEN", "127.0.0.1:0")
            .env("CALLISTO_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("CALLISTO_INGEST_TOKEN", INGEST_TOKEN)
            .env("RUST_BACKTRACE", "0")
            .output(),
    )
    .await
    .expect("the gateway exits instead of serving")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a damaged store was served");
    assert!(
        stderr.contains("is damaged") && stderr.contains("callisto.redb"),
        "{stderr}"
    );
    assert!(digest(&file) == before, "the damaged file was modified");
}

/// Mounts a small tmpfs for the data directory; unmounts on drop.
pub(crate) struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    pub(crate) fn mount(megabytes: u32) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&status.stderr).trim()
            ));
        }
        Ok(Self { dir })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A full disk: ingest answers 503, never a 202 for an event not written;
/// when space returns the gateway takes writes again by itself.
#[tokio::test]
async fn a_full_disk_answers_503_and_the_gateway_recovers() {
    let disk = match SmallDisk::mount(16) {
        Ok(disk) => disk,
        Err(reason) => {
            println!(
                "SKIPPED a_full_disk_answers_503_and_the_gateway_recovers: cannot mount a tmpfs here ({reason})"
            );
            return;
        }
    };
    let data = disk.path().join("data");
    let mut config = callisto::test_util::test_config(&data);
    config.plugins.cache_dir = Some(crate::shared_cache_dir());
    let keep = tempfile::tempdir().unwrap();
    let gw = TestGateway::start_in(keep, config.clone()).await;

    let post = |tag: String| {
        gw.http
            .post(format!("{}/ingest/distribution", gw.url))
            .bearer_auth(&gw.ingest_token)
            .header("content-type", "application/json")
            .body(push_envelope(&tag))
            .send()
    };
    let mut acknowledged = Vec::new();
    let r = post("before".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    acknowledged.push(
        r.json::<Value>().await.unwrap()["events"][0]
            .as_str()
            .unwrap()
            .to_owned(),
    );

    // Fill the disk.
    let filler = disk.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut refused = 0;
    for i in 0..2000 {
        let r = post(format!("full{i}")).await.unwrap();
        match r.status() {
            StatusCode::ACCEPTED => acknowledged.push(
                r.json::<Value>().await.unwrap()["events"][0]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            StatusCode::SERVICE_UNAVAILABLE => {
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"]["code"], "unavailable");
                refused += 1;
                if refused == 5 {
                    break;
                }
            }
            other => panic!("a full disk answered {other}"),
        }
    }
    assert_eq!(refused, 5, "the disk never filled up");

    // Space returns: writes come back without a restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = post(format!("after-{}", acknowledged.len())).await.unwrap();
        if r.status() == StatusCode::ACCEPTED {
            acknowledged.push(
                r.json::<Value>().await.unwrap()["events"][0]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
            break;
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway did not recover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every 202 is in the log, also after a restart.
    let keep = gw.stop().await;
    let gw = TestGateway::start_in(keep, config).await;
    for id in &acknowledged {
        let r = gw
            .api(Method::GET, &format!("/events/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "acknowledged event {id} is missing"
        );
    }
    gw.stop().await;
}

/// Secrets at rest: the redb file holds no webhook secret or registry
/// password, and a copy of it without the key yields none.
#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_useless_without_the_key() {
    let receiver = Receiver::start().await;
    let secret = "plain-webhook-secret-at-rest-123";
    let password = "registry-password-at-rest-456";
    let gw = crate::gateway().await;
    let repo = repository(&gw, json!([{"url": receiver.url("/h"), "secret": secret}])).await;
    let webhook = repo.webhooks.as_ref().unwrap()[0].id.clone();
    let r = gw
        .api(Method::POST, "/repositories")
        .json(
            &json!({"name": "127.0.0.1:9/team/app", "kind": "remote", "insecure": true,
                      "credentials": {"username": "robot", "password": password}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    ingest(&gw, &push_envelope("v1")).await;
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    crate::delivery::verify_standard(&got[0], secret);
    let mut config = gw.app().config.clone();
    let data = gw.stop().await;

    let file = config.data_dir.join("callisto.redb");
    let raw = std::fs::read(&file).unwrap();
    for needle in [secret, password] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "`{needle}` is in the database file in clear"
        );
    }

    // The database copied without its key: the gateway refuses to start,
    // naming the missing key; told to go on with a new key, it starts but
    // can read no secret, and so signs nothing with it.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(&file, copy.path().join("callisto.redb")).unwrap();
    config.data_dir = copy.path().to_owned();
    config.listen = "127.0.0.1:0".parse().unwrap();
    let refused = callisto::server::start(config.clone()).await.err().unwrap();
    assert!(
        refused.to_string().contains("secret.key is missing"),
        "{refused}"
    );
    config.allow_new_secret_key = true;
    let stolen = TestGateway::start_in(copy, config.clone()).await;
    let r = stolen
        .api(Method::POST, &format!("/webhooks/{webhook}/test"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be decrypted"),
        "{body}"
    );
    let deliveries = get(&stolen, &format!("/webhooks/{webhook}/deliveries")).await;
    let delivery = deliveries["items"][0]["id"].as_str().unwrap().to_owned();
    let r = stolen
        .api(Method::POST, &format!("/deliveries/{delivery}/redeliver"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let detail = crate::delivery::eventually(&stolen, &format!("/deliveries/{delivery}"), |d| {
        d["attempt_log"].as_array().unwrap().len() == 2
    })
    .await;
    let last = &detail["attempt_log"][1];
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("cannot be decrypted"),
        "{last}"
    );
    assert_eq!(
        receiver.requests().len(),
        1,
        "nothing was sent without the secret"
    );
    stolen.stop().await;
    drop(data);
}
