//! A real server on port 0, with clients connected to it.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use spec_provider::config::Settings;
use spec_provider::proto::registryfacade::spec_provider_client::SpecProviderClient;
use spec_provider::proto::specprovider::v1::spec_admin_client::SpecAdminClient;
use spec_provider::server::Application;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::db::{Backend, TestDb};

/// How long a test waits for an event before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A running server and clients for each of its services.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The metrics listener (`/metrics`, `/healthz`, `/readyz`).
    pub metrics_addr: SocketAddr,
    pub provider: SpecProviderClient<Channel>,
    pub admin: SpecAdminClient<Channel>,
    pub health: HealthClient<Channel>,
    pub channel: Channel,
    /// The settings it runs with (ports as configured, so 0 in tests).
    pub settings: Settings,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    _db: Option<TestDb>,
}

/// Polls `condition` until it holds; fails after [`DEADLINE`], saying it waited for `what`
/// (written only then, so it may tell what the condition saw last).
pub async fn eventually(what: impl fmt::Display, mut condition: impl AsyncFnMut() -> bool) {
    let started = std::time::Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < DEADLINE,
            "waited {DEADLINE:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Settings for a test server: port 0 for both listeners, quick health checks and gauges.
pub fn test_settings(db: &TestDb) -> Settings {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.server.metrics_listen = "127.0.0.1:0".parse().unwrap();
    settings.metrics.refresh_interval = Duration::from_millis(100);
    settings.database = db.settings.clone();
    settings.health.check_interval = Duration::from_millis(100);
    settings.server.shutdown_grace = Duration::from_secs(5);
    settings
}

/// A server on a fresh database of `backend`, SERVING before this returns.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Like [`spawn_app`], with settings changed by `customize` first.
pub async fn spawn_app_with(backend: Backend, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDb::new(backend).await;
    let mut settings = test_settings(&db);
    customize(&mut settings);
    let mut app = start(settings).await;
    app._db = Some(db);
    app.wait_for_health(ServingStatus::Serving).await;
    app
}

/// Starts a server with exactly these settings; it may not be SERVING yet.
pub async fn start(settings: Settings) -> TestApp {
    let app = Application::build(settings.clone())
        .await
        .expect("building the app");
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let (tx, rx) = oneshot::channel();
    let handle = tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connecting to the test server");
    TestApp {
        addr,
        metrics_addr,
        provider: SpecProviderClient::new(channel.clone()).max_decoding_message_size(usize::MAX),
        admin: SpecAdminClient::new(channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX),
        health: HealthClient::new(channel.clone()),
        channel,
        settings,
        shutdown: Some(tx),
        handle: Some(handle),
        _db: None,
    }
}

/// Waits, on the health Watch stream of the server behind `channel` and with a deadline, until
/// its overall status is `want`.
pub async fn wait_for_health(channel: &Channel, want: ServingStatus) {
    let mut health = HealthClient::new(channel.clone());
    let wait = async {
        let mut stream = health
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health watch")
            .into_inner();
        while let Some(message) = stream.next().await {
            if message.expect("health watch message").status() == want {
                return;
            }
        }
        panic!("health watch stream ended before {want:?}");
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .unwrap_or_else(|_| panic!("health did not become {want:?} within {DEADLINE:?}"));
}

impl TestApp {
    /// Waits (on the health Watch stream, with a deadline) until the overall status is `want`.
    pub async fn wait_for_health(&self, want: ServingStatus) {
        wait_for_health(&self.channel, want).await;
    }

    /// The current overall health status.
    pub async fn health_status(&self, service: &str) -> ServingStatus {
        self.health
            .clone()
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status()
    }

    /// Another replica on the same database (and settings), SERVING before this returns.
    pub async fn spawn_replica(&self) -> TestApp {
        let replica = start(self.settings.clone()).await;
        replica.wait_for_health(ServingStatus::Serving).await;
        replica
    }

    /// Triggers shutdown without waiting for the server to stop.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Triggers shutdown and waits for the server to stop; returns what `run` returned.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        let handle = self.handle.take().expect("stopped once");
        tokio::time::timeout(DEADLINE, handle)
            .await
            .expect("the server stops within the deadline")
            .expect("the server task does not panic")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}
