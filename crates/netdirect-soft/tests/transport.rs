//! The TCP transport over real loopback sockets (127.0.0.1 and ::1 only): connection
//! management, the data path, errors, hostile peers, disconnects.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netdirect_proto::stream::{
    Access, Dest, Event, Host, Payload, PostFlags, Request, TaggedError, WorkCompletion, WorkKind,
};
use netdirect_soft::transport::{
    ConnState, ConnectError, ConnectParams, Connection, DEFAULT_MAX_MULPDU, Engine, EngineConfig,
    Incoming, Listener, MpaConfig, Negotiated, QpHost, ReadLimits, ndk_mpa_config,
};
use netdirect_test_support::host::{self, Region};
use netdirect_test_support::mpa::{self as raw, rdmap_fpdu};
use netdirect_types::Status;
use netdirect_wire::mpa::{self, Deframer, DeframerConfig, Enhanced, StartupKind, StartupRepr};
use netdirect_wire::rdmap::{self, Message};
use netdirect_wire::terminate::TermError;

const WAIT: Duration = Duration::from_secs(5);

/// What a test sees of one side: regions, receive buffers, and the host's notes.
#[derive(Clone, Default)]
struct Side {
    regions: Arc<Mutex<HashMap<u32, Region>>>,
    receives: Arc<Mutex<VecDeque<(u64, u64)>>>,
    recv_data: Arc<Mutex<HashMap<u64, Vec<u8>>>>,
}

impl Side {
    fn region(&self, stag: u32, base: u64, data: Vec<u8>) {
        self.regions
            .lock()
            .unwrap()
            .insert(stag, Region::new(base, data));
    }

    fn region_data(&self, stag: u32) -> Vec<u8> {
        self.regions.lock().unwrap()[&stag].data.clone()
    }

    fn post_recv(&self, id: u64, cap: usize) {
        self.recv_data.lock().unwrap().insert(id, vec![0; cap]);
        self.receives.lock().unwrap().push_back((id, cap as u64));
    }
}

#[derive(Debug)]
enum Note {
    Wc(WorkCompletion),
    Ev(Event),
    Flushed,
}

struct TestHost {
    side: Side,
    works: HashMap<u64, Vec<u8>>,
    notes: Sender<Note>,
}

fn host() -> (TestHost, Side, Receiver<Note>) {
    let side = Side::default();
    let (tx, rx) = mpsc::channel();
    (
        TestHost {
            side: side.clone(),
            works: HashMap::new(),
            notes: tx,
        },
        side,
        rx,
    )
}

impl Host for TestHost {
    type Lease = u32;

    fn tagged(&mut self, stag: u32, to: u64, len: u64, access: Access) -> Result<u32, TaggedError> {
        // Every region here grants every right: only STag and bounds are under test.
        let regions = self.side.regions.lock().unwrap();
        host::tagged(regions.get(&stag), stag, to, len, access)
    }

    fn invalidate(&mut self, _: u32) -> Result<(), TaggedError> {
        Err(TaggedError::InvalidStag)
    }

    fn take_receive(&mut self) -> Option<(u64, u64)> {
        self.side.receives.lock().unwrap().pop_front()
    }
}

impl QpHost for TestHost {
    type Work = Vec<u8>;

    fn posted(&mut self, wr: u64, work: Vec<u8>) {
        self.works.insert(wr, work);
    }

    fn with_payload<R>(&mut self, payload: &Payload<u32>, f: impl FnOnce(&[&[u8]]) -> R) -> R {
        match payload {
            Payload::Request { wr, offset, len } => {
                let g = &self.works[wr][*offset as usize..(*offset + u64::from(*len)) as usize];
                // Two spans, as a two-entry gather list would give.
                let (a, b) = g.split_at(g.len() / 2);
                f(&[a, b])
            }
            Payload::Tagged { lease, to, len } => {
                let regions = self.side.regions.lock().unwrap();
                let r = &regions[lease];
                let at = (to - r.base) as usize;
                f(&[&r.data[at..at + *len as usize]])
            }
        }
    }

    fn with_payloads<R>(
        &mut self,
        payloads: &[&Payload<u32>],
        f: impl FnOnce(&[&[&[u8]]]) -> R,
    ) -> Option<R> {
        // Request payloads only (two spans each, as with_payload gives them); a batch with a
        // Read Response goes frame by frame, so both of the driver's paths run.
        let mut pieces = Vec::new();
        for p in payloads {
            let Payload::Request { wr, offset, len } = p else {
                return None;
            };
            let g = &self.works[wr][*offset as usize..(*offset + u64::from(*len)) as usize];
            let (a, b) = g.split_at(g.len() / 2);
            pieces.push([a, b]);
        }
        let spans: Vec<&[&[u8]]> = pieces.iter().map(|p| &p[..]).collect();
        Some(f(&spans))
    }

    fn with_dest_mut<R>(
        &mut self,
        dest: &Dest<u32>,
        len: usize,
        f: impl FnOnce(&mut [&mut [u8]]) -> R,
    ) -> Option<R> {
        // Two pieces, as a region over two pages of different buffers would lend them.
        let lend = |bytes: &mut [u8]| {
            let (a, b) = bytes.split_at_mut(len / 2);
            f(&mut [a, b])
        };
        match *dest {
            Dest::Receive { recv, offset } => {
                let mut rd = self.side.recv_data.lock().unwrap();
                let buf = rd.get_mut(&recv).unwrap();
                Some(lend(&mut buf[offset as usize..offset as usize + len]))
            }
            Dest::Tagged { lease, to } => {
                let mut regions = self.side.regions.lock().unwrap();
                let r = regions.get_mut(&lease).unwrap();
                let at = (to - r.base) as usize;
                Some(lend(&mut r.data[at..at + len]))
            }
        }
    }

