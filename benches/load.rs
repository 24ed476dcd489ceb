//! `make bench`: a load generator for spec-provider.
//!
//! It starts the servers itself, in this process but on a tokio runtime of their own, on port 0
//! (one with the read cache, one without, on the same database), fills the database in batches
//! of raw SQL, then drives each scenario over HTTP/2 with many concurrent streams (one task per
//! stream; fixed-rate scenarios paced by a thread of their own) and reports requests per second
//! and latency percentiles (hdrhistogram), for PostgreSQL and SQLite. It writes the results to
//! `docs/benchmarks.md`.
//!
//! Load generator and servers share the machine's cores, as they would not in production: the
//! numbers compare scenarios with each other (a read against `Health/Check`, the floor of any
//! gRPC answer on the same server), not with other machines.
//!
//! `--target host:port` drives a `spec-provider serve` running elsewhere instead (no servers
//! here, no database access): from another machine, it measures a server with its cores to
//! itself.
//!
//! `--scale` adds what matters with many records (`--records 1000000`): uncached reads spread
//! over all records, the first and the last ListSpecs page, and read latency while the sweeper
//! deletes 100,000 expired records. With more than 1,000 records, the uncached reads also run
//! against a second database of 1,000, in the same rounds, so that a read at scale is compared
//! with one at 1,000 in the same run.

use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use prost::Message;
use spec_provider::config::{DatabaseUrl, Settings};
use spec_provider::domain::{PageToken, SpecId, spec_digest};
use spec_provider::framing;
use spec_provider::proto::registryfacade::GetImageSpecResponse;
use spec_provider::proto::registryfacade::{ContentLayer, GetImageSpecRequest, ImageSpec};
use spec_provider::proto::specprovider::v1::spec_admin_client::SpecAdminClient;
use spec_provider::proto::specprovider::v1::{
    DeleteSpecRequest, ListSpecsRequest, PutSpecRequest, SpecView,
};
use spec_provider::server::Application;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Where `--output` starts and ends in `docs/benchmarks.md`; the prose around it is kept.
const BEGIN_MARK: &str = "<!-- bench:begin {} -->";
const END_MARK: &str = "<!-- bench:end {} -->";

/// How many ids the "hit" and "unknown id" scenarios cycle through.
const HOT_IDS: u64 = 1000;

/// Rows per fill statement.
const FILL_BATCH: u64 = 50_000;

/// The shortest sleep of the pacer of fixed-rate scenarios ([`pace_requests`]): at ~10,000
/// requests a second it wakes for every 2-3 requests. Waking for each one cost so much CPU time
/// on the two cores the servers share that p99 at half of peak rose again (three alternating
/// 3-second runs: 0.7-2.0 ms with this grain, 4.6-10 ms waking for each request).
const PACER_GRAIN: Duration = Duration::from_micros(250);

/// How many times `--duration` the fixed-rate scenarios last, whose p99 is what they are for: a
/// p99 over 5 seconds (500 of 50,000 requests) is the length of the longest stall of this shared
/// machine in those seconds more often than not.
const FIXED_RATE_LENGTH: u32 = 3;

/// Expired records the sweeper scenario has deleted.
const SWEPT_RECORDS: u64 = 100_000;

/// Rounds of the sweeper scenario, each a window of reads without a sweep, then one while the
/// sweeper deletes `SWEPT_RECORDS / SWEEP_ROUNDS` expired records. On this VM one stall of a few
/// tens of milliseconds sets the p99 of the window it falls in, so one window with a sweep
/// against one without compared the stalls more than the sweeper (run G: 1.77 and 9.19, run B:
/// 21 and 0.96); the median of the rounds' ratios does not depend on a single stall.
const SWEEP_ROUNDS: u32 = 5;

#[derive(Parser, Debug)]
#[command(about = "Load generator for spec-provider (make bench)")]
struct Args {
    /// Backends to measure: `postgres`, `sqlite`, or both (comma-separated).
    #[arg(long, default_value = "postgres,sqlite", value_delimiter = ',')]
    backends: Vec<String>,
    /// Records stored before the measurements.
    #[arg(long, default_value_t = 1000)]
    records: u64,
    /// How long each scenario is measured (after a warm-up of a fifth of it).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent requests (one task each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Rounds the read scenarios take turns in (each gets `duration` in all).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// HTTP/2 connections the tasks share.
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// With `--scale`: the sweeper's `batch_size` (default: the service's default).
    #[arg(long)]
    sweeper_batch_size: Option<u32>,
    /// With `--scale`: the sweeper's `batch_pause` (default: the service's default).
    #[arg(long, value_parser = humantime::parse_duration)]
    sweeper_batch_pause: Option<Duration>,
    /// Also measure at scale: ListSpecs first vs last page, reads while the sweeper runs.
    #[arg(long)]
    scale: bool,
    /// The markdown file to write the results into (`-` for stdout only).
    #[arg(long, default_value = "docs/benchmarks.md")]
    output: String,
    /// Also print each scenario's measured window, in wall-clock seconds, to stderr: for
    /// profiling by scenario with `perf record -k CLOCK_REALTIME` and
    /// `scripts/perf-by-scenario.py` (see docs/benchmarks.md).
    #[arg(long)]
    print_windows: bool,
    /// Drive an already running spec-provider at this address (`host:port`, plaintext HTTP/2)
    /// instead of starting servers, so that the load generator can run on a machine of its own
    /// and not share the server's cores. Stores 1,000 records through SpecAdmin (with a
    /// one-hour ttl; deleted again at the end) and measures Health/Check, cache hits (also at
    /// half and a third of their peak) and unknown ids. The section it writes is `target`.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["scale", "backends", "records"])]
    target: Option<String>,
    /// With `--target`: the bearer token sent with every call, if the server requires one (an
    /// admin token: the records are stored through SpecAdmin).
    #[arg(
        long,
        env = "SPEC_PROVIDER_TOKEN",
        hide_env_values = true,
        requires = "target"
    )]
    token: Option<String>,
    /// PostgreSQL server where a scratch database is created (and dropped afterwards).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The head of a table of [`Outcome::row`]s.
const TABLE_HEAD: &str = "| scenario | requests/s | CPU µs/request | servers' CPU µs/request | \
                          stolen ms | p50 ms | p99 ms | p99.9 ms | errors |\n\
                          |---|---:|---:|---:|---:|---:|---:|---:|---:|\n";

