//! Generates the protobuf, gRPC and protobuf-JSON code from `proto/` without a system `protoc`:
//! `protox` parses the files in Rust and its descriptor set feeds both code generators and the
//! reflection service. Also records the git commit being built, for `spec_provider_build_info`.

use std::path::PathBuf;
use std::process::Command;

use prost_types_bytes::encode_descriptor_set;

const PROTOS: &[&str] = &[
    "registryfacade/imagespec.proto",
    "registryfacade/provider.proto",
    "specprovider/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rustc-env=SPEC_PROVIDER_GIT_COMMIT={}", git_commit());
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

/// The commit being built: `SPEC_PROVIDER_GIT_COMMIT` when set (a Docker build has no `.git`,
/// but can pass the commit as a build argument), else what git says, else `unknown`.
fn git_commit() -> String {
    println!("cargo:rerun-if-env-changed=SPEC_PROVIDER_GIT_COMMIT");
    if let Ok(commit) = std::env::var("SPEC_PROVIDER_GIT_COMMIT")
        && !commit.trim().is_empty()
    {
        return commit.trim().to_owned();
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty())
    };
    let Some(commit) = git(&["rev-parse", "HEAD"]) else {
        return "unknown".to_owned();
    };
    // Build again when HEAD moves: HEAD itself (a checkout) and the branch it names (a commit).
    // A worktree keeps HEAD in its own git directory and the branches in the common one.
    // (Only files that exist: cargo reruns the script on every build for one that does not.)
    let watch = |path: String| {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    };
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        watch(format!("{git_dir}/HEAD"));
    }
    if let (Some(common), Some(branch)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        watch(format!("{common}/{branch}"));
        watch(format!("{common}/packed-refs"));
    }
    commit
}

mod prost_types_bytes {
    use prost::Message;

    /// The descriptor set as protobuf bytes, as reflection and pbjson-build expect it.
    pub fn encode_descriptor_set(fds: &prost_types::FileDescriptorSet) -> Vec<u8> {
        fds.encode_to_vec()
    }
}
