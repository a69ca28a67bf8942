//! Events and webhooks for plugins' native unit tests.
//!
//! ```
//! use callisto_plugin_sdk::testing;
//! let event = testing::pushed("demo/app", "v1");
//! let webhook = testing::webhook(&[("tags", "v*")]);
//! assert!(callisto_plugin_sdk::filter::standard(&event, &webhook.config));
//! ```

use crate::{Config, Event, EventSource, EventType, Repository, Timestamp, Webhook};

/// A fixed digest so that golden outputs stay stable.
pub const DIGEST: &str = "sha256:a2293004e1641d49c7d7341229010c763ee4bf9d76adb835fcc8c8ba3af87582";

/// An `image.pushed` of `name:tag` on a local registry at `127.0.0.1:5000`,
/// at a fixed time (2026-11-28T20:25:52.778Z) with fixed ids.
pub fn pushed(name: &str, tag: &str) -> Event {
    Event {
        id: "evt_01KB5ZJ0GA0000000000000000".to_owned(),
        kind: EventType::ImagePushed,
        source: EventSource::Local,
        repository: Repository {
            id: "repo_01KB5ZHZ000000000000000000".to_owned(),
            name: name.to_owned(),
            registry: Some("127.0.0.1:5000".to_owned()),
        },
        tag: Some(tag.to_owned()),
        digest: Some(DIGEST.to_owned()),
        previous_digest: None,
        media_type: Some("application/vnd.oci.image.manifest.v1+json".to_owned()),
        size: Some(401),
        actor: None,
        occurred_at: Timestamp {
            seconds: 1_795_897_552,
            nanoseconds: 778_574_819,
        },
    }
}

/// An `image.deleted` of `name:tag`, otherwise like [`pushed`].
pub fn deleted(name: &str, tag: &str) -> Event {
    Event {
        kind: EventType::ImageDeleted,
        media_type: None,
        size: None,
        ..pushed(name, tag)
    }
}

/// The `webhook.test` event "Test Webhook" sends for `name`.
pub fn webhook_test(name: &str) -> Event {
    Event {
        kind: EventType::WebhookTest,
        ..pushed(name, "latest")
    }
}

/// A webhook to `https://example.com/hook` with this configuration.
pub fn webhook(config: &[(&str, &str)]) -> Webhook {
    Webhook {
        id: "wh_01KB5ZHZ000000000000000000".to_owned(),
        url: "https://example.com/hook".to_owned(),
        config: config.iter().copied().collect::<Config>(),
    }
}

/// Why [`run`] produced no request where the sandbox would not either.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// `validate_config` refused the webhook's configuration: the gateway
    /// would not have saved the webhook.
    #[error("configuration refused: {0}")]
    Config(String),
    /// `format` returned an error: the delivery fails with this message.
    #[error("format failed: {0}")]
    Format(String),
    /// The request is one the host will not send ([`Request::check`]).
    #[error("invalid request: {0}")]
    Invalid(#[from] crate::RequestError),
}

/// What the gateway does with `event` for `webhook`, natively:
/// `validate_config`, `filter`, then `format`, then the host's own checks of
/// the request ([`Request::check`] with the default body limit). `Ok(None)`:
/// filtered out. A plugin whose test passes through `run` is refused by the
/// sandbox for none of these reasons; what only the sandbox enforces is
/// time, memory and the absence of a filesystem, network and clock.
///
/// ```
/// use callisto_plugin_sdk::{testing, Event, Plugin, PluginInfo, Request, Webhook};
///
/// struct Typed;
/// impl Plugin for Typed {
///     fn describe() -> PluginInfo {
///         PluginInfo::new("typed", "0.1.0", "sets its content type the wrong way")
///     }
///     fn format(event: &Event, _: &Webhook) -> Result<Request, String> {
///         Ok(Request::new("application/json", event.to_json()).header("Content-Type", "text/plain"))
///     }
/// }
///
/// let event = testing::pushed("demo/app", "v1");
/// let err = testing::run::<Typed>(&event, &testing::webhook(&[])).unwrap_err();
/// assert_eq!(err.to_string(), "invalid request: header `content-type` is set by the host, not by plugins");
/// ```
///
/// [`Request::check`]: crate::Request::check
#[cfg(not(target_arch = "wasm32"))]
pub fn run<P: crate::Plugin>(
    event: &Event,
    webhook: &Webhook,
) -> Result<Option<crate::Request>, RunError> {
    P::validate_config(&webhook.config).map_err(RunError::Config)?;
    if !P::filter(event, webhook) {
        return Ok(None);
    }
    let request = P::format(event, webhook).map_err(RunError::Format)?;
    Ok(Some(request.check(crate::MAX_BODY)?))
}

