//! GitHub's webhooks for container packages (GHCR): `registry_package` and
//! `package`, actions `published` and `updated`. Signed with
//! `X-Hub-Signature-256` (HMAC-SHA256 of the body, hex); every delivery,
//! redeliveries included, carries its `X-GitHub-Delivery` id.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{Invalid, Read, host_of, is_tag};
use crate::changes::{self, TagChange};
use crate::event::{EventSource, Timestamp};

/// Whether `header` (`sha256=<hex>`) is the body's HMAC under `secret`,
/// compared in constant time.
pub fn signature_matches(secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    // GitHub writes the digest in lowercase hex.
    let expected = format!("{:x}", mac.finalize().into_bytes());
    crate::secrets::same(hex_sig.to_ascii_lowercase().as_bytes(), expected.as_bytes())
}

#[derive(Debug, Deserialize)]
struct Payload {
    action: String,
    #[serde(default)]
    registry_package: Option<Package>,
    #[serde(default)]
    package: Option<Package>,
    #[serde(default)]
    sender: Option<Login>,
}

#[derive(Debug, Deserialize)]
struct Package {
    name: String,
    #[serde(default)]
    package_type: Option<String>,
    #[serde(default)]
    ecosystem: Option<String>,
    #[serde(default)]
    owner: Option<Login>,
    #[serde(default)]
    package_version: Option<Version>,
    #[serde(default)]
    updated_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Login {
    login: String,
}

#[derive(Debug, Deserialize)]
struct Version {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    container_metadata: Option<ContainerMetadata>,
    #[serde(default)]
    package_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ContainerMetadata {
    #[serde(default)]
    tag: Option<TagInfo>,
}

#[derive(Debug, Deserialize)]
struct TagInfo {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    digest: Option<String>,
}

fn is_container(p: &Package) -> bool {
    [&p.package_type, &p.ecosystem]
        .into_iter()
        .flatten()
        .any(|t| t.eq_ignore_ascii_case("container") || t.eq_ignore_ascii_case("docker"))
        || p.package_version
            .as_ref()
            .is_some_and(|v| v.container_metadata.is_some())
}

/// Reads a GitHub webhook: `event` is `X-GitHub-Event`, `delivery` is
/// `X-GitHub-Delivery`.
pub fn read(event: &str, delivery: &str, body: &[u8]) -> Result<Read, Invalid> {
    let mut read = Read::default();
    if event == "ping" {
        read.ignored.push("ping");
        return Ok(read);
    }
    if event != "registry_package" && event != "package" {
        read.ignored.push("other_event");
        return Ok(read);
    }
    let p: Payload = serde_json::from_slice(body)
        .map_err(|e| Invalid(format!("not a GitHub `{event}` webhook: {e}")))?;
    let package = if event == "package" {
        p.package
    } else {
        p.registry_package
    }
    .ok_or_else(|| Invalid(format!("a `{event}` webhook without its `{event}` object")))?;
    if p.action != "published" && p.action != "updated" {
        read.ignored.push("other_action");
        return Ok(read);
    }
    if !is_container(&package) {
        read.ignored.push("not_a_container");
        return Ok(read);
    }
    let version = package.package_version.as_ref();
    let tag_info = version
        .and_then(|v| v.container_metadata.as_ref())
        .and_then(|m| m.tag.as_ref());
    let tag = tag_info.and_then(|t| t.name.clone()).unwrap_or_default();
    let digest = tag_info
        .and_then(|t| t.digest.clone())
        .filter(|d| d.contains(':'))
        .or_else(|| version.and_then(|v| v.version.clone()))
        .filter(|d| d.starts_with("sha256:"));
    let (Some(digest), true) = (digest, is_tag(&tag)) else {
        read.ignored.push("untagged_manifest");
        return Ok(read);
    };
    // `ghcr.io/OWNER/NAME:TAG` is the image's own name; GHCR's names are
    // lowercase whatever the owner's login looks like.
    let url = version
        .and_then(|v| v.package_url.clone())
        .unwrap_or_default();
    let image = url.rsplit_once(':').map_or(url.as_str(), |(i, _)| i);
    let host = host_of(image).unwrap_or_else(|| "ghcr.io".to_owned());
    let repository = match image.split_once('/') {
        Some((_, path)) if host_of(image).is_some() && !path.is_empty() => path.to_owned(),
        _ => match &package.owner {
            Some(o) => format!("{}/{}", o.login, package.name),
            None => package.name.clone(),
        },
    }
    .to_ascii_lowercase();
    read.accepted.push(changes::Notification {
        dedupe_key: format!("github:{delivery}"),
        repository,
        host: Some(host),
        change: TagChange::Pushed {
            tag,
            digest,
            media_type: None,
            size: None,
        },
        actor: p.sender.map(|s| s.login),
        occurred_at: package
            .updated_at
            .as_deref()
            .and_then(|t| Timestamp::parse_rfc3339(t).ok())
            .unwrap_or_else(Timestamp::now),
        source: EventSource::Github,
    });
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        crate::ingest::fixture("github", name)
    }

    #[test]
    fn a_tagged_container_version_is_a_push() {
        for (event, name) in [
            ("registry_package", "registry_package-published-tagged.json"),
            ("package", "package-published-tagged.json"),
        ] {
            let r = read(event, "d-1", &fixture(name)).unwrap();
            assert_eq!(r.accepted.len(), 1, "{name}");
            let n = &r.accepted[0];
            assert_eq!(n.repository, "codertocat/hello-world");
            assert_eq!(n.host.as_deref(), Some("ghcr.io"));
            assert_eq!(n.dedupe_key, "github:d-1");
            assert_eq!(n.source, EventSource::Github);
            assert_eq!(
                n.change,
                TagChange::Pushed {
                    tag: "v1.2.0".into(),
                    digest:
                        "sha256:3da1996a8115d7616457760d9920b815241d0a03b34cf5f04e9a0e9d8de37498"
                            .into(),
                    media_type: None,
                    size: None
                }
            );
        }
    }

    #[test]
    fn untagged_versions_and_pings_make_no_event() {
        let r = read(
            "registry_package",
            "d",
            &fixture("registry_package-published.json"),
        )
        .unwrap();
        assert_eq!(r.ignored, ["untagged_manifest"]);
        let r = read("ping", "d", b"{}").unwrap();
        assert_eq!(r.ignored, ["ping"]);
    }

    #[test]
    fn the_signature_is_githubs() {
        // GitHub's documented example: secret "It's a Secret to Everybody",
        // payload "Hello, World!".
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signature_matches(
            "It's a Secret to Everybody",
            b"Hello, World!",
            Some(sig)
        ));
        assert!(!signature_matches(
            "It's a Secret to Everybody",
            b"Hello, World?",
            Some(sig)
        ));
        assert!(!signature_matches("x", b"", None));
        assert!(!signature_matches("x", b"", Some("sha1=00")));
    }
}