/// One scenario's results.
struct Outcome {
    name: String,
    requests: u64,
    errors: u64,
    elapsed: Duration,
    /// CPU time this process used meanwhile (servers and load generator; not PostgreSQL's).
    cpu: Duration,
    /// The part of `cpu` the servers' threads used ([`server_cpu`]); zero with `--target`,
    /// whose server runs in a process of its own.
    server_cpu: Duration,
    /// Time the hypervisor ran something else on this VM's cores meanwhile ([`stolen`]).
    stolen: Duration,
    latency: Histogram<u64>,
    /// With [`Pace::Rate`]: latency counted from when each request was due, whatever the load
    /// generator's timer did.
    from_due: Option<Histogram<u64>>,
    /// With [`Pace::Rate`]: how late a bare thread woke from each 1 ms sleep ([`probe_wakeups`]).
    wakeups: Option<Histogram<u64>>,
}

impl Outcome {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn ms(&self, quantile: f64) -> f64 {
        ms_at(&self.latency, quantile)
    }

    /// The latency at `quantile` counted from when each request was due ([`Pace::Rate`] only).
    fn due_ms(&self, quantile: f64) -> f64 {
        self.from_due
            .as_ref()
            .map_or(f64::NAN, |h| ms_at(h, quantile))
    }

    /// How late, at `quantile`, the bare thread of [`probe_wakeups`] woke, in milliseconds.
    fn wakeup_ms(&self, quantile: f64) -> f64 {
        self.wakeups
            .as_ref()
            .map_or(f64::NAN, |h| ms_at(h, quantile))
    }

    /// Adds `other`, a later measurement of the same scenario.
    fn absorb(&mut self, other: Outcome) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.cpu += other.cpu;
        self.server_cpu += other.server_cpu;
        self.stolen += other.stolen;
        self.latency.add(other.latency).expect("same bounds");
        for (mine, theirs) in [
            (&mut self.from_due, other.from_due),
            (&mut self.wakeups, other.wakeups),
        ] {
            if let (Some(mine), Some(theirs)) = (mine, theirs) {
                mine.add(theirs).expect("same bounds");
            }
        }
    }

    /// CPU time of this process per request, in microseconds.
    fn cpu_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }

    /// CPU time of the servers' threads per request, in microseconds.
    fn server_cpu_us(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }

    fn row(&self) -> String {
        let server_cpu = if self.server_cpu.is_zero() {
            "–".to_owned()
        } else {
            format!("{:.0}", self.server_cpu_us())
        };
        format!(
            "| {} | {:.0} | {:.0} | {} | {} | {:.2} | {:.2} | {:.2} | {} |",
            self.name,
            self.rps(),
            self.cpu_us(),
            server_cpu,
            self.stolen.as_millis(),
            self.ms(0.5),
            self.ms(0.99),
            self.ms(0.999),
            self.errors
        )
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    PRINT_WINDOWS.store(args.print_windows, Ordering::Relaxed);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    // The servers log as `spec-provider serve` does (the default filter, text lines; a request
    // span per RPC), into a sink instead of this program's output.
    let _telemetry =
        spec_provider::telemetry::init_with_writer(&Settings::default(), std::io::sink)?;
    let mut report = String::new();
    writeln!(report, "{}", machine(args.target.is_none()))?;
    writeln!(
        report,
        "Run: `cargo bench --bench load --{}`, started {} UTC: {} records, {} per scenario after \
         a {} warm-up (fixed-rate scenarios: {} after {}), {} concurrent requests on {} HTTP/2 \
         connections.\n",
        std::env::args()
            .skip(1)
            .filter(|arg| arg != "--bench")
            .map(|arg| format!(" {arg}"))
            .collect::<String>(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        if args.target.is_some() {
            HOT_IDS
        } else {
            args.records
        },
        humantime::format_duration(args.duration),
        humantime::format_duration(args.duration / 5),
        humantime::format_duration(args.duration * FIXED_RATE_LENGTH),
        humantime::format_duration(args.duration * FIXED_RATE_LENGTH / 5),
        args.concurrency,
        args.channels,
    )?;
    if let Some(target) = &args.target {
        let section = bench_target(&args, target)
            .await
            .with_context(|| format!("benchmarking {target}"))?;
        report.push_str(&section);
    } else {
        for backend in &args.backends {
            let section = bench_backend(&args, backend)
                .await
                .with_context(|| format!("benchmarking {backend}"))?;
            report.push_str(&section);
        }
    }
    println!("{report}");
    if args.output != "-" {
        let tag = match (&args.target, args.scale) {
            (Some(_), _) => "target",
            (None, true) => "scale",
            (None, false) => "standard",
        };
        write_section(&PathBuf::from(&args.output), tag, &report)?;
        println!("written to {}", args.output);
    }
    Ok(())
}

/// The machine, for the report: cores, CPU model, memory, and how busy it was; `servers_here`
/// when the servers run in this process too.
fn machine(servers_here: bool) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .map_or("unknown".to_owned(), |kb| {
            let kb: f64 = kb
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0.0);
            format!("{:.1} GiB", kb / 1024.0 / 1024.0)
        });
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "Machine: {} cores ({}), {} memory; load average at start {}. {}\n",
        std::thread::available_parallelism().map_or(0, usize::from),
        model,
        memory,
        load.join(" "),
        if servers_here {
            "Servers and load generator share these cores."
        } else {
            "This is the load generator's machine; the server (`--target`) runs in a process of \
             its own, here or elsewhere, and the CPU times below are the load generator's alone."
        },
    )
}

