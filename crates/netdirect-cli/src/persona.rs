//! The six perftest personas' command lines (`nd write-bw` … `nd send-lat`) and their run.
//!
//! Each persona has its own flag set, built from groups so that its `--help` lists only what
//! applies to it: [`PerfCommon`] (every persona), [`BwFlags`] (the three bandwidth tests),
//! [`LatFlags`] (the three latency tests), [`ReadFlags`] (`read-bw`, `read-lat`), [`SendFlags`]
//! (`send-bw`, `send-lat`), [`EventsFlag`] (all but `write-lat`, which watches memory) and the
//! MPA flags ([`crate::conn::MpaFlags`]), which only commands that connect take.
//!
//! # perftest's flags
//!
//! What `nd` does with each flag of perftest 6.06's `ib_*_bw` / `ib_*_lat`:
//!
//! | flag | personas | here |
//! |---|---|---|
//! | `-s`, `-n`, `-a`, `-D`, `-p`, `-I`, `-R`, `--out_json`, `--out_json_file`, `--cpu_util`, `--perform_warm_up`, `--ipv6`, `--bind_source_ip` | all | implemented |
//! | `-d` | all | implemented: the adapter by `nd info` name (`soft0`…) or address |
//! | `-e` | all but write_lat | implemented: completions by CQ notification ([`netdirect::Cq::wait`]) instead of busy polling (write_lat watches memory, there is no completion to wait for) |
//! | `-q`, `-t`, `--report_gbits`, `-N`, `--output=bandwidth\|message_rate` | bandwidth | implemented |
//! | `-H`, `--output=latency` | latency | implemented (`-H` prints the HDR histogram's buckets) |
//! | `-o` | read | implemented |
//! | `-r` | send | implemented |
//! | `-c RC` | all | accepted (RC is the only kind); `-c UC/UD/XRC/DC` refused: iWARP has reliable connections only |
//! | `-i` | all | accepted and ignored: a soft adapter has one port |
//! | `-x` | all | accepted and ignored: iWARP is addressed by IP, there are no GIDs |
//! | `-m` | all | accepted and ignored: FPDUs follow TCP's segment size, not an RDMA MTU |
//! | `-z` | all | accepted and ignored: nd exchanges its control data over its own connection (perftest's rdma_cm exchange is `-R`) |
//! | `-F` | all | accepted and ignored: nd never warns about CPU frequency scaling |
//! | `-l` | bandwidth | accepted and ignored: requests are posted one by one (a post is a queue push; a batch already leaves in one `DEFER`red doorbell) |
//! | `-U` | latency | implemented: every sample in run order after the results (`#, usec`, then `index, usec` lines; JSON: `samples_usec`), `-R` included |
//! | `--run_infinitely` | bandwidth | implemented: a row every `-D` seconds (default 5) until Ctrl-C, which then ends the run normally |
//! | `-b` | bandwidth | implemented: both sides run the test toward each other at once (pass `-b` to both), the data is checked both ways, and each side's row is the sum of both directions (perftest's convention); refused with `-R` (perftest's duplex rdma_cm exchange is not spoken) |
//! | `--report-both` | bandwidth | implemented (needs `-b`): a row per direction, `TX` (this side's sending) and `RX` (the peer's); JSON `direction` `tx`/`rx` (`both` for the sum) |
//! | `--use-srq` | send | implemented: each QP takes its receives from an SRQ (one per QP, on both sides); refused with `-R` |
//! | `--json` (ours) | all | one JSON document on stdout (client and server) |
//! | `--json-lines` (ours) | all | JSON Lines on stdout: `listening` (server), a `row` per size (client), then the `report` |
//!
//! Flags of another kind of test (`-H` on a bandwidth test, `-q` on a latency test, …) are
//! usage errors (exit status 2), as they are not in that persona's `--help`. Flags not listed
//! (`-g` multicast, `-w` limit, `-M` MAC, rate limiting, …) are usage errors too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use netdirect_types::{RdmaTechnology, Status};

use crate::conn::{self, MpaFlags};
use crate::error::{Error, Result};
use crate::perf::{self, Opts, Stop, Test};
use crate::report::{self, ClientReport, JsonMode, ServerReport};
use crate::{out, outln, parse_ip, perftest_cm, progress};

