//! Validation of requests: every violation is reported at once, each with its field path.

use crate::proto::registryfacade::ImageSpec;
use crate::proto::specprovider::v1::PutSpecRequest;

use super::{Error, FieldViolation, Labels, PutCommand, ValidatedSpec};

/// The settings validation depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationRules {
    /// Accept `http://` URLs for remote layers (otherwise only `https://`).
    pub allow_http_urls: bool,
    /// Largest accepted encoded spec, in bytes.
    pub max_spec_bytes: usize,
}

/// Validates a PutSpec request into a command; `Error::InvalidArgument` lists every violation.
pub fn validate_put(req: PutSpecRequest, rules: &ValidationRules) -> Result<PutCommand, Error> {
    // PLACEHOLDER until the validation helper lands: no checks yet.
    let spec = validate_spec("spec", req.spec.as_ref(), rules).map_err(Error::InvalidArgument)?;
    Ok(PutCommand {
        id: super::SpecId::parse(&req.id).map_err(|e| Error::invalid("id", e))?,
        spec,
        labels: req.labels.into_iter().collect(),
        expected_generation: req.expected_generation,
        ttl: req.ttl.map(|d| {
            chrono::Duration::seconds(d.seconds) + chrono::Duration::nanoseconds(d.nanos.into())
        }),
    })
}

/// Validates and normalizes an image spec; `field` is the path of the spec in the request.
pub fn validate_spec(
    field: &str,
    spec: Option<&ImageSpec>,
    rules: &ValidationRules,
) -> Result<ValidatedSpec, Vec<FieldViolation>> {
    // PLACEHOLDER until the validation helper lands: no checks yet.
    let _ = (field, rules);
    use prost::Message;
    Ok(ValidatedSpec::from_normalized_bytes(
        spec.cloned().unwrap_or_default().encode_to_vec(),
    ))
}

/// Checks labels (at most 64, Kubernetes label syntax); `field` is the path of the map.
pub fn validate_labels(field: &str, labels: &Labels) -> Vec<FieldViolation> {
    // PLACEHOLDER until the validation helper lands: no checks yet.
    let _ = (field, labels);
    Vec::new()
}
