//! The Microsoft NetworkDirect test tools as `nd` personas: `nd ping`, `nd pingpong`,
//! `nd rping`, `nd rpingpong`, `nd wping`, `nd wpingpong`.
//!
//! # Invocation
//! As the ND tools: `-s` starts a server, `-c` a client, and the address is `<ip>[:<port>]`,
//! either right after `-s`/`-c` or as the last argument (`nd ping -s 10.0.0.1:54324`,
//! `nd ping -c -q 64 10.0.0.1`). Unlike the ND tools (IPv4 only), IPv6 works: `[v6]:port`,
//! `[v6]`, and a plain v6 literal without a port (`::1`). A server started with `-s` and no
//! address listens on 127.0.0.1 and ::1. The server serves one client run and exits, as theirs.
//!
//! | persona | ND tool | default port | what the client measures |
//! |---|---|---|---|
//! | `ping` | `ndping` | 54324 | a stream of Sends, up to `-q` (128) in flight, receive credits from the server |
//! | `pingpong` | `ndpingpong` | 54325 | Send ping-pong, one message in flight |
//! | `rping` | `ndrping -r` | 54326 | a stream of RDMA reads of the server's buffer, up to `-q` (128, capped by the read limits) |
//! | `rpingpong` | — | 54327 | one RDMA read at a time (a read is itself a round trip) |
//! | `wping` | `ndrping -w` | 54328 | a stream of RDMA writes into the server's buffer, up to `-q` |
//! | `wpingpong` | `ndrpingpong` | 54329 | RDMA write ping-pong: each side writes back when the last byte of the peer's write arrives |
//!
//! `ndwping`/`ndwpingpong` do not exist in Microsoft's repository; the names and ports 54328
//! and 54329 are ours. `ndrping` takes `-r`/`-w` on one port; here reads and writes are
//! separate personas, and `rpingpong` is a read persona (Microsoft's `ndrpingpong` is the
//! write ping-pong, which is `wpingpong` here).
//!
//! # Measurement
//! As the ND tools: a warm-up of 1000 messages of 40 octets (their header size, `--warmup`),
//! then sizes 1 octet to 4 MiB in powers of two, each for `min(500000, 500 × 4 MiB / size)`
//! iterations (100000 for the ping-pong personas; `--iters` changes the 500000/100000 cap,
//! `--size`/`--min-size`/`--max-size` the sizes). The ND tools' one-second sleep after the
//! warm-up is left out.
//!
//! # Output
//! Their table: `Using N processors. Sender Frequency is F`, then `Size Iter Latency CPU
//! Bytes/Sec` rows in their `%9u %9u %9.2f %7.2f %11.0f` layout (without MSVC's stray `l`).
//! *Latency* is microseconds per operation for the streams (wall time / iterations), half
//! the round trip for `pingpong` and `wpingpong` (as `ndpingpong`), and the whole read for
//! `rpingpong`; *Bytes/Sec* counts both directions for the two ping-pongs (as
//! `ndpingpong`); *CPU* is this process's CPU time (all threads, the soft RNIC's included) in
//! percent of all processors during the size's run; the frequency is that of the clock used
//! (1 GHz: nanoseconds). `--json` prints one JSON document instead (a server says where it
//! listens on stderr), `--json-lines` JSON Lines (`listening`, a `row` per size, the `report`),
//! `--quiet` drops the progress bar and the server's banner, `-v` adds the connection and, for
//! the ping-pongs, latency percentiles, and `-l FILE` writes the report to FILE as well.
//!
//! # Data check (rping-style)
//! Every outbox holds a known pattern ([`crate::proto::pattern`]); the receiver compares:
//! the server checks every Send of `ping`, both sides every message of `pingpong`, the
//! client every size's reads (its inbox is cleared before each size), the server every
//! size's writes (likewise cleared). A mismatch ends the run with `STATUS_DATA_ERROR` and a
//! non-zero exit status. The connection and buffer exchange are the control protocol of
//! [`crate::proto`] (test ids 17–22, so an `nd ping` client and an `nd send-bw` server refuse
//! each other).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::report::{self, Event, JsonMode};

use crate::error::{Error, Result};
use crate::perf::{self, ClientRun, Opts, Row, Stop, Test};
use crate::{outln, parse_endpoint, parse_ip, progress};

