//! Quay's `repo_push` notification (quay.io and Red Hat Quay). It names the
//! repository and the tags a push updated, but no digest and no id: like
//! Docker Hub's, its tags may be confirmed with the registry, which also
//! gives the digest that recognises the same push sent again.

use serde::Deserialize;

use super::{Invalid, Read, host_of, is_tag};
use crate::changes::{self, TagChange};
use crate::event::{EventSource, Timestamp, new_id};

#[derive(Debug, Deserialize)]
struct Payload {
    repository: String,
    #[serde(default)]
    docker_url: Option<String>,
    #[serde(default)]
    updated_tags: Option<UpdatedTags>,
}

/// Quay sends a list of tags; its early payloads sent a map of tag to image.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum UpdatedTags {
    List(Vec<String>),
    Map(std::collections::BTreeMap<String, serde_json::Value>),
}

/// Reads a `repo_push` body.
pub fn read(body: &[u8]) -> Result<Read, Invalid> {
    let p: Payload = serde_json::from_slice(body)
        .map_err(|e| Invalid(format!("not a Quay repo_push notification: {e}")))?;
    let tags: Vec<String> = match p.updated_tags {
        Some(UpdatedTags::List(tags)) => tags,
        Some(UpdatedTags::Map(map)) => map.into_keys().collect(),
        None => {
            return Err(Invalid(
                "updated_tags is missing: only repo_push notifications are read here".into(),
            ));
        }
    };
    let host = p.docker_url.as_deref().and_then(host_of);
    let now = Timestamp::now();
    // Without an id or a time, two deliveries of one push cannot be told
    // from two pushes; the key is unique unless the digest is learned.
    let delivery = new_id("quay");
    let mut read = Read::default();
    for tag in tags {
        if !is_tag(&tag) {
            read.ignored.push("untagged_manifest");
            continue;
        }
        read.accepted.push(changes::Notification {
            dedupe_key: format!("quay:{}:{tag}:{delivery}", p.repository),
            repository: p.repository.clone(),
            host: host.clone(),
            change: TagChange::Announced { tag },
            actor: None,
            occurred_at: now,
            source: EventSource::Quay,
        });
    }
    Ok(read)
}

/// The key of a push whose digest the registry confirmed: the same for
/// every delivery of it.
pub fn confirmed_key(repository: &str, tag: &str, digest: &str) -> String {
    format!("quay:{repository}:{tag}@{digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        crate::ingest::fixture("quay", name)
    }

    fn tags(r: &Read) -> Vec<String> {
        r.accepted
            .iter()
            .map(|n| match &n.change {
                TagChange::Announced { tag } => tag.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn every_updated_tag_is_announced() {
        let r = read(&fixture("repo-push.json")).unwrap();
        assert_eq!(tags(&r), ["latest"]);
        assert_eq!(r.accepted[0].repository, "dgangaia/test");
        assert_eq!(r.accepted[0].host.as_deref(), Some("quay.io"));
        assert_eq!(r.accepted[0].source, EventSource::Quay);
        let r = read(&fixture("repo-push-sample.json")).unwrap();
        assert_eq!(tags(&r), ["latest", "foo"]);
        let r = read(&fixture("repo-push-legacy.json")).unwrap();
        assert_eq!(tags(&r), ["latest"]);
    }

    #[test]
    fn other_notifications_are_refused_by_name() {
        let e = read(br#"{"repository":"a/b","build_id":"x"}"#).unwrap_err();
        assert!(e.0.contains("updated_tags"), "{e}");
    }
}
