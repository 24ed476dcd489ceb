//! The GetImageSpec read cache: found answers, already encoded, and, briefly, "not found"
//! answers, in memory, bounded in bytes (moka), and coherent with the database.
//!
//! A found answer is kept as the bytes it is sent as (the `GetImageSpecResponse`, encoded and
//! framed as a gRPC message), so a hit neither clones nor encodes a spec, and hands the bytes to
//! HTTP/2 as they are: see `crate::api::provider`.
//!
//! # Coherence
//!
//! - Every write of this process evicts its id as soon as the store returns, also when the write
//!   failed, since a commit whose answer was lost may have happened ([`SpecCache::invalidate`]).
//! - The cache follows the store's change feed ([`SpecCache::follow`], [`Store::watch_changes`]):
//!   every committed change, of this replica or another, evicts its id. While changes cannot be
//!   heard (the feed was lost), the cache is emptied and bypassed ([`SpecCache::suspend`]) until
//!   they are heard again ([`SpecCache::resume`]); it starts bypassed, until the feed first
//!   listens.
//! - Cached found answers carry their record's `expire_time` and stop answering at that moment,
//!   as the store does, so the sweeper's deletions need no notification.
//!
//! # The stale fill
//!
//! A miss reads the database and then fills the cache. If a write commits and its invalidation
//! runs between the two, the fill would put back the answer the write made stale, e.g. a "not
//! found" hiding a spec just created. So every invalidation bumps an epoch, a fill remembers the
//! epoch from before its read, and the fill is dropped when the epoch moved. The check runs
//! again after the insert, and removes the entry if an invalidation slipped in between check and
//! insert: whichever order they run in, a stale fill does not survive.
//!
//! An invalidation of one id bumps the epoch of its stripe (one of [`STRIPES`], by hash of the
//! id), so a write drops only the fills in flight for ids of the same stripe, not all of them;
//! emptying the cache ([`SpecCache::suspend`], [`SpecCache::resume`]) bumps a global epoch that
//! every fill checks too.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use moka::notification::RemovalCause;
use moka::sync::Cache;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntGauge, Registry};

use crate::config::CacheSettings;
use crate::domain::{Error, micros_now};
use crate::metrics::cache::CacheMetrics;
use crate::store::{ChangeSubscriber, ServedSpec, Store};

/// Bytes counted for an entry on top of its id and encoded answer: moka's node, the key's and the
/// entry's headers. An estimate; it keeps millions of tiny "not found" entries from being free.
const ENTRY_OVERHEAD_BYTES: u32 = 128;

/// How many epochs invalidations are spread over: a write drops about 1 in this many of the
/// fills in flight for other ids.
const STRIPES: usize = 1024;

/// The read cache. Clones share it. A disabled cache looks everything up in the store.
#[derive(Clone)]
pub struct SpecCache {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    entries: Cache<String, Entry>,
    /// Bumped by every suspend and resume; see the module documentation.
    epoch: AtomicU64,
    /// Bumped by every invalidation of an id of the stripe.
    stripes: Box<[AtomicU64]>,
    /// True while invalidations cannot be heard: lookups go to the store and fill nothing.
    bypass: AtomicBool,
    negative_ttl: Duration,
    metrics: CacheMetrics,
}

/// A cached answer.
#[derive(Clone)]
struct Entry {
    /// The encoded answer, or `None` for "not found".
    answer: Option<Bytes>,
    /// When the record expires (found answers only).
    expire_time: Option<DateTime<Utc>>,
    /// How long moka keeps the entry: until `expire_time`, `negative_ttl`, or `None` (until
    /// evicted or invalidated).
    ttl: Option<Duration>,
    /// Bytes counted against `cache.max_bytes`.
    weight: u32,
}

/// Gives each entry its own lifetime.
struct EntryExpiry;

impl moka::Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(&self, _id: &String, entry: &Entry, _now: Instant) -> Option<Duration> {
        entry.ttl
    }

    fn expire_after_update(
        &self,
        _id: &String,
        entry: &Entry,
        _now: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        entry.ttl
    }
}

/// What a lookup in the store found, for [`SpecCache::get_or_load`] to cache.
#[derive(Debug)]
pub struct Loaded {
    /// The answer, encoded as it is sent.
    pub answer: Bytes,
    /// When its record expires.
    pub expire_time: Option<DateTime<Utc>>,
}

