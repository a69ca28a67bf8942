//! Sending deliveries: the scheduler that decides what is due, the attempts,
//! the retries and the record of each.
//!
//! Fairness comes from the shape of the due index, keyed by webhook first:
//! the scheduler keeps, per webhook, only when its earliest delivery is due
//! and how many of its attempts are in flight. A webhook at its concurrency
//! cap is simply skipped, so a receiver that hangs holds its own slots and
//! nobody else's, however many deliveries it has queued.
//!
//! What the sender sends it first claims (`Store::claim_due`), with a lease
//! longer than an attempt: of several gateways on one database, one at a
//! time sends a delivery.
//!
//! Delivery is at least once. An attempt is recorded after it is made; if
//! the gateway dies in between, the delivery is still pending in the log and
//! is sent again, with the same `webhook-id` (by another gateway on the
//! same database once the dead one's lease expires).

pub mod attempt;
pub mod retry;
pub mod signature;
pub mod test;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::DeliveryConfig;
use crate::event::Timestamp;
use crate::metrics::Metrics;
use crate::net::Policy;
use crate::records::Delivery;
use crate::store::{Due, Next, Store};
use attempt::Outbound;

enum Message {
    /// An attempt's HTTP exchange is over: its webhook has a free slot
    /// again, even while the attempt is still being recorded.
    Released { webhook: String },
    /// An attempt is recorded; `next_ms` is when that delivery is due again,
    /// if it is.
    Done {
        webhook: String,
        delivery: String,
        next_ms: Option<u64>,
        paused: bool,
    },
}

/// What the sender needs from the rest of the gateway.
pub struct Context {
    pub store: Store,
    pub client: reqwest::Client,
    pub policy: Arc<Policy>,
    pub config: DeliveryConfig,
    pub metrics: Arc<Metrics>,
    pub sealer: crate::seal::Sealer,
}

/// Starts the sender. It learns of due deliveries from the store's
/// announcements, runs until `shutdown` resolves, then lets attempts in
/// flight finish (bounded by the request timeout) and returns.
pub fn spawn(
    ctx: Context,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    let due = ctx.store.subscribe_due();
    tokio::spawn(run(Arc::new(ctx), tx, rx, due, shutdown))
}

struct Scheduler {
    /// Per webhook: the earliest time a delivery may be due.
    next_due: HashMap<String, u64>,
    in_flight: HashMap<String, usize>,
    /// Deliveries whose attempt is under way (sending or being recorded),
    /// per webhook: they are still in the due index and must be skipped.
    held: HashMap<String, HashSet<String>>,
    total: usize,
}

async fn run(
    ctx: Arc<Context>,
    tx: mpsc::UnboundedSender<Message>,
    mut rx: mpsc::UnboundedReceiver<Message>,
    mut due: mpsc::UnboundedReceiver<Due>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut sched = Scheduler {
        next_due: HashMap::new(),
        in_flight: HashMap::new(),
        held: HashMap::new(),
        total: 0,
    };
    // What was pending when the gateway stopped is due again now.
    match ctx.store.webhooks_with_due().await {
        Ok(due) => sched.next_due.extend(due),
        Err(e) => tracing::error!("cannot read pending deliveries: {e}"),
    }
    let mut attempts = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        let now = now_ms();
        dispatch(&ctx, &tx, &mut sched, &mut attempts, now).await;
        refresh_pending_gauge(&ctx).await;

        let sleep_until = sched
            .next_due
            .iter()
            .filter(|(w, _)| {
                sched.in_flight.get(*w).copied().unwrap_or(0) < ctx.config.concurrency_per_webhook
            })
            .map(|(_, at)| *at)
            .min()
            .filter(|_| sched.total < ctx.config.max_in_flight);
        let sleep = match sleep_until {
            Some(at) => Duration::from_millis(at.saturating_sub(now_ms())),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(sleep) => {}
            Some(d) = due.recv() => {
                sched.due(&d);
                while let Ok(d) = due.try_recv() {
                    sched.due(&d);
                }
            }
            message = rx.recv() => match message {
                Some(message) => {
                    apply(&mut sched, message);
                    // Take everything queued before scheduling again.
                    while let Ok(message) = rx.try_recv() {
                        apply(&mut sched, message);
                    }
                }
                None => break,
            },
            Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
        }
    }

    // Attempts in flight finish (each is bounded by the request timeout) and
    // are recorded; nothing new starts.
    let grace = Duration::from_secs(ctx.config.timeout_secs + 5);
    if tokio::time::timeout(grace, async {
        while attempts.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("attempts still running at shutdown are left pending");
    }
}

