//! The durable state of the gateway: the event log and every record around
//! it (repositories, webhooks, deliveries, attempts, known tags, the
//! fan-out cursor).
//!
//! The rest of the gateway speaks to it in the domain's words: append what a
//! registry reported, apply a poll, plan deliveries and move the fan-out
//! cursor, record an attempt. No engine type crosses this boundary. After
//! each commit the store announces what it committed (events appended,
//! deliveries due), and fan-out and the sender wake from that.
//!
//! Two engines implement the same operations: one redb file (`redb`, the
//! default: group commit, one process), or a PostgreSQL database
//! (`postgres`, chosen with a `postgres://` URL). [`Store`] dispatches to
//! the one it was opened with; the announcements are the same for both. On
//! PostgreSQL the store also announces what other gateways on the database
//! committed, and the sender and the poller claim their work with leases
//! (`claim_due`, `claim_poll`), so that several gateways share one database
//! (docs/scaling.md).

mod announce;
mod postgres;
mod records;
mod redb;
mod types;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use announce::Due;
pub use postgres::{Imported, redact as redact_url};
pub use redb::{Backup, Report, TableReport, backup_file, verify_file};
pub use types::{
    Claim, DueDelivery, EventFilter, Fold, Gathering, HealthUpdate, Leadership, Next, PlanBatch,
    PollClaim, Pruned,
};

use announce::Announcer;

use crate::changes::{Notification, Recorded};
use crate::event::{Event, Timestamp};
use crate::records::{Attempt, Delivery, DeliveryState, KnownTag, Repository, Webhook};

/// What becomes due when `deliveries` are written: the pending ones, at
/// their next attempt. Both engines announce it after the commit.
fn due_of(deliveries: &[Delivery]) -> Vec<Due> {
    deliveries
        .iter()
        .filter(|d| d.state == DeliveryState::Pending)
        .filter_map(|d| {
            Some(Due {
                webhook: d.webhook_id.clone(),
                at: d.next_attempt_at?,
            })
        })
        .collect()
}

/// Whether a delivery can still take a burst's later event in its place:
/// pending, made for an event by fan-out, never attempted, and due after
/// `after`. Both engines' rule, for reading and again when folding.
fn gathers(delivery: &Delivery, after: Timestamp) -> bool {
    delivery.state == DeliveryState::Pending
        && delivery.kind == crate::records::DeliveryKind::Event
        && delivery.attempts == 0
        && delivery.request.is_some()
        && delivery.next_attempt_at.is_some_and(|at| at > after)
}

/// `delivery` as a burst's gathering delivery, if it still gathers one
/// after `after`: both engines' answer to `Store::gathering`.
fn gathering_of(delivery: Delivery, after: Timestamp) -> Option<Gathering> {
    gathers(&delivery, after).then(|| Gathering {
        due: delivery.next_attempt_at.unwrap_or(after),
        delivery_id: delivery.id,
        event_id: delivery.event_id,
        folded: delivery.folded,
    })
}

/// Folds `delivery` into `fold.into` as both engines record it, or refuses
/// if it was sent, redelivered or changed meanwhile: fan-out then plans
/// its batch again and starts a new burst.
fn apply_fold(delivery: &mut Delivery, fold: &Fold, now: Timestamp) -> Result<(), StoreError> {
    if !gathers(delivery, now) {
        return Err(StoreError::Conflict(format!(
            "delivery {} stopped gathering its burst before {} could take its place",
            fold.delivery_id, fold.into
        )));
    }
    delivery.state = DeliveryState::Folded;
    delivery.folded_into = Some(fold.into.clone());
    delivery.next_attempt_at = None;
    delivery.updated_at = now;
    Ok(())
}

/// Moves a delivery on after an attempt, as both engines record it: the
/// attempt's outcome, and where the delivery goes `next`.
fn apply_attempt(delivery: &mut Delivery, attempt: &Attempt, next: &Next) {
    delivery.attempts = delivery.attempts.max(attempt.number);
    delivery.last_status = attempt.response.as_ref().map(|r| r.status);
    delivery.last_error = attempt.error.clone();
    delivery.updated_at = attempt.started_at;
    delivery.next_attempt_at = None;
    delivery.state = match next {
        Next::Succeeded => DeliveryState::Succeeded,
        Next::Dead => DeliveryState::Dead,
        Next::Failed => DeliveryState::Failed,
        Next::Retry { at } => {
            delivery.next_attempt_at = Some(*at);
            DeliveryState::Pending
        }
    };
}

