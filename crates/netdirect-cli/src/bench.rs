//! `nd bench`: the one-command loopback benchmark.
//!
//! In one process, for 127.0.0.1 and then ::1: a server thread and a client open an adapter
//! each and connect (the personas' code, [`crate::perf`]); RDMA write, RDMA read and Send
//! bandwidth from 4 KiB to 4 MiB; 8-byte message rate (write, send); 8-byte write and send
//! latency (HDR histogram: min, median, p99, p99.9). Every figure has a peer measured in the
//! same run: a plain TCP socket pair on the same loopback streaming the same sizes (ratio =
//! RDMA / TCP for bandwidth and rate, TCP / RDMA for latency, so > 1 is better for RDMA
//! everywhere). Last, the NetDMA CPU copy engine next to memcpy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;

use crate::{out, outln};
use indicatif::ProgressBar;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::perf::{self, Opts, Row, Stop, Test};
use crate::report::{LINE, bw_unit, lat_stats};
use crate::tcp::Pinning;

/// `nd bench` flags.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// A few sizes and short cells: a smoke run of every part (for tests and CI).
    #[arg(long)]
    quick: bool,
    /// Print JSON (one row per test) on stdout instead of tables.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Milliseconds per bandwidth cell (default 60; 10 with --quick).
    #[arg(long = "cell-ms")]
    cell_ms: Option<u64>,
    /// Latency samples per test (default 10000; 200 with --quick).
    #[arg(long = "lat-iters")]
    lat_iters: Option<u64>,
    /// Only IPv4.
    #[arg(long = "no-ipv6")]
    no_ipv6: bool,
    /// Rounds of every bandwidth and rate cell (default 5; 1 with --quick). Each RDMA cell runs
    /// right after a TCP peer cell of its own; tables show the median and the min-max spread.
    #[arg(long)]
    reps: Option<usize>,
    /// Let the scheduler place both sides. By default, with two CPUs or more, the client side
    /// (its thread and its adapter's progress thread) runs on the first CPU of this process's
    /// mask and the server side on the second, for RDMA and TCP peer alike, as perftest users
    /// pin with `taskset`: unpinned, a busy-polling side and its own progress thread or the
    /// other side's share a CPU at random, and a round measures the scheduler.
    #[arg(long = "no-pin")]
    no_pin: bool,
}

/// The median of each round's RDMA / TCP ratio: a round measures each RDMA cell's TCP peer just
/// before it, so a drift of the machine's speed over the run cancels within the round, where
/// a ratio of the two medians would mix rounds.
fn paired_ratio(rdma: impl Iterator<Item = f64>, tcp: &[f64]) -> f64 {
    crate::report::median(rdma.zip(tcp).map(|(r, &t)| r / t).collect())
}

/// Median and range of a cell's rounds.
#[derive(Debug, Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(v: &[f64]) -> Spread {
        Spread {
            median: crate::report::median(v.to_vec()),
            min: v.iter().copied().reduce(f64::min).unwrap_or(0.0),
            max: v.iter().copied().reduce(f64::max).unwrap_or(0.0),
        }
    }

    /// `median (min-max)` with `prec` decimals.
    fn show(self, prec: usize) -> String {
        format!(
            "{:.p$} ({:.p$}-{:.p$})",
            self.median,
            self.min,
            self.max,
            p = prec
        )
    }
}

const SIZES: [usize; 11] = [
    4 << 10,
    8 << 10,
    16 << 10,
    32 << 10,
    64 << 10,
    128 << 10,
    256 << 10,
    512 << 10,
    1 << 20,
    2 << 20,
    4 << 20,
];
const QUICK_SIZES: [usize; 3] = [4 << 10, 64 << 10, 1 << 20];
const TIMEOUT: Duration = Duration::from_secs(30);

