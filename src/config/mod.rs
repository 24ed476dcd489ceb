//! Settings, loaded in layers: built-in defaults, then a TOML file (`--config`), then environment
//! variables `SPEC_PROVIDER__<SECTION>__<KEY>`. Every key is documented in its section's struct
//! (the sections are grouped by concern in the files of this module), in the README and in
//! `spec-provider.example.toml`. [`Settings::load`] validates everything, here, and fails with a
//! sentence that names the key.

mod observability;
mod security;
mod server;
mod storage;
#[cfg(test)]
mod tests;
mod verify;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use observability::{HealthSettings, LogFormat, LogSettings, MetricsSettings, TracingSettings};
pub use security::{AuthSettings, Secret, TlsSettings};
pub use server::{LimitSettings, ServerSettings, ValidationSettings};
pub use storage::{
    CacheSettings, DatabaseSettings, DatabaseUrl, MAX_NEGATIVE_TTL, SweeperSettings,
};
pub use verify::VerifySettings;

/// Prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "SPEC_PROVIDER";

/// Registry facades refuse GetImageSpec answers larger than this.
pub const FACADE_MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// All settings of the server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The gRPC listener and shutdown.
    pub server: ServerSettings,
    /// Where specs are stored.
    pub database: DatabaseSettings,
    /// Size limits.
    pub limits: LimitSettings,
    /// Optional relaxations of spec validation.
    pub validation: ValidationSettings,
    /// The background deletion of expired records.
    pub sweeper: SweeperSettings,
    /// The periodic database check behind the health service.
    pub health: HealthSettings,
    /// Logging.
    pub log: LogSettings,
    /// Metrics that are computed in the background.
    pub metrics: MetricsSettings,
    /// OpenTelemetry trace export.
    pub tracing: TracingSettings,
    /// TLS and mutual TLS on the gRPC listeners.
    pub tls: TlsSettings,
    /// Who may call what: bearer tokens and client certificate identities with roles.
    pub auth: AuthSettings,
    /// The GetImageSpec read cache.
    pub cache: CacheSettings,
    /// Checking specs against their registries and content-layer servers.
    pub verify: VerifySettings,
}

