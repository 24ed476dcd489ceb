//! Verification of a spec against its registries: every image reference resolves to a manifest
//! (for an index, one holding `verify.platform`), and every remote content layer's URL answers
//! with its size (and, with `verify.layer_digests`, its digests).
//!
//! One interface, [`Verifier::verify`], answering a [`Report`] with one [`Check`] per reference
//! or layer. What a report means for a request (refusing a put, pinning its references) is the
//! domain's: `crate::domain::verification`.
//!
//! Registries are spoken to by the distribution protocol on a guarded HTTP client (see
//! [`http`]), the bearer-token exchange included; oci-client gives the protocol's types.

mod auth_file;
mod http;
mod layer;
mod metrics;
mod resolve;

use std::sync::Arc;
use std::time::Duration;

use oci_client::Reference;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::VerifySettings;
use crate::domain::verification::{Check, Report};
use crate::proto::registryfacade::content_layer::Spec as LayerSpec;
use crate::proto::registryfacade::{ImageSpec, RemoteContentLayer};

use auth_file::AuthFile;
use http::{Blocklist, SafeClient};
use layer::LayerChecker;
use metrics::VerifyMetrics;
use resolve::{Platform, Resolver};

/// What one check looks at (owned, so that the checks' futures borrow nothing from the spec).
enum Target {
    Image(String),
    Layer(RemoteContentLayer),
}

/// Verifies specs; cheap to clone (one client, cache and set of metrics behind it).
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    resolver: Resolver,
    layers: LayerChecker,
    /// Resolved digests by reference; loads of the same reference at once share one request,
    /// and failures are not kept.
    digests: Option<moka::future::Cache<String, String>>,
    metrics: VerifyMetrics,
    timeout: Duration,
    /// `verify.concurrency` permits, shared by every verification: concurrent puts under
    /// `verify.required` do not multiply the requests in flight.
    slots: Semaphore,
}

