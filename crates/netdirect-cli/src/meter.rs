//! The measurement loops, once: [`bw_meter`] keeps a window of requests in flight on each QP
//! and times their completions (average and peak bandwidth, message rate); [`LatMeter`] turns
//! round trips or post-to-post intervals into latency samples. The protocols plug in through
//! [`BwLink`] (nd's own in [`crate::perf`], perftest's `-R` in [`crate::perftest_cm`]); both are
//! generic, so a message costs no allocation or dynamic dispatch in the meter.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::error::{Error, Result};
use crate::perf::{BwRow, Stop};

/// What [`bw_meter`] drives: the QPs of one run.
pub trait BwLink {
    /// Requests outstanding on QP `q`.
    fn outstanding(&self, q: usize) -> usize;
    /// Whether QP `q` may post now beyond the window (the peer's receive credits).
    fn can_post(&self, q: usize) -> bool;
    /// Posts request `i` of QP `q`; `more` says another post follows at once in this round
    /// (the link may mark this one `DEFER`).
    fn post(&mut self, q: usize, i: u64, more: bool) -> Result<()>;
    /// The round of posts on QP `q` ended.
    fn end_round(&mut self, _q: usize) {}
    /// Takes QP `q`'s finished requests without waiting; returns how many finished.
    fn reap(&mut self, q: usize) -> Result<u64>;
    /// Nothing progressed: wait a moment (an error once `deadline` passed).
    fn idle(&mut self, deadline: Instant) -> Result<()>;
}

/// Keeps up to `window` requests of `size` octets in flight on each of `nq` QPs until `stop`
/// (iterations per QP, or a duration) or until `stop_early` says so, and times them. Returns
/// the row (all QPs) and the requests completed per QP.
pub fn bw_meter<L: BwLink>(
    link: &mut L,
    nq: usize,
    size: usize,
    window: usize,
    stop: Stop,
    timeout: Duration,
    stop_early: impl Fn() -> bool,
) -> Result<(BwRow, Vec<u64>)> {
    let mut posted = vec![0u64; nq];
    let mut done = vec![0u64; nq];
    let stop = stop.for_size(size);
    let target = match stop {
        Stop::Iters(n) => Some(n),
        Stop::Duration(_) | Stop::Sweep { .. } => None,
    };
    // Peak bandwidth: the fastest chunk of completions.
    let chunk = match target {
        Some(n) => (n / 16).max(window as u64).max(1),
        None => (window as u64 * 4).max(64),
    };
    let start = Instant::now();
    let mut marks = vec![start];
    let mut completed_total = 0u64;
    let mut last_progress = start;
    loop {
        let posting = !stop_early()
            && match stop {
                Stop::Iters(n) => posted.iter().sum::<u64>() < n * nq as u64,
                Stop::Duration(d) => start.elapsed() < d,
                Stop::Sweep { .. } => false,
            };
        let mut progressed = false;
        for q in 0..nq {
            while posting
                && link.outstanding(q) < window
                && target.is_none_or(|n| posted[q] < n)
                && link.can_post(q)
            {
                // All but the last post of a round may be deferred: the round leaves in one
                // batch.
                let more =
                    link.outstanding(q) + 1 < window && target.is_none_or(|n| posted[q] + 1 < n);
                link.post(q, posted[q], more)?;
                posted[q] += 1;
            }
            link.end_round(q);
            let n = link.reap(q)?;
            if n > 0 {
                progressed = true;
                done[q] += n;
                let before = completed_total;
                completed_total += n;
                if completed_total / chunk != before / chunk {
                    marks.push(Instant::now());
                }
            }
        }
        let all_posted = !posting || target.is_some_and(|n| posted.iter().all(|p| *p >= n));
        if all_posted && done == posted {
            break;
        }
        if progressed {
            last_progress = Instant::now();
        } else {
            link.idle(last_progress + timeout)?;
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let n: u64 = done.iter().sum();
    let avg = (n as f64 * size as f64) / secs;
    let mut peak = avg;
    if marks.len() > 2 {
        for pair in marks.windows(2) {
            let dt = (pair[1] - pair[0]).as_secs_f64();
            if dt > 0.0 {
                peak = peak.max(chunk as f64 * size as f64 / dt);
            }
        }
    }
    Ok((
        BwRow {
            size,
            iters: n,
            peak,
            avg,
            msg_rate: n as f64 / secs,
            secs,
        },
        done,
    ))
}

/// A histogram of nanoseconds from 1 ns to 60 s, 3 significant digits.
pub fn new_hist() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| Error::msg(format!("cannot create a histogram: {e}")))
}

/// Latency samples: one per round trip (or per read), one-way for ping-pongs (half the round
/// trip), after `warmup` unrecorded ones.
pub struct LatMeter {
    hist: Histogram<u64>,
    warmup: u64,
    halve: bool,
    seen: u64,
    last_post: Option<Instant>,
    /// Every sample in run order (`-U`), when kept.
    samples: Option<Vec<u64>>,
}

impl LatMeter {
    /// A meter that halves round trips (`ping_pong`) and skips the first `warmup` samples.
    pub fn new(ping_pong: bool, warmup: u64) -> Result<LatMeter> {
        Ok(LatMeter {
            hist: new_hist()?,
            warmup,
            halve: ping_pong,
            seen: 0,
            last_post: None,
            samples: None,
        })
    }

    /// Also keeps every sample in run order (perftest's `-U`); `expected` reserves room.
    pub fn keep_samples(&mut self, expected: u64) {
        self.samples = Some(Vec::with_capacity(expected.min(1 << 24) as usize));
    }

    /// Records a round trip of `ns` nanoseconds.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        if self.seen >= self.warmup {
            let sample = if self.halve { ns / 2 } else { ns };
            let _ = self.hist.record(sample.max(1));
            if let Some(v) = &mut self.samples {
                v.push(sample.max(1));
            }
        }
        self.seen += 1;
    }

    /// Times one round trip: `step` posts and waits for the answer.
    #[inline]
    pub fn time<T>(&mut self, step: impl FnOnce() -> Result<T>) -> Result<T> {
        let t0 = Instant::now();
        let r = step()?;
        self.record(t0.elapsed().as_nanos() as u64);
        Ok(r)
    }

    /// perftest's way: a post at `at`; the interval since the previous post is a round trip.
    #[inline]
    pub fn post_at(&mut self, at: Instant) {
        if let Some(prev) = self.last_post.replace(at) {
            self.record(at.duration_since(prev).as_nanos() as u64);
        }
    }

    /// Samples recorded (the warm-up not included).
    pub fn samples(&self) -> u64 {
        self.hist.len()
    }

    /// The samples.
    pub fn into_histogram(self) -> Histogram<u64> {
        self.hist
    }

    /// The histogram and the samples in run order (empty unless [`LatMeter::keep_samples`]).
    pub fn into_parts(self) -> (Histogram<u64>, Vec<u64>) {
        (self.hist, self.samples.unwrap_or_default())
    }
}