/// The ND tools' header size: the warm-up message size.
pub const HDR_LEN: usize = 40;
/// The ND tools' largest transfer (4 MiB).
pub const MAX_XFER: usize = 4 << 20;
/// The ND tools' volume cap per size (500 × 4 MiB).
pub const MAX_VOLUME: u64 = 500 * MAX_XFER as u64;

/// Flags of the NetworkDirect personas (the ND tools' letters; extras are long options).
#[derive(Args, Debug, Clone)]
pub struct NdArgs {
    /// Start as server, listening on ADDR[:PORT] (IPv4, `[v6]:port`, or v6 without port;
    /// `0.0.0.0`/`[::]` or no address: every local address).
    /// Without an address: 127.0.0.1 and ::1.
    #[arg(
        short = 's',
        short_alias = 'S',
        value_name = "ADDR[:PORT]",
        num_args = 0..=1,
        default_missing_value = ""
    )]
    server: Option<String>,
    /// Start as client, connecting to the server at ADDR[:PORT].
    #[arg(
        short = 'c',
        short_alias = 'C',
        value_name = "ADDR[:PORT]",
        num_args = 0..=1,
        default_missing_value = ""
    )]
    client: Option<String>,
    /// ADDR[:PORT] as the ND tools take it, last (when -s or -c has no address).
    #[arg(value_name = "ADDR[:PORT]")]
    address: Option<String>,
    /// Blocking I/O (accepted for compatibility; nd always polls the CQ, yielding the CPU).
    #[arg(short = 'b', short_alias = 'B', conflicts_with = "polling")]
    blocking: bool,
    /// Polling I/O (the default).
    #[arg(short = 'p', short_alias = 'P')]
    polling: bool,
    /// Scatter/gather entries per Send or RDMA write (reads: 1, the adapter's MaxReadRequestSge).
    #[arg(
        short = 'n',
        short_alias = 'N',
        value_name = "nSge",
        default_value_t = 1
    )]
    sge: usize,
    /// Pipeline limit: requests in flight for ping, rping and wping (default 128; reads also
    /// at most the read limit, 128). The ping-pong personas keep one in flight.
    #[arg(short = 'q', short_alias = 'Q', value_name = "pipeline")]
    pipeline: Option<usize>,
    /// Also write the report to this file.
    #[arg(short = 'l', long = "logFile", value_name = "logFile")]
    log_file: Option<PathBuf>,
    /// Verbose: the connection, and latency percentiles for the ping-pongs.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Print one JSON document on stdout instead of the table (a server says where it
    /// listens on stderr).
    #[arg(long, conflicts_with = "json_lines")]
    json: bool,
    /// Print JSON Lines on stdout: `{"event":"listening",…}` (server), `{"event":"row",…}`
    /// per size as it completes (client), then `{"event":"report",…}` (the --json document).
    #[arg(long = "json-lines")]
    json_lines: bool,
    /// No progress bar and no banner.
    #[arg(long)]
    quiet: bool,
    /// Only this message size (octets) instead of the sweep.
    #[arg(long, conflicts_with_all = ["min_size", "max_size"])]
    size: Option<u64>,
    /// Smallest size of the sweep (default 1).
    #[arg(long = "min-size")]
    min_size: Option<u64>,
    /// Largest size of the sweep (default 4194304).
    #[arg(long = "max-size")]
    max_size: Option<u64>,
    /// Iterations per size at most (default 500000; 100000 for the ping-pongs), and at most
    /// 500 × 4 MiB / size.
    #[arg(long)]
    iters: Option<u64>,
    /// Warm-up messages of 40 octets before the sweep (default 1000).
    #[arg(long, default_value_t = 1000)]
    warmup: u64,
    /// Max size of a message sent inline (default 0 for the streams, 220 for the ping-pongs;
    /// adapter max 1024).
    #[arg(short = 'I', long = "inline_size")]
    inline: Option<u32>,
    /// Local address to connect from (client).
    #[arg(long = "bind")]
    bind: Option<String>,
    /// Longest wait for anything (connection, completion), in seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
}

