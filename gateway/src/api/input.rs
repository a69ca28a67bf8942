//! Request bodies of the admin API, and their validation. Everything a user
//! types is checked here, with a message naming the field and the problem.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiError;
use crate::records::{DeliveryOrder, InitialSync, RepositoryKind};

/// Largest JSON body of the admin API.
pub const MAX_JSON_BODY: usize = 1 << 20;

/// `axum::Json`, with errors in the API's shape.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(axum::http::header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            if !ct
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
            {
                return Err(ApiError::new(
                    axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!("expected application/json, got `{ct}`"),
                ));
            }
        }
        let deadline = BodyDeadline::of(req.extensions());
        let bytes = read_body(req.into_body(), MAX_JSON_BODY, deadline).await?;
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
            bytes::Bytes::from_static(b"{}")
        } else {
            bytes
        };
        // The error names the field at fault (`webhooks[0].url: ...`), not
        // only a column of a line.
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let reason = e.inner();
            ApiError::bad_request(if path == "." {
                format!("invalid JSON body: {reason}")
            } else {
                format!("invalid JSON body: {path}: {reason}")
            })
        })?;
        de.end()
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
        Ok(ApiJson(value))
    }
}

/// `axum::extract::Query`, with errors in the API's shape. Empty values
/// (`?before=`) count as absent.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        axum::extract::Query::<T>::try_from_uri(
            &format!("/?{encoded}").parse().expect("a valid URI"),
        )
        .map(|q| ApiQuery(q.0))
        .map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))
    }
}

/// `axum::extract::Path`, with errors in the API's shape.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.body_text())))
    }
}

/// A list given as a JSON array or as a comma-separated string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum StringList {
    List(Vec<String>),
    Text(String),
}

impl StringList {
    pub fn into_vec(self) -> Vec<String> {
        let items = match self {
            StringList::List(items) => items,
            StringList::Text(text) => text.split(',').map(str::to_owned).collect(),
        };
        items
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    /// A password or token. Write-only: never returned.
    pub password: String,
}

/// `POST /api/v1/repositories`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepositoryInput {
    /// `demo/app`; for remote repositories also `alpine`,
    /// `docker.io/library/alpine`, `ghcr.io/owner/image`.
    pub name: String,
    /// `local` (default) or `remote`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<RepositoryKind>,
    /// Local: only notifications from this registry host match. Remote: the
    /// registry to poll (default: from the name, else Docker Hub).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// Remote: seconds between polls (default 60, at least 10, at most a
    /// week).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 10, maximum = 604800)]
    pub poll_interval_secs: Option<u64>,
    /// Remote: `notify` (one event per existing tag) or `silent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_sync: Option<InitialSync>,
    /// Remote: plain HTTP instead of HTTPS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    /// Remote: registry credentials. Write-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    /// Remote: only tags matching one of these globs are polled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<StringList>,
    /// Remote: tags matching these globs are not polled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_tags: Option<StringList>,
    /// Remote: poll at most this many tags (newest first where known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tags: Option<u32>,
    /// Webhooks created with the repository, in the same request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookInput>,
}

/// `PATCH /api/v1/repositories/{id}`: fields to change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepositoryPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_interval_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_sync: Option<InitialSync>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    /// `null` removes the credentials.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Credentials>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Option<Credentials>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<StringList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_tags: Option<StringList>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tags: Option<Option<u32>>,
}

/// A webhook to create (or to test before creating it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// `http` or `https`, without credentials.
    pub url: String,
    /// The signing secret, or `"generate"` for a new `whsec_` secret that
    /// the answer shows once. Write-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Plugin name (default `default`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Plugin configuration: strings, numbers, booleans, or lists (joined
    /// with commas).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, serde_json::Value>>,
    /// Default true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Delays between attempts, overriding the gateway's schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_schedule_secs: Option<Vec<u64>>,
    /// Headers sent with every attempt, name → value (e.g. a receiver's
    /// API key). Refused like a plugin's: `host`, hop-by-hop, signature
    /// and framing headers, invalid names or values (CR/LF), more than 64.
    /// They replace a plugin's header of the same name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Attempts per second at most (1-10000), retries and redeliveries
    /// included. Default: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000)]
    pub rate_limit_per_sec: Option<u32>,
    /// `parallel` (default) or `fifo`: one delivery in flight, the next
    /// waits until it succeeds or dies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering: Option<DeliveryOrder>,
    /// Days its finished deliveries are kept (1-3650), instead of the
    /// gateway's `retention_days`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3650)]
    pub retention_days: Option<u32>,
    /// Seconds (1-3600) to gather a burst of events into one delivery: the
    /// first event's delivery waits this long, and each later event of
    /// the burst takes its place (its request is sent, the earlier events'
    /// ids go in the `callisto-folded-events` header, at most 100 per
    /// delivery). Default: every event is sent at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3600)]
    pub coalesce_secs: Option<u32>,
    /// Also receive Callisto's operational events (`webhook.disabled`,
    /// `delivery.dead`, `poll.failing`, `plugin.failing`) as Callisto's own
    /// JSON, not through the plugin. Default false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operational_events: Option<bool>,
    /// A client certificate to present to receivers that require one
    /// (mTLS). The private key is write-only and sealed at rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificateInput>,
}