/// Replaces (or appends) the `tag` section of `path` with `body`.
fn write_section(path: &PathBuf, tag: &str, body: &str) -> anyhow::Result<()> {
    let begin = BEGIN_MARK.replace("{}", tag);
    let end = END_MARK.replace("{}", tag);
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let current = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!("{begin}\n{body}{end}");
    let updated = match (current.find(&begin), current.find(&end)) {
        (Some(start), Some(stop)) if start < stop => {
            format!(
                "{}{section}{}",
                &current[..start],
                &current[stop + end.len()..]
            )
        }
        _ => format!("{current}\n{section}\n"),
    };
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

/// A spec of a typical size: a base, an IDE, a supervisor and a few layers.
fn typical_spec(variant: u64) -> ImageSpec {
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
enum Scratch {
    Postgres { admin_url: String, name: String },
    Sqlite { _dir: tempfile::TempDir },
}

impl Scratch {
    async fn create(backend: &str, admin_url: &str) -> anyhow::Result<(Self, String)> {
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

    async fn drop_database(self) -> anyhow::Result<()> {
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

/// The runtime the servers run on: a multi-threaded tokio runtime of their own, with tokio's
/// defaults as `spec-provider serve` has them (a worker per core), so that the load generator's
/// tasks do not queue among the servers' (they share the cores, not the run queues).
fn server_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("server")
            .enable_all()
            .build()
            .expect("a tokio runtime for the servers")
    });
    &RUNTIME
}

/// A server, running in this process or (`--target`) elsewhere, and clients of it.
struct Server {
    channels: Vec<Channel>,
    grpc: Vec<Grpc>,
    /// Where the server's metrics are; `None` for a `--target` server.
    metrics_addr: Option<std::net::SocketAddr>,
    /// Stops a server running in this process when dropped.
    _stop: Option<oneshot::Sender<()>>,
}

impl Server {
    /// Starts a server in this process, with `channels` connections to it of each client kind.
    async fn start(settings: Settings, channels: usize) -> anyhow::Result<Self> {
        let (stop, stopped) = oneshot::channel();
        let (built, addrs) = oneshot::channel();
        server_runtime().spawn(async move {
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
    async fn connect(
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
    async fn metric(&self, name: &str) -> Option<f64> {
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
    fn channel(&self, task: usize) -> Channel {
        self.channels[task % self.channels.len()].clone()
    }

    /// The lean client of the hot scenarios.
    fn grpc(&self, task: usize) -> Grpc {
        self.grpc[task % self.grpc.len()].clone()
    }
}

/// Settings for a benchmark server on `url`.
fn settings(url: &str, cache: bool) -> Settings {
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
fn record_id(n: u64) -> String {
    format!("bench-{n:09}")
}

/// Inserts `count` records (`prefix` + zero-padded number) in batches of raw SQL, sharing one spec
/// (the lookups do not care what they find), expiring at `expire` (never for `None`).
async fn fill(
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
                     update_time, expire_time) \
                 SELECT $1 || lpad(i::text, 9, '0'), $2, $3, '{}', 1, $4, $4, $5 \
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
                     update_time, expire_time) \
                 SELECT ?1 || printf('%09d', i), ?2, ?3, '{}', 1, ?4, ?4, ?5 FROM n",
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

/// How a scenario paces its requests.
#[derive(Clone, Copy)]
enum Pace {
    /// Each task sends its next request as soon as the previous one is answered.
    Closed,
    /// The tasks together send this many requests per second, on a fixed schedule kept by a
    /// pacer thread ([`pace_requests`]), each task in turn. A request's latency counts from when
    /// it was due if its task was still waiting for the answer to its previous request then (so
    /// a stalled server is not flattered), else from when it was sent (so the pacer's lateness,
    /// up to [`PACER_GRAIN`] and whatever the scheduler adds, is not counted).
    /// [`Outcome::from_due`] has the latency counted from when due in every case.
    Rate(f64),
}

/// When a measurement ends.
#[derive(Clone)]
enum Until {
    /// After a warm-up of a fifth of this, measure for this long.
    Elapsed(Duration),
    /// Warm up until `from`, then measure until the flag is raised.
    Flag {
        from: Instant,
        flag: Arc<AtomicBool>,
    },
}

/// Runs `request(task, n)` from `concurrency` tasks until `until`; `request` says whether the
/// answer was the expected one.
async fn measure<F, Fut>(
    name: &str,
    until: Until,
    concurrency: usize,
    pace: Pace,
    request: F,
) -> Outcome
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let start = match &until {
        Until::Elapsed(duration) => Instant::now() + *duration / 5,
        Until::Flag { from, .. } => *from,
    };
    let finished = move |now: Instant| match &until {
        Until::Elapsed(duration) => now >= start + *duration,
        Until::Flag { flag, .. } => flag.load(Ordering::Relaxed),
    };
    let finished = Arc::new(finished);
    // The process's CPU time once the warm-up is over.
    let cpu_at_start = tokio::spawn(async move {
        tokio::time::sleep_until(start.into()).await;
        (process_cpu(), server_cpu(), stolen())
    });
    // With a rate, a pacer thread hands the due times out to the tasks, in turn.
    let mut dues = Vec::new();
    let mut wakeups = None;
    if let Pace::Rate(rate) = pace {
        let mut senders = Vec::new();
        for _ in 0..concurrency {
            let (send, receive) = tokio::sync::mpsc::unbounded_channel();
            senders.push(send);
            dues.push(Some(receive));
        }
        let pacer_finished = finished.clone();
        std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || pace_requests(rate, &senders, &*pacer_finished))
            .expect("a pacer thread");
        let probe_finished = finished.clone();
        wakeups = Some(
            std::thread::Builder::new()
                .name("probe".into())
                .spawn(move || probe_wakeups(start, &*probe_finished))
                .expect("a probe thread"),
        );
    } else {
        dues.resize_with(concurrency, || None);
    }
    let mut tasks = Vec::new();
    for (task, mut dues) in dues.into_iter().enumerate() {
        let request = request.clone();
        let finished = finished.clone();
        tasks.push(tokio::spawn(async move {
            let mut histogram = new_histogram();
            let mut from_due = new_histogram();
            let (mut ok, mut errors) = (0u64, 0u64);
            // When this task's previous request was answered.
            let mut answered = Instant::now();
            let mut n = 0u64;
            loop {
                let due = match &mut dues {
                    // The pacer stops handing out due times when the measurement is over.
                    Some(dues) => match dues.recv().await {
                        Some(due) => due,
                        None => break,
                    },
                    None => Instant::now(),
                };
                if finished(due) {
                    break;
                }
                let sent = Instant::now();
                let counted_from = if answered > due { due } else { sent };
                let succeeded = request(task, n).await;
                answered = Instant::now();
                n += 1;
                if due >= start {
                    if succeeded {
                        ok += 1;
                        histogram.saturating_record(micros(answered - counted_from));
                        from_due.saturating_record(micros(answered - due));
                    } else {
                        errors += 1;
                    }
                }
            }
            (histogram, from_due, ok, errors)
        }));
    }
    let mut latency = new_histogram();
    let mut from_due = new_histogram();
    let (mut requests, mut errors) = (0, 0);
    for task in tasks {
        let (histogram, due, ok, failed) = task.await.expect("a load task");
        latency.add(histogram).expect("same bounds");
        from_due.add(due).expect("same bounds");
        requests += ok;
        errors += failed;
    }
    let (cpu_then, server_cpu_then, stolen_then) = cpu_at_start.await.expect("the CPU time task");
    let cpu = process_cpu().saturating_sub(cpu_then);
    let server_cpu = server_cpu().saturating_sub(server_cpu_then);
    let stolen = stolen().saturating_sub(stolen_then);
    let outcome = Outcome {
        name: name.to_owned(),
        requests,
        errors,
        elapsed: start.elapsed(),
        cpu,
        server_cpu,
        stolen,
        latency,
        from_due: matches!(pace, Pace::Rate(_)).then_some(from_due),
        wakeups: wakeups.map(|probe| probe.join().expect("the probe thread")),
    };
    eprintln!("  {}", outcome.row());
    if PRINT_WINDOWS.load(Ordering::Relaxed) {
        print_window(name, start, requests);
    }
    outcome
}

/// Whether `--print-windows` was given.
static PRINT_WINDOWS: AtomicBool = AtomicBool::new(false);

/// Prints the window of a scenario measured from `start` until now, as `window`, its name, its
/// start and end in seconds since the Unix epoch (the clock `perf record -k CLOCK_REALTIME`
/// stamps samples with) and the requests answered, separated by tabs.
fn print_window(name: &str, start: Instant, requests: u64) {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let seconds = |at: Instant| {
        wall.checked_sub(now.saturating_duration_since(at))
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |since| since.as_secs_f64())
    };
    eprintln!(
        "  window\t{name}\t{:.6}\t{:.6}\t{requests}",
        seconds(start),
        seconds(now)
    );
}

/// Hands out the due times of `rate` requests a second, in turn to each of `tasks`, until
/// `finished`. A thread of its own, sleeping between due times: tokio's timers have a resolution
/// of a millisecond, so tasks with intervals of their own woke together at each millisecond and
/// sent their requests in bursts, which then waited on each other in the server (p50 ~1 ms at
/// half of peak). It sleeps at least [`PACER_GRAIN`], handing out all that are due when it wakes.
fn pace_requests(
    rate: f64,
    tasks: &[tokio::sync::mpsc::UnboundedSender<Instant>],
    finished: &(dyn Fn(Instant) -> bool + Send + Sync),
) {
    let first = Instant::now();
    for (n, task) in (0u64..).zip(tasks.iter().cycle()) {
        let due = first + Duration::from_secs_f64(n as f64 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep((due - now).max(PACER_GRAIN));
        }
        if finished(due) || task.send(due).is_err() {
            return;
        }
    }
}

/// How late a thread that does nothing else wakes from sleeps of 1 ms, from `start` until
/// `finished`: what the machine adds to any request that has to wait for a thread to run
/// (another thread holding the core, the hypervisor holding the VM). Beside a fixed-rate
/// scenario's p99 it tells the server's tail from the machine's; it costs 1,000 wake-ups a
/// second.
fn probe_wakeups(
    start: Instant,
    finished: &(dyn Fn(Instant) -> bool + Send + Sync),
) -> Histogram<u64> {
    const NAP: Duration = Duration::from_millis(1);
    let mut late = new_histogram();
    loop {
        let asleep = Instant::now();
        std::thread::sleep(NAP);
        let woke = Instant::now();
        if finished(woke) {
            return late;
        }
        if asleep >= start {
            late.saturating_record(micros((woke - asleep).saturating_sub(NAP)));
        }
    }
}

/// The CPU time (user and system) this process (servers and load generator) has used, from
/// `/proc/self/stat`.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    clock_ticks(stat_cpu_ticks(&stat).map_or(0, |(_, ticks)| ticks))
}

/// The CPU time (user and system) the servers' threads have used: the server runtime's (named
/// `server`) and SQLite's worker threads, from `/proc/self/task/*/stat`. The rest of
/// [`process_cpu`] is the load generator's. A thread that exited took its time with it; the
/// servers' threads live as long as the servers.
fn server_cpu() -> Duration {
    let ticks: u64 = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
        .filter_map(|stat| {
            let (name, ticks) = stat_cpu_ticks(&stat)?;
            (name == "server" || name.starts_with("sqlx-sqlite")).then_some(ticks)
        })
        .sum();
    clock_ticks(ticks)
}

/// The command or thread name (cut to 15 bytes by the kernel) and the user + system CPU time, in
/// clock ticks, of a process's or thread's `stat` file.
fn stat_cpu_ticks(stat: &str) -> Option<(&str, u64)> {
    // The name is in parentheses and may contain spaces; of the fields after it, state is the
    // first, utime the 12th and stime the 13th.
    let (head, rest) = stat.rsplit_once(") ")?;
    let name = head.split_once(" (")?.1;
    let ticks = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|field| field.parse::<u64>().ok())
        .sum();
    Some((name, ticks))
}

/// A count of the clock ticks `/proc` counts CPU time in, as a duration: USER_HZ is 100 on Linux,
/// so a tick is 10 ms.
fn clock_ticks(ticks: u64) -> Duration {
    Duration::from_millis(ticks.saturating_mul(10))
}

/// The time the hypervisor has run something else while this VM's cores had work (the `steal`
/// column of `/proc/stat`, all cores together): a stall no code in this VM can do anything
/// about, so a scenario's table row shows how much of it there was.
fn stolen() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // "cpu  user nice system idle iowait irq softirq steal ...": steal is the 8th number.
    let ticks = stat
        .lines()
        .next()
        .and_then(|all| all.split_whitespace().nth(8)?.parse::<u64>().ok())
        .unwrap_or(0);
    clock_ticks(ticks)
}

/// A duration in whole microseconds, at least 1, for a histogram.
fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A scenario's request, for [`in_rounds`]: `request(task, n)` says whether the answer was the
/// expected one.
type Request = Arc<dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

fn request<F, Fut>(f: F) -> Request
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    Arc::new(move |task, n| Box::pin(f(task, n)))
}

