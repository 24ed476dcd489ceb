//! Validation of requests: every violation is reported at once, each with its field path.
//!
//! A spec is stored and served byte for byte as validation leaves it, and registry facades cache
//! what they are served for the whole life of an id. So whatever a facade (or the container
//! runtime behind it) would choke on is refused here, at write time, with a sentence naming the
//! field, instead of surfacing later as a failed image pull.
//!
//! `request` turns each request's fields into a domain command; `spec` assembles the checks
//! of an image spec; each other file holds one grammar: image references, digests, layer URLs,
//! tar archives and Kubernetes labels.

mod digest;
mod labels;
mod reference;
mod request;
mod spec;
mod tar;
mod url;

#[cfg(test)]
pub(super) mod fixtures;

pub(crate) use digest::is_sha256_digest;
pub use labels::{MAX_LABELS, validate_labels};
pub use request::{
    DeleteInput, DurationInput, ListInput, ListView, MAX_TTL_SECONDS, MIN_TTL_SECONDS, PutInput,
    VerifyInput, VerifyTarget, validate_delete, validate_get, validate_list, validate_put,
    validate_ttl, validate_verify,
};
pub use spec::validate_spec;
pub(crate) use spec::{MEDIA_TYPES_GZIP, validate_owned_spec};

use super::FieldViolation;

/// The settings validation depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationRules {
    /// Accept `http://` URLs for remote layers (otherwise only `https://`).
    pub allow_http_urls: bool,
    /// Largest accepted encoded spec, in bytes.
    pub max_spec_bytes: usize,
}

/// Most characters of a caller's value quoted back in a message, so a huge value cannot blow up
/// the error (gRPC trailers are small).
const MAX_QUOTED_CHARS: usize = 100;

/// Moves the violations of `result` into `into`, keeping its value.
fn collect<T>(result: Result<T, Vec<FieldViolation>>, into: &mut Vec<FieldViolation>) -> Option<T> {
    result.map_err(|violations| into.extend(violations)).ok()
}

/// The violation of a required field left empty.
fn required(field: impl Into<String>) -> FieldViolation {
    FieldViolation::new(field, "is required")
}

/// Checks that `s` is not empty and has at most `max_chars` characters.
pub(super) fn check_length(s: &str, max_chars: usize) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    let chars = s.chars().count();
    if chars > max_chars {
        return Err(format!(
            "must be at most {max_chars} characters, got {chars}"
        ));
    }
    Ok(())
}

/// `s` quoted and escaped, cut after `max_chars` characters.
fn quote(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
    }
}
