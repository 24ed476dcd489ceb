//! The SQL both drivers run alike: reading a live record, carrying out a put or delete decision,
//! and the ListSpecs query. What differs between PostgreSQL and SQLite (how times and labels are
//! stored, how a written row is locked, how labels are matched, placeholders) is a [`Dialect`],
//! implemented by each driver; the statements are built with sqlx's `QueryBuilder`, which writes
//! each dialect's placeholders.
//!
//! GetImageSpec's read (`Store::get_spec`) is not here: it is a fixed statement per driver, with
//! nothing built per call.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, QueryBuilder, Type};

use super::db_error;
use crate::domain::{
    DeleteCommand, DeleteDecision, Error, Labels, ListQuery, PutCommand, PutDecision, PutOutcome,
    SpecId, SpecRecord, decide_delete, decide_put,
};

/// The columns after the spec, in the order of a [`Dialect::SpecRow`]'s fields.
const COLUMNS_AFTER_SPEC: &str = "spec_digest, labels, generation, create_time, update_time, \
     expire_time, created_by, updated_by";

/// What a delete did.
pub(super) struct DeleteOutcome {
    /// Whether a live record was deleted: DeleteSpec's answer.
    pub deleted: bool,
    /// Whether a row went, live or expired: whether the change is to be announced.
    pub changed: bool,
}

