//! The registry proxy: Callisto in front of a registry, forwarding the whole
//! distribution API (`/v2/...`) and turning each manifest push or deletion
//! that the registry accepts into an event, committed before the client
//! hears that its push succeeded.
//!
//! Bodies stream through (hyper's `Incoming` into the upstream request, the
//! upstream's `Incoming` into the answer); only a manifest `PUT` is read
//! whole, bounded, since its size and media type belong in the event.
//! Authentication is the registry's business: challenges, tokens and
//! credentials pass through untouched, and the proxy reads the user name
//! from them only to report it.
//!
//! A manifest `PUT` or `DELETE` runs to its end in a task of its own: a
//! client that goes away after the registry accepted its push must not leave
//! the push without its event.

mod headers;
pub mod route;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::changes::{Notification, TagChange};
use crate::config::ProxyConfig;
use crate::event::{EventSource, Timestamp};
use crate::metrics::Metrics;
use crate::store::Store;

pub use upstream::BuildError;
use upstream::{Upstream, UpstreamError};

/// Manifests held in memory at once at most (see `Proxy::manifest_budget`).
const MANIFEST_BUDGET_BYTES: usize = 64 << 20;

/// What every proxied request needs.
pub struct Proxy {
    upstream: Upstream,
    store: Store,
    metrics: Arc<Metrics>,
    max_manifest_bytes: usize,
    /// KiB of manifests held in memory at once, across connections: many
    /// clients sending large manifests wait their turn instead of taking
    /// `max_connections` times `max_manifest_bytes`.
    manifest_budget: Arc<tokio::sync::Semaphore>,
    /// How long a client may take to send a manifest.
    manifest_read_timeout: Duration,
    /// `https` when the proxy's listener serves TLS.
    scheme: &'static str,
    /// The listener's address, for a request that names no host.
    listen: std::net::SocketAddr,
}

impl Proxy {
    pub fn new(
        config: &ProxyConfig,
        listen: std::net::SocketAddr,
        body_read_timeout: Duration,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BuildError> {
        let ca = match &config.ca_bundle {
            Some(path) => std::fs::read(path)
                .map_err(|e| BuildError(format!("proxy.ca_bundle {}: {e}", path.display())))?,
            None => Vec::new(),
        };
        Ok(Self {
            upstream: Upstream::new(config, &ca)?,
            store,
            metrics,
            max_manifest_bytes: config.max_manifest_bytes,
            manifest_budget: Arc::new(tokio::sync::Semaphore::new(
                MANIFEST_BUDGET_BYTES.max(config.max_manifest_bytes) >> 10,
            )),
            manifest_read_timeout: body_read_timeout,
            scheme: if config.tls.is_some() {
                "https"
            } else {
                "http"
            },
            listen,
        })
    }

    /// The upstream's origin, e.g. `http://127.0.0.1:5000`.
    pub fn upstream_origin(&self) -> &str {
        &self.upstream.origin
    }
}

/// Every path goes to one handler: the proxy has no routes of its own.
pub fn router(proxy: Arc<Proxy>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(proxy)
}

async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let path = request.uri().path();
    if path != "/v2" && !path.starts_with("/v2/") {
        return registry_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "this is a registry proxy: only the distribution API (/v2/...) is served here",
        );
    }
    let manifest = match *request.method() {
        Method::PUT | Method::DELETE => route::manifest(path),
        _ => None,
    };
    match manifest {
        // Run apart from the connection: see the module's doc.
        Some(manifest) => tokio::spawn(async move {
            if request.method() == Method::PUT {
                put_manifest(&proxy, request, manifest).await
            } else {
                delete_manifest(&proxy, request, manifest).await
            }
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!("proxy: a manifest request failed: {e}");
            registry_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "the proxy failed",
            )
        }),
        None => forward(&proxy, request).await.0,
    }
}

