//! The perftest personas' engine: one server, one client, the six tests, shared by
//! `nd write-bw …` and `nd bench`.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use netdirect::Connector;
use netdirect_types::{AdapterInfo, RdmaTechnology, Status};

use crate::conn::{Conn, Event, Layout, MIN_RX, Side, idle};
use crate::error::{Context, Error, Result, explain, wait};
use crate::meter::LatMeter;
pub use crate::meter::new_hist;
use crate::proto::{CTRL_LEN, Ctrl, Hello, Kind, check_pattern};

/// perftest's default port (`DEF_PORT`).
pub const DEFAULT_PORT: u16 = 18515;
/// Receive-ring memory a side commits at most for Send tests.
const RX_BYTES: usize = 64 << 20;

/// The six tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// RDMA write bandwidth.
    WriteBw,
    /// RDMA read bandwidth.
    ReadBw,
    /// Send bandwidth.
    SendBw,
    /// RDMA write latency (ping-pong by writes, polling memory).
    WriteLat,
    /// RDMA read latency.
    ReadLat,
    /// Send latency (ping-pong).
    SendLat,
}

impl Test {
    /// The id carried in the connect private data.
    pub fn id(self) -> u8 {
        self as u8 + 1
    }

    /// `write_bw`, … (perftest's binary names without `ib_`).
    pub fn name(self) -> &'static str {
        match self {
            Test::WriteBw => "write_bw",
            Test::ReadBw => "read_bw",
            Test::SendBw => "send_bw",
            Test::WriteLat => "write_lat",
            Test::ReadLat => "read_lat",
            Test::SendLat => "send_lat",
        }
    }

    /// The NetworkDirect persona of this test: `ping` (Send stream), `pingpong` (Send
    /// ping-pong), `rping` (RDMA read stream), `rpingpong` (one read at a time), `wping` (RDMA
    /// write stream), `wpingpong` (RDMA write ping-pong).
    pub fn nd_name(self) -> &'static str {
        match self {
            Test::SendBw => "ping",
            Test::SendLat => "pingpong",
            Test::ReadBw => "rping",
            Test::ReadLat => "rpingpong",
            Test::WriteBw => "wping",
            Test::WriteLat => "wpingpong",
        }
    }

    /// perftest's title line.
    pub fn title(self) -> &'static str {
        match self {
            Test::WriteBw => "RDMA_Write BW Test",
            Test::ReadBw => "RDMA_Read BW Test",
            Test::SendBw => "Send BW Test",
            Test::WriteLat => "RDMA_Write Latency Test",
            Test::ReadLat => "RDMA_Read Latency Test",
            Test::SendLat => "Send Latency Test",
        }
    }

    /// A bandwidth test.
    pub fn is_bw(self) -> bool {
        matches!(self, Test::WriteBw | Test::ReadBw | Test::SendBw)
    }

    /// A Send test.
    pub fn is_send(self) -> bool {
        matches!(self, Test::SendBw | Test::SendLat)
    }

    /// An RDMA read test.
    pub fn is_read(self) -> bool {
        matches!(self, Test::ReadBw | Test::ReadLat)
    }

    fn from_id(id: u8) -> Option<Test> {
        [
            Test::WriteBw,
            Test::ReadBw,
            Test::SendBw,
            Test::WriteLat,
            Test::ReadLat,
            Test::SendLat,
        ]
        .into_iter()
        .find(|t| t.id() == id)
    }
}

/// When a measurement stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this many operations (`-n`).
    Iters(u64),
    /// After this long (`-D`).
    Duration(Duration),
    /// The NetworkDirect tools' rule: `min(max_iters, max_volume / size)` operations (at
    /// least 1) for each size.
    Sweep {
        /// Iterations at most.
        max_iters: u64,
        /// Octets moved per size at most.
        max_volume: u64,
    },
}

impl Stop {
    /// The stop rule of one size: [`Stop::Sweep`] becomes [`Stop::Iters`].
    pub fn for_size(self, size: usize) -> Stop {
        match self {
            Stop::Sweep {
                max_iters,
                max_volume,
            } => Stop::Iters(max_iters.min(max_volume / size.max(1) as u64).max(1)),
            s => s,
        }
    }
}

/// Options of a run (the perftest flags).
#[derive(Debug, Clone)]
pub struct Opts {
    /// The test.
    pub test: Test,
    /// Message sizes, one measurement each.
    pub sizes: Vec<usize>,
    /// Iterations or duration.
    pub stop: Stop,
    /// QPs (`-q`, bandwidth tests).
    pub qps: usize,
    /// TCP port.
    pub port: u16,
    /// Requests in flight per QP (`-t`).
    pub tx_depth: usize,
    /// Receives the server keeps posted for Send tests (`-r`).
    pub rx_depth: usize,
    /// Inline threshold (`-I`).
    pub inline: u32,
    /// `-I` was given: an adapter whose MaxInlineDataSize is smaller refuses the run, where
    /// the default is lowered to the adapter's limit ([`Opts::fit`]).
    pub inline_explicit: bool,
    /// Outstanding reads (`-o`).
    pub outs: u32,
    /// Longest wait for anything.
    pub timeout: Duration,
    /// Local address (server: listen there only; client: connect from there).
    pub bind: Option<IpAddr>,
    /// Unmeasured operations before each measurement.
    pub warmup: u64,
    /// Cap of the bytes in flight per QP (bench), on top of `-t`.
    pub window_bytes: Option<usize>,
    /// The NetworkDirect personas (`nd ping` …) rather than perftest's: another test id on
    /// the wire and their names in messages.
    pub nd: bool,
    /// Check every message that arrives (Sends) against the pattern, not only the last.
    pub check_every: bool,
    /// Scatter/gather entries per data request (Sends and writes; reads use 1).
    pub sge: usize,
    /// An unreported warm-up measurement first: (size, operations), as the ND tools' 1000
    /// header-size messages.
    pub warmup_phase: Option<(usize, u64)>,
    /// perftest's `-e`: wait for completions by blocking on the CQ's notification
    /// ([`netdirect::Cq::wait`]) instead of busy polling.
    pub events: bool,
    /// perftest's `--run_infinitely`: measure the (one) size again and again, a row each
    /// time, until interrupted; the interruption is the run's normal end.
    pub forever: bool,
    /// perftest's `--use-srq`: each QP takes its receives from a shared receive queue.
    pub srq: bool,
    /// perftest's `-U`: keep every latency sample in run order.
    pub unsorted: bool,
    /// perftest's `-b`: both sides move data toward each other at once.
    pub bidir: bool,
    /// perftest's `--report-both` (with `-b`): report each direction instead of their sum.
    pub report_both: bool,
}

impl Opts {
    /// The options of `test` with perftest's defaults for everything else.
    pub fn new(test: Test) -> Opts {
        let bw = test.is_bw();
        Opts {
            test,
            sizes: vec![if bw { 65536 } else { 2 }],
            stop: Stop::Iters(1000),
            qps: 1,
            port: DEFAULT_PORT,
            tx_depth: if bw { 128 } else { 1 },
            rx_depth: 512,
            inline: if bw { 0 } else { 220 },
            inline_explicit: false,
            outs: 16,
            timeout: Duration::from_secs(60),
            bind: None,
            warmup: 0,
            window_bytes: None,
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

    /// The test's name as the user typed it (`write_bw`, or `wping` for the ND personas).
    pub fn name(&self) -> &'static str {
        if self.nd {
            self.test.nd_name()
        } else {
            self.test.name()
        }
    }

    /// The test id carried in the connect private data.
    fn wire_id(&self) -> u8 {
        self.test.id() + if self.nd { ND_ID_OFFSET } else { 0 }
    }

    fn max_size(&self) -> usize {
        let w = self.warmup_phase.map_or(0, |(s, _)| s);
        self.sizes.iter().copied().max().unwrap_or(1).max(w)
    }
}

/// Added to [`Test::id`] on the wire by the ND personas.
const ND_ID_OFFSET: u8 = 16;

/// The name of the test behind wire id `id`.
fn name_of_id(id: u8) -> &'static str {
    if id > ND_ID_OFFSET {
        Test::from_id(id - ND_ID_OFFSET).map_or("an unknown test", Test::nd_name)
    } else {
        Test::from_id(id).map_or("an unknown test", Test::name)
    }
}

