//! Logging through `tracing-subscriber` (the level filter from `RUST_LOG`, the format from
//! `log.format`), optional OpenTelemetry trace export over OTLP (`tracing.otlp_endpoint`), and the
//! request ids that tie a request's log lines and spans together.

use std::future::Future;
use std::io::IsTerminal;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use anyhow::Context as _;
use http::{HeaderValue, Request, Response};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;
use tracing::instrument::Instrumented;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};
use uuid::Uuid;

use crate::config::{LogFormat, Settings, TracingSettings};

/// The filter when `RUST_LOG` is unset: our info lines; sqlx only when something is wrong.
const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// Keeps trace export running; [`Telemetry::shutdown`] flushes the spans not yet exported.
#[must_use = "dropping the guard without shutdown may lose the last spans"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "flushing the last traces failed");
        }
    }
}

/// Installs the global subscriber: log lines in `log.format` on standard output, and spans
/// exported over OTLP when `tracing.otlp_endpoint` is set. Must run inside the tokio runtime (the
/// exporter runs on it). Calling it twice keeps the first subscriber.
pub fn init(settings: &Settings) -> anyhow::Result<Telemetry> {
    install(settings, std::io::stdout, colours_wanted())
}

/// [`init`], with the log lines written to `writer` and never coloured: for the benchmark, whose
/// servers pay for logging as `spec-provider serve` does while their lines go elsewhere.
pub fn init_with_writer<W>(settings: &Settings, writer: W) -> anyhow::Result<Telemetry>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    install(settings, writer, false)
}

fn install<W>(settings: &Settings, writer: W, colours: bool) -> anyhow::Result<Telemetry>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let fmt = match settings.log.format {
        // Colours only for a person at a terminal: escape codes would litter a log file or a
        // collector's lines, and styling each request span's fields costs CPU time on every RPC.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(colours)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .boxed(),
    };
    let tracer_provider = tracer_provider(&settings.tracing)?;
    let otel = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
    });
    // A second call finds a subscriber installed and keeps it.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    Ok(Telemetry { tracer_provider })
}

/// Whether text log lines are coloured: when standard output (where they go) is a terminal and
/// `NO_COLOR` is unset or empty (<https://no-color.org>).
fn colours_wanted() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The OTLP/gRPC trace pipeline of `settings`, or `None` when export is off.
fn tracer_provider(settings: &TracingSettings) -> anyhow::Result<Option<SdkTracerProvider>> {
    if !settings.exports_spans() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(settings.otlp_endpoint.clone())
        .build()
        .context("setting up the OTLP exporter of tracing.otlp_endpoint")?;
    let processor = BatchSpanProcessor::builder(exporter, Tokio).build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .build(),
    ))
}

/// The metadata key of a request's id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest request id taken from a client; a longer one is replaced by a generated id.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// A tower layer for the gRPC server that gives each request an id: the client's `x-request-id`
/// when it sent a usable one (1 to 128 printable ASCII characters, no spaces), a new UUID v4
/// otherwise. The id is echoed in the response metadata, and every log line written while the
/// request is handled carries it, as the `request_id` field of a span named `grpc`.
#[derive(Debug, Clone, Copy)]
pub struct RequestIdLayer {
    /// Whether spans are exported (`tracing.otlp_endpoint`): only then do they carry the
    /// `otel.*` fields that name and classify them for export.
    exporting_spans: bool,
}

impl RequestIdLayer {
    /// The layer for a server whose trace export is set up by `tracing`.
    pub fn new(tracing: &TracingSettings) -> Self {
        Self {
            exporting_spans: tracing.exports_spans(),
        }
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService {
            inner,
            exporting_spans: self.exporting_spans,
        }
    }
}

/// The service [`RequestIdLayer`] wraps around the gRPC routes.
#[derive(Debug, Clone)]
pub struct RequestIdService<S> {
    inner: S,
    exporting_spans: bool,
}

impl<S, B, ResBody> Service<Request<B>> for RequestIdService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let mut id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .filter(|value| is_usable_request_id(value.as_bytes()))
            .cloned()
            .unwrap_or_else(new_request_id);
        // Sent as a never-indexed HPACK literal: an id is used once, and indexing each one would
        // evict what repeats from the header table (figures: docs/benchmarks-history.md).
        id.set_sensitive(true);
        // Handlers see the id that is logged and echoed, also when it was generated here.
        request.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
        // The fmt layer formats a span's fields when the span is made, on every RPC, so the
        // `otel.*` fields are added only when spans are exported (docs/benchmarks-history.md).
        let request_id = std::str::from_utf8(id.as_bytes()).unwrap_or_default();
        let span = if self.exporting_spans {
            tracing::info_span!(
                "grpc",
                request_id,
                otel.name = request.uri().path().trim_start_matches('/'),
                otel.kind = "server",
            )
        } else {
            tracing::info_span!("grpc", request_id)
        };
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        RequestIdFuture {
            inner: inner.instrument(span),
            id: Some(id),
        }
    }
}

fn is_usable_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_BYTES).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic)
}

fn new_request_id() -> HeaderValue {
    let mut buffer = Uuid::encode_buffer();
    let id = Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
    HeaderValue::from_str(id).expect("a UUID is a valid header value")
}

pin_project_lite::pin_project! {
    /// The response future of [`RequestIdService`]: adds the id to the response's headers.
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        id: Option<HeaderValue>,
    }
}

impl<F, ResBody, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if let (Ok(response), Some(id)) = (&mut result, this.id.take()) {
            response.headers_mut().insert(REQUEST_ID_HEADER, id);
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_printable_ids_are_taken_from_clients() {
        assert!(is_usable_request_id(b"3f2c9a7e-req-1"));
        assert!(is_usable_request_id(&[b'a'; MAX_REQUEST_ID_BYTES]));
        assert!(!is_usable_request_id(b""));
        assert!(!is_usable_request_id(&[b'a'; MAX_REQUEST_ID_BYTES + 1]));
        assert!(!is_usable_request_id(b"two words"));
        assert!(!is_usable_request_id(b"line\tbreak"));
    }

    #[tokio::test]
    async fn the_id_is_echoed_and_never_indexed() {
        let layer = RequestIdLayer::new(&TracingSettings::default());
        let mut service = layer.layer(tower::service_fn(|request: Request<()>| {
            let seen = request.headers().get(REQUEST_ID_HEADER).cloned();
            async move { Ok::<_, std::convert::Infallible>(Response::new(seen)) }
        }));
        for sent in [Some("client-chosen-1"), None] {
            let mut request = Request::new(());
            if let Some(sent) = sent {
                request
                    .headers_mut()
                    .insert(REQUEST_ID_HEADER, HeaderValue::from_static(sent));
            }
            let response = service.call(request).await.unwrap();
            let echoed = response.headers().get(REQUEST_ID_HEADER).unwrap();
            assert!(echoed.is_sensitive(), "{sent:?}: indexed in HPACK");
            // The handler saw the id that was echoed.
            assert_eq!(response.body().as_ref(), Some(echoed));
            if let Some(sent) = sent {
                assert_eq!(echoed, sent);
            }
        }
    }

    #[test]
    fn generated_ids_are_uuids() {
        let id = new_request_id();
        let parsed = Uuid::parse_str(id.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
    }
}
