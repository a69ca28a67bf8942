//! `callisto repo|webhook|events|deliveries|redeliver` against the real
//! gateway process, a scan of every answer and log line for secrets, the
//! log's plain text and `--version`.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use callisto_tests::gateway::{ADMIN_TOKEN, GatewayProcess, INGEST_TOKEN};
use callisto_tests::receiver::Receiver;
use serde_json::Value;

use crate::delivery::push_envelope;

const BIN: &str = env!("CARGO_BIN_EXE_callisto-e2e");

/// Runs the CLI without blocking the test's runtime, which also runs the
/// receiver the gateway is calling.
async fn cli(gw: &GatewayProcess, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env("CALLISTO_URL", &gw.url)
        .env("CALLISTO_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("CALLISTO_DATA_DIR")
        .output()
        .await
        .expect("run the CLI")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn start(data: &Path) -> GatewayProcess {
    GatewayProcess::start(
        Path::new(BIN),
        data,
        &[
            (
                "CALLISTO_PLUGINS__CACHE_DIR",
                crate::shared_cache_dir().to_str().unwrap(),
            ),
            ("CALLISTO_LOG", "debug"),
            ("CALLISTO_DELIVERY__RETRY_SCHEDULE_SECS", "1,1"),
        ],
    )
    .await
}

async fn post_event(gw: &GatewayProcess, tag: &str) {
    let r = callisto_tests::http()
        .post(format!("{}/ingest/distribution", gw.url))
        .bearer_auth(INGEST_TOKEN)
        .header(
            "content-type",
            "application/vnd.docker.distribution.events.v1+json",
        )
        .body(push_envelope(tag))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn the_cli_drives_repositories_webhooks_tests_and_history() {
    let data = tempfile::tempdir().unwrap();
    let gw = start(&data.path().join("data")).await;
    let receiver = Receiver::start().await;

    let out = ok(&cli(&gw, &["repo", "add", "demo/app"]).await);
    assert!(out.starts_with("added local demo/app (repo_"), "{out}");
    let repo = out
        .trim()
        .rsplit('(')
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_owned();
    let list = ok(&cli(&gw, &["repo", "list"]).await);
    assert!(list.starts_with("ID"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with(&repo) && l.contains("local") && l.contains("demo/app")),
        "{list}"
    );
    let json: Value =
        serde_json::from_str(&ok(&cli(&gw, &["repo", "list", "--json"]).await)).unwrap();
    assert_eq!(json[0]["id"], repo.as_str());

    let out = ok(&cli(
        &gw,
        &[
            "webhook",
            "add",
            &repo,
            &receiver.url("/h"),
            "--secret",
            "generate",
            "--config",
            "tags=v*",
        ],
    )
    .await);
    let webhook = out.split_whitespace().nth(2).unwrap().to_owned();
    assert!(webhook.starts_with("wh_"), "{out}");
    assert!(out.contains("secret (shown once): whsec_"), "{out}");
    let list = ok(&cli(&gw, &["webhook", "list", &repo]).await);
    assert!(
        list.lines().any(|l| l.starts_with(&webhook)
            && l.contains("yes")
            && l.contains(&receiver.url("/h"))),
        "{list}"
    );
    // A person types the repository's name, not its id.
    let by_name = ok(&cli(&gw, &["webhook", "list", "demo/app"]).await);
    assert!(
        by_name.lines().any(|l| l.starts_with(&webhook)),
        "{by_name}"
    );
    let e = err(&cli(&gw, &["webhook", "list", "demo/nope"]).await);
    assert!(
        e.contains("no repository has the id or name `demo/nope`"),
        "{e}"
    );

    let out = ok(&cli(&gw, &["webhook", "test", &webhook]).await);
    assert_eq!(out.trim(), "Success (200)");
    let out = ok(&cli(&gw, &["webhook", "test", &webhook, "--details"]).await);
    assert!(out.starts_with("Success (200)"), "{out}");
    assert!(
        out.contains("> POST ")
            && out.contains("> webhook-signature: v1,")
            && out.contains("< 200"),
        "{out}"
    );
    receiver.set_default(500);
    let failed = cli(&gw, &["webhook", "test", &webhook]).await;
    assert!(!failed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&failed.stdout).trim(),
        "Error (500)"
    );
    receiver.set_default(200);

    post_event(&gw, "v1").await;
    receiver.wait_for(4, Duration::from_secs(20)).await;
    let events = ok(&cli(&gw, &["events"]).await);
    assert!(
        events
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("image.pushed")
                && l.contains("demo/app")
                && l.contains("v1")),
        "{events}"
    );
    let deleted = ok(&cli(&gw, &["events", "--type", "image.deleted"]).await);
    assert!(!deleted.contains("image.pushed"), "{deleted}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let delivery = loop {
        let list = ok(&cli(&gw, &["deliveries", &webhook, "--state", "succeeded"]).await);
        if let Some(line) = list.lines().find(|l| l.contains(" event ")) {
            break line.split_whitespace().next().unwrap().to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no succeeded delivery:\n{list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let out = ok(&cli(&gw, &["redeliver", &delivery]).await);
    assert!(out.contains("pending again"), "{out}");
    let got = receiver.wait_for(5, Duration::from_secs(20)).await;
    assert_eq!(got[4].header("webhook-id"), Some(delivery.as_str()));

    // `latest` is not `v*`: the webhook's filter declines it, and says so.
    post_event(&gw, "latest").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let filtered = loop {
        let out = ok(&cli(&gw, &["webhook", "filtered", &webhook]).await);
        if out.starts_with("1 event filtered out") {
            break out;
        }
        assert!(tokio::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let row = filtered.lines().nth(2).unwrap_or_default();
    assert!(
        row.contains("image.pushed")
            && row.contains("latest")
            && row.contains("tags")
            && row.ends_with("tags=v*: tag `latest` matches none of the globs"),
        "{filtered}"
    );

    // Errors name the problem.
    let e = err(&cli(&gw, &["repo", "rm", "repo_nope"]).await);
    assert!(
        e.contains("repository repo_nope not found") && e.contains("404"),
        "{e}"
    );
    let e = err(&cli(&gw, &["webhook", "add", &repo, "ftp://x"]).await);
    assert!(e.contains("http or https"), "{e}");
    let e = err(&tokio::process::Command::new(BIN)
        .args([
            "repo",
            "list",
            "--url",
            "http://127.0.0.1:9",
            "--token",
            "x",
        ])
        .output()
        .await
        .unwrap());
    assert!(
        e.contains("cannot reach the gateway at http://127.0.0.1:9: connection refused"),
        "{e}"
    );
    let e = err(&tokio::process::Command::new(BIN)
        .args([
            "repo",
            "list",
            "--url",
            &gw.url,
            "--token",
            "wrong-token-0123456789",
        ])
        .output()
        .await
        .unwrap());
    assert!(e.contains("401"), "{e}");

    assert!(ok(&cli(&gw, &["webhook", "rm", &webhook]).await).contains("deleted webhook"));
    assert!(ok(&cli(&gw, &["repo", "rm", &repo]).await).contains("deleted repository"));
}

/// Secrets are write-only: no answer of the API, no CLI output after the
/// one that generated it, and no log line (at debug level) carries one.
#[tokio::test]
async fn no_secret_appears_in_any_answer_or_log_line() {
    let data = tempfile::tempdir().unwrap();
    let gw = start(&data.path().join("data")).await;
    let receiver = Receiver::start().await;
    let http = callisto_tests::http();
    let api = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}/api/v1{path}", gw.url))
            .bearer_auth(ADMIN_TOKEN)
    };

    let explicit = "s3cr3t-explicit-webhook-value";
    let password = "registry-password-never-shown";
    let created: Value = api(reqwest::Method::POST, "/repositories")
        .json(&serde_json::json!({"name": "demo/app", "webhooks": [
            {"url": receiver.url("/a"), "secret": explicit},
            {"url": receiver.url("/b"), "secret": "generate"},
        ]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let generated = created["webhooks"][1]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let remote: Value = api(reqwest::Method::POST, "/repositories")
        .json(
            &serde_json::json!({"name": "127.0.0.1:9/team/app", "kind": "remote", "insecure": true,
            "credentials": {"username": "robot", "password": password}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(remote["has_credentials"], true);
    let repo = created["id"].as_str().unwrap();
    let hooks: Vec<String> = created["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_owned())
        .collect();

    post_event(&gw, "v1").await;
    receiver.wait_for(2, Duration::from_secs(20)).await;
    for h in &hooks {
        api(reqwest::Method::POST, &format!("/webhooks/{h}/test"))
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Everything the API can show.
    let mut seen = vec![created.to_string().replace(&generated, "<shown once>")];
    let mut paths = vec![
        "/repositories".to_owned(),
        format!("/repositories/{repo}"),
        format!("/repositories/{}", remote["id"].as_str().unwrap()),
        format!("/repositories/{repo}/webhooks"),
        "/events".to_owned(),
        "/plugins".to_owned(),
    ];
    for h in &hooks {
        paths.push(format!("/webhooks/{h}"));
        paths.push(format!("/webhooks/{h}/deliveries"));
    }
    for path in paths {
        let text = api(reqwest::Method::GET, &path)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if path.ends_with("/deliveries") {
            let page: Value = serde_json::from_str(&text).unwrap();
            for d in page["items"].as_array().unwrap() {
                let id = d["id"].as_str().unwrap();
                seen.push(
                    api(reqwest::Method::GET, &format!("/deliveries/{id}"))
                        .send()
                        .await
                        .unwrap()
                        .text()
                        .await
                        .unwrap(),
                );
            }
        }
        seen.push(text);
    }
    seen.push(ok(&cli(&gw, &["repo", "list", "--json"]).await));
    seen.push(ok(&cli(&gw, &["webhook", "list", repo, "--json"]).await));
    let log = gw.log();
    assert!(
        log.contains("DEBUG") || log.contains("INFO"),
        "the log is empty:\n{log}"
    );
    for secret in [
        explicit,
        generated.as_str(),
        password,
        ADMIN_TOKEN,
        INGEST_TOKEN,
    ] {
        for text in &seen {
            assert!(!text.contains(secret), "an answer shows a secret: {text}");
        }
        assert!(!log.contains(secret), "the log shows a secret");
    }
    // But the receivers did get signatures made with them.
    assert!(
        receiver
            .requests()
            .iter()
            .all(|r| r.header("webhook-signature").is_some())
    );
}

/// Logs that go to a file (here, or a pipe, or journald) are plain text:
/// colour codes only on a terminal.
#[tokio::test]
async fn a_log_written_to_a_file_has_no_colour_codes() {
    let data = tempfile::tempdir().unwrap();
    let mut gw = start(&data.path().join("data")).await;
    gw.terminate().await;
    let log = gw.log();
    assert!(
        log.contains("INFO") && log.contains("stopped"),
        "the log is incomplete:\n{log}"
    );
    assert!(!log.contains("\x1b["), "the log has ANSI codes:\n{log:?}");
}

/// `callisto --version` names the commit built and its date:
/// `callisto 0.1.0 (3b3c6b4 2026-11-29)`.
#[test]
fn the_version_names_the_commit() {
    let out = std::process::Command::new(BIN)
        .arg("--version")
        .output()
        .expect("run callisto --version");
    let text = ok(&out);
    let prefix = format!("callisto {} (", env!("CARGO_PKG_VERSION"));
    let built = text
        .trim_end()
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not `{prefix}...)`: {text}"));
    // Unless a packager named the commit, it is this checkout's.
    if option_env!("CALLISTO_BUILD_COMMIT").is_none()
        && option_env!("CALLISTO_BUILD_DATE").is_none()
    {
        let manifest =
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR");
        let workspace = Path::new(&manifest).parent().unwrap();
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(workspace)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let expected = match (
            git(&["rev-parse", "--short", "HEAD"]),
            git(&["log", "-1", "--format=%cs", "HEAD"]),
        ) {
            (Some(commit), Some(date)) => format!("{commit} {date}"),
            _ => "unknown".to_owned(),
        };
        assert_eq!(built, expected);
    }
}

/// With an OTLP endpoint set, the gateway exports its traces there: one span
/// per ingest, fan-out, plugin call and attempt, tied together by the event
/// and delivery ids.
#[tokio::test]
async fn traces_leave_the_box_over_otlp_with_the_ids_that_tie_them() {
    let collector = Receiver::start().await;
    let receiver = Receiver::start().await;
    let data = tempfile::tempdir().unwrap();
    let endpoint = collector.url("");
    let mut gw = GatewayProcess::start(
        Path::new(BIN),
        &data.path().join("data"),
        &[
            ("CALLISTO_OTLP_ENDPOINT", endpoint.trim_end_matches('/')),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let client = callisto::client::Client::new(&gw.url, ADMIN_TOKEN, callisto_tests::http());
    let input = serde_json::from_value(
        serde_json::json!({"name": "demo/app", "webhooks": [{"url": receiver.url("/h")}]}),
    )
    .unwrap();
    client.create_repository(&input).await.unwrap();
    let accepted: Value = callisto_tests::http()
        .post(format!("{}/ingest/distribution", gw.url))
        .bearer_auth(INGEST_TOKEN)
        .header("content-type", "application/json")
        .body(crate::delivery::push_envelope("v1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event = accepted["events"][0].as_str().unwrap().to_owned();
    let delivered = receiver.wait_for(1, Duration::from_secs(20)).await;
    let delivery = delivered[0].header("webhook-id").unwrap().to_owned();
    gw.terminate().await;

    let exported: Vec<u8> = collector
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/traces")
        .flat_map(|r| r.body.to_vec())
        .collect();
    let text = String::from_utf8_lossy(&exported);
    for needle in [
        "ingest", "fanout", "plugin", "attempt", "callisto", &event, &delivery,
    ] {
        assert!(
            text.contains(needle),
            "no `{needle}` in the exported traces"
        );
    }
}

/// `repo show` as people type it (a name or an id), `--json` as the API
/// answers, errors that say what to do, and shell completions.
#[tokio::test]
async fn repo_show_completions_and_errors_that_say_what_to_do() {
    let data = tempfile::tempdir().unwrap();
    let gw = start(&data.path().join("data")).await;
    let receiver = Receiver::start().await;

    let out = ok(&cli(&gw, &["repo", "add", "demo/app"]).await);
    let repo = out
        .trim()
        .rsplit('(')
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_owned();
    let empty = ok(&cli(&gw, &["repo", "show", "demo/app"]).await);
    assert!(
        empty.contains(&format!("repository  demo/app ({repo})"))
            && empty.contains("no webhooks: add one with `callisto webhook add demo/app URL`"),
        "{empty}"
    );
    for url in [receiver.url("/a"), receiver.url("/b")] {
        ok(&cli(
            &gw,
            &["webhook", "add", "demo/app", &url, "--secret", "generate"],
        )
        .await);
    }
    ok(&cli(
        &gw,
        &[
            "webhook",
            "add",
            "demo/app",
            &receiver.url("/off"),
            "--disabled",
        ],
    )
    .await);

    for who in ["demo/app", repo.as_str()] {
        let shown = ok(&cli(&gw, &["repo", "show", who]).await);
        assert!(
            shown
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["kind", "local"]),
            "{shown}"
        );
        let lines: Vec<&str> = shown.lines().collect();
        let header = lines
            .iter()
            .position(|l| l.starts_with("ID") && l.contains("ENABLED"))
            .unwrap_or_else(|| panic!("no webhook table:\n{shown}"));
        let hooks = &lines[header + 1..];
        assert_eq!(hooks.len(), 3, "{shown}");
        assert!(
            hooks
                .iter()
                .any(|l| l.contains(&receiver.url("/a")) && l.contains(" yes ")),
            "{shown}"
        );
        assert!(
            hooks
                .iter()
                .any(|l| l.contains(&receiver.url("/off")) && l.contains(" no ")),
            "{shown}"
        );
    }
    // A remote repository, typed as it was added.
    ok(&cli(
        &gw,
        &[
            "repo",
            "add",
            "127.0.0.1:9/team/app",
            "--remote",
            "--insecure",
            "--tags",
            "v*",
        ],
    )
    .await);
    let remote = ok(&cli(&gw, &["repo", "show", "127.0.0.1:9/team/app"]).await);
    for (key, value) in [
        ("kind", "remote"),
        ("registry", "127.0.0.1:9"),
        ("insecure", "yes"),
        ("tags", "v*"),
        ("exclude tags", "-"),
    ] {
        assert!(
            remote
                .lines()
                .any(|l| l.starts_with(key) && l[key.len()..].trim() == value),
            "{key}: {remote}"
        );
    }

    // --json is the API's answer for the repository, webhooks included.
    let json: Value =
        serde_json::from_str(&ok(&cli(&gw, &["repo", "show", "demo/app", "--json"]).await))
            .unwrap();
    let api: Value = callisto_tests::http()
        .get(format!("{}/api/v1/repositories/{repo}", gw.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json, api);
    assert_eq!(json["webhooks"].as_array().unwrap().len(), 3);
    assert!(!json.to_string().contains("whsec_"), "a secret is shown");

    // Errors name the problem and what to do.
    let e = err(&cli(&gw, &["repo", "show", "demo/nope"]).await);
    assert!(
        e.contains("no repository has the id or name `demo/nope`")
            && e.contains("`callisto repo list` shows the repositories"),
        "{e}"
    );
    let e = err(&cli(&gw, &["webhook", "test", "wh_nope"]).await);
    assert!(
        e.contains("404") && e.contains("`callisto repo show REPOSITORY`"),
        "{e}"
    );
    let e = err(&tokio::process::Command::new(BIN)
        .args([
            "repo",
            "show",
            "demo/app",
            "--url",
            &gw.url,
            "--token",
            "wrong-token-0123456789",
        ])
        .output()
        .await
        .unwrap());
    assert!(
        e.contains("401") && e.contains("--token or CALLISTO_ADMIN_TOKEN"),
        "{e}"
    );
    let e = err(&tokio::process::Command::new(BIN)
        .args([
            "repo",
            "show",
            "demo/app",
            "--url",
            "http://127.0.0.1:9",
            "--token",
            "x",
        ])
        .output()
        .await
        .unwrap());
    assert!(e.contains("--url or CALLISTO_URL"), "{e}");

    // Completions, from the same definitions that parse the command line.
    for (shell, mark) in [
        ("bash", "_callisto()"),
        ("zsh", "#compdef callisto"),
        ("fish", "complete -c callisto"),
    ] {
        let script = ok(&cli(&gw, &["completions", shell]).await);
        assert!(script.contains(mark), "{shell}:\n{script}");
        for word in ["repo", "show", "store", "backup", "completions"] {
            assert!(script.contains(word), "{shell} does not complete {word}");
        }
    }
    let e = err(&cli(&gw, &["completions", "tcsh"]).await);
    assert!(e.contains("possible values") && e.contains("bash"), "{e}");
}
