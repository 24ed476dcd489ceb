//! The store conformance suite, written once and run against every backend.
//!
//! Each case is an `async fn(Arc<dyn Store>)`; `on_both_backends!(store; ...)` turns every case
//! into one test per backend (`store::sqlite::<case>`, `store::postgres::<case>`), each on a
//! database of its own.
//! Every call passes an explicit `now`, so that nothing depends on the clock or on timing.

use std::sync::Arc;

use chrono::Duration;
use prost::Message;
use spec_provider::domain::validate::{ValidationRules, validate_spec};
use spec_provider::domain::{
    Caller, DeleteCommand, Error, Labels, ListQuery, PutCommand, SpecId, SpecRecord, ValidatedSpec,
    micros_now,
};
use spec_provider::proto::registryfacade::content_layer::Spec as LayerSpec;
use spec_provider::proto::registryfacade::{
    ContentLayer, DirectContentLayer, ImageSpec, RemoteContentLayer,
};
use spec_provider::store::{ServedSpec, Store};

on_both_backends!(
    store;
    the_store_answers_pings_and_migrating_again_changes_nothing,
    a_new_spec_is_created_at_generation_1,
    each_record_names_who_created_it_and_who_last_changed_it,
    repeating_a_put_changes_nothing,
    the_same_spec_with_new_labels_bumps_the_generation_and_replaces_the_labels,
    the_same_spec_with_new_labels_and_a_stale_generation_is_aborted,
    the_same_spec_with_a_ttl_moves_expire_time_and_keeps_the_generation,
    put_of_a_different_spec_without_expected_generation_is_already_exists,
    put_with_expected_generation_0_on_an_existing_spec_is_already_exists,
    put_with_the_stored_generation_replaces_the_spec,
    put_with_a_stale_generation_is_aborted,
    put_with_a_generation_on_an_absent_spec_is_not_found,
    expired_specs_are_invisible_to_every_read,
    a_put_over_an_expired_spec_creates_generation_1_anew,
    delete_removes_the_spec,
    delete_of_an_absent_spec_is_not_found_unless_missing_is_allowed,
    delete_of_an_expired_spec_is_not_found_and_removes_the_row,
    delete_with_a_stale_generation_is_aborted_and_keeps_the_spec,
    list_returns_ids_in_byte_order,
    list_pages_with_limit_and_after_id,
    list_filters_by_id_prefix,
    list_filters_by_labels_requiring_every_pair,
    list_without_spec_leaves_the_spec_out,
    delete_expired_deletes_only_expired_specs_in_batches,
    count_counts_only_live_specs,
    count_counts_expired_rows_until_they_are_swept,
    pool_stats_describe_each_pool,
    spec_bytes_round_trip_byte_for_byte,
    concurrent_replacements_with_the_same_generation_let_exactly_one_win,
    concurrent_creates_of_a_new_id_let_exactly_one_win,
    rejected_writes_leave_their_rows_unlocked,
);

/// Opening stores from URLs: what differs between the backends, so outside the suite.
mod opening {
    use std::time::Duration;

    use spec_provider::config::{DatabaseSettings, DatabaseUrl};
    use spec_provider::domain::{Error, micros_now};
    use sqlx::{Connection, SqliteConnection};

    #[tokio::test]
    async fn postgres_opens_while_the_database_is_down_and_then_is_unavailable_not_hanging() {
        // Nothing listens on port 1: connections are refused at once.
        let settings = DatabaseSettings {
            url: DatabaseUrl::new("postgres://postgres@127.0.0.1:1/postgres"),
            acquire_timeout: Duration::from_millis(500),
            ..DatabaseSettings::default()
        };
        let store = spec_provider::store::open(&settings).await.unwrap();

        let pinged = tokio::time::timeout(Duration::from_secs(30), store.ping())
            .await
            .expect("ping gave up within the acquire timeout");
        assert!(matches!(pinged, Err(Error::Unavailable(_))), "{pinged:?}");
        let got = tokio::time::timeout(
            Duration::from_secs(30),
            store.get(&super::id("ws-1"), micros_now()),
        )
        .await
        .expect("get gave up within the acquire timeout");
        assert!(matches!(got, Err(Error::Unavailable(_))), "{got:?}");
    }

    #[tokio::test]
    async fn sqlite_opens_a_path_relative_to_the_working_directory() {
        let cwd = std::env::current_dir().unwrap();
        // Inside the target directory when it is below the working directory, as usual;
        // otherwise in the working directory itself.
        let dir = match tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")) {
            Ok(dir) if dir.path().starts_with(&cwd) => dir,
            _ => tempfile::tempdir_in(&cwd).unwrap(),
        };
        let file = dir.path().join("specs.db");
        let relative = file.strip_prefix(&cwd).unwrap();
        assert!(relative.is_relative());
        let settings = DatabaseSettings {
            url: DatabaseUrl::new(format!("sqlite://{}", relative.to_str().unwrap())),
            ..DatabaseSettings::default()
        };

        let store = spec_provider::store::open(&settings).await.unwrap();
        store.migrate().await.unwrap();
        store
            .put(super::put("ws-1", &super::spec("v1")), micros_now())
            .await
            .unwrap();

        assert!(file.is_file(), "{} was not created", file.display());
    }

    #[tokio::test]
    async fn sqlite_keeps_its_file_in_write_ahead_log_mode() {
        let db = crate::db::TestDb::new(crate::db::Backend::Sqlite).await;
        let store = db.store().await;
        store
            .put(super::put("ws-1", &super::spec("v1")), micros_now())
            .await
            .unwrap();

        let mut conn = SqliteConnection::connect(db.settings.url.expose())
            .await
            .unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }

    /// `.cargo/config.toml` builds SQLite with a page cache per connection (one connection
    /// emptying its cache after another's commit does not hold up the others) and without
    /// counting memory use behind a process-wide mutex.
    #[tokio::test]
    async fn sqlite_is_built_with_a_page_cache_per_connection() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        // The options libsqlite3-sys sets itself are still there.
        assert!(options.iter().any(|o| o == "THREADSAFE=1"), "{options:?}");
    }
}

