//! The standard filter every built-in plugin applies, and that
//! [`Plugin::filter`](crate::Plugin::filter) applies by default; and how a
//! filter tells the host why it declined an event.

use std::cell::RefCell;
use std::fmt;

use regex_lite::Regex;

use crate::{Config, Event, EventType, LogLevel, glob, log};

/// How the debug line that says why a filter declined an event begins:
/// `filtered out: tags=v*: tag `latest` matches none of the globs`. The host
/// keeps it as the reason (for `callisto plugin run`, Test Webhook and a
/// webhook's filtered events); [`decline`] writes it.
pub const DECLINED_PREFIX: &str = "filtered out: ";

/// Whether `event` passes the standard keys of `config` (see
/// [`STANDARD_KEYS`](crate::STANDARD_KEYS)); when it does not, tells the
/// host which rule declined it ([`decline`]). All keys present must agree:
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
    match explain(event, config) {
        Ok(()) => true,
        Err(declined) => decline(declined),
    }
}

/// [`standard`] without telling anyone: which rule, if any, declines
/// `event`.
pub fn explain(event: &Event, config: &Config) -> Result<(), Declined> {
    if event.kind == EventType::WebhookTest {
        return Ok(());
    }
    let events = config.list("events");
    if !events.is_empty() && !events.contains(&event.kind.as_str()) {
        return Err(Declined::Events {
            events: config.get("events").unwrap_or_default().to_owned(),
            kind: event.kind,
        });
    }
    let tag = event.tag.as_deref();
    let include = config.list("tags");
    if !include.is_empty() && !tag.is_some_and(|t| include.iter().any(|g| glob::matches(g, t))) {
        return Err(Declined::Tags {
            tags: config.get("tags").unwrap_or_default().to_owned(),
            tag: tag.map(str::to_owned),
        });
    }
    if let Some(t) = tag
        && let Some(glob) = config
            .list("exclude_tags")
            .into_iter()
            .find(|g| glob::matches(g, t))
    {
        return Err(Declined::ExcludeTags {
            glob: glob.to_owned(),
            tag: t.to_owned(),
        });
    }
    if let Some(re) = config.get("tag_regex")
        && !tag.is_some_and(|t| regex_matches(re, t))
    {
        return Err(Declined::TagRegex {
            regex: re.to_owned(),
            tag: tag.map(str::to_owned),
        });
    }
    Ok(())
}

/// Tells the host why this filter declines the event (a debug line that
/// starts with [`DECLINED_PREFIX`]), and returns `false`, so that a filter
/// of your own says why in one line:
///
/// ```
/// # use callisto_plugin_sdk::{Event, filter};
/// fn wanted(event: &Event) -> bool {
///     if event.repository.name.starts_with("tmp/") {
///         return filter::decline("scratch repositories are not announced");
///     }
///     true
/// }
/// ```
pub fn decline(reason: impl fmt::Display) -> bool {
    log(LogLevel::Debug, &format!("{DECLINED_PREFIX}{reason}"));
    false
}

/// The standard rule that declined an event, with what did not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declined {
    /// `events` does not list the event's type.
    Events { events: String, kind: EventType },
    /// The tag matches none of the `tags` globs, or there is no tag.
    Tags { tags: String, tag: Option<String> },
    /// The tag matches this `exclude_tags` glob.
    ExcludeTags { glob: String, tag: String },
    /// The tag has no match of `tag_regex`, or there is no tag.
    TagRegex { regex: String, tag: Option<String> },
}

impl Declined {
    /// The configuration key of the rule: `events`, `tags`, `exclude_tags`
    /// or `tag_regex`.
    pub fn key(&self) -> &'static str {
        match self {
            Declined::Events { .. } => "events",
            Declined::Tags { .. } => "tags",
            Declined::ExcludeTags { .. } => "exclude_tags",
            Declined::TagRegex { .. } => "tag_regex",
        }
    }
}

/// `key=value: what did not match`, e.g. `tags=v*: tag `latest` matches
/// none of the globs`; [`rule_of`] reads the key back.
impl fmt::Display for Declined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Declined::Events { events, kind } => {
                write!(f, "events={events}: {} is not listed", kind.as_str())
            }
            Declined::Tags {
                tags,
                tag: Some(tag),
            } => {
                write!(f, "tags={tags}: tag `{tag}` matches none of the globs")
            }
            Declined::Tags { tags, tag: None } => write!(f, "tags={tags}: the event has no tag"),
            Declined::ExcludeTags { glob, tag } => {
                write!(f, "exclude_tags: tag `{tag}` matches `{glob}`")
            }
            Declined::TagRegex {
                regex,
                tag: Some(tag),
            } => write!(f, "tag_regex={regex}: tag `{tag}` has no match"),
            Declined::TagRegex { regex, tag: None } => {
                write!(f, "tag_regex={regex}: the event has no tag")
            }
        }
    }
}

impl std::error::Error for Declined {}

/// The rule a reason (what follows [`DECLINED_PREFIX`]) names: one of the
/// standard keys for the standard filter's reasons, else `plugin` (a
/// plugin's own rule). A label for counting filtered events by rule.
pub fn rule_of(reason: &str) -> &'static str {
    let key = reason.split([':', '=']).next().unwrap_or_default();
    crate::STANDARD_KEYS
        .iter()
        .map(|(k, _)| *k)
        .find(|k| *k == key)
        .unwrap_or("plugin")
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

    fn why(event: &Event, config: &[(&str, &str)]) -> String {
        let declined = explain(event, &cfg(config)).unwrap_err();
        let reason = declined.to_string();
        assert_eq!(rule_of(&reason), declined.key(), "{reason}");
        reason
    }

    #[test]
    fn the_declining_rule_is_named() {
        assert_eq!(
            why(&pushed("v1"), &[("events", "image.deleted")]),
            "events=image.deleted: image.pushed is not listed"
        );
        assert_eq!(
            why(&pushed("latest"), &[("tags", "v*,stable")]),
            "tags=v*,stable: tag `latest` matches none of the globs"
        );
        let mut untagged = pushed("v1");
        untagged.tag = None;
        assert_eq!(
            why(&untagged, &[("tags", "v*")]),
            "tags=v*: the event has no tag"
        );
        assert_eq!(
            why(&pushed("v2-rc1"), &[("exclude_tags", "*-beta, *-rc*")]),
            "exclude_tags: tag `v2-rc1` matches `*-rc*`"
        );
        assert_eq!(
            why(&pushed("latest"), &[("tag_regex", r"^\d+$")]),
            r"tag_regex=^\d+$: tag `latest` has no match"
        );
        assert_eq!(explain(&pushed("v1"), &cfg(&[("tags", "v*")])), Ok(()));
        assert_eq!(rule_of("not on the main branch"), "plugin");
        assert_eq!(rule_of("tagsy: x"), "plugin");
    }

    #[test]
    fn test_events_always_pass() {
        let c = cfg(&[("events", "image.deleted"), ("tags", "nothing")]);
        assert!(standard(&testing::webhook_test("demo/app"), &c));
    }
}
