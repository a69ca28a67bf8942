//! The store's operations, in the domain's words. Each is one transaction;
//! each write says whether it must be durable before it returns, and
//! announces what it committed.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::announce::Due;
use super::events::{self, Log};
use super::ingest::Book;
use super::repos::{self, Reader, Tags};
use super::retention;
use super::{
    Claim, DueDelivery, EventFilter, Next, PlanBatch, Pruned, RedbStore, StoreError, deliveries,
    fanout_cursor, set_fanout_cursor,
};
use crate::changes::{self, Notification, Recorded};
use crate::event::{Event, Timestamp};
use crate::records::{Attempt, Delivery, DeliveryState, KnownTag, Repository, Webhook};
use crate::store::{Fold, Gathering, HealthUpdate};

impl RedbStore {
    // The log.

    /// Appends what one ingest request's notifications make, de-duplicated
    /// by their keys; returns once it is durable. Concurrent requests share
    /// a commit.
    pub async fn record_notifications(
        &self,
        notifications: Vec<Notification>,
    ) -> Result<Recorded, StoreError> {
        if notifications.is_empty() {
            return Ok(Recorded::default());
        }
        self.ingest.record(notifications).await
    }

    /// Applies what a poll of `repository_id` found to its known tags and
    /// its poll status, appending the events it makes, in one durable
    /// transaction. The comparison is made against the known tags as they
    /// are at commit. Returns how many events it appended.
    pub async fn apply_poll(
        &self,
        repository_id: &str,
        listed: HashSet<String>,
        observed: BTreeMap<String, String>,
        duration_ms: u64,
    ) -> Result<usize, StoreError> {
        let id = repository_id.to_owned();
        let appended = self
            .write(move |txn| {
                let Some(mut repo) = txn.repository(&id)? else {
                    return Ok(0);
                };
                let silent = repo.poll_is_silent();
                let now = Timestamp::now();
                let mut log = Log::open(txn)?;
                let mut tags = Tags::open(txn)?;
                let mut book = Book {
                    log: &mut log,
                    tags: &mut tags,
                    repository_id: &id,
                };
                let events = changes::from_poll(
                    &mut book,
                    &repo.reference(),
                    &listed,
                    &observed,
                    silent,
                    now,
                )?;
                for e in &events {
                    log.append(e, None)?;
                }
                drop((log, tags));
                repo.polled(now, duration_ms);
                repos::put_repository(txn, &repo)?;
                Ok(events.len())
            })
            .await?;
        if appended > 0 {
            self.announce.events_appended();
        }
        Ok(appended)
    }

    /// Records that a poll failed, and when the next is due. Lazy: a lost
    /// status is simply written again by the next poll.
    pub async fn record_poll_failure(
        &self,
        repository_id: &str,
        error: String,
        duration_ms: u64,
        next_poll_at: Timestamp,
    ) -> Result<(), StoreError> {
        let id = repository_id.to_owned();
        self.write_lazy(move |txn| {
            let Some(mut repo) = txn.repository(&id)? else {
                return Ok(());
            };
            repo.poll_failed(error, duration_ms, next_poll_at);
            repos::put_repository(txn, &repo)
        })
        .await
    }

    pub async fn event(&self, id: &str) -> Result<Option<Event>, StoreError> {
        Ok(events::by_id(&self.read()?, id)?.map(|(_, e)| e))
    }

    /// Events matching `filter`, newest first, and whether more remain.
    pub async fn events(&self, filter: &EventFilter) -> Result<(Vec<Event>, bool), StoreError> {
        events::list(&self.read()?, filter)
    }

