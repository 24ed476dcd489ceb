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
//!
//! The modules: [`args`] (the command line), [`servers`] (the servers under load, their databases
//! and the records they hold), [`client`] (the lean HTTP/2 gRPC client of the hot scenarios),
//! [`measure`] (one scenario's measurement, and scenarios taking turns in rounds), [`pacing`]
//! (the pacer and probe threads of fixed-rate scenarios), [`histogram`] (latency histograms),
//! [`accounting`] (CPU time and memory from `/proc`), [`scenarios`] (what is measured) and
//! [`report`] (the markdown it writes).

mod accounting;
mod args;
mod client;
mod histogram;
mod measure;
mod pacing;
mod report;
mod scenarios;
mod servers;

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use clap::Parser;
use spec_provider::config::Settings;

use crate::args::Args;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The servers get a multi-threaded runtime of their own, with tokio's defaults as
    // `spec-provider serve` has them (a worker per core), so that the load generator's tasks do
    // not queue among the servers' (they share the cores, not the run queues). With `--target`
    // it stays idle.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .thread_name("server")
        .enable_all()
        .build()
        .context("a tokio runtime for the servers")?;
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args, servers.handle()));
    // As the process exits: no waiting for the servers' last tasks.
    servers.shutdown_background();
    outcome
}

async fn run(args: Args, servers: &tokio::runtime::Handle) -> anyhow::Result<()> {
    // The servers log as `spec-provider serve` does (the default filter, text lines; a request
    // span per RPC), into a sink instead of this program's output.
    let _telemetry =
        spec_provider::telemetry::init_with_writer(&Settings::default(), std::io::sink)?;
    let mut report = String::new();
    writeln!(report, "{}", report::machine(args.target.is_none()))?;
    writeln!(report, "{}", report::run_line(&args))?;
    if let Some(target) = &args.target {
        let section = scenarios::bench_target(&args, target)
            .await
            .with_context(|| format!("benchmarking {target}"))?;
        report.push_str(&section);
    } else {
        for backend in &args.backends {
            let section = scenarios::bench_backend(&args, servers, backend)
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
        report::write_section(Path::new(&args.output), tag, &report)?;
        println!("written to {}", args.output);
    }
    Ok(())
}
