//! Fixed-rate scenarios: the pacer thread that hands out the due times of their requests, and
//! the probe thread that measures how late a bare thread wakes meanwhile.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::histogram::{micros, new_histogram};

/// The shortest sleep of the pacer ([`pace_requests`]): at ~10,000 requests a second it wakes
/// for every 2-3 requests. Waking for each one cost the two cores the servers share so much CPU
/// time that p99 at half of peak rose again (docs/benchmarks-history.md).
const PACER_GRAIN: Duration = Duration::from_micros(250);

/// How a scenario paces its requests.
#[derive(Clone, Copy)]
pub(crate) enum Pace {
    /// Each task sends its next request as soon as the previous one is answered.
    Closed,
    /// The tasks together send this many requests per second, on a fixed schedule kept by a
    /// pacer thread ([`pace_requests`]), each task in turn. A request's latency counts from when
    /// it was due if its task was still waiting for the answer to its previous request then (so
    /// a stalled server is not flattered), else from when it was sent (so the pacer's lateness,
    /// up to [`PACER_GRAIN`] and whatever the scheduler adds, is not counted).
    /// [`crate::measure::Outcome::from_due`] has the latency counted from when due in every case.
    Rate(f64),
}

/// Hands out the due times of `rate` requests a second, in turn to each of `tasks`, until
/// `finished`. A thread of its own, sleeping between due times: tokio's timers have a resolution
/// of a millisecond, so tasks with intervals of their own woke together at each millisecond and
/// sent their requests in bursts, which then waited on each other in the server. It sleeps at
/// least [`PACER_GRAIN`], handing out all that are due when it wakes.
pub(crate) fn pace_requests(
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
pub(crate) fn probe_wakeups(
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