/// Flags of every perftest persona. The SAME options must be passed to server and client.
#[derive(Args, Debug, Clone)]
pub struct PerfCommon {
    /// Server to connect to (IPv4, IPv6, `[v6]`, a host name, or localhost); omit to serve.
    pub host: Option<String>,
    /// Size of message to exchange (default 65536 for bandwidth tests, 2 for latency tests).
    #[arg(short = 's', long = "size")]
    pub size: Option<u64>,
    /// Number of exchanges (at least 5; default 1000, 5000 for write-bw).
    #[arg(short = 'n', long = "iters")]
    pub iters: Option<u64>,
    /// Run sizes from 2 till 2^23.
    #[arg(short = 'a', long = "all")]
    pub all: bool,
    /// Run each size for this many seconds instead of -n iterations.
    #[arg(short = 'D', long = "duration")]
    pub duration: Option<f64>,
    /// TCP port (default 18515).
    #[arg(short = 'p', long = "port", default_value_t = perf::DEFAULT_PORT)]
    pub port: u16,
    /// Max size of message to be sent inline (default 0 for bandwidth tests, 220 for latency
    /// tests; adapter max 1024).
    #[arg(short = 'I', long = "inline_size")]
    pub inline: Option<u32>,
    /// Speak perftest's rdma_cm (-R) exchange, to run against perftest's ib_*_bw/lat -R
    /// (without it, nd's own protocol, for nd peers only).
    #[arg(short = 'R', long = "rdma_cm")]
    pub rdma_cm: bool,
    /// Also write the report as JSON to --out_json_file.
    #[arg(long = "out_json")]
    pub out_json: bool,
    /// File for --out_json.
    #[arg(long = "out_json_file", default_value = "perftest_out.json")]
    pub out_json_file: PathBuf,
    /// Print the report as one JSON document on stdout instead of the table (a server says
    /// where it listens on stderr).
    #[arg(long = "json", conflicts_with = "json_lines")]
    pub json: bool,
    /// Print JSON Lines on stdout: `{"event":"listening",…}` (server), `{"event":"row",…}`
    /// per size as it completes (client), then `{"event":"report",…}` (the --json document).
    #[arg(long = "json-lines")]
    pub json_lines: bool,
    /// Local address (server: listen only there, or on every local address for 0.0.0.0 (IPv4)
    /// or :: (both), the default; client: connect from there).
    #[arg(long = "bind_source_ip", alias = "bind")]
    pub bind: Option<String>,
    /// Longest wait for anything (connection, completion), in seconds.
    #[arg(long = "timeout", default_value_t = 60.0)]
    pub timeout: f64,
    /// No progress bar and no banner.
    #[arg(long = "quiet")]
    pub quiet: bool,
    /// Adapter to use: its name (`soft0`, … as `nd info` lists them) or its address; the same
    /// as --bind.
    #[arg(short = 'd', long = "ib-dev", value_name = "DEVICE")]
    pub device: Option<String>,
    /// Accepted and ignored: a soft adapter has one port.
    #[arg(short = 'i', long = "ib-port", value_name = "PORT")]
    pub ib_port: Option<u32>,
    /// Accepted and ignored: iWARP is addressed by IP, there are no GIDs.
    #[arg(short = 'x', long = "gid-index", value_name = "INDEX")]
    pub gid_index: Option<u32>,
    /// Connection type: RC only (iWARP has reliable connections only; UC, UD, XRC, DC are
    /// refused).
    #[arg(short = 'c', long = "connection", value_name = "TYPE")]
    pub connection: Option<String>,
    /// Accepted and ignored: FPDUs follow TCP's segment size, not an RDMA MTU.
    #[arg(short = 'm', long = "mtu", value_name = "MTU")]
    pub mtu: Option<u32>,
    /// Use IPv6: the server listens on its IPv6 addresses, the client resolves the host to an
    /// IPv6 address (and `localhost` to ::1).
    #[arg(long = "ipv6")]
    pub ipv6: bool,
    /// Accepted and ignored: nd always exchanges its control data over its own connection
    /// (perftest's rdma_cm exchange is -R).
    #[arg(short = 'z', long = "comm_rdma_cm")]
    pub comm_rdma_cm: bool,
    /// Accepted and ignored: nd never warns about CPU frequency scaling.
    #[arg(short = 'F', long = "CPU-freq")]
    pub cpu_freq: bool,
    /// Also report the process's CPU use during the measurement.
    #[arg(long = "cpu_util")]
    pub cpu_util: bool,
    /// A warm-up before the measurement (perftest's --perform_warm_up): as many unmeasured
    /// operations as the TX depth, at least 64.
    #[arg(long = "perform_warm_up")]
    pub perform_warm_up: bool,
}

