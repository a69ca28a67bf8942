//! The event of Callisto's log, as the gateway keeps it, its API shows it
//! and its plugins receive it: one model, so that the JSON the `default`
//! plugin sends and the JSON the API answers cannot drift apart.
//!
//! Its JSON form is fixed by the design document:
//!
//! ```json
//! {"id": "evt_01JDQ8...", "type": "image.pushed", "source": "local",
//!  "repository": {"id": "repo_...", "name": "demo/app", "registry": "127.0.0.1:5000"},
//!  "tag": "v1", "digest": "sha256:...", "previous_digest": null,
//!  "media_type": "application/vnd.oci.image.manifest.v1+json", "size": 528,
//!  "actor": null, "occurred_at": "2026-11-28T20:25:52Z"}
//! ```
//!
//! The crate is small on purpose: plugins compiled to WebAssembly depend on
//! it. The gateway adds OpenAPI schemas with the `schema` feature.

#![forbid(unsafe_code)]

mod timestamp;

use serde::{Deserialize, Serialize};

pub use timestamp::Timestamp;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum EventType {
    #[serde(rename = "image.pushed")]
    ImagePushed,
    #[serde(rename = "image.deleted")]
    ImageDeleted,
    /// A sample event sent by "Test Webhook".
    #[serde(rename = "webhook.test")]
    WebhookTest,
}

impl EventType {
    pub const ALL: [EventType; 3] = [
        EventType::ImagePushed,
        EventType::ImageDeleted,
        EventType::WebhookTest,
    ];

    /// The name used in JSON and in the `events` configuration key, e.g.
    /// `image.pushed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ImagePushed => "image.pushed",
            EventType::ImageDeleted => "image.deleted",
            EventType::WebhookTest => "webhook.test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Where the gateway learned of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum EventSource {
    /// The registry sent a notification.
    Local,
    /// The gateway polled a registry it does not control.
    Remote,
    /// Harbor's own webhook (`POST /ingest/harbor`).
    Harbor,
    /// Docker Hub's repository webhook (`POST /ingest/dockerhub`).
    Dockerhub,
    /// Quay's `repo_push` notification (`POST /ingest/quay`).
    Quay,
    /// GitHub's package webhooks for GHCR (`POST /ingest/github`).
    Github,
    /// Zot's CloudEvents (`POST /ingest/cloudevents`).
    Zot,
    /// The push or deletion passed through the gateway's registry proxy.
    Proxy,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Local => "local",
            EventSource::Remote => "remote",
            EventSource::Harbor => "harbor",
            EventSource::Dockerhub => "dockerhub",
            EventSource::Quay => "quay",
            EventSource::Github => "github",
            EventSource::Zot => "zot",
            EventSource::Proxy => "proxy",
        }
    }
}

/// The repository an event belongs to, as the event carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RepositoryRef {
    /// The gateway's id, e.g. `repo_01JDQ8...`.
    pub id: String,
    /// The path users type, e.g. `demo/app`.
    pub name: String,
    /// The registry host, e.g. `127.0.0.1:5000`, when known.
    pub registry: Option<String>,
}

/// One event of the log. Field order is the JSON's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Event {
    /// A sortable unique id with a prefix (`evt_` and a ULID), stable across
    /// retries and replays.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub source: EventSource,
    pub repository: RepositoryRef,
    pub tag: Option<String>,
    pub digest: Option<String>,
    /// For a push to a known tag: the digest the tag pointed to before.
    pub previous_digest: Option<String>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
    pub actor: Option<String>,
    #[cfg_attr(
        feature = "schema",
        schema(value_type = String, format = DateTime, example = "2026-11-28T20:25:52Z")
    )]
    pub occurred_at: Timestamp,
}

impl Event {
    /// An event with what every event has; the rest is added with the
    /// `with_*` methods.
    pub fn new(
        id: String,
        kind: EventType,
        source: EventSource,
        repository: RepositoryRef,
        occurred_at: Timestamp,
    ) -> Self {
        Self {
            id,
            kind,
            source,
            repository,
            tag: None,
            digest: None,
            previous_digest: None,
            media_type: None,
            size: None,
            actor: None,
            occurred_at,
        }
    }

    pub fn with_tag(mut self, tag: impl Into<Option<String>>) -> Self {
        self.tag = tag.into();
        self
    }

    pub fn with_digest(mut self, digest: impl Into<Option<String>>) -> Self {
        self.digest = digest.into();
        self
    }

    pub fn with_previous_digest(mut self, previous: impl Into<Option<String>>) -> Self {
        self.previous_digest = previous.into();
        self
    }

    pub fn with_media_type(mut self, media_type: impl Into<Option<String>>) -> Self {
        self.media_type = media_type.into();
        self
    }

    pub fn with_size(mut self, size: impl Into<Option<u64>>) -> Self {
        self.size = size.into();
        self
    }

    pub fn with_actor(mut self, actor: impl Into<Option<String>>) -> Self {
        self.actor = actor.into();
        self
    }

    /// `registry/name:tag` (or `@digest` without a tag), the way people write
    /// an image reference. The registry is left out when unknown.
    pub fn image_ref(&self) -> String {
        let mut s = String::new();
        if let Some(registry) = &self.repository.registry {
            s.push_str(registry);
            s.push('/');
        }
        s.push_str(&self.repository.name);
        match (&self.tag, &self.digest) {
            (Some(tag), _) => {
                s.push(':');
                s.push_str(tag);
            }
            (None, Some(digest)) => {
                s.push('@');
                s.push_str(digest);
            }
            (None, None) => {}
        }
        s
    }

    /// The digest shortened the way registries' UIs show it: the first 12
    /// hex characters, without the algorithm.
    pub fn short_digest(&self) -> Option<&str> {
        let digest = self.digest.as_deref()?;
        let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
        Some(&hex[..hex.len().min(12)])
    }

    /// The event as JSON bytes (the `default` plugin's body).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an event always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event::new(
            "evt_01KB5ZJ0GA0000000000000000".into(),
            EventType::ImagePushed,
            EventSource::Local,
            RepositoryRef {
                id: "repo_1".into(),
                name: "demo/app".into(),
                registry: Some("127.0.0.1:5000".into()),
            },
            Timestamp {
                seconds: 1_795_897_552,
                nanoseconds: 778_574_819,
            },
        )
        .with_tag("v1".to_owned())
        .with_digest("sha256:abc".to_owned())
        .with_size(401)
    }

    #[test]
    fn json_is_the_design_shape_to_the_second() {
        let json = String::from_utf8(sample().to_json()).unwrap();
        assert_eq!(
            json,
            r#"{"id":"evt_01KB5ZJ0GA0000000000000000","type":"image.pushed","source":"local","repository":{"id":"repo_1","name":"demo/app","registry":"127.0.0.1:5000"},"tag":"v1","digest":"sha256:abc","previous_digest":null,"media_type":null,"size":401,"actor":null,"occurred_at":"2026-11-28T20:25:52Z"}"#
        );
    }

    #[test]
    fn binary_records_keep_nanoseconds() {
        let event = sample();
        let bytes = rmp_serde::to_vec_named(&event).unwrap();
        let back: Event = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.occurred_at.nanoseconds, 778_574_819);
    }

    #[test]
    fn references_and_short_digests() {
        let mut e = sample();
        assert_eq!(e.image_ref(), "127.0.0.1:5000/demo/app:v1");
        assert_eq!(e.short_digest(), Some("abc"));
        e.tag = None;
        e.repository.registry = None;
        assert_eq!(e.image_ref(), "demo/app@sha256:abc");
    }
}