/// One bandwidth result.
#[derive(Debug, Clone, Copy)]
pub struct BwRow {
    /// Message size.
    pub size: usize,
    /// Operations completed (all QPs).
    pub iters: u64,
    /// Peak bandwidth, bytes/s.
    pub peak: f64,
    /// Average bandwidth, bytes/s.
    pub avg: f64,
    /// Messages per second.
    pub msg_rate: f64,
    /// Seconds measured.
    pub secs: f64,
}

/// One latency result (histogram in nanoseconds; one-way = half round trip for ping-pong).
#[derive(Debug, Clone)]
pub struct LatRow {
    /// Message size.
    pub size: usize,
    /// Samples.
    pub hist: Histogram<u64>,
    /// Every sample in run order, nanoseconds (`-U`; empty without it).
    pub samples: Vec<u64>,
}

/// A measurement of one size.
#[derive(Debug, Clone)]
pub enum Row {
    /// Bandwidth.
    Bw(BwRow),
    /// Latency.
    Lat(LatRow),
}

impl Row {
    /// The message size measured.
    pub fn size(&self) -> usize {
        match self {
            Row::Bw(r) => r.size,
            Row::Lat(r) => r.size,
        }
    }
}

/// What a client run found.
#[derive(Debug, Clone)]
pub struct ClientRun {
    /// The adapter's info.
    pub info: AdapterInfo,
    /// Local address of QP 0's connection.
    pub local: SocketAddr,
    /// The server's address.
    pub remote: SocketAddr,
    /// Local and remote buffer/token of QP 0: (address, token).
    pub buffers: [(u64, u32); 2],
    /// One row per size.
    pub rows: Vec<Row>,
    /// Whether the data was checked and found right (every size, both sides).
    pub verified: bool,
    /// Per row: wall-clock seconds of the measurement (posting to last completion).
    pub secs: Vec<f64>,
    /// Per row: CPU time of this process during the measurement, in percent of all CPUs.
    pub cpu: Vec<f64>,
    /// Ctrl-C ended the run early: `rows` holds what was measured.
    pub interrupted: bool,
    /// `-b`: per row, this side's sending (TX) and the peer's (RX), whose sum is the row; when
    /// `on_row` runs, the entry of the row handed to it is already the last.
    pub directions: Vec<[BwRow; 2]>,
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// The window of requests in flight per QP for `size`.
fn window(opts: &Opts, size: usize) -> usize {
    let mut w = opts.tx_depth.max(1);
    if opts.test.is_read() {
        w = w.min(opts.outs.max(1) as usize);
    }
    if let Some(bytes) = opts.window_bytes {
        w = w.min((bytes / size.max(1)).max(2));
    }
    if !opts.test.is_bw() {
        w = 1;
    }
    w
}

/// Buffer and queue layout for a run whose largest message is `max_size`, on an adapter whose
/// receives take up to `receive_sge` entries.
fn layout(opts: &Opts, max_size: usize, server: bool, receive_sge: u32) -> Layout {
    let half = if opts.test.is_bw() {
        max_size.max(crate::conn::CYCLE_BUFFER)
    } else {
        max_size
    };
    let slot = if opts.test.is_send() {
        max_size.max(CTRL_LEN)
    } else {
        CTRL_LEN
    };
    // perftest's receives of more than half its cycle buffer all point at the same octets: a
    // send-bw target moves data into one cache-resident buffer, as its write-bw target and a
    // TCP receiver do. Ours keep a private head per slot for the control messages. A ring of
    // whole slots (up to 64 MiB, mostly out of cache) made every placement a miss: `nd bench`'s
    // Send cells read 0.6-0.9x TCP from 256 KiB up, where its Write cells read 1.1-1.5x.
    let private_head =
        if opts.test == Test::SendBw && slot > crate::conn::CYCLE_BUFFER / 2 && receive_sge >= 2 {
            CTRL_LEN
        } else {
            0
        };
    let rx_depth = if opts.test.is_send() {
        // A send-bw client receives only control messages; a send-lat client gets a pong per
        // ping, and its credits go back once per quarter of its ring (a control message on
        // the critical path of that ping): the full depth keeps them rare.
        let want = if server || opts.test == Test::SendLat {
            opts.rx_depth
        } else {
            64
        };
        let own = if private_head > 0 { private_head } else { slot };
        want.min(RX_BYTES / own).max(MIN_RX)
    } else {
        2 * MIN_RX
    };
    Layout {
        half: round_up(half.max(1), 4096),
        slot,
        rx_depth,
        tx_depth: if opts.test.is_bw() {
            opts.tx_depth.max(1)
        } else {
            2
        },
        inline: opts.inline.max(CTRL_LEN as u32),
        data_inline: opts.inline,
        read_limit: opts.outs.clamp(1, 128),
        sge: opts.sge.max(1),
        srq: opts.srq,
        private_head,
    }
}

impl Opts {
    /// These options on an adapter with `info`'s limits: a default inline size (perftest's 220
    /// for latency tests) above the adapter's MaxInlineDataSize becomes that limit (siw allows
    /// 64); an explicit `-I` is kept, and the run refuses it (`STATUS_INVALID_PARAMETER`,
    /// naming the limit).
    pub fn fit(&self, info: &AdapterInfo) -> Opts {
        let mut o = self.clone();
        if !o.inline_explicit {
            o.inline = o.inline.min(info.max_inline_data_size);
        }
        o
    }
}

/// Checks the run's sizes and inline size against the adapter's limits.
fn check_limits(opts: &Opts, info: &AdapterInfo) -> Result<()> {
    let max = opts.max_size();
    if max as u64 > u64::from(info.max_transfer_length) {
        return Err(Error::status(
            format!(
                "message size {max} exceeds the adapter's MaxTransferLength {}",
                info.max_transfer_length
            ),
            Status::INVALID_BUFFER_SIZE,
        ));
    }
    if opts.inline > info.max_inline_data_size {
        return Err(Error::status(
            format!(
                "inline size {} exceeds the adapter's MaxInlineDataSize {}",
                opts.inline, info.max_inline_data_size
            ),
            Status::INVALID_PARAMETER,
        ));
    }
    if opts.sge == 0 || opts.sge as u64 > u64::from(info.max_initiator_request_sge) {
        return Err(Error::status(
            format!(
                "{} scatter/gather entries per request: the adapter's MaxInitiatorRequestSge is {} (and at least 1 is needed)",
                opts.sge, info.max_initiator_request_sge
            ),
            Status::INVALID_PARAMETER,
        ));
    }
    let depth = opts.tx_depth as u64 + crate::conn::CTRL_TX as u64;
    if depth > u64::from(info.max_initiator_queue_depth) {
        return Err(Error::status(
            format!(
                "TX depth {} exceeds the adapter's MaxInitiatorQueueDepth {}",
                opts.tx_depth, info.max_initiator_queue_depth
            ),
            Status::INVALID_PARAMETER,
        ));
    }
    Ok(())
}

/// The local address to use to reach `remote`: `--bind` if given, else [`crate::conn::local_for`].
fn local_for(remote: IpAddr, bind: Option<IpAddr>) -> Result<IpAddr> {
    bind.map_or_else(|| crate::conn::local_for(remote), Ok)
}

// ---------------------------------------------------------------------------------------------
// Client

/// Set by SIGINT (Ctrl-C) once [`stop_on_interrupt`] ran: measurements end early, the run
/// ends after the current size with a clean disconnect, and what was measured is reported.
static INTERRUPTED: std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>> =
    std::sync::OnceLock::new();

/// Makes Ctrl-C end a client run cleanly instead of killing the process (a second Ctrl-C
/// kills it as usual).
pub fn stop_on_interrupt() {
    let flag = INTERRUPTED.get_or_init(|| Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let _ = signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        130,
        flag.clone(),
    );
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone());
}

