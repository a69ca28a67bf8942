//! The store's behaviours through its public API, on both engines: a redb
//! file in a temporary directory, and a fresh database in a throwaway
//! PostgreSQL cluster. Each test runs the same steps on each engine; the
//! last one runs a whole gateway on PostgreSQL.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use callisto::changes::{Notification, TagChange};
use callisto::event::{EventSource, EventType, Timestamp, new_id};
use callisto::records::{
    Attempt, AttemptHealth, Delivery, DeliveryKind, DeliveryState, DisablePolicy, RemoteSettings,
    Repository, RepositoryKind, Request, SignatureScheme, Webhook,
};
use callisto::store::{
    EventFilter, Fold, HealthUpdate, Leadership, Next, PollClaim, Store, StoreError,
};
use callisto_tests::receiver::Receiver;
use serde_json::json;

use crate::delivery::{DIGEST, eventually, ingest, push_envelope, repository, verify_standard};

#[derive(Debug, Clone, Copy)]
enum Engine {
    Redb,
    Postgres,
}

const ENGINES: [Engine; 2] = [Engine::Redb, Engine::Postgres];

/// A store on `engine`, and what keeps it (the redb file's directory).
async fn open(engine: Engine) -> (Option<tempfile::TempDir>, Store) {
    match engine {
        Engine::Redb => {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("callisto.redb")).unwrap();
            (Some(dir), store)
        }
        Engine::Postgres => {
            let url = tokio::task::spawn_blocking(callisto_tests::postgres::database)
                .await
                .unwrap();
            (None, Store::connect(&url).await.unwrap())
        }
    }
}

fn webhook(repository_id: &str) -> Webhook {
    let now = Timestamp::now();
    Webhook {
        id: new_id("wh"),
        repository_id: repository_id.into(),
        url: "http://127.0.0.1:9/hook".into(),
        secret: None,
        plugin: "default".into(),
        config: vec![],
        enabled: true,
        retry_schedule_secs: None,
        disabled_reason: None,
        headers: vec![("x-team".to_owned(), "core".to_owned())],
        rate_limit_per_sec: None,
        ordering: Default::default(),
        failing_since: None,
        dead_in_a_row: 0,
        disabled_at: None,
        previous_secret: None,
        previous_secret_until: None,
        retention_days: None,
        coalesce_secs: None,
        operational_events: false,
        client_certificate: None,
        created_at: now,
        updated_at: now,
    }
}

fn pushed(key: &str, repo: &str, tag: &str, digest: &str) -> Notification {
    notification(
        key,
        repo,
        TagChange::Pushed {
            tag: tag.into(),
            digest: digest.into(),
            media_type: None,
            size: None,
        },
    )
}

fn notification(key: &str, repo: &str, change: TagChange) -> Notification {
    Notification {
        dedupe_key: key.into(),
        repository: repo.into(),
        host: None,
        change,
        actor: None,
        occurred_at: Timestamp::now(),
        source: EventSource::Local,
    }
}

fn delivery_for(event_id: &str, webhook: &Webhook) -> Delivery {
    Delivery::new(
        DeliveryKind::Event,
        event_id,
        webhook,
        Ok(Request {
            content_type: "application/json".into(),
            headers: vec![],
            body: b"{}".to_vec(),
            signature: SignatureScheme::StandardWebhooks,
        }),
        Timestamp::now(),
    )
}

fn attempt(number: u32, succeeded: bool) -> Attempt {
    Attempt {
        number,
        started_at: Timestamp::now(),
        duration_ms: 3,
        url: "http://127.0.0.1:9/hook".into(),
        request_headers: vec![],
        response: None,
        error: (!succeeded).then(|| "connection refused".into()),
        succeeded,
    }
}

/// A repository with one webhook, and one event planned to it: the
/// delivery's id.
async fn one_planned_delivery(store: &Store) -> (Webhook, String) {
    let repo = Repository::new_local("demo/app");
    let hook = webhook(&repo.id);
    store
        .create_repository(repo.clone(), vec![hook.clone()])
        .await
        .unwrap();
    let recorded = store
        .record_notifications(vec![pushed("k1", "demo/app", "v1", "sha256:a")])
        .await
        .unwrap();
    let batch = store.next_to_plan(100).await.unwrap();
    let planned = vec![delivery_for(&recorded.events[0].id, &hook)];
    let id = planned[0].id.clone();
    store
        .plan_deliveries(batch.cursor, batch.last, planned, vec![])
        .await
        .unwrap();
    (hook, id)
}

/// A delivery due `in_ms` from now, as fan-out makes one for a webhook
/// with a coalescing window.
fn gathering_delivery(event_id: &str, webhook: &Webhook, in_ms: i64) -> Delivery {
    let mut d = delivery_for(event_id, webhook);
    d.next_attempt_at = Some(Timestamp::from_unix_millis(
        Timestamp::now().unix_millis() + in_ms,
    ));
    d
}

#[tokio::test]
async fn a_gathering_delivery_is_found_folded_once_and_never_claimed() {
    for engine in ENGINES {
        let (_keep, store) = open(engine).await;
        let repo = Repository::new_local("demo/app");
        let hook = webhook(&repo.id);
        store
            .create_repository(repo.clone(), vec![hook.clone()])
            .await
            .unwrap();
        store
            .record_notifications(vec![
                pushed("c:1", "demo/app", "v1", "sha256:a"),
                pushed("c:2", "demo/app", "v2", "sha256:b"),
            ])
            .await
            .unwrap();
        let batch = store.next_to_plan(100).await.unwrap();
        let (e1, e2) = (&batch.events[0].id, &batch.events[1].id);
        let first = gathering_delivery(e1, &hook, 60_000);
        store
            .plan_deliveries(batch.cursor, batch.last, vec![first.clone()], vec![])
            .await
            .unwrap();

        // Found while due later than asked; not once the window is about
        // to end.
        let now = Timestamp::now();
        let found = store.gathering(&hook.id, now).await.unwrap().unwrap();
        assert_eq!(found.delivery_id, first.id, "{engine:?}");
        assert_eq!(&found.event_id, e1);
        let late = Timestamp::from_unix_millis(now.unix_millis() + 120_000);
        assert_eq!(store.gathering(&hook.id, late).await.unwrap(), None);

        // The second event's delivery takes its place.
        let mut second = gathering_delivery(e2, &hook, 60_000);
        second.next_attempt_at = first.next_attempt_at;
        second.folded = vec![e1.clone()];
        let fold = Fold {
            delivery_id: first.id.clone(),
            into: second.id.clone(),
        };
        let more = store
            .record_notifications(vec![pushed("c:3", "demo/app", "v3", "sha256:c")])
            .await
            .unwrap();
        assert_eq!(more.events.len(), 1);
        let batch = store.next_to_plan(100).await.unwrap();
        store
            .plan_deliveries(
                batch.cursor,
                batch.last,
                vec![second.clone()],
                vec![fold.clone()],
            )
            .await
            .unwrap();
        let folded = store.delivery(&first.id).await.unwrap().unwrap();
        assert_eq!(folded.state, DeliveryState::Folded, "{engine:?}");
        assert_eq!(folded.folded_into.as_deref(), Some(second.id.as_str()));
        assert_eq!(folded.next_attempt_at, None);
        let carrier = store.delivery(&second.id).await.unwrap().unwrap();
        assert_eq!(carrier.folded, std::slice::from_ref(e1), "{engine:?}");
        assert_eq!(
            store
                .gathering(&hook.id, now)
                .await
                .unwrap()
                .unwrap()
                .delivery_id,
            second.id
        );
        // Only the carrier is pending.
        let due = store.due_deliveries(&hook.id, 10).await.unwrap();
        assert_eq!(
            due.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
            [second.id.clone()],
            "{engine:?}"
        );
        assert_eq!(store.pending_count().await.unwrap(), 1, "{engine:?}");

        // Folding it twice is refused, and refusal writes nothing: the
        // cursor stays.
        store
            .record_notifications(vec![pushed("c:4", "demo/app", "v4", "sha256:d")])
            .await
            .unwrap();
        let batch = store.next_to_plan(100).await.unwrap();
        let third = gathering_delivery(&batch.events[0].id, &hook, 60_000);
        let err = store
            .plan_deliveries(batch.cursor, batch.last, vec![third.clone()], vec![fold])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{engine:?}: {err}");
        assert_eq!(store.delivery(&third.id).await.unwrap(), None);
        assert_eq!(store.next_to_plan(100).await.unwrap().events.len(), 1);

        // A redelivered (due now) delivery gathers no more.
        store.redeliver(&second.id).await.unwrap();
        let soon = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 2_000);
        assert_eq!(
            store.gathering(&hook.id, soon).await.unwrap(),
            None,
            "{engine:?}"
        );
    }
}