/// The proxy's origin as the client addresses it: a rewritten `Location`
/// must lead the client back to the proxy, by the name it used.
fn proxy_origin(proxy: &Proxy, request: &Request) -> String {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| proxy.listen.to_string());
    format!("{}://{host}", proxy.scheme)
}

/// Forwards `request` as it is, and the answer as it comes; returns the
/// answer and whether the upstream answered 2xx.
async fn forward(proxy: &Proxy, request: Request) -> (Response, bool) {
    let origin = proxy_origin(proxy, &request);
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/v2/"));
    parts.uri = proxy.upstream.uri(&path);
    parts.version = http::Version::HTTP_11;
    headers::strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(
        header::HOST,
        HeaderValue::from_str(proxy.upstream.authority.as_str()).expect("an authority is a value"),
    );
    let request = http::Request::from_parts(parts, body);
    match proxy.upstream.send(request).await {
        Ok(answer) => {
            let (mut parts, body) = answer.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            headers::rewrite_urls(&mut parts.headers, &proxy.upstream.origin, &origin);
            let ok = parts.status.is_success();
            (Response::from_parts(parts, Body::new(body)), ok)
        }
        Err(e) => {
            tracing::warn!(upstream = %proxy.upstream.origin, "proxy: {e}");
            let status = match e {
                UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                UpstreamError::Unreachable(_) => StatusCode::BAD_GATEWAY,
            };
            (registry_error(status, "UNAVAILABLE", &e.to_string()), false)
        }
    }
}

/// `PUT /v2/<name>/manifests/<reference>`: the manifest is read (bounded),
/// forwarded, and on a 2xx answer its event committed before the answer is
/// returned. A failed commit answers `503`: the client retries the
/// (idempotent) `PUT`, and a retry of a push already recorded makes no
/// second event.
async fn put_manifest(proxy: &Proxy, request: Request, manifest: route::ManifestPath) -> Response {
    let (parts, body) = request.into_parts();
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(proxy.max_manifest_bytes)
        .min(proxy.max_manifest_bytes);
    let _budget = proxy
        .manifest_budget
        .clone()
        .acquire_many_owned(u32::try_from(announced.div_ceil(1024).max(1)).unwrap_or(u32::MAX))
        .await
        .expect("the budget is never closed");
    let limited = http_body_util::Limited::new(body, announced.max(1));
    let bytes = match tokio::time::timeout(proxy.manifest_read_timeout, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return registry_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "MANIFEST_INVALID",
                &format!(
                    "the manifest is larger than the proxy accepts ({} bytes; proxy.max_manifest_bytes)",
                    proxy.max_manifest_bytes
                ),
            );
        }
        Ok(Err(e)) => {
            return registry_error(
                StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                &format!("reading the manifest: {e}"),
            );
        }
        Err(_) => {
            return registry_error(
                StatusCode::REQUEST_TIMEOUT,
                "MANIFEST_INVALID",
                "the manifest was not sent in time",
            );
        }
    };
    let actor = headers::user_name(&parts.headers);
    let media_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .or_else(|| media_type_in(&bytes));
    let query_tags = route::tags_in_query(parts.uri.query());
    let body_bytes = bytes.clone();
    let (answer, ok) = forward(proxy, Request::from_parts(parts, Body::from(bytes))).await;
    if !ok {
        return answer;
    }
    let digest = answer
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .filter(|d| route::is_digest(d))
        .map(str::to_owned)
        .unwrap_or_else(|| match &manifest.reference {
            route::Reference::Digest(d) => d.clone(),
            route::Reference::Tag(_) => {
                format!("sha256:{}", hex(&Sha256::digest(&body_bytes)))
            }
        });
    let size = Some(body_bytes.len() as u64);
    let mut tags = query_tags;
    if let route::Reference::Tag(tag) = &manifest.reference {
        tags.insert(0, tag.clone());
    }
    // A tagged push is recognised again by the tag's known digest (one
    // identity per (repository, tag, digest), in `changes`), not by a key, which would also swallow a
    // tag moved back to a digest it had before. A push by digest alone is
    // its content: the same digest again is the same push.
    let changes: Vec<(String, TagChange)> = if tags.is_empty() {
        vec![(
            format!("{}@{digest}", manifest.repository),
            TagChange::ManifestPushed {
                digest: digest.clone(),
                media_type,
                size,
            },
        )]
    } else {
        tags.into_iter()
            .map(|tag| {
                (
                    format!(
                        "{}:{tag}@{digest}:{}",
                        manifest.repository,
                        ulid::Ulid::new()
                    ),
                    TagChange::Pushed {
                        tag,
                        digest: digest.clone(),
                        media_type: media_type.clone(),
                        size,
                    },
                )
            })
            .collect()
    };
    let notifications = changes
        .into_iter()
        .map(|(key, change)| notification(proxy, &manifest, format!("proxy:{key}"), change, &actor))
        .collect();
    commit_then(proxy, notifications, answer).await
}

