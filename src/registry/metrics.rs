//! The metrics of verification: one verdict per verification, and every request it sent, by the
//! registry (or content server) host it went to.
//!
//! Hosts come from the specs verified, so any writer could otherwise make a series per host it
//! names: the `registry` label is the host for the registries the configuration names
//! (`verify.insecure_registries`, `verify.registry_auth_file`) and for the first
//! [`MAX_SEEN_HOSTS`] other hosts seen, and `other` after that.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::metrics::register;

/// From a cached manifest HEAD on a nearby registry to a request cut off by `verify.timeout`.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Most hosts not named by the configuration that get a `registry` label of their own.
pub(super) const MAX_SEEN_HOSTS: usize = 50;

/// The `registry` label of the hosts past [`MAX_SEEN_HOSTS`].
pub(super) const OTHER_HOSTS: &str = "other";

/// The families registered for one [`super::Verifier`].
#[derive(Clone)]
pub(super) struct VerifyMetrics {
    verifications: IntCounterVec,
    requests: IntCounterVec,
    latency: HistogramVec,
    hosts: Arc<HostLabels>,
}

/// Which hosts are a `registry` label of their own.
struct HostLabels {
    named: HashSet<String>,
    seen: Mutex<HashSet<String>>,
}

impl HostLabels {
    fn label<'a>(&self, host: &'a str) -> &'a str {
        if self.named.contains(host) {
            return host;
        }
        let mut seen = self.seen.lock().expect("host labels lock poisoned");
        if seen.contains(host) {
            return host;
        }
        if seen.len() < MAX_SEEN_HOSTS {
            seen.insert(host.to_owned());
            return host;
        }
        OTHER_HOSTS
    }
}

impl VerifyMetrics {
    /// Registers the families in `registry`; the hosts in `named` (`host` or `host:port`) are
    /// always a label of their own.
    pub(super) fn new(
        registry: &Registry,
        named: impl IntoIterator<Item = String>,
    ) -> Result<Self, prometheus::Error> {
        let verifications = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "spec_provider_verifications_total",
                    "Verifications of a spec against its registries, by result (ok, failed).",
                ),
                &["result"],
            )?,
        )?;
        let requests = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "spec_provider_registry_requests_total",
                    "Requests sent by verifications, by registry or content host (the \
                     configured ones and the first 50 others; `other` after that) and by HTTP \
                     status code (or error, blocked, timeout when no answer came).",
                ),
                &["registry", "code"],
            )?,
        )?;
        let latency = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "spec_provider_registry_request_duration_seconds",
                    "Time a request sent by a verification took, failures included, by registry \
                     or content host.",
                )
                .buckets(BUCKETS.to_vec()),
                &["registry"],
            )?,
        )?;
        // Both series exist from start-up, at 0, so that a rate over them is defined at once.
        for result in ["ok", "failed"] {
            verifications.with_label_values(&[result]);
        }
        Ok(Self {
            verifications,
            requests,
            latency,
            hosts: Arc::new(HostLabels {
                named: named.into_iter().collect(),
                seen: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// Counts one verification.
    pub(super) fn verification(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.verifications.with_label_values(&[result]).inc();
    }

    /// Counts one request to `host` that ended with `code` after `elapsed`.
    pub(super) fn request(&self, host: &str, code: &str, elapsed: Duration) {
        let host = self.hosts.label(host);
        self.requests.with_label_values(&[host, code]).inc();
        self.latency
            .with_label_values(&[host])
            .observe(elapsed.as_secs_f64());
    }
}
