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
    build_with(config, policy, extra_ca_pem, None)
}

/// A webhook's client certificate and private key, in PEM.
pub struct Identity<'a> {
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
}

/// Checks a client certificate chain and its private key as TLS will use
/// them: at least one certificate, a key of a kind rustls signs with, and
/// the key matching the first certificate.
pub fn check_identity(identity: &Identity<'_>) -> Result<(), ClientError> {
    let (certs, key) = parse_identity(identity)?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = rustls::sign::CertifiedKey::from_der(certs, key, &provider)
        .map_err(|e| ClientError::Build(format!("the key does not fit the certificate: {e}")))?;
    drop(certified);
    Ok(())
}

fn parse_identity(
    identity: &Identity<'_>,
) -> Result<
    (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    ClientError,
> {
    let certs = rustls_pemfile::certs(&mut identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Build(format!("reading the certificate: {e}")))?;
    if certs.is_empty() {
        return Err(ClientError::Build("no PEM certificate found".into()));
    }
    let key = rustls_pemfile::private_key(&mut identity.key_pem.as_bytes())
        .map_err(|e| ClientError::Build(format!("reading the private key: {e}")))?
        .ok_or_else(|| ClientError::Build("no PEM private key found".into()))?;
    Ok((certs, key))
}

/// The webhook client, presenting `identity` to receivers that ask for a
/// client certificate (mTLS) when one is given.
fn build_with(
    config: &DeliveryConfig,
    policy: Arc<Policy>,
    extra_ca_pem: &[u8],
    identity: Option<&Identity<'_>>,
) -> Result<reqwest::Client, ClientError> {
    let builder = match &config.proxy {
        // The client connects to the proxy only, which the operator named:
        // no address guard on it. Each receiver is checked by the sender
        // (`Policy::check_target`) before its request.
        Some(proxy) => {
            let proxy = reqwest::Proxy::all(proxy)
                .map_err(|e| ClientError::Build(format!("delivery.proxy: {e}")))?;
            tls_builder(extra_ca_pem, identity)?.proxy(proxy)
        }
        None => guarded_with(policy, extra_ca_pem, identity)?,
    };
    builder
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
    guarded_with(policy, extra_ca_pem, None)
}

fn guarded_with(
    policy: Arc<Policy>,
    extra_ca_pem: &[u8],
    identity: Option<&Identity<'_>>,
) -> Result<reqwest::ClientBuilder, ClientError> {
    Ok(tls_builder(extra_ca_pem, identity)?
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver::new(policy))))
}

/// rustls with the roots (and a client certificate, if given), and the
/// user agent: what every outbound client has.
fn tls_builder(
    extra_ca_pem: &[u8],
    identity: Option<&Identity<'_>>,
) -> Result<reqwest::ClientBuilder, ClientError> {
    install_crypto_provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Build(e.to_string()))?
    .with_root_certificates(root_store(extra_ca_pem)?);
    let tls = match identity {
        Some(identity) => {
            let (certs, key) = parse_identity(identity)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| ClientError::Build(format!("the client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .user_agent(concat!("Callisto/", env!("CARGO_PKG_VERSION"))))
}

/// The clients webhook attempts go through: the shared one, and one per
/// client certificate (mTLS), built on first use and kept, keyed by a
/// digest of the certificate and key, so that a webhook with a certificate
/// keeps its connection pool and one without pays nothing.
pub struct WebhookClients {
    shared: reqwest::Client,
    config: DeliveryConfig,
    policy: Arc<Policy>,
    extra_ca_pem: Vec<u8>,
    with_identity: std::sync::Mutex<std::collections::HashMap<[u8; 32], reqwest::Client>>,
}

impl WebhookClients {
    pub fn new(
        shared: reqwest::Client,
        config: DeliveryConfig,
        policy: Arc<Policy>,
        extra_ca_pem: Vec<u8>,
    ) -> Self {
        Self {
            shared,
            config,
            policy,
            extra_ca_pem,
            with_identity: Default::default(),
        }
    }

    /// The client without a client certificate.
    pub fn shared(&self) -> &reqwest::Client {
        &self.shared
    }

    /// Whether attempts go through a proxy, which resolves receivers
    /// itself: the sender then checks each receiver's addresses first.
    pub fn proxied(&self) -> bool {
        self.config.proxy.is_some()
    }

    /// The client presenting `identity`.
    pub fn with_identity(&self, identity: &Identity<'_>) -> Result<reqwest::Client, ClientError> {
        use sha2::Digest;
        let mut digest = sha2::Sha256::new();
        digest.update(identity.cert_pem.as_bytes());
        digest.update([0]);
        digest.update(identity.key_pem.as_bytes());
        let key: [u8; 32] = digest.finalize().into();
        let mut clients = self.with_identity.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = build_with(
            &self.config,
            self.policy.clone(),
            &self.extra_ca_pem,
            Some(identity),
        )?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}
