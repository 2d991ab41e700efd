//! `nd`, the command line; the work is in the `netdirect_cli` library.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use netdirect_cli::error::{Error, Result};
use netdirect_cli::perf::{self, Opts, Stop, Test};
use netdirect_cli::{
    bench, conn, dma, info, nd, out, outln, parse_ip, perftest_cm, progress, report, rping, scale,
};
use netdirect_types::Status;

#[derive(Parser)]
#[command(
    name = "nd",
    version,
    about = "Network Direct tools over netdirect's software iWARP RNIC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    mpa: conn::MpaArgs,
    #[command(flatten)]
    provider: conn::ProviderArgs,
    #[command(flatten)]
    obs: netdirect_cli::obs::ObsArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Loopback benchmark in one process (IPv4 and IPv6), with TCP and memcpy as peers.
    Bench(bench::BenchArgs),
    /// Adapters and their NDK_ADAPTER_INFO (like ndadapterinfo / ibv_devinfo).
    Info(info::InfoArgs),
    /// RDMA write bandwidth (ib_write_bw).
    WriteBw(PerfArgs),
    /// RDMA read bandwidth (ib_read_bw).
    ReadBw(PerfArgs),
    /// Send bandwidth (ib_send_bw).
    SendBw(PerfArgs),
    /// RDMA write latency, ping-pong (ib_write_lat).
    WriteLat(PerfArgs),
    /// RDMA read latency (ib_read_lat).
    ReadLat(PerfArgs),
    /// Send latency, ping-pong (ib_send_lat).
    SendLat(PerfArgs),
    /// ndping: a stream of Sends (up to -q in flight), sizes 1 B..4 MiB; port 54324.
    ///
    /// Server: `nd ping -s [ADDR[:PORT]]`; client: `nd ping -c ADDR[:PORT]` (IPv4, `[v6]:port`,
    /// or v6 without port). Columns: Size, Iter, Latency (usec per message), CPU (% of all
    /// processors), Bytes/Sec. The server checks every message against the pattern sent.
    Ping(nd::NdArgs),
    /// ndpingpong: Send ping-pong, one message in flight; port 54325.
    ///
    /// Latency is half the round trip and Bytes/Sec counts both directions, as ndpingpong.
    /// Both sides check every message against the pattern sent.
    Pingpong(nd::NdArgs),
    /// ndrping -r: a stream of RDMA reads of the server's buffer; port 54326.
    ///
    /// Latency is usec per read (wall time / iterations). The client checks what it read.
    Rping(nd::NdArgs),
    /// RDMA reads one at a time (a read is a round trip; latency = the whole read); port 54327.
    Rpingpong(nd::NdArgs),
    /// ndrping -w: a stream of RDMA writes into the server's buffer; port 54328.
    ///
    /// The server checks what was written after each size.
    Wping(nd::NdArgs),
    /// ndrpingpong: RDMA write ping-pong on the last byte; port 54329.
    ///
    /// Latency is half the round trip, Bytes/Sec both directions. Both sides check the data.
    Wpingpong(nd::NdArgs),
    /// Linux rping's wire protocol (librdmacm examples/rping.c): ping a Linux iWARP/RDMA peer
    /// or be pinged by one; port 7174.
    ///
    /// Server: `nd rping-compat -s [-a ADDR] [-p PORT]`; client: `nd rping-compat -c -a ADDR`.
    /// Per ping the client advertises its source buffer, the server RDMA-reads it, says go
    /// ahead, the client advertises its sink, the server RDMA-writes it and says done. `-v`
    /// prints the data, `-V` validates it, `-C` counts, `-S` sizes (26..=65535).
    #[command(name = "rping-compat")]
    RpingCompat(rping::RpingArgs),
    /// Many idle connections: memory per idle connected QP on both sides and one QP's RDMA
    /// read latency with 16 vs 10,000 QPs open (two processes; raises RLIMIT_NOFILE itself).
    Scale(scale::ScaleArgs),
    /// NetDMA benchmark: the CPU copy engine's GB/s by size (4 KiB..64 MiB) and channel count
    /// (1..=N), next to memcpy.
    Dma(dma::DmaArgs),
}

