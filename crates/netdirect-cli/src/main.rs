//! `nd`, the command line; the work is in the `netdirect_cli` library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use netdirect_cli::conn::{self, LegacyMpaFlags, MpaFlags};
use netdirect_cli::error::Result;
use netdirect_cli::perf::Test;
use netdirect_cli::persona::{
    self, ReadBwArgs, ReadLatArgs, SendBwArgs, SendLatArgs, WriteBwArgs, WriteLatArgs,
};
use netdirect_cli::{bench, dma, info, nd, provider, rping, scale, stat};

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
    mpa: LegacyMpaFlags,
    #[command(flatten)]
    obs: netdirect_cli::obs::ObsArgs,
}

/// A command's own flags plus the MPA flags (for the commands that connect).
#[derive(Args)]
struct WithMpa<T: Args> {
    #[command(flatten)]
    args: T,
    #[command(flatten)]
    mpa: MpaFlags,
}

#[derive(Subcommand)]
enum Command {
    /// Loopback benchmark in one process (IPv4 and IPv6), with TCP and memcpy as peers.
    Bench(WithMpa<bench::BenchArgs>),
    /// Adapters and their NDK_ADAPTER_INFO (like ndadapterinfo / ibv_devinfo).
    Info(info::InfoArgs),
    /// RDMA write bandwidth (ib_write_bw).
    WriteBw(WriteBwArgs),
    /// RDMA read bandwidth (ib_read_bw).
    ReadBw(ReadBwArgs),
    /// Send bandwidth (ib_send_bw).
    SendBw(SendBwArgs),
    /// RDMA write latency, ping-pong (ib_write_lat).
    WriteLat(WriteLatArgs),
    /// RDMA read latency (ib_read_lat).
    ReadLat(ReadLatArgs),
    /// Send latency, ping-pong (ib_send_lat).
    SendLat(SendLatArgs),
    /// ndping: a stream of Sends (up to -q in flight), sizes 1 B..4 MiB; port 54324.
    ///
    /// Server: `nd ping -s [ADDR[:PORT]]`; client: `nd ping -c ADDR[:PORT]` (IPv4, `[v6]:port`,
    /// or v6 without port). Columns: Size, Iter, Latency (usec per message), CPU (% of all
    /// processors), Bytes/Sec. The server checks every message against the pattern sent.
    Ping(WithMpa<nd::NdArgs>),
    /// ndpingpong: Send ping-pong, one message in flight; port 54325.
    ///
    /// Latency is half the round trip and Bytes/Sec counts both directions, as ndpingpong.
    /// Both sides check every message against the pattern sent.
    Pingpong(WithMpa<nd::NdArgs>),
    /// ndrping -r: a stream of RDMA reads of the server's buffer; port 54326.
    ///
    /// Latency is usec per read (wall time / iterations). The client checks what it read.
    Rping(WithMpa<nd::NdArgs>),
    /// RDMA reads one at a time (a read is a round trip; latency = the whole read); port 54327.
    Rpingpong(WithMpa<nd::NdArgs>),
    /// ndrping -w: a stream of RDMA writes into the server's buffer; port 54328.
    ///
    /// The server checks what was written after each size.
    Wping(WithMpa<nd::NdArgs>),
    /// ndrpingpong: RDMA write ping-pong on the last byte; port 54329.
    ///
    /// Latency is half the round trip, Bytes/Sec both directions. Both sides check the data.
    Wpingpong(WithMpa<nd::NdArgs>),
    /// Linux rping's wire protocol (librdmacm examples/rping.c): ping a Linux iWARP/RDMA peer
    /// or be pinged by one; port 7174.
    ///
    /// Server: `nd rping-compat -s [-a ADDR] [-p PORT]`; client: `nd rping-compat -c -a ADDR`.
    /// Per ping the client advertises its source buffer, the server RDMA-reads it, says go
    /// ahead, the client advertises its sink, the server RDMA-writes it and says done. `-v`
    /// prints the data, `-V` validates it, `-C` counts, `-S` sizes (26..=65535).
    #[command(name = "rping-compat")]
    RpingCompat(WithMpa<rping::RpingArgs>),
    /// Many idle connections: memory per idle connected QP on both sides and one QP's RDMA
    /// read latency with 16 vs 10,000 QPs open (two processes; raises RLIMIT_NOFILE itself).
    Scale(WithMpa<scale::ScaleArgs>),
    /// NetDMA benchmark: the CPU copy engine's GB/s by size (4 KiB..64 MiB) and channel count
    /// (1..=N), next to memcpy.
    Dma(dma::DmaArgs),
    /// Counters of running processes' adapters (the NDK's performance counters and the iWARP
    /// detail), read from what they publish: a table, `--watch N` with rates, `--json`, or
    /// `--prometheus`.
    Stat(stat::StatArgs),
}

fn run(cli: Cli) -> Result<()> {
    let before = cli.mpa;
    // Records the connection flags, and refuses a provider that is not available before the
    // command listens or connects (a server would otherwise wait for a client first).
    let set = |m: &MpaFlags| -> Result<()> {
        conn::set_mpa(m.resolve(&before));
        conn::set_provider(m.provider());
        provider::open(m.provider().provider).map(drop)
    };
    let perftest = |a: persona::PerfArgs| {
        set(&a.mpa)?;
        persona::run(&a)
    };
    match cli.command {
        Command::Bench(a) => {
            set(&a.mpa)?;
            bench::run(&a.args)
        }
        Command::Info(a) => info::run(&a),
        Command::WriteBw(a) => perftest(a.into()),
        Command::ReadBw(a) => perftest(a.into()),
        Command::SendBw(a) => perftest(a.into()),
        Command::WriteLat(a) => perftest(a.into()),
        Command::ReadLat(a) => perftest(a.into()),
        Command::SendLat(a) => perftest(a.into()),
        Command::Ping(a) => nd_persona(Test::SendBw, &a, &set),
        Command::Pingpong(a) => nd_persona(Test::SendLat, &a, &set),
        Command::Rping(a) => nd_persona(Test::ReadBw, &a, &set),
        Command::Rpingpong(a) => nd_persona(Test::ReadLat, &a, &set),
        Command::Wping(a) => nd_persona(Test::WriteBw, &a, &set),
        Command::Wpingpong(a) => nd_persona(Test::WriteLat, &a, &set),
        Command::RpingCompat(a) => {
            set(&a.mpa)?;
            rping::run(&a.args)
        }
        Command::Dma(a) => dma::run(&a),
        Command::Scale(a) => {
            set(&a.mpa)?;
            scale::run(&a.args)
        }
        Command::Stat(a) => stat::run(&a),
    }
}

fn nd_persona(
    test: Test,
    a: &WithMpa<nd::NdArgs>,
    set: &dyn Fn(&MpaFlags) -> Result<()>,
) -> Result<()> {
    set(&a.mpa)?;
    nd::run(test, &a.args)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = netdirect_cli::obs::init(&cli.obs) {
        eprintln!("nd: error: {e}");
        return ExitCode::FAILURE;
    }
    let result = run(cli);
    // `--counters` (a flag of the commands that connect) was recorded by `run`.
    if conn::provider_args().counters {
        eprint!("{}", stat::run_deltas());
    }
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nd: error: {e}");
            ExitCode::FAILURE
        }
    };
    netdirect_cli::obs::finish();
    code
}