#[tokio::test]
async fn repositories_and_webhooks_are_created_listed_and_refused_twice() {
    for engine in ENGINES {
        let (_keep, store) = open(engine).await;
        let repo = Repository::new_local("demo/app");
        let hook = webhook(&repo.id);
        store
            .create_repository(repo.clone(), vec![hook.clone()])
            .await
            .unwrap();
        let again = Repository::new_local("demo/app");
        let err = store.create_repository(again, vec![]).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{engine:?}: {err}");

        assert_eq!(
            store.repository(&repo.id).await.unwrap(),
            Some(repo.clone())
        );
        assert_eq!(
            store.repositories().await.unwrap(),
            std::slice::from_ref(&repo)
        );
        assert_eq!(
            store.webhooks_of(&repo.id).await.unwrap(),
            std::slice::from_ref(&hook)
        );
        let second = webhook(&repo.id);
        store.create_webhook(second.clone()).await.unwrap();
        assert_eq!(store.webhooks().await.unwrap().len(), 2, "{engine:?}");
        let orphan = webhook("repo_missing");
        assert!(matches!(
            store.create_webhook(orphan).await.unwrap_err(),
            StoreError::NotFound { .. }
        ));

        let mut off = second.clone();
        off.enabled = false;
        store.update_webhook(off.clone()).await.unwrap();
        assert_eq!(store.webhook(&second.id).await.unwrap(), Some(off));
        store.delete_webhook(&second.id).await.unwrap();
        assert_eq!(store.webhook(&second.id).await.unwrap(), None);

        store.delete_repository(&repo.id).await.unwrap();
        assert!(store.repositories().await.unwrap().is_empty(), "{engine:?}");
        assert!(matches!(
            store.webhooks_of(&repo.id).await.unwrap_err(),
            StoreError::NotFound { .. }
        ));

        assert_eq!(store.sealing_key_id().await.unwrap(), None);
        store.set_sealing_key_id("key-1").await.unwrap();
        assert_eq!(
            store.sealing_key_id().await.unwrap().as_deref(),
            Some("key-1")
        );
    }
}

#[tokio::test]
async fn notifications_are_deduplicated_and_follow_the_tag_rules() {
    for engine in ENGINES {
        let (_keep, store) = open(engine).await;
        let first = store
            .record_notifications(vec![
                pushed("d:1", "demo/app", "v1", "sha256:a"),
                pushed("d:1", "demo/app", "v1", "sha256:a"),
                pushed("d:2", "demo/app", "v2", "sha256:a"),
            ])
            .await
            .unwrap();
        assert_eq!((first.events.len(), first.duplicates), (2, 1), "{engine:?}");
        let again = store
            .record_notifications(vec![pushed("d:2", "demo/app", "v2", "sha256:a")])
            .await
            .unwrap();
        assert_eq!((again.events.len(), again.duplicates), (0, 1), "{engine:?}");

        // The repository was created on first sight, and knows its tags.
        let repos = store.repositories().await.unwrap();
        assert_eq!(repos.len(), 1);
        let tags = store.tags(&repos[0].id).await.unwrap();
        assert_eq!(
            tags.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
            ["v1", "v2"]
        );

        // A push over a known tag carries the previous digest.
        let moved = store
            .record_notifications(vec![pushed("d:3", "demo/app", "v1", "sha256:b")])
            .await
            .unwrap();
        assert_eq!(moved.events[0].previous_digest.as_deref(), Some("sha256:a"));

        // A manifest deletion deletes its tags once; the tag deletions the
        // registry sends after it repeat nothing.
        let deleted = store
            .record_notifications(vec![notification(
                "d:4",
                "demo/app",
                TagChange::ManifestDeleted {
                    digest: "sha256:a".into(),
                },
            )])
            .await
            .unwrap();
        assert_eq!(deleted.events.len(), 1, "{engine:?}: only v2 had sha256:a");
        let tag_deleted = store
            .record_notifications(vec![notification(
                "d:5",
                "demo/app",
                TagChange::TagDeleted { tag: "v2".into() },
            )])
            .await
            .unwrap();
        assert!(tag_deleted.events.is_empty(), "{engine:?}");

        let (events, more) = store
            .events(&EventFilter {
                limit: 10,
                ..EventFilter::default()
            })
            .await
            .unwrap();
        assert!(!more);
        assert_eq!(events.len(), 4, "{engine:?}");
        assert_eq!(events[0].kind, EventType::ImageDeleted, "newest first");
        assert_eq!(
            store.event(&events[3].id).await.unwrap().as_ref(),
            Some(&events[3])
        );
        let replay = store.events_from(&events[1].id).await.unwrap();
        assert_eq!(replay.len(), 2);
    }
}

