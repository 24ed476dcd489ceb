//! The gRPC servers: the transport settings and the layer stack, built once and used by the
//! main listener and the SpecAdmin listener (`server.admin_listen`), which differ only in the
//! services they add.

use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::Router;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;
use tower_layer::{Identity, Stack};

use super::direct::DirectLayer;
use super::limits::limit_connections;
use super::shutdown::Drain;
use crate::api::{AdminService, ApiState, ProviderService, SpecProviderServer};
use crate::config::Settings;
use crate::metrics::grpc::{GrpcMetrics, GrpcMetricsLayer};
use crate::proto;
use crate::proto::specprovider::v1::spec_admin_server::SpecAdminServer;
use crate::security::auth::{AuthLayer, SharedCredentials};
use crate::security::tls::{ReloadingTls, incoming};
use crate::telemetry::RequestIdLayer;

/// The gRPC services whose health is reported individually (besides the overall `""`).
pub(super) const SERVICES: [&str; 2] = [
    <SpecProviderServer as NamedService>::NAME,
    <SpecAdminServer<AdminService> as NamedService>::NAME,
];

/// The services every method of which gets the gRPC metrics: ours, health and reflection.
pub(super) const METERED_SERVICES: [&str; 5] = [
    SERVICES[0],
    SERVICES[1],
    tonic_health::pb::health_server::SERVICE_NAME,
    tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
    tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
];

/// Room for a PutSpec request's id, labels and framing on top of the largest accepted spec, so that
/// an oversized spec gets our clear validation error rather than tonic's size limit.
const ADMIN_REQUEST_OVERHEAD_BYTES: usize = 256 * 1024;

/// The layers around every service, outermost first: the request id, the gRPC metrics, then
/// authentication, inside the metrics layer so that refused calls are counted with their codes,
/// and innermost GetImageSpec's own route past tonic's router ([`DirectLayer`]).
type Layers =
    Stack<DirectLayer, Stack<AuthLayer, Stack<GrpcMetricsLayer, Stack<RequestIdLayer, Identity>>>>;

/// A gRPC router with the layers and transport settings of every listener.
pub(super) type GrpcRouter = Router<Layers>;

/// The routers of the main listener and, with `server.admin_listen`, of the SpecAdmin listener.
/// With an admin listener SpecAdmin moves there, with health and reflection for probes and
/// tools, and the main listener serves no SpecAdmin.
pub(super) fn routers(
    settings: &Settings,
    state: ApiState,
    health: HealthServer<HealthService>,
    grpc_metrics: Arc<GrpcMetrics>,
    credentials: SharedCredentials,
    admin_listener: bool,
) -> anyhow::Result<(GrpcRouter, Option<GrpcRouter>)> {
    let server = &settings.server;
    // No `tcp_nodelay` here: it only applies to listeners tonic binds itself; `incoming` turns
    // Nagle's algorithm off on the connections it accepts.
    let layered = Server::builder()
        .max_concurrent_streams(server.max_concurrent_streams)
        .timeout(server.request_timeout)
        .http2_keepalive_interval(Some(server.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(server.http2_keepalive_timeout))
        .layer(RequestIdLayer::new(&settings.tracing))
        .layer(GrpcMetricsLayer::new(grpc_metrics))
        .layer(AuthLayer::new(credentials));
    let provider = SpecProviderServer::new(ProviderService::new(state.clone()));
    // What every listener serves; `provider` is routed directly where it is served.
    let common = |provider: Option<SpecProviderServer>| -> anyhow::Result<GrpcRouter> {
        Ok(layered
            .clone()
            .layer(DirectLayer::new(provider))
            .add_service(health.clone())
            .add_service(reflection_builder().build_v1()?))
    };

    let admin = SpecAdminServer::new(AdminService::new(state))
        .max_decoding_message_size(settings.limits.max_spec_bytes + ADMIN_REQUEST_OVERHEAD_BYTES);
    let (admin_on_main, admin_router) = if admin_listener {
        (None, Some(common(None)?.add_service(admin)))
    } else {
        (Some(admin), None)
    };
    // The router keeps SpecProvider's route too: its other paths get UNIMPLEMENTED from it.
    let main = common(Some(provider.clone()))?
        .add_service(reflection_builder().build_v1alpha()?)
        .add_service(provider)
        .add_optional_service(admin_on_main);
    Ok((main, admin_router))
}

/// Serves `main` and, with an admin listener, `admin`, each on its listener, until the drain
/// begins: `on_shutdown` is the main server's shutdown future, which begins it.
pub(super) async fn serve(
    main: (GrpcRouter, TcpListener),
    admin: Option<(GrpcRouter, TcpListener)>,
    settings: &Settings,
    tls: Option<Arc<ReloadingTls>>,
    drain: &Drain,
    on_shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    // Each listener admits at most `server.max_connections` connections at once (counted once
    // TLS is established; handshakes in progress are bounded by `tls.max_handshakes` and
    // `tls.handshake_timeout`), and closes those that send no HTTP/2 preface within
    // `server.preface_timeout`.
    let accept = |listener| {
        limit_connections(
            incoming(
                listener,
                tls.clone(),
                settings.tls.handshake_timeout,
                settings.tls.max_handshakes,
                drain.stop_accepting(),
            ),
            settings.server.max_connections,
            settings.server.preface_timeout,
        )
    };
    let (main, listener) = main;
    let serve_main = main.serve_with_incoming_shutdown(accept(listener), on_shutdown);
    match admin {
        Some((admin, listener)) => {
            let serve_admin = admin.serve_with_incoming_shutdown(
                accept(listener),
                drain.stop_accepting().cancelled_owned(),
            );
            tokio::try_join!(serve_main, serve_admin).map(|_| ())
        }
        None => serve_main.await,
    }
}

/// The reflection service: our two services and health, by an explicit allow-list.
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(SERVICES[0])
        .with_service_name(SERVICES[1])
        .with_service_name("grpc.health.v1.Health")
}