impl Loaded {
    /// The store's answer, with its stored spec turned into the answer's bytes by `encode`.
    pub fn from_served(
        served: ServedSpec,
        encode: impl FnOnce(&[u8]) -> Result<Bytes, Error>,
    ) -> Result<Self, Error> {
        Ok(Self {
            answer: encode(&served.spec)?,
            expire_time: served.expire_time,
        })
    }
}

impl SpecCache {
    /// A cache per `settings`, with its entries and bytes registered in `registry`. It starts
    /// bypassed, until [`SpecCache::follow`] hears the store's changes.
    pub fn new(
        settings: &CacheSettings,
        metrics: &CacheMetrics,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        if !settings.enabled {
            registry.register(Box::new(SizeCollector::new(None, metrics)?))?;
            return Ok(Self { inner: None });
        }
        let evictions = metrics.evictions.clone();
        let entries = Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|_id: &String, entry: &Entry| entry.weight)
            .expire_after(EntryExpiry)
            .eviction_listener(move |_id, _entry, cause| {
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    evictions.inc();
                }
            })
            .build();
        registry.register(Box::new(SizeCollector::new(
            Some(entries.clone()),
            metrics,
        )?))?;
        metrics.bypassed.set(1);
        Ok(Self {
            inner: Some(Arc::new(Inner {
                entries,
                epoch: AtomicU64::new(0),
                stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
                bypass: AtomicBool::new(true),
                negative_ttl: settings.negative_ttl,
                metrics: metrics.clone(),
            })),
        })
    }

    /// A cache that caches nothing.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// The answer for `id`: from the cache, or from `load` (the store) on a miss, which then
    /// fills the cache unless an invalidation ran meanwhile.
    pub async fn get_or_load<F, Fut>(&self, id: &str, load: F) -> Result<Option<Bytes>, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Loaded>, Error>>,
    {
        let Some(inner) = &self.inner else {
            return Ok(load().await?.map(|loaded| loaded.answer));
        };
        if inner.bypass.load(Ordering::SeqCst) {
            inner.metrics.misses.inc();
            return Ok(load().await?.map(|loaded| loaded.answer));
        }
        if let Some(entry) = inner.entries.get(id) {
            // moka's clock is not the wall clock the store compares `expire_time` with: check
            // it here, so that a cached answer never outlives what the store would say.
            if entry.expire_time.is_none_or(|expire| expire > micros_now()) {
                inner.metrics.hits.inc();
                return Ok(entry.answer);
            }
            inner.entries.invalidate(id);
        }
        inner.metrics.misses.inc();

        let stripe = inner.stripe(id);
        let epoch = inner.epochs(stripe);
        let loaded = load().await?;
        let entry = match loaded {
            Some(loaded) => {
                let ttl = match loaded.expire_time {
                    None => None,
                    Some(expire) => match (expire - micros_now()).to_std() {
                        Ok(left) => Some(left),
                        // Expired since the store read it: answer, but do not cache.
                        Err(_) => return Ok(Some(loaded.answer)),
                    },
                };
                Entry {
                    weight: weight(id, loaded.answer.len()),
                    answer: Some(loaded.answer),
                    expire_time: loaded.expire_time,
                    ttl,
                }
            }
            None if inner.negative_ttl.is_zero() => return Ok(None),
            None => Entry {
                answer: None,
                expire_time: None,
                ttl: Some(inner.negative_ttl),
                weight: weight(id, 0),
            },
        };
        let answer = entry.answer.clone();
        if inner.fill_allowed(stripe, epoch) {
            inner.entries.insert(id.to_owned(), entry);
            if !inner.fill_allowed(stripe, epoch) {
                inner.entries.invalidate(id);
            }
        }
        Ok(answer)
    }

    /// Evicts `id`, and drops every fill that read the store before this call.
    pub fn invalidate(&self, id: &str) {
        if let Some(inner) = &self.inner {
            inner.stripes[inner.stripe(id)].fetch_add(1, Ordering::SeqCst);
            inner.entries.invalidate(id);
        }
    }

    /// Empties the cache and bypasses it: invalidations can no longer be heard.
    pub fn suspend(&self) {
        if let Some(inner) = &self.inner {
            inner.bypass.store(true, Ordering::SeqCst);
            inner.epoch.fetch_add(1, Ordering::SeqCst);
            inner.entries.invalidate_all();
            inner.metrics.bypassed.set(1);
        }
    }

    /// Uses the cache again, once invalidations are heard. Fills that read the store before
    /// this call (while nothing was heard) are dropped.
    pub fn resume(&self) {
        if let Some(inner) = &self.inner {
            inner.epoch.fetch_add(1, Ordering::SeqCst);
            inner.bypass.store(false, Ordering::SeqCst);
            inner.metrics.bypassed.set(0);
        }
    }

    /// Keeps the cache coherent with `store`'s changes until the future is dropped; returns at
    /// once when the cache is disabled, which then has nothing to keep coherent.
    pub async fn follow(&self, store: Arc<dyn Store>) {
        if self.inner.is_some() {
            store.watch_changes(Arc::new(self.clone())).await;
        }
    }

    /// Whether the cache is enabled and not bypassed.
    pub fn is_active(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|inner| !inner.bypass.load(Ordering::SeqCst))
    }
}