/// Flags of the bandwidth personas only.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Bandwidth test options")]
pub struct BwFlags {
    /// Number of QPs.
    #[arg(short = 'q', long = "qp", default_value_t = 1)]
    pub qps: usize,
    /// Size of the TX queue: requests in flight per QP (default 128).
    #[arg(short = 't', long = "tx-depth")]
    pub tx_depth: Option<usize>,
    /// Report bandwidth in Gb/sec (10^9 bit) instead of MiB/sec.
    #[arg(long = "report_gbits")]
    pub report_gbits: bool,
    /// Do not measure peak bandwidth (printed as 0, as perftest).
    #[arg(short = 'N', long = "noPeak")]
    pub no_peak: bool,
    /// Print only this figure: bandwidth (MiB/s or Gb/s) or message_rate (Mpps).
    #[arg(long = "output", value_name = "WHAT", value_parser = ["bandwidth", "message_rate"])]
    pub output: Option<String>,
    /// Accepted and ignored: requests are posted one by one (a batch already leaves in one
    /// deferred doorbell).
    #[arg(short = 'l', long = "post_list", value_name = "N")]
    pub post_list: Option<u32>,
    /// Bidirectional: both sides run the test toward each other at once and each reports the
    /// sum of both directions (pass -b to the server too; not with -R).
    #[arg(short = 'b', long = "bidirectional")]
    pub bidirectional: bool,
    /// With -b: report each direction (TX: this side's sending, RX: the peer's) instead of
    /// their sum.
    #[arg(long = "report-both", requires = "bidirectional")]
    pub report_both: bool,
    /// Run until interrupted (Ctrl-C), printing a row every -D seconds (default 5); Ctrl-C
    /// is then the normal end (exit status 0).
    #[arg(long = "run_infinitely")]
    pub run_infinitely: bool,
}

/// Flags of the latency personas only.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Latency test options")]
pub struct LatFlags {
    /// Also print the histogram of the samples.
    #[arg(short = 'H', long = "report-histogram")]
    pub histogram: bool,
    /// Print only this figure: latency (typical, usec).
    #[arg(long = "output", value_name = "WHAT", value_parser = ["latency"])]
    pub output: Option<String>,
    /// Print every latency sample in run order after the results ("#, usec", then one
    /// "index, usec" line each; in JSON the array samples_usec).
    #[arg(short = 'U', long = "report-unsorted")]
    pub unsorted: bool,
}

/// Flags of the RDMA read personas only.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "RDMA read options")]
pub struct ReadFlags {
    /// Number of outstanding RDMA reads (default 16).
    #[arg(short = 'o', long = "outs", default_value_t = 16)]
    pub outs: u32,
}

/// Flags of the Send personas only.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Send options")]
pub struct SendFlags {
    /// Receives the server keeps posted (default 512).
    #[arg(short = 'r', long = "rx-depth", default_value_t = 512)]
    pub rx_depth: usize,
    /// Post the receives to a shared receive queue (NdkCreateSrq) of each QP's instead of
    /// the QP's own receive queue (not with -R).
    #[arg(long = "use-srq")]
    pub use_srq: bool,
}

/// perftest's `-e`, for the personas that wait for completions.
#[derive(Args, Debug, Clone)]
pub struct EventsFlag {
    /// Sleep on CQ notifications while waiting for completions instead of busy polling.
    #[arg(short = 'e', long = "events")]
    pub events: bool,
}

/// `nd write-bw`.
#[derive(Args, Debug, Clone)]
#[command(
    mut_arg("size", |a| a.help("Size of message to exchange (default 65536)")),
    mut_arg("iters", |a| a.help("Number of exchanges (at least 5; default 5000)")),
    mut_arg("inline", |a| a.help("Max size of message to be sent inline (default 0; adapter max 1024)"))
)]
pub struct WriteBwArgs {
    #[command(flatten)]
    common: PerfCommon,
    #[command(flatten)]
    events: EventsFlag,
    #[command(flatten)]
    bw: BwFlags,
    #[command(flatten)]
    mpa: MpaFlags,
}

