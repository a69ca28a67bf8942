//! The types the store's operations take and give, whichever the engine.

use std::collections::HashMap;

use crate::event::{Event, EventType, Timestamp};
use crate::records::{AttemptHealth, DisablePolicy, Webhook};

/// An attempt's effect on its webhook's failing streak
/// ([`Webhook::note_attempt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthUpdate {
    pub attempt: AttemptHealth,
    pub policy: DisablePolicy,
}

/// The next events fan-out has to plan, with the enabled webhooks of their
/// repositories, read from one snapshot.
#[derive(Debug, Default)]
pub struct PlanBatch {
    /// The cursor the batch starts after: planning it moves the cursor from
    /// here to `last`.
    pub cursor: u64,
    pub last: u64,
    pub events: Vec<Event>,
    /// Enabled webhooks by repository id.
    pub webhooks: HashMap<String, Vec<Webhook>>,
}

/// A webhook's delivery still gathering a burst of events (a coalescing
/// window): made by fan-out, never attempted, due later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gathering {
    pub delivery_id: String,
    pub event_id: String,
    /// The earlier events it already carries.
    pub folded: Vec<String>,
    pub due: Timestamp,
}

/// A gathering delivery replaced by `into`, made for a later event of the
/// same burst: it becomes `Folded` and is never sent on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fold {
    pub delivery_id: String,
    pub into: String,
}

/// A pending delivery's place in the due index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DueDelivery {
    pub due_ms: u64,
    pub id: String,
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Succeeded,
    Retry {
        at: Timestamp,
    },
    /// The schedule is spent.
    Dead,
    /// Not to be attempted again (e.g. the webhook answered `410 Gone`).
    Failed,
}

/// What `GET /api/v1/events` may ask for. Newest first.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub repository_id: Option<String>,
    pub kind: Option<EventType>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Cursor: only events older than this event id.
    pub before: Option<String>,
    pub limit: usize,
}

/// What one pruning pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub events: usize,
    pub deliveries: usize,
}

impl Pruned {
    pub fn is_empty(&self) -> bool {
        self.events == 0 && self.deliveries == 0
    }
}

/// What [`claim_due`](super::Store::claim_due) took for one webhook.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    /// The deliveries claimed, due now, earliest first: this gateway sends
    /// them, no other one does until the lease expires or an attempt is
    /// recorded.
    pub claimed: Vec<DueDelivery>,
    /// When the webhook's next pending delivery not claimed here may be
    /// claimed (Unix ms): when it is due, or when another gateway's lease on
    /// it expires. `None` if it has none.
    pub next_ms: Option<u64>,
}

/// Whether this gateway may poll a remote repository now
/// ([`claim_poll`](super::Store::claim_poll)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollClaim {
    /// It may, and no other gateway will until the lease expires or the
    /// poll is recorded.
    Claimed,
    /// Not before `until`: another gateway is polling it (until its lease
    /// expires), or polled it and the next poll is due then.
    NotYet { until: crate::event::Timestamp },
    /// The repository no longer exists.
    Gone,
}

/// Whether this gateway plans fan-out now
/// ([`lead_fanout`](super::Store::lead_fanout)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// It does, until the lease it just took or renewed expires.
    Leading,
    /// Another gateway does, until `until` unless it renews.
    Following { until: crate::event::Timestamp },
}
