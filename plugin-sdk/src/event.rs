use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};

use crate::{Config, Timestamp};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    ImagePushed,
    ImageDeleted,
    /// A sample event sent by "Test Webhook".
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

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Where the gateway learned of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventSource {
    /// The registry sent a notification.
    Local,
    /// The gateway polled a registry it does not control.
    Remote,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Local => "local",
            EventSource::Remote => "remote",
        }
    }
}

impl Serialize for EventSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repository {
    /// The gateway's id, e.g. `repo_01JDQ8...`.
    pub id: String,
    /// The path users type, e.g. `demo/app`.
    pub name: String,
    /// The registry host, e.g. `127.0.0.1:5000`, when known.
    pub registry: Option<String>,
}

/// One event from the gateway's log.
///
/// Its [`Serialize`] form is the event JSON of Callisto's design document,
/// the body the `default` plugin sends; the host's API shows the same JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Sortable unique id, stable across retries and replays.
    pub id: String,
    pub kind: EventType,
    pub source: EventSource,
    pub repository: Repository,
    pub tag: Option<String>,
    pub digest: Option<String>,
    /// For a push to a known tag: the digest the tag pointed to before.
    pub previous_digest: Option<String>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
    pub actor: Option<String>,
    pub occurred_at: Timestamp,
}

impl Event {
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

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Field order and names are the contract of the design document.
        let mut st = s.serialize_struct("Event", 12)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("type", &self.kind)?;
        st.serialize_field("source", &self.source)?;
        st.serialize_field("repository", &self.repository)?;
        st.serialize_field("tag", &self.tag)?;
        st.serialize_field("digest", &self.digest)?;
        st.serialize_field("previous_digest", &self.previous_digest)?;
        st.serialize_field("media_type", &self.media_type)?;
        st.serialize_field("size", &self.size)?;
        st.serialize_field("actor", &self.actor)?;
        st.serialize_field("occurred_at", &self.occurred_at.to_rfc3339())?;
        st.end()
    }
}

/// The webhook a call is for. Its secret is deliberately not here: the host
/// signs what the plugin returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// The gateway's id, e.g. `wh_01JDQ8...`.
    pub id: String,
    pub url: String,
    pub config: Config,
}