impl Scheduler {
    fn due(&mut self, due: &Due) {
        let at_ms = due.at.unix_millis().max(0) as u64;
        let entry = self.next_due.entry(due.webhook.clone()).or_insert(at_ms);
        *entry = (*entry).min(at_ms);
    }
}

fn apply(sched: &mut Scheduler, message: Message) {
    match message {
        Message::Released { webhook } => {
            sched.total = sched.total.saturating_sub(1);
            if let Some(n) = sched.in_flight.get_mut(&webhook) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    sched.in_flight.remove(&webhook);
                }
            }
            // Its next due delivery may start now.
            sched.next_due.entry(webhook).or_insert(0);
        }
        Message::Done {
            webhook,
            delivery,
            next_ms,
            paused,
        } => {
            if let Some(held) = sched.held.get_mut(&webhook) {
                held.remove(&delivery);
                if held.is_empty() {
                    sched.held.remove(&webhook);
                }
            }
            if paused {
                sched.next_due.remove(&webhook);
            } else {
                // Deliveries skipped while this one was held may be due.
                let at = next_ms.unwrap_or(0);
                let entry = sched.next_due.entry(webhook).or_insert(at);
                *entry = (*entry).min(at);
            }
        }
    }
}

/// Starts attempts for every webhook that has something due and room for
/// it, and works out when each of them is due next.
async fn dispatch(
    ctx: &Arc<Context>,
    tx: &mpsc::UnboundedSender<Message>,
    sched: &mut Scheduler,
    attempts: &mut JoinSet<()>,
    now: u64,
) {
    let cap = ctx.config.concurrency_per_webhook;
    let ready: Vec<String> = sched
        .next_due
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(w, _)| w.clone())
        .collect();
    if ready.is_empty() {
        return;
    }
    for webhook in ready {
        if sched.total >= ctx.config.max_in_flight {
            return;
        }
        let busy = sched.in_flight.get(&webhook).copied().unwrap_or(0);
        if busy >= cap {
            continue;
        }
        // Claim enough to fill the free slots, past the held ones (under
        // way here already): everything claimed starts now.
        let free = (cap - busy).min(ctx.config.max_in_flight.saturating_sub(sched.total));
        let no_held = HashSet::new();
        let held = sched.held.get(&webhook).unwrap_or(&no_held);
        let claim = match ctx
            .store
            .claim_due(&webhook, free, lease(&ctx.config), held)
            .await
        {
            Ok(claim) => claim,
            Err(e) => {
                tracing::error!(webhook, "cannot claim due deliveries: {e}");
                continue;
            }
        };
        let mut started = busy;
        let mut next = claim.next_ms;
        for entry in claim.claimed {
            if started >= cap || sched.total >= ctx.config.max_in_flight {
                // Not expected (the claim was sized to the free slots): it
                // is sent here once its webhook has room again.
                next = Some(now);
                break;
            }
            started += 1;
            sched.total += 1;
            sched
                .held
                .entry(webhook.clone())
                .or_default()
                .insert(entry.id.clone());
            let (ctx, tx, webhook, id) = (ctx.clone(), tx.clone(), webhook.clone(), entry.id);
            attempts.spawn(async move {
                let slot = Slot {
                    tx: tx.clone(),
                    webhook: Some(webhook.clone()),
                };
                let (next_ms, paused) = attempt_delivery(&ctx, slot, &webhook, &id).await;
                let _ = tx.send(Message::Done {
                    webhook,
                    delivery: id,
                    next_ms,
                    paused,
                });
            });
        }
        if started > busy {
            sched.in_flight.insert(webhook.clone(), started);
        }
        match next {
            Some(at) => {
                sched.next_due.insert(webhook, at);
            }
            // Nothing else queued: the webhook leaves the schedule until a
            // finished attempt or new delivery brings it back.
            None => {
                sched.next_due.remove(&webhook);
            }
        }
    }
}

/// How long a claim on a delivery lasts: longer than its attempt (the
/// request timeout) and its recording, so that only a gateway that died
/// mid-attempt loses it to another.
fn lease(config: &DeliveryConfig) -> Duration {
    Duration::from_secs(config.timeout_secs.saturating_mul(2).saturating_add(60))
}

async fn refresh_pending_gauge(ctx: &Context) {
    if let Ok(n) = ctx.store.pending_count().await {
        ctx.metrics.pending.set(n as i64);
    }
}

