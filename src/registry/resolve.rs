//! Resolving an image reference to its manifest digest, by the distribution protocol: ping
//! `/v2/`, authenticate as its challenge asks (oci-client runs the bearer-token flow; basic
//! credentials go straight on the request), GET the manifest (OCI or Docker v2, image or index),
//! and for an index make sure it holds the configured platform.

use bytes::Bytes;
use oci_client::errors::{OciEnvelope, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use url::Url;

use super::auth_file::{AuthFile, Credential};
use super::http::{Blocklist, SafeClient, host_label, read_bounded, timed_out};

/// Largest manifest or error body read (the reference registry refuses manifests over 4 MiB).
pub(super) const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The manifest media types asked for, images and indexes.
const ACCEPTED: [&str; 4] = [
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// What a manifest request carries to prove who asks.
enum Authorization {
    Anonymous,
    Basic(Credential),
    Bearer(String),
}

/// The platform an index must hold.
#[derive(Debug, Clone)]
pub(super) struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
    text: String,
}

impl Platform {
    /// Parses `os/architecture[/variant]` (checked at start-up).
    pub(super) fn parse(text: &str) -> Self {
        let mut parts = text.split('/').map(str::to_owned);
        Self {
            os: parts.next().unwrap_or_default(),
            architecture: parts.next().unwrap_or_default(),
            variant: parts.next(),
            text: text.to_owned(),
        }
    }

    fn matches(&self, entry: &EntryPlatform) -> bool {
        entry.os == self.os
            && entry.architecture == self.architecture
            && (self.variant.is_none() || entry.variant == self.variant)
    }
}

/// The parts of an index read here.
#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

#[derive(Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    platform: Option<EntryPlatform>,
}

#[derive(Deserialize)]
struct EntryPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// The media type a manifest declares in its body, when the answer's header does not say.
#[derive(Deserialize)]
struct Declared {
    #[serde(default, rename = "mediaType")]
    media_type: Option<String>,
}

/// A manifest as the registry answered it.
struct Manifest {
    body: Bytes,
    header_digest: Option<String>,
    header_type: Option<String>,
}

impl Manifest {
    /// The body's sha256, which must match the reference's digest (if it names one) and the
    /// registry's `Docker-Content-Digest` (if it sent one).
    fn digest(&self, reference: &Reference) -> Result<String, String> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&self.body)));
        if let Some(named) = reference.digest()
            && named != digest
        {
            return Err(format!(
                "{} answered a manifest whose sha256 is {digest}, not {named}",
                reference.registry()
            ));
        }
        if let Some(header) = &self.header_digest
            && header.starts_with("sha256:")
            && *header != digest
        {
            return Err(format!(
                "{} says the manifest's digest is {header} but its sha256 is {digest}",
                reference.registry()
            ));
        }
        Ok(digest)
    }

    /// The media type from the answer's `Content-Type`, or else the body's `mediaType`.
    fn media_type(&self) -> String {
        self.header_type
            .as_deref()
            .map(|t| t.split(';').next().unwrap_or_default().trim())
            .filter(|t| ACCEPTED.contains(t))
            .map(str::to_owned)
            .or_else(|| {
                serde_json::from_slice::<Declared>(&self.body)
                    .ok()
                    .and_then(|d| d.media_type)
            })
            .unwrap_or_default()
    }
}

/// Resolves references; one per verifier.
pub(super) struct Resolver {
    pub(super) http: SafeClient,
    pub(super) oci: oci_client::Client,
    pub(super) auths: AuthFile,
    pub(super) blocklist: Blocklist,
    pub(super) insecure: Vec<String>,
    pub(super) platform: Platform,
}

impl Resolver {
    /// The manifest digest `reference` names (for an index: the index's own digest, after
    /// checking that it holds the platform), or one sentence saying why not.
    pub(super) async fn resolve(
        &self,
        reference: &Reference,
        deadline: Instant,
    ) -> Result<String, String> {
        let registry = reference.resolve_registry();
        let scheme = if self.insecure.iter().any(|r| r == registry) {
            "http"
        } else {
            "https"
        };
        let base = Url::parse(&format!("{scheme}://{registry}/v2/"))
            .map_err(|err| format!("{registry} is not a valid registry host: {err}"))?;
        let credential = self.auths.credential(registry);
        let has_credential = credential.is_some();
        let authorization = self
            .authorize(reference, &base, credential, deadline)
            .await?;
        let manifest = self
            .fetch(reference, &base, &authorization, has_credential, deadline)
            .await?;
        let digest = manifest.digest(reference)?;
        match manifest.media_type().as_str() {
            OCI_IMAGE_MEDIA_TYPE | IMAGE_MANIFEST_MEDIA_TYPE => Ok(digest),
            OCI_IMAGE_INDEX_MEDIA_TYPE | IMAGE_MANIFEST_LIST_MEDIA_TYPE => {
                self.check_platform(reference, &base, &manifest.body, &authorization, deadline)
                    .await?;
                Ok(digest)
            }
            other => Err(format!(
                "{} answered a manifest of unsupported media type {other:?} (OCI or Docker v2 \
                 image manifests and indexes are supported)",
                reference.registry()
            )),
        }
    }

