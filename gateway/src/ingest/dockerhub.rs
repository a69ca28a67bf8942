//! Docker Hub's repository webhook. It is sent on every push, names the
//! repository and the tag, and carries neither a digest nor a signature nor
//! an id: the credential is in the URL the user gave Docker Hub, and the
//! gateway may confirm the tag (learning its digest) with the registry
//! before it believes it (`ingest.dockerhub.verify`). A resend is
//! recognised by the push time it repeats.

use serde::Deserialize;

use super::{Invalid, Read, is_tag};
use crate::changes::{self, TagChange};
use crate::event::{EventSource, Timestamp};

#[derive(Debug, Deserialize)]
struct Payload {
    push_data: PushData,
    repository: Repository,
}

#[derive(Debug, Deserialize)]
struct PushData {
    #[serde(default)]
    tag: Option<String>,
    /// Seconds; older payloads write it as a float (`1.417566161e+09`).
    #[serde(default)]
    pushed_at: Option<f64>,
    #[serde(default)]
    pusher: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Repository {
    repo_name: String,
}

/// Reads a Docker Hub webhook body; `host` is the registry's, for the
/// repository's match.
pub fn read(body: &[u8], host: &str) -> Result<Read, Invalid> {
    let p: Payload = serde_json::from_slice(body)
        .map_err(|e| Invalid(format!("not a Docker Hub webhook payload: {e}")))?;
    let mut read = Read::default();
    let Some(tag) = p.push_data.tag.filter(|t| is_tag(t)) else {
        read.ignored.push("untagged_manifest");
        return Ok(read);
    };
    let pushed_at = p.push_data.pushed_at.map(|s| s as i64);
    read.accepted.push(changes::Notification {
        dedupe_key: format!(
            "dockerhub:{}:{}:{tag}",
            pushed_at.unwrap_or_default(),
            p.repository.repo_name
        ),
        repository: p.repository.repo_name,
        host: Some(host.to_owned()),
        change: TagChange::Announced { tag },
        actor: p.push_data.pusher.filter(|a| !a.is_empty()),
        occurred_at: pushed_at
            .map(Timestamp::from_unix)
            .unwrap_or_else(Timestamp::now),
        source: EventSource::Dockerhub,
    });
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        crate::ingest::fixture("dockerhub", name)
    }

    #[test]
    fn the_documented_payloads_announce_the_tag() {
        let a = read(&fixture("push.json"), "registry-1.docker.io").unwrap();
        let b = read(&fixture("push-legacy.json"), "registry-1.docker.io").unwrap();
        for r in [&a, &b] {
            let n = &r.accepted[0];
            assert_eq!(n.repository, "svendowideit/testhook");
            assert_eq!(
                n.change,
                TagChange::Announced {
                    tag: "latest".into()
                }
            );
            assert_eq!(n.actor.as_deref(), Some("trustedbuilder"));
            assert_eq!(n.occurred_at.to_rfc3339(), "2014-12-03T00:22:41Z");
            assert_eq!(n.source, EventSource::Dockerhub);
        }
        // The same push, however its time is written, is the same delivery.
        assert_eq!(a.accepted[0].dedupe_key, b.accepted[0].dedupe_key);
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        let e = read(br#"{"push_data":{"tag":"v1"}}"#, "h").unwrap_err();
        assert!(e.0.contains("repository"), "{e}");
    }
}
