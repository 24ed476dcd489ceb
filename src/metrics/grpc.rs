//! The gRPC server metrics of go-grpc-prometheus, with its exact names, labels and buckets, so that
//! the dashboards and alerts operators already have for Go gRPC servers work unchanged:
//!
//! - `grpc_server_started_total`, `grpc_server_msg_received_total`, `grpc_server_msg_sent_total`
//!   and the histogram `grpc_server_handling_seconds`, labelled `grpc_type` (`unary`,
//!   `client_stream`, `server_stream`, `bidi_stream`), `grpc_service` (the full proto name, e.g.
//!   `registryfacade.SpecProvider`) and `grpc_method`;
//! - `grpc_server_handled_total`, with `grpc_code` too (`OK`, `NotFound`, ... as Go spells them).
//!
//! [`GrpcMetricsLayer`] measures at the HTTP/2 level, under tonic: it reads the method from the
//! path, counts messages by their gRPC frame headers, and takes the code from the `grpc-status`
//! trailer (or header, for a "trailers-only" answer). It also writes each RPC's log line (see
//! [`super::rpc_log`]), so that method, code and latency are known in one place. An RPC whose stream is dropped before it
//! ends (the client went away) counts as `Canceled`, as grpc-go reports it. As in go-grpc-prometheus,
//! every series of every served method exists from the start (at 0), and a method the server does
//! not serve is not counted (its path is chosen by clients, which must not create series).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use prost::Message;
use tower_layer::Layer;
use tower_service::Service;

use super::rpc_log;
use crate::framing::FrameCounter;

/// The codes of gRPC, indexed by their number, named as grpc-go's `codes.Code.String()` does.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const CANCELED: usize = 1;
const UNKNOWN: usize = 2;

/// go-grpc-prometheus's default buckets (Prometheus's `DefBuckets`).
const HANDLING_SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The series of one method, created once so that an RPC only increments atomics.
struct MethodMetrics {
    /// `package.Service/Method`, as log lines name it.
    name: String,
    started: IntCounter,
    msg_received: IntCounter,
    msg_sent: IntCounter,
    handled: [IntCounter; CODE_NAMES.len()],
    handling_seconds: Histogram,
}

/// The gRPC server metrics of every served method, by request path (`/package.Service/Method`).
pub struct GrpcMetrics {
    methods: HashMap<String, Arc<MethodMetrics>>,
}

/// Why the gRPC metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum GrpcMetricsError {
    /// A family could not be created or registered.
    #[error(transparent)]
    Prometheus(#[from] prometheus::Error),
    /// A descriptor set does not decode.
    #[error("decoding a file descriptor set: {0}")]
    Descriptor(#[from] prost::DecodeError),
    /// A served service has no descriptor, so its methods and their types are unknown.
    #[error("no descriptor describes the service {0}")]
    UnknownService(String),
}

impl GrpcMetrics {
    /// Registers the families in `registry` and creates the series of every method of the
    /// `services` (full proto names), whose methods and streaming types are read from the encoded
    /// `descriptor_sets`.
    pub fn new(
        registry: &Registry,
        services: &[&str],
        descriptor_sets: &[&[u8]],
    ) -> Result<Self, GrpcMetricsError> {
        const LABELS: &[&str] = &["grpc_type", "grpc_service", "grpc_method"];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            super::register(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
        };
        let started = counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            LABELS,
        )?;
        let handled = counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        )?;
        let msg_received = counter(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            LABELS,
        )?;
        let msg_sent = counter(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            LABELS,
        )?;
        let handling_seconds = super::register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "grpc_server_handling_seconds",
                    "Histogram of response latency (seconds) of gRPC that had been \
                     application-level handled by the server.",
                )
                .buckets(HANDLING_SECONDS_BUCKETS.to_vec()),
                LABELS,
            )?,
        )?;

        let mut methods = HashMap::new();
        let mut found = Vec::new();
        for set in descriptor_sets {
            let set = prost_types::FileDescriptorSet::decode(*set)?;
            for file in &set.file {
                for service in &file.service {
                    let full_name = match file.package() {
                        "" => service.name().to_owned(),
                        package => format!("{package}.{}", service.name()),
                    };
                    if !services.contains(&full_name.as_str()) {
                        continue;
                    }
                    for method in &service.method {
                        let grpc_type = match (method.client_streaming(), method.server_streaming())
                        {
                            (false, false) => "unary",
                            (true, false) => "client_stream",
                            (false, true) => "server_stream",
                            (true, true) => "bidi_stream",
                        };
                        let labels = [grpc_type, full_name.as_str(), method.name()];
                        let metrics = MethodMetrics {
                            name: format!("{full_name}/{}", method.name()),
                            started: started.with_label_values(&labels),
                            msg_received: msg_received.with_label_values(&labels),
                            msg_sent: msg_sent.with_label_values(&labels),
                            handled: CODE_NAMES.map(|code| {
                                handled.with_label_values(&[
                                    grpc_type,
                                    full_name.as_str(),
                                    method.name(),
                                    code,
                                ])
                            }),
                            handling_seconds: handling_seconds.with_label_values(&labels),
                        };
                        methods.insert(format!("/{}", metrics.name), Arc::new(metrics));
                    }
                    found.push(full_name);
                }
            }
        }
        if let Some(missing) = services.iter().find(|s| !found.iter().any(|f| f == *s)) {
            return Err(GrpcMetricsError::UnknownService((*missing).to_owned()));
        }
        Ok(Self { methods })
    }
}

