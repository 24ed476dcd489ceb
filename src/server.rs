//! Assembly of the server: the gRPC services with their metrics and request ids, the metrics
//! listener, health that tells the truth, the background tasks, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::api::{AdminService, ApiState, ProviderService, SpecProviderServer};
use crate::cache::{self, SpecCache};
use crate::config::{DatabaseSettings, ServerSettings, Settings, SweeperSettings};
use crate::domain::micros_now;
use crate::domain::validate::ValidationRules;
use crate::metrics::grpc::{GrpcMetrics, GrpcMetricsLayer};
use crate::metrics::http::Readiness;
use crate::metrics::store::InstrumentedStore;
use crate::metrics::{self, Metrics};
use crate::proto;
use crate::proto::specprovider::v1::spec_admin_server::SpecAdminServer;
use crate::security::auth::{AuthLayer, SharedCredentials};
use crate::security::tls::{ReloadingTls, incoming};
use crate::security::watch_files;
use crate::store::{self, Store};
use crate::telemetry::RequestIdLayer;

pub mod limits;

/// Room for a PutSpec request's id, labels and framing on top of the largest accepted spec, so that
/// an oversized spec gets our clear validation error rather than tonic's size limit.
const ADMIN_REQUEST_OVERHEAD_BYTES: usize = 256 * 1024;

/// The longest wait between two attempts to reach the database while it does not answer.
const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The gRPC services whose health is reported individually (besides the overall `""`).
const SERVICES: [&str; 2] = [
    <SpecProviderServer as NamedService>::NAME,
    <SpecAdminServer<AdminService> as NamedService>::NAME,
];

/// A health "service" that is SERVING as long as the process answers gRPC, whatever the database
/// does and also while draining: for liveness probes, which must not restart a replica that
/// only waits for its database.
pub const LIVENESS_SERVICE: &str = "liveness";

/// The services every method of which gets the gRPC metrics: ours, health and reflection.
const METERED_SERVICES: [&str; 5] = [
    SERVICES[0],
    SERVICES[1],
    tonic_health::pb::health_server::SERVICE_NAME,
    tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
    tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
];

/// A server bound to its listeners, ready to run. Binding first lets tests use port 0 and read the
/// ports before the server runs.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    metrics_listener: TcpListener,
    metrics_addr: SocketAddr,
    admin_listener: Option<TcpListener>,
    tls: Option<Arc<ReloadingTls>>,
    credentials: SharedCredentials,
    settings: Settings,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    grpc_metrics: Arc<GrpcMetrics>,
    cache: SpecCache,
}

impl Application {
    /// Opens the store (lazily: the database may still be down), sets up the metrics, loads the
    /// TLS files and tokens, and binds `server.listen`, `server.metrics_listen` and
    /// `server.admin_listen`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        let tls = settings
            .tls
            .enabled()
            .then(|| ReloadingTls::load(&settings.tls))
            .transpose()?;
        let credentials = SharedCredentials::load(&settings.auth)?;
        if settings.auth.allow_insecure_admin {
            tracing::warn!(
                "auth.allow_insecure_admin = true: SpecAdmin may be open to anyone who reaches it"
            );
        }
        let store = store::open(&settings.database)
            .await
            .context("opening the database")?;
        let metrics = Metrics::new(store.clone()).context("setting up the metrics")?;
        let grpc_metrics = GrpcMetrics::new(
            metrics.registry(),
            &METERED_SERVICES,
            &[
                proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ],
        )
        .context("setting up the gRPC metrics")?;
        let store: Arc<dyn Store> = Arc::new(InstrumentedStore::new(store, metrics.store.clone()));
        let cache = SpecCache::new(
            &settings.cache,
            store.backend() == "postgres",
            &metrics.cache,
            metrics.registry(),
        )
        .context("setting up the read cache")?;

