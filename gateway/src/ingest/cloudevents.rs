//! CloudEvents over HTTP, as Zot's events extension sends them
//! (`zotregistry.image.updated`, `zotregistry.image.deleted`, the prefix
//! configurable in Zot), in either content mode: binary (the attributes in
//! `ce-*` headers, the body the event's data) or structured (one
//! `application/cloudevents+json` object). `source` and `id` identify an
//! event (CloudEvents 1.0), so a resend is recognised by them.

use serde::Deserialize;

use super::{Invalid, Read, is_tag};
use crate::changes::{self, TagChange};
use crate::event::{EventSource, Timestamp};

/// The context attributes this reader needs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Attributes {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub time: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Structured {
    #[serde(flatten)]
    attributes: Attributes,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageData {
    name: String,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    actor: Option<Actor>,
}

#[derive(Debug, Deserialize)]
struct Actor {
    #[serde(default)]
    name: Option<String>,
}

/// Reads a structured-mode body.
pub fn read_structured(body: &[u8]) -> Result<Read, Invalid> {
    let s: Structured = serde_json::from_slice(body)
        .map_err(|e| Invalid(format!("not a structured CloudEvent: {e}")))?;
    let data = s
        .data
        .ok_or_else(|| Invalid("the CloudEvent has no `data`".into()))?;
    read(&s.attributes, data)
}

/// Reads a binary-mode request: the attributes from its `ce-*` headers,
/// the body as the event's data.
pub fn read_binary(attributes: &Attributes, body: &[u8]) -> Result<Read, Invalid> {
    let data: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Invalid(format!("the CloudEvent's data is not JSON: {e}")))?;
    read(attributes, data)
}

fn read(a: &Attributes, data: serde_json::Value) -> Result<Read, Invalid> {
    if a.specversion != "1.0" {
        return Err(Invalid(format!(
            "CloudEvents specversion `{}` is not 1.0",
            a.specversion
        )));
    }
    if a.id.is_empty() || a.source.is_empty() || a.kind.is_empty() {
        return Err(Invalid(
            "a CloudEvent needs its `id`, `source` and `type`".into(),
        ));
    }
    let mut read = Read::default();
    let pushed = a.kind.ends_with(".image.updated");
    if !pushed && !a.kind.ends_with(".image.deleted") {
        read.ignored.push("other_event");
        return Ok(read);
    }
    let d: ImageData =
        serde_json::from_value(data).map_err(|e| Invalid(format!("`{}` data: {e}", a.kind)))?;
    let reference = d.reference.clone().unwrap_or_default();
    let digest = d.digest.clone().filter(|x| x.contains(':'));
    let change = match (pushed, is_tag(&reference), digest) {
        (true, true, Some(digest)) => TagChange::Pushed {
            tag: reference,
            digest,
            media_type: d.media_type.clone().filter(|m| !m.is_empty()),
            size: None,
        },
        (true, _, _) => {
            read.ignored.push("untagged_manifest");
            return Ok(read);
        }
        (false, true, _) => TagChange::TagDeleted { tag: reference },
        (false, false, Some(digest)) => TagChange::ManifestDeleted { digest },
        (false, false, None) if reference.contains(':') => {
            TagChange::ManifestDeleted { digest: reference }
        }
        (false, false, None) => {
            return Err(Invalid(format!(
                "`{}` names neither a tag nor a digest",
                a.kind
            )));
        }
    };
    read.accepted.push(changes::Notification {
        dedupe_key: format!("ce:{}:{}", a.source, a.id),
        repository: d.name,
        host: source_host(&a.source),
        change,
        actor: d.actor.and_then(|a| a.name).filter(|n| !n.is_empty()),
        occurred_at: a
            .time
            .as_deref()
            .and_then(|t| Timestamp::parse_rfc3339(t).ok())
            .unwrap_or_else(Timestamp::now),
        source: EventSource::Zot,
    });
    Ok(read)
}

/// A `source` that is a URL (Zot's `source` setting, e.g.
/// `https://registry.example.com`) names the registry's host.
fn source_host(source: &str) -> Option<String> {
    let url = url::Url::parse(source).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        crate::ingest::fixture("zot", name)
    }

    fn binary_attributes() -> Attributes {
        let h: std::collections::BTreeMap<String, String> =
            serde_json::from_slice(&fixture("image-updated.binary.headers.json")).unwrap();
        Attributes {
            specversion: h["Ce-Specversion"].clone(),
            id: h["Ce-Id"].clone(),
            source: h["Ce-Source"].clone(),
            kind: h["Ce-Type"].clone(),
            time: h.get("Ce-Time").cloned(),
        }
    }

    #[test]
    fn binary_mode_image_updated_is_a_push() {
        let r = read_binary(
            &binary_attributes(),
            &fixture("image-updated.binary.body.json"),
        )
        .unwrap();
        let n = &r.accepted[0];
        assert_eq!(n.repository, "golang");
        assert_eq!(n.actor.as_deref(), Some("alice"));
        assert_eq!(n.source, EventSource::Zot);
        assert_eq!(
            n.dedupe_key,
            "ce:zotregistry.dev:3f1c5a8e-9b2d-4c7e-a1f0-6d2e8b4c9a71"
        );
        assert!(matches!(&n.change, TagChange::Pushed { tag, .. } if tag == "1.23"));
        assert_eq!(n.host, None);
    }

    #[test]
    fn structured_mode_deletion_and_other_types() {
        let r = read_structured(&fixture("image-deleted.structured.json")).unwrap();
        assert_eq!(
            r.accepted[0].change,
            TagChange::TagDeleted { tag: "1.23".into() }
        );
        let r = read_structured(&fixture("repository-created.structured.json")).unwrap();
        assert!(r.accepted.is_empty());
        assert_eq!(r.ignored, ["other_event"]);
    }

    #[test]
    fn bad_events_name_the_problem() {
        let mut a = binary_attributes();
        a.specversion = "0.3".into();
        let e = read_binary(&a, b"{}").unwrap_err();
        assert!(e.0.contains("specversion"), "{e}");
        let e = read_binary(&binary_attributes(), b"{\"reference\":\"v1\"}").unwrap_err();
        assert!(e.0.contains("name"), "{e}");
        assert_eq!(
            source_host("https://registry.example.com:5000").as_deref(),
            Some("registry.example.com:5000")
        );
    }
}