/// A tower layer for the tonic server that moves the [`GrpcMetrics`] and writes each RPC's log
/// line.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<GrpcMetrics>,
}

impl GrpcMetricsLayer {
    /// A layer counting into `metrics`; it logs the RPCs of every service it wraps.
    pub fn new(metrics: Arc<GrpcMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around the gRPC routes.
#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
}

impl<S, ResBody> Service<Request<tonic::body::Body>> for GrpcMetricsService<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<ResBody>>,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let Some(method) = self.metrics.methods.get(request.uri().path()) else {
            return MeteredFuture {
                inner: rpc_log::with_slot(self.inner.call(request)),
                call: None,
            };
        };
        method.started.inc();
        let received = method.msg_received.clone();
        let request = request
            .map(|body| tonic::body::Body::new(MeteredBody::new(body, Some(received), None)));
        MeteredFuture {
            inner: rpc_log::with_slot(self.inner.call(request)),
            call: Some(Call {
                method: method.clone(),
                started: Instant::now(),
                done: false,
            }),
        }
    }
}

/// One RPC in progress. Dropped before it was finished, it counts as `Canceled`: the stream ended
/// without an answer, which is what a client going away does.
struct Call {
    method: Arc<MethodMetrics>,
    started: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: usize) {
        if !self.done {
            self.done = true;
            self.method.handled[code].inc();
            self.method
                .handling_seconds
                .observe(self.started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(CANCELED);
    }
}

/// The name of `code` as grpc-go spells it (`OK`, `Canceled`, `NotFound`, ...), which is what
/// dashboards and log queries built for Go servers expect.
pub fn code_name(code: tonic::Code) -> &'static str {
    usize::try_from(code as i32)
        .ok()
        .and_then(|index| CODE_NAMES.get(index))
        .copied()
        .unwrap_or(CODE_NAMES[UNKNOWN])
}

/// The code numbered `index` in [`CODE_NAMES`].
fn code_of(index: usize) -> tonic::Code {
    i32::try_from(index).map_or(tonic::Code::Unknown, tonic::Code::from)
}

/// The code of a `grpc-status` in `headers`, if there is one. A value that is not a known code
/// counts as `Unknown`, as gRPC clients treat it.
fn grpc_code(headers: &HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?;
    let code = std::str::from_utf8(value.as_bytes())
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
        .filter(|code| *code < CODE_NAMES.len())
        .unwrap_or(UNKNOWN);
    Some(code)
}