/// One SQL dialect: the parts that differ, and, written once over them, the statements of the
/// [`super::Store`] methods that both drivers run alike.
///
/// The shared statements are provided methods, so that the bounds sqlx needs are stated once,
/// here. They return `impl Future + Send` rather than being `async fn`: through sqlx's
/// higher-ranked executor bounds the compiler cannot prove an `async fn`'s future `Send` at the
/// drivers' call sites (rust-lang/rust#100013).
pub(super) trait Dialect: Database
where
    for<'a> &'a str: Encode<'a, Self> + Type<Self>,
    for<'a> &'a [u8]: Encode<'a, Self> + Type<Self>,
    i64: for<'a> Encode<'a, Self> + Type<Self>,
    for<'c> &'c mut Self::Connection: Executor<'c, Database = Self>,
    Self::Arguments: Default + IntoArguments<Self>,
{
    /// A row of `specs` as this database returns it.
    type SpecRow: for<'r> FromRow<'r, Self::Row> + Send + Unpin + TryInto<SpecRecord, Error = Error>;

    /// The `spec` column when it is left out (it can be megabytes): a NULL of its type.
    const NULL_SPEC: &'static str;

    /// What follows the `SELECT` of the row a write is about to decide on, so that no other
    /// writer changes it before the transaction ends; empty when the transaction holds the
    /// database's write lock already.
    const LOCK_ROW: &'static str;

    /// What follows the sweeper's choice of expired rows to delete: what keeps it off rows that
    /// a put is rewriting; empty when the statement holds the database's write lock.
    const SKIP_LOCKED: &'static str;

    /// How many rows a statement changed (sqlx has no trait for it).
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// Binds `time` as this database stores times.
    fn push_time(sql: &mut QueryBuilder<Self>, time: Option<DateTime<Utc>>);

    /// Binds `labels` as this database stores them.
    fn push_labels(sql: &mut QueryBuilder<Self>, labels: &Labels) -> Result<(), Error>;

    /// Appends the condition that a row carries every one of `labels` (not empty).
    fn push_labels_filter(sql: &mut QueryBuilder<Self>, labels: &Labels);

    /// Checks that the database answers and the schema is in place: reading the table, not just
    /// `SELECT 1`, so that a database without the schema is not reported healthy.
    fn ping<'c>(
        executor: impl Executor<'c, Database = Self> + 'c,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'c {
        let query = sqlx::query::<Self>("SELECT 1 FROM specs LIMIT 1");
        async move {
            query.fetch_optional(executor).await.map_err(db_error)?;
            Ok(())
        }
    }

    /// The live record of `id`, with its spec. The statement is built before the future, which
    /// so borrows nothing but the executor.
    fn get<'c>(
        executor: impl Executor<'c, Database = Self> + 'c,
        id: &SpecId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<SpecRecord>, Error>> + Send + 'c {
        let mut sql = Self::select(true);
        sql.push(" WHERE id = ")
            .push_bind(id.as_str())
            .push(" AND ");
        Self::push_live(&mut sql, now);
        async move { Self::fetch_record(executor, &mut sql).await }
    }

    /// Deletes at most `batch_size` records expired at `now`, the longest expired first; returns
    /// how many it deleted.
    fn delete_expired<'c>(
        executor: impl Executor<'c, Database = Self> + 'c,
        now: DateTime<Utc>,
        batch_size: u32,
    ) -> impl Future<Output = Result<u64, Error>> + Send + 'c {
        // The outer condition is checked again on each row's latest version: a row that a put
        // revived (a new record over the expired one) after the inner query read it stays.
        let mut sql = QueryBuilder::<Self>::new("DELETE FROM specs WHERE expire_time <= ");
        Self::push_time(&mut sql, Some(now));
        sql.push(" AND id IN (SELECT id FROM specs WHERE expire_time <= ");
        Self::push_time(&mut sql, Some(now));
        sql.push(" ORDER BY expire_time LIMIT ")
            .push_bind(i64::from(batch_size))
            .push(Self::SKIP_LOCKED)
            .push(")");
        async move {
            let result = sql.build().execute(executor).await.map_err(db_error)?;
            Ok(Self::rows_affected(&result))
        }
    }

    /// Live records matching `query`, in id order.
    fn list<'a, 'c: 'a>(
        executor: impl Executor<'c, Database = Self> + 'a,
        query: &'a ListQuery,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<SpecRecord>, Error>> + Send + 'a {
        async move {
            let mut sql = Self::select(query.include_spec);
            sql.push(" WHERE ");
            Self::push_live(&mut sql, now);
            if let Some(after_id) = &query.after_id {
                sql.push(" AND id > ").push_bind(after_id.as_str());
            }
            if !query.id_prefix.is_empty() {
                sql.push(" AND id >= ").push_bind(query.id_prefix.as_str());
                if let Some(upper) = prefix_upper_bound(&query.id_prefix) {
                    sql.push(" AND id < ").push_bind(upper.as_str());
                }
            }
            if !query.labels.is_empty() {
                sql.push(" AND ");
                Self::push_labels_filter(&mut sql, &query.labels);
            }
            sql.push(" ORDER BY id LIMIT ")
                .push_bind(i64::from(query.limit));
            sql.build_query_as::<Self::SpecRow>()
                .fetch_all(executor)
                .await
                .map_err(db_error)?
                .into_iter()
                .map(TryInto::try_into)
                .collect()
        }
    }

    /// Carries out a put inside the caller's transaction on `conn`; `Ok(None)` when a concurrent
    /// creator inserted the row first (the caller rolls back and tries again).
    fn put_in<'a>(
        conn: &'a mut Self::Connection,
        cmd: PutCommand,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<PutOutcome>, Error>> + Send + 'a {
        async move {
            let stored = Self::select_for_write(conn, cmd.id.as_str(), true).await?;
            let (record, changed) = match decide_put(stored.as_ref(), cmd, now)? {
                PutDecision::Create(record) => {
                    if stored.is_some() {
                        // The stored row has expired: the new record replaces it entirely.
                        Self::update(conn, &record, true).await?;
                    } else if !Self::insert(conn, &record).await? {
                        return Ok(None);
                    }
                    (record, true)
                }
                PutDecision::Update(record) => {
                    let spec_changed = stored
                        .as_ref()
                        .is_none_or(|stored| stored.spec_digest != record.spec_digest);
                    Self::update(conn, &record, spec_changed).await?;
                    (record, true)
                }
                PutDecision::Unchanged(record) => (record, false),
            };
            Ok(Some(PutOutcome { record, changed }))
        }
    }

    /// Carries out a delete inside the caller's transaction on `conn`.
    fn delete_in<'a>(
        conn: &'a mut Self::Connection,
        cmd: &'a DeleteCommand,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<DeleteOutcome, Error>> + Send + 'a {
        async move {
            let stored = Self::select_for_write(conn, cmd.id.as_str(), false).await?;
            let deleted = match decide_delete(stored.as_ref(), cmd, now)? {
                DeleteDecision::Delete => true,
                DeleteDecision::NothingToDelete => false,
            };
            // An expired row goes too: it is as good as deleted already.
            if stored.is_some() {
                let mut sql = QueryBuilder::<Self>::new("DELETE FROM specs WHERE id = ");
                sql.push_bind(cmd.id.as_str());
                sql.build().execute(conn).await.map_err(db_error)?;
            }
            Ok(DeleteOutcome {
                deleted,
                changed: stored.is_some(),
            })
        }
    }

    /// `SELECT <the columns> FROM specs`, the spec read only `with_spec`.
    fn select(with_spec: bool) -> QueryBuilder<Self> {
        let mut sql = QueryBuilder::new("SELECT id, ");
        sql.push(if with_spec { "spec" } else { Self::NULL_SPEC })
            .push(", ")
            .push(COLUMNS_AFTER_SPEC)
            .push(" FROM specs");
        sql
    }

    /// Appends the condition that a row is live at `now`.
    fn push_live(sql: &mut QueryBuilder<Self>, now: DateTime<Utc>) {
        sql.push("(expire_time IS NULL OR expire_time > ");
        Self::push_time(sql, Some(now));
        sql.push(")");
    }

    /// The one record `sql` selects, if any.
    fn fetch_record<'a, 'c: 'a>(
        executor: impl Executor<'c, Database = Self> + 'a,
        sql: &'a mut QueryBuilder<Self>,
    ) -> impl Future<Output = Result<Option<SpecRecord>, Error>> + Send + 'a {
        async move {
            sql.build_query_as::<Self::SpecRow>()
                .fetch_optional(executor)
                .await
                .map_err(db_error)?
                .map(TryInto::try_into)
                .transpose()
        }
    }

    /// Reads (and locks, see [`Dialect::LOCK_ROW`]) the row for `id`, expired or not. Without
    /// `with_spec` the record's `spec` is `None`: a delete only needs the generation and expiry.
    fn select_for_write<'a>(
        conn: &'a mut Self::Connection,
        id: &'a str,
        with_spec: bool,
    ) -> impl Future<Output = Result<Option<SpecRecord>, Error>> + Send + 'a {
        async move {
            let mut sql = Self::select(with_spec);
            sql.push(" WHERE id = ").push_bind(id).push(Self::LOCK_ROW);
            Self::fetch_record(conn, &mut sql).await
        }
    }

    /// Appends `record`'s values of the columns after the spec, comma-separated, in the order of
    /// [`COLUMNS_AFTER_SPEC`]: bare for an INSERT's `VALUES`, or with `assign` each as
    /// `column = value` for an UPDATE's `SET`.
    fn push_values_after_spec(
        sql: &mut QueryBuilder<Self>,
        record: &SpecRecord,
        assign: bool,
    ) -> Result<(), Error> {
        let mut separator = "";
        let mut next = |sql: &mut QueryBuilder<Self>, column: &str| {
            sql.push(separator);
            separator = ", ";
            if assign {
                sql.push(column).push(" = ");
            }
        };
        next(sql, "spec_digest");
        sql.push_bind(record.spec_digest.as_str());
        next(sql, "labels");
        Self::push_labels(sql, &record.labels)?;
        next(sql, "generation");
        sql.push_bind(record.generation);
        next(sql, "create_time");
        Self::push_time(sql, Some(record.create_time));
        next(sql, "update_time");
        Self::push_time(sql, Some(record.update_time));
        next(sql, "expire_time");
        Self::push_time(sql, record.expire_time);
        next(sql, "created_by");
        sql.push_bind(record.created_by.as_str());
        next(sql, "updated_by");
        sql.push_bind(record.updated_by.as_str());
        Ok(())
    }

    /// Inserts a new row; `Ok(false)` when a concurrent creator inserted one with the same id
    /// first.
    fn insert<'a>(
        conn: &'a mut Self::Connection,
        record: &'a SpecRecord,
    ) -> impl Future<Output = Result<bool, Error>> + Send + 'a {
        async move {
            let mut sql = QueryBuilder::<Self>::new("INSERT INTO specs (id, spec, ");
            sql.push(COLUMNS_AFTER_SPEC).push(") VALUES (");
            sql.push_bind(record.id.as_str())
                .push(", ")
                .push_bind(spec_bytes(record)?)
                .push(", ");
            Self::push_values_after_spec(&mut sql, record, false)?;
            sql.push(")");
            match sql.build().execute(conn).await {
                Ok(_) => Ok(true),
                Err(sqlx::Error::Database(err)) if err.is_unique_violation() => Ok(false),
                Err(err) => Err(db_error(err)),
            }
        }
    }

    /// Overwrites the row with `record`. The spec is written only when `with_spec`: rewriting an
    /// unchanged spec would copy megabytes for a label change or a TTL refresh.
    fn update<'a>(
        conn: &'a mut Self::Connection,
        record: &'a SpecRecord,
        with_spec: bool,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        async move {
            let mut sql = QueryBuilder::<Self>::new("UPDATE specs SET ");
            Self::push_values_after_spec(&mut sql, record, true)?;
            if with_spec {
                sql.push(", spec = ").push_bind(spec_bytes(record)?);
            }
            sql.push(" WHERE id = ").push_bind(record.id.as_str());
            sql.build().execute(conn).await.map_err(db_error)?;
            Ok(())
        }
    }
}

