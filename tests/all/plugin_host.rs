//! The plugin host against real components: the built-in plugins compiled
//! from `plugins/`, and hostile guests compiled from `tests/guests/`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use callisto::deliver::signature;
use callisto::plugin::{
    CallError, EventInput, Fault, HostDirs, Limits, LoadError, PluginHost, Runner, SignatureScheme,
    Verdict, WebhookInput,
};
use callisto_plugin_sdk as sdk;
use callisto_tests::guests;
use hmac::{Hmac, Mac};
use sha2::Sha256;

fn host() -> PluginHost {
    host_with(Limits::default())
}

/// A host whose compiled built-ins are cached for the whole test run.
fn host_with(limits: Limits) -> PluginHost {
    let dirs = HostDirs {
        cache: Some(crate::shared_cache_dir()),
        plugins: None,
    };
    PluginHost::new(limits, dirs).expect("plugin host starts")
}

fn data_host(data: &std::path::Path) -> PluginHost {
    PluginHost::new(Limits::default(), HostDirs::in_data_dir(data)).expect("plugin host starts")
}

fn webhook(id: &str, config: &[(&str, &str)]) -> WebhookInput {
    let config: Vec<(String, String)> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    WebhookInput::new(id, "https://example.com/hook", &config)
}

fn to_sdk(request: &callisto::plugin::Request) -> sdk::Request {
    sdk::Request {
        content_type: request.content_type.clone(),
        headers: request.headers.clone(),
        body: request.body.clone(),
        signature: match request.signature {
            SignatureScheme::StandardWebhooks => sdk::SignatureScheme::StandardWebhooks,
            SignatureScheme::Europa => sdk::SignatureScheme::Europa,
            SignatureScheme::None => sdk::SignatureScheme::None,
        },
    }
}

fn golden(plugin: &str, case: &str) -> std::path::PathBuf {
    std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
    .join("../plugins")
    .join(plugin)
    .join("tests/golden")
    .join(format!("{case}.http"))
}

#[test]
fn builtins_are_embedded_and_describe_themselves() {
    let host = host();
    let names: Vec<String> = host.list().iter().map(|p| p.name().to_owned()).collect();
    assert_eq!(
        names,
        [
            "cloudevents",
            "default",
            "discord",
            "europa",
            "flux",
            "github-dispatch",
            "slack",
            "teams",
            "template"
        ]
    );
    for plugin in host.list() {
        assert!(plugin.is_builtin());
        // Built with the SDK: fan-out reaches them in one call per event.
        assert!(plugin.has_handle(), "{} lacks handle", plugin.name());
        assert_eq!(plugin.info().version, env!("CARGO_PKG_VERSION"));
        assert_eq!(plugin.sha256().len(), 64);
        assert!(!plugin.info().description.is_empty());
    }
    let slack = host.get("slack").unwrap();
    let keys: Vec<&str> = slack
        .info()
        .config_keys
        .iter()
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(keys, ["username", "icon_emoji", "channel"]);
}

