//! `europa`: the payload of the registry Callisto grew from, byte for byte,
//! so that receivers written for it keep working unchanged.
//!
//! That registry only ever sent `DockerImagePush`, even for a delete (then
//! with `"sha": null`), wrote `size` as null, and signed the body alone with
//! `x-europa-signature` when a secret was set. All of that is kept.

use callisto_plugin_sdk::{
    Event, EventSource, EventType, Plugin, PluginInfo, Request, SignatureScheme, Webhook, export,
};
use serde::Serialize;

pub struct Europa;

/// Registries that are Docker Hub under one of their names.
const DOCKER_HUB: [&str; 3] = ["registry-1.docker.io", "docker.io", "index.docker.io"];

// Field order is the wire format: serde writes struct fields in order.
#[derive(Serialize)]
struct Body<'a> {
    event: &'static str,
    image: Image<'a>,
    repository: Repo<'a>,
}

#[derive(Serialize)]
struct Image<'a> {
    tags: Vec<&'a str>,
    sha: Option<&'a str>,
    size: Option<u64>,
    pushed: String,
}

#[derive(Serialize)]
struct Repo<'a> {
    name: &'a str,
    region: &'static str,
    provider: &'static str,
}

impl Plugin for Europa {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "europa",
            env!("CARGO_PKG_VERSION"),
            "The Europa registry's DockerImagePush payload, signed with x-europa-signature",
        )
    }

    fn format(event: &Event, webhook: &Webhook) -> Result<Request, String> {
        let provider = match event.source {
            EventSource::Local | EventSource::Proxy => "EUROPA",
            EventSource::Remote
                if event
                    .repository
                    .registry
                    .as_deref()
                    .is_some_and(|r| DOCKER_HUB.contains(&r)) =>
            {
                "DOCKERHUB"
            }
            EventSource::Dockerhub => "DOCKERHUB",
            _ => "PRIVATE",
        };
        let body = Body {
            event: "DockerImagePush",
            image: Image {
                tags: event.tag.as_deref().into_iter().collect(),
                sha: match event.kind {
                    EventType::ImageDeleted => None,
                    _ => event.digest.as_deref(),
                },
                size: None,
                pushed: event.occurred_at.to_rfc3339_millis(),
            },
            repository: Repo {
                name: &event.repository.name,
                region: "",
                provider,
            },
        };
        Ok(Request::json(&body)
            .header("x-europa-event", "DockerImagePush")
            .header("x-europa-event-id", &delivery_id(&event.id, &webhook.id))
            .signature(SignatureScheme::Europa))
    }
}

/// A UUID-shaped id unique to this (event, webhook) pair. Derived rather
/// than random so that a redelivery or replay carries the same id and the
/// receiver can de-duplicate, and so that the output is reproducible.
fn delivery_id(event_id: &str, webhook_id: &str) -> String {
    // Two FNV-1a passes with different offsets: 128 well-mixed bits without
    // pulling a hash crate into the component. Not a security property.
    fn fnv(seed: u64, parts: [&str; 2]) -> u64 {
        let mut h = seed;
        for part in parts {
            for b in part.bytes().chain([0xff]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }
    let hi = fnv(0xcbf2_9ce4_8422_2325, [event_id, webhook_id]);
    let lo = fnv(0x6c62_272e_07bb_0142, [webhook_id, event_id]);
    let bytes = [hi.to_be_bytes(), lo.to_be_bytes()].concat();
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8: custom
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

export!(Europa);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_stable_and_distinct() {
        let a = delivery_id("evt_1", "wh_1");
        assert_eq!(a, delivery_id("evt_1", "wh_1"));
        assert_ne!(a, delivery_id("evt_1", "wh_2"));
        assert_ne!(a, delivery_id("evt_2", "wh_1"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }
}
