//! What the benchmarks on the e2e hosts share: percentiles, units, settings from the
//! environment, and the load average they print next to their figures.

use std::time::Duration;

/// Nearest rank: the smallest sample with at least p% of the samples at or below it.
pub fn rank(sorted: &[Duration], p: f64) -> Duration {
    let k = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[k.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A whole number from the environment variable `name`, else `default`; a value that is not
/// a number stops the benchmark naming the variable.
pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg shows them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