    fn place(&mut self, dest: Dest<u32>, data: &[u8]) {
        match dest {
            Dest::Receive { recv, offset } => {
                let mut rd = self.side.recv_data.lock().unwrap();
                let buf = rd.get_mut(&recv).unwrap();
                buf[offset as usize..offset as usize + data.len()].copy_from_slice(data);
            }
            Dest::Tagged { lease, to } => {
                let mut regions = self.side.regions.lock().unwrap();
                let r = regions.get_mut(&lease).unwrap();
                let at = (to - r.base) as usize;
                r.data[at..at + data.len()].copy_from_slice(data);
            }
        }
    }

    fn completed(&mut self, completion: WorkCompletion) {
        let _ = self.notes.send(Note::Wc(completion));
    }

    fn event(&mut self, event: Event) {
        let _ = self.notes.send(Note::Ev(event));
    }

    fn local(&mut self, _: u64) -> Status {
        Status::SUCCESS
    }

    fn flushed(&mut self) {
        let _ = self.notes.send(Note::Flushed);
    }
}

fn engine() -> Engine<TestHost> {
    Engine::new(EngineConfig::default()).unwrap()
}

fn wc(rx: &Receiver<Note>) -> WorkCompletion {
    match rx.recv_timeout(WAIT).expect("completion in time") {
        Note::Wc(c) => c,
        n => panic!("expected a completion, got {n:?}"),
    }
}

fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 13) as u8)
        .collect()
}

fn status_channel() -> (impl FnOnce(Status) + Send + 'static, Receiver<Status>) {
    let (tx, rx) = mpsc::channel();
    (
        move |s| {
            let _ = tx.send(s);
        },
        rx,
    )
}

type ConnectResult = Result<Negotiated, ConnectError>;

fn connect_channel() -> (
    impl FnOnce(ConnectResult) + Send + 'static,
    Receiver<ConnectResult>,
) {
    let (tx, rx) = mpsc::channel();
    (
        move |r| {
            let _ = tx.send(r);
        },
        rx,
    )
}

fn listen(
    e: &Engine<TestHost>,
    addr: SocketAddr,
    config: MpaConfig,
) -> (Listener<TestHost>, Receiver<Incoming<TestHost>>) {
    let (tx, rx) = mpsc::channel();
    let l = e
        .listen(addr, config, move |inc| {
            let _ = tx.send(inc);
        })
        .unwrap();
    (l, rx)
}

fn params(remote: SocketAddr, config: MpaConfig, pd: &[u8]) -> ConnectParams {
    ConnectParams {
        local: None,
        remote,
        config,
        limits: ReadLimits { ird: 4, ord: 4 },
        private_data: pd.to_vec(),
    }
}

struct Pair {
    a: Connection<TestHost>,
    b: Connection<TestHost>,
    sa: Side,
    sb: Side,
    na: Receiver<Note>,
    nb: Receiver<Note>,
    _l: Listener<TestHost>,
}

/// Connects `ea` (active) to a listener of `eb` on `addr`, through accept and complete.
fn pair(ea: &Engine<TestHost>, eb: &Engine<TestHost>, addr: SocketAddr, crc: bool) -> Pair {
    pair_with(ea, eb, addr, crc, false)
}

/// [`pair`], with markers asked for in both directions when `markers`.
fn pair_with(
    ea: &Engine<TestHost>,
    eb: &Engine<TestHost>,
    addr: SocketAddr,
    crc: bool,
    markers: bool,
) -> Pair {
    let config = MpaConfig {
        crc,
        markers,
        ..ndk_mpa_config()
    };
    let listener_config = MpaConfig {
        markers,
        ..MpaConfig::default()
    };
    let (l, incoming) = listen(eb, addr, listener_config);
    let (ha, sa, na) = host();
    let (hb, sb, nb) = host();
    let (cb, connected) = connect_channel();
    let a = ea
        .connect(params(l.local_addr(), config, b"hello"), ha, cb)
        .unwrap();
    let inc = incoming.recv_timeout(WAIT).unwrap();
    assert_eq!(inc.request().private_data, b"hello");
    assert_eq!(inc.peer_addr(), a.local_addr());
    assert_eq!(inc.local_addr(), l.local_addr());
    let (cb, accepted) = status_channel();
    let b = inc
        .accept(ReadLimits { ird: 4, ord: 4 }, b"world", hb, cb)
        .unwrap();
    let neg = connected.recv_timeout(WAIT).unwrap().unwrap();
    assert_eq!(neg.peer_private_data, b"world");
    assert_eq!(neg.crc, crc);
    assert_eq!(a.state(), ConnState::Replied);
    // Not complete yet: the passive side's accept waits, and posting is refused.
    assert!(accepted.recv_timeout(Duration::from_millis(50)).is_err());
    assert_eq!(
        a.post(1, vec![], send(0), signaled()),
        Err(Status::CONNECTION_INVALID)
    );
    let (cb, completed) = status_channel();
    a.complete(cb);
    assert_eq!(completed.recv_timeout(WAIT).unwrap(), Status::SUCCESS);
    assert_eq!(accepted.recv_timeout(WAIT).unwrap(), Status::SUCCESS);
    assert_eq!(b.state(), ConnState::Connected);
    Pair {
        a,
        b,
        sa,
        sb,
        na,
        nb,
        _l: l,
    }
}

