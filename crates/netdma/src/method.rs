//! Which copy kernel to use for which size: the cache sizes the machine reports, and a
//! [`CopyPlan`] measured on the running machine ([`Calibration::get`]).
//!
//! The plan is a list of steps "from `n` bytes on, use method `m`". Temporal methods
//! (`memcpy`, `rep movsb`, vector stores) are measured on hot buffers at every power of two
//! from 1 KiB to ¼ of the L3; non-temporal stores are measured against them at ½ and all of
//! the L3 (a copy whose source and destination together fill the L3 or more) and are used
//! only from the smallest of those sizes at which they win there and at every larger one, so
//! the threshold is tied to the cache the machine reports, and moved by what it measures
//! (best of five alternating trials). Below that, source and destination fit in the L3
//! together and a temporal copy leaves the data where its consumer reads it: non-temporal
//! stores at ¼ L3 won the calibration on a busy host (neighbours' cache pressure) and then lost
//! 10-30 % to `memcpy` in steady use of the same buffers. A method displaces `memcpy` only if it
//! is at least 10 % faster: in steady use, near-ties in calibration went either way.

use crate::copy::{self, ChannelToken, CopyMethod, DmaBuffer, Lease};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Cache sizes in bytes, as the machine reports them (sysfs
/// `/sys/devices/system/cpu/cpu0/cache/index*/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheInfo {
    /// Level-1 data cache of one core.
    pub l1d: u64,
    /// Level-2 cache of one core (0 if none reported).
    pub l2: u64,
    /// Last-level (L3) cache (0 if none reported).
    pub l3: u64,
    /// CPUs sharing that L3.
    pub l3_sharing: u32,
    /// False if sysfs had nothing and these are assumed values (32 KiB / 1 MiB / 8 MiB).
    pub reported: bool,
}

impl CacheInfo {
    /// The caches of CPU 0 (read once per process).
    pub fn detect() -> CacheInfo {
        static INFO: OnceLock<CacheInfo> = OnceLock::new();
        *INFO.get_or_init(|| {
            CacheInfo::from_sysfs(Path::new("/sys/devices/system/cpu/cpu0/cache")).unwrap_or(
                CacheInfo {
                    l1d: 32 << 10,
                    l2: 1 << 20,
                    l3: 8 << 20,
                    l3_sharing: 1,
                    reported: false,
                },
            )
        })
    }

    /// Reads a sysfs cache directory (`index*/{level,type,size,shared_cpu_list}`); `None` if it
    /// lists no data or unified cache.
    pub fn from_sysfs(dir: &Path) -> Option<CacheInfo> {
        let mut info = CacheInfo {
            l1d: 0,
            l2: 0,
            l3: 0,
            l3_sharing: 1,
            reported: true,
        };
        let mut any = false;
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let p = e.path();
            let read = |f: &str| std::fs::read_to_string(p.join(f)).ok();
            let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size"))
            else {
                continue;
            };
            if kind.trim() == "Instruction" {
                continue;
            }
            let Some(size) = parse_size(&size) else {
                continue;
            };
            any = true;
            match level.trim() {
                "1" => info.l1d = size,
                "2" => info.l2 = size,
                "3" => {
                    info.l3 = size;
                    info.l3_sharing = read("shared_cpu_list")
                        .and_then(|l| count_cpus(&l))
                        .unwrap_or(1)
                        .max(1);
                }
                _ => {}
            }
        }
        any.then_some(info)
    }
}

/// `"32768K"`, `"1M"`, `"512"` → bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mul)
}

/// `"0-3,8,10-11"` → 7.
pub(crate) fn count_cpus(list: &str) -> Option<u32> {
    let mut n = 0u32;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.trim().parse::<u32>().ok()?;
                1
            }
        };
    }
    Some(n)
}

/// Which copy method to use for which size: steps "from `n` bytes on, method `m`", the first
/// from 0. Built with [`CopyPlan::new`] (or measured: [`Calibration::get`]); every method in a
/// plan is available on this CPU, so [`CopyPlan::method_for`] is valid for every size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyPlan {
    steps: Vec<(u64, CopyMethod)>,
}

