//! What a request to the distribution API is about, read from its path:
//! only manifest `PUT` and `DELETE` make events, everything else is
//! forwarded without a look.

/// A `/v2/<name>/manifests/<reference>` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestPath {
    pub repository: String,
    pub reference: Reference,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(String),
}

impl Reference {
    pub fn as_str(&self) -> &str {
        match self {
            Reference::Tag(s) | Reference::Digest(s) => s,
        }
    }
}

/// The manifest a path names, if it names one. A repository name may hold
/// `/`, so the path is read from its end: the last `manifests` segment but
/// one. Percent-encoded paths are not decoded: registry names and tags use
/// no character that needs encoding, and one that does is not a valid name.
pub fn manifest(path: &str) -> Option<ManifestPath> {
    let rest = path.strip_prefix("/v2/")?;
    let (name, reference) = rest.rsplit_once("/manifests/")?;
    if name.is_empty() || reference.is_empty() || reference.contains('/') {
        return None;
    }
    let reference = if is_digest(reference) {
        Reference::Digest(reference.to_owned())
    } else {
        Reference::Tag(reference.to_owned())
    };
    Some(ManifestPath {
        repository: name.to_owned(),
        reference,
    })
}

/// `algorithm:encoded`, as the distribution spec's grammar has it; a tag
/// cannot hold a `:`.
pub fn is_digest(s: &str) -> bool {
    match s.split_once(':') {
        Some((algorithm, encoded)) => {
            !algorithm.is_empty()
                && algorithm
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
                && !encoded.is_empty()
                && encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
        }
        None => false,
    }
}

/// The `tag` query parameters of a `PUT` by digest (distribution spec 1.1:
/// one manifest, several tags in one request).
pub fn tags_in_query(query: Option<&str>) -> Vec<String> {
    let Some(query) = query else {
        return Vec::new();
    };
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, v)| k == "tag" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_are_read_from_the_end() {
        assert_eq!(
            manifest("/v2/demo/app/manifests/v1"),
            Some(ManifestPath {
                repository: "demo/app".into(),
                reference: Reference::Tag("v1".into()),
            })
        );
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            manifest(&format!("/v2/a/manifests/b/manifests/{d}")),
            Some(ManifestPath {
                repository: "a/manifests/b".into(),
                reference: Reference::Digest(d.into()),
            })
        );
        for other in [
            "/v2/",
            "/v2/demo/app/blobs/sha256:abc",
            "/v2/demo/app/tags/list",
            "/v2/manifests/v1",
            "/v2/demo/app/manifests/",
            "/v1/demo/manifests/v1",
        ] {
            assert_eq!(manifest(other), None, "{other}");
        }
    }

    #[test]
    fn tags_and_digests_are_told_apart() {
        assert!(is_digest("sha256:abc"));
        assert!(is_digest("sha512+b64u:ab_c="));
        assert!(!is_digest("v1.0"));
        assert!(!is_digest("sha256:"));
        assert!(!is_digest("SHA256:abc"));
        assert_eq!(
            tags_in_query(Some("tag=a&tag=b&n=1&tag=")),
            vec!["a".to_string(), "b".to_string()]
        );
    }
}
