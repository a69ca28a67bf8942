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
pub fn headers(
    scheme: SignatureScheme,
    secret: Option<&str>,
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
                let mut mac = hmac(&standard_key(secret));
                mac.update(message_id.as_bytes());
                mac.update(b".");
                mac.update(timestamp.to_string().as_bytes());
                mac.update(b".");
                mac.update(body);
                let sig = STANDARD.encode(mac.finalize().into_bytes());
                headers.push(("webhook-signature", format!("v1,{sig}")));
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
        let std = headers(SignatureScheme::StandardWebhooks, None, "m", 1, b"x");
        assert_eq!(std.len(), 2);
        assert!(headers(SignatureScheme::Europa, None, "m", 1, b"x").is_empty());
        assert!(headers(SignatureScheme::None, Some("s"), "m", 1, b"x").is_empty());
    }
}
