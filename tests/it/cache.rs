//! The GetImageSpec read cache: coherent across replicas (PostgreSQL notifications) and within
//! one (local invalidation), bypassed while it cannot hear changes, honouring expiry, measured.

use std::time::Duration;

use prost::Message;
use spec_provider::proto::registryfacade::{GetImageSpecRequest, GetImageSpecResponse, ImageSpec};
use spec_provider::proto::specprovider::v1::{DeleteSpecRequest, GetSpecRequest, PutSpecRequest};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tonic::Code;

use crate::app::{DEADLINE, TestApp, eventually, spawn_app_with};
use crate::db::Backend;
use crate::fixtures::{full_spec, minimal_spec, put};
use crate::grpc::raw_call;
use crate::observability::scrape;

on_both_backends!(
    the_bytes_on_the_wire_are_protobufs_encoding_on_a_miss_and_on_a_hit,
    a_write_after_a_cached_miss_is_seen_at_once_on_the_same_replica,
    a_cached_spec_stops_answering_when_it_expires,
    the_cache_metrics_count_hits_misses_entries_and_evictions,
);

/// A "not found" cached this long would outlive every deadline: when a test sees a write, it
/// was through an invalidation, not expiry.
const LONG_NEGATIVE_TTL: Duration = Duration::from_secs(60);

async fn spawn(backend: Backend) -> TestApp {
    let app = spawn_app_with(backend, |settings| {
        settings.cache.negative_ttl = LONG_NEGATIVE_TTL;
    })
    .await;
    wait_until_cache_in_use(&app).await;
    app
}

/// Waits until the replica's cache is in use (with PostgreSQL: once its listener listens).
async fn wait_until_cache_in_use(app: &TestApp) {
    eventually("the cache to be in use", || async {
        scrape(app.metrics_addr)
            .await
            .value("spec_provider_cache_bypassed", &[])
            == Some(0.0)
    })
    .await;
}

/// GetImageSpec of `id`: the spec, or `None` for NOT_FOUND.
async fn get(app: &TestApp, id: &str) -> Option<ImageSpec> {
    match app
        .provider
        .clone()
        .get_image_spec(GetImageSpecRequest { id: id.to_owned() })
        .await
    {
        Ok(response) => Some(response.into_inner().spec.expect("a spec")),
        Err(status) if status.code() == Code::NotFound => None,
        Err(status) => panic!("GetImageSpec {id}: {status:?}"),
    }
}

async fn put_spec(app: &TestApp, request: PutSpecRequest) {
    app.admin
        .clone()
        .put_spec(request)
        .await
        .expect("PutSpec succeeds");
}

async fn delete_spec(app: &TestApp, id: &str) {
    app.admin
        .clone()
        .delete_spec(DeleteSpecRequest {
            id: id.to_owned(),
            ..DeleteSpecRequest::default()
        })
        .await
        .expect("DeleteSpec succeeds");
}

/// With PostgreSQL a replica also hears its own writes, a moment after they return; waits until
/// it has heard `count` in all, so that a late one does not evict what a test just cached.
async fn wait_for_notifications(app: &TestApp, backend: Backend, count: f64) {
    if backend == Backend::Postgres {
        eventually("the write's notification", || async {
            metric(app, "spec_provider_cache_invalidation_notifications_total").await >= count
        })
        .await;
    }
}

/// PutSpec replacing generation `generation` of `id` with `spec`.
fn replace(id: &str, spec: ImageSpec, generation: i64) -> PutSpecRequest {
    PutSpecRequest {
        expected_generation: Some(generation),
        ..put(id, spec)
    }
}

/// The value of a cache metric, which must exist.
async fn metric(app: &TestApp, name: &str) -> f64 {
    scrape(app.metrics_addr)
        .await
        .value(name, &[])
        .unwrap_or_else(|| panic!("no metric {name}"))
}