/// The golden files the plugins' native tests write are what the compiled
/// components produce in the sandbox, byte for byte.
#[test]
fn builtins_in_the_sandbox_match_their_golden_files() {
    let host = host();
    let mut previous = sdk::testing::pushed("demo/app", "v1");
    previous.previous_digest =
        Some("sha256:1111111111111111111111111111111111111111111111111111111111111111".into());
    let mut hub = sdk::testing::pushed("library/alpine", "3.20");
    hub.source = sdk::EventSource::Remote;
    hub.repository.registry = Some("registry-1.docker.io".into());
    let sdk_webhook = sdk::testing::webhook(&[]);

    type Case = (
        &'static str,
        &'static str,
        sdk::Event,
        Vec<(&'static str, &'static str)>,
    );
    let cases: Vec<Case> = vec![
        ("default", "pushed", previous, vec![]),
        (
            "default",
            "deleted",
            sdk::testing::deleted("demo/app", "v1"),
            vec![],
        ),
        (
            "europa",
            "pushed",
            sdk::testing::pushed("demo/app", "v1"),
            vec![],
        ),
        (
            "europa",
            "deleted",
            sdk::testing::deleted("demo/app", "v1"),
            vec![],
        ),
        ("europa", "remote-dockerhub", hub, vec![]),
        (
            "slack",
            "pushed",
            sdk::testing::pushed("demo/app", "v1"),
            vec![],
        ),
        (
            "slack",
            "deleted",
            sdk::testing::deleted("demo/app", "v1"),
            vec![],
        ),
        (
            "slack",
            "webhook-test",
            sdk::testing::webhook_test("demo/app"),
            vec![("username", "callisto")],
        ),
        (
            "cloudevents",
            "pushed",
            sdk::testing::pushed("demo/app", "v1"),
            vec![],
        ),
        (
            "cloudevents",
            "deleted",
            sdk::testing::deleted("demo/app", "v1"),
            vec![("source", "urn:callisto:prod")],
        ),
        (
            "discord",
            "pushed",
            sdk::testing::pushed("demo/app", "v1"),
            vec![],
        ),
        (
            "teams",
            "deleted",
            sdk::testing::deleted("demo/app", "v1"),
            vec![("link", "https://registry.example.com/demo/app")],
        ),
        (
            "github-dispatch",
            "pushed",
            sdk::testing::pushed("demo/app", "v1"),
            vec![("token", "github_pat_0123456789abcdef")],
        ),
        (
            "flux",
            "pushed",
            sdk::testing::pushed("demo/app", "v1"),
            vec![],
        ),
        (
            "template",
            "deleted",
            sdk::testing::deleted("demo/app", "v1"),
            vec![
                ("template", "{{repository}}:{{tag}} {{type}}\n"),
                ("content_type", "text/plain; charset=utf-8"),
            ],
        ),
    ];
    for (plugin, case, event, config) in cases {
        let request = host
            .get(plugin)
            .unwrap()
            .run(
                &EventInput::from(&event),
                &webhook(&sdk_webhook.id, &config),
            )
            .unwrap_or_else(|e| panic!("{plugin}/{case}: {e}"))
            .unwrap_or_else(|| panic!("{plugin}/{case} filtered out"));
        sdk::testing::assert_golden(golden(plugin, case), &to_sdk(&request));
    }
}

/// The default plugin's body is the API's JSON of the same event.
#[test]
fn default_body_is_the_events_api_json() {
    let event = sdk::testing::pushed("demo/app", "v1");
    let request = host()
        .get("default")
        .unwrap()
        .run(&EventInput::from(&event), &webhook("wh_1", &[]))
        .unwrap()
        .unwrap();
    assert_eq!(request.body, serde_json::to_vec(&event).unwrap());
}

#[test]
fn europa_signature_matches_an_independent_hmac() {
    let event = sdk::testing::pushed("demo/app", "v1");
    let request = host()
        .get("europa")
        .unwrap()
        .run(&EventInput::from(&event), &webhook("wh_1", &[]))
        .unwrap()
        .unwrap();
    assert_eq!(request.signature, SignatureScheme::Europa);
    let secret = "s3cret-europa";
    let headers = signature::headers(
        request.signature,
        Some(secret),
        None,
        "dlv_1",
        1_700_000_000,
        &request.body,
    );
    assert_eq!(headers.len(), 1);
    assert_eq!(headers[0].0, "x-europa-signature");

    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&request.body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(headers[0].1, expected);
    // And nothing is sent without a secret.
    assert!(
        signature::headers(request.signature, None, None, "dlv_1", 1, &request.body).is_empty()
    );
}

#[test]
fn standard_filter_keys_apply_through_the_host() {
    let host = host();
    let plugin = host.get("default").unwrap();
    let run = |tag: &str, kind: sdk::EventType, config: &[(&str, &str)]| {
        let mut event = sdk::testing::pushed("demo/app", tag);
        event.kind = kind;
        plugin
            .run(&EventInput::from(&event), &webhook("wh_1", config))
            .unwrap()
            .is_some()
    };
    use sdk::EventType::*;
    assert!(run("v1", ImagePushed, &[("tags", "v*")]));
    assert!(!run("latest", ImagePushed, &[("tags", "v*")]));
    assert!(!run(
        "v1-rc1",
        ImagePushed,
        &[("tags", "v*"), ("exclude_tags", "*-rc*")]
    ));
    assert!(!run("v1", ImagePushed, &[("events", "image.deleted")]));
    assert!(run("v1", ImageDeleted, &[("events", "image.deleted")]));
    assert!(run("1.2", ImagePushed, &[("tag_regex", r"^\d+\.\d+$")]));
    assert!(!run(
        "1.2-beta",
        ImagePushed,
        &[("tag_regex", r"^\d+\.\d+$")]
    ));
    assert!(run("anything", WebhookTest, &[("tags", "v*")]));

    let refused = plugin
        .validate_config(&[("tag_regex".into(), "(".into())])
        .unwrap_err();
    assert!(matches!(refused, CallError::Returned { .. }), "{refused:?}");
    assert!(
        refused
            .to_string()
            .starts_with("plugin default: config key `tag_regex`"),
        "{refused}"
    );
}

