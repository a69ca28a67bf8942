//! `slack`: a Slack incoming-webhook message (text plus Block Kit blocks)
//! naming the repository, tag, short digest and registry.

use callisto_plugin_sdk::{Event, EventType, Plugin, PluginInfo, Request, Webhook, export};
use serde_json::{Value, json};

pub struct Slack;

impl Plugin for Slack {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "slack",
            env!("CARGO_PKG_VERSION"),
            "A Slack incoming-webhook message naming repository, tag, digest and registry",
        )
        .key(
            "username",
            "the bot name Slack shows (legacy webhooks only)",
        )
        .key(
            "icon_emoji",
            "the bot icon, e.g. :whale: (legacy webhooks only)",
        )
        .key("channel", "the channel to post to (legacy webhooks only)")
    }

    fn format(event: &Event, webhook: &Webhook) -> Result<Request, String> {
        let (emoji, verb) = match event.kind {
            EventType::ImagePushed => (":package:", "pushed"),
            EventType::ImageDeleted => (":wastebasket:", "deleted"),
            EventType::WebhookTest => (":white_check_mark:", "test notification for"),
        };
        let repo = &event.repository.name;
        let target = match (&event.tag, event.short_digest()) {
            (Some(tag), _) => format!("{repo}:{tag}"),
            (None, Some(digest)) => format!("{repo}@{digest}"),
            (None, None) => repo.clone(),
        };
        let registry = event
            .repository
            .registry
            .as_deref()
            .unwrap_or("unknown registry");
        let text = if event.kind == EventType::WebhookTest {
            format!("{emoji} Callisto {verb} `{repo}` on {registry}")
        } else {
            format!("{emoji} `{target}` {verb} on {registry}")
        };

        let mut fields = vec![
            field("Repository", repo),
            field("Tag", event.tag.as_deref().unwrap_or("—")),
            field("Digest", event.short_digest().unwrap_or("—")),
            field("Registry", registry),
        ];
        if let Some(previous) = event.previous_digest.as_deref() {
            let short = previous.split_once(':').map_or(previous, |(_, h)| h);
            fields.push(field("Was", &short[..short.len().min(12)]));
        }
        let mut message = json!({
            "text": text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {"type": "section", "fields": fields},
                {"type": "context", "elements": [{
                    "type": "mrkdwn",
                    "text": format!("{} · {}", event.id, event.occurred_at.to_rfc3339()),
                }]},
            ],
        });
        for key in ["username", "icon_emoji", "channel"] {
            if let Some(value) = webhook.config.get(key) {
                message[key] = Value::String(value.to_owned());
            }
        }
        Ok(Request::json(&message))
    }
}

fn field(name: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": format!("*{name}*\n{value}")})
}

export!(Slack);