/// `nd read-bw`.
#[derive(Args, Debug, Clone)]
#[command(
    mut_arg("size", |a| a.help("Size of message to exchange (default 65536)")),
    mut_arg("iters", |a| a.help("Number of exchanges (at least 5; default 1000)")),
    mut_arg("inline", |a| a.help("Max size of message to be sent inline (default 0; adapter max 1024)"))
)]
pub struct ReadBwArgs {
    #[command(flatten)]
    common: PerfCommon,
    #[command(flatten)]
    events: EventsFlag,
    #[command(flatten)]
    bw: BwFlags,
    #[command(flatten)]
    read: ReadFlags,
    #[command(flatten)]
    mpa: MpaFlags,
}

/// `nd send-bw`.
#[derive(Args, Debug, Clone)]
#[command(
    mut_arg("size", |a| a.help("Size of message to exchange (default 65536)")),
    mut_arg("iters", |a| a.help("Number of exchanges (at least 5; default 1000)")),
    mut_arg("inline", |a| a.help("Max size of message to be sent inline (default 0; adapter max 1024)"))
)]
pub struct SendBwArgs {
    #[command(flatten)]
    common: PerfCommon,
    #[command(flatten)]
    events: EventsFlag,
    #[command(flatten)]
    bw: BwFlags,
    #[command(flatten)]
    send: SendFlags,
    #[command(flatten)]
    mpa: MpaFlags,
}

/// `nd write-lat` (no `-e`: it watches memory, there is no completion to wait for).
#[derive(Args, Debug, Clone)]
#[command(
    mut_arg("size", |a| a.help("Size of message to exchange (default 2)")),
    mut_arg("iters", |a| a.help("Number of exchanges (at least 5; default 1000)")),
    mut_arg("inline", |a| a.help("Max size of message to be sent inline (default 220; adapter max 1024)"))
)]
pub struct WriteLatArgs {
    #[command(flatten)]
    common: PerfCommon,
    #[command(flatten)]
    lat: LatFlags,
    #[command(flatten)]
    mpa: MpaFlags,
}

/// `nd read-lat`.
#[derive(Args, Debug, Clone)]
#[command(
    mut_arg("size", |a| a.help("Size of message to exchange (default 2)")),
    mut_arg("iters", |a| a.help("Number of exchanges (at least 5; default 1000)")),
    mut_arg("inline", |a| a.help("Max size of message to be sent inline (default 220; adapter max 1024)"))
)]
pub struct ReadLatArgs {
    #[command(flatten)]
    common: PerfCommon,
    #[command(flatten)]
    events: EventsFlag,
    #[command(flatten)]
    lat: LatFlags,
    #[command(flatten)]
    read: ReadFlags,
    #[command(flatten)]
    mpa: MpaFlags,
}

/// `nd send-lat`.
#[derive(Args, Debug, Clone)]
#[command(
    mut_arg("size", |a| a.help("Size of message to exchange (default 2)")),
    mut_arg("iters", |a| a.help("Number of exchanges (at least 5; default 1000)")),
    mut_arg("inline", |a| a.help("Max size of message to be sent inline (default 220; adapter max 1024)"))
)]
pub struct SendLatArgs {
    #[command(flatten)]
    common: PerfCommon,
    #[command(flatten)]
    events: EventsFlag,
    #[command(flatten)]
    lat: LatFlags,
    #[command(flatten)]
    send: SendFlags,
    #[command(flatten)]
    mpa: MpaFlags,
}

/// A persona's flags, whichever persona: the groups it does not have are `None`.
#[derive(Debug, Clone)]
pub struct PerfArgs {
    /// The test.
    pub test: Test,
    /// Every persona's flags.
    pub common: PerfCommon,
    /// `-e` (not on write-lat).
    pub events: bool,
    /// Bandwidth flags.
    pub bw: Option<BwFlags>,
    /// Latency flags.
    pub lat: Option<LatFlags>,
    /// Read flags.
    pub read: Option<ReadFlags>,
    /// Send flags.
    pub send: Option<SendFlags>,
    /// MPA flags.
    pub mpa: MpaFlags,
}

impl From<WriteBwArgs> for PerfArgs {
    fn from(a: WriteBwArgs) -> Self {
        PerfArgs {
            test: Test::WriteBw,
            common: a.common,
            events: a.events.events,
            bw: Some(a.bw),
            lat: None,
            read: None,
            send: None,
            mpa: a.mpa,
        }
    }
}

