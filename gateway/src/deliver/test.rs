//! Test Webhook: the webhook's plugin, the signature and one attempt, run
//! synchronously on a sample event, with the normal timeouts; never
//! retried. The same path as a real delivery, so that a test that succeeds
//! means the real thing will. The plugin's `filter` runs too: a test is
//! sent whatever it says, and the outcome says when it declines the sample
//! (the SDK's standard filter passes every `webhook.test` event; a plugin's
//! own filter may not).

use std::sync::Arc;

use super::attempt::{self, Outbound, Sent};
use crate::event::{Event, EventSource, EventType, Timestamp, new_event, new_id};
use crate::net::Policy;
use crate::plugin::{EventInput, Filtered, PluginHost, Tested, WebhookInput};
use crate::records::{Delivery, DeliveryKind, Repository, RepositoryKind, Request, Webhook};
use crate::store::{Store, StoreError};

/// The digest of the sample event when the repository knows no tag.
const SAMPLE_DIGEST: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("plugin `{plugin}` is not installed")]
    PluginMissing { plugin: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("running the plugin: {0}")]
    Panicked(String),
}

/// What a test needs of the gateway.
pub struct Tester<'a> {
    pub store: &'a Store,
    pub plugins: &'a Arc<PluginHost>,
    pub clients: &'a crate::net::client::WebhookClients,
    /// Opens the webhook's client key, if it has a certificate.
    pub sealer: &'a crate::seal::Sealer,
    pub policy: &'a Policy,
    /// Response bodies are kept up to this many bytes.
    pub body_limit: usize,
}

/// How a test went.
// One value per Test Webhook request, moved once: boxing `Sent` would buy
// nothing.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// The plugin refused or failed: nothing was sent.
    PluginFailed { message: String },
    /// One attempt was made, whatever its answer.
    Sent {
        event: Box<Event>,
        request: Request,
        sent: Box<Sent>,
        /// Set when the webhook's filter declines the sample event: sent
        /// anyway, as a test, but a real event like it would not be.
        filtered: Option<Filtered>,
    },
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Sent { sent, .. } if sent.attempt.succeeded)
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Sent { sent, .. } => sent.status(),
            Outcome::PluginFailed { .. } => None,
        }
    }

    /// The product's words: `Success (200)`, `Error (500)`, `Error:
    /// connection refused`, `Error: plugin slack: ...`.
    pub fn summary(&self) -> String {
        match self {
            Outcome::PluginFailed { message } => format!("Error: {message}"),
            Outcome::Sent { sent, .. } => match (&sent.attempt.response, &sent.attempt.error) {
                (Some(r), _) if sent.attempt.succeeded => format!("Success ({})", r.status),
                (Some(r), _) => format!("Error ({})", r.status),
                (None, Some(e)) => format!("Error: {e}"),
                (None, None) => "Error".to_owned(),
            },
        }
    }
}

impl Tester<'_> {
    /// A `webhook.test` event for `repo`: its newest known tag, if any,
    /// makes the sample look like what the webhook will really get.
    pub async fn sample_event(&self, repo: &Repository) -> Result<Event, StoreError> {
        let newest = self
            .store
            .tags(&repo.id)
            .await?
            .into_iter()
            .max_by_key(|(_, k)| k.updated_at);
        let (tag, digest, media_type) = match newest {
            Some((tag, known)) => (tag, known.digest, known.media_type),
            None => ("latest".to_owned(), SAMPLE_DIGEST.to_owned(), None),
        };
        let source = match repo.kind {
            RepositoryKind::Local => EventSource::Local,
            RepositoryKind::Remote => EventSource::Remote,
        };
        Ok(new_event(
            EventType::WebhookTest,
            source,
            repo.reference(),
            Timestamp::now(),
        )
        .with_tag(tag)
        .with_digest(digest)
        .with_media_type(media_type))
    }

    /// Runs the webhook's plugin on the sample event (`filter`, then
    /// `format` whatever the filter said) and sends the request once,
    /// signed with `secret`, as message `message_id`.
    pub async fn run(
        &self,
        repo: &Repository,
        webhook: &Webhook,
        secret: Option<&str>,
        message_id: &str,
    ) -> Result<Outcome, TestError> {
        let event = self.sample_event(repo).await?;
        let plugin = self
            .plugins
            .get(&webhook.plugin)
            .ok_or_else(|| TestError::PluginMissing {
                plugin: webhook.plugin.clone(),
            })?;
        // A test is sent whatever the host's filters say; the plugin sees
        // its own keys only.
        let config: Vec<(String, String)> = webhook
            .config
            .iter()
            .filter(|(k, _)| !crate::host_filter::HOST_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        let (input, hook) = (
            EventInput::from(&event),
            WebhookInput::new(&webhook.id, &webhook.url, &config),
        );
        let tested = tokio::task::spawn_blocking(move || plugin.test(&input, &hook))
            .await
            .map_err(|e| TestError::Panicked(e.to_string()))?;
        let Tested { request, filtered } = match tested {
            Ok(tested) => tested,
            Err(e) => {
                return Ok(Outcome::PluginFailed {
                    message: e.to_string(),
                });
            }
        };
        let client = match &webhook.client_certificate {
            None => Ok(self.clients.shared().clone()),
            Some(c) => self
                .sealer
                .open(&c.key)
                .map_err(|e| e.to_string())
                .and_then(|key| {
                    self.clients
                        .with_identity(&crate::net::client::Identity {
                            cert_pem: &c.cert_pem,
                            key_pem: &key,
                        })
                        .map_err(|e| e.to_string())
                }),
        };
        let client = match client {
            Ok(client) => client,
            Err(e) => {
                return Ok(Outcome::PluginFailed {
                    message: format!("the client certificate: {e}"),
                });
            }
        };
        let sent = attempt::send(
            &client,
            self.policy,
            Outbound {
                url: &webhook.url,
                request: &request,
                secret,
                // A test signs with the current secret only: it shows
                // whether the receiver has the new one.
                previous_secret: None,
                message_id,
                headers: &webhook.headers,
                proxied: self.clients.proxied(),
            },
            1,
            self.body_limit,
        )
        .await;
        Ok(Outcome::Sent {
            event: Box::new(event),
            request,
            sent: Box::new(sent),
            filtered,
        })
    }

    /// Tests a saved webhook and keeps the test in its history, as a
    /// delivery of kind `test` (never retried). Returns the outcome and the
    /// delivery's id.
    pub async fn run_saved(
        &self,
        repo: &Repository,
        webhook: &Webhook,
        secret: Option<&str>,
    ) -> Result<(Outcome, String), TestError> {
        let message_id = new_id("dlv");
        let outcome = self.run(repo, webhook, secret, &message_id).await?;
        let mut delivery = Delivery::new(
            DeliveryKind::Test,
            "",
            webhook,
            Err(outcome.summary()),
            Timestamp::now(),
        );
        delivery.id = message_id.clone();
        delivery.last_status = outcome.status();
        let attempt = match &outcome {
            Outcome::Sent {
                event,
                request,
                sent,
                ..
            } => {
                delivery.event_id = event.id.clone();
                delivery.request = Some(request.clone());
                Some(sent.attempt.clone())
            }
            Outcome::PluginFailed { .. } => None,
        };
        self.store.record_test(delivery, attempt).await?;
        Ok((outcome, message_id))
    }
}
