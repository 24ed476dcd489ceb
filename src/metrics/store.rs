//! Store query latency by operation, measured around the [`Store`] trait so that both drivers
//! (and any later one) are measured the same way without touching them.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prometheus::{Histogram, HistogramOpts, HistogramVec, Registry};

use crate::domain::{DeleteCommand, Error, ListQuery, PutCommand, PutOutcome, SpecId, SpecRecord};
use crate::store::{ChangeSubscriber, PoolStats, ServedSpec, SpecCounts, Store};

/// Buckets for database round trips: from a cached index lookup (sub-millisecond) up to an
/// acquire that runs into `database.acquire_timeout` (seconds).
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `spec_provider_store_query_duration_seconds{operation}`, one histogram per [`Store`] method,
/// looked up once here so that a query touches no label map.
#[derive(Clone)]
pub struct StoreMetrics {
    migrate: Histogram,
    ping: Histogram,
    get: Histogram,
    get_spec: Histogram,
    put: Histogram,
    delete: Histogram,
    list: Histogram,
    delete_expired: Histogram,
    count: Histogram,
}

impl StoreMetrics {
    /// Registers the histogram in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let vec = super::register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "spec_provider_store_query_duration_seconds",
                    "Time a store operation took, failures included, by operation.",
                )
                .buckets(BUCKETS.to_vec()),
                &["operation"],
            )?,
        )?;
        let op = |name: &str| vec.with_label_values(&[name]);
        Ok(Self {
            migrate: op("migrate"),
            ping: op("ping"),
            get: op("get"),
            get_spec: op("get_spec"),
            put: op("put"),
            delete: op("delete"),
            list: op("list"),
            delete_expired: op("delete_expired"),
            count: op("count"),
        })
    }
}

/// A [`Store`] that times every operation of the store it wraps.
pub struct InstrumentedStore {
    inner: Arc<dyn Store>,
    metrics: StoreMetrics,
}

impl InstrumentedStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, metrics: StoreMetrics) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait]
impl Store for InstrumentedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn migrate(&self) -> Result<(), Error> {
        let _timer = self.metrics.migrate.start_timer();
        self.inner.migrate().await
    }

    async fn ping(&self) -> Result<(), Error> {
        let _timer = self.metrics.ping.start_timer();
        self.inner.ping().await
    }

    async fn get(&self, id: &SpecId, now: DateTime<Utc>) -> Result<Option<SpecRecord>, Error> {
        let _timer = self.metrics.get.start_timer();
        self.inner.get(id, now).await
    }

    async fn get_spec(&self, id: &SpecId, now: DateTime<Utc>) -> Result<Option<ServedSpec>, Error> {
        let _timer = self.metrics.get_spec.start_timer();
        self.inner.get_spec(id, now).await
    }

    async fn put(&self, cmd: PutCommand, now: DateTime<Utc>) -> Result<PutOutcome, Error> {
        let _timer = self.metrics.put.start_timer();
        self.inner.put(cmd, now).await
    }

    async fn delete(&self, cmd: &DeleteCommand, now: DateTime<Utc>) -> Result<bool, Error> {
        let _timer = self.metrics.delete.start_timer();
        self.inner.delete(cmd, now).await
    }

    async fn list(&self, query: &ListQuery, now: DateTime<Utc>) -> Result<Vec<SpecRecord>, Error> {
        let _timer = self.metrics.list.start_timer();
        self.inner.list(query, now).await
    }

    async fn delete_expired(&self, now: DateTime<Utc>, batch_size: u32) -> Result<u64, Error> {
        let _timer = self.metrics.delete_expired.start_timer();
        self.inner.delete_expired(now, batch_size).await
    }

    async fn count(&self, now: DateTime<Utc>) -> Result<SpecCounts, Error> {
        let _timer = self.metrics.count.start_timer();
        self.inner.count(now).await
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        self.inner.pool_stats()
    }

    async fn watch_changes(&self, subscriber: Arc<dyn ChangeSubscriber>) {
        self.inner.watch_changes(subscriber).await;
    }
}
