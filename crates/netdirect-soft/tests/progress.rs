//! Run-to-completion: where progress happens.
//!
//! * Consumer-driven progress ([`EngineConfig::inline_progress`], on by default): a post is sent
//!   from the posting thread and a poll of an empty CQ receives, so a polling ping-pong does not
//!   wake the progress thread per message.
//! * Automatic progress: a target that never touches its CQ still serves RDMA reads and
//!   writes (the progress thread does it), with inline progress on and off.
//! * Callbacks: completions and notifications may be delivered on the consumer's thread, with
//!   no connection lock held, so a callback may post and poll on the same connection.
//! * Waiting: [`netdirect::Cq::wait`] spins, then blocks on the CQ's notification.
//!
//! Every test runs over IPv4 and IPv6, with inline progress on and off.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use netdirect::counters::Counter;
use netdirect::{
    Adapter, Buffer, Connector, Cq, Mr, OpenParameters, Pd, Provider, Qp, QpConfig, QpInitiator,
};
use netdirect_soft::SoftAdapter;
use netdirect_soft::SoftProvider;
use netdirect_soft::transport::EngineConfig;
use netdirect_types::{Completion, CqNotifyType, MrFlags, OpFlags, Sge, Status, Version};

const WAIT: Duration = Duration::from_secs(20);

/// A consumer's lease on its connection's arrivals that outlasts any scheduling hiccup of a
/// loaded test machine (the tests that count wakeups or pin threads must not see the progress
/// thread take a connection back because the polling thread was descheduled for a millisecond).
const LONG_LEASE: Duration = Duration::from_secs(60);

fn open(ip: IpAddr, inline: bool, lease: Duration) -> Box<dyn Adapter> {
    open_with(
        ip,
        EngineConfig {
            inline_progress: inline,
            poll_lease: lease,
            ..EngineConfig::default()
        },
    )
}

fn open_with(ip: IpAddr, config: EngineConfig) -> Box<dyn Adapter> {
    SoftProvider::with_engine_config(config)
        .open_adapter(OpenParameters {
            address: ip,
            version: Version::V2_1,
        })
        .expect("open adapter")
}

fn wakeups(adapter: &dyn Adapter) -> u64 {
    adapter
        .as_any()
        .downcast_ref::<SoftAdapter>()
        .expect("a soft adapter")
        .progress_wakeups()
}

/// One of an adapter's counters (the sum over its connections, live and closed).
fn count(adapter: &dyn Adapter, c: Counter) -> u64 {
    adapter
        .as_any()
        .downcast_ref::<SoftAdapter>()
        .expect("a soft adapter")
        .counters()
        .get(c)
}

/// Socket reads of an adapter's connections that found nothing.
fn empty_reads(adapter: &dyn Adapter) -> u64 {
    count(adapter, Counter::EmptyReads)
}

/// Adapter, PD, a receive CQ and an initiator CQ (the same one unless `two_cqs`), a QP.
struct Side {
    adapter: Box<dyn Adapter>,
    pd: Box<dyn Pd>,
    rcq: Box<dyn Cq>,
    icq: Option<Box<dyn Cq>>,
    qp: Box<dyn Qp>,
}

impl Side {
    fn new(ip: IpAddr, inline: bool, notify: Option<netdirect_soft::cq::Notification>) -> Side {
        Side::with_lease(ip, inline, LONG_LEASE, notify)
    }

    fn with_lease(
        ip: IpAddr,
        inline: bool,
        lease: Duration,
        notify: Option<netdirect_soft::cq::Notification>,
    ) -> Side {
        Side::build(open(ip, inline, lease), notify)
    }

    /// A side on an adapter opened already.
    fn on(adapter: Box<dyn Adapter>) -> Side {
        Side::build(adapter, None)
    }

    fn build(adapter: Box<dyn Adapter>, notify: Option<netdirect_soft::cq::Notification>) -> Side {
        let pd = adapter.create_pd().wait().unwrap();
        let rcq = adapter
            .create_cq(256, notify.unwrap_or_else(|| Arc::new(|_| {})), None)
            .wait()
            .unwrap();
        let icq = plain_cq(&*adapter);
        let qp = pd
            .create_qp(QpConfig {
                receive_cq: &*rcq,
                initiator_cq: &*icq,
                context: 1,
                receive_queue_depth: 64,
                initiator_queue_depth: 64,
                max_receive_sge: 2,
                max_initiator_sge: 2,
                inline_data_size: 64,
            })
            .wait()
            .unwrap();
        Side {
            adapter,
            pd,
            rcq,
            icq: Some(icq),
            qp,
        }
    }

    fn register(&self, buffer: &Buffer, flags: MrFlags) -> Box<dyn Mr> {
        let mr = self.pd.create_mr(false).wait().unwrap();
        mr.register(buffer, 0, buffer.len(), flags).wait().unwrap();
        mr
    }
}

fn plain_cq(adapter: &dyn Adapter) -> Box<dyn Cq> {
    adapter
        .create_cq(256, Arc::new(|_| {}), None)
        .wait()
        .unwrap()
}

/// Polls `cq` (busy, as a latency-bound consumer does) until `n` completions are in.
fn poll(cq: &mut dyn Cq, n: usize) -> Vec<Completion> {
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    let mut buf = [Completion::EMPTY; 16];
    while out.len() < n {
        assert!(Instant::now() < deadline, "timed out with {out:?}");
        let k = cq.get_results_ex(&mut buf[..(n - out.len()).min(16)]);
        out.extend_from_slice(&buf[..k]);
        if k == 0 {
            std::hint::spin_loop();
        }
    }
    for c in &out {
        assert_eq!(c.status, Status::SUCCESS, "{c:?}");
    }
    out
}

/// Connects `client` to `server` (IRD/ORD 4).
fn connect(server: &Side, client: &Side, ip: IpAddr) -> (Box<dyn Connector>, Box<dyn Connector>) {
    let (tx, rx) = mpsc::channel::<Box<dyn Connector>>();
    let tx = Mutex::new(tx);
    let listener = server
        .adapter
        .create_listener(Arc::new(move |c| tx.lock().unwrap().send(c).unwrap()))
        .wait()
        .unwrap();
    listener.listen(SocketAddr::new(ip, 0)).wait().unwrap();
    let address = listener.local_address().unwrap();
    let connector = client.adapter.create_connector().wait().unwrap();
    let pending = connector.connect(&*client.qp, SocketAddr::new(ip, 0), address, 4, 4, b"");
    let incoming = rx.recv_timeout(WAIT).expect("connect event");
    let accepted = incoming.accept(&*server.qp, 4, 4, b"", None);
    pending.wait_timeout(WAIT).unwrap();
    connector.complete_connect(None).wait_timeout(WAIT).unwrap();
    accepted.wait_timeout(WAIT).unwrap();
    (incoming, connector)
}