/// A scenario measured in rounds: all of them together, and the throughput of each.
struct Rounds {
    total: Outcome,
    rps: Vec<f64>,
}

impl Rounds {
    /// This scenario's throughput over `base`'s, round by round.
    fn ratios_to(&self, base: &Rounds) -> Vec<f64> {
        self.rps.iter().zip(&base.rps).map(|(a, b)| a / b).collect()
    }
}

/// Measures `scenarios` (closed loop, `concurrency` tasks) taking turns: `rounds` rounds, in
/// each of which every scenario runs for `duration / rounds` after a warm-up of a fifth of that.
async fn in_rounds(
    scenarios: Vec<(&str, Request)>,
    rounds: u32,
    duration: Duration,
    concurrency: usize,
) -> Vec<Rounds> {
    let rounds = rounds.max(1);
    let mut results: Vec<Option<Rounds>> = scenarios.iter().map(|_| None).collect();
    for _ in 0..rounds {
        for ((name, request), result) in scenarios.iter().zip(&mut results) {
            let request = request.clone();
            let outcome = measure(
                name,
                Until::Elapsed(duration / rounds),
                concurrency,
                Pace::Closed,
                move |task, n| request(task, n),
            )
            .await;
            let rps = outcome.rps();
            match result {
                None => {
                    *result = Some(Rounds {
                        total: outcome,
                        rps: vec![rps],
                    })
                }
                Some(so_far) => {
                    so_far.total.absorb(outcome);
                    so_far.rps.push(rps);
                }
            }
        }
    }
    results.into_iter().flatten().collect()
}