/// The persona's default port (`ndping` 54324 … `ndrpingpong` 54327; ours 54328, 54329).
pub fn default_port(test: Test) -> u16 {
    match test {
        Test::SendBw => 54324,
        Test::SendLat => 54325,
        Test::ReadBw => 54326,
        Test::ReadLat => 54327,
        Test::WriteBw => 54328,
        Test::WriteLat => 54329,
    }
}

/// What the persona does, one line (for the report's first line).
pub fn describe(test: Test) -> &'static str {
    match test {
        Test::SendBw => "Send stream (ndping)",
        Test::SendLat => "Send ping-pong (ndpingpong)",
        Test::ReadBw => "RDMA read stream (ndrping -r)",
        Test::ReadLat => "RDMA read, one at a time",
        Test::WriteBw => "RDMA write stream (ndrping -w)",
        Test::WriteLat => "RDMA write ping-pong (ndrpingpong)",
    }
}

fn is_pingpong(test: Test) -> bool {
    matches!(test, Test::SendLat | Test::WriteLat)
}

/// Sizes: one, or powers of two from `min` to `max`.
fn sizes(a: &NdArgs) -> Result<Vec<usize>> {
    let to_usize = |v: u64| usize::try_from(v).map_err(|_| Error::msg("message size too large"));
    if let Some(s) = a.size {
        if s == 0 {
            return Err(Error::msg("--size 0: the message size must be at least 1"));
        }
        return Ok(vec![to_usize(s)?]);
    }
    let min = a.min_size.unwrap_or(1);
    let max = a.max_size.unwrap_or(MAX_XFER as u64);
    if min == 0 || min > max {
        return Err(Error::msg(format!(
            "--min-size {min} --max-size {max}: sizes must satisfy 1 <= min <= max"
        )));
    }
    let mut v = Vec::new();
    let mut s = min;
    while s <= max {
        v.push(to_usize(s)?);
        match s.checked_mul(2) {
            Some(n) => s = n,
            None => break,
        }
    }
    Ok(v)
}

fn opts_of(test: Test, a: &NdArgs) -> Result<Opts> {
    if !(a.timeout > 0.0 && a.timeout.is_finite()) {
        return Err(Error::msg("--timeout must be a positive number of seconds"));
    }
    if a.sge == 0 {
        return Err(Error::msg(
            "-n 0: invalid or missing SGE count (at least 1 scatter/gather entry)",
        ));
    }
    if a.pipeline == Some(0) {
        return Err(Error::msg("-q 0: the pipeline limit must be at least 1"));
    }
    if a.iters == Some(0) {
        return Err(Error::msg("--iters 0: at least one iteration per size"));
    }
    let stream = test.is_bw();
    let pipeline = a.pipeline.unwrap_or(128);
    let mut o = Opts::new(test);
    o.nd = true;
    o.check_every = true;
    o.sizes = sizes(a)?;
    o.stop = Stop::Sweep {
        max_iters: a
            .iters
            .unwrap_or(if is_pingpong(test) { 100_000 } else { 500_000 }),
        max_volume: MAX_VOLUME,
    };
    o.tx_depth = if stream { pipeline } else { 1 };
    o.outs = pipeline.clamp(1, 128) as u32;
    o.inline = a.inline.unwrap_or(if stream || test == Test::ReadLat {
        0
    } else {
        220
    });
    o.inline_explicit = a.inline.is_some();
    o.timeout = Duration::from_secs_f64(a.timeout);
    // Reads take the adapter's MaxReadRequestSge (1), as ndrping's min(nSge, MaxReadSge).
    o.sge = if matches!(test, Test::ReadBw | Test::ReadLat) {
        1
    } else {
        a.sge
    };
    o.warmup_phase = (a.warmup > 0).then_some((HDR_LEN, a.warmup));
    Ok(o)
}