/// perftest's flags. The SAME options must be passed to server and client.
#[derive(Args, Debug, Clone)]
struct PerfArgs {
    /// Server to connect to (IPv4, IPv6, `[v6]`, or localhost); omit to serve.
    host: Option<String>,
    /// Size of message to exchange (default 65536 BW / 2 LAT).
    #[arg(short = 's', long = "size")]
    size: Option<u64>,
    /// Number of exchanges (at least 5; default 1000, 5000 for write BW).
    #[arg(short = 'n', long = "iters")]
    iters: Option<u64>,
    /// Run sizes from 2 till 2^23.
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// Run each size for this many seconds instead of -n iterations.
    #[arg(short = 'D', long = "duration")]
    duration: Option<f64>,
    /// Number of QPs (bandwidth tests).
    #[arg(short = 'q', long = "qp", default_value_t = 1)]
    qps: usize,
    /// TCP port (default 18515).
    #[arg(short = 'p', long = "port", default_value_t = perf::DEFAULT_PORT)]
    port: u16,
    /// Size of the TX queue: requests in flight per QP (default 128 BW / 1 LAT).
    #[arg(short = 't', long = "tx-depth")]
    tx_depth: Option<usize>,
    /// Receives the server keeps posted for Send tests (default 512).
    #[arg(short = 'r', long = "rx-depth", default_value_t = 512)]
    rx_depth: usize,
    /// Max size of message to be sent inline (default 0 BW / 220 LAT; adapter max 1024).
    #[arg(short = 'I', long = "inline_size")]
    inline: Option<u32>,
    /// Number of outstanding RDMA reads (default 16).
    #[arg(short = 'o', long = "outs", default_value_t = 16)]
    outs: u32,
    /// Report bandwidth in Gb/sec (10^9 bit) instead of MiB/sec.
    #[arg(long = "report_gbits")]
    report_gbits: bool,
    /// Do not warn about CPU frequency scaling (accepted; nd never warns).
    #[arg(short = 'F', long = "CPU-freq")]
    cpu_freq: bool,
    /// Speak perftest's rdma_cm (-R) exchange, to run against perftest's ib_*_bw/lat -R
    /// (without it, nd's own protocol, for nd peers only).
    #[arg(short = 'R', long = "rdma_cm")]
    rdma_cm: bool,
    /// Also write the report as JSON to --out_json_file.
    #[arg(long = "out_json")]
    out_json: bool,
    /// File for --out_json.
    #[arg(long = "out_json_file", default_value = "perftest_out.json")]
    out_json_file: PathBuf,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long = "json")]
    json: bool,
    /// Local address (server: listen only there, or on every local address for 0.0.0.0 (IPv4)
    /// or :: (both), the default; client: connect from there).
    #[arg(long = "bind_source_ip", alias = "bind")]
    bind: Option<String>,
    /// Longest wait for anything (connection, completion), in seconds.
    #[arg(long = "timeout", default_value_t = 60.0)]
    timeout: f64,
    /// No progress bar and no banner.
    #[arg(long = "quiet")]
    quiet: bool,
    /// Sleep on CQ notifications while waiting for completions (perftest's -e) instead of
    /// busy polling. Not for write_lat, which watches memory.
    #[arg(short = 'e', long = "events")]
    events: bool,
    #[command(flatten)]
    compat: PerftestCompat,
}

