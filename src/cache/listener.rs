//! Hears the spec changes every replica announces on [`CHANGES_CHANNEL`] and evicts them from
//! this replica's [`SpecCache`].
//!
//! sqlx's `PgListener` reconnects by itself, but the notifications sent while it was
//! disconnected are lost for good, and a cache that missed one could serve a deleted or replaced
//! spec forever. So the moment the connection is found lost, the cache is emptied and bypassed,
//! and only once a new connection is listening is it used again.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use super::SpecCache;
use crate::config::DatabaseSettings;
use crate::store::CHANGES_CHANNEL;

/// The `application_name` of the listening connection, to tell it apart in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "spec-provider-listener";

/// The longest wait between two attempts to listen while the database does not answer.
const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Listens until `cancel`, keeping `cache` coherent; returns at once if the database URL is not
/// a PostgreSQL one (start-up has validated it already).
pub async fn run(
    database: DatabaseSettings,
    cache: SpecCache,
    notifications: prometheus::IntCounter,
    cancel: CancellationToken,
) {
    let options = match PgConnectOptions::from_str(database.url.expose()) {
        Ok(options) => options.application_name(APPLICATION_NAME),
        Err(err) => {
            tracing::error!(
                error = %err,
                "database.url is not a valid PostgreSQL URL; the read cache stays bypassed"
            );
            return;
        }
    };
    // A pool of its own, so that listening never takes a connection from the requests, and a
    // dead connection is simply replaced by the next acquire.
    let pool: PgPool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(database.acquire_timeout)
        .connect_lazy_with(options);
    let mut retry = Duration::from_millis(50);
    let mut was_listening = None;
    loop {
        let listening = tokio::select! {
            () = cancel.cancelled() => return,
            listening = listen(&pool) => listening,
        };
        match listening {
            Ok(mut listener) => {
                // Only now: every change committed from here on will be heard.
                cache.resume();
                tracing::info!("listening for spec changes: read cache in use");
                was_listening = Some(true);
                retry = Duration::from_millis(50);
                let lost = loop {
                    let received = tokio::select! {
                        () = cancel.cancelled() => return,
                        received = listener.try_recv() => received,
                    };
                    match received {
                        Ok(Some(notification)) => {
                            notifications.inc();
                            cache.invalidate(notification.payload());
                        }
                        Ok(None) => break "the connection was lost".to_owned(),
                        Err(err) => break format!("{:#}", anyhow::Error::new(err)),
                    }
                };
                cache.suspend();
                tracing::warn!(
                    error = lost,
                    "stopped listening for spec changes: read cache emptied and bypassed until \
                     listening again"
                );
            }
            Err(err) => {
                if was_listening != Some(false) {
                    tracing::warn!(
                        error = format!("{:#}", anyhow::Error::new(err)),
                        "cannot listen for spec changes yet: read cache bypassed; retrying"
                    );
                }
                was_listening = Some(false);
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(MAX_RETRY_INTERVAL);
            }
        }
    }
}

/// A listener on [`CHANGES_CHANNEL`] whose `LISTEN` has completed.
async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Reconnecting is ours to do (see the module documentation), after emptying the cache.
    listener.eager_reconnect(false);
    listener.listen(CHANGES_CHANNEL).await?;
    Ok(listener)
}
