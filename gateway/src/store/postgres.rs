//! The PostgreSQL engine: the same operations as redb's, one transaction
//! each, through a pool of connections (tokio-postgres and deadpool; rustls
//! when the URL asks for `sslmode=require`).
//!
//! Records are the same MessagePack bytes as in redb (`records`), beside
//! the columns the indexes and constraints need. The schema is migrated at
//! start (`migrations/`, embedded), under an advisory lock; a database of a
//! newer schema than this binary knows is refused untouched.
//!
//! Appends to the log hold the log's advisory lock until they commit, so
//! that sequence numbers are committed in order and de-duplication sees
//! every earlier append. Due deliveries are claimed with a lease
//! (`claim_due`), so that each is sent by one gateway at a time. Commits
//! that append events or make deliveries due notify the other gateways
//! (`listen`). A remote repository is polled by one gateway at a time
//! (`claim_poll`, a lease on its row). See docs/scaling.md for what
//! several gateways on one database still lack.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres::{IsolationLevel, NoTls};

use cached::Transaction;
use futures_util::future::try_join_all;

use super::StoreError;
use super::announce::{Announcer, Due};
use super::records::{StoredEvent, StoredEventRef, decode, encode};
use super::types::{
    Claim, DueDelivery, EventFilter, Fold, Gathering, HealthUpdate, Leadership, Next, PlanBatch,
    PollClaim, Pruned,
};
use crate::changes::{self, Notification, Recorded, TagBook, TagChange};
use crate::event::{Event, Timestamp};
use crate::records::{
    Attempt, Delivery, DeliveryKind, DeliveryState, KnownTag, Repository, Webhook,
};

mod cached;
mod import;
pub use import::Imported;
mod listen;

/// The schema's migrations, in order: version N is the first N applied.
const MIGRATIONS: &[&str] = &[
    include_str!("postgres/migrations/0001_initial.sql"),
    include_str!("postgres/migrations/0002_claims.sql"),
    include_str!("postgres/migrations/0003_poll_leases.sql"),
    include_str!("postgres/migrations/0004_plugins.sql"),
    include_str!("postgres/migrations/0005_delivery_ops.sql"),
    include_str!("postgres/migrations/0006_claims.sql"),
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Advisory lock keys (arbitrary, fixed): migrating; appending to the log;
/// creating repositories.
const MIGRATE_LOCK: i64 = 0x6361_6c6c_0001;
const LOG_LOCK: i64 = 0x6361_6c6c_0002;
const REPOSITORIES_LOCK: i64 = 0x6361_6c6c_0003;
/// Held while retention prunes: one gateway of several prunes at a time.
const PRUNE_LOCK: i64 = 0x6361_6c6c_0004;

/// Connections kept open at most.
const POOL_SIZE: usize = 16;

/// Ingest requests committed in one transaction at most.
const INGEST_BATCH: usize = 256;

type IngestJob = (
    Vec<Notification>,
    tokio::sync::oneshot::Sender<Result<Recorded, StoreError>>,
);

/// Attempts recorded in one transaction at most.
const ATTEMPT_BATCH: usize = 64;

/// An attempt to record, and where to answer.
struct AttemptJob {
    id: String,
    attempt: Attempt,
    next: Next,
    health: Option<HealthUpdate>,
    answer: tokio::sync::oneshot::Sender<Result<Option<Delivery>, StoreError>>,
}

/// A PostgreSQL database holding the gateway's store. Cheap to clone.
#[derive(Clone)]
pub(super) struct PgStore {
    pool: Pool,
    /// The URL without its password, for messages.
    shown: Arc<str>,
    announce: Announcer,
    /// Names this store in its notifications, so that it skips its own.
    instance: Arc<str>,
    /// To the ingest committer (see [`PgStore::record_notifications`]); it
    /// stops when the last clone goes.
    ingest: tokio::sync::mpsc::UnboundedSender<IngestJob>,
    /// To the attempt committer (see [`PgStore::record_attempt`]).
    attempts: tokio::sync::mpsc::UnboundedSender<AttemptJob>,
    _listener: Arc<Listener>,
}

/// The task listening for other gateways' commits; it ends with the store.
struct Listener(tokio::task::JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Turns a driver error into a [`StoreError`] that says what was being done.
trait Doing<T> {
    fn doing(self, what: &'static str) -> Result<T, StoreError>;
}

impl<T> Doing<T> for Result<T, tokio_postgres::Error> {
    fn doing(self, what: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Postgres {
            doing: what,
            reason: reason(&e),
        })
    }
}

fn reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres { reason, .. } if reason.contains("SQLSTATE 23505"))
}

/// `url` without its password.
/// The URL without its password, for the log and messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(an unparsable postgres URL)".to_owned(),
    }
}

fn ms(t: Timestamp) -> i64 {
    t.unix_millis().max(0)
}

fn nanos(t: Timestamp) -> i64 {
    t.unix_nanos().clamp(0, i128::from(i64::MAX)) as i64
}

/// The creation time of a record from its ULID id (`evt_...`, `dlv_...`).
fn created_ms(id: &str) -> i64 {
    id.split_once('_')
        .and_then(|(_, u)| ulid::Ulid::from_string(u).ok())
        .map_or(0, |u| u.timestamp_ms() as i64)
}

fn state_str(state: DeliveryState) -> &'static str {
    state.as_str()
}

fn kind_str(kind: DeliveryKind) -> &'static str {
    match kind {
        DeliveryKind::Event => "event",
        DeliveryKind::Test => "test",
    }
}

