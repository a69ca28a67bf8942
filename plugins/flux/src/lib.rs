//! `flux`: a call to a Flux notification-controller `Receiver` (type
//! `generic`), so that Flux reconciles its `ImageRepository` (or any
//! resource the Receiver lists) the moment a tag is pushed instead of at its
//! next interval. The webhook URL is the Receiver's
//! `https://flux-webhook.example.com/hook/<status.webhookPath digest>`: the
//! path is the credential, and a `generic` Receiver checks no signature.
//! The body carries the image, for a Receiver's `resourceFilter`
//! (e.g. `req.tag.startsWith('v')`).

use callisto_plugin_sdk::{
    Event, EventType, Plugin, PluginInfo, Request, SignatureScheme, Webhook, export,
};
use serde_json::json;

pub struct Flux;

impl Plugin for Flux {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "flux",
            env!("CARGO_PKG_VERSION"),
            "A Flux notification Receiver call (type generic) that reconciles on push",
        )
    }

    /// A deletion gives Flux nothing to pull: only pushes (and tests) call
    /// the Receiver, on top of the standard filter keys.
    fn filter(event: &Event, webhook: &Webhook) -> bool {
        if event.kind == EventType::ImageDeleted {
            return callisto_plugin_sdk::filter::decline(
                "flux: a deletion gives Flux nothing to pull",
            );
        }
        callisto_plugin_sdk::filter::standard(event, &webhook.config)
    }

    fn format(event: &Event, _webhook: &Webhook) -> Result<Request, String> {
        let body = json!({
            "image": event.image_ref(),
            "repository": event.repository.name,
            "registry": event.repository.registry,
            "tag": event.tag,
            "digest": event.digest,
            "type": event.kind.as_str(),
            "id": event.id,
        });
        Ok(Request::json(&body).signature(SignatureScheme::None))
    }
}

export!(Flux);