/// Whether a bulk retry from `since` sends a delivery again: failed or
/// dead at or after `since` (its last attempt), made for an event (not a
/// test), with a request to send (its plugin did not fail).
fn retriable(delivery: &Delivery, since: Timestamp) -> bool {
    matches!(delivery.state, DeliveryState::Failed | DeliveryState::Dead)
        && delivery.updated_at >= since
        && delivery.kind == crate::records::DeliveryKind::Event
        && delivery.request.is_some()
}

/// Refuses a repository beside one of the same kind, name and registry
/// (`named` are the repositories of its name): both engines' rule.
fn refuse_clash(repo: &Repository, named: &[Repository]) -> Result<(), StoreError> {
    if !named
        .iter()
        .any(|r| r.kind == repo.kind && r.registry == repo.registry)
    {
        return Ok(());
    }
    Err(StoreError::Conflict(format!(
        "a {} repository named {} already exists{}",
        repo.kind.as_str(),
        repo.name,
        repo.registry
            .as_deref()
            .map(|r| format!(" on {r}"))
            .unwrap_or_default()
    )))
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error(
        "{path} has schema version {found}, but this callisto understands version {supported}; \
         it was left untouched (use the callisto release that wrote it, or a newer one)"
    )]
    SchemaVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "{path} is open in another process (a running `callisto serve`?); \
         stop it first, or go through the running gateway"
    )]
    InUse { path: PathBuf },
    #[error("storage failed: {0}")]
    Storage(Arc<::redb::Error>),
    #[error("a {table} record does not decode: {reason}")]
    Corrupt { table: &'static str, reason: String },
    #[error("cannot write the backup {path}: {reason}")]
    Backup { path: PathBuf, reason: String },
    #[error("a write in the same batch failed: {0}")]
    Batch(String),
    #[error("the store has stopped accepting writes")]
    WriterGone,
    #[error("the store is recovering from a storage failure (a full disk?); retry shortly")]
    Unavailable,
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("cannot connect to PostgreSQL at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error(
        "the PostgreSQL database {database} has schema version {found}, but this callisto understands \
         version {supported}; it was left untouched (use the callisto release that migrated it, or a newer one)"
    )]
    DatabaseSchemaVersion {
        database: String,
        found: i32,
        supported: i32,
    },
    #[error(
        "migrating the PostgreSQL schema to version {version} failed (nothing was changed): {reason}"
    )]
    Migration { version: i32, reason: String },
    #[error("PostgreSQL failed while {doing}: {reason}")]
    Postgres { doing: &'static str, reason: String },
}

impl StoreError {
    /// Whether the storage itself failed (as opposed to a missing record or
    /// a conflict): the request may succeed later, the data is intact.
    pub fn is_storage(&self) -> bool {
        matches!(
            self,
            StoreError::Storage(_)
                | StoreError::Corrupt { .. }
                | StoreError::Batch(_)
                | StoreError::WriterGone
                | StoreError::Unavailable
                | StoreError::Postgres { .. }
        )
    }

    pub(crate) fn not_found(kind: &'static str, id: &str) -> Self {
        StoreError::NotFound {
            kind,
            id: id.to_owned(),
        }
    }
}

/// The gateway's store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    engine: Engine,
    announce: Announcer,
}

#[derive(Clone)]
enum Engine {
    Redb(redb::RedbStore),
    Postgres(postgres::PgStore),
}

/// Where the store is: a redb file, or a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The redb file at this path.
    Redb(PathBuf),
    /// A `postgres://user:pass@host:port/db` URL (`?sslmode=require` for
    /// TLS).
    Postgres(String),
}

/// Calls the same operation on whichever engine the store has.
macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match &$self.engine {
            Engine::Redb($s) => $call,
            Engine::Postgres($s) => $call,
        }
    };
}

