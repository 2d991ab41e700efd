//! `nd dma`: the NetDMA benchmark — the CPU copy engine's GB/s by copy size and channel count,
//! next to single-thread `memcpy` at the same size, measured in the same run.
//!
//! Sizes are powers of two from 4 KiB to 64 MiB (`--min-size`/`--max-size`, or `--quick`:
//! 4 KiB, 256 KiB, 4 MiB); channel counts 1..=N (`--channels N`, default the number of CPUs,
//! at most 8). Each channel copies one shared source into its own destination, chains of
//! about 16 MiB (1 to 4096 descriptors) with one chain queued behind the running one; a cell
//! is the best of `--trials` runs of `--trial-ms` each. GB = 10^9 octets copied; the ratio is
//! NetDMA / memcpy (aggregate of all channels against one memcpy thread). Every destination is
//! compared with the source afterwards. `--json` prints the rows as JSON; the progress bar
//! (stderr, terminals only) goes with `--quiet`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use clap::Args;

use crate::copy::{DmaRow, matrix};
use crate::error::{Error, Result};
use crate::{out, outln, progress};

/// `nd dma` flags.
#[derive(Args, Debug, Clone)]
pub struct DmaArgs {
    /// Channel counts 1..=N (default: the CPUs, at most 8).
    #[arg(short = 'c', long = "channels")]
    channels: Option<usize>,
    /// Smallest copy size in octets (default 4096).
    #[arg(long = "min-size", default_value_t = 4096)]
    min_size: usize,
    /// Largest copy size in octets (default 67108864, 64 MiB).
    #[arg(long = "max-size", default_value_t = 64 << 20)]
    max_size: usize,
    /// Milliseconds per trial (default 40; 5 with --quick).
    #[arg(long = "trial-ms")]
    trial_ms: Option<u64>,
    /// Trials per cell, the best is kept (default 2).
    #[arg(long, default_value_t = 2)]
    trials: u32,
    /// Three sizes (4 KiB, 256 KiB, 4 MiB) and short trials: a smoke run.
    #[arg(long)]
    quick: bool,
    /// Print JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn label(size: usize) -> String {
    if size >= 1 << 20 && size % (1 << 20) == 0 {
        format!("{}M", size >> 20)
    } else if size >= 1 << 10 && size % (1 << 10) == 0 {
        format!("{}K", size >> 10)
    } else {
        size.to_string()
    }
}

/// Runs `nd dma`.
pub fn run(a: &DmaArgs) -> Result<()> {
    let started = Instant::now();
    let cpus = crate::cpu::cpus();
    let most = a.channels.unwrap_or(cpus.min(8));
    if most == 0 || most > 64 {
        return Err(Error::msg(format!(
            "--channels {most}: the channel count must be 1..=64"
        )));
    }
    if a.trials == 0 {
        return Err(Error::msg("--trials 0: at least one trial"));
    }
    let sizes: Vec<usize> = if a.quick {
        vec![4 << 10, 256 << 10, 4 << 20]
    } else {
        if a.min_size == 0 || a.min_size > a.max_size || a.max_size > u32::MAX as usize {
            return Err(Error::msg(format!(
                "--min-size {} --max-size {}: sizes must satisfy 1 <= min <= max <= 4294967295 (a descriptor's transfer size)",
                a.min_size, a.max_size
            )));
        }
        std::iter::successors(Some(a.min_size), |s| s.checked_mul(2))
            .take_while(|s| *s <= a.max_size)
            .collect()
    };
    let channels: Vec<usize> = (1..=most).collect();
    let trial = Duration::from_millis(a.trial_ms.unwrap_or(if a.quick { 5 } else { 40 }).max(1));
    let pb = progress((sizes.len() * channels.len()) as u64, a.quiet || a.json);
    let rows = matrix(&sizes, &channels, trial, a.trials, |r: &DmaRow| {
        pb.set_message(format!("{} x {} channel(s)", label(r.size), r.channels));
        pb.inc(1);
    });
    pb.finish_and_clear();
    let rows = rows?;
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        let v = DmaReport {
            tool: "nd dma",
            engine: "netdma CPU engine",
            cpus,
            trial_ms: trial.as_millis() as u64,
            trials: a.trials,
            units: DmaUnits {
                gb_s: "10^9 octets copied per second",
                ratio: "NetDMA aggregate / single-thread memcpy",
            },
            seconds: secs,
            data_verified: true,
            results: rows
                .iter()
                .map(|r| DmaResult {
                    size: r.size,
                    channels: r.channels,
                    netdma_gb_s: r.netdma_gb_s,
                    memcpy_gb_s: r.memcpy_gb_s,
                    ratio: r.netdma_gb_s / r.memcpy_gb_s,
                })
                .collect(),
        };
        let s = serde_json::to_string_pretty(&v).map_err(|e| Error::msg(e.to_string()))?;
        outln!("{s}");
        return Ok(());
    }
    let mut t = String::new();
    let _ = writeln!(
        t,
        "nd dma: NetDMA CPU copy engine vs memcpy, GB/s (10^9 B), best of {} x {} ms, {cpus} CPUs",
        a.trials,
        trial.as_millis()
    );
    let mut head = format!(" {:<10} {:>12}", "#bytes", "memcpy[GB/s]");
    for c in &channels {
        head += &format!(" {:>9}", format!("{c}ch[GB/s]"));
    }
    head += &format!(" {:>12}", format!("best/memcpy"));
    let _ = writeln!(t, "{head}");
    for &size in &sizes {
        let cells: Vec<&DmaRow> = rows.iter().filter(|r| r.size == size).collect();
        let Some(first) = cells.first() else { continue };
        let mut line = format!(" {:<10} {:>12.2}", size, first.memcpy_gb_s);
        let mut best = 0f64;
        for r in &cells {
            line += &format!(" {:>9.2}", r.netdma_gb_s);
            best = best.max(r.netdma_gb_s);
        }
        line += &format!(" {:>11.2}x", best / first.memcpy_gb_s);
        let _ = writeln!(t, "{line}");
    }
    let _ = writeln!(
        t,
        " data check: OK (every destination equals the source)\n nd dma finished in {secs:.1} s"
    );
    out!("{t}");
    Ok(())
}

/// `nd dma --json`.
#[derive(Debug, serde::Serialize)]
struct DmaReport {
    tool: &'static str,
    engine: &'static str,
    cpus: usize,
    trial_ms: u64,
    trials: u32,
    units: DmaUnits,
    seconds: f64,
    data_verified: bool,
    results: Vec<DmaResult>,
}

/// The units of [`DmaReport`]'s figures.
#[derive(Debug, serde::Serialize)]
struct DmaUnits {
    gb_s: &'static str,
    ratio: &'static str,
}

/// One size and channel count.
#[derive(Debug, serde::Serialize)]
struct DmaResult {
    size: usize,
    channels: usize,
    netdma_gb_s: f64,
    memcpy_gb_s: f64,
    ratio: f64,
}
