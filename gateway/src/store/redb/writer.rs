//! Group commit: one thread owns writing, takes every write queued while the
//! previous commit was syncing, applies them in one transaction and syncs
//! once. Sixty-four concurrent ingest requests cost one `fsync`, not
//! sixty-four, and nobody is told "done" before their write is on disk.
//!
//! Some writes need not reach the disk before their caller goes on: moving
//! the fan-out cursor past events that made no delivery, or recording an
//! attempt (lost, it is simply made again: delivery is at least once). Those
//! are *lazy*: a batch of only lazy jobs commits without `fsync`, and becomes
//! durable with the next durable commit, or after [`LAZY_WINDOW`] at the
//! latest. A batch with any durable job is synced before anyone is answered.
//!
//! A job must check before it writes: a job that returns a domain error must
//! not have written anything, because the transaction it shares with other
//! jobs still commits. A storage error fails the whole batch.
//!
//! After a storage failure (a full disk) redb refuses every later write on
//! that handle; the writer takes the database out of service, answers
//! `Unavailable` to everyone, and reopens the file once it can.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;

use super::{Handle, StoreError};

/// Jobs taken into one transaction at most, so that a flood cannot make one
/// commit arbitrarily large.
const MAX_BATCH: usize = 4096;

/// How long lazy writes may stay unsynced.
pub(crate) const LAZY_WINDOW: Duration = Duration::from_millis(200);

/// How often a failed store tries to reopen its file.
const RECOVERY_INTERVAL: Duration = Duration::from_millis(500);

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Runs a job in a transaction, or, given none, answers its caller that the
/// store is unavailable.
type Run = Box<dyn FnOnce(Option<&WriteTransaction>) -> Result<Completion, StoreError> + Send>;

struct Job {
    run: Run,
    durable: bool,
}

#[derive(Clone)]
pub(crate) struct Writer {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// The last handle to go closes the queue and waits for the thread (which
/// syncs what is lazy), so that once a `Store` is dropped its file is closed
/// and can be opened again.
impl Drop for Inner {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Writer {
    pub fn start(handle: Arc<Handle>, path: std::path::PathBuf, cache_bytes: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&handle, &path, cache_bytes, &queue))
            .expect("start the store writer thread");
        Self {
            inner: Arc::new(Inner {
                jobs: Some(jobs),
                thread: Some(thread),
            }),
        }
    }

    /// Queues `f` and returns the receiver of its result, delivered once the
    /// transaction it ran in has committed (and, if `durable`, synced).
    pub fn submit<R, F>(&self, durable: bool, f: F) -> oneshot::Receiver<Result<R, StoreError>>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let run: Run = Box::new(move |txn| {
            let Some(txn) = txn else {
                let _ = tx.send(Err(StoreError::Unavailable));
                return Ok(Box::new(|_| {}));
            };
            match f(txn) {
                Err(e) if e.is_storage() => Err(e),
                result => Ok(Box::new(move |commit: Result<(), StoreError>| {
                    let _ = tx.send(commit.and(result));
                })),
            }
        });
        // A closed queue drops the job and with it `tx`: the caller sees the
        // writer as gone.
        if let Some(jobs) = &self.inner.jobs {
            let _ = jobs.send(Job { run, durable });
        }
        rx
    }
}

fn run(handle: &Handle, path: &Path, cache_bytes: usize, queue: &mpsc::Receiver<Job>) {
    // When the oldest unsynced lazy commit was made.
    let mut unsynced: Option<Instant> = None;
    loop {
        let Ok(db) = handle.current() else {
            if !recover(handle, path, cache_bytes, queue) {
                return;
            }
            continue;
        };
        let first = match unsynced {
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Some(since) => match queue.recv_timeout(LAZY_WINDOW.saturating_sub(since.elapsed())) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    unsynced = None;
                    if !sync(&db) {
                        fail(handle, db);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    sync(&db);
                    return;
                }
            },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let durable =
            batch.iter().any(|j| j.durable) || unsynced.is_some_and(|t| t.elapsed() >= LAZY_WINDOW);
        match commit_batch(&db, batch, durable) {
            Ok(()) if durable => unsynced = None,
            Ok(()) => unsynced = unsynced.or(Some(Instant::now())),
            Err(Failure::Storage) => {
                // Lazy commits since the last sync may go with the handle:
                // they are the kind that is redone.
                unsynced = None;
                fail(handle, db);
            }
            Err(Failure::Job) => {}
        }
    }
}

