//! Faults the service must ride out: its database stopped or killed, itself killed or stopped under
//! load, and a stuck statement. The PostgreSQL faults run against a server of the test's own
//! (`PgCluster`), so that stopping it disturbs no other test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spec_provider::config::DatabaseUrl;
use spec_provider::proto::registryfacade::GetImageSpecRequest;
use spec_provider::proto::specprovider::v1::spec_admin_client::SpecAdminClient;
use spec_provider::proto::specprovider::v1::{
    GetSpecRequest, ListSpecsRequest, PutSpecRequest, SpecView,
};
use sqlx::{Connection, PgConnection};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::app::{DEADLINE, eventually, start, test_settings};
use crate::db::{Backend, TestDb};
use crate::fixtures::{full_spec, put};
use crate::pg_cluster::PgCluster;
use crate::process::{ServerProcess, http_get, metric_sum};

on_both_backends!(
    multi_thread;
    spec_provider_killed_mid_write_keeps_every_acknowledged_write,
);

/// Acknowledged writes: the id and the variant of [`full_spec`] it was written with.
type Acked = Arc<Mutex<Vec<(String, u32)>>>;

/// Writes `{prefix}-{n}` with `full_spec(n)` for n = 0, 1, ... until `stop` is cancelled (or, with
/// `stop_on_error`, until a write fails); records each acknowledged write in `acked` and returns
/// the errors seen.
async fn write_until(
    mut admin: SpecAdminClient<Channel>,
    prefix: String,
    acked: Acked,
    stop: CancellationToken,
    stop_on_error: bool,
) -> Vec<(Status, Duration)> {
    let mut errors = Vec::new();
    for n in 0u32.. {
        if stop.is_cancelled() {
            break;
        }
        let id = format!("{prefix}-{n}");
        let started = Instant::now();
        match admin.put_spec(put(&id, full_spec(n))).await {
            Ok(_) => acked.lock().await.push((id, n)),
            Err(status) => {
                errors.push((status, started.elapsed()));
                if stop_on_error {
                    break;
                }
            }
        }
    }
    errors
}

/// Waits until at least `count` writes are acknowledged (polling: a count has no event).
async fn wait_for_acks(acked: &Acked, count: usize) {
    eventually("the writers to get their writes acknowledged", async || {
        acked.lock().await.len() >= count
    })
    .await;
}