/// The store's change feed, as the cache hears it.
impl ChangeSubscriber for SpecCache {
    fn changed(&self, id: &str) {
        if let Some(inner) = &self.inner {
            inner.metrics.notifications.inc();
        }
        self.invalidate(id);
    }

    fn lost(&self) {
        self.suspend();
        tracing::warn!("read cache emptied and bypassed until store changes are heard again");
    }

    fn listening(&self) {
        self.resume();
        tracing::info!("store changes are heard: read cache in use");
    }
}

impl Inner {
    /// The stripe of `id`.
    fn stripe(&self, id: &str) -> usize {
        let mut hasher = std::hash::DefaultHasher::new();
        id.hash(&mut hasher);
        // The remainder is below STRIPES, so it fits any usize.
        usize::try_from(hasher.finish() % STRIPES as u64).unwrap_or(0)
    }

    /// The global epoch and the epoch of `stripe`, read before a fill's store read.
    fn epochs(&self, stripe: usize) -> (u64, u64) {
        (
            self.epoch.load(Ordering::SeqCst),
            self.stripes[stripe].load(Ordering::SeqCst),
        )
    }

    /// Whether a fill of an id of `stripe` that read the store at `epochs` may still be cached.
    fn fill_allowed(&self, stripe: usize, epochs: (u64, u64)) -> bool {
        !self.bypass.load(Ordering::SeqCst) && self.epochs(stripe) == epochs
    }
}

/// The weight of an entry for `id` whose answer encodes to `encoded_len` bytes.
fn weight(id: &str, encoded_len: usize) -> u32 {
    u32::try_from(id.len().saturating_add(encoded_len))
        .unwrap_or(u32::MAX)
        .saturating_add(ENTRY_OVERHEAD_BYTES)
}

/// `spec_provider_cache_entries` and `spec_provider_cache_bytes`, read from moka at each scrape
/// (0 without a cache), and `spec_provider_cache_evictions_total`.
struct SizeCollector {
    entries: Option<Cache<String, Entry>>,
    evictions: IntCounter,
    count: IntGauge,
    bytes: IntGauge,
}

impl SizeCollector {
    fn new(
        entries: Option<Cache<String, Entry>>,
        metrics: &CacheMetrics,
    ) -> Result<Self, prometheus::Error> {
        Ok(Self {
            entries,
            evictions: metrics.evictions.clone(),
            count: IntGauge::new("spec_provider_cache_entries", "Entries in the read cache.")?,
            bytes: IntGauge::new(
                "spec_provider_cache_bytes",
                "Bytes the read cache's entries take, as counted against cache.max_bytes.",
            )?,
        })
    }
}

