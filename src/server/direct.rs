//! GetImageSpec straight to its service, past tonic's router.
//!
//! tonic routes a request by its service name through an axum router, which on every call
//! matches the path against a wildcard route, stores the matched parameters in the request's
//! extensions, and boxes the answer's body once more. GetImageSpec is the call of every image
//! pull (and of every probe for an id that does not exist) and its path is one fixed string, so
//! the innermost layer hands it to [`SpecProviderServer`] itself and sends every other path on to
//! the router. The layers around it (request id, metrics, authentication) and tonic's own
//! (timeout, load shedding) apply to both alike; what was saved is in docs/benchmarks.md, "The
//! unknown-id path".

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::TryFutureExt as _;
use futures::future::{BoxFuture, Either, MapErr};
use http::{Request, Response};
use http_body::Body;
use tonic::codegen::StdError;
use tower_layer::Layer;
use tower_service::Service;

use crate::api::SpecProviderServer;

/// Routes GetImageSpec to `provider`, when there is one (the SpecAdmin listener has none).
#[derive(Clone)]
pub(super) struct DirectLayer {
    provider: Option<SpecProviderServer>,
}

impl DirectLayer {
    /// A layer routing GetImageSpec to `provider`; with `None`, it routes nothing itself.
    pub(super) fn new(provider: Option<SpecProviderServer>) -> Self {
        Self { provider }
    }
}

impl<S> Layer<S> for DirectLayer {
    type Service = Direct<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Direct {
            provider: self.provider.clone(),
            inner,
        }
    }
}

/// The service of [`DirectLayer`] around tonic's router.
#[derive(Clone)]
pub(super) struct Direct<S> {
    provider: Option<SpecProviderServer>,
    inner: S,
}

type Answer = Response<tonic::body::Body>;

impl<S, B> Service<Request<B>> for Direct<S>
where
    S: Service<Request<B>, Response = Answer>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = Answer;
    type Error = S::Error;
    type Future = Either<
        S::Future,
        MapErr<BoxFuture<'static, Result<Answer, Infallible>>, fn(Infallible) -> S::Error>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The provider is always ready.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match &self.provider {
            Some(provider) if request.uri().path() == SpecProviderServer::GET_IMAGE_SPEC_PATH => {
                let never: fn(Infallible) -> S::Error = |never| match never {};
                Either::Right(provider.get_image_spec(request).map_err(never))
            }
            _ => Either::Left(self.inner.call(request)),
        }
    }
}
