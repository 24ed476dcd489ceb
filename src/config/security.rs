//! `[tls]` and `[auth]`: who may connect, and who may call what.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

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
