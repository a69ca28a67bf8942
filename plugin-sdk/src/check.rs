//! The host's checks of the request a plugin returns: one function, used by
//! the gateway (which refuses, as the plugin's error, what fails them) and by
//! [`testing::run`](crate::testing::run), so that a plugin's native test
//! fails exactly where the sandbox would. Native only: a component does not
//! carry them, the host checks for it.

use crate::Request;

/// The largest body the host sends by default: 1 MiB (a gateway may set
/// another with `plugins.max_body_kib`).
pub const MAX_BODY: usize = 1 << 20;

/// At most this many headers besides `content-type`.
pub const MAX_HEADERS: usize = 64;

/// Headers the host owns: framing, connection management and signatures. A
/// plugin that sets one would either break the request or forge what the
/// host vouches for. `content-type` is [`Request::content_type`]; any header
/// starting with `x-europa-signature` is refused too.
pub const RESERVED_HEADERS: [&str; 15] = [
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

/// Why the host will not send a request a plugin returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The body is over the host's limit (a fault of the plugin's: it is not
    /// retried, and a gateway reports it as such).
    #[error("a body of {size} bytes, over the limit of {limit}")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("content type {0:?} is not a valid header value")]
    ContentType(String),
    #[error("{0} headers, more than the {MAX_HEADERS} allowed")]
    TooManyHeaders(usize),
    #[error("header name {0:?} is not valid HTTP")]
    HeaderName(String),
    /// One of [`RESERVED_HEADERS`] (named in lowercase).
    #[error("header `{0}` is set by the host, not by plugins")]
    Reserved(String),
    #[error("value of header `{0}` is not valid HTTP (control characters?)")]
    HeaderValue(String),
}

impl Request {
    /// What the host does to a request before it sends it: refuses a body
    /// over `max_body` bytes ([`MAX_BODY`] by default), a content type that
    /// is empty or not a valid header value, more than [`MAX_HEADERS`]
    /// headers, a header name or value that is not valid HTTP, and the
    /// [`RESERVED_HEADERS`]. Returns the request as it is sent, header
    /// names in lowercase.
    pub fn check(self, max_body: usize) -> Result<Request, RequestError> {
        if self.body.len() > max_body {
            return Err(RequestError::BodyTooLarge {
                size: self.body.len(),
                limit: max_body,
            });
        }
        if self.content_type.is_empty() || http::HeaderValue::from_str(&self.content_type).is_err()
        {
            return Err(RequestError::ContentType(self.content_type));
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(RequestError::TooManyHeaders(self.headers.len()));
        }
        for (name, value) in &self.headers {
            let parsed = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| RequestError::HeaderName(name.clone()))?;
            let lower = parsed.as_str();
            if RESERVED_HEADERS.contains(&lower) || lower.starts_with("x-europa-signature") {
                return Err(RequestError::Reserved(lower.to_owned()));
            }
            if http::HeaderValue::from_str(value).is_err() {
                return Err(RequestError::HeaderValue(lower.to_owned()));
            }
        }
        Ok(Request {
            headers: self
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            ..self
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        headers.iter().fold(
            Request::new("application/json", b"{}".to_vec()),
            |r, (k, v)| r.header(k, v),
        )
    }

    fn refused(headers: &[(&str, &str)]) -> String {
        request(headers).check(MAX_BODY).unwrap_err().to_string()
    }

    #[test]
    fn ordinary_headers_pass_in_lowercase() {
        let ok = request(&[("X-Custom", "1")]).check(MAX_BODY).unwrap();
        assert_eq!(ok.headers, vec![("x-custom".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn what_the_host_owns_or_cannot_send_is_refused() {
        assert_eq!(
            request(&[("Content-Type", "text/plain")]).check(MAX_BODY),
            Err(RequestError::Reserved("content-type".into()))
        );
        assert!(refused(&[("Host", "evil")]).contains("`host`"));
        assert!(refused(&[("X-Europa-Signature-2", "x")]).contains("x-europa-signature"));
        assert!(refused(&[("x-a", "1\r\nx-b: 2")]).contains("not valid HTTP"));
        assert!(refused(&[("bad name", "1")]).contains("not valid HTTP"));
        let many: Vec<(String, String)> = (0..65).map(|i| (format!("x-{i}"), "1".into())).collect();
        let too_many = Request {
            headers: many,
            ..request(&[])
        };
        assert_eq!(
            too_many.check(MAX_BODY),
            Err(RequestError::TooManyHeaders(65))
        );
        assert_eq!(
            Request::new("", Vec::new()).check(MAX_BODY),
            Err(RequestError::ContentType(String::new()))
        );
        assert_eq!(
            Request::new("text/plain", vec![0; 11]).check(10),
            Err(RequestError::BodyTooLarge {
                size: 11,
                limit: 10
            })
        );
    }
}
