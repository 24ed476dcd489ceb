//! The servers under load: a scratch database per backend, the records filled into it, and the
//! servers started on it (or reached at `--target`), with the clients of each.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prost::Message;
use spec_provider::config::{DatabaseUrl, Settings};
use spec_provider::domain::spec_digest;
use spec_provider::proto::registryfacade::{ContentLayer, ImageSpec};
use spec_provider::server::Application;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::client::Grpc;

/// Rows per fill statement.
const FILL_BATCH: u64 = 50_000;

/// A spec of a typical size: a base, an IDE, a supervisor and a few layers.
pub(crate) fn typical_spec(variant: u64) -> ImageSpec {
    ImageSpec {
        base_ref: format!("eu.gcr.io/gitpod-core/workspace-images/base:v{variant}"),
        ide_ref: "eu.gcr.io/gitpod-core/ide/code:commit-4c8638c0".into(),
        supervisor_ref:
            "eu.gcr.io/gitpod-core/supervisor@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                .into(),
        content_layer: (0..3)
            .map(|n| ContentLayer {
                spec: Some(
                    spec_provider::proto::registryfacade::content_layer::Spec::Remote(
                        spec_provider::proto::registryfacade::RemoteContentLayer {
                            url: format!("https://content.example.com/layers/{variant}/{n}.tar"),
                            digest: format!("sha256:{:064x}", variant * 10 + n),
                            diff_id: format!("sha256:{:064x}", variant * 10 + n + 1),
                            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                            size: 1024 * 1024,
                        },
                    ),
                ),
            })
            .collect(),
        ide_layer_ref: vec!["eu.gcr.io/gitpod-core/ide/code-web-extension:1.2".into()],
    }
}

/// A scratch database for one backend, removed afterwards.
pub(crate) enum Scratch {
    Postgres { admin_url: String, name: String },
    Sqlite { _dir: tempfile::TempDir },
}

impl Scratch {
    /// Creates an empty database of `backend` (PostgreSQL on the server of `admin_url`); returns
    /// it and its URL.
    pub(crate) async fn create(backend: &str, admin_url: &str) -> anyhow::Result<(Self, String)> {
        match backend {
            "postgres" => {
                let name = format!("sp_bench_{}", uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::connect(admin_url)
                    .await
                    .with_context(|| format!("connecting to {admin_url}"))?;
                // The name is made here of hex digits.
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&mut admin)
                    .await?;
                let mut url = url::Url::parse(admin_url)?;
                url.set_path(&name);
                Ok((
                    Self::Postgres {
                        admin_url: admin_url.to_owned(),
                        name,
                    },
                    url.into(),
                ))
            }
            "sqlite" => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("specs.db").display());
                Ok((Self::Sqlite { _dir: dir }, url))
            }
            other => anyhow::bail!("unknown backend {other:?} (postgres or sqlite)"),
        }
    }

    /// Removes the database.
    pub(crate) async fn drop_database(self) -> anyhow::Result<()> {
        if let Self::Postgres { admin_url, name } = self {
            let mut admin = PgConnection::connect(&admin_url).await?;
            sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await?;
        }
        Ok(())
    }
}

/// A server, running in this process or (`--target`) elsewhere, and clients of it.
pub(crate) struct Server {
    channels: Vec<Channel>,
    grpc: Vec<Grpc>,
    /// Where the server's metrics are; `None` for a `--target` server.
    metrics_addr: Option<std::net::SocketAddr>,
    /// Stops a server running in this process when dropped.
    _stop: Option<oneshot::Sender<()>>,
}

impl Server {
    /// Starts a server in this process, on `runtime` (the servers' own), with `channels`
    /// connections to it of each client kind.
    pub(crate) async fn start(
        runtime: &tokio::runtime::Handle,
        settings: Settings,
        channels: usize,
    ) -> anyhow::Result<Self> {
        let (stop, stopped) = oneshot::channel();
        let (built, addrs) = oneshot::channel();
        runtime.spawn(async move {
            match Application::build(settings).await {
                Ok(app) => {
                    let _ = built.send(Ok((app.local_addr(), app.metrics_addr())));
                    let stop = async {
                        let _ = stopped.await;
                    };
                    if let Err(error) = app.run(stop).await {
                        eprintln!("  a server stopped: {error:#}");
                    }
                }
                Err(error) => {
                    let _ = built.send(Err(error));
                }
            }
        });
        let (addr, metrics_addr) = addrs.await??;
        Self::connect(addr, Some(metrics_addr), Some(stop), channels, None).await
    }

    /// Connects to the server at `addr` with `channels` connections of each client kind (the
    /// lean ones sending `authorization`), and waits until it is ready.
    pub(crate) async fn connect(
        addr: std::net::SocketAddr,
        metrics_addr: Option<std::net::SocketAddr>,
        stop: Option<oneshot::Sender<()>>,
        channels: usize,
        authorization: Option<tonic::codegen::http::HeaderValue>,
    ) -> anyhow::Result<Self> {
        let mut connected = Vec::new();
        let mut grpc = Vec::new();
        for _ in 0..channels {
            connected.push(
                Channel::from_shared(format!("http://{addr}"))?
                    .tcp_nodelay(true)
                    .connect()
                    .await?,
            );
            grpc.push(Grpc::connect(addr, authorization.clone()).await?);
        }
        let server = Self {
            channels: connected,
            grpc,
            metrics_addr,
            _stop: stop,
        };
        server.wait_until_ready().await?;
        Ok(server)
    }

