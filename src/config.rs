//! Settings, loaded in layers: built-in defaults, then a TOML file (`--config`), then environment
//! variables `SPEC_PROVIDER__<SECTION>__<KEY>`. Every key is documented here, in the README and in
//! `spec-provider.example.toml`. [`Settings::load`] validates everything and fails with a sentence
//! that names the key.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

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
    /// The GetImageSpec read cache.
    pub cache: CacheSettings,
}

/// `[server]`: the gRPC listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address of the gRPC listener (SpecProvider, SpecAdmin, health, reflection). Loopback by
    /// default; use `0.0.0.0:8080` to serve other hosts. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// How long in-flight RPCs may run after SIGTERM/SIGINT before the server stops anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Address of the HTTP listener for Prometheus (`/metrics`) and HTTP probes (`/healthz`,
    /// `/readyz`), kept apart from the gRPC listener so that it can stay private to the cluster.
    /// Port 0 picks a free port.
    pub metrics_listen: SocketAddr,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace: Duration::from_secs(10),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9500)),
        }
    }
}

/// `[database]`: the store.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (embedded, the default) or `postgres://USER:PASSWORD@HOST:PORT/DB`.
    pub url: DatabaseUrl,
    /// Apply pending migrations at start-up (`spec-provider migrate` applies them on demand).
    pub run_migrations: bool,
    /// Most connections in the pool (PostgreSQL; SQLite uses one writer plus this many readers).
    pub max_connections: u32,
    /// Longest wait for a pooled connection (including connecting) before an RPC fails with
    /// UNAVAILABLE: no RPC hangs on a dead database.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: DatabaseUrl("sqlite://spec-provider.db".into()),
            run_migrations: true,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Largest accepted spec, as its protobuf encoding, in bytes (at most 16 MiB, the most a
    /// registry facade accepts).
    pub max_spec_bytes: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_spec_bytes: 8 * 1024 * 1024,
        }
    }
}

/// `[validation]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationSettings {
    /// Accept `http://` URLs for remote content layers (only `https://` otherwise).
    pub allow_http_urls: bool,
}

/// `[sweeper]`: deletes expired records in the background (they are invisible from the moment
/// they expire; the sweeper only reclaims their space).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweeperSettings {
    /// Time between sweeps.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Most rows deleted by one statement, so a sweep never holds long locks.
    pub batch_size: u32,
}

impl Default for SweeperSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            batch_size: 1000,
        }
    }
}

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
    /// Time between counts of the stored specs (`spec_provider_specs_stored`). Counting reads
    /// the whole table, so it runs in the background rather than per scrape or request.
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

/// `[cache]`: the in-process read cache of GetImageSpec answers. With PostgreSQL it is kept
/// coherent across replicas by notifications (see `docs/scaling.md`); with SQLite by the writes
/// of this process.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Whether GetImageSpec answers are cached at all.
    pub enabled: bool,
    /// Most bytes the cached specs (their encoding plus per-entry overhead) may take; the least
    /// useful entries are evicted beyond it.
    pub max_bytes: u64,
    /// How long a "not found" answer is cached (probes for unknown ids are frequent). A spec
    /// written meanwhile evicts it at once; `0s` caches no "not found" answers.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
}

/// The longest `cache.negative_ttl` accepted: "not found" answers are meant to be cached briefly.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(60);

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 64 * 1024 * 1024,
            negative_ttl: Duration::from_secs(1),
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

