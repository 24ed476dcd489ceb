//! Settings, loaded in layers: built-in defaults, then a TOML file (`--config`), then environment
//! variables `SPEC_PROVIDER__<SECTION>__<KEY>`. Every key is documented here, in the README and in
//! `spec-provider.example.toml`. [`Settings::load`] validates everything and fails with a sentence
//! that names the key.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    /// When set, SpecAdmin is served on this address only (with health and reflection), and
    /// `listen` serves no SpecAdmin: the admin API can then sit on a network that registry
    /// facades cannot reach. Port 0 picks a free port.
    pub admin_listen: Option<SocketAddr>,
    /// Most HTTP/2 streams (concurrent RPCs) one client connection may have open; more wait in the
    /// client. Bounds what a single connection can ask of the server at once.
    pub max_concurrent_streams: u32,
    /// Longest time one unary RPC may take, from its headers to its answer, reading the request
    /// included: a client that opens a stream and never sends gets CANCELLED after this long.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Most client connections open at once on each listener (counted once TLS is established);
    /// further connections are accepted and closed at once, so that a flood of connections cannot
    /// exhaust file descriptors or memory.
    pub max_connections: usize,
    /// Longest time a new client connection may take to send the HTTP/2 connection preface (its
    /// first 24 bytes; counted after the TLS handshake when TLS is on); a connection that has
    /// not sent it by then is closed, so silent connections cannot hold `max_connections`.
    #[serde(with = "humantime_serde")]
    pub preface_timeout: Duration,
    /// Time between HTTP/2 pings on an idle connection, to find peers that are gone.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
    /// How long a ping may stay unanswered before the connection is closed.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace: Duration::from_secs(10),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9500)),
            admin_listen: None,
            max_concurrent_streams: 200,
            request_timeout: Duration::from_secs(30),
            max_connections: 4096,
            preface_timeout: Duration::from_secs(10),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
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
    /// Longest time one SQL statement may run on PostgreSQL before the database cancels it and
    /// the RPC fails with UNAVAILABLE (e.g. a row locked by a stuck transaction). SQLite has no
    /// statement timeout: a write waits at most its busy timeout for the file lock.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: DatabaseUrl("sqlite://spec-provider.db".into()),
            run_migrations: true,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
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
    /// Pause between two batches of one sweep, so that a sweep of many expired records leaves
    /// the database (and, on a shared machine, the CPU) to the reads in between. `0s`: none.
    ///
    /// The defaults (500 rows, 500 ms) sweep at most about 1,000 rows a second per replica, as
    /// PostgreSQL's autovacuum is throttled: the records are already invisible, so nothing but
    /// disk space waits for the sweep, and each of its commits makes every SQLite reader
    /// connection refill its page cache (`docs/benchmarks.md`).
    #[serde(with = "humantime_serde")]
    pub batch_pause: Duration,
}

impl Default for SweeperSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            batch_size: 500,
            batch_pause: Duration::from_millis(500),
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

/// `[tls]`: TLS on the gRPC listeners. Without `cert` and `key` they speak plaintext HTTP/2.
/// The files are read again whenever their contents change (cert-manager rotates them), without
/// dropping connections; a new pair that does not load is ignored with a warning.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: Option<PathBuf>,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) for mutual TLS: when set, every client must present a certificate
    /// that chains to one of them, or the handshake fails.
    pub client_ca: Option<PathBuf>,
    /// How often the files above (and the token files of `[auth]`) are checked for changes.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Longest TLS handshake; a client that takes longer is disconnected.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Most TLS handshakes in progress at once on each listener; a connection beyond them is
    /// closed at once. Handshaking connections do not count against `server.max_connections`
    /// (a connection takes that permit once its handshake is done), so this bounds what clients
    /// that connect and never finish a handshake can hold: with `handshake_timeout`, a listener
    /// has at most `server.max_connections` + `max_handshakes` connections open.
    pub max_handshakes: usize,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            client_ca: None,
            reload_interval: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 256,
        }
    }
}

impl TlsSettings {
    /// Whether the listeners speak TLS.
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }
}

