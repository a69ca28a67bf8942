//! How what the gateway learns about tags becomes events, whether a
//! registry told it (a notification) or it looked (a poll). Pure rules over
//! a repository's known tags, reached through [`TagBook`], so that they are
//! tested without a store and every store engine applies the same ones.

use std::collections::{BTreeMap, HashSet};

use crate::event::{Event, EventSource, EventType, RepositoryRef, Timestamp, new_event};
use crate::records::{KnownTag, Repository, RepositoryKind};

/// What a registry's notification says happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagChange {
    Pushed {
        tag: String,
        digest: String,
        media_type: Option<String>,
        size: Option<u64>,
    },
    /// A manifest pushed by digest alone (through the proxy: a platform
    /// manifest of an index, a signature, an SBOM): no tag moves.
    ManifestPushed {
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
    /// A push of `tag` reported without its digest (Docker Hub, Quay, when
    /// the gateway is not set to confirm it with the registry). An event,
    /// but the known tags stay as they are: with no digest there is
    /// nothing to compare a later poll or notification with.
    Announced {
        tag: String,
    },
}

/// A notification that makes events, ready for the log: which repository
/// (by name, and the registry host it came from), what changed, and the key
/// that recognises the registry sending it again.
#[derive(Debug, Clone)]
pub struct Notification {
    pub dedupe_key: String,
    pub repository: String,
    pub host: Option<String>,
    pub change: TagChange,
    pub actor: Option<String>,
    pub occurred_at: Timestamp,
    pub source: EventSource,
}

/// What recording one request's notifications did.
#[derive(Debug, Default)]
pub struct Recorded {
    pub events: Vec<Event>,
    pub duplicates: usize,
}

/// A repository's known tags, and the marks a manifest deletion leaves, as
/// the rules read and change them. A store implements it over its own
/// transaction.
pub trait TagBook {
    type Error;
    fn get(&mut self, tag: &str) -> Result<Option<KnownTag>, Self::Error>;
    fn put(&mut self, tag: &str, known: KnownTag) -> Result<(), Self::Error>;
    fn remove(&mut self, tag: &str) -> Result<(), Self::Error>;
    /// Every known tag, by tag.
    fn all(&mut self) -> Result<Vec<(String, KnownTag)>, Self::Error>;
    /// Leaves a short-lived mark on `tag`, for what a later notification
    /// must not repeat.
    fn mark(&mut self, tag: &str) -> Result<(), Self::Error>;
    /// Whether `tag` was marked, removing the mark.
    fn take_mark(&mut self, tag: &str) -> Result<bool, Self::Error>;
}

