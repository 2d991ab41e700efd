//! The NetDMA CPU copy engine next to `memcpy`, measured in the same run (the matrix behind
//! `nd dma`, and `nd bench`'s NetDMA rows).
//!
//! Three views, each cell measured in alternating trials with its `memcpy` reference; the
//! client keeps [`depth`] submissions in flight per channel (up to 64 MiB, 2 to 64):
//! * **single**: one descriptor per Append;
//! * **chains**: chains of 16/64/256 descriptors per Append;
//! * **channels**: N channels, channel k allocated with the CPU mask {k} (the NetDMA way to ask
//!   for a CPU), each with its own source and destination, against N `memcpy` threads pinned
//!   to the same CPUs, each copying between its channel's buffers.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use netdirect_types::Status;
use netdma::{
    Chain, Channel, ChannelParameters, ControlFlags, CpuEngine, DmaBuffer, EngineConfig, NetDma,
    ProviderId, Submission,
};

use crate::error::{Error, Result};

fn dma_err(what: &str) -> impl Fn(netdma::Status) -> Error + '_ {
    move |s| Error::status(format!("NetDMA: {what}"), Status(s.0))
}

const FILL: u8 = 0x5A;

/// Submissions a streaming client keeps in flight: at least two (one running, one queued)
/// and at least [`IN_FLIGHT`] octets, at most 64. On a busy machine the queued work has to
/// cover the time the client needs to be scheduled again after a wake-up.
pub fn depth(bytes_per_submission: usize) -> usize {
    IN_FLIGHT.div_ceil(bytes_per_submission.max(1)).clamp(2, 64)
}

/// Octets a streaming client keeps queued (see [`depth`]).
pub const IN_FLIGHT: usize = 64 << 20;

/// What a measured closure is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// One step (copies the step's octets, or submits them).
    Step,
    /// End of a trial, inside its timing: an asynchronous engine waits until everything it
    /// was given has been copied; a synchronous copier releases what it holds.
    Finish,
}

/// What [`measure_pair`] measured.
#[derive(Debug, Clone, Copy)]
struct Pair {
    /// Best GB/s of `a` over its trials.
    best_a: f64,
    /// Best GB/s of `b` over its trials.
    best_b: f64,
    /// Median over the rounds of `a`'s GB/s over `b`'s in the same round.
    ratio: f64,
}

/// Runs `trials` rounds of one trial of `a` then one of `b` (each returns its GB/s, 10^9
/// octets); keeps each side's best and the median of the rounds' paired ratios.
///
/// The ratio is taken per round because this machine's CPUs change speed for stretches of
/// about 100 ms (2x at 8 KiB, seen with `memcpy` alone): two trials next to each other run at
/// the same speed, while the best of each side over a longer time may come from different
/// stretches.
fn measure_pair(
    trials: u32,
    mut a: impl FnMut() -> Result<f64>,
    mut b: impl FnMut() -> Result<f64>,
) -> Result<Pair> {
    let (mut best_a, mut best_b) = (0f64, 0f64);
    let mut ratios = Vec::with_capacity(trials as usize);
    for _ in 0..trials.max(1) {
        let (x, y) = (a()?, b()?);
        best_a = best_a.max(x);
        best_b = best_b.max(y);
        if y > 0.0 {
            ratios.push(x / y);
        }
    }
    Ok(Pair {
        best_a,
        best_b,
        ratio: crate::report::median(ratios),
    })
}

/// One trial of a stepped copier: steps (each copying `bytes`) for at least `trial` and at
/// least once, then `Finish`; GB/s.
///
/// A trial is timed from its first step to the end of its `Finish`, so an engine's trial
/// counts only copies done inside it: nothing is left in flight to run during the peer's
/// trial (which would both slow the peer and credit the engine with work done off the
/// clock), and each trial starts with an idle engine.
fn timed(bytes: u64, trial: Duration, f: &mut impl FnMut(Phase) -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    let mut n = 0u64;
    while n == 0 || t.elapsed() < trial {
        f(Phase::Step)?;
        n += 1;
    }
    f(Phase::Finish)?;
    Ok((n * bytes) as f64 / t.elapsed().as_secs_f64() / 1e9)
}

/// Warm-up of a stepped copier: page faults, caches, the engine's first hand-off.
fn warm(f: &mut impl FnMut(Phase) -> Result<()>) -> Result<()> {
    f(Phase::Step)?;
    f(Phase::Finish)
}