/// Runs `nd <persona>`.
pub fn run(test: Test, a: &NdArgs) -> Result<()> {
    let _ = (a.blocking, a.polling);
    let name = test.nd_name();
    let (server, addr) = match (&a.server, &a.client) {
        (Some(s), None) => (true, s),
        (None, Some(c)) => (false, c),
        _ => {
            return Err(Error::msg(format!(
                "exactly one of client (-c) or server (-s) must be specified (nd {name} -s [ADDR[:PORT]] | nd {name} -c ADDR[:PORT])"
            )));
        }
    };
    let addr = match (addr.is_empty(), &a.address) {
        (false, Some(last)) => {
            return Err(Error::msg(format!(
                "two addresses given ('{addr}' and '{last}'): give one, after -s/-c or last"
            )));
        }
        (false, None) => Some(addr.as_str()),
        (true, last) => last.as_deref(),
    };
    let mut opts = opts_of(test, a)?;
    let port = default_port(test);
    if server {
        match addr {
            Some(s) => {
                let ep = parse_endpoint(s, port)?;
                opts.bind = Some(ep.ip());
                opts.port = ep.port();
            }
            None => opts.port = port,
        }
        serve(&opts, a)
    } else {
        let Some(s) = addr else {
            return Err(Error::msg(format!(
                "-c needs the server's address: nd {name} -c ADDR[:PORT]"
            )));
        };
        let ep = parse_endpoint(s, port)?;
        opts.port = ep.port();
        opts.bind = a.bind.as_deref().map(parse_ip).transpose()?;
        client(&opts, ep, a)
    }
}

impl NdArgs {
    fn mode(&self) -> JsonMode {
        if self.json_lines {
            JsonMode::Lines
        } else if self.json {
            JsonMode::Document
        } else {
            JsonMode::Text
        }
    }
}

fn serve(opts: &Opts, a: &NdArgs) -> Result<()> {
    let name = opts.name();
    let tool = format!("nd {name}");
    let mode = a.mode();
    let listening = std::cell::RefCell::new(Vec::new());
    let summary = perf::serve(opts, None, &|addrs: &[SocketAddr]| {
        let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        match mode {
            JsonMode::Lines => report::emit_line(&Event::listening(&tool, addrs)),
            JsonMode::Document if !a.quiet => {
                eprintln!("{tool}: listening on {}", list.join(", "));
            }
            JsonMode::Text if !a.quiet => outln!(
                "{tool}: {} server listening on {}",
                describe(opts.test),
                list.join(", ")
            ),
            _ => {}
        }
        *listening.borrow_mut() = list;
    })?;
    let peer = summary.peer.map_or("?".into(), |p| p.to_string());
    let text = format!(
        "{tool}: served {} measurement(s), the warm-up included, to {peer}; data check: {}\n",
        summary.phases,
        if summary.verified { "OK" } else { "FAILED" }
    );
    if mode == JsonMode::Text {
        crate::out!("{text}");
        return log(a, &text);
    }
    let r = NdServerReport {
        role: "server",
        tool: tool.clone(),
        test: name,
        listening: listening.take(),
        peer: summary.peer.map(|p| p.to_string()),
        measurements: summary.phases,
        data_verified: summary.verified,
    };
    report::emit(mode, &r);
    log(a, &text)
}

/// `nd <persona> -s --json`.
#[derive(Debug, Serialize)]
pub struct NdServerReport {
    /// `server`.
    pub role: &'static str,
    /// `nd ping`, …
    pub tool: String,
    /// `ping`, …
    pub test: &'static str,
    /// The addresses listened on.
    pub listening: Vec<String>,
    /// The client's address.
    pub peer: Option<String>,
    /// Measurements served, the warm-up included.
    pub measurements: usize,
    /// Whether every server-side data check passed.
    pub data_verified: bool,
}

/// `nd <persona> -c --json`.
#[derive(Debug, Serialize)]
pub struct NdClientReport {
    /// `nd ping`, …
    pub tool: String,
    /// `ping`, …
    pub test: &'static str,
    /// What it measures.
    pub description: &'static str,
    /// `client`.
    pub role: &'static str,
    /// Our address.
    pub local_address: String,
    /// The server's.
    pub remote_address: String,
    /// Processors of this host.
    pub processors: usize,
    /// Requests in flight.
    pub pipeline: usize,
    /// SGEs per request.
    pub sge: usize,
    /// What the figures mean.
    pub units: NdUnits,
    /// Whether the data checks passed.
    pub data_verified: bool,
    /// Whether Ctrl-C ended the run early.
    pub interrupted: bool,
    /// One row per size.
    pub results: Vec<NdResult>,
}

