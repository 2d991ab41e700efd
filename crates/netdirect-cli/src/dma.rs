//! `nd dma`: the NetDMA benchmark — the CPU copy engine against `memcpy`, in the same run,
//! in three views:
//!
//! * **single descriptors**: one descriptor per Append, per copy size;
//! * **chains** of 16, 64 and 256 descriptors per Append (`--chains`), per copy size, one
//!   channel;
//! * **channels**: 1..=N channels (`--channels N`, default the CPUs, at most 8), channel k
//!   allocated with the CPU mask {k}, chains of about 16 MiB, against N `memcpy` threads pinned
//!   to the same CPUs.
//!
//! The client keeps up to 64 MiB (2 to 64 submissions) in flight per channel. Every engine
//! figure is measured in trials that alternate with its `memcpy` reference; an engine trial
//! ends when everything submitted in it has been copied (nothing runs during the `memcpy`
//! trial), and the `memcpy` reference copies between the engine's own buffers (same
//! alignment, same cache state; N threads: between their channels' buffers). With two CPUs or
//! more, the single-descriptor and chain views run the client on the first CPU of the
//! process's mask and the channel's worker on the second, and their `memcpy` trials run on
//! the worker's CPU (a virtual machine's CPUs are not equally fast at every moment). A
//! cell runs `--trials` rounds (default 8) of one engine trial and one `memcpy` trial of
//! `--trial-ms` each (default 10 ms); its GB/s figures are each side's best trial, and its
//! ratio is the median over the rounds of the two trials' ratio. This machine's CPUs change
//! speed (2x at 8 KiB, `memcpy` alone) for stretches of about 100 ms: two trials next to each
//! other run at the same speed, while each side's best over a cell may come from different
//! stretches (a ratio of best figures read 0.55-1.6 for one build at one size). Sizes are powers of two from
//! 4 KiB to 64 MiB (`--min-size`/`--max-size`, or `--quick`: 4 KiB, 256 KiB, 4 MiB); a chain
//! cell moving more than `--max-chain-bytes` per chain is skipped. GB = 10^9 octets copied.
//! The header shows what the engine measured at start-up: the caches the machine reports,
//! the copy method per size, and the inline threshold the provider declares. Every
//! destination is compared with the source afterwards. `--json` prints everything as JSON;
//! the progress bar (stderr, terminals only) goes with `--quiet`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use clap::Args;

use crate::copy::{Bench, ChainCell, ChannelCell};
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
    /// Chain lengths of the chain view (default 16,64,256).
    #[arg(long = "chains", value_delimiter = ',', default_values_t = [16usize, 64, 256])]
    chains: Vec<usize>,
    /// Skip chain cells moving more than this many octets per chain (default 4 GiB).
    #[arg(long = "max-chain-bytes", default_value_t = 4 << 30)]
    max_chain_bytes: u64,
    /// Milliseconds per trial (default 10; 5 with --quick).
    #[arg(long = "trial-ms")]
    trial_ms: Option<u64>,
    /// Trials per cell, alternating with the memcpy trials; the best is kept (default 8: a host slows down for tens of milliseconds at a time, and a cell needs one trial of each side outside such a stretch).
    #[arg(long, default_value_t = 8)]
    trials: u32,
    /// Three sizes (4 KiB, 256 KiB, 4 MiB), short trials, at most 256 MiB per chain.
    #[arg(long)]
    quick: bool,
    /// Print JSON on stdout instead of the tables.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn label(size: u64) -> String {
    if size >= 1 << 20 && size % (1 << 20) == 0 {
        format!("{}M", size >> 20)
    } else if size >= 1 << 10 && size % (1 << 10) == 0 {
        format!("{}K", size >> 10)
    } else {
        size.to_string()
    }
}

/// Everything one `nd dma` run measured.
struct Report {
    cpus: usize,
    trial: Duration,
    trials: u32,
    seconds: f64,
    inline_threshold: u64,
    inline_max_descriptors: u32,
    single: Vec<ChainCell>,
    chains: Vec<ChainCell>,
    channels: Vec<ChannelCell>,
}

