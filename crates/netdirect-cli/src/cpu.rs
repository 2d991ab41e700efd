//! CPU time of this process, for the NetworkDirect personas' `CPU` column.
//!
//! Read from `/proc/self/task/*/schedstat` (nanoseconds on the CPU, every thread: the soft
//! RNIC's progress threads included), falling back to `utime + stime` of `/proc/self/stat`
//! (clock ticks of 10 ms). Where neither exists the column is 0.

use std::time::Duration;

/// CPU time consumed by the process so far (all live threads).
pub fn process_cpu() -> Option<Duration> {
    schedstat().or_else(stat)
}

fn schedstat() -> Option<Duration> {
    let mut ns = 0u64;
    let mut any = false;
    for e in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(t) = std::fs::read_to_string(e.path().join("schedstat")) else {
            continue;
        };
        if let Some(v) = t
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            ns += v;
            any = true;
        }
    }
    any.then(|| Duration::from_nanos(ns))
}

fn stat() -> Option<Duration> {
    let t = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name: state is field 3; utime 14, stime 15.
    let rest = &t[t.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Logical CPUs (the "Using N processors" line).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// CPU use between two readings over `secs` of wall time, in percent of all CPUs (100 = every
/// CPU busy the whole time), as the ND tools' `CPU` column.
pub fn percent(before: Option<Duration>, after: Option<Duration>, secs: f64) -> f64 {
    match (before, after) {
        (Some(a), Some(b)) if secs > 0.0 => {
            (b.saturating_sub(a).as_secs_f64() / secs / cpus() as f64 * 100.0).clamp(0.0, 100.0)
        }
        _ => 0.0,
    }
}