/// perftest flags that scripts pass: implemented where they mean something here, accepted and
/// ignored (with the reason in their help) where they do not, refused with a reason otherwise.
#[derive(Args, Debug, Clone, Default)]
struct PerftestCompat {
    /// Adapter to use: its name (`soft0`, … as `nd info` lists them) or its address; the same
    /// as --bind.
    #[arg(short = 'd', long = "ib-dev", value_name = "DEVICE")]
    device: Option<String>,
    /// Accepted and ignored: a soft adapter has one port.
    #[arg(short = 'i', long = "ib-port", value_name = "PORT")]
    ib_port: Option<u32>,
    /// Accepted and ignored: iWARP is addressed by IP, there are no GIDs.
    #[arg(short = 'x', long = "gid-index", value_name = "INDEX")]
    gid_index: Option<u32>,
    /// Connection type: RC only (iWARP has reliable connections only; UC, UD, XRC, DC are
    /// refused).
    #[arg(short = 'c', long = "connection", value_name = "TYPE")]
    connection: Option<String>,
    /// Accepted and ignored: FPDUs follow TCP's segment size, not an RDMA MTU.
    #[arg(short = 'm', long = "mtu", value_name = "MTU")]
    mtu: Option<u32>,
    /// Use IPv6: the server listens on its IPv6 addresses, the client resolves the host to an
    /// IPv6 address (and `localhost` to ::1).
    #[arg(long = "ipv6")]
    ipv6: bool,
    /// Accepted and ignored: requests are posted one by one (posting is a lock-free queue
    /// push, so lists would save nothing measurable).
    #[arg(short = 'l', long = "post_list", value_name = "N")]
    post_list: Option<u32>,
    /// Accepted and ignored: nd always exchanges its control data over its own connection
    /// (perftest's rdma_cm exchange is -R).
    #[arg(short = 'z', long = "comm_rdma_cm")]
    comm_rdma_cm: bool,
    /// Do not measure peak bandwidth (printed as 0, as perftest).
    #[arg(short = 'N', long = "noPeak")]
    no_peak: bool,
    /// Print only this figure: bandwidth (MiB/s or Gb/s), message_rate (Mpps) or latency
    /// (typical, usec).
    #[arg(long = "output", value_name = "WHAT", value_parser = ["bandwidth", "message_rate", "latency"])]
    output: Option<String>,
    /// Also report the process's CPU use during the measurement.
    #[arg(long = "cpu_util")]
    cpu_util: bool,
    /// A warm-up before the measurement (perftest's --perform_warm_up): as many unmeasured
    /// operations as the TX depth, at least 64.
    #[arg(long = "perform_warm_up")]
    perform_warm_up: bool,
    /// Latency tests: also print the histogram of the samples.
    #[arg(short = 'H', long = "report-histogram")]
    histogram: bool,
    /// Refused: nd keeps latency samples in an HDR histogram, not as a raw list (-H shows
    /// their distribution).
    #[arg(short = 'U', long = "report-unsorted")]
    unsorted: bool,
    /// Refused for now: bidirectional runs are not implemented.
    #[arg(short = 'b', long = "bidirectional")]
    bidirectional: bool,
    /// Refused for now (goes with -b).
    #[arg(long = "report-both")]
    report_both: bool,
    /// Refused for now: run until interrupted.
    #[arg(long = "run_infinitely")]
    run_infinitely: bool,
    /// Refused for now: the server side of nd's personas posts to its QP's own receive queue.
    #[arg(long = "use-srq")]
    use_srq: bool,
}

impl PerftestCompat {
    /// Refuses what is not implemented, with the reason.
    fn check(&self, test: Test) -> Result<()> {
        let refuse = |flag: &str, why: &str| {
            Err(Error::status(
                format!("{flag}: {why}"),
                Status::NOT_SUPPORTED,
            ))
        };
        if let Some(c) = &self.connection {
            if !c.eq_ignore_ascii_case("RC") {
                return refuse(
                    &format!("-c {c}"),
                    "iWARP has reliable connections (RC) only",
                );
            }
        }
        if self.unsorted {
            return refuse("-U", "samples are kept in an HDR histogram; -H prints it");
        }
        if self.bidirectional || self.report_both {
            return refuse(
                "-b/--report-both",
                "bidirectional runs are not implemented yet",
            );
        }
        if self.run_infinitely {
            return refuse(
                "--run_infinitely",
                "not implemented yet; use -D with a long duration",
            );
        }
        if self.use_srq {
            return refuse("--use-srq", "not implemented yet in the perftest personas");
        }
        if self.histogram && test.is_bw() {
            return refuse("-H", "applies to latency tests");
        }
        if let Some(o) = &self.output {
            let ok = if test.is_bw() {
                o != "latency"
            } else {
                o == "latency"
            };
            if !ok {
                return refuse(&format!("--output={o}"), "does not apply to this test");
            }
        }
        let _ = (
            self.ib_port,
            self.gid_index,
            self.mtu,
            self.post_list,
            self.comm_rdma_cm,
        );
        Ok(())
    }
}