    /// GETs the manifest `reference` names (by digest if it has one, else by tag).
    async fn fetch(
        &self,
        reference: &Reference,
        base: &Url,
        authorization: &Authorization,
        has_credential: bool,
        deadline: Instant,
    ) -> Result<Manifest, String> {
        let target = reference.digest().or(reference.tag()).unwrap_or("latest");
        let url = base
            .join(&format!("{}/manifests/{target}", reference.repository()))
            .map_err(|err| format!("invalid manifest URL for {reference}: {err}"))?;
        let response = self
            .send(Method::GET, &url, authorization, deadline)
            .await?;
        let status = response.status();
        if !status.is_success() {
            let body = read_bounded(response, MAX_BODY_BYTES, deadline)
                .await
                .unwrap_or_default();
            return Err(self.refusal(reference, target, status, &body, has_credential));
        }
        let header_digest = header(&response, "docker-content-digest");
        let header_type = header(&response, CONTENT_TYPE.as_str());
        let body = read_bounded(response, MAX_BODY_BYTES, deadline)
            .await
            .map_err(|err| self.http.explain(reference.registry(), err))?;
        Ok(Manifest {
            body,
            header_digest,
            header_type,
        })
    }

    /// Pings `/v2/` and gets what its challenge asks for: a bearer token from the realm
    /// (through oci-client, once the realm's host is checked), basic credentials, or nothing.
    async fn authorize(
        &self,
        reference: &Reference,
        base: &Url,
        credential: Option<Credential>,
        deadline: Instant,
    ) -> Result<Authorization, String> {
        let registry = reference.registry();
        let ping = self
            .send(Method::GET, base, &Authorization::Anonymous, deadline)
            .await?;
        if ping.status() != StatusCode::UNAUTHORIZED {
            return Ok(Authorization::Anonymous);
        }
        let challenge = header(&ping, WWW_AUTHENTICATE.as_str()).unwrap_or_default();
        let Some(realm) = bearer_realm(&challenge) else {
            return Ok(credential.map_or(Authorization::Anonymous, Authorization::Basic));
        };
        let realm = Url::parse(&realm)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| {
                format!("{registry} names a token service that is not an http(s) URL")
            })?;
        self.blocklist
            .check_host(realm.host_str().unwrap_or_default())
            .await
            .map_err(|reason| format!("token service of {registry}: {reason}"))?;
        let auth = match &credential {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let token = tokio::time::timeout_at(
            deadline,
            self.oci.auth(reference, &auth, RegistryOperation::Pull),
        )
        .await
        .map_err(|_| {
            timed_out(
                &format!("the token service of {registry}"),
                self.http.timeout(),
            )
        })?;
        match token {
            Ok(Some(token)) => Ok(Authorization::Bearer(token)),
            Ok(None) => Ok(Authorization::Anonymous),
            Err(oci_client::errors::OciDistributionError::AuthenticationFailure(_)) => {
                Err(match credential {
                    Some(_) => format!(
                        "401 from {registry}: its token service refused the credentials for it \
                         in verify.registry_auth_file"
                    ),
                    None => {
                        self.no_credentials(registry, "its token service refused anonymous access")
                    }
                })
            }
            Err(err) => Err(format!(
                "the token service of {registry} failed: {}",
                without_urls(&err.to_string())
            )),
        }
    }