/// Whether Ctrl-C asked the run to stop.
pub fn interrupted() -> bool {
    INTERRUPTED
        .get()
        .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
}

/// Connects to `server`, runs every size, and returns the measurements.
pub fn client(opts: &Opts, server: SocketAddr, progress: &ProgressBar) -> Result<ClientRun> {
    client_with(opts, server, progress, &mut |_, _, _, _| {})
}

/// [`client`], handing each size's row (with the run so far, the row's seconds and CPU percent)
/// to `on_row` as soon as it is measured, so sweeps print rows as they complete.
pub fn client_with(
    opts: &Opts,
    server: SocketAddr,
    progress: &ProgressBar,
    on_row: &mut dyn FnMut(&ClientRun, &Row, f64, f64),
) -> Result<ClientRun> {
    let local_ip = local_for(server.ip(), opts.bind)?;
    if local_ip.is_ipv4() != server.is_ipv4() {
        return Err(Error::status(
            format!("local address {local_ip} and server {server} are of different families"),
            Status::INVALID_ADDRESS,
        ));
    }
    let side = Side::open(local_ip, opts.timeout)?;
    let fitted = opts.fit(&side.info);
    let opts = &fitted;
    check_limits(opts, &side.info)?;
    let max_size = opts.max_size();
    // Both sides of a -b Send test take Sends: the client keeps the server's receive ring.
    let lay = layout(
        opts,
        max_size,
        opts.bidir,
        side.info.max_receive_request_sge,
    );
    let mut conns = Vec::new();
    for q in 0..opts.qps {
        let mut conn = Conn::new(&side, lay, opts.timeout)?;
        conn.events = opts.events;
        let connector = wait(
            side.adapter.create_connector(),
            opts.timeout,
            "cannot create a connector",
        )?;
        let hello = Hello {
            test: opts.wire_id(),
            qp_index: q as u8,
            qp_count: opts.qps as u8,
            max_size: max_size as u64,
        };
        let pending = connector.connect(
            &*conn.qp,
            SocketAddr::new(local_ip, 0),
            server,
            // IRD/ORD within the adapter's limits (a verbs device may allow fewer than -o).
            lay.read_limit.min(side.info.max_inbound_read_limit),
            lay.read_limit.min(side.info.max_outbound_read_limit),
            &hello.encode(),
        );
        if let Err(mut e) = wait(
            pending,
            opts.timeout,
            &format!("cannot connect to {server}"),
        ) {
            if let Some(s) = e.status {
                e.message = format!("{}: {}", e.message, explain(s));
            }
            if let Ok(d) = connector.connection_data() {
                if !d.private_data.is_empty() {
                    e.message = format!(
                        "{} (the server said: {})",
                        e.message,
                        String::from_utf8_lossy(&d.private_data)
                    );
                }
            }
            return Err(e);
        }
        wait(
            connector.complete_connect(Some(conn.disconnect_event())),
            opts.timeout,
            &format!("cannot complete the connection to {server}"),
        )?;
        conn.local = connector.local_address().ok();
        conn.peer = connector.peer_address().ok();
        conn.connector = Some(connector);
        conn.send_ctrl(conn.hello(Kind::Hello))?;
        let ack = conn.expect(Kind::HelloAck)?;
        conn.set_remote(&ack);
        conns.push(conn);
    }
    let c0 = &conns[0];
    let mut run = ClientRun {
        info: side.info,
        local: c0.local.unwrap_or(SocketAddr::new(local_ip, 0)),
        remote: server,
        buffers: [
            (c0.data.address(), c0.data_mr.remote_token().0),
            (c0.remote.address, c0.remote.token),
        ],
        rows: Vec::new(),
        verified: true,
        secs: Vec::new(),
        cpu: Vec::new(),
        interrupted: false,
        directions: Vec::new(),
    };
    if let Some((size, n)) = opts.warmup_phase {
        let _ = client_phase(opts, &mut conns, size, Stop::Iters(n.max(1)))?;
    }
    let sizes = opts.sizes.iter().copied();
    let first = opts.sizes.first().copied().unwrap_or(1);
    let mut sizes: Box<dyn Iterator<Item = usize>> = if opts.forever {
        Box::new(std::iter::repeat(first))
    } else {
        Box::new(sizes)
    };
    for size in &mut sizes {
        if interrupted() {
            run.interrupted = true;
            break;
        }
        let (row, dirs, secs, cpu) =
            client_phase(opts, &mut conns, size, opts.stop.for_size(size))?;
        run.directions.extend(dirs);
        on_row(&run, &row, secs, cpu);
        run.rows.push(row);
        run.secs.push(secs);
        run.cpu.push(cpu);
        progress.inc(1);
    }
    run.interrupted |= interrupted();
    for c in conns.iter_mut() {
        c.send_ctrl(Ctrl::new(Kind::Bye, 0, 0))?;
    }
    for c in conns {
        c.close();
    }
    drop(side);
    Ok(run)
}

/// One measurement from `Phase` to `PhaseEndAck`: the row, with `-b` its two directions, wall
/// seconds and CPU percent.
fn client_phase(
    opts: &Opts,
    conns: &mut [Conn],
    size: usize,
    stop: Stop,
) -> Result<(Row, Option<[BwRow; 2]>, f64, f64)> {
    let bidir = opts.bidir && opts.test.is_bw();
    for c in conns.iter() {
        match opts.test {
            Test::WriteLat => c.data.with_mut(|b| b[..size].fill(0)),
            // Reads land in the inbox, and with -b the peer's writes too: clear it so that
            // only this size's data can pass.
            Test::ReadBw | Test::ReadLat | Test::WriteBw if bidir || opts.test != Test::WriteBw => {
                let half = c.layout.half;
                c.data.with_mut(|b| b[..half].fill(0));
            }
            _ => {}
        }
    }
    for c in conns.iter_mut() {
        c.send_ctrl(Ctrl::new(Kind::Phase, size as u64, u64::from(bidir)))?;
    }
    for c in conns.iter_mut() {
        c.expect(Kind::PhaseAck)?;
    }
    let cpu0 = crate::cpu::process_cpu();
    let t0 = Instant::now();
    if bidir {
        let [tx, rx] = bidir_measure(opts, conns, size, stop)?;
        let secs = t0.elapsed().as_secs_f64();
        let cpu = crate::cpu::percent(cpu0, crate::cpu::process_cpu(), secs);
        return Ok((Row::Bw(sum(&tx, &rx)), Some([tx, rx]), secs, cpu));
    }
    let (row, counts, local_ok) = measure(opts, conns, size, stop)?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = crate::cpu::percent(cpu0, crate::cpu::process_cpu(), secs);
    for (c, n) in conns.iter_mut().zip(&counts) {
        c.send_ctrl(Ctrl::new(Kind::PhaseEnd, n.total, n.covered))?;
    }
    let mut ok = local_ok;
    for (c, n) in conns.iter_mut().zip(&counts) {
        let ack = c.expect(Kind::PhaseEndAck)?;
        if ack.a == 2 || (opts.test.is_send() && ack.b != n.total) {
            ok = false;
        }
    }
    if !ok {
        return Err(Error::status(
            format!(
                "data check failed for {} at {size} octets: the bytes that arrived are not the bytes sent",
                opts.name()
            ),
            Status::DATA_ERROR,
        ));
    }
    Ok((row, None, secs, cpu))
}

