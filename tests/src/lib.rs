//! Helpers for Callisto's end-to-end tests: the guests built for them, and
//! the real gateway process, registry, images and receivers they drive.

/// WebAssembly components built from `tests/guests/` by this crate's build
/// script.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

pub mod gateway;
pub mod oci;
pub mod receiver;
pub mod registry;