fn opts_of(test: Test, a: &PerfArgs) -> Result<Opts> {
    let bw = test.is_bw();
    if a.qps == 0 || a.qps > 64 {
        return Err(Error::msg(format!(
            "-q {}: the number of QPs must be 1..=64",
            a.qps
        )));
    }
    if a.qps > 1 && !bw {
        return Err(Error::msg("-q applies to bandwidth tests only"));
    }
    let sizes: Vec<usize> = if a.all {
        (1..=23).map(|k| 1usize << k).collect()
    } else {
        let s = a.size.unwrap_or(if bw { 65536 } else { 2 });
        if s == 0 {
            return Err(Error::msg("-s 0: the message size must be at least 1"));
        }
        vec![usize::try_from(s).map_err(|_| Error::msg("message size too large"))?]
    };
    let stop = match (a.duration, a.iters) {
        (Some(d), _) if d > 0.0 && d.is_finite() => Stop::Duration(Duration::from_secs_f64(d)),
        (Some(d), _) => return Err(Error::msg(format!("-D {d}: the duration must be positive"))),
        (None, Some(n)) if n < 5 => {
            return Err(Error::msg(format!("-n {n}: iterations must be at least 5")));
        }
        (None, Some(n)) => Stop::Iters(n),
        (None, None) => Stop::Iters(if test == Test::WriteBw { 5000 } else { 1000 }),
    };
    if a.events && test == Test::WriteLat {
        return Err(Error::msg(
            "-e: write_lat watches memory for the peer's write, there is no completion to wait for",
        ));
    }
    if !(a.timeout > 0.0 && a.timeout.is_finite()) {
        return Err(Error::msg("--timeout must be a positive number of seconds"));
    }
    Ok(Opts {
        test,
        sizes,
        stop,
        qps: a.qps,
        port: a.port,
        tx_depth: a.tx_depth.unwrap_or(if bw { 128 } else { 1 }).max(1),
        rx_depth: a.rx_depth.max(conn::MIN_RX),
        inline: a.inline.unwrap_or(if bw { 0 } else { 220 }),
        outs: a.outs.max(1),
        timeout: Duration::from_secs_f64(a.timeout),
        bind: match (&a.bind, &a.compat.device) {
            (Some(b), _) => Some(parse_ip(b)?),
            (None, Some(d)) => Some(netdirect_cli::info::adapter_address(d)?),
            (None, None) if a.compat.ipv6 && a.host.is_none() => {
                Some(std::net::Ipv6Addr::UNSPECIFIED.into())
            }
            (None, None) => None,
        },
        warmup: if a.compat.perform_warm_up {
            a.tx_depth.unwrap_or(if bw { 128 } else { 1 }).max(64) as u64
        } else {
            0
        },
        window_bytes: None,
        nd: false,
        check_every: false,
        sge: 1,
        warmup_phase: None,
        events: a.events,
    })
}

/// The header, saying how data was exchanged.
fn header(opts: &Opts, device: &str, rdma_cm: bool) -> String {
    let h = report::header(opts, device);
    if rdma_cm {
        h.replace(
            "Data ex. method : nd send/recv (NDP1)",
            "Data ex. method : rdma_cm (perftest 6.06)",
        )
    } else {
        h
    }
}

