//! The PostgreSQL driver: for several replicas sharing one database.
//!
//! A put or delete locks the row with `SELECT ... FOR UPDATE`, so concurrent writers of one id
//! queue behind each other and each decides on the row the previous one committed. Creators of
//! an id that has no row yet have nothing to lock: all but one of them hit the primary key, roll
//! back and start again, and then find the winner's row.

use std::str::FromStr;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Transaction};

use super::{PoolStats, ServedSpec, Store, db_error, migrate_error, prefix_upper_bound};
use crate::config::DatabaseSettings;
use crate::domain::{
    DeleteCommand, DeleteDecision, Error, Labels, ListQuery, PutCommand, PutDecision, PutOutcome,
    SpecId, SpecRecord, decide_delete, decide_put,
};

/// The channel on which every committed write or delete of a spec is announced, with the spec's
/// id as the payload, so that each replica can evict it from its read cache
/// ([`crate::cache::listener`]). PostgreSQL delivers a notification only when (and if) its
/// transaction commits, so the announcement can never precede the change or announce one that
/// was rolled back.
pub const CHANGES_CHANNEL: &str = "spec_provider_spec_changes";

/// How many times a put runs its transaction when concurrent creators of the same id collide.
/// A collision means another creator committed the row, which the next attempt then locks and
/// reads, so a second collision needs the row to be deleted in between: a handful is plenty.
const MAX_PUT_ATTEMPTS: u32 = 5;

/// The columns of a [`SpecRow`] with the spec, after `SELECT`.
macro_rules! columns {
    () => {
        "id, spec, spec_digest, labels, generation, create_time, update_time, expire_time"
    };
}

/// The columns of a [`SpecRow`] without reading the spec, which can be megabytes.
macro_rules! columns_without_spec {
    () => {
        "id, NULL::bytea AS spec, spec_digest, labels, generation, create_time, update_time, \
         expire_time"
    };
}

/// Specs stored in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The pool's connection options without `statement_timeout`: a migration (an index built
    /// on a large table, say) may rightly take longer than any request.
    migrate_options: PgConnectOptions,
}

impl PostgresStore {
    /// Opens the store. No connection is made until one is needed, so this succeeds while the
    /// database is down, and the service can start and report NOT_SERVING until it answers.
    pub fn open(settings: &DatabaseSettings) -> Result<Self, Error> {
        let options = PgConnectOptions::from_str(settings.url.expose())
            .map_err(|err| {
                // The URL itself stays out of the message: it may hold a password.
                Error::Internal(
                    anyhow::Error::new(err).context("database.url is not a valid PostgreSQL URL"),
                )
            })?
            .application_name("spec-provider");
        let migrate_options = options.clone();
        let options = options
            // Set per session, so it holds for every statement of every pooled connection: a
            // statement stuck behind a lock fails that RPC instead of holding its connection.
            .options([(
                "statement_timeout",
                format!("{}ms", settings.statement_timeout.as_millis()),
            )]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            migrate_options,
        })
    }

    /// One attempt at a put; `Ok(None)` when a concurrent creator inserted the row first.
    async fn try_put(
        &self,
        cmd: PutCommand,
        now: DateTime<Utc>,
    ) -> Result<Option<PutOutcome>, Error> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let result = put_in(&mut tx, cmd, now).await;
        end(tx, result).await
    }
}

/// A delete inside `tx`: whether a live record was deleted.
async fn delete_in(
    tx: &mut Transaction<'static, Postgres>,
    cmd: &DeleteCommand,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    let stored = select_for_update(tx, cmd.id.as_str(), false).await?;
    let deleted = match decide_delete(stored.as_ref(), cmd, now)? {
        DeleteDecision::Delete => true,
        DeleteDecision::NothingToDelete => false,
    };
    // An expired row goes too: it is as good as deleted already.
    if stored.is_some() {
        sqlx::query("DELETE FROM specs WHERE id = $1")
            .bind(cmd.id.as_str())
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        notify_changed(tx, cmd.id.as_str()).await?;
    }
    Ok(deleted)
}

/// A put inside `tx`; see [`PostgresStore::try_put`].
async fn put_in(
    tx: &mut Transaction<'static, Postgres>,
    cmd: PutCommand,
    now: DateTime<Utc>,
) -> Result<Option<PutOutcome>, Error> {
    let stored = select_for_update(tx, cmd.id.as_str(), true).await?;
    let decision = decide_put(stored.as_ref(), cmd, now)?;
    let (record, changed) = match decision {
        PutDecision::Create(record) => {
            if stored.is_some() {
                // The stored row has expired: the new record replaces it entirely.
                update(tx, &record, true).await?;
            } else if !insert(tx, &record).await? {
                return Ok(None);
            }
            (record, true)
        }
        PutDecision::Update(record) => {
            let spec_changed = stored
                .as_ref()
                .is_none_or(|stored| stored.spec_digest != record.spec_digest);
            update(tx, &record, spec_changed).await?;
            (record, true)
        }
        PutDecision::Unchanged(record) => (record, false),
    };
    if changed {
        notify_changed(tx, record.id.as_str()).await?;
    }
    Ok(Some(PutOutcome { record, changed }))
}

