//! `cloudevents`: CloudEvents 1.0 in structured mode
//! (`application/cloudevents+json`), the event itself as `data`.

use callisto_plugin_sdk::{Event, EventType, Plugin, PluginInfo, Request, Webhook, export};
use serde::Serialize;

pub struct CloudEvents;

#[derive(Serialize)]
struct Envelope<'a> {
    specversion: &'static str,
    id: &'a str,
    source: String,
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    datacontenttype: &'static str,
    data: &'a Event,
}

impl Plugin for CloudEvents {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "cloudevents",
            env!("CARGO_PKG_VERSION"),
            "CloudEvents 1.0 structured JSON with the event as data",
        )
        .key(
            "source",
            "the CloudEvents source URI-reference (default //<registry>/<repository>)",
        )
    }

    fn format(event: &Event, webhook: &Webhook) -> Result<Request, String> {
        let source = match (webhook.config.get("source"), &event.repository.registry) {
            (Some(source), _) => source.to_owned(),
            (None, Some(registry)) => format!("//{registry}/{}", event.repository.name),
            (None, None) => format!("/{}", event.repository.name),
        };
        let envelope = Envelope {
            specversion: "1.0",
            id: &event.id,
            source,
            kind: match event.kind {
                EventType::ImagePushed => "io.callisto.image.pushed",
                EventType::ImageDeleted => "io.callisto.image.deleted",
                EventType::WebhookTest => "io.callisto.webhook.test",
            },
            time: event.occurred_at.to_rfc3339_millis(),
            subject: event.tag.as_deref().or(event.digest.as_deref()),
            datacontenttype: "application/json",
            data: event,
        };
        let body = serde_json::to_vec(&envelope).map_err(|e| e.to_string())?;
        Ok(Request::new("application/cloudevents+json", body))
    }
}

export!(CloudEvents);