/// `values` to two decimals, comma-separated: per-round ratios for the report.
fn listed(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The value at `quantile` of a histogram of microseconds ([`new_histogram`]), in milliseconds.
fn ms_at(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

/// A histogram of microseconds, from 1 µs to a minute, 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// A tiny fast pseudo-random sequence, so that tasks spread their ids without a shared RNG.
fn spread(task: usize, n: u64, modulo: u64) -> u64 {
    let mut x = (task as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ n.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    x % modulo
}

/// A gRPC client for the hot scenarios, straight on HTTP/2 (the `h2` crate): the load
/// generator shares the machine with the servers, so it does as little per request as it can.
/// A tonic `Channel` sends every request through a buffer task and decodes every answer; this
/// client frames the request, and keeps the answer as its bytes (compared, not decoded).
#[derive(Clone)]
struct Grpc {
    send: h2::client::SendRequest<Bytes>,
    authority: String,
    /// Sent with every call (`--token`).
    authorization: Option<tonic::codegen::http::HeaderValue>,
}

impl Grpc {
    async fn connect(
        addr: std::net::SocketAddr,
        authorization: Option<tonic::codegen::http::HeaderValue>,
    ) -> anyhow::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        // hyper's (and so tonic's) default windows, not h2's 64 KiB: with 64 KiB for the whole
        // connection, a few dozen concurrent answers of ~600 bytes wait for window updates.
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(2 * 1024 * 1024)
            .initial_connection_window_size(5 * 1024 * 1024)
            .handshake(tcp)
            .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            send,
            authority: addr.to_string(),
            authorization,
        })
    }

    /// Calls the unary method at `path` with `request`: the answer's bytes, or its grpc-status.
    async fn call(&self, path: &str, request: &impl Message) -> Result<Bytes, tonic::Code> {
        let mut http =
            tonic::codegen::http::Request::post(format!("http://{}{path}", self.authority))
                .header("content-type", "application/grpc")
                .header("te", "trailers");
        if let Some(value) = &self.authorization {
            http = http.header("authorization", value.clone());
        }
        let http = http.body(()).map_err(|_| tonic::Code::Internal)?;
        let body = framing::frame(request).ok_or(tonic::Code::Internal)?;
        let mut send = self
            .send
            .clone()
            .ready()
            .await
            .map_err(|_| tonic::Code::Unavailable)?;
        let (answer, mut stream) = send
            .send_request(http, false)
            .map_err(|_| tonic::Code::Unavailable)?;
        stream
            .send_data(body, true)
            .map_err(|_| tonic::Code::Unavailable)?;
        let answer = answer.await.map_err(|_| tonic::Code::Unavailable)?;
        let (head, mut body) = answer.into_parts();
        let mut data = bytes::BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|_| tonic::Code::Unavailable)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body
            .trailers()
            .await
            .map_err(|_| tonic::Code::Unavailable)?;
        // A trailers-only answer (an error) carries grpc-status in its headers.
        let status = trailers
            .as_ref()
            .and_then(|trailers| trailers.get("grpc-status"))
            .or_else(|| head.headers.get("grpc-status"))
            .and_then(|status| status.to_str().ok()?.parse::<i32>().ok())
            .map_or(tonic::Code::Unknown, tonic::Code::from_i32);
        if status != tonic::Code::Ok {
            return Err(status);
        }
        if data.len() < 5 {
            return Err(tonic::Code::Internal);
        }
        Ok(data.freeze().split_off(5))
    }
}

/// The bytes of a SERVING answer to Health/Check.
const SERVING: &[u8] = &[0x08, 0x01];

async fn check_ok(grpc: Grpc) -> bool {
    grpc.call(
        "/grpc.health.v1.Health/Check",
        &HealthCheckRequest::default(),
    )
    .await
    .is_ok_and(|answer| answer == SERVING)
}

/// Asks for `id`; true if the answer is `want` (the exact bytes of the found answer, or NOT_FOUND
/// for `None`).
async fn get_ok(grpc: Grpc, id: String, want: Option<Bytes>) -> bool {
    let answer = grpc
        .call(
            "/registryfacade.SpecProvider/GetImageSpec",
            &GetImageSpecRequest { id },
        )
        .await;
    match (answer, want) {
        (Ok(answer), Some(want)) => answer == want,
        (Err(code), None) => code == tonic::Code::NotFound,
        _ => false,
    }
}

/// GetImageSpec of a random one of the first `ids` filled records, for request `n` of `task`;
/// true if the answer is [`found`].
fn get_stored(
    server: &Server,
    task: usize,
    n: u64,
    ids: u64,
) -> impl Future<Output = bool> + Send + use<> {
    get_ok(server.grpc(task), record_id(spread(task, n, ids)), found())
}

/// The answer to GetImageSpec for every filled record, as the server sends it.
fn found() -> Option<Bytes> {
    static FOUND: std::sync::LazyLock<Bytes> = std::sync::LazyLock::new(|| {
        GetImageSpecResponse {
            spec: Some(typical_spec(0)),
        }
        .encode_to_vec()
        .into()
    });
    Some(FOUND.clone())
}

/// The read scenarios on one server (and on one without a cache, if any): closed loop, taking
/// turns in rounds, and cache hits at fixed rates.
struct Reads {
    check: Rounds,
    hit: Rounds,
    unknown: Rounds,
    never_seen: Rounds,
    /// On the server without a cache; none with `--target`.
    uncached: Option<Rounds>,
    /// On a server without a cache on a second database of [`HOT_IDS`] records, when the first
    /// holds more: the same scenario as `uncached`, the store's size the only difference.
    uncached_small: Option<Rounds>,
    /// How many records the first database holds.
    records: u64,
    half_peak: Outcome,
    third_peak: Outcome,
}

