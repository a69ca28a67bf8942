//! Talking to a registry Callisto does not control, through oci-client: the
//! tag list (paginated) and a manifest `HEAD` per tag for its digest, with
//! the `WWW-Authenticate` token dance, credentials, plain HTTP when asked,
//! and a per-registry request budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::metrics::Metrics;
use crate::records::RemoteSettings;

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

/// A client for one remote repository (oci-client keeps credentials per
/// registry host, and two repositories on one host may use different ones).
pub struct RegistryClient {
    client: Client,
    auth: RegistryAuth,
    registry: String,
    repository: String,
    budget: Budget,
    metrics: Arc<Metrics>,
    page_size: usize,
}

/// How every registry is spoken to, whichever repository it is for.
pub struct Manners {
    pub budget: Budget,
    pub metrics: Arc<Metrics>,
    pub page_size: usize,
    pub timeout: Duration,
}

impl RegistryClient {
    pub fn new(
        registry: &str,
        repository: &str,
        settings: &RemoteSettings,
        password: Option<&str>,
        manners: Manners,
    ) -> Self {
        let Manners {
            budget,
            metrics,
            page_size,
            timeout,
        } = manners;
        let config = ClientConfig {
            protocol: if settings.insecure {
                ClientProtocol::HttpsExcept(vec![registry.to_owned()])
            } else {
                ClientProtocol::Https
            },
            read_timeout: Some(timeout),
            connect_timeout: Some(timeout.min(Duration::from_secs(10))),
            user_agent: concat!("Callisto/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let auth = match (&settings.username, password) {
            (Some(user), Some(password)) => RegistryAuth::Basic(user.clone(), password.to_owned()),
            _ => RegistryAuth::Anonymous,
        };
        Self {
            client: Client::new(config),
            auth,
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            budget,
            metrics,
            page_size: page_size.max(1),
        }
    }

    fn reference(&self, tag: &str) -> Reference {
        Reference::with_tag(
            self.registry.clone(),
            self.repository.clone(),
            tag.to_owned(),
        )
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

    /// Every tag, following pagination (`n` and `last`) to the end.
    pub async fn tags(&self) -> Result<Vec<String>, PollError> {
        let reference = self.reference("latest");
        let mut all: Vec<String> = Vec::new();
        let mut last: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        loop {
            self.spend("tag list").await;
            let page = self
                .client
                .list_tags(
                    &reference,
                    &self.auth,
                    Some(self.page_size),
                    last.as_deref(),
                )
                .await
                .map_err(|e| classify(e, &self.repository))?;
            let count = page.tags.len();
            let next = page.tags.last().cloned();
            let before = all.len();
            for tag in page.tags {
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
        match self
            .client
            .fetch_manifest_digest(&self.reference(tag), &self.auth)
            .await
        {
            Ok(digest) => Ok(Some(digest)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(classify(e, &self.repository)),
        }
    }
}

fn is_not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code: 404, .. } => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, oci_client::errors::OciErrorCode::ManifestUnknown)),
        _ => false,
    }
}

fn classify(e: OciDistributionError, repository: &str) -> PollError {
    use oci_client::errors::OciErrorCode;
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => PollError::Unauthorized(e.to_string()),
        OciDistributionError::ServerError {
            code: 401 | 403,
            message,
            ..
        } => PollError::Unauthorized(message),
        OciDistributionError::ServerError { code: 429, .. } => PollError::RateLimited,
        OciDistributionError::ServerError { code: 404, .. } => {
            PollError::NotFound(repository.to_owned())
        }
        OciDistributionError::RegistryError { ref envelope, .. } => {
            if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Toomanyrequests))
            {
                PollError::RateLimited
            } else if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                PollError::Unauthorized(e.to_string())
            } else if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::NameUnknown))
            {
                PollError::NotFound(repository.to_owned())
            } else {
                PollError::Registry(e.to_string())
            }
        }
        OciDistributionError::RequestError(ref inner) => {
            PollError::Unreachable(crate::net::describe(inner))
        }
        other => PollError::Registry(other.to_string()),
    }
}