fn base_opts(test: Test, sizes: Vec<usize>, stop: Stop, ip: IpAddr) -> Opts {
    Opts {
        test,
        sizes,
        stop,
        qps: 1,
        port: 0,
        tx_depth: if test.is_bw() { 128 } else { 1 },
        rx_depth: 512,
        inline: 0,
        inline_explicit: false,
        outs: 16,
        timeout: TIMEOUT,
        bind: Some(ip),
        warmup: 0,
        window_bytes: Some(8 << 20),
        nd: false,
        check_every: false,
        sge: 1,
        warmup_phase: None,
        events: false,
        forever: false,
        srq: false,
        unsorted: false,
        bidir: false,
        report_both: false,
    }
}

/// Runs server and client of `opts` in this process.
/// The server opens its adapter on a thread pinned to the server's CPU, the client on one
/// pinned to the client's, so each adapter's progress thread inherits its side's CPU.
fn pair(opts: &Opts, pb: &ProgressBar, pin: Pinning) -> Result<Vec<Row>> {
    let (tx, rx) = mpsc::channel();
    let sopts = opts.clone();
    let server = std::thread::Builder::new()
        .name("nd bench server".into())
        .spawn(move || {
            pin.enter_server();
            perf::serve(&sopts, Some(tx), &|_| {})
        })
        .map_err(|e| Error::msg(format!("cannot start the server thread: {e}")))?;
    let port = match rx.recv_timeout(TIMEOUT) {
        Ok(p) => p,
        Err(_) => {
            return Err(match server.join() {
                Ok(Err(e)) => e,
                _ => Error::msg("the bench server did not start"),
            });
        }
    };
    let ip = opts.bind.unwrap_or(Ipv4Addr::LOCALHOST.into());
    let client = pin.on_client(|| perf::client(opts, SocketAddr::new(ip, port), pb));
    let served = server
        .join()
        .map_err(|_| Error::msg("the bench server thread failed"))?;
    // The server's error explains a client's timeout better than the timeout does.
    match (client, served) {
        (Err(e), Err(s)) if s.status == Some(netdirect_types::Status::IO_TIMEOUT) => Err(e),
        (_, Err(e)) => Err(Error {
            message: format!("{} server: {}", opts.test.name(), e.message),
            status: e.status,
        }),
        (Err(e), Ok(_)) => Err(e),
        (Ok(run), Ok(_)) => Ok(run.rows),
    }
}

fn label(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{}M", size >> 20)
    } else if size >= 1 << 10 {
        format!("{}K", size >> 10)
    } else {
        size.to_string()
    }
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "ipv4" } else { "ipv6" }
}

