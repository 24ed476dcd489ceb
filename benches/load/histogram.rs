//! Latency histograms: microseconds, from 1 µs to a minute, read back in milliseconds.

use std::time::Duration;

use hdrhistogram::Histogram;

/// A histogram of microseconds, from 1 µs to a minute, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// A duration in whole microseconds, at least 1, for a histogram.
pub(crate) fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The value at `quantile` of a histogram of microseconds ([`new_histogram`]), in milliseconds.
pub(crate) fn ms_at(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}
