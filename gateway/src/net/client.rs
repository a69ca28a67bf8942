//! The HTTP clients every outbound request goes through (webhook attempts,
//! Test Webhook, polling registries and their token services): rustls with
//! the system's and webpki's roots, bounded timeouts, no proxy unless
//! Callisto is told of one, and the address policy enforced on every
//! address connected to.

use std::sync::Arc;
use std::time::Duration;

use super::policy::{GuardedResolver, Policy};
use crate::config::{DeliveryConfig, PollConfig};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("building the HTTP client: {0}")]
    Build(String),
}

/// The crypto provider every TLS user of the process shares (the sender,
/// the registry poller, the listener).
pub fn install_crypto_provider() {
    // Fails only when one is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Trust roots: webpki's bundle plus the system's certificates, plus the
/// extra PEM certificates given.
pub fn root_store(extra_pem: &[u8]) -> Result<rustls::RootCertStore, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    for cert in rustls_pemfile::certs(&mut &extra_pem[..]) {
        let cert =
            cert.map_err(|e| ClientError::Build(format!("reading a CA certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| ClientError::Build(format!("adding a CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The client for webhook attempts: no redirects (a receiver's `3xx` is its
/// answer), one idle pool per receiver.
pub fn build(
    config: &DeliveryConfig,
    policy: Arc<Policy>,
    extra_ca_pem: &[u8],
) -> Result<reqwest::Client, ClientError> {
    guarded(policy, extra_ca_pem)?
        .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
        .timeout(Duration::from_secs(config.timeout_secs))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(config.concurrency_per_webhook.max(8))
        .build()
        .map_err(|e| ClientError::Build(e.to_string()))
}

/// The client for polling registries: a few redirects, each hop checked by
/// the address policy like the first (a registry may send its tag list
/// elsewhere, but not into the gateway's own network).
pub fn build_for_registries(
    config: &PollConfig,
    policy: Arc<Policy>,
    extra_ca_pem: &[u8],
) -> Result<reqwest::Client, ClientError> {
    let hops = policy.clone();
    let redirect = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            attempt.error("more than 5 redirects")
        } else if let Err(refused) = hops.check_url(attempt.url()) {
            attempt.error(refused)
        } else {
            attempt.follow()
        }
    });
    let timeout = Duration::from_secs(config.timeout_secs);
    guarded(policy, extra_ca_pem)?
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .redirect(redirect)
        .build()
        .map_err(|e| ClientError::Build(e.to_string()))
}

/// What every outbound client shares: rustls with the system's and webpki's
/// roots (and `extra_ca_pem`), names resolved through the address policy,
/// and no proxy from the environment: `HTTP_PROXY` would carry requests
/// past the policy, which could then no longer see where they go.
fn guarded(
    policy: Arc<Policy>,
    extra_ca_pem: &[u8],
) -> Result<reqwest::ClientBuilder, ClientError> {
    install_crypto_provider();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Build(e.to_string()))?
    .with_root_certificates(root_store(extra_ca_pem)?)
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver::new(policy)))
        .user_agent(concat!("Callisto/", env!("CARGO_PKG_VERSION"))))
}