fn send(len: u32) -> Request {
    Request::Send {
        len,
        solicited: false,
        invalidate: None,
    }
}

fn signaled() -> PostFlags {
    PostFlags {
        signaled: true,
        read_fence: false,
        local_invalidate: false,
    }
}

fn exercise(p: &Pair) {
    const BIG: usize = 4 * 1024 * 1024 + 123;
    // Send / receive both ways, small and multi-segment.
    p.sb.post_recv(100, 200_000);
    p.sb.post_recv(101, 16);
    p.sa.post_recv(200, 100);
    p.a.post(1, pattern(1, 150_000), send(150_000), signaled())
        .unwrap();
    p.a.post(2, pattern(2, 16), send(16), signaled()).unwrap();
    // RDMA write of several MiB into b's region, then a read of it back into a's region.
    p.sb.region(0xB0, 0x10_0000, vec![0; BIG]);
    p.sa.region(0xA0, 0x20_0000, vec![0; BIG]);
    let src = pattern(3, BIG);
    p.a.post(
        3,
        src.clone(),
        Request::Write {
            len: BIG as u32,
            stag: 0xB0,
            to: 0x10_0000,
        },
        signaled(),
    )
    .unwrap();
    p.a.post(
        4,
        vec![],
        Request::Read {
            len: BIG as u32,
            sink_stag: 0xA0,
            sink_to: 0x20_0000,
            stag: 0xB0,
            to: 0x10_0000,
        },
        signaled(),
    )
    .unwrap();
    // Unsignaled send, then a signaled one: only the second reports.
    p.b.post(9, pattern(9, 50), send(50), PostFlags::default())
        .unwrap();
    let mut sq = Vec::new();
    let mut recv_a = Vec::new();
    while sq.len() < 4 || recv_a.is_empty() {
        let c = wc(&p.na);
        if c.kind == WorkKind::Receive {
            recv_a.push(c);
        } else {
            sq.push((c.wr, c.kind, c.status));
        }
    }
    // Completions in posting order on the send queue; the receive is its own queue.
    assert_eq!(
        sq,
        vec![
            (1, WorkKind::Send, Status::SUCCESS),
            (2, WorkKind::Send, Status::SUCCESS),
            (3, WorkKind::Write, Status::SUCCESS),
            (4, WorkKind::Read, Status::SUCCESS),
        ]
    );
    assert_eq!((recv_a[0].wr, recv_a[0].bytes), (200, 50));
    assert_eq!(
        p.sa.recv_data.lock().unwrap()[&200][..50],
        pattern(9, 50)[..]
    );
    let rb: Vec<_> = (0..2).map(|_| wc(&p.nb)).collect();
    assert_eq!(
        rb.iter().map(|c| (c.wr, c.bytes)).collect::<Vec<_>>(),
        vec![(100, 150_000), (101, 16)]
    );
    assert_eq!(
        p.sb.recv_data.lock().unwrap()[&100][..150_000],
        pattern(1, 150_000)[..]
    );
    assert_eq!(p.sb.recv_data.lock().unwrap()[&101], pattern(2, 16));
    assert!(p.sb.region_data(0xB0) == src, "write landed byte for byte");
    assert!(
        p.sa.region_data(0xA0) == src,
        "read came back byte for byte"
    );
    assert!(p.na.try_recv().is_err() && p.nb.try_recv().is_err());
}

fn disconnect_both(p: Pair) {
    let (cb, done) = status_channel();
    p.a.disconnect(cb);
    assert_eq!(done.recv_timeout(WAIT).unwrap(), Status::SUCCESS);
    // The passive side hears the FIN, flushes nothing on its own.
    assert!(matches!(
        p.nb.recv_timeout(WAIT).unwrap(),
        Note::Ev(Event::PeerClosed)
    ));
    assert_eq!(p.b.state(), ConnState::PeerClosed);
    let (cb, done) = status_channel();
    p.b.disconnect(cb);
    assert_eq!(done.recv_timeout(WAIT).unwrap(), Status::SUCCESS);
    assert!(matches!(p.nb.recv_timeout(WAIT).unwrap(), Note::Flushed));
    assert_eq!(
        p.a.post(5, vec![], send(0), signaled()),
        Err(Status::CONNECTION_INVALID)
    );
}

#[test]
fn ipv4_and_ipv6_data_path_with_and_without_crc() {
    let ea = engine();
    let eb = engine();
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        for crc in [false, true] {
            let p = pair(&ea, &eb, addr.parse().unwrap(), crc);
            exercise(&p);
            disconnect_both(p);
        }
    }
    // One engine with both ends.
    let p = pair(&ea, &ea, "127.0.0.1:0".parse().unwrap(), true);
    exercise(&p);
    disconnect_both(p);
    // Markers in both directions (never offered to siw, but understood), with and without CRC.
    for crc in [false, true] {
        let p = pair_with(&ea, &eb, "[::1]:0".parse().unwrap(), crc, true);
        exercise(&p);
        disconnect_both(p);
    }
}