/// A client certificate for mTLS, in PEM.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificateInput {
    /// The certificate, then any intermediates, in PEM.
    pub certificate: String,
    /// Its private key in PEM (PKCS#8, PKCS#1 or SEC1). Write-only.
    pub private_key: String,
}

/// `PATCH /api/v1/webhooks/{id}`: fields to change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A new secret, `"generate"`, or `null` to remove it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `null` returns to the gateway's schedule.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Vec<u64>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_schedule_secs: Option<Option<Vec<u64>>>,
    /// Changes to the custom headers, as a JSON merge patch: a name with a
    /// string sets that header, a name with `null` removes it, names not
    /// given stay. `null` instead of an object removes them all.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<BTreeMap<String, Option<String>>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Option<BTreeMap<String, Option<String>>>>,
    /// `null` removes the limit.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_sec: Option<Option<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering: Option<DeliveryOrder>,
    /// `null` returns to the gateway's retention.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 3650)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<Option<u32>>,
    /// `null` sends every event at once again.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 3600)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coalesce_secs: Option<Option<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operational_events: Option<bool>,
    /// A new client certificate, or `null` to present none.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<ClientCertificateInput>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<Option<ClientCertificateInput>>,
}

/// `POST /api/v1/webhooks/{id}/replay`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayInput {
    /// Replay this event and every later event of the repository.
    pub since: String,
}