/// A request rendered as text for golden files: `content-type`, the
/// plugin's headers in order, the signature scheme, a blank line, then the
/// body byte for byte.
pub fn render(request: &crate::Request) -> Vec<u8> {
    let mut out = format!("content-type: {}\n", request.content_type);
    for (name, value) in &request.headers {
        out.push_str(&format!("{name}: {value}\n"));
    }
    let scheme = match request.signature {
        crate::SignatureScheme::StandardWebhooks => "standard-webhooks",
        crate::SignatureScheme::Europa => "europa",
        crate::SignatureScheme::None => "none",
    };
    out.push_str(&format!("signature: {scheme}\n\n"));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&request.body);
    bytes
}

/// Compares `request` with the golden file at `path`, byte for byte. A
/// mismatch (or a missing file) panics at the caller's line, so the failure
/// points at the test, not at the SDK.
///
/// Regenerating golden files is a deliberate act: set `CALLISTO_BLESS=1` to
/// write `path` instead of comparing, then review the diff.
#[track_caller]
pub fn assert_golden(path: impl AsRef<std::path::Path>, request: &crate::Request) {
    let path = path.as_ref();
    let actual = render(request);
    if std::env::var_os("CALLISTO_BLESS").is_some_and(|v| v == "1") {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create golden directory");
        }
        std::fs::write(path, &actual).expect("write golden file");
        return;
    }
    // No closures from here on: a panic in one would name this file, not
    // the caller's test (`#[track_caller]` does not reach into closures).
    let expected = match std::fs::read(path) {
        Ok(expected) => expected,
        Err(e) => panic!(
            "cannot read golden file {}: {e} (run with CALLISTO_BLESS=1 to create it)",
            path.display()
        ),
    };
    if actual != expected {
        panic!(
            "{} differs from the plugin's output (CALLISTO_BLESS=1 regenerates it)\n--- expected\n{}\n--- actual\n{}",
            path.display(),
            String::from_utf8_lossy(&expected),
            String::from_utf8_lossy(&actual)
        );
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use std::panic::Location;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Runs `f`, expecting a panic; returns the line it was reported at.
    fn panic_line(f: impl FnOnce() + std::panic::UnwindSafe) -> u32 {
        let seen: Arc<Mutex<Option<(String, u32)>>> = Arc::default();
        let hook_seen = seen.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(at) = info.location() {
                *hook_seen.lock().unwrap() = Some((at.file().to_owned(), at.line()));
            }
        }));
        let result = std::panic::catch_unwind(f);
        std::panic::set_hook(previous);
        assert!(result.is_err(), "no panic");
        let (file, line) = seen.lock().unwrap().take().expect("a location");
        // This test lives in the SDK's own file: the line tells them apart.
        assert_eq!(file, file!());
        line
    }

    #[test]
    fn golden_failures_point_at_the_callers_line() {
        let dir = std::env::temp_dir().join(format!("callisto-golden-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let request = crate::Request::new("text/plain", b"hello".to_vec());

        let missing = dir.join("missing.http");
        let here = Location::caller().line() + 1;
        let line = panic_line(|| assert_golden(&missing, &request));
        assert_eq!(line, here);

        let differs = dir.join("differs.http");
        std::fs::write(&differs, b"something else").unwrap();
        let here = Location::caller().line() + 1;
        let line = panic_line(|| assert_golden(&differs, &request));
        assert_eq!(line, here);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
