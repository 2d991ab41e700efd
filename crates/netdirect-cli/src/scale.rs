//! `nd scale`: what an idle connection costs.
//!
//! Two processes on one adapter pair: `nd scale` starts a server copy of itself (`--serve`),
//! opens `--base` connected QPs to it (16), then runs `--rounds` rounds (3), each
//!
//! 1. one QP's RDMA read latency (64 octets, one at a time, busy-polled) with `--base` QPs
//!    open, and the same for a plain TCP connection to the server (64 octets echoed by an
//!    `epoll` thread, the shape of the soft RNIC's progress thread serving a read);
//! 2. opens QPs until `--qps` (10,000) are connected, lets them idle for `--settle` seconds,
//!    measures one QP's read latency again, and closes the added QPs (waiting until the server
//!    has closed its ends);
//! 3. opens plain TCP connections until `--qps` are open, measures the TCP round trip again,
//!    and closes them.
//!
//! So both conditions are measured in every round, in one process lifetime, and machine noise
//! hits both alike. It prints, per round, p50 and p99 of every condition, then the ratio of the
//! medians (all rounds' samples pooled) for netdirect and for plain TCP: the TCP ratio is what
//! the kernel alone costs with that many idle sockets, the floor for ours. The server's CPU
//! time per read (all its threads, user and kernel, from `/proc/<pid>/task/*/schedstat`) shows
//! the work behind a read without the scheduler's noise.
//!
//! It also prints the memory per idle connected QP on each side (the growth of each process's
//! resident set, `VmRSS`, from before the first connection to after the first round's full
//! set, once idle, divided by the count) and how long the connections took to set up.
//!
//! Both processes raise their open-file limit (`RLIMIT_NOFILE`) to what the count needs
//! (a socket per QP, plus the engine's own descriptors), as far as the hard limit allows.
//!
//! Every QP shares one CQ per side, and the server exposes one registered buffer (its address
//! and token travel in the accept's private data), so what is measured is the per-connection
//! cost of the QP, its connection state and its buffers.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use netdirect::{Buffer, Connector, Cq, Mr, Qp, QpConfig};
use netdirect_types::{BasicCompletion, Completion, MrFlags, OpFlags, RemoteToken, Sge, Status};

use crate::conn::Side;
use crate::error::{Context, Error, Result, wait};
use crate::meter::{LatMeter, new_hist};
use crate::outln;
use crate::report::median;

/// `nd scale` flags.
#[derive(Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Connected QPs to open in all.
    #[arg(short = 'n', long = "qps", default_value_t = 10_000)]
    pub qps: usize,
    /// QPs open for the reference latency.
    #[arg(long = "base", default_value_t = 16)]
    pub base: usize,
    /// Octets per RDMA read (and per TCP message).
    #[arg(short = 's', long = "size", default_value_t = 64)]
    pub size: usize,
    /// Reads per latency measurement (after 10% as many to warm up).
    #[arg(long = "iters", default_value_t = 10_000)]
    pub iters: usize,
    /// Rounds: each measures both conditions (base and all open).
    #[arg(long = "rounds", default_value_t = 3)]
    pub rounds: usize,
    /// Address of the adapter pair (127.0.0.1, or ::1 for IPv6).
    #[arg(short = 'a', long = "address", default_value = "127.0.0.1")]
    pub address: IpAddr,
    /// Connects in flight at once.
    #[arg(long = "window", default_value_t = 64)]
    pub window: usize,
    /// Seconds the connections stay idle before memory and latency are measured.
    #[arg(long = "settle", default_value_t = 2.0)]
    pub settle: f64,
    /// Skip the plain TCP reference.
    #[arg(long = "no-tcp")]
    pub no_tcp: bool,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Serve (the child process `nd scale` starts); prints the ports it listens on.
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

/// CPU time of process `pid`, all threads, user and kernel, in nanoseconds (`schedstat`).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// What the server's main loop hears: a connection request, or a connection's disconnect.
enum ServerEvent {
    Request(Box<dyn Connector>),
    Gone(u64),
}

/// A connected QP and its connector.
type Open = (Box<dyn Qp>, Box<dyn Connector>);