/// The `memcpy` peer of a cell: `k` copies per step from `src` to `dst` (the very buffers the
/// engine copies between: same alignment, same cache state), borrowed for one trial. With
/// `place` = (client CPU, worker CPU) the calling thread moves to the worker's CPU for the
/// trial and back afterwards, so that both figures are of copies on the same CPU.
fn memcpy_steps<'a>(
    src: &'a DmaBuffer,
    dst: &'a DmaBuffer,
    k: usize,
    place: Option<(usize, usize)>,
) -> impl FnMut(Phase) -> Result<()> + 'a {
    let mut held: Option<(netdma::ReadGuard<'a>, netdma::WriteGuard<'a>)> = None;
    move |phase| {
        if phase == Phase::Finish {
            held = None;
            if let Some((client, _)) = place {
                netdma::pin_current_thread(client);
            }
            return Ok(());
        }
        if held.is_none() {
            if let Some((_, worker)) = place {
                netdma::pin_current_thread(worker);
            }
            held = Some((
                src.read().map_err(dma_err("cannot read a buffer"))?,
                dst.write().map_err(dma_err("cannot write a buffer"))?,
            ));
        }
        if let Some((s, d)) = held.as_mut() {
            for _ in 0..k {
                d.copy_from_slice(black_box(&**s));
                black_box(&mut **d);
            }
        }
        Ok(())
    }
}

/// Trial rounds per size in `nd bench`'s NetDMA rows.
pub const ROUNDS: u32 = 8;

/// One row of `nd bench`: size, NetDMA GB/s, memcpy GB/s.
#[derive(Debug, Clone, Copy)]
pub struct CopyRow {
    /// Copy size.
    pub size: usize,
    /// One channel of the CPU engine.
    pub netdma: f64,
    /// `copy_from_slice` on the same kind of buffers.
    pub memcpy: f64,
    /// Median of the paired per-round ratios (see [`ChainCell::ratio`]).
    pub ratio: f64,
}

/// The copy engine (one channel, chains of about 16 MiB) and memcpy at each size (`nd bench`).
pub fn run(sizes: &[usize], trial: Duration, mut tick: impl FnMut()) -> Result<Vec<CopyRow>> {
    let bench = Bench::new(1)?;
    let mut rows = Vec::new();
    for &size in sizes {
        let c = bench.chain_cell(size, per_chain(size), trial, ROUNDS)?;
        rows.push(CopyRow {
            size,
            netdma: c.netdma_gb_s,
            memcpy: c.memcpy_gb_s,
            ratio: c.ratio,
        });
        tick();
    }
    Ok(rows)
}

/// Descriptors per chain for the channel view: about 16 MiB a chain, 1 to 4096 descriptors.
pub fn per_chain(size: usize) -> usize {
    ((16 << 20) / size.max(1)).clamp(1, 4096)
}

/// One cell of the single-descriptor or chain view.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ChainCell {
    /// Octets per descriptor.
    pub size: usize,
    /// Descriptors per submission (1 = single descriptors).
    pub chain: usize,
    /// One channel, GB/s (10^9 octets).
    pub netdma_gb_s: f64,
    /// Single-thread `memcpy` of the same copies, GB/s, measured in alternation.
    pub memcpy_gb_s: f64,
    /// Median over the trial rounds of NetDMA's GB/s over memcpy's in the same round.
    pub ratio: f64,
    /// True if the provider runs a submission of this size on the submitting thread.
    pub inline: bool,
}

/// One cell of the channel view.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChannelCell {
    /// Octets per descriptor.
    pub size: usize,
    /// Channels copying at once.
    pub channels: usize,
    /// The CPU each channel reported (`CpuNumber`), as requested by its affinity mask.
    pub cpus: Vec<u32>,
    /// Aggregate GB/s of the channels.
    pub netdma_gb_s: f64,
    /// Aggregate GB/s of as many `memcpy` threads pinned to the same CPUs.
    pub memcpy_threads_gb_s: f64,
    /// Median over the trial rounds of the channels' GB/s over the threads' in the same round.
    pub ratio: f64,
}

/// The engine under test and its provider id.
pub struct Bench {
    netdma: NetDma,
    engine: CpuEngine,
    inline_threshold: u64,
    inline_max_descriptors: u32,
}

impl Bench {
    /// A CPU engine with `channels` channels (measured copy plan and inline threshold).
    pub fn new(channels: usize) -> Result<Bench> {
        let netdma = NetDma::new();
        let engine = CpuEngine::register(&netdma, EngineConfig::new(channels.max(1) as u32))
            .map_err(dma_err("cannot start the CPU engine"))?;
        let (inline_threshold, inline_max_descriptors) = netdma
            .providers()
            .iter()
            .find(|p| p.id == engine.id())
            .map_or((0, 0), |p| {
                (
                    p.characteristics.inline_threshold,
                    p.characteristics.inline_max_descriptors,
                )
            });
        Ok(Bench {
            netdma,
            engine,
            inline_threshold,
            inline_max_descriptors,
        })
    }

    /// The provider's declared inline threshold.
    pub fn inline_threshold(&self) -> u64 {
        self.inline_threshold
    }

