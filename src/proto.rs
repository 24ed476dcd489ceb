//! Code generated from `proto/` at build time (see `build.rs`).

/// The registry facade's wire contract: `ImageSpec` and the `SpecProvider` service.
pub mod registryfacade {
    tonic::include_proto!("registryfacade");
    include!(concat!(env!("OUT_DIR"), "/registryfacade.serde.rs"));
}

/// spec-provider's own API.
pub mod specprovider {
    /// Version 1 of the admin API: the `SpecAdmin` service.
    pub mod v1 {
        tonic::include_proto!("specprovider.v1");
        include!(concat!(env!("OUT_DIR"), "/specprovider.v1.serde.rs"));
    }
}

/// The encoded `FileDescriptorSet` of every file in `proto/`, for the reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("spec_provider_descriptor");
