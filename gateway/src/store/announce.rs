//! What the store tells the rest of the gateway after a commit: that events
//! were appended (fan-out wakes) and that deliveries are due (the sender
//! schedules them). Announced only once committed, so a woken reader always
//! finds what it was woken for.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use crate::event::Timestamp;

/// A webhook has a delivery due at `at` (fan-out, a replay, a redelivery, a
/// webhook enabled again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub webhook: String,
    pub at: Timestamp,
}

#[derive(Clone)]
pub(super) struct Announcer {
    /// Counts commits that appended events.
    events: Arc<watch::Sender<u64>>,
    /// Counts changes to installed plugins made by other gateways.
    plugins: Arc<watch::Sender<u64>>,
    due: Arc<Mutex<Vec<mpsc::UnboundedSender<Due>>>>,
}

impl Default for Announcer {
    fn default() -> Self {
        Self {
            events: Arc::new(watch::Sender::new(0)),
            plugins: Arc::new(watch::Sender::new(0)),
            due: Arc::default(),
        }
    }
}

impl Announcer {
    pub fn events_appended(&self) {
        self.events.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn plugins_changed(&self) {
        self.plugins.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe_plugins(&self) -> watch::Receiver<u64> {
        self.plugins.subscribe()
    }

    pub fn due(&self, due: impl IntoIterator<Item = Due>) {
        let mut subscribers = self.due.lock().unwrap_or_else(|e| e.into_inner());
        for d in due {
            subscribers.retain(|s| s.send(d.clone()).is_ok());
        }
    }

    pub fn subscribe_events(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }

    pub fn subscribe_due(&self) -> mpsc::UnboundedReceiver<Due> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.due.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
        rx
    }
}
