//! Remote repositories: Callisto polls registries it does not control and
//! turns what changed into the same events as a registry's notifications.

pub mod reference;

use tokio::sync::mpsc;

/// What the API asks of the poller.
#[derive(Debug)]
pub enum Command {
    /// A remote repository was created or changed: (re)schedule it.
    Schedule(String),
    /// Poll it now.
    Now(String),
    /// It was deleted.
    Forget(String),
}

/// A handle to the poller. Cheap to clone.
#[derive(Clone)]
pub struct Poller {
    inbox: mpsc::UnboundedSender<Command>,
}

impl Poller {
    pub fn new(inbox: mpsc::UnboundedSender<Command>) -> Self {
        Self { inbox }
    }

    pub fn schedule(&self, repository_id: &str) {
        let _ = self.inbox.send(Command::Schedule(repository_id.to_owned()));
    }

    pub fn poll_now(&self, repository_id: &str) {
        let _ = self.inbox.send(Command::Now(repository_id.to_owned()));
    }

    pub fn forget(&self, repository_id: &str) {
        let _ = self.inbox.send(Command::Forget(repository_id.to_owned()));
    }
}
