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

/// The copy engine (one channel) and memcpy at each size.
pub fn run(sizes: &[usize], trial: Duration, mut tick: impl FnMut()) -> Result<Vec<CopyRow>> {
    let netdma = NetDma::new();
    let engine = CpuEngine::register(&netdma, EngineConfig::new(1))
        .map_err(dma_err("cannot start the CPU engine"))?;
    let mut rows = Vec::new();
    for &size in sizes {
        let k = ((16 << 20) / size).clamp(1, 4096);
        let src = DmaBuffer::from_slice(&vec![0x5Au8; size]);
        let dst = DmaBuffer::new(size);
        let memcpy = {
            let s = src.read().map_err(dma_err("cannot read a buffer"))?;
            let mut d = dst.write().map_err(dma_err("cannot write a buffer"))?;
            measure((k * size) as u64, trial, 2, || {
                for _ in 0..k {
                    d.copy_from_slice(black_box(&s));
                    black_box(&mut *d);
                }
                Ok(())
            })?
        };
        // A fresh destination, so the check below sees the engine's bytes, not memcpy's.
        let dst = DmaBuffer::new(size);
        let ch = netdma
            .allocate_channel(engine.id(), ChannelParameters::default())
            .map_err(dma_err("cannot allocate a channel"))?;
        let chain = || {
            let mut c = Chain::with_capacity(k);
            for _ in 0..k {
                c.copy(&src, 0, &dst, 0, size as u32, ControlFlags::empty());
            }
            c
        };
        let mut first = Chain::new();
        first.null(ControlFlags::empty());
        let s0 = ch
            .start(first)
            .map_err(dma_err("cannot start the channel"))?;
        let st = ch.wait(&s0, Some(Duration::from_secs(10)));
        if st != netdma::Status::SUCCESS {
            return Err(dma_err("the first chain failed")(st));
        }
        let mut prev = ch
            .append(chain())
            .map_err(dma_err("cannot append a chain"))?;
        let dma = measure((k * size) as u64, trial, 2, || {
            let next = ch
                .append(chain())
                .map_err(dma_err("cannot append a chain"))?;
            let st = ch.wait(&prev, Some(Duration::from_secs(10)));
            if st != netdma::Status::SUCCESS {
                return Err(dma_err("a copy chain failed")(st));
            }
            prev = next;
            Ok(())
        })?;
        let _ = ch.wait(&prev, Some(Duration::from_secs(10)));
        drop(ch);
        let got = dst.read().map_err(dma_err("cannot read a buffer"))?;
        if got.iter().any(|b| *b != 0x5A) {
            return Err(Error::status(
                "NetDMA: the copied bytes differ from the source",
                Status::DATA_ERROR,
            ));
        }
        drop(got);
        rows.push(CopyRow {
            size,
            netdma: dma,
            memcpy,
        });
        tick();
    }
    Ok(rows)
}