#[tokio::test]
async fn a_poll_learns_moves_and_forgets_tags() {
    for engine in ENGINES {
        let (_keep, store) = open(engine).await;
        let repo = Repository::new_local("mirror/app");
        store.create_repository(repo.clone(), vec![]).await.unwrap();
        let observed = |pairs: &[(&str, &str)]| -> (HashSet<String>, BTreeMap<String, String>) {
            (
                pairs.iter().map(|(t, _)| t.to_string()).collect(),
                pairs
                    .iter()
                    .map(|(t, d)| (t.to_string(), d.to_string()))
                    .collect(),
            )
        };
        let (listed, digests) = observed(&[("v1", "sha256:a"), ("v2", "sha256:b")]);
        assert_eq!(
            store
                .apply_poll(&repo.id, listed, digests, 5)
                .await
                .unwrap(),
            2,
            "{engine:?}"
        );
        let (listed, digests) = observed(&[("v1", "sha256:c")]);
        assert_eq!(
            store
                .apply_poll(&repo.id, listed, digests, 5)
                .await
                .unwrap(),
            2,
            "{engine:?}: v1 moved, v2 went"
        );
        let stored = store.repository(&repo.id).await.unwrap().unwrap();
        assert!(stored.poll.synced && stored.poll.next_poll_at.is_some());
        assert_eq!(store.tags(&repo.id).await.unwrap().len(), 1);

        let next = Timestamp::now();
        store
            .record_poll_failure(&repo.id, "timed out".into(), 7, next)
            .await
            .unwrap();
        let stored = store.repository(&repo.id).await.unwrap().unwrap();
        assert_eq!(stored.poll.consecutive_errors, 1, "{engine:?}");
        assert_eq!(stored.poll.last_error.as_deref(), Some("timed out"));
    }
}

#[tokio::test]
async fn deliveries_are_planned_exactly_once() {
    for engine in ENGINES {
        let (_keep, store) = open(engine).await;
        let repo = Repository::new_local("demo/app");
        let hook = webhook(&repo.id);
        store
            .create_repository(repo.clone(), vec![hook.clone()])
            .await
            .unwrap();
        store
            .record_notifications(vec![
                pushed("p:1", "demo/app", "v1", "sha256:a"),
                pushed("p:2", "demo/app", "v2", "sha256:a"),
            ])
            .await
            .unwrap();
        let batch = store.next_to_plan(100).await.unwrap();
        assert_eq!(batch.events.len(), 2, "{engine:?}");
        assert_eq!(batch.webhooks[&repo.id], std::slice::from_ref(&hook));
        let planned: Vec<Delivery> = batch
            .events
            .iter()
            .map(|e| delivery_for(&e.id, &hook))
            .collect();
        store
            .plan_deliveries(batch.cursor, batch.last, planned.clone(), vec![])
            .await
            .unwrap();
        // The same batch again: the cursor has moved, nothing is planned.
        let again: Vec<Delivery> = batch
            .events
            .iter()
            .map(|e| delivery_for(&e.id, &hook))
            .collect();
        let err = store
            .plan_deliveries(batch.cursor, batch.last, again, vec![])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{engine:?}: {err}");
        assert!(store.next_to_plan(100).await.unwrap().events.is_empty());

        assert_eq!(store.pending_count().await.unwrap(), 2, "{engine:?}");
        let due = store.due_deliveries(&hook.id, 10).await.unwrap();
        assert_eq!(due.len(), 2);
        let with_due = store.webhooks_with_due().await.unwrap();
        assert_eq!(with_due.len(), 1);
        assert_eq!(with_due[0].0, hook.id);
        let of_event = store
            .deliveries_of_event(&batch.events[0].id)
            .await
            .unwrap();
        assert_eq!(of_event, [planned[0].clone()], "{engine:?}");
    }
}

/// Attempts recorded at once (the sender's, as they end together) are each
/// answered with their own delivery, moved on as their own attempt said;
/// on redb they share the writer's commit.
#[tokio::test]
async fn concurrent_attempts_are_each_recorded_and_answered() {
    const N: usize = 40;
    for engine in ENGINES {
        let (_keep, store) = open(engine).await;
        let repo = Repository::new_local("demo/app");
        let hook = webhook(&repo.id);
        store
            .create_repository(repo.clone(), vec![hook.clone()])
            .await
            .unwrap();
        let notifications = (0..N)
            .map(|i| pushed(&format!("k{i}"), "demo/app", &format!("t{i}"), "sha256:a"))
            .collect();
        let recorded = store.record_notifications(notifications).await.unwrap();
        let batch = store.next_to_plan(1000).await.unwrap();
        let planned: Vec<_> = recorded
            .events
            .iter()
            .map(|e| delivery_for(&e.id, &hook))
            .collect();
        let ids: Vec<String> = planned.iter().map(|d| d.id.clone()).collect();
        store
            .plan_deliveries(batch.cursor, batch.last, planned, vec![])
            .await
            .unwrap();
        // Even ones succeed, odd ones are retried in a minute.
        let retry_at = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 60_000);
        let answers = futures_join_all(ids.iter().enumerate().map(|(i, id)| {
            let store = store.clone();
            let id = id.clone();
            async move {
                let next = if i % 2 == 0 {
                    Next::Succeeded
                } else {
                    Next::Retry { at: retry_at }
                };
                store
                    .record_attempt(&id, attempt(1, i % 2 == 0), next, None)
                    .await
            }
        }))
        .await;
        for (i, (answer, id)) in answers.into_iter().zip(&ids).enumerate() {
            let d = answer.unwrap().unwrap();
            assert_eq!(&d.id, id, "{engine:?}: answered with another delivery");
            let want = if i % 2 == 0 {
                DeliveryState::Succeeded
            } else {
                DeliveryState::Pending
            };
            assert_eq!(d.state, want, "{engine:?}");
            assert_eq!(store.attempts(id).await.unwrap().len(), 1, "{engine:?}");
        }
        assert_eq!(
            store.pending_count().await.unwrap(),
            (N / 2) as u64,
            "{engine:?}"
        );
    }
}

/// Runs the futures concurrently, answers in their order.
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn attempts_are_recorded_and_a_delivery_is_redelivered() {
    for engine in ENGINES {
        let (_keep, store) = open(engine).await;
        let (hook, id) = one_planned_delivery(&store).await;
        let (d, w) = store
            .delivery_to_send(&id, &hook.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.id.as_str(), w.id.as_str()),
            (id.as_str(), hook.id.as_str())
        );

        let retry_at = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 60_000);
        let after = store
            .record_attempt(&id, attempt(1, false), Next::Retry { at: retry_at }, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after.state, DeliveryState::Pending, "{engine:?}");
        assert_eq!(after.attempts, 1);
        let due = store.due_deliveries(&hook.id, 10).await.unwrap();
        assert_eq!(due[0].due_ms, retry_at.unix_millis() as u64, "{engine:?}");

        let done = store
            .record_attempt(&id, attempt(2, true), Next::Succeeded, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.state, DeliveryState::Succeeded);
        assert_eq!(store.pending_count().await.unwrap(), 0, "{engine:?}");
        assert_eq!(store.attempts(&id).await.unwrap().len(), 2);

        let again = store.redeliver(&id).await.unwrap();
        assert_eq!(
            (again.id.as_str(), again.state),
            (id.as_str(), DeliveryState::Pending)
        );
        assert_eq!(store.pending_count().await.unwrap(), 1, "{engine:?}");
        assert!(matches!(
            store.redeliver("dlv_missing").await.unwrap_err(),
            StoreError::NotFound { .. }
        ));

        // A 410 turns the webhook off in the same write.
        let gone = store
            .record_attempt(
                &id,
                attempt(3, false),
                Next::Failed,
                Some(HealthUpdate {
                    attempt: AttemptHealth {
                        at: Timestamp::now(),
                        succeeded: false,
                        dead: false,
                        gone: true,
                    },
                    policy: DisablePolicy {
                        failing_for_ms: None,
                        dead_in_a_row: None,
                    },
                }),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(gone.state, DeliveryState::Failed);
        assert!(
            !store.webhook(&hook.id).await.unwrap().unwrap().enabled,
            "{engine:?}"
        );
    }
}