/// The stored id of a row, which must be a valid id.
pub(super) fn stored_id(id: &str) -> Result<SpecId, Error> {
    SpecId::parse(id)
        .map_err(|reason| anyhow::anyhow!("stored id {id:?} is invalid: {reason}"))
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

/// The smallest string greater than every string that starts with `prefix`, in byte order; `None`
/// when there is none (only for an empty prefix or one made of `char::MAX`).
///
/// A prefix filter then becomes the range `prefix <= id < upper`, which both databases answer
/// from the primary key index, with no LIKE pattern to escape. UTF-8 byte order is code point
/// order, so incrementing the last code point that can be incremented gives the bound.
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_upper_bound;

    #[test]
    fn prefix_upper_bound_increments_the_last_character() {
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("ws").as_deref(), Some("wt"));
        assert_eq!(prefix_upper_bound("ws-").as_deref(), Some("ws."));
        assert_eq!(prefix_upper_bound("ws.").as_deref(), Some("ws/"));
        assert_eq!(prefix_upper_bound("ws_").as_deref(), Some("ws`"));
        assert_eq!(prefix_upper_bound("z").as_deref(), Some("{"));
        assert_eq!(
            prefix_upper_bound("a\u{d7ff}").as_deref(),
            Some("a\u{e000}")
        );
        assert_eq!(prefix_upper_bound("a\u{10ffff}").as_deref(), Some("b"));
    }
}