/// Commits `tx` after a success, and rolls it back before returning after an error. A
/// transaction that is just dropped is rolled back later, by the task sqlx spawns to return its
/// connection to the pool, and until then the rows it locked stay locked: after a rejected put
/// (a stale generation) the next writer of that id waited, and a sweep run at once passed over
/// the row (`SKIP LOCKED`).
async fn end<T>(tx: Transaction<'static, Postgres>, result: Result<T, Error>) -> Result<T, Error> {
    match result {
        Ok(value) => {
            tx.commit().await.map_err(db_error)?;
            Ok(value)
        }
        Err(err) => {
            // A rollback that fails leaves the connection broken, and the pool closes it, which
            // ends the transaction too; the error to report is the first one.
            let _ = tx.rollback().await;
            Err(err)
        }
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<(), Error> {
        // A pool of one rather than a bare connection: the migrator takes a pool here (a
        // connection would not satisfy the async trait's lifetime bounds), with its timeout.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.pool.options().get_acquire_timeout())
            .connect_lazy_with(self.migrate_options.clone());
        let migrated = sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(migrate_error);
        pool.close().await;
        migrated
    }

    async fn ping(&self) -> Result<(), Error> {
        // Reading the table, not just `SELECT 1`, so that a database without the schema is not
        // reported healthy.
        sqlx::query("SELECT 1 FROM specs LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn get(&self, id: &SpecId, now: DateTime<Utc>) -> Result<Option<SpecRecord>, Error> {
        sqlx::query_as::<_, SpecRow>(concat!(
            "SELECT ",
            columns!(),
            " FROM specs WHERE id = $1 AND (expire_time IS NULL OR expire_time > $2)"
        ))
        .bind(id.as_str())
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .map(SpecRecord::try_from)
        .transpose()
    }

    async fn get_spec(&self, id: &SpecId, now: DateTime<Utc>) -> Result<Option<ServedSpec>, Error> {
        sqlx::query_as(
            "SELECT spec, expire_time FROM specs WHERE id = $1 AND (expire_time IS NULL OR expire_time > $2)",
        )
        .bind(id.as_str())
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)
    }

    async fn put(&self, cmd: PutCommand, now: DateTime<Utc>) -> Result<PutOutcome, Error> {
        for _ in 1..MAX_PUT_ATTEMPTS {
            if let Some(outcome) = self.try_put(cmd.clone(), now).await? {
                return Ok(outcome);
            }
        }
        let id = cmd.id.clone();
        self.try_put(cmd, now).await?.ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "put of spec {id:?} collided with concurrent creators {MAX_PUT_ATTEMPTS} times"
            ))
        })
    }

    async fn delete(&self, cmd: &DeleteCommand, now: DateTime<Utc>) -> Result<bool, Error> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let result = delete_in(&mut tx, cmd, now).await;
        end(tx, result).await
    }

    async fn list(&self, query: &ListQuery, now: DateTime<Utc>) -> Result<Vec<SpecRecord>, Error> {
        let mut sql = QueryBuilder::<Postgres>::new("SELECT ");
        sql.push(if query.include_spec {
            columns!()
        } else {
            columns_without_spec!()
        });
        sql.push(" FROM specs WHERE (expire_time IS NULL OR expire_time > ")
            .push_bind(now)
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
        if !query.labels.is_empty() {
            sql.push(" AND labels @> ")
                .push_bind(Json(&query.labels))
                .push("::jsonb");
        }
        sql.push(" ORDER BY id LIMIT ")
            .push_bind(i64::from(query.limit));
        sql.build_query_as::<SpecRow>()
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(SpecRecord::try_from)
            .collect()
    }

    async fn delete_expired(&self, now: DateTime<Utc>, batch_size: u32) -> Result<u64, Error> {
        // No notification: only rows already expired at `now` go, and every read cache entry
        // carries its record's expiry and stops answering at that moment by itself. A row that a
        // put revives is not deleted (see below), and that put notifies.
        //
        // SKIP LOCKED leaves rows that a put is rewriting to that put. The outer condition is
        // checked again on the row's latest version, so a row a put revived (a new record over
        // the expired one) after the inner query's snapshot is not deleted.
        let result = sqlx::query(
            "DELETE FROM specs WHERE expire_time <= $1 AND id IN ( \
                 SELECT id FROM specs WHERE expire_time <= $1 \
                 ORDER BY expire_time LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(now)
        .bind(i64::from(batch_size))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(result.rows_affected())
    }

    async fn count(&self, now: DateTime<Utc>) -> Result<u64, Error> {
        // All rows (an index-only scan of the primary key, a small fraction of the table) minus
        // the expired ones (from the expiry index), in one statement and so one snapshot. The
        // obvious `WHERE expire_time IS NULL OR expire_time > $1` reads every row of the table:
        // at a million specs, that scan from every replica's gauge task stalled GetImageSpec
        // reads for hundreds of milliseconds in the benchmark. Without parallel workers, too:
        // this is background work, and it should not take every core while it runs.
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("SET LOCAL max_parallel_workers_per_gather = 0")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let count: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM specs) \
                  - (SELECT count(*) FROM specs WHERE expire_time <= $1)",
        )
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        vec![PoolStats::of("main", &self.pool)]
    }
}