/// `[auth]`: roles are `reader` (SpecProvider, reflection) and `admin` (everything). Health needs
/// no credentials. When no reader credentials are configured, reads are open to every client
/// (as registry facades expect); when no credentials at all are configured, SpecAdmin is open too.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Bearer tokens (`authorization: Bearer <token>`) of the admin role. Environment: a
    /// comma-separated list.
    pub admin_tokens: Vec<Secret>,
    /// Bearer tokens of the reader role.
    pub reader_tokens: Vec<Secret>,
    /// A file with more admin tokens, one per line (blank lines ignored), e.g. a mounted
    /// Kubernetes Secret; re-read when it changes.
    pub admin_tokens_file: Option<PathBuf>,
    /// A file with more reader tokens, one per line.
    pub reader_tokens_file: Option<PathBuf>,
    /// Client certificate identities (a DNS name of the certificate, or its common name) of the
    /// admin role. Needs `tls.client_ca`.
    pub admin_subjects: Vec<String>,
    /// Client certificate identities of the reader role. Needs `tls.client_ca`.
    pub reader_subjects: Vec<String>,
    /// Serve SpecAdmin on a non-loopback address without admin tokens or mutual TLS. Anyone who
    /// reaches the listener can then decide what every workspace runs; logged as a warning.
    pub allow_insecure_admin: bool,
}

impl AuthSettings {
    /// The keys of the list settings, which the environment gives as comma-separated values.
    pub const LIST_KEYS: [&str; 4] = [
        "auth.admin_tokens",
        "auth.reader_tokens",
        "auth.admin_subjects",
        "auth.reader_subjects",
    ];

    /// Whether any admin credential (token, token file or subject) is configured.
    pub fn has_admin_credentials(&self) -> bool {
        !self.admin_tokens.is_empty()
            || self.admin_tokens_file.is_some()
            || !self.admin_subjects.is_empty()
    }

    /// Whether `token` can be a bearer token: what fits in an `authorization` header value after
    /// `Bearer ` and survives being one line of a token file.
    pub fn is_valid_token(token: &str) -> bool {
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
    }
}