impl From<ReadBwArgs> for PerfArgs {
    fn from(a: ReadBwArgs) -> Self {
        PerfArgs {
            test: Test::ReadBw,
            common: a.common,
            events: a.events.events,
            bw: Some(a.bw),
            lat: None,
            read: Some(a.read),
            send: None,
            mpa: a.mpa,
        }
    }
}

impl From<SendBwArgs> for PerfArgs {
    fn from(a: SendBwArgs) -> Self {
        PerfArgs {
            test: Test::SendBw,
            common: a.common,
            events: a.events.events,
            bw: Some(a.bw),
            lat: None,
            read: None,
            send: Some(a.send),
            mpa: a.mpa,
        }
    }
}

impl From<WriteLatArgs> for PerfArgs {
    fn from(a: WriteLatArgs) -> Self {
        PerfArgs {
            test: Test::WriteLat,
            common: a.common,
            events: false,
            bw: None,
            lat: Some(a.lat),
            read: None,
            send: None,
            mpa: a.mpa,
        }
    }
}

impl From<ReadLatArgs> for PerfArgs {
    fn from(a: ReadLatArgs) -> Self {
        PerfArgs {
            test: Test::ReadLat,
            common: a.common,
            events: a.events.events,
            bw: None,
            lat: Some(a.lat),
            read: Some(a.read),
            send: None,
            mpa: a.mpa,
        }
    }
}

impl From<SendLatArgs> for PerfArgs {
    fn from(a: SendLatArgs) -> Self {
        PerfArgs {
            test: Test::SendLat,
            common: a.common,
            events: a.events.events,
            bw: None,
            lat: Some(a.lat),
            read: None,
            send: Some(a.send),
            mpa: a.mpa,
        }
    }
}

impl PerfArgs {
    fn gbits(&self) -> bool {
        self.bw.as_ref().is_some_and(|b| b.report_gbits)
    }

    fn output(&self) -> Option<&str> {
        match (&self.bw, &self.lat) {
            (Some(b), _) => b.output.as_deref(),
            (_, Some(l)) => l.output.as_deref(),
            _ => None,
        }
    }

    fn json_mode(&self) -> JsonMode {
        if self.common.json_lines {
            JsonMode::Lines
        } else if self.common.json {
            JsonMode::Document
        } else {
            JsonMode::Text
        }
    }

    /// Refuses what is not implemented, with the reason.
    fn check(&self) -> Result<()> {
        let refuse = |flag: &str, why: &str| {
            Err(Error::status(
                format!("{flag}: {why}"),
                Status::NOT_SUPPORTED,
            ))
        };
        if let Some(c) = &self.common.connection {
            if !c.eq_ignore_ascii_case("RC") {
                return refuse(
                    &format!("-c {c}"),
                    "iWARP has reliable connections (RC) only",
                );
            }
        }
        if self.bw.as_ref().is_some_and(|b| b.bidirectional) && self.common.rdma_cm {
            return refuse(
                "-b with -R",
                "perftest's duplex exchange over rdma_cm (both sides posting, then swapping their reports) is not spoken; -b runs between nd peers",
            );
        }
        if self.send.as_ref().is_some_and(|s| s.use_srq) && self.common.rdma_cm {
            return refuse(
                "--use-srq",
                "with -R, nd's data QP takes its receives from its own queue",
            );
        }
        Ok(())
    }

