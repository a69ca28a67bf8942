//! What a plugin returns, checked before the host will send it. The rules
//! are the SDK's ([`sdk::Request::check`]), so that a plugin's native test
//! (`testing::run`) refuses what the host refuses; here they are applied
//! and their verdict mapped to the host's errors.

use callisto_plugin_sdk as sdk;

use super::bindings::wit;
use super::error::{CallError, Fault};
use crate::records::{Request, SignatureScheme};

pub(crate) fn check(
    plugin: &str,
    request: wit::Request,
    max_body: usize,
) -> Result<Request, CallError> {
    let request = sdk::Request {
        content_type: request.content_type,
        headers: request.headers,
        body: request.body,
        signature: match request.signature {
            wit::SignatureScheme::StandardWebhooks => sdk::SignatureScheme::StandardWebhooks,
            wit::SignatureScheme::Europa => sdk::SignatureScheme::Europa,
            wit::SignatureScheme::None => sdk::SignatureScheme::None,
        },
    };
    match request.check(max_body) {
        Ok(request) => Ok(Request {
            content_type: request.content_type,
            headers: request.headers,
            body: request.body,
            signature: match request.signature {
                sdk::SignatureScheme::StandardWebhooks => SignatureScheme::StandardWebhooks,
                sdk::SignatureScheme::Europa => SignatureScheme::Europa,
                sdk::SignatureScheme::None => SignatureScheme::None,
            },
        }),
        Err(sdk::RequestError::BodyTooLarge { size, limit }) => Err(CallError::Fault {
            plugin: plugin.to_owned(),
            fault: Fault::BodyTooLarge { size, limit },
        }),
        Err(refused) => Err(CallError::InvalidOutput {
            plugin: plugin.to_owned(),
            reason: refused.to_string(),
        }),
    }
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