#[test]
fn rdma_write_throughput() {
    // A rough figure, not a benchmark: 64 MiB of RDMA Write over loopback, CRC off.
    // ND_MULPDU=<octets> overrides the MULPDU cap (how DEFAULT_MAX_MULPDU was chosen).
    let config = EngineConfig {
        max_mulpdu: std::env::var("ND_MULPDU")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_MULPDU),
        // ND_DIRECT_MIN=<octets>|off overrides the header-first receive threshold.
        direct_min: match std::env::var("ND_DIRECT_MIN").ok().as_deref() {
            Some("off") => None,
            Some(v) => v.parse().ok(),
            None => EngineConfig::default().direct_min,
        },
        ..EngineConfig::default()
    };
    let ea = Engine::new(config.clone()).unwrap();
    let eb = Engine::new(config).unwrap();
    let p = pair(&ea, &eb, "127.0.0.1:0".parse().unwrap(), false);
    const LEN: usize = 8 * 1024 * 1024;
    const ROUNDS: u64 = 16;
    p.sb.region(0xB0, 0, vec![0; LEN]);
    let src = pattern(5, LEN);
    let start = Instant::now();
    for i in 0..ROUNDS {
        p.a.post(
            i,
            src.clone(),
            Request::Write {
                len: LEN as u32,
                stag: 0xB0,
                to: 0,
            },
            PostFlags::default(),
        )
        .unwrap();
    }
    // A read behind the writes completes only after they were placed (RDMAP ordering).
    p.sa.region(0xA0, 0, vec![0; 8]);
    p.a.post(
        99,
        vec![],
        Request::Read {
            len: 8,
            sink_stag: 0xA0,
            sink_to: 0,
            stag: 0xB0,
            to: 0,
        },
        signaled(),
    )
    .unwrap();
    let c = wc(&p.na);
    let secs = start.elapsed().as_secs_f64();
    assert_eq!((c.wr, c.status), (99, Status::SUCCESS));
    assert!(p.sb.region_data(0xB0) == src);
    eprintln!(
        "RDMA write over loopback: {:.0} MB/s ({} MiB in {:.3} s)",
        (LEN as u64 * ROUNDS) as f64 / secs / 1e6,
        (LEN as u64 * ROUNDS) >> 20,
        secs
    );
}

#[test]
fn connect_errors() {
    let e = engine();
    // Nobody listens: take a port, close it, connect.
    let port = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (h, _, _) = host();
    let (cb, done) = connect_channel();
    match e.connect(params(port, MpaConfig::default(), b""), h, cb) {
        Err(s) => assert_eq!(s, Status::CONNECTION_REFUSED),
        Ok(c) => {
            let err = done.recv_timeout(WAIT).unwrap().unwrap_err();
            assert_eq!(err.status, Status::CONNECTION_REFUSED);
            assert_eq!(c.state(), ConnState::Closed);
        }
    }

    // The listener rejects with private data.
    let (l, incoming) = listen(&e, "[::1]:0".parse().unwrap(), MpaConfig::default());
    let (h, _, _) = host();
    let (cb, done) = connect_channel();
    let _c = e
        .connect(
            params(l.local_addr(), ndk_mpa_config(), b"let me in"),
            h,
            cb,
        )
        .unwrap();
    let inc = incoming.recv_timeout(WAIT).unwrap();
    assert_eq!(inc.request().private_data, b"let me in");
    inc.reject(b"go away").unwrap();
    let err = done.recv_timeout(WAIT).unwrap().unwrap_err();
    assert_eq!(err.status, Status::CONNECTION_REFUSED);
    assert_eq!(err.private_data, b"go away");

    // Paused: refused without a connect event; resumed: works again.
    l.pause(true);
    let (h, _, _) = host();
    let (cb, done) = connect_channel();
    let _c = e
        .connect(params(l.local_addr(), MpaConfig::default(), b"x"), h, cb)
        .unwrap();
    let err = done.recv_timeout(WAIT).unwrap().unwrap_err();
    assert_eq!(err.status, Status::CONNECTION_REFUSED);
    assert!(incoming.try_recv().is_err());
    l.pause(false);
    let (h, _, _) = host();
    let (cb, _done) = connect_channel();
    let _c = e
        .connect(params(l.local_addr(), MpaConfig::default(), b"y"), h, cb)
        .unwrap();
    let inc = incoming.recv_timeout(WAIT).unwrap();
    assert_eq!(inc.request().private_data, b"y");
    drop(inc);

    // Port in use: a second listener, and a connect from the listener's address.
    let in_use = l.local_addr();
    let err = e
        .listen(in_use, MpaConfig::default(), |_| {})
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err, Status::SHARING_VIOLATION);
    let (h, _, _) = host();
    let (l4, _inc4) = listen(&e, "127.0.0.1:0".parse().unwrap(), MpaConfig::default());
    let p = ConnectParams {
        local: Some(l4.local_addr()),
        ..params(l.local_addr(), MpaConfig::default(), b"")
    };
    let err = e
        .connect(
            ConnectParams {
                remote: "127.0.0.1:9".parse().unwrap(),
                ..p
            },
            h,
            |_| {},
        )
        .unwrap_err();
    assert_eq!(err, Status::SHARING_VIOLATION);

    // A source address that is not local (TEST-NET-1, never contacted: bind fails first).
    let err = e
        .listen("192.0.2.1:0".parse().unwrap(), MpaConfig::default(), |_| {})
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err, Status::INVALID_ADDRESS);
    let (h, _, _) = host();
    let err = e
        .connect(
            ConnectParams {
                local: Some("192.0.2.1:0".parse().unwrap()),
                ..params(l4.local_addr(), MpaConfig::default(), b"")
            },
            h,
            |_| {},
        )
        .unwrap_err();
    assert_eq!(err, Status::INVALID_ADDRESS);

    // The same 4-tuple twice.
    let local: SocketAddr = {
        let t = StdListener::bind("127.0.0.1:0").unwrap();
        t.local_addr().unwrap()
    };
    let (h, _, _) = host();
    let (cb, _first) = connect_channel();
    let first = e
        .connect(
            ConnectParams {
                local: Some(local),
                ..params(l4.local_addr(), MpaConfig::default(), b"")
            },
            h,
            cb,
        )
        .unwrap();
    assert_eq!(first.local_addr(), local);
    let (h, _, _) = host();
    let err = e
        .connect(
            ConnectParams {
                local: Some(local),
                ..params(l4.local_addr(), MpaConfig::default(), b"")
            },
            h,
            |_| {},
        )
        .unwrap_err();
    assert_eq!(err, Status::ADDRESS_ALREADY_EXISTS);
}