/// A secret string (a bearer token): `Debug` shows `***`, so settings can be logged whole.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself: only for comparing with what a client sent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
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
                    // Only the named keys are lists: without them, `config` splits every value.
                    .list_separator(",")
                    .with_list_parse_key(AuthSettings::LIST_KEYS[0])
                    .with_list_parse_key(AuthSettings::LIST_KEYS[1])
                    .with_list_parse_key(AuthSettings::LIST_KEYS[2])
                    .with_list_parse_key(AuthSettings::LIST_KEYS[3])
                    .with_list_parse_key(VerifySettings::LIST_KEYS[0])
                    .with_list_parse_key(VerifySettings::LIST_KEYS[1])
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
        if self.database.statement_timeout.as_millis() == 0 {
            return invalid("database.statement_timeout", "must be at least 1ms");
        }
        if self.server.max_concurrent_streams == 0 {
            return invalid("server.max_concurrent_streams", "must be at least 1");
        }
        if self.server.request_timeout.is_zero() {
            return invalid("server.request_timeout", "must be longer than 0s");
        }
        if self.server.preface_timeout.is_zero() {
            return invalid("server.preface_timeout", "must be longer than 0s");
        }
        if self.server.max_connections == 0 {
            return invalid("server.max_connections", "must be at least 1");
        }
        if self.server.http2_keepalive_interval.is_zero() {
            return invalid("server.http2_keepalive_interval", "must be longer than 0s");
        }
        if self.server.http2_keepalive_timeout.is_zero() {
            return invalid("server.http2_keepalive_timeout", "must be longer than 0s");
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
        self.verify.validate()?;
        self.validate_security()
    }

    /// The `[tls]` and `[auth]` checks, including the refusal to serve SpecAdmin openly on a
    /// non-loopback address. Token files are read at start-up, not here.
    fn validate_security(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        let (tls, auth) = (&self.tls, &self.auth);
        if tls.cert.is_some() != tls.key.is_some() {
            return invalid(
                "tls.key",
                "tls.cert and tls.key must be set together".into(),
            );
        }
        if tls.client_ca.is_some() && !tls.enabled() {
            return invalid("tls.client_ca", "needs tls.cert and tls.key".into());
        }
        if tls.reload_interval.is_zero() {
            return invalid("tls.reload_interval", "must be longer than 0s".into());
        }
        if tls.handshake_timeout.is_zero() {
            return invalid("tls.handshake_timeout", "must be longer than 0s".into());
        }
        if tls.max_handshakes == 0 {
            return invalid("tls.max_handshakes", "must be at least 1".into());
        }
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
                    "tokens must be non-empty and printable ASCII without spaces".into(),
                );
            }
        }
        if (!auth.admin_subjects.is_empty() || !auth.reader_subjects.is_empty())
            && tls.client_ca.is_none()
        {
            return invalid(
                "auth.admin_subjects",
                "client certificate subjects need tls.client_ca (mutual TLS)".into(),
            );
        }
        if let Some(admin) = self.server.admin_listen
            && admin.port() != 0
            && (admin == self.server.listen || admin == self.server.metrics_listen)
        {
            return invalid(
                "server.admin_listen",
                "must differ from server.listen and server.metrics_listen".into(),
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
    /// Most checks of one verification in flight at once.
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

    /// Checks the values that deserialize but make no sense.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        let parts: Vec<&str> = self.platform.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|part| part.is_empty()) {
            return invalid(
                "verify.platform",
                format!(
                    "must be os/architecture or os/architecture/variant (e.g. linux/amd64), got {:?}",
                    self.platform
                ),
            );
        }
        if let Some(bad) = self
            .insecure_registries
            .iter()
            .find(|registry| registry.is_empty() || registry.contains(['/', ' ']))
        {
            return invalid(
                "verify.insecure_registries",
                format!("entries must be host or host:port, got {bad:?}"),
            );
        }
        if self.timeout.is_zero() {
            return invalid("verify.timeout", "must be longer than 0s".into());
        }
        if self.concurrency == 0 {
            return invalid("verify.concurrency", "must be at least 1".into());
        }
        if self.cache_max_entries == 0 {
            return invalid(
                "verify.cache_max_entries",
                "must be at least 1 (set verify.cache_ttl = \"0s\" to turn the cache off)".into(),
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
                ("SPEC_PROVIDER__AUTH__ALLOW_INSECURE_ADMIN", "true"),
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
                "SPEC_PROVIDER__TRACING__OTLP_ENDPOINT",
                "collector:4317",
                "tracing.otlp_endpoint",
            ),
            (
                "SPEC_PROVIDER__TRACING__SAMPLE_RATIO",
                "1.5",
                "tracing.sample_ratio",
            ),
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
            (
                "SPEC_PROVIDER__DATABASE__STATEMENT_TIMEOUT",
                "0s",
                "database.statement_timeout",
            ),
            (
                "SPEC_PROVIDER__SERVER__MAX_CONCURRENT_STREAMS",
                "0",
                "server.max_concurrent_streams",
            ),
            (
                "SPEC_PROVIDER__SERVER__REQUEST_TIMEOUT",
                "0s",
                "server.request_timeout",
            ),
            (
                "SPEC_PROVIDER__SERVER__MAX_CONNECTIONS",
                "0",
                "server.max_connections",
            ),
            (
                "SPEC_PROVIDER__SERVER__HTTP2_KEEPALIVE_INTERVAL",
                "0s",
                "server.http2_keepalive_interval",
            ),
            (
                "SPEC_PROVIDER__SERVER__HTTP2_KEEPALIVE_TIMEOUT",
                "0s",
                "server.http2_keepalive_timeout",
            ),
            (
                "SPEC_PROVIDER__TLS__MAX_HANDSHAKES",
                "0",
                "tls.max_handshakes",
            ),
            (
                "SPEC_PROVIDER__SERVER__PREFACE_TIMEOUT",
                "0s",
                "server.preface_timeout",
            ),
            (
                "SPEC_PROVIDER__VERIFY__PLATFORM",
                "amd64",
                "verify.platform",
            ),
            (
                "SPEC_PROVIDER__VERIFY__BLOCKED_NETWORKS",
                "not-a-network",
                "verify.blocked_networks",
            ),
            (
                "SPEC_PROVIDER__VERIFY__INSECURE_REGISTRIES",
                "http://r:5000/",
                "verify.insecure_registries",
            ),
            ("SPEC_PROVIDER__VERIFY__TIMEOUT", "0s", "verify.timeout"),
            (
                "SPEC_PROVIDER__VERIFY__CONCURRENCY",
                "0",
                "verify.concurrency",
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
    fn token_and_subject_lists_come_from_comma_separated_variables() {
        let settings = Settings::load(
            None,
            env(&[
                ("SPEC_PROVIDER__AUTH__ADMIN_TOKENS", "tok-a,tok-b"),
                ("SPEC_PROVIDER__AUTH__READER_TOKENS", "tok-r"),
                ("SPEC_PROVIDER__TLS__CERT", "/certs/tls.crt"),
                ("SPEC_PROVIDER__TLS__KEY", "/certs/tls.key"),
                ("SPEC_PROVIDER__TLS__CLIENT_CA", "/certs/ca.crt"),
                (
                    "SPEC_PROVIDER__AUTH__ADMIN_SUBJECTS",
                    "ws-manager,ws-manager-2",
                ),
                ("SPEC_PROVIDER__SERVER__LISTEN", "0.0.0.0:8080"),
            ]),
        )
        .unwrap();
        let tokens: Vec<&str> = settings
            .auth
            .admin_tokens
            .iter()
            .map(Secret::expose)
            .collect();
        assert_eq!(tokens, ["tok-a", "tok-b"]);
        assert_eq!(settings.auth.reader_tokens, [Secret::new("tok-r")]);
        assert_eq!(settings.auth.admin_subjects, ["ws-manager", "ws-manager-2"]);
        // Only the list keys are split.
        assert_eq!(settings.server.listen.to_string(), "0.0.0.0:8080");
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("tok-a") && !shown.contains("tok-r"),
            "{shown}"
        );
    }

    #[test]
    fn spec_admin_on_a_public_address_needs_credentials_or_an_explicit_opt_in() {
        let public = ("SPEC_PROVIDER__SERVER__LISTEN", "0.0.0.0:8080");
        let err = Settings::load(None, env(&[public]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.listen"), "{err}");
        assert!(err.contains("auth.allow_insecure_admin = true"), "{err}");
        for extra in [
            ("SPEC_PROVIDER__AUTH__ALLOW_INSECURE_ADMIN", "true"),
            (
                "SPEC_PROVIDER__AUTH__ADMIN_TOKENS_FILE",
                "/secrets/admin-tokens",
            ),
            ("SPEC_PROVIDER__SERVER__ADMIN_LISTEN", "127.0.0.1:8081"),
        ] {
            Settings::load(None, env(&[public, extra])).unwrap();
        }
        let err = Settings::load(
            None,
            env(&[
                public,
                ("SPEC_PROVIDER__SERVER__ADMIN_LISTEN", "10.0.0.1:8081"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.admin_listen"), "{err}");
    }

    #[test]
    fn tls_and_auth_settings_are_checked() {
        let cases = [
            (vec![("SPEC_PROVIDER__TLS__CERT", "/c")], "tls.key"),
            (
                vec![("SPEC_PROVIDER__TLS__CLIENT_CA", "/ca")],
                "tls.client_ca",
            ),
            (
                vec![("SPEC_PROVIDER__AUTH__READER_SUBJECTS", "facade")],
                "auth.admin_subjects",
            ),
            (
                vec![("SPEC_PROVIDER__AUTH__ADMIN_TOKENS", "has space")],
                "auth.admin_tokens",
            ),
        ];
        for (vars, named) in cases {
            let err = Settings::load(None, env(&vars)).unwrap_err().to_string();
            assert!(err.contains(named), "{vars:?}: {err}");
        }
    }

    #[test]
    fn database_url_hides_its_password() {
        let url = DatabaseUrl::new("postgres://spec:hunter2@db:5432/specs");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(!url.to_string().contains("hunter2"));
        assert_eq!(url.expose(), "postgres://spec:hunter2@db:5432/specs");
    }

    #[test]
    fn verify_lists_come_from_comma_separated_variables() {
        let settings = Settings::load(
            None,
            env(&[
                (
                    "SPEC_PROVIDER__VERIFY__INSECURE_REGISTRIES",
                    "127.0.0.1:5000,registry.local:5001",
                ),
                (
                    "SPEC_PROVIDER__VERIFY__BLOCKED_NETWORKS",
                    "169.254.0.0/16,10.0.0.0/8",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(
            settings.verify.insecure_registries,
            ["127.0.0.1:5000", "registry.local:5001"]
        );
        assert_eq!(settings.verify.blocked_networks.len(), 2);
    }
}
