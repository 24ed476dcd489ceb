//! Resolving an image reference to its manifest digest, by the distribution protocol: ping
//! `/v2/`, authenticate as its challenge asks (a bearer token from the challenge's realm, or
//! basic credentials on the request), GET the manifest (OCI or Docker v2, image or index), and
//! for an index make sure it holds the configured platform.
//!
//! Every request, the token's included, goes through the guarded client ([`SafeClient`]):
//! oci-client's token flow runs on a reqwest client of its own, which takes no DNS resolver,
//! redirect policy or body bound, so `verify.blocked_networks` could not be enforced there.
//! oci-client gives the types (references, media types, error and token bodies).

use bytes::Bytes;
use oci_client::Reference;
use oci_client::errors::{OciEnvelope, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::token_cache::RegistryToken;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use super::auth_file::{AuthFile, Credential};
use super::http::{SafeClient, SendError, host_label, read_bounded, timed_out};
use crate::config::VerifySettings;
use crate::domain::sha256_digest;
use crate::domain::validate::is_sha256_digest;

/// Largest manifest, token or error body read (the reference registry refuses manifests over
/// 4 MiB).
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
    /// `verify.platform` (validated at start-up: a platform that is not `os/architecture[/variant]`
    /// matches no index entry).
    pub(super) fn of(settings: &VerifySettings) -> Self {
        let (os, architecture, variant) = settings.platform_parts().unwrap_or_default();
        Self {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
            text: settings.platform.clone(),
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

/// What a `Bearer` challenge asks a token to be fetched from.
#[derive(Debug, PartialEq, Eq)]
struct BearerChallenge {
    realm: String,
    service: Option<String>,
}

impl BearerChallenge {
    /// The `Bearer` challenge of a `WWW-Authenticate` header, if it has one with a realm.
    fn parse(header: &str) -> Option<Self> {
        let challenge = http_auth::parser::ChallengeParser::new(header)
            .filter_map(Result::ok)
            .find(|challenge| challenge.scheme.eq_ignore_ascii_case("bearer"))?;
        let param = |name: &str| {
            challenge
                .params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.to_unescaped())
        };
        Some(Self {
            realm: param("realm")?,
            service: param("service"),
        })
    }
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
        let digest = sha256_digest(&self.body);
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
    pub(super) auths: AuthFile,
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
            .map_err(|err| match err {
                SendError::TooLarge(limit) => format!(
                    "{} answered a manifest larger than {limit} bytes (4 MiB), the most read",
                    reference.registry()
                ),
                err => self.http.explain(reference.registry(), err),
            })?;
        Ok(Manifest {
            body,
            header_digest,
            header_type,
        })
    }

    /// Pings `/v2/` and gets what its challenge asks for: a bearer token from the realm, basic
    /// credentials, or nothing.
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
        match ping.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::NOT_FOUND => {
                return Err(format!(
                    "{registry} does not speak the registry API: it answers 404 Not Found to \
                     GET /v2/"
                ));
            }
            _ => return Ok(Authorization::Anonymous),
        }
        let header = header(&ping, WWW_AUTHENTICATE.as_str()).unwrap_or_default();
        match BearerChallenge::parse(&header) {
            Some(challenge) => self
                .token(reference, &challenge, credential.as_ref(), deadline)
                .await
                .map(Authorization::Bearer),
            None => Ok(credential.map_or(Authorization::Anonymous, Authorization::Basic)),
        }
    }

    /// A pull token for `reference`'s repository from the challenge's realm, asked with the
    /// registry's credentials (or anonymously).
    async fn token(
        &self,
        reference: &Reference,
        challenge: &BearerChallenge,
        credential: Option<&Credential>,
        deadline: Instant,
    ) -> Result<String, String> {
        let registry = reference.registry();
        let service = format!("the token service of {registry}");
        let mut realm = Url::parse(&challenge.realm)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| {
                format!("{registry} names a token service that is not an http(s) URL")
            })?;
        {
            let mut query = realm.query_pairs_mut();
            query.append_pair(
                "scope",
                &format!("repository:{}:pull", reference.repository()),
            );
            if let Some(name) = &challenge.service {
                query.append_pair("service", name);
            }
        }
        let mut request = self.http.request(Method::GET, realm.clone());
        if let Some(c) = credential {
            request = request.basic_auth(&c.username, Some(&c.password));
        }
        let failed = |err: SendError| match err {
            SendError::Timeout => timed_out(&service, self.http.timeout()),
            err => format!("{service}: {}", self.http.explain(&host_label(&realm), err)),
        };
        let response = self
            .http
            .send(&realm, request, deadline)
            .await
            .map_err(failed)?;
        match response.status() {
            status if status.is_success() => {}
            StatusCode::UNAUTHORIZED => {
                return Err(match credential {
                    Some(_) => format!(
                        "401 from {registry}: its token service refused the credentials for it \
                         in verify.registry_auth_file"
                    ),
                    None => {
                        self.no_credentials(registry, "its token service refused anonymous access")
                    }
                });
            }
            status => return Err(format!("{service} answered {status}")),
        }
        let body = read_bounded(response, MAX_BODY_BYTES, deadline)
            .await
            .map_err(failed)?;
        let token: RegistryToken = serde_json::from_slice(&body).map_err(|_| {
            format!("{service} answered no token (a JSON object with token or access_token)")
        })?;
        Ok(token.token().to_owned())
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
        if !is_sha256_digest(&entry.digest) {
            return Err(format!(
                "the index names {:?} for {}, which is not a sha256 digest (sha256: and 64 \
                 lowercase hex digits)",
                entry.digest, self.platform.text
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_realm_and_service_are_read_from_a_bearer_challenge() {
        let header = r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:base:pull""#;
        assert_eq!(
            BearerChallenge::parse(header),
            Some(BearerChallenge {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
            })
        );
        assert_eq!(
            BearerChallenge::parse(r#"Bearer realm="https://auth.example.com/token""#)
                .and_then(|c| c.service),
            None
        );
        assert_eq!(
            BearerChallenge::parse(r#"Basic realm="Registry Realm""#),
            None
        );
        assert_eq!(BearerChallenge::parse(r#"Bearer service="no-realm""#), None);
    }

    #[test]
    fn only_sha256_digests_of_64_lowercase_hex_digits_go_into_urls() {
        let hex = "0123456789abcdef".repeat(4);
        assert!(is_sha256_digest(&format!("sha256:{hex}")));
        for bad in [
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{}", &hex[1..]),
            format!("sha256:{hex}0"),
            format!("sha512:{hex}"),
            format!("sha256:../../{}", &hex[6..]),
            format!("sha256:{}?x", &hex[2..]),
        ] {
            assert!(!is_sha256_digest(&bad), "{bad}");
        }
    }

    #[test]
    fn a_platform_with_a_variant_needs_it_and_one_without_takes_any() {
        let entry = |variant: Option<&str>| EntryPlatform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: variant.map(str::to_owned),
        };
        let platform = |text: &str| {
            Platform::of(&VerifySettings {
                platform: text.into(),
                ..VerifySettings::default()
            })
        };
        assert!(platform("linux/arm64").matches(&entry(Some("v8"))));
        assert!(platform("linux/arm64/v8").matches(&entry(Some("v8"))));
        assert!(!platform("linux/arm64/v8").matches(&entry(None)));
        assert!(!platform("linux/amd64").matches(&entry(None)));
    }
}
