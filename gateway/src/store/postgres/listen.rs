//! Wakeups between gateways on one database: each commit that appends
//! events or makes deliveries due also sends a notification (`pg_notify`,
//! delivered by PostgreSQL only when the transaction commits), and each
//! store listens on a connection of its own (`LISTEN`), announcing what
//! other gateways committed as if it had committed it: their fan-out and
//! senders wake as promptly as for their own commits.
//!
//! A notification names the store that sent it, which ignores its own (it
//! announced them already). If the listening connection fails, it is made
//! again; a reconnection announces that events may have been appended and
//! every webhook with due deliveries, for what was missed meanwhile.

use std::future::poll_fn;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Socket};

use super::cached::Transaction;

use super::{Doing, StoreError};
use crate::event::Timestamp;
use crate::store::announce::{Announcer, Due};

/// The channel of events appended; its payload is the sender's instance.
pub(super) const EVENTS: &str = "callisto_events";
/// The channel of deliveries due; its payload is `instance webhook at_ms`.
pub(super) const DUE: &str = "callisto_due";
/// The channel of installed plugins changed; its payload is the sender's
/// instance.
pub(super) const PLUGINS: &str = "callisto_plugins";

/// Notifies, on commit, that a plugin was installed, replaced or removed.
pub(super) async fn plugins_changed(
    txn: &Transaction<'_>,
    instance: &str,
) -> Result<(), StoreError> {
    txn.execute("SELECT pg_notify($1, $2)", &[&PLUGINS, &instance])
        .await
        .doing("notifying other gateways of a plugin")?;
    Ok(())
}

/// Notifies, on commit, that events were appended.
pub(super) async fn events_appended(
    txn: &Transaction<'_>,
    instance: &str,
) -> Result<(), StoreError> {
    txn.execute("SELECT pg_notify($1, $2)", &[&EVENTS, &instance])
        .await
        .doing("notifying other gateways of appended events")?;
    Ok(())
}

/// Notifies, on commit, that deliveries are due: one notification per
/// webhook, at its earliest.
pub(super) async fn due(
    txn: &Transaction<'_>,
    instance: &str,
    due: &[Due],
) -> Result<(), StoreError> {
    let mut earliest: std::collections::BTreeMap<&str, i64> = Default::default();
    for d in due {
        let at = d.at.unix_millis();
        let entry = earliest.entry(d.webhook.as_str()).or_insert(at);
        *entry = (*entry).min(at);
    }
    for (webhook, at) in earliest {
        let payload = format!("{instance} {webhook} {at}");
        txn.execute("SELECT pg_notify($1, $2)", &[&DUE, &payload])
            .await
            .doing("notifying other gateways of due deliveries")?;
    }
    Ok(())
}

/// Listens on its own connection until dropped; returns once the first
/// `LISTEN` is in place (or failed), so that nothing committed after
/// `connect` returns is missed.
pub(super) async fn spawn<T>(
    config: tokio_postgres::Config,
    tls: T,
    pool: Pool,
    announce: Announcer,
    instance: String,
) -> Result<tokio::task::JoinHandle<()>, String>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut backoff = Duration::from_millis(250);
        loop {
            let result = listen(&config, tls.clone(), &pool, &announce, &instance, || {
                backoff = Duration::from_millis(250);
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Ok(()));
                    false
                } else {
                    true
                }
            })
            .await;
            let reason = match result {
                Ok(()) => "the connection closed".to_owned(),
                Err(reason) => reason,
            };
            if let Some(ready) = ready.take() {
                let _ = ready.send(Err(reason));
                return;
            }
            tracing::warn!(
                "listening for other gateways' commits failed ({reason}); again in {backoff:?}"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    });
    match ready_rx.await {
        Ok(Ok(())) => Ok(task),
        Ok(Err(reason)) => Err(reason),
        Err(_) => Err("the listening task ended".to_owned()),
    }
}

/// One listening connection, until it fails. `listening` is called once
/// `LISTEN` is in place; it says whether this is a reconnection.
async fn listen<T>(
    config: &tokio_postgres::Config,
    tls: T,
    pool: &Pool,
    announce: &Announcer,
    instance: &str,
    listening: impl FnOnce() -> bool,
) -> Result<(), String>
where
    T: MakeTlsConnect<Socket> + Send + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, mut connection) = config
        .connect(tls)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let statement = format!("LISTEN {EVENTS}; LISTEN {DUE}; LISTEN {PLUGINS}");
    let subscribe = client.batch_execute(&statement);
    tokio::pin!(subscribe);
    // The connection is driven while LISTEN runs.
    loop {
        tokio::select! {
            done = &mut subscribe => {
                done.map_err(|e| format!("LISTEN failed: {e}"))?;
                break;
            }
            message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(message)) => handle(message, announce, instance),
                Some(Err(e)) => return Err(e.to_string()),
                None => return Ok(()),
            },
        }
    }
    if listening() {
        // Reconnected: whatever was committed meanwhile may be waiting.
        announce.events_appended();
        announce.plugins_changed();
        announce.due(missed_due(pool).await?);
    }
    loop {
        match poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(message)) => handle(message, announce, instance),
            Some(Err(e)) => return Err(e.to_string()),
            None => return Ok(()),
        }
    }
}

/// Every webhook with pending deliveries, at its earliest.
async fn missed_due(pool: &Pool) -> Result<Vec<Due>, String> {
    let conn = pool.get().await.map_err(|e| e.to_string())?;
    let rows = conn
        .query(
            "SELECT webhook_id, min(due_ms) FROM claims GROUP BY webhook_id",
            &[],
        )
        .await
        .map_err(|e| format!("reading the webhooks with due deliveries: {e}"))?;
    Ok(rows
        .iter()
        .map(|r| Due {
            webhook: r.get(0),
            at: Timestamp::from_unix_millis(r.get(1)),
        })
        .collect())
}

fn handle(message: AsyncMessage, announce: &Announcer, instance: &str) {
    let AsyncMessage::Notification(n) = message else {
        return;
    };
    let payload = n.payload();
    match n.channel() {
        EVENTS if payload != instance => announce.events_appended(),
        PLUGINS if payload != instance => announce.plugins_changed(),
        DUE => {
            let mut parts = payload.split(' ');
            let (Some(from), Some(webhook), Some(at)) = (parts.next(), parts.next(), parts.next())
            else {
                tracing::warn!(payload, "a due notification that does not parse");
                return;
            };
            if from == instance {
                return;
            }
            let Ok(at) = at.parse::<i64>() else {
                tracing::warn!(payload, "a due notification that does not parse");
                return;
            };
            announce.due([Due {
                webhook: webhook.to_owned(),
                at: Timestamp::from_unix_millis(at),
            }]);
        }
        _ => {}
    }
}