/// A raw MPA initiator: sends a Request, returns the socket after reading the Reply.
fn raw_initiator(to: SocketAddr, crc: bool) -> StdStream {
    let req = StartupRepr {
        kind: StartupKind::Request,
        markers: false,
        crc,
        reject: false,
        revision: 2,
        enhanced: Some(Enhanced {
            ird: 1,
            ord: 1,
            peer_to_peer: false,
            rtr: Default::default(),
        }),
        private_data: b"raw",
    };
    raw::connect(to, &req, WAIT)
}

fn read_reply(s: &mut StdStream) -> bool {
    let all = raw::read_startup(s);
    let reply = StartupRepr::parse(&all).unwrap();
    assert_eq!(reply.kind, StartupKind::Reply);
    reply.crc
}

/// Reads until EOF; returns the Terminate found in the stream.
fn read_terminate(s: &mut StdStream, crc: bool) -> (u8, u8, u8) {
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("the connection closes");
    let mut d = Deframer::new(DeframerConfig {
        crc,
        ..Default::default()
    });
    d.push(&all);
    while let Some(u) = d.next_ulpdu() {
        let repr = rdmap::Repr::parse(u.unwrap()).unwrap();
        if let Message::Terminate { terminate, .. } = repr.message {
            return (terminate.layer, terminate.error_type, terminate.error_code);
        }
    }
    panic!("no Terminate in {} octets", all.len());
}

#[test]
fn hostile_peer_gets_terminates_and_the_engine_keeps_working() {
    let e = engine();
    let (l, incoming) = listen(&e, "127.0.0.1:0".parse().unwrap(), MpaConfig::default());

    // 1. A bad CRC as first FPDU: Terminate LLP CRC, close. Without RTR the accept completed
    // when the Reply was queued, so the Terminate is what reports the failure.
    let mut raw = raw_initiator(l.local_addr(), true);
    let inc = incoming.recv_timeout(WAIT).unwrap();
    assert_eq!(inc.request().private_data, b"raw");
    let (h, _, notes) = host();
    let (cb, accepted) = status_channel();
    let _c1 = inc
        .accept(ReadLimits { ird: 1, ord: 1 }, b"", h, cb)
        .unwrap();
    assert!(read_reply(&mut raw));
    let mut bad = rdmap_fpdu(
        Message::Send {
            msn: 1,
            mo: 0,
            solicited: false,
            invalidate: None,
        },
        b"abcd",
        true,
    );
    let n = bad.len();
    bad[n - 1] ^= 0xFF;
    raw.write_all(&bad).unwrap();
    let (layer, etype, code) = read_terminate(&mut raw, true);
    assert_eq!(
        TermError::from_parts(layer, etype, code),
        Some(TermError::LlpCrc)
    );
    drop(raw);
    assert_eq!(accepted.recv_timeout(WAIT).unwrap(), Status::SUCCESS);
    let sent = notes
        .recv_timeout(WAIT)
        .map(|n| match n {
            Note::Ev(Event::TerminateSent(t)) => t.error(),
            _ => None,
        })
        .unwrap();
    assert_eq!(sent, Some(TermError::LlpCrc));

    // 2. A Send that completes the accept, then a Write to an unknown STag.
    let mut raw = raw_initiator(l.local_addr(), false);
    let inc = incoming.recv_timeout(WAIT).unwrap();
    let (h, side, notes) = host();
    side.post_recv(7, 64);
    let (cb, accepted) = status_channel();
    let c2 = inc
        .accept(ReadLimits { ird: 1, ord: 1 }, b"", h, cb)
        .unwrap();
    assert!(!read_reply(&mut raw));
    raw.write_all(&rdmap_fpdu(
        Message::Send {
            msn: 1,
            mo: 0,
            solicited: false,
            invalidate: None,
        },
        b"hi",
        false,
    ))
    .unwrap();
    assert_eq!(accepted.recv_timeout(WAIT).unwrap(), Status::SUCCESS);
    assert_eq!(wc(&notes).bytes, 2);
    raw.write_all(&rdmap_fpdu(
        Message::Write {
            stag: 0xDEAD,
            to: 0,
        },
        &[1; 32],
        false,
    ))
    .unwrap();
    let (layer, etype, code) = read_terminate(&mut raw, false);
    assert_eq!(
        TermError::from_parts(layer, etype, code),
        Some(TermError::DdpTaggedInvalidStag)
    );
    assert!(matches!(
        notes.recv_timeout(WAIT).unwrap(),
        Note::Ev(Event::TerminateSent(_))
    ));
    assert!(matches!(notes.recv_timeout(WAIT).unwrap(), Note::Flushed));
    assert_eq!(c2.state(), ConnState::Error);
    drop(raw);

    // 3. Garbage instead of a Request: closed, no connect event.
    let mut raw = StdStream::connect(l.local_addr()).unwrap();
    raw.set_read_timeout(Some(WAIT)).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut sink = Vec::new();
    raw.read_to_end(&mut sink).unwrap();
    assert!(sink.is_empty());
    assert!(incoming.try_recv().is_err());

    // 4. A healthy connection on the same engine still works.
    let (h, _, na) = host();
    let (cb, connected) = connect_channel();
    let a = e
        .connect(params(l.local_addr(), ndk_mpa_config(), b"ok"), h, cb)
        .unwrap();
    let (hb, sb, nb) = host();
    sb.post_recv(1, 10);
    let (cb, accepted) = status_channel();
    let _b = incoming
        .recv_timeout(WAIT)
        .unwrap()
        .accept(ReadLimits::default(), b"", hb, cb)
        .unwrap();
    connected.recv_timeout(WAIT).unwrap().unwrap();
    a.complete(|_| {});
    assert_eq!(accepted.recv_timeout(WAIT).unwrap(), Status::SUCCESS);
    a.post(1, b"0123456789".to_vec(), send(10), signaled())
        .unwrap();
    assert_eq!(wc(&na).status, Status::SUCCESS);
    assert_eq!(wc(&nb).bytes, 10);
    assert_eq!(sb.recv_data.lock().unwrap()[&1], b"0123456789");
}