/// Takes the database out of service after a storage failure.
fn fail(handle: &Handle, db: Arc<Database>) {
    tracing::error!("storage failed; writes are refused until the file can be reopened");
    drop(handle.take());
    drop(db);
}

/// Answers queued jobs `Unavailable` and tries to reopen the file until it
/// works. Returns false when the store is being dropped.
fn recover(handle: &Handle, path: &Path, cache_bytes: usize, queue: &mpsc::Receiver<Job>) -> bool {
    loop {
        loop {
            match queue.try_recv() {
                Ok(job) => reject(job),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
        // Readers still holding the old handle keep the file locked for a
        // moment, and a disk still full fails the reopen: both pass.
        match redb::Builder::new().set_cache_size(cache_bytes).open(path) {
            Ok(db) => {
                handle.put(Arc::new(db));
                tracing::info!("storage recovered: the store takes writes again");
                return true;
            }
            Err(e) => tracing::debug!("store not reopened yet: {e}"),
        }
        match queue.recv_timeout(RECOVERY_INTERVAL) {
            Ok(job) => reject(job),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// Answers a job `Unavailable` without running it.
fn reject(job: Job) {
    if let Ok(done) = (job.run)(None) {
        done(Ok(()));
    }
}

/// Makes every earlier lazy commit durable: an empty durable commit syncs
/// the file. Returns whether it worked.
fn sync(db: &Database) -> bool {
    let result = db
        .begin_write()
        .map_err(redb::Error::from)
        .and_then(|mut txn| {
            txn.set_durability(Durability::Immediate)
                .map_err(redb::Error::from)?;
            txn.commit().map_err(redb::Error::from)
        });
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::error!("syncing lazy writes failed: {e}");
            false
        }
    }
}

/// Why a batch did not commit.
enum Failure {
    /// The storage failed: the handle must be reopened.
    Storage,
    /// A job failed on its own (a record that does not decode); the
    /// database is fine.
    Job,
}

/// Applies and commits a batch, answering every job.
fn commit_batch(db: &Database, batch: Vec<Job>, durable: bool) -> Result<(), Failure> {
    let started = Instant::now();
    let jobs = batch.len();
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            tracing::error!("cannot begin a write transaction: {e}");
            batch.into_iter().for_each(reject);
            return Err(Failure::Storage);
        }
    };
    let durability = if durable {
        Durability::Immediate
    } else {
        Durability::None
    };
    if let Err(e) = txn.set_durability(durability) {
        tracing::error!("cannot set durability: {e}");
        batch.into_iter().for_each(reject);
        return Err(Failure::Storage);
    }
    let mut completions = Vec::with_capacity(batch.len());
    let mut jobs_left = batch.into_iter();
    for job in jobs_left.by_ref() {
        match (job.run)(Some(&txn)) {
            Ok(done) => completions.push(done),
            Err(e) => {
                tracing::error!("write failed, abandoning its batch: {e}");
                let _ = txn.abort();
                let message = e.to_string();
                for done in completions {
                    done(Err(StoreError::Batch(message.clone())));
                }
                jobs_left.for_each(reject);
                return Err(match e {
                    StoreError::Storage(_) => Failure::Storage,
                    _ => Failure::Job,
                });
            }
        }
    }
    let applied = started.elapsed();
    let committed = txn
        .commit()
        .map_err(|e| StoreError::from(redb::Error::from(e)));
    tracing::trace!(
        jobs,
        durable,
        apply_us = applied.as_micros() as u64,
        commit_us = (started.elapsed() - applied).as_micros() as u64,
        "write batch"
    );
    let result = match &committed {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::error!("commit failed: {e}");
            Err(Failure::Storage)
        }
    };
    for done in completions {
        done(committed.clone());
    }
    result
}