impl Collector for SizeCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut desc = self.evictions.desc();
        desc.extend(self.count.desc());
        desc.extend(self.bytes.desc());
        desc
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Some(entries) = &self.entries {
            // moka applies insertions, evictions and expiries in batches; settle them so that a
            // scrape right after traffic is exact, evictions included.
            entries.run_pending_tasks();
            self.count
                .set(i64::try_from(entries.entry_count()).unwrap_or(i64::MAX));
            self.bytes
                .set(i64::try_from(entries.weighted_size()).unwrap_or(i64::MAX));
        }
        let mut families = self.evictions.collect();
        families.extend(self.count.collect());
        families.extend(self.bytes.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;

    fn cache(negative_ttl: Duration) -> SpecCache {
        let registry = Registry::new();
        let metrics = CacheMetrics::new(&registry).unwrap();
        let settings = CacheSettings {
            negative_ttl,
            ..CacheSettings::default()
        };
        let cache = SpecCache::new(&settings, &metrics, &registry).unwrap();
        assert!(!cache.is_active(), "bypassed until changes are heard");
        cache.listening();
        cache
    }

    fn spec(tag: &str) -> Bytes {
        Bytes::from(format!("an encoded answer, {tag}"))
    }

    fn found(tag: &str) -> Option<Loaded> {
        Some(Loaded {
            answer: spec(tag),
            expire_time: None,
        })
    }

    /// Looks `id` up with a store that must not be asked.
    async fn cached(cache: &SpecCache, id: &str) -> Option<Bytes> {
        cache
            .get_or_load(id, || async { panic!("the store was asked for {id}") })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn answers_found_and_not_found_from_the_cache_once_loaded() {
        let cache = cache(Duration::from_secs(60));
        let loaded = cache.get_or_load("a", || async { Ok(found("1")) }).await;
        assert_eq!(loaded.unwrap(), Some(spec("1")));
        assert_eq!(cached(&cache, "a").await, Some(spec("1")));
        assert_eq!(
            cache.get_or_load("b", || async { Ok(None) }).await.unwrap(),
            None
        );
        assert_eq!(cached(&cache, "b").await, None);
    }

    #[tokio::test]
    async fn a_miss_whose_read_raced_an_invalidation_fills_nothing() {
        let cache = cache(Duration::from_secs(60));
        let (read_done, read_result) = oneshot::channel();
        let (read_started_tx, read_started) = oneshot::channel();
        let miss = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get_or_load("a", || async move {
                        read_started_tx.send(()).unwrap();
                        // The read saw no row: it ran before the create committed.
                        read_result.await.unwrap()
                    })
                    .await
                    .unwrap()
            }
        });
        read_started.await.unwrap();
        // The create commits and its invalidation runs while the read is in flight.
        cache.invalidate("a");
        read_done.send(Ok(None)).unwrap();
        assert_eq!(
            miss.await.unwrap(),
            None,
            "the read itself answers what it saw"
        );
        let next = cache.get_or_load("a", || async { Ok(found("1")) }).await;
        assert_eq!(
            next.unwrap(),
            Some(spec("1")),
            "the stale \"not found\" was not cached"
        );
    }

    #[tokio::test]
    async fn a_suspended_cache_is_empty_and_reads_the_store_until_resumed() {
        let cache = cache(Duration::from_secs(60));
        cache
            .get_or_load("a", || async { Ok(found("1")) })
            .await
            .unwrap();
        cache.suspend();
        assert!(!cache.is_active());
        for tag in ["2", "3"] {
            let answer = cache.get_or_load("a", || async { Ok(found(tag)) }).await;
            assert_eq!(answer.unwrap(), Some(spec(tag)));
        }
        cache.resume();
        let answer = cache.get_or_load("a", || async { Ok(found("4")) }).await;
        assert_eq!(answer.unwrap(), Some(spec("4")), "nothing kept from before");
        assert_eq!(cached(&cache, "a").await, Some(spec("4")));
    }

    #[tokio::test]
    async fn a_found_answer_is_not_served_past_its_records_expiry() {
        let cache = cache(Duration::from_secs(60));
        let expired_soon = Loaded {
            expire_time: Some(micros_now() + chrono::Duration::milliseconds(30)),
            ..found("1").unwrap()
        };
        cache
            .get_or_load("a", || async { Ok(Some(expired_soon)) })
            .await
            .unwrap();
        assert_eq!(cached(&cache, "a").await, Some(spec("1")));
        // Waiting for the clock itself, which is what expiry is about.
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(
            cache.get_or_load("a", || async { Ok(None) }).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn zero_negative_ttl_caches_no_not_found() {
        let cache = cache(Duration::ZERO);
        assert_eq!(
            cache.get_or_load("a", || async { Ok(None) }).await.unwrap(),
            None
        );
        let answer = cache.get_or_load("a", || async { Ok(found("1")) }).await;
        assert_eq!(answer.unwrap(), Some(spec("1")));
    }
}
