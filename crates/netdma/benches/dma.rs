//! NetDMA CPU engine throughput vs `memcpy`, measured in the same run.
//!
//! `cargo bench -p netdma` prints, per copy size, single-thread `memcpy` GB/s, one channel with
//! the copy plan measured on this machine, one channel forced to `memcpy` and to non-temporal
//! stores, the ratios to memcpy, and the aggregate of two channels (`nd dma` has the fuller
//! picture: single descriptors, chains of 16/64/256, N channels against N memcpy threads). GB = 10^9 bytes copied (bcopy
//! convention). Channels are kept busy with one chain queued behind the running one (the
//! next chain is built while the engine copies). Each cell is the best of 3 trials of ≥ `NETDMA_BENCH_MS` ms (default 120).
//! `NETDMA_BENCH_PIN=0` leaves the workers unpinned. Arguments: optional list of sizes in KiB (e.g. `cargo bench -p netdma -- 64 1024`).
#![allow(missing_docs)]

use netdma::*;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn trial_ms() -> u64 {
    std::env::var("NETDMA_BENCH_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120)
}

/// Best of 3 trials; each runs `step` (which copies `bytes_per_step`) until the trial time.
fn measure(bytes_per_step: u64, mut step: impl FnMut()) -> f64 {
    step(); // warm up (page faults, caches)
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < Duration::from_millis(trial_ms()) || n == 0 {
            step();
            n += 1;
        }
        best = best.max((n * bytes_per_step) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// Descriptors per chain: enough that per-submission costs are amortised, at most 64 MiB.
fn per_chain(size: usize) -> usize {
    (16 << 20) / size.max(1)
}

fn chain(src: &DmaBuffer, dst: &DmaBuffer, size: usize, k: usize) -> Chain {
    let mut c = Chain::with_capacity(k);
    for _ in 0..k {
        c.copy(src, 0, dst, 0, size as u32, ControlFlags::empty());
    }
    c
}

struct Chan {
    ch: Channel,
    src: DmaBuffer,
    dst: DmaBuffer,
}

impl Chan {
    fn new(netdma: &NetDma, id: ProviderId, size: usize) -> Chan {
        let ch = netdma
            .allocate_channel(id, ChannelParameters::default())
            .unwrap();
        let src = DmaBuffer::from_slice(&vec![0x5Au8; size]);
        let dst = DmaBuffer::new(size);
        let mut first = Chain::new();
        first.null(ControlFlags::empty());
        let s = ch.start(first).unwrap();
        ch.wait(&s, None).into_result().unwrap();
        Chan { ch, src, dst }
    }
    fn submit(&self, size: usize, k: usize) -> Submission {
        self.ch
            .append(chain(&self.src, &self.dst, size, k))
            .unwrap()
    }
}

fn channel_rate(netdma: &NetDma, id: ProviderId, size: usize) -> f64 {
    let c = Chan::new(netdma, id, size);
    let k = per_chain(size).clamp(1, 4096);
    // Keep one chain queued behind the running one, as a client streaming copies would: the
    // next chain is built and validated while the engine copies.
    let mut prev = c.submit(size, k);
    measure((k * size) as u64, || {
        let next = c.submit(size, k);
        assert_eq!(c.ch.wait(&prev, None), Status::SUCCESS);
        prev = next;
    })
}

fn two_channel_rate(netdma: &NetDma, id: ProviderId, size: usize) -> f64 {
    let a = Chan::new(netdma, id, size);
    let b = Chan::new(netdma, id, size);
    let k = per_chain(size).clamp(1, 4096);
    let mut prev = (a.submit(size, k), b.submit(size, k));
    measure((2 * k * size) as u64, || {
        let next = (a.submit(size, k), b.submit(size, k));
        assert_eq!(a.ch.wait(&prev.0, None), Status::SUCCESS);
        assert_eq!(b.ch.wait(&prev.1, None), Status::SUCCESS);
        prev = next;
    })
}

/// Single-thread `memcpy` (`copy_from_slice`) between buffers allocated exactly like the
/// engine's (64-byte aligned `DmaBuffer`s), so alignment effects are the same on both sides.
fn memcpy_rate(size: usize) -> f64 {
    let (sb, db) = (
        DmaBuffer::from_slice(&vec![0x5Au8; size]),
        DmaBuffer::new(size),
    );
    let src = sb.read().unwrap();
    let mut dst = db.write().unwrap();
    let k = per_chain(size).clamp(1, 4096);
    measure((k * size) as u64, || {
        for _ in 0..k {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut *dst);
        }
    })
}

/// Client-side cost per descriptor (build + validate + lease + enqueue), measured on a
/// suspended channel so that nothing executes.
fn print_submit_cost(netdma: &NetDma, id: ProviderId) {
    let c = Chan::new(netdma, id, 4096);
    let mut hold = Chain::new();
    hold.copy(&c.src, 0, &c.dst, 0, 4096, ControlFlags::empty());
    c.ch.start(hold).unwrap();
    c.ch.wait_idle(None);
    let mut first = Chain::new();
    first.null(ControlFlags::empty());
    c.ch.start(first).unwrap();
    let _ = c.ch.suspend();
    let k = 4096;
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < Duration::from_millis(trial_ms()) {
        c.submit(4096, k);
        n += k;
    }
    let per = t.elapsed().as_nanos() as f64 / n as f64;
    c.ch.abort().unwrap();
    println!("client submit cost: {per:.1} ns per descriptor (chains of {k})");
}

fn engine(netdma: &NetDma, channels: u32, plan: Option<CopyPlan>) -> CpuEngine {
    let mut cfg = EngineConfig::new(channels);
    cfg.copy_plan = plan;
    cfg.pin_workers = std::env::var("NETDMA_BENCH_PIN").map_or(true, |v| v != "0");
    CpuEngine::register(netdma, cfg).unwrap()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes: Vec<usize> = if args.is_empty() {
        [4, 16, 64, 256, 1024, 4096, 16384, 65536]
            .iter()
            .map(|k| k << 10)
            .collect()
    } else {
        args.iter().map(|k| k << 10).collect()
    };
    let netdma = NetDma::new();
    let default = engine(&netdma, 2, None);
    let temporal = engine(&netdma, 1, Some(CopyPlan::fixed(CopyMethod::Memcpy)));
    let nt = engine(&netdma, 1, Some(CopyPlan::fixed(CopyMethod::NonTemporal)));
    println!(
        "NetDMA CPU engine vs memcpy (GB/s, 1 GB = 1e9 B; best of 3 x {} ms; {} CPUs; NT stores {}; measured NT threshold {} KiB)",
        trial_ms(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if non_temporal_available() {
            "available"
        } else {
            "unavailable"
        },
        Calibration::get()
            .plan
            .nt_threshold()
            .map_or(u64::MAX, |t| t >> 10)
    );
    println!(
        "{:>9} {:>8} {:>8} {:>6} {:>9} {:>6} {:>8} {:>6} {:>9} {:>10}",
        "size",
        "memcpy",
        "1ch",
        "ratio",
        "1ch-temp",
        "ratio",
        "1ch-NT",
        "ratio",
        "2ch-aggr",
        "2ch/memcpy"
    );
    for &size in &sizes {
        if size == 4 << 10 {
            print_submit_cost(&netdma, default.id());
        }
        let m = memcpy_rate(size);
        let c1 = channel_rate(&netdma, default.id(), size);
        let ct = channel_rate(&netdma, temporal.id(), size);
        let cn = channel_rate(&netdma, nt.id(), size);
        let c2 = two_channel_rate(&netdma, default.id(), size);
        let label = if size >= 1 << 20 {
            format!("{} MiB", size >> 20)
        } else {
            format!("{} KiB", size >> 10)
        };
        println!(
            "{:>9} {:>8.2} {:>8.2} {:>6.2} {:>9.2} {:>6.2} {:>8.2} {:>6.2} {:>9.2} {:>10.2}",
            label,
            m,
            c1,
            c1 / m,
            ct,
            ct / m,
            cn,
            cn / m,
            c2,
            c2 / m
        );
    }
}
