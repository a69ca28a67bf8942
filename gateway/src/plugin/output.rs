//! What a plugin returns, checked before the host will send it.

use super::bindings::wit;
use super::error::{CallError, Fault};
use crate::records::{Request, SignatureScheme};

/// Headers the host owns: framing, connection management and signatures. A
/// plugin that sets one would either break the request or forge what the
/// host vouches for.
const RESERVED: [&str; 15] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// At most this many extra headers.
const MAX_HEADERS: usize = 64;

pub(crate) fn check(
    plugin: &str,
    request: wit::Request,
    max_body: usize,
) -> Result<Request, CallError> {
    let invalid = |reason: String| CallError::InvalidOutput {
        plugin: plugin.to_owned(),
        reason,
    };
    if request.body.len() > max_body {
        return Err(CallError::Fault {
            plugin: plugin.to_owned(),
            fault: Fault::BodyTooLarge {
                size: request.body.len(),
                limit: max_body,
            },
        });
    }
    if http::HeaderValue::from_str(&request.content_type).is_err()
        || request.content_type.is_empty()
    {
        return Err(invalid(format!(
            "content type {:?} is not a valid header value",
            request.content_type
        )));
    }
    if request.headers.len() > MAX_HEADERS {
        return Err(invalid(format!(
            "{} headers, more than the {MAX_HEADERS} allowed",
            request.headers.len()
        )));
    }
    for (name, value) in &request.headers {
        let parsed = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("header name {name:?} is not valid HTTP")))?;
        let lower = parsed.as_str();
        if RESERVED.contains(&lower) || lower.starts_with("x-europa-signature") {
            return Err(invalid(format!(
                "header `{lower}` is set by the host, not by plugins"
            )));
        }
        http::HeaderValue::from_str(value).map_err(|_| {
            invalid(format!(
                "value of header `{lower}` is not valid HTTP (control characters?)"
            ))
        })?;
    }
    Ok(Request {
        content_type: request.content_type,
        headers: request
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        body: request.body,
        signature: match request.signature {
            wit::SignatureScheme::StandardWebhooks => SignatureScheme::StandardWebhooks,
            wit::SignatureScheme::Europa => SignatureScheme::Europa,
            wit::SignatureScheme::None => SignatureScheme::None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> wit::Request {
        wit::Request {
            content_type: "application/json".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: b"{}".to_vec(),
            signature: wit::SignatureScheme::StandardWebhooks,
        }
    }

    fn reason(headers: &[(&str, &str)]) -> String {
        match check("p", request(headers), 1024) {
            Err(CallError::InvalidOutput { reason, .. }) => reason,
            other => panic!("expected invalid output, got {other:?}"),
        }
    }

    #[test]
    fn accepts_ordinary_headers_lowercased() {
        let ok = check("p", request(&[("X-Custom", "1")]), 1024).unwrap();
        assert_eq!(ok.headers, vec![("x-custom".to_string(), "1".to_string())]);
    }

    #[test]
    fn refuses_host_owned_and_injected_headers() {
        assert!(reason(&[("Host", "evil")]).contains("`host`"));
        assert!(reason(&[("Content-Length", "1")]).contains("content-length"));
        assert!(reason(&[("webhook-signature", "v1,forged")]).contains("webhook-signature"));
        assert!(reason(&[("X-Europa-Signature", "x")]).contains("x-europa-signature"));
        assert!(reason(&[("Transfer-Encoding", "chunked")]).contains("transfer-encoding"));
        assert!(reason(&[("x-a", "1\r\nx-b: 2")]).contains("not valid HTTP"));
        assert!(reason(&[("bad name", "1")]).contains("not valid HTTP"));
        assert!(reason(&[("x-a\r\n", "1")]).contains("not valid HTTP"));
    }

    #[test]
    fn refuses_an_oversized_body_as_a_fault() {
        let mut big = request(&[]);
        big.body = vec![b'a'; 2048];
        match check("p", big, 1024) {
            Err(CallError::Fault {
                fault:
                    Fault::BodyTooLarge {
                        size: 2048,
                        limit: 1024,
                    },
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }
}