fn marker(i: u64) -> u8 {
    (i % 250) as u8 + 1
}

/// Operations per QP in a measurement, for the server's accounting.
#[derive(Debug, Clone, Copy)]
struct Count {
    /// Operations, warm-up included (the server counts Sends).
    total: u64,
    /// Buffer slots written from offset 0 (warm-up and measurement both start there).
    covered: u64,
}

/// One measurement: the row, the operations per QP, and the client-side data check.
fn measure(
    opts: &Opts,
    conns: &mut [Conn],
    size: usize,
    stop: Stop,
) -> Result<(Row, Vec<Count>, bool)> {
    if opts.test.is_bw() {
        if opts.warmup > 0 {
            bw_loop(opts, conns, size, Stop::Iters(opts.warmup), None)?;
        }
        let (row, counts) = bw_loop(opts, conns, size, stop, None)?;
        let ok = if opts.test == Test::ReadBw {
            conns.iter().zip(&counts).all(|(c, n)| {
                let used = (*n).max(opts.warmup).min(c.slots(size)) as usize * size;
                c.data.with(|b| check_pattern(&b[..used]))
            })
        } else {
            true
        };
        // Warm-up operations count too: the server sees them.
        let counts = conns
            .iter()
            .zip(&counts)
            .map(|(c, n)| Count {
                total: n + opts.warmup,
                covered: (*n).max(opts.warmup).min(c.slots(size)),
            })
            .collect();
        Ok((Row::Bw(row), counts, ok))
    } else {
        let c = &mut conns[0];
        let (hist, samples, n, ok) = lat_loop(opts, c, size, stop)?;
        Ok((
            Row::Lat(LatRow {
                size,
                hist,
                samples,
            }),
            vec![Count {
                total: n,
                covered: 1,
            }],
            ok,
        ))
    }
}

/// nd's QPs as the bandwidth meter drives them.
struct NdLink<'a> {
    conns: &'a mut [Conn],
    test: Test,
    size: usize,
    /// `-b`: what the peer sends meanwhile (without it, anything but a completion is an error).
    inbound: Option<&'a mut Inbound>,
}

impl crate::meter::BwLink for NdLink<'_> {
    #[inline]
    fn outstanding(&self, q: usize) -> usize {
        self.conns[q].tx_out
    }

    #[inline]
    fn can_post(&self, q: usize) -> bool {
        self.test != Test::SendBw || self.conns[q].can_send()
    }

    #[inline]
    fn post(&mut self, q: usize, i: u64, more: bool) -> Result<()> {
        let size = self.size;
        let c = &mut self.conns[q];
        let off = (i % c.slots(size)) as usize * size;
        c.defer = more
            && (self.test != Test::SendBw
                || c.sent + 1 + crate::conn::CREDIT_RESERVE < c.credit_limit);
        match self.test {
            Test::WriteBw => c.write_data(1, off, size),
            Test::ReadBw => c.read_data(1, off, size),
            _ => c.send_data(1, size),
        }
    }

    #[inline]
    fn end_round(&mut self, q: usize) {
        self.conns[q].defer = false;
    }

    #[inline]
    fn reap(&mut self, q: usize) -> Result<u64> {
        let c = &mut self.conns[q];
        let mut n = 0;
        while let Some(e) = c.try_next()? {
            match e {
                Event::TxDone(_) => n += 1,
                other => match self.inbound.as_deref_mut() {
                    Some(inbound) => inbound.take(q, c, other)?,
                    None => return Err(unexpected(other)),
                },
            }
        }
        Ok(n)
    }

    fn idle(&mut self, deadline: Instant) -> Result<()> {
        crate::conn::flush_credits(self.conns)?;
        idle(deadline, "RDMA requests to complete")
    }
}

fn bw_loop(
    opts: &Opts,
    conns: &mut [Conn],
    size: usize,
    stop: Stop,
    inbound: Option<&mut Inbound>,
) -> Result<(BwRow, Vec<u64>)> {
    let w = window(opts, size);
    let nq = conns.len();
    let mut link = NdLink {
        conns,
        test: opts.test,
        size,
        inbound,
    };
    crate::meter::bw_meter(&mut link, nq, size, w, stop, opts.timeout, interrupted)
}

/// What a `-b` side takes from its peer during a measurement, per QP.
struct Inbound {
    test: Test,
    size: usize,
    check_every: bool,
    /// Data messages (Sends) taken.
    seen: Vec<u64>,
    /// The last one's receive slot (not reposted yet) and length.
    last: Vec<Option<(usize, usize)>>,
    /// The peer's `PhaseEnd`: (operations, slots written from offset 0).
    end: Vec<Option<(u64, u64)>>,
    /// The peer's own figures (`Result`, on QP 0).
    peer_row: Option<BwRow>,
}

impl Inbound {
    fn new(opts: &Opts, nq: usize, size: usize) -> Inbound {
        Inbound {
            test: opts.test,
            size,
            check_every: opts.check_every,
            seen: vec![0; nq],
            last: vec![None; nq],
            end: vec![None; nq],
            peer_row: None,
        }
    }

    /// Takes an event of QP `q` that is not one of our completions.
    fn take(&mut self, q: usize, c: &mut Conn, e: Event) -> Result<()> {
        let size = self.size;
        match e {
            Event::Data { slot, len } => {
                if self.test != Test::SendBw || len != size {
                    return Err(Error::status(
                        format!("a message of {len} octets arrived; expected {size}"),
                        Status::DATA_ERROR,
                    ));
                }
                if self.check_every && !check_pattern(&c.slot_bytes(slot, len)) {
                    return Err(Error::status(
                        format!(
                            "data check failed: message {} of {size} octets from the peer is not the pattern sent",
                            self.seen[q]
                        ),
                        Status::DATA_ERROR,
                    ));
                }
                self.seen[q] += 1;
                // The newest message keeps its slot until the next one arrives: the check at
                // the end reads it, and the peer's control messages that follow (a small ring
                // wraps quickly) must not land in it.
                match self.last[q].replace((slot, len)) {
                    Some((held, _)) => c.repost(held),
                    None => Ok(()),
                }
            }
            Event::Ctrl(k) if k.kind == Kind::PhaseEnd => {
                self.end[q] = Some((k.a, k.b));
                Ok(())
            }
            Event::Ctrl(k) if k.kind == Kind::Result && q == 0 => {
                let secs = f64::from_bits(k.d).max(1e-9);
                self.peer_row = Some(BwRow {
                    size,
                    iters: k.a,
                    peak: f64::from_bits(k.b),
                    avg: f64::from_bits(k.c),
                    msg_rate: k.a as f64 / secs,
                    secs,
                });
                Ok(())
            }
            other => Err(unexpected(other)),
        }
    }