fn banner(human: bool, quiet: bool, addrs: &[SocketAddr]) {
    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    if !human {
        // JSON Lines: this line, then the summary.
        outln!(
            "{}",
            serde_json::json!({ "event": "listening", "addresses": list })
        );
    } else if !quiet {
        outln!("\n************************************");
        outln!("* Waiting for client to connect... *");
        outln!("************************************");
        outln!(" listening on {}", list.join(", "));
    }
}

/// `-R` server: perftest's exchange; prints what perftest's server prints.
fn serve_cm(test: Test, a: &PerfArgs, opts: &Opts) -> Result<()> {
    let human = !a.json;
    let run = perftest_cm::serve(opts, a.report_gbits, &|addrs: &[SocketAddr]| {
        banner(human, a.quiet, addrs)
    })?;
    let peer = run.peer.map_or("?".into(), |p| p.to_string());
    if human {
        outln!("{}", header(opts, "soft", true));
        outln!(" client: {peer}");
        if run.rows.is_empty() {
            outln!(
                " {}: the client measures; this side served its RDMA reads",
                test.name()
            );
        } else {
            outln!("{}", report::columns(test, a.report_gbits));
            for r in &run.rows {
                outln!("{}", report::row_line(r, a.report_gbits));
            }
            if run.remote_report {
                outln!(" (the client's figures, which it sends to the server as perftest's does)");
            }
        }
        outln!("{}", report::LINE);
    } else {
        let rows: Vec<serde_json::Value> = run
            .rows
            .iter()
            .map(|r| report::row_json(r, a.report_gbits))
            .collect();
        let v = serde_json::json!({
            "role": "server",
            "test": test.name(),
            "rdma_cm": true,
            "peer": run.peer.map(|p| p.to_string()),
            "rows": rows,
            "rows_from_client": run.remote_report,
        });
        outln!("{v}");
    }
    Ok(())
}