async fn the_bytes_on_the_wire_are_protobufs_encoding_on_a_miss_and_on_a_hit(backend: Backend) {
    let app = spawn(backend).await;
    let spec = full_spec(3);
    put_spec(&app, put("wire-1", spec.clone())).await;
    wait_for_notifications(&app, backend, 1.0).await;
    let expected = GetImageSpecResponse {
        spec: Some(spec.clone()),
    }
    .encode_to_vec();
    for (attempt, hits) in [("a miss", 0.0), ("a hit", 1.0)] {
        let hits_before = metric(&app, "spec_provider_cache_hits_total").await;
        let answer = raw_call(
            &app,
            "/registryfacade.SpecProvider/GetImageSpec",
            GetImageSpecRequest {
                id: "wire-1".into(),
            },
        )
        .await
        .unwrap();
        assert_eq!(answer, expected, "the answer to {attempt}");
        assert_eq!(
            metric(&app, "spec_provider_cache_hits_total").await - hits_before,
            hits,
            "{attempt}"
        );
    }
    let status = raw_call(
        &app,
        "/registryfacade.SpecProvider/GetImageSpec",
        GetImageSpecRequest {
            id: "not-there".into(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

async fn a_write_after_a_cached_miss_is_seen_at_once_on_the_same_replica(backend: Backend) {
    let app = spawn(backend).await;
    assert_eq!(get(&app, "ws-1").await, None);
    assert_eq!(get(&app, "ws-1").await, None, "now from the cache");
    put_spec(&app, put("ws-1", minimal_spec(1))).await;
    assert_eq!(get(&app, "ws-1").await, Some(minimal_spec(1)));
    put_spec(&app, replace("ws-1", minimal_spec(2), 1)).await;
    assert_eq!(get(&app, "ws-1").await, Some(minimal_spec(2)));
    delete_spec(&app, "ws-1").await;
    assert_eq!(get(&app, "ws-1").await, None);
}

async fn a_cached_spec_stops_answering_when_it_expires(backend: Backend) {
    let app = spawn(backend).await;
    let record = app
        .admin
        .clone()
        .put_spec(PutSpecRequest {
            ttl: Some(pbjson_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..put("ws-1", minimal_spec(1))
        })
        .await
        .expect("PutSpec succeeds")
        .into_inner();
    let expire = record.expire_time.expect("a ttl gives an expiry");
    let expire =
        chrono::DateTime::from_timestamp(expire.seconds, u32::try_from(expire.nanos).unwrap())
            .expect("a valid expiry");
    let hits_before = metric(&app, "spec_provider_cache_hits_total").await;
    // Answered from the cache until the expiry, then NOT_FOUND; never found after it.
    loop {
        let asked_at = chrono::Utc::now();
        match get(&app, "ws-1").await {
            Some(spec) => {
                assert_eq!(spec, minimal_spec(1));
                assert!(
                    asked_at < expire,
                    "found at {asked_at}, after its expiry {expire}"
                );
            }
            None => break,
        }
        assert!(
            asked_at < expire + chrono::Duration::from_std(DEADLINE).unwrap(),
            "still found long after its expiry"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(chrono::Utc::now() >= expire, "gone before its expiry");
    assert!(
        metric(&app, "spec_provider_cache_hits_total").await > hits_before,
        "the live spec was served from the cache"
    );
}

async fn the_cache_metrics_count_hits_misses_entries_and_evictions(backend: Backend) {
    let app = spawn(backend).await;
    let hits = metric(&app, "spec_provider_cache_hits_total").await;
    let misses = metric(&app, "spec_provider_cache_misses_total").await;
    put_spec(&app, put("ws-1", minimal_spec(1))).await;
    wait_for_notifications(&app, backend, 1.0).await;
    get(&app, "ws-1").await.expect("found");
    get(&app, "ws-1").await.expect("found");
    get(&app, "ws-1").await.expect("found");
    assert_eq!(get(&app, "nope").await, None);
    assert_eq!(get(&app, "nope").await, None);
    assert_eq!(
        metric(&app, "spec_provider_cache_misses_total").await - misses,
        2.0
    );
    assert_eq!(
        metric(&app, "spec_provider_cache_hits_total").await - hits,
        3.0
    );
    assert_eq!(metric(&app, "spec_provider_cache_entries").await, 2.0);
    assert!(metric(&app, "spec_provider_cache_bytes").await > 0.0);
    assert_eq!(
        metric(&app, "spec_provider_cache_evictions_total").await,
        0.0
    );

    // A cache with room for a few entries evicts when more are looked up.
    let small = spawn_app_with(backend, |settings| {
        settings.cache.max_bytes = 1000;
        settings.cache.negative_ttl = LONG_NEGATIVE_TTL;
    })
    .await;
    wait_until_cache_in_use(&small).await;
    for n in 0..50 {
        assert_eq!(get(&small, &format!("unknown-{n}")).await, None);
    }
    assert!(metric(&small, "spec_provider_cache_evictions_total").await > 0.0);
    assert!(metric(&small, "spec_provider_cache_bytes").await <= 1000.0);
}

#[tokio::test]
async fn with_the_cache_disabled_every_lookup_reads_the_database() {
    let app = spawn_app_with(Backend::Sqlite, |settings| settings.cache.enabled = false).await;
    put_spec(&app, put("ws-1", minimal_spec(1))).await;
    for _ in 0..3 {
        assert_eq!(get(&app, "ws-1").await, Some(minimal_spec(1)));
    }
    assert_eq!(metric(&app, "spec_provider_cache_hits_total").await, 0.0);
    assert_eq!(metric(&app, "spec_provider_cache_misses_total").await, 0.0);
}

#[tokio::test]
async fn writes_and_deletes_on_one_replica_reach_the_cache_of_another() {
    let a = spawn(Backend::Postgres).await;
    let b = a.spawn_replica().await;
    wait_until_cache_in_use(&b).await;

    // A cached "not found" on B is evicted by A's create.
    assert_eq!(get(&b, "ws-1").await, None);
    assert_eq!(get(&b, "ws-1").await, None, "now from B's cache");
    put_spec(&a, put("ws-1", minimal_spec(1))).await;
    eventually("B to see the create", || async {
        get(&b, "ws-1").await == Some(minimal_spec(1))
    })
    .await;

    // A cached spec on B is evicted by A's replacement, then by A's delete.
    let hits = metric(&b, "spec_provider_cache_hits_total").await;
    assert_eq!(get(&b, "ws-1").await, Some(minimal_spec(1)));
    assert!(
        metric(&b, "spec_provider_cache_hits_total").await > hits,
        "from B's cache"
    );
    put_spec(&a, replace("ws-1", minimal_spec(2), 1)).await;
    eventually("B to see the replacement", || async {
        get(&b, "ws-1").await == Some(minimal_spec(2))
    })
    .await;
    delete_spec(&a, "ws-1").await;
    eventually("B to see the delete", || async {
        get(&b, "ws-1").await.is_none()
    })
    .await;

    assert!(
        metric(&b, "spec_provider_cache_invalidation_notifications_total").await >= 3.0,
        "B heard A's three changes"
    );
}

#[tokio::test]
async fn a_spec_created_right_after_a_miss_on_another_replica_is_never_hidden() {
    let a = spawn(Backend::Postgres).await;
    let b = a.spawn_replica().await;
    wait_until_cache_in_use(&b).await;
    // Each round races B's miss (its read and its fill of "not found") against A's create; a
    // stale "not found" would be cached for LONG_NEGATIVE_TTL, beyond the deadline.
    for round in 0..30 {
        let id = format!("ws-{round}");
        tokio::join!(get(&b, &id), put_spec(&a, put(&id, minimal_spec(1))));
        eventually("B to see the create", || async {
            get(&b, &id).await == Some(minimal_spec(1))
        })
        .await;
    }
}

#[tokio::test]
async fn losing_the_listening_connection_empties_and_bypasses_the_cache() {
    let app = spawn(Backend::Postgres).await;
    put_spec(&app, put("ws-1", minimal_spec(1))).await;
    wait_for_notifications(&app, Backend::Postgres, 1.0).await;
    assert_eq!(get(&app, "ws-1").await, Some(minimal_spec(1)));
    assert_eq!(get(&app, "ws-1").await, Some(minimal_spec(1)), "now cached");
    assert_eq!(metric(&app, "spec_provider_cache_entries").await, 1.0);

    // While the database refuses new connections below, the reads must find an idle connection
    // in the app's pool, also when a background task (health check, spec counts) holds one or
    // one is still on its way back to the pool: open a few now, by reads that miss the cache.
    let reads = (0..4).map(|_| {
        let mut admin = app.admin.clone();
        async move {
            admin
                .get_spec(GetSpecRequest { id: "ws-1".into() })
                .await
                .expect("GetSpec succeeds")
        }
    });
    futures::future::join_all(reads).await;

    // Keep the listener from coming back, then cut it off. The connections already open (the
    // app's pool, ours) stay.
    let url = app.settings.database.url.expose().to_owned();
    let mut on_test_db = PgConnection::connect(&url).await.unwrap();
    let mut server_url = url::Url::parse(&url).unwrap();
    let database = server_url.path().trim_start_matches('/').to_owned();
    server_url.set_path("postgres");
    let mut admin = PgConnection::connect(server_url.as_str()).await.unwrap();
    set_allow_connections(&mut admin, &database, false).await;
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'spec-provider-listener' AND datname = $1",
    )
    .bind(&database)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(terminated, vec![true], "one listener was terminated");
    eventually("the cache to be bypassed", || async {
        metric(&app, "spec_provider_cache_bypassed").await == 1.0
    })
    .await;
    assert_eq!(
        metric(&app, "spec_provider_cache_entries").await,
        0.0,
        "emptied"
    );

    // A change nobody announces (as one made while the listener was away) is served at once,
    // since every lookup reads the database now.
    sqlx::query("UPDATE specs SET spec = $1 WHERE id = 'ws-1'")
        .bind(minimal_spec(2).encode_to_vec())
        .execute(&mut on_test_db)
        .await
        .unwrap();
    let misses = metric(&app, "spec_provider_cache_misses_total").await;
    assert_eq!(get(&app, "ws-1").await, Some(minimal_spec(2)));
    assert_eq!(get(&app, "ws-1").await, Some(minimal_spec(2)));
    assert_eq!(
        metric(&app, "spec_provider_cache_misses_total").await - misses,
        2.0
    );
    assert_eq!(
        metric(&app, "spec_provider_cache_entries").await,
        0.0,
        "nothing filled"
    );

    // Once it listens again, the cache is used again.
    set_allow_connections(&mut admin, &database, true).await;
    wait_until_cache_in_use(&app).await;
    assert_eq!(get(&app, "ws-1").await, Some(minimal_spec(2)));
    let hits = metric(&app, "spec_provider_cache_hits_total").await;
    assert_eq!(get(&app, "ws-1").await, Some(minimal_spec(2)));
    assert_eq!(
        metric(&app, "spec_provider_cache_hits_total").await - hits,
        1.0
    );
    admin.close().await.ok();
    on_test_db.close().await.ok();
}

async fn set_allow_connections(admin: &mut PgConnection, database: &str, allow: bool) {
    // The name is a test database's (hex digits), safe to format into the statement.
    sqlx::query(AssertSqlSafe(format!(
        "ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS {allow}"
    )))
    .execute(admin)
    .await
    .unwrap();
}
