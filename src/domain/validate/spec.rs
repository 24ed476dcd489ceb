//! The rules of an image spec as a whole: which fields are required, and which grammar each
//! field follows (references, digests, URLs, tar archives), at the field's path.

use prost::Message;

use super::digest::check_digest;
use super::reference::check_image_ref;
use super::tar::check_tar_archive;
use super::url::check_layer_url;
use super::{FieldViolation, MAX_QUOTED_CHARS, ValidationRules, quote, required};
use crate::domain::ValidatedSpec;
use crate::proto::registryfacade::content_layer::Spec as LayerSpec;
use crate::proto::registryfacade::{DirectContentLayer, ImageSpec, RemoteContentLayer};

/// The media type of an uncompressed OCI layer, whose diff_id is its digest.
pub(super) const MEDIA_TYPE_UNCOMPRESSED: &str = "application/vnd.oci.image.layer.v1.tar";

const MEDIA_TYPE_OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MEDIA_TYPE_OCI_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const MEDIA_TYPE_DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Media types of compressed layers: only the writer knows their diff_id.
pub(super) const MEDIA_TYPES_COMPRESSED: [&str; 3] = [
    MEDIA_TYPE_OCI_GZIP,
    MEDIA_TYPE_OCI_ZSTD,
    MEDIA_TYPE_DOCKER_GZIP,
];

/// The compressed media types whose blob is gzip: their diff_id is the digest of the gunzipped
/// bytes.
pub(crate) const MEDIA_TYPES_GZIP: [&str; 2] = [MEDIA_TYPE_OCI_GZIP, MEDIA_TYPE_DOCKER_GZIP];

/// Validates and normalizes an image spec; `field` is the path of the spec in the request.
///
/// Normalizing fills in the diff_id of an uncompressed remote layer that left it empty: it equals
/// the digest, and registry facades refuse an empty one.
pub fn validate_spec(
    field: &str,
    spec: Option<&ImageSpec>,
    rules: &ValidationRules,
) -> Result<ValidatedSpec, Vec<FieldViolation>> {
    match spec {
        Some(spec) => validate_owned_spec(field, spec.clone(), rules),
        None => Err(vec![required(field)]),
    }
}

/// `validate_spec` on a spec it may normalize in place.
pub(crate) fn validate_owned_spec(
    field: &str,
    mut spec: ImageSpec,
    rules: &ValidationRules,
) -> Result<ValidatedSpec, Vec<FieldViolation>> {
    let mut violations = Vec::new();

    let base_ref = format!("{field}.base_ref");
    if spec.base_ref.is_empty() {
        violations.push(required(base_ref));
    } else if let Err(problem) = check_image_ref(&spec.base_ref) {
        violations.push(FieldViolation::new(base_ref, problem));
    }
    for (name, value) in [
        ("ide_ref", &spec.ide_ref),
        ("supervisor_ref", &spec.supervisor_ref),
    ] {
        if !value.is_empty()
            && let Err(problem) = check_image_ref(value)
        {
            violations.push(FieldViolation::new(format!("{field}.{name}"), problem));
        }
    }
    for (i, value) in spec.ide_layer_ref.iter().enumerate() {
        let path = format!("{field}.ide_layer_ref[{i}]");
        if value.is_empty() {
            violations.push(FieldViolation::new(
                path,
                "must not be empty: an empty entry names no image",
            ));
        } else if let Err(problem) = check_image_ref(value) {
            violations.push(FieldViolation::new(path, problem));
        }
    }

    for (i, layer) in spec.content_layer.iter_mut().enumerate() {
        let path = format!("{field}.content_layer[{i}]");
        match &mut layer.spec {
            None => violations.push(FieldViolation::new(path, "must set remote or direct")),
            Some(LayerSpec::Remote(remote)) => {
                check_remote_layer(&format!("{path}.remote"), remote, rules, &mut violations);
            }
            Some(LayerSpec::Direct(direct)) => {
                check_direct_layer(&format!("{path}.direct"), direct, &mut violations);
            }
        }
    }

    // Measured after normalization: the normalized encoding is what is stored and served.
    let size = spec.encoded_len();
    if size > rules.max_spec_bytes {
        violations.push(FieldViolation::new(
            field,
            format!(
                "is {size} bytes when encoded, more than the limit of {} bytes",
                rules.max_spec_bytes
            ),
        ));
    }

    if violations.is_empty() {
        Ok(ValidatedSpec::from_normalized_bytes(spec.encode_to_vec()))
    } else {
        Err(violations)
    }
}

