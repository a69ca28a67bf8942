//! Where events come from a registry's own notifications. Each registry's
//! format is read by its own module into `changes::Notification`s; the
//! store records them (de-duplicated, many requests to one durable commit)
//! and the rules of `changes` decide what events they make.

pub mod cloudevents;
pub mod distribution;
pub mod dockerhub;
pub mod github;
pub mod harbor;
pub mod quay;

/// A vendor's captured payload from `tests/fixtures/<vendor>/` (each
/// folder's README names its origin), for the readers' unit tests.
#[cfg(test)]
pub(crate) fn fixture(vendor: &str, name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(vendor)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

use crate::changes;

/// What one vendor request reads as: the notifications that make events,
/// and, for the rest, why they make none (a metric label each).
#[derive(Debug, Default)]
pub struct Read {
    pub accepted: Vec<changes::Notification>,
    pub ignored: Vec<&'static str>,
}

/// A body that is not what the vendor sends; the message names the problem
/// and is answered to the sender with a `400`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Whether a reference names a tag rather than a digest: registries report
/// a push by digest with the digest where the tag would be.
fn is_tag(reference: &str) -> bool {
    !reference.is_empty() && !reference.contains(':')
}

/// The host of an image reference such as `harbor.dev/library/busybox:1.36`
/// or `quay.io/ns/repo`: the first path segment when it looks like one
/// (has a dot or a port, or is `localhost`).
fn host_of(reference: &str) -> Option<String> {
    let (first, rest) = reference.split_once('/')?;
    (!rest.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost"))
        .then(|| first.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_tags() {
        assert_eq!(
            host_of("harbor.dev/library/busybox:1.36").as_deref(),
            Some("harbor.dev")
        );
        assert_eq!(
            host_of("127.0.0.1:5000/demo/app").as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(host_of("library/busybox"), None);
        assert!(is_tag("v1"));
        assert!(!is_tag("sha256:abc"));
        assert!(!is_tag(""));
    }
}