fn sge(buffer: &Buffer, mr: &dyn Mr, offset: usize, len: u32) -> Sge {
    Sge::new(buffer.address() + offset as u64, len, mr.local_token())
}

const IPS: [&str; 2] = ["127.0.0.1", "::1"];

/// A ping-pong of 8-octet sends between two busy-polling threads. With inline progress the
/// messages move on the consumers' threads: the progress threads of both adapters together
/// wake far less than once per message. Without it every message goes through them (about
/// two wakeups per message, which the assertion below would refuse).
fn ping_pong(ip: IpAddr, inline: bool, rounds: usize) -> (u64, u64, Duration, u64) {
    ping_pong_with_lease(ip, inline, rounds, LONG_LEASE)
}

/// [`ping_pong`] with a consumer lease of `lease`.
fn ping_pong_with_lease(
    ip: IpAddr,
    inline: bool,
    rounds: usize,
    lease: Duration,
) -> (u64, u64, Duration, u64) {
    let mut server = Side::with_lease(ip, inline, lease, None);
    let mut client = Side::with_lease(ip, inline, lease, None);
    let (_incoming, _connector) = connect(&server, &client, ip);
    let sbuf = Buffer::new(4096);
    let cbuf = Buffer::new(4096);
    let smr = server.register(&sbuf, MrFlags::ALLOW_LOCAL_WRITE);
    let cmr = client.register(&cbuf, MrFlags::ALLOW_LOCAL_WRITE);
    for i in 0..32 {
        let s = sge(&sbuf, &*smr, 64 * i, 64);
        server.qp.receiver().receive(i as u64, &[s]).unwrap();
        let c = sge(&cbuf, &*cmr, 64 * i, 64);
        client.qp.receiver().receive(i as u64, &[c]).unwrap();
    }
    let before = wakeups(&*server.adapter) + wakeups(&*client.adapter);
    let empty_before = empty_reads(&*server.adapter) + empty_reads(&*client.adapter);
    let start = Instant::now();
    let echo = std::thread::spawn(move || {
        for _ in 0..rounds {
            let r = poll(&mut *server.rcq, 1)[0];
            let slot = r.request_context as usize;
            let s = sge(&sbuf, &*smr, 64 * slot, 64);
            server
                .qp
                .receiver()
                .receive(r.request_context, &[s])
                .unwrap();
            server
                .qp
                .initiator()
                .send_inline(7, &[&[0x5A; 8]], OpFlags::empty())
                .unwrap();
            poll(&mut **server.icq.as_mut().unwrap(), 1);
        }
        server
    });
    for _ in 0..rounds {
        client
            .qp
            .initiator()
            .send_inline(3, &[&[0xA5; 8]], OpFlags::empty())
            .unwrap();
        poll(&mut **client.icq.as_mut().unwrap(), 1);
        let r = poll(&mut *client.rcq, 1)[0];
        assert_eq!(r.bytes_transferred, 8);
        let slot = r.request_context as usize;
        let c = sge(&cbuf, &*cmr, 64 * slot, 64);
        client
            .qp
            .receiver()
            .receive(r.request_context, &[c])
            .unwrap();
    }
    let server = echo.join().unwrap();
    let woke = wakeups(&*server.adapter) + wakeups(&*client.adapter) - before;
    let empty = empty_reads(&*server.adapter) + empty_reads(&*client.adapter) - empty_before;
    (woke, rounds as u64 * 2, start.elapsed(), empty)
}

#[test]
fn polling_ping_pong_does_not_wake_the_progress_thread_per_message() {
    for ip in IPS {
        let ip: IpAddr = ip.parse().unwrap();
        let (woke, messages, took, empty) = ping_pong(ip, true, 1000);
        println!(
            "{ip} inline: {woke} progress-thread wakeups and {empty} empty reads for {messages} messages in {took:?} ({:.3} wakeups per message)",
            woke as f64 / messages as f64
        );
        // A read that did not fill its buffer drained the socket: a polling consumer asks the
        // kernel before reading again instead of reading into would-block (which cost one
        // system call per message, and the socket lock the kernel's delivery wants).
        assert!(
            !netdirect_soft::counters::COUNTING || empty * 10 < messages,
            "{empty} reads found nothing for {messages} messages with inline progress"
        );
        // Progress-thread-only: about 2 per message. Inline: connection management and the
        // lease checks (once per `poll_lease` while a consumer polls, however many messages
        // pass; here the lease is long).
        assert!(
            woke * 4 < messages,
            "{woke} wakeups for {messages} messages in {took:?} with inline progress"
        );
        let (woke, messages, took, _) = ping_pong(ip, false, 200);
        println!(
            "{ip} progress thread only: {woke} wakeups for {messages} messages in {took:?} ({:.3} per message)",
            woke as f64 / messages as f64
        );
    }
}

/// Consumers that poll without pause keep their leases: the progress thread looks at them
/// `poll_lease` after one is taken, then at doubling intervals (up to 4 leases), not once
/// per lease, since each look is a wakeup on the CPU a pinned consumer spins on (it made one
/// ping-pong in a hundred of a pinned `nd write-lat` take 15 µs instead of 4.5).
#[test]
fn busy_pollers_keep_their_leases_without_a_wakeup_per_lease() {
    const LEASE: Duration = Duration::from_millis(1);
    for ip in IPS {
        let ip: IpAddr = ip.parse().unwrap();
        let mut rounds = 2000;
        loop {
            let (woke, messages, took, _) = ping_pong_with_lease(ip, true, rounds, LEASE);
            let leases = took.as_secs_f64() / LEASE.as_secs_f64();
            println!(
                "{ip}: {woke} progress-thread wakeups (both adapters) in {took:?} ({leases:.0} leases) for {messages} messages"
            );
            if leases < 200.0 && rounds < 64_000 {
                // Too quick to tell a look per lease from a backed-off one: run longer.
                rounds *= 4;
                continue;
            }
            // A look per lease: two per lease period (one per adapter). Backed off: about
            // two per 4 periods, plus the first looks and whatever a descheduled poller on a
            // loaded machine costs (its lease lapses; the looks start again at one lease).
            assert!(
                (woke as f64) < 10.0 + leases,
                "{woke} wakeups in {leases:.0} lease periods: the leases are looked at about once per period"
            );
            break;
        }
    }
}

