use std::fmt;

use crate::{ConfigKey, EventType, glob};

/// The keys every built-in plugin accepts, applied by the default
/// [`Plugin::filter`](crate::Plugin::filter):
///
/// - `events`: comma list of event types to send, e.g.
///   `image.pushed,image.deleted` (default: all);
/// - `tags`: comma list of globs a tag must match, e.g. `v*,latest`;
/// - `exclude_tags`: comma list of globs of tags never to send;
/// - `tag_regex`: a regular expression a tag must contain a match of
///   (anchor it with `^...$` for a whole-tag match).
pub const STANDARD_KEYS: [(&str, &str); 4] = [
    (
        "events",
        "comma list of event types to send: image.pushed, image.deleted (default: all)",
    ),
    ("tags", "comma list of tag globs to send, e.g. v*,latest"),
    ("exclude_tags", "comma list of tag globs never to send"),
    (
        "tag_regex",
        "regular expression a tag must match (unanchored; use ^...$ for the whole tag)",
    ),
];

/// A webhook's plugin configuration: key/value pairs in the order the user
/// gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pairs: Vec<(String, String)>,
}

impl Config {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self { pairs }
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.pairs
    }

    /// The value of `key`; the last one wins if it was given twice.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` as a comma list, items trimmed, empty items
    /// dropped. An absent key is an empty list.
    pub fn list(&self, key: &str) -> Vec<&str> {
        self.get(key).map(split_list).unwrap_or_default()
    }

    /// Checks the standard keys' values, that every key is either standard or
    /// in `declared`, and that every required declared key is present.
    pub fn validate(&self, declared: &[ConfigKey]) -> Result<(), ConfigError> {
        for (key, _) in &self.pairs {
            let known = STANDARD_KEYS.iter().any(|(k, _)| k == key)
                || declared.iter().any(|d| &d.name == key);
            if !known {
                let mut keys: Vec<&str> = STANDARD_KEYS.iter().map(|(k, _)| *k).collect();
                keys.extend(declared.iter().map(|d| d.name.as_str()));
                return Err(ConfigError::UnknownKey {
                    key: key.clone(),
                    known: keys.join(", "),
                });
            }
        }
        for key in declared.iter().filter(|k| k.required) {
            if self.get(&key.name).is_none_or(|v| v.trim().is_empty()) {
                return Err(ConfigError::Missing {
                    key: key.name.clone(),
                });
            }
        }
        for event in self.list("events") {
            if EventType::parse(event).is_none() {
                return Err(ConfigError::Invalid {
                    key: "events",
                    reason: format!(
                        "unknown event type `{event}` (expected image.pushed, image.deleted or webhook.test)"
                    ),
                });
            }
        }
        for key in ["tags", "exclude_tags"] {
            for pattern in self.list(key) {
                glob::validate(pattern).map_err(|reason| ConfigError::Invalid {
                    key,
                    reason: format!("bad glob `{pattern}`: {reason}"),
                })?;
            }
        }
        if let Some(re) = self.get("tag_regex") {
            regex_lite::Regex::new(re).map_err(|e| ConfigError::Invalid {
                key: "tag_regex",
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Config {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::new(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

pub(crate) fn split_list(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Why a configuration was refused; its `Display` is the message the user
/// sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    UnknownKey { key: String, known: String },
    Missing { key: String },
    Invalid { key: &'static str, reason: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownKey { key, known } => {
                write!(f, "unknown config key `{key}` (known keys: {known})")
            }
            ConfigError::Missing { key } => write!(f, "config key `{key}` is required"),
            ConfigError::Invalid { key, reason } => write!(f, "config key `{key}`: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> Vec<ConfigKey> {
        vec![ConfigKey {
            name: "channel".into(),
            description: String::new(),
            required: true,
        }]
    }

    #[test]
    fn last_value_wins_and_lists_are_trimmed() {
        let c: Config = [("tags", "a"), ("tags", " v*, ,latest ")]
            .into_iter()
            .collect();
        assert_eq!(c.get("tags"), Some(" v*, ,latest "));
        assert_eq!(c.list("tags"), vec!["v*", "latest"]);
        assert!(c.list("missing").is_empty());
    }

    #[test]
    fn validation_names_the_key_and_the_problem() {
        let ok: Config = [
            ("channel", "#ops"),
            ("tags", "v*"),
            ("tag_regex", "^v\\d+$"),
        ]
        .into_iter()
        .collect();
        assert_eq!(ok.validate(&declared()), Ok(()));

        let unknown: Config = [("channel", "#ops"), ("tag", "v*")].into_iter().collect();
        let err = unknown.validate(&declared()).unwrap_err().to_string();
        assert!(err.contains("unknown config key `tag`"), "{err}");
        assert!(err.contains("channel"), "{err}");

        let missing = Config::default().validate(&declared()).unwrap_err();
        assert_eq!(missing.to_string(), "config key `channel` is required");

        let bad_event: Config = [("channel", "x"), ("events", "image.pushed,image.pulled")]
            .into_iter()
            .collect();
        let err = bad_event.validate(&declared()).unwrap_err().to_string();
        assert!(err.contains("image.pulled"), "{err}");

        let bad_re: Config = [("channel", "x"), ("tag_regex", "v(")]
            .into_iter()
            .collect();
        let err = bad_re.validate(&declared()).unwrap_err().to_string();
        assert!(err.starts_with("config key `tag_regex`"), "{err}");

        let bad_glob: Config = [("channel", "x"), ("exclude_tags", "[abc")]
            .into_iter()
            .collect();
        let err = bad_glob.validate(&declared()).unwrap_err().to_string();
        assert!(
            err.contains("exclude_tags") && err.contains("[abc"),
            "{err}"
        );
    }
}
