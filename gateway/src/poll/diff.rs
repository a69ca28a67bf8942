//! Which of a registry's tags a poll asks about: pure functions, tested
//! without a registry. What the answers change is `changes::compare`.

use std::cmp::Ordering;

use callisto_plugin_sdk::filter::glob_matches;

use crate::records::RemoteSettings;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::InitialSync;

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
}