/// The congestion control names `ss -tin` reports for the TCP connections with `port` at
/// either end (`None`: `ss` could not run).
fn congestion_controls(port: u16) -> Option<Vec<String>> {
    let known =
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control").ok()?;
    let known: Vec<&str> = known.split_whitespace().collect();
    let filter = format!("( sport = :{port} or dport = :{port} )");
    let out = std::process::Command::new("ss")
        .args(["-tinH", "state", "established", &filter])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Some(
        text.split_whitespace()
            .filter(|t| known.contains(t))
            .map(str::to_string)
            .collect(),
    )
}

/// Connections to a loopback address use `EngineConfig::loopback_congestion_control` (cubic
/// by default: the system's bbr paced loopback throughput down for seconds at a time), on
/// both ends; `None` keeps the system's default. Checked from outside, with `ss`.
#[test]
fn loopback_connections_use_the_configured_congestion_control() {
    let allowed = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
        .unwrap_or_default();
    let system = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .unwrap_or_default()
        .trim()
        .to_string();
    if !allowed.split_whitespace().any(|n| n == "cubic") {
        println!("cubic is not an allowed congestion control here ({allowed:?}): nothing to check");
        return;
    }
    for ip in IPS {
        let ip: IpAddr = ip.parse().unwrap();
        for (choice, want) in [
            (Some("cubic".to_string()), "cubic"),
            (None, system.as_str()),
        ] {
            let open = |choice: Option<String>| {
                let adapter = SoftProvider::with_engine_config(EngineConfig {
                    loopback_congestion_control: choice,
                    ..EngineConfig::default()
                })
                .open_adapter(OpenParameters {
                    address: ip,
                    version: Version::V2_1,
                })
                .expect("open adapter");
                Side::on(adapter)
            };
            let server = open(choice.clone());
            let client = open(choice.clone());
            let (_incoming, connector) = connect(&server, &client, ip);
            let port = connector.peer_address().unwrap().port();
            let Some(found) = congestion_controls(port) else {
                assert!(
                    std::env::var_os("ND_TEST_REQUIRE_TOOLS").is_none(),
                    "ss (iproute2) cannot run and ND_TEST_REQUIRE_TOOLS is set"
                );
                println!("ss cannot run: nothing to check");
                return;
            };
            println!("{ip}, {choice:?}: {found:?}");
            assert_eq!(found, [want, want], "{ip}, {choice:?}: both ends");
        }
    }
}

/// Socket writes of an adapter's connections.
fn socket_writes(adapter: &dyn Adapter) -> u64 {
    count(adapter, Counter::SocketWrites)
}

/// Socket writes for RDMA writes of 64 KiB, after a warm-up that lets the socket's send
/// buffer grow: `(socket writes, messages)`. One at a time (64 messages, each polled for), or
/// `together` (16 handed over at once: 15 deferred, then one that rings).
fn writes_of_64k(ip: IpAddr, together: bool) -> (u64, u64) {
    const SIZE: usize = 64 << 10;
    let messages: u64 = if together { 16 } else { 64 };
    let server = Side::new(ip, true, None);
    let mut client = Side::new(ip, true, None);
    let (_incoming, _connector) = connect(&server, &client, ip);
    let tbuf = Buffer::new(SIZE);
    let tmr = server.register(
        &tbuf,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_WRITE,
    );
    let src = Buffer::new(SIZE);
    let smr = client.register(&src, MrFlags::empty());
    let Side {
        adapter, qp, icq, ..
    } = &mut client;
    let icq = &mut **icq.as_mut().unwrap();
    let mut post = |i: u64, flags: OpFlags| {
        qp.initiator()
            .write(
                i,
                &[sge(&src, &*smr, 0, SIZE as u32)],
                tbuf.address(),
                tmr.remote_token(),
                flags,
            )
            .unwrap();
    };
    // Warm up: the socket's send buffer grows to take a whole message (a MiB, together).
    for i in 0..if together { 32 } else { 8 } {
        post(i, OpFlags::empty());
        poll(icq, 1);
    }
    let before = socket_writes(&**adapter);
    if together {
        for i in 0..messages - 1 {
            post(100 + i, OpFlags::DEFER);
        }
        post(200, OpFlags::empty());
        poll(icq, messages as usize);
    } else {
        for i in 0..messages {
            post(100 + i, OpFlags::empty());
            poll(icq, 1);
        }
    }
    (socket_writes(&**adapter) - before, messages)
}

#[test]
fn the_fpdus_of_a_message_leave_in_one_socket_write() {
    for ip in IPS {
        let ip: IpAddr = ip.parse().unwrap();
        let (writes, messages) = writes_of_64k(ip, false);
        println!(
            "{ip}: {writes} socket writes for {messages} RDMA writes of 64 KiB (two FPDUs each)"
        );
        // One each when the socket takes the whole message; a partial write adds a flush.
        assert!(
            !netdirect_soft::counters::COUNTING
                || (writes >= messages && writes * 4 < messages * 6),
            "{writes} socket writes for {messages} RDMA writes of 64 KiB"
        );
    }
}

/// FPDUs ready together leave in `sendmsg`s of up to a MiB, as a TCP benchmark's 1 MiB
/// writes: the per-call cost (socket lock, backlog, push) stays off the byte path. With one
/// write per 64 KiB message (the old gather limit) this took 16 writes.
#[test]
fn frames_ready_together_share_socket_writes_up_to_a_mib() {
    for ip in IPS {
        let ip: IpAddr = ip.parse().unwrap();
        let (writes, messages) = writes_of_64k(ip, true);
        println!(
            "{ip}: {writes} socket writes for {messages} RDMA writes of 64 KiB posted together"
        );
        // A MiB and the headers: two writes, and a flush for each partial write.
        assert!(
            !netdirect_soft::counters::COUNTING || (1..=6).contains(&writes),
            "{writes} socket writes for {messages} RDMA writes of 64 KiB posted together"
        );
    }
}

/// A stream of 4 KiB writes, then a send, to a target that busy-polls its CQ for that send:
/// the target's passes read as much as the stream's read window says, like the progress
/// thread, so a message costs about one read (a pass that read at most 2 KiB at a time took
/// three per message).
fn polled_stream_of_writes(ip: IpAddr) -> (u64, u64) {
    const MESSAGES: usize = 2000;
    let target = WriteTarget {
        lease: LONG_LEASE,
        size: 4096,
        slots: 16,
        window: 32,
    };
    let (reads, _) = target.stream(ip, MESSAGES, Counter::SocketReads);
    (reads, MESSAGES as u64)
}

