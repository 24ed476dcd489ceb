//! The PostgreSQL driver: for several replicas sharing one database.
//!
//! A put or delete locks the row with `SELECT ... FOR UPDATE`, so concurrent writers of one id
//! queue behind each other and each decides on the row the previous one committed. Creators of
//! an id that has no row yet have nothing to lock: all but one of them hit the primary key, roll
//! back and start again, and then find the winner's row.
//!
//! Every committed change is announced on [`CHANGES_CHANNEL`] from its own transaction, and
//! [`listen`] hears the announcements of every replica.

mod listen;

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Transaction};

use super::sql::{Dialect, stored_id};
use super::{
    Backend, ChangeSubscriber, PoolStats, ServedSpec, SpecCounts, Store, db_error, migrate_error,
};
use crate::config::DatabaseSettings;
use crate::domain::{
    DeleteCommand, Error, Labels, ListQuery, PutCommand, PutOutcome, SpecId, SpecRecord,
};

/// The channel on which every committed write or delete of a spec is announced, with the spec's
/// id as the payload, so that each replica can drop it from its read cache. PostgreSQL delivers
/// a notification only when (and if) its transaction commits, so the announcement can never
/// precede the change or announce one that was rolled back.
const CHANGES_CHANNEL: &str = "spec_provider_spec_changes";

/// How many times a put runs its transaction when concurrent creators of the same id collide.
/// A collision means another creator committed the row, which the next attempt then locks and
/// reads, so a second collision needs the row to be deleted in between: a handful is plenty.
const MAX_PUT_ATTEMPTS: u32 = 5;

/// Specs stored in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The pool's connection options without `statement_timeout`: a migration (an index built
    /// on a large table, say) may rightly take longer than any request.
    migrate_options: PgConnectOptions,
    /// The options of the connection that listens for changes (see [`listen`]).
    listen_options: PgConnectOptions,
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
        let listen_options = options.clone().application_name(listen::APPLICATION_NAME);
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
            listen_options,
        })
    }

    /// One attempt at a put; `Ok(None)` when a concurrent creator inserted the row first.
    async fn try_put(
        &self,
        cmd: PutCommand,
        now: DateTime<Utc>,
    ) -> Result<Option<PutOutcome>, Error> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let result = async {
            let outcome = Postgres::put_in(&mut tx, cmd, now).await?;
            if let Some(outcome) = outcome.as_ref().filter(|outcome| outcome.changed) {
                notify_changed(&mut tx, outcome.record.id.as_str()).await?;
            }
            Ok(outcome)
        }
        .await;
        end(tx, result).await
    }
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
        Backend::Postgres.name()
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
        Postgres::ping(&self.pool).await
    }

    async fn get(&self, id: &SpecId, now: DateTime<Utc>) -> Result<Option<SpecRecord>, Error> {
        Postgres::get(&self.pool, id, now).await
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
        let result = async {
            let outcome = Postgres::delete_in(&mut tx, cmd, now).await?;
            if outcome.changed {
                notify_changed(&mut tx, cmd.id.as_str()).await?;
            }
            Ok(outcome.deleted)
        }
        .await;
        end(tx, result).await
    }

    async fn list(&self, query: &ListQuery, now: DateTime<Utc>) -> Result<Vec<SpecRecord>, Error> {
        Postgres::list(&self.pool, query, now).await
    }

    async fn delete_expired(&self, now: DateTime<Utc>, batch_size: u32) -> Result<u64, Error> {
        // No notification: only rows already expired at `now` go, and every read cache entry
        // carries its record's expiry and stops answering at that moment by itself. A row that a
        // put revives is not deleted, and that put notifies.
        Postgres::delete_expired(&self.pool, now, batch_size).await
    }

    async fn count(&self, now: DateTime<Utc>) -> Result<SpecCounts, Error> {
        // All rows (an index-only scan of the primary key, a small fraction of the table) and
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
        let (all, expired): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM specs), \
                    (SELECT count(*) FROM specs WHERE expire_time <= $1)",
        )
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(SpecCounts::of(all, expired))
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        vec![PoolStats::of("main", &self.pool)]
    }

    async fn watch_changes(&self, subscriber: Arc<dyn ChangeSubscriber>) {
        listen::watch(
            self.listen_options.clone(),
            self.pool.options().get_acquire_timeout(),
            subscriber.as_ref(),
        )
        .await;
    }
}

impl Dialect for Postgres {
    type SpecRow = SpecRow;
    // Typed: an untyped NULL would not decode as the row's `Option<Vec<u8>>`.
    const NULL_SPEC: &'static str = "NULL::bytea AS spec";
    // Concurrent writers of one id queue behind the row's lock (see the module documentation).
    const LOCK_ROW: &'static str = " FOR UPDATE";
    // A row a put is rewriting is left to that put; the next sweep finds it if still expired.
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn push_time(sql: &mut QueryBuilder<Self>, time: Option<DateTime<Utc>>) {
        sql.push_bind(time);
    }

    fn push_labels(sql: &mut QueryBuilder<Self>, labels: &Labels) -> Result<(), Error> {
        sql.push_bind(Json(labels));
        Ok(())
    }

    fn push_labels_filter(sql: &mut QueryBuilder<Self>, labels: &Labels) {
        sql.push("labels @> ")
            .push_bind(Json(labels))
            .push("::jsonb");
    }
}

/// A row of `specs` as PostgreSQL returns it.
#[derive(sqlx::FromRow)]
pub(super) struct SpecRow {
    id: String,
    spec: Option<Vec<u8>>,
    spec_digest: String,
    labels: Json<Labels>,
    generation: i64,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
    expire_time: Option<DateTime<Utc>>,
    created_by: String,
    updated_by: String,
}

impl TryFrom<SpecRow> for SpecRecord {
    type Error = Error;

    fn try_from(row: SpecRow) -> Result<Self, Error> {
        Ok(SpecRecord {
            id: stored_id(&row.id)?,
            spec: row.spec,
            spec_digest: row.spec_digest,
            labels: row.labels.0,
            generation: row.generation,
            create_time: row.create_time,
            update_time: row.update_time,
            expire_time: row.expire_time,
            created_by: row.created_by,
            updated_by: row.updated_by,
        })
    }
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