    /// The events of the repository of event `since`, from it on, in order
    /// (a replay). `NotFound` if there is no such event.
    pub async fn events_from(&self, since: &str) -> Result<Vec<Event>, StoreError> {
        let txn = self.read()?;
        let (seq, first) =
            events::by_id(&txn, since)?.ok_or_else(|| StoreError::not_found("event", since))?;
        Ok(events::of_repository_from(&txn, &first.repository.id, seq)?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    // Fan-out.

    /// Up to `limit` events past the fan-out cursor.
    pub async fn next_to_plan(&self, limit: usize) -> Result<PlanBatch, StoreError> {
        let txn = self.read()?;
        let cursor = fanout_cursor(&txn)?;
        let found = events::after(&txn, cursor, limit)?;
        let last = found.last().map_or(cursor, |(seq, _)| *seq);
        let mut webhooks: HashMap<String, Vec<Webhook>> = HashMap::new();
        for (_, event) in &found {
            if !webhooks.contains_key(&event.repository.id) {
                let enabled = txn
                    .webhooks_of(&event.repository.id)?
                    .into_iter()
                    .filter(|w| w.enabled)
                    .collect();
                webhooks.insert(event.repository.id.clone(), enabled);
            }
        }
        Ok(PlanBatch {
            cursor,
            last,
            events: found.into_iter().map(|(_, e)| e).collect(),
            webhooks,
        })
    }

    /// Creates the deliveries a batch made and moves the fan-out cursor past
    /// it, in one transaction: after a crash the batch is either entirely
    /// done or not at all. Durable when it made deliveries (a lost one would
    /// come back with another id); a cursor that made none may be lost and
    /// redone. Refused if the cursor is no longer `batch.cursor`.
    pub async fn plan_deliveries(
        &self,
        cursor: u64,
        last: u64,
        planned: Vec<Delivery>,
        folds: Vec<Fold>,
    ) -> Result<(), StoreError> {
        let due = crate::store::due_of(&planned);
        let durable = !planned.is_empty();
        let job = move |txn: &redb::WriteTransaction| {
            let now = fanout_cursor(txn)?;
            if now != cursor {
                return Err(StoreError::Conflict(format!(
                    "fan-out cursor moved from {cursor} to {now} during a batch"
                )));
            }
            for fold in &folds {
                deliveries::fold(txn, fold, Timestamp::now())?;
            }
            for delivery in &planned {
                deliveries::create(txn, delivery)?;
            }
            set_fanout_cursor(txn, last)
        };
        if durable {
            self.write(job).await?;
        } else {
            self.write_lazy(job).await?;
        }
        self.announce.due(due);
        Ok(())
    }

    pub async fn gathering(
        &self,
        webhook_id: &str,
        after: Timestamp,
    ) -> Result<Option<Gathering>, StoreError> {
        deliveries::gathering(&self.read()?, webhook_id, after)
    }

    /// Adds deliveries for a webhook outside fan-out (a replay, durably).
    pub async fn add_deliveries(
        &self,
        webhook_id: &str,
        added: Vec<Delivery>,
    ) -> Result<(), StoreError> {
        let due = crate::store::due_of(&added);
        let id = webhook_id.to_owned();
        self.write(move |txn| {
            if txn.webhook(&id)?.is_none() {
                return Err(StoreError::not_found("webhook", &id));
            }
            for d in &added {
                deliveries::create(txn, d)?;
            }
            Ok(())
        })
        .await?;
        self.announce.due(due);
        Ok(())
    }

    // Sending.

    /// Every webhook with pending deliveries, and when its earliest is due
    /// (Unix ms).
    pub async fn webhooks_with_due(&self) -> Result<Vec<(String, u64)>, StoreError> {
        deliveries::webhooks_due(&self.read()?)
    }

    /// Up to `limit` pending deliveries of `webhook_id`, earliest first.
    pub async fn due_deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        deliveries::due_for(&self.read()?, webhook_id, u64::MAX, limit)
    }

    /// Up to `limit` deliveries of `webhook_id` due now, earliest first, and
    /// when the next one is due: one process, so nothing is leased.
    pub async fn claim_due(
        &self,
        webhook_id: &str,
        limit: usize,
        _lease: std::time::Duration,
        except: &HashSet<String>,
    ) -> Result<Claim, StoreError> {
        let now = Timestamp::now().unix_millis().max(0) as u64;
        let wanted = limit.saturating_add(except.len()).saturating_add(1);
        let mut rest = deliveries::due_for(&self.read()?, webhook_id, u64::MAX, wanted)?
            .into_iter()
            .filter(|d| !except.contains(&d.id))
            .peekable();
        let mut claimed = Vec::new();
        while claimed.len() < limit
            && let Some(d) = rest.next_if(|d| d.due_ms <= now)
        {
            claimed.push(d);
        }
        let next_ms = rest.next().map(|d| d.due_ms);
        Ok(Claim { claimed, next_ms })
    }

    /// The oldest pending delivery of `webhook_id`, claimed if it is due
    /// and not in `except`: one process, so nothing is leased.
    pub async fn claim_oldest(
        &self,
        webhook_id: &str,
        _lease: std::time::Duration,
        except: &HashSet<String>,
    ) -> Result<Claim, StoreError> {
        let now = Timestamp::now().unix_millis().max(0) as u64;
        let Some(head) = deliveries::oldest_pending(&self.read()?, webhook_id)? else {
            return Ok(Claim::default());
        };
        Ok(if except.contains(&head.id) {
            Claim::default()
        } else if head.due_ms <= now {
            Claim {
                claimed: vec![head],
                next_ms: None,
            }
        } else {
            Claim {
                claimed: Vec::new(),
                next_ms: Some(head.due_ms),
            }
        })
    }

    /// How many deliveries are pending.
    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        deliveries::pending_count(&self.read()?)
    }

