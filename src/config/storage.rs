//! `[database]`, `[sweeper]` and `[cache]`: where specs are stored, how the expired ones go, and
//! the read cache in front of them.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::store::Backend;

/// `[database]`: the store.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (embedded, the default) or `postgres://USER:PASSWORD@HOST:PORT/DB`.
    pub url: DatabaseUrl,
    /// Apply pending migrations at start-up (`spec-provider migrate` applies them on demand).
    pub run_migrations: bool,
    /// Most connections in the pool (PostgreSQL; SQLite uses one writer plus this many readers).
    pub max_connections: u32,
    /// Longest wait for a pooled connection (including connecting) before an RPC fails with
    /// UNAVAILABLE: no RPC hangs on a dead database.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Longest time one SQL statement may run on PostgreSQL before the database cancels it and
    /// the RPC fails with UNAVAILABLE (e.g. a row locked by a stuck transaction). SQLite has no
    /// statement timeout: a write waits at most its busy timeout for the file lock.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: DatabaseUrl("sqlite://spec-provider.db".into()),
            run_migrations: true,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

/// A database URL. Its `Debug` and `Display` hide the password, so it can be logged.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, password included: only for opening connections.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The backend the URL's scheme names, if it names one.
    pub fn backend(&self) -> Option<Backend> {
        let (scheme, _) = self.0.split_once("://")?;
        Backend::from_scheme(scheme)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("***"));
                f.write_str(parsed.as_str())
            }
            Ok(_) => f.write_str(&self.0),
            Err(_) => f.write_str("<unparseable database url>"),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// `[sweeper]`: deletes expired records in the background (they are invisible from the moment
/// they expire; the sweeper only reclaims their space).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweeperSettings {
    /// Time between sweeps.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Most rows deleted by one statement, so a sweep never holds long locks.
    pub batch_size: u32,
    /// Pause between two batches of one sweep, so that a sweep of many expired records leaves
    /// the database (and, on a shared machine, the CPU) to the reads in between. `0s`: none.
    ///
    /// The defaults (500 rows, 500 ms) sweep at most about 1,000 rows a second per replica, as
    /// PostgreSQL's autovacuum is throttled: the records are already invisible, so nothing but
    /// disk space waits for the sweep, and each of its commits makes every SQLite reader
    /// connection refill its page cache (`docs/benchmarks.md`).
    #[serde(with = "humantime_serde")]
    pub batch_pause: Duration,
}

impl Default for SweeperSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            batch_size: 500,
            batch_pause: Duration::from_millis(500),
        }
    }
}

/// `[cache]`: the in-process read cache of GetImageSpec answers. With PostgreSQL it is kept
/// coherent across replicas by notifications (see `docs/scaling.md`); with SQLite by the writes
/// of this process.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Whether GetImageSpec answers are cached at all.
    pub enabled: bool,
    /// Most bytes the cached specs (their encoding plus per-entry overhead) may take; the least
    /// useful entries are evicted beyond it.
    pub max_bytes: u64,
    /// How long a "not found" answer is cached (probes for unknown ids are frequent). A spec
    /// written meanwhile evicts it at once; `0s` caches no "not found" answers.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
}

/// The longest `cache.negative_ttl` accepted: "not found" answers are meant to be cached briefly.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(60);

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 64 * 1024 * 1024,
            negative_ttl: Duration::from_secs(1),
        }
    }
}
