use callisto_plugin_sdk::{Event, EventType, Plugin, PluginInfo, Request, Webhook, export};
use serde_json::json;

pub struct Discord;

impl Plugin for Discord {
    fn describe() -> PluginInfo {
        PluginInfo::new("my-discord", "0.1.0", "A Discord webhook message")
            .key("username", "the name the message is posted under")
    }

    fn format(event: &Event, webhook: &Webhook) -> Result<Request, String> {
        let verb = match event.kind {
            EventType::ImagePushed => "pushed",
            EventType::ImageDeleted => "deleted",
            EventType::WebhookTest => "tested",
        };
        let digest = event.short_digest().unwrap_or("unknown");
        let content = format!("`{}` {verb} ({digest})", event.image_ref());
        let username = webhook.config.get("username").unwrap_or("Callisto");
        Ok(Request::json(
            &json!({ "content": content, "username": username }),
        ))
    }
}

export!(Discord);

#[cfg(test)]
mod tests {
    use super::*;
    use callisto_plugin_sdk::testing;

    #[test]
    fn names_the_image_and_the_digest() {
        let event = testing::pushed("demo/app", "v1");
        let request = Discord::format(&event, &testing::webhook(&[])).unwrap();
        let body = request.body_json();
        assert_eq!(
            body["content"],
            "`127.0.0.1:5000/demo/app:v1` pushed (a2293004e164)"
        );
        assert_eq!(body["username"], "Callisto");
    }
}
