//! Transport abuse against a running server: wrong protocols, garbage, streams that never send,
//! peers that never answer, oversized metadata and messages, floods of connections. Each gets a
//! clean error or a closed connection, and the server keeps answering everyone else.

use std::time::{Duration, Instant};

use prost::Message;
use spec_provider::proto::registryfacade::spec_provider_client::SpecProviderClient;
use spec_provider::proto::registryfacade::{GetImageSpecRequest, GetImageSpecResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::app::{DEADLINE, TestApp, eventually, spawn_app_with};
use crate::db::Backend;
use crate::fixtures::{full_spec, put};

/// The HTTP/2 connection preface a client starts with, and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// The server answers on a new connection and on its existing one, and still has its data.
async fn assert_still_answers(app: &TestApp) {
    let channel = Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .expect("a new connection");
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
    let spec = app
        .provider
        .clone()
        .get_image_spec(GetImageSpecRequest { id: "ws-1".into() })
        .await
        .unwrap()
        .into_inner()
        .spec;
    assert_eq!(spec, Some(full_spec(1)));
}

/// A server on SQLite holding `ws-1`, with `customize` applied to its settings.
async fn app_with(customize: impl FnOnce(&mut spec_provider::config::Settings)) -> TestApp {
    let app = spawn_app_with(Backend::Sqlite, customize).await;
    app.admin
        .clone()
        .put_spec(put("ws-1", full_spec(1)))
        .await
        .unwrap();
    app
}

/// Reads until the server closes the connection (or resets it); returns what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = async {
        let mut buf = [0; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the server closed the connection within the deadline");
    received
}

/// The types of the HTTP/2 frames in `bytes` (after no preface: the server sends none).
fn frame_types(bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let length = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        types.push(rest[3]);
        rest = &rest[(9 + length).min(rest.len())..];
    }
    types
}

#[tokio::test]
async fn an_http1_request_gets_no_answer_but_a_closed_connection() {
    let app = app_with(|_| {}).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /registryfacade.SpecProvider/GetImageSpec HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let received = read_until_closed(&mut stream).await;
    let text = String::from_utf8_lossy(&received);
    assert!(!text.contains("HTTP/1.1 200"), "{text}");
    assert_still_answers(&app).await;
}

#[tokio::test]
async fn random_bytes_close_the_connection_before_and_after_the_preface() {
    let app = app_with(|_| {}).await;
    // Deterministic garbage: a hash chain.
    let garbage: Vec<u8> = (0u32..2048)
        .flat_map(|i| {
            use sha2::Digest;
            sha2::Sha256::digest(i.to_be_bytes()).to_vec()
        })
        .collect();
    for prefix in [&b""[..], PREFACE] {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        // The server may close before it has read everything: a failed write is fine.
        let _ = stream.write_all(prefix).await;
        let _ = stream.write_all(&garbage).await;
        let received = read_until_closed(&mut stream).await;
        if !prefix.is_empty() {
            // After the preface the server says why it closes: a GOAWAY frame.
            const GOAWAY: u8 = 0x7;
            assert!(
                frame_types(&received).contains(&GOAWAY),
                "frames received: {:?}",
                frame_types(&received)
            );
        }
    }
    assert_still_answers(&app).await;
}

#[tokio::test]
async fn a_stream_that_never_sends_its_request_is_cancelled_after_the_request_timeout() {
    let request_timeout = Duration::from_millis(500);
    let app = app_with(|settings| {
        settings.server.request_timeout = request_timeout;
        settings.server.max_concurrent_streams = 7;
    })
    .await;
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{}/specprovider.v1.SpecAdmin/PutSpec",
            app.addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let started = Instant::now();
    // The request body stays open and empty: the client never sends its message.
    let (response, _never_sent) = client.send_request(request, false).unwrap();
    let response = tokio::time::timeout(DEADLINE, response)
        .await
        .expect("the server answered within the deadline")
        .unwrap();
    let took = started.elapsed();
    let (parts, mut body) = response.into_parts();
    let grpc_status = match parts.headers.get("grpc-status") {
        Some(status) => status.clone(),
        None => {
            while body.data().await.is_some() {}
            body.trailers().await.unwrap().unwrap()["grpc-status"].clone()
        }
    };
    assert_eq!(grpc_status, (Code::Cancelled as i32).to_string().as_str());
    assert!(took >= request_timeout, "{took:?}");
    assert!(took < request_timeout + Duration::from_secs(5), "{took:?}");
    // The setting reached the client in the server's SETTINGS.
    assert_eq!(client.current_max_send_streams(), 7);
    assert_still_answers(&app).await;
}

