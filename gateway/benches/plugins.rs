//! `filter` + `format` per event through the plugin host, beside the same
//! formatting done natively, in one run.
//!
//! `cargo bench -p callisto --bench plugins` prints criterion's report and
//! then a table of medians with the ratio to native.
//!
//! - `warm`: the fan-out path, one instance per webhook reused across events;
//! - `fresh`: a new instance per event (Test Webhook, configuration checks);
//! - `native`: the plugin crate called as a Rust library.

use std::hint::black_box;
use std::sync::Arc;

use callisto::event::Event;
use callisto::plugin::{EventInput, HostDirs, Limits, PluginHost, Runner, WebhookInput};
use callisto_plugin_default::DefaultPlugin;
use callisto_plugin_sdk::{Plugin, testing};
use callisto_plugin_slack::Slack;
use criterion::Criterion;

/// The SDK's sample push: the same `Event` the host passes to plugins.
fn event() -> Event {
    testing::pushed("demo/app", "v1")
}

fn bench(c: &mut Criterion) {
    let host = PluginHost::new(Limits::default(), HostDirs::default()).expect("plugin host");
    let config = vec![("tags".to_owned(), "v*".to_owned())];
    let webhook = WebhookInput::new("wh_bench", "https://example.com/hook", &config);
    let sdk_webhook = testing::webhook(&[("tags", "v*")]);
    let sdk_event = testing::pushed("demo/app", "v1");

    for name in ["default", "slack"] {
        let plugin = host.get(name).unwrap();
        let mut group = c.benchmark_group(name);

        // Fan-out converts an event once and hands it to every webhook's
        // plugin; what is measured is one webhook's filter + format.
        let input = EventInput::from(&event());
        let mut runner = Runner::new(16);
        group.bench_function("warm", |b| {
            b.iter(|| {
                runner
                    .run(&plugin, black_box(&input), &webhook)
                    .unwrap()
                    .into_request()
                    .unwrap()
            })
        });
        let fresh: Arc<_> = plugin.clone();
        group.bench_function("fresh", |b| {
            b.iter(|| fresh.run(black_box(&input), &webhook).unwrap().unwrap())
        });
        group.bench_function("native", |b| {
            b.iter(|| {
                let e = black_box(&sdk_event);
                match name {
                    "default" => {
                        assert!(DefaultPlugin::filter(e, &sdk_webhook));
                        DefaultPlugin::format(e, &sdk_webhook).unwrap()
                    }
                    _ => {
                        assert!(Slack::filter(e, &sdk_webhook));
                        Slack::format(e, &sdk_webhook).unwrap()
                    }
                }
            })
        });
        group.finish();
    }
}

/// Median of a finished benchmark, in nanoseconds, from criterion's
/// `estimates.json`.
fn median(group: &str, function: &str) -> Option<f64> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = dir
        .join("criterion")
        .join(group)
        .join(function)
        .join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();

    println!("\nplugin     path     median µs/event   × native");
    for group in ["default", "slack"] {
        let Some(native) = median(group, "native") else {
            continue;
        };
        for function in ["warm", "fresh", "native"] {
            if let Some(ns) = median(group, function) {
                println!(
                    "{group:<10} {function:<8} {:>15.2}   {:>8.1}",
                    ns / 1000.0,
                    ns / native
                );
            }
        }
    }
}
