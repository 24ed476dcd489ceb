//! Prometheus metrics, served on their own listener (`server.metrics_listen`).
//!
//! Each [`crate::server::Application`] owns one [`Metrics`], with a registry of its own rather than
//! the process-wide default one, so several servers in one process (the tests) count separately.
//!
//! - [`grpc`]: the go-grpc-prometheus metrics, from a tower layer on the gRPC server.
//! - [`rpc_log`]: the log line of each RPC, which that same layer writes (the layer knows the
//!   method, code and latency; the handler notes the id).
//! - [`store`]: store query latency by operation, from a wrapper around the [`Store`].
//! - [`cache`]: the GetImageSpec read cache (hits, misses, evictions, entries, bytes, bypass, and
//!   invalidation notifications received).
//! - here: what only spec-provider knows (`spec_provider_*`), and the connection pools.
//! - [`http`]: `/metrics`, `/healthz` and `/readyz`.
//!
//! Adding a group of metrics (as [`cache`] did): give it a struct of its own whose constructor registers its
//! families in [`Metrics::registry`], keep a handle to it in [`Metrics`], and hand clones of its
//! counters to the code that moves them, so that the hot path touches only atomics.

pub mod cache;
pub mod grpc;
pub mod http;
pub mod rpc_log;
pub mod store;

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::store::Store;

/// The version and commit this binary was built from (`build.rs` asks git; `unknown` without it).
pub const GIT_COMMIT: &str = env!("SPEC_PROVIDER_GIT_COMMIT");

/// Prefix of the metrics only spec-provider has.
const PREFIX: &str = "spec_provider";

/// The registry of one server and the metrics that code outside this module moves.
pub struct Metrics {
    registry: Registry,
    /// Store query latency by operation; [`store::InstrumentedStore`] observes it.
    pub store: store::StoreMetrics,
    /// `spec_provider_specs_stored`: live specs, refreshed every `metrics.refresh_interval`.
    pub specs_stored: IntGauge,
    /// `spec_provider_specs_expired`: expired specs the sweeper has not deleted yet, refreshed
    /// with `specs_stored`.
    pub specs_expired: IntGauge,
    /// `spec_provider_ready`: 1 while health is SERVING (`/readyz` answers 200), else 0.
    pub ready: IntGauge,
    /// `spec_provider_sweeper_deleted_total`: expired specs the sweeper deleted.
    pub sweeper_deleted: IntCounter,
    /// The read cache's counters; [`crate::cache::SpecCache`] moves them and registers its
    /// entries and bytes.
    pub cache: cache::CacheMetrics,
}

impl Metrics {
    /// A registry with spec-provider's own metrics, the pools of `store`, build info, and (on
    /// Linux) the process metrics. The gRPC metrics are added by [`grpc::GrpcMetrics::new`].
    pub fn new(store: Arc<dyn Store>) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();

        let build_info = IntGaugeVec::new(
            Opts::new(
                format!("{PREFIX}_build_info"),
                "Always 1; the labels say which build is running.",
            ),
            &["version", "git_commit"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), GIT_COMMIT])
            .set(1);
        registry.register(Box::new(build_info))?;

        let gauge = |name: &str, help: &str| {
            register(&registry, IntGauge::new(format!("{PREFIX}_{name}"), help)?)
        };
        let specs_stored = gauge(
            "specs_stored",
            "Specs stored and not expired, counted every metrics.refresh_interval.",
        )?;
        let specs_expired = gauge(
            "specs_expired",
            "Specs expired and not yet deleted by the sweeper, counted every \
             metrics.refresh_interval.",
        )?;
        let ready = gauge(
            "ready",
            "1 while gRPC health reports SERVING (and /readyz answers 200), 0 otherwise.",
        )?;
        let sweeper_deleted = register(
            &registry,
            IntCounter::new(
                format!("{PREFIX}_sweeper_deleted_total"),
                "Expired specs deleted by the sweeper.",
            )?,
        )?;

        registry.register(Box::new(PoolCollector::new(store)?))?;
        let store = store::StoreMetrics::new(&registry)?;
        let cache = cache::CacheMetrics::new(&registry)?;

        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        Ok(Self {
            registry,
            store,
            specs_stored,
            specs_expired,
            ready,
            sweeper_deleted,
            cache,
        })
    }

    /// The registry, for groups of metrics to register themselves in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every metric in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut text = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut text)?;
        String::from_utf8(text).map_err(|err| prometheus::Error::Msg(err.to_string()))
    }
}

/// Registers `metric` in `registry` and returns it: clones of a metric share its value, so the
/// registry reads the one the caller moves.
pub(crate) fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> Result<M, prometheus::Error> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// The connection pools' sizes, read from sqlx at each scrape (they change by the millisecond, so
/// a value copied periodically would mislead).
///
/// sqlx 0.9 does not expose how many tasks wait for a connection; `in use = size - idle` reaching
/// `max` is the saturation signal, and waits that time out show up as UNAVAILABLE answers.
struct PoolCollector {
    store: Arc<dyn Store>,
    size: IntGaugeVec,
    idle: IntGaugeVec,
    max: IntGaugeVec,
}

impl PoolCollector {
    fn new(store: Arc<dyn Store>) -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(format!("{PREFIX}_{name}"), help), &["pool"])
        };
        Ok(Self {
            store,
            size: gauge(
                "db_pool_connections",
                "Open connections of the database pool, in use or idle.",
            )?,
            idle: gauge(
                "db_pool_idle_connections",
                "Idle connections of the database pool.",
            )?,
            max: gauge(
                "db_pool_max_connections",
                "Most connections the database pool opens.",
            )?,
        })
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        [&self.size, &self.idle, &self.max]
            .into_iter()
            .flat_map(|vec| vec.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for pool in self.store.pool_stats() {
            let labels = [pool.name];
            self.size
                .with_label_values(&labels)
                .set(i64::from(pool.size));
            self.idle
                .with_label_values(&labels)
                .set(i64::from(pool.idle));
            self.max.with_label_values(&labels).set(i64::from(pool.max));
        }
        [&self.size, &self.idle, &self.max]
            .into_iter()
            .flat_map(|vec| vec.collect())
            .collect()
    }
}
