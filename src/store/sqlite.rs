//! The SQLite driver: embedded, for a single replica.
//!
//! Writes go through a pool of one connection and take the database's write lock when their
//! transaction begins (`BEGIN IMMEDIATE`), so read-modify-writes never interleave, in this process
//! or another. Reads use their own pool: in WAL mode they run alongside the writer.
//!
//! Its change feed is its own writes: one replica is all there is.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, Transaction};

use super::sql::{Dialect, stored_id};
use super::{
    Backend, ChangeSubscriber, PoolStats, ServedSpec, SpecCounts, Store, db_error, migrate_error,
};
use crate::config::DatabaseSettings;
use crate::domain::{
    DeleteCommand, Error, Labels, ListQuery, PutCommand, PutOutcome, SpecId, SpecRecord,
};

/// How long a statement waits for another process's lock before failing with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Specs stored in an SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// One connection: every write, and the migrations.
    writer: SqlitePool,
    /// `max_connections` connections for reads.
    readers: SqlitePool,
    /// Who hears the writes ([`Store::watch_changes`]).
    subscribers: Subscribers,
}

impl SqliteStore {
    /// Opens the database file, creating it if it does not exist. The writer connects at once,
    /// so a path that cannot be opened fails at start-up rather than on the first request; the
    /// readers connect when needed.
    pub async fn open(settings: &DatabaseSettings) -> Result<Self, Error> {
        let options = SqliteConnectOptions::from_str(settings.url.expose())
            .map_err(|err| {
                Error::Internal(
                    anyhow::Error::new(err).context("database.url is not a valid SQLite URL"),
                )
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // An acknowledged write must survive a power loss, which WAL's default NORMAL does
            // not promise.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        // The writer is never recycled: a connection to a local file does not go stale, and an
        // in-memory database (`sqlite::memory:`) lives only as long as some connection to it.
        // Neither pool pings a connection it hands out: a local file's connection does not break
        // while idle, and the ping is a thread hand-off on every read (docs/benchmarks-history.md).
        let writer = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening the SQLite database {}", settings.url))
            .map_err(Error::Internal)?;
        let readers = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options);
        Ok(Self {
            writer,
            readers,
            subscribers: Subscribers::default(),
        })
    }

    /// Begins a transaction that holds the write lock from its first statement on. A deferred
    /// transaction would take it only at its first write, after reading the row, and could then
    /// fail with SQLITE_BUSY instead of waiting, if another process wrote in between.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, Error> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        Backend::Sqlite.name()
    }

    async fn migrate(&self) -> Result<(), Error> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await
            .map_err(migrate_error)
    }

    async fn ping(&self) -> Result<(), Error> {
        Sqlite::ping(&self.readers).await
    }

    async fn get(&self, id: &SpecId, now: DateTime<Utc>) -> Result<Option<SpecRecord>, Error> {
        Sqlite::get(&self.readers, id, now).await
    }

    async fn get_spec(&self, id: &SpecId, now: DateTime<Utc>) -> Result<Option<ServedSpec>, Error> {
        let row: Option<(Vec<u8>, Option<i64>)> = sqlx::query_as(
            "SELECT spec, expire_time FROM specs WHERE id = ?1 AND (expire_time IS NULL OR expire_time > ?2)",
        )
        .bind(id.as_str())
        .bind(now.timestamp_micros())
        .fetch_optional(&self.readers)
        .await
        .map_err(db_error)?;
        row.map(|(spec, expire_time)| {
            Ok(ServedSpec {
                spec,
                expire_time: expire_time.map(from_micros).transpose()?,
            })
        })
        .transpose()
    }

    async fn put(&self, cmd: PutCommand, now: DateTime<Utc>) -> Result<PutOutcome, Error> {
        let id = cmd.id.clone();
        let mut tx = self.begin_write().await?;
        // The write lock keeps every other writer out: no one can create the row meanwhile.
        let outcome = Sqlite::put_in(&mut tx, cmd, now).await?.ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "spec {id:?} was created by another writer while this one held the write lock"
            ))
        })?;
        tx.commit().await.map_err(db_error)?;
        if outcome.changed {
            self.subscribers.changed(id.as_str());
        }
        Ok(outcome)
    }

    async fn delete(&self, cmd: &DeleteCommand, now: DateTime<Utc>) -> Result<bool, Error> {
        let mut tx = self.begin_write().await?;
        let outcome = Sqlite::delete_in(&mut tx, cmd, now).await?;
        tx.commit().await.map_err(db_error)?;
        if outcome.changed {
            self.subscribers.changed(cmd.id.as_str());
        }
        Ok(outcome.deleted)
    }

    async fn list(&self, query: &ListQuery, now: DateTime<Utc>) -> Result<Vec<SpecRecord>, Error> {
        Sqlite::list(&self.readers, query, now).await
    }

    async fn delete_expired(&self, now: DateTime<Utc>, batch_size: u32) -> Result<u64, Error> {
        Sqlite::delete_expired(&self.writer, now, batch_size).await
    }

    async fn count(&self, now: DateTime<Utc>) -> Result<SpecCounts, Error> {
        // All rows (SQLite counts them from its smallest index) and the expired ones (from the
        // expiry index): no read of every row's expiry, as in the PostgreSQL store.
        let (all, expired): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM specs), \
                    (SELECT count(*) FROM specs WHERE expire_time <= ?1)",
        )
        .bind(now.timestamp_micros())
        .fetch_one(&self.readers)
        .await
        .map_err(db_error)?;
        Ok(SpecCounts::of(all, expired))
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        vec![
            PoolStats::of("writer", &self.writer),
            PoolStats::of("readers", &self.readers),
        ]
    }

    async fn watch_changes(&self, subscriber: Arc<dyn ChangeSubscriber>) {
        let _subscribed = self.subscribers.add(subscriber.clone());
        subscriber.listening();
        // Every write tells the subscribers itself; this only keeps the subscription.
        std::future::pending::<()>().await;
    }
}

