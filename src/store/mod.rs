//! Storage of spec records: one [`Store`] trait and two drivers, PostgreSQL and SQLite, chosen by
//! the scheme of `database.url`. Both pass the same conformance suite (`tests/it/store.rs`).
//!
//! Every read-modify-write runs in one transaction that reads the row, asks
//! [`crate::domain::decide_put`] / [`crate::domain::decide_delete`] what to do, and writes the answer,
//! so the rules of the API live in one place and hold under concurrent writers. The statements
//! that carry out the answer, and the ListSpecs query, are written once (`sql.rs`), over what
//! differs between the two SQL dialects.
//!
//! A store also tells of its changes ([`Store::watch_changes`]), so that what was read from it
//! and kept (the read cache) can be dropped when it goes stale.

mod backend;
mod postgres;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::DatabaseSettings;
use crate::domain::{DeleteCommand, Error, ListQuery, PutCommand, PutOutcome, SpecId, SpecRecord};

pub use backend::Backend;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// A place where spec records live.
///
/// `now` is passed in by the caller, truncated to microseconds (see
/// [`crate::domain::micros_now`]): a record whose `expire_time <= now` is invisible to every method
/// at once, whether or not the sweeper has deleted it yet.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's name, for logs: `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;

    /// Applies pending migrations of this backend (`migrations/<backend>/`).
    async fn migrate(&self) -> Result<(), Error>;

    /// Checks that the database answers and the schema is in place.
    async fn ping(&self) -> Result<(), Error>;

    /// The live record for `id`, with its spec.
    async fn get(&self, id: &SpecId, now: DateTime<Utc>) -> Result<Option<SpecRecord>, Error>;

    /// Only the encoded spec of the live record for `id`, and when it expires: the hot path of
    /// GetImageSpec (the expiry tells the read cache how long it may keep the answer).
    async fn get_spec(&self, id: &SpecId, now: DateTime<Utc>) -> Result<Option<ServedSpec>, Error>;

    /// Carries out a PutSpec in one transaction.
    async fn put(&self, cmd: PutCommand, now: DateTime<Utc>) -> Result<PutOutcome, Error>;

    /// Carries out a DeleteSpec in one transaction; `Ok(true)` when a record was deleted.
    async fn delete(&self, cmd: &DeleteCommand, now: DateTime<Utc>) -> Result<bool, Error>;

    /// Live records matching `query`, in id order (byte order), at most `query.limit`.
    async fn list(&self, query: &ListQuery, now: DateTime<Utc>) -> Result<Vec<SpecRecord>, Error>;

    /// Deletes at most `batch_size` records expired at `now`; returns how many it deleted.
    async fn delete_expired(&self, now: DateTime<Utc>, batch_size: u32) -> Result<u64, Error>;

    /// How many live records there are at `now`, and how many have expired but are still
    /// stored, waiting for the sweeper; in one statement, so from one snapshot. It counts every
    /// row's index entry, so it is meant for gauges refreshed now and then, not for requests.
    async fn count(&self, now: DateTime<Utc>) -> Result<SpecCounts, Error>;

    /// The state of the connection pools, for metrics.
    fn pool_stats(&self) -> Vec<PoolStats>;

    /// Tells `subscriber` of every committed change of a record until the future is dropped: with
    /// PostgreSQL the changes of every replica (LISTEN/NOTIFY), with SQLite the writes of this
    /// process. Changes are heard only from the first [`ChangeSubscriber::listening`] on, and
    /// not between a [`ChangeSubscriber::lost`] and the next `listening`.
    async fn watch_changes(&self, subscriber: Arc<dyn ChangeSubscriber>);
}

/// Who hears a store's changes: the read cache, which must not keep answers a change made stale.
///
/// The calls come from the task that watches the changes, or from a write itself, and must not
/// block.
pub trait ChangeSubscriber: Send + Sync {
    /// The record of `id` was written or deleted, by this process or another.
    fn changed(&self, id: &str);

    /// Changes may go unheard from now on (the feed was lost): anything read from the store
    /// before may be stale, until [`ChangeSubscriber::listening`].
    fn lost(&self);

    /// Every change committed from now on will be heard.
    fn listening(&self);
}

