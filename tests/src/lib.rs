//! Helpers for Callisto's end-to-end tests: the guests built for them, and
//! the real gateway process, registry, images and receivers they drive.

/// WebAssembly components built from `tests/guests/` by this crate's build
/// script.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

pub mod browser;
pub mod gateway;
pub mod oci;
pub mod postgres;
pub mod proxy;
pub mod receiver;
pub mod registry;

/// An HTTP client for tests: loopback only, no proxy. Installs the
/// process's rustls provider first, as the gateway does: reqwest is built
/// without a default one.
pub fn http() -> reqwest::Client {
    callisto::net::client::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}