impl Reads {
    /// Measures them; `records` are stored (`record_id(0..records)`, answered with [`found`]).
    /// `small`, if any, is a server without a cache on a database of `record_id(0..HOT_IDS)`.
    async fn measure(
        args: &Args,
        cached: &Arc<Server>,
        uncached: Option<&Arc<Server>>,
        small: Option<&Arc<Server>>,
        records: u64,
    ) -> anyhow::Result<Self> {
        let hot = HOT_IDS.min(records);
        // The read scenarios take turns, in rounds: on a machine whose speed drifts (a shared
        // VM) each of them gets its share of the fast and the slow moments, and each ratio is
        // the median of its per-round ratios.
        let mut reads: Vec<(&str, Request)> = vec![
            ("Health/Check (floor)", {
                let server = cached.clone();
                request(move |task, _| check_ok(server.grpc(task)))
            }),
            ("GetImageSpec, cache hit", {
                let server = cached.clone();
                request(move |task, n| get_stored(&server, task, n, hot))
            }),
            ("GetImageSpec, unknown id (1000 ids, negative cache)", {
                let server = cached.clone();
                request(move |task, n| {
                    let id = format!("unknown-{}", spread(task, n, HOT_IDS));
                    get_ok(server.grpc(task), id, None)
                })
            }),
            ("GetImageSpec, unknown id (never repeated)", {
                let server = cached.clone();
                let next = Arc::new(AtomicU64::new(0));
                // Each absent id sorts right after a random stored one, so that the lookups
                // spread over the whole id index as a real workload's do. (Until the fourth
                // December round they were `probe-<n>`: all after the last stored id, on the
                // index's last page, which stays cached at any size.)
                request(move |task, n| {
                    let id = format!(
                        "{}-absent-{}",
                        record_id(spread(task, n, records)),
                        next.fetch_add(1, Ordering::Relaxed)
                    );
                    get_ok(server.grpc(task), id, None)
                })
            }),
        ];
        // Random stored ids out of `ids`, on a server without a cache.
        let read_any = |server: &Arc<Server>, ids: u64| {
            let server = server.clone();
            request(move |task, n| get_stored(&server, task, n, ids))
        };
        if let Some(server) = uncached {
            reads.push((
                "GetImageSpec, cache off (random over all records)",
                read_any(server, records),
            ));
            if let Some(small) = small {
                reads.push((
                    "GetImageSpec, cache off, a second database of 1000 records",
                    read_any(small, HOT_IDS),
                ));
            }
        }
        let mut outcomes = in_rounds(reads, args.rounds, args.duration, args.concurrency)
            .await
            .into_iter();
        let mut next = || outcomes.next().context("an outcome per scenario");
        let (check, hit, unknown, never_seen) = (next()?, next()?, next()?, next()?);
        let uncached = outcomes.next();
        let uncached_small = outcomes.next();

        // Cache hits at a fixed rate: half of the peak (the target), and a third of it (where
        // the cores are less busy: see "Why p99 at half of the peak" in docs/benchmarks.md).
        let mut at_rate = Vec::new();
        for (share, divisor) in [("half", 2.0), ("a third of", 3.0)] {
            let rate = hit.total.rps() / divisor;
            let server = cached.clone();
            at_rate.push(
                measure(
                    &format!("GetImageSpec, cache hit, at {share} peak ({rate:.0}/s)"),
                    Until::Elapsed(args.duration * FIXED_RATE_LENGTH),
                    args.concurrency,
                    Pace::Rate(rate),
                    move |task, n| get_stored(&server, task, n, hot),
                )
                .await,
            );
        }
        let [half_peak, third_peak] = <[Outcome; 2]>::try_from(at_rate)
            .map_err(|_| anyhow::anyhow!("two rates, two outcomes"))?;
        Ok(Self {
            check,
            hit,
            unknown,
            never_seen,
            uncached,
            uncached_small,
            records,
            half_peak,
            third_peak,
        })
    }

    /// Their rows of the table, in its order.
    fn rows(&self) -> Vec<&Outcome> {
        let mut rows = vec![
            &self.check.total,
            &self.hit.total,
            &self.half_peak,
            &self.third_peak,
            &self.unknown.total,
            &self.never_seen.total,
        ];
        rows.extend(self.uncached.as_ref().map(|rounds| &rounds.total));
        rows.extend(self.uncached_small.as_ref().map(|rounds| &rounds.total));
        rows
    }

    /// The paragraph under the table: ratios to Health/Check, p99 at the fixed rates.
    fn summary(&self, rounds: u32) -> String {
        let ratios = |of: &Rounds| {
            let ratios = of.ratios_to(&self.check);
            let servers = if of.total.server_cpu.is_zero() {
                String::new()
            } else {
                format!(
                    ", by the servers' alone: {:.2}",
                    self.check.total.server_cpu_us() / of.total.server_cpu_us()
                )
            };
            format!(
                "**{:.2}** (rounds: {}; by CPU time per request: {:.2}{servers})",
                median(&ratios),
                listed(&ratios),
                self.check.total.cpu_us() / of.total.cpu_us(),
            )
        };
        let uncached = self
            .uncached
            .as_ref()
            .map(|rounds| format!("; cache off {}", ratios(rounds)))
            .unwrap_or_default();
        // The same uncached read on both databases, in the same rounds: how much dearer a read
        // is at `records` than at 1,000 (above 1: dearer).
        let scale = match (&self.uncached, &self.uncached_small) {
            (Some(big), Some(small)) => {
                let ratios = small.ratios_to(big);
                format!(
                    " Uncached GetImageSpec at {} records / at {HOT_IDS} (a second database, in \
                     the same rounds), time per read (the inverse of throughput), median of the \
                     rounds: **{:.2}** (rounds: {}); by the servers' CPU time per request: \
                     {:.2}; p50: {:.2}.",
                    self.records,
                    median(&ratios),
                    listed(&ratios),
                    big.total.server_cpu_us() / small.total.server_cpu_us(),
                    big.total.ms(0.5) / small.total.ms(0.5),
                )
            }
            _ => String::new(),
        };
        format!(
            "\nRatios to Health/Check, median of {rounds} rounds: cache hit {}; unknown id \
             (negative cache) {}{uncached}. p99 of cached GetImageSpec at half peak: **{:.2} \
             ms** ({:.2} ms counted from when each request was due, the load generator's timer \
             included); meanwhile a bare thread woke from 1 ms sleeps {:.2} ms late at p99, \
             {:.2} ms at most. At a third of peak: p99 **{:.2} ms**.{scale}\n",
            ratios(&self.hit),
            ratios(&self.unknown),
            self.half_peak.ms(0.99),
            self.half_peak.due_ms(0.99),
            self.half_peak.wakeup_ms(0.99),
            self.half_peak.wakeup_ms(1.0),
            self.third_peak.ms(0.99),
        )
    }
}

