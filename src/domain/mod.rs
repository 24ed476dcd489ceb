//! The rules of the service, free of I/O: ids, validated specs, records, and what a PutSpec or
//! DeleteSpec does to a stored record.

mod error;
mod id;
mod page_token;
mod record;
mod rules;
pub mod validate;

pub use error::{Error, FieldViolation};
pub use id::{SpecId, is_id_prefix};
pub use page_token::PageToken;
pub use record::{
    DeleteCommand, Labels, ListQuery, PutCommand, PutOutcome, SpecRecord, ValidatedSpec,
    micros_now, spec_digest,
};
pub use rules::{DeleteDecision, PutDecision, decide_delete, decide_put};
