//! Talking to a registry Callisto does not control, with the distribution
//! API: the tag list (paginated) and a manifest `HEAD` per tag for its
//! digest, the `WWW-Authenticate` token dance, credentials, plain HTTP when
//! asked, and a per-registry request budget.
//!
//! Every request, the token service's and each redirect's included, goes
//! through the gateway's guarded client (`net::client`): a registry someone
//! adds cannot make Callisto call into its own network by naming a private
//! token realm, redirecting there, or resolving to several addresses. This
//! is why it is not oci-client, which builds its own HTTP client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex as AsyncMutex;

use crate::metrics::Metrics;
use crate::net::Policy;
use crate::records::RemoteSettings;

/// What a manifest request accepts: without the OCI and Docker list types
/// too, registries answer `404` for multi-platform images.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// Why a poll failed, in words an operator can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PollError {
    #[error("the registry refused the credentials (or needs some): {0}")]
    Unauthorized(String),
    #[error("the registry asks to slow down (429 Too Many Requests)")]
    RateLimited,
    #[error("the registry has no repository {0}")]
    NotFound(String),
    #[error("cannot reach the registry: {0}")]
    Unreachable(String),
    #[error("the registry answered: {0}")]
    Registry(String),
    #[error("{0}")]
    Refused(String),
}

