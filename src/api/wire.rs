//! gRPC on the wire for the hand-wired SpecProvider (`super::provider`): reading a unary
//! request, and sending an answer that is already a framed message.
//!
//! tonic's server machinery copies every answer into a fresh 8 KiB buffer to frame it, on every
//! call; the read cache keeps answers framed (see [`crate::framing::frame`]), so a hit hands the cached bytes
//! to HTTP/2 as they are. What goes on the wire is what tonic sends: response headers with
//! `content-type: application/grpc`, one DATA frame with the message, and `grpc-status: 0` in
//! the trailers; errors are tonic's trailers-only answers ([`Status::into_http`]), and
//! GetImageSpec's NOT_FOUND the same answer written directly ([`NotFound`]).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use prost::Message;
use tonic::codegen::StdError;
use tonic::metadata::{GRPC_CONTENT_TYPE, MetadataValue};
use tonic::{Code, Status};

use crate::domain::{Error, SpecId};
use crate::framing::split_message;

/// Most bytes a unary request's body may have. A GetImageSpec request is an id (at most 200
/// characters, see `SpecId`), so this is generous; what is larger is refused before it is read
/// in full.
pub const MAX_UNARY_REQUEST_BYTES: usize = 64 * 1024;

/// The header that names a message's compression, and the one that lists what a peer accepts.
const ENCODING_HEADER: &str = "grpc-encoding";
const ACCEPT_ENCODING_HEADER: &str = "grpc-accept-encoding";

/// The one message of a unary request. Errors are what tonic's unary handling answers: a
/// compressed request is UNIMPLEMENTED (this server accepts uncompressed messages only, and says
/// so in `grpc-accept-encoding`), a too large one OUT_OF_RANGE, a malformed one INTERNAL.
pub async fn read_unary<M, B>(request: http::Request<B>) -> Result<M, Status>
where
    M: Message + Default,
    B: Body,
    B::Error: Into<StdError>,
{
    if let Some(encoding) = request.headers().get(ENCODING_HEADER)
        && encoding != "identity"
    {
        let mut status = Status::unimplemented(format!(
            "the request is compressed with {encoding:?}; this server accepts uncompressed \
             messages only"
        ));
        status.metadata_mut().insert(
            ACCEPT_ENCODING_HEADER,
            MetadataValue::from_static("identity"),
        );
        return Err(status);
    }
    let body = read_body(request.into_body()).await?;
    decode_unary(&body)
}

/// A unary request's `body`, whole: its one DATA frame's bytes as they are (what clients send),
/// else its frames joined. What is larger than [`MAX_UNARY_REQUEST_BYTES`] is refused as soon as
/// it is known to be, before it is read in full. Written out rather than collected
/// (`http_body_util::Collected`): a collection is a queue allocated per request, on the path of
/// every image pull.
async fn read_body<B>(body: B) -> Result<Bytes, Status>
where
    B: Body,
    B::Error: Into<StdError>,
{
    let too_large = || {
        Status::out_of_range(format!(
            "the request is larger than {MAX_UNARY_REQUEST_BYTES} bytes"
        ))
    };
    let mut body = std::pin::pin!(body);
    if body.size_hint().lower() > MAX_UNARY_REQUEST_BYTES as u64 {
        return Err(too_large());
    }
    let mut first = Bytes::new();
    let mut joined = BytesMut::new();
    while let Some(frame) = body.frame().await {
        // The client went away, reset the stream, ...: tonic's mapping of h2's errors.
        let frame = frame.map_err(|err| Status::from_error(err.into()))?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        if first.len() + joined.len() + data.remaining() > MAX_UNARY_REQUEST_BYTES {
            return Err(too_large());
        }
        if first.is_empty() && joined.is_empty() {
            first = data.copy_to_bytes(data.remaining());
        } else {
            // From the second frame on, every byte is in `joined` (and counted once).
            if !first.is_empty() {
                joined.extend_from_slice(&std::mem::take(&mut first));
            }
            joined.put(data);
        }
    }
    Ok(if joined.is_empty() {
        first
    } else {
        joined.freeze()
    })
}

/// The one message in a unary request's `body`.
fn decode_unary<M: Message + Default>(body: &[u8]) -> Result<M, Status> {
    let message = split_message(body).map_err(|err| Status::internal(err.to_string()))?;
    M::decode(message).map_err(|err| Status::internal(format!("decoding the request: {err}")))
}

/// The OK answer whose message is `framed` (see [`crate::framing::frame`]).
pub fn answer(framed: Bytes) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::new(Answer {
        message: Some(framed),
        done: false,
    }));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
    response
}