    /// Whether the peer's `PhaseEnd` (every QP) and `Result` arrived.
    fn peer_done(&self) -> bool {
        self.end.iter().all(Option::is_some) && self.peer_row.is_some()
    }
}

/// The row of both directions: operations, bandwidths and message rates add up (perftest's
/// `-b` convention), over the longer of the two times.
fn sum(tx: &BwRow, rx: &BwRow) -> BwRow {
    BwRow {
        size: tx.size,
        iters: tx.iters + rx.iters,
        peak: tx.peak + rx.peak,
        avg: tx.avg + rx.avg,
        msg_rate: tx.msg_rate + rx.msg_rate,
        secs: tx.secs.max(rx.secs),
    }
}

/// One bidirectional (`-b`) measurement after `Phase`/`PhaseAck`, the same on both sides:
/// runs the test toward the peer while taking the peer's data, exchanges the ends and figures,
/// checks what arrived and hears the peer's check of what we sent. Returns [ours (TX), the
/// peer's (RX)].
fn bidir_measure(opts: &Opts, conns: &mut [Conn], size: usize, stop: Stop) -> Result<[BwRow; 2]> {
    let test = opts.test;
    let nq = conns.len();
    let mut inbound = Inbound::new(opts, nq, size);
    if opts.warmup > 0 {
        bw_loop(
            opts,
            conns,
            size,
            Stop::Iters(opts.warmup),
            Some(&mut inbound),
        )?;
    }
    let (row, counts) = bw_loop(opts, conns, size, stop, Some(&mut inbound))?;
    // Warm-up operations count too: the peer sees them.
    let ops: Vec<(u64, u64)> = conns
        .iter()
        .zip(&counts)
        .map(|(c, n)| (n + opts.warmup, (*n).max(opts.warmup).min(c.slots(size))))
        .collect();
    for (c, (total, covered)) in conns.iter_mut().zip(&ops) {
        c.send_ctrl(Ctrl::new(Kind::PhaseEnd, *total, *covered))?;
    }
    conns[0].send_ctrl(Ctrl {
        kind: Kind::Result,
        a: row.iters,
        b: row.peak.to_bits(),
        c: row.avg.to_bits(),
        d: row.secs.to_bits(),
    })?;
    let mut last_progress = Instant::now();
    while !inbound.peer_done() {
        let mut progressed = false;
        for (q, c) in conns.iter_mut().enumerate() {
            // Stop at the peer's end: its PhaseEndAck may follow at once, for `expect` below.
            while inbound.end[q].is_none() || (q == 0 && inbound.peer_row.is_none()) {
                let Some(e) = c.try_next()? else { break };
                progressed = true;
                match e {
                    Event::TxDone(_) => {}
                    other => inbound.take(q, c, other)?,
                }
            }
        }
        if progressed {
            last_progress = Instant::now();
        } else {
            crate::conn::flush_credits(conns)?;
            idle(
                last_progress + opts.timeout,
                "the peer's half of the bidirectional measurement",
            )?;
        }
    }
    let mut all_ok = true;
    for (q, c) in conns.iter_mut().enumerate() {
        c.drain()?;
        let (total, covered) = inbound.end[q].unwrap_or((0, 0));
        let verdict = match test {
            Test::WriteBw => {
                let slots = (c.layout.half / size).max(1) as u64;
                let used = covered.min(slots) as usize * size;
                c.data.with(|b| check_pattern(&b[..used]))
            }
            Test::ReadBw => {
                let used = ops[q].1 as usize * size;
                c.data.with(|b| check_pattern(&b[..used]))
            }
            _ => {
                inbound.seen[q] == total
                    && inbound.last[q].is_none_or(|(s, l)| check_pattern(&c.slot_bytes(s, l)))
            }
        };
        all_ok &= verdict;
        if let Some((held, _)) = inbound.last[q].take() {
            c.repost(held)?;
        }
        // A read is checked where it lands: the peer checks its own.
        let code = match test {
            Test::ReadBw => 0,
            _ if verdict => 1,
            _ => 2,
        };
        c.send_ctrl(Ctrl::new(Kind::PhaseEndAck, code, inbound.seen[q]))?;
    }
    for (q, c) in conns.iter_mut().enumerate() {
        let ack = c.expect(Kind::PhaseEndAck)?;
        if ack.a == 2 || (test == Test::SendBw && ack.b != ops[q].0) {
            all_ok = false;
        }
    }
    if !all_ok {
        return Err(Error::status(
            format!(
                "data check failed for {} -b at {size} octets: the bytes that arrived are not the bytes sent",
                opts.name()
            ),
            Status::DATA_ERROR,
        ));
    }
    let peer = inbound.peer_row.unwrap_or(BwRow {
        size,
        iters: 0,
        peak: 0.0,
        avg: 0.0,
        msg_rate: 0.0,
        secs: 0.0,
    });
    Ok([row, peer])
}

/// The ping-pong or read loop; returns (histogram, samples in run order if `-U`, operations,
/// client-side data check).
fn lat_loop(
    opts: &Opts,
    c: &mut Conn,
    size: usize,
    stop: Stop,
) -> Result<(Histogram<u64>, Vec<u64>, u64, bool)> {
    let mut meter = LatMeter::new(opts.test != Test::ReadLat, opts.warmup)?;
    if opts.unsorted {
        meter.keep_samples(match stop {
            Stop::Iters(n) => n,
            _ => 1 << 16,
        });
    }
    let start = Instant::now();
    let half = c.layout.half;
    let mut i = 0u64;
    let mut last_slot = None;
    // The receive of the last pong, reposted once the next ping has left: a credit message the
    // repost makes due then follows the ping instead of delaying it.
    let mut unposted = None;
    let total = opts.warmup
        + match stop {
            Stop::Iters(n) => n,
            Stop::Duration(_) | Stop::Sweep { .. } => u64::MAX,
        };
    while i < total && !(interrupted() && i > 0) {
        if let Stop::Duration(d) = stop {
            if i >= opts.warmup && start.elapsed() >= d {
                break;
            }
        }
        // Keep the initiator queue from filling with unreaped completions (outside the timing).
        c.reap(c.layout.tx_depth)?;
        let deadline = Instant::now() + opts.timeout;
        meter.time(|| match opts.test {
            Test::ReadLat => {
                c.read_data(1, 0, size)?;
                loop {
                    match c.try_next()? {
                        Some(Event::TxDone(_)) => break,
                        Some(other) => return Err(unexpected(other)),
                        None => c.idle(deadline, "the RDMA read to complete")?,
                    }
                }
                Ok(())
            }
            Test::SendLat => {
                while !c.can_send() {
                    match c.try_next()? {
                        Some(Event::TxDone(_)) => {}
                        Some(other) => return Err(unexpected(other)),
                        None => c.idle(deadline, "a receive credit from the server")?,
                    }
                }
                c.send_data(1, size)?;
                if let Some(slot) = unposted.take() {
                    c.repost(slot)?;
                }
                loop {
                    match c.try_next()? {
                        Some(Event::TxDone(_)) => {}
                        Some(Event::Data { slot, len }) => {
                            if len != size {
                                return Err(Error::status(
                                    format!(
                                        "a pong of {len} octets came back for a ping of {size}"
                                    ),
                                    Status::DATA_ERROR,
                                ));
                            }
                            if opts.check_every && !check_pattern(&c.slot_bytes(slot, size)) {
                                return Err(Error::status(
                                    format!(
                                        "data check failed for {}: pong {i} of {size} octets is not the pattern sent",
                                        opts.name()
                                    ),
                                    Status::DATA_ERROR,
                                ));
                            }
                            last_slot = Some(slot);
                            unposted = Some(slot);
                            break;
                        }
                        Some(other) => return Err(unexpected(other)),
                        None => c.idle(deadline, "the server's pong")?,
                    }
                }
                Ok(())
            }
            _ => {
                let m = marker(i);
                c.data
                    .write_at(half + size - 1, &[m])
                    .map_err(|e| Error::msg(e.to_string()))?;
                c.write_data(1, 0, size)?;
                let mut b = [0u8];
                loop {
                    let _ = c.data.read_at(size - 1, &mut b);
                    if b[0] == m {
                        break;
                    }
                    match c.try_next()? {
                        Some(Event::TxDone(_)) | None => {}
                        Some(other) => return Err(unexpected(other)),
                    }
                    // The poll may just have placed the pong: look before giving the CPU away.
                    let _ = c.data.read_at(size - 1, &mut b);
                    if b[0] == m {
                        break;
                    }
                    idle(deadline, "the server's RDMA write back")?;
                }
                Ok(())
            }
        })?;
        i += 1;
    }
    if let Some(slot) = unposted {
        c.repost(slot)?;
    }
    c.drain()?;
    let ok = match opts.test {
        Test::ReadLat => c.data.with(|b| check_pattern(&b[..size])),
        Test::WriteLat => {
            let ok = c.data.with(|b| check_pattern(&b[..size - 1]));
            // Put the pattern back under the marker for the next size.
            let _ = c
                .data
                .write_at(half + size - 1, &[crate::proto::pattern(size - 1)]);
            ok
        }
        _ => last_slot.is_none_or(|s| check_pattern(&c.slot_bytes(s, size))),
    };
    let (hist, samples) = meter.into_parts();
    Ok((hist, samples, i, ok))
}