/// Upgrading a database that holds records from before `created_by` / `updated_by`.
mod upgrade {
    use spec_provider::domain::{Caller, PutCommand, micros_now};
    use sqlx::migrate::{Migrate, Migrator};
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{Database, Encode, Executor, IntoArguments, PgPool, Pool, SqlitePool, Type};

    use crate::db::{Backend, TestDb};

    on_both_backends!(records_from_before_authors_were_kept_say_unknown_until_changed);

    /// A migrator with only the first of `backend`'s migrations: the schema before authors.
    async fn first_migration(backend: Backend) -> (tempfile::TempDir, Migrator) {
        let name = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            format!(
                "{}/migrations/{name}/0001_specs.sql",
                env!("CARGO_MANIFEST_DIR")
            ),
            dir.path().join("0001_specs.sql"),
        )
        .unwrap();
        let migrator = Migrator::new(dir.path()).await.unwrap();
        (dir, migrator)
    }

    /// Migrates `pool`'s database with `migrator`, then runs `insert`, which writes a record of
    /// a spec, bound as its bytes and digest.
    async fn write_old_record<DB>(pool: Pool<DB>, migrator: &Migrator, insert: &'static str)
    where
        DB: Database,
        DB::Connection: Migrate,
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
        for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
        for<'q> &'q str: Encode<'q, DB> + Type<DB>,
        DB::Arguments: IntoArguments<DB>,
    {
        migrator.run(&pool).await.unwrap();
        let spec = super::validated(&super::spec("v1"));
        sqlx::query::<DB>(insert)
            .bind(spec.bytes())
            .bind(spec.digest())
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }

    async fn records_from_before_authors_were_kept_say_unknown_until_changed(backend: Backend) {
        let db = TestDb::new(backend).await;
        let (_dir, migrator) = first_migration(backend).await;
        let url = db.settings.url.expose();
        // One record written by the previous version, at its schema.
        match backend {
            Backend::Sqlite => {
                let options: SqliteConnectOptions = url.parse().unwrap();
                let pool = SqlitePool::connect_with(options.create_if_missing(true));
                let insert = "INSERT INTO specs (id, spec, spec_digest, generation, create_time, \
                              update_time) VALUES ('old', ?1, ?2, 1, 0, 0)";
                write_old_record(pool.await.unwrap(), &migrator, insert).await;
            }
            Backend::Postgres => {
                let pool = PgPool::connect(url).await.unwrap();
                let insert = "INSERT INTO specs (id, spec, spec_digest, generation, create_time, \
                              update_time) VALUES ('old', $1, $2, 1, now(), now())";
                write_old_record(pool, &migrator, insert).await;
            }
        }

        // Migrating applies what is missing.
        let store = db.store().await;
        let now = micros_now();
        let old = store.get(&super::id("old"), now).await.unwrap().unwrap();
        assert_eq!(
            (old.created_by.as_str(), old.updated_by.as_str()),
            ("unknown", "unknown")
        );

        let relabelled = PutCommand {
            labels: super::labels(&[("team", "ide")]),
            caller: Caller::token(b"token-a"),
            ..super::put("old", &super::spec("v1"))
        };
        let changed = store.put(relabelled, now).await.unwrap().record;
        assert_eq!(changed.created_by, "unknown");
        assert_eq!(changed.updated_by, Caller::token(b"token-a").as_str());
    }
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

async fn the_store_answers_pings_and_migrating_again_changes_nothing(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    let now = micros_now();
    store.put(put("kept", &spec("v1")), now).await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    assert!(store.get(&id("kept"), now).await.unwrap().is_some());
}

async fn a_new_spec_is_created_at_generation_1(store: Arc<dyn Store>) {
    let now = micros_now();
    let cmd = PutCommand {
        labels: labels(&[("team", "ide"), ("tier", "free")]),
        ..put("ws-1", &spec("v1"))
    };
    let expected_bytes = cmd.spec.bytes().to_vec();
    let expected_digest = cmd.spec.digest().to_owned();

    let outcome = store.put(cmd, now).await.unwrap();

    assert!(outcome.changed);
    let expected = SpecRecord {
        id: id("ws-1"),
        spec: Some(expected_bytes.clone()),
        spec_digest: expected_digest,
        labels: labels(&[("team", "ide"), ("tier", "free")]),
        generation: 1,
        create_time: now,
        update_time: now,
        expire_time: None,
        created_by: format!("cert:{WRITER}"),
        updated_by: format!("cert:{WRITER}"),
    };
    assert_eq!(outcome.record, expected);
    assert_eq!(store.get(&id("ws-1"), now).await.unwrap(), Some(expected));
    assert_eq!(
        store.get_spec(&id("ws-1"), now).await.unwrap(),
        Some(ServedSpec {
            spec: expected_bytes,
            expire_time: None,
        })
    );
}

async fn each_record_names_who_created_it_and_who_last_changed_it(store: Arc<dyn Store>) {
    let now = micros_now();
    let read = async |at| {
        let record = store.get(&id("ws-1"), at).await.unwrap().unwrap();
        let listed = store.list(&list_all(), at).await.unwrap();
        assert_eq!(listed, std::slice::from_ref(&record));
        (record.created_by, record.updated_by)
    };
    let names = |created: &str, updated: &str| (created.to_owned(), updated.to_owned());
    let token_a = Caller::token(b"token-a").to_string();
    let token_b = Caller::token(b"token-b").to_string();

    let created = store
        .put(by_token("token-a", put("ws-1", &spec("v1"))), now)
        .await
        .unwrap();
    assert_eq!(created.record.created_by, token_a);
    assert_eq!(read(now).await, names(&token_a, &token_a));

    // The same put again changes nothing, so it names no one new.
    let repeated = store
        .put(by_token("token-b", put("ws-1", &spec("v1"))), now + secs(1))
        .await
        .unwrap();
    assert!(!repeated.changed);
    assert_eq!(read(now + secs(1)).await, names(&token_a, &token_a));

    // A change of labels, then of spec, then of expiry: each names its caller.
    let relabelled = PutCommand {
        labels: labels(&[("team", "ide")]),
        ..by_token("token-b", put("ws-1", &spec("v1")))
    };
    store.put(relabelled, now + secs(2)).await.unwrap();
    assert_eq!(read(now + secs(2)).await, names(&token_a, &token_b));
    let replaced = PutCommand {
        labels: labels(&[("team", "ide")]),
        expected_generation: Some(2),
        ..put("ws-1", &spec("v2"))
    };
    store.put(replaced, now + secs(3)).await.unwrap();
    let writer = format!("cert:{WRITER}");
    assert_eq!(read(now + secs(3)).await, names(&token_a, &writer));
    let leased = PutCommand {
        labels: labels(&[("team", "ide")]),
        ttl: Some(secs(10)),
        ..by_token("token-b", put("ws-1", &spec("v2")))
    };
    store.put(leased, now + secs(4)).await.unwrap();
    assert_eq!(read(now + secs(4)).await, names(&token_a, &token_b));

    // A refused write names no one.
    let stale = PutCommand {
        expected_generation: Some(1),
        ..put("ws-1", &spec("v3"))
    };
    store.put(stale, now + secs(5)).await.unwrap_err();
    assert_eq!(read(now + secs(5)).await, names(&token_a, &token_b));

    // A put over the expired record creates a new one, with a new creator.
    let after_expiry = now + secs(20);
    store
        .put(put("ws-1", &spec("v1")), after_expiry)
        .await
        .unwrap();
    assert_eq!(read(after_expiry).await, names(&writer, &writer));
}

async fn repeating_a_put_changes_nothing(store: Arc<dyn Store>) {
    let now = micros_now();
    let cmd = PutCommand {
        labels: labels(&[("team", "ide")]),
        ..put("ws-1", &spec("v1"))
    };
    let first = store.put(cmd.clone(), now).await.unwrap();

    let again = store.put(cmd, now + secs(10)).await.unwrap();

    assert!(!again.changed);
    assert_eq!(again.record, first.record);
    assert_eq!(again.record.generation, 1);
    assert_eq!(again.record.update_time, now);
    assert_eq!(
        store.get(&id("ws-1"), now + secs(10)).await.unwrap(),
        Some(first.record)
    );
}

async fn the_same_spec_with_new_labels_bumps_the_generation_and_replaces_the_labels(
    store: Arc<dyn Store>,
) {
    let now = micros_now();
    let later = now + secs(10);
    store
        .put(
            PutCommand {
                labels: labels(&[("a", "1"), ("b", "2")]),
                ..put("ws-1", &spec("v1"))
            },
            now,
        )
        .await
        .unwrap();

    let outcome = store
        .put(
            PutCommand {
                labels: labels(&[("b", "3"), ("c", "4")]),
                ..put("ws-1", &spec("v1"))
            },
            later,
        )
        .await
        .unwrap();

    assert!(outcome.changed);
    assert_eq!(outcome.record.generation, 2);
    assert_eq!(outcome.record.labels, labels(&[("b", "3"), ("c", "4")]));
    assert_eq!(outcome.record.create_time, now);
    assert_eq!(outcome.record.update_time, later);
    assert_eq!(
        store.get(&id("ws-1"), later).await.unwrap(),
        Some(outcome.record)
    );
}

async fn the_same_spec_with_new_labels_and_a_stale_generation_is_aborted(store: Arc<dyn Store>) {
    let now = micros_now();
    store.put(put("ws-1", &spec("v1")), now).await.unwrap();
    store
        .put(
            PutCommand {
                labels: labels(&[("a", "1")]),
                ..put("ws-1", &spec("v1"))
            },
            now,
        )
        .await
        .unwrap();

    let err = store
        .put(
            PutCommand {
                labels: labels(&[("a", "2")]),
                expected_generation: Some(1),
                ..put("ws-1", &spec("v1"))
            },
            now + secs(1),
        )
        .await
        .unwrap_err();

    assert!(
        matches!(
            err,
            Error::Aborted {
                expected: 1,
                actual: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let stored = store.get(&id("ws-1"), now).await.unwrap().unwrap();
    assert_eq!(stored.labels, labels(&[("a", "1")]));
}

async fn the_same_spec_with_a_ttl_moves_expire_time_and_keeps_the_generation(
    store: Arc<dyn Store>,
) {
    let now = micros_now();
    let created = store.put(put("ws-1", &spec("v1")), now).await.unwrap();
    assert_eq!(created.record.expire_time, None);

    let later = now + secs(30);
    let refreshed = store
        .put(
            PutCommand {
                ttl: Some(Duration::hours(1)),
                ..put("ws-1", &spec("v1"))
            },
            later,
        )
        .await
        .unwrap();
    assert_eq!(
        refreshed.record.expire_time,
        Some(later + Duration::hours(1))
    );
    assert_eq!(refreshed.record.generation, 1);

    let even_later = later + Duration::minutes(50);
    let refreshed_again = store
        .put(
            PutCommand {
                ttl: Some(Duration::hours(1)),
                ..put("ws-1", &spec("v1"))
            },
            even_later,
        )
        .await
        .unwrap();
    assert_eq!(
        refreshed_again.record.expire_time,
        Some(even_later + Duration::hours(1))
    );
    assert_eq!(refreshed_again.record.generation, 1);
    assert_eq!(
        store.get(&id("ws-1"), even_later).await.unwrap(),
        Some(refreshed_again.record.clone())
    );
    // Still there when the first TTL would have run out.
    assert!(
        store
            .get(&id("ws-1"), later + Duration::hours(1))
            .await
            .unwrap()
            .is_some()
    );
}

async fn put_of_a_different_spec_without_expected_generation_is_already_exists(
    store: Arc<dyn Store>,
) {
    let now = micros_now();
    store.put(put("ws-1", &spec("v1")), now).await.unwrap();
    let before = store.get(&id("ws-1"), now).await.unwrap();

    let err = store
        .put(put("ws-1", &spec("v2")), now + secs(1))
        .await
        .unwrap_err();

    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert_eq!(store.get(&id("ws-1"), now).await.unwrap(), before);
}

async fn put_with_expected_generation_0_on_an_existing_spec_is_already_exists(
    store: Arc<dyn Store>,
) {
    let now = micros_now();
    store.put(put("ws-1", &spec("v1")), now).await.unwrap();
    let before = store.get(&id("ws-1"), now).await.unwrap();

    let err = store
        .put(
            PutCommand {
                expected_generation: Some(0),
                ..put("ws-1", &spec("v2"))
            },
            now + secs(1),
        )
        .await
        .unwrap_err();

    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert_eq!(store.get(&id("ws-1"), now).await.unwrap(), before);
}

async fn put_with_the_stored_generation_replaces_the_spec(store: Arc<dyn Store>) {
    let now = micros_now();
    let later = now + secs(5);
    store.put(put("ws-1", &spec("v1")), now).await.unwrap();
    let replacement = validated(&full_spec());

    let outcome = store
        .put(
            PutCommand {
                spec: replacement.clone(),
                expected_generation: Some(1),
                ..put("ws-1", &spec("v1"))
            },
            later,
        )
        .await
        .unwrap();

    assert!(outcome.changed);
    assert_eq!(outcome.record.generation, 2);
    assert_eq!(outcome.record.create_time, now);
    assert_eq!(outcome.record.update_time, later);
    assert_eq!(outcome.record.spec_digest, replacement.digest());
    assert_eq!(
        store.get(&id("ws-1"), later).await.unwrap(),
        Some(outcome.record)
    );
    assert_eq!(
        store
            .get_spec(&id("ws-1"), later)
            .await
            .unwrap()
            .map(|served| served.spec)
            .as_deref(),
        Some(replacement.bytes())
    );
}

async fn put_with_a_stale_generation_is_aborted(store: Arc<dyn Store>) {
    let now = micros_now();
    store.put(put("ws-1", &spec("v1")), now).await.unwrap();
    store
        .put(
            PutCommand {
                expected_generation: Some(1),
                ..put("ws-1", &spec("v2"))
            },
            now,
        )
        .await
        .unwrap();
    let before = store.get(&id("ws-1"), now).await.unwrap();

    let err = store
        .put(
            PutCommand {
                expected_generation: Some(1),
                ..put("ws-1", &spec("v3"))
            },
            now + secs(1),
        )
        .await
        .unwrap_err();

    assert!(
        matches!(&err, Error::Aborted { id, expected: 1, actual: 2 } if id == "ws-1"),
        "{err:?}"
    );
    assert_eq!(store.get(&id("ws-1"), now).await.unwrap(), before);
}

async fn put_with_a_generation_on_an_absent_spec_is_not_found(store: Arc<dyn Store>) {
    let now = micros_now();

    let err = store
        .put(
            PutCommand {
                expected_generation: Some(3),
                ..put("ws-1", &spec("v1"))
            },
            now,
        )
        .await
        .unwrap_err();

    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(store.get(&id("ws-1"), now).await.unwrap(), None);
    let all = store.list(&list_all(), now).await.unwrap();
    assert!(all.is_empty(), "{all:?}");
}

async fn expired_specs_are_invisible_to_every_read(store: Arc<dyn Store>) {
    let now = micros_now();
    let expiry = now + Duration::minutes(1);
    store
        .put(
            PutCommand {
                ttl: Some(Duration::minutes(1)),
                labels: labels(&[("team", "ide")]),
                ..put("ws-1", &spec("v1"))
            },
            now,
        )
        .await
        .unwrap();

    let just_before = expiry - Duration::microseconds(1);
    assert!(store.get(&id("ws-1"), just_before).await.unwrap().is_some());
    assert_eq!(
        store
            .get_spec(&id("ws-1"), just_before)
            .await
            .unwrap()
            .map(|served| served.expire_time),
        Some(Some(expiry)),
        "GetImageSpec's read says when the record expires, for the read cache"
    );
    assert_eq!(store.list(&list_all(), just_before).await.unwrap().len(), 1);

    for at in [expiry, expiry + Duration::days(1)] {
        assert_eq!(store.get(&id("ws-1"), at).await.unwrap(), None);
        assert_eq!(store.get_spec(&id("ws-1"), at).await.unwrap(), None);
        let listed = store
            .list(
                &ListQuery {
                    labels: labels(&[("team", "ide")]),
                    id_prefix: "ws".into(),
                    ..list_all()
                },
                at,
            )
            .await
            .unwrap();
        assert!(listed.is_empty(), "{listed:?}");
        assert!(store.list(&list_all(), at).await.unwrap().is_empty());
        let err = store.delete(&delete("ws-1"), at).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    }
    // Nothing was deleted: before expiry it is still served.
    assert!(store.get(&id("ws-1"), now).await.unwrap().is_some());
}

async fn a_put_over_an_expired_spec_creates_generation_1_anew(store: Arc<dyn Store>) {
    let now = micros_now();
    store
        .put(
            PutCommand {
                ttl: Some(Duration::minutes(1)),
                labels: labels(&[("old", "yes")]),
                ..put("ws-1", &spec("v1"))
            },
            now,
        )
        .await
        .unwrap();
    store
        .put(
            PutCommand {
                expected_generation: Some(1),
                labels: labels(&[("old", "yes")]),
                ..put("ws-1", &spec("v2"))
            },
            now,
        )
        .await
        .unwrap();
    let after_expiry = now + Duration::hours(1);

    // The expired record's generation no longer exists.
    let err = store
        .put(
            PutCommand {
                expected_generation: Some(2),
                ..put("ws-1", &spec("v3"))
            },
            after_expiry,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");

    let new_spec = validated(&spec("v3"));
    let outcome = store
        .put(
            PutCommand {
                labels: labels(&[("new", "yes")]),
                ..put("ws-1", &spec("v3"))
            },
            after_expiry,
        )
        .await
        .unwrap();

    let expected = SpecRecord {
        id: id("ws-1"),
        spec: Some(new_spec.bytes().to_vec()),
        spec_digest: new_spec.digest().to_owned(),
        labels: labels(&[("new", "yes")]),
        generation: 1,
        create_time: after_expiry,
        update_time: after_expiry,
        expire_time: None,
        created_by: format!("cert:{WRITER}"),
        updated_by: format!("cert:{WRITER}"),
    };
    assert!(outcome.changed);
    assert_eq!(outcome.record, expected);
    assert_eq!(
        store.get(&id("ws-1"), after_expiry).await.unwrap(),
        Some(expected)
    );
    // The old record's labels are gone with it.
    let old = store
        .list(
            &ListQuery {
                labels: labels(&[("old", "yes")]),
                ..list_all()
            },
            after_expiry,
        )
        .await
        .unwrap();
    assert!(old.is_empty(), "{old:?}");
}

async fn delete_removes_the_spec(store: Arc<dyn Store>) {
    let now = micros_now();
    store.put(put("ws-1", &spec("v1")), now).await.unwrap();
    store.put(put("ws-2", &spec("v1")), now).await.unwrap();

    assert!(store.delete(&delete("ws-1"), now).await.unwrap());

    assert_eq!(store.get(&id("ws-1"), now).await.unwrap(), None);
    assert_eq!(store.get_spec(&id("ws-1"), now).await.unwrap(), None);
    assert_eq!(ids(&store.list(&list_all(), now).await.unwrap()), ["ws-2"]);
    let err = store.delete(&delete("ws-1"), now).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    // A deleted id can be created again, from generation 1.
    let again = store.put(put("ws-1", &spec("v2")), now).await.unwrap();
    assert_eq!(again.record.generation, 1);
}

async fn delete_of_an_absent_spec_is_not_found_unless_missing_is_allowed(store: Arc<dyn Store>) {
    let now = micros_now();

    let err = store.delete(&delete("ws-1"), now).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");

    let allowed = DeleteCommand {
        allow_missing: true,
        ..delete("ws-1")
    };
    assert!(!store.delete(&allowed, now).await.unwrap());
}

async fn delete_of_an_expired_spec_is_not_found_and_removes_the_row(store: Arc<dyn Store>) {
    let now = micros_now();
    store
        .put(
            PutCommand {
                ttl: Some(Duration::minutes(1)),
                ..put("ws-1", &spec("v1"))
            },
            now,
        )
        .await
        .unwrap();
    let after_expiry = now + Duration::hours(1);

    let allowed = DeleteCommand {
        allow_missing: true,
        ..delete("ws-1")
    };
    assert!(!store.delete(&allowed, after_expiry).await.unwrap());

    // The row went too: even at a time before its expiry, nothing is left to read or sweep.
    assert_eq!(store.get(&id("ws-1"), now).await.unwrap(), None);
    assert_eq!(store.delete_expired(after_expiry, 10).await.unwrap(), 0);
}

async fn delete_with_a_stale_generation_is_aborted_and_keeps_the_spec(store: Arc<dyn Store>) {
    let now = micros_now();
    store.put(put("ws-1", &spec("v1")), now).await.unwrap();
    store
        .put(
            PutCommand {
                expected_generation: Some(1),
                ..put("ws-1", &spec("v2"))
            },
            now,
        )
        .await
        .unwrap();
    let before = store.get(&id("ws-1"), now).await.unwrap();

    let stale = DeleteCommand {
        expected_generation: Some(1),
        ..delete("ws-1")
    };
    let err = store.delete(&stale, now).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Aborted {
                expected: 1,
                actual: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.get(&id("ws-1"), now).await.unwrap(), before);

    let current = DeleteCommand {
        expected_generation: Some(2),
        ..delete("ws-1")
    };
    assert!(store.delete(&current, now).await.unwrap());
    assert_eq!(store.get(&id("ws-1"), now).await.unwrap(), None);
}

async fn list_returns_ids_in_byte_order(store: Arc<dyn Store>) {
    let now = micros_now();
    // '-' < '.' < digits < '_' < letters in byte order; a locale-aware collation would differ.
    let stored = [
        "b", "a_b", "a0", "a.b", "a-b", "a", "9z", "0", "a-a-a", "ab",
    ];
    for raw in stored {
        store.put(put(raw, &spec("v1")), now).await.unwrap();
    }

    let listed = store.list(&list_all(), now).await.unwrap();

    assert_eq!(
        ids(&listed),
        [
            "0", "9z", "a", "a-a-a", "a-b", "a.b", "a0", "a_b", "ab", "b"
        ]
    );
}

async fn list_pages_with_limit_and_after_id(store: Arc<dyn Store>) {
    let now = micros_now();
    let all: Vec<String> = (0..8).map(|i| format!("ws-{i}")).collect();
    for raw in all.iter().rev() {
        store.put(put(raw, &spec("v1")), now).await.unwrap();
    }

    let mut seen = Vec::new();
    let mut after_id = None;
    let mut page_sizes = Vec::new();
    loop {
        let page = store
            .list(
                &ListQuery {
                    after_id: after_id.clone(),
                    limit: 3,
                    ..list_all()
                },
                now,
            )
            .await
            .unwrap();
        page_sizes.push(page.len());
        let Some(last) = page.last() else { break };
        after_id = Some(last.id.to_string());
        seen.extend(ids(&page));
    }

    assert_eq!(seen, all);
    assert_eq!(page_sizes, [3, 3, 2, 0]);
    // after_id need not be a stored id.
    let page = store
        .list(
            &ListQuery {
                after_id: Some("ws-35".into()),
                ..list_all()
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(ids(&page), ["ws-4", "ws-5", "ws-6", "ws-7"]);
}

async fn list_filters_by_id_prefix(store: Arc<dyn Store>) {
    let now = micros_now();
    let stored = [
        "w", "ws", "ws-1", "ws-2", "ws-a-b", "ws.1", "ws1", "ws_1", "wsa", "wt", "x",
    ];
    for raw in stored {
        store.put(put(raw, &spec("v1")), now).await.unwrap();
    }
    let with_prefix = |prefix: &str| ListQuery {
        id_prefix: prefix.to_owned(),
        ..list_all()
    };

    let cases: &[(&str, &[&str])] = &[
        ("ws-", &["ws-1", "ws-2", "ws-a-b"]),
        ("ws-a-", &["ws-a-b"]),
        ("ws.", &["ws.1"]),
        ("ws_", &["ws_1"]),
        (
            "ws",
            &["ws", "ws-1", "ws-2", "ws-a-b", "ws.1", "ws1", "ws_1", "wsa"],
        ),
        (
            "w",
            &[
                "w", "ws", "ws-1", "ws-2", "ws-a-b", "ws.1", "ws1", "ws_1", "wsa", "wt",
            ],
        ),
        ("ws-1", &["ws-1"]),
        ("ws-3", &[]),
        ("y", &[]),
        ("", &stored),
    ];
    for (prefix, expected) in cases {
        let listed = store.list(&with_prefix(prefix), now).await.unwrap();
        assert_eq!(ids(&listed), *expected, "prefix {prefix:?}");
    }

    let paged = store
        .list(
            &ListQuery {
                after_id: Some("ws-1".into()),
                limit: 2,
                ..with_prefix("ws")
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(ids(&paged), ["ws-2", "ws-a-b"]);
}

async fn list_filters_by_labels_requiring_every_pair(store: Arc<dyn Store>) {
    let now = micros_now();
    let tricky_key = r#"we"ird%_k\ey"#;
    let records: &[(&str, &[Pair])] = &[
        ("a", &[("team", "ide"), ("tier", "free")]),
        ("b", &[("team", "ide"), ("tier", "paid")]),
        ("c", &[("team", "web")]),
        ("d", &[]),
        ("e", &[(tricky_key, r#"50%_off "quoted" 'single'"#)]),
        ("f", &[(tricky_key, r#"50%Xoff "quoted" 'single'"#)]),
        ("g", &[("team", "ide%")]),
        ("h", &[("team", "1")]),
    ];
    for (raw, pairs) in records {
        store
            .put(
                PutCommand {
                    labels: labels(pairs),
                    ..put(raw, &spec("v1"))
                },
                now,
            )
            .await
            .unwrap();
    }
    let with_labels = |pairs: &[Pair]| ListQuery {
        labels: labels(pairs),
        ..list_all()
    };

    let cases: &[(&[Pair], &[&str])] = &[
        (&[("team", "ide")], &["a", "b"]),
        (&[("team", "ide"), ("tier", "paid")], &["b"]),
        (&[("team", "ide"), ("tier", "none")], &[]),
        (&[("team", "ide"), ("other", "free")], &[]),
        (&[("tier", "free")], &["a"]),
        (&[("team", "id")], &[]),
        (&[("team", "ide%")], &["g"]),
        (&[("team", "1")], &["h"]),
        (&[("TEAM", "ide")], &[]),
        (&[(tricky_key, r#"50%_off "quoted" 'single'"#)], &["e"]),
        (&[(tricky_key, "50%")], &[]),
        (&[], &["a", "b", "c", "d", "e", "f", "g", "h"]),
    ];
    for (pairs, expected) in cases {
        let listed = store.list(&with_labels(pairs), now).await.unwrap();
        assert_eq!(ids(&listed), *expected, "labels {pairs:?}");
    }
    let listed = store
        .list(&with_labels(&[("team", "ide")]), now)
        .await
        .unwrap();
    assert_eq!(
        listed[0].labels,
        labels(&[("team", "ide"), ("tier", "free")])
    );
}

async fn list_without_spec_leaves_the_spec_out(store: Arc<dyn Store>) {
    let now = micros_now();
    let stored = store
        .put(
            PutCommand {
                labels: labels(&[("team", "ide")]),
                ttl: Some(Duration::hours(1)),
                ..put("ws-1", &full_spec())
            },
            now,
        )
        .await
        .unwrap()
        .record;

    let basic = store
        .list(
            &ListQuery {
                include_spec: false,
                ..list_all()
            },
            now,
        )
        .await
        .unwrap();
    let full = store.list(&list_all(), now).await.unwrap();

    assert_eq!(
        basic,
        [SpecRecord {
            spec: None,
            ..stored.clone()
        }]
    );
    assert_eq!(full, [stored]);
}

async fn delete_expired_deletes_only_expired_specs_in_batches(store: Arc<dyn Store>) {
    let now = micros_now();
    for i in 0..5 {
        store
            .put(
                PutCommand {
                    ttl: Some(Duration::minutes(i + 1)),
                    ..put(&format!("short-{i}"), &spec("v1"))
                },
                now,
            )
            .await
            .unwrap();
    }
    store
        .put(
            PutCommand {
                ttl: Some(Duration::days(1)),
                ..put("long", &spec("v1"))
            },
            now,
        )
        .await
        .unwrap();
    store.put(put("forever", &spec("v1")), now).await.unwrap();
    let sweep_at = now + Duration::hours(1);

    assert_eq!(store.delete_expired(now, 10).await.unwrap(), 0);
    let mut deleted = Vec::new();
    loop {
        let n = store.delete_expired(sweep_at, 2).await.unwrap();
        assert!(n <= 2, "a batch of 2 deleted {n}");
        if n == 0 {
            break;
        }
        deleted.push(n);
    }

    assert_eq!(deleted, [2, 2, 1]);
    // The expired rows are gone (visible again at `now` if they were not), the others stay.
    assert_eq!(
        ids(&store.list(&list_all(), now).await.unwrap()),
        ["forever", "long"]
    );
    assert_eq!(
        ids(&store.list(&list_all(), sweep_at).await.unwrap()),
        ["forever", "long"]
    );
}

/// A rejected put or delete releases the row it looked at before it returns: the sweeper (which
/// passes over locked rows) and the next writer find the row free. With PostgreSQL, a transaction
/// that was only dropped kept its row lock until its pooled connection was used again, and the
/// sweeper found fewer rows than had expired.
async fn rejected_writes_leave_their_rows_unlocked(store: Arc<dyn Store>) {
    const IDS: usize = 8;
    let now = micros_now();
    for i in 0..IDS {
        store
            .put(
                PutCommand {
                    ttl: Some(Duration::minutes(1)),
                    ..put(&format!("ws-{i}"), &spec("v1"))
                },
                now,
            )
            .await
            .unwrap();
    }
    for i in 0..IDS {
        let id_i = format!("ws-{i}");
        let stale = store
            .put(
                PutCommand {
                    expected_generation: Some(7),
                    ..put(&id_i, &spec("v2"))
                },
                now,
            )
            .await
            .unwrap_err();
        assert!(matches!(stale, Error::Aborted { .. }), "{stale:?}");
        let stale = store
            .delete(
                &DeleteCommand {
                    id: id(&id_i),
                    expected_generation: Some(7),
                    allow_missing: false,
                },
                now,
            )
            .await
            .unwrap_err();
        assert!(matches!(stale, Error::Aborted { .. }), "{stale:?}");
    }
    // Every row is free: a write of the first id goes through at once...
    let replaced = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        store.put(
            PutCommand {
                expected_generation: Some(1),
                ttl: Some(Duration::minutes(1)),
                ..put("ws-0", &spec("v3"))
            },
            now,
        ),
    )
    .await
    .expect("the row is not locked")
    .unwrap();
    assert_eq!(replaced.record.generation, 2);
    // ...and once they have expired, one sweep deletes them all.
    let swept = store
        .delete_expired(now + Duration::minutes(2), 1000)
        .await
        .unwrap();
    assert_eq!(swept, IDS as u64);
}

async fn count_counts_only_live_specs(store: Arc<dyn Store>) {
    let now = micros_now();
    assert_eq!(store.count(now).await.unwrap().live, 0);
    store.put(put("forever", &spec("v1")), now).await.unwrap();
    store
        .put(
            PutCommand {
                ttl: Some(secs(60)),
                ..put("leased", &spec("v1"))
            },
            now,
        )
        .await
        .unwrap();
    store.put(put("deleted", &spec("v1")), now).await.unwrap();
    store.delete(&delete("deleted"), now).await.unwrap();

    assert_eq!(store.count(now).await.unwrap().live, 2);
    // Expired but not yet swept: no longer counted.
    assert_eq!(store.count(now + secs(60)).await.unwrap().live, 1);
}

async fn count_counts_expired_rows_until_they_are_swept(store: Arc<dyn Store>) {
    let now = micros_now();
    store.put(put("forever", &spec("v1")), now).await.unwrap();
    for (raw_id, ttl) in [("short", 10), ("long", 60)] {
        store
            .put(
                PutCommand {
                    ttl: Some(secs(ttl)),
                    ..put(raw_id, &spec("v1"))
                },
                now,
            )
            .await
            .unwrap();
    }
    assert_eq!(store.count(now).await.unwrap().expired, 0);
    // Expiry is inclusive, as for every read.
    assert_eq!(store.count(now + secs(10)).await.unwrap().expired, 1);
    assert_eq!(store.count(now + secs(60)).await.unwrap().expired, 2);
    // A deleted expired row no longer waits for the sweeper; a swept one neither.
    store
        .delete(
            &DeleteCommand {
                allow_missing: true,
                ..delete("short")
            },
            now + secs(60),
        )
        .await
        .unwrap();
    assert_eq!(store.count(now + secs(60)).await.unwrap().expired, 1);
    assert_eq!(store.delete_expired(now + secs(60), 10).await.unwrap(), 1);
    assert_eq!(store.count(now + secs(60)).await.unwrap().expired, 0);
    assert_eq!(store.count(now + secs(60)).await.unwrap().live, 1);
}

async fn pool_stats_describe_each_pool(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    let pools = store.pool_stats();
    let names: Vec<&str> = pools.iter().map(|pool| pool.name).collect();
    match store.backend() {
        "postgres" => assert_eq!(names, ["main"]),
        "sqlite" => assert_eq!(names, ["writer", "readers"]),
        other => panic!("unexpected backend {other}"),
    }
    for pool in &pools {
        assert!(pool.max >= 1, "{pool:?}");
        assert!(pool.idle <= pool.size && pool.size <= pool.max, "{pool:?}");
    }
    // The ping's connection went back to its pool and stays open.
    assert!(pools.iter().any(|pool| pool.size >= 1), "{pools:?}");
}

async fn spec_bytes_round_trip_byte_for_byte(store: Arc<dyn Store>) {
    let now = micros_now();
    let original = full_spec();
    let cmd = put("ws-1", &original);
    let expected = cmd.spec.bytes().to_vec();
    // Every byte value occurs, including NUL and bytes that are not UTF-8.
    assert!((0..=255u8).all(|b| expected.contains(&b)));

    store.put(cmd, now).await.unwrap();

    let served = store
        .get_spec(&id("ws-1"), now)
        .await
        .unwrap()
        .unwrap()
        .spec;
    assert_eq!(served, expected);
    assert_eq!(ImageSpec::decode(served.as_slice()).unwrap(), original);
    let record = store.get(&id("ws-1"), now).await.unwrap().unwrap();
    assert_eq!(record.spec, Some(expected));
}

async fn concurrent_replacements_with_the_same_generation_let_exactly_one_win(
    store: Arc<dyn Store>,
) {
    let now = micros_now();
    store.put(put("ws-1", &spec("v0")), now).await.unwrap();
    let writers = (1..=16).map(|i| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let cmd = PutCommand {
                expected_generation: Some(1),
                ..put("ws-1", &spec(&format!("v{i}")))
            };
            store.put(cmd, now + secs(1)).await
        })
    });

    let results = futures::future::try_join_all(writers).await.unwrap();

    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for result in &results {
        if let Err(err) = result {
            assert!(
                matches!(
                    err,
                    Error::Aborted {
                        expected: 1,
                        actual: 2,
                        ..
                    }
                ),
                "{err:?}"
            );
        }
    }
    let stored = store.get(&id("ws-1"), now).await.unwrap().unwrap();
    assert_eq!(stored, winners[0].record);
    assert_eq!(stored.generation, 2);
}

async fn concurrent_creates_of_a_new_id_let_exactly_one_win(store: Arc<dyn Store>) {
    let now = micros_now();
    let creators = (1..=16).map(|i| {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.put(put("ws-1", &spec(&format!("v{i}"))), now).await })
    });

    let results = futures::future::try_join_all(creators).await.unwrap();

    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(winners[0].changed);
    for result in &results {
        if let Err(err) = result {
            assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
        }
    }
    let stored = store.get(&id("ws-1"), now).await.unwrap().unwrap();
    assert_eq!(stored, winners[0].record);
    assert_eq!(stored.generation, 1);
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A label: key and value.
type Pair<'a> = (&'a str, &'a str);

fn id(raw: &str) -> SpecId {
    SpecId::parse(raw).unwrap()
}

fn labels(pairs: &[Pair]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn secs(n: i64) -> Duration {
    Duration::seconds(n)
}

fn ids(records: &[SpecRecord]) -> Vec<String> {
    records.iter().map(|r| r.id.to_string()).collect()
}

/// The caller of the suite's writes, unless a case names another.
const WRITER: &str = "ws-manager";

/// A put of `spec` to `raw_id` by [`WRITER`]: no labels, no expected generation, no TTL.
fn put(raw_id: &str, spec: &ImageSpec) -> PutCommand {
    PutCommand {
        id: id(raw_id),
        spec: validated(spec),
        labels: Labels::new(),
        expected_generation: None,
        ttl: None,
        caller: Caller::certificate(WRITER),
    }
}

/// `cmd`, sent by the holder of `token`.
fn by_token(token: &str, cmd: PutCommand) -> PutCommand {
    PutCommand {
        caller: Caller::token(token.as_bytes()),
        ..cmd
    }
}

/// A delete of `raw_id` with no expected generation, that must find the record.
fn delete(raw_id: &str) -> DeleteCommand {
    DeleteCommand {
        id: id(raw_id),
        expected_generation: None,
        allow_missing: false,
    }
}

/// Every live record, with specs, in one page.
fn list_all() -> ListQuery {
    ListQuery {
        after_id: None,
        id_prefix: String::new(),
        labels: Labels::new(),
        limit: 1000,
        include_spec: true,
    }
}

fn validated(spec: &ImageSpec) -> ValidatedSpec {
    let rules = ValidationRules {
        allow_http_urls: false,
        max_spec_bytes: 8 * 1024 * 1024,
    };
    validate_spec("spec", Some(spec), &rules)
        .unwrap_or_else(|violations| panic!("test spec is invalid: {violations:?}"))
}

/// A small valid spec; different tags give different specs.
fn spec(tag: &str) -> ImageSpec {
    ImageSpec {
        base_ref: format!("eu.gcr.io/proj/base:{tag}"),
        ide_ref: "eu.gcr.io/proj/ide/code:commit-0123456789abcdef".into(),
        supervisor_ref: "eu.gcr.io/proj/supervisor:commit-fedcba9876543210".into(),
        ..ImageSpec::default()
    }
}

/// A spec with every field set: a remote layer and a direct layer holding a real tar archive.
fn full_spec() -> ImageSpec {
    ImageSpec {
        base_ref: format!("eu.gcr.io/proj/base@{}", digest("base")),
        ide_ref: "eu.gcr.io/proj/ide/code:commit-0123456789abcdef".into(),
        content_layer: vec![
            ContentLayer {
                spec: Some(LayerSpec::Remote(RemoteContentLayer {
                    url: "https://storage.example.com/layers/workspace.tar.gz".into(),
                    digest: digest("layer-blob"),
                    diff_id: digest("layer-uncompressed"),
                    media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                    size: 123_456,
                })),
            },
            ContentLayer {
                spec: Some(LayerSpec::Direct(DirectContentLayer {
                    content: workspace_tar(),
                })),
            },
        ],
        supervisor_ref: "eu.gcr.io/proj/supervisor:commit-fedcba9876543210".into(),
        ide_layer_ref: vec![
            format!("eu.gcr.io/proj/ide/jetbrains@{}", digest("jetbrains")),
            "eu.gcr.io/proj/ide/desktop-plugin:v2".into(),
        ],
    }
}

/// `sha256:` and the hex digest of `seed`: well-formed, and different for each seed.
fn digest(seed: &str) -> String {
    spec_provider::domain::spec_digest(seed.as_bytes())
}

/// An uncompressed tar archive with a directory and two files, one holding every byte value.
fn workspace_tar() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(1_700_000_000);
    builder
        .append_data(&mut dir, "workspace/.gitpod/", std::io::empty())
        .unwrap();
    let files: [(&str, Vec<u8>); 2] = [
        ("workspace/.gitpod/ready", b"ready\n".to_vec()),
        ("workspace/.gitpod/all-bytes.bin", (0..=255u8).collect()),
    ];
    for (path, content) in files {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        header.set_mtime(1_700_000_000);
        builder
            .append_data(&mut header, path, content.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap()
}