/// GetImageSpec's NOT_FOUND, as tonic answers a [`Status`] (trailers-only: `content-type`,
/// `grpc-status: 5`, the percent-encoded `grpc-message`), without building one: registry facades
/// ask for unknown ids all the time, and a `Status` costs an allocation per part, a percent
/// encoding of the whole sentence and a map of response extensions on every answer
/// (docs/benchmarks.md, "The unknown-id path"). The sentence is the domain's
/// ([`Error::not_found`]), encoded by tonic once, when the service is built.
#[derive(Debug, Clone)]
pub struct NotFound {
    /// The encoded `grpc-message` before the id, and after it.
    before: Bytes,
    after: Bytes,
}

impl NotFound {
    /// The answer's parts, cut from tonic's encoding of the sentence for a placeholder id. A valid
    /// id is made of `[a-z0-9._-]`, which neither `{:?}` nor the percent encoding changes, so
    /// before + id + after is byte for byte what tonic writes for it.
    pub fn new() -> Self {
        const PLACEHOLDER: &str = "placeholder.id";
        let response = Status::from(Error::not_found(PLACEHOLDER)).into_http::<()>();
        let encoded = response.headers()[Status::GRPC_MESSAGE].as_bytes();
        let at = encoded
            .windows(PLACEHOLDER.len())
            .position(|window| window == PLACEHOLDER.as_bytes())
            .expect("a valid id is written as it is");
        Self {
            before: Bytes::copy_from_slice(&encoded[..at]),
            after: Bytes::copy_from_slice(&encoded[at + PLACEHOLDER.len()..]),
        }
    }

    /// The NOT_FOUND answer for `id`.
    pub fn answer(&self, id: &SpecId) -> http::Response<tonic::body::Body> {
        let id = id.as_str().as_bytes();
        let mut message = BytesMut::with_capacity(self.before.len() + id.len() + self.after.len());
        message.extend_from_slice(&self.before);
        message.extend_from_slice(id);
        message.extend_from_slice(&self.after);
        let message = HeaderValue::from_maybe_shared(message.freeze())
            .expect("an encoded sentence with a valid id is a valid header value");
        trailers_only(Code::NotFound, Some(message))
    }
}

/// An answer that is all headers and ends the stream, as tonic writes a [`Status`]:
/// `content-type`, `grpc-status` and, if given, the already percent-encoded `grpc-message`.
pub fn trailers_only(
    code: Code,
    message: Option<HeaderValue>,
) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::default());
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
    headers.insert(Status::GRPC_STATUS, status_value(code));
    if let Some(message) = message {
        headers.insert(Status::GRPC_MESSAGE, message);
    }
    response
}

/// `code` as the value of `grpc-status`, without formatting it (and allocating) per answer.
fn status_value(code: Code) -> HeaderValue {
    const VALUES: [&str; 17] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    VALUES.get(code as usize).map_or_else(
        || HeaderValue::from(code as i32),
        |value| HeaderValue::from_static(value),
    )
}

impl Default for NotFound {
    fn default() -> Self {
        Self::new()
    }
}

/// The body of an OK answer: one framed message, then `grpc-status: 0`.
struct Answer {
    message: Option<Bytes>,
    done: bool,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        self.done = true;
        let mut trailers = HeaderMap::with_capacity(1);
        trailers.insert(Status::GRPC_STATUS, HeaderValue::from_static("0"));
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    // No `size_hint`: with an exact one, hyper adds a `content-length` header, which tonic's
    // answers do not have.
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::framing::frame;
    use crate::proto::registryfacade::GetImageSpecRequest;

    fn framed_request(id: &str) -> Vec<u8> {
        frame(&GetImageSpecRequest { id: id.into() })
            .unwrap()
            .to_vec()
    }

    #[test]
    fn a_unary_request_decodes_from_its_one_framed_message() {
        let decoded: GetImageSpecRequest = decode_unary(&framed_request("ws-1")).unwrap();
        assert_eq!(decoded.id, "ws-1");
        let empty: GetImageSpecRequest = decode_unary(&framed_request("")).unwrap();
        assert_eq!(
            empty.id, "",
            "an empty message is five bytes: flag and zero length"
        );
    }

    #[test]
    fn malformed_requests_are_internal_errors_that_say_what_is_wrong() {
        let whole = framed_request("ws-1");
        let mut compressed = whole.clone();
        compressed[0] = 1;
        let mut two = whole.clone();
        two.extend_from_slice(&whole);
        let cases: [(&[u8], &str); 5] = [
            (&[], "missing request message"),
            (&whole[..3], "inside a message's length prefix"),
            (&whole[..whole.len() - 1], "should be"),
            (&compressed, "compressed-flag 1"),
            (&two, "one message is expected"),
        ];
        for (body, says) in cases {
            let status = decode_unary::<GetImageSpecRequest>(body).unwrap_err();
            assert_eq!(status.code(), Code::Internal, "{body:?}");
            assert!(status.message().contains(says), "{:?}", status.message());
        }
        let garbage = [0, 0, 0, 0, 2, 0xff, 0xff];
        let status = decode_unary::<GetImageSpecRequest>(&garbage).unwrap_err();
        assert!(status.message().starts_with("decoding the request"));
    }

