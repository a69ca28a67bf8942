//! The event: what the log holds, what plugins see and what the API shows.
//!
//! Its JSON form is fixed by the design document and is byte for byte what
//! the `default` plugin sends (a test holds the two together).

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ImagePushed => "image.pushed",
            EventType::ImageDeleted => "image.deleted",
            EventType::WebhookTest => "webhook.test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::ImagePushed, Self::ImageDeleted, Self::WebhookTest]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// Where the gateway learned of the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The registry sent a notification.
    Local,
    /// The gateway polled the registry.
    Remote,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Remote => "remote",
        }
    }
}

/// The repository an event belongs to, as the event carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RepositoryRef {
    pub id: String,
    pub name: String,
    pub registry: Option<String>,
}

/// One event of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// `evt_` and a ULID: unique, sortable by creation.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub source: Source,
    pub repository: RepositoryRef,
    pub tag: Option<String>,
    pub digest: Option<String>,
    /// For a push to a known tag: the digest the tag pointed to before.
    pub previous_digest: Option<String>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
    pub actor: Option<String>,
    #[schema(value_type = String, format = DateTime, example = "2026-11-28T20:25:52Z")]
    pub occurred_at: Timestamp,
}

/// A UTC instant with nanosecond precision.
///
/// In JSON (the API, the `default` plugin) it is RFC 3339 to the second, as
/// the design document shows; in the log's binary records it keeps its
/// nanoseconds, which plugins such as `europa` print as milliseconds. Serde's
/// `is_human_readable` tells the two apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc())
    }

    pub fn from_unix_nanos(nanos: i128) -> Self {
        Self(OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH))
    }

    pub fn from_unix_seconds(seconds: i64) -> Self {
        Self::from_unix_nanos(i128::from(seconds) * 1_000_000_000)
    }

    /// Parses RFC 3339 with any precision and offset.
    pub fn parse_rfc3339(s: &str) -> Result<Self, time::error::Parse> {
        OffsetDateTime::parse(s, &Rfc3339).map(|t| Self(t.to_offset(time::UtcOffset::UTC)))
    }

    pub fn unix_seconds(&self) -> i64 {
        self.0.unix_timestamp()
    }

    pub fn unix_millis(&self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000_000) as i64
    }

    pub fn nanosecond(&self) -> u32 {
        self.0.nanosecond()
    }

    pub fn from_unix_millis(millis: i64) -> Self {
        Self::from_unix_nanos(i128::from(millis) * 1_000_000)
    }

    /// `2026-11-28T20:25:52Z`.
    pub fn to_rfc3339(&self) -> String {
        let t = self
            .0
            .replace_nanosecond(0)
            .expect("0 is a valid nanosecond");
        t.format(&Rfc3339).expect("UTC instants always format")
    }

    pub fn inner(&self) -> OffsetDateTime {
        self.0
    }
}

impl From<OffsetDateTime> for Timestamp {
    fn from(t: OffsetDateTime) -> Self {
        Self(t.to_offset(time::UtcOffset::UTC))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_rfc3339())
        } else {
            s.serialize_i128(self.0.unix_timestamp_nanos())
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            Timestamp::parse_rfc3339(&s).map_err(de::Error::custom)
        } else {
            i128::deserialize(d).map(Timestamp::from_unix_nanos)
        }
    }
}

/// Makes the prefixed, sortable ids of every record: `evt_`, `repo_`, `wh_`,
/// `dlv_` followed by a ULID. Monotonic within a process, so ids made in the
/// same millisecond still sort in creation order.
pub fn new_id(prefix: &str) -> String {
    use std::sync::Mutex;
    static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);
    let mut guard = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let generator = guard.get_or_insert_with(ulid::Generator::new);
    let ulid = generator.generate().unwrap_or_else(|_| ulid::Ulid::new());
    format!("{prefix}_{ulid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            id: "evt_01KB5ZJ0GA0000000000000000".into(),
            kind: EventType::ImagePushed,
            source: Source::Local,
            repository: RepositoryRef {
                id: "repo_1".into(),
                name: "demo/app".into(),
                registry: Some("127.0.0.1:5000".into()),
            },
            tag: Some("v1".into()),
            digest: Some("sha256:abc".into()),
            previous_digest: None,
            media_type: None,
            size: Some(401),
            actor: None,
            occurred_at: Timestamp::parse_rfc3339("2026-11-28T20:25:52.778574819Z").unwrap(),
        }
    }

    #[test]
    fn json_is_the_design_shape_to_the_second() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["type"], "image.pushed");
        assert_eq!(json["occurred_at"], "2026-11-28T20:25:52Z");
        assert!(json["previous_digest"].is_null());
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys.len(), 11);
    }

    #[test]
    fn binary_records_keep_nanoseconds() {
        let event = sample();
        let bytes = rmp_serde::to_vec_named(&event).unwrap();
        let back: Event = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.occurred_at.nanosecond(), 778_574_819);
    }

    #[test]
    fn ids_sort_in_creation_order() {
        let ids: Vec<String> = (0..1000).map(|_| new_id("evt")).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(ids[0].starts_with("evt_") && ids[0].len() == 30);
    }
}