impl Verifier {
    /// A verifier with `settings`, registering its metrics in `registry`. Fails when the
    /// credentials file does not read or the metrics do not register.
    pub fn new(settings: &VerifySettings, registry: &prometheus::Registry) -> anyhow::Result<Self> {
        // reqwest takes the process's rustls provider; ring is the only one built in. An error
        // means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let auths = AuthFile::load(settings.registry_auth_file.as_deref())?;
        let named_hosts = settings
            .insecure_registries
            .iter()
            .cloned()
            .chain(auths.registries());
        let metrics = VerifyMetrics::new(registry, named_hosts)?;
        let blocklist = Blocklist::new(&settings.blocked_networks);
        let http = SafeClient::new(blocklist, metrics.clone(), settings.timeout)?;
        let resolver = Resolver {
            http: http.clone(),
            auths,
            insecure: settings.insecure_registries.clone(),
            platform: Platform::of(settings),
        };
        let layers = LayerChecker {
            http,
            download_limit: settings
                .layer_digests
                .then_some(settings.max_layer_download_bytes),
        };
        let digests = (!settings.cache_ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(settings.cache_max_entries)
                .time_to_live(settings.cache_ttl)
                .build()
        });
        Ok(Self {
            inner: Arc::new(Inner {
                resolver,
                layers,
                digests,
                metrics,
                timeout: settings.timeout,
                slots: Semaphore::new(settings.concurrency),
            }),
        })
    }

    /// Checks every image reference and remote content layer of `spec`, all within
    /// `verify.timeout`, with at most `verify.concurrency` checks in flight across all the
    /// verifications running. Direct layers need no check. Each failed check is logged once.
    pub async fn verify(&self, spec: &ImageSpec) -> Report {
        let deadline = Instant::now() + self.inner.timeout;
        let checks: Vec<Check> = futures::future::join_all(
            targets(spec)
                .into_iter()
                .map(|(field, target)| self.check(field, target, deadline)),
        )
        .await;
        for check in checks.iter().filter(|check| !check.ok) {
            tracing::warn!(
                field = %check.field,
                reference = %redact(&check.reference),
                error = check.error.as_deref().unwrap_or_default(),
                "verification check failed"
            );
        }
        let ok = checks.iter().all(|check| check.ok);
        self.inner.metrics.verification(ok);
        Report { ok, checks }
    }

    /// Runs one check once a slot is free (the wait counts against `deadline`).
    async fn check(&self, field: String, target: Target, deadline: Instant) -> Check {
        let reference = match &target {
            Target::Image(reference) => reference.clone(),
            Target::Layer(layer) => layer.url.clone(),
        };
        let outcome = match tokio::time::timeout_at(deadline, self.inner.slots.acquire()).await {
            Ok(Ok(_slot)) => match target {
                Target::Image(reference) => self.resolve(&reference, deadline).await.map(Some),
                Target::Layer(layer) => self
                    .inner
                    .layers
                    .check(&layer, deadline)
                    .await
                    .map(|()| None),
            },
            // The semaphore is never closed: only the deadline ends the wait.
            Ok(Err(_)) | Err(_) => Err(format!(
                "the check did not start within {} (verify.timeout): every one of the \
                 verify.concurrency slots, shared by all verifications, stayed taken",
                humantime::format_duration(self.inner.timeout)
            )),
        };
        match outcome {
            Ok(digest) => Check {
                field,
                reference,
                ok: true,
                digest,
                error: None,
            },
            Err(error) => Check {
                field,
                reference,
                ok: false,
                digest: None,
                error: Some(error),
            },
        }
    }

    /// The digest `reference` resolves to, from the cache when it is there.
    async fn resolve(&self, reference: &str, deadline: Instant) -> Result<String, String> {
        let parsed = Reference::try_from(reference)
            .map_err(|err| format!("not a valid image reference: {err}"))?;
        let resolve = async {
            match tokio::time::timeout_at(deadline, self.inner.resolver.resolve(&parsed, deadline))
                .await
            {
                Ok(result) => result,
                Err(_) => Err(http::timed_out(parsed.registry(), self.inner.timeout)),
            }
        };
        match &self.inner.digests {
            Some(cache) => cache
                .try_get_with(parsed.whole(), resolve)
                .await
                .map_err(|err| err.as_ref().clone()),
            None => resolve.await,
        }
    }
}

/// What `spec` asks to be checked, with the field paths.
fn targets(spec: &ImageSpec) -> Vec<(String, Target)> {
    let mut targets = Vec::new();
    for (name, reference) in [
        ("base_ref", &spec.base_ref),
        ("ide_ref", &spec.ide_ref),
        ("supervisor_ref", &spec.supervisor_ref),
    ] {
        if !reference.is_empty() {
            targets.push((format!("spec.{name}"), Target::Image(reference.clone())));
        }
    }
    for (i, reference) in spec.ide_layer_ref.iter().enumerate() {
        targets.push((
            format!("spec.ide_layer_ref[{i}]"),
            Target::Image(reference.clone()),
        ));
    }
    for (i, layer) in spec.content_layer.iter().enumerate() {
        if let Some(LayerSpec::Remote(remote)) = &layer.spec {
            targets.push((
                format!("spec.content_layer[{i}].remote"),
                Target::Layer(remote.clone()),
            ));
        }
    }
    targets
}

/// A URL as it may be logged: without user info and query (a presigned URL's query is a
/// credential). Image references are logged as written.
fn redact(reference: &str) -> String {
    match url::Url::parse(reference) {
        Ok(mut url) if matches!(url.scheme(), "http" | "https") => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.to_string()
        }
        _ => reference.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_urls_lose_their_credentials_and_query() {
        assert_eq!(
            redact("https://user:pw@bucket.s3.example.com/layer.tar.gz?X-Amz-Signature=abc"),
            "https://bucket.s3.example.com/layer.tar.gz"
        );
        assert_eq!(redact("ghcr.io/a/b:1"), "ghcr.io/a/b:1");
    }
}
