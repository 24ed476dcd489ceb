//! The one log line of each RPC of ours, written by [`super::grpc::GrpcMetricsLayer`] when the
//! answer is ready: method (from the request path), id, code (as grpc-go names it), latency,
//! for a write its `caller` (who wrote, or tried to: see [`Caller`]) and, on failure, the status
//! message, with the cause chain of an INTERNAL or UNAVAILABLE error.
//!
//! Writes log at INFO. Successful reads log at DEBUG only, and so does NOT_FOUND of a read, which
//! is an answer rather than a failure: registry facades ask for unknown ids all the time, and a
//! line at INFO for each would flood the log (the gRPC metrics count them). INTERNAL and
//! UNAVAILABLE log at ERROR, other failures at INFO.
//!
//! **How a handler hands over its id.** Only the handler decodes the request, and only the layer
//! sees the answer's code and the whole latency; an error answer is a [`Status`], which carries no
//! extensions of its own. So the layer runs each RPC inside a task-local slot ([`note`] fills
//! it), and reads the slot back when the answer is ready. The slot lives in the RPC's future:
//! nothing is allocated for it, and a handler moves its id in rather than copying it. RPCs that
//! note nothing (health, reflection, a call refused before its handler) get no line, as before.
//!
//! A handler turns a failure into a [`Status`] whose source is the failure's cause
//! (`From<Error> for Status` in `crate::api`); the line reads the cause from there, so an internal
//! error is logged once, with its whole chain.

use std::cell::Cell;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use tokio::task::futures::TaskLocalFuture;
use tonic::{Code, Status};
use tracing::Level;
use tracing::level_filters::LevelFilter;

use super::grpc::code_name;
use crate::domain::Caller;

/// The target of the lines, which log filters name (`spec_provider::api=debug`): the lines are
/// the API's, whichever module writes them.
const TARGET: &str = "spec_provider::api";

/// Longest prefix of a request's id that goes into a line.
const MAX_LOGGED_ID_BYTES: usize = 256;

tokio::task_local! {
    /// What the handler of the RPC being polled noted for its line.
    static NOTE: Cell<Option<RpcNote>>;
}

/// Whether an RPC reads or changes records, which sets the level of its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcKind {
    /// GetImageSpec, GetSpec, ListSpecs, VerifySpec.
    Read,
    /// PutSpec, DeleteSpec, by `caller`, whom the line names.
    Write {
        /// Who sent the write.
        caller: Caller,
    },
}

/// What a handler noted about its RPC.
#[derive(Debug)]
pub(super) struct RpcNote {
    kind: RpcKind,
    id: String,
}

/// Notes, for the line of the RPC being handled, its kind and the id it concerns (as sent: it may
/// be invalid; the prefix, for ListSpecs). Does nothing outside [`super::grpc::GrpcMetricsLayer`].
pub fn note(kind: RpcKind, id: String) {
    // Outside the layer (a handler called directly) there is no line to write.
    let _ = NOTE.try_with(|slot| slot.set(Some(RpcNote { kind, id })));
}

/// An RPC's future, run with an empty slot for its note.
pub(super) type Noted<F> = TaskLocalFuture<Cell<Option<RpcNote>>, F>;

/// Runs `future` with an empty slot for a note.
pub(super) fn with_slot<F: Future>(future: F) -> Noted<F> {
    NOTE.scope(Cell::new(None), future)
}

/// The note taken from the slot of a finished RPC.
pub(super) fn take_note<F: Future>(future: Pin<&mut Noted<F>>) -> Option<RpcNote> {
    future.take_value().and_then(Cell::into_inner)
}

/// Writes the line of an RPC answered with `code` by `response`. An error answer carries its
/// [`Status`] in the response's extensions, as tonic's `Status::into_http` leaves it, or only in
/// its headers (GetImageSpec's NOT_FOUND, `crate::api::wire::NotFound`), read back here only when
/// the line is written.
pub(super) fn write<B>(
    method: &str,
    note: RpcNote,
    code: Code,
    response: &http::Response<B>,
    started: Instant,
) {
    let level = match (code, &note.kind) {
        (Code::Internal | Code::Unavailable, _) => Level::ERROR,
        (Code::Ok | Code::NotFound, RpcKind::Read) => Level::DEBUG,
        _ => Level::INFO,
    };
    if level > LevelFilter::current() {
        return;
    }
    let from_headers;
    let status = match response.extensions().get::<Status>() {
        Some(status) => Some(status),
        None if code != Code::Ok => {
            from_headers = Status::from_header_map(response.headers());
            from_headers.as_ref()
        }
        None => None,
    };
    // The id may be anything a client sent: cap its length, and log it quoted (Debug) so that
    // control characters cannot forge log lines.
    let id = note
        .id
        .get(..note.id.floor_char_boundary(MAX_LOGGED_ID_BYTES))
        .unwrap_or(&note.id);
    // `status_message`, not `message`: in JSON lines that key is the event's own message. Both
    // it and `error` are left out when absent.
    let status_message = status.map(Status::message);
    let error = status.and_then(Error::source).map(CauseChain);
    // Left out of reads' lines. A caller is never a token, only its digest's first digits.
    let caller = match &note.kind {
        RpcKind::Write { caller } => Some(caller.as_str()),
        RpcKind::Read => None,
    };
    // tracing needs a constant level for each line: one macro, three levels. Fields are only
    // evaluated once the level is known to be enabled.
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                target: TARGET,
                $level,
                method,
                ?id,
                code = code_name(code),
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                caller,
                status_message,
                error = error.as_ref().map(tracing::field::display),
                "rpc"
            )
        };
    }
    match level {
        Level::ERROR => line!(Level::ERROR),
        Level::DEBUG => line!(Level::DEBUG),
        _ => line!(Level::INFO),
    }
}

/// An error and its sources, `outer: inner: innermost`, as anyhow's `{:#}` writes them.
struct CauseChain<'a>(&'a (dyn Error + 'static));

impl fmt::Display for CauseChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_chain_reads_like_anyhows_alternate_form() {
        let err = anyhow::anyhow!("connection refused")
            .context("acquiring a connection")
            .context("reading spec \"ws-1\"");
        let expected = format!("{err:#}");
        let boxed: Box<dyn Error + Send + Sync> = err.into();
        assert_eq!(CauseChain(boxed.as_ref()).to_string(), expected);
    }

    #[tokio::test]
    async fn a_note_is_read_back_from_the_slot_of_its_rpc_only() {
        note(RpcKind::Read, "outside".into());
        let write = RpcKind::Write {
            caller: Caller::anonymous(),
        };
        let mut future = std::pin::pin!(with_slot({
            let write = write.clone();
            async move { note(write, "ws-1".into()) }
        }));
        future.as_mut().await;
        let noted = take_note(future).unwrap();
        assert_eq!((noted.kind, noted.id.as_str()), (write, "ws-1"));
    }
}