/// The units of [`NdClientReport`]'s rows.
#[derive(Debug, Serialize)]
pub struct NdUnits {
    /// Of `latency_us`.
    pub latency_us: &'static str,
    /// Of `bytes_per_sec`.
    pub bytes_per_sec: &'static str,
    /// Of `cpu_percent`.
    pub cpu_percent: &'static str,
}

/// One size of an ND persona's run.
#[derive(Debug, Clone, Serialize)]
pub struct NdResult {
    /// Message size.
    pub size: usize,
    /// Iterations.
    pub iterations: u64,
    /// Microseconds per operation (half the round trip for the ping-pongs).
    pub latency_us: f64,
    /// CPU use in percent of all processors.
    pub cpu_percent: f64,
    /// Octets per second (both directions for the ping-pongs).
    pub bytes_per_sec: f64,
    /// The latency samples' distribution (latency personas).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<NdSamples>,
}

/// The latency samples of a size, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct NdSamples {
    /// One-way (half round trip) or the whole read.
    pub kind: &'static str,
    /// Minimum.
    pub t_min_us: f64,
    /// Median.
    pub t_median_us: f64,
    /// Mean.
    pub t_avg_us: f64,
    /// Maximum.
    pub t_max_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p99_9_us: f64,
}

impl NdResult {
    /// A measurement in the ND tools' terms, with its wall seconds and CPU percent.
    pub fn of(test: Test, row: &Row, secs: f64, cpu: f64) -> NdResult {
        match row {
            Row::Bw(r) => {
                let n = r.iters.max(1) as f64;
                NdResult {
                    size: r.size,
                    iterations: r.iters,
                    latency_us: r.secs * 1e6 / n,
                    cpu_percent: cpu,
                    bytes_per_sec: r.size as f64 * n / r.secs.max(1e-9),
                    samples: None,
                }
            }
            Row::Lat(r) => {
                let secs = secs.max(1e-9);
                let iters = r.hist.len();
                let n = iters.max(1) as f64;
                let ways = if is_pingpong(test) { 2.0 } else { 1.0 };
                let l = report::lat_stats(r);
                NdResult {
                    size: r.size,
                    iterations: iters,
                    latency_us: secs * 1e6 / n / ways,
                    cpu_percent: cpu,
                    bytes_per_sec: ways * r.size as f64 * n / secs,
                    samples: Some(NdSamples {
                        kind: if is_pingpong(test) {
                            "one-way (half round trip)"
                        } else {
                            "whole read"
                        },
                        t_min_us: l.min,
                        t_median_us: l.typical,
                        t_avg_us: l.avg,
                        t_max_us: l.max,
                        p99_us: l.p99,
                        p99_9_us: l.p999,
                    }),
                }
            }
        }
    }

    /// The row as the ND tools' table prints it, `" %9u %9u %9.2f %7.2f %11.0f"`.
    pub fn text(&self) -> String {
        format!(
            " {:>9} {:>9} {:>9.2} {:>7.2} {:>11.0}",
            self.size, self.iterations, self.latency_us, self.cpu_percent, self.bytes_per_sec
        )
    }
}

/// The ND rows of a client run.
pub fn nd_rows(test: Test, run: &ClientRun) -> Vec<NdResult> {
    run.rows
        .iter()
        .enumerate()
        .map(|(k, row)| {
            let secs = run.secs.get(k).copied().unwrap_or(0.0);
            let cpu = run.cpu.get(k).copied().unwrap_or(0.0);
            NdResult::of(test, row, secs, cpu)
        })
        .collect()
}

/// The table header (`Using N processors. …` and the column line).
pub fn table_header() -> String {
    format!(
        "Using {} processors. Sender Frequency is {}\n\n {:>9} {:>9} {:>9} {:>7} {:>11}\n",
        crate::cpu::cpus(),
        1_000_000_000u64,
        "Size",
        "Iter",
        "Latency",
        "CPU",
        "Bytes/Sec"
    )
}