/// The standard filter says which rule declined an event, on every call of
/// a warm instance: the reasons do not spend the plugin's log budget.
#[test]
fn a_filtered_event_says_which_rule_declined() {
    let host = host();
    let plugin = host.get("default").unwrap();
    let mut runner = Runner::new(4);
    let hook = webhook("wh_1", &[("tags", "v*"), ("exclude_tags", "*-rc*")]);
    for i in 0..150 {
        let event = EventInput::from(&sdk::testing::pushed("demo/app", &format!("x{i}")));
        match runner.run(&plugin, &event, &hook).unwrap() {
            Verdict::Filtered(filtered) => {
                assert_eq!(
                    filtered.reason.as_deref(),
                    Some(format!("tags=v*: tag `x{i}` matches none of the globs").as_str())
                );
                assert_eq!(filtered.rule(), "tags");
            }
            other => panic!("{other:?}"),
        }
    }
    let rc = EventInput::from(&sdk::testing::pushed("demo/app", "v2-rc1"));
    let Verdict::Filtered(filtered) = runner.run(&plugin, &rc, &hook).unwrap() else {
        panic!("v2-rc1 passed");
    };
    assert_eq!(filtered.rule(), "exclude_tags");
    assert_eq!(
        filtered.to_string(),
        "exclude_tags: tag `v2-rc1` matches `*-rc*`"
    );
    // A sent event carries no stale reason.
    let v1 = EventInput::from(&sdk::testing::pushed("demo/app", "v1"));
    assert!(matches!(
        runner.run(&plugin, &v1, &hook).unwrap(),
        Verdict::Send(_)
    ));
}

fn hostile(host: &PluginHost) -> callisto::plugin::Plugin {
    host.load(guests::HOSTILE).expect("hostile guest loads")
}

fn run_mode(host: &PluginHost, mode: &str) -> Result<Option<callisto::plugin::Request>, CallError> {
    let event = sdk::testing::pushed("demo/app", "v1");
    hostile(host).run(
        &EventInput::from(&event),
        &webhook("wh_1", &[("mode", mode)]),
    )
}

/// After a hostile call, the same host still serves other plugins.
fn still_serves(host: &PluginHost) {
    let event = sdk::testing::pushed("demo/app", "v1");
    let ok = host
        .get("default")
        .unwrap()
        .run(&EventInput::from(&event), &webhook("wh_2", &[]))
        .unwrap();
    assert!(ok.is_some());
}

#[test]
fn an_infinite_loop_is_stopped_at_the_deadline() {
    let host = host();
    let started = Instant::now();
    let err = run_mode(&host, "loop").unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        CallError::Fault {
            plugin,
            fault: Fault::Timeout { deadline },
        } => {
            assert_eq!(plugin, "hostile");
            assert_eq!(*deadline, Duration::from_millis(100));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "plugin hostile faulted: timed out after 100ms"
    );
    // Bounded, generously: the point is that it stopped at all.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    still_serves(&host);
}

#[test]
fn unbounded_allocation_stops_at_the_memory_cap() {
    let host = host();
    let err = run_mode(&host, "alloc").unwrap_err();
    assert!(
        matches!(&err, CallError::Fault { fault: Fault::Memory { limit }, .. } if *limit == 16 << 20),
        "{err:?}"
    );
    still_serves(&host);
}

/// Where the hostile guest panics in mode `trap`.
const HOSTILE_PANIC: &str =
    "panicked at tests/guests/hostile/src/lib.rs:27:25: hostile plugin panics on purpose";

