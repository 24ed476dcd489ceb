//! The GetImageSpec read cache's metrics (`spec_provider_cache_*`).
//!
//! The counters are moved by [`crate::cache`] on the hot path (atomics only). Entries and bytes
//! are read from the cache at each scrape by a collector the cache registers itself, since moka
//! already keeps both numbers; that collector reports the evictions too, after settling moka's
//! pending work, so that one scrape sees evictions and sizes that agree.

use prometheus::{IntCounter, IntGauge, Registry};

/// Counters and gauges of the read cache. Clones share their values.
#[derive(Clone)]
pub struct CacheMetrics {
    /// `spec_provider_cache_hits_total`: GetImageSpec answers served from the cache, found or
    /// "not found".
    pub hits: IntCounter,
    /// `spec_provider_cache_misses_total`: GetImageSpec lookups that read the database, including
    /// every lookup while the cache is bypassed.
    pub misses: IntCounter,
    /// `spec_provider_cache_evictions_total`: entries dropped for room or because they expired
    /// (not those removed by an invalidation).
    pub evictions: IntCounter,
    /// `spec_provider_cache_invalidation_notifications_total`: changes of a spec heard from the
    /// store's change feed: with PostgreSQL the notifications of every replica's writes, with
    /// SQLite this process's own writes.
    pub notifications: IntCounter,
    /// `spec_provider_cache_bypassed`: 1 while the cache is not used because this replica cannot
    /// hear invalidations (before the change feed first listens, and while it is lost), 0
    /// otherwise.
    pub bypassed: IntGauge,
}

impl CacheMetrics {
    /// Registers the cache's counters (but evictions, see the module documentation) and the
    /// bypass gauge in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str| {
            super::register(
                registry,
                IntCounter::new(format!("spec_provider_cache_{name}"), help)?,
            )
        };
        Ok(Self {
            hits: counter(
                "hits_total",
                "GetImageSpec answers served from the read cache (found or not found).",
            )?,
            misses: counter(
                "misses_total",
                "GetImageSpec lookups that read the database (every lookup while bypassed).",
            )?,
            evictions: IntCounter::new(
                "spec_provider_cache_evictions_total",
                "Read cache entries dropped for room or on expiry (invalidations not counted).",
            )?,
            notifications: counter(
                "invalidation_notifications_total",
                "Written or deleted specs heard from the store's change feed.",
            )?,
            bypassed: super::register(
                registry,
                IntGauge::new(
                    "spec_provider_cache_bypassed",
                    "1 while the read cache is bypassed because invalidations cannot be heard.",
                )?,
            )?,
        })
    }
}
