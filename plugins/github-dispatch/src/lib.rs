//! `github-dispatch`: a `repository_dispatch` to kick a GitHub Actions
//! workflow (`on: repository_dispatch: types: [image-pushed]`). The webhook
//! URL is `https://api.github.com/repos/OWNER/REPO/dispatches`; the event
//! rides in `client_payload`, where a workflow reads
//! `github.event.client_payload.tag`.

use callisto_plugin_sdk::{
    Event, EventType, Plugin, PluginInfo, Request, SignatureScheme, Webhook, export,
};
use serde_json::json;

pub struct GithubDispatch;

impl Plugin for GithubDispatch {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "github-dispatch",
            env!("CARGO_PKG_VERSION"),
            "A GitHub repository_dispatch that starts a workflow",
        )
        .required_key(
            "token",
            "a GitHub token allowed to dispatch (fine-grained: Contents read and write on that repository)",
        )
        .key(
            "event_type",
            "the dispatch's event_type (default: image-pushed, image-deleted or webhook-test)",
        )
    }

    fn validate_config(config: &callisto_plugin_sdk::Config) -> Result<(), String> {
        config
            .validate(&Self::describe().config_keys)
            .map_err(|e| e.to_string())?;
        match config.get("event_type") {
            Some(t) if t.is_empty() || t.len() > 100 => {
                Err("event_type: GitHub takes 1 to 100 characters".into())
            }
            _ => Ok(()),
        }
    }

    fn format(event: &Event, webhook: &Webhook) -> Result<Request, String> {
        let token = webhook
            .config
            .get("token")
            .ok_or("the `token` key is required")?;
        let event_type = webhook
            .config
            .get("event_type")
            .map(str::to_owned)
            .unwrap_or_else(|| {
                match event.kind {
                    EventType::ImagePushed => "image-pushed",
                    EventType::ImageDeleted => "image-deleted",
                    EventType::WebhookTest => "webhook-test",
                }
                .to_owned()
            });
        // GitHub allows at most ten top-level keys in client_payload.
        let body = json!({
            "event_type": event_type,
            "client_payload": {
                "id": event.id,
                "type": event.kind.as_str(),
                "repository": event.repository.name,
                "registry": event.repository.registry,
                "image": event.image_ref(),
                "tag": event.tag,
                "digest": event.digest,
                "previous_digest": event.previous_digest,
                "actor": event.actor,
                "occurred_at": event.occurred_at.to_rfc3339(),
            },
        });
        Ok(Request::json(&body)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header("user-agent", "callisto-webhooks")
            .header("authorization", &format!("Bearer {token}"))
            .signature(SignatureScheme::None))
    }
}

export!(GithubDispatch);
