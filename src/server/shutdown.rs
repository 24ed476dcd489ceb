//! Shutdown: once the shutdown future completes (SIGTERM or SIGINT in production), health turns
//! NOT_SERVING, the listeners stop accepting, the background tasks stop, and RPCs in flight get
//! `server.shutdown_grace` to finish.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::health::Health;

/// The drain of one server, shared by its listeners.
pub(super) struct Drain {
    /// Cancelled when the listeners are to stop accepting.
    stop_accepting: CancellationToken,
    /// Notified when the drain began.
    draining: Arc<Notify>,
}

impl Drain {
    /// A drain not begun yet.
    pub(super) fn new() -> Self {
        Self {
            stop_accepting: CancellationToken::new(),
            draining: Arc::new(Notify::new()),
        }
    }

    /// Cancelled when the listeners are to stop accepting.
    pub(super) fn stop_accepting(&self) -> CancellationToken {
        self.stop_accepting.clone()
    }

    /// Waits for `shutdown`, then begins the drain: the listeners stop accepting, health turns
    /// NOT_SERVING, and `background` is cancelled. The main gRPC server's shutdown future.
    pub(super) fn begin(
        &self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        health: Health,
        background: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let stop_accepting = self.stop_accepting.clone();
        let draining = self.draining.clone();
        async move {
            shutdown.await;
            stop_accepting.cancel();
            tracing::info!("shutting down: health NOT_SERVING, draining in-flight RPCs");
            health.stop().await;
            background.cancel();
            draining.notify_one();
        }
    }

    /// Completes `grace` after the drain began: RPCs still running then are abandoned.
    pub(super) async fn grace_over(&self, grace: Duration) {
        self.draining.notified().await;
        tokio::time::sleep(grace).await;
        tracing::warn!(
            ?grace,
            "shutdown grace period over; abandoning RPCs still running"
        );
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
