//! The connection pool to the upstream registry, and the time limits of a
//! forwarded request.
//!
//! Only two phases are timed: connecting, and waiting for the answer once
//! the request's body has been sent. A body flowing in either direction is
//! not: a 1 GiB layer over a slow link takes as long as it takes, and
//! backpressure (hyper stops reading from one side while the other is not
//! writable) keeps memory flat meanwhile. Nothing here is shared with the
//! admin listener or the pipeline but the store, so an upstream that hangs
//! holds only the proxy's own connections.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::oneshot;

use crate::config::ProxyConfig;

/// Why a request got no answer from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the upstream registry did not answer: {0}")]
    Unreachable(String),
    #[error("the upstream registry did not answer within {0:?}")]
    Timeout(Duration),
}

#[derive(Debug, thiserror::Error)]
#[error("proxy upstream: {0}")]
pub struct BuildError(pub String);

pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    /// `http://host:port`, as the upstream writes its own URLs.
    pub origin: String,
    pub scheme: http::uri::Scheme,
    /// `host:port` (the port only when not the scheme's default): the
    /// `Host` sent, and the registry named in events.
    pub authority: http::uri::Authority,
    response_timeout: Duration,
}

impl Upstream {
    pub fn new(config: &ProxyConfig, extra_ca_pem: &[u8]) -> Result<Self, BuildError> {
        let url = config
            .upstream_url()
            .map_err(|e| BuildError(e.to_string()))?;
        let origin = url.origin().ascii_serialization();
        let authority_text = origin
            .split_once("://")
            .map(|(_, a)| a.to_owned())
            .unwrap_or_default();
        let authority: http::uri::Authority = authority_text
            .parse()
            .map_err(|e| BuildError(format!("{authority_text}: {e}")))?;
        let scheme = if url.scheme() == "https" {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        };

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(config.connect_timeout_secs)));
        crate::net::client::install_crypto_provider();
        let roots =
            crate::net::client::root_store(extra_ca_pem).map_err(|e| BuildError(e.to_string()))?;
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(https);
        Ok(Self {
            client,
            origin,
            scheme,
            authority,
            response_timeout: Duration::from_secs(config.response_timeout_secs),
        })
    }

    /// The URI of `path_and_query` on the upstream.
    pub fn uri(&self, path_and_query: &http::uri::PathAndQuery) -> http::Uri {
        http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query.clone())
            .build()
            .expect("scheme, authority and path make a URI")
    }

    /// Sends `request`, whose body streams as the client sends it; the
    /// answer's time limit starts when that body has been sent in full.
    pub async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        // A body already at its end may never be polled: nothing to wait for.
        let (request, mut sent) = if !request.body().is_end_stream() {
            let (tx, rx) = oneshot::channel();
            let (parts, body) = request.into_parts();
            let body = Body::new(Signalled {
                inner: body,
                done: Some(tx),
            });
            (http::Request::from_parts(parts, body), Some(rx))
        } else {
            (request, None)
        };
        let answer = self.client.request(request);
        tokio::pin!(answer);
        let limit = self.response_timeout;
        let mut deadline = sent.is_none().then(|| tokio::time::Instant::now() + limit);
        loop {
            tokio::select! {
                answer = &mut answer => {
                    return answer.map_err(|e| UpstreamError::Unreachable(describe(&e)));
                }
                _ = async { sent.as_mut().expect("guarded").await }, if sent.is_some() => {
                    sent = None;
                    deadline = Some(tokio::time::Instant::now() + limit);
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    return Err(UpstreamError::Timeout(limit));
                }
            }
        }
    }
}

/// The error and its causes on one line (hyper's own message alone says
/// only "client error (Connect)").
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A request body that says when it has been read to its end (or failed),
/// which is when the wait for the answer begins.
struct Signalled {
    inner: Body,
    done: Option<oneshot::Sender<()>>,
}

impl HttpBody for Signalled {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_))))
            && let Some(done) = self.done.take()
        {
            let _ = done.send(());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