impl Dialect for Sqlite {
    type SpecRow = SpecRow;

    fn push_time(sql: &mut QueryBuilder<Self>, time: Option<DateTime<Utc>>) {
        // Microseconds since the Unix epoch: integers compare and index as the times do.
        sql.push_bind(time.map(|time| time.timestamp_micros()));
    }

    fn push_labels(sql: &mut QueryBuilder<Self>, labels: &Labels) -> Result<(), Error> {
        let json = serde_json::to_string(labels)
            .context("encoding labels as JSON")
            .map_err(Error::Internal)?;
        sql.push_bind(json);
        Ok(())
    }

    const NULL_SPEC: &'static str = "NULL AS spec";
    // A write takes the database's write lock when it begins (`BEGIN IMMEDIATE`, or the sweep's
    // one statement): no row to lock or skip.
    const LOCK_ROW: &'static str = "";
    const SKIP_LOCKED: &'static str = "";

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn push_labels_filter(sql: &mut QueryBuilder<Self>, labels: &Labels) {
        let mut conditions = sql.separated(" AND ");
        for (key, value) in labels {
            conditions
                .push("EXISTS (SELECT 1 FROM json_each(specs.labels) WHERE key = ")
                .push_bind_unseparated(key.as_str())
                .push_unseparated(" AND value = ")
                .push_bind_unseparated(value.as_str())
                .push_unseparated(")");
        }
    }
}

/// The subscribers to the changes of an [`SqliteStore`], told after each write commits.
#[derive(Debug, Clone, Default)]
struct Subscribers(Arc<Mutex<SubscriberList>>);

#[derive(Default)]
struct SubscriberList {
    next_key: u64,
    entries: Vec<(u64, Arc<dyn ChangeSubscriber>)>,
}

impl std::fmt::Debug for SubscriberList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberList")
            .field("subscribers", &self.entries.len())
            .finish()
    }
}

/// Ends a subscription when dropped.
struct Subscription {
    subscribers: Subscribers,
    key: u64,
}

impl Subscribers {
    fn add(&self, subscriber: Arc<dyn ChangeSubscriber>) -> Subscription {
        let mut list = self.lock();
        let key = list.next_key;
        list.next_key += 1;
        list.entries.push((key, subscriber));
        Subscription {
            subscribers: self.clone(),
            key,
        }
    }

    fn changed(&self, id: &str) {
        for (_, subscriber) in &self.lock().entries {
            subscriber.changed(id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SubscriberList> {
        // The list stays consistent whatever a subscriber did when it panicked.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.subscribers
            .lock()
            .entries
            .retain(|(key, _)| *key != self.key);
    }
}

/// A row of `specs` as SQLite returns it.
#[derive(sqlx::FromRow)]
pub(super) struct SpecRow {
    id: String,
    spec: Option<Vec<u8>>,
    spec_digest: String,
    /// A JSON object.
    labels: String,
    generation: i64,
    /// Microseconds since the Unix epoch, as are the other times.
    create_time: i64,
    update_time: i64,
    expire_time: Option<i64>,
    created_by: String,
    updated_by: String,
}

impl TryFrom<SpecRow> for SpecRecord {
    type Error = Error;

    fn try_from(row: SpecRow) -> Result<Self, Error> {
        let labels: Labels = serde_json::from_str(&row.labels)
            .with_context(|| {
                format!(
                    "stored labels of spec {:?} are not a JSON object of strings",
                    row.id
                )
            })
            .map_err(Error::Internal)?;
        Ok(SpecRecord {
            id: stored_id(&row.id)?,
            spec: row.spec,
            spec_digest: row.spec_digest,
            labels,
            generation: row.generation,
            create_time: from_micros(row.create_time)?,
            update_time: from_micros(row.update_time)?,
            expire_time: row.expire_time.map(from_micros).transpose()?,
            created_by: row.created_by,
            updated_by: row.updated_by,
        })
    }
}

/// A stored time: microseconds since the Unix epoch.
fn from_micros(micros: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_micros(micros)
        .with_context(|| format!("stored time {micros} is out of range"))
        .map_err(Error::Internal)
}