#[tokio::test]
async fn a_peer_that_never_answers_pings_is_disconnected_after_the_keepalive_timeout() {
    let app = app_with(|settings| {
        settings.server.http2_keepalive_interval = Duration::from_millis(200);
        settings.server.http2_keepalive_timeout = Duration::from_millis(200);
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    // From here on the peer reads but never writes: no SETTINGS ack, no PING ack.
    let received = read_until_closed(&mut stream).await;
    const PING: u8 = 0x6;
    assert!(
        frame_types(&received).contains(&PING),
        "frames received: {:?}",
        frame_types(&received)
    );
    assert_still_answers(&app).await;
}

#[tokio::test]
async fn oversized_metadata_is_refused_with_resource_exhausted_and_the_server_goes_on() {
    let app = app_with(|_| {}).await;
    let mut request = tonic::Request::new(GetImageSpecRequest { id: "ws-1".into() });
    request
        .metadata_mut()
        .insert("x-padding", "a".repeat(64 * 1024).parse().unwrap());
    let refused = app
        .provider
        .clone()
        .get_image_spec(request)
        .await
        .unwrap_err();
    // The server ends that connection (GOAWAY, ENHANCE_YOUR_CALM): the client sees
    // RESOURCE_EXHAUSTED, and its channel reconnects for the next RPC.
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_still_answers(&app).await;
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_out_of_range() {
    let app = app_with(|_| {}).await;
    // GetImageSpec takes requests of up to 64 KiB: its request is an id.
    let mut provider =
        SpecProviderClient::new(app.channel.clone()).max_encoding_message_size(usize::MAX);
    let refused = provider
        .get_image_spec(GetImageSpecRequest {
            id: "a".repeat(5 * 1024 * 1024),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert_still_answers(&app).await;
}

/// The path GetImageSpec is called at.
const GET_IMAGE_SPEC: &str = "/registryfacade.SpecProvider/GetImageSpec";

/// What a raw HTTP/2 client received for one request: the response head, its DATA frames and
/// its trailers.
struct RawAnswer {
    head: http::response::Parts,
    /// Whether the stream ended with the head: a trailers-only answer.
    ended_with_head: bool,
    data: Vec<bytes::Bytes>,
    trailers: Option<http::HeaderMap>,
}

/// Sends `body` to `path` on `app` over a raw HTTP/2 connection, with the gRPC request headers
/// and `extra_headers`.
async fn raw_unary(
    app: &TestApp,
    path: &str,
    extra_headers: &[(&str, &str)],
    body: Vec<u8>,
) -> RawAnswer {
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}{path}", app.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in extra_headers {
        request = request.header(*name, *value);
    }
    let (response, mut send) = client
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    send.send_data(body.into(), true).unwrap();
    tokio::time::timeout(DEADLINE, async {
        let (head, mut body) = response.await.unwrap().into_parts();
        let ended_with_head = body.is_end_stream();
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            data.push(chunk);
        }
        let trailers = body.trailers().await.unwrap();
        RawAnswer {
            head,
            ended_with_head,
            data,
            trailers,
        }
    })
    .await
    .expect("an answer within the deadline")
}

/// `message` framed as a gRPC message: flag 0, its length, its bytes.
fn framed(message: &impl Message) -> Vec<u8> {
    spec_provider::framing::frame(message).unwrap().to_vec()
}

#[tokio::test]
async fn a_get_image_spec_answer_has_the_shape_of_tonics_answers_on_the_wire() {
    let app = app_with(|_| {}).await;
    let request = framed(&GetImageSpecRequest { id: "ws-1".into() });
    // The first call fills the cache, the second is a hit: both go out the same way.
    for _ in 0..2 {
        let answer = raw_unary(&app, GET_IMAGE_SPEC, &[], request.clone()).await;
        assert_eq!(answer.head.status, http::StatusCode::OK);
        assert_eq!(answer.head.headers["content-type"], "application/grpc");
        assert_eq!(
            answer.head.headers.get("grpc-status"),
            None,
            "not trailers-only"
        );
        let expected = framed(&GetImageSpecResponse {
            spec: Some(full_spec(1)),
        });
        assert_eq!(answer.data.concat(), expected);
        let trailers = answer.trailers.expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers.len(), 1, "{trailers:?}");
    }
    // Health/Check goes through tonic's own machinery: the same head and trailers.
    let check = raw_unary(
        &app,
        "/grpc.health.v1.Health/Check",
        &[],
        framed(&HealthCheckRequest::default()),
    )
    .await;
    let hit = raw_unary(&app, GET_IMAGE_SPEC, &[], request).await;
    assert_eq!(
        header_names(&hit.head.headers),
        header_names(&check.head.headers)
    );
    assert_eq!(
        header_names(&hit.head.headers),
        ["content-type", "date", "x-request-id"],
        "no content-length, no grpc-status in the head"
    );
    assert_eq!(
        check.trailers.expect("trailers").keys().collect::<Vec<_>>(),
        ["grpc-status"]
    );
}

/// The sorted names of `headers`.
fn header_names(headers: &http::HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = headers.keys().map(ToString::to_string).collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_not_found_answer_is_trailers_only_with_its_code_message_and_the_echoed_request_id() {
    let app = app_with(|_| {}).await;
    let request = framed(&GetImageSpecRequest {
        id: "ws-absent".into(),
    });
    // The first answer comes from the store, the second from the negative cache: both go out
    // the same way, as one HEADERS frame that ends the stream.
    for source in ["the store", "the negative cache"] {
        let answer = raw_unary(
            &app,
            GET_IMAGE_SPEC,
            &[("x-request-id", "req-404")],
            request.clone(),
        )
        .await;
        assert!(answer.ended_with_head, "from {source}: trailers-only");
        assert!(answer.data.is_empty(), "from {source}: no message");
        assert!(answer.trailers.is_none(), "from {source}: no trailers");
        assert_eq!(answer.head.status, http::StatusCode::OK);
        let headers = &answer.head.headers;
        assert_eq!(
            header_names(headers),
            [
                "content-type",
                "date",
                "grpc-message",
                "grpc-status",
                "x-request-id"
            ],
            "from {source}"
        );
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["grpc-status"], "5", "NOT_FOUND");
        // Percent-encoded as gRPC's HTTP/2 mapping (and tonic) encode a status message.
        assert_eq!(
            headers["grpc-message"],
            "no%20spec%20with%20id%20%22ws-absent%22%20(it%20was%20never%20stored,%20was%20\
             deleted,%20or%20has%20expired)",
            "from {source}"
        );
        assert_eq!(headers["x-request-id"], "req-404", "from {source}");
    }
    // What a tonic client makes of it.
    let status = app
        .provider
        .clone()
        .get_image_spec(GetImageSpecRequest {
            id: "ws-absent".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.message(),
        "no spec with id \"ws-absent\" (it was never stored, was deleted, or has expired)"
    );
}

#[tokio::test]
async fn malformed_get_image_spec_requests_get_errors_that_say_what_is_wrong() {
    let app = app_with(|_| {}).await;
    let request = framed(&GetImageSpecRequest { id: "ws-1".into() });
    let status_of = |answer: &RawAnswer| {
        // Errors are trailers-only answers: the status is in the head.
        let code = answer.head.headers["grpc-status"]
            .to_str()
            .unwrap()
            .to_owned();
        let message = answer
            .head
            .headers
            .get("grpc-message")
            .map(|m| m.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (code, message)
    };

    let compressed = raw_unary(
        &app,
        GET_IMAGE_SPEC,
        &[("grpc-encoding", "gzip")],
        request.clone(),
    )
    .await;
    assert_eq!(
        status_of(&compressed).0,
        (Code::Unimplemented as i32).to_string()
    );
    assert_eq!(compressed.head.headers["grpc-accept-encoding"], "identity");

    let twice = [request.clone(), request.clone()].concat();
    let (code, message) = status_of(&raw_unary(&app, GET_IMAGE_SPEC, &[], twice).await);
    assert_eq!(code, (Code::Internal as i32).to_string());
    assert!(
        message.contains("one%20message%20is%20expected"),
        "{message}"
    );

    let (code, message) = status_of(&raw_unary(&app, GET_IMAGE_SPEC, &[], Vec::new()).await);
    assert_eq!(code, (Code::Internal as i32).to_string());
    assert!(message.contains("missing%20request%20message"), "{message}");

    assert_still_answers(&app).await;
}

/// Whether the server serves `stream`: it sends its HTTP/2 SETTINGS at once on a connection it
/// serves, and closes the others, so every connection shows which within the deadline.
async fn is_served(stream: &mut TcpStream) -> bool {
    let mut byte = [0; 1];
    match tokio::time::timeout(DEADLINE, stream.read(&mut byte)).await {
        Ok(Ok(0) | Err(_)) => false,
        Ok(Ok(_)) => true,
        Err(_) => panic!("a connection was neither served nor closed within {DEADLINE:?}"),
    }
}

#[tokio::test]
async fn a_connection_that_sends_no_preface_is_closed_after_the_preface_timeout_and_frees_its_permit()
 {
    let app = app_with(|settings| {
        // One permit, held by the test's own channel until the silent connection is gone.
        settings.server.max_connections = 2;
        settings.server.preface_timeout = Duration::from_millis(300);
    })
    .await;

    // Half a preface, then nothing: the server gives up on it (after its own SETTINGS).
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    silent.write_all(&b"PRI * HTTP/2.0\r\n"[..]).await.unwrap();
    let received = read_until_closed(&mut silent).await;
    assert_eq!(frame_types(&received), [0x4], "only the server's SETTINGS");

    // Its permit is free again: a new client is served (the server may notice the closed
    // connection a moment after the client does, hence the bounded retry).
    eventually("the silent connection's permit to come free", || async {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        is_served(&mut stream).await
    })
    .await;
    // A client that sends its preface in time is served as before.
    assert_still_answers(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_connections_are_bounded_by_max_connections() {
    const MAX: usize = 64;
    const FLOOD: usize = 2000;
    // Under any listen backlog a Linux host is likely to have (somaxconn is at least 128).
    const BATCH: usize = 100;
    let app = app_with(|settings| {
        settings.server.max_connections = MAX;
        // The flood stays silent; it must hold its permits for as long as the test takes.
        settings.server.preface_timeout = Duration::from_secs(3600);
    })
    .await;

    // All kept open at once, opened a batch at a time, each batch seen by the server before the
    // next: a loaded server must not let the kernel's accept queue overflow, which would leave
    // connections that the server never saw.
    let mut flood = Vec::with_capacity(FLOOD);
    let mut served = 0;
    while flood.len() < FLOOD {
        let batch = futures::future::join_all((0..BATCH).map(|_| TcpStream::connect(app.addr)));
        let mut batch: Vec<_> = batch
            .await
            .into_iter()
            .map(|stream| stream.expect("the kernel accepts the connection"))
            .collect();
        let seen = futures::future::join_all(batch.iter_mut().map(is_served)).await;
        served += seen.iter().filter(|served| **served).count();
        flood.append(&mut batch);
    }
    // The test's own channel holds the remaining permit.
    assert_eq!(served, MAX - 1);

    // The existing connection is served throughout.
    let spec = app
        .provider
        .clone()
        .get_image_spec(GetImageSpecRequest { id: "ws-1".into() })
        .await
        .unwrap()
        .into_inner()
        .spec;
    assert_eq!(spec, Some(full_spec(1)));

    // Once the flood is gone, new connections are served again (the server notices the closed
    // connections asynchronously, hence the bounded retry).
    drop(flood);
    eventually("a new connection to be served after the flood", || async {
        let Ok(channel) = Channel::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .connect()
            .await
        else {
            return false;
        };
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .is_ok()
    })
    .await;
    assert_still_answers(&app).await;
}