/// A busy-polling target of a stream of RDMA writes from another adapter: `size` octets each,
/// to `slots` places in turn, `window` outstanding; the target polls for the Send behind them.
struct WriteTarget {
    lease: Duration,
    size: usize,
    slots: usize,
    window: usize,
}

impl WriteTarget {
    /// Streams `messages` writes; returns how much the target adapter's `counter` grew and how
    /// long the stream took.
    fn stream(&self, ip: IpAddr, messages: usize, counter: Counter) -> (u64, Duration) {
        let mut server = Side::with_lease(ip, true, self.lease, None);
        let mut client = Side::new(ip, true, None);
        let (_incoming, _connector) = connect(&server, &client, ip);
        let tbuf = Buffer::new(self.size * self.slots);
        let tmr = server.register(
            &tbuf,
            MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_WRITE,
        );
        let token = tmr.remote_token();
        let s = sge(&tbuf, &*tmr, 0, 64);
        server.qp.receiver().receive(1, &[s]).unwrap();
        let src = Buffer::new(self.size);
        let smr = client.register(&src, MrFlags::empty());
        let before = count(&*server.adapter, counter);
        let start = Instant::now();
        let target = std::thread::spawn(move || {
            // The send comes after every write: polling for it runs the passes that read them.
            let r = poll(&mut *server.rcq, 1)[0];
            assert_eq!(r.bytes_transferred, 8);
            server
        });
        let icq = &mut **client.icq.as_mut().unwrap();
        let mut outstanding = 0;
        for i in 0..messages {
            if outstanding == self.window {
                poll(icq, 1);
                outstanding -= 1;
            }
            let to = tbuf.address() + (self.size * (i % self.slots)) as u64;
            client
                .qp
                .initiator()
                .write(
                    i as u64,
                    &[sge(&src, &*smr, 0, self.size as u32)],
                    to,
                    token,
                    OpFlags::empty(),
                )
                .unwrap();
            outstanding += 1;
        }
        client
            .qp
            .initiator()
            .send_inline(0, &[&[0x5A; 8]], OpFlags::empty())
            .unwrap();
        poll(icq, outstanding + 1);
        let server = target.join().unwrap();
        let took = start.elapsed();
        (count(&*server.adapter, counter) - before, took)
    }
}

#[test]
fn a_polling_receiver_reads_a_message_in_about_one_read() {
    for ip in IPS {
        let ip: IpAddr = ip.parse().unwrap();
        let (reads, messages) = polled_stream_of_writes(ip);
        println!("{ip}: {reads} socket reads for {messages} writes of 4 KiB");
        assert!(
            // Two per message when the smallest read was 4 KiB even (4,096 octets, then the
            // last 20 of a 4,116-octet FPDU).
            !netdirect_soft::counters::COUNTING || (reads > 0 && reads < 3 * messages / 2),
            "{reads} socket reads for {messages} writes of 4 KiB on the polling target"
        );
    }
}

/// The target's lease in [`a_polling_target_of_writes_keeps_its_lease`]: long enough that a
/// test thread descheduled on a loaded machine seldom loses it, short enough for a test of a
/// second or two.
const TARGET_LEASE: Duration = Duration::from_millis(20);

/// The octets a target's passes read are work although they complete nothing: a busy-polling
/// target of RDMA writes keeps its lease while they stream in. (It used to find its connection
/// idle every few leases and hand the arrivals back, and its next poll took them again: 84
/// returns in 216 leases, against 0 to 3 since.) Some returns are allowed for a test thread
/// descheduled for a lease on a loaded machine.
#[test]
fn a_polling_target_of_writes_keeps_its_lease() {
    for ip in IPS {
        let ip: IpAddr = ip.parse().unwrap();
        let target = WriteTarget {
            lease: TARGET_LEASE,
            size: 64 * 1024,
            slots: 4,
            window: 16,
        };
        let mut bytes = 16 << 20;
        loop {
            let (returns, took) = target.stream(ip, bytes / target.size, Counter::LeaseReturns);
            let leases = took.as_secs_f64() / TARGET_LEASE.as_secs_f64();
            println!(
                "{ip}: {returns} lease returns in {took:?} ({leases:.0} leases) for {} MiB of writes",
                bytes >> 20
            );
            if leases < 60.0 && bytes < 16 << 30 {
                // Too quick to tell a return every two leases from none: stream longer.
                bytes *= 4;
                continue;
            }
            assert!(
                !netdirect_soft::counters::COUNTING || (returns as f64) < 2.0 + leases / 15.0,
                "{returns} lease returns in {leases:.0} lease periods: a polling target that reads data hands its arrivals back"
            );
            break;
        }
    }
}

/// Octets moved each way by the never-polling-target test: `ND_RTC_BYTES`, else 1 GiB in a
/// release build and 32 MiB in a debug build.
fn target_bytes() -> usize {
    std::env::var("ND_RTC_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            32 << 20
        } else {
            1 << 30
        })
}

/// The target never touches its CQ (not even once): RDMA writes into its memory and RDMA reads
/// out of it still complete, served by its progress thread.
fn target_that_never_polls(ip: IpAddr, inline: bool) {
    const CHUNK: usize = 1 << 20;
    let total = target_bytes();
    let server = Side::new(ip, inline, None);
    let mut client = Side::new(ip, inline, None);
    let (_incoming, _connector) = connect(&server, &client, ip);
    let tbuf = Buffer::new(4 * CHUNK);
    let tmr = server.register(
        &tbuf,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_READ | MrFlags::ALLOW_REMOTE_WRITE,
    );
    let token = tmr.remote_token();
    let src = Buffer::new(CHUNK);
    let sink = Buffer::new(CHUNK);
    let smr = client.register(&src, MrFlags::ALLOW_LOCAL_WRITE);
    let kmr = client.register(&sink, MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK);
    let before = wakeups(&*server.adapter);
    let start = Instant::now();
    let mut moved = 0usize;
    let mut i = 0u8;
    while moved < total {
        let len = CHUNK.min(total - moved);
        let at = (usize::from(i) % 4) * CHUNK;
        src.write_at(0, &vec![i; len]).unwrap();
        let init = &mut **client.icq.as_mut().unwrap();
        client
            .qp
            .initiator()
            .write(
                1,
                &[sge(&src, &*smr, 0, len as u32)],
                tbuf.address() + at as u64,
                token,
                OpFlags::empty(),
            )
            .unwrap();
        // The read behind the write returns what the write placed (a fenced read sees it).
        client
            .qp
            .initiator()
            .read(
                2,
                &[sge(&sink, &*kmr, 0, len as u32)],
                tbuf.address() + at as u64,
                token,
                OpFlags::READ_FENCE,
            )
            .unwrap();
        poll(init, 2);
        let mut got = vec![0u8; len];
        sink.read_at(0, &mut got).unwrap();
        assert!(got.iter().all(|b| *b == i), "chunk {i} read back wrong");
        moved += len;
        i = i.wrapping_add(1);
    }
    let secs = start.elapsed().as_secs_f64();
    let woke = wakeups(&*server.adapter) - before;
    let mib = (2 * total) as f64 / f64::from(1 << 20);
    println!(
        "{ip} inline={inline}: {} MiB written and {} MiB read from a target that never polls in {secs:.2} s; target progress-thread wakeups {woke} ({:.2} per MiB moved, {:.2} per request)",
        total >> 20,
        total >> 20,
        woke as f64 / mib,
        woke as f64 / (2.0 * (total / CHUNK).max(1) as f64),
    );
    // The target's CQ stays untouched: nothing completed there.
    drop(server);
}