    /// The most data descriptors an inline submission may have (declared by the provider).
    pub fn inline_max_descriptors(&self) -> u32 {
        self.inline_max_descriptors
    }

    /// True if the provider runs a submission of `chain` copies of `size` octets inline for
    /// a streaming client such as this benchmark's (see [`netdma::STREAM_TO_WORKER_FROM`]).
    fn runs_inline(&self, size: usize, chain: usize) -> bool {
        let bytes = (size * chain) as u64;
        bytes <= self.inline_threshold
            && bytes < netdma::STREAM_TO_WORKER_FROM
            && chain as u64 <= u64::from(self.inline_max_descriptors)
    }

    fn id(&self) -> ProviderId {
        self.engine.id()
    }

    fn channel(&self, cpu: Option<usize>) -> Result<Channel> {
        let mut p = ChannelParameters::default();
        if let Some(c) = cpu {
            p.processor_affinity_mask = 1u64 << (c % 64);
        }
        let ch = self
            .netdma
            .allocate_channel(self.id(), p)
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
        Ok(ch)
    }

    /// One channel, `chain` descriptors of `size` octets per Append, against memcpy. With two
    /// CPUs or more the client runs on the first CPU of the process's mask and the channel's
    /// worker on the second, and the memcpy trials run on the worker's CPU: a virtual
    /// machine's CPUs need not be equally fast at a given moment, and a figure of one CPU
    /// against a reference of another measured that difference.
    pub fn chain_cell(
        &self,
        size: usize,
        chain: usize,
        trial: Duration,
        trials: u32,
    ) -> Result<ChainCell> {
        let pin = crate::tcp::Pinning::first_two(false);
        pin.on_client(|| self.chain_cell_on(pin.client.zip(pin.server), size, chain, trial, trials))
    }

    fn chain_cell_on(
        &self,
        place: Option<(usize, usize)>,
        size: usize,
        chain: usize,
        trial: Duration,
        trials: u32,
    ) -> Result<ChainCell> {
        let ch = self.channel(place.map(|p| p.1))?;
        let (src, dst) = (
            DmaBuffer::from_slice(&vec![FILL; size]),
            DmaBuffer::new(size),
        );
        let mut stream = Stream::new(&ch, &src, &dst, size, chain);
        let depth = depth(size * chain);
        let bytes = (chain * size) as u64;
        let mut engine = |p| match p {
            Phase::Step => stream.step(depth),
            Phase::Finish => stream.drain(),
        };
        let mut reference = memcpy_steps(&src, &dst, chain, place);
        warm(&mut engine)?;
        warm(&mut reference)?;
        let m = measure_pair(
            trials,
            || timed(bytes, trial, &mut engine),
            || timed(bytes, trial, &mut reference),
        )?;
        stream.drain()?;
        drop(ch);
        verify(&dst)?;
        Ok(ChainCell {
            size,
            chain,
            netdma_gb_s: m.best_a,
            memcpy_gb_s: m.best_b,
            ratio: m.ratio,
            inline: self.runs_inline(size, chain),
        })
    }

    /// `n` channels on CPUs 0..n (chains of [`per_chain`]) against `n` pinned memcpy threads.
    pub fn channel_cell(
        &self,
        size: usize,
        n: usize,
        trial: Duration,
        trials: u32,
    ) -> Result<ChannelCell> {
        let cpus = crate::cpu::cpus();
        let k = per_chain(size);
        let mut chans = Vec::with_capacity(n);
        for c in 0..n {
            let ch = self.channel(Some(c % cpus))?;
            chans.push((
                ch,
                DmaBuffer::from_slice(&vec![FILL; size]),
                DmaBuffer::new(size),
            ));
        }
        let reported: Vec<u32> = chans.iter().map(|c| c.0.cpu_number()).collect();
        let mut streams: Vec<Stream<'_>> = chans
            .iter()
            .map(|(ch, s, d)| Stream::new(ch, s, d, size, k))
            .collect();
        let bytes = (n * k * size) as u64;
        let keep = depth(k * size);
        let pairs: Vec<(&DmaBuffer, &DmaBuffer)> = chans.iter().map(|(_, s, d)| (s, d)).collect();
        let mut engine = |p| {
            if p == Phase::Finish {
                for s in streams.iter_mut() {
                    s.drain()?;
                }
                return Ok(());
            }
            for s in streams.iter_mut() {
                s.submit()?;
            }
            for s in streams.iter_mut() {
                s.retire(keep - 1)?;
            }
            Ok(())
        };
        warm(&mut engine)?;
        memcpy_threads(&pairs, k, Duration::ZERO, cpus)?;
        let m = measure_pair(
            trials,
            || timed(bytes, trial, &mut engine),
            || memcpy_threads(&pairs, k, trial, cpus),
        )?;
        for s in streams.iter_mut() {
            s.drain()?;
        }
        drop(streams);
        for (ch, _, dst) in chans {
            drop(ch);
            verify(&dst)?;
        }
        Ok(ChannelCell {
            size,
            channels: n,
            cpus: reported,
            netdma_gb_s: m.best_a,
            memcpy_threads_gb_s: m.best_b,
            ratio: m.ratio,
        })
    }
}