/// A setting that is missing, malformed or out of range.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or a variable could not be read or deserialized.
    #[error("invalid configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value was read but is not acceptable.
    #[error("invalid setting {key}: {reason}")]
    Invalid {
        /// The key, e.g. `database.url`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Settings {
    /// Loads settings from the defaults, then `file` (TOML) if given, then the environment.
    ///
    /// `env` replaces the process environment when given (tests pass their own variables).
    pub fn load(
        file: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        // Only the named keys are lists: without them, `config` splits every value.
        let environment = AuthSettings::LIST_KEYS
            .into_iter()
            .chain(VerifySettings::LIST_KEYS)
            .fold(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(","),
                config::Environment::with_list_parse_key,
            )
            .try_parsing(true)
            .source(env);
        let settings: Settings = builder.add_source(environment).build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the values that deserialize but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (database, server) = (&self.database, &self.server);
        if database.url.backend().is_none() {
            return invalid(
                "database.url",
                "must start with sqlite:// (embedded) or postgres:// (PostgreSQL)",
            );
        }
        at_least_one("database.max_connections", database.max_connections)?;
        longer_than_zero("database.acquire_timeout", database.acquire_timeout)?;
        if database.statement_timeout.as_millis() == 0 {
            return invalid("database.statement_timeout", "must be at least 1ms");
        }
        at_least_one(
            "server.max_concurrent_streams",
            server.max_concurrent_streams,
        )?;
        longer_than_zero("server.request_timeout", server.request_timeout)?;
        longer_than_zero("server.preface_timeout", server.preface_timeout)?;
        at_least_one("server.max_connections", server.max_connections)?;
        longer_than_zero(
            "server.http2_keepalive_interval",
            server.http2_keepalive_interval,
        )?;
        longer_than_zero(
            "server.http2_keepalive_timeout",
            server.http2_keepalive_timeout,
        )?;
        if self.limits.max_spec_bytes == 0 || self.limits.max_spec_bytes > FACADE_MAX_ANSWER_BYTES {
            return invalid(
                "limits.max_spec_bytes",
                "must be between 1 and 16777216 (16 MiB, the most a registry facade accepts)",
            );
        }
        longer_than_zero("sweeper.interval", self.sweeper.interval)?;
        at_least_one("sweeper.batch_size", self.sweeper.batch_size)?;
        if self.tracing.exports_spans()
            && !matches!(
                url::Url::parse(&self.tracing.otlp_endpoint).map(|u| u.scheme().to_owned()),
                Ok(scheme) if scheme == "http" || scheme == "https"
            )
        {
            return invalid(
                "tracing.otlp_endpoint",
                "must be an http:// or https:// URL of an OTLP/gRPC collector, or empty",
            );
        }
        if !(0.0..=1.0).contains(&self.tracing.sample_ratio) {
            return invalid("tracing.sample_ratio", "must be between 0.0 and 1.0");
        }
        longer_than_zero("health.check_interval", self.health.check_interval)?;
        longer_than_zero("metrics.refresh_interval", self.metrics.refresh_interval)?;
        if self.cache.enabled && self.cache.max_bytes == 0 {
            return invalid(
                "cache.max_bytes",
                "must be at least 1 (set cache.enabled = false to turn the cache off)",
            );
        }
        if self.cache.negative_ttl > MAX_NEGATIVE_TTL {
            return invalid("cache.negative_ttl", "must be at most 60s");
        }
        if server.metrics_listen == server.listen && server.listen.port() != 0 {
            return invalid(
                "server.metrics_listen",
                "must differ from server.listen (metrics have a listener of their own)",
            );
        }
        self.validate_verify()?;
        self.validate_security()
    }

    /// The `[verify]` checks.
    fn validate_verify(&self) -> Result<(), ConfigError> {
        let verify = &self.verify;
        if verify.platform_parts().is_none() {
            return invalid(
                "verify.platform",
                format!(
                    "must be os/architecture or os/architecture/variant (e.g. linux/amd64), got {:?}",
                    verify.platform
                ),
            );
        }
        if let Some(bad) = verify
            .insecure_registries
            .iter()
            .find(|registry| registry.is_empty() || registry.contains(['/', ' ']))
        {
            return invalid(
                "verify.insecure_registries",
                format!("entries must be host or host:port, got {bad:?}"),
            );
        }
        longer_than_zero("verify.timeout", verify.timeout)?;
        at_least_one("verify.concurrency", verify.concurrency)?;
        if verify.cache_max_entries == 0 {
            return invalid(
                "verify.cache_max_entries",
                "must be at least 1 (set verify.cache_ttl = \"0s\" to turn the cache off)",
            );
        }
        Ok(())
    }

    /// The `[tls]` and `[auth]` checks, including the refusal to serve SpecAdmin openly on a
    /// non-loopback address. Token files are read at start-up, not here.
    fn validate_security(&self) -> Result<(), ConfigError> {
        let (tls, auth) = (&self.tls, &self.auth);
        if tls.cert.is_some() != tls.key.is_some() {
            return invalid("tls.key", "tls.cert and tls.key must be set together");
        }
        if tls.client_ca.is_some() && !tls.enabled() {
            return invalid("tls.client_ca", "needs tls.cert and tls.key");
        }
        longer_than_zero("tls.reload_interval", tls.reload_interval)?;
        longer_than_zero("tls.handshake_timeout", tls.handshake_timeout)?;
        at_least_one("tls.max_handshakes", tls.max_handshakes)?;
        for (key, tokens) in [
            ("auth.admin_tokens", &auth.admin_tokens),
            ("auth.reader_tokens", &auth.reader_tokens),
        ] {
            if tokens
                .iter()
                .any(|t| !AuthSettings::is_valid_token(t.expose()))
            {
                return invalid(
                    key,
                    "tokens must be non-empty and printable ASCII without spaces",
                );
            }
        }
        if (!auth.admin_subjects.is_empty() || !auth.reader_subjects.is_empty())
            && tls.client_ca.is_none()
        {
            return invalid(
                "auth.admin_subjects",
                "client certificate subjects need tls.client_ca (mutual TLS)",
            );
        }
        if let Some(admin) = self.server.admin_listen
            && admin.port() != 0
            && (admin == self.server.listen || admin == self.server.metrics_listen)
        {
            return invalid(
                "server.admin_listen",
                "must differ from server.listen and server.metrics_listen",
            );
        }
        let (admin_key, admin_addr) = match self.server.admin_listen {
            Some(addr) => ("server.admin_listen", addr),
            None => ("server.listen", self.server.listen),
        };
        let secured = auth.has_admin_credentials() || tls.client_ca.is_some();
        if !admin_addr.ip().is_loopback() && !secured && !auth.allow_insecure_admin {
            return invalid(
                admin_key,
                format!(
                    "refusing to serve SpecAdmin on the non-loopback address {admin_addr} without \
                     credentials: set auth.admin_tokens (or auth.admin_tokens_file), or \
                     tls.client_ca for mutual TLS, or auth.allow_insecure_admin = true to accept \
                     that anyone who reaches it can write specs"
                ),
            );
        }
        Ok(())
    }
}

/// The error that the setting `key` is not acceptable, and why.
fn invalid(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        key,
        reason: reason.into(),
    })
}

/// Fails, naming `key`, when `count` is 0.
fn at_least_one<N: PartialEq + From<u8>>(key: &'static str, count: N) -> Result<(), ConfigError> {
    if count == N::from(0) {
        return invalid(key, "must be at least 1");
    }
    Ok(())
}

/// Fails, naming `key`, when `duration` is 0.
fn longer_than_zero(key: &'static str, duration: Duration) -> Result<(), ConfigError> {
    if duration.is_zero() {
        return invalid(key, "must be longer than 0s");
    }
    Ok(())
}