fn unexpected(e: Event) -> Error {
    Error::msg(format!(
        "protocol error: unexpected {e:?} during the measurement"
    ))
}

// ---------------------------------------------------------------------------------------------
// Server

/// What a server run did.
#[derive(Debug, Clone)]
pub struct ServeSummary {
    /// The serving adapter's transport (for the header).
    pub technology: RdmaTechnology,
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// Sizes measured.
    pub phases: usize,
    /// Whether every server-side data check passed (or none applied).
    pub verified: bool,
    /// `-b`: the server's rows (both directions summed), one per size.
    pub rows: Vec<Row>,
    /// `-b`: per row, the server's sending (TX) and the client's (RX).
    pub directions: Vec<[BwRow; 2]>,
    /// The inline size the run used (`-I`, or its default within the adapter's limit).
    pub inline: u32,
}

type Incoming = (usize, Box<dyn Connector>);

/// A server's listeners: one adapter and listener per local address.
pub(crate) struct Listening {
    /// The adapters, by position in `bound`.
    pub sides: Vec<Option<Arc<Side>>>,
    /// The listeners.
    pub listeners: Vec<Box<dyn netdirect::Listener>>,
    /// Incoming connections: (index into the addresses tried, connector).
    pub rx: mpsc::Receiver<Incoming>,
    /// The addresses listened on.
    pub bound: Vec<SocketAddr>,
    /// Maps the callback's index to an index of `sides`.
    pub side_of: Vec<usize>,
    /// The port listened on.
    pub port: u16,
}

/// Listens on `opts.bind`, on every local address for a wildcard or when none is given
/// ([`crate::conn::listen_addresses`]).
pub(crate) fn listen(opts: &Opts) -> Result<Listening> {
    let addrs = crate::conn::listen_addresses(opts.bind);
    // One named address must work; of many, those that open and bind are enough.
    let explicit = addrs.len() == 1 && opts.bind.is_some();
    let (tx, rx) = mpsc::channel::<Incoming>();
    let mut sides = Vec::new();
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    let mut port = opts.port;
    for (k, ip) in addrs.iter().enumerate() {
        let side = match Side::open(*ip, opts.timeout) {
            Ok(s) => Arc::new(s),
            // An address of the list may be unusable (a family missing); one is enough.
            Err(_) if !explicit => continue,
            Err(e) => return Err(e),
        };
        check_limits(&opts.fit(&side.info), &side.info)?;
        let tx = Mutex::new(tx.clone());
        let listener = wait(
            side.adapter
                .create_listener(Arc::new(move |c: Box<dyn Connector>| {
                    if let Ok(tx) = tx.lock() {
                        let _ = tx.send((k, c));
                    }
                })),
            opts.timeout,
            "cannot create a listener",
        )?;
        let addr = SocketAddr::new(*ip, port);
        match wait(listener.listen(addr), opts.timeout, "") {
            Ok(()) => {}
            Err(e) => {
                let s = e.status.unwrap_or(Status::UNSUCCESSFUL);
                let why = if matches!(
                    s,
                    Status::SHARING_VIOLATION | Status::ADDRESS_ALREADY_EXISTS
                ) {
                    format!("cannot listen on {addr}: the port is in use")
                } else {
                    format!("cannot listen on {addr}: {}", explain(s))
                };
                return Err(Error::status(why, s));
            }
        }
        let local = listener
            .local_address()
            .context(|| "cannot read the listener's address".into())?;
        port = local.port();
        bound.push(local);
        listeners.push(listener);
        sides.push(Some(side));
    }
    // Index `k` of the callback is the position in `addrs`; map it to `sides`.
    let mut side_of = vec![usize::MAX; addrs.len()];
    let mut j = 0;
    for (k, ip) in addrs.iter().enumerate() {
        if bound.get(j).is_some_and(|b| b.ip() == *ip) {
            side_of[k] = j;
            j += 1;
        }
    }
    Ok(Listening {
        sides,
        listeners,
        rx,
        bound,
        side_of,
        port,
    })
}

