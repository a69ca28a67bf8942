//! Helpers for Callisto's end-to-end tests: the guests built for them, and
//! (in later modules) the real gateway, registry and receivers they drive.

/// WebAssembly components built from `tests/guests/` by this crate's build
/// script.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}
