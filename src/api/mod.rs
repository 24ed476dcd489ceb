//! The gRPC layer: thin tonic handlers (validate, convert, call the store, convert back), one file
//! per service, plus the conversions and the one mapping of [`Error`] to [`Status`].

mod admin;
mod convert;
mod provider;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::Level;

use crate::cache::SpecCache;
use crate::domain::Error;
use crate::domain::validate::ValidationRules;
use crate::store::Store;

pub use admin::AdminService;
pub use provider::{ProviderService, SpecProviderServer};

/// What the handlers share: the store, the read cache, the validation rules, and whether the
/// schema is ready.
#[derive(Clone)]
pub struct ApiState {
    store: Arc<dyn Store>,
    cache: SpecCache,
    rules: ValidationRules,
    ready: Arc<AtomicBool>,
}

impl ApiState {
    /// State over `store`. RPCs answer UNAVAILABLE until [`ApiState::mark_ready`] is called
    /// (once the database answered and migrations are applied).
    pub fn new(store: Arc<dyn Store>, rules: ValidationRules) -> Self {
        Self {
            store,
            cache: SpecCache::disabled(),
            rules,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Serves GetImageSpec through `cache`, which the writes of this process invalidate.
    pub fn with_cache(mut self, cache: SpecCache) -> Self {
        self.cache = cache;
        self
    }

    /// Lets RPCs reach the store.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether [`ApiState::mark_ready`] was called.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The store, once the schema is ready.
    fn store(&self) -> Result<&dyn Store, Error> {
        if self.is_ready() {
            Ok(self.store.as_ref())
        } else {
            Err(Error::Unavailable(anyhow::anyhow!(
                "the database has not answered yet or its migrations are not applied"
            )))
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(violations) => {
                let message = err_message(&violations);
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::NotFound { message } => Status::not_found(message),
            Error::AlreadyExists { message } => Status::already_exists(message),
            err @ Error::Aborted { .. } => Status::aborted(err.to_string()),
            Error::Unavailable(source) => {
                tracing::warn!(error = format!("{source:#}"), "database unavailable");
                Status::unavailable("the database is unavailable; retry later")
            }
            Error::Internal(source) => {
                tracing::error!(error = format!("{source:#}"), "internal error");
                Status::internal("internal error")
            }
        }
    }
}

fn err_message(violations: &[crate::domain::FieldViolation]) -> String {
    let listed: Vec<String> = violations.iter().map(ToString::to_string).collect();
    format!("invalid request: {}", listed.join("; "))
}

/// Longest prefix of a request's id that goes into a log line.
const MAX_LOGGED_ID_BYTES: usize = 256;

/// Converts a handler's result to tonic's and logs the call: one line per write and per failed
/// RPC (method, id, code, latency); successful reads only at `read_level`, and so NOT_FOUND, which
/// for a read is an answer rather than a failure: registry facades ask for unknown ids all the
/// time, and a line at INFO for each would flood the log (the gRPC metrics count them).
fn finish<T>(
    method: &'static str,
    id: &str,
    started: Instant,
    read_level: Level,
    result: Result<T, Error>,
) -> Result<tonic::Response<T>, Status> {
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    // The id may be anything a client sent: cap its length, and log it quoted (Debug) so that
    // control characters cannot forge log lines.
    let id = id
        .get(..id.floor_char_boundary(MAX_LOGGED_ID_BYTES))
        .unwrap_or(id);
    match result {
        Ok(value) => {
            if read_level == Level::INFO {
                tracing::info!(method, ?id, code = "OK", latency_ms, "rpc");
            } else {
                tracing::debug!(method, ?id, code = "OK", latency_ms, "rpc");
            }
            Ok(tonic::Response::new(value))
        }
        Err(err) => {
            let status = Status::from(err);
            let code = crate::metrics::grpc::code_name(status.code());
            // tracing needs a constant level for each line: one macro, three levels.
            // `status_message`, not `message`: in JSON lines that key is the event's own message.
            macro_rules! failed {
                ($level:expr) => {
                    tracing::event!(
                        $level,
                        method,
                        ?id,
                        code,
                        latency_ms,
                        status_message = status.message(),
                        "rpc"
                    )
                };
            }
            match status.code() {
                Code::Internal | Code::Unavailable => failed!(Level::ERROR),
                Code::NotFound if read_level != Level::INFO => failed!(Level::DEBUG),
                _ => failed!(Level::INFO),
            }
            Err(status)
        }
    }
}