    /// A delivery and its webhook, read together, for an attempt.
    pub async fn delivery_to_send(
        &self,
        id: &str,
        webhook_id: &str,
    ) -> Result<Option<(Delivery, Webhook)>, StoreError> {
        let txn = self.read()?;
        Ok(deliveries::get(&txn, id)?.zip(txn.webhook(webhook_id)?))
    }

    /// Records an attempt and moves its delivery on; with `disable`, turns
    /// the webhook off in the same write (a `410 Gone`). Lazy: if a crash
    /// loses this record the delivery is still pending and is sent again
    /// with the same `webhook-id` (at least once). Returns the delivery as
    /// it now is, or `None` if it was deleted meanwhile.
    pub async fn record_attempt(
        &self,
        id: &str,
        attempt: Attempt,
        next: Next,
        health: Option<HealthUpdate>,
    ) -> Result<Option<Delivery>, StoreError> {
        let id = id.to_owned();
        let updated = self
            .write_lazy(move |txn| {
                let updated = deliveries::record_attempt(txn, &id, &attempt, &next)?;
                if let (Some(health), Some(d)) = (&health, &updated) {
                    repos::note_attempt(txn, &d.webhook_id, health)?;
                }
                Ok(updated)
            })
            .await?;
        if let Some(d) = &updated
            && let Some(at) = d.next_attempt_at
        {
            self.announce.due([Due {
                webhook: d.webhook_id.clone(),
                at,
            }]);
        }
        Ok(updated)
    }