/// Listens (on `opts.bind`, or on 127.0.0.1 and ::1), serves one client's run, and returns.
/// `ready` gets the port listened on once listening.
pub fn serve(
    opts: &Opts,
    ready: Option<mpsc::Sender<u16>>,
    on_listen: &dyn Fn(&[SocketAddr]),
) -> Result<ServeSummary> {
    let l = listen(opts)?;
    if let Some(r) = ready {
        let _ = r.send(l.port);
    }
    on_listen(&l.bound);
    let Listening {
        sides,
        listeners,
        rx,
        side_of,
        ..
    } = l;

    let mut conns: Vec<Conn> = Vec::new();
    let mut expected = 1usize;
    let mut max_size = 0usize;
    let mut side_idx = 0usize;
    while conns.len() < expected {
        let (k, c) = rx.recv_timeout(opts.timeout).map_err(|_| {
            Error::status(
                format!(
                    "no client connected within {} s",
                    opts.timeout.as_secs_f64()
                ),
                Status::IO_TIMEOUT,
            )
        })?;
        let data = c.connection_data().unwrap_or_default();
        let Some(hello) = Hello::decode(&data.private_data) else {
            let _ = c.reject(b"not an nd perftest client");
            continue;
        };
        if hello.test != opts.wire_id() {
            let _ = c.reject(format!("test mismatch: this server runs {}", opts.name()).as_bytes());
            let theirs = name_of_id(hello.test);
            return Err(Error::msg(format!(
                "the client asked for {theirs}, but this server runs {}; pass the same test to both",
                opts.name()
            )));
        }
        if conns.is_empty() {
            expected = usize::from(hello.qp_count.max(1));
            max_size = hello.max_size as usize;
            side_idx = side_of[k];
        }
        let Some(side) = sides.get(side_of[k]).and_then(Option::as_ref) else {
            let _ = c.reject(b"no adapter");
            continue;
        };
        if max_size as u64 > u64::from(side.info.max_transfer_length) {
            let _ = c.reject(b"message size over the adapter's MaxTransferLength");
            return Err(Error::status(
                format!(
                    "the client asked for {max_size}-octet messages, over the adapter's MaxTransferLength {}",
                    side.info.max_transfer_length
                ),
                Status::INVALID_BUFFER_SIZE,
            ));
        }
        let lay = layout(
            &opts.fit(&side.info),
            max_size,
            true,
            side.info.max_receive_request_sge,
        );
        // One client that connects and then says nothing (or dies) must not take the server
        // out before the run started: drop it and wait for the next.
        match accept_client(opts, side, lay, c, data.inbound_read_limit) {
            Ok(conn) => conns.push(conn),
            Err(e) if conns.is_empty() => {
                eprintln!("nd: a client was dropped before the run: {e}");
                expected = 1;
                continue;
            }
            Err(e) => return Err(e),
        }
    }
    let _ = side_idx;
    let peer = conns[0].peer;
    let inline = conns[0].layout.data_inline;
    let mut phases = 0;
    let mut verified = true;
    let mut rows = Vec::new();
    let mut directions = Vec::new();
    loop {
        let first = conns[0].next_ctrl("the client's next message")?;
        match first.kind {
            Kind::Bye => break,
            Kind::Phase => {}
            k => {
                return Err(Error::msg(format!(
                    "protocol error: got {k:?} between measurements"
                )));
            }
        }
        let size = first.a as usize;
        if size == 0 || size > max_size {
            return Err(Error::msg(format!("protocol error: phase size {size}")));
        }
        for c in conns.iter_mut().skip(1) {
            c.expect(Kind::Phase)?;
        }
        let bidir = opts.bidir && opts.test.is_bw();
        if (first.b == 1) != bidir {
            let (theirs, ours) = if bidir { ("", " -b") } else { (" -b", "") };
            return Err(Error::status(
                format!(
                    "the client runs {}{theirs}, this server {}{ours}; pass the same flags to both",
                    opts.name(),
                    opts.name()
                ),
                Status::INVALID_PARAMETER,
            ));
        }
        if bidir {
            let [tx, rx] = serve_bidir_phase(opts, &mut conns, size)?;
            rows.push(Row::Bw(sum(&tx, &rx)));
            directions.push([tx, rx]);
        } else {
            let ok = serve_phase(opts, &mut conns, size)?;
            verified &= ok;
        }
        phases += 1;
    }
    for c in conns {
        c.close();
    }
    for l in listeners {
        let _ = l.close().wait_timeout(Duration::from_secs(2));
    }
    let technology = sides
        .get(side_idx)
        .and_then(Option::as_ref)
        .map_or(RdmaTechnology::IWarp, |s| s.info.rdma_technology);
    drop(sides);
    Ok(ServeSummary {
        technology,
        inline,
        peer,
        phases,
        verified,
        rows,
        directions,
    })
}

/// Serves one bidirectional (`-b`) measurement: the server runs the test toward the client
/// too. Returns [the server's (TX), the client's (RX)].
fn serve_bidir_phase(opts: &Opts, conns: &mut [Conn], size: usize) -> Result<[BwRow; 2]> {
    let stop = opts.stop.for_size(size);
    for c in conns.iter_mut() {
        // Only this size's data can pass the check at the end.
        let half = c.layout.half;
        c.data.with_mut(|b| b[..half].fill(0));
        c.send_ctrl(Ctrl::new(Kind::PhaseAck, 0, 0))?;
    }
    bidir_measure(opts, conns, size, stop)
}

/// Whether this server's QPs have nothing to do in a measurement of `size`-octet messages but
/// answer the client's RDMA reads, which the provider does without the consumer (one-sided):
/// a read-bw target. It then sleeps on the CQ's notification, as perftest's server sleeps on
/// its socket, instead of busy polling: from 64 KiB up the responder's CPU is busy sending
/// responses, and a poller on it took a share (pinned; a whole CPU unpinned). Below that a
/// poller's passes serve the reads at once, where a sleeping progress thread must first be
/// woken: 64 B reads ran at half the rate, 4 KiB at 0.6x, with the target asleep.
fn passive_server(opts: &Opts, size: usize) -> bool {
    opts.test == Test::ReadBw && !opts.bidir && size >= PASSIVE_MIN
}

/// The smallest read a read-bw target sleeps through (see [`passive_server`]).
const PASSIVE_MIN: usize = 64 * 1024;

/// Accepts one client's connection and exchanges the hellos; the hello must come within a few
/// seconds (a client sends it right after connecting).
fn accept_client(
    opts: &Opts,
    side: &Side,
    lay: Layout,
    c: Box<dyn Connector>,
    their_ird: u32,
) -> Result<Conn> {
    let mut conn = Conn::new(side, lay, opts.timeout)?;
    conn.events = opts.events;
    let limit = their_ird
        .max(lay.read_limit)
        .min(side.info.max_inbound_read_limit);
    wait(
        c.accept(&*conn.qp, limit, limit, b"", Some(conn.disconnect_event())),
        opts.timeout,
        "cannot accept the client's connection",
    )?;
    conn.local = c.local_address().ok();
    conn.peer = c.peer_address().ok();
    conn.connector = Some(c);
    let patience = conn.timeout;
    conn.timeout = patience.min(HELLO_WAIT);
    let h = conn.expect(Kind::Hello)?;
    conn.timeout = patience;
    conn.set_remote(&h);
    conn.send_ctrl(conn.hello(Kind::HelloAck))?;
    Ok(conn)
}

/// How long a connected client has to say hello.
const HELLO_WAIT: Duration = Duration::from_secs(5);

