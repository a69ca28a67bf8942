//! Entry points for `cargo fuzz` (see `fuzz/`): the places where untrusted
//! bytes enter the gateway, each checked for the invariants it promises.
//! Built only with the `fuzzing` feature.

use crate::config::{Config, Flags};
use crate::ingest::distribution::{Envelope, accept, classify};

/// A registry's notification body: parsed, classified and prepared as the
/// ingest route does. Must never panic; what it accepts must be coherent.
pub fn envelope(bytes: &[u8]) {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(bytes) else {
        return;
    };
    for n in &envelope.events {
        // The name rule ingest applies first: never a panic, and what it
        // passes is a plain lowercase ASCII path.
        if crate::records::check_repository_name(&n.target.repository).is_ok() {
            let name = &n.target.repository;
            assert!(name.len() <= 255 && name.is_ascii() && !name.contains("//"));
            assert_eq!(name, &name.to_ascii_lowercase());
        }
        if let Ok(change) = classify(n) {
            let accepted = accept(n, change);
            assert!(accepted.dedupe_key.contains(&n.id));
            assert_eq!(accepted.repository, n.target.repository);
        }
    }
}

/// A configuration file plus environment variables: an error or a valid
/// configuration, never a panic.
pub fn config(toml: &str, env: Vec<(String, String)>) {
    let dir = std::env::temp_dir().join(format!("callisto-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("callisto.toml");
    if std::fs::write(&file, toml).is_err() {
        return;
    }
    if let Ok(config) = Config::load(Some(&file), env, &Flags::default()) {
        config.validate().expect("a loaded configuration is valid");
    }
}

/// What a plugin returns: refused, or safe to put on the wire as it is.
pub fn plugin_output(
    content_type: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    scheme: u8,
) {
    match crate::plugin::check_output_for_fuzzing(content_type, headers, body, scheme, 1 << 16) {
        Ok(request) => {
            assert!(http::HeaderValue::from_str(&request.content_type).is_ok());
            for (name, value) in &request.headers {
                let name = http::HeaderName::from_bytes(name.as_bytes())
                    .expect("a checked header name is valid");
                assert!(
                    ![
                        "host",
                        "content-length",
                        "transfer-encoding",
                        "webhook-signature"
                    ]
                    .contains(&name.as_str())
                );
                assert!(http::HeaderValue::from_str(value).is_ok());
                assert!(!value.contains('\r') && !value.contains('\n'));
            }
            assert!(request.body.len() <= 1 << 16);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