#[test]
fn a_target_that_never_polls_serves_reads_and_writes() {
    for ip in IPS {
        let ip: IpAddr = ip.parse().unwrap();
        target_that_never_polls(ip, true);
        target_that_never_polls(ip, false);
    }
}

/// A notification callback runs on the thread whose poll made it due, with no connection lock
/// held: from inside, it posts a send on the same connection (sent inline at once) and polls
/// the initiator CQ, which already holds that send's completion.
fn callback_reenters(ip: IpAddr, inline: bool) {
    struct Shared {
        initiator: Mutex<Option<Box<dyn QpInitiator>>>,
        icq: Mutex<Option<Box<dyn Cq>>>,
        threads: Mutex<Vec<ThreadId>>,
        seen_inside: AtomicUsize,
        calls: AtomicUsize,
    }
    let shared = Arc::new(Shared {
        initiator: Mutex::new(None),
        icq: Mutex::new(None),
        threads: Mutex::new(Vec::new()),
        seen_inside: AtomicUsize::new(0),
        calls: AtomicUsize::new(0),
    });
    let sh = shared.clone();
    let notify: netdirect_soft::cq::Notification = Arc::new(move |status| {
        assert_eq!(status, Status::SUCCESS);
        sh.calls.fetch_add(1, Ordering::SeqCst);
        sh.threads.lock().unwrap().push(std::thread::current().id());
        let mut init = sh.initiator.lock().unwrap();
        let Some(init) = init.as_mut() else { return };
        init.send_inline(99, &[b"reply"], OpFlags::empty()).unwrap();
        let mut icq = sh.icq.lock().unwrap();
        let Some(icq) = icq.as_mut() else { return };
        // One poll from inside the callback (never wait in a callback: without inline
        // progress it runs on the progress thread). Inline, the send completed already.
        let mut out = [Completion::EMPTY; 4];
        let n = icq.get_results_ex(&mut out);
        if out[..n].iter().any(|c| c.request_context == 99) {
            sh.seen_inside.fetch_add(1, Ordering::SeqCst);
        }
    });
    let mut server = Side::new(ip, inline, None);
    let mut client = Side::new(ip, inline, Some(notify));
    let (_incoming, _connector) = connect(&server, &client, ip);
    let sbuf = Buffer::new(4096);
    let cbuf = Buffer::new(4096);
    let smr = server.register(&sbuf, MrFlags::ALLOW_LOCAL_WRITE);
    let cmr = client.register(&cbuf, MrFlags::ALLOW_LOCAL_WRITE);
    server
        .qp
        .receiver()
        .receive(1, &[sge(&sbuf, &*smr, 0, 64)])
        .unwrap();
    client
        .qp
        .receiver()
        .receive(2, &[sge(&cbuf, &*cmr, 0, 64)])
        .unwrap();
    let qp = std::mem::replace(
        &mut client.qp,
        client
            .pd
            .create_qp(QpConfig {
                receive_cq: &*client.rcq,
                initiator_cq: &**client.icq.as_ref().unwrap(),
                context: 2,
                receive_queue_depth: 1,
                initiator_queue_depth: 1,
                max_receive_sge: 1,
                max_initiator_sge: 1,
                inline_data_size: 0,
            })
            .wait()
            .unwrap(),
    );
    let (initiator, _receiver) = qp.into_split();
    *shared.initiator.lock().unwrap() = Some(initiator);
    *shared.icq.lock().unwrap() = client.icq.take();
    client.rcq.arm(CqNotifyType::Any);
    // The client polls (its empty poll leases it the connection's arrivals), then the server
    // speaks; the client's next polls take the message in, which fires the armed notification
    // on this thread.
    // Poll for a while: a single poll may find the connection busy on the progress thread
    // (try-lock), which then keeps the arrivals.
    let mut none = [Completion::EMPTY; 1];
    let until = Instant::now() + Duration::from_millis(50);
    while Instant::now() < until {
        assert_eq!(client.rcq.get_results_ex(&mut none), 0);
    }
    server
        .qp
        .initiator()
        .send_inline(5, &[b"hello"], OpFlags::empty())
        .unwrap();
    let r = poll(&mut *client.rcq, 1);
    assert_eq!(r[0].bytes_transferred, 5);
    let got = poll(&mut *server.rcq, 1);
    assert_eq!(got[0].bytes_transferred, 5, "the callback's reply arrived");
    assert_eq!(shared.calls.load(Ordering::SeqCst), 1);
    if inline {
        assert_eq!(
            shared.threads.lock().unwrap().as_slice(),
            &[std::thread::current().id()],
            "with inline progress the notification runs on the polling thread"
        );
        assert_eq!(
            shared.seen_inside.load(Ordering::SeqCst),
            1,
            "the callback's own send completed inline, seen from inside the callback"
        );
    }
    *shared.initiator.lock().unwrap() = None;
    *shared.icq.lock().unwrap() = None;
}

#[test]
fn callbacks_run_without_connection_locks_and_may_post_and_poll() {
    for ip in IPS {
        let ip: IpAddr = ip.parse().unwrap();
        callback_reenters(ip, true);
        callback_reenters(ip, false);
    }
}

