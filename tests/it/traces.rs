//! OpenTelemetry trace export: the real binary sends its RPCs' spans to an OTLP/gRPC collector.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use spec_provider::proto::registryfacade::GetImageSpecRequest;
use spec_provider::proto::registryfacade::spec_provider_client::SpecProviderClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;

use crate::app::DEADLINE;
use crate::process::ServerProcess;

/// A stand-in collector that hands every export request to the test.
struct Collector(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_are_exported_as_server_spans_with_their_request_id() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    let (exports_tx, mut exports) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(exports_tx)))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("specs.db").display());
    let endpoint = format!("http://{collector_addr}");
    let mut server = ServerProcess::start(
        &url,
        &[("SPEC_PROVIDER__TRACING__OTLP_ENDPOINT", endpoint.as_str())],
    )
    .await;
    server.wait_until_serving().await;
    let mut request = tonic::Request::new(GetImageSpecRequest {
        id: "traced-id".into(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "trace-me-1".parse().unwrap());
    let status = SpecProviderClient::new(server.channel().await)
        .get_image_spec(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // Shutting down flushes the batch the span is in.
    server.terminate();
    assert_eq!(server.wait_for_exit(DEADLINE).await, Some(0));

    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(export) = exports.recv().await {
            for resource_spans in export.resource_spans {
                let service = resource_spans
                    .resource
                    .as_ref()
                    .and_then(|r| string_attribute(&r.attributes, "service.name"))
                    .map(str::to_owned);
                for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                    if string_attribute(&span.attributes, "request_id") == Some("trace-me-1") {
                        return (service, span);
                    }
                }
            }
        }
        panic!("the collector stopped before the span arrived");
    })
    .await
    .expect("the RPC's span reaches the collector within the deadline");
    let (service, span) = found;
    assert_eq!(service.as_deref(), Some("spec-provider"));
    assert_eq!(span.name, "registryfacade.SpecProvider/GetImageSpec");
    assert_eq!(span.kind, SpanKind::Server as i32);
}