/// A raw responder that accepts the MPA exchange and then never answers.
fn raw_responder() -> (SocketAddr, std::thread::JoinHandle<StdStream>) {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut head = [0u8; mpa::HEADER_LEN];
        s.read_exact(&mut head).unwrap();
        let mut pd = vec![0u8; u16::from_be_bytes([head[18], head[19]]) as usize];
        s.read_exact(&mut pd).unwrap();
        let reply = StartupRepr {
            kind: StartupKind::Reply,
            markers: false,
            crc: false,
            reject: false,
            revision: 2,
            enhanced: Some(Enhanced {
                ird: 1,
                ord: 1,
                peer_to_peer: false,
                rtr: Default::default(),
            }),
            private_data: b"silent",
        };
        let mut buf = vec![0u8; reply.buffer_len()];
        reply.emit(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        s
    });
    (addr, t)
}

fn connect_to_raw(
    e: &Engine<TestHost>,
    to: SocketAddr,
) -> (Connection<TestHost>, Side, Receiver<Note>) {
    let (h, side, notes) = host();
    let (cb, connected) = connect_channel();
    let c = e
        .connect(params(to, MpaConfig::default(), b""), h, cb)
        .unwrap();
    let neg = connected.recv_timeout(WAIT).unwrap().unwrap();
    assert_eq!(neg.peer_private_data, b"silent");
    let (cb, done) = status_channel();
    c.complete(cb);
    assert_eq!(done.recv_timeout(WAIT).unwrap(), Status::SUCCESS);
    side.region(0xA0, 0, vec![0; 100]);
    c.post(
        1,
        vec![],
        Request::Read {
            len: 100,
            sink_stag: 0xA0,
            sink_to: 0,
            stag: 1,
            to: 0,
        },
        signaled(),
    )
    .unwrap();
    (c, side, notes)
}

#[test]
fn peer_close_does_not_flush_and_disconnect_does() {
    let e = engine();
    // The peer closes: PeerClosed, the read stays pending; our disconnect cancels it.
    let (addr, t) = raw_responder();
    let (c, _, notes) = connect_to_raw(&e, addr);
    let mut raw = t.join().unwrap();
    let mut rr = vec![0u8; mpa::fpdu_len(46)];
    raw.read_exact(&mut rr).unwrap();
    assert_eq!(&rr[2..4], &[0x41, 0x41], "a Read Request arrived");
    drop(raw);
    assert!(matches!(
        notes.recv_timeout(WAIT).unwrap(),
        Note::Ev(Event::PeerClosed)
    ));
    assert_eq!(c.state(), ConnState::PeerClosed);
    assert!(notes.recv_timeout(Duration::from_millis(100)).is_err());
    let (cb, done) = status_channel();
    c.disconnect(cb);
    let w = wc(&notes);
    assert_eq!((w.wr, w.status), (1, Status::CANCELLED));
    assert!(matches!(notes.recv_timeout(WAIT).unwrap(), Note::Flushed));
    assert_eq!(done.recv_timeout(WAIT).unwrap(), Status::SUCCESS);

    // We disconnect while the read is pending: CANCELLED, then the peer sees our FIN.
    let (addr, t) = raw_responder();
    let (c, _, notes) = connect_to_raw(&e, addr);
    let mut raw = t.join().unwrap();
    raw.read_exact(&mut rr).unwrap();
    assert_eq!(&rr[2..4], &[0x41, 0x41], "a Read Request arrived");
    let (cb, done) = status_channel();
    c.disconnect(cb);
    let w = wc(&notes);
    assert_eq!((w.wr, w.status), (1, Status::CANCELLED));
    assert!(matches!(notes.recv_timeout(WAIT).unwrap(), Note::Flushed));
    assert_eq!(done.recv_timeout(WAIT).unwrap(), Status::SUCCESS);
    let mut rest = Vec::new();
    raw.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "FIN, nothing else");
    assert_eq!(
        c.post(2, vec![], send(0), signaled()),
        Err(Status::CONNECTION_INVALID)
    );
}

