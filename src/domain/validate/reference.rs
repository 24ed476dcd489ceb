//! Image references, `name[:tag][@digest]`, as Docker's reference parser (which the facade's
//! runtime uses) reads them.

use std::str::FromStr;

use oci_spec::distribution::Reference;

use super::{MAX_QUOTED_CHARS, quote};

/// Checks an image reference, `name[:tag][@digest]`.
///
/// oci-spec's parser does the grammar; the checks after it cover what it lets through that
/// Docker's reference parser (which the facade's runtime uses) refuses.
pub(super) fn check_image_ref(raw: &str) -> Result<(), String> {
    let quoted = quote(raw, MAX_QUOTED_CHARS);
    let reference = Reference::from_str(raw)
        .map_err(|e| format!("{quoted} is not an image reference name[:tag][@digest]: {e}"))?;
    // oci-spec matches a first path component against the domain grammar, which allows
    // uppercase, even when it then treats it as part of the repository: "Foo/bar" passes.
    if reference
        .repository()
        .bytes()
        .any(|b| b.is_ascii_uppercase())
    {
        return Err(format!(
            "{quoted} is not a valid image reference: the repository name must be lowercase"
        ));
    }
    // A first component with a '.' is taken for the registry even when only the repository
    // grammar matched it: "ex_ample.com/foo" passes.
    if !is_registry_host(reference.registry()) {
        return Err(format!(
            "{quoted} is not a valid image reference: the registry is not a host name with an \
             optional port"
        ));
    }
    // oci-spec's tag pattern is `\w`, which the regex crate reads as Unicode: "tägé" passes.
    if let Some(tag) = reference.tag()
        && !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "{quoted} is not a valid image reference: the tag may only contain ASCII letters, \
             digits, '_', '.' and '-'"
        ));
    }
    // oci-spec's digest pattern is [[:xdigit:]], which admits uppercase hex; digests are
    // lowercase.
    if let Some(digest) = reference.digest()
        && digest.bytes().any(|b| b.is_ascii_uppercase())
    {
        return Err(format!(
            "{quoted} is not a valid image reference: the digest must be lowercase hex"
        ));
    }
    Ok(())
}

/// Whether `registry` is `host[:port]`, the host being '.'-separated components of ASCII letters,
/// digits and inner '-'.
fn is_registry_host(registry: &str) -> bool {
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    port.is_none_or(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        && host.split('.').all(|component| {
            !component.is_empty()
                && !component.starts_with('-')
                && !component.ends_with('-')
                && component
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::domain::Caller;
    use crate::domain::FieldViolation;
    use crate::domain::validate::fixtures::{
        fields, request_with_spec, rules, the_only_violation, violations,
    };
    use crate::domain::validate::validate_put;

    #[test]
    fn a_missing_base_ref_is_required() {
        let violation = the_only_violation(request_with_spec(|spec| spec.base_ref.clear()));
        assert_eq!(
            violation,
            FieldViolation::new("spec.base_ref", "is required")
        );
    }

    #[test]
    fn image_references_are_checked_at_their_field_paths() {
        let req = request_with_spec(|spec| {
            spec.base_ref = "not a reference".into();
            spec.ide_ref = "UPPER:tag".into();
            spec.supervisor_ref = "supervisor@sha256:0123".into();
            spec.ide_layer_ref = vec!["fine/ref:1".into(), "bad ref".into(), String::new()];
        });
        let violations = violations(req);
        assert_eq!(
            fields(&violations),
            BTreeSet::from([
                "spec.base_ref",
                "spec.ide_ref",
                "spec.supervisor_ref",
                "spec.ide_layer_ref[1]",
                "spec.ide_layer_ref[2]",
            ])
        );
        assert_eq!(violations.len(), 5, "{violations:?}");
        let empty_entry = violations
            .iter()
            .find(|v| v.field == "spec.ide_layer_ref[2]")
            .unwrap();
        assert!(empty_entry.description.contains("must not be empty"));
    }

    #[test]
    fn empty_optional_references_are_accepted() {
        let req = request_with_spec(|spec| {
            spec.ide_ref.clear();
            spec.supervisor_ref.clear();
            spec.ide_layer_ref.clear();
        });
        assert!(validate_put(req, &rules(), Caller::anonymous()).is_ok());
    }

    #[test]
    fn image_references_in_their_usual_forms_are_accepted() {
        let sha256 = "a".repeat(64);
        let sha512 = "b".repeat(128);
        for reference in [
            "ubuntu".to_owned(),
            "ubuntu:22.04".into(),
            "docker.io/library/ubuntu:22.04".into(),
            "eu.gcr.io/gitpod-core-dev/build/ide/code:commit-0123abc".into(),
            "Registry.Example.com/team/image:v1".into(),
            format!("localhost:5000/a/b:1@sha256:{sha256}"),
            format!("registry.example.com:443/team/image@sha512:{sha512}"),
            "a--b/c__d.e:V1.0_rc-1".into(),
            format!("ubuntu:{}", "t".repeat(128)),
        ] {
            assert_eq!(check_image_ref(&reference), Ok(()), "{reference}");
        }
    }

    #[test]
    fn references_oci_spec_accepts_but_docker_refuses_are_rejected() {
        for reference in [
            "Uppercase/lowercase:tag".to_owned(),
            "ex_ample.com/foo".into(),
            "foo:tägé".into(),
            format!("foo@sha256:{}", "F".repeat(64)),
        ] {
            assert!(
                Reference::from_str(&reference).is_ok(),
                "oci-spec now refuses {reference}; the extra check may be unnecessary"
            );
            assert!(
                check_image_ref(&reference).is_err(),
                "{reference} was accepted"
            );
        }
    }

    #[test]
    fn malformed_image_references_are_rejected() {
        for reference in [
            " ubuntu".to_owned(),
            "ubuntu ".into(),
            "ubuntu\n".into(),
            "ubu ntu".into(),
            "UBUNTU".into(),
            "ubuntu:".into(),
            ":tag".into(),
            "a//b".into(),
            "ubuntu@sha256:0123".into(),
            format!("ubuntu@md5:{}", "a".repeat(32)),
            format!("ubuntu:{}", "t".repeat(129)),
        ] {
            assert!(
                check_image_ref(&reference).is_err(),
                "{reference:?} was accepted"
            );
        }
    }
}
