//! The event: what the log holds, what plugins see and what the API shows.
//!
//! The model itself is the `callisto-event` crate, shared with the plugin
//! SDK so that the host and its plugins cannot disagree on it; this module
//! adds what only the gateway does: making ids.

pub use callisto_event::{Event, EventSource, EventType, RepositoryRef, Timestamp};

/// Makes the prefixed, sortable ids of every record: `evt_`, `repo_`, `wh_`,
/// `dlv_` followed by a ULID. Monotonic within a process, so ids made in the
/// same millisecond still sort in creation order.
pub fn new_id(prefix: &str) -> String {
    use std::sync::Mutex;
    static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);
    let mut guard = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let generator = guard.get_or_insert_with(ulid::Generator::new);
    let ulid = generator.generate().unwrap_or_else(|_| ulid::Ulid::new());
    format!("{prefix}_{ulid}")
}

/// A new event of the log, with a fresh id; the rest is added with
/// `Event`'s `with_*` methods.
pub fn new_event(
    kind: EventType,
    source: EventSource,
    repository: RepositoryRef,
    occurred_at: Timestamp,
) -> Event {
    Event::new(new_id("evt"), kind, source, repository, occurred_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_creation_order() {
        let ids: Vec<String> = (0..1000).map(|_| new_id("evt")).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(ids[0].starts_with("evt_") && ids[0].len() == 30);
    }
}