/// `nd dma --json`: one document.
#[derive(Debug, serde::Serialize)]
struct DmaJson {
    tool: &'static str,
    engine: &'static str,
    cpus: usize,
    trial_ms: u64,
    trials: u32,
    units: DmaUnits,
    seconds: f64,
    data_verified: bool,
    machine: DmaMachine,
    calibration: DmaCalibration,
    provider: DmaProvider,
    single: Vec<DmaCell>,
    chains: Vec<DmaCell>,
    channels: Vec<DmaChannels>,
    /// The channel view against single-thread memcpy (kept from earlier versions).
    results: Vec<DmaResult>,
}

/// The units of [`DmaJson`]'s figures.
#[derive(Debug, serde::Serialize)]
struct DmaUnits {
    gb_s: &'static str,
    ratio: &'static str,
}

/// The caches the machine reports.
#[derive(Debug, serde::Serialize)]
struct DmaMachine {
    l1d: u64,
    l2: u64,
    l3: u64,
    l3_sharing: u32,
    reported: bool,
}

/// What the engine measured at start-up.
#[derive(Debug, serde::Serialize)]
struct DmaCalibration {
    plan: Vec<DmaPlanStep>,
    nt_threshold: Option<u64>,
    inline_threshold: u64,
    handoff_ns: u64,
    seconds: f64,
    samples: Vec<DmaSample>,
}

/// From `from` octets up, `method`.
#[derive(Debug, serde::Serialize)]
struct DmaPlanStep {
    from: u64,
    method: &'static str,
}

/// One calibration point.
#[derive(Debug, serde::Serialize)]
struct DmaSample {
    size: u64,
    method: &'static str,
    gb_s: f64,
}

/// What the provider declares.
#[derive(Debug, serde::Serialize)]
struct DmaProvider {
    inline_threshold: u64,
    inline_max_descriptors: u32,
}

/// One single-descriptor or chain cell.
#[derive(Debug, serde::Serialize)]
struct DmaCell {
    size: usize,
    chain: usize,
    netdma_gb_s: f64,
    memcpy_gb_s: f64,
    ratio: f64,
    inline: bool,
    method: &'static str,
}

/// One channel-view cell.
#[derive(Debug, serde::Serialize)]
struct DmaChannels {
    size: usize,
    channels: usize,
    cpus: Vec<u32>,
    netdma_gb_s: f64,
    memcpy_threads_gb_s: f64,
    ratio: f64,
}

/// One channel count against single-thread memcpy.
#[derive(Debug, serde::Serialize)]
struct DmaResult {
    size: usize,
    channels: usize,
    netdma_gb_s: f64,
    memcpy_gb_s: f64,
    ratio: f64,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// A ratio right-aligned in `width` characters and an "x": two decimals, fewer when it is too
/// wide for them (a short trial that lost its CPU can read 100x), so columns stay aligned.
fn ratio_cell(r: f64, width: usize) -> String {
    let s = [2, 1]
        .into_iter()
        .map(|decimals| format!("{r:.decimals$}"))
        .find(|s| s.len() <= width)
        .unwrap_or_else(|| format!("{r:.0}"));
    format!("{s:>width$}x")
}

impl Report {
    fn memcpy_at(&self, size: usize) -> f64 {
        self.single
            .iter()
            .chain(&self.chains)
            .find(|c| c.size == size)
            .map_or(0.0, |c| c.memcpy_gb_s)
    }