pin_project_lite::pin_project! {
    /// The response future of [`GrpcMetricsService`].
    pub struct MeteredFuture<F> {
        #[pin]
        inner: rpc_log::Noted<F>,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<MeteredBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = ready!(this.inner.as_mut().poll(cx));
        let note = rpc_log::take_note(this.inner);
        let mut call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                let code = grpc_code(response.headers());
                if let (Some(call), Some(code)) = (call.as_mut(), code) {
                    // Trailers-only: the answer is complete with its headers.
                    call.finish(code);
                }
                if let (Some(call), Some(note)) = (call.as_ref(), note) {
                    // The line is written once the handler has answered, as its own would be: a
                    // trailers-only answer is an error, any other the handler's success.
                    let code = code.map_or(tonic::Code::Ok, code_of);
                    rpc_log::write(&call.method.name, note, code, &response, call.started);
                }
                let sent = call.as_ref().map(|call| call.method.msg_sent.clone());
                Ok(response
                    .map(|inner| MeteredBody::new(inner, sent, call.filter(|call| !call.done))))
            }
            Err(err) => {
                if let Some(call) = call.as_mut() {
                    call.finish(UNKNOWN);
                }
                Err(err)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A request or response body that counts the messages it carries and, for a response,
    /// finishes the RPC's [`Call`] with the code of its trailers.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        frames: FrameCounter,
        messages: Option<IntCounter>,
        call: Option<Call>,
    }
}

impl<B> MeteredBody<B> {
    /// `inner`, counting its messages into `messages`, and finishing `call` when it ends.
    fn new(inner: B, messages: Option<IntCounter>, call: Option<Call>) -> Self {
        Self {
            inner,
            frames: FrameCounter::default(),
            messages,
            call,
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(messages) = this.messages.as_ref() {
                        let completed = this.frames.feed(data);
                        if completed > 0 {
                            messages.inc_by(completed);
                        }
                    }
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = this.call.as_mut()
                {
                    call.finish(grpc_code(trailers).unwrap_or(UNKNOWN));
                }
            }
            Some(Err(_)) | None => {
                // A body that fails, or ends without trailers, is no proper gRPC answer.
                if let Some(call) = this.call.as_mut() {
                    call.finish(UNKNOWN);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_status_values_map_to_go_code_names() {
        let code = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-status", value.parse().unwrap());
            CODE_NAMES[grpc_code(&headers).unwrap()]
        };
        assert_eq!(code("0"), "OK");
        assert_eq!(code("1"), "Canceled");
        assert_eq!(code("5"), "NotFound");
        assert_eq!(code("16"), "Unauthenticated");
        assert_eq!(code("17"), "Unknown");
        assert_eq!(code("x"), "Unknown");
        assert_eq!(grpc_code(&HeaderMap::new()), None);
        assert_eq!(code_name(tonic::Code::Cancelled), "Canceled");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "InvalidArgument");
    }

    #[test]
    fn every_method_of_a_served_service_gets_its_series_at_zero() {
        let registry = Registry::new();
        GrpcMetrics::new(
            &registry,
            &["grpc.health.v1.Health"],
            &[tonic_health::pb::FILE_DESCRIPTOR_SET],
        )
        .unwrap();
        let mut text = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut text,
        )
        .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains(
            "grpc_server_handled_total{grpc_code=\"Unavailable\",grpc_method=\"Check\",\
             grpc_service=\"grpc.health.v1.Health\",grpc_type=\"unary\"} 0"
        ));
        assert!(text.contains(
            "grpc_server_started_total{grpc_method=\"Watch\",grpc_service=\"grpc.health.v1.Health\",\
             grpc_type=\"server_stream\"} 0"
        ));
    }

    #[test]
    fn a_service_without_a_descriptor_is_an_error() {
        let err = GrpcMetrics::new(
            &Registry::new(),
            &["no.such.Service"],
            &[tonic_health::pb::FILE_DESCRIPTOR_SET],
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("no.such.Service"));
    }
}