/// Runs `nd bench`.
pub fn run(a: &BenchArgs) -> Result<()> {
    let started = Instant::now();
    let sizes: Vec<usize> = if a.quick {
        QUICK_SIZES.to_vec()
    } else {
        SIZES.to_vec()
    };
    let cell = Duration::from_millis(a.cell_ms.unwrap_or(if a.quick { 10 } else { 60 }));
    let lat_iters = a
        .lat_iters
        .unwrap_or(if a.quick { 200 } else { 10000 })
        .max(5);
    let mut ips: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into()];
    let mut notes = Vec::new();
    if !a.no_ipv6 {
        if std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok() {
            ips.push(Ipv6Addr::LOCALHOST.into());
        } else {
            notes.push("IPv6 loopback (::1) unavailable on this machine: IPv6 skipped".to_string());
        }
    }
    // Progress: per family and round, each size's TCP cell and its 3 RDMA cells; 2 rates, 2
    // latencies, TCP latency; copy.
    let reps = a.reps.unwrap_or(if a.quick { 1 } else { 5 }).max(1);
    let per_family = 4 * reps as u64 * sizes.len() as u64 + 3 * reps as u64 + 2 + 2 + 1;
    let total = per_family * ips.len() as u64 + sizes.len() as u64;
    let pb = crate::progress(total, a.quiet);
    let mut tests: Vec<BenchTest> = Vec::new();
    let mut text = String::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = Pinning::first_two(a.no_pin);
    text += &format!(
        "nd bench: soft iWARP RNIC, two adapters in one process over TCP loopback ({cpus} CPUs)\n"
    );
    text += &match (pin.client, pin.server) {
        (Some(c), Some(s)) => format!(
            " client side on CPU {c}, server side on CPU {s} (RDMA and TCP alike; --no-pin to let them float)\n"
        ),
        _ => " sides not pinned\n".to_string(),
    };
    text += &format!(
        " bandwidth cells: {} ms each after a warm-up; latency: {lat_iters} samples; peer: a plain TCP socket pair\n streaming the same sizes in the same process (ratio > 1: RDMA ahead of TCP). MiB = 2^20 B.\n",
        cell.as_millis()
    );
    for n in &notes {
        text += &format!(" note: {n}\n");
    }
    for &ip in &ips {
        let fam = family(ip);
        // Bandwidth: in every round, each RDMA cell (a connection per cell) runs right after
        // a TCP peer cell of its own, so a cell and its peer are measured within about a
        // hundred milliseconds of each other. This machine's speed drifts over tenths of a
        // second: a round that swept every size of TCP before every size of each RDMA test
        // paired cells up to ten seconds apart (single cells read 0.6-1.9x), and one TCP cell
        // shared by a size's three RDMA cells made all three low together when it ran fast.
        let bw_tests = [Test::WriteBw, Test::ReadBw, Test::SendBw];
        let mut tcp: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); sizes.len()]; 3];
        let mut rdma: Vec<Vec<Vec<perf::BwRow>>> = vec![vec![Vec::new(); sizes.len()]; 3];
        for round in 0..reps {
            for (k, &size) in sizes.iter().enumerate() {
                for (t, &test) in bw_tests.iter().enumerate() {
                    pb.set_message(format!(
                        "{fam} TCP peer {} for {} (round {})",
                        label(size),
                        test.name(),
                        round + 1
                    ));
                    let peer = crate::tcp::bandwidth(ip, size, cell, 4, pin)?.bw;
                    pb.set_message(format!(
                        "{fam} {} {} (round {})",
                        test.name(),
                        label(size),
                        round + 1
                    ));
                    let mut o = base_opts(test, vec![size], Stop::Duration(cell), ip);
                    o.warmup = 16;
                    if let Some(Row::Bw(r)) = pair(&o, &pb, pin)?.into_iter().next() {
                        rdma[t][k].push(r);
                        tcp[t][k].push(peer);
                    }
                }
                pb.inc(1);
            }
        }
        for (t, &test) in bw_tests.iter().enumerate() {
            text += &format!(
                "{LINE}\n {} over {ip}  (peer: TCP stream, same sizes; median (min-max) of {reps} round(s); vs TCP: median of the rounds' ratios)\n",
                test.title()
            );
            text += &format!(
                " {:>8}  {:>11}  {:>27}  {:>13}  {:>27}  {:>7}\n",
                "#bytes",
                "#iterations",
                "BW average[MiB/sec]",
                "MsgRate[Mpps]",
                "TCP[MiB/sec]",
                "vs TCP"
            );
            for (k, &size) in sizes.iter().enumerate() {
                let rows = &rdma[t][k];
                if rows.is_empty() {
                    continue;
                }
                let avg = Spread::of(
                    &rows
                        .iter()
                        .map(|r| bw_unit(r.avg, false))
                        .collect::<Vec<_>>(),
                );
                let rate = Spread::of(&rows.iter().map(|r| r.msg_rate / 1e6).collect::<Vec<_>>());
                let peer = Spread::of(
                    &tcp[t][k]
                        .iter()
                        .map(|&b| bw_unit(b, false))
                        .collect::<Vec<_>>(),
                );
                let iters: u64 = rows.iter().map(|r| r.iters).sum::<u64>() / rows.len() as u64;
                let ratio = paired_ratio(rows.iter().map(|r| r.avg), &tcp[t][k]);
                text += &format!(
                    " {:>8}  {:>11}  {:>27}  {:>13.6}  {:>27}  {:>6.2}x\n",
                    size,
                    iters,
                    avg.show(2),
                    rate.median,
                    peer.show(2),
                    ratio
                );
                let peak = rows
                    .iter()
                    .map(|r| bw_unit(r.peak, false))
                    .fold(0.0, f64::max);
                tests.push(BenchTest::Bw(BwCell {
                    test: test.name().to_string(),
                    family: fam,
                    address: ip.to_string(),
                    size,
                    iterations: iters,
                    rounds: rows.len(),
                    seconds: rows.iter().map(|r| r.secs).sum::<f64>(),
                    bw_peak_mib_s: peak,
                    bw_avg_mib_s: avg.median,
                    bw_avg_min_mib_s: avg.min,
                    bw_avg_max_mib_s: avg.max,
                    bw_avg_gbit_s: avg.median * 1048576.0 * 8.0 / 1e9,
                    msg_rate_mpps: rate.median,
                    peer: "tcp",
                    peer_bw_mib_s: peer.median,
                    peer_bw_min_mib_s: peer.min,
                    peer_bw_max_mib_s: peer.max,
                    ratio,
                    data_verified: true,
                }));
            }
        }
        // Message rate: 8-byte writes and sends, a window of 128.
        let rate_cell = cell.max(Duration::from_millis(50));
        // As for bandwidth, each RDMA cell is paired with a TCP cell run right before it.
        let mut tcp8: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut rates: [Vec<perf::BwRow>; 2] = [Vec::new(), Vec::new()];
        for round in 0..reps {
            pb.set_message(format!("{fam} message rate (round {})", round + 1));
            for (t, test) in [Test::WriteBw, Test::SendBw].into_iter().enumerate() {
                let peer = crate::tcp::bandwidth(ip, 8, rate_cell, 64, pin)?.msg_rate / 1e6;
                let mut o = base_opts(test, vec![8], Stop::Duration(rate_cell * 2), ip);
                o.warmup = 128;
                if let Some(Row::Bw(r)) = pair(&o, &pb, pin)?.into_iter().next() {
                    rates[t].push(r);
                    tcp8[t].push(peer);
                }
            }
        }
        pb.inc(2);
        text += &format!(
            "{LINE}\n Message rate over {ip}, 8-byte messages, 128 in flight  (peer: TCP 8-byte writes; median (min-max) of {reps}; vs TCP: median of the rounds' ratios)\n"
        );
        text += &format!(
            " {:<12}  {:>6}  {:>11}  {:>30}  {:>30}  {:>7}\n",
            "test", "#bytes", "#iterations", "MsgRate[Mpps]", "TCP MsgRate[Mpps]", "vs TCP"
        );
        for (t, test) in [Test::WriteBw, Test::SendBw].into_iter().enumerate() {
            let rows = &rates[t];
            if rows.is_empty() {
                continue;
            }
            let rate = Spread::of(&rows.iter().map(|r| r.msg_rate / 1e6).collect::<Vec<_>>());
            let iters: u64 = rows.iter().map(|r| r.iters).sum::<u64>() / rows.len() as u64;
            let peer8 = Spread::of(&tcp8[t]);
            let ratio = paired_ratio(rows.iter().map(|r| r.msg_rate / 1e6), &tcp8[t]);
            text += &format!(
                " {:<12}  {:>6}  {:>11}  {:>30}  {:>30}  {:>6.2}x\n",
                test.name(),
                8,
                iters,
                rate.show(6),
                peer8.show(6),
                ratio
            );
            tests.push(BenchTest::Rate(RateCell {
                test: format!("msg_rate_{}", &test.name()[..test.name().len() - 3]),
                family: fam,
                address: ip.to_string(),
                size: 8,
                iterations: iters,
                rounds: rows.len(),
                msg_rate_mpps: rate.median,
                msg_rate_min_mpps: rate.min,
                msg_rate_max_mpps: rate.max,
                peer: "tcp",
                peer_msg_rate_mpps: peer8.median,
                ratio,
            }));
        }
        // Latency: 8 bytes, ping-pong.
        pb.set_message(format!("{fam} TCP latency"));
        let tcp_lat = crate::tcp::latency(ip, 8, lat_iters, lat_iters / 10, pin)?;
        pb.inc(1);
        let tl = lat_stats(&perf::LatRow {
            size: 8,
            hist: tcp_lat,
            samples: Vec::new(),
        });
        text += &format!(
            "{LINE}\n Latency over {ip}, 8 bytes, one-way = half the round trip  (peer: TCP ping-pong)\n"
        );
        text += &format!(
            " {:<12}  {:>6}  {:>11}  {:>11}  {:>15}  {:>9}  {:>11}  {:>19}  {:>7}\n",
            "test",
            "#bytes",
            "#iterations",
            "t_min[usec]",
            "t_typical[usec]",
            "99%[usec]",
            "99.9%[usec]",
            "TCP t_typical[usec]",
            "vs TCP"
        );
        for test in [Test::WriteLat, Test::SendLat] {
            pb.set_message(format!("{fam} {}", test.name()));
            let mut o = base_opts(test, vec![8], Stop::Iters(lat_iters), ip);
            o.warmup = lat_iters / 10;
            o.inline = 220;
            let rows = pair(&o, &pb, pin)?;
            if let Some(Row::Lat(r)) = rows.first() {
                let l = lat_stats(r);
                let ratio = tl.typical / l.typical;
                text += &format!(
                    " {:<12}  {:>6}  {:>11}  {:>11.2}  {:>15.2}  {:>9.2}  {:>11.2}  {:>19.2}  {:>6.2}x\n",
                    test.name(),
                    8,
                    l.n,
                    l.min,
                    l.typical,
                    l.p99,
                    l.p999,
                    tl.typical,
                    ratio
                );
                tests.push(BenchTest::Lat(LatCell {
                    test: test.name().to_string(),
                    family: fam,
                    address: ip.to_string(),
                    size: 8,
                    iterations: l.n,
                    t_min_us: l.min,
                    t_median_us: l.typical,
                    t_avg_us: Some(l.avg),
                    t_max_us: Some(l.max),
                    p99_us: l.p99,
                    p99_9_us: l.p999,
                    peer: Some("tcp"),
                    peer_t_median_us: Some(tl.typical),
                    peer_p99_us: Some(tl.p99),
                    ratio: Some(ratio),
                    data_verified: Some(true),
                }));
            }
        }
        tests.push(BenchTest::Lat(LatCell {
            test: "tcp_lat".to_string(),
            family: fam,
            address: ip.to_string(),
            size: 8,
            iterations: tl.n,
            t_min_us: tl.min,
            t_median_us: tl.typical,
            t_avg_us: None,
            t_max_us: None,
            p99_us: tl.p99,
            p99_9_us: tl.p999,
            peer: None,
            peer_t_median_us: None,
            peer_p99_us: None,
            ratio: None,
            data_verified: None,
        }));
    }
    // NetDMA copy engine vs memcpy.
    pb.set_message("NetDMA copy engine");
    let copy_trial = Duration::from_millis(if a.quick { 5 } else { 10 });
    let copies = crate::copy::run(&sizes, copy_trial, || pb.inc(1))?;
    text += &format!(
        "{LINE}\n NetDMA CPU copy engine (1 channel) vs memcpy, GB/s (10^9 B), best of {} x {} ms; vs memcpy: median of the rounds' ratios\n",
        crate::copy::ROUNDS,
        copy_trial.as_millis()
    );
    text += &format!(
        " {:>10}  {:>13}  {:>13}  {:>10}\n",
        "#bytes", "NetDMA[GB/s]", "memcpy[GB/s]", "vs memcpy"
    );
    for c in &copies {
        let ratio = c.ratio;
        text += &format!(
            " {:>10}  {:>13.2}  {:>13.2}  {:>9.2}x\n",
            c.size, c.netdma, c.memcpy, ratio
        );
        tests.push(BenchTest::Copy(CopyCell {
            test: "netdma_copy",
            size: c.size,
            netdma_gb_s: c.netdma,
            peer: "memcpy",
            peer_gb_s: c.memcpy,
            ratio,
        }));
    }
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    text += &format!("{LINE}\n nd bench finished in {secs:.1} s\n");
    if a.json {
        let v = BenchReport {
            tool: "nd bench",
            version: env!("CARGO_PKG_VERSION"),
            provider: crate::conn::provider_args().provider.as_str(),
            cpus,
            quick: a.quick,
            cell_ms: cell.as_millis() as u64,
            latency_samples: lat_iters,
            units: BenchUnits {
                bw: "MiB/s (2^20 B/s)",
                latency: "microseconds",
                copy: "GB/s (10^9 B/s)",
                ratio: "RDMA vs peer, > 1 means RDMA ahead",
            },
            notes,
            seconds: secs,
            tests,
        };
        let s = serde_json::to_string_pretty(&v).map_err(|e| Error::msg(e.to_string()))?;
        outln!("{s}");
    } else {
        out!("{text}");
    }
    Ok(())
}

