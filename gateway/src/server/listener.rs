//! Serving HTTP connections with limits a public listener needs: a cap on
//! connections open at once, and time limits on the connection's idle and
//! header phases, so that a client that sends nothing, half a header, or
//! keeps an idle connection forever cannot hold file descriptors until the
//! process runs out. (Bodies are bounded in time where they are read:
//! `api::input::read_body`.)

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

use crate::config::ListenerConfig;

/// Which HTTP a connection speaks, known before its first byte: HTTP/2 only
/// when TLS negotiated it (ALPN `h2`). Sniffing the first bytes instead
/// would wait, without a time limit, for a client that sends none.
pub trait Negotiated {
    fn is_h2(&self) -> bool;
}

impl Negotiated for tokio::net::TcpStream {
    fn is_h2(&self) -> bool {
        false
    }
}

impl Negotiated for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn is_h2(&self) -> bool {
        self.get_ref().1.alpn_protocol() == Some(b"h2")
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets connections
/// finish what they are answering (up to `limits.shutdown_grace_secs`).
pub async fn serve<L>(
    mut listener: L,
    router: axum::Router,
    limits: ListenerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) where
    L: axum::serve::Listener,
    L::Io: Negotiated + Unpin,
{
    let mut h1 = Builder::new(TokioExecutor::new()).http1_only();
    h1.http1()
        .timer(TokioTimer::new())
        // Covers a connection that sends nothing, half a header, or sits
        // idle between requests: hyper arms it whenever it waits for a head.
        .header_read_timeout(Duration::from_secs(limits.header_read_timeout_secs))
        .keep_alive(true);
    let mut h2 = Builder::new(TokioExecutor::new()).http2_only();
    h2.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(limits.idle_timeout_secs.max(1)))
        .keep_alive_timeout(Duration::from_secs(limits.header_read_timeout_secs));
    let (h1, h2) = (Arc::new(h1), Arc::new(h2));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (io, _) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let service = TowerToHyperService::new(router.clone());
        let builder = if io.is_h2() { &h2 } else { &h1 };
        let connection = builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection ended: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(
        Duration::from_secs(limits.shutdown_grace_secs),
        graceful.shutdown(),
    )
    .await
    .is_err()
    {
        tracing::warn!("connections still open at shutdown were closed");
    }
}