/// `bufs.len()` threads, thread i pinned to CPU i, each copying its source to its destination
/// (channel i's own buffers) `k` times per step for at least `trial`; aggregate GB/s.
fn memcpy_threads(
    bufs: &[(&DmaBuffer, &DmaBuffer)],
    k: usize,
    trial: Duration,
    cpus: usize,
) -> Result<f64> {
    let n = bufs.len();
    let start = Barrier::new(n);
    let results: Vec<Result<(u64, f64)>> = std::thread::scope(|sc| {
        let hs: Vec<_> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(s, d))| {
                let start = &start;
                sc.spawn(move || {
                    let _ = netdma::pin_current_thread(i % cpus);
                    let held = s.read().and_then(|s| Ok((s, d.write()?)));
                    start.wait();
                    let (s, mut d) = held.map_err(dma_err("cannot borrow a buffer"))?;
                    let t = Instant::now();
                    let mut bytes = 0u64;
                    while bytes == 0 || t.elapsed() < trial {
                        for _ in 0..k {
                            d.copy_from_slice(black_box(&*s));
                            black_box(&mut *d);
                        }
                        bytes += (k * s.len()) as u64;
                    }
                    Ok((bytes, t.elapsed().as_secs_f64()))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::msg("a memcpy thread panicked")))
            })
            .collect()
    });
    let results = results.into_iter().collect::<Result<Vec<_>>>()?;
    let secs = results.iter().map(|r| r.1).fold(0f64, f64::max);
    let bytes: u64 = results.iter().map(|r| r.0).sum();
    Ok(if secs > 0.0 {
        bytes as f64 / secs / 1e9
    } else {
        0.0
    })
}

/// A streaming client of one channel: appends chains of `k` copies and keeps one submission
/// queued behind the running one.
struct Stream<'a> {
    ch: &'a Channel,
    src: &'a DmaBuffer,
    dst: &'a DmaBuffer,
    size: u32,
    k: usize,
    pending: VecDeque<Submission>,
}

impl<'a> Stream<'a> {
    fn new(ch: &'a Channel, src: &'a DmaBuffer, dst: &'a DmaBuffer, size: usize, k: usize) -> Self {
        Stream {
            ch,
            src,
            dst,
            size: size as u32,
            k,
            pending: VecDeque::new(),
        }
    }

    fn submit(&mut self) -> Result<()> {
        let mut c = Chain::with_capacity(self.k);
        for _ in 0..self.k {
            c.copy(self.src, 0, self.dst, 0, self.size, ControlFlags::empty());
        }
        let s = self
            .ch
            .append(c)
            .map_err(dma_err("cannot append a chain"))?;
        self.pending.push_back(s);
        Ok(())
    }

    /// Once more than `keep` submissions are outstanding, retires down to `keep` (to `keep / 2`
    /// from a window of four up: completions are retired in batches, one wait per batch, as a
    /// streaming client would, rather than one wake-up per submission).
    fn retire(&mut self, keep: usize) -> Result<()> {
        if self.pending.len() <= keep {
            return Ok(());
        }
        let low = if keep >= 4 { keep / 2 } else { keep };
        let n = self.pending.len() - low;
        // Completion is in order: waiting for the last of the batch covers the ones before.
        if let Some(last) = self.pending.get(n - 1) {
            let st = self.ch.wait(last, Some(Duration::from_secs(60)));
            if st != netdma::Status::SUCCESS {
                return Err(dma_err("a copy chain failed")(st));
            }
        }
        for s in self.pending.drain(..n) {
            let st = self.ch.poll(&s);
            if st != netdma::Status::SUCCESS {
                return Err(dma_err("a copy chain failed")(st));
            }
        }
        Ok(())
    }

    /// Appends one submission and keeps `depth` outstanding.
    fn step(&mut self, depth: usize) -> Result<()> {
        self.submit()?;
        self.retire(depth.max(1) - 1)
    }

    fn drain(&mut self) -> Result<()> {
        self.retire(0)
    }
}

fn verify(dst: &DmaBuffer) -> Result<()> {
    let got = dst.read().map_err(dma_err("cannot read a buffer"))?;
    if got.iter().any(|b| *b != FILL) {
        return Err(Error::status(
            "NetDMA: the copied bytes differ from the source",
            Status::DATA_ERROR,
        ));
    }
    Ok(())
}
