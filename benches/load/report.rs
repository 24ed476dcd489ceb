//! The markdown the benchmark writes: the machine and run lines, the tables of outcomes, and the
//! section of `docs/benchmarks.md` (or `--output`) they replace.

use std::path::Path;

use anyhow::Context as _;

use crate::accounting;
use crate::args::{Args, FIXED_RATE_LENGTH, HOT_IDS};
use crate::measure::Outcome;

/// Where `--output` starts and ends in `docs/benchmarks.md`; the prose around it is kept.
const BEGIN_MARK: &str = "<!-- bench:begin {} -->";
const END_MARK: &str = "<!-- bench:end {} -->";

/// The head of a table of [`Outcome::row`]s.
pub(crate) const TABLE_HEAD: &str = "| scenario | requests/s | CPU µs/request | servers' CPU µs/request | \
                          stolen ms | p50 ms | p99 ms | p99.9 ms | errors |\n\
                          |---|---:|---:|---:|---:|---:|---:|---:|---:|\n";

impl Outcome {
    /// Its row of a table under [`TABLE_HEAD`].
    pub(crate) fn row(&self) -> String {
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

/// The machine, for the report: cores, CPU model, memory, and how busy it was; `servers_here`
/// when the servers run in this process too.
pub(crate) fn machine(servers_here: bool) -> String {
    format!(
        "Machine: {} cores ({}), {} memory; load average at start {}. {}\n",
        std::thread::available_parallelism().map_or(0, usize::from),
        accounting::cpu_model(),
        accounting::memory_total(),
        accounting::load_average(),
        if servers_here {
            "Servers and load generator share these cores."
        } else {
            "This is the load generator's machine; the server (`--target`) runs in a process of \
             its own, here or elsewhere, and the CPU times below are the load generator's alone."
        },
    )
}

/// How the benchmark was run: its command line, when, and the load it put on.
pub(crate) fn run_line(args: &Args) -> String {
    format!(
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
    )
}

/// Replaces (or appends) the `tag` section of `path` with `body`.
pub(crate) fn write_section(path: &Path, tag: &str, body: &str) -> anyhow::Result<()> {
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

/// `values` to two decimals, comma-separated: per-round ratios for the report.
pub(crate) fn listed(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The median of `values` (the mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