/// `Cq::wait` blocks until the peer's message arrives (spinning 0: straight to arm and sleep).
fn wait_blocks_until_a_completion(ip: IpAddr, inline: bool) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let server = Side::new(ip, inline, None);
    // A long lease: only the wait's hand-back can let the progress thread see the message.
    let mut client = Side::with_lease(
        ip,
        inline,
        LONG_LEASE,
        Some(Arc::new(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        })),
    );
    let (_incoming, _connector) = connect(&server, &client, ip);
    let cbuf = Buffer::new(4096);
    let cmr = client.register(&cbuf, MrFlags::ALLOW_LOCAL_WRITE);
    client
        .qp
        .receiver()
        .receive(2, &[sge(&cbuf, &*cmr, 0, 64)])
        .unwrap();
    let mut out = [Completion::EMPTY; 4];
    // Nothing arrives: times out with 0.
    let t = Instant::now();
    assert_eq!(
        client
            .rcq
            .wait(&mut out, Duration::ZERO, Duration::from_millis(50)),
        0
    );
    assert!(t.elapsed() >= Duration::from_millis(50));
    let server = Arc::new(Mutex::new(server));
    let s = server.clone();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        s.lock()
            .unwrap()
            .qp
            .initiator()
            .send_inline(5, &[b"wake up"], OpFlags::empty())
            .unwrap();
    });
    // Blocked in the wait, the consumer holds no lease: the message wakes it at once, not
    // when a lease lapses (60 s here).
    let t = Instant::now();
    let n = client.rcq.wait(&mut out, Duration::from_micros(50), WAIT);
    assert_eq!(n, 1);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "woken after {:?}",
        t.elapsed()
    );
    assert_eq!(out[0].bytes_transferred, 7);
    assert!(calls.load(Ordering::SeqCst) >= 1, "the arm notified");
    sender.join().unwrap();
}

#[test]
fn cq_wait_spins_then_blocks_on_the_notification() {
    for ip in IPS {
        let ip: IpAddr = ip.parse().unwrap();
        wait_blocks_until_a_completion(ip, true);
        wait_blocks_until_a_completion(ip, false);
    }
}

/// A consumer that polled once and then stopped (without [`Cq::wait`]) loses its lease after
/// `poll_lease`: the progress thread takes the connection's arrivals back, and the armed CQ's
/// notification comes from it although nobody polls.
fn lease_expires(ip: IpAddr) {
    let (tx, rx) = mpsc::channel::<std::thread::ThreadId>();
    let tx = Mutex::new(tx);
    let server = Side::new(ip, true, None);
    let mut client = Side::with_lease(
        ip,
        true,
        Duration::from_millis(5),
        Some(Arc::new(move |_| {
            let _ = tx.lock().unwrap().send(std::thread::current().id());
        })),
    );
    let (_incoming, _connector) = connect(&server, &client, ip);
    let cbuf = Buffer::new(4096);
    let cmr = client.register(&cbuf, MrFlags::ALLOW_LOCAL_WRITE);
    client
        .qp
        .receiver()
        .receive(2, &[sge(&cbuf, &*cmr, 0, 64)])
        .unwrap();
    client.rcq.arm(CqNotifyType::Any);
    let mut none = [Completion::EMPTY; 1];
    assert_eq!(
        client.rcq.get_results_ex(&mut none),
        0,
        "leases the arrivals"
    );
    let mut server = server;
    server
        .qp
        .initiator()
        .send_inline(5, &[b"later"], OpFlags::empty())
        .unwrap();
    let on = rx.recv_timeout(WAIT).expect("notified without a poll");
    assert_ne!(on, std::thread::current().id());
    assert_eq!(poll(&mut *client.rcq, 1)[0].bytes_transferred, 5);
}

#[test]
fn a_consumer_that_stops_polling_loses_its_lease() {
    for ip in IPS {
        lease_expires(ip.parse().unwrap());
    }
}

/// `NDK_OP_FLAG_DEFER` (§7.1) with inline progress: deferred writes wait on their connection
/// until a request without the flag rings the doorbell, then leave together; a post that fails
/// inline rings it too (the provider rule). Without inline progress they go at once.
fn deferred_chain(ip: IpAddr, inline: bool) {
    let server = Side::new(ip, inline, None);
    let mut client = Side::new(ip, inline, None);
    let (_incoming, _connector) = connect(&server, &client, ip);
    let tbuf = Buffer::new(4096);
    let tmr = server.register(&tbuf, MrFlags::ALLOW_REMOTE_WRITE);
    let src = Buffer::new(4096);
    src.write_at(0, &[0xEE; 4096]).unwrap();
    let smr = client.register(&src, MrFlags::ALLOW_LOCAL_WRITE);
    let landed = |at: usize| {
        let mut b = [0u8; 1];
        tbuf.read_at(at, &mut b).unwrap();
        b[0] == 0xEE
    };
    let wait_landed = |at: usize| {
        let deadline = Instant::now() + WAIT;
        while !landed(at) {
            assert!(Instant::now() < deadline, "write at {at} never landed");
            std::thread::yield_now();
        }
    };
    let write = |client: &mut Side, i: usize, flags: OpFlags| {
        client.qp.initiator().write(
            i as u64,
            &[sge(&src, &*smr, 0, 64)],
            tbuf.address() + 64 * i as u64,
            tmr.remote_token(),
            flags,
        )
    };
    for i in 0..3 {
        write(&mut client, i, OpFlags::DEFER).unwrap();
    }
    if inline {
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !(0..3).any(landed),
            "deferred writes left before the doorbell"
        );
    }
    write(&mut client, 3, OpFlags::empty()).unwrap();
    for i in 0..4 {
        wait_landed(64 * i);
    }
    poll(&mut **client.icq.as_mut().unwrap(), 4);
    // A deferred write, then a post that fails inline (bad flags): the deferred one goes.
    write(&mut client, 4, OpFlags::DEFER).unwrap();
    assert_eq!(
        write(&mut client, 5, OpFlags::SEND_AND_SOLICIT_EVENT),
        Err(Status::INVALID_PARAMETER)
    );
    wait_landed(64 * 4);
    poll(&mut **client.icq.as_mut().unwrap(), 1);
}

#[test]
fn deferred_requests_leave_with_the_doorbell() {
    for ip in IPS {
        let ip: IpAddr = ip.parse().unwrap();
        deferred_chain(ip, true);
        deferred_chain(ip, false);
    }
}

/// The soft CQ behind a `Cq` (for its test counters).
fn soft_cq(cq: &dyn Cq) -> &netdirect_soft::objects::cq::SoftCq {
    cq.as_any().downcast_ref().expect("a soft CQ")
}

