//! One scenario's measurement ([`measure`]): many tasks sending requests, closed loop or at a
//! fixed rate, and what they got ([`Outcome`]); and scenarios taking turns in rounds
//! ([`in_rounds`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use crate::accounting::{process_cpu, server_cpu, stolen};
use crate::histogram::{micros, ms_at, new_histogram};
use crate::pacing::{Pace, pace_requests, probe_wakeups};

/// One scenario's results.
pub(crate) struct Outcome {
    pub(crate) name: String,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    /// CPU time this process used meanwhile (servers and load generator; not PostgreSQL's).
    pub(crate) cpu: Duration,
    /// The part of `cpu` the servers' threads used ([`server_cpu`]); zero with `--target`,
    /// whose server runs in a process of its own.
    pub(crate) server_cpu: Duration,
    /// Time the hypervisor ran something else on this VM's cores meanwhile ([`stolen`]).
    pub(crate) stolen: Duration,
    latency: Histogram<u64>,
    /// With [`Pace::Rate`]: latency counted from when each request was due, whatever the load
    /// generator's timer did.
    from_due: Option<Histogram<u64>>,
    /// With [`Pace::Rate`]: how late a bare thread woke from each 1 ms sleep ([`probe_wakeups`]).
    wakeups: Option<Histogram<u64>>,
}

impl Outcome {
    /// Requests answered as expected per second.
    pub(crate) fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at `quantile`, in milliseconds.
    pub(crate) fn ms(&self, quantile: f64) -> f64 {
        ms_at(&self.latency, quantile)
    }

    /// The latency at `quantile` counted from when each request was due ([`Pace::Rate`] only).
    pub(crate) fn due_ms(&self, quantile: f64) -> f64 {
        self.from_due
            .as_ref()
            .map_or(f64::NAN, |h| ms_at(h, quantile))
    }

    /// How late, at `quantile`, the bare thread of [`probe_wakeups`] woke, in milliseconds.
    pub(crate) fn wakeup_ms(&self, quantile: f64) -> f64 {
        self.wakeups
            .as_ref()
            .map_or(f64::NAN, |h| ms_at(h, quantile))
    }

    /// Adds `other`, a later measurement of the same scenario.
    pub(crate) fn absorb(&mut self, other: Outcome) {
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
    pub(crate) fn cpu_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }

    /// CPU time of the servers' threads per request, in microseconds.
    pub(crate) fn server_cpu_us(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
}

/// When a measurement ends.
#[derive(Clone)]
pub(crate) enum Until {
    /// After a warm-up of a fifth of this, measure for this long.
    Elapsed(Duration),
    /// Warm up until `from`, then measure until the flag is raised.
    Flag {
        from: Instant,
        flag: Arc<AtomicBool>,
    },
}

/// Runs `request(task, n)` from `concurrency` tasks until `until`; `request` says whether the
/// answer was the expected one. With `print_windows` (`--print-windows`), the measured window
/// goes to stderr too ([`print_window`]).
pub(crate) async fn measure<F, Fut>(
    name: &str,
    until: Until,
    concurrency: usize,
    pace: Pace,
    print_windows: bool,
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
    if print_windows {
        print_window(name, start, requests);
    }
    outcome
}

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

/// A scenario's request, for [`in_rounds`]: `request(task, n)` says whether the answer was the
/// expected one.
pub(crate) type Request =
    Arc<dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// `f` as a [`Request`].
pub(crate) fn request<F, Fut>(f: F) -> Request
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    Arc::new(move |task, n| Box::pin(f(task, n)))
}

/// A scenario measured in rounds: all of them together, and the throughput of each.
pub(crate) struct Rounds {
    pub(crate) total: Outcome,
    pub(crate) rps: Vec<f64>,
}

impl Rounds {
    /// This scenario's throughput over `base`'s, round by round.
    pub(crate) fn ratios_to(&self, base: &Rounds) -> Vec<f64> {
        self.rps.iter().zip(&base.rps).map(|(a, b)| a / b).collect()
    }
}

/// Measures `scenarios` (closed loop, `concurrency` tasks) taking turns: `rounds` rounds, in
/// each of which every scenario runs for `duration / rounds` after a warm-up of a fifth of that.
pub(crate) async fn in_rounds(
    scenarios: Vec<(&str, Request)>,
    rounds: u32,
    duration: Duration,
    concurrency: usize,
    print_windows: bool,
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
                print_windows,
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