#[test]
fn a_panic_is_reported_with_its_message_and_location() {
    let host = host();
    let err = run_mode(&host, "trap").unwrap_err();
    match &err {
        CallError::Fault {
            plugin,
            fault: Fault::Trap { message },
        } => {
            assert_eq!(plugin, "hostile");
            assert_eq!(message, HOSTILE_PANIC);
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("plugin hostile faulted: trapped: {HOSTILE_PANIC}")
    );
    still_serves(&host);

    // In `filter` too, through a warm instance.
    let event = EventInput::from(&sdk::testing::pushed("demo/app", "v1"));
    let mut runner = Runner::new(4);
    let in_filter = webhook("wh_f", &[("mode", "trap"), ("stage", "filter")]);
    let err = runner
        .run(&Arc::new(hostile(&host)), &event, &in_filter)
        .unwrap_err();
    assert!(err.to_string().ends_with(HOSTILE_PANIC), "{err}");
}

#[test]
fn a_100_mib_body_is_refused() {
    // Enough memory to build the body, so that the body cap is what stops it.
    let host = host_with(Limits {
        memory: 256 << 20,
        deadline: Duration::from_secs(10),
        instances: 8,
        ..Limits::default()
    });
    let err = run_mode(&host, "huge-body").unwrap_err();
    assert!(
        matches!(&err, CallError::Fault { fault: Fault::BodyTooLarge { size, limit }, .. }
            if *size == 100 << 20 && *limit == 1 << 20),
        "{err:?}"
    );
    still_serves(&host);
}

#[test]
fn errors_faults_and_bad_output_stay_distinct() {
    let host = host();
    let returned = run_mode(&host, "error").unwrap_err();
    assert!(
        matches!(returned, CallError::Returned { .. }),
        "{returned:?}"
    );
    assert_eq!(
        returned.to_string(),
        "plugin hostile: hostile plugin refuses on purpose"
    );
    assert_eq!(returned.kind(), "error");

    let injected = run_mode(&host, "inject-header").unwrap_err();
    assert!(
        matches!(injected, CallError::InvalidOutput { .. }),
        "{injected:?}"
    );
    assert!(injected.to_string().contains("x-injected"), "{injected}");

    // A plugin that logs without end is cut off, not fatal.
    assert!(run_mode(&host, "log-spam").unwrap().is_some());
}

/// A plugin's native test (`testing::run`) refuses what the sandbox
/// refuses, in the same words: the checks are one function.
#[test]
fn native_testing_refuses_what_the_sandbox_refuses() {
    use callisto_guest_hostile::Hostile;
    let host = host();
    let event = sdk::testing::pushed("demo/app", "v1");
    for mode in ["content-type-header", "inject-header"] {
        let native =
            sdk::testing::run::<Hostile>(&event, &sdk::testing::webhook(&[("mode", mode)]))
                .unwrap_err();
        let CallError::InvalidOutput { reason, .. } = run_mode(&host, mode).unwrap_err() else {
            panic!("{mode}: the sandbox did not refuse the output");
        };
        assert_eq!(native.to_string(), format!("invalid request: {reason}"));
    }
    assert_eq!(
        sdk::testing::run::<Hostile>(
            &event,
            &sdk::testing::webhook(&[("mode", "content-type-header")])
        )
        .unwrap_err(),
        sdk::testing::RunError::Invalid(sdk::RequestError::Reserved("content-type".into()))
    );
    // And passes what it passes, as the sandbox sends it.
    let sent = run_mode(&host, "none").unwrap().unwrap();
    let native = sdk::testing::run::<Hostile>(&event, &sdk::testing::webhook(&[("mode", "none")]))
        .unwrap()
        .unwrap();
    assert_eq!(to_sdk(&sent), native);
}

#[test]
fn a_fault_in_filter_is_caught_too() {
    let host = host();
    let event = sdk::testing::pushed("demo/app", "v1");
    let err = hostile(&host)
        .run(
            &EventInput::from(&event),
            &webhook("wh_1", &[("mode", "trap"), ("stage", "filter")]),
        )
        .unwrap_err();
    assert_eq!(err.kind(), "trap");
}

#[test]
fn a_component_of_another_world_is_rejected_naming_what_does_not_fit() {
    let err = host().load(guests::WRONG_WORLD).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LoadError::WorldMismatch { .. }), "{err:?}");
    assert!(msg.contains("missing export `validate-config`"), "{msg}");
    assert!(msg.contains("missing export `filter`"), "{msg}");
    assert!(msg.contains("missing export `format`"), "{msg}");
    assert!(msg.contains("imports `other:thing/secrets@1.0.0`"), "{msg}");
    assert!(
        msg.starts_with("does not fit world callisto:plugin/plugin@0.1.0"),
        "{msg}"
    );
}

#[test]
fn non_components_are_rejected() {
    let core_module = b"\0asm\x01\0\0\0";
    let err = host().load(core_module).unwrap_err();
    assert!(err.to_string().contains("core WebAssembly module"), "{err}");
    let err = host().load(b"hello").unwrap_err();
    assert!(matches!(err, LoadError::NotAComponent { .. }), "{err:?}");
}

