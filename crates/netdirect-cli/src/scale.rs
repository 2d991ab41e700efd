//! `nd scale`: what an idle connection costs.
//!
//! Two processes on one adapter pair: `nd scale` starts a server copy of itself (`--serve`),
//! then opens `--qps` connected QPs to it (10,000 by default) and prints
//!
//! * the memory per idle connected QP on each side: the growth of each process's resident set
//!   (`VmRSS`) from before the first connection to after the last one, divided by the count,
//!   once the connections have been idle for a moment;
//! * one QP's RDMA read latency (64 octets, one at a time, busy-polled) with `--base` QPs open
//!   (16) and again with all of them open, and the ratio;
//! * how long the connections took to set up.
//!
//! Both processes raise their open-file limit (`RLIMIT_NOFILE`) to what the count needs
//! (a socket per QP, plus the engine's own descriptors), as far as the hard limit allows.
//!
//! Every QP shares one CQ per side, and the server exposes one registered buffer (its address
//! and token travel in the accept's private data), so what is measured is the per-connection
//! cost of the QP, its connection state and its buffers.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use clap::Args;
use netdirect::{Buffer, Connector, Cq, Mr, Qp, QpConfig};
use netdirect_types::{BasicCompletion, Completion, MrFlags, OpFlags, RemoteToken, Sge, Status};

use crate::conn::Side;
use crate::error::{Context, Error, Result, wait};
use crate::meter::LatMeter;
use crate::outln;

/// `nd scale` flags.
#[derive(Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Connected QPs to open in all.
    #[arg(short = 'n', long = "qps", default_value_t = 10_000)]
    pub qps: usize,
    /// QPs open for the reference latency.
    #[arg(long = "base", default_value_t = 16)]
    pub base: usize,
    /// Octets per RDMA read.
    #[arg(short = 's', long = "size", default_value_t = 64)]
    pub size: usize,
    /// Reads per latency measurement (after 10% as many to warm up).
    #[arg(long = "iters", default_value_t = 5000)]
    pub iters: usize,
    /// Address of the adapter pair (127.0.0.1, or ::1 for IPv6).
    #[arg(short = 'a', long = "address", default_value = "127.0.0.1")]
    pub address: IpAddr,
    /// Connects in flight at once.
    #[arg(long = "window", default_value_t = 64)]
    pub window: usize,
    /// Seconds the connections stay idle before memory is read.
    #[arg(long = "settle", default_value_t = 2.0)]
    pub settle: f64,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Serve (the child process `nd scale` starts); prints the port it listens on.
    #[arg(long, hide = true)]
    pub serve: bool,
}

const TIMEOUT: Duration = Duration::from_secs(60);
/// Private data of the server's accept: buffer address (8) and token (4), big-endian.
const PD_LEN: usize = 12;

/// Raises `RLIMIT_NOFILE` to at least `want` (or to the hard limit); returns the limit now.
pub fn raise_nofile(want: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let cur = now.current.unwrap_or(u64::MAX);
    if cur >= want {
        return cur;
    }
    let target = match now.maximum {
        Some(max) => want.min(max),
        None => want,
    };
    let raised = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: now.maximum,
        },
    );
    if raised.is_ok() { target } else { cur }
}

/// Resident set of process `pid` (`None`: this one), in octets.
fn rss(pid: Option<u32>) -> Result<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::msg(format!("cannot read {path}: {e}")))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| Error::msg(format!("no VmRSS in {path}")))
}

fn shared_cq(side: &Side, depth: u32) -> Result<Box<dyn Cq>> {
    wait(
        side.adapter.create_cq(depth, Arc::new(|_| {}), None),
        TIMEOUT,
        "cannot create the shared completion queue",
    )
}

fn small_qp(side: &Side, cq: &dyn Cq) -> Result<Box<dyn Qp>> {
    wait(
        side.pd.create_qp(QpConfig {
            receive_cq: cq,
            initiator_cq: cq,
            context: 0,
            receive_queue_depth: 1,
            initiator_queue_depth: 4,
            max_receive_sge: 1,
            max_initiator_sge: 1,
            inline_data_size: 0,
        }),
        TIMEOUT,
        "cannot create a queue pair",
    )
}

