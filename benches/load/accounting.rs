//! What the machine and this process report in `/proc`: CPU time (the process's, the servers'
//! threads', the hypervisor's stolen time), memory, load, and the CPU model.

use std::time::Duration;

/// The CPU time (user and system) this process (servers and load generator) has used, from
/// `/proc/self/stat`.
pub(crate) fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    clock_ticks(stat_cpu_ticks(&stat).map_or(0, |(_, ticks)| ticks))
}

/// The CPU time (user and system) the servers' threads have used: the server runtime's (named
/// `server`) and SQLite's worker threads, from `/proc/self/task/*/stat`. The rest of
/// [`process_cpu`] is the load generator's. A thread that exited took its time with it; the
/// servers' threads live as long as the servers.
pub(crate) fn server_cpu() -> Duration {
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
pub(crate) fn stolen() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // "cpu  user nice system idle iowait irq softirq steal ...": steal is the 8th number.
    let ticks = stat
        .lines()
        .next()
        .and_then(|all| all.split_whitespace().nth(8)?.parse::<u64>().ok())
        .unwrap_or(0);
    clock_ticks(ticks)
}

/// This process's peak resident memory, from `/proc/self/status`.
pub(crate) fn peak_rss() -> String {
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

/// The load averages over 1, 5 and 15 minutes, from `/proc/loadavg`, separated by spaces.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The CPU model, from `/proc/cpuinfo`.
pub(crate) fn cpu_model() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim())
        .to_owned()
}

/// The machine's memory, from `/proc/meminfo`, in GiB to a decimal.
pub(crate) fn memory_total() -> String {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
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
        })
}
