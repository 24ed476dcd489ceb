//! Logging through `tracing-subscriber` (the level filter from `RUST_LOG`, the format from
//! `log.format`), and the request ids that tie a request's log lines together.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderValue, Request, Response};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;
use tracing::instrument::Instrumented;
use tracing_subscriber::EnvFilter;
use uuid::Uuid;

use crate::config::LogFormat;

/// The filter when `RUST_LOG` is unset: our info lines; sqlx only when something is wrong.
const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// Installs the global subscriber. Calling it twice keeps the first one.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _already_set = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The metadata key of a request's id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest request id taken from a client; a longer one is replaced by a generated id.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// A tower layer for the gRPC server that gives each request an id: the client's `x-request-id`
/// when it sent a usable one (1 to 128 printable ASCII characters, no spaces), a new UUID v4
/// otherwise. The id is echoed in the response metadata, and every log line written while the
/// request is handled carries it, as the `request_id` field of a span named `grpc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

/// The service [`RequestIdLayer`] wraps around the gRPC routes.
#[derive(Debug, Clone)]
pub struct RequestIdService<S> {
    inner: S,
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
        let id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .filter(|value| is_usable_request_id(value.as_bytes()))
            .cloned()
            .unwrap_or_else(new_request_id);
        // Handlers see the id that is logged and echoed, also when it was generated here.
        request.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
        let span = tracing::info_span!(
            "grpc",
            request_id = std::str::from_utf8(id.as_bytes()).unwrap_or_default()
        );
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

    #[test]
    fn generated_ids_are_uuids() {
        let id = new_request_id();
        let parsed = Uuid::parse_str(id.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
    }
}
