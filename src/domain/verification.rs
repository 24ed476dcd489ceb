//! What verifying a spec against its registries means for a request, free of I/O: the report
//! `crate::registry` produces, the refusal of a put that failed it, and the pinning of image
//! references to the digests it resolved.

use serde::Serialize;

use super::validate::{ValidationRules, validate_owned_spec};
use super::{Error, FieldViolation, ValidatedSpec};
use crate::proto::registryfacade::ImageSpec;

/// The outcome of one verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Whether every check passed.
    pub ok: bool,
    /// One check per image reference and remote content layer, in the spec's order.
    pub checks: Vec<Check>,
}

/// One checked image reference or remote content layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The field's path, in validation's syntax: `spec.base_ref`, `spec.ide_layer_ref[1]`,
    /// `spec.content_layer[0].remote`.
    pub field: String,
    /// The image reference or the layer's URL, as written.
    pub reference: String,
    /// Whether the check passed.
    pub ok: bool,
    /// The resolved manifest digest, for images (for an index: the index's digest).
    pub digest: Option<String>,
    /// What failed and why, in one sentence.
    pub error: Option<String>,
}

/// What a PutSpec asks of verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutVerification {
    /// Store the spec as validated.
    Skip,
    /// Store it only if every check passes.
    Verify,
    /// Verify, and store the image references pinned to their digests.
    Pin,
}

impl PutVerification {
    /// From the request's `verify` and `pin_references` and the server's `verify.required`.
    pub fn requested(verify: bool, pin_references: bool, required: bool) -> Self {
        match (pin_references, verify || required) {
            (true, _) => Self::Pin,
            (false, true) => Self::Verify,
            (false, false) => Self::Skip,
        }
    }
}

/// The spec a put stores after `report`: refused with `FailedPrecondition` (one violation per
/// failed check) when a check failed; with its image references pinned for
/// [`PutVerification::Pin`] (validated again, as pinning makes the spec longer). `decoded` is
/// `spec` as the message it was verified as.
pub fn verified_spec(
    spec: ValidatedSpec,
    decoded: ImageSpec,
    report: &Report,
    how: PutVerification,
    rules: &ValidationRules,
) -> Result<ValidatedSpec, Error> {
    if !report.ok {
        return Err(Error::FailedPrecondition(
            report
                .checks
                .iter()
                .filter(|check| !check.ok)
                .map(|check| {
                    FieldViolation::new(&check.field, check.error.as_deref().unwrap_or("failed"))
                })
                .collect(),
        ));
    }
    if how != PutVerification::Pin {
        return Ok(spec);
    }
    let pinned = pin_references(decoded, report).map_err(|unpinned| {
        Error::Internal(anyhow::Error::new(unpinned).context("pinning a verified spec"))
    })?;
    validate_owned_spec("spec", pinned, rules).map_err(Error::InvalidArgument)
}

/// A reference that cannot be pinned: its check failed or is missing from the report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: no resolved digest to pin {reference:?} to")]
pub struct Unpinned {
    /// The field path, e.g. `spec.ide_layer_ref[1]`.
    pub field: String,
    /// The reference as written.
    pub reference: String,
}

/// `spec` with every image reference that has no digest written as `name:tag@sha256:<digest>`
/// (the tagged-and-digested form registry facades pull by digest), from the digests `report`
/// resolved for the same spec (whose field paths start with `spec.`). A reference without a tag
/// means `latest`, and is pinned as `name:latest@sha256:<digest>`; references that already carry
/// a digest are left as written.
pub fn pin_references(mut spec: ImageSpec, report: &Report) -> Result<ImageSpec, Unpinned> {
    let pin = |path: String, reference: &mut String| -> Result<(), Unpinned> {
        if reference.is_empty() || reference.contains('@') {
            return Ok(());
        }
        let digest = report
            .checks
            .iter()
            .find(|check| check.ok && check.field == path && check.reference == *reference)
            .and_then(|check| check.digest.as_deref())
            .ok_or_else(|| Unpinned {
                field: path.clone(),
                reference: reference.clone(),
            })?;
        let name = reference.rsplit('/').next().unwrap_or(reference);
        if !name.contains(':') {
            reference.push_str(":latest");
        }
        reference.push('@');
        reference.push_str(digest);
        Ok(())
    };
    pin("spec.base_ref".to_owned(), &mut spec.base_ref)?;
    pin("spec.ide_ref".to_owned(), &mut spec.ide_ref)?;
    pin("spec.supervisor_ref".to_owned(), &mut spec.supervisor_ref)?;
    for (i, reference) in spec.ide_layer_ref.iter_mut().enumerate() {
        pin(format!("spec.ide_layer_ref[{i}]"), reference)?;
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn resolved(field: &str, reference: &str) -> Check {
        Check {
            field: field.into(),
            reference: reference.into(),
            ok: true,
            digest: Some(DIGEST.into()),
            error: None,
        }
    }

    #[test]
    fn tagged_references_get_their_digest_and_digested_ones_stay() {
        let digested = format!("registry.example.com/sup@{DIGEST}");
        let spec = ImageSpec {
            base_ref: "127.0.0.1:5000/base:v1".into(),
            ide_ref: "ubuntu".into(),
            supervisor_ref: digested.clone(),
            ide_layer_ref: vec!["ghcr.io/a/b:1.2".into()],
            ..ImageSpec::default()
        };
        let report = Report {
            ok: true,
            checks: vec![
                resolved("spec.base_ref", "127.0.0.1:5000/base:v1"),
                resolved("spec.ide_ref", "ubuntu"),
                resolved("spec.supervisor_ref", &digested),
                resolved("spec.ide_layer_ref[0]", "ghcr.io/a/b:1.2"),
            ],
        };
        let pinned = pin_references(spec, &report).unwrap();
        assert_eq!(pinned.base_ref, format!("127.0.0.1:5000/base:v1@{DIGEST}"));
        assert_eq!(pinned.ide_ref, format!("ubuntu:latest@{DIGEST}"));
        assert_eq!(pinned.supervisor_ref, digested);
        assert_eq!(pinned.ide_layer_ref, [format!("ghcr.io/a/b:1.2@{DIGEST}")]);
        for reference in [&pinned.base_ref, &pinned.ide_ref, &pinned.ide_layer_ref[0]] {
            oci_spec::distribution::Reference::try_from(reference.as_str()).unwrap();
        }
    }

    #[test]
    fn a_failed_check_leaves_nothing_to_pin() {
        let spec = ImageSpec {
            base_ref: "r.example.com/base:v9".into(),
            ..ImageSpec::default()
        };
        let mut check = resolved("spec.base_ref", "r.example.com/base:v9");
        check.ok = false;
        check.digest = None;
        let report = Report {
            ok: false,
            checks: vec![check],
        };
        let err = pin_references(spec, &report).unwrap_err();
        assert_eq!(err.field, "spec.base_ref");
    }
}