    #[tokio::test]
    async fn compressed_and_oversized_requests_are_refused() {
        let compressed = http::Request::builder()
            .header("grpc-encoding", "gzip")
            .body(http_body_util::Full::new(Bytes::from(framed_request("a"))))
            .unwrap();
        let status = read_unary::<GetImageSpecRequest, _>(compressed)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented);
        assert_eq!(
            status.metadata().get(ACCEPT_ENCODING_HEADER).unwrap(),
            "identity"
        );

        let huge = framed_request(&"x".repeat(MAX_UNARY_REQUEST_BYTES));
        let oversized = http::Request::new(http_body_util::Full::new(Bytes::from(huge)));
        let status = read_unary::<GetImageSpecRequest, _>(oversized)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange);

        let identity = http::Request::builder()
            .header("grpc-encoding", "identity")
            .body(http_body_util::Full::new(Bytes::from(framed_request("a"))))
            .unwrap();
        let read: GetImageSpecRequest = read_unary(identity).await.unwrap();
        assert_eq!(read.id, "a");
    }

    #[test]
    fn every_code_is_written_as_its_number() {
        for number in 0..=16 {
            let code = Code::from_i32(number);
            assert_eq!(status_value(code), HeaderValue::from(number), "{code:?}");
        }
    }

    /// A body that sends `chunks` as DATA frames of their own.
    fn chunked(chunks: Vec<Vec<u8>>) -> http::Request<impl Body<Data = Bytes, Error = Infallible>> {
        let frames = chunks
            .into_iter()
            .map(|chunk| Ok::<_, Infallible>(Frame::data(Bytes::from(chunk))));
        http::Request::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    #[tokio::test]
    async fn a_request_split_over_several_frames_is_joined_and_bounded() {
        let whole = framed_request("ws-split.example");
        let (head, tail) = whole.split_at(3);
        let parts = vec![head.to_vec(), Vec::new(), tail.to_vec()];
        let read: GetImageSpecRequest = read_unary(chunked(parts)).await.unwrap();
        assert_eq!(read.id, "ws-split.example");

        // Three frames of exactly the limit in all: read, each byte counted once.
        let mut whole = framed_request(&"x".repeat(100));
        whole.resize(MAX_UNARY_REQUEST_BYTES, 0);
        let third = MAX_UNARY_REQUEST_BYTES / 3;
        let parts = vec![
            whole[..third].to_vec(),
            whole[third..2 * third].to_vec(),
            whole[2 * third..].to_vec(),
        ];
        let body = read_body(chunked(parts).into_body()).await.unwrap();
        assert_eq!(body, whole);

        // Over the limit only with its last frame: refused then, as one frame would be.
        let half = vec![0; MAX_UNARY_REQUEST_BYTES / 2 + 1];
        let status = read_unary::<GetImageSpecRequest, _>(chunked(vec![half.clone(), half]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange);
        assert!(status.message().contains("larger than"), "{status:?}");
    }

    #[tokio::test]
    async fn an_answer_is_its_message_then_status_ok_in_the_trailers() {
        let framed = frame(&GetImageSpecRequest { id: "x".into() }).unwrap();
        let response = answer(framed.clone());
        assert_eq!(response.headers()["content-type"], "application/grpc");
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(collected.to_bytes(), framed);
    }

    /// The head tonic writes for `Error::not_found(id)`, and the one [`NotFound`] writes.
    fn not_found_heads(id: &str) -> (HeaderMap, HeaderMap) {
        let tonic = Status::from(Error::not_found(id)).into_http::<()>();
        let ours = NotFound::new().answer(&SpecId::parse(id).unwrap());
        assert!(ours.body().is_end_stream(), "trailers-only");
        (tonic.headers().clone(), ours.headers().clone())
    }

    #[test]
    fn a_not_found_answer_is_byte_for_byte_tonics_answer_for_the_same_error() {
        // The longest valid id.
        let longest = "a".repeat(200);
        for id in [
            "ws-1",
            "a1b2c3d4-5678-90ab-cdef-1234567890ab",
            "x.y_z-0",
            &longest,
        ] {
            let (tonic, ours) = not_found_heads(id);
            assert_eq!(ours, tonic, "{id}");
            assert_eq!(
                ours.len(),
                3,
                "content-type, grpc-status, grpc-message: {ours:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn every_valid_id_gets_tonics_not_found(id in "[a-z0-9]{1,12}([._-][a-z0-9]{1,12}){0,6}") {
            let (tonic, ours) = not_found_heads(&id);
            prop_assert_eq!(ours, tonic);
        }
    }
}
