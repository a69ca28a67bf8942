//! Filters the host applies before a webhook's plugin is asked, because
//! they need state no plugin has: `semver = newer` sends a pushed tag only
//! when it is a semantic version newer than every other version tag the
//! repository has. The state is the repository's known tags, which the
//! store already keeps for push and poll alike; nothing new is stored.
//!
//! The keys live in the webhook's `config` with the plugin's own, so every
//! plugin, installed ones too, gets them without knowing them: they are
//! taken out before the plugin sees the configuration.

use std::cmp::Ordering;

/// Configuration keys the host reads and the plugin never sees.
pub const HOST_KEYS: [&str; 1] = ["semver"];

/// A webhook's host filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFilters {
    /// `semver = newer`.
    pub semver_newer: bool,
}

impl HostFilters {
    /// Whether the filters need the repository's known tags.
    pub fn needs_tags(&self) -> bool {
        self.semver_newer
    }
}

/// Splits a webhook's configuration into the host's filters and what the
/// plugin sees; a host key with a value it does not take is named.
pub fn split(config: &[(String, String)]) -> Result<(HostFilters, Vec<(String, String)>), String> {
    let mut filters = HostFilters::default();
    let mut rest = Vec::with_capacity(config.len());
    for (key, value) in config {
        match key.as_str() {
            "semver" => match value.trim() {
                "newer" => filters.semver_newer = true,
                other => {
                    return Err(format!(
                        "semver: `{other}` is not a semver filter (the one there is: newer)"
                    ));
                }
            },
            _ => rest.push((key.clone(), value.clone())),
        }
    }
    Ok((filters, rest))
}

/// A tag read as a semantic version the way tags are written: an optional
/// `v`, and a missing minor or patch taken as 0 (`v1.2` is 1.2.0).
pub fn version(tag: &str) -> Option<semver::Version> {
    let t = tag.strip_prefix(['v', 'V']).unwrap_or(tag);
    if let Ok(v) = semver::Version::parse(t) {
        return Some(v);
    }
    let (core, suffix) = match t.find(['-', '+']) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut padded = parts.join(".");
    for _ in parts.len()..3 {
        padded.push_str(".0");
    }
    semver::Version::parse(&format!("{padded}{suffix}")).ok()
}

/// Why `tag` is not newer than every other version tag in `known`; `Ok`
/// when it is.
pub fn newer(tag: &str, known: &[String]) -> Result<(), String> {
    let Some(mine) = version(tag) else {
        return Err(format!("semver=newer: tag `{tag}` is not a version"));
    };
    for other in known.iter().filter(|t| t.as_str() != tag) {
        if let Some(theirs) = version(other)
            && theirs.cmp_precedence(&mine) != Ordering::Less
        {
            return Err(format!("semver=newer: `{tag}` is not newer than `{other}`"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn versions_as_tags_write_them() {
        assert_eq!(version("v1.2").unwrap().to_string(), "1.2.0");
        assert_eq!(version("1").unwrap().to_string(), "1.0.0");
        assert_eq!(version("2.0.0-rc.1").unwrap().to_string(), "2.0.0-rc.1");
        assert_eq!(version("v1.2-alpine").unwrap().to_string(), "1.2.0-alpine");
        assert!(version("latest").is_none());
        assert!(version("1.2.3.4").is_none());
        assert!(version("sha-abc").is_none());
    }

    #[test]
    fn only_a_newer_version_passes() {
        let known = tags(&["v1.0.0", "v1.1.0", "latest", "v1.2.0"]);
        assert_eq!(newer("v1.2.0", &known), Ok(()));
        assert!(newer("v1.0.1", &known).unwrap_err().contains("`v1.1.0`"));
        assert!(
            newer("latest", &known)
                .unwrap_err()
                .contains("not a version")
        );
        // The same version under another spelling is not newer.
        assert!(newer("1.2", &known).is_err());
        // A release is newer than its release candidate.
        assert_eq!(newer("2.0.0", &tags(&["2.0.0-rc.1"])), Ok(()));
        assert!(newer("2.0.0-rc.2", &tags(&["2.0.0"])).is_err());
        assert_eq!(newer("v0.1.0", &[]), Ok(()));
    }

    #[test]
    fn host_keys_are_taken_out_and_checked() {
        let config = vec![
            ("tags".to_string(), "v*".to_string()),
            ("semver".to_string(), "newer".to_string()),
        ];
        let (filters, rest) = split(&config).unwrap();
        assert!(filters.semver_newer);
        assert_eq!(rest, vec![("tags".to_string(), "v*".to_string())]);
        let bad = vec![("semver".to_string(), "newest".to_string())];
        assert!(split(&bad).unwrap_err().contains("`newest`"));
    }
}