/// Checks a remote layer at `path`, and sets an uncompressed layer's empty diff_id to its digest.
fn check_remote_layer(
    path: &str,
    layer: &mut RemoteContentLayer,
    rules: &ValidationRules,
    violations: &mut Vec<FieldViolation>,
) {
    let mut violation = |name: &str, description: String| {
        violations.push(FieldViolation::new(format!("{path}.{name}"), description));
    };
    if let Err(problem) = check_layer_url(&layer.url, rules.allow_http_urls) {
        violation("url", problem);
    }
    let digest_is_valid = match check_digest(&layer.digest) {
        Ok(()) => true,
        Err(problem) => {
            violation("digest", problem);
            false
        }
    };
    let uncompressed = layer.media_type == MEDIA_TYPE_UNCOMPRESSED;
    let compressed = MEDIA_TYPES_COMPRESSED.contains(&layer.media_type.as_str());
    if layer.media_type.is_empty() {
        violation(
            "media_type",
            format!("is required; {}", media_types_sentence()),
        );
    } else if !uncompressed && !compressed {
        violation(
            "media_type",
            format!(
                "{} is not a supported layer media type; {}",
                quote(&layer.media_type, MAX_QUOTED_CHARS),
                media_types_sentence()
            ),
        );
    }
    if layer.size <= 0 {
        violation(
            "size",
            format!("must be greater than 0, got {}", layer.size),
        );
    }
    if layer.diff_id.is_empty() {
        if uncompressed {
            layer.diff_id.clone_from(&layer.digest);
        } else if compressed {
            violation(
                "diff_id",
                format!(
                    "is required for the compressed media type {:?}: it is the digest of the \
                     uncompressed layer, which the registry facade cannot compute",
                    layer.media_type
                ),
            );
        }
    } else if let Err(problem) = check_digest(&layer.diff_id) {
        violation("diff_id", problem);
    } else if uncompressed && digest_is_valid && layer.diff_id != layer.digest {
        // The runtime checks the unpacked layer against diff_id; for an uncompressed blob that is
        // the blob's own digest, so a different one can only fail at pull time.
        violation(
            "diff_id",
            "must equal digest for an uncompressed layer (or be empty, and it is set to digest)"
                .into(),
        );
    }
}

/// The sentence listing the accepted layer media types.
fn media_types_sentence() -> String {
    let mut all = vec![MEDIA_TYPE_UNCOMPRESSED];
    all.extend(MEDIA_TYPES_COMPRESSED);
    format!("use one of {}", all.join(", "))
}

