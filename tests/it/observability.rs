//! Metrics, HTTP probes and request ids, observed from outside: `/metrics` scraped after known
//! traffic, `/readyz` through health transitions, `x-request-id` round trips, and JSON log lines.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use spec_provider::proto::registryfacade::GetImageSpecRequest;
use spec_provider::proto::registryfacade::spec_provider_client::SpecProviderClient;
use spec_provider::proto::specprovider::v1::PutSpecRequest;
use spec_provider::proto::specprovider::v1::spec_admin_client::SpecAdminClient;
use spec_provider::server::LIVENESS_SERVICE;
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::app::{DEADLINE, TestApp, eventually, spawn_app, spawn_app_with, start};
use crate::db::{Backend, TestDb};
use crate::fixtures::{full_spec, minimal_spec, put};
use crate::gate::behind_gate;
use crate::process::{self, ServerProcess};

on_both_backends!(
    grpc_metrics_count_exactly_the_rpcs_sent_with_go_names_and_codes,
    store_gauges_and_histograms_follow_the_traffic,
    the_sweeper_counts_what_it_deletes,
    expired_specs_are_counted_until_the_sweeper_deletes_them,
);

const PROVIDER: &str = "registryfacade.SpecProvider";
const ADMIN: &str = "specprovider.v1.SpecAdmin";

