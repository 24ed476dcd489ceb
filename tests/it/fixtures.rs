//! Specs and requests that tests build on.

use std::collections::HashMap;

use spec_provider::proto::registryfacade::content_layer::Spec as LayerSpec;
use spec_provider::proto::registryfacade::{
    ContentLayer, DirectContentLayer, ImageSpec, RemoteContentLayer,
};
use spec_provider::proto::specprovider::v1::PutSpecRequest;

/// `sha256:` and 64 hex digits made from `seed`.
pub fn digest(seed: u8) -> String {
    format!("sha256:{}", format!("{seed:02x}").repeat(32))
}

/// An uncompressed tar archive with one small file.
pub fn tar_bytes(file_name: &str, contents: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(contents.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, file_name, contents)
        .unwrap();
    builder.into_inner().unwrap()
}

/// A remote layer of the gzip media type.
pub fn remote_layer(seed: u8) -> ContentLayer {
    ContentLayer {
        spec: Some(LayerSpec::Remote(RemoteContentLayer {
            url: format!("https://content.example.com/layers/{seed}.tar.gz"),
            digest: digest(seed),
            diff_id: digest(seed.wrapping_add(1)),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size: 1024 + i64::from(seed),
        })),
    }
}

/// A direct layer holding a real tar archive.
pub fn direct_layer(contents: &[u8]) -> ContentLayer {
    ContentLayer {
        spec: Some(LayerSpec::Direct(DirectContentLayer {
            content: tar_bytes("workspace/.gitpod/ready", contents),
        })),
    }
}

/// A spec with every field set. `variant` changes the base image tag, to make different specs.
pub fn full_spec(variant: u32) -> ImageSpec {
    ImageSpec {
        base_ref: format!("eu.gcr.io/gitpod-core/workspace-images/base:v{variant}"),
        ide_ref: "eu.gcr.io/gitpod-core/ide/code:commit-4c8638c0".into(),
        content_layer: vec![remote_layer(7), direct_layer(b"hello")],
        supervisor_ref: format!("eu.gcr.io/gitpod-core/supervisor@{}", digest(9)),
        ide_layer_ref: vec![
            "eu.gcr.io/gitpod-core/ide/code-web-extension:1.2".into(),
            "ghcr.io/acme/jetbrains-backend-plugin:latest".into(),
        ],
    }
}

/// A spec with only the required field.
pub fn minimal_spec(variant: u32) -> ImageSpec {
    ImageSpec {
        base_ref: format!("docker.io/library/ubuntu:22.{variant:02}"),
        ..ImageSpec::default()
    }
}

/// A PutSpec request for `id` with `spec` and no labels, generation or ttl.
pub fn put(id: &str, spec: ImageSpec) -> PutSpecRequest {
    PutSpecRequest {
        id: id.to_owned(),
        spec: Some(spec),
        ..PutSpecRequest::default()
    }
}

/// Labels from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `message`, sent with the bearer token `token`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}
