//! Callisto: a durable, signed, pluggable webhook gateway for container
//! registries.
//!
//! An event flows ingest → log → fan-out → delivery → sender:
//!
//! - [`ingest`] turns a registry's notifications into [`event::Event`]s;
//! - [`store`] is the durable log (redb) and every other record;
//! - [`fanout`] runs each webhook's [`plugin`] and writes deliveries;
//! - [`deliver`] signs, sends, records and retries them.
//!
//! [`api`] is the admin HTTP API, [`config`] the settings, [`cli`] the
//! command line.

#![deny(unsafe_code)]

pub mod api;
pub mod changes;
pub mod cli;
pub mod client;
pub mod config;
pub mod console;
pub mod deliver;
pub mod event;
pub mod fanout;
pub mod filtered;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod host_filter;
pub mod ingest;
pub mod metrics;
pub mod net;
pub mod operational;
pub mod plugin;
pub mod poll;
pub mod proxy;
pub mod records;
pub mod seal;
pub mod secrets;
pub mod server;
pub mod store;
pub mod telemetry;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
