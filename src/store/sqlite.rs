//! The SQLite driver: embedded, for a single replica.
//!
//! Writes go through a pool of one connection and take the database's write lock when their
//! transaction begins (`BEGIN IMMEDIATE`), so read-modify-writes never interleave, in this process
//! or another. Reads use their own pool: in WAL mode they run alongside the writer.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, Transaction};

use super::{PoolStats, ServedSpec, Store, db_error, migrate_error, prefix_upper_bound};
use crate::config::DatabaseSettings;
use crate::domain::{
    DeleteCommand, DeleteDecision, Error, Labels, ListQuery, PutCommand, PutDecision, PutOutcome,
    SpecId, SpecRecord, decide_delete, decide_put,
};

/// How long a statement waits for another process's lock before failing with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The columns of a [`SpecRow`] with the spec, after `SELECT`.
macro_rules! columns {
    () => {
        "id, spec, spec_digest, labels, generation, create_time, update_time, expire_time"
    };
}

/// The columns of a [`SpecRow`] without reading the spec, which can be megabytes.
macro_rules! columns_without_spec {
    () => {
        "id, NULL AS spec, spec_digest, labels, generation, create_time, update_time, expire_time"
    };
}

/// Specs stored in an SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// One connection: every write, and the migrations.
    writer: SqlitePool,
    /// `max_connections` connections for reads.
    readers: SqlitePool,
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
        // Neither pool pings a connection when it hands it out (sqlx's `test_before_acquire`,
        // on by default): a connection to a local file does not break while idle, and for
        // SQLite a ping is a round trip to the connection's own thread, one of the three thread
        // hand-offs of every read (the query's and, when the connection comes back to the pool,
        // sqlx's ping, which no option turns off). See docs/benchmarks.md.
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
        Ok(Self { writer, readers })
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
        "sqlite"
    }

    async fn migrate(&self) -> Result<(), Error> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await
            .map_err(migrate_error)
    }

    async fn ping(&self) -> Result<(), Error> {
        // Reading the table, not just `SELECT 1`, so that a database without the schema is not
        // reported healthy.
        sqlx::query("SELECT 1 FROM specs LIMIT 1")
            .fetch_optional(&self.readers)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn get(&self, id: &SpecId, now: DateTime<Utc>) -> Result<Option<SpecRecord>, Error> {
        sqlx::query_as::<_, SpecRow>(concat!(
            "SELECT ",
            columns!(),
            " FROM specs WHERE id = ?1 AND (expire_time IS NULL OR expire_time > ?2)"
        ))
        .bind(id.as_str())
        .bind(now.timestamp_micros())
        .fetch_optional(&self.readers)
        .await
        .map_err(db_error)?
        .map(SpecRecord::try_from)
        .transpose()
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
        let mut tx = self.begin_write().await?;
        let stored = select(&mut tx, cmd.id.as_str(), true).await?;
        let (record, changed) = match decide_put(stored.as_ref(), cmd, now)? {
            PutDecision::Create(record) => {
                if stored.is_some() {
                    // The stored row has expired: the new record replaces it entirely.
                    update(&mut tx, &record, true).await?;
                } else {
                    insert(&mut tx, &record).await?;
                }
                (record, true)
            }
            PutDecision::Update(record) => {
                let spec_changed = stored
                    .as_ref()
                    .is_none_or(|stored| stored.spec_digest != record.spec_digest);
                update(&mut tx, &record, spec_changed).await?;
                (record, true)
            }
            PutDecision::Unchanged(record) => (record, false),
        };
        tx.commit().await.map_err(db_error)?;
        Ok(PutOutcome { record, changed })
    }

    async fn delete(&self, cmd: &DeleteCommand, now: DateTime<Utc>) -> Result<bool, Error> {
        let mut tx = self.begin_write().await?;
        let stored = select(&mut tx, cmd.id.as_str(), false).await?;
        let deleted = match decide_delete(stored.as_ref(), cmd, now)? {
            DeleteDecision::Delete => true,
            DeleteDecision::NothingToDelete => false,
        };
        // An expired row goes too: it is as good as deleted already.
        if stored.is_some() {
            sqlx::query("DELETE FROM specs WHERE id = ?1")
                .bind(cmd.id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(deleted)
    }

    async fn list(&self, query: &ListQuery, now: DateTime<Utc>) -> Result<Vec<SpecRecord>, Error> {
        let mut sql = QueryBuilder::<Sqlite>::new("SELECT ");
        sql.push(if query.include_spec {
            columns!()
        } else {
            columns_without_spec!()
        });
        sql.push(" FROM specs WHERE (expire_time IS NULL OR expire_time > ")
            .push_bind(now.timestamp_micros())
            .push(")");
        if let Some(after_id) = &query.after_id {
            sql.push(" AND id > ").push_bind(after_id.as_str());
        }
        if !query.id_prefix.is_empty() {
            sql.push(" AND id >= ").push_bind(query.id_prefix.as_str());
            if let Some(upper) = prefix_upper_bound(&query.id_prefix) {
                sql.push(" AND id < ").push_bind(upper);
            }
        }
        for (key, value) in &query.labels {
            sql.push(" AND EXISTS (SELECT 1 FROM json_each(specs.labels) WHERE key = ")
                .push_bind(key.as_str())
                .push(" AND value = ")
                .push_bind(value.as_str())
                .push(")");
        }
        sql.push(" ORDER BY id LIMIT ")
            .push_bind(i64::from(query.limit));
        sql.build_query_as::<SpecRow>()
            .fetch_all(&self.readers)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(SpecRecord::try_from)
            .collect()
    }

    async fn delete_expired(&self, now: DateTime<Utc>, batch_size: u32) -> Result<u64, Error> {
        let result = sqlx::query(
            "DELETE FROM specs WHERE id IN ( \
                 SELECT id FROM specs WHERE expire_time <= ?1 ORDER BY expire_time LIMIT ?2)",
        )
        .bind(now.timestamp_micros())
        .bind(i64::from(batch_size))
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(result.rows_affected())
    }

    async fn count(&self, now: DateTime<Utc>) -> Result<u64, Error> {
        // All rows (SQLite counts them from its smallest index) minus the expired ones (from the
        // expiry index): no read of every row's expiry, as in the PostgreSQL store.
        let count: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM specs) \
                  - (SELECT count(*) FROM specs WHERE expire_time <= ?1)",
        )
        .bind(now.timestamp_micros())
        .fetch_one(&self.readers)
        .await
        .map_err(db_error)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        vec![
            PoolStats::of("writer", &self.writer),
            PoolStats::of("readers", &self.readers),
        ]
    }
}