fn register(side: &Side, buf: &Buffer, flags: MrFlags) -> Result<Box<dyn Mr>> {
    crate::conn::register(side, buf, flags, TIMEOUT)
}

/// The server: accepts every connection on a QP of its own (one shared CQ), with the buffer's
/// address and token as private data; exits when its stdin closes.
pub fn serve(args: &ScaleArgs) -> Result<()> {
    raise_nofile(args.qps as u64 + 1024);
    let side = Side::open(args.address, TIMEOUT)?;
    let buf = Buffer::new(args.size.max(4096));
    let mr = register(&side, &buf, MrFlags::ALLOW_REMOTE_READ)?;
    let mut pd = buf.address().to_be_bytes().to_vec();
    pd.extend_from_slice(&mr.remote_token().0.to_be_bytes());
    let cq = shared_cq(&side, 64)?;
    let (tx, rx) = mpsc::channel::<Box<dyn Connector>>();
    let tx = Mutex::new(tx);
    let listener = wait(
        side.adapter
            .create_listener(Arc::new(move |c: Box<dyn Connector>| {
                if let Ok(tx) = tx.lock() {
                    let _ = tx.send(c);
                }
            })),
        TIMEOUT,
        "cannot create a listener",
    )?;
    wait(
        listener.listen(SocketAddr::new(args.address, 0)),
        TIMEOUT,
        "cannot listen",
    )?;
    let port = listener
        .local_address()
        .context(|| "cannot read the listener's address".into())?
        .port();
    outln!("listening {port}");
    // The parent closes our stdin when it is done (or dies).
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
    let mut open: Vec<Open> = Vec::new();
    let mut accepting = Vec::new();
    loop {
        let Ok(c) = rx.recv_timeout(Duration::from_millis(100)) else {
            accepting.retain(|r: &netdirect::Request<()>| r.is_pending());
            continue;
        };
        let qp = small_qp(&side, &*cq)?;
        accepting.push(c.accept(&*qp, 1, 1, &pd, None));
        open.push((qp, c));
        if accepting.len() > 256 {
            accepting.retain(|r| r.is_pending());
        }
    }
}

/// Latency of one QP's reads: (p50, p99, mean) in microseconds.
fn read_latency(
    qp: &mut dyn Qp,
    cq: &mut dyn Cq,
    sge: Sge,
    remote: (u64, RemoteToken),
    iters: usize,
) -> Result<(f64, f64, f64)> {
    let mut results = [BasicCompletion::from(Completion::EMPTY); 4];
    // A tenth more reads first, unrecorded; a read is a whole round trip.
    let mut meter = LatMeter::new(false, iters as u64 / 10)?;
    for i in 0..iters + iters / 10 {
        meter.time(|| {
            qp.initiator()
                .read(i as u64, &[sge], remote.0, remote.1, OpFlags::empty())
                .context(|| "cannot post an RDMA read".into())?;
            let deadline = Instant::now() + TIMEOUT;
            loop {
                let n = cq.get_results(&mut results);
                if n > 0 {
                    if let Some(bad) = results[..n].iter().find(|c| !c.status.is_success()) {
                        return Err(Error::status("an RDMA read failed", bad.status));
                    }
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(Error::status(
                        "an RDMA read did not complete",
                        Status::IO_TIMEOUT,
                    ));
                }
                std::hint::spin_loop();
            }
        })?;
    }
    let h = meter.into_histogram();
    let us = |ns: u64| ns as f64 / 1000.0;
    Ok((
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.99)),
        h.mean() / 1000.0,
    ))
}

/// A connected QP and its connector.
type Open = (Box<dyn Qp>, Box<dyn Connector>);