    fn to_json(&self) -> DmaJson {
        let cal = netdma::Calibration::get();
        let plan = &cal.plan;
        let cell = |c: &ChainCell| DmaCell {
            size: c.size,
            chain: c.chain,
            netdma_gb_s: c.netdma_gb_s,
            memcpy_gb_s: c.memcpy_gb_s,
            ratio: c.ratio,
            inline: c.inline,
            method: plan.method_for(c.size as u64).name(),
        };
        DmaJson {
            tool: "nd dma",
            engine: "netdma CPU engine",
            cpus: self.cpus,
            trial_ms: self.trial.as_millis() as u64,
            trials: self.trials,
            units: DmaUnits {
                gb_s: "10^9 octets copied per second",
                ratio: "median over the trial rounds of NetDMA / memcpy in the same round (channels: aggregate / as many pinned memcpy threads); the channel view's results[] ratio: best channels GB/s / best single-thread memcpy GB/s",
            },
            seconds: self.seconds,
            data_verified: true,
            machine: DmaMachine {
                l1d: cal.cache.l1d,
                l2: cal.cache.l2,
                l3: cal.cache.l3,
                l3_sharing: cal.cache.l3_sharing,
                reported: cal.cache.reported,
            },
            calibration: DmaCalibration {
                plan: plan
                    .steps()
                    .iter()
                    .map(|(f, m)| DmaPlanStep {
                        from: *f,
                        method: m.name(),
                    })
                    .collect(),
                nt_threshold: plan.nt_threshold(),
                inline_threshold: cal.inline_threshold,
                handoff_ns: cal.handoff_ns,
                seconds: cal.elapsed.as_secs_f64(),
                samples: cal
                    .samples
                    .iter()
                    .map(|s| DmaSample {
                        size: s.size,
                        method: s.method.name(),
                        gb_s: s.gb_s,
                    })
                    .collect(),
            },
            provider: DmaProvider {
                inline_threshold: self.inline_threshold,
                inline_max_descriptors: self.inline_max_descriptors,
            },
            single: self.single.iter().map(cell).collect(),
            chains: self.chains.iter().map(cell).collect(),
            channels: self
                .channels
                .iter()
                .map(|c| DmaChannels {
                    size: c.size,
                    channels: c.channels,
                    cpus: c.cpus.clone(),
                    netdma_gb_s: c.netdma_gb_s,
                    memcpy_threads_gb_s: c.memcpy_threads_gb_s,
                    ratio: c.ratio,
                })
                .collect(),
            results: self
                .channels
                .iter()
                .map(|c| {
                    let m = self.memcpy_at(c.size);
                    DmaResult {
                        size: c.size,
                        channels: c.channels,
                        netdma_gb_s: c.netdma_gb_s,
                        memcpy_gb_s: m,
                        ratio: ratio(c.netdma_gb_s, m),
                    }
                })
                .collect(),
        }
    }

    fn table(&self, sizes: &[usize], chains: &[usize], channels: &[usize]) -> String {
        let cal = netdma::Calibration::get();
        let c = &cal.cache;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "nd dma: NetDMA CPU copy engine vs memcpy, GB/s (10^9 B), best of {} x {} ms, {} CPUs",
            self.trials,
            self.trial.as_millis(),
            self.cpus
        );
        let plan: Vec<String> = cal
            .plan
            .steps()
            .iter()
            .map(|(f, m)| format!("{}+ {}", label(*f), m.name()))
            .collect();
        let _ = writeln!(
            t,
            " caches{}: L1d {}, L2 {}, L3 {} (shared by {} CPUs); copy method by size (measured in {:.2} s): {}",
            if c.reported { "" } else { " (assumed)" },
            label(c.l1d),
            label(c.l2),
            label(c.l3),
            c.l3_sharing,
            cal.elapsed.as_secs_f64(),
            plan.join(", ")
        );
        let _ = writeln!(
            t,
            " inline: submissions of at most {} octets in at most {} copies to an idle channel run on the submitting thread (hand-off measured {:.1} us); a client streaming without polling hands those of {} octets and more to the worker",
            self.inline_threshold,
            self.inline_max_descriptors,
            cal.handoff_ns as f64 / 1e3,
            netdma::STREAM_TO_WORKER_FROM
        );
        let _ = writeln!(
            t,
            "\n single descriptors and chains, one channel (x = NetDMA / memcpy; * = ran inline)"
        );
        let mut head = format!(
            " {:<10} {:>12} {:>9} {:>6}",
            "#bytes", "memcpy[GB/s]", "single", "x"
        );
        for k in chains {
            head += &format!(" {:>9} {:>6}", format!("chain{k}"), "x");
        }
        let _ = writeln!(t, "{head}");
        for &size in sizes {
            let mut line = format!(" {:<10} {:>12.2}", size, self.memcpy_at(size));
            let cells = std::iter::once(self.single.iter().find(|x| x.size == size)).chain(
                chains
                    .iter()
                    .map(|k| self.chains.iter().find(|x| x.size == size && x.chain == *k)),
            );
            for cell in cells {
                match cell {
                    Some(x) => {
                        let mark = if x.inline { "*" } else { "" };
                        line += &format!(
                            " {:>9} {}",
                            format!("{mark}{:.2}", x.netdma_gb_s),
                            ratio_cell(x.ratio, 5)
                        )
                    }
                    None => line += &format!(" {:>9} {:>6}", "-", "-"),
                }
            }
            let _ = writeln!(t, "{line}");
        }
        let _ = writeln!(
            t,
            "\n channels (channel k on CPU k, chains of ~16 MiB; Nthr = N memcpy threads on the same CPUs)"
        );
        let mut head = format!(" {:<10} {:>12}", "#bytes", "memcpy[GB/s]");
        for n in channels {
            head += &format!(
                " {:>9} {:>10} {:>9}",
                format!("{n}ch[GB/s]"),
                format!("{n}thr[GB/s]"),
                format!("{n}ch/{n}thr")
            );
        }
        head += &format!(" {:>12}", "best/memcpy");
        let _ = writeln!(t, "{head}");
        for &size in sizes {
            let m = self.memcpy_at(size);
            let mut line = format!(" {:<10} {:>12.2}", size, m);
            let mut best = 0f64;
            for n in channels {
                match self
                    .channels
                    .iter()
                    .find(|x| x.size == size && x.channels == *n)
                {
                    Some(x) => {
                        best = best.max(x.netdma_gb_s);
                        line += &format!(
                            " {:>9.2} {:>10.2} {}",
                            x.netdma_gb_s,
                            x.memcpy_threads_gb_s,
                            ratio_cell(x.ratio, 8)
                        );
                    }
                    None => line += &format!(" {:>9} {:>10} {:>9}", "-", "-", "-"),
                }
            }
            line += &format!(" {}", ratio_cell(ratio(best, m), 11));
            let _ = writeln!(t, "{line}");
        }
        let _ = writeln!(
            t,
            " data check: OK (every destination equals the source)\n nd dma finished in {:.1} s",
            self.seconds
        );
        t
    }
}

