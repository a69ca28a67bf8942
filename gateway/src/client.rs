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
use crate::api::views::{
    DeliveryView, EventWithDeliveries, FilteredView, Page, RepositoryView, TagView, WebhookView,
};
use crate::api::webhooks::{DeliveryQuery, ReplayResult, TestResult};
use crate::event::Event;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the gateway at {url}: {reason} (is `callisto serve` running?)")]
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
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => (body.error.code, body.error.message),
                Err(_) => (
                    "unknown".to_owned(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ),
            };
            return Err(ClientError::Api {
                method,
                path: path.to_owned(),
                status: status.as_u16(),
                code,
                message,
            });
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
    /// first): what a person typing a name means.
    pub async fn find_repository(&self, id_or_name: &str) -> Result<RepositoryView, ClientError> {
        if id_or_name.starts_with("repo_") {
            return self.repository(id_or_name).await;
        }
        let mut named: Vec<RepositoryView> = self
            .repositories()
            .await?
            .into_iter()
            .filter(|r| r.name == id_or_name)
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
