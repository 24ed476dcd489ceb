//! The lean gRPC client of the hot scenarios, and the calls the scenarios make with it (or, for
//! ListSpecs, with tonic's).

use bytes::Bytes;
use prost::Message;
use spec_provider::framing;
use spec_provider::proto::registryfacade::GetImageSpecRequest;
use spec_provider::proto::specprovider::v1::spec_admin_client::SpecAdminClient;
use spec_provider::proto::specprovider::v1::{ListSpecsRequest, SpecView};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;

/// A gRPC client for the hot scenarios, straight on HTTP/2 (the `h2` crate): the load
/// generator shares the machine with the servers, so it does as little per request as it can.
/// A tonic `Channel` sends every request through a buffer task and decodes every answer; this
/// client frames the request, and keeps the answer as its bytes (compared, not decoded).
#[derive(Clone)]
pub(crate) struct Grpc {
    send: h2::client::SendRequest<Bytes>,
    authority: String,
    /// Sent with every call (`--token`).
    authorization: Option<tonic::codegen::http::HeaderValue>,
}

impl Grpc {
    /// Opens an HTTP/2 connection to `addr`, whose calls send `authorization`.
    pub(crate) async fn connect(
        addr: std::net::SocketAddr,
        authorization: Option<tonic::codegen::http::HeaderValue>,
    ) -> anyhow::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        // hyper's (and so tonic's) default windows, not h2's 64 KiB: with 64 KiB for the whole
        // connection, a few dozen concurrent answers of ~600 bytes wait for window updates.
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(2 * 1024 * 1024)
            .initial_connection_window_size(5 * 1024 * 1024)
            .handshake(tcp)
            .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            send,
            authority: addr.to_string(),
            authorization,
        })
    }

    /// Calls the unary method at `path` with `request`: the answer's bytes, or its grpc-status.
    async fn call(&self, path: &str, request: &impl Message) -> Result<Bytes, tonic::Code> {
        let mut http =
            tonic::codegen::http::Request::post(format!("http://{}{path}", self.authority))
                .header("content-type", "application/grpc")
                .header("te", "trailers");
        if let Some(value) = &self.authorization {
            http = http.header("authorization", value.clone());
        }
        let http = http.body(()).map_err(|_| tonic::Code::Internal)?;
        let body = framing::frame(request).ok_or(tonic::Code::Internal)?;
        let mut send = self
            .send
            .clone()
            .ready()
            .await
            .map_err(|_| tonic::Code::Unavailable)?;
        let (answer, mut stream) = send
            .send_request(http, false)
            .map_err(|_| tonic::Code::Unavailable)?;
        stream
            .send_data(body, true)
            .map_err(|_| tonic::Code::Unavailable)?;
        let answer = answer.await.map_err(|_| tonic::Code::Unavailable)?;
        let (head, mut body) = answer.into_parts();
        let mut data = bytes::BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|_| tonic::Code::Unavailable)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body
            .trailers()
            .await
            .map_err(|_| tonic::Code::Unavailable)?;
        // A trailers-only answer (an error) carries grpc-status in its headers.
        let status = trailers
            .as_ref()
            .and_then(|trailers| trailers.get("grpc-status"))
            .or_else(|| head.headers.get("grpc-status"))
            .and_then(|status| status.to_str().ok()?.parse::<i32>().ok())
            .map_or(tonic::Code::Unknown, tonic::Code::from_i32);
        if status != tonic::Code::Ok {
            return Err(status);
        }
        if data.len() < framing::PREFIX_BYTES {
            return Err(tonic::Code::Internal);
        }
        Ok(data.freeze().split_off(framing::PREFIX_BYTES))
    }
}

/// The bytes of a SERVING answer to Health/Check.
const SERVING: &[u8] = &[0x08, 0x01];

/// Health/Check; true if the answer is SERVING.
pub(crate) async fn check_ok(grpc: Grpc) -> bool {
    grpc.call(
        "/grpc.health.v1.Health/Check",
        &HealthCheckRequest::default(),
    )
    .await
    .is_ok_and(|answer| answer == SERVING)
}

/// Asks for `id`; true if the answer is `want` (the exact bytes of the found answer, or NOT_FOUND
/// for `None`).
pub(crate) async fn get_ok(grpc: Grpc, id: String, want: Option<Bytes>) -> bool {
    let answer = grpc
        .call(
            "/registryfacade.SpecProvider/GetImageSpec",
            &GetImageSpecRequest { id },
        )
        .await;
    match (answer, want) {
        (Ok(answer), Some(want)) => answer == want,
        (Err(code), None) => code == tonic::Code::NotFound,
        _ => false,
    }
}

/// A ListSpecs page of 100 ids from `page_token` on; true if it holds 100.
pub(crate) async fn list_ok(channel: Channel, page_token: String) -> bool {
    SpecAdminClient::new(channel)
        .list_specs(ListSpecsRequest {
            page_size: 100,
            page_token,
            view: SpecView::Basic.into(),
            ..ListSpecsRequest::default()
        })
        .await
        .is_ok_and(|r| r.into_inner().specs.len() == 100)
}
