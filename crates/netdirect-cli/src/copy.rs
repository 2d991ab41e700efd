//! The NetDMA CPU copy engine next to `memcpy`, measured in the same run (as
//! `cargo bench -p netdma`, shorter).

use std::hint::black_box;
use std::time::{Duration, Instant};

use netdirect_types::Status;
use netdma::{Chain, ChannelParameters, ControlFlags, CpuEngine, DmaBuffer, EngineConfig, NetDma};

use crate::error::{Error, Result};

fn dma_err(what: &str) -> impl Fn(netdma::Status) -> Error + '_ {
    move |s| Error::status(format!("NetDMA: {what}"), Status(s.0))
}

/// Best of `trials` runs of `step` (which copies `bytes` octets), each at least `trial`; GB/s
/// (10^9 octets).
fn measure(
    bytes: u64,
    trial: Duration,
    trials: u32,
    mut step: impl FnMut() -> Result<()>,
) -> Result<f64> {
    step()?;
    let mut best = 0f64;
    for _ in 0..trials {
        let t = Instant::now();
        let mut n = 0u64;
        while n == 0 || t.elapsed() < trial {
            step()?;
            n += 1;
        }
        best = best.max((n * bytes) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    Ok(best)
}

/// One row: size, NetDMA GB/s, memcpy GB/s.
#[derive(Debug, Clone, Copy)]
pub struct CopyRow {
    /// Copy size.
    pub size: usize,
    /// One channel of the CPU engine.
    pub netdma: f64,
    /// `copy_from_slice` on the same kind of buffers.
    pub memcpy: f64,
}

/// One cell of the matrix: a size, a channel count, the engine's aggregate GB/s, and
/// single-thread memcpy at that size.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct DmaRow {
    /// Copy size (octets per descriptor).
    pub size: usize,
    /// Channels copying at once (each its own destination, one shared source).
    pub channels: usize,
    /// Aggregate GB/s of the channels (10^9 octets).
    pub netdma_gb_s: f64,
    /// Single-thread `copy_from_slice` GB/s at this size.
    pub memcpy_gb_s: f64,
}

/// The copy engine (one channel) and memcpy at each size (`nd bench`).
pub fn run(sizes: &[usize], trial: Duration, mut tick: impl FnMut()) -> Result<Vec<CopyRow>> {
    Ok(matrix(sizes, &[1], trial, 2, |_| tick())?
        .into_iter()
        .map(|r| CopyRow {
            size: r.size,
            netdma: r.netdma_gb_s,
            memcpy: r.memcpy_gb_s,
        })
        .collect())
}

/// Descriptors per chain for `size`: about 16 MiB a chain, 1 to 4096 descriptors.
fn per_chain(size: usize) -> usize {
    ((16 << 20) / size.max(1)).clamp(1, 4096)
}

fn memcpy_rate(size: usize, trial: Duration, trials: u32) -> Result<f64> {
    let k = per_chain(size);
    let src = DmaBuffer::from_slice(&vec![0x5Au8; size]);
    let dst = DmaBuffer::new(size);
    let s = src.read().map_err(dma_err("cannot read a buffer"))?;
    let mut d = dst.write().map_err(dma_err("cannot write a buffer"))?;
    measure((k * size) as u64, trial, trials, || {
        for _ in 0..k {
            d.copy_from_slice(black_box(&s));
            black_box(&mut *d);
        }
        Ok(())
    })
}

/// The CPU engine at every (size, channel count), each next to memcpy at that size; the
/// destinations are checked against the source afterwards. `tick` gets each row as it is done.
pub fn matrix(
    sizes: &[usize],
    channels: &[usize],
    trial: Duration,
    trials: u32,
    mut tick: impl FnMut(&DmaRow),
) -> Result<Vec<DmaRow>> {
    let most = channels.iter().copied().max().unwrap_or(1).max(1);
    let netdma = NetDma::new();
    let engine = CpuEngine::register(&netdma, EngineConfig::new(most as u32))
        .map_err(dma_err("cannot start the CPU engine"))?;
    let mut rows = Vec::new();
    for &size in sizes {
        let memcpy = memcpy_rate(size, trial, trials)?;
        let k = per_chain(size);
        let src = DmaBuffer::from_slice(&vec![0x5Au8; size]);
        for &n in channels {
            let mut chans = Vec::with_capacity(n);
            for _ in 0..n {
                let ch = netdma
                    .allocate_channel(engine.id(), ChannelParameters::default())
                    .map_err(dma_err("cannot allocate a channel"))?;
                let mut first = Chain::new();
                first.null(ControlFlags::empty());
                let s0 = ch
                    .start(first)
                    .map_err(dma_err("cannot start the channel"))?;
                let st = ch.wait(&s0, Some(Duration::from_secs(10)));
                if st != netdma::Status::SUCCESS {
                    return Err(dma_err("the first chain failed")(st));
                }
                chans.push((ch, DmaBuffer::new(size)));
            }
            let chain = |dst: &DmaBuffer| {
                let mut c = Chain::with_capacity(k);
                for _ in 0..k {
                    c.copy(&src, 0, dst, 0, size as u32, ControlFlags::empty());
                }
                c
            };
            let submit = || -> Result<Vec<netdma::Submission>> {
                chans
                    .iter()
                    .map(|(ch, dst)| {
                        ch.append(chain(dst))
                            .map_err(dma_err("cannot append a chain"))
                    })
                    .collect()
            };
            let wait_all = |subs: &[netdma::Submission]| -> Result<()> {
                for ((ch, _), s) in chans.iter().zip(subs) {
                    let st = ch.wait(s, Some(Duration::from_secs(30)));
                    if st != netdma::Status::SUCCESS {
                        return Err(dma_err("a copy chain failed")(st));
                    }
                }
                Ok(())
            };
            // One chain queued behind the running one on every channel, as a streaming client.
            let mut prev = submit()?;
            let dma = measure((n * k * size) as u64, trial, trials, || {
                let next = submit()?;
                wait_all(&prev)?;
                prev = next;
                Ok(())
            })?;
            wait_all(&prev)?;
            for (ch, dst) in chans {
                drop(ch);
                let got = dst.read().map_err(dma_err("cannot read a buffer"))?;
                if got.iter().any(|b| *b != 0x5A) {
                    return Err(Error::status(
                        "NetDMA: the copied bytes differ from the source",
                        Status::DATA_ERROR,
                    ));
                }
            }
            let row = DmaRow {
                size,
                channels: n,
                netdma_gb_s: dma,
                memcpy_gb_s: memcpy,
            };
            tick(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}