    /// Waits until the server is SERVING and its cache (if any) is in use (a `--target` server:
    /// SERVING; its cache is its own business).
    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let status = HealthClient::new(self.channels[0].clone())
                .check(HealthCheckRequest::default())
                .await
                .map(|r| r.into_inner().status)
                .ok();
            let cache_in_use = self.metrics_addr.is_none()
                || self.metric("spec_provider_cache_bypassed").await == Some(0.0);
            if status == Some(1) && cache_in_use {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of an unlabelled metric.
    pub(crate) async fn metric(&self, name: &str) -> Option<f64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.metrics_addr?)
            .await
            .ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await.ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }

    /// A tonic channel, for the RPCs that are not measured at high rates.
    pub(crate) fn channel(&self, task: usize) -> Channel {
        self.channels[task % self.channels.len()].clone()
    }

    /// The lean client of the hot scenarios.
    pub(crate) fn grpc(&self, task: usize) -> Grpc {
        self.grpc[task % self.grpc.len()].clone()
    }
}

/// Settings for a benchmark server on `url`.
pub(crate) fn settings(url: &str, cache: bool) -> Settings {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().expect("an address");
    settings.server.metrics_listen = "127.0.0.1:0".parse().expect("an address");
    settings.database.url = DatabaseUrl::new(url.to_owned());
    settings.database.max_connections = 16;
    settings.cache.enabled = cache;
    // No sweeps during the measurements, except where the sweeper is what is measured.
    settings.sweeper.interval = Duration::from_secs(3600);
    settings
}

/// The id of the `n`th filled record.
pub(crate) fn record_id(n: u64) -> String {
    format!("bench-{n:09}")
}

/// Inserts `count` records (`prefix` + zero-padded number) in batches of raw SQL, sharing one spec
/// (the lookups do not care what they find), expiring at `expire` (never for `None`).
pub(crate) async fn fill(
    url: &str,
    prefix: &str,
    count: u64,
    expire: Option<chrono::DateTime<chrono::Utc>>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let spec = typical_spec(0).encode_to_vec();
    let digest = spec_digest(&spec);
    let now = chrono::Utc::now();
    if url.starts_with("postgres") {
        let mut conn = PgConnection::connect(url).await?;
        for start in (0..count).step_by(usize::try_from(FILL_BATCH)?) {
            let stop = (start + FILL_BATCH).min(count) - 1;
            sqlx::query(
                "INSERT INTO specs (id, spec, spec_digest, labels, generation, create_time, \
                     update_time, expire_time, created_by, updated_by) \
                 SELECT $1 || lpad(i::text, 9, '0'), $2, $3, '{}', 1, $4, $4, $5, \
                     'anonymous', 'anonymous' \
                 FROM generate_series($6::bigint, $7::bigint) AS i",
            )
            .bind(prefix)
            .bind(&spec)
            .bind(&digest)
            .bind(now)
            .bind(expire)
            .bind(i64::try_from(start)?)
            .bind(i64::try_from(stop)?)
            .execute(&mut conn)
            .await?;
        }
        // Settle the bulk load before measuring: VACUUM sets the hint bits and the visibility
        // map (or the first reads of each page would write it), CHECKPOINT writes the dirty pages
        // out (or reads that evict them would, on this machine's slow disk stalling for hundreds
        // of milliseconds). CHECKPOINT needs a superuser or pg_checkpoint; without, say so.
        sqlx::query("VACUUM (ANALYZE) specs")
            .execute(&mut conn)
            .await?;
        if let Err(err) = sqlx::query("CHECKPOINT").execute(&mut conn).await {
            eprintln!("  CHECKPOINT after the fill failed ({err}); measuring anyway");
        }
    } else {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
            .busy_timeout(Duration::from_secs(30));
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
        for start in (0..count).step_by(usize::try_from(FILL_BATCH)?) {
            let stop = (start + FILL_BATCH).min(count) - 1;
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT ?6 UNION ALL SELECT i + 1 FROM n WHERE i < ?7) \
                 INSERT INTO specs (id, spec, spec_digest, labels, generation, create_time, \
                     update_time, expire_time, created_by, updated_by) \
                 SELECT ?1 || printf('%09d', i), ?2, ?3, '{}', 1, ?4, ?4, ?5, \
                     'anonymous', 'anonymous' FROM n",
            )
            .bind(prefix)
            .bind(&spec)
            .bind(&digest)
            .bind(now.timestamp_micros())
            .bind(expire.map(|t| t.timestamp_micros()))
            .bind(i64::try_from(start)?)
            .bind(i64::try_from(stop)?)
            .execute(&mut conn)
            .await?;
        }
        sqlx::query("ANALYZE").execute(&mut conn).await?;
        // As with PostgreSQL: the bulk load's pages go from the write-ahead log to the database
        // file now, not in the middle of a measurement.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await?;
    }
    Ok(started.elapsed())
}
