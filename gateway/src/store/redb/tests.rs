use super::*;
use crate::event::{Event, EventSource, EventType, RepositoryRef, Timestamp, new_id};
use crate::records::*;

fn event(repo: &str, tag: &str) -> Event {
    Event {
        id: new_id("evt"),
        kind: EventType::ImagePushed,
        source: EventSource::Local,
        repository: RepositoryRef {
            id: repo.into(),
            name: "demo/app".into(),
            registry: None,
        },
        tag: Some(tag.into()),
        digest: Some("sha256:abc".into()),
        previous_digest: None,
        media_type: None,
        size: None,
        actor: None,
        occurred_at: Timestamp::now(),
    }
}

fn delivery(webhook: &str, event: &str, id: String) -> Delivery {
    let now = Timestamp::now();
    Delivery {
        id,
        kind: DeliveryKind::Event,
        event_id: event.into(),
        webhook_id: webhook.into(),
        repository_id: "repo_1".into(),
        plugin: "default".into(),
        state: DeliveryState::Pending,
        request: Some(Request {
            content_type: "application/json".into(),
            headers: vec![],
            body: b"{}".to_vec(),
            signature: SignatureScheme::StandardWebhooks,
        }),
        attempts: 0,
        next_attempt_at: Some(now),
        last_error: None,
        last_status: None,
        created_at: now,
        updated_at: now,
        folded: vec![],
        folded_into: None,
    }
}

fn digest(path: &std::path::Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

fn open() -> (tempfile::TempDir, RedbStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("callisto.redb")).unwrap();
    (dir, store)
}