/// The server: accepts every connection on a QP of its own (one shared CQ), with the buffer's
/// address and token as private data, and closes it when the client disconnects; echoes plain
/// TCP on a second port. Answers `count` on stdin with `open <QPs> <TCP connections>`; exits
/// when its stdin closes.
pub fn serve(args: &ScaleArgs) -> Result<()> {
    raise_nofile(args.qps as u64 * 2 + 1024);
    let side = Side::open(args.address, TIMEOUT)?;
    let buf = Buffer::new(args.size.max(4096));
    let mr = register(&side, &buf, MrFlags::ALLOW_REMOTE_READ)?;
    let mut pd = buf.address().to_be_bytes().to_vec();
    pd.extend_from_slice(&mr.remote_token().0.to_be_bytes());
    let cq = shared_cq(&side, 64)?;
    let (tx, rx) = mpsc::channel::<ServerEvent>();
    let requests = Mutex::new(tx.clone());
    let listener = wait(
        side.adapter
            .create_listener(Arc::new(move |c: Box<dyn Connector>| {
                if let Ok(tx) = requests.lock() {
                    let _ = tx.send(ServerEvent::Request(c));
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
    let nd_open = Arc::new(AtomicUsize::new(0));
    let tcp_open = Arc::new(AtomicUsize::new(0));
    let tcp_port = tcp_echo(args.address, tcp_open.clone())?;
    outln!("listening {port} {tcp_port}");
    // The parent asks for the counts, and closes our stdin when it is done (or dies).
    let counts = (nd_open.clone(), tcp_open);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim() == "count" => outln!(
                    "open {} {}",
                    counts.0.load(Ordering::SeqCst),
                    counts.1.load(Ordering::SeqCst)
                ),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        std::process::exit(0);
    });
    let mut open: HashMap<u64, Open> = HashMap::new();
    let mut next = 0u64;
    while let Ok(ev) = rx.recv() {
        match ev {
            ServerEvent::Gone(key) => {
                // Dropping the QP and its connector closes them.
                open.remove(&key);
            }
            ServerEvent::Request(c) => {
                let qp = small_qp(&side, &*cq)?;
                let key = next;
                next += 1;
                let gone = tx.clone();
                let on_disconnect: netdirect::DisconnectEvent = Box::new(move || {
                    let _ = gone.send(ServerEvent::Gone(key));
                });
                // A client that closes at once may end the connection before the accept
                // completes: the accept then fails, and no disconnect event comes.
                let failed = tx.clone();
                c.accept(&*qp, 1, 1, &pd, Some(on_disconnect))
                    .on_complete(move |r| {
                        if r.is_err() {
                            let _ = failed.send(ServerEvent::Gone(key));
                        }
                    });
                open.insert(key, (qp, c));
            }
        }
        nd_open.store(open.len(), Ordering::SeqCst);
    }
    Ok(())
}

/// The plain TCP reference: an `epoll` thread (as the soft RNIC's progress thread) that
/// echoes what each connection sends and closes it at EOF; `open` counts its connections.
/// Returns the port.
fn tcp_echo(address: IpAddr, open: Arc<AtomicUsize>) -> Result<u16> {
    use mio::net::TcpListener;
    use mio::{Events, Interest, Poll, Token};
    let io = |what: &'static str| move |e: std::io::Error| Error::msg(format!("{what}: {e}"));
    const LISTENER: Token = Token(usize::MAX);
    // A backlog well above the client's connects in flight (`tcp_connect_to`): a connection
    // that overflows it is established for the client but never accepted (mio's own is 128).
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(SocketAddr::new(address, 0)),
        socket2::Type::STREAM,
        None,
    )
    .map_err(io("cannot listen for plain TCP"))?;
    socket
        .set_reuse_address(true)
        .and_then(|()| socket.bind(&SocketAddr::new(address, 0).into()))
        .and_then(|()| socket.listen(4096))
        .and_then(|()| socket.set_nonblocking(true))
        .map_err(io("cannot listen for plain TCP"))?;
    let mut listener = TcpListener::from_std(socket.into());
    let port = listener
        .local_addr()
        .map_err(io("cannot read the TCP listener's address"))?
        .port();
    let mut poll = Poll::new().map_err(io("cannot create an epoll instance"))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(io("cannot register the TCP listener"))?;
    std::thread::spawn(move || {
        let mut events = Events::with_capacity(256);
        let mut conns: HashMap<usize, mio::net::TcpStream> = HashMap::new();
        let mut next = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Err(e) = poll.poll(&mut events, None) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            for ev in events.iter() {
                if ev.token() == LISTENER {
                    // Edge-triggered: accept until the queue is empty. A connection reset
                    // while queued fails its accept alone; stopping there would leave the
                    // rest queued with no event to come.
                    loop {
                        match listener.accept() {
                            Ok((mut s, _)) => {
                                let _ = s.set_nodelay(true);
                                if poll
                                    .registry()
                                    .register(&mut s, Token(next), Interest::READABLE)
                                    .is_ok()
                                {
                                    conns.insert(next, s);
                                    next += 1;
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    ErrorKind::ConnectionAborted
                                        | ErrorKind::ConnectionReset
                                        | ErrorKind::Interrupted
                                ) => {}
                            Err(_) => break,
                        }
                    }
                    open.store(conns.len(), Ordering::SeqCst);
                    continue;
                }
                let id = ev.token().0;
                let Some(s) = conns.get_mut(&id) else {
                    continue;
                };
                // Edge-triggered: read until the socket is empty.
                let closed = loop {
                    match s.read(&mut buf) {
                        Ok(0) => break true,
                        Ok(n) => {
                            if write_all(s, &buf[..n]).is_err() {
                                break true;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => break true,
                    }
                };
                if closed {
                    if let Some(mut s) = conns.remove(&id) {
                        let _ = poll.registry().deregister(&mut s);
                    }
                    open.store(conns.len(), Ordering::SeqCst);
                }
            }
        }
    });
    Ok(port)
}

/// Writes all of `data` to a non-blocking socket, spinning while it is full.
fn write_all(s: &mut impl Write, mut data: &[u8]) -> std::io::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    while !data.is_empty() {
        match s.write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                if Instant::now() > deadline {
                    return Err(ErrorKind::TimedOut.into());
                }
                std::hint::spin_loop();
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One latency measurement: the samples (nanoseconds) and the server's CPU time per round trip.
struct Measured {
    hist: Histogram<u64>,
    server_cpu_ns: f64,
}

impl Measured {
    fn p50_us(&self) -> f64 {
        self.hist.value_at_quantile(0.5) as f64 / 1000.0
    }

    fn p99_us(&self) -> f64 {
        self.hist.value_at_quantile(0.99) as f64 / 1000.0
    }
}

/// Times `iters` round trips (after a tenth as many unrecorded), and the server's CPU meanwhile.
fn measure(
    iters: usize,
    server: u32,
    mut round_trip: impl FnMut(u64) -> Result<()>,
) -> Result<Measured> {
    let mut meter = LatMeter::new(false, iters as u64 / 10)?;
    let total = iters + iters / 10;
    let cpu = cpu_ns(server);
    for i in 0..total {
        meter.time(|| round_trip(i as u64))?;
    }
    let cpu = cpu_ns(server).saturating_sub(cpu);
    Ok(Measured {
        hist: meter.into_histogram(),
        server_cpu_ns: cpu as f64 / total.max(1) as f64,
    })
}

/// One RDMA read of `sge` from `remote`, busy-polling `cq` for its completion.
fn read_once(
    qp: &mut dyn Qp,
    cq: &mut dyn Cq,
    sge: Sge,
    remote: (u64, RemoteToken),
    id: u64,
) -> Result<()> {
    let mut results = [BasicCompletion::from(Completion::EMPTY); 4];
    qp.initiator()
        .read(id, &[sge], remote.0, remote.1, OpFlags::empty())
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
}

/// One plain TCP round trip: `out` sent, as many octets echoed back, busy-polled.
fn tcp_once(s: &mut TcpStream, out: &[u8], back: &mut [u8]) -> Result<()> {
    let io = |e: std::io::Error| Error::msg(format!("plain TCP round trip: {e}"));
    write_all(s, out).map_err(io)?;
    let deadline = Instant::now() + TIMEOUT;
    let mut got = 0;
    while got < back.len() {
        match s.read(&mut back[got..]) {
            Ok(0) => return Err(Error::msg("the TCP echo server closed the connection")),
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                if Instant::now() > deadline {
                    return Err(Error::status(
                        "a TCP echo did not come back",
                        Status::IO_TIMEOUT,
                    ));
                }
                std::hint::spin_loop();
            }
            Err(e) => return Err(io(e)),
        }
    }
    Ok(())
}

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

/// Opens plain TCP connections to `to` until `open` holds `n`: non-blocking connects, a batch
/// (less than the listen backlog) in flight at a time, until the server has accepted them all.
fn tcp_connect_to(
    to: SocketAddr,
    open: &mut Vec<TcpStream>,
    n: usize,
    server: &mut Server,
) -> Result<()> {
    use socket2::{Domain, Socket, Type};
    const BATCH: usize = 256;
    let fail = |e: std::io::Error| Error::msg(format!("cannot connect plain TCP to {to}: {e}"));
    while open.len() < n {
        if open.len() % BATCH == 0 {
            let have = open.len();
            server.wait_for("the TCP connections so far", |(_, t)| t >= have)?;
        }
        let s = Socket::new(Domain::for_address(to), Type::STREAM, None).map_err(fail)?;
        s.set_nonblocking(true).map_err(fail)?;
        // Closed with a reset: no TIME_WAIT left behind for the next round's connects.
        s.set_linger(Some(Duration::ZERO)).map_err(fail)?;
        match s.connect(&to.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc_einprogress()) => {}
            Err(e) => return Err(fail(e)),
        }
        open.push(s.into());
    }
    server.wait_for("all TCP connections", |(_, t)| t >= n)
}

/// `EINPROGRESS`: a non-blocking connect under way.
fn libc_einprogress() -> i32 {
    rustix::io::Errno::INPROGRESS.raw_os_error()
}

struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    port: u16,
    tcp_port: u16,
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
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let ports: Vec<u16> = line
            .trim()
            .strip_prefix("listening ")
            .map(|p| p.split(' ').filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default();
        let [port, tcp_port] = ports[..] else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::msg(format!("the server process said {line:?}")));
        };
        Ok(Server {
            child,
            stdin,
            stdout,
            port,
            tcp_port,
        })
    }

    /// The server's open connections: (QPs, plain TCP).
    fn count(&mut self) -> Result<(usize, usize)> {
        let gone = || Error::msg("the server process is gone");
        let stdin = self.stdin.as_mut().ok_or_else(gone)?;
        stdin.write_all(b"count\n").map_err(|_| gone())?;
        stdin.flush().map_err(|_| gone())?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).map_err(|_| gone())?;
        let n: Vec<usize> = line
            .trim()
            .strip_prefix("open ")
            .map(|p| p.split(' ').filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default();
        match n[..] {
            [qps, tcp] => Ok((qps, tcp)),
            _ => Err(Error::msg(format!("the server process said {line:?}"))),
        }
    }

    /// Waits until the server's counts satisfy `done`.
    fn wait_for(&mut self, what: &str, done: impl Fn((usize, usize)) -> bool) -> Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let n = self.count()?;

            if done(n) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::status(
                    format!("the server did not get to {what} (it has {n:?})"),
                    Status::IO_TIMEOUT,
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// One round's four measurements (TCP ones absent with `--no-tcp`).
struct Round {
    nd: [Measured; 2],
    tcp: Option<[Measured; 2]>,
    setup: Duration,
}

/// The median of the pooled samples of `rounds`.
fn pooled_p50<'a>(rounds: impl Iterator<Item = &'a Measured>) -> Result<f64> {
    let mut all = new_hist()?;
    for m in rounds {
        all.add(&m.hist)
            .map_err(|e| Error::msg(format!("cannot pool the samples: {e}")))?;
    }
    Ok(all.value_at_quantile(0.5) as f64 / 1000.0)
}

/// The client: starts the server, runs the rounds, prints the figures.
pub fn run(args: &ScaleArgs) -> Result<()> {
    if args.serve {
        return serve(args);
    }
    let base_n = args.base.max(1);
    if args.qps < base_n {
        return Err(Error::msg("--qps must be at least --base"));
    }
    let limit = raise_nofile(args.qps as u64 * 2 + 1024);
    if limit < args.qps as u64 + 64 {
        return Err(Error::msg(format!(
            "the open-file limit is {limit} and cannot be raised to {} (hard limit)",
            args.qps + 1024
        )));
    }
    let mut server = Server::start(args)?;
    let pid = server.child.id();
    let to = SocketAddr::new(args.address, server.port);
    let tcp_to = SocketAddr::new(args.address, server.tcp_port);
    let side = Side::open(args.address, TIMEOUT)?;
    let mut cq = shared_cq(&side, 64)?;
    let sink = Buffer::new(args.size.max(4096));
    let sink_mr = register(
        &side,
        &sink,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK,
    )?;
    let sge = Sge::new(sink.address(), args.size as u32, sink_mr.local_token());
    let settle = Duration::from_secs_f64(args.settle.max(0.0));
    // Let the server settle before the baseline.
    std::thread::sleep(Duration::from_millis(300));
    let rss_base = (rss(None)?, rss(Some(pid))?);
    let mut rss_full = rss_base;

    let mut open: Vec<Open> = Vec::new();
    let mut remote = (0u64, RemoteToken(0));
    let started = Instant::now();
    connect_to(&side, &*cq, args, to, &mut open, base_n, &mut remote)?;
    let base_setup = started.elapsed();
    let mut tcp_open: Vec<TcpStream> = Vec::new();
    if !args.no_tcp {
        tcp_connect_to(tcp_to, &mut tcp_open, base_n, &mut server)?;
        let s = &tcp_open[0];
        s.set_nodelay(true)
            .and_then(|()| s.set_nonblocking(true))
            .map_err(|e| Error::msg(format!("cannot set up the TCP reference: {e}")))?;
    }
    server.wait_for("the base connections", |(q, t)| {
        q >= base_n && (args.no_tcp || t >= base_n)
    })?;
    let out = vec![0x5au8; args.size];
    let mut back = vec![0u8; args.size];

    let mut rounds: Vec<Round> = Vec::new();
    for r in 0..args.rounds.max(1) {
        let (qp0, _) = &mut open[0];
        let nd_base = measure(args.iters, pid, |i| {
            read_once(&mut **qp0, &mut *cq, sge, remote, i)
        })?;
        let tcp_base = match tcp_open.first_mut() {
            Some(s) => Some(measure(args.iters, pid, |_| tcp_once(s, &out, &mut back))?),
            None => None,
        };
        // All QPs open.
        let t = Instant::now();
        connect_to(&side, &*cq, args, to, &mut open, args.qps, &mut remote)?;
        let setup = t.elapsed();
        server.wait_for("all connections", |(q, _)| q >= args.qps)?;
        std::thread::sleep(settle);
        if r == 0 {
            rss_full = (rss(None)?, rss(Some(pid))?);
        }
        let (qp0, _) = &mut open[0];
        let nd_full = measure(args.iters, pid, |i| {
            read_once(&mut **qp0, &mut *cq, sge, remote, i)
        })?;
        // Back to the base: the added QPs close, and the server closes its ends.
        open.truncate(base_n);
        server.wait_for("the base connections", |(q, _)| q <= base_n)?;
        // As many plain TCP connections open.
        let tcp = match tcp_base {
            Some(tcp_base) => {
                tcp_connect_to(tcp_to, &mut tcp_open, args.qps, &mut server)?;
                server.wait_for("all TCP connections", |(_, t)| t >= args.qps)?;
                std::thread::sleep(settle);
                let s = &mut tcp_open[0];
                let tcp_full = measure(args.iters, pid, |_| tcp_once(s, &out, &mut back))?;
                tcp_open.truncate(base_n);
                server.wait_for("the base TCP connections", |(_, t)| t <= base_n)?;
                Some([tcp_base, tcp_full])
            }
            None => None,
        };
        // The closes' aftermath (TIME_WAIT, the engines' reaping) out of the next round's way.
        std::thread::sleep(settle.min(Duration::from_millis(500)));
        rounds.push(Round {
            nd: [nd_base, nd_full],
            tcp,
            setup,
        });
    }

    let n = args.qps as f64;
    let per_client = rss_full.0.saturating_sub(rss_base.0) as f64 / n;
    let per_server = rss_full.1.saturating_sub(rss_base.1) as f64 / n;
    let added = (args.qps - base_n).max(1) as f64;
    let setup_per_1000 = median(
        rounds
            .iter()
            .map(|r| r.setup.as_secs_f64() * 1000.0 / added)
            .collect(),
    );
    let nd_p50 = [
        pooled_p50(rounds.iter().map(|r| &r.nd[0]))?,
        pooled_p50(rounds.iter().map(|r| &r.nd[1]))?,
    ];
    let nd_ratio = nd_p50[1] / nd_p50[0];
    let tcp_p50 = if args.no_tcp {
        None
    } else {
        Some([
            pooled_p50(rounds.iter().filter_map(|r| r.tcp.as_ref().map(|t| &t[0])))?,
            pooled_p50(rounds.iter().filter_map(|r| r.tcp.as_ref().map(|t| &t[1])))?,
        ])
    };
    let tcp_ratio = tcp_p50.map(|p| p[1] / p[0]);
    let cpu = |pick: &dyn Fn(&Round) -> Option<&Measured>| {
        median(
            rounds
                .iter()
                .filter_map(pick)
                .map(|m| m.server_cpu_ns / 1000.0)
                .collect(),
        )
    };
    let nd_cpu = [cpu(&|r| Some(&r.nd[0])), cpu(&|r| Some(&r.nd[1]))];
    let tcp_cpu = [
        cpu(&|r| r.tcp.as_ref().map(|t| &t[0])),
        cpu(&|r| r.tcp.as_ref().map(|t| &t[1])),
    ];
    if args.json {
        let lat = |m: &Measured| ScaleLat {
            p50: m.p50_us(),
            p99: m.p99_us(),
            server_cpu_us: m.server_cpu_ns / 1000.0,
        };
        let v = ScaleReport {
            qps: args.qps,
            base_qps: base_n,
            address: args.address.to_string(),
            rss_per_idle_qp_client_bytes: per_client,
            rss_per_idle_qp_server_bytes: per_server,
            rss_client_bytes: [rss_base.0, rss_full.0],
            rss_server_bytes: [rss_base.1, rss_full.1],
            read_size: args.size,
            iters: args.iters,
            rounds: rounds
                .iter()
                .map(|r| ScaleRound {
                    nd_base_us: lat(&r.nd[0]),
                    nd_full_us: lat(&r.nd[1]),
                    nd_p50_ratio: r.nd[1].p50_us() / r.nd[0].p50_us(),
                    tcp_base_us: r.tcp.as_ref().map(|t| lat(&t[0])),
                    tcp_full_us: r.tcp.as_ref().map(|t| lat(&t[1])),
                    tcp_p50_ratio: r.tcp.as_ref().map(|t| t[1].p50_us() / t[0].p50_us()),
                    setup_s: r.setup.as_secs_f64(),
                })
                .collect(),
            read_lat_p50_base_us: nd_p50[0],
            read_lat_p50_full_us: nd_p50[1],
            read_lat_p50_ratio: nd_ratio,
            tcp_lat_p50_base_us: tcp_p50.map(|p| p[0]),
            tcp_lat_p50_full_us: tcp_p50.map(|p| p[1]),
            tcp_lat_p50_ratio: tcp_ratio,
            server_cpu_per_read_us: nd_cpu,
            server_cpu_per_tcp_round_trip_us: tcp_ratio.map(|_| tcp_cpu),
            setup_s_per_1000: setup_per_1000,
            base_setup_s: base_setup.as_secs_f64(),
        };
        crate::report::emit(crate::report::JsonMode::Document, &v);
    } else {
        outln!(
            "nd scale: {} connected QPs on {} ({} open for the base), {} rounds of {} {} B round trips per condition",
            args.qps,
            args.address,
            base_n,
            rounds.len(),
            args.iters,
            args.size
        );
        outln!(
            "memory per idle connected QP: client {:.1} KiB, server {:.1} KiB (RSS {} -> {} KiB, {} -> {} KiB)",
            per_client / 1024.0,
            per_server / 1024.0,
            rss_base.0 / 1024,
            rss_full.0 / 1024,
            rss_base.1 / 1024,
            rss_full.1 / 1024
        );
        outln!(
            "round  RDMA read p50/p99 us: {:>5} open   {:>5} open  ratio | plain TCP echo: {:>5} open   {:>5} open  ratio",
            base_n,
            args.qps,
            base_n,
            args.qps
        );
        for (i, r) in rounds.iter().enumerate() {
            let pair = |m: &Measured| format!("{:.1}/{:.1}", m.p50_us(), m.p99_us());
            let tcp = match &r.tcp {
                Some(t) => format!(
                    "{:>16} {:>12} {:>5.2}x",
                    pair(&t[0]),
                    pair(&t[1]),
                    t[1].p50_us() / t[0].p50_us()
                ),
                None => "-".into(),
            };
            outln!(
                "{:>5}  {:>22} {:>12} {:>5.2}x | {tcp}",
                i + 1,
                pair(&r.nd[0]),
                pair(&r.nd[1]),
                r.nd[1].p50_us() / r.nd[0].p50_us(),
            );
        }
        outln!(
            "RDMA read p50 (all rounds): {} open {:.1} us, {} open {:.1} us: ratio {:.2}x",
            base_n,
            nd_p50[0],
            args.qps,
            nd_p50[1],
            nd_ratio
        );
        if let (Some(p), Some(tr)) = (tcp_p50, tcp_ratio) {
            outln!(
                "plain TCP echo p50 (all rounds): {} open {:.1} us, {} open {:.1} us: ratio {:.2}x (the kernel's share); netdirect's ratio over TCP's {:.2}",
                base_n,
                p[0],
                args.qps,
                p[1],
                tr,
                nd_ratio / tr
            );
        }
        outln!(
            "server CPU per round trip (median of rounds): RDMA read {:.1} -> {:.1} us{}",
            nd_cpu[0],
            nd_cpu[1],
            if args.no_tcp {
                String::new()
            } else {
                format!("; plain TCP {:.1} -> {:.1} us", tcp_cpu[0], tcp_cpu[1])
            }
        );
        outln!("setup: {setup_per_1000:.2} s per 1,000 connections (median of rounds)");
    }
    let _ = std::io::stdout().flush();
    // Close the client's connections before the server goes.
    drop(tcp_open);
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

    #[test]
    fn cpu_time_is_read_and_medians_are_medians() {
        let me = std::process::id();
        let a = cpu_ns(me);
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        assert!(cpu_ns(me) > a, "the CPU time did not grow");
        assert_eq!(cpu_ns(u32::MAX), 0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn the_tcp_reference_echoes_and_counts_its_connections() {
        let open = Arc::new(AtomicUsize::new(0));
        let addr = IpAddr::from([127, 0, 0, 1]);
        let port = tcp_echo(addr, open.clone()).unwrap();
        let mut s = TcpStream::connect((addr, port)).unwrap();
        s.set_nonblocking(true).unwrap();
        let mut back = [0u8; 64];
        tcp_once(&mut s, &[7u8; 64], &mut back).unwrap();
        assert_eq!(back, [7u8; 64]);
        let extra = TcpStream::connect((addr, port)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while open.load(Ordering::SeqCst) != 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(open.load(Ordering::SeqCst), 2);
        drop(extra);
        while open.load(Ordering::SeqCst) != 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(open.load(Ordering::SeqCst), 1);
    }
}

/// `nd scale --json`.
#[derive(Debug, serde::Serialize)]
struct ScaleReport {
    qps: usize,
    base_qps: usize,
    address: String,
    rss_per_idle_qp_client_bytes: f64,
    rss_per_idle_qp_server_bytes: f64,
    rss_client_bytes: [u64; 2],
    rss_server_bytes: [u64; 2],
    read_size: usize,
    iters: usize,
    rounds: Vec<ScaleRound>,
    /// Medians of all rounds' samples pooled.
    read_lat_p50_base_us: f64,
    read_lat_p50_full_us: f64,
    read_lat_p50_ratio: f64,
    tcp_lat_p50_base_us: Option<f64>,
    tcp_lat_p50_full_us: Option<f64>,
    tcp_lat_p50_ratio: Option<f64>,
    /// Base, full: median of the rounds.
    server_cpu_per_read_us: [f64; 2],
    server_cpu_per_tcp_round_trip_us: Option<[f64; 2]>,
    setup_s_per_1000: f64,
    base_setup_s: f64,
}

/// One round of `nd scale --json`.
#[derive(Debug, serde::Serialize)]
struct ScaleRound {
    nd_base_us: ScaleLat,
    nd_full_us: ScaleLat,
    nd_p50_ratio: f64,
    tcp_base_us: Option<ScaleLat>,
    tcp_full_us: Option<ScaleLat>,
    tcp_p50_ratio: Option<f64>,
    setup_s: f64,
}

/// One latency measurement, microseconds.
#[derive(Debug, serde::Serialize)]
struct ScaleLat {
    p50: f64,
    p99: f64,
    server_cpu_us: f64,
}