/// Serves one measurement; returns the server-side data check.
fn serve_phase(opts: &Opts, conns: &mut [Conn], size: usize) -> Result<bool> {
    let test = opts.test;
    if test == Test::WriteLat {
        conns[0].data.with_mut(|b| b[..size].fill(0));
    }
    if test == Test::WriteBw {
        // Only this size's writes can pass the check at the end.
        for c in conns.iter() {
            let half = c.layout.half;
            c.data.with_mut(|b| b[..half].fill(0));
        }
    }
    for c in conns.iter_mut() {
        c.send_ctrl(Ctrl::new(Kind::PhaseAck, 0, 0))?;
    }
    let nq = conns.len();
    let passive = passive_server(opts, size);
    let mut seen = vec![0u64; nq];
    let mut last: Vec<Option<(usize, usize)>> = vec![None; nq];
    let mut end: Vec<Option<u64>> = vec![None; nq];
    let mut covered = vec![0u64; nq];
    let mut marker_i = 0u64;
    let mut last_progress = Instant::now();
    let half = conns[0].layout.half;
    while end.iter().any(Option::is_none) {
        let mut progressed = false;
        for q in 0..nq {
            if end[q].is_some() {
                continue;
            }
            let c = &mut conns[q];
            if test == Test::WriteLat {
                let m = marker(marker_i);
                let mut b = [0u8];
                let _ = c.data.read_at(size - 1, &mut b);
                if b[0] == m {
                    c.reap(c.layout.tx_depth)?;
                    let _ = c.data.write_at(half + size - 1, &[m]);
                    c.write_data(1, 0, size)?;
                    marker_i += 1;
                    progressed = true;
                }
            }
            while let Some(e) = c.try_next()? {
                progressed = true;
                match e {
                    Event::TxDone(_) => {}
                    Event::Data { slot, len } => {
                        if !test.is_send() || len != size {
                            return Err(Error::status(
                                format!("a message of {len} octets arrived; expected {size}"),
                                Status::DATA_ERROR,
                            ));
                        }
                        if opts.check_every && !check_pattern(&c.slot_bytes(slot, len)) {
                            return Err(Error::status(
                                format!(
                                    "data check failed for {}: message {} of {size} octets is not the pattern sent",
                                    opts.name(),
                                    seen[q]
                                ),
                                Status::DATA_ERROR,
                            ));
                        }
                        seen[q] += 1;
                        last[q] = Some((slot, len));
                        if test != Test::SendLat {
                            c.repost(slot)?;
                        } else {
                            let deadline = Instant::now() + opts.timeout;
                            while !c.can_send() {
                                match c.try_next()? {
                                    Some(Event::TxDone(_)) => {}
                                    Some(other) => return Err(unexpected(other)),
                                    None => c.idle(deadline, "a receive credit from the client")?,
                                }
                            }
                            c.reap(c.layout.tx_depth)?;
                            c.send_data(1, size)?;
                            // After the pong: a credit this makes due follows it.
                            c.repost(slot)?;
                        }
                    }
                    Event::Ctrl(k) if k.kind == Kind::PhaseEnd => {
                        end[q] = Some(k.a);
                        covered[q] = k.b;
                        break;
                    }
                    Event::Ctrl(k) => {
                        return Err(Error::msg(format!(
                            "protocol error: got {:?} during a measurement",
                            k.kind
                        )));
                    }
                }
            }
            if test == Test::WriteLat && !progressed {
                // The poll may just have placed the ping: answer it before giving the CPU away.
                let mut b = [0u8];
                let _ = c.data.read_at(size - 1, &mut b);
                progressed = b[0] == marker(marker_i);
            }
        }
        if progressed {
            last_progress = Instant::now();
        } else {
            crate::conn::flush_credits(conns)?;
            let deadline = last_progress + opts.timeout;
            let what = "the client's measurement to finish";
            // Sleeps where one CQ is all there is to watch (-e), or where nothing but the
            // phase's end comes (a passive target: any unfinished QP will do).
            match (0..nq).find(|&q| end[q].is_none()) {
                Some(q) if passive => conns[q].sleep(deadline, what)?,
                Some(q) if nq == 1 && conns[q].events => conns[q].idle(deadline, what)?,
                _ => idle(deadline, what)?,
            }
        }
    }
    let mut all_ok = true;
    for q in 0..nq {
        let c = &mut conns[q];
        c.drain()?;
        let count = end[q].unwrap_or(0);
        let verdict = match test {
            Test::WriteBw => {
                let slots = (c.layout.half / size).max(1) as u64;
                let used = covered[q].min(slots) as usize * size;
                c.data.with(|b| check_pattern(&b[..used]))
            }
            Test::WriteLat => {
                let ok = c.data.with(|b| check_pattern(&b[..size - 1]));
                let _ = c
                    .data
                    .write_at(half + size - 1, &[crate::proto::pattern(size - 1)]);
                ok
            }
            Test::SendBw | Test::SendLat => {
                seen[q] == count && last[q].is_none_or(|(s, l)| check_pattern(&c.slot_bytes(s, l)))
            }
            Test::ReadBw | Test::ReadLat => true,
        };
        all_ok &= verdict;
        let code = match test {
            Test::ReadBw | Test::ReadLat => 0,
            _ if verdict => 1,
            _ => 2,
        };
        c.send_ctrl(Ctrl::new(Kind::PhaseEndAck, code, seen[q]))?;
    }
    if !all_ok {
        return Err(Error::status(
            format!("data check failed for {} at {size} octets", opts.name()),
            Status::DATA_ERROR,
        ));
    }
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netdirect_types::{AdapterFlags, FRMR_PAGE_COUNT_MIN, RdmaTechnology, Version};

    /// siw's limits as the verbs provider reports them (MaxInlineDataSize 64, one read SGE).
    fn siw_info() -> AdapterInfo {
        AdapterInfo {
            version: Version::V1_2,
            vendor_id: 0x626d74,
            device_id: 1,
            max_registration_size: u64::MAX,
            max_window_size: 0,
            frmr_page_count: FRMR_PAGE_COUNT_MIN,
            max_initiator_request_sge: 6,
            max_receive_request_sge: 6,
            max_read_request_sge: 1,
            max_transfer_length: u32::MAX,
            max_inline_data_size: 64,
            max_inbound_read_limit: 128,
            max_outbound_read_limit: 128,
            max_receive_queue_depth: 32768,
            max_initiator_queue_depth: 32768,
            max_srq_depth: 327680,
            max_cq_depth: 3276800,
            large_request_threshold: 8192,
            max_caller_data: 252,
            max_callee_data: 252,
            adapter_flags: AdapterFlags::LOOPBACK_CONNECTIONS_SUPPORTED,
            rdma_technology: RdmaTechnology::IWarp,
        }
    }

    /// A latency test's default inline size (perftest's 220) is lowered to an adapter's
    /// smaller MaxInlineDataSize (siw: 64), so `nd write-lat --provider verbs` runs on siw; an
    /// explicit `-I` above the limit is still refused with the limit named.
    #[test]
    fn default_inline_fits_the_adapter_and_explicit_inline_is_checked() {
        let info = siw_info();
        for test in [Test::WriteLat, Test::SendLat] {
            let o = Opts::new(test);
            assert_eq!(o.inline, 220);
            let fitted = o.fit(&info);
            assert_eq!(fitted.inline, 64);
            check_limits(&fitted, &info).expect("the default fits");
            let lay = layout(&fitted, 2, false, info.max_receive_request_sge);
            assert_eq!((lay.inline, lay.data_inline), (64, 64));
        }
        let bw = Opts::new(Test::WriteBw).fit(&info);
        assert_eq!(bw.inline, 0);
        let mut explicit = Opts::new(Test::WriteLat);
        explicit.inline = 100;
        explicit.inline_explicit = true;
        let kept = explicit.fit(&info);
        assert_eq!(kept.inline, 100);
        let e = check_limits(&kept, &info).expect_err("over the limit");
        assert_eq!(e.status, Some(Status::INVALID_PARAMETER));
        assert!(e.message.contains("MaxInlineDataSize 64"), "{e}");
    }

    /// A send-bw target's receives of more than half a page share one tail behind a private
    /// head each (perftest's single receive buffer), so its ring stays cache-sized and keeps
    /// its full depth; small messages, latency tests and adapters with one receive SGE keep
    /// whole slots, capped at `RX_BYTES`.
    #[test]
    fn send_bw_receives_share_their_tail_past_half_a_page() {
        let o = Opts::new(Test::SendBw);
        let big = layout(&o, 1 << 20, true, 6);
        assert_eq!((big.private_head, big.rx_depth), (CTRL_LEN, o.rx_depth));
        let small = layout(&o, 2048, true, 6);
        assert_eq!(small.private_head, 0);
        let one_sge = layout(&o, 1 << 20, true, 1);
        assert_eq!(
            (one_sge.private_head, one_sge.rx_depth),
            (0, RX_BYTES >> 20)
        );
        let lat = layout(&Opts::new(Test::SendLat), 1 << 20, true, 6);
        assert_eq!(lat.private_head, 0);
    }
}