impl PgStore {
    /// Connects to the database at `url`, migrates its schema, and keeps a
    /// pool of connections to it.
    pub async fn connect(url: &str, announce: Announcer) -> Result<Self, StoreError> {
        let shown: Arc<str> = redact(url).into();
        let connect_err = {
            let url = shown.to_string();
            move |reason: String| StoreError::Connect {
                url: url.clone(),
                reason,
            }
        };
        let config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            connect_err(format!("not a PostgreSQL URL: {e}"))
        })?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let tls = config.get_ssl_mode() == SslMode::Require;
        let manager = if tls {
            Manager::from_config(config.clone(), tls_connector(), manager_config)
        } else {
            Manager::from_config(config.clone(), NoTls, manager_config)
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| connect_err(e.to_string()))?;
        let mut conn = pool.get().await.map_err(|e| connect_err(pool_reason(e)))?;
        migrate(&mut conn, &shown).await?;
        drop(conn);
        let instance: Arc<str> = ulid::Ulid::new().to_string().into();
        let (pool2, announce2, instance2) = (pool.clone(), announce.clone(), instance.to_string());
        let listener = if tls {
            listen::spawn(config, tls_connector(), pool2, announce2, instance2).await
        } else {
            listen::spawn(config, NoTls, pool2, announce2, instance2).await
        }
        .map_err(|reason| {
            connect_err(format!(
                "cannot listen for other gateways' commits: {reason}"
            ))
        })?;
        let (ingest, jobs) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(
            IngestCommitter {
                pool: pool.clone(),
                announce: announce.clone(),
                instance: instance.clone(),
            }
            .run(jobs),
        );
        let (attempts, jobs) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(
            AttemptCommitter {
                pool: pool.clone(),
                announce: announce.clone(),
                instance: instance.clone(),
            }
            .run(jobs),
        );
        Ok(Self {
            pool,
            shown,
            announce,
            instance,
            ingest,
            attempts,
            _listener: Arc::new(Listener(listener)),
        })
    }

    pub fn describe(&self) -> String {
        self.shown.to_string()
    }

    pub async fn check(&self) -> Result<(), StoreError> {
        let ping = async {
            self.conn()
                .await?
                .simple_query("SELECT 1")
                .await
                .doing("checking the database answers")
                .map(|_| ())
        };
        tokio::time::timeout(Duration::from_secs(2), ping)
            .await
            .unwrap_or(Err(StoreError::Postgres {
                doing: "checking the database answers",
                reason: "no answer in 2 s".into(),
            }))
    }

    async fn conn(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Postgres {
            doing: "taking a connection from the pool",
            reason: pool_reason(e),
        })
    }

    // The log.

    /// Appends what `notifications` make, de-duplicated, answered once
    /// committed. Concurrent calls are group-committed: one transaction
    /// (one hold of the log's lock, one WAL flush) for every request that
    /// arrived while the previous transaction ran, as redb's batcher does.
    pub async fn record_notifications(
        &self,
        notifications: Vec<Notification>,
    ) -> Result<Recorded, StoreError> {
        if notifications.is_empty() {
            return Ok(Recorded::default());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.ingest
            .send((notifications, tx))
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    pub async fn apply_poll(
        &self,
        repository_id: &str,
        listed: HashSet<String>,
        observed: BTreeMap<String, String>,
        duration_ms: u64,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        lock(&txn, LOG_LOCK).await?;
        let Some(mut repo) = repository(&txn, repository_id, true).await? else {
            return Ok(0);
        };
        let silent = repo.poll_is_silent();
        let now = Timestamp::now();
        let mut book = MemBook::load(&txn, repository_id).await?;
        let events = changes::from_poll(
            &mut book,
            &repo.reference(),
            &listed,
            &observed,
            silent,
            now,
        )?;
        for e in &events {
            append(&txn, e, None).await?;
        }
        book.flush(&txn).await?;
        repo.polled(now, duration_ms);
        put_repository(&txn, &repo).await?;
        end_poll_lease(&txn, repository_id).await?;
        if !events.is_empty() {
            listen::events_appended(&txn, &self.instance).await?;
        }
        txn.commit().await.doing("committing a poll")?;
        if !events.is_empty() {
            self.announce.events_appended();
        }
        Ok(events.len())
    }

    /// Claims a poll with the repository's row locked: refused while
    /// another gateway's lease runs, or (unless `now`) before the next poll
    /// is due.
    pub async fn claim_poll(
        &self,
        repository_id: &str,
        lease: Duration,
        now: bool,
    ) -> Result<PollClaim, StoreError> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        let Some(row) = txn
            .query_opt(
                "SELECT record, poll_lease_until,
                        (extract(epoch FROM clock_timestamp()) * 1000)::bigint
                 FROM repositories WHERE id = $1 FOR UPDATE",
                &[&repository_id],
            )
            .await
            .doing("reading a repository's poll lease")?
        else {
            return Ok(PollClaim::Gone);
        };
        let repo: Repository = decode("repositories", row.get(0))?;
        let leased: Option<i64> = row.get(1);
        let clock: i64 = row.get(2);
        if let Some(until) = leased.filter(|until| *until > clock) {
            return Ok(PollClaim::NotYet {
                until: Timestamp::from_unix_millis(until),
            });
        }
        if !now
            && let Some(next) = repo.poll.next_poll_at
            && next > Timestamp::now()
        {
            return Ok(PollClaim::NotYet { until: next });
        }
        txn.execute(
            "UPDATE repositories SET poll_lease_until = $2 WHERE id = $1",
            &[&repository_id, &clock.saturating_add(lease_ms)],
        )
        .await
        .doing("taking a repository's poll lease")?;
        txn.commit().await.doing("committing a poll lease")?;
        Ok(PollClaim::Claimed)
    }

    pub async fn renew_poll_lease(
        &self,
        repository_id: &str,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self.conn()
            .await?
            .execute(
                "UPDATE repositories SET poll_lease_until =
                    (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $2
                 WHERE id = $1 AND poll_lease_until IS NOT NULL",
                &[&repository_id, &lease_ms],
            )
            .await
            .doing("renewing a repository's poll lease")?;
        Ok(())
    }

    pub async fn record_poll_failure(
        &self,
        repository_id: &str,
        error: String,
        duration_ms: u64,
        next_poll_at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        let Some(mut repo) = repository(&txn, repository_id, true).await? else {
            return Ok(());
        };
        repo.poll_failed(error, duration_ms, next_poll_at);
        put_repository(&txn, &repo).await?;
        end_poll_lease(&txn, repository_id).await?;
        txn.commit().await.doing("committing a poll failure")
    }

    pub async fn event(&self, id: &str) -> Result<Option<Event>, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt("SELECT record FROM events WHERE id = $1", &[&id])
            .await
            .doing("reading an event")?;
        row.map(|r| decode_event(r.get(0))).transpose()
    }

    pub async fn events(&self, filter: &EventFilter) -> Result<(Vec<Event>, bool), StoreError> {
        let conn = self.conn().await?;
        let upper: i64 = match &filter.before {
            Some(id) => conn
                .query_opt("SELECT seq FROM events WHERE id = $1", &[id])
                .await
                .doing("reading an event")?
                .map(|r| r.get(0))
                .ok_or_else(|| StoreError::not_found("event", id))?,
            None => i64::MAX,
        };
        let kind = filter.kind.map(|k| k.as_str());
        let since = filter.since.map(nanos);
        let until = filter.until.map(nanos);
        let rows = conn
            .query(
                "SELECT record FROM events
                 WHERE seq < $1
                   AND ($2::text IS NULL OR repository_id = $2)
                   AND ($3::text IS NULL OR kind = $3)
                   AND ($4::bigint IS NULL OR occurred_at_ns >= $4)
                   AND ($5::bigint IS NULL OR occurred_at_ns <= $5)
                 ORDER BY seq DESC LIMIT $6",
                &[
                    &upper,
                    &filter.repository_id,
                    &kind,
                    &since,
                    &until,
                    &(filter.limit as i64 + 1),
                ],
            )
            .await
            .doing("listing events")?;
        let mut out = rows
            .iter()
            .map(|r| decode_event(r.get(0)))
            .collect::<Result<Vec<_>, _>>()?;
        let more = out.len() > filter.limit;
        out.truncate(filter.limit);
        Ok((out, more))
    }

    pub async fn events_from(&self, since: &str) -> Result<Vec<Event>, StoreError> {
        let conn = self.conn().await?;
        let first = conn
            .query_opt(
                "SELECT seq, repository_id FROM events WHERE id = $1",
                &[&since],
            )
            .await
            .doing("reading an event")?
            .ok_or_else(|| StoreError::not_found("event", since))?;
        let (seq, repository_id): (i64, String) = (first.get(0), first.get(1));
        let rows = conn
            .query(
                "SELECT record FROM events WHERE repository_id = $1 AND seq >= $2 ORDER BY seq",
                &[&repository_id, &seq],
            )
            .await
            .doing("reading a repository's events")?;
        rows.iter().map(|r| decode_event(r.get(0))).collect()
    }

    // Fan-out.

    pub async fn next_to_plan(&self, limit: usize) -> Result<PlanBatch, StoreError> {
        let mut conn = self.conn().await?;
        let txn = read_only(&mut conn).await?;
        let cursor = fanout_cursor(&txn, false).await?;
        let rows = txn
            .query(
                "SELECT seq, record FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&(cursor as i64), &(limit as i64)],
            )
            .await
            .doing("reading the events to fan out")?;
        let mut last = cursor;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            last = row.get::<_, i64>(0) as u64;
            events.push(decode_event(row.get(1))?);
        }
        let mut webhooks: HashMap<String, Vec<Webhook>> = HashMap::new();
        for event in &events {
            if !webhooks.contains_key(&event.repository.id) {
                let enabled = webhooks_of(&txn, &event.repository.id)
                    .await?
                    .into_iter()
                    .filter(|w| w.enabled)
                    .collect();
                webhooks.insert(event.repository.id.clone(), enabled);
            }
        }
        txn.commit().await.doing("ending a read")?;
        Ok(PlanBatch {
            cursor,
            last,
            events,
            webhooks,
        })
    }

    pub async fn plan_deliveries(
        &self,
        cursor: u64,
        last: u64,
        planned: Vec<Delivery>,
        folds: Vec<Fold>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        // The cursor's row stays locked until commit: a concurrent planner
        // waits, then sees the cursor moved and is refused.
        let now = fanout_cursor(&txn, true).await?;
        if now != cursor {
            return Err(StoreError::Conflict(format!(
                "fan-out cursor moved from {cursor} to {now} during a batch"
            )));
        }
        for fold in &folds {
            fold_delivery(&txn, fold).await?;
        }
        // Pipelined: a batch's inserts go out together, one round trip.
        let writer = &txn;
        try_join_all(planned.iter().map(|delivery| async move {
            match create_delivery(writer, delivery, true).await {
                Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                    "event {} was already planned for webhook {}",
                    delivery.event_id, delivery.webhook_id
                ))),
                other => other,
            }
        }))
        .await?;
        txn.execute(
            "UPDATE meta SET value = $1 WHERE key = 'fanout_cursor'",
            &[&last.to_string()],
        )
        .await
        .doing("moving the fan-out cursor")?;
        let due = crate::store::due_of(&planned);
        listen::due(&txn, &self.instance, &due).await?;
        txn.commit().await.doing("committing planned deliveries")?;
        self.announce.due(due);
        Ok(())
    }

    pub async fn gathering(
        &self,
        webhook_id: &str,
        after: Timestamp,
    ) -> Result<Option<Gathering>, StoreError> {
        let conn = self.conn().await?;
        // Normally the latest due; a retry due later may hide it, so a
        // few are looked at.
        let rows = conn
            .query(
                "SELECT d.record FROM claims c JOIN deliveries d ON d.id = c.delivery_id
                 WHERE c.webhook_id = $1 AND c.due_ms > $2 AND c.lease_until IS NULL
                   AND d.kind = 'event'
                 ORDER BY c.due_ms DESC, c.delivery_id DESC LIMIT 8",
                &[&webhook_id, &ms(after)],
            )
            .await
            .doing("reading a webhook's gathering delivery")?;
        for row in rows {
            let d: Delivery = decode("deliveries", row.get(0))?;
            if let Some(gathering) = super::gathering_of(d, after) {
                return Ok(Some(gathering));
            }
        }
        Ok(None)
    }

    // Installed plugins.

    pub async fn save_plugin(&self, name: &str, wasm: &[u8]) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        insert_plugin(&txn, name, wasm).await?;
        listen::plugins_changed(&txn, &self.instance).await?;
        txn.commit().await.doing("committing a plugin")?;
        Ok(())
    }

    pub async fn remove_plugin(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        txn.execute("DELETE FROM plugins WHERE name = $1", &[&name])
            .await
            .doing("removing a plugin")?;
        listen::plugins_changed(&txn, &self.instance).await?;
        txn.commit().await.doing("committing a plugin's removal")?;
        Ok(())
    }

    pub async fn stored_plugins(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .conn()
            .await?
            .query("SELECT name, sha256 FROM plugins ORDER BY name", &[])
            .await
            .doing("listing the plugins")?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn plugin_wasm(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self
            .conn()
            .await?
            .query_opt("SELECT wasm FROM plugins WHERE name = $1", &[&name])
            .await
            .doing("reading a plugin")?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn lead_fanout(&self, lease: Duration) -> Result<Leadership, StoreError> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let conn = self.conn().await?;
        // `meta.value` is `<instance> <lease end, Unix ms>`.
        let row = conn
            .query_one(
                "WITH clock AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms),
                 taken AS (
                    INSERT INTO meta (key, value)
                    SELECT 'fanout_leader', $1 || ' ' || (ms + $2) FROM clock
                    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
                    WHERE split_part(meta.value, ' ', 1) = $1
                       OR split_part(meta.value, ' ', 2)::bigint <= (SELECT ms FROM clock)
                    RETURNING 1)
                 SELECT EXISTS (SELECT 1 FROM taken),
                        (SELECT split_part(value, ' ', 2)::bigint FROM meta WHERE key = 'fanout_leader')",
                &[&&*self.instance, &lease_ms],
            )
            .await
            .doing("taking the fan-out lease")?;
        if row.get::<_, bool>(0) {
            Ok(Leadership::Leading)
        } else {
            let until: Option<i64> = row.get(1);
            Ok(Leadership::Following {
                until: Timestamp::from_unix_millis(until.unwrap_or(0)),
            })
        }
    }

    pub async fn add_deliveries(
        &self,
        webhook_id: &str,
        added: Vec<Delivery>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        if webhook(&txn, webhook_id).await?.is_none() {
            return Err(StoreError::not_found("webhook", webhook_id));
        }
        for d in &added {
            create_delivery(&txn, d, false).await?;
        }
        let due = crate::store::due_of(&added);
        listen::due(&txn, &self.instance, &due).await?;
        txn.commit().await.doing("committing deliveries")?;
        self.announce.due(due);
        Ok(())
    }

    // Sending.

    pub async fn webhooks_with_due(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT webhook_id, min(due_ms) FROM claims GROUP BY webhook_id ORDER BY webhook_id",
                &[],
            )
            .await
            .doing("reading the webhooks with due deliveries")?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    pub async fn due_deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT due_ms, delivery_id FROM claims WHERE webhook_id = $1
                 ORDER BY due_ms, delivery_id LIMIT $2",
                &[&webhook_id, &(limit.min(i64::MAX as usize) as i64)],
            )
            .await
            .doing("reading due deliveries")?;
        Ok(rows
            .iter()
            .map(|r| DueDelivery {
                due_ms: r.get::<_, i64>(0) as u64,
                id: r.get(1),
            })
            .collect())
    }

    /// Claims due deliveries with a lease: rows another gateway is claiming
    /// right now are skipped (`SKIP LOCKED`), rows it claimed stay skipped
    /// until their lease expires. Leases are on the database's clock.
    pub async fn claim_due(
        &self,
        webhook_id: &str,
        limit: usize,
        lease: Duration,
        except: &HashSet<String>,
    ) -> Result<Claim, StoreError> {
        let now = ms(Timestamp::now());
        let except: Vec<&str> = except.iter().map(String::as_str).collect();
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let limit = limit.min(i64::MAX as usize) as i64;
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        let lazy = lazy_commit(&txn);
        let rows = if limit == 0 {
            lazy.await?;
            Vec::new()
        } else {
            // A claimed delivery's `due_ms` in `claims` moves to its
            // lease's end: it leaves the range later claims scan (they read
            // no delivery in flight), and comes back by itself if its
            // gateway dies. Only the narrow row changes.
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                [&webhook_id, &now, &limit, &lease_ms, &except];
            let claim = txn.query(
                "WITH clock AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now)
                 UPDATE claims c
                 SET lease_until = (SELECT now FROM clock) + $4,
                     due_ms = (SELECT now FROM clock) + $4
                 FROM (
                     SELECT delivery_id, due_ms FROM claims
                     WHERE webhook_id = $1 AND due_ms <= $2 AND NOT (delivery_id = ANY($5))
                     ORDER BY due_ms, delivery_id LIMIT $3
                     FOR UPDATE SKIP LOCKED) due
                 WHERE c.delivery_id = due.delivery_id
                 RETURNING due.due_ms, c.delivery_id",
                &params,
            );
            // Pipelined with the setting.
            let ((), rows) = futures_util::future::try_join(lazy, async {
                claim.await.doing("claiming due deliveries")
            })
            .await?;
            rows
        };
        let mut claimed: Vec<DueDelivery> = rows
            .iter()
            .map(|r| DueDelivery {
                due_ms: r.get::<_, i64>(0) as u64,
                id: r.get(1),
            })
            .collect();
        claimed.sort();
        let mut ids: Vec<&str> = claimed.iter().map(|d| d.id.as_str()).collect();
        ids.extend(except);
        // The earliest due of the rest: a pending one, or another
        // gateway's claim when its lease ends (it may have died).
        let next: Option<i64> = txn
            .query_opt(
                "SELECT due_ms FROM claims WHERE webhook_id = $1 AND NOT (delivery_id = ANY($2))
                 ORDER BY due_ms, delivery_id LIMIT 1",
                &[&webhook_id, &ids],
            )
            .await
            .doing("reading when the next delivery is due")?
            .map(|row| row.get(0));
        txn.commit().await.doing("committing a claim")?;
        Ok(Claim {
            claimed,
            next_ms: next.map(|n| n.max(0) as u64),
        })
    }

    /// Claims the oldest pending delivery of a FIFO webhook if it is due and
    /// no other gateway holds it. It waits for a row another gateway is
    /// claiming rather than skip it: skipping would send a later one first.
    pub async fn claim_oldest(
        &self,
        webhook_id: &str,
        lease: Duration,
        except: &HashSet<String>,
    ) -> Result<Claim, StoreError> {
        let now = ms(Timestamp::now());
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        let head = txn
            .query_opt(
                "SELECT delivery_id, due_ms, coalesce(lease_until, 0),
                        (extract(epoch FROM clock_timestamp()) * 1000)::bigint
                 FROM claims WHERE webhook_id = $1
                 ORDER BY delivery_id LIMIT 1 FOR UPDATE",
                &[&webhook_id],
            )
            .await
            .doing("reading the oldest pending delivery")?;
        let Some(head) = head else {
            txn.commit().await.doing("committing a claim")?;
            return Ok(Claim::default());
        };
        let (id, due_ms, lease_until, clock): (String, i64, i64, i64) =
            (head.get(0), head.get(1), head.get(2), head.get(3));
        let claim = if except.contains(&id) {
            Claim::default()
        } else if due_ms <= now && lease_until <= clock {
            txn.execute(
                "UPDATE claims SET lease_until = $2, due_ms = $2 WHERE delivery_id = $1",
                &[&id, &(clock.saturating_add(lease_ms))],
            )
            .await
            .doing("claiming the oldest pending delivery")?;
            Claim {
                claimed: vec![DueDelivery {
                    due_ms: due_ms.max(0) as u64,
                    id,
                }],
                next_ms: None,
            }
        } else {
            let until = due_ms.max(now + (lease_until - clock).max(0));
            Claim {
                claimed: Vec::new(),
                next_ms: Some(until.max(0) as u64),
            }
        };
        txn.commit().await.doing("committing a claim")?;
        Ok(claim)
    }

    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .query_one("SELECT count(*) FROM claims", &[])
            .await
            .doing("counting pending deliveries")?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    pub async fn delivery_to_send(
        &self,
        id: &str,
        webhook_id: &str,
    ) -> Result<Option<(Delivery, Webhook)>, StoreError> {
        // One statement reads both from one snapshot: no transaction to
        // open and close around two reads, once per attempt.
        let conn = self.conn().await?;
        let statement = conn
            .prepare_cached(
                "SELECT d.record, w.record FROM deliveries d, webhooks w
                 WHERE d.id = $1 AND w.id = $2",
            )
            .await
            .doing("reading a delivery and its webhook")?;
        let Some(row) = conn
            .query_opt(&statement, &[&id, &webhook_id])
            .await
            .doing("reading a delivery and its webhook")?
        else {
            return Ok(None);
        };
        Ok(Some((
            decode("deliveries", row.get(0))?,
            decode("webhooks", row.get(1))?,
        )))
    }

    /// Records an attempt, in a transaction shared with the attempts
    /// other senders finish meanwhile (one commit for many, as ingest).
    pub async fn record_attempt(
        &self,
        id: &str,
        attempt: Attempt,
        next: Next,
        health: Option<HealthUpdate>,
    ) -> Result<Option<Delivery>, StoreError> {
        let (answer, rx) = tokio::sync::oneshot::channel();
        self.attempts
            .send(AttemptJob {
                id: id.to_owned(),
                attempt,
                next,
                health,
                answer,
            })
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    pub async fn record_test(
        &self,
        delivery: Delivery,
        attempt: Option<Attempt>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        create_delivery(&txn, &delivery, false).await?;
        if let Some(attempt) = attempt {
            let next = if attempt.succeeded {
                Next::Succeeded
            } else {
                Next::Failed
            };
            record_attempt(&txn, &delivery.id, &attempt, &next).await?;
        }
        txn.commit().await.doing("committing a test delivery")
    }

    pub async fn redeliver(&self, id: &str) -> Result<Delivery, StoreError> {
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        let mut delivery = delivery(&txn, id, true)
            .await?
            .ok_or_else(|| StoreError::not_found("delivery", id))?;
        if delivery.kind == DeliveryKind::Test {
            return Err(StoreError::Conflict(format!(
                "{id} records a test; test the webhook again instead"
            )));
        }
        if delivery.request.is_none() {
            return Err(StoreError::Conflict(format!(
                "delivery {id} has no request to send: its plugin failed ({}); replay the event instead",
                delivery.last_error.as_deref().unwrap_or("unknown error")
            )));
        }
        let now = Timestamp::now();
        delivery.state = DeliveryState::Pending;
        delivery.next_attempt_at = Some(now);
        delivery.updated_at = now;
        update_delivery(&txn, &delivery, Some(now)).await?;
        let due = crate::store::due_of(std::slice::from_ref(&delivery));
        listen::due(&txn, &self.instance, &due).await?;
        txn.commit().await.doing("committing a redelivery")?;
        self.announce.due(due);
        Ok(delivery)
    }

    pub async fn retry_failed(
        &self,
        webhook_id: &str,
        since: Timestamp,
        dry_run: bool,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        if webhook(&txn, webhook_id).await?.is_none() {
            return Err(StoreError::not_found("webhook", webhook_id));
        }
        let rows = txn
            .query(
                "SELECT record FROM deliveries
                 WHERE webhook_id = $1 AND state IN ('failed', 'dead') AND kind = 'event'
                 ORDER BY id FOR UPDATE",
                &[&webhook_id],
            )
            .await
            .doing("reading a webhook's failed deliveries")?;
        let now = Timestamp::now();
        let mut redelivered = Vec::new();
        for row in rows {
            let mut delivery: Delivery = decode("deliveries", row.get(0))?;
            if !crate::store::retriable(&delivery, since) {
                continue;
            }
            if !dry_run {
                delivery.state = DeliveryState::Pending;
                delivery.next_attempt_at = Some(now);
                delivery.updated_at = now;
                update_delivery(&txn, &delivery, Some(now)).await?;
            }
            redelivered.push(delivery);
        }
        let due = if dry_run {
            Vec::new()
        } else {
            crate::store::due_of(&redelivered)
        };
        listen::due(&txn, &self.instance, &due).await?;
        txn.commit().await.doing("committing a bulk retry")?;
        self.announce.due(due);
        Ok(redelivered.len())
    }

    pub async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        let mut conn = self.conn().await?;
        let txn = read_only(&mut conn).await?;
        let found = delivery(&txn, id, false).await?;
        txn.commit().await.doing("ending a read")?;
        Ok(found)
    }

    pub async fn attempts(&self, delivery_id: &str) -> Result<Vec<Attempt>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT record FROM attempts WHERE delivery_id = $1 ORDER BY number",
                &[&delivery_id],
            )
            .await
            .doing("reading attempts")?;
        rows.iter().map(|r| decode("attempts", r.get(0))).collect()
    }

    pub async fn deliveries_of_event(&self, event_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT record FROM deliveries WHERE event_id = $1 ORDER BY id",
                &[&event_id],
            )
            .await
            .doing("reading an event's deliveries")?;
        rows.iter()
            .map(|r| decode("deliveries", r.get(0)))
            .collect()
    }

    pub async fn deliveries_of_webhook(
        &self,
        webhook_id: &str,
        state: Option<DeliveryState>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Delivery>, bool), StoreError> {
        let mut conn = self.conn().await?;
        let txn = read_only(&mut conn).await?;
        if webhook(&txn, webhook_id).await?.is_none() {
            return Err(StoreError::not_found("webhook", webhook_id));
        }
        let state = state.map(state_str);
        let rows = txn
            .query(
                "SELECT record FROM deliveries
                 WHERE webhook_id = $1
                   AND ($2::text IS NULL OR state = $2)
                   AND ($3::text IS NULL OR id < $3)
                 ORDER BY id DESC LIMIT $4",
                &[&webhook_id, &state, &before, &(limit as i64 + 1)],
            )
            .await
            .doing("listing a webhook's deliveries")?;
        txn.commit().await.doing("ending a read")?;
        let mut out = rows
            .iter()
            .map(|r| decode("deliveries", r.get(0)))
            .collect::<Result<Vec<Delivery>, _>>()?;
        let more = out.len() > limit;
        out.truncate(limit);
        Ok((out, more))
    }

    // Repositories and webhooks.

    pub async fn create_repository(
        &self,
        repo: Repository,
        webhooks: Vec<Webhook>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        lock(&txn, REPOSITORIES_LOCK).await?;
        super::refuse_clash(&repo, &repositories_named(&txn, &repo.name).await?)?;
        put_repository(&txn, &repo).await?;
        for w in &webhooks {
            put_webhook(&txn, w).await?;
        }
        txn.commit().await.doing("committing a repository")
    }

    pub async fn update_repository(&self, repo: Repository) -> Result<Repository, StoreError> {
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        let Some(current) = repository(&txn, &repo.id, true).await? else {
            return Err(StoreError::not_found("repository", &repo.id));
        };
        let fresh = Repository {
            poll: current.poll,
            ..repo
        };
        put_repository(&txn, &fresh).await?;
        txn.commit().await.doing("committing a repository")?;
        Ok(fresh)
    }

    pub async fn delete_repository(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        if repository(&txn, id, true).await?.is_none() {
            return Err(StoreError::not_found("repository", id));
        }
        for w in webhooks_of(&txn, id).await? {
            delete_webhook(&txn, &w.id).await?;
        }
        for sql in [
            "DELETE FROM tags WHERE repository_id = $1",
            "DELETE FROM tag_marks WHERE repository_id = $1",
            "DELETE FROM repositories WHERE id = $1",
        ] {
            txn.execute(sql, &[&id])
                .await
                .doing("deleting a repository")?;
        }
        txn.commit().await.doing("committing a deleted repository")
    }

    pub async fn repository(&self, id: &str) -> Result<Option<Repository>, StoreError> {
        let mut conn = self.conn().await?;
        let txn = read_only(&mut conn).await?;
        let found = repository(&txn, id, false).await?;
        txn.commit().await.doing("ending a read")?;
        Ok(found)
    }

    pub async fn repositories(&self) -> Result<Vec<Repository>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query("SELECT record FROM repositories ORDER BY id", &[])
            .await
            .doing("listing repositories")?;
        rows.iter()
            .map(|r| decode("repositories", r.get(0)))
            .collect()
    }

    pub async fn tags(&self, repository_id: &str) -> Result<Vec<(String, KnownTag)>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT tag, record FROM tags WHERE repository_id = $1 ORDER BY tag",
                &[&repository_id],
            )
            .await
            .doing("reading known tags")?;
        rows.iter()
            .map(|r| Ok((r.get(0), decode("tags", r.get(1))?)))
            .collect()
    }

    pub async fn create_webhook(&self, webhook: Webhook) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        // Locks the repository's row: it cannot be deleted meanwhile.
        if repository(&txn, &webhook.repository_id, true)
            .await?
            .is_none()
        {
            return Err(StoreError::not_found("repository", &webhook.repository_id));
        }
        put_webhook(&txn, &webhook).await?;
        txn.commit().await.doing("committing a webhook")
    }

    pub async fn update_webhook(&self, webhook: Webhook) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        let current = txn
            .query_opt(
                "SELECT record FROM webhooks WHERE id = $1 FOR UPDATE",
                &[&webhook.id],
            )
            .await
            .doing("reading a webhook")?
            .map(|r| decode::<Webhook>("webhooks", r.get(0)))
            .transpose()?
            .ok_or_else(|| StoreError::not_found("webhook", &webhook.id))?;
        put_webhook(&txn, &webhook).await?;
        let due: Vec<Due> = (webhook.enabled && !current.enabled)
            .then(|| Due {
                webhook: webhook.id.clone(),
                at: Timestamp::now(),
            })
            .into_iter()
            .collect();
        listen::due(&txn, &self.instance, &due).await?;
        txn.commit().await.doing("committing a webhook")?;
        self.announce.due(due);
        Ok(())
    }

    pub async fn delete_webhook(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        delete_webhook(&txn, id).await?;
        txn.commit().await.doing("committing a deleted webhook")
    }

    pub async fn webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError> {
        let mut conn = self.conn().await?;
        let txn = read_only(&mut conn).await?;
        let found = webhook(&txn, id).await?;
        txn.commit().await.doing("ending a read")?;
        Ok(found)
    }

    pub async fn webhooks_of(&self, repository_id: &str) -> Result<Vec<Webhook>, StoreError> {
        let mut conn = self.conn().await?;
        let txn = read_only(&mut conn).await?;
        if repository(&txn, repository_id, false).await?.is_none() {
            return Err(StoreError::not_found("repository", repository_id));
        }
        let found = webhooks_of(&txn, repository_id).await?;
        txn.commit().await.doing("ending a read")?;
        Ok(found)
    }

    pub async fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query("SELECT record FROM webhooks ORDER BY id", &[])
            .await
            .doing("listing webhooks")?;
        rows.iter().map(|r| decode("webhooks", r.get(0))).collect()
    }

    pub async fn sealing_key_id(&self) -> Result<Option<String>, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt("SELECT value FROM meta WHERE key = 'seal_key_id'", &[])
            .await
            .doing("reading the sealing key's id")?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn set_sealing_key_id(&self, id: &str) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('seal_key_id', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&id],
        )
        .await
        .doing("recording the sealing key's id")?;
        Ok(())
    }

    // Housekeeping.

    pub async fn prune(
        &self,
        cutoff: Timestamp,
        batch: usize,
        own: &HashSet<String>,
    ) -> Result<Pruned, StoreError> {
        let own: Vec<&str> = own.iter().map(String::as_str).collect();
        let mut conn = self.conn().await?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        // One gateway of several prunes at a time; the others find the
        // lock taken and leave it to that one.
        let alone: bool = txn
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PRUNE_LOCK])
            .await
            .doing("taking the retention lock")?
            .get(0);
        if !alone {
            return Ok(Pruned::default());
        }
        let cutoff_ms = ms(cutoff);
        let batch = batch.min(i64::MAX as usize) as i64;
        let keys = txn
            .query(
                "DELETE FROM events WHERE seq IN (
                     SELECT seq FROM events WHERE created_ms < $1 ORDER BY seq LIMIT $2
                 ) RETURNING dedupe_key",
                &[&cutoff_ms, &batch],
            )
            .await
            .doing("pruning events")?;
        let dedupe: Vec<String> = keys
            .iter()
            .filter_map(|r| r.get::<_, Option<String>>(0))
            .collect();
        txn.execute("DELETE FROM dedupe WHERE key = ANY($1)", &[&dedupe])
            .await
            .doing("pruning de-duplication keys")?;
        // Pending deliveries are kept whatever their age: they are still
        // owed to someone. Attempts go with their delivery (ON DELETE
        // CASCADE).
        let deliveries = txn
            .execute(
                "DELETE FROM deliveries WHERE id IN (
                     SELECT id FROM deliveries
                     WHERE created_ms < $1 AND state <> 'pending' AND NOT (webhook_id = ANY($3))
                     ORDER BY id LIMIT $2
                 )",
                &[&cutoff_ms, &batch, &own],
            )
            .await
            .doing("pruning deliveries")?;
        txn.commit().await.doing("committing a pruning pass")?;
        Ok(Pruned {
            events: keys.len(),
            deliveries: deliveries as usize,
        })
    }
}