/// Requests per minute per registry host, shared by every repository on it,
/// so that a busy registry (Docker Hub's anonymous limit is small) is not
/// hammered by many repositories polled at once. A token bucket: bursts of
/// up to six seconds' worth, then the steady rate.
#[derive(Clone)]
pub struct Budget {
    per_minute: u32,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Budget {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: Arc::default(),
        }
    }

    /// Waits until `registry` has a request to spare, and takes it.
    pub async fn take(&self, registry: &str) {
        loop {
            let wait = {
                let mut buckets = self.buckets.lock().unwrap();
                let rate = f64::from(self.per_minute) / 60.0;
                let burst = (rate * 6.0).max(1.0);
                let bucket = buckets.entry(registry.to_owned()).or_insert(Bucket {
                    tokens: burst,
                    at: Instant::now(),
                });
                let now = Instant::now();
                bucket.tokens =
                    (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
                bucket.at = now;
                if bucket.tokens >= 1.0 {
                    bucket.tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - bucket.tokens) / rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A client for one remote repository, for the length of one poll: it
/// keeps the repository's bearer token between its requests.
pub struct RegistryClient {
    http: reqwest::Client,
    policy: Arc<Policy>,
    /// `https://host[:port]` (or `http://` when insecure).
    base: String,
    registry: String,
    repository: String,
    credentials: Option<(String, String)>,
    /// How to authorise the next request, once the registry said.
    auth: AsyncMutex<Auth>,
    budget: Budget,
    metrics: Arc<Metrics>,
    page_size: usize,
}

#[derive(Debug, Clone, Default)]
enum Auth {
    /// Not asked yet: the first request goes without.
    #[default]
    None,
    Basic,
    Bearer(String),
}

/// How every registry is spoken to, whichever repository it is for.
pub struct Manners {
    pub http: reqwest::Client,
    pub policy: Arc<Policy>,
    pub budget: Budget,
    pub metrics: Arc<Metrics>,
    pub page_size: usize,
}

#[derive(serde::Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

impl RegistryClient {
    pub fn new(
        registry: &str,
        repository: &str,
        settings: &RemoteSettings,
        password: Option<&str>,
        manners: Manners,
    ) -> Self {
        let scheme = if settings.insecure { "http" } else { "https" };
        Self {
            http: manners.http,
            policy: manners.policy,
            base: format!("{scheme}://{registry}"),
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            credentials: settings.username.clone().zip(password.map(str::to_owned)),
            auth: AsyncMutex::default(),
            budget: manners.budget,
            metrics: manners.metrics,
            page_size: manners.page_size.max(1),
        }
    }

    async fn spend(&self, what: &str) {
        self.budget.take(&self.registry).await;
        self.metrics.poll_requests.inc();
        tracing::trace!(
            registry = self.registry,
            repository = self.repository,
            "{what}"
        );
    }

    /// Sends a request, answering the registry's challenge once if it makes
    /// one (`401` with `WWW-Authenticate`).
    async fn send(
        &self,
        method: Method,
        url: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, PollError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| PollError::Registry(format!("{url} is not a URL: {e}")))?;
        self.policy.check_url(&parsed).map_err(PollError::Refused)?;
        let mut challenged = false;
        loop {
            let mut request = self.http.request(method.clone(), parsed.clone());
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            let auth = self.auth.lock().await.clone();
            request = match (&auth, &self.credentials) {
                (Auth::Bearer(token), _) => request.bearer_auth(token),
                (Auth::Basic, Some((user, password))) => request.basic_auth(user, Some(password)),
                _ => request,
            };
            let response = request.send().await.map_err(unreachable)?;
            if response.status() != StatusCode::UNAUTHORIZED || challenged {
                return Ok(response);
            }
            challenged = true;
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let next = match challenge.as_deref().map(Challenge::parse) {
                Some(Some(Challenge::Bearer {
                    realm,
                    service,
                    scope,
                })) => Auth::Bearer(
                    self.token(&realm, service.as_deref(), scope.as_deref())
                        .await?,
                ),
                Some(Some(Challenge::Basic)) if self.credentials.is_some() => Auth::Basic,
                _ => return Ok(response),
            };
            *self.auth.lock().await = next;
        }
    }

    /// A bearer token from the registry's token service (`realm`), with the
    /// credentials when there are some.
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<String, PollError> {
        let mut url = reqwest::Url::parse(realm).map_err(|e| {
            PollError::Registry(format!("the token realm `{realm}` is not a URL: {e}"))
        })?;
        self.policy
            .check_url(&url)
            .map_err(|e| PollError::Refused(format!("the registry's token service: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            let default_scope = format!("repository:{}:pull", self.repository);
            query.append_pair("scope", scope.unwrap_or(&default_scope));
        }
        self.spend("token").await;
        let mut request = self.http.get(url);
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    PollError::Unauthorized(format!("the token service answered {status}"))
                }
                StatusCode::TOO_MANY_REQUESTS => PollError::RateLimited,
                _ => PollError::Registry(format!("the token service answered {status}")),
            });
        }
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|e| PollError::Registry(format!("the token service's answer: {e}")))?;
        answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| PollError::Registry("the token service gave no token".into()))
    }

    /// Every tag, following pagination (`n` and `last`) to the end.
    pub async fn tags(&self) -> Result<Vec<String>, PollError> {
        let mut all: Vec<String> = Vec::new();
        let mut last: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        loop {
            self.spend("tag list").await;
            let mut url = format!(
                "{}/v2/{}/tags/list?n={}",
                self.base, self.repository, self.page_size
            );
            if let Some(last) = &last {
                url.push_str("&last=");
                url.extend(url::form_urlencoded::byte_serialize(last.as_bytes()));
            }
            let response = self.send(Method::GET, &url, None).await?;
            let response = self.check(response).await?;
            let page: TagList = response
                .json()
                .await
                .map_err(|e| PollError::Registry(format!("the tag list: {e}")))?;
            let tags = page.tags.unwrap_or_default();
            let count = tags.len();
            let next = tags.last().cloned();
            let before = all.len();
            for tag in tags {
                if seen.insert(tag.clone()) {
                    all.push(tag);
                }
            }
            // A short page is the last. Some registries (Distribution 2.8
            // among them) answer a `last` past the end with the first page
            // again: a page with nothing new ends the listing too.
            if count < self.page_size || next.is_none() || all.len() == before {
                break;
            }
            last = next;
        }
        Ok(all)
    }

    /// The digest `tag` points to, or `None` if the tag is gone.
    pub async fn digest(&self, tag: &str) -> Result<Option<String>, PollError> {
        self.spend(tag).await;
        let url = format!("{}/v2/{}/manifests/{tag}", self.base, self.repository);
        let response = self.send(Method::HEAD, &url, Some(MANIFEST_TYPES)).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = self.check(response).await?;
        if let Some(digest) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .filter(|d| d.contains(':'))
        {
            return Ok(Some(digest.to_owned()));
        }
        // A registry that gives no digest on HEAD: the manifest's own bytes
        // say it.
        self.spend(tag).await;
        let response = self.send(Method::GET, &url, Some(MANIFEST_TYPES)).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = self
            .check(response)
            .await?
            .bytes()
            .await
            .map_err(unreachable)?;
        Ok(Some(format!("sha256:{:x}", Sha256::digest(&body))))
    }

    /// A success, or the error its status means.
    async fn check(&self, response: reqwest::Response) -> Result<reqwest::Response, PollError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let detail: String = body.chars().take(200).collect();
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                PollError::Unauthorized(format!("{status}: {detail}"))
            }
            StatusCode::TOO_MANY_REQUESTS => PollError::RateLimited,
            StatusCode::NOT_FOUND => PollError::NotFound(self.repository.clone()),
            _ if body.contains("TOOMANYREQUESTS") => PollError::RateLimited,
            _ => PollError::Registry(format!("{status}: {detail}")),
        })
    }
}

fn unreachable(e: reqwest::Error) -> PollError {
    PollError::Unreachable(crate::net::describe(&e))
}

/// What a registry's `WWW-Authenticate` asks for.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// `Bearer realm="https://auth.example/token",service="reg",scope="..."`
    /// or `Basic realm="..."`; parameters are `key="value"` or `key=token`.
    fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut map = HashMap::new();
        let mut rest = params.trim();
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=')?;
            let key = key
                .trim()
                .trim_start_matches(',')
                .trim()
                .to_ascii_lowercase();
            let after = after.trim_start();
            let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim(), &after[end..])
            };
            map.insert(key, value.to_owned());
            rest = remaining.trim_start().trim_start_matches(',').trim_start();
        }
        Some(Challenge::Bearer {
            realm: map.remove("realm")?,
            service: map.remove("service"),
            scope: map.remove("scope"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read_as_registries_write_them() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        assert_eq!(
            Challenge::parse(
                r#"bearer realm="https://ghcr.io/token", scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://ghcr.io/token".into(),
                service: None,
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Bearer service=x"), None);
        assert_eq!(Challenge::parse("Negotiate"), None);
    }
}
