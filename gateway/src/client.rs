//! A typed client of the admin API: the same request and view types the
//! server uses, so the CLI, the tests and the benchmarks cannot drift from
//! the API they call.

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::ErrorBody;
use crate::api::events::EventQuery;
use crate::api::input::{
    ReplayInput, RepositoryInput, RepositoryPatch, WebhookInput, WebhookPatch,
};
use crate::api::plugins::PluginView;
use crate::api::store::SEALING_KEY_HEADER;
use crate::api::views::{
    DeliveryView, EventWithDeliveries, FilteredView, Page, RepositoryView, TagView, WebhookView,
};
use crate::api::webhooks::{
    DeliveryQuery, EnableInput, EnableResult, ReplayResult, RetryInput, RetryResult, RotateInput,
    TestResult,
};
use crate::event::Event;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the gateway at {url}: {reason} (is `callisto serve` running? \
         --url or CALLISTO_URL gives its address)"
    )]
    Unreachable { url: String, reason: String },
    /// The API answered with an error.
    #[error("{method} {path}: {message} ({status})")]
    Api {
        method: Method,
        path: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{method} {path}: the answer is not what the API promises: {reason}")]
    Decode {
        method: Method,
        path: String,
        reason: String,
    },
    /// What the API sent could not be written where it was asked to go.
    #[error("{path}: cannot write what the gateway sent: {reason}")]
    Write { path: String, reason: String },
}