/// A failed attempt, and what the sender reports of it to the webhook.
fn failed(number: u32, dead: bool, policy: DisablePolicy) -> (Attempt, Option<HealthUpdate>) {
    let attempt = attempt(number, false);
    let health = HealthUpdate {
        attempt: AttemptHealth {
            at: attempt.started_at,
            succeeded: false,
            dead,
            gone: false,
        },
        policy,
    };
    (attempt, Some(health))
}

#[tokio::test]
async fn a_failing_streak_disables_fifo_claims_the_oldest_and_a_bulk_retry_resends() {
    for engine in ENGINES {
        let (_keep, store) = open(engine).await;
        let (hook, first) = one_planned_delivery(&store).await;
        let policy = DisablePolicy {
            failing_for_ms: None,
            dead_in_a_row: Some(2),
        };
        let later = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 60_000);
        // The first fails and is retried in a minute: the streak begins.
        let (a, h) = failed(1, false, policy);
        store
            .record_attempt(&first, a, Next::Retry { at: later }, h)
            .await
            .unwrap();
        let w = store.webhook(&hook.id).await.unwrap().unwrap();
        assert!(w.failing_since.is_some() && w.enabled, "{engine:?}");

        // A second delivery, made later but due now: FIFO still claims the
        // first (not due: nothing), parallel claims the second.
        let event = store.delivery(&first).await.unwrap().unwrap().event_id;
        let second = delivery_for(&event, &hook);
        store
            .add_deliveries(&hook.id, vec![second.clone()])
            .await
            .unwrap();
        let lease = Duration::from_secs(60);
        let none = HashSet::new();
        let fifo = store.claim_oldest(&hook.id, lease, &none).await.unwrap();
        assert!(fifo.claimed.is_empty(), "{engine:?}: {fifo:?}");
        assert_eq!(fifo.next_ms, Some(later.unix_millis() as u64), "{engine:?}");
        let sending = HashSet::from([first.clone()]);
        let fifo = store.claim_oldest(&hook.id, lease, &sending).await.unwrap();
        assert_eq!(fifo, Default::default(), "{engine:?}");

        // Both die: two dead in a row disable the webhook, with the reason.
        let (a, h) = failed(2, true, policy);
        store
            .record_attempt(&first, a, Next::Dead, h)
            .await
            .unwrap();
        // The FIFO head is the second now.
        let fifo = store.claim_oldest(&hook.id, lease, &none).await.unwrap();
        let claimed: Vec<&str> = fifo.claimed.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(claimed, [second.id.as_str()], "{engine:?}");
        let (a, h) = failed(1, true, policy);
        store
            .record_attempt(&second.id, a, Next::Dead, h)
            .await
            .unwrap();
        let w = store.webhook(&hook.id).await.unwrap().unwrap();
        assert!(!w.enabled, "{engine:?}");
        assert!(
            w.disabled_reason
                .as_deref()
                .unwrap()
                .starts_with("2 deliveries died in a row"),
            "{engine:?}: {w:?}"
        );
        assert_eq!(w.dead_in_a_row, 2);

        // A bulk retry from the streak's start: both, counted first.
        let since = w.failing_since.unwrap();
        assert_eq!(
            store.retry_failed(&hook.id, since, true).await.unwrap(),
            2,
            "{engine:?}"
        );
        assert_eq!(store.pending_count().await.unwrap(), 0, "{engine:?}");
        assert_eq!(
            store.retry_failed(&hook.id, since, false).await.unwrap(),
            2,
            "{engine:?}"
        );
        assert_eq!(store.pending_count().await.unwrap(), 2, "{engine:?}");
        let again = store.delivery(&first).await.unwrap().unwrap();
        assert_eq!((again.state, again.attempts), (DeliveryState::Pending, 2));
        // Nothing made after now; an unknown webhook is not found.
        let future = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 1_000);
        assert_eq!(
            store.retry_failed(&hook.id, future, false).await.unwrap(),
            0
        );
        assert!(matches!(
            store
                .retry_failed("wh_missing", since, false)
                .await
                .unwrap_err(),
            StoreError::NotFound { .. }
        ));

        // A success ends the streak.
        store
            .record_attempt(
                &first,
                attempt(3, true),
                Next::Succeeded,
                Some(HealthUpdate {
                    attempt: AttemptHealth {
                        at: Timestamp::now(),
                        succeeded: true,
                        dead: false,
                        gone: false,
                    },
                    policy,
                }),
            )
            .await
            .unwrap();
        let w = store.webhook(&hook.id).await.unwrap().unwrap();
        assert_eq!((w.failing_since, w.dead_in_a_row), (None, 0), "{engine:?}");
    }
}

