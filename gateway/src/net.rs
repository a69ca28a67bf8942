//! Outbound network access, shared by everything that calls out (the
//! sender, Test Webhook, the poller, the CLI): which addresses may be
//! reached, the HTTP client that enforces it, and errors put in words a
//! person can act on.

pub mod client;
pub mod policy;

pub use policy::Policy;

/// A short reason a person can act on: "connection refused", "timed out".
pub fn describe(err: &reqwest::Error) -> String {
    use std::error::Error as _;
    if err.is_timeout() {
        return "timed out".to_owned();
    }
    let mut source = err.source();
    let mut innermost = None;
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".to_owned(),
                std::io::ErrorKind::ConnectionReset => return "connection reset".to_owned(),
                std::io::ErrorKind::TimedOut => return "timed out".to_owned(),
                _ => {}
            }
        }
        innermost = Some(e.to_string());
        source = e.source();
    }
    match innermost {
        Some(reason) if err.is_connect() => format!("cannot connect: {reason}"),
        Some(reason) => reason,
        None => err.to_string(),
    }
}