/// Polls `cq` once, expecting nothing; returns how many connections its pass examined.
fn empty_poll(cq: &mut dyn Cq) -> u64 {
    let before = soft_cq(cq).pass_visits();
    let mut none = [Completion::EMPTY; 1];
    assert_eq!(cq.get_results_ex(&mut none), 0, "{none:?}");
    soft_cq(cq).pass_visits() - before
}

/// The lease of the active-list test: a connection is idle after two of them without work.
const ACTIVE_LEASE: Duration = Duration::from_millis(10);
/// Comfortably more than two leases.
const GO_IDLE: Duration = Duration::from_millis(100);

/// Many connections share a CQ (and, with `two_cqs`, a second one for their initiator
/// completions): a poll of the empty CQ runs its progress pass over the connections with work
/// only. Idle connections leave the CQ's active list at the pass that finds them idle; a post
/// brings one back (at once, on the posting thread), and so does an arrival the progress
/// thread hears.
fn active_list(ip: IpAddr, two_cqs: bool) {
    const QPS: usize = 6;
    let (tx, rx) = mpsc::channel::<()>();
    let tx = Mutex::new(tx);
    let server = Side::with_lease(ip, true, ACTIVE_LEASE, None);
    let client = Side::with_lease(
        ip,
        true,
        ACTIVE_LEASE,
        Some(Arc::new(move |_| {
            let _ = tx.lock().unwrap().send(());
        })),
    );
    let sbuf = Buffer::new(4096);
    let cbuf = Buffer::new(4096);
    let smr = server.register(&sbuf, MrFlags::ALLOW_LOCAL_WRITE);
    let cmr = client.register(&cbuf, MrFlags::ALLOW_LOCAL_WRITE);
    let mut rcq = client.rcq;
    let mut icq = client.icq.expect("an initiator CQ");
    let qp_on = |pd: &dyn Pd, rcq: &dyn Cq, icq: &dyn Cq| {
        pd.create_qp(QpConfig {
            receive_cq: rcq,
            initiator_cq: icq,
            context: 0,
            receive_queue_depth: 4,
            initiator_queue_depth: 4,
            max_receive_sge: 1,
            max_initiator_sge: 1,
            inline_data_size: 64,
        })
        .wait()
        .unwrap()
    };
    let (tx, rx_conn) = mpsc::channel::<Box<dyn Connector>>();
    let tx = Mutex::new(tx);
    let listener = server
        .adapter
        .create_listener(Arc::new(move |c| tx.lock().unwrap().send(c).unwrap()))
        .wait()
        .unwrap();
    listener.listen(SocketAddr::new(ip, 0)).wait().unwrap();
    let address = listener.local_address().unwrap();
    let mut pairs = Vec::new();
    for i in 0..QPS {
        let mut sqp = qp_on(&*server.pd, &*server.rcq, &**server.icq.as_ref().unwrap());
        let mut cqp = qp_on(&*client.pd, &*rcq, if two_cqs { &*icq } else { &*rcq });
        sqp.receiver()
            .receive(i as u64, &[sge(&sbuf, &*smr, 64 * i, 64)])
            .unwrap();
        cqp.receiver()
            .receive(i as u64, &[sge(&cbuf, &*cmr, 64 * i, 64)])
            .unwrap();
        let connector = client.adapter.create_connector().wait().unwrap();
        let pending = connector.connect(&*cqp, SocketAddr::new(ip, 0), address, 4, 4, b"");
        let incoming = rx_conn.recv_timeout(WAIT).expect("connect event");
        let accepted = incoming.accept(&*sqp, 4, 4, b"", None);
        pending.wait_timeout(WAIT).unwrap();
        connector.complete_connect(None).wait_timeout(WAIT).unwrap();
        accepted.wait_timeout(WAIT).unwrap();
        pairs.push((sqp, cqp, incoming, connector));
    }
    let cqs = |rcq: &mut Box<dyn Cq>, icq: &mut Box<dyn Cq>| -> Vec<u64> {
        let mut v = vec![empty_poll(&mut **rcq)];
        if two_cqs {
            v.push(empty_poll(&mut **icq));
        }
        v
    };
    let active = |rcq: &dyn Cq, icq: &dyn Cq| -> Vec<u64> {
        let mut v = vec![soft_cq(rcq).active_connections() as u64];
        if two_cqs {
            v.push(soft_cq(icq).active_connections() as u64);
        }
        v
    };
    let none: Vec<u64> = if two_cqs { vec![0, 0] } else { vec![0] };
    let one: Vec<u64> = if two_cqs { vec![1, 1] } else { vec![1] };

    // Idle: the first pass finds every connection idle and drops it; later passes visit none.
    std::thread::sleep(GO_IDLE);
    let first = cqs(&mut rcq, &mut icq);
    assert!(first.iter().all(|n| *n <= QPS as u64), "{first:?}");
    assert_eq!(
        active(&*rcq, &*icq),
        none,
        "idle connections left the lists"
    );
    for _ in 0..100 {
        assert_eq!(
            cqs(&mut rcq, &mut icq),
            none,
            "a pass visited an idle connection"
        );
    }

    // A post brings its connection back into both its CQs' lists, on the posting thread.
    let k = 2;
    pairs[k]
        .1
        .initiator()
        .send_inline(7, &[b"post"], OpFlags::empty())
        .unwrap();
    assert_eq!(
        active(&*rcq, &*icq),
        one,
        "the post activated its connection"
    );
    let icq_ref: &mut dyn Cq = if two_cqs { &mut *icq } else { &mut *rcq };
    assert_eq!(poll(icq_ref, 1)[0].request_context, 7);
    assert_eq!(
        cqs(&mut rcq, &mut icq),
        one,
        "only the posting connection is visited"
    );
    // Idle again: visited once more (found idle, its lease handed back), then never.
    std::thread::sleep(GO_IDLE);
    assert_eq!(cqs(&mut rcq, &mut icq), one);
    assert_eq!(active(&*rcq, &*icq), none);
    assert_eq!(cqs(&mut rcq, &mut icq), none);

    // An arrival on another connection: the progress thread hears it (nobody holds a lease),
    // completes the receive and activates the connection; no pass runs meanwhile.
    let j = 4;
    rcq.arm(CqNotifyType::Any);
    pairs[j]
        .0
        .initiator()
        .send_inline(9, &[b"arrival"], OpFlags::empty())
        .unwrap();
    rx.recv_timeout(WAIT).expect("the receive completed");
    assert_eq!(
        active(&*rcq, &*icq),
        one,
        "the arrival activated its connection"
    );
    let got = poll(&mut *rcq, 1);
    assert_eq!(
        (got[0].request_context, got[0].bytes_transferred),
        (j as u64, 7)
    );
    assert_eq!(
        cqs(&mut rcq, &mut icq),
        one,
        "only the connection that heard is visited"
    );
    std::thread::sleep(GO_IDLE);
    assert_eq!(cqs(&mut rcq, &mut icq), one);
    assert_eq!(cqs(&mut rcq, &mut icq), none);
    drop(pairs);
}