async fn grpc_metrics_count_exactly_the_rpcs_sent_with_go_names_and_codes(backend: Backend) {
    let app = spawn_app(backend).await;
    put_spec(&app, put("ws-1", full_spec(1))).await.unwrap();
    for _ in 0..3 {
        get_image_spec(&app, "ws-1").await.unwrap();
    }
    for id in ["ws-missing", "ws-gone"] {
        let err = get_image_spec(&app, id).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
    let err = put_spec(&app, put("Not A Valid Id", full_spec(1)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let metrics = scrape(app.metrics_addr).await;
    let get = |name: &str| metrics.unary(name, PROVIDER, "GetImageSpec", None);
    assert_eq!(get("grpc_server_started_total"), 5.0);
    assert_eq!(get("grpc_server_msg_received_total"), 5.0);
    assert_eq!(get("grpc_server_msg_sent_total"), 3.0);
    assert_eq!(get("grpc_server_handling_seconds_count"), 5.0);
    let handled = |method: &str, code: &str| {
        let service = if method == "GetImageSpec" {
            PROVIDER
        } else {
            ADMIN
        };
        metrics.unary("grpc_server_handled_total", service, method, Some(code))
    };
    assert_eq!(handled("GetImageSpec", "OK"), 3.0);
    assert_eq!(handled("GetImageSpec", "NotFound"), 2.0);
    assert_eq!(handled("GetImageSpec", "InvalidArgument"), 0.0);
    assert_eq!(handled("PutSpec", "OK"), 1.0);
    assert_eq!(handled("PutSpec", "InvalidArgument"), 1.0);
    assert_eq!(handled("GetSpec", "OK"), 0.0);
    let put = |name: &str| metrics.unary(name, ADMIN, "PutSpec", None);
    assert_eq!(put("grpc_server_started_total"), 2.0);
    assert_eq!(put("grpc_server_msg_received_total"), 2.0);
    assert_eq!(put("grpc_server_msg_sent_total"), 1.0);
    // The histogram has go-grpc-prometheus's buckets.
    let buckets: Vec<String> = metrics
        .samples("grpc_server_handling_seconds_bucket")
        .filter(|(labels, _)| labels.get("grpc_method").map(String::as_str) == Some("GetImageSpec"))
        .map(|(mut labels, _)| labels.remove("le").unwrap())
        .collect();
    assert_eq!(
        buckets,
        [
            "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"
        ]
    );

    // Streams: spawn_app watched health until SERVING and then dropped the stream. The server
    // counts that RPC as started once and, when it notices the client is gone, as Canceled.
    fn watch(name: &'static str, code: Option<&'static str>) -> impl Fn(&Metrics) -> Option<f64> {
        let mut labels = vec![
            ("grpc_type", "server_stream"),
            ("grpc_service", "grpc.health.v1.Health"),
            ("grpc_method", "Watch"),
        ];
        labels.extend(code.map(|code| ("grpc_code", code)));
        move |metrics: &Metrics| metrics.value(name, &labels)
    }
    let metrics = wait_for_metric(
        &app,
        watch("grpc_server_handled_total", Some("Canceled")),
        1.0,
    )
    .await;
    assert_eq!(
        watch("grpc_server_started_total", None)(&metrics),
        Some(1.0)
    );
    assert!(watch("grpc_server_msg_sent_total", None)(&metrics) >= Some(1.0));

    // A health check is counted like any unary RPC.
    app.health
        .clone()
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    let metrics = scrape(app.metrics_addr).await;
    assert_eq!(
        metrics.value(
            "grpc_server_handled_total",
            &[
                ("grpc_type", "unary"),
                ("grpc_service", "grpc.health.v1.Health"),
                ("grpc_method", "Check"),
                ("grpc_code", "OK"),
            ]
        ),
        Some(1.0)
    );
}

async fn store_gauges_and_histograms_follow_the_traffic(backend: Backend) {
    let app = spawn_app(backend).await;
    for i in 0..3 {
        put_spec(&app, put(&format!("ws-{i}"), minimal_spec(1)))
            .await
            .unwrap();
    }
    get_image_spec(&app, "ws-0").await.unwrap();
    get_image_spec(&app, "ws-9").await.unwrap_err();
    get_image_spec(&app, "NOT VALID").await.unwrap_err();

    let stored = |metrics: &Metrics| metrics.value("spec_provider_specs_stored", &[]);
    let metrics = wait_for_metric(&app, stored, 3.0).await;
    let queries = |operation: &str| {
        metrics
            .value(
                "spec_provider_store_query_duration_seconds_count",
                &[("operation", operation)],
            )
            .unwrap()
    };
    assert_eq!(queries("put"), 3.0);
    // The invalid id never reached the store.
    assert_eq!(queries("get_spec"), 2.0);
    assert_eq!(queries("delete"), 0.0);
    assert!(queries("ping") >= 1.0);
    assert!(queries("count") >= 1.0);

    let pools: Vec<&str> = match backend {
        Backend::Postgres => vec!["main"],
        Backend::Sqlite => vec!["writer", "readers"],
    };
    for pool in pools {
        let max = metrics
            .value("spec_provider_db_pool_max_connections", &[("pool", pool)])
            .unwrap();
        let size = metrics
            .value("spec_provider_db_pool_connections", &[("pool", pool)])
            .unwrap();
        let idle = metrics
            .value("spec_provider_db_pool_idle_connections", &[("pool", pool)])
            .unwrap();
        assert!(
            max >= 1.0 && size >= 1.0 && idle <= size && size <= max,
            "{pool}"
        );
    }

    let (labels, value) = metrics
        .samples("spec_provider_build_info")
        .next()
        .expect("build info");
    assert_eq!(value, 1.0);
    assert_eq!(labels["version"], env!("CARGO_PKG_VERSION"));
    let commit = &labels["git_commit"];
    assert!(
        commit == "unknown"
            || (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{commit}"
    );
}

async fn the_sweeper_counts_what_it_deletes(backend: Backend) {
    let app = spawn_app_with(backend, |settings| {
        settings.sweeper.interval = Duration::from_millis(100);
    })
    .await;
    for id in ["ws-a", "ws-b"] {
        put_spec(&app, leased(id, 1)).await.unwrap();
    }
    put_spec(&app, put("ws-keep", minimal_spec(1)))
        .await
        .unwrap();

    let deleted = |metrics: &Metrics| metrics.value("spec_provider_sweeper_deleted_total", &[]);
    wait_for_metric(&app, deleted, 2.0).await;
    let stored = |metrics: &Metrics| metrics.value("spec_provider_specs_stored", &[]);
    wait_for_metric(&app, stored, 1.0).await;
    wait_for_metric(&app, expired, 0.0).await;
}

async fn expired_specs_are_counted_until_the_sweeper_deletes_them(backend: Backend) {
    // The default sweeper interval (a minute) deletes nothing while the test runs.
    let app = spawn_app(backend).await;
    put_spec(&app, put("ws-keep", minimal_spec(1)))
        .await
        .unwrap();
    for id in ["ws-a", "ws-b"] {
        put_spec(&app, leased(id, 1)).await.unwrap();
    }
    put_spec(&app, leased("ws-later", 3600)).await.unwrap();
    let metrics = wait_for_metric(&app, expired, 2.0).await;
    assert_eq!(metrics.value("spec_provider_specs_stored", &[]), Some(2.0));
    assert_eq!(
        metrics.value("spec_provider_sweeper_deleted_total", &[]),
        Some(0.0)
    );
    // A put over an expired spec makes it live again: it no longer waits for the sweeper.
    put_spec(&app, put("ws-a", minimal_spec(1))).await.unwrap();
    wait_for_metric(&app, expired, 1.0).await;
}

fn expired(metrics: &Metrics) -> Option<f64> {
    metrics.value("spec_provider_specs_expired", &[])
}

/// A put of a minimal spec that expires `seconds` after it.
fn leased(id: &str, seconds: i64) -> PutSpecRequest {
    PutSpecRequest {
        ttl: Some(pbjson_types::Duration { seconds, nanos: 0 }),
        ..put(id, minimal_spec(1))
    }
}

#[tokio::test]
async fn an_unserved_method_creates_no_series() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/registryfacade.SpecProvider/NoSuchMethod");
    let err = grpc
        .unary::<_, GetImageSpecResponseStub, _>(
            tonic::Request::new(GetImageSpecRequest { id: "x".into() }),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let metrics = scrape(app.metrics_addr).await;
    assert!(
        !metrics.text.contains("NoSuchMethod"),
        "a client-chosen path made a series"
    );
}

/// Any message: the unserved method never answers with one.
#[derive(Clone, PartialEq, prost::Message)]
struct GetImageSpecResponseStub {}

#[tokio::test]
async fn healthz_and_readyz_follow_health_through_shutdown() {
    let mut app = spawn_app(Backend::Sqlite).await;
    assert_eq!(http_get(app.metrics_addr, "/healthz").await.0, 200);
    assert_eq!(
        http_get(app.metrics_addr, "/readyz").await,
        (200, "SERVING\n".to_owned())
    );
    assert_eq!(ready_gauge(&app).await, 1.0);

    // An open Watch stream keeps the server draining (up to the grace period) after shutdown
    // begins, and tells when health turned NOT_SERVING.
    let mut watch = app
        .health
        .clone()
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    app.begin_shutdown();
    let status = tokio::time::timeout(DEADLINE, watch.message())
        .await
        .expect("health changes within the deadline")
        .unwrap()
        .unwrap()
        .status();
    assert_eq!(status, ServingStatus::NotServing);

    assert_eq!(
        http_get(app.metrics_addr, "/readyz").await,
        (503, "NOT_SERVING\n".to_owned())
    );
    assert_eq!(ready_gauge(&app).await, 0.0);
    assert_eq!(http_get(app.metrics_addr, "/healthz").await.0, 200);
    drop(watch);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_and_the_ready_gauge_say_not_ready_while_postgres_is_unreachable() {
    let db = TestDb::new(Backend::Postgres).await;
    let (gate, settings) = behind_gate(&db).await;
    let app = start(settings).await;

    // Health is NOT_SERVING from the start, until the database first answers.
    assert_eq!(app.health_status("").await, ServingStatus::NotServing);
    assert_eq!(http_get(app.metrics_addr, "/readyz").await.0, 503);
    assert_eq!(ready_gauge(&app).await, 0.0);
    assert_eq!(http_get(app.metrics_addr, "/healthz").await.0, 200);
    // Alive all the same: restarting would not bring the database back.
    assert_eq!(
        app.health_status(LIVENESS_SERVICE).await,
        ServingStatus::Serving
    );

    gate.open();
    app.wait_for_health(ServingStatus::Serving).await;
    assert_eq!(http_get(app.metrics_addr, "/readyz").await.0, 200);
    assert_eq!(ready_gauge(&app).await, 1.0);

    gate.close();
    app.wait_for_health(ServingStatus::NotServing).await;
    assert_eq!(http_get(app.metrics_addr, "/readyz").await.0, 503);
    assert_eq!(ready_gauge(&app).await, 0.0);

    gate.open();
    app.wait_for_health(ServingStatus::Serving).await;
    assert_eq!(http_get(app.metrics_addr, "/readyz").await.0, 200);
    assert_eq!(ready_gauge(&app).await, 1.0);
}

/// `spec_provider_ready`, which must be served.
async fn ready_gauge(app: &TestApp) -> f64 {
    scrape(app.metrics_addr)
        .await
        .value("spec_provider_ready", &[])
        .expect("spec_provider_ready is served")
}

#[tokio::test]
async fn request_ids_are_echoed_and_made_when_absent() {
    let app = spawn_app(Backend::Sqlite).await;
    put_spec(&app, put("ws-1", minimal_spec(1))).await.unwrap();
    let mut provider = app.provider.clone();
    let request = |id: &str, request_id: Option<&str>| {
        let mut request = tonic::Request::new(GetImageSpecRequest { id: id.into() });
        if let Some(request_id) = request_id {
            request
                .metadata_mut()
                .insert("x-request-id", request_id.parse().unwrap());
        }
        request
    };
    let echoed = |metadata: &tonic::metadata::MetadataMap| {
        metadata
            .get("x-request-id")
            .expect("an x-request-id in the answer")
            .to_str()
            .unwrap()
            .to_owned()
    };

    // Sent: the same id comes back, on success and on failure ("trailers-only" answers).
    let ok = provider
        .get_image_spec(request("ws-1", Some("req-7f3a")))
        .await
        .unwrap();
    assert_eq!(echoed(ok.metadata()), "req-7f3a");
    let err = provider
        .get_image_spec(request("ws-none", Some("req-7f3b")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(echoed(err.metadata()), "req-7f3b");

    // Absent or unusable: a fresh UUID v4 each time.
    let mut seen = Vec::new();
    for sent in [None, Some("has spaces"), Some(&*"x".repeat(129))] {
        let ok = provider
            .get_image_spec(request("ws-1", sent))
            .await
            .unwrap();
        let id = echoed(ok.metadata());
        assert_eq!(
            uuid::Uuid::parse_str(&id).unwrap().get_version_num(),
            4,
            "{id}"
        );
        assert!(!seen.contains(&id), "{id} was given twice");
        seen.push(id);
    }
}

/// The binary with JSON logs: each RPC's line carries its request id, method, code and latency
/// (and a write's its caller);
/// a client error logs at INFO, a GetImageSpec of an unknown id not at all (at DEBUG).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_carry_the_request_id_method_code_and_latency() {
    let (_dir, _url, mut server) = serving_with_json_logs(&[]).await;
    let mut admin = SpecAdminClient::new(server.channel().await);

    // Answered before the puts below, so its line, if there were one, would come first.
    let mut request = tonic::Request::new(GetImageSpecRequest {
        id: "ws-unknown".into(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "req-log-0".parse().unwrap());
    let absent = SpecProviderClient::new(server.channel().await)
        .get_image_spec(request)
        .await
        .unwrap_err();
    assert_eq!(absent.code(), Code::NotFound);

    let mut request = tonic::Request::new(put("ws-logged", minimal_spec(1)));
    request
        .metadata_mut()
        .insert("x-request-id", "req-log-1".parse().unwrap());
    admin.put_spec(request).await.unwrap();
    let mut request = tonic::Request::new(put("NOT VALID", minimal_spec(1)));
    request
        .metadata_mut()
        .insert("x-request-id", "req-log-2".parse().unwrap());
    admin.put_spec(request).await.unwrap_err();

    for (request_id, code) in [("req-log-1", "OK"), ("req-log-2", "InvalidArgument")] {
        let event = server
            .next_event(request_id, |e| {
                e["message"] == "rpc"
                    && (e["span"]["request_id"] == request_id
                        || e["span"]["request_id"] == "req-log-0")
            })
            .await;
        assert_eq!(
            event["span"]["request_id"], request_id,
            "an unknown id's GetImageSpec logs at DEBUG: {event}"
        );
        assert_eq!(
            event["method"], "specprovider.v1.SpecAdmin/PutSpec",
            "{event}"
        );
        assert_eq!(event["code"], code, "{event}");
        assert_eq!(event["level"], "INFO", "{event}");
        assert!(event["latency_ms"].as_f64().is_some(), "{event}");
        // A write names its caller, refused or not; this server takes no credentials.
        assert_eq!(event["caller"], "anonymous", "{event}");
        // Spans are not exported: the span carries the request id alone, no `otel.*` fields.
        assert_eq!(
            event["span"],
            serde_json::json!({ "name": "grpc", "request_id": request_id }),
            "{event}"
        );
        if code != "OK" {
            assert!(event["status_message"].is_string(), "{event}");
        }
    }
}

/// With DEBUG on for the API, a GetImageSpec of an unknown id logs its line, from the store and
/// from the negative cache alike: method, id, code NotFound and the message the client got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ids_line_at_debug_carries_its_code_and_message() {
    let (_dir, _url, mut server) =
        serving_with_json_logs(&[("RUST_LOG", "info,spec_provider::api=debug")]).await;
    let mut provider = SpecProviderClient::new(server.channel().await);
    for request_id in ["req-absent-1", "req-absent-2"] {
        let mut request = tonic::Request::new(GetImageSpecRequest {
            id: "ws-absent".into(),
        });
        request
            .metadata_mut()
            .insert("x-request-id", request_id.parse().unwrap());
        let absent = provider.get_image_spec(request).await.unwrap_err();
        assert_eq!(absent.code(), Code::NotFound);
        let event = server
            .next_event(request_id, |e| {
                e["message"] == "rpc" && e["span"]["request_id"] == request_id
            })
            .await;
        assert_eq!(event["level"], "DEBUG", "{event}");
        assert_eq!(
            event["method"], "registryfacade.SpecProvider/GetImageSpec",
            "{event}"
        );
        assert_eq!(event["id"], "\"ws-absent\"", "{event}");
        assert_eq!(event["code"], "NotFound", "{event}");
        assert_eq!(event["status_message"], absent.message(), "{event}");
        assert!(event["latency_ms"].as_f64().is_some(), "{event}");
    }
}

/// An internal error is logged once: on its RPC's line, at ERROR, with the whole cause chain, while
/// the client sees an opaque message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_error_is_logged_once_with_its_cause_chain() {
    let (_dir, url, mut server) = serving_with_json_logs(&[]).await;
    let mut admin = SpecAdminClient::new(server.channel().await);
    admin
        .put_spec(put("ws-damaged", minimal_spec(1)))
        .await
        .unwrap();
    // A row no put could write: its spec does not decode.
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE specs SET spec = x'ff' WHERE id = 'ws-damaged'")
        .execute(&mut db)
        .await
        .unwrap();

    let request_with_id = |id: &str, request_id: &str| {
        let mut request = tonic::Request::new(GetImageSpecRequest { id: id.into() });
        request
            .metadata_mut()
            .insert("x-request-id", request_id.parse().unwrap());
        request
    };
    let mut provider = SpecProviderClient::new(server.channel().await);
    let err = provider
        .get_image_spec(request_with_id("ws-damaged", "req-internal"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(
        err.message(),
        "internal error",
        "no cause reaches the client"
    );
    // A later RPC's line: every line of the failed one was written before it.
    let mut request = tonic::Request::new(put("ws-after", minimal_spec(1)));
    request
        .metadata_mut()
        .insert("x-request-id", "req-after".parse().unwrap());
    admin.put_spec(request).await.unwrap();

    let lines = std::sync::Mutex::new(Vec::new());
    server
        .next_event("the later put's line", |event| {
            if event["span"]["request_id"] == "req-internal" {
                lines.lock().unwrap().push(event.clone());
            }
            event["span"]["request_id"] == "req-after" && event["message"] == "rpc"
        })
        .await;
    let lines = lines.into_inner().unwrap();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    assert_eq!(line["message"], "rpc", "{line}");
    assert_eq!(line["level"], "ERROR", "{line}");
    assert_eq!(line["code"], "Internal", "{line}");
    assert_eq!(line["method"], "registryfacade.SpecProvider/GetImageSpec");
    assert_eq!(line["id"], "\"ws-damaged\"", "{line}");
    assert_eq!(line["status_message"], "internal error", "{line}");
    let cause = line["error"].as_str().unwrap_or_default();
    assert!(
        cause.starts_with("decoding a stored spec: ") && cause.len() > 24,
        "the whole chain: {line}"
    );
}

/// Text log lines written to a pipe (a file, a log collector) carry no colour escape codes, and
/// an RPC's line is prefixed with its request id alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_log_lines_to_a_pipe_are_plain() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("specs.db").display());
    let mut child = process::command(&url, &[("SPEC_PROVIDER__LOG__FORMAT", "text")])
        .spawn()
        .expect("starting spec-provider");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line_with = async |text: &str| {
        let wait = async {
            loop {
                let line = lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("spec-provider exited");
                if line.contains(text) {
                    return line;
                }
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("no log line with {text:?} within the deadline"))
    };

    let listening = next_line_with("spec-provider listening").await;
    assert!(!listening.contains('\x1b'), "{listening:?}");
    let addr = listening
        .split_whitespace()
        .find_map(|field| field.strip_prefix("local_addr="))
        .expect("the address in the line");
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(put("ws-text", minimal_spec(1)));
    request
        .metadata_mut()
        .insert("x-request-id", "req-text-1".parse().unwrap());
    SpecAdminClient::new(channel)
        .put_spec(request)
        .await
        .unwrap();

    let rpc = next_line_with("req-text-1").await;
    assert!(!rpc.contains('\x1b'), "{rpc:?}");
    assert!(
        rpc.contains(r#"grpc{request_id="req-text-1"}: spec_provider::api: rpc"#),
        "{rpc:?}"
    );
}

// Helpers
// ---------------------------------------------------------------------------------------------

/// The binary with JSON logs and `env` on an SQLite database of its own (in the returned
/// directory, at the returned URL), once it is SERVING.
async fn serving_with_json_logs(
    env: &[(&str, &str)],
) -> (tempfile::TempDir, String, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("specs.db").display());
    let server = ServerProcess::start(&url, env).await;
    server.wait_until_serving().await;
    (dir, url, server)
}

async fn get_image_spec(app: &TestApp, id: &str) -> Result<(), tonic::Status> {
    app.provider
        .clone()
        .get_image_spec(GetImageSpecRequest { id: id.to_owned() })
        .await
        .map(drop)
}

async fn put_spec(app: &TestApp, request: PutSpecRequest) -> Result<(), tonic::Status> {
    app.admin.clone().put_spec(request).await.map(drop)
}

/// A GET over HTTP/1.1: the status code and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("an HTTP answer within the deadline");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    (status, body.to_owned())
}

/// Scrapes `/metrics`, which must answer 200 in the Prometheus text format.
pub(crate) async fn scrape(addr: SocketAddr) -> Metrics {
    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    Metrics { text }
}

/// Scrapes until `metric` reads `want`, within the deadline; returns that scrape.
async fn wait_for_metric(
    app: &TestApp,
    metric: impl Fn(&Metrics) -> Option<f64>,
    want: f64,
) -> Metrics {
    let read = Cell::new(None);
    let mut last = None;
    eventually(
        fmt::from_fn(|f| write!(f, "the metric to read {want}; it read {:?}", read.get())),
        async || {
            let metrics = scrape(app.metrics_addr).await;
            read.set(metric(&metrics));
            last = Some(metrics);
            read.get() == Some(want)
        },
    )
    .await;
    last.expect("a scrape")
}

/// One scrape.
pub(crate) struct Metrics {
    /// The whole answer, in the Prometheus text format.
    pub(crate) text: String,
}

impl Metrics {
    /// Every sample of `name`: its labels and value.
    fn samples<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (BTreeMap<String, String>, f64)> + 'a {
        self.text.lines().filter_map(move |line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = if let Some(rest) = rest.strip_prefix('{') {
                let (labels, value) = rest.split_once("} ")?;
                let labels = labels
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (key, value) = pair.split_once("=\"").expect("key=\"value\"");
                        (key.to_owned(), value.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (labels, value)
            } else {
                (BTreeMap::new(), rest.strip_prefix(' ')?)
            };
            Some((labels, value.trim().parse().ok()?))
        })
    }

    /// The value of the sample of `name` with exactly these labels.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples(name)
            .find(|(labels, _)| *labels == want)
            .map(|(_, value)| value)
    }

    /// The value of a unary method's sample, which must exist.
    fn unary(&self, name: &str, service: &str, method: &str, code: Option<&str>) -> f64 {
        let mut labels = vec![
            ("grpc_type", "unary"),
            ("grpc_service", service),
            ("grpc_method", method),
        ];
        labels.extend(code.map(|code| ("grpc_code", code)));
        self.value(name, &labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in\n{}", self.text))
    }
}
