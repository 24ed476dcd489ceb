//! Hears the changes every replica announces on [`CHANGES_CHANNEL`].
//!
//! sqlx's `PgListener` reconnects by itself, but the notifications sent while it was
//! disconnected are lost for good, and a subscriber that missed one could serve a deleted or
//! replaced spec forever. So the moment the connection is found lost the subscriber is told
//! ([`ChangeSubscriber::lost`]), and only once a new connection is listening is it told
//! [`ChangeSubscriber::listening`] again.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use super::CHANGES_CHANNEL;
use crate::store::ChangeSubscriber;

/// The `application_name` of the listening connection, to tell it apart in `pg_stat_activity`.
pub(super) const APPLICATION_NAME: &str = "spec-provider-listener";

/// The longest wait between two attempts to listen while the database does not answer.
const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Listens until dropped, telling `subscriber` of every change and of every loss of the feed.
pub(super) async fn watch(
    options: PgConnectOptions,
    acquire_timeout: Duration,
    subscriber: &dyn ChangeSubscriber,
) {
    // A pool of its own, so that listening never takes a connection from the requests, and a
    // dead connection is simply replaced by the next acquire.
    let pool: PgPool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(acquire_timeout)
        .connect_lazy_with(options);
    let mut retry = Duration::from_millis(50);
    let mut was_listening = None;
    loop {
        match listen(&pool).await {
            Ok(mut listener) => {
                // Only now: every change committed from here on will be heard.
                subscriber.listening();
                tracing::info!("listening for spec changes");
                was_listening = Some(true);
                retry = Duration::from_millis(50);
                let lost = loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => subscriber.changed(notification.payload()),
                        Ok(None) => break "the connection was lost".to_owned(),
                        Err(err) => break format!("{:#}", anyhow::Error::new(err)),
                    }
                };
                subscriber.lost();
                tracing::warn!(
                    error = lost,
                    "stopped listening for spec changes; changes go unheard until listening again"
                );
            }
            Err(err) => {
                if was_listening != Some(false) {
                    tracing::warn!(
                        error = format!("{:#}", anyhow::Error::new(err)),
                        "cannot listen for spec changes yet; retrying"
                    );
                }
                was_listening = Some(false);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY_INTERVAL);
            }
        }
    }
}

/// A listener on [`CHANGES_CHANNEL`] whose `LISTEN` has completed.
async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Reconnecting is ours to do (see the module documentation), after telling the subscriber.
    listener.eager_reconnect(false);
    listener.listen(CHANGES_CHANNEL).await?;
    Ok(listener)
}
