//! What the tests of every grammar share: a valid request with every field set, and ways to
//! break one field of it and read back the violations.

use std::collections::BTreeSet;

use prost::Message;

use super::spec::MEDIA_TYPE_UNCOMPRESSED;
use super::{DurationInput, PutInput, ValidationRules, validate_put};
use crate::domain::{Caller, Error, FieldViolation, Labels, PutCommand, spec_digest};
use crate::proto::registryfacade::content_layer::Spec as LayerSpec;
use crate::proto::registryfacade::{
    ContentLayer, DirectContentLayer, ImageSpec, RemoteContentLayer,
};

pub(super) const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(super) const DIRECT_CONTENT: &str = "spec.content_layer[2].direct.content";

pub(super) fn rules() -> ValidationRules {
    ValidationRules {
        allow_http_urls: false,
        max_spec_bytes: 1 << 20,
    }
}

/// A realistic sha256 digest, different for each seed.
pub(super) fn digest(seed: &str) -> String {
    spec_digest(seed.as_bytes())
}

pub(super) fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = ::tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = ::tar::Header::new_gnu();
        header.set_size(u64::try_from(data.len()).unwrap());
        header.set_mode(0o644);
        builder.append_data(&mut header, path, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

pub(super) fn remote(media_type: &str, diff_id: &str, seed: &str) -> ContentLayer {
    ContentLayer {
        spec: Some(LayerSpec::Remote(RemoteContentLayer {
            url: format!("https://blobs.example.com/layers/{seed}?X-Amz-Signature=0a1b"),
            digest: digest(seed),
            diff_id: diff_id.into(),
            media_type: media_type.into(),
            size: 4096,
        })),
    }
}

pub(super) fn direct(content: Vec<u8>) -> ContentLayer {
    ContentLayer {
        spec: Some(LayerSpec::Direct(DirectContentLayer { content })),
    }
}

/// A valid spec with every field set: layer 0 is uncompressed with an empty diff_id, layer 1
/// gzip-compressed, layer 2 direct.
pub(super) fn valid_spec() -> ImageSpec {
    ImageSpec {
        base_ref: "docker.io/library/ubuntu:22.04".into(),
        ide_ref: "eu.gcr.io/gitpod-core-dev/build/ide/code:commit-0123abc".into(),
        supervisor_ref: format!(
            "eu.gcr.io/gitpod-core-dev/build/supervisor@{}",
            digest("supervisor")
        ),
        ide_layer_ref: vec![
            "eu.gcr.io/gitpod-core-dev/build/ide/code-cli:latest".into(),
            format!("localhost:5000/ide/extra:1.2@{}", digest("extra")),
        ],
        content_layer: vec![
            remote(MEDIA_TYPE_UNCOMPRESSED, "", "plain"),
            remote(GZIP, &digest("unpacked"), "packed"),
            direct(tar_of(&[("workspace/README.md", b"# hello\n")])),
        ],
    }
}

pub(super) fn valid_request() -> PutInput {
    PutInput {
        id: "ws-0123".into(),
        spec: Some(valid_spec()),
        labels: Labels::from([
            ("gitpod.io/owner".into(), "user-1".into()),
            ("tier".into(), String::new()),
        ]),
        expected_generation: Some(0),
        ttl: Some(duration(3600, 0)),
    }
}

pub(super) fn duration(seconds: i64, nanos: i32) -> DurationInput {
    DurationInput { seconds, nanos }
}

pub(super) fn request_with_spec(edit: impl FnOnce(&mut ImageSpec)) -> PutInput {
    let mut req = valid_request();
    edit(req.spec.as_mut().unwrap());
    req
}

pub(super) fn remote_layer(spec: &mut ImageSpec, i: usize) -> &mut RemoteContentLayer {
    match &mut spec.content_layer[i].spec {
        Some(LayerSpec::Remote(layer)) => layer,
        other => panic!("layer {i} is not remote: {other:?}"),
    }
}

pub(super) fn with_direct_content(content: &[u8]) -> PutInput {
    request_with_spec(|spec| spec.content_layer[2] = direct(content.to_vec()))
}

pub(super) fn violations_with(req: PutInput, rules: &ValidationRules) -> Vec<FieldViolation> {
    refused(validate_put(req, rules, Caller::anonymous()))
}

/// The violations of a request that must be refused.
pub(super) fn refused<T: std::fmt::Debug>(result: Result<T, Error>) -> Vec<FieldViolation> {
    match result {
        Err(Error::InvalidArgument(violations)) => violations,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

pub(super) fn violations(req: PutInput) -> Vec<FieldViolation> {
    violations_with(req, &rules())
}

pub(super) fn the_only_violation(req: PutInput) -> FieldViolation {
    let mut violations = violations(req);
    assert_eq!(violations.len(), 1, "{violations:?}");
    violations.remove(0)
}

pub(super) fn fields(violations: &[FieldViolation]) -> BTreeSet<&str> {
    violations.iter().map(|v| v.field.as_str()).collect()
}

pub(super) fn stored_spec(cmd: &PutCommand) -> ImageSpec {
    ImageSpec::decode(cmd.spec.bytes()).unwrap()
}

/// Labels from `(key, value)` pairs.
pub(in crate::domain) fn labels_of(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