    /// The run's options.
    pub fn opts(&self) -> Result<Opts> {
        let test = self.test;
        let a = &self.common;
        let bw = test.is_bw();
        let qps = self.bw.as_ref().map_or(1, |b| b.qps);
        let forever = self.bw.as_ref().is_some_and(|b| b.run_infinitely);
        if qps == 0 || qps > 64 {
            return Err(Error::msg(format!(
                "-q {qps}: the number of QPs must be 1..=64"
            )));
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
            (Some(d), _) => {
                return Err(Error::msg(format!("-D {d}: the duration must be positive")));
            }
            (None, Some(n)) if n < 5 => {
                return Err(Error::msg(format!("-n {n}: iterations must be at least 5")));
            }
            (None, Some(n)) => Stop::Iters(n),
            // perftest's --run_infinitely reports every 5 s by default.
            (None, None) if forever => Stop::Duration(Duration::from_secs(5)),
            (None, None) => Stop::Iters(if test == Test::WriteBw { 5000 } else { 1000 }),
        };
        if forever && (a.all || a.rdma_cm) {
            return Err(Error::msg(
                "--run_infinitely measures one size (-s) with nd's own exchange: not with -a or -R",
            ));
        }
        if !(a.timeout > 0.0 && a.timeout.is_finite()) {
            return Err(Error::msg("--timeout must be a positive number of seconds"));
        }
        let tx_depth = self
            .bw
            .as_ref()
            .and_then(|b| b.tx_depth)
            .unwrap_or(if bw { 128 } else { 1 })
            .max(1);
        Ok(Opts {
            test,
            sizes,
            stop,
            qps,
            port: a.port,
            tx_depth,
            rx_depth: self
                .send
                .as_ref()
                .map_or(512, |s| s.rx_depth)
                .max(conn::MIN_RX),
            inline: a.inline.unwrap_or(if bw { 0 } else { 220 }),
            inline_explicit: a.inline.is_some(),
            outs: self.read.as_ref().map_or(16, |r| r.outs).max(1),
            timeout: Duration::from_secs_f64(a.timeout),
            bind: match (&a.bind, &a.device) {
                (Some(b), _) => Some(parse_ip(b)?),
                (None, Some(d)) => Some(crate::info::adapter_address(d)?),
                (None, None) if a.ipv6 && a.host.is_none() => {
                    Some(std::net::Ipv6Addr::UNSPECIFIED.into())
                }
                (None, None) => None,
            },
            warmup: if a.perform_warm_up {
                tx_depth.max(64) as u64
            } else {
                0
            },
            window_bytes: None,
            nd: false,
            check_every: false,
            sge: 1,
            warmup_phase: None,
            events: self.events,
            forever,
            srq: self.send.as_ref().is_some_and(|s| s.use_srq),
            unsorted: self.lat.as_ref().is_some_and(|l| l.unsorted),
            bidir: self.bw.as_ref().is_some_and(|b| b.bidirectional),
            report_both: self.bw.as_ref().is_some_and(|b| b.report_both),
        })
    }
}

/// The provider the run is over (`--provider`), as the header's Device.
fn provider_name() -> &'static str {
    crate::conn::provider_args().provider.as_str()
}

/// The header, saying how data was exchanged.
fn header(opts: &Opts, device: &str, technology: RdmaTechnology, rdma_cm: bool) -> String {
    let h = report::header(opts, device, technology);
    if rdma_cm {
        h.replace(
            "Data ex. method : nd send/recv (NDP1)",
            "Data ex. method : rdma_cm (perftest 6.06)",
        )
    } else {
        h
    }
}

/// Says where a server listens: the banner (text), a `listening` event (JSON Lines), or a line
/// on stderr (one JSON document: stdout holds only the report).
pub fn banner(mode: JsonMode, quiet: bool, tool: &str, addrs: &[SocketAddr]) {
    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    match mode {
        JsonMode::Lines => report::emit_line(&report::Event::listening(tool, addrs)),
        JsonMode::Document if !quiet => {
            eprintln!("nd: {tool}: listening on {}", list.join(", "));
        }
        JsonMode::Document => {}
        JsonMode::Text if !quiet => {
            outln!("\n************************************");
            outln!("* Waiting for client to connect... *");
            outln!("************************************");
            outln!(" listening on {}", list.join(", "));
        }
        JsonMode::Text => {}
    }
}