impl CopyPlan {
    /// A plan from `(from, method)` steps in any order: a missing step at 0 is `memcpy`,
    /// methods this CPU lacks become `memcpy`, and equal neighbours merge (for equal `from`
    /// the last one given wins).
    pub fn new(steps: &[(u64, CopyMethod)]) -> CopyPlan {
        let mut v: Vec<(u64, CopyMethod)> = steps
            .iter()
            .map(|&(f, m)| (f, if m.available() { m } else { CopyMethod::Memcpy }))
            .collect();
        v.sort_by_key(|s| s.0);
        let mut out: Vec<(u64, CopyMethod)> = vec![(0, CopyMethod::Memcpy)];
        for (f, m) in v {
            if out.last().is_some_and(|l| l.0 == f) {
                out.pop();
            }
            if out.last().is_some_and(|l| l.1 == m) {
                continue;
            }
            out.push((f, m));
        }
        if out.is_empty() {
            out.push((0, CopyMethod::Memcpy));
        }
        CopyPlan { steps: out }
    }

    /// One method for every size.
    pub fn fixed(method: CopyMethod) -> CopyPlan {
        CopyPlan::new(&[(0, method)])
    }

    /// `temporal` below `nt_threshold`, non-temporal stores from there (`u64::MAX`: never).
    pub fn with_nt_threshold(temporal: CopyMethod, nt_threshold: u64) -> CopyPlan {
        if nt_threshold == u64::MAX {
            return CopyPlan::fixed(temporal);
        }
        CopyPlan::new(&[(0, temporal), (nt_threshold, CopyMethod::NonTemporal)])
    }

    /// The method for a copy of `len` bytes.
    pub fn method_for(&self, len: u64) -> CopyMethod {
        let i = self.steps.partition_point(|s| s.0 <= len);
        self.steps[i.max(1) - 1].1
    }

    /// The temporal method for `len` bytes: the plan's method if it is temporal, else the
    /// nearest temporal step below (for descriptors that want the data in cache).
    pub fn temporal_for(&self, len: u64) -> CopyMethod {
        let i = self.steps.partition_point(|s| s.0 <= len);
        self.steps[..i.max(1)]
            .iter()
            .rev()
            .map(|s| s.1)
            .find(|m| m.is_temporal())
            .unwrap_or(CopyMethod::Memcpy)
    }

    /// The size from which non-temporal stores are used, if any.
    pub fn nt_threshold(&self) -> Option<u64> {
        self.steps
            .iter()
            .find(|s| s.1 == CopyMethod::NonTemporal)
            .map(|s| s.0)
    }

    /// The steps `(from, method)`, ascending, the first from 0.
    pub fn steps(&self) -> &[(u64, CopyMethod)] {
        &self.steps
    }
}

/// One measured point of a [`Calibration`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Copy size.
    pub size: u64,
    /// Method.
    pub method: CopyMethod,
    /// Best GB/s (10^9 bytes copied per second) over five trials.
    pub gb_s: f64,
}

/// What the engine measured on this machine at first use: the copy plan, the inline threshold
/// and the figures they were derived from.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// Caches the machine reports.
    pub cache: CacheInfo,
    /// The plan derived from [`Calibration::samples`].
    pub plan: CopyPlan,
    /// Copies of at most this many bytes are cheaper to run on the submitting thread than to
    /// hand to a sleeping worker: the largest power of two that the best method at that size
    /// copies within one measured hand-off (a wake-up of a blocked thread and back), at most
    /// [`MAX_INLINE_THRESHOLD`].
    pub inline_threshold: u64,
    /// Median hand-off round trip, nanoseconds.
    pub handoff_ns: u64,
    /// Every measured point.
    pub samples: Vec<Sample>,
    /// How long the calibration took.
    pub elapsed: Duration,
}

/// Largest inline threshold (1 MiB): the hand-off is measured once, so a copy much longer than
/// any plausible hand-off stays asynchronous even if the machine was very busy at start-up.
pub const MAX_INLINE_THRESHOLD: u64 = 1 << 20;

