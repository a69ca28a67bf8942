//! `default`: the event as JSON, exactly as Callisto's API shows it, signed
//! with Standard Webhooks.

use callisto_plugin_sdk::{Event, Plugin, PluginInfo, Request, Webhook, export};

pub struct DefaultPlugin;

impl Plugin for DefaultPlugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "default",
            env!("CARGO_PKG_VERSION"),
            "The event as JSON (application/json), signed with Standard Webhooks",
        )
    }

    fn format(event: &Event, _webhook: &Webhook) -> Result<Request, String> {
        Ok(Request::new("application/json", event.to_json()))
    }
}

export!(DefaultPlugin);
