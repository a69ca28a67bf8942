//! How records are encoded in the redb file: MessagePack with field names,
//! so that a field added later reads as its default from older records.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::event::Event;

use super::StoreError;

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Most records are a few hundred bytes: one allocation, no regrowth.
    let mut buf = Vec::with_capacity(512);
    rmp_serde::encode::write_named(&mut buf, value).expect("records always serialize");
    buf
}

pub(crate) fn decode<T: DeserializeOwned>(
    table: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table,
        reason: e.to_string(),
    })
}

/// An event as the log keeps it: the event and the key that de-duplicates
/// its source (the registry's own event id), kept so that pruning the event
/// also prunes the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    pub event: Event,
    #[serde(default)]
    pub dedupe_key: Option<String>,
}

/// [`StoredEvent`] borrowed, to encode without copying the event.
#[derive(Serialize)]
pub(crate) struct StoredEventRef<'a> {
    pub event: &'a Event,
    pub dedupe_key: Option<&'a str>,
}