impl Calibration {
    /// The calibration of this process (measured once, at first use; ~0.1–0.5 s).
    pub fn get() -> &'static Calibration {
        static CAL: OnceLock<Calibration> = OnceLock::new();
        CAL.get_or_init(|| Calibration::measure(CacheInfo::detect()))
    }

    /// Measures the copy methods on this machine for a machine with caches `cache`.
    pub fn measure(cache: CacheInfo) -> Calibration {
        let started = Instant::now();
        // Temporal methods at every power of two from 1 KiB to ¼ L3 ...
        let l2 = cache.l2.clamp(256 << 10, 16 << 20);
        let top = (cache.l3 / 4).max(l2);
        let small: Vec<u64> = std::iter::successors(Some(1u64 << 10), |s| Some(s * 2))
            .take_while(|&s| s <= top)
            .collect();
        // ... and against non-temporal stores at ½ and all of the L3.
        let cap = 256 << 20;
        let mut large: Vec<u64> = [cache.l3 / 2, cache.l3]
            .into_iter()
            .map(|s| s.min(cap))
            .filter(|&s| s > *small.last().unwrap_or(&0))
            .collect();
        large.dedup();
        let max = large.last().or(small.last()).copied().unwrap_or(4096) as usize;
        let mut token = ChannelToken::new();
        let src = DmaBuffer::new(max);
        let dst = DmaBuffer::new(max);
        // Touch every page (a never-written source would read the shared zero page).
        if let Ok(mut w) = src.write() {
            w.fill(0x5A);
        }
        if let Ok(mut w) = dst.write() {
            w.fill(0);
        }
        let (Ok(ls), Ok(ld)) = (
            Lease::acquire(&src, token.id(), false),
            Lease::acquire(&dst, token.id(), true),
        ) else {
            return Calibration::fallback(cache, started);
        };
        let temporal: Vec<CopyMethod> = CopyMethod::ALL
            .into_iter()
            .filter(|m| m.is_temporal() && m.available())
            .collect();
        let nt = CopyMethod::NonTemporal.available();
        let mut samples = Vec::new();
        let mut rate = |size: u64, methods: &[CopyMethod], min: Duration| {
            let mut best = vec![0f64; methods.len()];
            for _ in 0..5 {
                for (k, &m) in methods.iter().enumerate() {
                    let _ = copy::copy(&mut token, &ls, 0, &ld, 0, size, m);
                    let t = Instant::now();
                    let mut n = 0u64;
                    while n == 0 || t.elapsed() < min {
                        let _ = copy::copy(&mut token, &ls, 0, &ld, 0, size, m);
                        n += 1;
                    }
                    let gb = (n * size) as f64 / t.elapsed().as_secs_f64() / 1e9;
                    best[k] = best[k].max(gb);
                }
            }
            let out: Vec<Sample> = methods
                .iter()
                .zip(best)
                .map(|(&method, gb_s)| Sample { size, method, gb_s })
                .collect();
            samples.extend(out.iter().copied());
            out
        };
        // Winner per size; a method must beat the earlier-listed ones (`memcpy` first) by 10 %
        // to displace them, so near-ties (noise) resolve to the platform `memcpy`.
        let winner = |s: &[Sample]| {
            let mut w = s[0];
            for x in &s[1..] {
                if x.gb_s > w.gb_s * 1.10 {
                    w = *x;
                }
            }
            w
        };
        let mut steps = Vec::new();
        // Best temporal rate per size (for the inline threshold).
        let mut best_rates = Vec::new();
        for (i, &size) in small.iter().enumerate() {
            let min = if size <= l2 {
                Duration::from_micros(300)
            } else {
                Duration::from_millis(1)
            };
            let s = rate(size, &temporal, min);
            let w = winner(&s);
            best_rates.push((size, w.gb_s));
            steps.push((if i == 0 { 0 } else { size }, w.method));
        }
        // Large sizes: best temporal vs non-temporal.
        let mut large_results = Vec::new();
        for &size in &large {
            let mut methods = temporal.clone();
            if nt {
                methods.push(CopyMethod::NonTemporal);
            }
            let s = rate(size, &methods, Duration::from_millis(1));
            let t = winner(&s[..temporal.len()]);
            let n = s.get(temporal.len()).copied();
            large_results.push((size, t, n));
        }
        // Non-temporal from the smallest large size where it wins there and at every larger.
        let mut nt_from = None;
        for &(size, t, n) in large_results.iter().rev() {
            match n {
                Some(n) if n.gb_s > t.gb_s * 1.10 => nt_from = Some(size),
                _ => break,
            }
        }
        for &(size, t, _) in &large_results {
            match nt_from {
                Some(f) if size >= f => {}
                _ => steps.push((size, t.method)),
            }
        }
        if let Some(f) = nt_from {
            steps.push((f, CopyMethod::NonTemporal));
        }
        drop((ls, ld));
        let handoff_ns = handoff_round_trip_ns();
        let inline_threshold = inline_threshold(&best_rates, handoff_ns);
        Calibration {
            cache,
            plan: CopyPlan::new(&steps),
            inline_threshold,
            handoff_ns,
            samples,
            elapsed: started.elapsed(),
        }
    }

    fn fallback(cache: CacheInfo, started: Instant) -> Calibration {
        Calibration {
            cache,
            plan: CopyPlan::fixed(CopyMethod::Memcpy),
            inline_threshold: 0,
            handoff_ns: 0,
            samples: Vec::new(),
            elapsed: started.elapsed(),
        }
    }
}

