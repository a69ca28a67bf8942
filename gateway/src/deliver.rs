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
pub mod limit;
pub mod retry;
pub mod signature;
pub mod test;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::DeliveryConfig;
use crate::event::Timestamp;
use crate::metrics::Metrics;
use crate::net::Policy;
use crate::operational::{self, OperationalEvent};
use crate::records::{AttemptHealth, Delivery, DeliveryOrder};
use crate::store::{Due, HealthUpdate, Next, Store};
use attempt::Outbound;
use limit::{Bucket, Limits};

enum Message {
    /// An attempt's HTTP exchange is over: its webhook has a free slot
    /// again, even while the attempt is still being recorded.
    Released {
        webhook: String,
        /// Whether the attempt succeeded (`None`: none was made): the
        /// endpoint's streak moves before its freed slot is filled.
        succeeded: Option<bool>,
    },
    /// An attempt is recorded; `next_ms` is when that delivery is due again,
    /// if it is.
    Done {
        webhook: String,
        delivery: String,
        next_ms: Option<u64>,
        paused: bool,
        /// The webhook's settings as the attempt read them.
        limits: Option<Limits>,
    },
}

/// What the sender needs from the rest of the gateway.
pub struct Context {
    pub store: Store,
    /// The clients attempts go through (one per client certificate).
    pub clients: Arc<crate::net::client::WebhookClients>,
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
    /// Deliveries whose attempt is under way (claimed and queued, sending
    /// or being recorded), per webhook: they are still in the due index and
    /// must be skipped.
    held: HashMap<String, HashSet<String>>,
    /// Per webhook, deliveries claimed and not started yet: a claim reads
    /// the due index once for many attempts, rather than once per attempt
    /// and again when each ends (see [`CLAIM_AHEAD`]).
    queued: HashMap<String, VecDeque<String>>,
    total: usize,
    /// Each webhook's own settings, read when it is first due and refreshed
    /// by every attempt (which reads the webhook anyway).
    limits: HashMap<String, Limits>,
    /// The token buckets of rate-limited webhooks.
    buckets: HashMap<String, Bucket>,
    /// Webhooks whose latest attempts all failed: their own backoff.
    failing: HashMap<String, Streak>,
}

/// A webhook's run of failed attempts, and when it may be tried again.
/// After [`STREAK`] failures in a row the endpoint is taken as down: one
/// attempt at a time, the next no sooner than a delay that doubles from a
/// quarter second up to [`BACKOFF_MAX_MS`], on top of its deliveries' own
/// schedules. A success ends it. So a dead endpoint with a long backlog
/// holds one slot, not its whole share, and is probed a few times a
/// minute rather than once per queued delivery; once it is back, it is
/// noticed within the longest backoff.
#[derive(Debug, Clone, Copy, Default)]
struct Streak {
    failures: u32,
    until_ms: u64,
}

/// How many due deliveries of a parallel webhook one claim takes at most,
/// beyond its free slots, when claims cost nothing but the read (redb).
/// The queue drains as slots free up; every one in it is still pending in
/// the store, and sent (or found settled) in its turn.
const CLAIM_AHEAD: usize = 64;

const STREAK: u32 = 5;
const BACKOFF_MAX_MS: u64 = 5_000;

impl Streak {
    fn down(&self) -> bool {
        self.failures >= STREAK
    }

    fn failed(&mut self, now: u64) {
        self.failures = self.failures.saturating_add(1);
        if self.down() {
            let doublings = (self.failures - STREAK).min(16);
            self.until_ms = now + (250u64 << doublings).min(BACKOFF_MAX_MS);
        }
    }
}