/// `-R` server: perftest's exchange; prints what perftest's server prints.
fn serve_cm(a: &PerfArgs, opts: &Opts) -> Result<()> {
    let test = a.test;
    let mode = a.json_mode();
    let gbits = a.gbits();
    let listening = std::cell::RefCell::new(Vec::new());
    let run = perftest_cm::serve(opts, gbits, &|addrs: &[SocketAddr]| {
        *listening.borrow_mut() = addrs.iter().map(ToString::to_string).collect();
        banner(mode, a.common.quiet, test.name(), addrs)
    })?;
    let peer = run.peer.map_or("?".into(), |p| p.to_string());
    if mode == JsonMode::Text {
        outln!("{}", header(opts, provider_name(), run.technology, true));
        outln!(" client: {peer}");
        if run.rows.is_empty() {
            outln!(
                " {}: the client measures; this side served its RDMA reads",
                test.name()
            );
        } else {
            outln!("{}", report::columns(test, gbits));
            for r in &run.rows {
                outln!("{}", report::row_line(r, gbits));
            }
            if run.remote_report {
                outln!(" (the client's figures, which it sends to the server as perftest's does)");
            }
        }
        outln!("{}", report::LINE);
    } else {
        let r = ServerReport {
            role: "server",
            test: test.name(),
            rdma_cm: true,
            listening: listening.take(),
            peer: run.peer.map(|p| p.to_string()),
            sizes: opts.sizes.len(),
            data_verified: None,
            results: run
                .rows
                .iter()
                .map(|r| report::ResultRow::of(r, gbits))
                .collect(),
            results_from_client: run.remote_report,
        };
        report::emit(mode, &r);
    }
    Ok(())
}

fn serve(a: &PerfArgs, opts: &Opts) -> Result<()> {
    let test = a.test;
    let mode = a.json_mode();
    let listening = std::cell::RefCell::new(Vec::new());
    let summary = perf::serve(opts, None, &|addrs: &[SocketAddr]| {
        *listening.borrow_mut() = addrs.iter().map(ToString::to_string).collect();
        banner(mode, a.common.quiet, test.name(), addrs)
    })?;
    let gbits = a.gbits();
    let results: Vec<report::ResultRow> = summary
        .rows
        .iter()
        .enumerate()
        .flat_map(|(k, r)| report::rows_of(r, summary.directions.get(k), opts.report_both, gbits))
        .collect();
    if mode == JsonMode::Text {
        let used = Opts {
            inline: summary.inline,
            ..opts.clone()
        };
        outln!(
            "{}",
            report::header(&used, provider_name(), summary.technology)
        );
        if !results.is_empty() {
            // -b: the server measured too.
            outln!("{}", report::columns(test, gbits));
            for r in &results {
                outln!("{}", r.text());
            }
            outln!("{}", report::LINE);
        }
        outln!(
            " served {} size(s) to {}; data check: {}",
            summary.phases,
            summary.peer.map_or("?".into(), |p| p.to_string()),
            if summary.verified { "OK" } else { "FAILED" }
        );
        outln!("{}", report::LINE);
    } else {
        let r = ServerReport {
            role: "server",
            test: test.name(),
            rdma_cm: false,
            listening: listening.take(),
            peer: summary.peer.map(|p| p.to_string()),
            sizes: summary.phases,
            data_verified: Some(summary.verified),
            results,
            results_from_client: false,
        };
        report::emit(mode, &r);
    }
    Ok(())
}