/// Opens connections to `to` until `open` holds `n`, `args.window` connects in flight; the
/// first one's accept tells `remote` (the server's buffer).
fn connect_to(
    side: &Side,
    cq: &dyn Cq,
    args: &ScaleArgs,
    to: SocketAddr,
    open: &mut Vec<Open>,
    n: usize,
    remote: &mut (u64, RemoteToken),
) -> Result<()> {
    type Pending = (Box<dyn Qp>, Box<dyn Connector>, netdirect::Request<()>);
    let mut finish = |open: &mut Vec<Open>, (qp, c, req): Pending| -> Result<()> {
        wait(req, TIMEOUT, &format!("cannot connect to {to}"))?;
        wait(
            c.complete_connect(None),
            TIMEOUT,
            "cannot complete a connect",
        )?;
        if remote.0 == 0 {
            let pd = c.connection_data().unwrap_or_default().private_data;
            if pd.len() < PD_LEN {
                return Err(Error::msg("the server's accept carried no buffer"));
            }
            let addr = u64::from_be_bytes(pd[..8].try_into().expect("8 octets"));
            let token = u32::from_be_bytes(pd[8..12].try_into().expect("4 octets"));
            *remote = (addr, RemoteToken(token));
        }
        open.push((qp, c));
        Ok(())
    };
    let mut pending = std::collections::VecDeque::new();
    for _ in open.len() + pending.len()..n {
        let qp = small_qp(side, cq)?;
        let c = wait(
            side.adapter.create_connector(),
            TIMEOUT,
            "cannot create a connector",
        )?;
        let req = c.connect(&*qp, SocketAddr::new(args.address, 0), to, 1, 1, b"");
        pending.push_back((qp, c, req));
        if pending.len() >= args.window.max(1) {
            finish(open, pending.pop_front().expect("non-empty"))?;
        }
    }
    while let Some(p) = pending.pop_front() {
        finish(open, p)?;
    }
    Ok(())
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(args: &ScaleArgs) -> Result<Server> {
        let exe = std::env::current_exe()
            .map_err(|e| Error::msg(format!("cannot find the nd binary: {e}")))?;
        // The server speaks the MPA this process was told to.
        let mpa = crate::conn::mpa_args();
        let mut flags = vec![
            "--mpa-rev".to_string(),
            mpa.revision.to_string(),
            "--mpa-p2p".into(),
            mpa.peer_to_peer.to_string(),
        ];
        if mpa.crc {
            flags.push("--mpa-crc".into());
        }
        if mpa.markers {
            flags.push("--mpa-markers".into());
        }
        // And runs over the same provider, with as many progress threads.
        flags.push("--provider".into());
        flags.push(crate::conn::provider_args().provider.to_string());
        flags.push("--progress-threads".into());
        flags.push(crate::conn::provider_args().progress_threads.to_string());
        let mut child = Command::new(exe)
            .args([
                "scale",
                "--serve",
                "--address",
                &args.address.to_string(),
                "--qps",
                &args.qps.to_string(),
                "--size",
                &args.size.to_string(),
            ])
            .args(&flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Error::msg(format!("cannot start the server process: {e}")))?;
        let out = child.stdout.take().expect("piped");
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| Error::msg(format!("the server process said {line:?}")))?;
        Ok(Server { child, port })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The client: starts the server, opens the connections, prints the figures.
pub fn run(args: &ScaleArgs) -> Result<()> {
    if args.serve {
        return serve(args);
    }
    if args.qps < args.base.max(1) {
        return Err(Error::msg("--qps must be at least --base"));
    }
    let limit = raise_nofile(args.qps as u64 + 1024);
    if limit < args.qps as u64 + 64 {
        return Err(Error::msg(format!(
            "the open-file limit is {limit} and cannot be raised to {} (hard limit)",
            args.qps + 1024
        )));
    }
    let server = Server::start(args)?;
    let pid = server.child.id();
    let to = SocketAddr::new(args.address, server.port);
    let side = Side::open(args.address, TIMEOUT)?;
    let mut cq = shared_cq(&side, 64)?;
    let sink = Buffer::new(args.size.max(4096));
    let sink_mr = register(
        &side,
        &sink,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK,
    )?;
    let sge = Sge::new(sink.address(), args.size as u32, sink_mr.local_token());
    // Let the server settle before the baseline.
    std::thread::sleep(Duration::from_millis(300));
    let base = (rss(None)?, rss(Some(pid))?);

    let mut open: Vec<Open> = Vec::new();
    let mut remote = (0u64, RemoteToken(0));
    let started = Instant::now();
    connect_to(
        &side,
        &*cq,
        args,
        to,
        &mut open,
        args.base.max(1),
        &mut remote,
    )?;
    let base_setup = started.elapsed();
    let (qp0, _) = &mut open[0];
    let lat_base = read_latency(&mut **qp0, &mut *cq, sge, remote, args.iters)?;
    let t = Instant::now();
    connect_to(&side, &*cq, args, to, &mut open, args.qps, &mut remote)?;
    let setup = t.elapsed();
    std::thread::sleep(Duration::from_secs_f64(args.settle));
    let full = (rss(None)?, rss(Some(pid))?);
    let (qp0, _) = &mut open[0];
    let lat_full = read_latency(&mut **qp0, &mut *cq, sge, remote, args.iters)?;
    let n = open.len() as f64;
    let per_client = full.0.saturating_sub(base.0) as f64 / n;
    let per_server = full.1.saturating_sub(base.1) as f64 / n;
    let ratio = lat_full.0 / lat_base.0;
    let added = (open.len() - args.base.max(1)).max(1);
    let per_1000 = setup.as_secs_f64() * 1000.0 / added as f64;
    if args.json {
        let v = ScaleReport {
            qps: open.len(),
            address: args.address.to_string(),
            rss_per_idle_qp_client_bytes: per_client,
            rss_per_idle_qp_server_bytes: per_server,
            rss_client_bytes: [base.0, full.0],
            rss_server_bytes: [base.1, full.1],
            read_size: args.size,
            read_lat_base_us: ScaleLat {
                qps: args.base.max(1),
                p50: lat_base.0,
                p99: lat_base.1,
                mean: lat_base.2,
            },
            read_lat_full_us: ScaleLat {
                qps: open.len(),
                p50: lat_full.0,
                p99: lat_full.1,
                mean: lat_full.2,
            },
            read_lat_p50_ratio: ratio,
            setup_s_per_1000: per_1000,
            base_setup_s: base_setup.as_secs_f64(),
        };
        crate::report::emit(crate::report::JsonMode::Document, &v);
    } else {
        outln!("nd scale: {} connected QPs on {}", open.len(), args.address);
        outln!(
            "memory per idle connected QP: client {:.1} KiB, server {:.1} KiB (RSS {} -> {} KiB, {} -> {} KiB)",
            per_client / 1024.0,
            per_server / 1024.0,
            base.0 / 1024,
            full.0 / 1024,
            base.1 / 1024,
            full.1 / 1024
        );
        outln!(
            "{} B RDMA read, one QP: {} QPs open p50 {:.1} us (p99 {:.1}, mean {:.1}); {} open p50 {:.1} us (p99 {:.1}, mean {:.1}); ratio {:.2}x",
            args.size,
            args.base.max(1),
            lat_base.0,
            lat_base.1,
            lat_base.2,
            open.len(),
            lat_full.0,
            lat_full.1,
            lat_full.2,
            ratio
        );
        outln!("setup: {per_1000:.2} s per 1,000 connections");
    }
    let _ = std::io::stdout().flush();
    // Close the client's connections before the server goes.
    drop(open);
    drop(server);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_raised_as_far_as_allowed_and_rss_is_read() {
        use rustix::process::{Resource, getrlimit};
        let before = getrlimit(Resource::Nofile);
        let hard = before.maximum.unwrap_or(u64::MAX);
        let want = hard.min(before.current.unwrap_or(0) + 16);
        let now = raise_nofile(want);
        assert!(now >= want, "{now} < {want}");
        assert_eq!(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX), now);
        assert!(rss(None).unwrap() > 0);
        assert!(rss(Some(u32::MAX)).is_err());
    }
}

/// `nd scale --json`.
#[derive(Debug, serde::Serialize)]
struct ScaleReport {
    qps: usize,
    address: String,
    rss_per_idle_qp_client_bytes: f64,
    rss_per_idle_qp_server_bytes: f64,
    rss_client_bytes: [u64; 2],
    rss_server_bytes: [u64; 2],
    read_size: usize,
    read_lat_base_us: ScaleLat,
    read_lat_full_us: ScaleLat,
    read_lat_p50_ratio: f64,
    setup_s_per_1000: f64,
    base_setup_s: f64,
}

/// One QP's read latency with `qps` open, microseconds.
#[derive(Debug, serde::Serialize)]
struct ScaleLat {
    qps: usize,
    p50: f64,
    p99: f64,
    mean: f64,
}