/// Distinguishes an absent field (`None`) from an explicit `null`
/// (`Some(None)`).
fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A repository path as registries accept it (see
/// `records::check_repository_name`), or a `400` naming the problem.
pub fn validate_repository_name(name: &str) -> Result<(), ApiError> {
    crate::records::check_repository_name(name).map_err(ApiError::bad_request)
}

/// A webhook URL: absolute http(s), with a host, without credentials.
pub fn validate_url(raw: &str) -> Result<String, ApiError> {
    let url =
        url::Url::parse(raw).map_err(|e| ApiError::bad_request(format!("url `{raw}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::bad_request(format!(
            "url `{raw}`: the scheme must be http or https, not {}",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(format!("url `{raw}` has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::bad_request(
            "url must not carry credentials; use the webhook secret (signatures) instead",
        ));
    }
    if raw.len() > 2048 {
        return Err(ApiError::bad_request("url is longer than 2048 characters"));
    }
    Ok(url.to_string())
}

/// The plugin configuration as ordered key/value strings.
pub fn config_pairs(
    config: Option<BTreeMap<String, serde_json::Value>>,
) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for (key, value) in config.unwrap_or_default() {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => Ok(s),
                    serde_json::Value::Number(n) => Ok(n.to_string()),
                    serde_json::Value::Bool(b) => Ok(b.to_string()),
                    _ => Err(ApiError::bad_request(format!(
                        "config `{key}`: list items must be plain values"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            serde_json::Value::Null => continue,
            serde_json::Value::Object(_) => {
                return Err(ApiError::bad_request(format!(
                    "config `{key}`: values must be strings, numbers, booleans or lists"
                )));
            }
        };
        out.push((key, text));
    }
    Ok(out)
}

pub fn validate_schedule(schedule: &Option<Vec<u64>>) -> Result<(), ApiError> {
    if let Some(delays) = schedule {
        if delays.len() > 20 {
            return Err(ApiError::bad_request(
                "retry_schedule_secs: at most 20 delays",
            ));
        }
        if delays.iter().any(|d| *d > 7 * 86_400) {
            return Err(ApiError::bad_request(
                "retry_schedule_secs: each delay is at most 7 days (604800)",
            ));
        }
    }
    Ok(())
}

/// Custom headers of a webhook, checked by the rules the host applies to a
/// plugin's (`callisto_plugin_sdk::Request::check`), so that an operator
/// can set nothing a plugin could not: names come back in lowercase.
pub fn validate_headers(
    headers: BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ApiError> {
    let request = callisto_plugin_sdk::Request {
        content_type: "application/octet-stream".to_owned(),
        headers: headers.into_iter().collect(),
        body: Vec::new(),
        signature: callisto_plugin_sdk::SignatureScheme::None,
    };
    let checked = request
        .check(0)
        .map_err(|e| ApiError::bad_request(format!("headers: {e}")))?;
    let mut seen = std::collections::HashSet::new();
    for (name, _) in &checked.headers {
        if !seen.insert(name.as_str()) {
            return Err(ApiError::bad_request(format!(
                "headers: `{name}` is given twice (names are case-insensitive)"
            )));
        }
    }
    Ok(checked.headers)
}

/// Applies a merge patch (`WebhookPatch::headers`) to a webhook's headers.
pub fn patch_headers(
    current: &[(String, String)],
    patch: Option<BTreeMap<String, Option<String>>>,
) -> Result<Vec<(String, String)>, ApiError> {
    let Some(patch) = patch else {
        return Ok(Vec::new());
    };
    let mut merged: BTreeMap<String, String> = current.iter().cloned().collect();
    let mut seen = std::collections::HashSet::new();
    for (name, value) in patch {
        let lower = name.to_ascii_lowercase();
        if !seen.insert(lower.clone()) {
            return Err(ApiError::bad_request(format!(
                "headers: `{lower}` is given twice (names are case-insensitive)"
            )));
        }
        match value {
            Some(value) => {
                merged.insert(lower, value);
            }
            None => {
                merged.remove(&lower);
            }
        }
    }
    validate_headers(merged)
}

/// Largest rate limit a webhook may have (attempts per second).
pub const MAX_RATE_LIMIT: u32 = 10_000;

pub fn validate_rate_limit(rate: Option<u32>) -> Result<Option<u32>, ApiError> {
    match rate {
        Some(r) if r == 0 || r > MAX_RATE_LIMIT => Err(ApiError::bad_request(format!(
            "rate_limit_per_sec: {r} is not between 1 and {MAX_RATE_LIMIT} (null for no limit)"
        ))),
        other => Ok(other),
    }
}

pub fn validate_retention(days: Option<u32>) -> Result<Option<u32>, ApiError> {
    match days {
        Some(d) if d == 0 || d > 3650 => Err(ApiError::bad_request(format!(
            "retention_days: {d} is not between 1 and 3650 (null for the gateway's)"
        ))),
        other => Ok(other),
    }
}

/// Longest coalescing window: an hour. A burst gathered longer than that
/// is a schedule, not a burst.
pub const MAX_COALESCE_SECS: u32 = 3600;

pub fn validate_coalesce(secs: Option<u32>) -> Result<Option<u32>, ApiError> {
    match secs {
        Some(s) if s == 0 || s > MAX_COALESCE_SECS => Err(ApiError::bad_request(format!(
            "coalesce_secs: {s} is not between 1 and {MAX_COALESCE_SECS} (null to send every event at once)"
        ))),
        other => Ok(other),
    }
}

/// A client certificate as TLS will use it, or a `400` saying what is
/// wrong with it.
pub fn validate_client_certificate(input: &ClientCertificateInput) -> Result<(), ApiError> {
    if input.certificate.len() > 64 * 1024 || input.private_key.len() > 64 * 1024 {
        return Err(ApiError::bad_request(
            "client_certificate: certificate and key are at most 64 KiB each",
        ));
    }
    crate::net::client::check_identity(&crate::net::client::Identity {
        cert_pem: &input.certificate,
        key_pem: &input.private_key,
    })
    .map_err(|e| ApiError::bad_request(format!("client_certificate: {e}")))
}

pub fn validate_secret(secret: &str) -> Result<(), ApiError> {
    if secret.is_empty() || secret.len() > 512 {
        return Err(ApiError::bad_request(
            "secret must have 1 to 512 characters",
        ));
    }
    Ok(())
}

/// How long a request may take to send its whole body; put in every
/// request's extensions by `api::router`.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub std::time::Duration);

impl BodyDeadline {
    /// The request's deadline, or the default one.
    pub fn of(extensions: &axum::http::Extensions) -> std::time::Duration {
        extensions
            .get::<BodyDeadline>()
            .map_or(std::time::Duration::from_secs(60), |d| d.0)
    }
}

/// Reads a body up to `limit` bytes within `deadline`: `413` beyond the
/// size, `408` beyond the time (a client that stalls holds nothing for
/// long).
pub async fn read_body(
    body: Body,
    limit: usize,
    deadline: std::time::Duration,
) -> Result<bytes::Bytes, ApiError> {
    let collected = tokio::time::timeout(
        deadline,
        http_body_util::Limited::new(body, limit).collect(),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the body was not received within {} seconds",
                deadline.as_secs()
            ),
        )
    })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::too_large(limit))
        }
        Err(e) => Err(ApiError::bad_request(format!("cannot read the body: {e}"))),
    }
}
