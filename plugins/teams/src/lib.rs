//! `teams`: a Microsoft Teams message carrying an Adaptive Card, the shape
//! both Teams' Workflows ("When a Teams webhook request is received") and
//! the older incoming-webhook connectors accept.

use callisto_plugin_sdk::{
    Event, EventType, Plugin, PluginInfo, Request, SignatureScheme, Webhook, export,
};
use serde_json::json;

pub struct Teams;

impl Plugin for Teams {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "teams",
            env!("CARGO_PKG_VERSION"),
            "A Microsoft Teams Adaptive Card naming repository, tag, digest and registry",
        )
        .key(
            "link",
            "a URL for the card's button, e.g. the image's page in the registry's UI",
        )
    }

    fn format(event: &Event, webhook: &Webhook) -> Result<Request, String> {
        let (verb, style) = match event.kind {
            EventType::ImagePushed => ("pushed", "good"),
            EventType::ImageDeleted => ("deleted", "attention"),
            EventType::WebhookTest => ("test notification", "accent"),
        };
        let mut facts = vec![
            json!({"title": "Repository", "value": event.repository.name}),
            json!({"title": "Tag", "value": event.tag.as_deref().unwrap_or("—")}),
            json!({"title": "Digest", "value": event.digest.as_deref().unwrap_or("—")}),
            json!({"title": "Registry", "value": event.repository.registry.as_deref().unwrap_or("—")}),
        ];
        if let Some(previous) = event.previous_digest.as_deref() {
            facts.push(json!({"title": "Was", "value": previous}));
        }
        if let Some(actor) = event.actor.as_deref() {
            facts.push(json!({"title": "By", "value": actor}));
        }
        let mut card = json!({
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [
                {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": true,
                 "color": style, "text": format!("{} {verb}", event.image_ref())},
                {"type": "FactSet", "facts": facts},
                {"type": "TextBlock", "isSubtle": true, "size": "Small", "wrap": true,
                 "text": format!("{} · {}", event.id, event.occurred_at.to_rfc3339())},
            ],
        });
        if let Some(link) = webhook.config.get("link") {
            card["actions"] = json!([{"type": "Action.OpenUrl", "title": "Open", "url": link}]);
        }
        let body = json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": card,
            }],
        });
        Ok(Request::json(&body).signature(SignatureScheme::None))
    }
}

export!(Teams);
