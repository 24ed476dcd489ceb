//! Assembly of the server: [`Application::build`] opens the store, sets up the metrics and binds
//! the listeners; [`Application::run`] serves until shutdown. By concern:
//!
//! - `router.rs`: the gRPC services behind one layer stack, for each listener;
//! - `direct.rs`: GetImageSpec's route past tonic's router, the innermost layer;
//! - `health.rs`: health that tells the truth, over gRPC and `/readyz`;
//! - `tasks.rs`: the background tasks and the one helper that paces the periodic ones;
//! - `shutdown.rs`: the signal, and the drain within `server.shutdown_grace`;
//! - [`limits`]: how many connections each listener admits.

mod direct;
mod health;
pub mod limits;
mod router;
mod shutdown;
mod tasks;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::ApiState;
use crate::cache::SpecCache;
use crate::config::Settings;
use crate::domain::validate::ValidationRules;
use crate::metrics::grpc::GrpcMetrics;
use crate::metrics::store::InstrumentedStore;
use crate::metrics::{self, Metrics};
use crate::proto;
use crate::registry::Verifier;
use crate::security::auth::SharedCredentials;
use crate::security::tls::ReloadingTls;
use crate::store::{self, Store};

pub use health::LIVENESS_SERVICE;
pub use shutdown::shutdown_signal;

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
    verifier: Verifier,
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
            &router::METERED_SERVICES,
            &[
                proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ],
        )
        .context("setting up the gRPC metrics")?;
        let store: Arc<dyn Store> = Arc::new(InstrumentedStore::new(store, metrics.store.clone()));
        let cache = SpecCache::new(&settings.cache, &metrics.cache, metrics.registry())
            .context("setting up the read cache")?;
        let verifier = Verifier::new(&settings.verify, metrics.registry())
            .context("setting up verification against registries")?;

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
            verifier,
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

    /// Serves until `shutdown` completes, then drains: health turns NOT_SERVING, the listeners
    /// stop accepting, and in-flight RPCs get `server.shutdown_grace` to finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let admin_addr = self.admin_addr();
        let settings = &self.settings;
        let health = health::Health::start(self.metrics.ready.clone()).await;
        let metrics_server = tokio::spawn(metrics::http::serve(
            self.metrics_listener,
            self.metrics.clone(),
        ));

        let rules = ValidationRules {
            allow_http_urls: settings.validation.allow_http_urls,
            max_spec_bytes: settings.limits.max_spec_bytes,
        };
        let state = ApiState::new(
            self.store.clone(),
            rules,
            self.verifier.clone(),
            settings.verify.required,
        )
        .with_cache(self.cache.clone());
        let background = CancellationToken::new();
        let tasks = tasks::Background {
            settings,
            store: &self.store,
            state: &state,
            health: &health,
            metrics: &self.metrics,
            cache: &self.cache,
            tls: self.tls.as_ref(),
            credentials: &self.credentials,
        }
        .spawn(&background);

        let (main, admin) = router::routers(
            settings,
            state,
            health.service(),
            self.grpc_metrics,
            self.credentials,
            self.admin_listener.is_some(),
        )?;
        tracing::info!(
            local_addr = %self.local_addr,
            metrics_addr = %self.metrics_addr,
            ?admin_addr,
            tls = self.tls.is_some(),
            backend = self.store.backend(),
            database = %settings.database.url,
            "spec-provider listening"
        );
        let drain = shutdown::Drain::new();
        let serve = router::serve(
            (main, self.listener),
            admin.zip(self.admin_listener),
            settings,
            self.tls,
            &drain,
            drain.begin(shutdown, health, background),
        );
        tokio::select! {
            result = serve => result.context("serving gRPC")?,
            () = drain.grace_over(settings.server.shutdown_grace) => {}
        }
        drop(tasks);
        // Kept up through the drain, so that probes and scrapes see it; nothing is owed to them
        // once the gRPC server is gone.
        metrics_server.abort();
        tracing::info!("stopped");
        Ok(())
    }
}
