//! The Kubernetes manifests in `deploy/kubernetes/`: valid against the Kubernetes schemas (checked
//! by `kubernetes-validate`, which ships the schemas and works offline), all listed in the
//! kustomization, and carrying settings the server accepts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use spec_provider::config::Settings;

/// The oldest Kubernetes the manifests are meant for (gRPC probes are GA since 1.27).
const KUBERNETES_VERSION: &str = "1.30.0";

pub(crate) fn manifest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// Every manifest but the kustomization (which is kustomize's, not a Kubernetes resource).
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifest_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name != "kustomization.yaml")
        })
        .collect();
    files.sort();
    files
}

/// Runs `kubernetes-validate --strict` (unknown fields are errors) on `files`.
pub(crate) fn kubernetes_validate(files: &[PathBuf]) -> std::process::Output {
    Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .args(files)
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run kubernetes-validate ({err}): install it with \
                 `pip install kubernetes-validate` (make test does when it is missing)"
            )
        })
}

#[test]
fn the_manifests_validate_against_the_kubernetes_schemas() {
    let files = manifests();
    assert!(files.len() >= 5, "{files:?}");
    let output = kubernetes_validate(&files);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_validator_rejects_an_invalid_manifest() {
    // Guards the test above against a validator that passes everything.
    let deployment = std::fs::read_to_string(manifest_dir().join("deployment.yaml")).unwrap();
    let broken = deployment.replace(
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesytem: true",
    );
    assert_ne!(broken, deployment);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deployment.yaml");
    std::fs::write(&path, broken).unwrap();
    let output = kubernetes_validate(&[path]);
    assert!(!output.status.success(), "{output:?}");
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let kustomization = std::fs::read_to_string(manifest_dir().join("kustomization.yaml")).unwrap();
    for file in manifests() {
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            kustomization.contains(&format!("  - {name}\n")),
            "{name} is missing from kustomization.yaml"
        );
    }
}

#[test]
fn the_configmap_holds_settings_the_server_accepts() {
    let configmap = std::fs::read_to_string(manifest_dir().join("configmap.yaml")).unwrap();
    // The file is the block scalar under `spec-provider.toml: |`, indented by four spaces.
    let toml: String = configmap
        .lines()
        .skip_while(|line| !line.contains("spec-provider.toml: |"))
        .skip(1)
        .map(|line| line.strip_prefix("    ").unwrap_or(line.trim()))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(toml.contains("[server]"), "{toml}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec-provider.toml");
    std::fs::write(&path, toml).unwrap();
    let env = HashMap::from([(
        "SPEC_PROVIDER__DATABASE__URL".to_owned(),
        "postgres://spec_provider:secret@postgres:5432/spec_provider".to_owned(),
    )]);
    let settings = Settings::load(Some(&path), Some(env)).unwrap();

    let deployment = std::fs::read_to_string(manifest_dir().join("deployment.yaml")).unwrap();
    // The ports the Deployment, its probes and its scrape annotation use are the ones served.
    assert_eq!(settings.server.listen.to_string(), "0.0.0.0:8080");
    assert!(deployment.contains("containerPort: 8080"));
    assert_eq!(settings.server.metrics_listen.to_string(), "0.0.0.0:9500");
    assert!(deployment.contains("prometheus.io/port: \"9500\""));
    assert!(deployment.contains(&format!(
        "service: {}",
        spec_provider::server::LIVENESS_SERVICE
    )));
    assert!(settings.server.shutdown_grace.as_secs() < 30);
    assert!(deployment.contains("terminationGracePeriodSeconds: 30"));
}