impl ClientError {
    /// The API's status, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The admin API of one gateway, with its token.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// What a call sends.
enum Body<'a, B: Serialize> {
    None,
    Json(&'a B),
}

impl Client {
    /// `base` is the gateway's URL (`http://127.0.0.1:8080`).
    pub fn new(base: &str, token: &str, http: reqwest::Client) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http,
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Body<'_, B>,
    ) -> Result<T, ClientError> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Body::Json(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: crate::net::describe(&e),
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.base.clone(),
                reason: crate::net::describe(&e),
            })?;
        if !status.is_success() {
            return Err(api_error(method, path, status, &bytes));
        }
        let bytes = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
            method,
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Sends a request and returns the response if it is a success, else
    /// the API's error.
    async fn send_raw(&self, method: Method, path: &str) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}/api/v1{path}", self.base);
        let response = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        Err(api_error(method, path, status, &bytes))
    }

    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            reason: crate::net::describe(e),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(Method::GET, path, Body::None).await
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(method, path, Body::Json(body)).await
    }

    async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.call::<(), ()>(Method::DELETE, path, Body::None).await
    }

    async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(Method::POST, path, Body::None).await
    }

    // Repositories.

    pub async fn create_repository(
        &self,
        input: &RepositoryInput,
    ) -> Result<RepositoryView, ClientError> {
        self.send(Method::POST, "/repositories", input).await
    }

    pub async fn repositories(&self) -> Result<Vec<RepositoryView>, ClientError> {
        self.get("/repositories").await
    }

    pub async fn repository(&self, id: &str) -> Result<RepositoryView, ClientError> {
        self.get(&format!("/repositories/{}", segment(id))).await
    }

    /// The repository with this id, or else the one with this name (local
    /// first), or with this `registry/name` (as a remote one is added):
    /// what a person typing a name means.
    pub async fn find_repository(&self, id_or_name: &str) -> Result<RepositoryView, ClientError> {
        if id_or_name.starts_with("repo_") {
            return self.repository(id_or_name).await;
        }
        let mut named: Vec<RepositoryView> = self
            .repositories()
            .await?
            .into_iter()
            .filter(|r| {
                r.name == id_or_name
                    || r.registry
                        .as_deref()
                        .is_some_and(|reg| id_or_name == format!("{reg}/{}", r.name))
            })
            .collect();
        named.sort_by_key(|r| r.kind != crate::records::RepositoryKind::Local);
        match named.into_iter().next() {
            Some(r) => self.repository(&r.id).await,
            None => Err(ClientError::Api {
                method: Method::GET,
                path: "/repositories".to_owned(),
                status: 404,
                code: "not_found".to_owned(),
                message: format!("no repository has the id or name `{id_or_name}`"),
            }),
        }
    }

    pub async fn update_repository(
        &self,
        id: &str,
        patch: &RepositoryPatch,
    ) -> Result<RepositoryView, ClientError> {
        self.send(
            Method::PATCH,
            &format!("/repositories/{}", segment(id)),
            patch,
        )
        .await
    }

    pub async fn delete_repository(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&format!("/repositories/{}", segment(id))).await
    }

    pub async fn tags(&self, repository_id: &str) -> Result<Vec<TagView>, ClientError> {
        self.get(&format!("/repositories/{}/tags", segment(repository_id)))
            .await
    }

    pub async fn poll_now(&self, repository_id: &str) -> Result<RepositoryView, ClientError> {
        self.post(&format!("/repositories/{}/poll", segment(repository_id)))
            .await
    }

    // Webhooks.

    pub async fn create_webhook(
        &self,
        repository_id: &str,
        input: &WebhookInput,
    ) -> Result<WebhookView, ClientError> {
        let path = format!("/repositories/{}/webhooks", segment(repository_id));
        self.send(Method::POST, &path, input).await
    }

    pub async fn webhooks(&self, repository_id: &str) -> Result<Vec<WebhookView>, ClientError> {
        self.get(&format!(
            "/repositories/{}/webhooks",
            segment(repository_id)
        ))
        .await
    }

    pub async fn webhook(&self, id: &str) -> Result<WebhookView, ClientError> {
        self.get(&format!("/webhooks/{}", segment(id))).await
    }

    pub async fn update_webhook(
        &self,
        id: &str,
        patch: &WebhookPatch,
    ) -> Result<WebhookView, ClientError> {
        self.send(Method::PATCH, &format!("/webhooks/{}", segment(id)), patch)
            .await
    }

    pub async fn delete_webhook(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&format!("/webhooks/{}", segment(id))).await
    }

    /// Test Webhook of a saved webhook.
    pub async fn test_webhook(&self, id: &str) -> Result<TestResult, ClientError> {
        self.post(&format!("/webhooks/{}/test", segment(id))).await
    }

    /// Test Webhook before saving it.
    pub async fn test_unsaved(
        &self,
        repository_id: &str,
        input: &WebhookInput,
    ) -> Result<TestResult, ClientError> {
        let path = format!("/repositories/{}/webhooks/test", segment(repository_id));
        self.send(Method::POST, &path, input).await
    }

    pub async fn replay(&self, webhook_id: &str, since: &str) -> Result<ReplayResult, ClientError> {
        let input = ReplayInput {
            since: since.to_owned(),
        };
        self.send(
            Method::POST,
            &format!("/webhooks/{}/replay", segment(webhook_id)),
            &input,
        )
        .await
    }

    /// Sends again every failed or dead delivery made since `since` (RFC
    /// 3339); with `dry_run`, counts them.
    pub async fn retry_failed(
        &self,
        webhook_id: &str,
        since: &str,
        dry_run: bool,
    ) -> Result<RetryResult, ClientError> {
        let input = RetryInput {
            since: since.to_owned(),
            dry_run,
        };
        self.send(
            Method::POST,
            &format!("/webhooks/{}/retry", segment(webhook_id)),
            &input,
        )
        .await
    }

    /// Rotates a webhook's secret: `secret` (or a generated one, shown once
    /// in the answer), the old one signing too for `grace_secs`.
    pub async fn rotate_secret(
        &self,
        id: &str,
        input: &RotateInput,
    ) -> Result<WebhookView, ClientError> {
        self.send(
            Method::POST,
            &format!("/webhooks/{}/rotate-secret", segment(id)),
            input,
        )
        .await
    }

    /// Enables a webhook; with `redeliver`, sends again what failed or died
    /// since it began failing.
    pub async fn enable_webhook(
        &self,
        id: &str,
        redeliver: bool,
    ) -> Result<EnableResult, ClientError> {
        self.send(
            Method::POST,
            &format!("/webhooks/{}/enable", segment(id)),
            &EnableInput { redeliver },
        )
        .await
    }

    /// The events the webhook's filter declined lately, and why.
    pub async fn filtered(&self, webhook_id: &str) -> Result<FilteredView, ClientError> {
        self.get(&format!("/webhooks/{}/filtered", segment(webhook_id)))
            .await
    }

    // History.

    pub async fn events(&self, query: &EventQuery) -> Result<Page<Event>, ClientError> {
        self.get(&format!("/events?{}", query_string(query))).await
    }

    pub async fn event(&self, id: &str) -> Result<EventWithDeliveries, ClientError> {
        self.get(&format!("/events/{}", segment(id))).await
    }

    pub async fn deliveries(
        &self,
        webhook_id: &str,
        query: &DeliveryQuery,
    ) -> Result<Page<DeliveryView>, ClientError> {
        let path = format!(
            "/webhooks/{}/deliveries?{}",
            segment(webhook_id),
            query_string(query)
        );
        self.get(&path).await
    }

    /// One delivery with every attempt.
    pub async fn delivery(&self, id: &str) -> Result<DeliveryView, ClientError> {
        self.get(&format!("/deliveries/{}", segment(id))).await
    }

    pub async fn redeliver(&self, id: &str) -> Result<DeliveryView, ClientError> {
        self.post(&format!("/deliveries/{}/redeliver", segment(id)))
            .await
    }

    pub async fn plugins(&self) -> Result<Vec<PluginView>, ClientError> {
        self.get("/plugins").await
    }

    // The store.

    /// Downloads a consistent backup of the store into `out` (named
    /// `out_name` in errors), streaming. Returns its size and where the
    /// gateway's sealing key is, which the backup does not contain.
    pub async fn backup<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        out: &mut W,
        out_name: &str,
    ) -> Result<BackupDownload, ClientError> {
        use tokio::io::AsyncWriteExt;
        let path = "/store/backup";
        let mut response = self.send_raw(Method::GET, path).await?;
        let sealing_key = response
            .headers()
            .get(SEALING_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let expected = response.content_length();
        let write_err = |e: std::io::Error| ClientError::Write {
            path: out_name.to_owned(),
            reason: e.to_string(),
        };
        let mut bytes = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(&e))? {
            out.write_all(&chunk).await.map_err(write_err)?;
            bytes += chunk.len() as u64;
        }
        out.flush().await.map_err(write_err)?;
        if expected.is_some_and(|n| n != bytes) {
            return Err(ClientError::Decode {
                method: Method::GET,
                path: path.to_owned(),
                reason: format!(
                    "the gateway announced {} bytes and sent {bytes}",
                    expected.unwrap_or_default()
                ),
            });
        }
        Ok(BackupDownload { bytes, sealing_key })
    }
}