/// Runs a perftest persona: serves without a host, connects with one.
pub fn run(a: &PerfArgs) -> Result<()> {
    let test = a.test;
    a.check()?;
    let opts = a.opts()?;
    let mode = a.json_mode();
    let human = mode == JsonMode::Text;
    let gbits = a.gbits();
    if a.common.rdma_cm {
        perftest_cm::check_opts(&opts)?;
    }
    let Some(host) = &a.common.host else {
        return if a.common.rdma_cm {
            serve_cm(a, &opts)
        } else {
            serve(a, &opts)
        };
    };
    let ip = if a.common.ipv6 {
        crate::parse_ip_v6(host)?
    } else {
        parse_ip(host)?
    };
    let server = SocketAddr::new(ip, opts.port);
    let out_file = &a.common.out_json_file;
    // Find out before the run, not after it, that the report cannot be written.
    if a.common.out_json {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out_file)
            .map_err(|e| {
                Error::status(
                    format!(
                        "--out_json_file {} cannot be written: {e}",
                        out_file.display()
                    ),
                    Status::INVALID_PARAMETER,
                )
            })?;
    }
    let pb = progress(
        opts.sizes.len() as u64,
        a.common.quiet || opts.sizes.len() < 2 && !matches!(opts.stop, Stop::Duration(_)),
    );
    pb.set_message(test.name());
    let no_peak = a.bw.as_ref().is_some_and(|b| b.no_peak);
    let output = a.output().filter(|_| human);
    // Text: the header once the first size is measured, then each row as it completes.
    let show = |so_far: &perf::ClientRun, row: &perf::Row| {
        let mut text = String::new();
        if let Some(what) = output {
            // perftest's --output: the one figure per size, nothing else.
            text += &report::one_figure(row, what, gbits);
        } else {
            if so_far.rows.is_empty() {
                let device = format!("{} ({})", provider_name(), so_far.local.ip());
                text += &header(
                    &opts.fit(&so_far.info),
                    &device,
                    so_far.info.rdma_technology,
                    a.common.rdma_cm,
                );
                text += "\n";
                text += &report::addresses(so_far);
                text += "\n";
                text += &report::columns(test, gbits);
                text += "\n";
            }
            let rows = report::rows_of(row, so_far.directions.last(), opts.report_both, gbits);
            let lines: Vec<String> = rows.iter().map(report::ResultRow::text).collect();
            text += &lines.join("\n");
        }
        text
    };
    let peakless = |row: &perf::Row| {
        let mut r = row.clone();
        if let (true, perf::Row::Bw(b)) = (no_peak, &mut r) {
            b.peak = 0.0;
        }
        r
    };
    let mut streamed = false;
    let run = if a.common.rdma_cm {
        perftest_cm::client(&opts, server, gbits)
    } else {
        perf::stop_on_interrupt();
        perf::client_with(&opts, server, &pb, &mut |so_far, row, _, _| {
            let row = peakless(row);
            match mode {
                JsonMode::Lines => pb.suspend(|| {
                    let dirs = so_far.directions.last();
                    for r in report::rows_of(&row, dirs, opts.report_both, gbits) {
                        report::emit_line(&report::Event::<()>::Row(r));
                    }
                }),
                JsonMode::Text => {
                    let text = show(so_far, &row);
                    pb.suspend(|| outln!("{text}"));
                    streamed = true;
                }
                JsonMode::Document => {}
            }
        })
    };
    pb.finish_and_clear();
    let mut run = run?;
    for r in &mut run.rows {
        *r = peakless(r);
    }
    let mut json = ClientReport::new(&opts, &run, gbits);
    if a.common.rdma_cm {
        json.test_info.data_verified = None;
    }
    if a.common.out_json {
        let text = serde_json::to_string_pretty(&json).map_err(|e| Error::msg(e.to_string()))?;
        if let Err(e) = std::fs::write(out_file, text.clone() + "\n") {
            // Never lose a run's results: print them where they can still be read.
            eprintln!("{text}");
            return Err(Error::msg(format!(
                "cannot write {}: {e} (the JSON report is above, on stderr)",
                out_file.display()
            )));
        }
    }
    if human && !streamed {
        // -R measures one size and reports it at the end.
        let mut so_far = run.clone();
        so_far.rows.clear();
        for r in &run.rows {
            outln!("{}", show(&so_far, r));
            so_far.rows.push(r.clone());
        }
    }
    if human && output.is_some() {
        return interrupted_error(&run, &opts);
    }
    if human {
        if run.rows.is_empty() {
            outln!(
                "{}",
                header(
                    &opts.fit(&run.info),
                    &format!("{} ({})", provider_name(), run.local.ip()),
                    run.info.rdma_technology,
                    a.common.rdma_cm
                )
            );
        }
        outln!("{}", report::LINE);
        if a.common.cpu_util {
            for (r, cpu) in run.rows.iter().zip(&run.cpu) {
                outln!(" CPU util        : {cpu:.2}% ({} octets)", r.size());
            }
        }
        if a.lat.as_ref().is_some_and(|l| l.histogram) {
            for r in &run.rows {
                if let perf::Row::Lat(l) = r {
                    out!("{}", report::histogram(l));
                }
            }
        }
        if opts.unsorted {
            for r in &run.rows {
                if let perf::Row::Lat(l) = r {
                    out!("{}", report::unsorted(l));
                }
            }
        }
        outln!(
            " data check      : {}",
            if a.common.rdma_cm {
                "not done (a perftest peer's buffers hold no known pattern)"
            } else if run.verified {
                "OK (received bytes match the sent pattern)"
            } else {
                "FAILED"
            }
        );
    } else {
        report::emit(mode, &json);
    }
    interrupted_error(&run, &opts)
}

/// `STATUS_CANCELLED` if Ctrl-C ended the run (its rows were printed).
fn interrupted_error(run: &perf::ClientRun, opts: &Opts) -> Result<()> {
    // --run_infinitely runs until interrupted: that is its end.
    if run.interrupted && !opts.forever {
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