/// Runs every cell; `tick` after each.
#[allow(clippy::too_many_arguments)]
fn collect(
    sizes: &[usize],
    chains: &[usize],
    channels: &[usize],
    max_chain_bytes: u64,
    trial: Duration,
    trials: u32,
    mut tick: impl FnMut(String),
) -> Result<Report> {
    let started = Instant::now();
    let most = channels.iter().copied().max().unwrap_or(1);
    let bench = Bench::new(most)?;
    let mut r = Report {
        cpus: crate::cpu::cpus(),
        trial,
        trials,
        seconds: 0.0,
        inline_threshold: bench.inline_threshold(),
        inline_max_descriptors: bench.inline_max_descriptors(),
        single: Vec::new(),
        chains: Vec::new(),
        channels: Vec::new(),
    };
    for &size in sizes {
        tick(format!("{} single", label(size as u64)));
        r.single.push(bench.chain_cell(size, 1, trial, trials)?);
        for &k in chains {
            tick(format!("{} chain {k}", label(size as u64)));
            if (k as u64).saturating_mul(size as u64) <= max_chain_bytes {
                r.chains.push(bench.chain_cell(size, k, trial, trials)?);
            }
        }
        for &n in channels {
            tick(format!("{} x {n} channel(s)", label(size as u64)));
            r.channels.push(bench.channel_cell(size, n, trial, trials)?);
        }
    }
    r.seconds = started.elapsed().as_secs_f64();
    Ok(r)
}