#[test]
fn compiled_plugins_are_cached_on_disk_and_bad_artifacts_recompiled() {
    let data = tempfile::tempdir().unwrap();
    let first = data_host(data.path());
    let sha = first.get("default").unwrap().sha256().to_owned();
    drop(first);
    let cached: Vec<_> = std::fs::read_dir(data.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 9, "{cached:?}");
    let default_artifact = cached
        .iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&sha))
        .expect("artifact named by the wasm's hash");

    // A damaged artifact is not trusted: it is recompiled and replaced.
    std::fs::write(default_artifact, b"garbage").unwrap();
    let second = data_host(data.path());
    still_serves(&second);
    assert!(std::fs::metadata(default_artifact).unwrap().len() > 1000);
}

#[test]
fn installed_plugins_persist_and_replace_atomically() {
    let data = tempfile::tempdir().unwrap();
    let host = data_host(data.path());
    let installed = host.install("hostile", guests::HOSTILE).unwrap();
    assert!(!installed.is_builtin());
    assert!(data.path().join("plugins/hostile.wasm").exists());

    // The name in the URL must be the name the component gives itself.
    let err = host.install("other-name", guests::HOSTILE).unwrap_err();
    assert!(matches!(err, LoadError::NameMismatch { .. }), "{err}");
    // Built-ins cannot be shadowed or removed.
    assert!(matches!(
        host.remove("default"),
        Err(LoadError::Builtin { .. })
    ));

    // Replacing: a caller holding the old plugin keeps a working plugin.
    let held = host.get("hostile").unwrap();
    let replaced = host.install("hostile", guests::HOSTILE).unwrap();
    assert!(!Arc::ptr_eq(&held, &replaced));
    let event = sdk::testing::pushed("demo/app", "v1");
    assert!(
        held.run(&EventInput::from(&event), &webhook("wh_1", &[]))
            .unwrap()
            .is_some()
    );

    // A new host finds it in the data directory.
    drop(host);
    let reopened = data_host(data.path());
    assert!(reopened.get("hostile").is_some());
    reopened.remove("hostile").unwrap();
    assert!(reopened.get("hostile").is_none());
    assert!(!data.path().join("plugins/hostile.wasm").exists());
}

#[test]
fn a_broken_installed_plugin_is_skipped_not_fatal() {
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(data.path().join("plugins")).unwrap();
    std::fs::write(data.path().join("plugins/broken.wasm"), b"not wasm").unwrap();
    let host = data_host(data.path());
    assert!(host.get("broken").is_none());
    let errors = host.startup_errors();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].1.contains("not a WebAssembly component"),
        "{errors:?}"
    );
}

/// Warm instances are per webhook: a guest that counts its calls in static
/// state counts each webhook's calls separately.
#[test]
fn runner_reuses_instances_per_webhook_and_never_across_webhooks() {
    let host = host();
    let plugin = Arc::new(hostile(&host));
    let event = EventInput::from(&sdk::testing::pushed("demo/app", "v1"));
    let a = webhook("wh_a", &[("mode", "count")]);
    let b = webhook("wh_b", &[("mode", "count")]);
    let mut runner = Runner::new(16);
    let mut count = |w: &WebhookInput| {
        let request = runner
            .run(&plugin, &event, w)
            .unwrap()
            .into_request()
            .unwrap();
        String::from_utf8(request.body).unwrap()
    };
    assert_eq!(count(&a), "1");
    assert_eq!(count(&a), "2");
    assert_eq!(count(&b), "1");
    assert_eq!(count(&a), "3");
    assert_eq!(count(&b), "2");
}

#[test]
fn runner_recycles_after_a_fault_and_evicts_beyond_capacity() {
    let host = host();
    let plugin = Arc::new(hostile(&host));
    let event = EventInput::from(&sdk::testing::pushed("demo/app", "v1"));
    let mut runner = Runner::new(2);
    let trap = webhook("wh_t", &[("mode", "trap")]);
    assert_eq!(
        runner.run(&plugin, &event, &trap).unwrap_err().kind(),
        "trap"
    );
    assert_eq!(runner.len(), 0, "a faulted instance is dropped");

    let count = webhook("wh_c", &[("mode", "count")]);
    runner.run(&plugin, &event, &count).unwrap();
    runner.run(&plugin, &event, &webhook("wh_d", &[])).unwrap();
    runner.run(&plugin, &event, &webhook("wh_e", &[])).unwrap();
    assert_eq!(runner.len(), 2);
    // wh_c was least recently used, so its count starts again.
    let again = runner
        .run(&plugin, &event, &count)
        .unwrap()
        .into_request()
        .unwrap();
    assert_eq!(again.body, b"1");
}