#[tokio::test]
async fn a_webhook_with_its_own_retention_is_pruned_apart_from_the_others() {
    for engine in ENGINES {
        let (_keep, store) = open(engine).await;
        let (own, kept) = one_planned_delivery(&store).await;
        let other = webhook(&own.repository_id);
        store.create_webhook(other.clone()).await.unwrap();
        let event = store.delivery(&kept).await.unwrap().unwrap().event_id;
        let theirs = delivery_for(&event, &other);
        let pending = delivery_for(&event, &own);
        store
            .add_deliveries(&other.id, vec![theirs.clone()])
            .await
            .unwrap();
        store
            .add_deliveries(&own.id, vec![pending.clone()])
            .await
            .unwrap();
        for id in [&kept, &theirs.id] {
            store
                .record_attempt(id, attempt(1, true), Next::Succeeded, None)
                .await
                .unwrap();
        }
        let later = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 60_000);
        // The gateway's pass leaves the webhook with its own retention alone.
        let own_ids = HashSet::from([own.id.clone()]);
        let pruned = store.prune(later, 100, &own_ids).await.unwrap();
        assert_eq!(pruned.deliveries, 1, "{engine:?}");
        assert!(
            store.delivery(&theirs.id).await.unwrap().is_none(),
            "{engine:?}"
        );
        assert!(store.delivery(&kept).await.unwrap().is_some(), "{engine:?}");
        // Its own pass prunes its finished deliveries, not the pending one.
        assert_eq!(
            store.prune_webhook(&own.id, later, 100).await.unwrap(),
            1,
            "{engine:?}"
        );
        assert!(store.delivery(&kept).await.unwrap().is_none(), "{engine:?}");
        assert!(
            store.delivery(&pending.id).await.unwrap().is_some(),
            "{engine:?}"
        );
        assert!(
            store.attempts(&kept).await.unwrap().is_empty(),
            "{engine:?}"
        );
        let earlier = Timestamp::from_unix_millis(Timestamp::now().unix_millis() - 60_000);
        assert_eq!(store.prune_webhook(&own.id, earlier, 100).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn deliveries_and_events_page_newest_first() {
    for engine in ENGINES {
        let (_keep, store) = open(engine).await;
        let (hook, _) = one_planned_delivery(&store).await;
        let event = store
            .events(&EventFilter {
                limit: 1,
                ..EventFilter::default()
            })
            .await
            .unwrap()
            .0
            .remove(0);
        let mut added = Vec::new();
        for _ in 0..4 {
            added.push(delivery_for(&event.id, &hook));
            // Ids are ULIDs: a millisecond apart, they sort as created.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        store.add_deliveries(&hook.id, added).await.unwrap();

        let (page, more) = store
            .deliveries_of_webhook(&hook.id, None, None, 2)
            .await
            .unwrap();
        assert_eq!(page.len(), 2);
        assert!(more, "{engine:?}");
        assert!(page[0].id > page[1].id, "newest first");
        let (rest, more) = store
            .deliveries_of_webhook(&hook.id, None, Some(&page[1].id), 10)
            .await
            .unwrap();
        assert_eq!(rest.len(), 3, "{engine:?}");
        assert!(!more);
        let (none, _) = store
            .deliveries_of_webhook(&hook.id, Some(DeliveryState::Succeeded), None, 10)
            .await
            .unwrap();
        assert!(none.is_empty());

        store
            .record_notifications(vec![
                pushed("e:2", "demo/app", "v2", "sha256:a"),
                pushed("e:3", "demo/app", "v3", "sha256:a"),
            ])
            .await
            .unwrap();
        let filter = EventFilter {
            limit: 2,
            ..EventFilter::default()
        };
        let (newest, more) = store.events(&filter).await.unwrap();
        assert!(more, "{engine:?}");
        let (older, more) = store
            .events(&EventFilter {
                before: Some(newest[1].id.clone()),
                ..filter.clone()
            })
            .await
            .unwrap();
        assert_eq!((older.len(), more), (1, false), "{engine:?}");
        assert_eq!(older[0].id, event.id);
        let none = store
            .events(&EventFilter {
                kind: Some(EventType::ImageDeleted),
                ..filter.clone()
            })
            .await
            .unwrap();
        assert!(none.0.is_empty());
        assert!(matches!(
            store
                .events(&EventFilter {
                    before: Some("evt_missing".into()),
                    ..filter
                })
                .await
                .unwrap_err(),
            StoreError::NotFound { .. }
        ));
    }
}

#[tokio::test]
async fn retention_prunes_old_events_and_finished_deliveries_not_pending_ones() {
    for engine in ENGINES {
        let (_keep, store) = open(engine).await;
        let (hook, done) = one_planned_delivery(&store).await;
        store
            .record_attempt(&done, attempt(1, true), Next::Succeeded, None)
            .await
            .unwrap();
        let event = store.delivery(&done).await.unwrap().unwrap().event_id;
        store
            .add_deliveries(&hook.id, vec![delivery_for(&event, &hook)])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let cutoff = Timestamp::now();
        let pruned = store.prune(cutoff, 100, &HashSet::new()).await.unwrap();
        assert_eq!((pruned.events, pruned.deliveries), (1, 1), "{engine:?}");
        assert_eq!(store.delivery(&done).await.unwrap(), None);
        assert_eq!(store.pending_count().await.unwrap(), 1, "{engine:?}");
        // The key went with its event: a notification under the same key
        // is recorded again (a new digest: the tag's known digest stays,
        // and the same one again would be no change).
        let again = store
            .record_notifications(vec![pushed("k1", "demo/app", "v1", "sha256:b")])
            .await
            .unwrap();
        assert_eq!(again.events.len(), 1, "{engine:?}");
        assert!(
            store
                .prune(cutoff, 100, &HashSet::new())
                .await
                .unwrap()
                .is_empty()
        );
        // Every event fanned out was pruned: what comes next is still past
        // the fan-out cursor, not numbered from the start again behind it.
        let batch = store.next_to_plan(100).await.unwrap();
        assert_eq!(batch.events.len(), 1, "{engine:?}");
        assert_eq!(batch.events[0].id, again.events[0].id, "{engine:?}");
    }
}

/// A database as the previous version left it (schema 5), holding a
/// delivery claimed by a gateway that died and one never claimed, is
/// brought to schema 6 on connect: both stay pending, the claimed one
/// becomes claimable when its lease ends and not before.
#[tokio::test]
async fn a_schema_5_database_keeps_its_pending_deliveries_and_their_leases() {
    let url = tokio::task::spawn_blocking(callisto_tests::postgres::database)
        .await
        .unwrap();
    let cluster = callisto_tests::postgres::cluster();
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gateway/src/store/postgres/migrations"
    );
    let mut schema = String::from(
        "CREATE TABLE schema_version (version integer NOT NULL);
         INSERT INTO schema_version (version) VALUES (5);",
    );
    for file in [
        "0001_initial.sql",
        "0002_claims.sql",
        "0003_poll_leases.sql",
        "0004_plugins.sql",
        "0005_delivery_ops.sql",
    ] {
        schema.push_str(&std::fs::read_to_string(format!("{dir}/{file}")).unwrap());
    }
    cluster.sql_in(&url, &schema);

    let repo = Repository::new_local("demo/app");
    let hook = webhook(&repo.id);
    let now = Timestamp::now().unix_millis();
    cluster.sql_in(
        &url,
        &format!(
            "INSERT INTO repositories (id, name, kind, record) VALUES ('{}', 'demo/app', 'local', '\\x{}');
             INSERT INTO webhooks (id, repository_id, record) VALUES ('{}', '{}', '\\x{}');",
            repo.id,
            encode(&repo),
            hook.id,
            repo.id,
            encode(&hook),
        ),
    );
    let held = delivery_for("evt_held", &hook);
    let free = delivery_for("evt_free", &hook);
    let lease_until = now + 1_500;
    for (d, lease) in [(&held, Some(lease_until)), (&free, None)] {
        cluster.sql_in(
            &url,
            &format!(
                "INSERT INTO deliveries (id, kind, event_id, webhook_id, state, due_ms, planned, created_ms, record, lease_until)
                 VALUES ('{}', 'event', '{}', '{}', 'pending', {}, true, {now}, '\\x{}', {})",
                d.id,
                d.event_id,
                hook.id,
                now - 1_000,
                encode(d),
                lease.map_or("NULL".to_owned(), |l| l.to_string()),
            ),
        );
    }

    let store = Store::connect(&url).await.unwrap();
    assert_eq!(
        cluster.sql_in(&url, "SELECT version FROM schema_version"),
        "6"
    );
    assert_eq!(store.pending_count().await.unwrap(), 2);
    let lease = Duration::from_secs(60);
    let first = store
        .claim_due(&hook.id, 10, lease, &HashSet::new())
        .await
        .unwrap();
    assert_eq!(
        first
            .claimed
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        [free.id.as_str()],
        "the delivery another gateway held waits for its lease"
    );
    assert_eq!(first.next_ms, Some(lease_until as u64));
    tokio::time::sleep(Duration::from_millis((lease_until - now + 100) as u64)).await;
    let second = store
        .claim_due(&hook.id, 10, lease, &HashSet::from([free.id.clone()]))
        .await
        .unwrap();
    assert_eq!(
        second
            .claimed
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        [held.id.as_str()]
    );
    // Both still record and finish as before.
    for id in [&free.id, &held.id] {
        let done = store
            .record_attempt(id, attempt(1, true), Next::Succeeded, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.state, DeliveryState::Succeeded);
    }
    assert_eq!(store.pending_count().await.unwrap(), 0);
}

/// A record as the store encodes it (rmp, named fields), in hex for SQL.
fn encode(value: &impl serde::Serialize) -> String {
    rmp_serde::encode::to_vec_named(value)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn a_database_of_a_newer_schema_is_refused_untouched() {
    let url = tokio::task::spawn_blocking(callisto_tests::postgres::database)
        .await
        .unwrap();
    drop(Store::connect(&url).await.unwrap());
    // Connecting again migrates nothing: the version is the binary's.
    let store = Store::connect(&url).await.unwrap();
    store.set_sealing_key_id("kept").await.unwrap();
    drop(store);
    let cluster = callisto_tests::postgres::cluster();
    cluster.sql_in(&url, "UPDATE schema_version SET version = 99");
    let err = Store::connect(&url).await.err().expect("refused");
    assert!(
        matches!(err, StoreError::DatabaseSchemaVersion { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert_eq!(
        cluster.sql_in(&url, "SELECT version FROM schema_version"),
        "99"
    );
    assert_eq!(
        cluster.sql_in(&url, "SELECT value FROM meta WHERE key = 'seal_key_id'"),
        "kept"
    );
    // A URL that reaches no server says so.
    let err = Store::connect("postgres://callisto@127.0.0.1:1/none")
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, StoreError::Connect { .. }), "{err}");
}

/// A test gateway's configuration with its state in `data` and its store
/// the PostgreSQL database at `url`.
fn on_postgres(data: &std::path::Path, url: &str) -> callisto::config::Config {
    let mut c = callisto::test_util::test_config(data);
    c.plugins.cache_dir = Some(crate::shared_cache_dir());
    c.store = url.to_owned();
    c
}

#[tokio::test]
async fn a_gateway_on_postgres_delivers_a_push_and_loses_nothing_across_a_restart() {
    let url = tokio::task::spawn_blocking(callisto_tests::postgres::database)
        .await
        .unwrap();
    let config = |data: &std::path::Path| on_postgres(data, &url);
    let data = tempfile::tempdir().unwrap();
    let cfg = config(data.path());
    let gw = callisto::test_util::TestGateway::start_in(data, cfg).await;
    let receiver = Receiver::start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let repo = repository(
        &gw,
        json!([{"url": receiver.url("/hook"), "secret": secret}]),
    )
    .await;
    let accepted = ingest(&gw, &push_envelope("v1")).await;
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].json()["id"], accepted.events[0].as_str());
    assert_eq!(got[0].json()["digest"], DIGEST);
    verify_standard(&got[0], secret);
    let webhook = repo.webhooks.as_ref().unwrap()[0].id.clone();
    eventually(&gw, &format!("/webhooks/{webhook}/deliveries"), |p| {
        p["items"][0]["state"] == "succeeded"
    })
    .await;

    // Restarted on the same database: the event, its delivery and the
    // webhook are there, and nothing is sent again.
    let data = gw.stop().await;
    let cfg = config(data.path());
    let gw = callisto::test_util::TestGateway::start_in(data, cfg).await;
    let event = crate::delivery::get(&gw, &format!("/events/{}", accepted.events[0])).await;
    assert_eq!(event["deliveries"].as_array().unwrap().len(), 1);
    let second = ingest(&gw, &push_envelope("v2")).await;
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got[1].json()["id"], second.events[0].as_str());
    verify_standard(&got[1], secret);
    receiver.wait_quiet(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests().len(), 2, "each event delivered once");
    gw.stop().await;
}

#[tokio::test]
async fn a_claim_takes_what_is_due_and_says_when_the_next_is() {
    for engine in ENGINES {
        let (_keep, store) = open(engine).await;
        let (hook, id) = one_planned_delivery(&store).await;
        let lease = Duration::from_secs(60);
        let claim = store
            .claim_due(&hook.id, 10, lease, &HashSet::new())
            .await
            .unwrap();
        let claimed: Vec<&str> = claim.claimed.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(claimed, [id.as_str()], "{engine:?}");
        assert_eq!(
            store
                .claim_due(&hook.id, 0, lease, &HashSet::new())
                .await
                .unwrap()
                .claimed,
            []
        );

        // An attempt ends the claim; the retry is due in a minute.
        let retry_at = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 60_000);
        store
            .record_attempt(&id, attempt(1, false), Next::Retry { at: retry_at }, None)
            .await
            .unwrap();
        let claim = store
            .claim_due(&hook.id, 10, lease, &HashSet::new())
            .await
            .unwrap();
        assert!(claim.claimed.is_empty(), "{engine:?}: {claim:?}");
        assert_eq!(
            claim.next_ms,
            Some(retry_at.unix_millis() as u64),
            "{engine:?}"
        );
        // Due now again: claimed again.
        store
            .record_attempt(
                &id,
                attempt(2, false),
                Next::Retry {
                    at: Timestamp::now(),
                },
                None,
            )
            .await
            .unwrap();
        let claim = store
            .claim_due(&hook.id, 10, lease, &HashSet::new())
            .await
            .unwrap();
        assert_eq!(claim.claimed.len(), 1, "{engine:?}: {claim:?}");
        assert_eq!(claim.next_ms, None, "{engine:?}");

        // What the caller is sending already is neither claimed nor counted
        // as next.
        let other = delivery_for(&store.delivery(&id).await.unwrap().unwrap().event_id, &hook);
        store
            .add_deliveries(&hook.id, vec![other.clone()])
            .await
            .unwrap();
        let sending = HashSet::from([id.clone()]);
        let claim = store
            .claim_due(&hook.id, 10, lease, &sending)
            .await
            .unwrap();
        let claimed: Vec<&str> = claim.claimed.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(claimed, [other.id.as_str()], "{engine:?}");
        assert_eq!(claim.next_ms, None, "{engine:?}");
    }
}

