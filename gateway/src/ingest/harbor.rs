//! Harbor's webhook (`PUSH_ARTIFACT`, `DELETE_ARTIFACT`), in both of the
//! payload formats a Harbor policy may choose: `Default` (Harbor's own
//! object) and `CloudEvents` (structured JSON, `harbor.artifact.*`).
//!
//! Harbor reports one artifact per resource; a push by digest carries the
//! digest where the tag would be, and makes no event. Deleting an artifact
//! deletes every tag on it, so a deletion is by digest. Harbor retries a
//! failed delivery with the same payload: the default format has no id, so
//! the key is built from what the payload says (time, type, artifact); the
//! CloudEvents format's `id` is kept across Harbor's retries.

use serde::Deserialize;

use super::{Invalid, Read, host_of, is_tag};
use crate::changes::{self, TagChange};
use crate::event::{EventSource, Timestamp};

#[derive(Debug, Deserialize)]
struct Default {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    occur_at: Option<i64>,
    #[serde(default)]
    operator: Option<String>,
    event_data: EventData,
}

#[derive(Debug, Deserialize)]
struct CloudEvent {
    specversion: String,
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    operator: Option<String>,
    data: EventData,
}

#[derive(Debug, Deserialize)]
struct EventData {
    #[serde(default)]
    resources: Vec<Resource>,
    repository: Repository,
}

#[derive(Debug, Deserialize)]
struct Resource {
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    resource_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Repository {
    repo_full_name: String,
}

enum Kind {
    Push,
    Delete,
    Other,
}

fn kind(default_type: &str) -> Kind {
    match default_type {
        "PUSH_ARTIFACT" | "harbor.artifact.pushed" => Kind::Push,
        "DELETE_ARTIFACT" | "harbor.artifact.deleted" => Kind::Delete,
        _ => Kind::Other,
    }
}

/// Reads a Harbor webhook body, in either format.
pub fn read(body: &[u8]) -> Result<Read, Invalid> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Invalid(format!("not a Harbor webhook payload: {e}")))?;
    let (key, kind_name, occurred_at, operator, data) = if value.get("specversion").is_some() {
        let ce: CloudEvent = serde_json::from_value(value)
            .map_err(|e| Invalid(format!("not a Harbor CloudEvent: {e}")))?;
        if ce.specversion != "1.0" {
            return Err(Invalid(format!(
                "CloudEvents specversion `{}` is not 1.0",
                ce.specversion
            )));
        }
        let at = ce
            .time
            .as_deref()
            .and_then(|t| Timestamp::parse_rfc3339(t).ok());
        (
            format!("harbor:ce:{}", ce.id),
            ce.kind,
            at,
            ce.operator,
            ce.data,
        )
    } else {
        let d: Default = serde_json::from_value(value)
            .map_err(|e| Invalid(format!("not a Harbor webhook payload: {e}")))?;
        let at = d.occur_at.map(Timestamp::from_unix);
        let key = format!(
            "harbor:{}:{}:{}",
            d.occur_at.unwrap_or_default(),
            d.kind,
            d.event_data.repository.repo_full_name
        );
        (key, d.kind, at, d.operator, d.event_data)
    };
    let repository = data.repository.repo_full_name;
    if repository.is_empty() {
        return Err(Invalid(
            "event_data.repository.repo_full_name is empty".into(),
        ));
    }
    let mut read = Read::default();
    let kind = kind(&kind_name);
    for (i, r) in data.resources.into_iter().enumerate() {
        let change = match (&kind, r.tag.as_deref(), r.digest.clone()) {
            (Kind::Other, _, _) => {
                read.ignored.push("other_event");
                continue;
            }
            (Kind::Push, Some(tag), Some(digest)) if is_tag(tag) => TagChange::Pushed {
                tag: tag.to_owned(),
                digest,
                media_type: None,
                size: None,
            },
            (Kind::Push, _, _) => {
                read.ignored.push("untagged_manifest");
                continue;
            }
            (Kind::Delete, _, Some(digest)) => TagChange::ManifestDeleted { digest },
            (Kind::Delete, Some(tag), None) if is_tag(tag) => TagChange::TagDeleted {
                tag: tag.to_owned(),
            },
            (Kind::Delete, _, None) => {
                return Err(Invalid(format!(
                    "resources[{i}] names neither a digest nor a tag"
                )));
            }
        };
        read.accepted.push(changes::Notification {
            dedupe_key: format!("{key}:{}:{i}", r.digest.as_deref().unwrap_or("")),
            repository: repository.clone(),
            host: r.resource_url.as_deref().and_then(host_of),
            change,
            actor: operator.clone().filter(|o| !o.is_empty()),
            occurred_at: occurred_at.unwrap_or_else(Timestamp::now),
            source: EventSource::Harbor,
        });
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:dde8e930c7b6a490f728e66292bc9bce42efc9bbb5278bae40e4f30f6e00fe8c";

    fn fixture(name: &str) -> Vec<u8> {
        crate::ingest::fixture("harbor", name)
    }

    #[test]
    fn a_push_in_either_format_is_a_tag_pushed() {
        for name in [
            "default-push-artifact.json",
            "cloudevents-push-artifact.json",
        ] {
            let read = read(&fixture(name)).unwrap();
            assert_eq!(read.accepted.len(), 1, "{name}");
            let n = &read.accepted[0];
            assert_eq!(n.repository, "library/busybox");
            assert_eq!(n.host.as_deref(), Some("harbor.dev"));
            assert_eq!(n.source, EventSource::Harbor);
            assert_eq!(
                n.change,
                TagChange::Pushed {
                    tag: "1.36".into(),
                    digest: DIGEST.into(),
                    media_type: None,
                    size: None
                }
            );
        }
        let d = read(&fixture("default-push-artifact.json")).unwrap();
        assert_eq!(
            d.accepted[0].occurred_at.to_rfc3339(),
            "2023-03-06T05:58:23Z"
        );
        assert_eq!(d.accepted[0].actor.as_deref(), Some("admin"));
    }

    #[test]
    fn a_deletion_is_by_digest_and_pulls_are_ignored() {
        for name in [
            "default-delete-artifact.json",
            "cloudevents-delete-artifact.json",
        ] {
            let read = read(&fixture(name)).unwrap();
            assert_eq!(
                read.accepted[0].change,
                TagChange::ManifestDeleted {
                    digest: DIGEST.into()
                },
                "{name}"
            );
        }
        for name in [
            "default-pull-artifact.json",
            "cloudevents-pull-artifact.json",
        ] {
            let read = read(&fixture(name)).unwrap();
            assert!(read.accepted.is_empty(), "{name}");
            assert_eq!(read.ignored, ["other_event"]);
        }
    }

    #[test]
    fn the_same_delivery_has_the_same_key() {
        let a = read(&fixture("default-push-artifact.json")).unwrap();
        let b = read(&fixture("default-push-artifact.json")).unwrap();
        assert_eq!(a.accepted[0].dedupe_key, b.accepted[0].dedupe_key);
        let c = read(&fixture("default-delete-artifact.json")).unwrap();
        assert_ne!(a.accepted[0].dedupe_key, c.accepted[0].dedupe_key);
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        assert!(read(b"{").unwrap_err().0.contains("not a Harbor"));
        let e = read(br#"{"type":"PUSH_ARTIFACT","event_data":{"resources":[]}}"#).unwrap_err();
        assert!(e.0.contains("repository"), "{e}");
    }
}