        let listener = TcpListener::bind(settings.server.listen)
            .await
            .with_context(|| format!("binding server.listen {}", settings.server.listen))?;
        let local_addr = listener.local_addr()?;
        let metrics_listener = TcpListener::bind(settings.server.metrics_listen)
            .await
            .with_context(|| {
                format!(
                    "binding server.metrics_listen {}",
                    settings.server.metrics_listen
                )
            })?;
        let metrics_addr = metrics_listener.local_addr()?;
        let admin_listener = match settings.server.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding server.admin_listen {addr}"))?,
            ),
            None => None,
        };
        Ok(Self {
            listener,
            local_addr,
            metrics_listener,
            metrics_addr,
            admin_listener,
            tls,
            credentials,
            settings,
            store,
            metrics: Arc::new(metrics),
            grpc_metrics: Arc::new(grpc_metrics),
            cache,
        })
    }

    /// The address the gRPC listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the SpecAdmin listener (`server.admin_listen`), when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The address the metrics listener (`/metrics`, `/healthz`, `/readyz`) is bound to.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Serves until `shutdown` completes, then drains: health turns NOT_SERVING, the listener
    /// stops accepting, and in-flight RPCs get `server.shutdown_grace` to finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            local_addr,
            metrics_listener,
            metrics_addr,
            admin_listener,
            tls,
            credentials,
            settings,
            store,
            metrics,
            grpc_metrics,
            cache,
        } = self;
        let admin_addr = admin_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok());
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let readiness = Readiness::default();
        reporter
            .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
            .await;
        let health = Health::new(reporter, readiness.clone());
        health.set(false).await;
        let metrics_server = tokio::spawn(metrics::http::serve(
            metrics_listener,
            metrics.clone(),
            readiness,
        ));

        let rules = ValidationRules {
            allow_http_urls: settings.validation.allow_http_urls,
            max_spec_bytes: settings.limits.max_spec_bytes,
        };
        let state = ApiState::new(store.clone(), rules).with_cache(cache.clone());
        let background = CancellationToken::new();
        // With PostgreSQL other replicas write too: hear their changes (see `crate::cache`).
        let cache_listener = (settings.cache.enabled && store.backend() == "postgres").then(|| {
            tokio::spawn(cache::listener::run(
                settings.database.clone(),
                cache,
                metrics.cache.notifications.clone(),
                background.clone(),
            ))
        });
        let watcher = tokio::spawn(watch_database(
            store.clone(),
            state.clone(),
            health.clone(),
            settings.database.clone(),
            settings.health.check_interval,
            background.clone(),
        ));
        let sweeper = tokio::spawn(sweep_expired(
            store.clone(),
            state.clone(),
            settings.sweeper.clone(),
            metrics.sweeper_deleted.clone(),
            background.clone(),
        ));
        let counter = tokio::spawn(count_specs(
            store.clone(),
            state.clone(),
            metrics.clone(),
            settings.metrics.refresh_interval,
            background.clone(),
        ));

        let provider = SpecProviderServer::new(ProviderService::new(state.clone()));
        let admin = SpecAdminServer::new(AdminService::new(state)).max_decoding_message_size(
            settings.limits.max_spec_bytes + ADMIN_REQUEST_OVERHEAD_BYTES,
        );

        if let Some(tls) = &tls {
            let tls = tls.clone();
            tokio::spawn(watch_files(
                tls.paths(),
                settings.tls.reload_interval,
                background.clone(),
                move || tls.reload(),
            ));
        }
        if !credentials.paths().is_empty() {
            let credentials = credentials.clone();
            tokio::spawn(watch_files(
                credentials.paths(),
                settings.tls.reload_interval,
                background.clone(),
                move || credentials.reload(),
            ));
        }
        // Both listeners stop accepting when shutdown begins.
        let stop_accepting = CancellationToken::new();
        // Each listener admits at most `server.max_connections` connections at once (counted once
        // TLS is established; handshakes in progress are bounded by `tls.max_handshakes` and
        // `tls.handshake_timeout`), and closes those that send no HTTP/2 preface within
        // `server.preface_timeout`.
        let accept = |listener| {
            limits::limit_connections(
                incoming(
                    listener,
                    tls.clone(),
                    settings.tls.handshake_timeout,
                    settings.tls.max_handshakes,
                    stop_accepting.clone(),
                ),
                settings.server.max_connections,
                settings.server.preface_timeout,
            )
        };

        let draining = Arc::new(Notify::new());
        let on_shutdown = {
            let health = health.clone();
            let draining = draining.clone();
            let stop_accepting = stop_accepting.clone();
            async move {
                shutdown.await;
                stop_accepting.cancel();
                tracing::info!("shutting down: health NOT_SERVING, draining in-flight RPCs");
                health.stop().await;
                background.cancel();
                draining.notify_one();
            }
        };

        tracing::info!(
            %local_addr,
            %metrics_addr,
            ?admin_addr,
            tls = tls.is_some(),
            backend = store.backend(),
            database = %settings.database.url,
            "spec-provider listening"
        );
        // With `server.admin_listen`, SpecAdmin moves to a server of its own, with health and
        // reflection for probes and tools, and the main listener serves no SpecAdmin.
        let (admin, admin_server) = match admin_listener {
            None => (Some(admin), None),
            Some(admin_listener) => {
                let server = transport(&settings.server)
                    .layer(RequestIdLayer::new(&settings.tracing))
                    .layer(GrpcMetricsLayer::new(grpc_metrics.clone()))
                    .layer(AuthLayer::new(credentials.clone()))
                    .add_service(health_service.clone())
                    .add_service(reflection_builder().build_v1()?)
                    .add_service(admin)
                    .serve_with_incoming_shutdown(
                        accept(admin_listener),
                        stop_accepting.clone().cancelled_owned(),
                    );
                (None, Some(server))
            }
        };
        let serve_main = transport(&settings.server)
            .layer(RequestIdLayer::new(&settings.tracing))
            .layer(GrpcMetricsLayer::new(grpc_metrics))
            // Inside the metrics layer, so that refused calls are counted with their codes.
            .layer(AuthLayer::new(credentials))
            .add_service(health_service)
            .add_service(reflection_builder().build_v1()?)
            .add_service(reflection_builder().build_v1alpha()?)
            .add_service(provider)
            .add_optional_service(admin)
            .serve_with_incoming_shutdown(accept(listener), on_shutdown);
        let serve = async {
            match admin_server {
                Some(admin_server) => tokio::try_join!(serve_main, admin_server).map(|_| ()),
                None => serve_main.await,
            }
        };

        let grace = settings.server.shutdown_grace;
        tokio::select! {
            result = serve => result.context("serving gRPC")?,
            () = async { draining.notified().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "shutdown grace period over; abandoning RPCs still running");
            }
        }
        watcher.abort();
        sweeper.abort();
        counter.abort();
        if let Some(cache_listener) = cache_listener {
            cache_listener.abort();
        }
        // Kept up through the drain, so that probes and scrapes see it; nothing is owed to them
        // once the gRPC server is gone.
        metrics_server.abort();
        tracing::info!("stopped");
        Ok(())
    }
}

