//! Fan-out: reads new events in order from a durable cursor, asks each
//! enabled webhook's plugin whether it wants the event and what to send, and
//! writes one delivery per (event, webhook) holding the exact request.
//!
//! Creating a batch's deliveries and moving the cursor past its events is
//! one transaction (`Store::plan_deliveries`): after a crash the batch is
//! either entirely done or not at all, so nothing is skipped and nothing is
//! doubled. Plugins are deterministic, so running a batch again gives the
//! same requests. The store announces the deliveries it made due; the
//! sender hears of them from there.

mod coalesce;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::{Event, EventType, Timestamp};
use crate::filtered::{FilteredEvent, FilteredEvents};
use crate::host_filter;
use crate::metrics::Metrics;
use crate::operational::{self, OperationalEvent};
use crate::plugin::{EventInput, PluginHost, Runner, Verdict, WebhookInput};
use crate::records::{Delivery, DeliveryKind, DeliveryState, Webhook};
use crate::store::{Leadership, PlanBatch, Store, StoreError};

/// Events taken per transaction.
const BATCH: usize = 256;

/// How long planning stays with one gateway of several on one database
/// after its last batch; renewed with every batch.
const LEASE: Duration = Duration::from_secs(10);

pub struct Context {
    pub store: Store,
    pub plugins: Arc<PluginHost>,
    pub metrics: Arc<Metrics>,
    /// Where declined events are told, per webhook.
    pub filtered: Arc<FilteredEvents>,
    /// When each webhook's plugin last made a `plugin.failing` event.
    pub plugin_failing: PluginFailing,
}

/// At most one `plugin.failing` operational event per webhook every
/// [`PluginFailing::QUIET`]: a plugin that fails on every event would
/// otherwise make one per event.
#[derive(Default)]
pub struct PluginFailing(std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>);

impl PluginFailing {
    const QUIET: Duration = Duration::from_secs(600);

    fn should_tell(&self, webhook: &str) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if last
            .get(webhook)
            .is_some_and(|at| now.duration_since(*at) < Self::QUIET)
        {
            return false;
        }
        last.insert(webhook.to_owned(), now);
        true
    }
}

/// Starts fan-out. It wakes when the store announces appended events, and
/// runs until `shutdown`; a batch under way is finished first (it is short).
pub fn spawn(
    ctx: Context,
    warm_instances: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(Arc::new(ctx), warm_instances, shutdown))
}

async fn run(
    ctx: Arc<Context>,
    warm_instances: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut appended = ctx.store.subscribe_events();
    let mut runner = Some(Runner::new(warm_instances));
    tokio::pin!(shutdown);
    loop {
        // Another gateway plans (one database, several gateways): look
        // again when its lease would end, in case it died.
        let mut follow_until = None;
        // Drain, one batch at a time, until caught up.
        let mut refused = 0;
        loop {
            match ctx.store.lead_fanout(LEASE).await {
                Ok(Leadership::Leading) => {}
                Ok(Leadership::Following { until }) => {
                    let wait = until.unix_millis() - Timestamp::now().unix_millis();
                    follow_until = Some(
                        tokio::time::Instant::now()
                            + Duration::from_millis(
                                wait.clamp(100, LEASE.as_millis() as i64) as u64
                            ),
                    );
                    break;
                }
                Err(e) => {
                    tracing::error!("fan-out cannot take its lease, retrying shortly: {e}");
                    follow_until = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    break;
                }
            }
            let r = runner.take().unwrap_or_else(|| Runner::new(warm_instances));
            let (r, result) = process_batch(&ctx, r).await;
            runner = r;
            match result {
                Ok(0) => break,
                Ok(_) => {
                    refused = 0;
                    continue;
                }
                // Another gateway planned the batch first (its lease and
                // ours overlapped): go on from where it left the cursor.
                Err(StoreError::Conflict(e)) if refused < 3 => {
                    refused += 1;
                    tracing::debug!("a fan-out batch was planned by another gateway: {e}");
                    continue;
                }
                Err(StoreError::Conflict(e)) => {
                    tracing::debug!("fan-out yields to another gateway: {e}");
                    follow_until = Some(tokio::time::Instant::now() + LEASE);
                    break;
                }
                Err(e) => {
                    tracing::error!("fan-out failed, retrying shortly: {e}");
                    follow_until = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    break;
                }
            }
        }
        let look_again = async {
            match follow_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => return,
            changed = appended.changed() => if changed.is_err() { return },
            _ = look_again => {}
        }
    }
}