    /// For an index: the platform's entry exists, and so does the manifest it points to.
    async fn check_platform(
        &self,
        reference: &Reference,
        base: &Url,
        body: &[u8],
        authorization: &Authorization,
        deadline: Instant,
    ) -> Result<(), String> {
        let registry = reference.registry();
        let index: Index = serde_json::from_slice(body)
            .map_err(|err| format!("{registry} answered an index that does not parse: {err}"))?;
        let Some(entry) = index.manifests.iter().find(|entry| {
            entry
                .platform
                .as_ref()
                .is_some_and(|p| self.platform.matches(p))
        }) else {
            return Err(format!(
                "no {} image in the index (verify.platform)",
                self.platform.text
            ));
        };
        let url = base
            .join(&format!(
                "{}/manifests/{}",
                reference.repository(),
                entry.digest
            ))
            .map_err(|err| format!("invalid manifest URL for {reference}: {err}"))?;
        let response = self
            .send(Method::HEAD, &url, authorization, deadline)
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "the index names {} for {}, but {registry} answers {} for it",
                entry.digest,
                self.platform.text,
                response.status()
            ))
        }
    }

    async fn send(
        &self,
        method: Method,
        url: &Url,
        authorization: &Authorization,
        deadline: Instant,
    ) -> Result<reqwest::Response, String> {
        let mut request = self
            .http
            .request(method, url.clone())
            .header(ACCEPT, ACCEPTED.join(", "));
        request = match authorization {
            Authorization::Anonymous => request,
            Authorization::Basic(c) => request.basic_auth(&c.username, Some(&c.password)),
            Authorization::Bearer(token) => {
                request.header(AUTHORIZATION, format!("Bearer {token}"))
            }
        };
        self.http
            .send(url, request, deadline)
            .await
            .map_err(|err| self.http.explain(&host_label(url), err))
    }

    /// One sentence for a manifest request the registry refused.
    fn refusal(
        &self,
        reference: &Reference,
        target: &str,
        status: StatusCode,
        body: &[u8],
        had_credential: bool,
    ) -> String {
        let registry = reference.registry();
        let repository = format!("{registry}/{}", reference.repository());
        let name_unknown = serde_json::from_slice::<OciEnvelope>(body).is_ok_and(|envelope| {
            envelope
                .errors
                .iter()
                .any(|e| e.code == OciErrorCode::NameUnknown)
        });
        let what = if target.starts_with("sha256:") {
            target.to_owned()
        } else {
            format!("tag {target:?}")
        };
        match status {
            StatusCode::NOT_FOUND if name_unknown => {
                format!("repository unknown: {repository} not found")
            }
            StatusCode::NOT_FOUND => format!("manifest unknown: {what} not found in {repository}"),
            StatusCode::UNAUTHORIZED if had_credential => format!(
                "401 from {registry}: it refused the credentials for it in \
                 verify.registry_auth_file"
            ),
            StatusCode::UNAUTHORIZED => self.no_credentials(registry, "it asks for credentials"),
            StatusCode::FORBIDDEN => format!("403 from {registry}: access to {repository} denied"),
            other => format!("{other} from {registry} for {what} of {repository}"),
        }
    }

    fn no_credentials(&self, registry: &str, why: &str) -> String {
        if self.auths.configured() {
            format!(
                "401 from {registry}: {why}, and there are no credentials for it in verify.registry_auth_file"
            )
        } else {
            format!("401 from {registry}: {why}, and verify.registry_auth_file is not set")
        }
    }
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// The realm of a `Bearer` challenge, if the header has one.
fn bearer_realm(header: &str) -> Option<String> {
    http_auth::parser::ChallengeParser::new(header)
        .filter_map(Result::ok)
        .find(|challenge| challenge.scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|challenge| {
            challenge
                .params
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("realm"))
                .map(|(_, value)| value.to_unescaped())
        })
}

/// oci-client's messages may quote the token service's URL; its query holds nothing secret, but
/// the messages stay short without it.
fn without_urls(message: &str) -> String {
    message
        .split_whitespace()
        .map(|word| if word.contains("://") { "<url>" } else { word })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_realm_is_read_from_a_bearer_challenge() {
        let header = r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:base:pull""#;
        assert_eq!(
            bearer_realm(header).as_deref(),
            Some("https://auth.example.com/token")
        );
        assert_eq!(bearer_realm(r#"Basic realm="Registry Realm""#), None);
    }

    #[test]
    fn a_platform_with_a_variant_needs_it_and_one_without_takes_any() {
        let entry = |variant: Option<&str>| EntryPlatform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: variant.map(str::to_owned),
        };
        assert!(Platform::parse("linux/arm64").matches(&entry(Some("v8"))));
        assert!(Platform::parse("linux/arm64/v8").matches(&entry(Some("v8"))));
        assert!(!Platform::parse("linux/arm64/v8").matches(&entry(None)));
        assert!(!Platform::parse("linux/amd64").matches(&entry(None)));
    }
}