/// Every acknowledged write is stored intact, and every stored record under `prefix` is one
/// whole write: its spec is the one its id was written with, at generation 1.
async fn assert_writes_intact(admin: &mut SpecAdminClient<Channel>, acked: &[(String, u32)]) {
    for (id, variant) in acked {
        let record = admin
            .get_spec(GetSpecRequest { id: id.clone() })
            .await
            .unwrap_or_else(|status| panic!("acknowledged write {id} is missing: {status:?}"))
            .into_inner();
        assert_eq!(record.spec, Some(full_spec(*variant)), "{id}");
        assert_eq!(record.generation, 1, "{id}");
    }
    let mut page_token = String::new();
    let mut listed = 0;
    loop {
        let page = admin
            .list_specs(ListSpecsRequest {
                page_size: 100,
                page_token: page_token.clone(),
                view: SpecView::Full as i32,
                ..ListSpecsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        for record in &page.specs {
            let variant: u32 = record.id.rsplit_once('-').unwrap().1.parse().unwrap();
            assert_eq!(record.spec, Some(full_spec(variant)), "{}", record.id);
            assert_eq!(record.generation, 1, "{}", record.id);
            listed += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert!(
        listed >= acked.len(),
        "{listed} listed, {} acked",
        acked.len()
    );
}

/// Settings for a server on a private PostgreSQL: quick to notice an outage.
fn settings_on(cluster: &PgCluster, db: &TestDb) -> spec_provider::config::Settings {
    let mut settings = test_settings(db);
    settings.database.url = DatabaseUrl::new(cluster.url());
    settings.database.acquire_timeout = Duration::from_secs(1);
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_stopped_under_load_fails_rpcs_fast_then_recovers_without_a_restart() {
    let cluster = PgCluster::start();
    // Only for the rest of the test settings; the server talks to the private cluster.
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = settings_on(&cluster, &db);
    // Long, so that the put held on a lock below is still running when the server goes away.
    settings.database.statement_timeout = Duration::from_secs(60);
    let acquire_timeout = settings.database.acquire_timeout;
    let app = start(settings).await;
    app.wait_for_health(ServingStatus::Serving).await;
    app.admin
        .clone()
        .put_spec(put("held-1", full_spec(1)))
        .await
        .unwrap();

    // One put is certainly inside PostgreSQL when it stops: held behind a row lock.
    let mut locker = PgConnection::connect(&cluster.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("SELECT id FROM specs WHERE id = 'held-1' FOR UPDATE")
        .execute(&mut locker)
        .await
        .unwrap();
    let held = tokio::spawn({
        let mut admin = app.admin.clone();
        async move {
            admin
                .put_spec(PutSpecRequest {
                    expected_generation: Some(1),
                    ..put("held-1", full_spec(2))
                })
                .await
        }
    });
    // Watched from another session: inside the locker's transaction pg_stat_activity would stay
    // the snapshot of its first read.
    let mut observer = PgConnection::connect(&cluster.url()).await.unwrap();
    eventually("the put to wait on the lock", async || {
        let (waiting,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                .fetch_one(&mut observer)
                .await
                .unwrap();
        waiting > 0
    })
    .await;

    let acked = Acked::default();
    let stop = CancellationToken::new();
    let writers: Vec<_> = (0..4)
        .map(|k| {
            tokio::spawn(write_until(
                app.admin.clone(),
                format!("w{k}"),
                acked.clone(),
                stop.clone(),
                false,
            ))
        })
        .collect();
    wait_for_acks(&acked, 20).await;

    cluster.stop();
    // The server ended the session of the held put (SQLSTATE 57P01): UNAVAILABLE, not INTERNAL.
    let held = tokio::time::timeout(DEADLINE, held)
        .await
        .expect("the held put ended within the deadline")
        .unwrap()
        .unwrap_err();
    assert_eq!(held.code(), Code::Unavailable, "{held:?}");
    app.wait_for_health(ServingStatus::NotServing).await;
    // While it is down, an RPC fails with UNAVAILABLE within the acquire timeout (plus the time
    // a loaded machine needs to answer), rather than hanging.
    let bound = acquire_timeout + Duration::from_secs(2);
    for _ in 0..3 {
        let started = Instant::now();
        let got = app
            .provider
            .clone()
            .get_image_spec(GetImageSpecRequest { id: "w0-0".into() })
            .await;
        assert_eq!(got.unwrap_err().code(), Code::Unavailable);
        assert!(started.elapsed() < bound, "{:?}", started.elapsed());
    }

    cluster.start_again();
    app.wait_for_health(ServingStatus::Serving).await;
    let acked_before = acked.lock().await.len();
    wait_for_acks(&acked, acked_before + 20).await;
    stop.cancel();
    for writer in writers {
        // Writes in flight when the database went away failed as UNAVAILABLE, and quickly.
        for (status, took) in writer.await.unwrap() {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert!(took < bound, "a write took {took:?} to fail");
        }
    }
    assert_writes_intact(&mut app.admin.clone(), &acked.lock().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_killed_mid_write_keeps_every_acknowledged_write_and_no_half_write() {
    let cluster = PgCluster::start();
    let db = TestDb::new(Backend::Sqlite).await;
    let app = start(settings_on(&cluster, &db)).await;
    app.wait_for_health(ServingStatus::Serving).await;

    let acked = Acked::default();
    let stop = CancellationToken::new();
    let writers: Vec<_> = (0..4)
        .map(|k| {
            tokio::spawn(write_until(
                app.admin.clone(),
                format!("w{k}"),
                acked.clone(),
                stop.clone(),
                false,
            ))
        })
        .collect();
    wait_for_acks(&acked, 40).await;
    cluster.kill();
    app.wait_for_health(ServingStatus::NotServing).await;
    stop.cancel();
    for writer in writers {
        for (status, _) in writer.await.unwrap() {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        }
    }

    cluster.start_again();
    app.wait_for_health(ServingStatus::Serving).await;
    let acked = acked.lock().await;
    assert!(acked.len() >= 40);
    assert_writes_intact(&mut app.admin.clone(), &acked).await;
}

/// Kills the binary with SIGKILL while it writes, restarts it on the same database, and checks
/// every acknowledged write.
async fn kill_the_server_mid_write(database_url: &str) {
    let mut server = ServerProcess::start(database_url, &[]).await;
    server.wait_until_serving().await;
    let acked = Acked::default();
    let stop = CancellationToken::new();
    let mut writers = Vec::new();
    for k in 0..4 {
        writers.push(tokio::spawn(write_until(
            server.admin().await,
            format!("w{k}"),
            acked.clone(),
            stop.clone(),
            true,
        )));
    }
    wait_for_acks(&acked, 40).await;
    server.kill().await;
    for writer in writers {
        // Each writer stops at its first failure, which the kill causes.
        writer.await.unwrap();
    }

    let server = ServerProcess::start(database_url, &[]).await;
    server.wait_until_serving().await;
    let acked = acked.lock().await;
    assert_writes_intact(&mut server.admin().await, &acked).await;
}

async fn spec_provider_killed_mid_write_keeps_every_acknowledged_write(backend: Backend) {
    let db = TestDb::new(backend).await;
    kill_the_server_mid_write(db.settings.url.expose()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_completes_accepted_rpcs_refuses_new_connections_and_exits_zero() {
    let db = TestDb::new(Backend::Postgres).await;
    let url = db.settings.url.expose().to_owned();
    // Room for every put below to wait on the lock without any other limit cutting in.
    let env = [
        ("SPEC_PROVIDER__SERVER__SHUTDOWN_GRACE", "20s"),
        ("SPEC_PROVIDER__DATABASE__MAX_CONNECTIONS", "20"),
        ("SPEC_PROVIDER__DATABASE__ACQUIRE_TIMEOUT", "60s"),
        ("SPEC_PROVIDER__DATABASE__STATEMENT_TIMEOUT", "60s"),
    ];
    let mut server = ServerProcess::start(&url, &env).await;
    server.wait_until_serving().await;

    // A table lock held from outside keeps the puts below inside the server, in flight, until
    // the test lets them go; reads (the health checks) pass.
    let mut blocker = PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE specs IN EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();

    const IN_FLIGHT: usize = 16;
    let admin = server.admin().await;
    let puts: Vec<_> = (0..IN_FLIGHT)
        .map(|n| {
            let mut admin = admin.clone();
            tokio::spawn(async move {
                admin
                    .put_spec(put(
                        &format!("ws-{n}"),
                        full_spec(u32::try_from(n).unwrap()),
                    ))
                    .await
            })
        })
        .collect();
    // Accepted: the server has started every one of them.
    let metrics_addr = server.metrics_addr;
    eventually("the server to start every put", async || {
        let text = http_get(metrics_addr, "/metrics").await;
        let started = metric_sum(
            &text,
            "grpc_server_started_total",
            "grpc_method=\"PutSpec\"",
        );
        started >= IN_FLIGHT as f64
    })
    .await;

    server.terminate();
    server
        .wait_for_log("shutting down: health NOT_SERVING, draining in-flight RPCs")
        .await;
    // New connections are refused while the accepted RPCs drain.
    let refused = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await;
    match refused {
        Err(_) => {}
        Ok(channel) => {
            let check = tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await;
            assert!(check.is_err(), "a new connection was served: {check:?}");
        }
    }
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();

    for put in puts {
        let record = put.await.unwrap().expect("an accepted put completes");
        assert_eq!(record.into_inner().generation, 1);
    }
    assert_eq!(server.wait_for_exit(DEADLINE).await, Some(0));

    // The puts are stored: a new server on the same file finds them.
    let server = ServerProcess::start(&url, &[]).await;
    server.wait_until_serving().await;
    let mut admin = server.admin().await;
    for n in 0..IN_FLIGHT {
        admin
            .get_spec(GetSpecRequest {
                id: format!("ws-{n}"),
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_stuck_on_a_lock_fails_its_rpc_within_the_statement_timeout_not_the_server() {
    let statement_timeout = Duration::from_millis(500);
    let db = TestDb::new(Backend::Postgres).await;
    let mut settings = test_settings(&db);
    settings.database.statement_timeout = statement_timeout;
    let app = start(settings).await;
    app.wait_for_health(ServingStatus::Serving).await;
    let mut admin = app.admin.clone();
    admin.put_spec(put("ws-1", full_spec(1))).await.unwrap();

    // Another session locks the row and stays in its transaction, as a stuck client would.
    let mut locker = PgConnection::connect(db.settings.url.expose())
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("SELECT id FROM specs WHERE id = 'ws-1' FOR UPDATE")
        .execute(&mut locker)
        .await
        .unwrap();

    let started = Instant::now();
    let stuck = tokio::time::timeout(
        DEADLINE,
        admin.put_spec(PutSpecRequest {
            expected_generation: Some(1),
            ..put("ws-1", full_spec(2))
        }),
    )
    .await
    .expect("the stuck put gave up within the deadline")
    .unwrap_err();
    let took = started.elapsed();
    assert_eq!(stuck.code(), Code::Unavailable, "{stuck:?}");
    assert!(stuck.message().contains("retry"), "{stuck:?}");
    assert!(took >= statement_timeout, "{took:?}");
    assert!(
        took < statement_timeout + Duration::from_secs(3),
        "{took:?}"
    );

    // The server answers everything else meanwhile: a read of the locked row, another write.
    let record = admin
        .get_spec(GetSpecRequest { id: "ws-1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(record.spec, Some(full_spec(1)));
    admin.put_spec(put("ws-2", full_spec(2))).await.unwrap();

    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    let record = admin
        .put_spec(PutSpecRequest {
            expected_generation: Some(1),
            ..put("ws-1", full_spec(2))
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(record.generation, 2);
}