/// Two gateways' stores on one database, each with several claimers at
/// once: every due delivery is claimed by exactly one of them, round after
/// round; a claim whose lease ran out (its gateway died) is taken by the
/// other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_database_claim_each_due_delivery_once() {
    let url = tokio::task::spawn_blocking(callisto_tests::postgres::database)
        .await
        .unwrap();
    let a = Store::connect(&url).await.unwrap();
    let b = Store::connect(&url).await.unwrap();
    let repo = Repository::new_local("demo/app");
    let hook = webhook(&repo.id);
    a.create_repository(repo, vec![hook.clone()]).await.unwrap();
    let recorded = a
        .record_notifications(vec![pushed("k1", "demo/app", "v1", "sha256:a")])
        .await
        .unwrap();
    let event_id = recorded.events[0].id.clone();
    let lease = Duration::from_secs(600);

    for round in 0..10 {
        let added: Vec<Delivery> = (0..200).map(|_| delivery_for(&event_id, &hook)).collect();
        let all: HashSet<String> = added.iter().map(|d| d.id.clone()).collect();
        a.add_deliveries(&hook.id, added).await.unwrap();

        let mut claimers = tokio::task::JoinSet::new();
        for i in 0..8 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let hook_id = hook.id.clone();
            claimers.spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let claim = store
                        .claim_due(&hook_id, 1 + i, lease, &HashSet::new())
                        .await
                        .unwrap();
                    if claim.claimed.is_empty() {
                        return mine;
                    }
                    assert!(claim.claimed.is_sorted(), "earliest first");
                    mine.extend(claim.claimed.into_iter().map(|d| d.id));
                }
            });
        }
        let mut seen = HashSet::new();
        let mut total = 0;
        while let Some(mine) = claimers.join_next().await {
            let mine = mine.unwrap();
            total += mine.len();
            for id in mine {
                assert!(seen.insert(id.clone()), "round {round}: {id} claimed twice");
            }
        }
        assert_eq!(total, 200, "round {round}");
        assert_eq!(
            seen, all,
            "round {round}: the claims cover every due delivery"
        );
        // All leased: nothing left to claim, on either side.
        assert!(
            a.claim_due(&hook.id, 500, lease, &HashSet::new())
                .await
                .unwrap()
                .claimed
                .is_empty()
        );
        assert!(
            b.claim_due(&hook.id, 500, lease, &HashSet::new())
                .await
                .unwrap()
                .claimed
                .is_empty()
        );
    }

    // A claims with a short lease and "dies"; B takes over once it expires.
    let added: Vec<Delivery> = (0..20).map(|_| delivery_for(&event_id, &hook)).collect();
    let all: HashSet<String> = added.iter().map(|d| d.id.clone()).collect();
    a.add_deliveries(&hook.id, added).await.unwrap();
    let short = Duration::from_millis(500);
    let by_a = a
        .claim_due(&hook.id, 100, short, &HashSet::new())
        .await
        .unwrap();
    assert_eq!(by_a.claimed.len(), 20);
    let by_b = b
        .claim_due(&hook.id, 100, lease, &HashSet::new())
        .await
        .unwrap();
    assert!(by_b.claimed.is_empty(), "{by_b:?}");
    let expires = by_b
        .next_ms
        .expect("the leased deliveries are still pending");
    assert!(expires > Timestamp::now().unix_millis() as u64 - 1_000);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let by_b = b
        .claim_due(&hook.id, 100, lease, &HashSet::new())
        .await
        .unwrap();
    let taken: HashSet<String> = by_b.claimed.into_iter().map(|d| d.id).collect();
    assert_eq!(taken, all, "B takes over A's expired claims");

    // Recording an attempt ends a claim at once: a retry due now is
    // claimable again, by either store.
    let one = taken.iter().next().unwrap().clone();
    b.record_attempt(
        &one,
        attempt(1, false),
        Next::Retry {
            at: Timestamp::now(),
        },
        None,
    )
    .await
    .unwrap();
    let again = a
        .claim_due(&hook.id, 100, lease, &HashSet::new())
        .await
        .unwrap();
    let again: Vec<String> = again.claimed.into_iter().map(|d| d.id).collect();
    assert_eq!(again, [one]);
}