#[tokio::test]
async fn events_append_in_order_and_dedupe_by_source_key() {
    let (_dir, store) = open();
    let (a, b) = (event("repo_1", "v1"), event("repo_1", "v2"));
    let (a2, b2) = (a.clone(), b.clone());
    let seqs = store
        .write(move |txn| {
            let mut log = events::Log::open(txn)?;
            let s1 = log.append(&a2, Some("distribution:1"))?;
            let s2 = log.append(&b2, None)?;
            Ok((
                s1,
                s2,
                log.seen("distribution:1")?,
                log.seen("distribution:2")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(seqs, (1, 2, true, false));
    let txn = store.read().unwrap();
    let all = events::after(&txn, 0, 10).unwrap();
    assert_eq!(
        all.iter().map(|(_, e)| e.id.clone()).collect::<Vec<_>>(),
        [a.id.clone(), b.id.clone()]
    );
    assert_eq!(events::after(&txn, 1, 10).unwrap().len(), 1);
    let (seq, found) = events::by_id(&txn, &b.id).unwrap().unwrap();
    assert_eq!((seq, found), (2, b));
}

#[tokio::test]
async fn concurrent_writes_share_commits_and_all_land() {
    let (_dir, store) = open();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let e = event("repo_1", &format!("t{i}"));
            store
                .write(move |txn| events::Log::open(txn)?.append(&e, Some(&format!("k{i}"))))
                .await
                .unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_failing_job_does_not_take_its_batch_mates_down() {
    let (_dir, store) = open();
    let ok = store.write(|_| Ok(1));
    let conflict = store.write(|_| Err::<(), _>(StoreError::Conflict("no".into())));
    let (ok, conflict) = tokio::join!(ok, conflict);
    assert_eq!(ok.unwrap(), 1);
    assert!(matches!(conflict, Err(StoreError::Conflict(_))));
}

#[tokio::test]
async fn due_index_orders_per_webhook_and_follows_attempts() {
    let (_dir, store) = open();
    let d1 = delivery("wh_a", "evt_1", new_id("dlv"));
    let mut d2 = delivery("wh_a", "evt_2", new_id("dlv"));
    d2.next_attempt_at = Some(Timestamp::from_unix_millis(
        Timestamp::now().unix_millis() + 60_000,
    ));
    let d3 = delivery("wh_b", "evt_1", new_id("dlv"));
    let (c1, c2, c3) = (d1.clone(), d2.clone(), d3.clone());
    store
        .write(move |txn| {
            deliveries::create(txn, &c1)?;
            deliveries::create(txn, &c2)?;
            deliveries::create(txn, &c3)
        })
        .await
        .unwrap();
    let txn = store.read().unwrap();
    let now = Timestamp::now().unix_millis() as u64;
    let due = deliveries::due_for(&txn, "wh_a", now, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, d1.id);
    let webhooks = deliveries::webhooks_due(&txn).unwrap();
    assert_eq!(
        webhooks.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>(),
        ["wh_a", "wh_b"]
    );
    assert_eq!(deliveries::pending_count(&txn).unwrap(), 3);
    drop(txn);

    let attempt = Attempt {
        number: 1,
        started_at: Timestamp::now(),
        duration_ms: 3,
        url: "http://x".into(),
        request_headers: vec![],
        response: None,
        error: Some("connection refused".into()),
        succeeded: false,
    };
    let retry_at = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 5_000);
    let id = d1.id.clone();
    let updated = store
        .write(move |txn| {
            deliveries::record_attempt(txn, &id, &attempt, &Next::Retry { at: retry_at })
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.state, DeliveryState::Pending);
    assert_eq!(updated.attempts, 1);
    let txn = store.read().unwrap();
    assert!(
        deliveries::due_for(&txn, "wh_a", now, 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(deliveries::attempts(&txn, &d1.id).unwrap().len(), 1);
    drop(txn);

    let cancelled = store
        .write(|txn| deliveries::cancel_pending(txn, "wh_a", "the webhook was deleted"))
        .await
        .unwrap();
    assert_eq!(cancelled, 2);
    let txn = store.read().unwrap();
    let d = deliveries::get(&txn, &d2.id).unwrap().unwrap();
    assert_eq!(d.state, DeliveryState::Failed);
    assert_eq!(deliveries::pending_count(&txn).unwrap(), 1);
}

#[tokio::test]
async fn retention_prunes_old_events_and_finished_deliveries_only() {
    let (_dir, store) = open();
    // Ids carry their creation time: make some from 40 days ago.
    let old_ms = (Timestamp::now().unix_millis() - 40 * 86_400_000) as u64;
    let old_id = |prefix: &str| {
        format!(
            "{prefix}_{}",
            ulid::Ulid::from_parts(old_ms, fastrand::u128(..))
        )
    };
    let mut old_event = event("repo_1", "v1");
    old_event.id = old_id("evt");
    let new_event = event("repo_1", "v2");
    let mut old_done = delivery("wh_a", &old_event.id, old_id("dlv"));
    old_done.state = DeliveryState::Succeeded;
    old_done.next_attempt_at = None;
    let old_pending = delivery("wh_a", &old_event.id, old_id("dlv"));
    let (e1, e2, d1, d2) = (
        old_event.clone(),
        new_event.clone(),
        old_done.clone(),
        old_pending.clone(),
    );
    store
        .write(move |txn| {
            let mut log = events::Log::open(txn)?;
            log.append(&e1, Some("distribution:old"))?;
            log.append(&e2, None)?;
            drop(log);
            deliveries::create(txn, &d1)?;
            deliveries::create(txn, &d2)
        })
        .await
        .unwrap();
    let cutoff = Timestamp::from_unix_millis(Timestamp::now().unix_millis() - 30 * 86_400_000);
    let pruned = store
        .write(move |txn| retention::prune(txn, cutoff, 100, &Default::default()))
        .await
        .unwrap();
    assert_eq!(
        pruned,
        Pruned {
            events: 1,
            deliveries: 1
        }
    );
    let txn = store.read().unwrap();
    assert!(events::by_id(&txn, &old_event.id).unwrap().is_none());
    assert!(events::by_id(&txn, &new_event.id).unwrap().is_some());
    assert!(deliveries::get(&txn, &old_done.id).unwrap().is_none());
    assert!(
        deliveries::get(&txn, &old_pending.id).unwrap().is_some(),
        "pending deliveries are kept"
    );
    drop(txn);
    let seen = store
        .write(|txn| events::Log::open(txn)?.seen("distribution:old"))
        .await
        .unwrap();
    assert!(!seen, "the dedupe key goes with its event");
}

#[test]
fn an_unknown_schema_version_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callisto.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(schema::META)
            .unwrap()
            .insert("schema_version", 99u32.to_le_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let before = digest(&path);
    let err = RedbStore::open(&path).err().expect("refused");
    assert!(
        matches!(
            err,
            StoreError::SchemaVersion {
                found: 99,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("schema version 99"), "{err}");
    assert!(digest(&path) == before, "the file was modified");
}

#[test]
fn a_file_that_is_not_a_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callisto.redb");
    std::fs::write(&path, vec![0x5au8; 8192]).unwrap();
    let before = digest(&path);
    let err = RedbStore::open(&path).err().expect("refused");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot open {}", path.display())),
        "{err}"
    );
    assert!(digest(&path) == before, "the file was modified");
}

#[tokio::test]
async fn a_store_reopens_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callisto.redb");
    let e = event("repo_1", "v1");
    {
        let store = RedbStore::open(&path).unwrap();
        let e2 = e.clone();
        store
            .write(move |txn| events::Log::open(txn)?.append(&e2, None))
            .await
            .unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    let txn = store.read().unwrap();
    assert_eq!(events::by_id(&txn, &e.id).unwrap().unwrap().1, e);
}

/// A store with two events, then a record that does not decode written
/// into `webhooks` behind the store's back.
async fn store_with_a_bad_webhook_record() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("callisto.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        let (a, b) = (event("repo_1", "v1"), event("repo_1", "v2"));
        store
            .write(move |txn| {
                let mut log = events::Log::open(txn)?;
                log.append(&a, None)?;
                log.append(&b, None)
            })
            .await
            .unwrap();
    }
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(schema::WEBHOOKS)
        .unwrap()
        .insert("wh_bad", [0xc1u8, 0xc1].as_slice())
        .unwrap();
    txn.commit().unwrap();
    drop(db);
    (dir, path)
}

#[tokio::test]
async fn opening_reads_no_records_and_verify_names_the_damaged_table() {
    let (_dir, path) = store_with_a_bad_webhook_record().await;
    // Start-up does not scan the records: the bad one does not stop it.
    drop(RedbStore::open(&path).expect("opens without reading every record"));

    let before = digest(&path);
    let report = verify_file(&path).unwrap();
    assert!(digest(&path) == before, "verify modified the file");
    assert!(report.is_damaged());
    assert_eq!(report.records("events"), 2);
    let damaged: Vec<&TableReport> = report
        .tables
        .iter()
        .filter(|t| t.damage.is_some())
        .collect();
    assert_eq!(damaged.len(), 1, "{report:?}");
    assert_eq!(damaged[0].name, "webhooks");
    let why = damaged[0].damage.as_deref().unwrap();
    assert!(
        why.contains("\"wh_bad\"") && why.contains("does not decode"),
        "{why}"
    );
    assert!(report.unknown_tables.is_empty());
}

#[tokio::test]
async fn verify_passes_an_intact_store_and_counts_its_records() {
    let (_dir, store) = open();
    let e = event("repo_1", "v1");
    store
        .write(move |txn| events::Log::open(txn)?.append(&e, Some("distribution:1")))
        .await
        .unwrap();
    let path = store.path().to_owned();
    drop(store);
    let report = verify_file(&path).unwrap();
    assert!(!report.is_damaged(), "{report:?}");
    assert_eq!(report.records("events"), 1);
    assert_eq!(report.records("event_ids"), 1);
    assert_eq!(report.records("dedupe"), 1);
    assert_eq!(report.records("meta"), 2);
    assert_eq!(report.tables.len(), 14, "every table of the schema");
}

#[test]
fn verify_refuses_a_store_a_gateway_has_open_and_an_unknown_version() {
    let (dir, store) = open();
    let err = verify_file(store.path()).unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("open in another process"), "{err}");
    drop(store);

    let path = dir.path().join("v99.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(schema::META)
            .unwrap()
            .insert("schema_version", 99u32.to_le_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let err = verify_file(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaVersion { found: 99, .. }),
        "{err}"
    );
    let err = verify_file(&dir.path().join("missing.redb")).unwrap_err();
    assert!(err.to_string().contains("no such file"), "{err}");
}

#[tokio::test]
async fn a_backup_is_one_snapshot_copied_while_writes_go_on() {
    let (dir, store) = open();
    for i in 0..300 {
        let e = event("repo_1", &format!("v{i}"));
        store
            .write(move |txn| events::Log::open(txn)?.append(&e, Some(&format!("k{i}"))))
            .await
            .unwrap();
    }
    let d = delivery("wh_a", "evt_1", new_id("dlv"));
    store
        .write(move |txn| deliveries::create(txn, &d))
        .await
        .unwrap();
    let appending = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 300..1300 {
                let e = event("repo_1", &format!("v{i}"));
                store
                    .write(move |txn| events::Log::open(txn)?.append(&e, Some(&format!("k{i}"))))
                    .await
                    .unwrap();
            }
        })
    };
    // Small chunks, so that a table spans many transactions of the copy.
    let dest = dir.path().join("backup.redb");
    let snapshot = store.read().unwrap();
    let (copy_dest, backup) = {
        let dest = dest.clone();
        tokio::task::spawn_blocking(move || {
            let b = backup::copy(&snapshot, &dest, 7);
            (dest, b)
        })
        .await
        .unwrap()
    };
    let backup = backup.unwrap();
    appending.await.unwrap();

    let n = backup.records("events");
    assert!(n >= 300, "{backup:?}");
    assert_eq!(backup.records("event_ids"), n);
    assert_eq!(backup.records("dedupe"), n);
    assert_eq!(backup.records("deliveries"), 1);
    let report = verify_file(&copy_dest).unwrap();
    assert!(!report.is_damaged(), "{report:?}");
    assert_eq!(report.records("events"), n);
    assert_eq!(report.records("due"), 1);
    // One snapshot: the copy's log is the first n events, without gaps.
    let copy = RedbStore::open(&copy_dest).unwrap();
    let txn = copy.read().unwrap();
    let seqs: Vec<u64> = events::after(&txn, 0, 10_000)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<u64>>());
    drop((txn, copy));

    // Through the store's own operation, a file is never overwritten.
    let err = store.backup_to(&dest).await.unwrap_err();
    assert!(matches!(err, StoreError::Backup { .. }), "{err}");
    let again = store.backup_to(&dir.path().join("b2.redb")).await.unwrap();
    assert_eq!(again.records("events"), 1300);
    assert!(again.bytes > 0);
    // A file a gateway has open is not read behind its back.
    let err = backup_file(store.path(), &dir.path().join("b3.redb")).unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    let path = store.path().to_owned();
    drop(store);
    let offline = backup_file(&path, &dir.path().join("b3.redb")).unwrap();
    assert_eq!(offline.records("events"), 1300);
}