#[test]
fn active_side_reject_aborts_the_accept() {
    let e = engine();
    let (l, incoming) = listen(&e, "127.0.0.1:0".parse().unwrap(), MpaConfig::default());
    let (h, _, _) = host();
    let (cb, connected) = connect_channel();
    let a = e
        .connect(params(l.local_addr(), ndk_mpa_config(), b""), h, cb)
        .unwrap();
    let (hb, _, _) = host();
    let (cb, accepted) = status_channel();
    let _b = incoming
        .recv_timeout(WAIT)
        .unwrap()
        .accept(ReadLimits::default(), b"", hb, cb)
        .unwrap();
    connected.recv_timeout(WAIT).unwrap().unwrap();
    a.reject();
    assert_eq!(
        accepted.recv_timeout(WAIT).unwrap(),
        Status::CONNECTION_ABORTED
    );
    assert_eq!(a.state(), ConnState::Closed);
}

#[test]
fn engine_drop_flushes_and_joins() {
    let e = engine();
    let (addr, t) = raw_responder();
    let (c, _, notes) = connect_to_raw(&e, addr);
    let _raw = t.join().unwrap();
    drop(e);
    let w = wc(&notes);
    assert_eq!((w.wr, w.status), (1, Status::CANCELLED));
    assert!(matches!(notes.recv_timeout(WAIT).unwrap(), Note::Flushed));
    assert_eq!(c.state(), ConnState::Closed);
    assert_eq!(
        c.post(2, vec![], send(0), signaled()),
        Err(Status::CONNECTION_INVALID)
    );
    let (cb, done) = status_channel();
    c.disconnect(cb);
    assert_eq!(done.recv_timeout(WAIT).unwrap(), Status::SUCCESS);
}

/// A raw responder that answers the Request, then reports how long after its Reply the
/// initiator's first FPDU began to arrive.
fn timed_responder() -> (SocketAddr, std::thread::JoinHandle<Duration>) {
    let (addr, t) = raw_responder();
    let timed = std::thread::spawn(move || {
        let mut s = t.join().unwrap();
        let replied = Instant::now();
        let mut first = [0u8; 2];
        s.read_exact(&mut first).unwrap();
        replied.elapsed()
    });
    (addr, timed)
}

#[test]
fn first_fpdu_waits_for_the_configured_delay_after_the_reply() {
    // siw's accept hooks its socket to the QP only after sending the Reply; the hold keeps our
    // first FPDU out of that window (EngineConfig::first_fpdu_delay).
    for (delay, held) in [(Duration::from_millis(300), true), (Duration::ZERO, false)] {
        let e = Engine::new(EngineConfig {
            first_fpdu_delay: delay,
            ..EngineConfig::default()
        })
        .unwrap();
        let (addr, timed) = timed_responder();
        let (c, _side, _notes) = connect_to_raw(&e, addr);
        let waited = timed.join().unwrap();
        if held {
            assert!(
                waited >= delay,
                "first FPDU after {waited:?}, hold {delay:?}"
            );
        } else {
            assert!(
                waited < Duration::from_millis(250),
                "no hold, yet {waited:?}"
            );
        }
        drop(c);
    }
}

#[test]
fn without_rtr_the_accept_completes_with_the_reply_and_the_passive_side_may_speak_first() {
    let (ea, eb) = (engine(), engine());
    let (l, incoming) = listen(&eb, "127.0.0.1:0".parse().unwrap(), MpaConfig::default());
    let (ha, sa, _na) = host();
    let (hb, _sb, nb) = host();
    let (cb, connected) = connect_channel();
    let a = ea
        .connect(params(l.local_addr(), MpaConfig::default(), b""), ha, cb)
        .unwrap();
    let inc = incoming.recv_timeout(WAIT).unwrap();
    let (cb, accepted) = status_channel();
    let b = inc
        .accept(ReadLimits { ird: 1, ord: 1 }, b"", hb, cb)
        .unwrap();
    // No RTR negotiated: the accept is done before the initiator completes or sends.
    assert_eq!(accepted.recv_timeout(WAIT).unwrap(), Status::SUCCESS);
    assert_eq!(b.state(), ConnState::Connected);
    assert!(connected.recv_timeout(WAIT).unwrap().unwrap().rtr.is_none());
    sa.post_recv(9, 64);
    b.post(1, vec![7u8; 16], send(16), signaled()).unwrap();
    assert_eq!(wc(&nb).status, Status::SUCCESS);
    let (cb, completed) = status_channel();
    a.complete(cb);
    assert_eq!(completed.recv_timeout(WAIT).unwrap(), Status::SUCCESS);
}

fn engine_with(threads: usize, name: &str) -> Engine<TestHost> {
    Engine::new(EngineConfig {
        progress_threads: threads,
        thread_name: name.into(),
        // Every arrival wakes its thread (which thread woke is what these tests look at).
        progress_spin: Duration::ZERO,
        ..EngineConfig::default()
    })
    .unwrap()
}

/// The next note `keep` accepts, skipping others (up to [`WAIT`]).
fn until(rx: &Receiver<Note>, keep: impl Fn(&Note) -> bool) -> Note {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = rx.recv_timeout(left).expect("the note in time");
        if keep(&n) {
            return n;
        }
    }
}

/// A write to an STag the passive side does not have: it terminates, the active side hears it,
/// both streams stop.
fn terminate(p: &Pair) {
    let write = Request::Write {
        len: 32,
        stag: 0xDEAD,
        to: 0,
    };
    p.a.post(7, vec![7; 32], write, signaled()).unwrap();
    let sent = until(&p.nb, |n| matches!(n, Note::Ev(Event::TerminateSent(_))));
    let Note::Ev(Event::TerminateSent(t)) = sent else {
        unreachable!()
    };
    assert_eq!(t.error(), Some(TermError::DdpTaggedInvalidStag));
    until(&p.na, |n| {
        matches!(n, Note::Ev(Event::TerminateReceived(_)))
    });
    until(&p.nb, |n| matches!(n, Note::Flushed));
    until(&p.na, |n| matches!(n, Note::Flushed));
    assert_eq!(
        p.a.post(8, vec![], send(0), signaled()),
        Err(Status::CONNECTION_INVALID)
    );
}

