//! `[health]`, `[log]`, `[metrics]` and `[tracing]`: what the server tells of itself.

use std::time::Duration;

use serde::Deserialize;

/// `[health]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    /// Time between database checks; health is NOT_SERVING while they fail.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_secs(5),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` (default) or `json`. The level filter comes from `RUST_LOG` (default `info`).
    pub format: LogFormat,
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Time between counts of the stored and the expired specs (`spec_provider_specs_stored`,
    /// `spec_provider_specs_expired`). Counting reads a whole index, so it runs in the
    /// background rather than per scrape or request.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(30),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[tracing]`: OpenTelemetry trace export over OTLP/gRPC, off by default. Each RPC becomes a
/// server span named after its method, carrying the request id.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingSettings {
    /// The OTLP/gRPC endpoint of a collector, e.g. `http://otel-collector:4317`; empty (the
    /// default) exports nothing.
    pub otlp_endpoint: String,
    /// The `service.name` the spans are exported under.
    pub service_name: String,
    /// The fraction of traces exported, from 0.0 to 1.0 (a caller's sampling decision, when it
    /// sends one, wins).
    pub sample_ratio: f64,
}

impl Default for TracingSettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: "spec-provider".to_owned(),
            sample_ratio: 1.0,
        }
    }
}

impl TracingSettings {
    /// Whether spans are exported: `otlp_endpoint` is set.
    pub fn exports_spans(&self) -> bool {
        !self.otlp_endpoint.is_empty()
    }
}
