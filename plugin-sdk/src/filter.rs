//! The standard filter every built-in plugin applies, and that
//! [`Plugin::filter`](crate::Plugin::filter) applies by default.

use std::cell::RefCell;

use regex_lite::Regex;

use crate::{Config, Event, EventType, glob};

/// Whether `event` passes the standard keys of `config` (see
/// [`STANDARD_KEYS`](crate::STANDARD_KEYS)). All keys present must agree:
///
/// - `events` lists the event's type (absent: every type);
/// - `tags`: the tag matches one of the globs;
/// - `exclude_tags`: the tag matches none of the globs;
/// - `tag_regex`: the tag contains a match.
///
/// An event without a tag (a delete by digest) fails `tags` and `tag_regex`
/// and passes `exclude_tags`. A `webhook.test` event always passes: testing a
/// webhook must reach its receiver whatever it filters.
pub fn standard(event: &Event, config: &Config) -> bool {
    if event.kind == EventType::WebhookTest {
        return true;
    }
    let events = config.list("events");
    if !events.is_empty() && !events.contains(&event.kind.as_str()) {
        return false;
    }
    let tag = event.tag.as_deref();
    let include = config.list("tags");
    if !include.is_empty() && !tag.is_some_and(|t| include.iter().any(|g| glob::matches(g, t))) {
        return false;
    }
    if let Some(t) = tag
        && config
            .list("exclude_tags")
            .iter()
            .any(|g| glob::matches(g, t))
    {
        return false;
    }
    if let Some(re) = config.get("tag_regex") {
        return tag.is_some_and(|t| regex_matches(re, t));
    }
    true
}

/// Whether `tag` matches the glob `pattern` (`*`, `?`, `[a-z]`, `[!a]`).
pub fn glob_matches(pattern: &str, tag: &str) -> bool {
    glob::matches(pattern, tag)
}

thread_local! {
    /// The last compiled `tag_regex`. An instance serves one webhook, so the
    /// pattern rarely changes, and compiling dominates matching.
    static LAST_REGEX: RefCell<Option<(String, Option<Regex>)>> = const { RefCell::new(None) };
}

fn regex_matches(pattern: &str, tag: &str) -> bool {
    LAST_REGEX.with_borrow_mut(|cache| {
        if cache.as_ref().is_none_or(|(p, _)| p != pattern) {
            *cache = Some((pattern.to_owned(), Regex::new(pattern).ok()));
        }
        // An invalid pattern (validate-config refuses those) matches nothing.
        cache
            .as_ref()
            .and_then(|(_, re)| re.as_ref())
            .is_some_and(|re| re.is_match(tag))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn pushed(tag: &str) -> Event {
        testing::pushed("demo/app", tag)
    }

    fn cfg(pairs: &[(&str, &str)]) -> Config {
        pairs.iter().copied().collect()
    }

    #[test]
    fn no_keys_pass_everything() {
        assert!(standard(&pushed("latest"), &Config::default()));
        assert!(standard(
            &testing::deleted("demo/app", "v1"),
            &Config::default()
        ));
    }

    #[test]
    fn events_key() {
        let c = cfg(&[("events", "image.deleted")]);
        assert!(!standard(&pushed("v1"), &c));
        assert!(standard(&testing::deleted("demo/app", "v1"), &c));
        let both = cfg(&[("events", "image.pushed, image.deleted")]);
        assert!(standard(&pushed("v1"), &both));
    }

    #[test]
    fn tags_and_excludes() {
        let c = cfg(&[("tags", "v*,stable"), ("exclude_tags", "*-rc*")]);
        assert!(standard(&pushed("v1.2"), &c));
        assert!(standard(&pushed("stable"), &c));
        assert!(!standard(&pushed("latest"), &c));
        assert!(!standard(&pushed("v2.0-rc1"), &c));
        let mut untagged = pushed("v1");
        untagged.tag = None;
        assert!(!standard(&untagged, &c));
        assert!(standard(&untagged, &cfg(&[("exclude_tags", "*")])));
    }

    #[test]
    fn tag_regex_is_unanchored_and_cached_per_pattern() {
        assert!(standard(
            &pushed("release-1.2"),
            &cfg(&[("tag_regex", r"\d+\.\d+")])
        ));
        assert!(!standard(
            &pushed("latest"),
            &cfg(&[("tag_regex", r"\d+\.\d+")])
        ));
        assert!(!standard(
            &pushed("release-1.2"),
            &cfg(&[("tag_regex", r"^\d+\.\d+$")])
        ));
        assert!(standard(
            &pushed("1.2"),
            &cfg(&[("tag_regex", r"^\d+\.\d+$")])
        ));
        assert!(!standard(&pushed("1.2"), &cfg(&[("tag_regex", "(")])));
    }

    #[test]
    fn test_events_always_pass() {
        let c = cfg(&[("events", "image.deleted"), ("tags", "nothing")]);
        assert!(standard(&testing::webhook_test("demo/app"), &c));
    }
}
