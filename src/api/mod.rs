//! The gRPC layer: thin tonic handlers (validate, call the store, convert back), one file per
//! service, plus the conversions and the one mapping of [`Error`] to [`Status`]. Each RPC's log
//! line and timing are the gRPC layer's (`crate::metrics::grpc`), not the handlers'.

mod admin;
mod convert;
mod provider;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::cache::SpecCache;
use crate::domain::Error;
use crate::domain::validate::ValidationRules;
use crate::registry::Verifier;
use crate::store::Store;

pub use admin::AdminService;
pub use provider::{ProviderService, SpecProviderServer};

/// What the handlers share: the store, the read cache, the validation rules, the registry
/// verifier, and whether the schema is ready.
#[derive(Clone)]
pub struct ApiState {
    store: Arc<dyn Store>,
    cache: SpecCache,
    rules: ValidationRules,
    verifier: Verifier,
    verify_required: bool,
    ready: Arc<AtomicBool>,
}

impl ApiState {
    /// State over `store`, verifying specs with `verifier` (VerifySpec, and PutSpec when asked
    /// to; with `verify_required`, `verify.required`, every PutSpec). RPCs answer UNAVAILABLE
    /// until [`ApiState::mark_ready`] is called (once the database answered and migrations are
    /// applied).
    pub fn new(
        store: Arc<dyn Store>,
        rules: ValidationRules,
        verifier: Verifier,
        verify_required: bool,
    ) -> Self {
        Self {
            store,
            cache: SpecCache::disabled(),
            rules,
            verifier,
            verify_required,
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

/// The one mapping of the domain's errors to gRPC statuses. An internal or unavailable database's
/// cause goes to the log, not to the client: it becomes the status's source, which the RPC's log
/// line writes out (`crate::metrics::rpc_log`).
impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(ref violations) => {
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(&v.field, &v.description);
                }
                Status::with_error_details(Code::InvalidArgument, err.to_string(), details)
            }
            Error::FailedPrecondition(ref violations) => {
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_precondition_failure_violation(
                        VERIFICATION_VIOLATION,
                        &v.field,
                        &v.description,
                    );
                }
                Status::with_error_details(Code::FailedPrecondition, err.to_string(), details)
            }
            Error::NotFound { message } => Status::not_found(message),
            Error::AlreadyExists { message } => Status::already_exists(message),
            err @ Error::Aborted { .. } => Status::aborted(err.to_string()),
            Error::Unavailable(source) => with_cause(
                Status::unavailable("the database is unavailable; retry later"),
                source,
            ),
            Error::Internal(source) => with_cause(Status::internal("internal error"), source),
        }
    }
}

/// The `type` of the PreconditionFailure violations of a put refused by verification.
pub const VERIFICATION_VIOLATION: &str = "VERIFICATION";

/// `status`, with `cause` as its source.
fn with_cause(mut status: Status, cause: anyhow::Error) -> Status {
    let cause: Box<dyn std::error::Error + Send + Sync> = cause.into();
    status.set_source(Arc::from(cause));
    status
}
