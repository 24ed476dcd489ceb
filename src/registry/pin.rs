//! Pinning a spec's image references to the digests a verification resolved. Pure logic: it
//! belongs with the other rules in `domain/`, and moves there once the API uses it.

use crate::proto::registryfacade::ImageSpec;

use super::Report;

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
/// resolved for the same spec. A reference without a tag means `latest`, and is pinned as
/// `name:latest@sha256:<digest>`; references that already carry a digest are left as written.
/// `field` is the spec's path in the report (`spec`).
pub fn pin_references(
    field: &str,
    spec: &ImageSpec,
    report: &Report,
) -> Result<ImageSpec, Unpinned> {
    let pin = |path: String, reference: &str| -> Result<String, Unpinned> {
        if reference.is_empty() || reference.contains('@') {
            return Ok(reference.to_owned());
        }
        let digest = report
            .checks
            .iter()
            .find(|check| check.ok && check.field == path && check.reference == reference)
            .and_then(|check| check.digest.as_deref())
            .ok_or_else(|| Unpinned {
                field: path.clone(),
                reference: reference.to_owned(),
            })?;
        let name = reference.rsplit('/').next().unwrap_or(reference);
        Ok(if name.contains(':') {
            format!("{reference}@{digest}")
        } else {
            format!("{reference}:latest@{digest}")
        })
    };
    let mut pinned = spec.clone();
    pinned.base_ref = pin(format!("{field}.base_ref"), &spec.base_ref)?;
    pinned.ide_ref = pin(format!("{field}.ide_ref"), &spec.ide_ref)?;
    pinned.supervisor_ref = pin(format!("{field}.supervisor_ref"), &spec.supervisor_ref)?;
    for (i, reference) in spec.ide_layer_ref.iter().enumerate() {
        pinned.ide_layer_ref[i] = pin(format!("{field}.ide_layer_ref[{i}]"), reference)?;
    }
    Ok(pinned)
}

#[cfg(test)]
mod tests {
    use super::super::Check;
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
        let pinned = pin_references("spec", &spec, &report).unwrap();
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
        let err = pin_references("spec", &spec, &report).unwrap_err();
        assert_eq!(err.field, "spec.base_ref");
    }
}
