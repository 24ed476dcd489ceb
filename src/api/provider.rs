//! `registryfacade.SpecProvider`: the hot read path of every image pull.
//!
//! The service is wired here by hand instead of through tonic's generated `SpecProviderServer`,
//! for one reason: a found answer is encoded and framed once, when it is read from the store, and
//! the read cache keeps those bytes, so a cache hit neither clones nor encodes a spec: the cached
//! bytes go to HTTP/2 as the DATA frame's payload, without tonic's per-answer buffer
//! ([`super::wire`]). The wire contract is unchanged; the tests compare the bytes served with
//! prost's encoding of the same message.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::anyhow;
use bytes::Bytes;
use http_body::Body;
use tonic::Status;
use tonic::codegen::{BoxFuture, StdError};
use tonic::server::NamedService;

use super::convert::decode_spec;
use super::{ApiState, wire};
use crate::cache::Loaded;
use crate::domain::validate::validate_get;
use crate::domain::{Error, micros_now};
use crate::framing;
use crate::metrics::rpc_log::{RpcKind, note};
use crate::proto::registryfacade::spec_provider_server::SERVICE_NAME;
use crate::proto::registryfacade::{GetImageSpecRequest, GetImageSpecResponse};

/// The SpecProvider service registry facades call.
#[derive(Clone)]
pub struct ProviderService {
    state: ApiState,
    not_found: wire::NotFound,
}

impl ProviderService {
    /// The service over shared state.
    pub fn new(state: ApiState) -> Self {
        Self {
            state,
            not_found: wire::NotFound::new(),
        }
    }

    /// The answer to a GetImageSpec of `raw_id`: the framed `GetImageSpecResponse`, or NOT_FOUND.
    async fn get_image_spec(
        &self,
        raw_id: &str,
    ) -> Result<http::Response<tonic::body::Body>, Error> {
        let id = validate_get(raw_id)?;
        let store = self.state.store()?;
        let answer = self
            .state
            .cache
            .get_or_load(id.as_str(), || async {
                store
                    .get_spec(&id, micros_now())
                    .await?
                    .map(|served| Loaded::from_served(served, encode_answer))
                    .transpose()
            })
            .await?;
        Ok(match answer {
            Some(answer) => wire::answer(answer),
            None => self.not_found.answer(&id),
        })
    }
}

/// The framed `GetImageSpecResponse` (see [`framing::frame`]) that carries a stored spec. The
/// stored bytes are decoded and encoded again rather than framed as they are: what is sent is
/// then prost's encoding of a valid spec whatever the database holds, and a damaged row is an
/// error here, once per miss, not a malformed answer to every registry facade.
fn encode_answer(stored: &[u8]) -> Result<Bytes, Error> {
    let spec = decode_spec(stored)?;
    framing::frame(&GetImageSpecResponse { spec: Some(spec) })
        .ok_or_else(|| Error::Internal(anyhow!("a stored spec is too large to send")))
}

/// The tower service of `registryfacade.SpecProvider`, for tonic's router.
#[derive(Clone)]
pub struct SpecProviderServer {
    inner: Arc<ProviderService>,
}

impl SpecProviderServer {
    /// The one method of the service, as a request path: what the generated router would match.
    pub const GET_IMAGE_SPEC_PATH: &str = "/registryfacade.SpecProvider/GetImageSpec";

    /// Serves `service`.
    pub fn new(service: ProviderService) -> Self {
        Self {
            inner: Arc::new(service),
        }
    }

    /// Answers `request`, a call of [`Self::GET_IMAGE_SPEC_PATH`] (the path is not checked again:
    /// the caller routed it here by its path).
    pub fn get_image_spec<B>(
        &self,
        request: http::Request<B>,
    ) -> BoxFuture<http::Response<tonic::body::Body>, Infallible>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<StdError> + Send + 'static,
    {
        let service = self.inner.clone();
        Box::pin(async move {
            let id = match wire::read_unary::<GetImageSpecRequest, B>(request).await {
                Ok(request) => request.id,
                Err(status) => return Ok(status.into_http()),
            };
            let answer = service.get_image_spec(&id).await;
            // Moved, not copied: on a cache hit the answer allocates nothing of its own.
            note(RpcKind::Read, id);
            Ok(answer.unwrap_or_else(|err| Status::from(err).into_http()))
        })
    }
}

impl NamedService for SpecProviderServer {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> tower_service::Service<http::Request<B>> for SpecProviderServer
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != Self::GET_IMAGE_SPEC_PATH {
            // UNIMPLEMENTED, as tonic's generated services answer it.
            return Box::pin(async { Ok(wire::trailers_only(tonic::Code::Unimplemented, None)) });
        }
        self.get_image_spec(request)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::proto::registryfacade::ImageSpec;

    #[test]
    fn the_answer_is_prosts_encoding_of_the_response_with_the_stored_spec() {
        let spec = ImageSpec {
            base_ref: "docker.io/library/ubuntu:24.04".into(),
            ide_layer_ref: vec!["ide:1".into()],
            ..ImageSpec::default()
        };
        let framed = encode_answer(&spec.encode_to_vec()).unwrap();
        let (prefix, answer) = framed.split_at(framing::PREFIX_BYTES);
        assert_eq!(prefix[0], 0, "not compressed");
        assert_eq!(
            prefix[1..],
            u32::try_from(answer.len()).unwrap().to_be_bytes()
        );
        assert_eq!(
            answer,
            GetImageSpecResponse {
                spec: Some(spec.clone())
            }
            .encode_to_vec()
            .as_slice()
        );
        assert_eq!(
            GetImageSpecResponse::decode(answer).unwrap().spec,
            Some(spec)
        );
    }

    #[test]
    fn an_empty_spec_is_still_sent_as_a_present_spec() {
        let framed = encode_answer(&[]).unwrap();
        assert_eq!(
            framed.as_ref(),
            [0, 0, 0, 0, 2, 0x0a, 0x00],
            "a 2-byte message: field 1, length 0"
        );
    }

    #[test]
    fn a_damaged_stored_spec_is_an_internal_error() {
        assert!(matches!(encode_answer(&[0xff]), Err(Error::Internal(_))));
    }
}
