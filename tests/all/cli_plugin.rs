//! `callisto plugin list|check|run`, run as the real binary.

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use callisto_tests::guests;
use hmac::{Hmac, Mac};
use sha2::Sha256;

fn callisto(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callisto-e2e"))
        .args(args)
        .env_remove("CALLISTO_DATA_DIR")
        .output()
        .expect("run callisto")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const EVENT: &str = r#"{"id":"evt_01KB5ZJ0GA0000000000000000","type":"image.pushed","source":"local",
 "repository":{"id":"repo_01KB5ZHZ000000000000000000","name":"demo/app","registry":"127.0.0.1:5000"},
 "tag":"v1","digest":"sha256:a2293004e1641d49c7d7341229010c763ee4bf9d76adb835fcc8c8ba3af87582",
 "previous_digest":null,"media_type":"application/vnd.oci.image.manifest.v1+json","size":401,
 "actor":null,"occurred_at":"2026-11-28T20:25:52Z"}"#;

fn event_file(dir: &Path) -> String {
    let path = dir.join("event.json");
    std::fs::write(&path, EVENT).unwrap();
    path.display().to_string()
}

/// Splits `plugin run` output into headers and body.
fn parse_request(out: &str) -> (Vec<(String, String)>, String) {
    let (head, body) = out.split_once("\n\n").expect("headers, blank line, body");
    let headers = head
        .lines()
        .skip(1)
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    (headers, body.trim_end_matches('\n').to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    &headers
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
}

#[test]
fn list_shows_the_builtins() {
    let data = tempfile::tempdir().unwrap();
    let out = callisto(&[
        "plugin",
        "list",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for name in [
        "default",
        "europa",
        "slack",
        "cloudevents",
        "discord",
        "teams",
        "github-dispatch",
        "flux",
        "template",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.contains("built-in")),
            "{text}"
        );
    }
    let json = callisto(&[
        "plugin",
        "list",
        "--json",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 9);
}

#[test]
fn check_describes_a_fitting_component_and_names_what_does_not_fit() {
    let out = callisto(&["plugin", "check", guests::DISCORD_PATH]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("my-discord 0.1.0 — A Discord webhook message"),
        "{text}"
    );
    assert!(text.contains("fits callisto:plugin/plugin@0.1.0"), "{text}");
    assert!(
        text.contains("username: the name the message is posted under"),
        "{text}"
    );

    let bad = callisto(&["plugin", "check", guests::WRONG_WORLD_PATH]);
    assert!(!bad.status.success());
    let err = stderr(&bad);
    assert!(err.contains("missing export `format`"), "{err}");
    assert!(err.contains("other:thing/secrets"), "{err}");
}

#[test]
fn run_prints_the_exact_signed_request() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let out = callisto(&[
        "plugin",
        "run",
        guests::DISCORD_PATH,
        "--event",
        &event_file(dir.path()),
        "--config",
        "username=deploy-bot",
        "--secret",
        secret,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("POST https://example.com/webhook\n"),
        "{text}"
    );
    let (headers, body) = parse_request(&text);
    assert_eq!(header(&headers, "content-type"), "application/json");
    assert_eq!(
        body,
        r#"{"content":"`127.0.0.1:5000/demo/app:v1` pushed (a2293004e164)","username":"deploy-bot"}"#
    );

    // The signature verifies, computed independently.
    let id = header(&headers, "webhook-id");
    let ts = header(&headers, "webhook-timestamp");
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(header(&headers, "webhook-signature"), expected);
}

#[test]
fn run_a_builtin_by_name_filter_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let event = event_file(dir.path());
    let europa = callisto(&[
        "plugin", "run", "europa", "--event", &event, "--secret", "s",
    ]);
    assert!(europa.status.success(), "{}", stderr(&europa));
    let (headers, body) = parse_request(&stdout(&europa));
    assert_eq!(header(&headers, "x-europa-event"), "DockerImagePush");
    assert!(
        body.starts_with(r#"{"event":"DockerImagePush","image":{"tags":["v1"]"#),
        "{body}"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s").unwrap();
    mac.update(body.as_bytes());
    assert_eq!(
        header(&headers, "x-europa-signature"),
        STANDARD.encode(mac.finalize().into_bytes())
    );

    let filtered = callisto(&[
        "plugin", "run", "default", "--event", &event, "--config", "tags=v2*",
    ]);
    assert!(filtered.status.success());
    assert_eq!(
        stdout(&filtered),
        "filtered out (rule tags): tags=v2*: tag `v1` matches none of the globs\n"
    );
    // The plugin's own debug line, whatever the gateway's log filter says.
    assert!(
        stderr(&filtered)
            .contains("DEBUG default: filtered out: tags=v2*: tag `v1` matches none of the globs"),
        "{}",
        stderr(&filtered)
    );

    let refused = callisto(&[
        "plugin", "run", "default", "--event", &event, "--config", "tagz=v2",
    ]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("unknown config key `tagz`"),
        "{}",
        stderr(&refused)
    );

    let hostile = callisto(&[
        "plugin",
        "run",
        guests::HOSTILE_PATH,
        "--event",
        &event,
        "--config",
        "mode=loop",
    ]);
    assert!(!hostile.status.success());
    assert!(
        stderr(&hostile).contains("plugin hostile faulted: timed out"),
        "{}",
        stderr(&hostile)
    );

    let panicked = callisto(&[
        "plugin",
        "run",
        guests::HOSTILE_PATH,
        "--event",
        &event,
        "--config",
        "mode=trap",
    ]);
    assert!(!panicked.status.success());
    assert!(
        stderr(&panicked).contains(
            "plugin hostile faulted: trapped: panicked at tests/guests/hostile/src/lib.rs:27:25: \
             hostile plugin panics on purpose"
        ),
        "{}",
        stderr(&panicked)
    );

    let missing = callisto(&["plugin", "run", "nope", "--event", &event]);
    assert!(
        stderr(&missing).contains("neither a file nor a built-in plugin"),
        "{}",
        stderr(&missing)
    );
}

/// Without `--event`, the SDK's sample push; `--tag`, `--type` and
/// `--repository` change it (or a given event) without editing JSON.
#[test]
fn run_overrides_the_sample_event_from_the_command_line() {
    let sample = callisto(&["plugin", "run", "default"]);
    assert!(sample.status.success(), "{}", stderr(&sample));
    let (_, body) = parse_request(&stdout(&sample));
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["type"], "image.pushed");
    assert_eq!(body["repository"]["name"], "demo/app");
    assert_eq!(body["tag"], "v1");

    let changed = callisto(&[
        "plugin",
        "run",
        "default",
        "--tag",
        "v2.1",
        "--type",
        "image.deleted",
        "--repository",
        "team/api",
        "--config",
        "tags=v2*",
    ]);
    assert!(changed.status.success(), "{}", stderr(&changed));
    let (_, body) = parse_request(&stdout(&changed));
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["type"], "image.deleted");
    assert_eq!(body["repository"]["name"], "team/api");
    assert_eq!(body["tag"], "v2.1");

    let dir = tempfile::tempdir().unwrap();
    let retagged = callisto(&[
        "plugin",
        "run",
        "default",
        "--event",
        &event_file(dir.path()),
        "--tag",
        "latest",
        "--config",
        "events=image.deleted",
    ]);
    assert_eq!(
        stdout(&retagged),
        "filtered out (rule events): events=image.deleted: image.pushed is not listed\n"
    );

    let bad = callisto(&["plugin", "run", "default", "--type", "image.pulled"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("--type `image.pulled`"),
        "{}",
        stderr(&bad)
    );
}

/// A plugin's log lines are shown whatever CALLISTO_LOG says, up to the
/// budget the gateway applies.
#[test]
fn run_shows_the_plugins_log_lines() {
    let out = Command::new(env!("CARGO_BIN_EXE_callisto-e2e"))
        .args([
            "plugin",
            "run",
            guests::HOSTILE_PATH,
            "--config",
            "mode=log-spam",
        ])
        .env("CALLISTO_LOG", "error")
        .output()
        .expect("run callisto");
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(" INFO hostile: spam line 0\n"), "{err}");
    assert!(err.contains(" INFO hostile: spam line 99\n"), "{err}");
    assert!(!err.contains("spam line 100"), "{err}");
    assert!(
        err.contains(" WARN hostile: plugin log budget spent; dropping its further lines"),
        "{err}"
    );
}

/// `plugin new` writes a crate that passes its own test at once: `cargo
/// test` in it, with this build's target directory (the SDK and its
/// dependencies are built once and reused) and this workspace's lock file
/// (the same dependency versions, offline).
#[test]
fn new_writes_a_crate_that_passes_its_own_test() {
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("hello-world");
    let krate_arg = krate.to_str().unwrap();
    let out = callisto(&["plugin", "new", "hello-world", "--dir", krate_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("created plugin `hello-world` in "));
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
    let sdk = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
    .join("../plugin-sdk")
    .canonicalize()
    .unwrap();
    for line in [
        format!(
            "callisto-plugin-sdk = {{ path = {:?} }}",
            sdk.to_str().unwrap()
        ),
        "opt-level = \"s\"".to_owned(),
        "lto = true".to_owned(),
        "codegen-units = 1".to_owned(),
        "strip = true".to_owned(),
        "panic = \"abort\"".to_owned(),
    ] {
        assert!(
            manifest.lines().any(|l| l == line),
            "no `{line}` in:\n{manifest}"
        );
    }
    let lib = std::fs::read_to_string(krate.join("src/lib.rs")).unwrap();
    assert!(lib.contains("pub struct HelloWorld;"), "{lib}");
    assert!(
        lib.contains("\"hello-world\","),
        "describe() names the plugin"
    );

    // Never over someone's work.
    let again = callisto(&["plugin", "new", "hello-world", "--dir", krate_arg]);
    assert!(
        stderr(&again).contains("is not empty"),
        "{}",
        stderr(&again)
    );
    let bad = callisto(&["plugin", "new", "Hello_World"]);
    assert!(
        stderr(&bad).contains("cannot name a plugin"),
        "{}",
        stderr(&bad)
    );

    let root = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
    .join("..");
    std::fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let jobs = std::env::var("CARGO_BUILD_JOBS").unwrap_or_else(|_| "2".to_owned());
    let test = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["test", "--offline"])
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_BUILD_JOBS", jobs)
        .output()
        .expect("run cargo test");
    assert!(
        test.status.success() && stdout(&test).contains("test result: ok. 2 passed"),
        "{}\n{}",
        stdout(&test),
        stderr(&test)
    );
}

/// The SDK's walkthrough shows this plugin's source verbatim, so the README
/// cannot drift from code that is built and run above.
#[test]
fn sdk_readme_shows_the_tested_plugin_verbatim() {
    let root = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
    .join("..");
    let readme = std::fs::read_to_string(root.join("plugin-sdk/README.md")).unwrap();
    let source = std::fs::read_to_string(root.join("tests/guests/discord/src/lib.rs")).unwrap();
    assert!(
        readme.contains(&source),
        "plugin-sdk/README.md no longer shows tests/guests/discord/src/lib.rs"
    );
}