/// A database URL. Its `Debug` and `Display` hide the password, so it can be logged.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, password included: only for opening connections.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL's scheme (`sqlite`, `postgres`, ...), if it has one.
    pub fn scheme(&self) -> Option<&str> {
        self.0.split_once("://").map(|(scheme, _)| scheme)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("***"));
                f.write_str(parsed.as_str())
            }
            Ok(_) => f.write_str(&self.0),
            Err(_) => f.write_str("<unparseable database url>"),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
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
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    // No list settings yet. When one comes, name it with `with_list_parse_key`
                    // and set `list_separator(",")`: without named keys, `config` splits every
                    // value into a list.
                    .try_parsing(true)
                    .source(env),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the values that deserialize but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        match self.database.url.scheme() {
            Some("sqlite" | "postgres" | "postgresql") => {}
            _ => {
                return invalid(
                    "database.url",
                    "must start with sqlite:// (embedded) or postgres:// (PostgreSQL)",
                );
            }
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if self.database.acquire_timeout.is_zero() {
            return invalid("database.acquire_timeout", "must be longer than 0s");
        }
        if self.limits.max_spec_bytes == 0 || self.limits.max_spec_bytes > FACADE_MAX_ANSWER_BYTES {
            return invalid(
                "limits.max_spec_bytes",
                "must be between 1 and 16777216 (16 MiB, the most a registry facade accepts)",
            );
        }
        if self.sweeper.interval.is_zero() {
            return invalid("sweeper.interval", "must be longer than 0s");
        }
        if self.sweeper.batch_size == 0 {
            return invalid("sweeper.batch_size", "must be at least 1");
        }
        if self.health.check_interval.is_zero() {
            return invalid("health.check_interval", "must be longer than 0s");
        }
        if self.metrics.refresh_interval.is_zero() {
            return invalid("metrics.refresh_interval", "must be longer than 0s");
        }
        if self.cache.enabled && self.cache.max_bytes == 0 {
            return invalid(
                "cache.max_bytes",
                "must be at least 1 (set cache.enabled = false to turn the cache off)",
            );
        }
        if self.cache.negative_ttl > MAX_NEGATIVE_TTL {
            return invalid("cache.negative_ttl", "must be at most 60s");
        }
        if self.server.metrics_listen == self.server.listen && self.server.listen.port() != 0 {
            return invalid(
                "server.metrics_listen",
                "must differ from server.listen (metrics have a listener of their own)",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn defaults_serve_loopback_on_embedded_sqlite() {
        let settings = Settings::load(None, env(&[])).unwrap();
        assert_eq!(settings.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.database.url.expose(), "sqlite://spec-provider.db");
        assert_eq!(settings.limits.max_spec_bytes, 8 * 1024 * 1024);
        assert_eq!(settings.server.shutdown_grace, Duration::from_secs(10));
        assert_eq!(settings.server.metrics_listen.to_string(), "127.0.0.1:9500");
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let settings = Settings::load(
            None,
            env(&[
                ("SPEC_PROVIDER__SERVER__LISTEN", "0.0.0.0:9090"),
                ("SPEC_PROVIDER__DATABASE__URL", "postgres://u:p@db/specs"),
                ("SPEC_PROVIDER__DATABASE__ACQUIRE_TIMEOUT", "250ms"),
                ("SPEC_PROVIDER__VALIDATION__ALLOW_HTTP_URLS", "true"),
                ("SPEC_PROVIDER__LOG__FORMAT", "json"),
                ("SPEC_PROVIDER__SERVER__METRICS_LISTEN", "0.0.0.0:9600"),
                ("SPEC_PROVIDER__METRICS__REFRESH_INTERVAL", "1m"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.server.metrics_listen.to_string(), "0.0.0.0:9600");
        assert_eq!(settings.metrics.refresh_interval, Duration::from_secs(60));
        assert_eq!(settings.server.listen.to_string(), "0.0.0.0:9090");
        assert_eq!(
            settings.database.acquire_timeout,
            Duration::from_millis(250)
        );
        assert!(settings.validation.allow_http_urls);
        assert_eq!(settings.log.format, LogFormat::Json);
    }

    #[test]
    fn a_file_is_read_and_the_environment_wins_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"127.0.0.1:1234\"\n[limits]\nmax_spec_bytes = 1024\n",
        )
        .unwrap();
        let settings = Settings::load(
            Some(&path),
            env(&[("SPEC_PROVIDER__LIMITS__MAX_SPEC_BYTES", "2048")]),
        )
        .unwrap();
        assert_eq!(settings.server.listen.port(), 1234);
        assert_eq!(settings.limits.max_spec_bytes, 2048);
    }

    #[test]
    fn errors_name_the_offending_key() {
        let cases = [
            (
                "SPEC_PROVIDER__SERVER__LISTEN",
                "not-an-address",
                "server.listen",
            ),
            ("SPEC_PROVIDER__DATABASE__URL", "mysql://x", "database.url"),
            (
                "SPEC_PROVIDER__LIMITS__MAX_SPEC_BYTES",
                "99999999",
                "limits.max_spec_bytes",
            ),
            (
                "SPEC_PROVIDER__SERVER__SHUTDOWN_GRACE",
                "soon",
                "server.shutdown_grace",
            ),
            ("SPEC_PROVIDER__SERVER__LISTNE", "x", "listne"),
            (
                "SPEC_PROVIDER__SERVER__METRICS_LISTEN",
                "127.0.0.1:8080",
                "server.metrics_listen",
            ),
            (
                "SPEC_PROVIDER__METRICS__REFRESH_INTERVAL",
                "0s",
                "metrics.refresh_interval",
            ),
            ("SPEC_PROVIDER__CACHE__MAX_BYTES", "0", "cache.max_bytes"),
            (
                "SPEC_PROVIDER__CACHE__NEGATIVE_TTL",
                "2m",
                "cache.negative_ttl",
            ),
        ];
        for (key, value, named) in cases {
            let err = Settings::load(None, env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(named),
                "{key}={value}: {err:?} should name {named}"
            );
        }
    }

    #[test]
    fn the_example_file_loads_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec-provider.example.toml");
        let example = Settings::load(Some(&path), env(&[])).unwrap();
        let defaults = Settings::load(None, env(&[])).unwrap();
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn database_url_hides_its_password() {
        let url = DatabaseUrl::new("postgres://spec:hunter2@db:5432/specs");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(!url.to_string().contains("hunter2"));
        assert_eq!(url.expose(), "postgres://spec:hunter2@db:5432/specs");
    }
}