/// A row of `specs` as SQLite returns it.
#[derive(sqlx::FromRow)]
struct SpecRow {
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
}

impl TryFrom<SpecRow> for SpecRecord {
    type Error = Error;

    fn try_from(row: SpecRow) -> Result<Self, Error> {
        let id = SpecId::parse(&row.id)
            .map_err(|reason| anyhow::anyhow!("stored id {:?} is invalid: {reason}", row.id))
            .map_err(Error::Internal)?;
        let labels: Labels = serde_json::from_str(&row.labels)
            .with_context(|| {
                format!(
                    "stored labels of spec {:?} are not a JSON object of strings",
                    row.id
                )
            })
            .map_err(Error::Internal)?;
        Ok(SpecRecord {
            id,
            spec: row.spec,
            spec_digest: row.spec_digest,
            labels,
            generation: row.generation,
            create_time: from_micros(row.create_time)?,
            update_time: from_micros(row.update_time)?,
            expire_time: row.expire_time.map(from_micros).transpose()?,
        })
    }
}

/// A stored time: microseconds since the Unix epoch.
fn from_micros(micros: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_micros(micros)
        .with_context(|| format!("stored time {micros} is out of range"))
        .map_err(Error::Internal)
}

/// Reads the row for `id`, expired or not, inside a write transaction. Without `with_spec` the
/// record's `spec` is `None`: a delete only needs the generation and expiry.
async fn select(
    tx: &mut Transaction<'static, Sqlite>,
    id: &str,
    with_spec: bool,
) -> Result<Option<SpecRecord>, Error> {
    let sql = if with_spec {
        concat!("SELECT ", columns!(), " FROM specs WHERE id = ?1")
    } else {
        concat!(
            "SELECT ",
            columns_without_spec!(),
            " FROM specs WHERE id = ?1"
        )
    };
    sqlx::query_as::<_, SpecRow>(sql)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?
        .map(SpecRecord::try_from)
        .transpose()
}

/// Inserts a new row.
async fn insert(tx: &mut Transaction<'static, Sqlite>, record: &SpecRecord) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO specs \
             (id, spec, spec_digest, labels, generation, create_time, update_time, expire_time) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .bind(record.id.as_str())
    .bind(spec_bytes(record)?)
    .bind(&record.spec_digest)
    .bind(labels_json(&record.labels)?)
    .bind(record.generation)
    .bind(record.create_time.timestamp_micros())
    .bind(record.update_time.timestamp_micros())
    .bind(record.expire_time.map(|t| t.timestamp_micros()))
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Overwrites the row with `record`. The spec is written only when `with_spec`: rewriting an
/// unchanged spec would copy megabytes for a label change or a TTL refresh.
async fn update(
    tx: &mut Transaction<'static, Sqlite>,
    record: &SpecRecord,
    with_spec: bool,
) -> Result<(), Error> {
    let query = if with_spec {
        sqlx::query(
            "UPDATE specs SET spec_digest = ?2, labels = ?3, generation = ?4, create_time = ?5, \
                 update_time = ?6, expire_time = ?7, spec = ?8 \
             WHERE id = ?1",
        )
    } else {
        sqlx::query(
            "UPDATE specs SET spec_digest = ?2, labels = ?3, generation = ?4, create_time = ?5, \
                 update_time = ?6, expire_time = ?7 \
             WHERE id = ?1",
        )
    };
    let mut query = query
        .bind(record.id.as_str())
        .bind(&record.spec_digest)
        .bind(labels_json(&record.labels)?)
        .bind(record.generation)
        .bind(record.create_time.timestamp_micros())
        .bind(record.update_time.timestamp_micros())
        .bind(record.expire_time.map(|t| t.timestamp_micros()));
    if with_spec {
        query = query.bind(spec_bytes(record)?);
    }
    query.execute(&mut **tx).await.map_err(db_error)?;
    Ok(())
}

/// Labels as the JSON object stored in the `labels` column.
fn labels_json(labels: &Labels) -> Result<String, Error> {
    serde_json::to_string(labels)
        .context("encoding labels as JSON")
        .map_err(Error::Internal)
}

/// The spec of a record about to be written; every record a put decides on carries one.
fn spec_bytes(record: &SpecRecord) -> Result<&[u8], Error> {
    record
        .spec
        .as_deref()
        .context("a record to be written has no spec")
        .map_err(Error::Internal)
}
