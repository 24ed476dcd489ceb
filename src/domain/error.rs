//! The one error type of the service. `crate::api` maps it to `tonic::Status` in one place.

use std::fmt;

/// One thing wrong with a request, with the path of the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field, e.g. `spec.content_layer[1].remote.digest`.
    pub field: String,
    /// A sentence saying what is wrong.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`, described by `description`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; every violation found is listed.
    #[error("invalid request: {}", join_violations(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// No live record has the requested id.
    #[error("{message}")]
    NotFound {
        /// A sentence naming the id.
        message: String,
    },
    /// The record exists and the request may not replace it.
    #[error("{message}")]
    AlreadyExists {
        /// A sentence saying why, and what the caller can do.
        message: String,
    },
    /// The caller's `expected_generation` does not match the stored one.
    #[error("spec {id:?} is at generation {actual}, not the expected generation {expected}")]
    Aborted {
        /// The record's id.
        id: String,
        /// The generation the caller expected.
        expected: i64,
        /// The generation stored.
        actual: i64,
    },
    /// The spec failed verification against its registries: one violation per failed check.
    #[error("the spec failed verification: {}", join_violations(.0))]
    FailedPrecondition(Vec<FieldViolation>),
    /// The database cannot be reached (or did not hand out a connection in time).
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else; the client sees an opaque message, the log the whole chain.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    /// The usual NOT_FOUND for an id with no live record.
    pub fn not_found(id: &str) -> Self {
        Self::NotFound {
            message: format!(
                "no spec with id {id:?} (it was never stored, was deleted, or has expired)"
            ),
        }
    }

    /// An `InvalidArgument` error with a single violation.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }
}

fn join_violations(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