/// What [`Store::count`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecCounts {
    /// Records not expired.
    pub live: u64,
    /// Records expired but not deleted yet.
    pub expired: u64,
}

impl SpecCounts {
    /// The counts from the number of all rows and of the expired ones.
    fn of(all: i64, expired: i64) -> Self {
        Self {
            live: u64::try_from(all - expired).unwrap_or(0),
            expired: u64::try_from(expired).unwrap_or(0),
        }
    }
}

/// What GetImageSpec needs of a record.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ServedSpec {
    /// The spec's protobuf encoding, as stored.
    pub spec: Vec<u8>,
    /// When the record expires; `None` for never.
    pub expire_time: Option<DateTime<Utc>>,
}

/// The state of one connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Which pool: `main` (PostgreSQL), `writer` or `readers` (SQLite).
    pub name: &'static str,
    /// Open connections, in use or idle.
    pub size: u32,
    /// Idle connections.
    pub idle: u32,
    /// The most connections the pool opens.
    pub max: u32,
}

impl PoolStats {
    /// The state of `pool`, named `name`.
    fn of<DB: sqlx::Database>(name: &'static str, pool: &sqlx::Pool<DB>) -> Self {
        Self {
            name,
            size: pool.size(),
            idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
            max: pool.options().get_max_connections(),
        }
    }
}

/// Opens the store named by `settings.url`. PostgreSQL connects lazily, so this succeeds while the
/// database is down and [`Store::ping`] tells when it answers; SQLite opens its file at once, so a
/// path that cannot be opened fails here, at start-up.
pub async fn open(settings: &DatabaseSettings) -> Result<Arc<dyn Store>, Error> {
    match settings.url.backend() {
        Some(Backend::Postgres) => Ok(Arc::new(PostgresStore::open(settings)?)),
        Some(Backend::Sqlite) => Ok(Arc::new(SqliteStore::open(settings).await?)),
        None => Err(Error::Internal(anyhow::anyhow!(
            "database.url {} has an unsupported scheme (use sqlite:// or postgres://)",
            settings.url
        ))),
    }
}

/// Maps a database error: failures to reach the database, and statements it gave up on or
/// could not run for now, are UNAVAILABLE (a retry may succeed); the rest internal.
pub(crate) fn db_error(err: sqlx::Error) -> Error {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => Error::Unavailable(err.into()),
        sqlx::Error::Database(ref db) if db.code().as_deref().is_some_and(is_transient_code) => {
            Error::Unavailable(err.into())
        }
        other => Error::Internal(other.into()),
    }
}

/// Whether a database error code says the statement may succeed when retried later.
///
/// PostgreSQL SQLSTATEs: class 08 (the connection failed), 57014 (cancelled, e.g. by
/// `statement_timeout`), 55P03 (lock not available), 57P01..57P03 (the server is shutting down,
/// crashed, or is still starting), 53300 (too many connections), and 55000, which is what a new
/// connection gets from a database that does not accept connections for now (`ALTER DATABASE ...
/// ALLOW_CONNECTIONS false`, during maintenance); no statement of ours raises it otherwise.
/// SQLite result codes: 5 (SQLITE_BUSY: the file stayed locked for the whole busy timeout) and
/// its extended codes, and 6 (SQLITE_LOCKED).
fn is_transient_code(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "57014"
                | "55P03"
                | "57P01"
                | "57P02"
                | "57P03"
                | "53300"
                | "55000"
                | "5"
                | "6"
                | "261"
                | "517"
                | "773"
        )
}

/// Maps a failed migration: a database that cannot be reached is UNAVAILABLE, the rest internal.
fn migrate_error(err: sqlx::migrate::MigrateError) -> Error {
    match err {
        sqlx::migrate::MigrateError::Execute(err) => db_error(err),
        other => Error::Internal(anyhow::Error::new(other).context("migrating the database")),
    }
}

#[cfg(test)]
mod tests {
    use super::is_transient_code;

    #[test]
    fn a_database_that_refuses_connections_for_now_is_transient_and_a_bad_statement_is_not() {
        for code in ["08006", "57P03", "53300", "55000", "55P03", "5", "517"] {
            assert!(is_transient_code(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02", "3D000", "1", "19"] {
            assert!(!is_transient_code(code), "{code}");
        }
    }
}
