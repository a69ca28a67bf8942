//! CNCF Distribution notification envelopes (the registry inside Harbor,
//! GitLab and Debian's `docker-registry`).
//!
//! The registry sends blob pushes, manifest pushes and pulls, one event per
//! request. Only a manifest pushed under a tag and a manifest, tag or
//! repository deletion become events; the rest is acknowledged and counted.
//! The registry resends a notification it believes failed with the same
//! event id: a seen id is acknowledged again and recorded once.

use std::collections::HashMap;

use serde::Deserialize;

use crate::event::{Event, EventType, RepositoryRef, Source, Timestamp, new_id};
use crate::store::{self, KnownTag, Repository, RepositoryKind, StoreError};

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

/// What a notification means for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Pushed {
        tag: String,
        digest: String,
        media_type: Option<String>,
        size: Option<u64>,
    },
    TagDeleted {
        tag: String,
    },
    /// A manifest deleted by digest: every tag that pointed to it goes.
    ManifestDeleted {
        digest: String,
    },
    /// Distribution 3 reports a deleted repository this way.
    RepositoryDeleted,
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

pub fn classify(n: &Notification) -> Result<Change, Ignored> {
    let t = &n.target;
    match n.action.as_str() {
        "push" if !is_manifest(t) => Err(Ignored::BlobPush),
        "push" => match (&t.tag, &t.digest) {
            (Some(tag), Some(digest)) if !tag.is_empty() => Ok(Change::Pushed {
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
            (Some(tag), _) if !tag.is_empty() => Change::TagDeleted { tag: tag.clone() },
            (_, Some(digest)) => Change::ManifestDeleted {
                digest: digest.clone(),
            },
            _ => Change::RepositoryDeleted,
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

/// A notification that makes events, ready for the write transaction.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub dedupe_key: String,
    pub repository: String,
    pub host: Option<String>,
    pub change: Change,
    pub actor: Option<String>,
    pub occurred_at: Timestamp,
}

impl Accepted {
    pub fn new(n: &Notification, change: Change) -> Self {
        Self {
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
        }
    }
}

/// What recording a request's notifications did.
#[derive(Debug, Default)]
pub struct Recorded {
    pub events: Vec<Event>,
    pub duplicates: usize,
}

/// The mark a manifest deletion leaves for each tag it removed: Distribution
/// follows a manifest `delete` (digest, no tag) with one `delete` per tag
/// (tag, no digest), and the tag's deletion was already an event.
fn deleted_mark(repository_id: &str, tag: &str) -> String {
    format!("tag-deleted:{repository_id}:{tag}")
}

/// Records batches of accepted notifications (one batch per ingest
/// request) in the log, inside the caller's transaction: de-duplication,
/// the repository (created on first sight), known tags, and the events.
/// The tables are opened once for all of them.
pub fn record(
    txn: &redb::WriteTransaction,
    batches: &[Vec<Accepted>],
) -> Result<Vec<Recorded>, StoreError> {
    let mut log = store::events::Log::open(txn)?;
    let mut tags = store::repos::Tags::open(txn)?;
    let mut repos: HashMap<(String, Option<String>), Repository> = HashMap::new();
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let mut recorded = Recorded::default();
        for n in batch {
            if log.seen(&n.dedupe_key)? {
                recorded.duplicates += 1;
                continue;
            }
            let key = (n.repository.clone(), n.host.clone());
            let repo = match repos.get(&key) {
                Some(repo) => repo.clone(),
                None => {
                    let repo = local_repository(txn, n)?;
                    repos.insert(key, repo.clone());
                    repo
                }
            };
            let events = changes(&mut log, &mut tags, &repo, n)?;
            for (i, e) in events.iter().enumerate() {
                // The first event carries the key; its presence is what counts.
                log.append(e, (i == 0).then_some(n.dedupe_key.as_str()))?;
            }
            recorded.events.extend(events);
        }
        out.push(recorded);
    }
    Ok(out)
}

/// The local repository a notification is for, created as a registry would
/// on first sight.
fn local_repository(txn: &redb::WriteTransaction, n: &Accepted) -> Result<Repository, StoreError> {
    if let Some(repo) = store::repos::find_local(txn, &n.repository, n.host.as_deref())? {
        return Ok(repo);
    }
    let now = Timestamp::now();
    let repo = Repository {
        id: new_id("repo"),
        name: n.repository.clone(),
        kind: RepositoryKind::Local,
        registry: None,
        remote: None,
        poll: Default::default(),
        created_at: now,
        updated_at: now,
    };
    store::repos::put_repository(txn, &repo)?;
    tracing::info!(repository = repo.name, id = repo.id, "new local repository");
    Ok(repo)
}

/// The events one notification makes, with the known tags updated.
fn changes(
    log: &mut store::events::Log<'_>,
    tags: &mut store::repos::Tags<'_>,
    repo: &Repository,
    n: &Accepted,
) -> Result<Vec<Event>, StoreError> {
    let reference = RepositoryRef {
        id: repo.id.clone(),
        name: repo.name.clone(),
        registry: repo.registry.clone().or_else(|| n.host.clone()),
    };
    let event = |kind: EventType, tag: Option<String>, digest: Option<String>| Event {
        id: new_id("evt"),
        kind,
        source: Source::Local,
        repository: reference.clone(),
        tag,
        digest,
        previous_digest: None,
        media_type: None,
        size: None,
        actor: n.actor.clone(),
        occurred_at: n.occurred_at,
    };
    let mut events = Vec::new();
    match &n.change {
        Change::Pushed {
            tag,
            digest,
            media_type,
            size,
        } => {
            let previous = tags
                .get(&repo.id, tag)?
                .map(|t| t.digest)
                .filter(|d| d != digest);
            log.take_mark(&deleted_mark(&repo.id, tag))?;
            tags.put(
                &repo.id,
                tag,
                &KnownTag {
                    digest: digest.clone(),
                    media_type: media_type.clone(),
                    updated_at: n.occurred_at,
                },
            )?;
            events.push(Event {
                previous_digest: previous,
                media_type: media_type.clone(),
                size: *size,
                ..event(
                    EventType::ImagePushed,
                    Some(tag.clone()),
                    Some(digest.clone()),
                )
            });
        }
        Change::TagDeleted { tag } => {
            let known = tags.get(&repo.id, tag)?;
            let announced = log.take_mark(&deleted_mark(&repo.id, tag))?;
            if known.is_some() || !announced {
                tags.remove(&repo.id, tag)?;
                events.push(event(
                    EventType::ImageDeleted,
                    Some(tag.clone()),
                    known.map(|k| k.digest),
                ));
            }
        }
        Change::ManifestDeleted { digest } => {
            let gone: Vec<String> = tags
                .of(&repo.id)?
                .into_iter()
                .filter(|(_, k)| &k.digest == digest)
                .map(|(t, _)| t)
                .collect();
            for tag in &gone {
                tags.remove(&repo.id, tag)?;
                log.mark(&deleted_mark(&repo.id, tag))?;
                events.push(event(
                    EventType::ImageDeleted,
                    Some(tag.clone()),
                    Some(digest.clone()),
                ));
            }
            if gone.is_empty() {
                events.push(event(EventType::ImageDeleted, None, Some(digest.clone())));
            }
        }
        Change::RepositoryDeleted => {
            for (tag, known) in tags.of(&repo.id)? {
                tags.remove(&repo.id, &tag)?;
                events.push(event(
                    EventType::ImageDeleted,
                    Some(tag),
                    Some(known.digest),
                ));
            }
        }
    }
    Ok(events)
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
            Change::Pushed {
                tag: "v1".into(),
                digest: "sha256:a2293004e1641d49c7d7341229010c763ee4bf9d76adb835fcc8c8ba3af87582"
                    .into(),
                media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
                size: Some(401),
            }
        );
        let accepted = Accepted::new(&n, change);
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
        assert_eq!(classify(&n), Ok(Change::TagDeleted { tag: "v1".into() }));
        n.target.tag = None;
        assert!(matches!(classify(&n), Ok(Change::ManifestDeleted { .. })));
        n.target.digest = None;
        assert_eq!(classify(&n), Ok(Change::RepositoryDeleted));
    }
}