/// `nd bench --json`.
#[derive(Debug, Serialize)]
struct BenchReport {
    tool: &'static str,
    version: &'static str,
    provider: &'static str,
    cpus: usize,
    quick: bool,
    cell_ms: u64,
    latency_samples: u64,
    units: BenchUnits,
    notes: Vec<String>,
    seconds: f64,
    tests: Vec<BenchTest>,
}

/// The units of [`BenchReport`]'s figures.
#[derive(Debug, Serialize)]
struct BenchUnits {
    bw: &'static str,
    latency: &'static str,
    copy: &'static str,
    ratio: &'static str,
}

/// One cell of the bench.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum BenchTest {
    Bw(BwCell),
    Rate(RateCell),
    Lat(LatCell),
    Copy(CopyCell),
}

/// A bandwidth cell next to TCP.
#[derive(Debug, Serialize)]
struct BwCell {
    test: String,
    family: &'static str,
    address: String,
    size: usize,
    iterations: u64,
    rounds: usize,
    seconds: f64,
    bw_peak_mib_s: f64,
    bw_avg_mib_s: f64,
    bw_avg_min_mib_s: f64,
    bw_avg_max_mib_s: f64,
    bw_avg_gbit_s: f64,
    msg_rate_mpps: f64,
    peer: &'static str,
    peer_bw_mib_s: f64,
    peer_bw_min_mib_s: f64,
    peer_bw_max_mib_s: f64,
    ratio: f64,
    data_verified: bool,
}

/// A message-rate cell next to TCP.
#[derive(Debug, Serialize)]
struct RateCell {
    test: String,
    family: &'static str,
    address: String,
    size: usize,
    iterations: u64,
    rounds: usize,
    msg_rate_mpps: f64,
    msg_rate_min_mpps: f64,
    msg_rate_max_mpps: f64,
    peer: &'static str,
    peer_msg_rate_mpps: f64,
    ratio: f64,
}

/// A latency cell (RDMA next to TCP, or TCP's own row without a peer).
#[derive(Debug, Serialize)]
struct LatCell {
    test: String,
    family: &'static str,
    address: String,
    size: usize,
    iterations: u64,
    t_min_us: f64,
    t_median_us: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    t_avg_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    t_max_us: Option<f64>,
    p99_us: f64,
    p99_9_us: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_t_median_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_verified: Option<bool>,
}

/// The copy engine next to memcpy.
#[derive(Debug, Serialize)]
struct CopyCell {
    test: &'static str,
    size: usize,
    netdma_gb_s: f64,
    peer: &'static str,
    peer_gb_s: f64,
    ratio: f64,
}