async fn bench_backend(args: &Args, backend: &str) -> anyhow::Result<String> {
    eprintln!("{backend}:");
    let (scratch, url) = Scratch::create(backend, &args.database_url).await?;
    // The cached server first: it applies the migrations the fill needs.
    let cached = Arc::new(Server::start(settings(&url, true), args.channels).await?);
    let uncached = Arc::new(Server::start(settings(&url, false), args.channels).await?);
    let filled = fill(&url, "bench-", args.records, None).await?;
    eprintln!("  filled {} records in {filled:.1?}", args.records);
    let records = args.records.max(1);
    // With more than HOT_IDS records, a second database of HOT_IDS, read without a cache in the
    // same rounds as the first: whether a read costs more at scale, measured in one run rather
    // than by two runs minutes apart on a VM whose speed drifts.
    let small = if records > HOT_IDS {
        let (scratch, url) = Scratch::create(backend, &args.database_url).await?;
        let server = Arc::new(Server::start(settings(&url, false), args.channels).await?);
        fill(&url, "bench-", HOT_IDS, None).await?;
        Some((scratch, server))
    } else {
        None
    };
    let reads = Reads::measure(
        args,
        &cached,
        Some(&uncached),
        small.as_ref().map(|(_, server)| server),
        records,
    )
    .await?;
    if let Some((scratch, server)) = small {
        drop(server);
        scratch.drop_database().await?;
    }

    let spec = typical_spec(1);
    let server = cached.clone();
    let put = measure(
        "PutSpec (new ids)",
        Until::Elapsed(args.duration),
        args.concurrency,
        Pace::Closed,
        move |task, n| {
            let request = PutSpecRequest {
                id: format!("put-{task}-{n}"),
                spec: Some(spec.clone()),
                ..PutSpecRequest::default()
            };
            let channel = server.channel(task);
            async move {
                let answer = SpecAdminClient::new(channel).put_spec(request).await;
                if let Err(status) = &answer
                    && n == 0
                    && task == 0
                {
                    eprintln!("  PutSpec failed: {status:?}");
                }
                answer.is_ok()
            }
        },
    )
    .await;
    let mut section = String::new();
    writeln!(section, "### {backend}, {} records\n", args.records)?;
    writeln!(section, "Filled in {filled:.1?}.\n")?;
    section.push_str(TABLE_HEAD);
    for outcome in reads.rows().into_iter().chain([&put]) {
        writeln!(section, "{}", outcome.row())?;
    }
    writeln!(section, "{}", reads.summary(args.rounds))?;

    if args.scale {
        section.push_str(&scale(args, &url, &uncached, records).await?);
    }
    writeln!(
        section,
        "Process peak resident memory so far (servers and load generator): {}; load average \
         after this backend: {}.\n",
        peak_rss(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )?;
    drop(cached);
    drop(uncached);
    scratch.drop_database().await?;
    Ok(section)
}

/// `--target`: the read scenarios that need no access to the database, against a server that
/// runs in a process of its own (on another machine, the server's cores are its own). The
/// records are stored, and deleted afterwards, through SpecAdmin.
async fn bench_target(args: &Args, target: &str) -> anyhow::Result<String> {
    eprintln!("{target}:");
    let addr = tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("--target {target}: not an address"))?
        .next()
        .with_context(|| format!("--target {target}: no address"))?;
    let bearer = args.token.as_ref().map(|token| format!("Bearer {token}"));
    let authorization = bearer
        .as_deref()
        .map(tonic::codegen::http::HeaderValue::from_str)
        .transpose()
        .context("--token holds characters a token cannot have")?;
    let server = Arc::new(
        Server::connect(addr, None, None, args.channels, authorization)
            .await
            .with_context(|| format!("connecting to {addr}"))?,
    );
    let admin_authorization: Option<tonic::metadata::AsciiMetadataValue> = bearer
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("--token holds characters a token cannot have")?;
    let admin = SpecAdminClient::with_interceptor(
        server.channel(0),
        move |mut request: tonic::Request<()>| {
            if let Some(value) = &admin_authorization {
                request
                    .metadata_mut()
                    .insert("authorization", value.clone());
            }
            Ok(request)
        },
    );

    let started = Instant::now();
    let spec = typical_spec(0);
    let failed = for_each_record(|n| {
        let mut admin = admin.clone();
        let request = PutSpecRequest {
            id: record_id(n),
            spec: Some(spec.clone()),
            // Gone within the hour even if this run does not get to delete them.
            ttl: Some(pbjson_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            ..PutSpecRequest::default()
        };
        async move { admin.put_spec(request).await }
    })
    .await;
    if let Some(status) = failed.first() {
        anyhow::bail!(
            "storing the records through SpecAdmin failed: {} ({:?}); a server with admin \
             credentials needs --token",
            status.message(),
            status.code()
        );
    }
    let filled = started.elapsed();
    eprintln!("  stored {HOT_IDS} records through SpecAdmin in {filled:.1?}");

    let reads = Reads::measure(args, &server, None, None, HOT_IDS).await?;

    let failed = for_each_record(|n| {
        let mut admin = admin.clone();
        let request = DeleteSpecRequest {
            id: record_id(n),
            allow_missing: true,
            ..DeleteSpecRequest::default()
        };
        async move { admin.delete_spec(request).await }
    })
    .await;
    if !failed.is_empty() {
        eprintln!(
            "  {} of the records could not be deleted; their ttl removes them",
            failed.len()
        );
    }

    let mut section = String::new();
    writeln!(
        section,
        "### {target}, {HOT_IDS} records (stored through SpecAdmin in {filled:.1?})\n"
    )?;
    section.push_str(TABLE_HEAD);
    for outcome in reads.rows() {
        writeln!(section, "{}", outcome.row())?;
    }
    writeln!(section, "{}", reads.summary(args.rounds))?;
    writeln!(
        section,
        "Load generator's peak resident memory: {}.\n",
        peak_rss()
    )?;
    Ok(section)
}

/// Makes `call(n)` for each of the `HOT_IDS` records, 16 at a time; the errors.
async fn for_each_record<F, Fut, T>(call: F) -> Vec<tonic::Status>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    futures::stream::iter(0..HOT_IDS)
        .map(call)
        .buffer_unordered(16)
        .filter_map(|result| std::future::ready(result.err()))
        .collect()
        .await
}

