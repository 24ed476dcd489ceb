//! The rules of the service, free of I/O: ids, the validation of every request, validated specs,
//! records, what a PutSpec or DeleteSpec does to a stored record, and what a verification against
//! the registries means for a put.

mod caller;
mod error;
mod id;
mod page_token;
mod record;
mod rules;
pub mod validate;
pub mod verification;

pub use caller::Caller;
pub use error::{Error, FieldViolation};
pub use id::{SpecId, is_id_prefix};
pub use page_token::PageToken;
pub use record::{
    DEFAULT_PAGE_SIZE, DeleteCommand, Labels, ListPage, ListQuery, MAX_PAGE_SIZE, PutCommand,
    PutOutcome, SpecRecord, ValidatedSpec, micros_now, sha256_digest, spec_digest,
};
pub use rules::{DeleteDecision, PutDecision, decide_delete, decide_put};