#[test]
fn a_cq_poll_visits_only_connections_with_work() {
    for ip in IPS {
        let ip: IpAddr = ip.parse().unwrap();
        active_list(ip, false);
        active_list(ip, true);
    }
}

/// Connections that were set up and then sit idle cost the progress thread nothing once their
/// setup deadlines (connect, MPA handshake) pass: those deadlines left the timer heap when the
/// connections were established, so nothing wakes the thread for them (before: one wakeup
/// and one connection lock per connection, `connect_timeout` after its connect, on both sides).
#[test]
fn setup_deadlines_of_idle_connections_do_not_wake_the_progress_thread() {
    for ip in IPS {
        let ip: IpAddr = ip.parse().unwrap();
        idle_setup_deadlines(ip);
    }
}

fn idle_setup_deadlines(ip: IpAddr) {
    const QPS: usize = 32;
    const TIMEOUT: Duration = Duration::from_secs(2);
    let open = || {
        SoftProvider::with_engine_config(EngineConfig {
            connect_timeout: TIMEOUT,
            poll_lease: LONG_LEASE,
            ..EngineConfig::default()
        })
        .open_adapter(OpenParameters {
            address: ip,
            version: Version::V2_1,
        })
        .expect("open adapter")
    };
    let (server, client) = (open(), open());
    let (spd, cpd) = (
        server.create_pd().wait().unwrap(),
        client.create_pd().wait().unwrap(),
    );
    let (scq, ccq) = (plain_cq(&*server), plain_cq(&*client));
    let qp_on = |pd: &dyn Pd, cq: &dyn Cq| {
        pd.create_qp(QpConfig {
            receive_cq: cq,
            initiator_cq: cq,
            context: 0,
            receive_queue_depth: 1,
            initiator_queue_depth: 1,
            max_receive_sge: 1,
            max_initiator_sge: 1,
            inline_data_size: 0,
        })
        .wait()
        .unwrap()
    };
    let (tx, rx_conn) = mpsc::channel::<Box<dyn Connector>>();
    let tx = Mutex::new(tx);
    let listener = server
        .create_listener(Arc::new(move |c| tx.lock().unwrap().send(c).unwrap()))
        .wait()
        .unwrap();
    listener.listen(SocketAddr::new(ip, 0)).wait().unwrap();
    let address = listener.local_address().unwrap();
    let started = Instant::now();
    let mut pairs = Vec::new();
    for _ in 0..QPS {
        let sqp = qp_on(&*spd, &*scq);
        let cqp = qp_on(&*cpd, &*ccq);
        let connector = client.create_connector().wait().unwrap();
        let pending = connector.connect(&*cqp, SocketAddr::new(ip, 0), address, 1, 1, b"");
        let incoming = rx_conn.recv_timeout(WAIT).expect("connect event");
        let accepted = incoming.accept(&*sqp, 1, 1, b"", None);
        pending.wait_timeout(WAIT).unwrap();
        connector.complete_connect(None).wait_timeout(WAIT).unwrap();
        accepted.wait_timeout(WAIT).unwrap();
        pairs.push((sqp, cqp, incoming, connector));
    }
    let setup = started.elapsed();
    assert!(
        setup < TIMEOUT,
        "setup took {setup:?}: the deadlines passed before the count began"
    );
    // Idle from here: count the wakeups of both progress threads until every setup deadline
    // has passed, with room to spare.
    std::thread::sleep(Duration::from_millis(20));
    let before = (wakeups(&*server), wakeups(&*client));
    std::thread::sleep((started + TIMEOUT + Duration::from_millis(500)) - Instant::now());
    let woke = (wakeups(&*server) - before.0, wakeups(&*client) - before.1);
    assert!(
        woke.0 + woke.1 <= 4,
        "{ip}: {QPS} idle connections woke the progress threads {woke:?} times (server, client)"
    );
    drop(pairs);
}

/// 64-octet RDMA reads, one at a time, from a target that never polls; returns the target's
/// progress-thread wakeups per read when its thread looks for input `spin` after the last.
fn wakeups_per_read(ip: IpAddr, spin: Duration) -> f64 {
    const READS: usize = 500;
    let server = Side::on(open_with(
        ip,
        EngineConfig {
            progress_spin: spin,
            ..EngineConfig::default()
        },
    ));
    let mut client = Side::new(ip, true, None);
    let (_incoming, _connector) = connect(&server, &client, ip);
    let tbuf = Buffer::new(4096);
    let tmr = server.register(
        &tbuf,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_READ,
    );
    let sink = Buffer::new(4096);
    let kmr = client.register(&sink, MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK);
    let before = wakeups(&*server.adapter);
    for i in 0..READS {
        client
            .qp
            .initiator()
            .read(
                i as u64,
                &[sge(&sink, &*kmr, 0, 64)],
                tbuf.address(),
                tmr.remote_token(),
                OpFlags::empty(),
            )
            .unwrap();
        let done = poll(&mut **client.icq.as_mut().unwrap(), 1);
        assert_eq!(done[0].status, Status::SUCCESS);
    }
    (wakeups(&*server.adapter) - before) as f64 / READS as f64
}

/// The progress thread of a target nobody polls looks for input a while after the last
/// before it sleeps ([`EngineConfig::progress_spin`]): a requester's next read, a round trip
/// later, finds it awake. Without the spin every read wakes it (an interrupt to its CPU, and a
/// read round trip of 28-41 µs instead of 11-15 on a pinned loopback pair).
#[test]
fn a_target_nobody_polls_is_not_woken_per_read_while_reads_keep_coming() {
    for ip in IPS {
        let ip: IpAddr = ip.parse().unwrap();
        // Generous for a loaded test machine: a round trip there may take milliseconds.
        let spinning = wakeups_per_read(ip, Duration::from_millis(20));
        let sleeping = wakeups_per_read(ip, Duration::ZERO);
        println!("{ip}: target wakeups per read {spinning:.3} spinning, {sleeping:.3} not");
        assert!(spinning < 0.1, "{ip}: {spinning:.3} wakeups per read");
        assert!(sleeping > 0.5, "{ip}: {sleeping:.3} wakeups per read");
    }
}
