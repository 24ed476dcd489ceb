//! The command line, and the fixed parts of the load it describes.

use std::time::Duration;

use clap::Parser;

/// How many ids the "hit" and "unknown id" scenarios cycle through.
pub(crate) const HOT_IDS: u64 = 1000;

/// How many times `--duration` the fixed-rate scenarios last, whose p99 is what they are for: a
/// p99 over 5 seconds (500 of 50,000 requests) is the length of the longest stall of this shared
/// machine in those seconds more often than not.
pub(crate) const FIXED_RATE_LENGTH: u32 = 3;

#[derive(Parser, Debug)]
#[command(about = "Load generator for spec-provider (make bench)")]
pub(crate) struct Args {
    /// Backends to measure: `postgres`, `sqlite`, or both (comma-separated).
    #[arg(long, default_value = "postgres,sqlite", value_delimiter = ',')]
    pub(crate) backends: Vec<String>,
    /// Records stored before the measurements.
    #[arg(long, default_value_t = 1000)]
    pub(crate) records: u64,
    /// How long each scenario is measured (after a warm-up of a fifth of it).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Concurrent requests (one task each).
    #[arg(long, default_value_t = 64)]
    pub(crate) concurrency: usize,
    /// Rounds the read scenarios take turns in (each gets `duration` in all).
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: u32,
    /// HTTP/2 connections the tasks share.
    #[arg(long, default_value_t = 4)]
    pub(crate) channels: usize,
    /// With `--scale`: the sweeper's `batch_size` (default: the service's default).
    #[arg(long)]
    pub(crate) sweeper_batch_size: Option<u32>,
    /// With `--scale`: the sweeper's `batch_pause` (default: the service's default).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) sweeper_batch_pause: Option<Duration>,
    /// Also measure at scale: ListSpecs first vs last page, reads while the sweeper runs.
    #[arg(long)]
    pub(crate) scale: bool,
    /// The markdown file to write the results into (`-` for stdout only).
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub(crate) output: String,
    /// Also print each scenario's measured window, in wall-clock seconds, to stderr: for
    /// profiling by scenario with `perf record -k CLOCK_REALTIME` and
    /// `scripts/perf-by-scenario.py` (see docs/benchmarks.md).
    #[arg(long)]
    pub(crate) print_windows: bool,
    /// Drive an already running spec-provider at this address (`host:port`, plaintext HTTP/2)
    /// instead of starting servers, so that the load generator can run on a machine of its own
    /// and not share the server's cores. Stores 1,000 records through SpecAdmin (with a
    /// one-hour ttl; deleted again at the end) and measures Health/Check, cache hits (also at
    /// half and a third of their peak) and unknown ids. The section it writes is `target`.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["scale", "backends", "records"])]
    pub(crate) target: Option<String>,
    /// With `--target`: the bearer token sent with every call, if the server requires one (an
    /// admin token: the records are stored through SpecAdmin).
    #[arg(
        long,
        env = "SPEC_PROVIDER_TOKEN",
        hide_env_values = true,
        requires = "target"
    )]
    pub(crate) token: Option<String>,
    /// PostgreSQL server where a scratch database is created (and dropped afterwards).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(crate) database_url: String,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub(crate) bench: bool,
}