/// A webhook's concurrency slot, given back when the HTTP exchange ends
/// (or, whatever happens, when dropped).
struct Slot {
    tx: mpsc::UnboundedSender<Message>,
    webhook: Option<String>,
}

impl Slot {
    fn release(&mut self) {
        if let Some(webhook) = self.webhook.take() {
            let _ = self.tx.send(Message::Released { webhook });
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Makes one attempt of a delivery and records it. Returns when the
/// delivery is due again (if it is) and whether its webhook is paused.
async fn attempt_delivery(
    ctx: &Context,
    mut slot: Slot,
    webhook_id: &str,
    id: &str,
) -> (Option<u64>, bool) {
    let (delivery, webhook) = match ctx.store.delivery_to_send(id, webhook_id).await {
        Ok(Some(pair)) => pair,
        Ok(_) => return (None, false),
        Err(e) => {
            tracing::error!(delivery = id, "cannot load delivery: {e}");
            // Try again a little later rather than spin.
            return (Some(now_ms() + 5_000), false);
        }
    };
    if !webhook.enabled {
        return (None, true);
    }
    let Some(request) = delivery.request.as_ref() else {
        return (None, false);
    };
    let number = delivery.attempts + 1;
    let secret = webhook
        .secret
        .as_ref()
        .map(|s| ctx.sealer.open(s))
        .transpose();
    let span = tracing::info_span!(
        "attempt",
        delivery.id = %delivery.id,
        event.id = %delivery.event_id,
        webhook.id = %webhook.id,
        number,
        status = tracing::field::Empty,
    );
    let sent = match secret {
        Ok(secret) => {
            attempt::send(
                &ctx.client,
                &ctx.policy,
                Outbound {
                    url: &webhook.url,
                    request,
                    secret: secret.as_deref(),
                    message_id: &delivery.id,
                    headers: &webhook.headers,
                },
                number,
                ctx.config.response_body_limit,
            )
            .instrument(span.clone())
            .await
        }
        // Unsigned would be worse than unsent: recorded as a failed
        // attempt, and retried on the schedule like a receiver that is down.
        Err(e) => attempt::not_sent(&webhook.url, number, e.to_string()),
    };
    slot.release();
    if let Some(status) = sent.status() {
        span.record("status", status);
    }
    let result = if sent.attempt.succeeded {
        "success"
    } else {
        "failure"
    };
    ctx.metrics
        .attempt_seconds
        .get_or_create(&vec![("result", result.to_owned())])
        .observe(sent.attempt.duration_ms as f64 / 1000.0);

    let gone = sent.status() == Some(410);
    let next = if sent.attempt.succeeded {
        Next::Succeeded
    } else if gone {
        Next::Failed
    } else {
        let schedule = webhook
            .retry_schedule_secs
            .as_deref()
            .unwrap_or(&ctx.config.retry_schedule_secs);
        match retry::delay(
            schedule,
            number + 1,
            sent.retry_after,
            Duration::from_secs(ctx.config.retry_after_max_secs),
            ctx.config.jitter,
        ) {
            Some(delay) => Next::Retry {
                at: Timestamp::from_unix_millis(
                    sent.attempt.started_at.unix_millis() + delay.as_millis() as i64,
                ),
            },
            None => Next::Dead,
        }
    };
    let outcome = match &next {
        Next::Succeeded => "succeeded",
        Next::Retry { .. } => "retry",
        Next::Dead => "dead",
        Next::Failed => "failed",
    };
    Metrics::count(&ctx.metrics.deliveries, "outcome", outcome);
    if matches!(next, Next::Dead) {
        tracing::warn!(
            delivery = id,
            webhook = webhook_id,
            "delivery is dead after {number} attempts"
        );
    }

    // If a crash loses this record, the delivery is still pending and is
    // sent again with the same webhook-id (at least once). A 410 disables
    // the webhook in the same write.
    let disable = gone.then(|| "the receiver answered 410 Gone".to_owned());
    let recorded = ctx
        .store
        .record_attempt(id, sent.attempt, next, disable)
        .await;
    match recorded {
        Ok(Some(Delivery {
            next_attempt_at: Some(at),
            ..
        })) => (Some(at.unix_millis().max(0) as u64), false),
        Ok(_) => (None, gone),
        Err(e) => {
            // Not recorded: the delivery is still due in the log, so it is
            // retried (at least once), after a pause.
            tracing::error!(delivery = id, "cannot record an attempt: {e}");
            (Some(now_ms() + 5_000), false)
        }
    }
}

fn now_ms() -> u64 {
    Timestamp::now().unix_millis().max(0) as u64
}