impl Store {
    /// Opens (or creates) the redb store at `path`. A file written by an
    /// unknown schema version, or one redb finds damaged, is refused with a
    /// message saying so, and is not modified. It reads the header and the
    /// schema version, not the records, so it takes as long whatever the
    /// history: [`verify_file`] is the full check.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, 64 << 20)
    }

    /// [`Store::open`] with a page cache of `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        let announce = Announcer::default();
        let engine = redb::RedbStore::open_with_cache(path, cache_bytes, announce.clone())?;
        Ok(Self {
            engine: Engine::Redb(engine),
            announce,
        })
    }

    /// Connects to the PostgreSQL database at `url` (a
    /// `postgres://user:pass@host:port/db` URL; TLS with
    /// `sslmode=require`) and migrates its schema. A database migrated by a
    /// newer callisto is refused untouched.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let announce = Announcer::default();
        let engine = postgres::PgStore::connect(url, announce.clone()).await?;
        Ok(Self {
            engine: Engine::Postgres(engine),
            announce,
        })
    }

    /// Copies the redb store at `path` (no gateway may have it open) and
    /// the installed `plugins` into the empty PostgreSQL database at `url`,
    /// migrating its schema first: the way from one gateway to several.
    pub async fn copy_to_postgres(
        path: &Path,
        url: &str,
        plugins: &[(String, Vec<u8>)],
    ) -> Result<Imported, StoreError> {
        let source = redb::Export::open(path)?;
        let target = postgres::PgStore::connect(url, Announcer::default()).await?;
        target.import(&source, plugins).await
    }

    /// Opens the store at `location`: the redb file (off the runtime's
    /// workers, with a page cache of `cache_bytes`), or the PostgreSQL
    /// database.
    pub async fn open_at(location: &Location, cache_bytes: usize) -> Result<Self, StoreError> {
        match location {
            Location::Redb(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || Self::open_with_cache(&path, cache_bytes))
                    .await
                    .expect("opening the store does not panic")
            }
            Location::Postgres(url) => Self::connect(url).await,
        }
    }

    /// Where the store is, for the log and messages (a URL without its
    /// password).
    pub fn describe(&self) -> String {
        match &self.engine {
            Engine::Redb(s) => s.path().display().to_string(),
            Engine::Postgres(s) => s.describe(),
        }
    }

    /// Receives an announcement each time events were appended.
    /// Whether the store takes work now: redb is not recovering from a
    /// storage failure, PostgreSQL answers within two seconds. What
    /// `/readyz` reports, so a load balancer steers ingest elsewhere.
    pub async fn check(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.check().await)
    }

    pub fn subscribe_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.announce.subscribe_events()
    }

    /// Receives every delivery that becomes due.
    pub fn subscribe_due(&self) -> tokio::sync::mpsc::UnboundedReceiver<Due> {
        self.announce.subscribe_due()
    }

    // The log.

    /// Appends what one ingest request's notifications make, de-duplicated
    /// by their keys; returns once it is durable.
    pub async fn record_notifications(
        &self,
        notifications: Vec<Notification>,
    ) -> Result<Recorded, StoreError> {
        dispatch!(self, s => s.record_notifications(notifications).await)
    }

    /// Applies what a poll of `repository_id` found to its known tags and
    /// its poll status, appending the events it makes, in one durable
    /// transaction. Returns how many events it appended.
    pub async fn apply_poll(
        &self,
        repository_id: &str,
        listed: HashSet<String>,
        observed: BTreeMap<String, String>,
        duration_ms: u64,
    ) -> Result<usize, StoreError> {
        dispatch!(self, s => s.apply_poll(repository_id, listed, observed, duration_ms).await)
    }

    /// Claims the next poll of a remote repository for `lease`: claimed if
    /// its next poll is due (or `now`, a poll asked for) and no other
    /// gateway on the same database is polling it; recording the poll
    /// (`apply_poll`, `record_poll_failure`) ends the claim. On redb (one
    /// process) a poll is always claimed.
    pub async fn claim_poll(
        &self,
        repository_id: &str,
        lease: std::time::Duration,
        now: bool,
    ) -> Result<PollClaim, StoreError> {
        match &self.engine {
            Engine::Redb(_) => Ok(PollClaim::Claimed),
            Engine::Postgres(s) => s.claim_poll(repository_id, lease, now).await,
        }
    }

    /// Keeps an installed plugin where every gateway on the database finds
    /// it (PostgreSQL). On redb, the single gateway's plugin directory is
    /// where installed plugins are kept, and this does nothing.
    pub async fn save_plugin(&self, name: &str, wasm: &[u8]) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Redb(_) => Ok(()),
            Engine::Postgres(s) => s.save_plugin(name, wasm).await,
        }
    }

    pub async fn remove_plugin(&self, name: &str) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Redb(_) => Ok(()),
            Engine::Postgres(s) => s.remove_plugin(name).await,
        }
    }

    /// The installed plugins the store keeps, by name with their SHA-256;
    /// `None` when it keeps none (redb: the plugin directory does).
    pub async fn stored_plugins(&self) -> Result<Option<Vec<(String, String)>>, StoreError> {
        match &self.engine {
            Engine::Redb(_) => Ok(None),
            Engine::Postgres(s) => s.stored_plugins().await.map(Some),
        }
    }

    pub async fn plugin_wasm(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.engine {
            Engine::Redb(_) => Ok(None),
            Engine::Postgres(s) => s.plugin_wasm(name).await,
        }
    }

    /// Ticks when another gateway installed, replaced or removed a plugin.
    pub fn subscribe_plugins(&self) -> tokio::sync::watch::Receiver<u64> {
        self.announce.subscribe_plugins()
    }

    /// Takes or renews the lease on planning fan-out. Of several gateways on
    /// one database one plans at a time, so plugins run once per event
    /// rather than once per gateway; another takes over within a lease of
    /// the planner dying. (Correctness does not rest on it: planning is
    /// also refused when the cursor moved, and each (event, webhook) is
    /// unique.) On redb this gateway always leads.
    pub async fn lead_fanout(&self, lease: std::time::Duration) -> Result<Leadership, StoreError> {
        match &self.engine {
            Engine::Redb(_) => Ok(Leadership::Leading),
            Engine::Postgres(s) => s.lead_fanout(lease).await,
        }
    }

    /// Extends this gateway's poll lease while a long poll runs, so that
    /// the lease can be short: a dead gateway's polls move to another
    /// within a lease, however long polls take.
    pub async fn renew_poll_lease(
        &self,
        repository_id: &str,
        lease: std::time::Duration,
    ) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Redb(_) => Ok(()),
            Engine::Postgres(s) => s.renew_poll_lease(repository_id, lease).await,
        }
    }

    /// Records that a poll failed, and when the next is due.
    pub async fn record_poll_failure(
        &self,
        repository_id: &str,
        error: String,
        duration_ms: u64,
        next_poll_at: Timestamp,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.record_poll_failure(repository_id, error, duration_ms, next_poll_at).await)
    }

    pub async fn event(&self, id: &str) -> Result<Option<Event>, StoreError> {
        dispatch!(self, s => s.event(id).await)
    }

    /// Events matching `filter`, newest first, and whether more remain.
    pub async fn events(&self, filter: &EventFilter) -> Result<(Vec<Event>, bool), StoreError> {
        dispatch!(self, s => s.events(filter).await)
    }

    /// The events of the repository of event `since`, from it on, in order
    /// (a replay). `NotFound` if there is no such event.
    pub async fn events_from(&self, since: &str) -> Result<Vec<Event>, StoreError> {
        dispatch!(self, s => s.events_from(since).await)
    }

    // Fan-out.

    /// Up to `limit` events past the fan-out cursor.
    pub async fn next_to_plan(&self, limit: usize) -> Result<PlanBatch, StoreError> {
        dispatch!(self, s => s.next_to_plan(limit).await)
    }

    /// Creates the deliveries a batch made, folds the gathering deliveries
    /// they replace, and moves the fan-out cursor past the batch, in one
    /// transaction. Refused (`Conflict`) if the cursor is no longer
    /// `cursor`, or a delivery to fold stopped gathering.
    pub async fn plan_deliveries(
        &self,
        cursor: u64,
        last: u64,
        planned: Vec<Delivery>,
        folds: Vec<Fold>,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.plan_deliveries(cursor, last, planned, folds).await)
    }

    /// The newest delivery of `webhook_id` still gathering a burst and due
    /// after `after`, if any (a coalescing window).
    pub async fn gathering(
        &self,
        webhook_id: &str,
        after: Timestamp,
    ) -> Result<Option<Gathering>, StoreError> {
        dispatch!(self, s => s.gathering(webhook_id, after).await)
    }

    /// Adds deliveries for a webhook outside fan-out (a replay, durably).
    pub async fn add_deliveries(
        &self,
        webhook_id: &str,
        added: Vec<Delivery>,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.add_deliveries(webhook_id, added).await)
    }

    // Sending.

    /// Every webhook with pending deliveries, and when its earliest is due
    /// (Unix ms).
    pub async fn webhooks_with_due(&self) -> Result<Vec<(String, u64)>, StoreError> {
        dispatch!(self, s => s.webhooks_with_due().await)
    }

    /// Up to `limit` pending deliveries of `webhook_id`, earliest first.
    pub async fn due_deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        dispatch!(self, s => s.due_deliveries(webhook_id, limit).await)
    }

    /// Claims up to `limit` of `webhook_id`'s deliveries that are due now,
    /// earliest first, for `lease`: until the lease expires or an attempt is
    /// recorded, no other gateway on the same database claims them (a
    /// gateway that dies mid-attempt loses its claims when their leases
    /// expire). On redb (one process) nothing is leased: the claim is what
    /// is due. Deliveries in `except` (what the caller is sending already)
    /// are neither claimed nor counted in when the next is due.
    pub async fn claim_due(
        &self,
        webhook_id: &str,
        limit: usize,
        lease: std::time::Duration,
        except: &HashSet<String>,
    ) -> Result<Claim, StoreError> {
        dispatch!(self, s => s.claim_due(webhook_id, limit, lease, except).await)
    }

    /// Whether a claim holds other gateways off for a lease (PostgreSQL)
    /// rather than costing nothing (redb, one process). The sender claims
    /// ahead of its free slots only when it costs nothing: a leased claim
    /// kept waiting in one gateway's queue is one no other gateway may
    /// send, and its lease could run out before its turn comes.
    pub fn claims_are_leased(&self) -> bool {
        matches!(self.engine, Engine::Postgres(_))
    }

    /// Claims the oldest pending delivery of `webhook_id` (ids sort by
    /// creation) for `lease`, if it is due and not in `except`, for a FIFO
    /// webhook: nothing else of it may go before it. `next_ms` says when it
    /// is due (or its lease ends) when it is not claimed now; `None` when
    /// the webhook has nothing pending or its oldest is in `except`.
    pub async fn claim_oldest(
        &self,
        webhook_id: &str,
        lease: std::time::Duration,
        except: &HashSet<String>,
    ) -> Result<Claim, StoreError> {
        dispatch!(self, s => s.claim_oldest(webhook_id, lease, except).await)
    }

    /// How many deliveries are pending.
    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        dispatch!(self, s => s.pending_count().await)
    }

    /// A delivery and its webhook, read together, for an attempt.
    pub async fn delivery_to_send(
        &self,
        id: &str,
        webhook_id: &str,
    ) -> Result<Option<(Delivery, Webhook)>, StoreError> {
        dispatch!(self, s => s.delivery_to_send(id, webhook_id).await)
    }

    /// Records an attempt and moves its delivery on; with `health`, applies
    /// the attempt to its webhook's failing streak in the same write
    /// ([`Webhook::note_attempt`], which may disable it). Returns the
    /// delivery as it now is, or `None` if it was deleted meanwhile.
    pub async fn record_attempt(
        &self,
        id: &str,
        attempt: Attempt,
        next: Next,
        health: Option<HealthUpdate>,
    ) -> Result<Option<Delivery>, StoreError> {
        dispatch!(self, s => s.record_attempt(id, attempt, next, health).await)
    }

    /// Keeps a Test Webhook of a saved webhook in its history.
    pub async fn record_test(
        &self,
        delivery: Delivery,
        attempt: Option<Attempt>,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.record_test(delivery, attempt).await)
    }

    /// Makes a delivery pending again, due now, keeping its id.
    pub async fn redeliver(&self, id: &str) -> Result<Delivery, StoreError> {
        dispatch!(self, s => s.redeliver(id).await)
    }

    /// Makes every delivery of `webhook_id` that failed or died since
    /// `since` pending again, due now, keeping their ids (a bulk retry);
    /// with `dry_run`, only counts them. Deliveries whose plugin failed and
    /// tests are left alone. `NotFound` if the webhook does not exist.
    pub async fn retry_failed(
        &self,
        webhook_id: &str,
        since: Timestamp,
        dry_run: bool,
    ) -> Result<usize, StoreError> {
        dispatch!(self, s => s.retry_failed(webhook_id, since, dry_run).await)
    }

    pub async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        dispatch!(self, s => s.delivery(id).await)
    }

    /// A delivery's attempts, in order.
    pub async fn attempts(&self, delivery_id: &str) -> Result<Vec<Attempt>, StoreError> {
        dispatch!(self, s => s.attempts(delivery_id).await)
    }

    /// An event's deliveries, oldest first.
    pub async fn deliveries_of_event(&self, event_id: &str) -> Result<Vec<Delivery>, StoreError> {
        dispatch!(self, s => s.deliveries_of_event(event_id).await)
    }

    /// A webhook's deliveries, newest first, optionally in one state, before
    /// a cursor (a delivery id); and whether more remain. `NotFound` if the
    /// webhook does not exist.
    pub async fn deliveries_of_webhook(
        &self,
        webhook_id: &str,
        state: Option<DeliveryState>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Delivery>, bool), StoreError> {
        dispatch!(self, s => s.deliveries_of_webhook(webhook_id, state, before, limit).await)
    }

    // Repositories and webhooks.

    /// Creates a repository with its webhooks. `Conflict` if one of the same
    /// kind, name and registry exists.
    pub async fn create_repository(
        &self,
        repo: Repository,
        webhooks: Vec<Webhook>,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.create_repository(repo, webhooks).await)
    }

    /// Replaces a repository's settings, keeping the poll status the poller
    /// wrote meanwhile. Returns it as stored.
    pub async fn update_repository(&self, repo: Repository) -> Result<Repository, StoreError> {
        dispatch!(self, s => s.update_repository(repo).await)
    }

    /// Deletes a repository, its webhooks (their pending deliveries end) and
    /// its known tags; its events stay in the log.
    pub async fn delete_repository(&self, id: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.delete_repository(id).await)
    }

    pub async fn repository(&self, id: &str) -> Result<Option<Repository>, StoreError> {
        dispatch!(self, s => s.repository(id).await)
    }

    /// Every repository, in creation order.
    pub async fn repositories(&self) -> Result<Vec<Repository>, StoreError> {
        dispatch!(self, s => s.repositories().await)
    }

    /// A repository's known tags, by tag.
    pub async fn tags(&self, repository_id: &str) -> Result<Vec<(String, KnownTag)>, StoreError> {
        dispatch!(self, s => s.tags(repository_id).await)
    }

    /// Adds a webhook to its repository. `NotFound` if the repository is
    /// gone.
    pub async fn create_webhook(&self, webhook: Webhook) -> Result<(), StoreError> {
        dispatch!(self, s => s.create_webhook(webhook).await)
    }

    /// Replaces a webhook. Enabling a disabled one makes its pending
    /// deliveries due again.
    pub async fn update_webhook(&self, webhook: Webhook) -> Result<(), StoreError> {
        dispatch!(self, s => s.update_webhook(webhook).await)
    }

    /// Deletes a webhook; its pending deliveries end as `failed`.
    pub async fn delete_webhook(&self, id: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.delete_webhook(id).await)
    }

    pub async fn webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError> {
        dispatch!(self, s => s.webhook(id).await)
    }

    /// A repository's webhooks, in creation order. `NotFound` if the
    /// repository does not exist.
    pub async fn webhooks_of(&self, repository_id: &str) -> Result<Vec<Webhook>, StoreError> {
        dispatch!(self, s => s.webhooks_of(repository_id).await)
    }

    /// Every webhook.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        dispatch!(self, s => s.webhooks().await)
    }

    /// The id of the key the store's secrets are sealed with, once one was
    /// recorded (`seal::Sealer::key_id`).
    pub async fn sealing_key_id(&self) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.sealing_key_id().await)
    }

    /// Records the id of the key the store's secrets are sealed with.
    pub async fn set_sealing_key_id(&self, id: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_sealing_key_id(id).await)
    }

    // Housekeeping.

    /// Deletes up to `batch` events and `batch` finished deliveries created
    /// before `cutoff`, but the deliveries of the webhooks in `own`, which
    /// have a retention of their own ([`Store::prune_webhook`]).
    pub async fn prune(
        &self,
        cutoff: Timestamp,
        batch: usize,
        own: &HashSet<String>,
    ) -> Result<Pruned, StoreError> {
        dispatch!(self, s => s.prune(cutoff, batch, own).await)
    }

    /// Deletes up to `batch` finished deliveries of `webhook_id` created
    /// before `cutoff` (its own retention); returns how many.
    pub async fn prune_webhook(
        &self,
        webhook_id: &str,
        cutoff: Timestamp,
        batch: usize,
    ) -> Result<usize, StoreError> {
        dispatch!(self, s => s.prune_webhook(webhook_id, cutoff, batch).await)
    }

    /// Writes a consistent copy of the store, as it is now, to a new file at
    /// `dest` (refused if it exists).
    /// Only the redb store: a PostgreSQL database is backed up with its own
    /// tools (`pg_dump`).
    pub async fn backup_to(&self, dest: &Path) -> Result<Backup, StoreError> {
        match &self.engine {
            Engine::Redb(s) => s.backup_to(dest).await,
            Engine::Postgres(_) => Err(StoreError::Conflict(
                "the store is in PostgreSQL: back it up with pg_dump".into(),
            )),
        }
    }
}