/// Issue 10 point 5: with 2 and 4 progress threads per engine, connections on every thread
/// connect, accept, send, write, read, disconnect and terminate, over IPv4 and IPv6.
#[test]
fn several_progress_threads_carry_every_connection_v4_and_v6() {
    for threads in [2, 4] {
        let ea = engine_with(threads, "nd-multi-a");
        let eb = engine_with(threads, "nd-multi-b");
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            // One connection more than threads, all open at once: every thread has one.
            let pairs: Vec<Pair> = (0..=threads)
                .map(|_| pair(&ea, &eb, addr.parse().unwrap(), false))
                .collect();
            for e in [&ea, &eb] {
                let per = e.connections_per_thread();
                assert_eq!(per.len(), threads);
                assert!(per.iter().all(|&n| n >= 1), "{addr}: {per:?}");
                assert_eq!(per.iter().sum::<usize>(), threads + 1);
            }
            for p in &pairs {
                exercise(p);
            }
            let mut pairs = pairs.into_iter();
            let first = pairs.next().unwrap();
            terminate(&first);
            drop(first);
            for p in pairs {
                disconnect_both(p);
            }
        }
        // Closed connections leave their threads.
        let deadline = Instant::now() + WAIT;
        while ea
            .connections_per_thread()
            .iter()
            .chain(&eb.connections_per_thread())
            .any(|&n| n > 0)
        {
            assert!(
                Instant::now() < deadline,
                "{:?} {:?}",
                ea.connections_per_thread(),
                eb.connections_per_thread()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Issue 10 point 5: connections are spread over the progress threads, and a connection's
/// arrivals wake its own thread only (each thread has its own reactor).
#[test]
fn connections_spread_over_the_progress_threads_and_wake_their_own() {
    let ea = engine_with(4, "nd-spread-a");
    let eb = engine_with(4, "nd-spread-b");
    let pairs: Vec<Pair> = (0..4)
        .map(|k| {
            let addr = if k % 2 == 0 { "127.0.0.1:0" } else { "[::1]:0" };
            pair(&ea, &eb, addr.parse().unwrap(), false)
        })
        .collect();
    assert_eq!(ea.connections_per_thread(), vec![1, 1, 1, 1]);
    assert_eq!(eb.connections_per_thread(), vec![1, 1, 1, 1]);
    // Let the active side's first-FPDU hold and the handshakes' last events pass.
    std::thread::sleep(Duration::from_millis(100));
    let mut woken = Vec::new();
    for p in &pairs {
        const N: u64 = 20;
        let before = eb.wakeups_per_thread();
        for i in 0..N {
            p.sb.post_recv(1000 + i, 8);
            p.a.post(i, pattern(i as u8, 8), send(8), signaled())
                .unwrap();
            assert_eq!(wc(&p.na).status, Status::SUCCESS);
            // Nobody polls on the passive side: its progress thread receives.
            assert_eq!(wc(&p.nb).bytes, 8);
        }
        let delta: Vec<u64> = eb
            .wakeups_per_thread()
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .collect();
        let busiest = (0..delta.len()).max_by_key(|&i| delta[i]).unwrap();
        assert!(delta[busiest] >= N / 2, "{delta:?}");
        for (i, d) in delta.iter().enumerate() {
            assert!(i == busiest || *d <= 1, "others stay asleep: {delta:?}");
        }
        woken.push(busiest);
    }
    woken.sort_unstable();
    assert_eq!(
        woken,
        vec![0, 1, 2, 3],
        "each connection has a thread of its own"
    );
    for p in pairs {
        disconnect_both(p);
    }
}

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|n| n.starts_with(prefix))
        .count()
}

/// Issue 10 point 5: dropping an engine stops and joins every progress thread; each has
/// flushed its connections before the drop returns.
#[test]
fn engine_drop_joins_every_progress_thread() {
    let e = engine_with(4, "ndjoin");
    let mut conns = Vec::new();
    for _ in 0..4 {
        let (addr, t) = raw_responder();
        let (c, _, notes) = connect_to_raw(&e, addr);
        conns.push((c, notes, t.join().unwrap()));
    }
    assert_eq!(e.connections_per_thread(), vec![1, 1, 1, 1]);
    assert_eq!(threads_named("ndjoin"), 4);
    drop(e);
    // No waiting: every thread ran its shutdown before the drop returned.
    for (c, notes, _raw) in &conns {
        let Ok(Note::Wc(w)) = notes.try_recv() else {
            panic!("the read was not flushed by the time the engine was dropped");
        };
        assert_eq!((w.wr, w.status), (1, Status::CANCELLED));
        assert!(matches!(notes.try_recv(), Ok(Note::Flushed)));
        assert_eq!(c.state(), ConnState::Closed);
    }
    // The threads are gone (the kernel may list a joined thread for a moment longer).
    let deadline = Instant::now() + WAIT;
    while threads_named("ndjoin") > 0 {
        assert!(Instant::now() < deadline, "progress threads left running");
        std::thread::sleep(Duration::from_millis(5));
    }
}
