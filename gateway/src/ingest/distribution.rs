//! CNCF Distribution notification envelopes (the registry inside Harbor,
//! GitLab and Debian's `docker-registry`).
//!
//! The registry sends blob pushes, manifest pushes and pulls, one event per
//! request. Only a manifest pushed under a tag and a manifest, tag or
//! repository deletion become events; the rest is acknowledged and counted.
//! The registry resends a notification it believes failed with the same
//! event id: a seen id is acknowledged again and recorded once.

use serde::Deserialize;

use crate::changes::{self, TagChange};
use crate::event::{EventSource, Timestamp};

#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub events: Vec<Notification>,
}

#[derive(Debug, Deserialize)]
pub struct Notification {
    pub id: String,
    #[serde(default)]
    pub timestamp: Option<String>,
    pub action: String,
    pub target: Target,
    #[serde(default)]
    pub request: Option<RequestRecord>,
    #[serde(default)]
    pub actor: Option<Actor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub digest: Option<String>,
    pub repository: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RequestRecord {
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Actor {
    #[serde(default)]
    pub name: Option<String>,
}

/// Why a notification made no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    BlobPush,
    UntaggedManifest,
    Pull,
    Mount,
    UnknownAction,
}

impl Ignored {
    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::BlobPush => "blob_push",
            Ignored::UntaggedManifest => "untagged_manifest",
            Ignored::Pull => "pull",
            Ignored::Mount => "mount",
            Ignored::UnknownAction => "unknown_action",
        }
    }
}

const MANIFEST_TYPES: [&str; 6] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

fn is_manifest(target: &Target) -> bool {
    target
        .url
        .as_deref()
        .is_some_and(|u| u.contains("/manifests/"))
        || target
            .media_type
            .as_deref()
            .is_some_and(|m| MANIFEST_TYPES.contains(&m))
}

pub fn classify(n: &Notification) -> Result<TagChange, Ignored> {
    let t = &n.target;
    match n.action.as_str() {
        "push" if !is_manifest(t) => Err(Ignored::BlobPush),
        "push" => match (&t.tag, &t.digest) {
            (Some(tag), Some(digest)) if !tag.is_empty() => Ok(TagChange::Pushed {
                tag: tag.clone(),
                digest: digest.clone(),
                media_type: t.media_type.clone(),
                size: t.size,
            }),
            _ => Err(Ignored::UntaggedManifest),
        },
        "pull" => Err(Ignored::Pull),
        "mount" => Err(Ignored::Mount),
        "delete" => Ok(match (&t.tag, &t.digest) {
            (Some(tag), _) if !tag.is_empty() => TagChange::TagDeleted { tag: tag.clone() },
            (_, Some(digest)) => TagChange::ManifestDeleted {
                digest: digest.clone(),
            },
            _ => TagChange::RepositoryDeleted,
        }),
        _ => Err(Ignored::UnknownAction),
    }
}

/// The key a resent notification is recognised by. The registry resends
/// the same event, same id and same timestamp; leading with the timestamp
/// keeps the keys of a batch next to each other in the index (random ids
/// alone would touch a different page of it per event).
fn dedupe_key(n: &Notification) -> String {
    match &n.timestamp {
        Some(ts) => format!("dist:{ts}:{}", n.id),
        None => format!("dist:{}", n.id),
    }
}

/// The notification as the log records it.
pub fn accept(n: &Notification, change: TagChange) -> changes::Notification {
    changes::Notification {
        dedupe_key: dedupe_key(n),
        repository: n.target.repository.clone(),
        host: n
            .request
            .as_ref()
            .and_then(|r| r.host.clone())
            .filter(|h| !h.is_empty()),
        change,
        actor: n
            .actor
            .as_ref()
            .and_then(|a| a.name.clone())
            .filter(|a| !a.is_empty()),
        occurred_at: n
            .timestamp
            .as_deref()
            .and_then(|t| Timestamp::parse_rfc3339(t).ok())
            .unwrap_or_else(Timestamp::now),
        source: EventSource::Local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUSH: &str =
        include_str!("../../../tests/fixtures/distribution/push-manifest-tag-v1.json");
    const BLOB: &str = include_str!("../../../tests/fixtures/distribution/push-blob.json");
    const PULL: &str = include_str!("../../../tests/fixtures/distribution/pull-manifest-get.json");

    fn first(json: &str) -> Notification {
        serde_json::from_str::<Envelope>(json)
            .unwrap()
            .events
            .into_iter()
            .next()
            .unwrap()
    }

    #[test]
    fn a_tagged_manifest_push_is_an_event() {
        let n = first(PUSH);
        let change = classify(&n).unwrap();
        assert_eq!(
            change,
            TagChange::Pushed {
                tag: "v1".into(),
                digest: "sha256:a2293004e1641d49c7d7341229010c763ee4bf9d76adb835fcc8c8ba3af87582"
                    .into(),
                media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
                size: Some(401),
            }
        );
        let accepted = accept(&n, change);
        assert_eq!(accepted.host.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(accepted.repository, "demo/app");
        assert_eq!(accepted.occurred_at.to_rfc3339(), "2026-11-28T20:25:52Z");
        assert_eq!(accepted.actor, None);
    }

    #[test]
    fn blobs_and_pulls_are_ignored() {
        assert_eq!(classify(&first(BLOB)), Err(Ignored::BlobPush));
        assert_eq!(classify(&first(PULL)), Err(Ignored::Pull));
    }

    #[test]
    fn deletes_by_tag_digest_and_repository() {
        let mut n = first(PUSH);
        n.action = "delete".into();
        assert_eq!(classify(&n), Ok(TagChange::TagDeleted { tag: "v1".into() }));
        n.target.tag = None;
        assert!(matches!(
            classify(&n),
            Ok(TagChange::ManifestDeleted { .. })
        ));
        n.target.digest = None;
        assert_eq!(classify(&n), Ok(TagChange::RepositoryDeleted));
    }
}
