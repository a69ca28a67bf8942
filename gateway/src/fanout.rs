//! Fan-out: reads new events in order from a durable cursor, asks each
//! enabled webhook's plugin whether it wants the event and what to send, and
//! writes one delivery per (event, webhook) holding the exact request.
//!
//! Creating a batch's deliveries and moving the cursor past its events is
//! one transaction: after a crash the batch is either entirely done or not
//! at all, so nothing is skipped and nothing is doubled. Plugins are
//! deterministic, so running a batch again gives the same requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::deliver;
use crate::event::{Event, Timestamp, new_id};
use crate::metrics::Metrics;
use crate::plugin::{EventInput, PluginHost, Runner, WebhookInput};
use crate::store::{
    self, Delivery, DeliveryKind, DeliveryState, Reader, Store, StoreError, Webhook,
};

/// Events taken per transaction.
const BATCH: usize = 256;

pub struct Context {
    pub store: Store,
    pub plugins: Arc<PluginHost>,
    pub sender: deliver::Sender,
    pub metrics: Arc<Metrics>,
}

/// A handle to wake fan-out when events were appended. Cheap to clone.
#[derive(Clone)]
pub struct Fanout {
    wake: Arc<Notify>,
}

impl Fanout {
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

pub fn spawn(
    ctx: Context,
    warm_instances: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (Fanout, tokio::task::JoinHandle<()>) {
    let wake = Arc::new(Notify::new());
    let handle = Fanout { wake: wake.clone() };
    let task = tokio::spawn(run(Arc::new(ctx), wake, warm_instances, shutdown));
    (handle, task)
}

async fn run(
    ctx: Arc<Context>,
    wake: Arc<Notify>,
    warm_instances: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut runner = Some(Runner::new(warm_instances));
    tokio::pin!(shutdown);
    loop {
        // Drain: one batch per blocking call, until caught up. A batch is
        // never abandoned half-way at shutdown; it is short.
        loop {
            let ctx2 = ctx.clone();
            let mut r = runner
                .take()
                .expect("the runner is put back after each batch");
            let joined = tokio::task::spawn_blocking(move || {
                let result = process_batch(&ctx2, &mut r);
                (r, result)
            })
            .await;
            let (r, result) = match joined {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::error!("fan-out batch panicked: {e}");
                    (Runner::new(warm_instances), Ok(0))
                }
            };
            runner = Some(r);
            match result {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) => {
                    tracing::error!("fan-out failed, retrying shortly: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = wake.notified() => {}
            // A safety net: events appended by a path that forgot to wake us.
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Fans out the next batch of events. Returns how many events it covered.
fn process_batch(ctx: &Context, runner: &mut Runner) -> Result<usize, StoreError> {
    let txn = ctx.store.read()?;
    let cursor = store::fanout_cursor(&txn)?;
    let events = store::events::after(&txn, cursor, BATCH)?;
    let Some(&(last, _)) = events.last() else {
        return Ok(0);
    };
    let mut deliveries = Vec::new();
    for (_, event) in &events {
        let webhooks: Vec<Webhook> = txn
            .webhooks_of(&event.repository.id)?
            .into_iter()
            .filter(|w| w.enabled)
            .collect();
        deliveries.extend(plan(
            &ctx.plugins,
            runner,
            &ctx.metrics,
            event,
            &webhooks,
            DeliveryKind::Event,
        ));
    }
    drop(txn);

    let count = events.len();
    let due: Vec<(String, Timestamp)> = deliveries
        .iter()
        .filter_map(|d| Some((d.webhook_id.clone(), d.next_attempt_at?)))
        .collect();
    // Deliveries must be durable before the sender may send them (a lost
    // one would come back with another id); a cursor that made none may be
    // lost and redone.
    let durable = !deliveries.is_empty();
    ctx.store.write_blocking(durable, move |txn| {
        // Only this task moves the cursor; a mismatch means the log changed
        // under us (a restore?), and the batch is simply redone.
        let now = store::fanout_cursor(txn)?;
        if now != cursor {
            return Err(StoreError::Conflict(format!(
                "fan-out cursor moved from {cursor} to {now} during a batch"
            )));
        }
        for delivery in &deliveries {
            store::deliveries::create(txn, delivery)?;
        }
        store::set_fanout_cursor(txn, last)
    })?;
    for (webhook, at) in due {
        ctx.sender.due(&webhook, at);
    }
    Ok(count)
}

/// The deliveries `event` makes for `webhooks`: one per webhook whose plugin
/// wants the event, pending with the formatted request, or failed with the
/// plugin's error. Used by fan-out and by replays.
pub fn plan(
    plugins: &PluginHost,
    runner: &mut Runner,
    metrics: &Metrics,
    event: &Event,
    webhooks: &[Webhook],
    kind: DeliveryKind,
) -> Vec<Delivery> {
    let input = EventInput::from(event);
    let now = Timestamp::now();
    let mut out = Vec::new();
    for webhook in webhooks {
        let base = |state: DeliveryState| Delivery {
            id: new_id("dlv"),
            kind,
            event_id: event.id.clone(),
            webhook_id: webhook.id.clone(),
            repository_id: webhook.repository_id.clone(),
            plugin: webhook.plugin.clone(),
            state,
            request: None,
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
            last_status: None,
            created_at: now,
            updated_at: now,
        };
        let Some(plugin) = plugins.get(&webhook.plugin) else {
            Metrics::count(&metrics.deliveries, "outcome", "plugin_error");
            out.push(Delivery {
                last_error: Some(format!("plugin {} is not installed", webhook.plugin)),
                ..base(DeliveryState::Failed)
            });
            continue;
        };
        let started = Instant::now();
        let result = runner.run(
            &plugin,
            &input,
            &WebhookInput::new(&webhook.id, &webhook.url, &webhook.config),
        );
        metrics
            .plugin_call_seconds
            .get_or_create(&vec![("plugin", webhook.plugin.clone())])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Some(request)) => out.push(Delivery {
                request: Some(request),
                next_attempt_at: Some(now),
                ..base(DeliveryState::Pending)
            }),
            Ok(None) => Metrics::count(&metrics.deliveries, "outcome", "filtered"),
            Err(e) => {
                tracing::warn!(webhook = webhook.id, event = event.id, "{e}");
                metrics
                    .plugin_failures
                    .get_or_create(&vec![
                        ("plugin", webhook.plugin.clone()),
                        ("kind", e.kind().to_owned()),
                    ])
                    .inc();
                Metrics::count(&metrics.deliveries, "outcome", "plugin_error");
                out.push(Delivery {
                    last_error: Some(e.to_string()),
                    ..base(DeliveryState::Failed)
                });
            }
        }
    }
    out
}