/// Fans out the next batch of events. Returns the runner (unless a plugin
/// call panicked) and how many events the batch covered.
async fn process_batch(
    ctx: &Arc<Context>,
    mut runner: Runner,
) -> (Option<Runner>, Result<usize, StoreError>) {
    let batch = match ctx.store.next_to_plan(BATCH).await {
        Ok(batch) if batch.events.is_empty() => return (Some(runner), Ok(0)),
        Ok(batch) => batch,
        Err(e) => return (Some(runner), Err(e)),
    };
    let PlanBatch {
        cursor,
        last,
        events,
        webhooks,
    } = batch;
    let count = events.len();
    let known = match known_tags(&ctx.store, webhooks.values().flatten()).await {
        Ok(known) => known,
        Err(e) => return (Some(runner), Err(e)),
    };
    let windows: HashMap<String, u32> = webhooks
        .values()
        .flatten()
        .filter_map(|w| Some((w.id.clone(), w.coalesce_secs?)))
        .collect();
    let planner = ctx.clone();
    let span = tracing::info_span!("fanout", events = count, first.event.id = %events[0].id);
    let planned = tokio::task::spawn_blocking(move || {
        let _span = span.entered();
        let mut deliveries = Vec::new();
        for event in &events {
            let hooks = webhooks
                .get(&event.repository.id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            deliveries.extend(plan(
                &planner.plugins,
                &mut runner,
                &planner.metrics,
                &planner.filtered,
                event,
                hooks,
                known.get(&event.repository.id).map(Vec::as_slice),
                DeliveryKind::Event,
            ));
        }
        (runner, deliveries)
    })
    .await;
    let (runner, mut deliveries) = match planned {
        Ok(pair) => pair,
        Err(e) => {
            // Nothing was written: the batch is planned again.
            tracing::error!("fan-out batch panicked: {e}");
            return (None, Ok(0));
        }
    };
    let folds = if windows.is_empty() {
        Vec::new()
    } else {
        match fold_bursts(ctx, &mut deliveries, &windows).await {
            Ok(folds) => folds,
            Err(e) => return (Some(runner), Err(e)),
        }
    };
    let failing: Vec<(String, String, String, String)> = deliveries
        .iter()
        .filter(|d| d.request.is_none())
        .map(|d| {
            (
                d.webhook_id.clone(),
                d.repository_id.clone(),
                d.plugin.clone(),
                d.last_error.clone().unwrap_or_default(),
            )
        })
        .collect();
    let written = ctx
        .store
        .plan_deliveries(cursor, last, deliveries, folds)
        .await;
    if written.is_ok() {
        for (webhook, repository, plugin, error) in failing {
            if ctx.plugin_failing.should_tell(&webhook) {
                let mut event = OperationalEvent::new(
                    operational::Kind::PluginFailing,
                    format!("plugin {plugin} failed: {error}"),
                );
                event.webhook_id = Some(webhook);
                event.repository_id = Some(repository);
                event.plugin = Some(plugin);
                operational::spawn_emit(&ctx.store, event);
            }
        }
    }
    (Some(runner), written.map(|()| count))
}

/// Folds the batch's deliveries for webhooks with a coalescing window
/// into their bursts (`coalesce`), reading each one's gathering delivery
/// from the store.
async fn fold_bursts(
    ctx: &Context,
    deliveries: &mut [Delivery],
    windows: &HashMap<String, u32>,
) -> Result<Vec<crate::store::Fold>, StoreError> {
    let now = Timestamp::now();
    let after = Timestamp::from_unix_nanos(now.unix_nanos() + coalesce::MARGIN.as_nanos() as i128);
    let mut open = HashMap::new();
    for d in deliveries.iter() {
        if windows.contains_key(&d.webhook_id)
            && !open.contains_key(&d.webhook_id)
            && let Some(g) = ctx.store.gathering(&d.webhook_id, after).await?
        {
            open.insert(d.webhook_id.clone(), g);
        }
    }
    let folds = coalesce::fold(deliveries, windows, open, now);
    let folded = folds.len()
        + deliveries
            .iter()
            .filter(|d| d.state == DeliveryState::Folded)
            .count();
    if folded > 0 {
        ctx.metrics
            .deliveries
            .get_or_create(&vec![("outcome", "folded".to_owned())])
            .inc_by(folded as u64);
    }
    Ok(folds)
}

/// Events a replay covers at most per request.
pub const MAX_REPLAY: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("event {event} belongs to another repository than webhook {webhook}")]
    OtherRepository { event: String, webhook: String },
    #[error(
        "{count} events from {since}: replay at most {MAX_REPLAY} at a time (pick a later event)"
    )]
    TooMany { count: usize, since: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("replaying: {0}")]
    Panicked(String),
}