/// A row of `specs` as PostgreSQL returns it.
#[derive(sqlx::FromRow)]
struct SpecRow {
    id: String,
    spec: Option<Vec<u8>>,
    spec_digest: String,
    labels: Json<Labels>,
    generation: i64,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
    expire_time: Option<DateTime<Utc>>,
}

impl TryFrom<SpecRow> for SpecRecord {
    type Error = Error;

    fn try_from(row: SpecRow) -> Result<Self, Error> {
        let id = SpecId::parse(&row.id)
            .map_err(|reason| anyhow::anyhow!("stored id {:?} is invalid: {reason}", row.id))
            .map_err(Error::Internal)?;
        Ok(SpecRecord {
            id,
            spec: row.spec,
            spec_digest: row.spec_digest,
            labels: row.labels.0,
            generation: row.generation,
            create_time: row.create_time,
            update_time: row.update_time,
            expire_time: row.expire_time,
        })
    }
}

/// Locks and reads the row for `id`, expired or not. Without `with_spec` the record's `spec` is
/// `None`: a delete only needs the generation and expiry.
async fn select_for_update(
    tx: &mut Transaction<'static, Postgres>,
    id: &str,
    with_spec: bool,
) -> Result<Option<SpecRecord>, Error> {
    let sql = if with_spec {
        concat!(
            "SELECT ",
            columns!(),
            " FROM specs WHERE id = $1 FOR UPDATE"
        )
    } else {
        concat!(
            "SELECT ",
            columns_without_spec!(),
            " FROM specs WHERE id = $1 FOR UPDATE"
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

/// Announces on [`CHANGES_CHANNEL`] that the row of `id` changed, delivered when `tx` commits.
/// Ids are at most 200 characters, well under the 8000-byte payload limit.
async fn notify_changed(tx: &mut Transaction<'static, Postgres>, id: &str) -> Result<(), Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANGES_CHANNEL)
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Inserts a new row; `Ok(false)` when a concurrent creator inserted one with the same id first.
async fn insert(
    tx: &mut Transaction<'static, Postgres>,
    record: &SpecRecord,
) -> Result<bool, Error> {
    let result = sqlx::query(
        "INSERT INTO specs \
             (id, spec, spec_digest, labels, generation, create_time, update_time, expire_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(record.id.as_str())
    .bind(spec_bytes(record)?)
    .bind(&record.spec_digest)
    .bind(Json(&record.labels))
    .bind(record.generation)
    .bind(record.create_time)
    .bind(record.update_time)
    .bind(record.expire_time)
    .execute(&mut **tx)
    .await;
    match result {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(err)) if err.is_unique_violation() => Ok(false),
        Err(err) => Err(db_error(err)),
    }
}

/// Overwrites the row with `record`. The spec is written only when `with_spec`: rewriting an
/// unchanged spec would copy megabytes for a label change or a TTL refresh.
async fn update(
    tx: &mut Transaction<'static, Postgres>,
    record: &SpecRecord,
    with_spec: bool,
) -> Result<(), Error> {
    let query = if with_spec {
        sqlx::query(
            "UPDATE specs SET spec_digest = $2, labels = $3, generation = $4, create_time = $5, \
                 update_time = $6, expire_time = $7, spec = $8 \
             WHERE id = $1",
        )
    } else {
        sqlx::query(
            "UPDATE specs SET spec_digest = $2, labels = $3, generation = $4, create_time = $5, \
                 update_time = $6, expire_time = $7 \
             WHERE id = $1",
        )
    };
    let mut query = query
        .bind(record.id.as_str())
        .bind(&record.spec_digest)
        .bind(Json(&record.labels))
        .bind(record.generation)
        .bind(record.create_time)
        .bind(record.update_time)
        .bind(record.expire_time);
    if with_spec {
        query = query.bind(spec_bytes(record)?);
    }
    query.execute(&mut **tx).await.map_err(db_error)?;
    Ok(())
}

/// The spec of a record about to be written; every record a put decides on carries one.
fn spec_bytes(record: &SpecRecord) -> Result<&[u8], Error> {
    record
        .spec
        .as_deref()
        .context("a record to be written has no spec")
        .map_err(Error::Internal)
}