impl PgStore {
    pub async fn prune_webhook(
        &self,
        webhook_id: &str,
        cutoff: Timestamp,
        batch: usize,
    ) -> Result<usize, StoreError> {
        let conn = self.conn().await?;
        let batch = batch.min(i64::MAX as usize) as i64;
        let deleted = conn
            .execute(
                "DELETE FROM deliveries WHERE id IN (
                     SELECT id FROM deliveries
                     WHERE webhook_id = $1 AND created_ms < $2 AND state <> 'pending'
                     ORDER BY id LIMIT $3
                 )",
                &[&webhook_id, &ms(cutoff), &batch],
            )
            .await
            .doing("pruning a webhook's deliveries")?;
        Ok(deleted as usize)
    }
}

fn pool_reason(e: deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => reason(&e),
        other => other.to_string(),
    }
}

/// rustls for `sslmode=require`: the system's roots and webpki's.
fn tls_connector() -> tokio_postgres_rustls::MakeRustlsConnect {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// Brings the schema to [`SCHEMA_VERSION`], in one transaction, under an
/// advisory lock (gateways starting together migrate once). A database of
/// a newer version is refused before anything is written.
async fn migrate(conn: &mut Object, shown: &str) -> Result<(), StoreError> {
    let txn = Transaction::new(
        conn.transaction()
            .await
            .doing("beginning the schema migration")?,
    );
    lock(&txn, MIGRATE_LOCK).await?;
    let exists: bool = txn
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .doing("reading the schema version")?
        .get(0);
    let found: i32 = if exists {
        txn.query_opt("SELECT version FROM schema_version", &[])
            .await
            .doing("reading the schema version")?
            .map_or(0, |r| r.get(0))
    } else {
        0
    };
    if found > SCHEMA_VERSION {
        // Dropping the transaction rolls it back: nothing was written.
        return Err(StoreError::DatabaseSchemaVersion {
            database: shown.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return txn.commit().await.doing("ending the schema check");
    }
    if !exists {
        txn.batch_execute(
            "CREATE TABLE schema_version (version integer NOT NULL);
             INSERT INTO schema_version (version) VALUES (0);",
        )
        .await
        .doing("creating the schema version")?;
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        txn.batch_execute(sql)
            .await
            .map_err(|e| StoreError::Migration {
                version: i as i32 + 1,
                reason: reason(&e),
            })?;
        tracing::info!(version = i + 1, "PostgreSQL schema migrated");
    }
    txn.execute("UPDATE schema_version SET version = $1", &[&SCHEMA_VERSION])
        .await
        .doing("recording the schema version")?;
    txn.commit().await.doing("committing the schema migration")
}

async fn lock(txn: &Transaction<'_>, key: i64) -> Result<(), StoreError> {
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
        .await
        .doing("taking an advisory lock")?;
    Ok(())
}

async fn read_only<'a>(conn: &'a mut Object) -> Result<Transaction<'a>, StoreError> {
    conn.build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .doing("beginning a transaction")
        .map(Transaction::new)
}

fn decode_event(bytes: &[u8]) -> Result<Event, StoreError> {
    Ok(decode::<StoredEvent>("events", bytes)?.event)
}

/// Appends an event to the log; the caller holds [`LOG_LOCK`].
async fn append(
    txn: &Transaction<'_>,
    event: &Event,
    dedupe_key: Option<&str>,
) -> Result<i64, StoreError> {
    insert_event(txn, None, event, dedupe_key).await
}

/// Appends events in order, each with its de-duplication key if it has
/// one, in three statements: their sequence numbers, the events, the keys.
/// The log's lock is held, so the numbers are the log's order.
async fn append_all(
    txn: &Transaction<'_>,
    events: &[(Event, Option<String>)],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut seqs: Vec<i64> = txn
        .query(
            "SELECT nextval('events_seq') FROM generate_series(1, $1::bigint)",
            &[&(events.len() as i64)],
        )
        .await
        .doing("numbering events")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    seqs.sort_unstable();
    let mut ids = Vec::with_capacity(events.len());
    let mut repositories = Vec::with_capacity(events.len());
    let mut kinds = Vec::with_capacity(events.len());
    let mut occurred = Vec::with_capacity(events.len());
    let mut created = Vec::with_capacity(events.len());
    let mut keys = Vec::with_capacity(events.len());
    let mut records = Vec::with_capacity(events.len());
    let (mut keyed, mut keyed_seqs) = (Vec::new(), Vec::new());
    for ((event, key), seq) in events.iter().zip(&seqs) {
        ids.push(event.id.as_str());
        repositories.push(event.repository.id.as_str());
        kinds.push(event.kind.as_str());
        occurred.push(nanos(event.occurred_at));
        created.push(created_ms(&event.id));
        keys.push(key.as_deref());
        records.push(encode(&StoredEventRef {
            event,
            dedupe_key: key.as_deref(),
        }));
        if let Some(key) = key {
            keyed.push(key.as_str());
            keyed_seqs.push(*seq);
        }
    }
    txn.execute(
        "INSERT INTO events (seq, id, repository_id, kind, occurred_at_ns, created_ms, dedupe_key, record)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                              $6::bigint[], $7::text[], $8::bytea[])",
        &[
            &seqs,
            &ids,
            &repositories,
            &kinds,
            &occurred,
            &created,
            &keys,
            &records,
        ],
    )
    .await
    .doing("appending events")?;
    if !keyed.is_empty() {
        txn.execute(
            "INSERT INTO dedupe (key, seq) SELECT * FROM unnest($1::text[], $2::bigint[])",
            &[&keyed, &keyed_seqs],
        )
        .await
        .doing("recording de-duplication keys")?;
    }
    Ok(())
}

/// Writes an event at sequence number `seq` (the next one if `None`), with
/// its de-duplication key; returns its sequence number.
async fn insert_event(
    txn: &Transaction<'_>,
    seq: Option<i64>,
    event: &Event,
    dedupe_key: Option<&str>,
) -> Result<i64, StoreError> {
    let record = encode(&StoredEventRef { event, dedupe_key });
    let row = txn
        .query_one(
            "INSERT INTO events (seq, id, repository_id, kind, occurred_at_ns, created_ms, dedupe_key, record)
             VALUES (COALESCE($1, nextval('events_seq')), $2, $3, $4, $5, $6, $7, $8) RETURNING seq",
            &[
                &seq,
                &event.id,
                &event.repository.id,
                &event.kind.as_str(),
                &nanos(event.occurred_at),
                &created_ms(&event.id),
                &dedupe_key,
                &record,
            ],
        )
        .await
        .doing("appending an event")?;
    let seq: i64 = row.get(0);
    if let Some(key) = dedupe_key {
        txn.execute(
            "INSERT INTO dedupe (key, seq) VALUES ($1, $2)",
            &[&key, &seq],
        )
        .await
        .doing("recording a de-duplication key")?;
    }
    Ok(seq)
}

async fn fanout_cursor(txn: &Transaction<'_>, for_update: bool) -> Result<u64, StoreError> {
    let sql = if for_update {
        "SELECT value FROM meta WHERE key = 'fanout_cursor' FOR UPDATE"
    } else {
        "SELECT value FROM meta WHERE key = 'fanout_cursor'"
    };
    let value: Option<String> = txn
        .query_opt(sql, &[])
        .await
        .doing("reading the fan-out cursor")?
        .map(|r| r.get(0));
    value.map_or(Ok(0), |v| {
        v.parse().map_err(|_| StoreError::Corrupt {
            table: "meta",
            reason: format!("the fan-out cursor {v:?} is not a number"),
        })
    })
}

async fn repository(
    txn: &Transaction<'_>,
    id: &str,
    for_update: bool,
) -> Result<Option<Repository>, StoreError> {
    let sql = if for_update {
        "SELECT record FROM repositories WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT record FROM repositories WHERE id = $1"
    };
    txn.query_opt(sql, &[&id])
        .await
        .doing("reading a repository")?
        .map(|r| decode("repositories", r.get(0)))
        .transpose()
}

/// Ends the claim on a repository's poll: the poll is recorded.
async fn end_poll_lease(txn: &Transaction<'_>, repository_id: &str) -> Result<(), StoreError> {
    txn.execute(
        "UPDATE repositories SET poll_lease_until = NULL WHERE id = $1",
        &[&repository_id],
    )
    .await
    .doing("ending a repository's poll lease")?;
    Ok(())
}

async fn repositories_named(
    txn: &Transaction<'_>,
    name: &str,
) -> Result<Vec<Repository>, StoreError> {
    let rows = txn
        .query(
            "SELECT record FROM repositories WHERE name = $1 ORDER BY id",
            &[&name],
        )
        .await
        .doing("reading repositories by name")?;
    rows.iter()
        .map(|r| decode("repositories", r.get(0)))
        .collect()
}

async fn put_repository(txn: &Transaction<'_>, repo: &Repository) -> Result<(), StoreError> {
    txn.execute(
        "INSERT INTO repositories (id, name, kind, registry, record) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind,
             registry = excluded.registry, record = excluded.record",
        &[
            &repo.id,
            &repo.name,
            &repo.kind.as_str(),
            &repo.registry,
            &encode(repo),
        ],
    )
    .await
    .doing("writing a repository")?;
    Ok(())
}

/// The repository a notification is for (`changes::notified_repository`),
/// a new local one on first sight.
async fn local_repository(
    txn: &Transaction<'_>,
    n: &Notification,
) -> Result<Repository, StoreError> {
    let candidates = repositories_named(txn, &n.repository).await?;
    if let Some(repo) = crate::changes::notified_repository(candidates, n.host.as_deref()) {
        return Ok(repo);
    }
    let repo = Repository::new_local(&n.repository);
    put_repository(txn, &repo).await?;
    tracing::info!(repository = repo.name, id = repo.id, "new local repository");
    Ok(repo)
}

async fn webhook(txn: &Transaction<'_>, id: &str) -> Result<Option<Webhook>, StoreError> {
    txn.query_opt("SELECT record FROM webhooks WHERE id = $1", &[&id])
        .await
        .doing("reading a webhook")?
        .map(|r| decode("webhooks", r.get(0)))
        .transpose()
}

async fn webhooks_of(
    txn: &Transaction<'_>,
    repository_id: &str,
) -> Result<Vec<Webhook>, StoreError> {
    let rows = txn
        .query(
            "SELECT record FROM webhooks WHERE repository_id = $1 ORDER BY id",
            &[&repository_id],
        )
        .await
        .doing("reading a repository's webhooks")?;
    rows.iter().map(|r| decode("webhooks", r.get(0))).collect()
}

async fn put_webhook(txn: &Transaction<'_>, webhook: &Webhook) -> Result<(), StoreError> {
    txn.execute(
        "INSERT INTO webhooks (id, repository_id, record) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET repository_id = excluded.repository_id,
             record = excluded.record",
        &[&webhook.id, &webhook.repository_id, &encode(webhook)],
    )
    .await
    .doing("writing a webhook")?;
    Ok(())
}

/// Deletes a webhook and ends its pending deliveries as `failed` (kept as
/// history).
async fn delete_webhook(txn: &Transaction<'_>, id: &str) -> Result<(), StoreError> {
    let deleted = txn
        .execute("DELETE FROM webhooks WHERE id = $1", &[&id])
        .await
        .doing("deleting a webhook")?;
    if deleted == 0 {
        return Err(StoreError::not_found("webhook", id));
    }
    let rows = txn
        .query(
            "SELECT record FROM deliveries WHERE webhook_id = $1 AND due_ms IS NOT NULL FOR UPDATE",
            &[&id],
        )
        .await
        .doing("reading a webhook's pending deliveries")?;
    for row in &rows {
        let mut delivery: Delivery = decode("deliveries", row.get(0))?;
        delivery.state = DeliveryState::Failed;
        delivery.next_attempt_at = None;
        delivery.last_error = Some("the webhook was deleted".to_owned());
        delivery.updated_at = Timestamp::now();
        update_delivery(txn, &delivery, None).await?;
    }
    Ok(())
}

/// Turns a webhook off, saying why; its pending deliveries wait for it to
/// be enabled again.
async fn note_attempt(
    txn: &Transaction<'_>,
    id: &str,
    health: &HealthUpdate,
) -> Result<(), StoreError> {
    let current = txn
        .query_opt(
            "SELECT record FROM webhooks WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .doing("reading a webhook")?
        .map(|r| decode::<Webhook>("webhooks", r.get(0)))
        .transpose()?;
    if let Some(mut webhook) = current {
        if let Some(reason) = webhook.note_attempt(&health.attempt, &health.policy) {
            tracing::warn!(webhook = id, "webhook disabled: {reason}");
        }
        put_webhook(txn, &webhook).await?;
    }
    Ok(())
}

async fn delivery(
    txn: &Transaction<'_>,
    id: &str,
    for_update: bool,
) -> Result<Option<Delivery>, StoreError> {
    let sql = if for_update {
        "SELECT record FROM deliveries WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT record FROM deliveries WHERE id = $1"
    };
    txn.query_opt(sql, &[&id])
        .await
        .doing("reading a delivery")?
        .map(|r| decode("deliveries", r.get(0)))
        .transpose()
}

/// Lets this transaction's commit return before its WAL reaches the disk,
/// for what the redb engine also writes lazily: attempts and claims. A
/// crash may lose the last few milliseconds of them, never a part of one;
/// a delivery whose attempt or claim is lost is still pending, and is sent
/// again under the same `webhook-id` (at least once). Ingest and planned
/// deliveries stay synchronous: what was acknowledged or sent must exist.
async fn lazy_commit(txn: &Transaction<'_>) -> Result<(), StoreError> {
    txn.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .doing("making a commit lazy")
}

/// Folds a gathering delivery into a later one of its burst. One a
/// gateway has claimed is refused, whatever the clocks say.
async fn fold_delivery(txn: &Transaction<'_>, fold: &Fold) -> Result<(), StoreError> {
    let row = txn
        .query_opt(
            "SELECT d.record, c.lease_until FROM deliveries d
             LEFT JOIN claims c ON c.delivery_id = d.id
             WHERE d.id = $1 FOR UPDATE OF d",
            &[&fold.delivery_id],
        )
        .await
        .doing("reading a delivery to fold")?
        .ok_or_else(|| StoreError::not_found("delivery", &fold.delivery_id))?;
    let mut delivery: Delivery = decode("deliveries", row.get(0))?;
    let leased: Option<i64> = row.get(1);
    if leased.is_some() {
        return Err(StoreError::Conflict(format!(
            "delivery {} was claimed before {} could take its place",
            fold.delivery_id, fold.into
        )));
    }
    super::apply_fold(&mut delivery, fold, Timestamp::now())?;
    update_delivery(txn, &delivery, None).await
}

/// Stores a new delivery; a pending one is due at `next_attempt_at` (now
/// if unset). `planned`: made by fan-out, at most once per (event, webhook).
async fn create_delivery(
    txn: &Transaction<'_>,
    delivery: &Delivery,
    planned: bool,
) -> Result<(), StoreError> {
    let due = (delivery.state == DeliveryState::Pending)
        .then(|| ms(delivery.next_attempt_at.unwrap_or_else(Timestamp::now)));
    txn.execute(
        "INSERT INTO deliveries (id, kind, event_id, webhook_id, state, due_ms, planned, created_ms, record)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &delivery.id,
            &kind_str(delivery.kind),
            &delivery.event_id,
            &delivery.webhook_id,
            &state_str(delivery.state),
            &due,
            &planned,
            &created_ms(&delivery.id),
            &encode(delivery),
        ],
    )
    .await
    .doing("writing a delivery")?;
    if let Some(due) = due {
        txn.execute(
            "INSERT INTO claims (delivery_id, webhook_id, due_ms) VALUES ($1, $2, $3)",
            &[&delivery.id, &delivery.webhook_id, &due],
        )
        .await
        .doing("making a delivery due")?;
    }
    Ok(())
}

/// Writes a delivery as it now is; `due` is when it is due if pending. Any
/// claim on it ends: it was attempted, redelivered or cancelled.
async fn update_delivery(
    txn: &Transaction<'_>,
    delivery: &Delivery,
    due: Option<Timestamp>,
) -> Result<(), StoreError> {
    let due = due
        .filter(|_| delivery.state == DeliveryState::Pending)
        .map(ms);
    let record = encode(delivery);
    let state = state_str(delivery.state);
    let row = async {
        txn.execute(
            "UPDATE deliveries SET state = $2, due_ms = $3, record = $4 WHERE id = $1",
            &[&delivery.id, &state, &due, &record],
        )
        .await
        .doing("writing a delivery")
    };
    // Its claim ends either way; pipelined with the row's update.
    let claim = async {
        match due {
            Some(due) => txn.execute(
                "INSERT INTO claims (delivery_id, webhook_id, due_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (delivery_id) DO UPDATE SET due_ms = excluded.due_ms, lease_until = NULL",
                &[&delivery.id, &delivery.webhook_id, &due],
            )
            .await,
            None => txn
                .execute("DELETE FROM claims WHERE delivery_id = $1", &[&delivery.id])
                .await,
        }
        .doing("making a delivery due")
    };
    futures_util::future::try_join(row, claim).await?;
    Ok(())
}

/// Records an attempt and moves the delivery on. Returns the updated
/// delivery, or `None` if it was deleted meanwhile (retention).
async fn record_attempt(
    txn: &Transaction<'_>,
    id: &str,
    attempt: &Attempt,
    next: &Next,
) -> Result<Option<Delivery>, StoreError> {
    let Some(mut delivery) = delivery(txn, id, true).await? else {
        return Ok(None);
    };
    super::apply_attempt(&mut delivery, attempt, next);
    // Both writes go out together (pipelined), one round trip.
    let record = encode(attempt);
    let number = attempt.number as i32;
    futures_util::future::try_join(
        async {
            txn.execute(
                "INSERT INTO attempts (delivery_id, number, record) VALUES ($1, $2, $3)
                 ON CONFLICT (delivery_id, number) DO UPDATE SET record = excluded.record",
                &[&id, &number, &record],
            )
            .await
            .doing("writing an attempt")
        },
        update_delivery(txn, &delivery, delivery.next_attempt_at),
    )
    .await?;
    Ok(Some(delivery))
}

/// Records attempts, a batch per transaction: the attempts senders finish
/// while one batch commits make the next.
struct AttemptCommitter {
    pool: Pool,
    announce: Announcer,
    instance: Arc<str>,
}

impl AttemptCommitter {
    async fn run(self, mut jobs: tokio::sync::mpsc::UnboundedReceiver<AttemptJob>) {
        // A second attempt of a delivery already in the batch waits for
        // the next one: its record must read the first's.
        let mut deferred: std::collections::VecDeque<AttemptJob> = Default::default();
        loop {
            let first = match deferred.pop_front() {
                Some(job) => job,
                None => match jobs.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            let mut ids = HashSet::from([first.id.clone()]);
            let mut batch = vec![first];
            while batch.len() < ATTEMPT_BATCH {
                let job = match deferred.pop_front() {
                    Some(job) => job,
                    None => match jobs.try_recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    },
                };
                if ids.insert(job.id.clone()) {
                    batch.push(job);
                } else {
                    deferred.push_back(job);
                    break;
                }
            }
            self.commit(batch).await;
        }
    }

    /// Commits a batch and answers each attempt. If the batch fails, each
    /// is tried alone, so that one that cannot be recorded does not fail
    /// the others.
    async fn commit(&self, batch: Vec<AttemptJob>) {
        match self.record(&batch).await {
            Ok(updated) => {
                for (job, d) in batch.into_iter().zip(updated) {
                    let _ = job.answer.send(Ok(d));
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(job) = batch.into_iter().next() {
                    let _ = job.answer.send(Err(e));
                }
            }
            Err(_) => {
                for job in batch {
                    let result = self.record(std::slice::from_ref(&job)).await;
                    let _ = job
                        .answer
                        .send(result.map(|mut r| r.pop().unwrap_or_default()));
                }
            }
        }
    }

    async fn record(&self, batch: &[AttemptJob]) -> Result<Vec<Option<Delivery>>, StoreError> {
        let mut conn = self.pool.get().await.map_err(|e| StoreError::Postgres {
            doing: "taking a connection from the pool",
            reason: pool_reason(e),
        })?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        let writer = &txn;
        // The setting, then every attempt's statements, pipelined: the
        // deliveries are distinct, so their statements are independent.
        let ((), updated) = futures_util::future::try_join(
            lazy_commit(&txn),
            try_join_all(batch.iter().map(|job| async move {
                record_attempt(writer, &job.id, &job.attempt, &job.next).await
            })),
        )
        .await?;
        // Streaks in order: several attempts may concern one webhook.
        for (job, d) in batch.iter().zip(&updated) {
            if let (Some(health), Some(d)) = (&job.health, d) {
                note_attempt(&txn, &d.webhook_id, health).await?;
            }
        }
        let due: Vec<Due> = updated
            .iter()
            .flatten()
            .filter_map(|d| {
                Some(Due {
                    webhook: d.webhook_id.clone(),
                    at: d.next_attempt_at?,
                })
            })
            .collect();
        listen::due(&txn, &self.instance, &due).await?;
        txn.commit().await.doing("committing attempts")?;
        self.announce.due(due);
        Ok(updated)
    }
}

/// Commits ingest requests, a batch per transaction.
struct IngestCommitter {
    pool: Pool,
    announce: Announcer,
    instance: Arc<str>,
}

impl IngestCommitter {
    async fn run(self, mut jobs: tokio::sync::mpsc::UnboundedReceiver<IngestJob>) {
        while let Some(first) = jobs.recv().await {
            let mut batch = vec![first];
            while batch.len() < INGEST_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.commit(batch).await;
        }
    }

    /// Commits a batch and answers each request. If the batch fails, each
    /// request is tried alone, so that one that cannot be recorded does not
    /// fail the others.
    async fn commit(&self, batch: Vec<IngestJob>) {
        let (requests, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        match self.record(&requests).await {
            Ok(recorded) => {
                for (answer, r) in answers.into_iter().zip(recorded) {
                    let _ = answer.send(Ok(r));
                }
            }
            Err(e) if requests.len() == 1 => {
                let _ = answers.into_iter().next().map(|a| a.send(Err(e)));
            }
            Err(_) => {
                for (request, answer) in requests.into_iter().zip(answers) {
                    let result = self.record(std::slice::from_ref(&request)).await;
                    let _ = answer.send(result.map(|mut r| r.pop().unwrap_or_default()));
                }
            }
        }
    }

    async fn record(&self, requests: &[Vec<Notification>]) -> Result<Vec<Recorded>, StoreError> {
        let mut conn = self.pool.get().await.map_err(|e| StoreError::Postgres {
            doing: "taking a connection from the pool",
            reason: pool_reason(e),
        })?;
        let txn = Transaction::new(conn.transaction().await.doing("beginning a transaction")?);
        lock(&txn, LOG_LOCK).await?;
        // A batch is read and written set by set, a handful of statements
        // whatever its size, rather than several per notification: each
        // statement is a round trip, and the log's lock is held meanwhile.
        // Point lookups, pipelined on the connection: one round trip for
        // all, and each by its primary key whatever the table's statistics
        // say (`= ANY($1)` scanned a young table whole).
        let keys: Vec<&String> = requests.iter().flatten().map(|n| &n.dedupe_key).collect();
        let reader = &txn;
        let found = try_join_all(keys.iter().map(|key| async move {
            reader
                .query_opt("SELECT 1 FROM dedupe WHERE key = $1", &[*key])
                .await
        }))
        .await
        .doing("reading the de-duplication keys")?;
        let mut seen: HashSet<String> = keys
            .iter()
            .zip(found)
            .filter(|(_, row)| row.is_some())
            .map(|(key, _)| (*key).clone())
            .collect();
        let mut repos: HashMap<(String, Option<String>), Repository> = HashMap::new();
        let mut books: HashMap<String, MemBook> = HashMap::new();
        for n in requests.iter().flatten() {
            if seen.contains(&n.dedupe_key) {
                continue;
            }
            let key = (n.repository.clone(), n.host.clone());
            if !repos.contains_key(&key) {
                let repo = local_repository(&txn, n).await?;
                repos.insert(key.clone(), repo);
            }
            let repo_id = &repos[&key].id;
            books
                .entry(repo_id.clone())
                .or_insert_with(|| MemBook::empty(repo_id))
                .want(&n.change);
        }
        for book in books.values_mut() {
            book.prefetch(&txn).await?;
        }
        let mut all = Vec::with_capacity(requests.len());
        let mut appended: Vec<(Event, Option<String>)> = Vec::new();
        for notifications in requests {
            let mut recorded = Recorded::default();
            for n in notifications {
                // Also a key met earlier in this batch.
                if !seen.insert(n.dedupe_key.clone()) {
                    recorded.duplicates += 1;
                    continue;
                }
                let repo = &repos[&(n.repository.clone(), n.host.clone())];
                let mut reference = repo.reference();
                reference.registry = reference.registry.or_else(|| n.host.clone());
                let book = books
                    .get_mut(&repo.id)
                    .expect("a book per repository notified");
                book.load_for(&txn, &n.change).await?;
                let events = changes::from_notification(book, &reference, n)?;
                for (i, e) in events.iter().enumerate() {
                    // The first event carries the key; its presence is what counts.
                    appended.push((e.clone(), (i == 0).then(|| n.dedupe_key.clone())));
                }
                recorded.events.extend(events);
            }
            all.push(recorded);
        }
        append_all(&txn, &appended).await?;
        let appended = !appended.is_empty();
        for book in books.values() {
            book.flush(&txn).await?;
        }
        if appended {
            listen::events_appended(&txn, &self.instance).await?;
        }
        txn.commit().await.doing("committing notifications")?;
        if appended {
            self.announce.events_appended();
        }
        Ok(all)
    }
}

/// One repository's known tags and marks, loaded in the transaction for
/// the rules (`changes`) to read and change in memory, then written back.
struct MemBook {
    repository_id: String,
    tags: BTreeMap<String, KnownTag>,
    marks: BTreeSet<String>,
    /// Tags changed since loading.
    touched: BTreeSet<String>,
    marks_loaded: BTreeSet<String>,
    /// Tags read one by one (with their marks).
    read: BTreeSet<String>,
    /// Every tag and mark of the repository is read.
    complete: bool,
    /// Tags the batch's rules will read, not read yet.
    wanted: BTreeSet<String>,
}

impl MemBook {
    /// A book that has read nothing yet: [`MemBook::load_for`] reads what
    /// each notification's rule needs, so that a push reads one tag, not
    /// every tag of the repository.
    fn empty(repository_id: &str) -> Self {
        Self {
            repository_id: repository_id.to_owned(),
            tags: BTreeMap::new(),
            marks: BTreeSet::new(),
            touched: BTreeSet::new(),
            marks_loaded: BTreeSet::new(),
            read: BTreeSet::new(),
            complete: false,
            wanted: BTreeSet::new(),
        }
    }

    /// Notes that a rule will look at the tag `change` names, for
    /// [`MemBook::prefetch`].
    fn want(&mut self, change: &TagChange) {
        if let TagChange::Pushed { tag, .. }
        | TagChange::TagDeleted { tag }
        | TagChange::Announced { tag, .. } = change
        {
            self.wanted.insert(tag.clone());
        }
    }

    /// Reads the wanted tags, with their marks, in two statements.
    async fn prefetch(&mut self, txn: &Transaction<'_>) -> Result<(), StoreError> {
        let wanted: Vec<String> = std::mem::take(&mut self.wanted)
            .into_iter()
            .filter(|t| !self.read.contains(t))
            .collect();
        if wanted.is_empty() || self.complete {
            return Ok(());
        }
        let id = &self.repository_id;
        // Pipelined point lookups, as for the de-duplication keys.
        let (tags, marks) = futures_util::future::try_join(
            try_join_all(wanted.iter().map(|tag| async move {
                txn.query_opt(
                    "SELECT record FROM tags WHERE repository_id = $1 AND tag = $2",
                    &[id, tag],
                )
                .await
            })),
            try_join_all(wanted.iter().map(|tag| async move {
                txn.query_opt(
                    "SELECT 1 FROM tag_marks WHERE repository_id = $1 AND tag = $2",
                    &[id, tag],
                )
                .await
            })),
        )
        .await
        .doing("reading known tags")?;
        for ((tag, known), marked) in wanted.iter().zip(tags).zip(marks) {
            if let Some(row) = known {
                self.tags.insert(tag.clone(), decode("tags", row.get(0))?);
            }
            if marked.is_some() {
                self.marks.insert(tag.clone());
                self.marks_loaded.insert(tag.clone());
            }
        }
        self.read.extend(wanted);
        Ok(())
    }

    /// Reads what the rule for `change` looks at: the tag it names, with
    /// its mark; or, for a change that concerns a digest, every tag.
    async fn load_for(
        &mut self,
        txn: &Transaction<'_>,
        change: &TagChange,
    ) -> Result<(), StoreError> {
        if self.complete {
            return Ok(());
        }
        let tag = match change {
            TagChange::Pushed { tag, .. }
            | TagChange::TagDeleted { tag }
            | TagChange::Announced { tag, .. } => tag,
            _ => {
                let all = Self::load(txn, &self.repository_id).await?;
                // What this book changed already stands over what it read.
                for (t, k) in all.tags {
                    if !self.read.contains(&t) {
                        self.tags.insert(t, k);
                    }
                }
                for m in all.marks {
                    if !self.read.contains(&m) {
                        self.marks.insert(m.clone());
                        self.marks_loaded.insert(m);
                    }
                }
                self.complete = true;
                return Ok(());
            }
        };
        if !self.read.insert(tag.clone()) {
            return Ok(());
        }
        let id = &self.repository_id;
        if let Some(row) = txn
            .query_opt(
                "SELECT record FROM tags WHERE repository_id = $1 AND tag = $2",
                &[id, tag],
            )
            .await
            .doing("reading a known tag")?
        {
            self.tags.insert(tag.clone(), decode("tags", row.get(0))?);
        }
        let marked = txn
            .query_opt(
                "SELECT 1 FROM tag_marks WHERE repository_id = $1 AND tag = $2",
                &[id, tag],
            )
            .await
            .doing("reading a tag mark")?
            .is_some();
        if marked {
            self.marks.insert(tag.clone());
            self.marks_loaded.insert(tag.clone());
        }
        Ok(())
    }

    async fn load(txn: &Transaction<'_>, repository_id: &str) -> Result<Self, StoreError> {
        let rows = txn
            .query(
                "SELECT tag, record FROM tags WHERE repository_id = $1 FOR UPDATE",
                &[&repository_id],
            )
            .await
            .doing("reading known tags")?;
        let mut tags = BTreeMap::new();
        for row in &rows {
            tags.insert(row.get::<_, String>(0), decode("tags", row.get(1))?);
        }
        let marks: BTreeSet<String> = txn
            .query(
                "SELECT tag FROM tag_marks WHERE repository_id = $1",
                &[&repository_id],
            )
            .await
            .doing("reading tag marks")?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(Self {
            repository_id: repository_id.to_owned(),
            tags,
            marks_loaded: marks.clone(),
            marks,
            touched: BTreeSet::new(),
            read: BTreeSet::new(),
            complete: true,
            wanted: BTreeSet::new(),
        })
    }

    /// Writes back what the rules changed.
    async fn flush(&self, txn: &Transaction<'_>) -> Result<(), StoreError> {
        let id = &self.repository_id;
        let (mut written, mut records, mut removed) = (Vec::new(), Vec::new(), Vec::new());
        for tag in &self.touched {
            match self.tags.get(tag) {
                Some(known) => {
                    written.push(tag.as_str());
                    records.push(encode(known));
                }
                None => removed.push(tag.as_str()),
            }
        }
        if !written.is_empty() {
            txn.execute(
                "INSERT INTO tags (repository_id, tag, record)
                 SELECT $1, * FROM unnest($2::text[], $3::bytea[])
                 ON CONFLICT (repository_id, tag) DO UPDATE SET record = excluded.record",
                &[id, &written, &records],
            )
            .await
            .doing("writing known tags")?;
        }
        if !removed.is_empty() {
            txn.execute(
                "DELETE FROM tags WHERE repository_id = $1 AND tag = ANY($2)",
                &[id, &removed],
            )
            .await
            .doing("removing known tags")?;
        }
        let marked: Vec<&str> = self
            .marks
            .difference(&self.marks_loaded)
            .map(String::as_str)
            .collect();
        if !marked.is_empty() {
            txn.execute(
                "INSERT INTO tag_marks (repository_id, tag) SELECT $1, * FROM unnest($2::text[])
                 ON CONFLICT DO NOTHING",
                &[id, &marked],
            )
            .await
            .doing("marking tags")?;
        }
        let unmarked: Vec<&str> = self
            .marks_loaded
            .difference(&self.marks)
            .map(String::as_str)
            .collect();
        if !unmarked.is_empty() {
            txn.execute(
                "DELETE FROM tag_marks WHERE repository_id = $1 AND tag = ANY($2)",
                &[id, &unmarked],
            )
            .await
            .doing("removing tag marks")?;
        }
        Ok(())
    }
}

impl TagBook for MemBook {
    type Error = StoreError;

    fn get(&mut self, tag: &str) -> Result<Option<KnownTag>, StoreError> {
        Ok(self.tags.get(tag).cloned())
    }

    fn put(&mut self, tag: &str, known: KnownTag) -> Result<(), StoreError> {
        self.tags.insert(tag.to_owned(), known);
        self.touched.insert(tag.to_owned());
        Ok(())
    }

    fn remove(&mut self, tag: &str) -> Result<(), StoreError> {
        self.tags.remove(tag);
        self.touched.insert(tag.to_owned());
        Ok(())
    }

    fn all(&mut self) -> Result<Vec<(String, KnownTag)>, StoreError> {
        debug_assert!(
            self.complete,
            "load_for reads every tag for rules that need them all"
        );
        Ok(self
            .tags
            .iter()
            .map(|(t, k)| (t.clone(), k.clone()))
            .collect())
    }

    fn mark(&mut self, tag: &str) -> Result<(), StoreError> {
        self.marks.insert(tag.to_owned());
        Ok(())
    }

    fn take_mark(&mut self, tag: &str) -> Result<bool, StoreError> {
        Ok(self.marks.remove(tag))
    }
}

/// Keeps a plugin (installed or replaced) under `name`.
async fn insert_plugin(txn: &Transaction<'_>, name: &str, wasm: &[u8]) -> Result<(), StoreError> {
    use sha2::Digest;
    let sha256 = hex_lower(&sha2::Sha256::digest(wasm));
    txn.execute(
        "INSERT INTO plugins (name, sha256, wasm, updated_ms)
         VALUES ($1, $2, $3, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
         ON CONFLICT (name) DO UPDATE
         SET sha256 = EXCLUDED.sha256, wasm = EXCLUDED.wasm, updated_ms = EXCLUDED.updated_ms",
        &[&name, &sha256, &wasm],
    )
    .await
    .doing("saving a plugin")?;
    Ok(())
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