/// What a replay did.
#[derive(Debug)]
pub struct Replayed {
    /// Events of the repository from `since` on.
    pub events: usize,
    /// New deliveries (pending, or failed when the plugin failed).
    pub deliveries: Vec<String>,
    /// Events the webhook's filter declined.
    pub filtered: usize,
}

/// Runs fan-out again for one webhook, from event `since` on: new
/// deliveries (new ids) for every event the webhook wants.
pub async fn replay(
    store: &Store,
    plugins: &Arc<PluginHost>,
    metrics: &Arc<Metrics>,
    filtered: &Arc<FilteredEvents>,
    webhook: Webhook,
    since: &str,
) -> Result<Replayed, ReplayError> {
    let events = store.events_from(since).await?;
    if events
        .first()
        .is_some_and(|e| e.repository.id != webhook.repository_id)
    {
        return Err(ReplayError::OtherRepository {
            event: since.to_owned(),
            webhook: webhook.id,
        });
    }
    if events.len() > MAX_REPLAY {
        return Err(ReplayError::TooMany {
            count: events.len(),
            since: since.to_owned(),
        });
    }
    let count = events.len();
    let known = known_tags(store, std::iter::once(&webhook)).await?;
    let tags = known.get(&webhook.repository_id).cloned();
    let (plugins, metrics, declined, hook) = (
        plugins.clone(),
        metrics.clone(),
        filtered.clone(),
        webhook.clone(),
    );
    let deliveries = tokio::task::spawn_blocking(move || {
        let mut runner = Runner::new(1);
        events
            .iter()
            .flat_map(|e| {
                plan(
                    &plugins,
                    &mut runner,
                    &metrics,
                    &declined,
                    e,
                    std::slice::from_ref(&hook),
                    tags.as_deref(),
                    DeliveryKind::Event,
                )
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ReplayError::Panicked(e.to_string()))?;
    let ids: Vec<String> = deliveries.iter().map(|d| d.id.clone()).collect();
    let filtered = count - deliveries.len();
    store.add_deliveries(&webhook.id, deliveries).await?;
    Ok(Replayed {
        events: count,
        deliveries: ids,
        filtered,
    })
}

/// The known tags of the repositories of `webhooks` whose host filters
/// need them (`host_filter`), read once per batch.
async fn known_tags<'a>(
    store: &Store,
    webhooks: impl Iterator<Item = &'a Webhook>,
) -> Result<HashMap<String, Vec<String>>, StoreError> {
    let mut known = HashMap::new();
    for w in webhooks {
        let needs = host_filter::split(&w.config).is_ok_and(|(f, _)| f.needs_tags());
        if needs && !known.contains_key(&w.repository_id) {
            let tags = store.tags(&w.repository_id).await?;
            known.insert(
                w.repository_id.clone(),
                tags.into_iter().map(|(t, _)| t).collect(),
            );
        }
    }
    Ok(known)
}

/// The deliveries `event` makes for `webhooks`: one per webhook whose plugin
/// wants the event, pending with the formatted request, or failed with the
/// plugin's error. An event a webhook's filter declines is told to
/// `filtered` with the plugin's reason, and counted by plugin and rule.
/// Used by fan-out and by replays.
// Each argument is a separate thing fan-out and replays hold; bundling
// them would only move the list into a struct built for this one call.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    plugins: &PluginHost,
    runner: &mut Runner,
    metrics: &Metrics,
    filtered: &FilteredEvents,
    event: &Event,
    webhooks: &[Webhook],
    known_tags: Option<&[String]>,
    kind: DeliveryKind,
) -> Vec<Delivery> {
    let input = EventInput::from(event);
    let now = Timestamp::now();
    let mut out = Vec::new();
    for webhook in webhooks {
        let delivery = |request| Delivery::new(kind, &event.id, webhook, request, now);
        let Some(plugin) = plugins.get(&webhook.plugin) else {
            Metrics::count(&metrics.deliveries, "outcome", "plugin_error");
            out.push(delivery(Err(format!(
                "plugin {} is not installed",
                webhook.plugin
            ))));
            continue;
        };
        // The host's filters first: they need state the plugin has not got.
        let (host, config) = match host_filter::split(&webhook.config) {
            Ok(split) => split,
            Err(e) => {
                out.push(delivery(Err(e)));
                continue;
            }
        };
        if host.semver_newer
            && event.kind == EventType::ImagePushed
            && let Err(reason) = host_filter::newer(
                event.tag.as_deref().unwrap_or_default(),
                known_tags.unwrap_or_default(),
            )
        {
            declined(
                metrics,
                filtered,
                event,
                webhook,
                "semver",
                Some(reason),
                now,
            );
            continue;
        }
        let _span = tracing::info_span!(
            "plugin",
            plugin = %webhook.plugin,
            event.id = %event.id,
            webhook.id = %webhook.id
        )
        .entered();
        let started = Instant::now();
        let result = runner.run(
            &plugin,
            &input,
            &WebhookInput::new(&webhook.id, &webhook.url, &config),
        );
        metrics
            .plugin_call_seconds
            .get_or_create(&vec![("plugin", webhook.plugin.clone())])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Verdict::Send(request)) => out.push(delivery(Ok(request))),
            Ok(Verdict::Filtered(why)) => {
                declined(
                    metrics,
                    filtered,
                    event,
                    webhook,
                    why.rule(),
                    why.reason,
                    now,
                );
            }
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
                out.push(delivery(Err(e.to_string())));
            }
        }
    }
    out
}

/// An event `webhook` does not want, by the host's filter or its plugin's
/// (`rule`): counted by plugin and rule, and told to `filtered` with the
/// reason for `GET /api/v1/webhooks/{id}/filtered`.
fn declined(
    metrics: &Metrics,
    filtered: &FilteredEvents,
    event: &Event,
    webhook: &Webhook,
    rule: &'static str,
    reason: Option<String>,
    now: Timestamp,
) {
    Metrics::count(&metrics.deliveries, "outcome", "filtered");
    metrics
        .events_filtered
        .get_or_create(&vec![
            ("plugin", webhook.plugin.clone()),
            ("rule", rule.to_owned()),
        ])
        .inc();
    filtered.record(
        &webhook.id,
        FilteredEvent {
            event_id: event.id.clone(),
            kind: event.kind,
            tag: event.tag.clone(),
            plugin: webhook.plugin.clone(),
            rule,
            reason,
            at: now,
        },
    );
}
