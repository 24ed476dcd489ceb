//! Health that tells the truth: the gRPC health service and `/readyz` say SERVING exactly while
//! the database answers, and NOT_SERVING from the start of shutdown on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus::IntGauge;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use super::router::SERVICES;

/// A health "service" that is SERVING as long as the process answers gRPC, whatever the database
/// does and also while draining: for liveness probes, which must not restart a replica that
/// only waits for its database.
pub const LIVENESS_SERVICE: &str = "liveness";

/// The health statuses of the server and each service, `/readyz` and the `spec_provider_ready`
/// gauge, moved together. Clones share them. Once shutdown starts it stays NOT_SERVING.
#[derive(Clone)]
pub(super) struct Health {
    reporter: HealthReporter,
    stopping: Arc<AtomicBool>,
    /// `spec_provider_ready`: 1 exactly while the statuses are SERVING, which is also what
    /// `/readyz` answers.
    ready_gauge: IntGauge,
}

impl Health {
    /// Health NOT_SERVING (but [`LIVENESS_SERVICE`]), shown by `ready_gauge` too.
    pub(super) async fn start(ready_gauge: IntGauge) -> Self {
        let reporter = HealthReporter::new();
        reporter
            .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
            .await;
        let health = Self {
            reporter,
            stopping: Arc::new(AtomicBool::new(false)),
            ready_gauge,
        };
        // tonic-health starts the overall service SERVING: not before the database answers.
        health.set(false).await;
        health
    }

    /// The gRPC health service, reporting these statuses.
    pub(super) fn service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService::from_health_reporter(self.reporter.clone()))
    }

    /// SERVING when `serving`, unless shutdown has started.
    pub(super) async fn set(&self, serving: bool) {
        let status = if serving && !self.stopping.load(Ordering::Acquire) {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        // Before the gRPC statuses: whoever sees the new status over gRPC finds `/readyz` and the
        // gauge agreeing.
        self.ready_gauge
            .set(i64::from(status == ServingStatus::Serving));
        for service in std::iter::once("").chain(SERVICES) {
            self.reporter.set_service_status(service, status).await;
        }
    }

    /// NOT_SERVING for good: shutdown has started.
    pub(super) async fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.set(false).await;
    }
}
