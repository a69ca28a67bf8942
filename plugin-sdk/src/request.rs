use serde::Serialize;

/// How the host signs a request before each attempt. The secret never enters
/// a plugin; a plugin only picks the scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureScheme {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    #[default]
    StandardWebhooks,
    /// `x-europa-signature`: base64 HMAC-SHA256 of the body, keyed by the
    /// UTF-8 secret; only when the webhook has a secret.
    Europa,
    /// No signature headers.
    None,
}

/// The HTTP request a plugin wants sent: always a POST to the webhook's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub content_type: String,
    /// Extra headers. The host refuses `host`, `content-length`,
    /// `content-type` (the field above), hop-by-hop and signature headers,
    /// and anything that is not valid HTTP: see [`Request::check`], which a
    /// native test runs through [`testing::run`](crate::testing::run).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub signature: SignatureScheme,
}

impl Request {
    /// A request with this content type and body, signed with Standard
    /// Webhooks.
    pub fn new(content_type: &str, body: Vec<u8>) -> Self {
        Self {
            content_type: content_type.to_owned(),
            headers: Vec::new(),
            body,
            signature: SignatureScheme::default(),
        }
    }

    /// `application/json` with `value` serialized compactly.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Self {
        // Most webhook bodies are under a kilobyte: one allocation, not a
        // doubling series of them (it shows in the sandbox's per-event cost).
        let mut body = Vec::with_capacity(1024);
        serde_json::to_writer(&mut body, value).expect("JSON values always serialize");
        Self::new("application/json", body)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn signature(mut self, scheme: SignatureScheme) -> Self {
        self.signature = scheme;
        self
    }

    /// The body as text, for assertions in tests.
    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("<binary body>")
    }

    /// The body parsed as JSON, for assertions in tests.
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// The value of a header this plugin set (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
