//! Generates the protobuf, gRPC and protobuf-JSON code from `proto/` without a system `protoc`:
//! `protox` parses the files in Rust and its descriptor set feeds both code generators and the
//! reflection service.

use std::path::PathBuf;

use prost_types_bytes::encode_descriptor_set;

const PROTOS: &[&str] = &[
    "registryfacade/imagespec.proto",
    "registryfacade/provider.proto",
    "specprovider/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let fds = protox::compile(PROTOS, ["proto"])?;
    let descriptor_path = out_dir.join("spec_provider_descriptor.bin");
    let descriptor_bytes = encode_descriptor_set(&fds);
    std::fs::write(&descriptor_path, &descriptor_bytes)?;

    tonic_prost_build::configure()
        .skip_protoc_run()
        .file_descriptor_set_path(&descriptor_path)
        // The well-known types we use come from pbjson-types so that they, too, have the protobuf
        // JSON mapping. (prost-build already maps `.google.protobuf` as a whole to prost-types, and
        // refuses a second mapping of the same path, so each type is named.)
        .extern_path(".google.protobuf.Timestamp", "::pbjson_types::Timestamp")
        .extern_path(".google.protobuf.Duration", "::pbjson_types::Duration")
        .compile_fds(fds)?;

    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .build(&[".registryfacade", ".specprovider.v1"])?;
    Ok(())
}

mod prost_types_bytes {
    use prost::Message;

    /// The descriptor set as protobuf bytes, as reflection and pbjson-build expect it.
    pub fn encode_descriptor_set(fds: &prost_types::FileDescriptorSet) -> Vec<u8> {
        fds.encode_to_vec()
    }
}
