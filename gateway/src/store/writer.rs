//! Group commit: one thread owns writing, takes every write queued while the
//! previous commit was syncing, applies them in one transaction and syncs
//! once. Sixty-four concurrent ingest requests cost one `fsync`, not
//! sixty-four, and nobody is told "done" before their write is on disk.
//!
//! A job must check before it writes: a job that returns a domain error must
//! not have written anything, because the transaction it shares with other
//! jobs still commits. A storage error fails the whole batch.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;

use super::StoreError;

/// Jobs taken into one transaction at most, so that a flood cannot make one
/// commit arbitrarily large.
const MAX_BATCH: usize = 4096;

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn FnOnce(&WriteTransaction) -> Result<Completion, StoreError> + Send>;

#[derive(Clone)]
pub(crate) struct Writer {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// The last handle to go closes the queue and waits for the thread, so that
/// once a `Store` is dropped its file is closed and can be opened again.
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
    /// transaction it ran in has committed (or failed).
    pub fn submit<R, F>(&self, f: F) -> oneshot::Receiver<Result<R, StoreError>>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |txn| match f(txn) {
            Err(e) if e.is_storage() => Err(e),
            result => Ok(Box::new(move |commit: Result<(), StoreError>| {
                let _ = tx.send(commit.and(result));
            })),
        });
        // A closed queue drops the job and with it `tx`: the caller sees the
        // writer as gone.
        if let Some(jobs) = &self.inner.jobs {
            let _ = jobs.send(job);
        }
        rx
    }
}

fn run(db: &Database, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(db, batch);
    }
}

fn commit_batch(db: &Database, batch: Vec<Job>) {
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            // Dropping the jobs tells their callers; log the cause once.
            tracing::error!("cannot begin a write transaction: {e}");
            return;
        }
    };
    if let Err(e) = txn.set_durability(Durability::Immediate) {
        tracing::error!("cannot set durability: {e}");
        return;
    }
    let mut completions = Vec::with_capacity(batch.len());
    for job in batch {
        match job(&txn) {
            Ok(done) => completions.push(done),
            Err(e) => {
                tracing::error!("write failed, abandoning its batch: {e}");
                let _ = txn.abort();
                let message = e.to_string();
                for done in completions {
                    done(Err(StoreError::Batch(message.clone())));
                }
                return;
            }
        }
    }
    let committed = txn
        .commit()
        .map_err(|e| StoreError::from(redb::Error::from(e)));
    if let Err(e) = &committed {
        tracing::error!("commit failed: {e}");
    }
    for done in completions {
        done(committed.clone());
    }
}