/// Two gateways' stores on one database: what one commits wakes the other
/// (LISTEN/NOTIFY), as its own commits wake it.
#[tokio::test]
async fn a_commit_through_one_store_wakes_another_on_the_same_database() {
    let url = tokio::task::spawn_blocking(callisto_tests::postgres::database)
        .await
        .unwrap();
    let a = Store::connect(&url).await.unwrap();
    let b = Store::connect(&url).await.unwrap();
    let mut events_b = b.subscribe_events();
    let mut due_b = b.subscribe_due();
    let mut due_a = a.subscribe_due();
    events_b.borrow_and_update();

    let (hook, id) = one_planned_delivery(&a).await;
    tokio::time::timeout(Duration::from_secs(1), events_b.changed())
        .await
        .expect("B hears of A's append within a second")
        .unwrap();
    let due = tokio::time::timeout(Duration::from_secs(1), due_b.recv())
        .await
        .expect("B hears of the delivery A planned within a second")
        .unwrap();
    assert_eq!(due.webhook, hook.id);

    // A delivery made due again through A (a redelivery after it ended)
    // reaches B's sender; A hears of its own commit once, not twice.
    while due_a.try_recv().is_ok() {}
    a.record_attempt(&id, attempt(1, true), Next::Succeeded, None)
        .await
        .unwrap();
    let before = Timestamp::now().unix_millis();
    a.redeliver(&id).await.unwrap();
    let due = tokio::time::timeout(Duration::from_secs(1), due_b.recv())
        .await
        .expect("B hears of the redelivery within a second")
        .unwrap();
    assert_eq!(due.webhook, hook.id);
    assert!(due.at.unix_millis() >= before, "{due:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(due_a.try_recv().is_ok(), "A announces its own commit");
    assert!(due_a.try_recv().is_err(), "A skips its own notification");
    assert!(due_b.try_recv().is_err(), "nothing else was due");
}

/// Two gateways' stores on one database: one at a time polls a remote
/// repository; recording the poll ends the claim and sets when the next is
/// due; a claim whose lease ran out (its gateway died) is taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_remote_repository_is_polled_by_one_store_at_a_time() {
    let url = tokio::task::spawn_blocking(callisto_tests::postgres::database)
        .await
        .unwrap();
    let a = Store::connect(&url).await.unwrap();
    let b = Store::connect(&url).await.unwrap();
    let mut repo = Repository::new_local("mirror/app");
    repo.kind = RepositoryKind::Remote;
    repo.registry = Some("registry.example".into());
    repo.remote = Some(RemoteSettings {
        poll_interval_secs: 60,
        initial_sync: Default::default(),
        insecure: false,
        username: None,
        password: None,
        tags: vec![],
        exclude_tags: vec![],
        max_tags: None,
    });
    a.create_repository(repo.clone(), vec![]).await.unwrap();
    let lease = Duration::from_secs(600);

    // Eight claims at once, four through each store: one wins.
    let mut claims = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let id = repo.id.clone();
        claims.spawn(async move { store.claim_poll(&id, lease, false).await.unwrap() });
    }
    let mut claimed = 0;
    let soon = Timestamp::now().unix_millis() + 500_000;
    while let Some(claim) = claims.join_next().await {
        match claim.unwrap() {
            PollClaim::Claimed => claimed += 1,
            PollClaim::NotYet { until } => assert!(until.unix_millis() > soon, "{until}"),
            PollClaim::Gone => panic!("the repository exists"),
        }
    }
    assert_eq!(claimed, 1, "one poll at a time");
    // Even a poll asked for waits for the lease.
    assert!(matches!(
        b.claim_poll(&repo.id, lease, true).await.unwrap(),
        PollClaim::NotYet { .. }
    ));

    // The poll is recorded: the claim ends, the next poll is due in a
    // minute; a poll asked for may start at once.
    a.apply_poll(&repo.id, HashSet::new(), BTreeMap::new(), 5)
        .await
        .unwrap();
    let next = a
        .repository(&repo.id)
        .await
        .unwrap()
        .unwrap()
        .poll
        .next_poll_at;
    assert_eq!(
        b.claim_poll(&repo.id, lease, false).await.unwrap(),
        PollClaim::NotYet {
            until: next.unwrap()
        }
    );
    assert_eq!(
        b.claim_poll(&repo.id, lease, true).await.unwrap(),
        PollClaim::Claimed
    );
    // A failed poll ends the claim too.
    b.record_poll_failure(&repo.id, "refused".into(), 5, Timestamp::now())
        .await
        .unwrap();

    // A claims with a short lease and "dies" mid-poll: B takes over once
    // the lease expires.
    let short = Duration::from_millis(500);
    assert_eq!(
        a.claim_poll(&repo.id, short, false).await.unwrap(),
        PollClaim::Claimed
    );
    assert!(matches!(
        b.claim_poll(&repo.id, lease, false).await.unwrap(),
        PollClaim::NotYet { .. }
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        b.claim_poll(&repo.id, lease, false).await.unwrap(),
        PollClaim::Claimed
    );

    assert_eq!(
        a.claim_poll("repo_missing", lease, false).await.unwrap(),
        PollClaim::Gone
    );
    // On redb (one process) a poll is always claimed.
    let (_keep, redb) = open(Engine::Redb).await;
    for _ in 0..2 {
        assert_eq!(
            redb.claim_poll(&repo.id, lease, false).await.unwrap(),
            PollClaim::Claimed
        );
    }
}

