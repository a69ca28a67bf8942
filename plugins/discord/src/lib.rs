//! `discord`: a Discord webhook message, one embed naming the repository,
//! tag, short digest and registry (`POST https://discord.com/api/webhooks/...`).

use callisto_plugin_sdk::{
    Event, EventType, Plugin, PluginInfo, Request, SignatureScheme, Webhook, export,
};
use serde_json::json;

pub struct Discord;

impl Plugin for Discord {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "discord",
            env!("CARGO_PKG_VERSION"),
            "A Discord webhook message with an embed naming repository, tag, digest and registry",
        )
        .key("username", "the name the message is posted under")
        .key("avatar_url", "the picture the message is posted with")
    }

    fn format(event: &Event, webhook: &Webhook) -> Result<Request, String> {
        // Discord's embed colours: green pushed, red deleted, blurple test.
        let (verb, color) = match event.kind {
            EventType::ImagePushed => ("pushed", 0x2e_cc71),
            EventType::ImageDeleted => ("deleted", 0xe7_4c3c),
            EventType::WebhookTest => ("test notification", 0x58_65f2),
        };
        let registry = event.repository.registry.as_deref().unwrap_or("unknown");
        let mut fields = vec![
            json!({"name": "Repository", "value": event.repository.name, "inline": true}),
            json!({"name": "Tag", "value": event.tag.as_deref().unwrap_or("—"), "inline": true}),
            json!({"name": "Digest", "value": format!("`{}`", event.short_digest().unwrap_or("—")), "inline": true}),
            json!({"name": "Registry", "value": registry, "inline": true}),
        ];
        if let Some(previous) = event.previous_digest.as_deref() {
            let hex = previous.split_once(':').map_or(previous, |(_, h)| h);
            fields.push(json!({"name": "Was", "value": format!("`{}`", &hex[..hex.len().min(12)]), "inline": true}));
        }
        let mut body = json!({
            "content": format!("`{}` {verb}", event.image_ref()),
            "embeds": [{
                "title": format!("{} {verb}", event.repository.name),
                "color": color,
                "fields": fields,
                "footer": {"text": event.id},
                "timestamp": event.occurred_at.to_rfc3339(),
            }],
            // A tag name is not a mention: never ping anyone.
            "allowed_mentions": {"parse": []},
        });
        for key in ["username", "avatar_url"] {
            if let Some(v) = webhook.config.get(key) {
                body[key] = v.into();
            }
        }
        // Discord checks no signature; the URL is the credential.
        Ok(Request::json(&body).signature(SignatureScheme::None))
    }
}

export!(Discord);
