//! `[verify]`: checking specs against their registries and content-layer servers.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[verify]`: checking a spec against its registries before it is stored (`PutSpec` with
/// `verify` or `pin_references`, `VerifySpec`): every image reference resolves, every remote
/// content layer's URL answers with the right size.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifySettings {
    /// Verify every PutSpec, whether or not the request asks for it.
    pub required: bool,
    /// The platform an image index must hold, `os/architecture` or `os/architecture/variant`.
    pub platform: String,
    /// A Docker config file with registry credentials (`config.json`, or the `.dockerconfigjson`
    /// of a Kubernetes pull secret: `auths.<registry>.auth` = base64 `user:password`, or
    /// `username` and `password`); re-read when it changes. Registries not in it are asked
    /// anonymously.
    pub registry_auth_file: Option<PathBuf>,
    /// Registries (`host:port`) spoken to over plain HTTP, like Docker's `insecure-registries`;
    /// all others over HTTPS. Environment: a comma-separated list.
    pub insecure_registries: Vec<String>,
    /// Networks no verification request may reach: checked before connecting, after DNS
    /// resolution and after every redirect. The defaults are where clouds serve instance
    /// metadata. Environment: a comma-separated list.
    pub blocked_networks: Vec<ipnet::IpNet>,
    /// Download remote content layers (up to `max_layer_download_bytes`) and compare their
    /// SHA-256 with `digest`, and for gzip layers the uncompressed SHA-256 with `diff_id`.
    pub layer_digests: bool,
    /// Largest layer `layer_digests` downloads; larger ones get the size check only.
    pub max_layer_download_bytes: u64,
    /// Longest time one verification may take, all its checks together; a registry or server
    /// that has not answered by then fails its check with that reason.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most checks in flight at once, across all verifications together (one shared bound).
    pub concurrency: usize,
    /// How long a resolved manifest digest is reused without asking the registry again
    /// (failures are never cached). `0s` turns the cache off.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Most resolved digests kept.
    pub cache_max_entries: u64,
}

impl Default for VerifySettings {
    fn default() -> Self {
        Self {
            required: false,
            platform: "linux/amd64".to_owned(),
            registry_auth_file: None,
            insecure_registries: Vec::new(),
            blocked_networks: ["169.254.0.0/16", "fe80::/10"]
                .iter()
                .map(|net| net.parse().expect("a valid network"))
                .collect(),
            layer_digests: false,
            max_layer_download_bytes: 256 * 1024 * 1024,
            timeout: Duration::from_secs(10),
            concurrency: 8,
            cache_ttl: Duration::from_secs(60),
            cache_max_entries: 10_000,
        }
    }
}

impl VerifySettings {
    /// The keys of the list settings, which the environment gives as comma-separated values.
    pub const LIST_KEYS: [&str; 2] = ["verify.insecure_registries", "verify.blocked_networks"];

    /// `platform`'s os, architecture and variant, if it is `os/architecture` or
    /// `os/architecture/variant` with no part empty: the one reading of the setting, for its
    /// validation and for the verifier.
    pub fn platform_parts(&self) -> Option<(&str, &str, Option<&str>)> {
        let mut parts = self.platform.split('/');
        let (os, architecture, variant) = (parts.next()?, parts.next()?, parts.next());
        let valid = parts.next().is_none()
            && !os.is_empty()
            && !architecture.is_empty()
            && variant.is_none_or(|variant| !variant.is_empty());
        valid.then_some((os, architecture, variant))
    }
}