/// Two gateways on one database, pushes ingested through either: each
/// event is delivered once, whichever gateway planned and sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_on_one_database_deliver_each_push_once() {
    let url = tokio::task::spawn_blocking(callisto_tests::postgres::database)
        .await
        .unwrap();
    let config = |data: &std::path::Path| on_postgres(data, &url);
    let data_a = tempfile::tempdir().unwrap();
    let cfg = config(data_a.path());
    let a = callisto::test_util::TestGateway::start_in(data_a, cfg).await;
    // The same sealing key, as replicas of one gateway have.
    let data_b = tempfile::tempdir().unwrap();
    std::fs::copy(
        a.data.path().join("secret.key"),
        data_b.path().join("secret.key"),
    )
    .unwrap();
    let cfg = config(data_b.path());
    let b = callisto::test_util::TestGateway::start_in(data_b, cfg).await;

    let receiver = Receiver::start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    repository(
        &a,
        json!([{"url": receiver.url("/hook"), "secret": secret}]),
    )
    .await;
    let mut ids = HashSet::new();
    for i in 0..30 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let accepted = ingest(gw, &push_envelope(&format!("v{i}"))).await;
        ids.insert(accepted.events[0].clone());
    }
    receiver.wait_for(30, Duration::from_secs(30)).await;
    let got = receiver.wait_quiet(Duration::from_secs(1)).await;
    let sent: Vec<String> = got
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent.len(), 30, "each event delivered once: {sent:?}");
    assert_eq!(sent.into_iter().collect::<HashSet<_>>(), ids);
    for r in &got {
        verify_standard(r, secret);
    }
    a.stop().await;
    b.stop().await;
}

/// The listening connection dropped (PostgreSQL restarted, a proxy cut
/// it): it is made again, what was missed meanwhile is announced, and
/// later commits wake the other store again.
#[tokio::test]
async fn a_store_listens_again_after_its_connection_is_cut() {
    let url = tokio::task::spawn_blocking(callisto_tests::postgres::database)
        .await
        .unwrap();
    let a = Store::connect(&url).await.unwrap();
    let b = Store::connect(&url).await.unwrap();
    let mut events_b = b.subscribe_events();
    let mut due_b = b.subscribe_due();
    let (hook, id) = one_planned_delivery(&a).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    events_b.borrow_and_update();
    while due_b.try_recv().is_ok() {}

    let cluster = callisto_tests::postgres::cluster();
    let cut = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            cluster.sql_in(
                &url,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = current_database() AND query LIKE 'LISTEN %'",
            )
        })
        .await
        .unwrap()
    };
    assert_eq!(cut, "2", "both stores' listening connections were cut");
    // Committed while B may not be listening: announced once it listens
    // again, if not by the notification.
    a.record_attempt(&id, attempt(1, true), Next::Succeeded, None)
        .await
        .unwrap();
    a.redeliver(&id).await.unwrap();
    let due = tokio::time::timeout(Duration::from_secs(5), due_b.recv())
        .await
        .expect("B hears of the delivery made due while it was cut off")
        .unwrap();
    assert_eq!(due.webhook, hook.id);
    tokio::time::timeout(Duration::from_secs(5), events_b.changed())
        .await
        .expect("B announces that events may have been appended")
        .unwrap();

    // Listening again: a later append wakes B within a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    events_b.borrow_and_update();
    a.record_notifications(vec![pushed("k2", "demo/app", "v2", "sha256:b")])
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), events_b.changed())
        .await
        .expect("B hears of A's append again")
        .unwrap();
}

/// Of two stores on one database, one plans fan-out at a time: the other
/// follows until the planner's lease ends, and takes over once it does
/// (the planner died or went idle). On redb a store always leads.
#[tokio::test]
async fn one_store_at_a_time_leads_fan_out_and_another_takes_over_when_its_lease_ends() {
    let (_dir, redb) = open(Engine::Redb).await;
    assert_eq!(
        redb.lead_fanout(Duration::from_millis(1)).await.unwrap(),
        Leadership::Leading
    );

    let url = tokio::task::spawn_blocking(callisto_tests::postgres::database)
        .await
        .unwrap();
    let a = Store::connect(&url).await.unwrap();
    let b = Store::connect(&url).await.unwrap();
    let lease = Duration::from_millis(1500);
    assert_eq!(a.lead_fanout(lease).await.unwrap(), Leadership::Leading);
    // Renewing its own lease is leading still; the other follows, told
    // until when.
    assert_eq!(a.lead_fanout(lease).await.unwrap(), Leadership::Leading);
    let Leadership::Following { until } = b.lead_fanout(lease).await.unwrap() else {
        panic!("two stores led fan-out at once");
    };
    let left = until.unix_millis() - Timestamp::now().unix_millis();
    assert!(
        left > 0 && left <= 1500,
        "the lease ends {left} ms from now"
    );
    // `a` goes quiet: once its lease has ended, `b` leads and `a` follows.
    tokio::time::sleep(Duration::from_millis(left as u64 + 100)).await;
    assert_eq!(b.lead_fanout(lease).await.unwrap(), Leadership::Leading);
    assert!(matches!(
        a.lead_fanout(lease).await.unwrap(),
        Leadership::Following { .. }
    ));
}