fn persona(test: Test, a: &PerfArgs) -> Result<()> {
    let _ = a.cpu_freq;
    a.compat.check(test)?;
    let opts = opts_of(test, a)?;
    let human = !a.json;
    if a.rdma_cm {
        perftest_cm::check_opts(&opts)?;
    }
    match &a.host {
        None if a.rdma_cm => serve_cm(test, a, &opts),
        None => {
            let summary = perf::serve(&opts, None, &|addrs: &[SocketAddr]| {
                banner(human, a.quiet, addrs)
            })?;
            if human {
                outln!("{}", report::header(&opts, "soft"));
                outln!(
                    " served {} size(s) to {}; data check: {}",
                    summary.phases,
                    summary.peer.map_or("?".into(), |p| p.to_string()),
                    if summary.verified { "OK" } else { "FAILED" }
                );
                outln!("{}", report::LINE);
            } else {
                let v = serde_json::json!({
                    "role": "server",
                    "test": test.name(),
                    "peer": summary.peer.map(|p| p.to_string()),
                    "sizes": summary.phases,
                    "data_verified": summary.verified,
                });
                outln!("{v}");
            }
            Ok(())
        }
        Some(host) => {
            let ip = if a.compat.ipv6 {
                netdirect_cli::parse_ip_v6(host)?
            } else {
                parse_ip(host)?
            };
            let server = SocketAddr::new(ip, opts.port);
            // Find out before the run, not after it, that the report cannot be written.
            if a.out_json {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&a.out_json_file)
                    .map_err(|e| {
                        Error::status(
                            format!(
                                "--out_json_file {} cannot be written: {e}",
                                a.out_json_file.display()
                            ),
                            Status::INVALID_PARAMETER,
                        )
                    })?;
            }
            let pb = progress(
                opts.sizes.len() as u64,
                a.quiet || opts.sizes.len() < 2 && !matches!(opts.stop, Stop::Duration(_)),
            );
            pb.set_message(test.name());
            let run = if a.rdma_cm {
                perftest_cm::client(&opts, server, a.report_gbits)
            } else {
                perf::stop_on_interrupt();
                perf::client(&opts, server, &pb)
            };
            pb.finish_and_clear();
            let run = run?;
            let json = report::client_json(&opts, &run, a.report_gbits);
            if a.out_json {
                let text =
                    serde_json::to_string_pretty(&json).map_err(|e| Error::msg(e.to_string()))?;
                if let Err(e) = std::fs::write(&a.out_json_file, text.clone() + "\n") {
                    // Never lose a run's results: print them where they can still be read.
                    eprintln!("{text}");
                    return Err(Error::msg(format!(
                        "cannot write {}: {e} (the JSON report is above, on stderr)",
                        a.out_json_file.display()
                    )));
                }
            }
            if let (true, Some(what)) = (human, &a.compat.output) {
                // perftest's --output: the one figure per size, nothing else.
                for r in &run.rows {
                    outln!("{}", report::one_figure(r, what, a.report_gbits));
                }
                return Ok(());
            }
            if human {
                outln!(
                    "{}",
                    header(&opts, &format!("soft ({})", run.local.ip()), a.rdma_cm)
                );
                outln!("{}", report::addresses(&run));
                outln!("{}", report::columns(test, a.report_gbits));
                for r in &run.rows {
                    let mut r = r.clone();
                    if let (true, perf::Row::Bw(b)) = (a.compat.no_peak, &mut r) {
                        b.peak = 0.0;
                    }
                    outln!("{}", report::row_line(&r, a.report_gbits));
                }
                outln!("{}", report::LINE);
                if a.compat.cpu_util {
                    for (r, cpu) in run.rows.iter().zip(&run.cpu) {
                        outln!(" CPU util        : {cpu:.2}% ({} octets)", r.size());
                    }
                }
                if a.compat.histogram {
                    for r in &run.rows {
                        if let perf::Row::Lat(l) = r {
                            out!("{}", report::histogram(l));
                        }
                    }
                }
                outln!(
                    " data check      : {}",
                    if a.rdma_cm {
                        "not done (a perftest peer's buffers hold no known pattern)"
                    } else if run.verified {
                        "OK (received bytes match the sent pattern)"
                    } else {
                        "FAILED"
                    }
                );
            } else {
                outln!("{json}");
            }
            if run.interrupted {
                return Err(Error::status(
                    format!(
                        "interrupted (Ctrl-C) after {} of {} size(s); the rows above were measured",
                        run.rows.len(),
                        opts.sizes.len()
                    ),
                    Status::CANCELLED,
                ));
            }
            Ok(())
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bench(a) => bench::run(&a),
        Command::Info(a) => info::run(&a),
        Command::WriteBw(a) => persona(Test::WriteBw, &a),
        Command::ReadBw(a) => persona(Test::ReadBw, &a),
        Command::SendBw(a) => persona(Test::SendBw, &a),
        Command::WriteLat(a) => persona(Test::WriteLat, &a),
        Command::ReadLat(a) => persona(Test::ReadLat, &a),
        Command::SendLat(a) => persona(Test::SendLat, &a),
        Command::Ping(a) => nd::run(Test::SendBw, &a),
        Command::Pingpong(a) => nd::run(Test::SendLat, &a),
        Command::Rping(a) => nd::run(Test::ReadBw, &a),
        Command::Rpingpong(a) => nd::run(Test::ReadLat, &a),
        Command::Wping(a) => nd::run(Test::WriteBw, &a),
        Command::Wpingpong(a) => nd::run(Test::WriteLat, &a),
        Command::RpingCompat(a) => rping::run(&a),
        Command::Dma(a) => dma::run(&a),
        Command::Scale(a) => scale::run(&a),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    conn::set_mpa(cli.mpa);
    conn::set_provider(cli.provider);
    if let Err(e) = netdirect_cli::obs::init(&cli.obs) {
        eprintln!("nd: error: {e}");
        return ExitCode::FAILURE;
    }
    let code = match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nd: error: {e}");
            ExitCode::FAILURE
        }
    };
    netdirect_cli::obs::finish();
    code
}