fn client(opts: &Opts, server: SocketAddr, a: &NdArgs) -> Result<()> {
    let name = opts.name();
    let mode = a.mode();
    let pb = progress(opts.sizes.len() as u64, a.quiet || mode != JsonMode::Text);
    pb.set_message(format!("nd {name}"));
    perf::stop_on_interrupt();
    // Text: the header now and each row as its size completes (a sweep takes minutes).
    let mut streamed = String::new();
    if mode == JsonMode::Text {
        streamed += &table_header();
        pb.suspend(|| crate::out!("{}", table_header()));
    }
    let test = opts.test;
    let run = perf::client_with(opts, server, &pb, &mut |_, row, secs, cpu| {
        if mode == JsonMode::Lines {
            report::emit_line(&Event::<(), NdResult>::Row(NdResult::of(
                test, row, secs, cpu,
            )));
        }
        if mode == JsonMode::Text {
            let line = NdResult::of(test, row, secs, cpu).text();
            pb.suspend(|| crate::outln!("{line}"));
            streamed += &line;
            streamed += "\n";
        }
    });
    pb.finish_and_clear();
    let run = run?;
    let rows = nd_rows(opts.test, &run);
    if mode != JsonMode::Text {
        let pingpong = is_pingpong(opts.test);
        let v = NdClientReport {
            tool: format!("nd {name}"),
            test: name,
            description: describe(opts.test),
            role: "client",
            local_address: run.local.to_string(),
            remote_address: run.remote.to_string(),
            processors: crate::cpu::cpus(),
            pipeline: if opts.test.is_bw() { opts.tx_depth } else { 1 },
            sge: opts.sge,
            units: NdUnits {
                latency_us: if pingpong {
                    "microseconds, half the round trip"
                } else {
                    "microseconds per operation"
                },
                bytes_per_sec: if pingpong {
                    "octets per second, both directions"
                } else {
                    "octets per second"
                },
                cpu_percent: "process CPU time, percent of all processors",
            },
            data_verified: run.verified,
            interrupted: run.interrupted,
            results: rows,
        };
        report::emit(mode, &v);
        let s = serde_json::to_string_pretty(&v).map_err(|e| Error::msg(e.to_string()))?;
        return log(a, &(s + "\n"));
    }
    let mut text = String::new();
    if a.verbose {
        let _ = writeln!(
            text,
            "nd {name}: {}, {} -> {}, pipeline {}, {} SGE(s), inline up to {} octets",
            describe(opts.test),
            run.local,
            run.remote,
            if opts.test.is_bw() { opts.tx_depth } else { 1 },
            opts.sge,
            opts.inline
        );
        let _ = writeln!(
            text,
            " local buffer {:#018x} token {:#010x}; remote buffer {:#018x} token {:#010x}",
            run.buffers[0].0, run.buffers[0].1, run.buffers[1].0, run.buffers[1].1
        );
    }
    if a.verbose && !opts.test.is_bw() {
        let _ = writeln!(
            text,
            "\n {:>9} {:>11} {:>11} {:>11} {:>11}   ({})",
            "Size",
            "min[usec]",
            "median",
            "99%",
            "99.9%",
            if is_pingpong(opts.test) {
                "one-way = half round trip"
            } else {
                "whole read"
            }
        );
        for r in &rows {
            if let Some(l) = &r.samples {
                let _ = writeln!(
                    text,
                    " {:>9} {:>11.2} {:>11.2} {:>11.2} {:>11.2}",
                    r.size, l.t_min_us, l.t_median_us, l.p99_us, l.p99_9_us
                );
            }
        }
    }
    let _ = writeln!(
        text,
        "\n data check: {}",
        if run.verified {
            "OK (the receiver compared the data with the pattern sent)"
        } else {
            "FAILED"
        }
    );
    if run.interrupted {
        let _ = writeln!(
            text,
            " interrupted (Ctrl-C): {} of {} size(s) measured, disconnected cleanly",
            run.rows.len(),
            opts.sizes.len()
        );
    }
    crate::out!("{text}");
    log(a, &(streamed + &text))?;
    if run.interrupted {
        return Err(Error::status(
            "interrupted; the rows above were measured".to_string(),
            netdirect_types::Status::CANCELLED,
        ));
    }
    Ok(())
}

fn log(a: &NdArgs, text: &str) -> Result<()> {
    if let Some(f) = &a.log_file {
        std::fs::write(f, text)
            .map_err(|e| Error::msg(format!("cannot write the log file {}: {e}", f.display())))?;
    }
    Ok(())
}