impl Scheduler {
    /// Attempts in flight `webhook` may have.
    fn cap(&self, webhook: &str, gateway_cap: usize) -> usize {
        if self.failing.get(webhook).is_some_and(Streak::down) {
            return 1;
        }
        self.limits
            .get(webhook)
            .map_or(gateway_cap, |l| l.cap(gateway_cap))
    }
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
        queued: HashMap::new(),
        total: 0,
        limits: HashMap::new(),
        buckets: HashMap::new(),
        failing: HashMap::new(),
    };
    // What was pending when the gateway stopped is due again now.
    match ctx.store.webhooks_with_due().await {
        Ok(due) => sched.next_due.extend(due),
        Err(e) => tracing::error!("cannot read pending deliveries: {e}"),
    }
    let mut attempts = JoinSet::new();
    tokio::pin!(shutdown);

    // Counting pending deliveries reads an index of them all: once a
    // second is often enough for a gauge, not once per attempt.
    let mut gauge_at = std::time::Instant::now();
    refresh_pending_gauge(&ctx).await;
    loop {
        let now = now_ms();
        dispatch(&ctx, &tx, &mut sched, &mut attempts, now).await;
        let gauge_stale = gauge_at.elapsed() < GAUGE_EVERY;
        if !gauge_stale {
            gauge_at = std::time::Instant::now();
            refresh_pending_gauge(&ctx).await;
        }

        let sleep_until = sched
            .next_due
            .iter()
            .filter(|(w, _)| {
                sched.in_flight.get(*w).copied().unwrap_or(0)
                    < sched.cap(w, ctx.config.concurrency_per_webhook)
            })
            .map(|(_, at)| *at)
            .min()
            .filter(|_| sched.total < ctx.config.max_in_flight);
        let mut sleep = match sleep_until {
            Some(at) => Duration::from_millis(at.saturating_sub(now_ms())),
            None => Duration::from_secs(3600),
        };
        if gauge_stale {
            sleep = sleep.min(GAUGE_EVERY.saturating_sub(gauge_at.elapsed()));
        }
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
        Message::Released { webhook, succeeded } => {
            match succeeded {
                Some(true) => {
                    sched.failing.remove(&webhook);
                }
                Some(false) => sched
                    .failing
                    .entry(webhook.clone())
                    .or_default()
                    .failed(now_ms()),
                None => {}
            }
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
            limits,
        } => {
            if paused {
                sched.failing.remove(&webhook);
            }
            if let Some(limits) = limits {
                if limits.rate_per_sec.is_none() {
                    sched.buckets.remove(&webhook);
                }
                // Every attempt reports them: no allocation when known.
                match sched.limits.get_mut(&webhook) {
                    Some(known) => *known = limits,
                    None => {
                        sched.limits.insert(webhook.clone(), limits);
                    }
                }
            }
            if let Some(held) = sched.held.get_mut(&webhook) {
                held.remove(&delivery);
                if held.is_empty() {
                    sched.held.remove(&webhook);
                }
            }
            if paused {
                sched.next_due.remove(&webhook);
                // Claimed again when it is enabled (they are still pending).
                if let Some(queue) = sched.queued.remove(&webhook)
                    && let Some(held) = sched.held.get_mut(&webhook)
                {
                    for id in queue {
                        held.remove(&id);
                    }
                    if held.is_empty() {
                        sched.held.remove(&webhook);
                    }
                }
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
        let limits = match sched.limits.get(&webhook) {
            Some(limits) => *limits,
            // Once per webhook: afterwards its attempts keep this current.
            None => {
                let limits = match ctx.store.webhook(&webhook).await {
                    Ok(found) => found.as_ref().map_or(Limits::NONE, Limits::of),
                    Err(e) => {
                        tracing::error!(webhook, "cannot read the webhook: {e}");
                        continue;
                    }
                };
                sched.limits.insert(webhook.clone(), limits);
                limits
            }
        };
        if let Some(streak) = sched.failing.get(&webhook)
            && streak.down()
            && streak.until_ms > now
        {
            // Its endpoint is down: back at the end of its backoff.
            sched.next_due.insert(webhook.clone(), streak.until_ms);
            continue;
        }
        let cap = sched.cap(&webhook, ctx.config.concurrency_per_webhook);
        let busy = sched.in_flight.get(&webhook).copied().unwrap_or(0);
        if busy >= cap {
            continue;
        }
        // Claim enough to fill the free slots, past the held ones (under
        // way here already): everything claimed starts now.
        let mut free = (cap - busy).min(ctx.config.max_in_flight.saturating_sub(sched.total));
        if let Some(rate) = limits.rate_per_sec {
            let bucket = sched
                .buckets
                .entry(webhook.clone())
                .or_insert_with(|| Bucket::full(rate, now));
            let tokens = bucket.available(rate, now);
            if tokens == 0 {
                // Due, but over its rate: back when a token is.
                sched.next_due.insert(webhook.clone(), bucket.next_ms(rate));
                continue;
            }
            free = free.min(tokens);
        }
        let no_held = HashSet::new();
        let held = sched.held.get(&webhook).unwrap_or(&no_held);
        let queued = sched.queued.get(&webhook).map_or(0, VecDeque::len);
        // When the webhook's next delivery not claimed here is due; known
        // only when this round claims.
        let mut later = None;
        if queued < free {
            let claimed = match limits.order {
                // The next waits until the one under way is recorded: it may
                // be retried, and must then still go first.
                // Its `Done` brings the webhook back.
                DeliveryOrder::Fifo if !held.is_empty() => {
                    sched.next_due.remove(&webhook);
                    continue;
                }
                DeliveryOrder::Fifo => {
                    ctx.store
                        .claim_oldest(&webhook, lease(&ctx.config), held)
                        .await
                }
                DeliveryOrder::Parallel => {
                    let ahead = if ctx.store.claims_are_leased() {
                        // One round of slots ahead: the last of it starts
                        // within one attempt, so all of it is sent within
                        // the lease (the timeout plus its margin) when the
                        // timeout is at most that margin. Half the claims.
                        if ctx.config.timeout_secs <= LEASE_MARGIN_SECS {
                            (2 * free).saturating_sub(queued)
                        } else {
                            free - queued
                        }
                    } else {
                        CLAIM_AHEAD.max(free - queued)
                    };
                    ctx.store
                        .claim_due(&webhook, ahead, lease(&ctx.config), held)
                        .await
                }
            };
            let claim = match claimed {
                Ok(claim) => claim,
                Err(e) => {
                    // The store is failing (the database is away?): look again
                    // in a second rather than spin.
                    tracing::error!(webhook, "cannot claim due deliveries, again in 1 s: {e}");
                    sched.next_due.insert(webhook, now + 1_000);
                    continue;
                }
            };
            later = claim.next_ms;
            let held = sched.held.entry(webhook.clone()).or_default();
            let queue = sched.queued.entry(webhook.clone()).or_default();
            for entry in claim.claimed {
                held.insert(entry.id.clone());
                queue.push_back(entry.id);
            }
        }
        let mut started = busy;
        let mut taken = 0;
        let queue = sched.queued.entry(webhook.clone()).or_default();
        while taken < free
            && started < cap
            && sched.total < ctx.config.max_in_flight
            && let Some(id) = queue.pop_front()
        {
            started += 1;
            taken += 1;
            sched.total += 1;
            let (ctx, tx, webhook) = (ctx.clone(), tx.clone(), webhook.clone());
            // Boxed: the attempt's future is large, and a task moves its
            // future on spawn and on completion.
            attempts.spawn(Box::pin(async move {
                let slot = Slot {
                    tx: tx.clone(),
                    webhook: Some(webhook.clone()),
                };
                let (finished, limits) = attempt_delivery(&ctx, slot, &webhook, &id).await;
                let _ = tx.send(Message::Done {
                    webhook,
                    delivery: id,
                    next_ms: finished.next_ms,
                    paused: finished.paused,
                    limits,
                });
            }));
        }
        // Claimed ahead: the rest start as slots free up.
        let next = if queue.is_empty() {
            sched.queued.remove(&webhook);
            later
        } else {
            Some(now)
        };
        if let Some(bucket) = sched.buckets.get_mut(&webhook) {
            bucket.take(taken);
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

/// How long a claim on a delivery lasts: its attempt (the request timeout)
/// plus ample time to record it, so that only a gateway that died
/// mid-attempt loses it to another, and that within half a minute.
fn lease(config: &DeliveryConfig) -> Duration {
    Duration::from_secs(config.timeout_secs.saturating_add(LEASE_MARGIN_SECS))
}

/// What a claim's lease allows beyond the request timeout.
const LEASE_MARGIN_SECS: u64 = 30;

/// How often the pending-deliveries gauge is counted at most.
const GAUGE_EVERY: Duration = Duration::from_secs(1);

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
    fn release(&mut self, succeeded: Option<bool>) {
        if let Some(webhook) = self.webhook.take() {
            let _ = self.tx.send(Message::Released { webhook, succeeded });
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release(None);
    }
}

/// Makes one attempt of a delivery and records it. Returns how it ended,
/// and the webhook's settings as read for the attempt.
async fn attempt_delivery(
    ctx: &Context,
    slot: Slot,
    webhook_id: &str,
    id: &str,
) -> (Finished, Option<Limits>) {
    let (delivery, webhook) = match ctx.store.delivery_to_send(id, webhook_id).await {
        Ok(Some(pair)) => pair,
        Ok(_) => return (Finished::default(), None),
        Err(e) => {
            tracing::error!(delivery = id, "cannot load delivery: {e}");
            // Try again a little later rather than spin.
            let later = Finished {
                next_ms: Some(now_ms() + 5_000),
                ..Finished::default()
            };
            return (later, None);
        }
    };
    let limits = Some(Limits::of(&webhook));
    let finished = attempt_loaded(ctx, slot, webhook_id, id, delivery, webhook).await;
    (finished, limits)
}

async fn attempt_loaded(
    ctx: &Context,
    mut slot: Slot,
    webhook_id: &str,
    id: &str,
    delivery: Delivery,
    webhook: crate::records::Webhook,
) -> Finished {
    let mut finished = Finished::default();
    if !webhook.enabled {
        finished.paused = true;
        return finished;
    }
    // Settled since it was claimed (folded into a later delivery, its
    // webhook deleted, say): a claim queued ahead is checked when its turn
    // comes.
    if delivery.state != crate::records::DeliveryState::Pending {
        return finished;
    }
    let Some(request) = delivery.request.as_ref() else {
        return finished;
    };
    let number = delivery.attempts + 1;
    let secret = webhook
        .secret
        .as_ref()
        .map(|s| ctx.sealer.open(s))
        .transpose()
        .and_then(|secret| {
            // Only during a rotation's grace period: one more decryption.
            let previous = webhook
                .previous_secret_at(Timestamp::now())
                .map(|s| ctx.sealer.open(s))
                .transpose()?;
            Ok((secret, previous))
        });
    let span = tracing::info_span!(
        "attempt",
        delivery.id = %delivery.id,
        event.id = %delivery.event_id,
        webhook.id = %webhook.id,
        number,
        status = tracing::field::Empty,
    );
    let client = match &webhook.client_certificate {
        None => Ok(ctx.clients.shared().clone()),
        Some(c) => ctx
            .sealer
            .open(&c.key)
            .map_err(|e| format!("the client certificate's key: {e}"))
            .and_then(|key| {
                ctx.clients
                    .with_identity(&crate::net::client::Identity {
                        cert_pem: &c.cert_pem,
                        key_pem: &key,
                    })
                    .map_err(|e| e.to_string())
            }),
    };
    let secret = match (secret, client) {
        (Ok(secret), Ok(client)) => Ok((secret, client)),
        (Err(e), _) => Err(e.to_string()),
        (_, Err(e)) => Err(e),
    };
    let sent = match secret {
        Ok(((secret, previous), client)) => {
            attempt::send(
                &client,
                &ctx.policy,
                Outbound {
                    url: &webhook.url,
                    request,
                    secret: secret.as_deref(),
                    previous_secret: previous.as_deref(),
                    message_id: &delivery.id,
                    headers: &webhook.headers,
                    proxied: ctx.clients.proxied(),
                },
                number,
                ctx.config.response_body_limit,
            )
            .instrument(span.clone())
            .await
        }
        // Unsigned would be worse than unsent: recorded as a failed
        // attempt, and retried on the schedule like a receiver that is down.
        Err(e) => attempt::not_sent(&webhook.url, number, e),
    };
    slot.release(Some(sent.attempt.succeeded));
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

    // The webhook's failing streak moves in the same write, only when it
    // changes: a healthy webhook's attempts write nothing else. A 410, or a
    // streak over the policy's bounds, disables it.
    let health = AttemptHealth {
        at: sent.attempt.started_at,
        succeeded: sent.attempt.succeeded,
        dead: matches!(next, Next::Dead),
        gone,
    };
    let policy = ctx.config.disable_policy();
    let update = webhook
        .attempt_changes(&health, &policy)
        .then_some(HealthUpdate {
            attempt: health,
            policy,
        });
    let disabling =
        !health.succeeded && webhook.enabled && webhook.disable_reason(&health, &policy).is_some();
    // If a crash loses this record, the delivery is still pending and is
    // sent again with the same webhook-id (at least once).
    let dead = matches!(next, Next::Dead) && delivery.plugin != operational::PLUGIN;
    let last_error = sent.attempt.error.clone().unwrap_or_default();
    let recorded = ctx
        .store
        .record_attempt(id, sent.attempt, next, update)
        .await;
    if recorded.is_ok() {
        if dead {
            let mut event = OperationalEvent::new(
                operational::Kind::DeliveryDead,
                format!("every attempt failed; the last: {last_error}"),
            );
            event.repository_id = Some(webhook.repository_id.clone());
            event.webhook_id = Some(webhook.id.clone());
            event.delivery_id = Some(delivery.id.clone());
            event.event_id = Some(delivery.event_id.clone());
            operational::spawn_emit(&ctx.store, event);
        }
        if disabling {
            let reason = webhook.disable_reason(&health, &policy).unwrap_or_default();
            let mut event = OperationalEvent::new(operational::Kind::WebhookDisabled, reason);
            event.repository_id = Some(webhook.repository_id.clone());
            event.webhook_id = Some(webhook.id.clone());
            operational::spawn_emit(&ctx.store, event);
        }
    }
    match recorded {
        Ok(_) if disabling => finished.paused = true,
        Ok(Some(Delivery {
            next_attempt_at: Some(at),
            ..
        })) => finished.next_ms = Some(at.unix_millis().max(0) as u64),
        Ok(_) => {}
        Err(e) => {
            // Not recorded: the delivery is still due in the log, so it is
            // retried (at least once), after a pause.
            tracing::error!(delivery = id, "cannot record an attempt: {e}");
            finished.next_ms = Some(now_ms() + 5_000);
        }
    }
    finished
}

/// How an attempt ended, for the scheduler.
#[derive(Default)]
struct Finished {
    /// When the delivery is due again, if it is.
    next_ms: Option<u64>,
    /// Its webhook is disabled: nothing of it is due until it is enabled.
    paused: bool,
}

fn now_ms() -> u64 {
    Timestamp::now().unix_millis().max(0) as u64
}