/// `DELETE /v2/<name>/manifests/<reference>`: forwarded; a 2xx answer is
/// an `image.deleted` of the tag, or of every tag on the digest.
async fn delete_manifest(
    proxy: &Proxy,
    request: Request,
    manifest: route::ManifestPath,
) -> Response {
    let actor = headers::user_name(request.headers());
    let (answer, ok) = forward(proxy, request).await;
    if !ok {
        return answer;
    }
    let change = match &manifest.reference {
        route::Reference::Tag(tag) => TagChange::TagDeleted { tag: tag.clone() },
        route::Reference::Digest(digest) => TagChange::ManifestDeleted {
            digest: digest.clone(),
        },
    };
    // A repeated DELETE of the same thing is answered 404 by the registry
    // and makes no event; each accepted one is its own.
    let key = format!(
        "proxy:delete:{}:{}:{}",
        manifest.repository,
        manifest.reference.as_str(),
        ulid::Ulid::new()
    );
    let n = notification(proxy, &manifest, key, change, &actor);
    commit_then(proxy, vec![n], answer).await
}

fn notification(
    proxy: &Proxy,
    manifest: &route::ManifestPath,
    dedupe_key: String,
    change: TagChange,
    actor: &Option<String>,
) -> Notification {
    Notification {
        dedupe_key,
        repository: manifest.repository.clone(),
        host: Some(proxy.upstream.authority.to_string()),
        change,
        actor: actor.clone(),
        occurred_at: Timestamp::now(),
        source: EventSource::Proxy,
    }
}

/// Commits the events, then answers with the upstream's `answer`; if the
/// commit fails, answers `503` instead (the upstream's answer is dropped).
async fn commit_then(
    proxy: &Proxy,
    notifications: Vec<Notification>,
    answer: Response,
) -> Response {
    for n in &notifications {
        if let Err(e) = crate::records::check_repository_name(&n.repository) {
            // The registry accepted the name; one the log cannot hold is
            // reported, not recorded.
            tracing::warn!(repository = n.repository, "proxy: no event: {e}");
            return answer;
        }
    }
    match proxy.store.record_notifications(notifications).await {
        Ok(recorded) => {
            if !recorded.events.is_empty() {
                proxy
                    .metrics
                    .events
                    .get_or_create(&vec![("source", EventSource::Proxy.as_str().to_owned())])
                    .inc_by(recorded.events.len() as u64);
                let ids: Vec<&str> = recorded.events.iter().map(|e| e.id.as_str()).collect();
                tracing::debug!(events = ids.join(","), "proxy: recorded");
            }
            answer
        }
        Err(e) => {
            tracing::error!("proxy: recording the event failed, answering 503: {e}");
            registry_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "the registry accepted the request but the gateway could not record it; retry",
            )
        }
    }
}

/// The manifest's own `mediaType` field, for a `PUT` without a
/// `Content-Type`.
fn media_type_in(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Head>(bytes).ok()?.media_type
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// An error in the distribution API's shape, which registry clients show.
fn registry_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]});
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("a valid response")
}
