//! `[server]`, `[limits]` and `[validation]`: the listeners, and what they accept.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

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