/// ListSpecs first vs last page, and uncached reads while the sweeper deletes expired records.
async fn scale(
    args: &Args,
    url: &str,
    uncached: &Arc<Server>,
    records: u64,
) -> anyhow::Result<String> {
    let duration = Until::Elapsed(args.duration);
    // The first and the last page take turns, in rounds, as the read scenarios do: measured one
    // after the other, they compared two moments of this VM as much as two pages (last / first
    // 0.89-1.31 in the December runs).
    let after =
        SpecId::parse(&record_id(records.saturating_sub(101))).map_err(anyhow::Error::msg)?;
    let last_token = PageToken::new(after, "", &Default::default()).encode();
    let list = |page_token: String| {
        let server = uncached.clone();
        request(move |task, _| list_ok(server.channel(task), page_token.clone()))
    };
    let mut pages = in_rounds(
        vec![
            ("ListSpecs, first page (100 ids)", list(String::new())),
            ("ListSpecs, last page (100 ids)", list(last_token)),
        ],
        args.rounds,
        args.duration,
        8,
    )
    .await
    .into_iter();
    let (first, last) = pages
        .next()
        .zip(pages.next())
        .context("an outcome per page")?;
    // The last page's time per request over the first's (the inverse of their throughputs).
    let page_ratios = first.ratios_to(&last);

    // Reads at half of what 16 readers reach, without and while the sweeper deletes, in rounds
    // (`SWEEP_ROUNDS`).
    let readers = 16;
    let read =
        move |server: Arc<Server>| move |task: usize, n: u64| get_stored(&server, task, n, records);
    let peak = measure(
        "GetImageSpec, cache off, 16 readers, peak",
        duration.clone(),
        readers,
        Pace::Closed,
        read(uncached.clone()),
    )
    .await;
    let rate = peak.rps() / 2.0;
    // The sweeper's server, with a 100 ms interval, so that each round's sweep starts as soon as
    // its records expire.
    let mut sweeping = settings(url, true);
    sweeping.sweeper.interval = Duration::from_millis(100);
    if let Some(size) = args.sweeper_batch_size {
        sweeping.sweeper.batch_size = size;
    }
    if let Some(pause) = args.sweeper_batch_pause {
        sweeping.sweeper.batch_pause = pause;
    }
    let (batch_size, batch_pause) = (sweeping.sweeper.batch_size, sweeping.sweeper.batch_pause);
    let sweeper = Server::start(sweeping, 1).await?;
    let per_round = SWEPT_RECORDS / u64::from(SWEEP_ROUNDS);
    // The measurement of a window without a sweep: at least as long as the sweep's pauses add
    // up to, so that both windows' p99 are over about as many requests: over a longer window,
    // one stall of the VM weighs less, which would flatter a slowly paced sweep.
    let shortest = args.duration * FIXED_RATE_LENGTH / SWEEP_ROUNDS;
    let pauses = batch_pause * u32::try_from(per_round.div_ceil(u64::from(batch_size)))?;
    let quiet = shortest.max(pauses);
    // The warm-up `measure` gives it (a fifth of it).
    let warm_up = quiet / 5;
    // A quiet window: its warm-up and measurement.
    let window = quiet + warm_up;
    let (mut before, mut during): (Option<Outcome>, Option<Outcome>) = (None, None);
    let (mut ratios, mut due_ratios) = (Vec::new(), Vec::new());
    let mut swept = Duration::ZERO;
    for round in 0..SWEEP_ROUNDS {
        // This round's records expire once they are stored and settled and the window without
        // a sweep is over, so that both windows read the same table.
        let expire_in = window + Duration::from_secs(10);
        let expire = chrono::Utc::now() + chrono::Duration::from_std(expire_in)?;
        let expire_at = Instant::now() + expire_in;
        let filled = fill(url, &format!("expired-{round}-"), per_round, Some(expire)).await?;
        eprintln!("  filled {per_round} records expiring in {expire_in:?} in {filled:.1?}");
        anyhow::ensure!(
            Instant::now() + window + warm_up < expire_at,
            "the fill outlasted its margin; the sweep would start during the window without, \
             or the warm-up before it"
        );
        let quiet_reads = measure(
            &format!("GetImageSpec, cache off, {rate:.0}/s, no sweep"),
            Until::Elapsed(quiet),
            readers,
            Pace::Rate(rate),
            read(uncached.clone()),
        )
        .await;
        // The readers warm up as long as before the window without a sweep (they have been idle
        // since), and are measured from the expiry on.
        tokio::time::sleep_until((expire_at - warm_up).into()).await;
        let done = Arc::new(AtomicBool::new(false));
        let during_name = format!("GetImageSpec, cache off, {rate:.0}/s, while sweeping");
        let stop = Until::Flag {
            from: expire_at,
            flag: done.clone(),
        };
        let during_read = read(uncached.clone());
        let sweep_reads = tokio::spawn(async move {
            measure(&during_name, stop, readers, Pace::Rate(rate), during_read).await
        });
        let target = (u64::from(round) + 1) * per_round;
        loop {
            let deleted = sweeper
                .metric("spec_provider_sweeper_deleted_total")
                .await
                .unwrap_or(0.0);
            if deleted >= target as f64 {
                break;
            }
            anyhow::ensure!(
                expire_at.elapsed() < Duration::from_secs(600),
                "the sweep took over 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        swept += expire_at.elapsed();
        done.store(true, Ordering::Relaxed);
        let sweep_reads = sweep_reads.await?;
        ratios.push(sweep_reads.ms(0.99) / quiet_reads.ms(0.99));
        due_ratios.push(sweep_reads.due_ms(0.99) / quiet_reads.due_ms(0.99));
        for (all, this) in [(&mut before, quiet_reads), (&mut during, sweep_reads)] {
            match all {
                Some(all) => all.absorb(this),
                None => *all = Some(this),
            }
        }
    }
    drop(sweeper);
    let (before, during) = before.zip(during).context("at least one round")?;

    let mut section = String::new();
    writeln!(section, "#### At scale: {records} records\n")?;
    section.push_str(TABLE_HEAD);
    for outcome in [&first.total, &last.total, &peak, &before, &during] {
        writeln!(section, "{}", outcome.row())?;
    }
    writeln!(
        section,
        "\nLast / first ListSpecs page, time per request (the inverse of throughput), median \
         of the rounds: **{:.2}** (rounds: {}; p50: {:.2}). The sweeper deleted {SWEPT_RECORDS} \
         expired records, {per_round} in each of {SWEEP_ROUNDS} rounds, in {swept:.1?} in all \
         from their expiry (batches of {batch_size} with {} between them, by a third server \
         with a 100 ms sweeper interval; the windows without a sweep {} each); read p99 while \
         sweeping / before, median of the rounds: **{:.2}** (rounds: {}; counted from when \
         each request was due: {:.2}); all rounds together: {:.2}; a bare thread woke from 1 ms \
         sleeps {:.2} / {:.2} ms late at p99 (before / while sweeping).\n",
        median(&page_ratios),
        listed(&page_ratios),
        last.total.ms(0.5) / first.total.ms(0.5),
        humantime::format_duration(batch_pause),
        humantime::format_duration(quiet),
        median(&ratios),
        listed(&ratios),
        median(&due_ratios),
        during.ms(0.99) / before.ms(0.99),
        before.wakeup_ms(0.99),
        during.wakeup_ms(0.99),
    )?;
    Ok(section)
}

async fn list_ok(channel: Channel, page_token: String) -> bool {
    SpecAdminClient::new(channel)
        .list_specs(ListSpecsRequest {
            page_size: 100,
            page_token,
            view: SpecView::Basic.into(),
            ..ListSpecsRequest::default()
        })
        .await
        .is_ok_and(|r| r.into_inner().specs.len() == 100)
}

/// This process's peak resident memory, from `/proc/self/status`.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .map(|value| value.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
