//! A plugin that misbehaves on request, to prove the sandbox holds. Its
//! `mode` config key picks the misbehaviour, in `format` (or in `filter`
//! with `stage=filter`).

use std::hint::black_box;

use callisto_plugin_sdk::{Event, LogLevel, Plugin, PluginInfo, Request, Webhook, export, log};

pub struct Hostile;

fn misbehave(mode: Option<&str>) -> Result<(), String> {
    match mode {
        // Spins until the host's deadline stops it.
        Some("loop") => {
            let mut n = 0u64;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        // Allocates until the memory cap stops it.
        Some("alloc") => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(black_box(vec![1u8; 1 << 20]));
            }
        }
        Some("trap") => panic!("hostile plugin panics on purpose"),
        Some("error") => Err("hostile plugin refuses on purpose".to_owned()),
        Some("log-spam") => {
            for i in 0..10_000 {
                log(LogLevel::Info, &format!("spam line {i}"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile", "0.0.1", "Misbehaves on request (tests only)")
            .key(
                "mode",
                "loop | alloc | trap | error | huge-body | inject-header | content-type-header \
                 | log-spam | count | decline",
            )
            .key("stage", "filter | format (default)")
    }

    fn filter(event: &Event, webhook: &Webhook) -> bool {
        // Declines every event, test events too, saying why.
        if webhook.config.get("mode") == Some("decline") {
            return callisto_plugin_sdk::filter::decline("hostile declines every event on purpose");
        }
        if webhook.config.get("stage") == Some("filter")
            && let Err(e) = misbehave(webhook.config.get("mode"))
        {
            panic!("{e}");
        }
        callisto_plugin_sdk::filter::standard(event, &webhook.config)
    }

    fn format(event: &Event, webhook: &Webhook) -> Result<Request, String> {
        let mode = webhook.config.get("mode");
        if webhook.config.get("stage") != Some("filter") {
            misbehave(mode)?;
        }
        match mode {
            Some("huge-body") => Ok(Request::new(
                "application/octet-stream",
                vec![b'x'; 100 << 20],
            )),
            // Static state, to show that instances are never shared between
            // webhooks: each webhook's count starts at 1.
            Some("count") => {
                use std::sync::atomic::{AtomicU64, Ordering};
                static CALLS: AtomicU64 = AtomicU64::new(0);
                let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
                Ok(Request::new("text/plain", n.to_string().into_bytes()))
            }
            Some("inject-header") => Ok(Request::new("application/json", event.to_json())
                .header("x-injected", "a\r\nx-evil: 1")),
            // The content type belongs in `content_type`; the host refuses it
            // as a header.
            Some("content-type-header") => Ok(Request::new("application/json", event.to_json())
                .header("Content-Type", "text/plain")),
            _ => Ok(Request::new("application/json", event.to_json())),
        }
    }
}

export!(Hostile);