/// The events one notification makes for the repository `reference`, with
/// the known tags updated.
///
/// Distribution follows a manifest `delete` (digest, no tag) with one
/// `delete` per tag (tag, no digest): the manifest's deletion already made
/// the tag's event, and the mark it left keeps the second from repeating it.
pub fn from_notification<B: TagBook>(
    tags: &mut B,
    reference: &RepositoryRef,
    n: &Notification,
) -> Result<Vec<Event>, B::Error> {
    let event = |kind: EventType, tag: Option<String>, digest: Option<String>| {
        new_event(kind, n.source, reference.clone(), n.occurred_at)
            .with_tag(tag)
            .with_digest(digest)
            .with_actor(n.actor.clone())
    };
    let mut events = Vec::new();
    match &n.change {
        TagChange::Pushed {
            tag,
            digest,
            media_type,
            size,
        } => {
            let known = tags.get(tag)?;
            tags.take_mark(tag)?;
            // One identity per (repository, tag, digest): a change already
            // learned, by a poll or by another registry's notification, is
            // not news again, whichever of them came first.
            if known.as_ref().is_some_and(|k| &k.digest == digest) {
                return Ok(events);
            }
            let previous = known.map(|t| t.digest);
            tags.put(
                tag,
                KnownTag {
                    digest: digest.clone(),
                    media_type: media_type.clone(),
                    updated_at: n.occurred_at,
                },
            )?;
            events.push(
                event(
                    EventType::ImagePushed,
                    Some(tag.clone()),
                    Some(digest.clone()),
                )
                .with_previous_digest(previous)
                .with_media_type(media_type.clone())
                .with_size(*size),
            );
        }
        TagChange::ManifestPushed {
            digest,
            media_type,
            size,
        } => {
            events.push(
                event(EventType::ImagePushed, None, Some(digest.clone()))
                    .with_media_type(media_type.clone())
                    .with_size(*size),
            );
        }
        TagChange::TagDeleted { tag } => {
            let known = tags.get(tag)?;
            let announced = tags.take_mark(tag)?;
            if known.is_some() || !announced {
                tags.remove(tag)?;
                events.push(event(
                    EventType::ImageDeleted,
                    Some(tag.clone()),
                    known.map(|k| k.digest),
                ));
            }
        }
        TagChange::ManifestDeleted { digest } => {
            let gone: Vec<String> = tags
                .all()?
                .into_iter()
                .filter(|(_, k)| &k.digest == digest)
                .map(|(t, _)| t)
                .collect();
            for tag in &gone {
                tags.remove(tag)?;
                tags.mark(tag)?;
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
        TagChange::Announced { tag } => {
            events.push(event(EventType::ImagePushed, Some(tag.clone()), None));
        }
        TagChange::RepositoryDeleted => {
            for (tag, known) in tags.all()? {
                tags.remove(&tag)?;
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

/// The repository a notification from `host` is for, among those of its
/// name: a local one whose registry is unset or is `host`, or a remote one
/// polled at `host` (the same repository, told both ways, so that its push
/// and its poll share one set of known tags). The most specific wins: one
/// naming the host, a local one before a remote one.
pub fn notified_repository(candidates: Vec<Repository>, host: Option<&str>) -> Option<Repository> {
    let names_host = |r: &Repository| matches!((&r.registry, host), (Some(w), Some(h)) if w.eq_ignore_ascii_case(h));
    let mut candidates: Vec<Repository> = candidates
        .into_iter()
        .filter(|r| match r.kind {
            RepositoryKind::Local => r.registry.is_none() || names_host(r),
            RepositoryKind::Remote => names_host(r),
        })
        .collect();
    candidates.sort_by_key(|r| (!names_host(r), r.kind == RepositoryKind::Remote));
    candidates.into_iter().next()
}

/// A change a poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A tag not known before.
    New { tag: String, digest: String },
    /// A known tag now pointing elsewhere.
    Moved {
        tag: String,
        digest: String,
        previous: String,
    },
    /// A known tag the registry no longer lists.
    Gone { tag: String, digest: String },
}

/// Compares the digests observed for the selected tags, and the registry's
/// full list, with the known tags. A known tag that is still listed but no
/// longer selected (out of `max_tags`, say) is neither polled nor gone.
pub fn compare(
    known: &[(String, KnownTag)],
    listed: &HashSet<String>,
    observed: &BTreeMap<String, String>,
) -> Vec<Change> {
    let known_map: BTreeMap<&str, &KnownTag> = known.iter().map(|(t, k)| (t.as_str(), k)).collect();
    let mut changes = Vec::new();
    for (tag, digest) in observed {
        match known_map.get(tag.as_str()) {
            None => changes.push(Change::New {
                tag: tag.clone(),
                digest: digest.clone(),
            }),
            Some(k) if &k.digest != digest => changes.push(Change::Moved {
                tag: tag.clone(),
                digest: digest.clone(),
                previous: k.digest.clone(),
            }),
            Some(_) => {}
        }
    }
    for (tag, k) in known {
        if !listed.contains(tag) && !observed.contains_key(tag) {
            changes.push(Change::Gone {
                tag: tag.clone(),
                digest: k.digest.clone(),
            });
        }
    }
    changes
}

/// Applies what a poll found to the known tags, and returns its events
/// (none when `silent`: a first sync that only learns).
pub fn from_poll<B: TagBook>(
    tags: &mut B,
    reference: &RepositoryRef,
    listed: &HashSet<String>,
    observed: &BTreeMap<String, String>,
    silent: bool,
    now: Timestamp,
) -> Result<Vec<Event>, B::Error> {
    let known = tags.all()?;
    let mut events = Vec::new();
    for change in compare(&known, listed, observed) {
        let (kind, tag, digest, previous) = match change {
            Change::New { tag, digest } => (EventType::ImagePushed, tag, digest, None),
            Change::Moved {
                tag,
                digest,
                previous,
            } => (EventType::ImagePushed, tag, digest, Some(previous)),
            Change::Gone { tag, digest } => (EventType::ImageDeleted, tag, digest, None),
        };
        if kind == EventType::ImageDeleted {
            tags.remove(&tag)?;
        } else {
            let known = KnownTag {
                digest: digest.clone(),
                media_type: None,
                updated_at: now,
            };
            tags.put(&tag, known)?;
        }
        if !silent {
            events.push(
                new_event(kind, EventSource::Remote, reference.clone(), now)
                    .with_tag(tag)
                    .with_digest(digest)
                    .with_previous_digest(previous),
            );
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known tags in memory: the rules without a store.
    #[derive(Default)]
    struct Book {
        tags: BTreeMap<String, KnownTag>,
        marks: std::collections::BTreeSet<String>,
    }

    impl TagBook for Book {
        type Error = std::convert::Infallible;
        fn get(&mut self, tag: &str) -> Result<Option<KnownTag>, Self::Error> {
            Ok(self.tags.get(tag).cloned())
        }
        fn put(&mut self, tag: &str, known: KnownTag) -> Result<(), Self::Error> {
            self.tags.insert(tag.to_owned(), known);
            Ok(())
        }
        fn remove(&mut self, tag: &str) -> Result<(), Self::Error> {
            self.tags.remove(tag);
            Ok(())
        }
        fn all(&mut self) -> Result<Vec<(String, KnownTag)>, Self::Error> {
            Ok(self.tags.clone().into_iter().collect())
        }
        fn mark(&mut self, tag: &str) -> Result<(), Self::Error> {
            self.marks.insert(tag.to_owned());
            Ok(())
        }
        fn take_mark(&mut self, tag: &str) -> Result<bool, Self::Error> {
            Ok(self.marks.remove(tag))
        }
    }

    fn reference() -> RepositoryRef {
        RepositoryRef {
            id: "repo_1".into(),
            name: "demo/app".into(),
            registry: Some("127.0.0.1:5000".into()),
        }
    }

    fn notification(change: TagChange) -> Notification {
        Notification {
            dedupe_key: "k".into(),
            repository: "demo/app".into(),
            host: None,
            change,
            actor: Some("alice".into()),
            occurred_at: Timestamp::from_unix(1_795_897_552),
            source: EventSource::Local,
        }
    }

    fn pushed(tag: &str, digest: &str) -> TagChange {
        TagChange::Pushed {
            tag: tag.into(),
            digest: digest.into(),
            media_type: None,
            size: Some(1),
        }
    }

    #[test]
    fn a_push_to_a_known_tag_carries_the_previous_digest() {
        let mut book = Book::default();
        let first = from_notification(
            &mut book,
            &reference(),
            &notification(pushed("v1", "sha256:a")),
        )
        .unwrap();
        assert_eq!(first[0].previous_digest, None);
        assert_eq!(first[0].actor.as_deref(), Some("alice"));
        let again = from_notification(
            &mut book,
            &reference(),
            &notification(pushed("v1", "sha256:b")),
        )
        .unwrap();
        assert_eq!(again[0].previous_digest.as_deref(), Some("sha256:a"));
        assert_eq!(book.tags["v1"].digest, "sha256:b");
    }

    #[test]
    fn a_manifest_deletion_is_not_repeated_by_its_tag_deletions() {
        let mut book = Book::default();
        for tag in ["v1", "latest"] {
            from_notification(
                &mut book,
                &reference(),
                &notification(pushed(tag, "sha256:a")),
            )
            .unwrap();
        }
        let deleted = from_notification(
            &mut book,
            &reference(),
            &notification(TagChange::ManifestDeleted {
                digest: "sha256:a".into(),
            }),
        )
        .unwrap();
        assert_eq!(deleted.len(), 2);
        assert!(book.tags.is_empty());
        let repeated = from_notification(
            &mut book,
            &reference(),
            &notification(TagChange::TagDeleted { tag: "v1".into() }),
        )
        .unwrap();
        assert!(repeated.is_empty(), "{repeated:?}");
        // An unknown tag's deletion is still news.
        let unknown = from_notification(
            &mut book,
            &reference(),
            &notification(TagChange::TagDeleted { tag: "v9".into() }),
        )
        .unwrap();
        assert_eq!(unknown.len(), 1);
    }

    #[test]
    fn a_proxied_put_is_an_event_only_when_it_moves_the_tag() {
        let mut book = Book::default();
        let put = |digest: &str| TagChange::Pushed {
            tag: "v1".into(),
            digest: digest.into(),
            media_type: None,
            size: Some(1),
        };
        let mut count = |change| {
            from_notification(&mut book, &reference(), &notification(change))
                .unwrap()
                .len()
        };
        assert_eq!(count(put("sha256:a")), 1);
        assert_eq!(count(put("sha256:a")), 0, "a retry");
        assert_eq!(count(put("sha256:b")), 1);
        assert_eq!(count(put("sha256:a")), 1, "moved back");
    }

    #[test]
    fn a_silent_poll_learns_without_events() {
        let mut book = Book::default();
        let listed: HashSet<String> = ["v1".to_string()].into();
        let observed: BTreeMap<String, String> =
            [("v1".to_string(), "sha256:a".to_string())].into();
        let now = Timestamp::from_unix(1);
        let events = from_poll(&mut book, &reference(), &listed, &observed, true, now).unwrap();
        assert!(events.is_empty());
        assert_eq!(book.tags["v1"].digest, "sha256:a");
        let observed: BTreeMap<String, String> =
            [("v1".to_string(), "sha256:b".to_string())].into();
        let events = from_poll(&mut book, &reference(), &listed, &observed, false, now).unwrap();
        assert_eq!(events[0].previous_digest.as_deref(), Some("sha256:a"));
        assert_eq!(events[0].source, EventSource::Remote);
    }

    fn poll_sees(book: &mut Book, tags: &[(&str, &str)]) -> Vec<Event> {
        let listed: HashSet<String> = tags.iter().map(|(t, _)| t.to_string()).collect();
        let observed: BTreeMap<String, String> = tags
            .iter()
            .map(|(t, d)| (t.to_string(), d.to_string()))
            .collect();
        from_poll(
            book,
            &reference(),
            &listed,
            &observed,
            false,
            Timestamp::from_unix(2),
        )
        .unwrap()
    }

    #[test]
    fn a_push_learned_by_notification_then_poll_fires_once() {
        let mut book = Book::default();
        let told = from_notification(
            &mut book,
            &reference(),
            &notification(pushed("v1", "sha256:a")),
        )
        .unwrap();
        assert_eq!(told.len(), 1);
        assert!(poll_sees(&mut book, &[("v1", "sha256:a")]).is_empty());
    }

    #[test]
    fn a_push_learned_by_poll_then_notification_fires_once() {
        let mut book = Book::default();
        assert_eq!(poll_sees(&mut book, &[("v1", "sha256:a")]).len(), 1);
        // The registry's notification arrives late, or another registry's
        // webhook tells the same push again under another key.
        let late = from_notification(
            &mut book,
            &reference(),
            &notification(pushed("v1", "sha256:a")),
        )
        .unwrap();
        assert!(late.is_empty(), "{late:?}");
        // A new digest is news again, whoever tells it.
        let moved = from_notification(
            &mut book,
            &reference(),
            &notification(pushed("v1", "sha256:b")),
        )
        .unwrap();
        assert_eq!(moved[0].previous_digest.as_deref(), Some("sha256:a"));
    }

    #[test]
    fn a_dropped_notification_is_made_up_by_the_poll() {
        let mut book = Book::default();
        from_notification(
            &mut book,
            &reference(),
            &notification(pushed("v1", "sha256:a")),
        )
        .unwrap();
        // v2's notification never arrives.
        let found = poll_sees(&mut book, &[("v1", "sha256:a"), ("v2", "sha256:c")]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].tag.as_deref(), Some("v2"));
    }

    #[test]
    fn an_announced_push_is_news_but_not_known() {
        let mut book = Book::default();
        let e = from_notification(
            &mut book,
            &reference(),
            &notification(TagChange::Announced { tag: "v1".into() }),
        )
        .unwrap();
        assert_eq!(e[0].kind, EventType::ImagePushed);
        assert_eq!(e[0].digest, None);
        assert!(book.tags.is_empty());
    }

    #[test]
    fn a_notification_finds_the_polled_repository_of_its_host() {
        let local_any = Repository::new_local("demo/app");
        let mut local_other = Repository::new_local("demo/app");
        local_other.registry = Some("other:5000".into());
        let mut remote = Repository::new_local("demo/app");
        remote.kind = RepositoryKind::Remote;
        remote.registry = Some("127.0.0.1:5000".into());
        let all = vec![local_any.clone(), local_other.clone(), remote.clone()];
        let pick = |host: Option<&str>| notified_repository(all.clone(), host).map(|r| r.id);
        assert_eq!(pick(Some("127.0.0.1:5000")), Some(remote.id.clone()));
        assert_eq!(pick(Some("other:5000")), Some(local_other.id.clone()));
        assert_eq!(pick(Some("elsewhere")), Some(local_any.id.clone()));
        assert_eq!(pick(None), Some(local_any.id.clone()));
        // A remote repository of another registry is never a candidate.
        assert_eq!(
            notified_repository(vec![remote.clone()], Some("elsewhere")),
            None
        );
    }

    #[test]
    fn new_moved_and_gone() {
        let known = vec![
            (
                "v1".to_string(),
                KnownTag {
                    digest: "sha256:1".into(),
                    media_type: None,
                    updated_at: Timestamp::now(),
                },
            ),
            (
                "v2".to_string(),
                KnownTag {
                    digest: "sha256:2".into(),
                    media_type: None,
                    updated_at: Timestamp::now(),
                },
            ),
            (
                "old".to_string(),
                KnownTag {
                    digest: "sha256:o".into(),
                    media_type: None,
                    updated_at: Timestamp::now(),
                },
            ),
            (
                "kept".to_string(),
                KnownTag {
                    digest: "sha256:k".into(),
                    media_type: None,
                    updated_at: Timestamp::now(),
                },
            ),
        ];
        let listed: HashSet<String> = ["v1", "v2", "v3", "kept"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let observed: BTreeMap<String, String> =
            [("v1", "sha256:1"), ("v2", "sha256:22"), ("v3", "sha256:3")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
        let changes = compare(&known, &listed, &observed);
        assert_eq!(
            changes,
            vec![
                Change::Moved {
                    tag: "v2".into(),
                    digest: "sha256:22".into(),
                    previous: "sha256:2".into()
                },
                Change::New {
                    tag: "v3".into(),
                    digest: "sha256:3".into()
                },
                Change::Gone {
                    tag: "old".into(),
                    digest: "sha256:o".into()
                },
            ]
        );
    }
}