/// The largest size in `rates` (`(size, GB/s)`, ascending powers of two) that is copied within
/// `handoff_ns` at its own rate, at most [`MAX_INLINE_THRESHOLD`]; 0 if none is (or nothing
/// was measured).
pub(crate) fn inline_threshold(rates: &[(u64, f64)], handoff_ns: u64) -> u64 {
    rates
        .iter()
        .filter(|&&(size, gb_s)| {
            // GB/s × ns = bytes
            size <= MAX_INLINE_THRESHOLD && gb_s > 0.0 && size as f64 <= gb_s * handoff_ns as f64
        })
        .map(|r| r.0)
        .max()
        .unwrap_or(0)
}

/// Median time for one thread to wake a blocked one through a mutex + condvar and be woken
/// back: what handing a copy to a sleeping worker and waiting for it costs beyond the copy.
fn handoff_round_trip_ns() -> u64 {
    use std::sync::{Arc, Condvar, Mutex};
    let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
    let p2 = pair.clone();
    const ROUNDS: u32 = 40;
    let Ok(peer) = std::thread::Builder::new()
        .name("netdma-calibrate".into())
        .spawn(move || {
            let (m, cv) = &*p2;
            let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
            for r in 0..ROUNDS {
                while *g != 2 * r + 1 {
                    g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                *g += 1;
                cv.notify_all();
            }
        })
    else {
        return 0;
    };
    let (m, cv) = &*pair;
    let mut times = Vec::with_capacity(ROUNDS as usize);
    for r in 0..ROUNDS {
        let t = Instant::now();
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        *g = 2 * r + 1;
        cv.notify_all();
        while *g != 2 * r + 2 {
            g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        drop(g);
        times.push(t.elapsed().as_nanos() as u64);
    }
    let _ = peer.join();
    times.sort_unstable();
    times[times.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sysfs_cache_dirs() {
        let dir = std::env::temp_dir().join(format!("netdma-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (i, level, kind, size, shared) in [
            (0, "1", "Data", "32K", "0"),
            (1, "1", "Instruction", "32K", "0"),
            (2, "2", "Unified", "1024K", "0"),
            (3, "3", "Unified", "32768K", "0-1,4"),
        ] {
            let d = dir.join(format!("index{i}"));
            std::fs::create_dir_all(&d).unwrap();
            for (f, v) in [
                ("level", level),
                ("type", kind),
                ("size", size),
                ("shared_cpu_list", shared),
            ] {
                std::fs::write(d.join(f), format!("{v}\n")).unwrap();
            }
        }
        let c = CacheInfo::from_sysfs(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            c,
            CacheInfo {
                l1d: 32 << 10,
                l2: 1 << 20,
                l3: 32 << 20,
                l3_sharing: 3,
                reported: true
            }
        );
        assert_eq!(
            CacheInfo::from_sysfs(Path::new("/nonexistent/netdma")),
            None
        );
        assert_eq!(parse_size("12x"), None);
        assert_eq!(count_cpus("3-1"), None);
    }

    /// `method_for` gives an available method for every size, follows the steps exactly, and
    /// is a pure function of the plan.
    #[test]
    fn plan_selection_is_total_and_deterministic() {
        let p = CopyPlan::new(&[
            (4096, CopyMethod::RepMovsb),
            (0, CopyMethod::Vector),
            (1 << 20, CopyMethod::Memcpy),
            (16 << 20, CopyMethod::NonTemporal),
        ]);
        assert_eq!(p.steps()[0].0, 0);
        let v = if CopyMethod::Vector.available() {
            CopyMethod::Vector
        } else {
            CopyMethod::Memcpy
        };
        assert_eq!(p.method_for(0), v);
        assert_eq!(p.method_for(4095), v);
        assert_eq!(
            p.method_for(4096),
            if CopyMethod::RepMovsb.available() {
                CopyMethod::RepMovsb
            } else {
                CopyMethod::Memcpy
            }
        );
        assert_eq!(p.method_for((1 << 20) - 1), p.method_for(4096));
        assert_eq!(p.method_for(1 << 20), CopyMethod::Memcpy);
        if CopyMethod::NonTemporal.available() {
            assert_eq!(p.nt_threshold(), Some(16 << 20));
            assert_eq!(p.method_for(u64::MAX), CopyMethod::NonTemporal);
            assert_eq!(p.temporal_for(64 << 20), CopyMethod::Memcpy);
        }
        let sizes = (0..64).map(|b| 1u64 << b).chain([0, 3, 4097, u64::MAX]);
        for s in sizes {
            let m = p.method_for(s);
            assert!(m.available());
            assert!(p.temporal_for(s).is_temporal());
            assert_eq!(m, p.clone().method_for(s));
        }
        assert_eq!(
            CopyPlan::with_nt_threshold(CopyMethod::Memcpy, u64::MAX).method_for(u64::MAX - 1),
            CopyMethod::Memcpy
        );
        assert_eq!(
            CopyPlan::fixed(CopyMethod::Memcpy).steps(),
            &[(0, CopyMethod::Memcpy)]
        );
    }

    /// The measured plan on this machine: total, and non-temporal (if chosen) only from a
    /// size tied to the reported L3.
    #[test]
    fn measured_plan_is_valid() {
        let c = Calibration::get();
        for b in 0..40 {
            assert!(c.plan.method_for(1 << b).available());
        }
        if let Some(t) = c.plan.nt_threshold() {
            let l3 = c.cache.l3.min(256 << 20);
            assert!([l3 / 2, l3].contains(&t), "{t} vs L3 {l3}");
        }
        assert!(c.inline_threshold <= MAX_INLINE_THRESHOLD);
        assert!(!c.samples.is_empty());
        // Each size at its own rate: 64 KiB at 20 GB/s takes 3.3 us, 128 KiB at 16 GB/s 8.2 us.
        let rates = [
            (4u64 << 10, 40.0),
            (64 << 10, 20.0),
            (128 << 10, 16.0),
            (1 << 20, 12.0),
            (2 << 20, 12.0),
        ];
        assert_eq!(inline_threshold(&rates, 5_000), 64 << 10);
        assert_eq!(inline_threshold(&rates, 10_000), 128 << 10);
        assert_eq!(inline_threshold(&rates, 1_000_000), MAX_INLINE_THRESHOLD);
        assert_eq!(inline_threshold(&rates, 50), 0);
        assert_eq!(inline_threshold(&[], 1_000_000), 0);
    }
}