    /// Keeps a Test Webhook of a saved webhook in its history: the delivery
    /// and, if it was sent, its one attempt.
    pub async fn record_test(
        &self,
        delivery: Delivery,
        attempt: Option<Attempt>,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            deliveries::create(txn, &delivery)?;
            if let Some(attempt) = attempt {
                let next = if attempt.succeeded {
                    Next::Succeeded
                } else {
                    Next::Failed
                };
                deliveries::record_attempt(txn, &delivery.id, &attempt, &next)?;
            }
            Ok(())
        })
        .await
    }

    /// Makes a delivery pending again, due now, keeping its id.
    pub async fn redeliver(&self, id: &str) -> Result<Delivery, StoreError> {
        let key = id.to_owned();
        let delivery = self
            .write(move |txn| deliveries::redeliver(txn, &key, Timestamp::now()))
            .await?;
        self.announce
            .due(crate::store::due_of(std::slice::from_ref(&delivery)));
        Ok(delivery)
    }

    pub async fn retry_failed(
        &self,
        webhook_id: &str,
        since: Timestamp,
        dry_run: bool,
    ) -> Result<usize, StoreError> {
        use super::schema::{DELIVERIES, WEBHOOK_DELIVERIES};
        if dry_run {
            let txn = self.read()?;
            if txn.webhook(webhook_id)?.is_none() {
                return Err(StoreError::not_found("webhook", webhook_id));
            }
            let index = txn.open_table(WEBHOOK_DELIVERIES)?;
            let table = txn.open_table(DELIVERIES)?;
            return Ok(deliveries::failed_since(&index, &table, webhook_id, since)?.len());
        }
        let webhook_id = webhook_id.to_owned();
        let now = Timestamp::now();
        let redelivered = self
            .write(move |txn| {
                if txn.webhook(&webhook_id)?.is_none() {
                    return Err(StoreError::not_found("webhook", &webhook_id));
                }
                let ids = {
                    let index = txn.open_table(WEBHOOK_DELIVERIES)?;
                    let table = txn.open_table(DELIVERIES)?;
                    deliveries::failed_since(&index, &table, &webhook_id, since)?
                };
                ids.iter()
                    .map(|id| deliveries::redeliver(txn, id, now))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        self.announce.due(crate::store::due_of(&redelivered));
        Ok(redelivered.len())
    }

    pub async fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        deliveries::get(&self.read()?, id)
    }

    /// A delivery's attempts, in order.
    pub async fn attempts(&self, delivery_id: &str) -> Result<Vec<Attempt>, StoreError> {
        deliveries::attempts(&self.read()?, delivery_id)
    }

    /// An event's deliveries, oldest first.
    pub async fn deliveries_of_event(&self, event_id: &str) -> Result<Vec<Delivery>, StoreError> {
        deliveries::for_event(&self.read()?, event_id)
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
        let txn = self.read()?;
        if txn.webhook(webhook_id)?.is_none() {
            return Err(StoreError::not_found("webhook", webhook_id));
        }
        deliveries::list_for_webhook(&txn, webhook_id, state, before, limit)
    }

    // Repositories and webhooks.

    /// Creates a repository with its webhooks. `Conflict` if one of the same
    /// kind, name and registry exists.
    pub async fn create_repository(
        &self,
        repo: Repository,
        webhooks: Vec<Webhook>,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            crate::store::refuse_clash(&repo, &txn.repositories_named(&repo.name)?)?;
            repos::put_repository(txn, &repo)?;
            for w in &webhooks {
                repos::put_webhook(txn, w)?;
            }
            Ok(())
        })
        .await
    }

    /// Replaces a repository's settings, keeping the poll status the poller
    /// wrote meanwhile. Returns it as stored.
    pub async fn update_repository(&self, repo: Repository) -> Result<Repository, StoreError> {
        self.write(move |txn| {
            let Some(current) = txn.repository(&repo.id)? else {
                return Err(StoreError::not_found("repository", &repo.id));
            };
            let fresh = Repository {
                poll: current.poll,
                ..repo
            };
            repos::put_repository(txn, &fresh)?;
            Ok(fresh)
        })
        .await
    }

    /// Deletes a repository, its webhooks (their pending deliveries end) and
    /// its known tags; its events stay in the log.
    pub async fn delete_repository(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write(move |txn| repos::delete_repository(txn, &id).map(drop))
            .await
    }

    pub async fn repository(&self, id: &str) -> Result<Option<Repository>, StoreError> {
        self.read()?.repository(id)
    }

    /// Every repository, in creation order.
    pub async fn repositories(&self) -> Result<Vec<Repository>, StoreError> {
        repos::list_repositories(&self.read()?)
    }

    /// A repository's known tags, by tag.
    pub async fn tags(&self, repository_id: &str) -> Result<Vec<(String, KnownTag)>, StoreError> {
        self.read()?.tags_of(repository_id)
    }

    /// Adds a webhook to its repository. `NotFound` if the repository is
    /// gone.
    pub async fn create_webhook(&self, webhook: Webhook) -> Result<(), StoreError> {
        self.write(move |txn| {
            if txn.repository(&webhook.repository_id)?.is_none() {
                return Err(StoreError::not_found("repository", &webhook.repository_id));
            }
            repos::put_webhook(txn, &webhook)
        })
        .await
    }

    /// Replaces a webhook. Enabling a disabled one makes its pending
    /// deliveries due again.
    pub async fn update_webhook(&self, webhook: Webhook) -> Result<(), StoreError> {
        let id = webhook.id.clone();
        let enabled = webhook.enabled;
        let was_enabled = self
            .write(move |txn| {
                let Some(current) = txn.webhook(&webhook.id)? else {
                    return Err(StoreError::not_found("webhook", &webhook.id));
                };
                repos::put_webhook(txn, &webhook)?;
                Ok(current.enabled)
            })
            .await?;
        if enabled && !was_enabled {
            self.announce.due([Due {
                webhook: id,
                at: Timestamp::now(),
            }]);
        }
        Ok(())
    }

    /// Deletes a webhook; its pending deliveries end as `failed`.
    pub async fn delete_webhook(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write(move |txn| repos::delete_webhook(txn, &id)).await
    }

    pub async fn webhook(&self, id: &str) -> Result<Option<Webhook>, StoreError> {
        self.read()?.webhook(id)
    }

    /// A repository's webhooks, in creation order. `NotFound` if the
    /// repository does not exist.
    pub async fn webhooks_of(&self, repository_id: &str) -> Result<Vec<Webhook>, StoreError> {
        let txn = self.read()?;
        if txn.repository(repository_id)?.is_none() {
            return Err(StoreError::not_found("repository", repository_id));
        }
        txn.webhooks_of(repository_id)
    }

    /// Every webhook.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        repos::list_webhooks(&self.read()?)
    }

    /// The id of the key the store's secrets are sealed with, once one was
    /// recorded (`seal::Sealer::key_id`).
    pub async fn sealing_key_id(&self) -> Result<Option<String>, StoreError> {
        meta_text(&self.read()?, SEAL_KEY_ID)
    }

    /// Records the id of the key the store's secrets are sealed with.
    pub async fn set_sealing_key_id(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write(move |txn| {
            txn.open_table(super::schema::META)?
                .insert(SEAL_KEY_ID, id.as_bytes())?;
            Ok(())
        })
        .await
    }

    // Housekeeping.

    /// Deletes up to `batch` events and `batch` finished deliveries created
    /// before `cutoff`, but those of the webhooks in `own`.
    pub async fn prune(
        &self,
        cutoff: Timestamp,
        batch: usize,
        own: &HashSet<String>,
    ) -> Result<Pruned, StoreError> {
        let own = own.clone();
        self.write(move |txn| retention::prune(txn, cutoff, batch, &own))
            .await
    }

    /// Deletes up to `batch` finished deliveries of one webhook created
    /// before `cutoff`.
    pub async fn prune_webhook(
        &self,
        webhook_id: &str,
        cutoff: Timestamp,
        batch: usize,
    ) -> Result<usize, StoreError> {
        let webhook_id = webhook_id.to_owned();
        self.write(move |txn| retention::prune_webhook(txn, &webhook_id, cutoff, batch))
            .await
    }
}

/// Where the sealing key's id is kept in the meta table.
pub(super) const SEAL_KEY_ID: &str = "seal_key_id";

pub(super) fn meta_text(
    txn: &redb::ReadTransaction,
    key: &str,
) -> Result<Option<String>, StoreError> {
    let meta = txn.open_table(super::schema::META)?;
    let value = meta.get(key)?;
    Ok(value.map(|v| String::from_utf8_lossy(v.value()).into_owned()))
}
