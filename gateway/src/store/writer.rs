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

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;

use super::StoreError;

/// Jobs taken into one transaction at most, so that a flood cannot make one
/// commit arbitrarily large.
const MAX_BATCH: usize = 4096;

/// How long lazy writes may stay unsynced.
pub(crate) const LAZY_WINDOW: Duration = Duration::from_millis(200);

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Apply = Box<dyn FnOnce(&WriteTransaction) -> Result<Completion, StoreError> + Send>;

struct Job {
    apply: Apply,
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
    pub fn start(db: Arc<Database>) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&db, &queue))
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
        let apply: Apply = Box::new(move |txn| match f(txn) {
            Err(e) if e.is_storage() => Err(e),
            result => Ok(Box::new(move |commit: Result<(), StoreError>| {
                let _ = tx.send(commit.and(result));
            })),
        });
        // A closed queue drops the job and with it `tx`: the caller sees the
        // writer as gone.
        if let Some(jobs) = &self.inner.jobs {
            let _ = jobs.send(Job { apply, durable });
        }
        rx
    }
}

fn run(db: &Database, queue: &mpsc::Receiver<Job>) {
    // When the oldest unsynced lazy commit was made.
    let mut unsynced: Option<Instant> = None;
    loop {
        let first = match unsynced {
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Some(since) => match queue.recv_timeout(LAZY_WINDOW.saturating_sub(since.elapsed())) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    sync(db);
                    unsynced = None;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    sync(db);
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
        if commit_batch(db, batch, durable) {
            unsynced = if durable {
                None
            } else {
                unsynced.or(Some(Instant::now()))
            };
        }
    }
}

/// Makes every earlier lazy commit durable: an empty durable commit syncs
/// the file.
fn sync(db: &Database) {
    let result = db
        .begin_write()
        .map_err(redb::Error::from)
        .and_then(|mut txn| {
            txn.set_durability(Durability::Immediate)
                .map_err(redb::Error::from)?;
            txn.commit().map_err(redb::Error::from)
        });
    if let Err(e) = result {
        tracing::error!("syncing lazy writes failed: {e}");
    }
}

/// Applies and commits a batch; returns whether it committed.
fn commit_batch(db: &Database, batch: Vec<Job>, durable: bool) -> bool {
    let started = Instant::now();
    let jobs = batch.len();
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            // Dropping the jobs tells their callers; log the cause once.
            tracing::error!("cannot begin a write transaction: {e}");
            return false;
        }
    };
    let durability = if durable {
        Durability::Immediate
    } else {
        Durability::None
    };
    if let Err(e) = txn.set_durability(durability) {
        tracing::error!("cannot set durability: {e}");
        return false;
    }
    let mut completions = Vec::with_capacity(batch.len());
    for job in batch {
        match (job.apply)(&txn) {
            Ok(done) => completions.push(done),
            Err(e) => {
                tracing::error!("write failed, abandoning its batch: {e}");
                let _ = txn.abort();
                let message = e.to_string();
                for done in completions {
                    done(Err(StoreError::Batch(message.clone())));
                }
                return false;
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
    if let Err(e) = &committed {
        tracing::error!("commit failed: {e}");
    }
    let ok = committed.is_ok();
    for done in completions {
        done(committed.clone());
    }
    ok
}
