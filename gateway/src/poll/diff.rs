//! What a poll learned, compared with what the log knows: pure functions,
//! so that the rules (which tags are polled, what is new, changed or gone)
//! are tested without a registry.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

use callisto_plugin_sdk::filter::glob_matches;

use crate::store::{KnownTag, RemoteSettings};

/// The tags a repository's settings select for polling, from the
/// registry's full list: `tags` globs (any), not `exclude_tags`, then the
/// newest `max_tags`. The distribution API says nothing of age, so "newest"
/// is the highest in natural order (`v1.10` above `v1.9`).
pub fn select(listed: &[String], settings: &RemoteSettings) -> Vec<String> {
    let mut selected: Vec<String> = listed
        .iter()
        .filter(|t| settings.tags.is_empty() || settings.tags.iter().any(|g| glob_matches(g, t)))
        .filter(|t| !settings.exclude_tags.iter().any(|g| glob_matches(g, t)))
        .cloned()
        .collect();
    if let Some(max) = settings.max_tags {
        selected.sort_by(|a, b| natural_cmp(b, a));
        selected.truncate(max as usize);
    }
    selected.sort();
    selected
}

/// Compares with runs of digits as numbers: `v2` < `v10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let start = digits
        .iter()
        .position(|d| *d != b'0')
        .unwrap_or(digits.len());
    &digits[start..]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Timestamp;
    use crate::store::InitialSync;

    fn settings(tags: &[&str], exclude: &[&str], max: Option<u32>) -> RemoteSettings {
        RemoteSettings {
            poll_interval_secs: 60,
            initial_sync: InitialSync::Notify,
            insecure: false,
            username: None,
            password: None,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            exclude_tags: exclude.iter().map(|s| s.to_string()).collect(),
            max_tags: max,
        }
    }

    fn list(tags: &[&str]) -> Vec<String> {
        tags.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn selection_applies_globs_then_keeps_the_newest() {
        let listed = list(&[
            "latest", "v1.9", "v1.10", "v1.2", "v2.0-rc1", "v2.0", "nightly",
        ]);
        assert_eq!(select(&listed, &settings(&[], &[], None)).len(), 7);
        assert_eq!(
            select(&listed, &settings(&["v*"], &["*-rc*"], None)),
            list(&["v1.10", "v1.2", "v1.9", "v2.0"])
        );
        assert_eq!(
            select(&listed, &settings(&["v*"], &["*-rc*"], Some(2))),
            list(&["v1.10", "v2.0"])
        );
    }

    #[test]
    fn natural_order_reads_numbers_as_numbers() {
        let mut tags = list(&["v10", "v9", "v1.10", "v1.9", "v01", "a"]);
        tags.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(tags, list(&["a", "v01", "v1.9", "v1.10", "v9", "v10"]));
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
        let listed: HashSet<String> = list(&["v1", "v2", "v3", "kept"]).into_iter().collect();
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