/// Runs `nd dma`.
pub fn run(a: &DmaArgs) -> Result<()> {
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
    if a.chains.iter().any(|&k| k == 0 || k > 65536) {
        return Err(Error::msg("--chains: every chain length must be 1..=65536"));
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
    let max_chain_bytes = if a.quick {
        a.max_chain_bytes.min(256 << 20)
    } else {
        a.max_chain_bytes
    };
    let channels: Vec<usize> = (1..=most).collect();
    let trial = Duration::from_millis(a.trial_ms.unwrap_or(if a.quick { 5 } else { 10 }).max(1));
    let cells = sizes.len() * (1 + a.chains.len() + channels.len());
    let pb = progress(cells as u64, a.quiet || a.json);
    let report = collect(
        &sizes,
        &a.chains,
        &channels,
        max_chain_bytes,
        trial,
        a.trials,
        |m| {
            pb.set_message(m);
            pb.inc(1);
        },
    );
    pb.finish_and_clear();
    let report = report?;
    if a.json {
        let s = serde_json::to_string_pretty(&report.to_json())
            .map_err(|e| Error::msg(e.to_string()))?;
        outln!("{s}");
        return Ok(());
    }
    out!("{}", report.table(&sizes, &a.chains, &channels));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ratio keeps its column's width however large a disturbed trial makes it.
    #[test]
    fn ratio_cells_keep_their_width() {
        for r in [0.0, 0.93, 9.99, 99.99, 100.0, 123.456, 99_999.0] {
            assert_eq!(
                ratio_cell(r, 5).chars().count(),
                6,
                "{r}: {:?}",
                ratio_cell(r, 5)
            );
        }
        assert_eq!(ratio_cell(1.5, 5), " 1.50x");
        assert_eq!(ratio_cell(123.456, 5), "123.5x");
        assert_eq!(ratio_cell(12345.6, 5), "12346x");
    }

    /// The JSON of a small run, printed and parsed back, has every section with the fields
    /// clients read, and the figures are consistent.
    #[test]
    fn json_shape() {
        let sizes = [4096usize, 65536];
        let r = collect(
            &sizes,
            &[16, 64],
            &[1, 2],
            1 << 20,
            Duration::from_millis(1),
            1,
            |_| {},
        )
        .unwrap();
        let text = serde_json::to_string_pretty(&r.to_json()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["tool"], "nd dma");
        assert_eq!(v["data_verified"], true);
        let single = v["single"].as_array().unwrap();
        assert_eq!(single.len(), 2);
        let chains = v["chains"].as_array().unwrap();
        // 16 x 64 KiB fits in 1 MiB per chain, 64 x 64 KiB does not.
        assert_eq!(chains.len(), 3, "{text}");
        for c in single.iter().chain(chains) {
            let (n, m) = (
                c["netdma_gb_s"].as_f64().unwrap(),
                c["memcpy_gb_s"].as_f64().unwrap(),
            );
            assert!(n > 0.0 && m > 0.0, "{c}");
            // The median of the rounds' ratios, within the spread the best figures allow.
            let r = c["ratio"].as_f64().unwrap();
            assert!(r > 0.0 && r.is_finite(), "{c}");
            assert!(c["inline"].is_boolean());
            assert!(
                ["memcpy", "rep_movsb", "vector", "non_temporal"]
                    .contains(&c["method"].as_str().unwrap())
            );
        }
        assert!(single.iter().all(|c| c["chain"] == 1));
        let ch = v["channels"].as_array().unwrap();
        assert_eq!(ch.len(), 4);
        for c in ch {
            let n = c["channels"].as_u64().unwrap() as usize;
            let cpus = c["cpus"].as_array().unwrap();
            assert_eq!(cpus.len(), n);
            let online = crate::cpu::cpus() as u64;
            for (k, cpu) in cpus.iter().enumerate() {
                assert_eq!(
                    cpu.as_u64().unwrap(),
                    k as u64 % online,
                    "channel k on CPU k"
                );
            }
            assert!(c["memcpy_threads_gb_s"].as_f64().unwrap() > 0.0);
            assert!(c["ratio"].as_f64().is_some());
        }
        assert_eq!(v["results"].as_array().unwrap().len(), 4);
        let plan = v["calibration"]["plan"].as_array().unwrap();
        assert_eq!(plan[0]["from"], 0);
        assert!(v["calibration"]["inline_threshold"].is_u64());
        assert!(v["machine"]["l3"].is_u64());
        assert_eq!(
            v["provider"]["inline_threshold"],
            v["calibration"]["inline_threshold"]
        );
        assert_eq!(
            v["provider"]["inline_max_descriptors"],
            netdma::INLINE_MAX_DESCRIPTORS
        );
        // A chain cell is marked inline only if the provider runs it inline.
        for c in chains {
            assert_eq!(c["inline"], false, "{c}");
        }
        let table = r.table(&sizes, &[16, 64], &[1, 2]);
        for h in [
            "#bytes",
            "memcpy[GB/s]",
            "single",
            "chain16",
            "1ch[GB/s]",
            "2thr[GB/s]",
            "best/memcpy",
        ] {
            assert!(table.contains(h), "{table}");
        }
    }
}