/// A gRPC server builder with the transport limits of `[server]`: what one client, or many, can
/// ask of the server at once.
fn transport(server: &ServerSettings) -> tonic::transport::Server {
    // No `tcp_nodelay` here: it only applies to listeners tonic binds itself; `incoming` turns
    // Nagle's algorithm off on the connections it accepts.
    tonic::transport::Server::builder()
        .max_concurrent_streams(server.max_concurrent_streams)
        .timeout(server.request_timeout)
        .http2_keepalive_interval(Some(server.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(server.http2_keepalive_timeout))
}

/// The reflection service: our two services and health, by an explicit allow-list.
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(SERVICES[0])
        .with_service_name(SERVICES[1])
        .with_service_name("grpc.health.v1.Health")
}

/// The health statuses of the server and each service, and `/readyz`, moved together. Once
/// shutdown starts it stays NOT_SERVING.
#[derive(Clone)]
struct Health {
    reporter: HealthReporter,
    readiness: Readiness,
    stopping: Arc<AtomicBool>,
}

impl Health {
    fn new(reporter: HealthReporter, readiness: Readiness) -> Self {
        Self {
            reporter,
            readiness,
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    async fn set(&self, serving: bool) {
        let status = if serving && !self.stopping.load(Ordering::Acquire) {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        // Before the gRPC statuses: whoever sees the new status over gRPC finds `/readyz` agreeing.
        self.readiness.set(status == ServingStatus::Serving);
        for service in std::iter::once("").chain(SERVICES) {
            self.reporter.set_service_status(service, status).await;
        }
    }

    async fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.set(false).await;
    }
}

/// Applies migrations once the database answers, then checks it every `interval`: health is
/// SERVING exactly while the checks pass.
async fn watch_database(
    store: Arc<dyn Store>,
    state: ApiState,
    health: Health,
    database: DatabaseSettings,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut migrated = !database.run_migrations;
    let mut serving = None;
    loop {
        let check = async {
            if !migrated {
                store.migrate().await?;
                migrated = true;
                tracing::info!(backend = store.backend(), "database migrations applied");
            }
            store.ping().await
        };
        let ok = match check.await {
            Ok(()) => {
                state.mark_ready();
                if serving != Some(true) {
                    tracing::info!("database answers: SERVING");
                }
                true
            }
            Err(err) => {
                if serving != Some(false) {
                    tracing::warn!(
                        error = format!("{:#}", anyhow::Error::new(err)),
                        "database check failed: NOT_SERVING until it answers"
                    );
                }
                false
            }
        };
        health.set(ok).await;
        serving = Some(ok);
        let wait = if ok {
            interval
        } else {
            interval.min(MAX_RETRY_INTERVAL)
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Deletes expired records every `settings.interval`, in batches of `settings.batch_size` with
/// `settings.batch_pause` between them.
/// Expired records are already invisible; this only reclaims their space.
async fn sweep_expired(
    store: Arc<dyn Store>,
    state: ApiState,
    settings: SweeperSettings,
    deleted_total: prometheus::IntCounter,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(settings.interval) => {}
        }
        if !state.is_ready() {
            continue;
        }
        let mut deleted = 0;
        while !cancel.is_cancelled() {
            match store
                .delete_expired(micros_now(), settings.batch_size)
                .await
            {
                Ok(n) => {
                    deleted += n;
                    deleted_total.inc_by(n);
                    if n < u64::from(settings.batch_size) {
                        break;
                    }
                    // More to delete: pace the batches, so reads get the database in between.
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(settings.batch_pause) => {}
                    }
                }
                Err(err) => {
                    tracing::warn!(
                        error = format!("{:#}", anyhow::Error::new(err)),
                        "sweeping expired specs failed; retrying next interval"
                    );
                    break;
                }
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "swept expired specs");
        }
    }
}

/// Counts the live specs into `spec_provider_specs_stored` every `interval`, once the database is
/// ready (checked more often until then, so that the gauge does not read 0 for a whole interval
/// after start-up). A failed count keeps the last value: the database check reports the outage.
async fn count_specs(
    store: Arc<dyn Store>,
    state: ApiState,
    metrics: Arc<Metrics>,
    interval: Duration,
    cancel: CancellationToken,
) {
    loop {
        let mut counted = false;
        if state.is_ready() {
            match store.count(micros_now()).await {
                Ok(count) => {
                    metrics
                        .specs_stored
                        .set(i64::try_from(count).unwrap_or(i64::MAX));
                    counted = true;
                }
                Err(err) => tracing::debug!(
                    error = format!("{:#}", anyhow::Error::new(err)),
                    "counting the stored specs failed; keeping the last count"
                ),
            }
        }
        let wait = if counted {
            interval
        } else {
            interval.min(MAX_RETRY_INTERVAL)
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
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
