//! Signing: the host, never the plugin, holds the secret.
//!
//! Standard Webhooks (<https://www.standardwebhooks.com/>): `webhook-id`,
//! `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">`. A secret of the form `whsec_<base64>` is
//! keyed by its decoded bytes, any other by its UTF-8 bytes. The id and the
//! timestamp are sent even without a secret, so receivers can de-duplicate.
//!
//! Europa: `x-europa-signature: <base64 HMAC-SHA256 of the body>` keyed by
//! the UTF-8 secret, only when there is a secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::plugin::SignatureScheme;

/// The headers that sign one attempt. `timestamp` is the attempt's Unix time
/// in seconds: receivers reject stale ones, so it is computed per attempt,
/// while `message_id` stays the same across attempts.
///
/// `previous` is the secret before a rotation, during its grace period:
/// Standard Webhooks carries a second signature with it, space-separated
/// after the first, as the specification allows; Europa has room for one
/// and signs with `secret` only.
pub fn headers(
    scheme: SignatureScheme,
    secret: Option<&str>,
    previous: Option<&str>,
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    match scheme {
        SignatureScheme::StandardWebhooks => {
            let mut headers = vec![
                ("webhook-id", message_id.to_owned()),
                ("webhook-timestamp", timestamp.to_string()),
            ];
            if let Some(secret) = secret {
                let timestamp = timestamp.to_string();
                let sign = |secret: &str| {
                    let mut mac = hmac(&standard_key(secret));
                    mac.update(message_id.as_bytes());
                    mac.update(b".");
                    mac.update(timestamp.as_bytes());
                    mac.update(b".");
                    mac.update(body);
                    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
                };
                let mut value = sign(secret);
                if let Some(previous) = previous {
                    value.push(' ');
                    value.push_str(&sign(previous));
                }
                headers.push(("webhook-signature", value));
            }
            headers
        }
        SignatureScheme::Europa => match secret {
            Some(secret) => {
                let mut mac = hmac(secret.as_bytes());
                mac.update(body);
                vec![(
                    "x-europa-signature",
                    STANDARD.encode(mac.finalize().into_bytes()),
                )]
            }
            None => Vec::new(),
        },
        SignatureScheme::None => Vec::new(),
    }
}

fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b64| STANDARD.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference
    /// libraries.
    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        let headers = headers(
            SignatureScheme::StandardWebhooks,
            Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            None,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            headers[2],
            (
                "webhook-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_owned()
            )
        );
    }

    #[test]
    fn unsigned_without_a_secret() {
        let std = headers(SignatureScheme::StandardWebhooks, None, None, "m", 1, b"x");
        assert_eq!(std.len(), 2);
        assert!(headers(SignatureScheme::Europa, None, None, "m", 1, b"x").is_empty());
        assert!(headers(SignatureScheme::None, Some("s"), None, "m", 1, b"x").is_empty());
    }

    #[test]
    fn a_rotation_carries_both_signatures_new_first() {
        let sign = |secret, previous| {
            headers(
                SignatureScheme::StandardWebhooks,
                Some(secret),
                previous,
                "m",
                1,
                b"x",
            )
            .pop()
            .unwrap()
            .1
        };
        let (new, old) = (sign("new", None), sign("old", None));
        assert_eq!(sign("new", Some("old")), format!("{new} {old}"));
        let europa = headers(
            SignatureScheme::Europa,
            Some("new"),
            Some("old"),
            "m",
            1,
            b"x",
        );
        assert_eq!(europa.len(), 1);
        assert!(!europa[0].1.contains(' '));
    }
}