/// What [`Client::backup`] received.
#[derive(Debug, Clone)]
pub struct BackupDownload {
    pub bytes: u64,
    /// The `callisto-sealing-key` header: the key file's path on the
    /// gateway's machine, or `configured`.
    pub sealing_key: Option<String>,
}

/// The API's error answer as a [`ClientError`].
fn api_error(method: Method, path: &str, status: reqwest::StatusCode, bytes: &[u8]) -> ClientError {
    let (code, message) = match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => (body.error.code, body.error.message),
        Err(_) => (
            "unknown".to_owned(),
            String::from_utf8_lossy(bytes).into_owned(),
        ),
    };
    ClientError::Api {
        method,
        path: path.to_owned(),
        status: status.as_u16(),
        code,
        message,
    }
}

/// A path segment, percent-encoded.
fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A query struct as `a=1&b=2`, absent fields left out.
fn query_string<Q: Serialize>(query: &Q) -> String {
    let value = serde_json::to_value(query).unwrap_or_default();
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    if let serde_json::Value::Object(map) = value {
        for (k, v) in map {
            match v {
                serde_json::Value::Null => {}
                serde_json::Value::String(s) => {
                    out.append_pair(&k, &s);
                }
                other => {
                    out.append_pair(&k, &other.to_string());
                }
            }
        }
    }
    out.finish()
}
