//! Recording registries' notifications in batches: while one batch commits,
//! the next requests queue, and then go in together, as one write job that
//! opens the log's tables once. Each request is answered when its batch is
//! durable.
//!
//! It is a thread, not a task: the moment a commit ends it must hand the
//! writer the next batch, and a task would wait its turn behind every HTTP
//! connection on the runtime's workers, leaving the writer idle.

use std::collections::HashMap;
use std::sync::{Arc, mpsc};

use redb::WriteTransaction;
use tokio::sync::oneshot;

use super::StoreError;
use super::announce::Announcer;
use super::events::Log;
use super::repos::{self, Tags};
use super::writer::Writer;
use crate::changes::{self, Notification, Recorded, TagBook};
use crate::records::Repository;

/// Requests recorded per transaction at most.
const MAX_REQUESTS_PER_BATCH: usize = 1024;

type Reply = oneshot::Sender<Result<Recorded, StoreError>>;

/// The queue into the batching thread. The last handle to go stops the
/// thread and waits for it.
#[derive(Clone)]
pub(super) struct Batcher {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Option<mpsc::Sender<(Vec<Notification>, Reply)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Batcher {
    pub fn start(writer: Writer, announce: Announcer) -> Self {
        let (queue, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ingest-recorder".into())
            .spawn(move || record_batches(&writer, &announce, &rx))
            .expect("start the ingest recorder thread");
        Self {
            inner: Arc::new(Inner {
                queue: Some(queue),
                thread: Some(thread),
            }),
        }
    }

    /// Records one request's notifications; returns once they are durable.
    pub async fn record(&self, notifications: Vec<Notification>) -> Result<Recorded, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .queue
            .as_ref()
            .ok_or(StoreError::WriterGone)?
            .send((notifications, tx))
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.unwrap_or(Err(StoreError::WriterGone))
    }
}

fn record_batches(
    writer: &Writer,
    announce: &Announcer,
    rx: &mpsc::Receiver<(Vec<Notification>, Reply)>,
) {
    while let Ok(first) = rx.recv() {
        let mut requests = vec![first.0];
        let mut replies = vec![first.1];
        while requests.len() < MAX_REQUESTS_PER_BATCH {
            match rx.try_recv() {
                Ok((request, reply)) => {
                    requests.push(request);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        tracing::trace!(requests = requests.len(), "ingest batch");
        let result = writer
            .submit(true, move |txn| record(txn, &requests))
            .blocking_recv()
            .unwrap_or(Err(StoreError::WriterGone));
        match result {
            Ok(recorded) => {
                if recorded.iter().any(|r| !r.events.is_empty()) {
                    announce.events_appended();
                }
                for (reply, r) in replies.into_iter().zip(recorded) {
                    let _ = reply.send(Ok(r));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Records batches of notifications (one batch per ingest request) in the
/// log, inside one transaction: de-duplication, the repository (created on
/// first sight, as a registry would), known tags, and the events.
fn record(
    txn: &WriteTransaction,
    batches: &[Vec<Notification>],
) -> Result<Vec<Recorded>, StoreError> {
    let mut log = Log::open(txn)?;
    let mut tags = Tags::open(txn)?;
    let mut repos: HashMap<(String, Option<String>), Repository> = HashMap::new();
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let mut recorded = Recorded::default();
        for n in batch {
            if log.seen(&n.dedupe_key)? {
                recorded.duplicates += 1;
                continue;
            }
            let key = (n.repository.clone(), n.host.clone());
            let repo = match repos.get(&key) {
                Some(repo) => repo.clone(),
                None => {
                    let repo = local_repository(txn, n)?;
                    repos.insert(key, repo.clone());
                    repo
                }
            };
            let mut reference = repo.reference();
            reference.registry = reference.registry.or_else(|| n.host.clone());
            let mut book = Book {
                log: &mut log,
                tags: &mut tags,
                repository_id: &repo.id,
            };
            let events = changes::from_notification(&mut book, &reference, n)?;
            for (i, e) in events.iter().enumerate() {
                // The first event carries the key; its presence is what counts.
                log.append(e, (i == 0).then_some(n.dedupe_key.as_str()))?;
            }
            recorded.events.extend(events);
        }
        out.push(recorded);
    }
    Ok(out)
}

/// The local repository a notification is for, created on first sight.
fn local_repository(txn: &WriteTransaction, n: &Notification) -> Result<Repository, StoreError> {
    if let Some(repo) = repos::find_local(txn, &n.repository, n.host.as_deref())? {
        return Ok(repo);
    }
    let repo = Repository::new_local(&n.repository);
    repos::put_repository(txn, &repo)?;
    tracing::info!(repository = repo.name, id = repo.id, "new local repository");
    Ok(repo)
}

/// One repository's known tags in the open tables; its marks live in the
/// de-duplication table, where they expire with retention like any key.
pub(super) struct Book<'a, 'txn> {
    pub log: &'a mut Log<'txn>,
    pub tags: &'a mut Tags<'txn>,
    pub repository_id: &'a str,
}

impl Book<'_, '_> {
    fn mark_key(&self, tag: &str) -> String {
        format!("tag-deleted:{}:{tag}", self.repository_id)
    }
}

impl TagBook for Book<'_, '_> {
    type Error = StoreError;

    fn get(&mut self, tag: &str) -> Result<Option<crate::records::KnownTag>, StoreError> {
        self.tags.get(self.repository_id, tag)
    }

    fn put(&mut self, tag: &str, known: crate::records::KnownTag) -> Result<(), StoreError> {
        self.tags.put(self.repository_id, tag, &known)
    }

    fn remove(&mut self, tag: &str) -> Result<(), StoreError> {
        self.tags.remove(self.repository_id, tag)
    }

    fn all(&mut self) -> Result<Vec<(String, crate::records::KnownTag)>, StoreError> {
        self.tags.of(self.repository_id)
    }

    fn mark(&mut self, tag: &str) -> Result<(), StoreError> {
        let key = self.mark_key(tag);
        self.log.mark(&key)
    }

    fn take_mark(&mut self, tag: &str) -> Result<bool, StoreError> {
        let key = self.mark_key(tag);
        self.log.take_mark(&key)
    }
}