/// Checks a direct layer at `path`: a complete, uncompressed tar archive.
fn check_direct_layer(
    path: &str,
    layer: &DirectContentLayer,
    violations: &mut Vec<FieldViolation>,
) {
    let path = format!("{path}.content");
    if layer.content.is_empty() {
        violations.push(FieldViolation::new(
            path,
            "must not be empty: it must be an uncompressed tar archive",
        ));
    } else if let Err(problem) = check_tar_archive(&layer.content) {
        violations.push(FieldViolation::new(path, problem));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::domain::Caller;
    use crate::domain::validate::fixtures::{
        digest, fields, remote_layer, request_with_spec, rules, the_only_violation, valid_request,
        valid_spec, violations, violations_with,
    };
    use crate::domain::validate::validate_put;
    use crate::proto::registryfacade::ContentLayer;

    #[test]
    fn validate_spec_uses_the_given_field_path() {
        assert_eq!(
            validate_spec("record.spec", None, &rules()).unwrap_err(),
            vec![FieldViolation::new("record.spec", "is required")]
        );
        let mut spec = valid_spec();
        spec.base_ref = "Not A Ref".into();
        let violations = validate_spec("record.spec", Some(&spec), &rules()).unwrap_err();
        assert_eq!(
            fields(&violations),
            BTreeSet::from(["record.spec.base_ref"])
        );
        assert!(validate_spec("spec", Some(&valid_spec()), &rules()).is_ok());
    }

    #[test]
    fn a_content_layer_with_neither_remote_nor_direct_is_reported() {
        let violation = the_only_violation(request_with_spec(|spec| {
            spec.content_layer.push(ContentLayer { spec: None });
        }));
        assert_eq!(
            violation,
            FieldViolation::new("spec.content_layer[3]", "must set remote or direct")
        );
    }

    #[test]
    fn every_remote_layer_field_is_checked_at_its_path() {
        let violations = violations(request_with_spec(|spec| {
            let layer = remote_layer(spec, 1);
            layer.url = "ftp://blobs.example.com/x".into();
            layer.digest = "sha256:0123".into();
            layer.diff_id = "unpacked".into();
            layer.media_type = "application/x-tar".into();
            layer.size = 0;
        }));
        assert_eq!(
            fields(&violations),
            BTreeSet::from([
                "spec.content_layer[1].remote.url",
                "spec.content_layer[1].remote.digest",
                "spec.content_layer[1].remote.diff_id",
                "spec.content_layer[1].remote.media_type",
                "spec.content_layer[1].remote.size",
            ])
        );
    }

    #[test]
    fn empty_remote_layer_fields_are_required() {
        let violations = violations(request_with_spec(|spec| {
            *remote_layer(spec, 1) = RemoteContentLayer::default();
        }));
        assert_eq!(
            fields(&violations),
            BTreeSet::from([
                "spec.content_layer[1].remote.url",
                "spec.content_layer[1].remote.digest",
                "spec.content_layer[1].remote.media_type",
                "spec.content_layer[1].remote.size",
            ])
        );
    }

    #[test]
    fn the_four_supported_media_types_are_accepted_and_others_are_not() {
        for media_type in [MEDIA_TYPE_UNCOMPRESSED]
            .into_iter()
            .chain(MEDIA_TYPES_COMPRESSED)
        {
            let req = request_with_spec(|spec| {
                let layer = remote_layer(spec, 1);
                layer.media_type = media_type.into();
                if media_type == MEDIA_TYPE_UNCOMPRESSED {
                    layer.diff_id.clear();
                }
            });
            assert!(
                validate_put(req, &rules(), Caller::anonymous()).is_ok(),
                "{media_type}"
            );
        }
        for media_type in [
            "application/vnd.docker.image.rootfs.diff.tar",
            "application/vnd.oci.image.layer.v1.tar+bzip2",
            "APPLICATION/VND.OCI.IMAGE.LAYER.V1.TAR",
            "",
        ] {
            let violation = the_only_violation(request_with_spec(|spec| {
                remote_layer(spec, 1).media_type = media_type.into();
            }));
            assert_eq!(violation.field, "spec.content_layer[1].remote.media_type");
        }
    }

    #[test]
    fn compressed_layers_require_a_diff_id() {
        for media_type in MEDIA_TYPES_COMPRESSED {
            let violation = the_only_violation(request_with_spec(|spec| {
                let layer = remote_layer(spec, 1);
                layer.media_type = media_type.into();
                layer.diff_id.clear();
            }));
            assert_eq!(violation.field, "spec.content_layer[1].remote.diff_id");
            assert!(violation.description.contains("required"), "{violation}");
        }
    }

    #[test]
    fn an_uncompressed_layer_may_repeat_its_digest_as_diff_id_but_not_name_another() {
        let same = request_with_spec(|spec| {
            let layer = remote_layer(spec, 0);
            layer.diff_id = layer.digest.clone();
        });
        let cmd = validate_put(same, &rules(), Caller::anonymous()).unwrap();
        let normalized = validate_put(valid_request(), &rules(), Caller::anonymous()).unwrap();
        assert_eq!(cmd.spec, normalized.spec);

        let violation = the_only_violation(request_with_spec(|spec| {
            remote_layer(spec, 0).diff_id = digest("something else");
        }));
        assert_eq!(violation.field, "spec.content_layer[0].remote.diff_id");
    }

    #[test]
    fn the_layer_size_must_be_positive() {
        for size in [0, -1, i64::MIN] {
            let violation =
                the_only_violation(request_with_spec(|spec| remote_layer(spec, 1).size = size));
            assert_eq!(violation.field, "spec.content_layer[1].remote.size");
        }
    }

    #[test]
    fn the_encoded_spec_may_be_exactly_the_size_limit_but_not_more() {
        let size = validate_put(valid_request(), &rules(), Caller::anonymous())
            .unwrap()
            .spec
            .bytes()
            .len();
        let exact = ValidationRules {
            max_spec_bytes: size,
            ..rules()
        };
        assert!(validate_put(valid_request(), &exact, Caller::anonymous()).is_ok());

        let under = ValidationRules {
            max_spec_bytes: size - 1,
            ..rules()
        };
        let violations = violations_with(valid_request(), &under);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].field, "spec");
        let description = &violations[0].description;
        assert!(description.contains(&size.to_string()), "{description}");
        assert!(
            description.contains(&(size - 1).to_string()),
            "{description}"
        );
    }

    #[test]
    fn the_size_limit_applies_to_the_normalized_spec() {
        let as_sent = valid_spec().encoded_len();
        let rules = ValidationRules {
            max_spec_bytes: as_sent,
            ..rules()
        };
        let violations = violations_with(valid_request(), &rules);
        assert_eq!(fields(&violations), BTreeSet::from(["spec"]));
    }
}
