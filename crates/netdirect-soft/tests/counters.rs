//! Counters over a known workload, both address families: every counter of both adapters and
//! of the client's QPs checked exactly, read through `NdkQueryExtension` and the plain
//! accessors. Two counters depend on timing and are checked by bounds only: progress-thread
//! wakeups and inline transmits (whether a post found its connection free).
//!
//! Built without the `counters` feature (`cargo test -p netdirect-soft --no-default-features
//! --test counters`) the same workload must leave every counter at zero, and the interface
//! must say it does not count.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netdirect::counters::{
    COUNTERS_GUID, COUNTERS_VERSION, Counter, Counters, CountersInterface, OpcodeCounts,
};
use netdirect::{Adapter, Buffer, Connector, Cq, Mr, Object, OpenParameters, Pd, Qp, QpConfig};
use netdirect_soft::counters::COUNTING;
use netdirect_soft::{SoftAdapter, SoftProvider};
use netdirect_types::{Completion, MrFlags, OpFlags, RemoteToken, Sge, Status, Version};

const WAIT: Duration = Duration::from_secs(10);
const WRITES: u64 = 5;
const WRITE_LEN: u64 = 1000;
const READS: u64 = 3;
const READ_LEN: u64 = 500;
const SENDS: u64 = 4;
const SEND_LEN: u64 = 300;
const BAD_WRITE_LEN: u64 = 64;
// RDMAP opcodes.
const WRITE: usize = 0;
const READ_REQUEST: usize = 1;
const READ_RESPONSE: usize = 2;
const SEND: usize = 3;
const TERMINATE: usize = 7;

struct Side {
    adapter: Box<dyn Adapter>,
    pd: Box<dyn Pd>,
    cq: Box<dyn Cq>,
}

impl Side {
    fn new(ip: IpAddr) -> Side {
        let adapter: Box<dyn Adapter> = Box::new(
            SoftProvider::new()
                .open(OpenParameters {
                    address: ip,
                    version: Version::V2_1,
                })
                .unwrap(),
        );
        let pd = adapter.create_pd().wait().unwrap();
        let cq = adapter
            .create_cq(256, Arc::new(|_| {}), None)
            .wait()
            .unwrap();
        Side { adapter, pd, cq }
    }

    fn qp(&self, context: u64) -> Box<dyn Qp> {
        self.pd
            .create_qp(QpConfig {
                receive_cq: &*self.cq,
                initiator_cq: &*self.cq,
                context,
                receive_queue_depth: 16,
                initiator_queue_depth: 16,
                max_receive_sge: 1,
                max_initiator_sge: 1,
                inline_data_size: 0,
            })
            .wait()
            .unwrap()
    }

    fn register(&self, buffer: &Buffer, flags: MrFlags) -> Box<dyn Mr> {
        let mr = self.pd.create_mr(false).wait().unwrap();
        mr.register(buffer, 0, buffer.len(), flags).wait().unwrap();
        mr
    }

    fn completions(&mut self, n: usize) -> Vec<Completion> {
        let mut out = Vec::new();
        let deadline = Instant::now() + WAIT;
        let mut buf = [Completion::EMPTY; 16];
        while out.len() < n {
            assert!(Instant::now() < deadline, "timed out with {out:?}");
            let k = self.cq.get_results_ex(&mut buf);
            out.extend_from_slice(&buf[..k]);
            if k == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        out
    }

    /// The adapter's counters through `NdkQueryExtension`, checked against the accessor.
    fn counters(&self) -> Counters {
        let soft = self.adapter.as_any().downcast_ref::<SoftAdapter>().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let c = interface(&*self.adapter).query();
            let mut plain = soft.counters();
            // Wakeups and a teardown's reads and writes move on their own between the two
            // reads.
            for t in MOVING {
                assert!(plain.get(t) >= c.get(t), "{t:?}");
                plain.set(t, c.get(t));
            }
            // So may anything else while the workload is still arriving (a Terminate the
            // progress thread takes once the consumer's lease lapsed): read both again.
            if plain == c || Instant::now() > deadline {
                assert_eq!(plain, c);
                return c;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Counters that move with timing alone (wakeups; reads and writes of a connection's teardown;
/// a lease that lapses while a test thread is descheduled).
const MOVING: [Counter; 5] = [
    Counter::ProgressWakeups,
    Counter::SocketReads,
    Counter::EmptyReads,
    Counter::SocketWrites,
    Counter::LeaseReturns,
];

fn interface(object: &dyn Object) -> Arc<CountersInterface> {
    let ext = object
        .query_extension(&COUNTERS_GUID, COUNTERS_VERSION)
        .expect("counters extension");
    ext.dispatch.downcast::<CountersInterface>().unwrap()
}

fn sge(buffer: &Buffer, mr: &dyn Mr, offset: u64, len: u64) -> Sge {
    Sge::new(buffer.address() + offset, len as u32, mr.local_token())
}

/// Waits until `f` holds for the counters `read` returns.
fn settle(read: impl Fn() -> Counters, f: impl Fn(&Counters) -> bool) -> Counters {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = read();
        if f(&c) {
            return c;
        }
        assert!(Instant::now() < deadline, "counters did not settle: {c:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn ops(pairs: &[(usize, OpcodeCounts)]) -> [OpcodeCounts; netdirect::counters::OPCODES] {
    let mut o = [OpcodeCounts::default(); netdirect::counters::OPCODES];
    for (op, c) in pairs {
        o[*op] = *c;
    }
    o
}

fn out(fpdus: u64, octets: u64) -> OpcodeCounts {
    OpcodeCounts {
        fpdus_out: fpdus,
        octets_out: octets,
        ..OpcodeCounts::default()
    }
}

fn inb(fpdus: u64, octets: u64) -> OpcodeCounts {
    OpcodeCounts {
        fpdus_in: fpdus,
        octets_in: octets,
        ..OpcodeCounts::default()
    }
}

/// The counters the test expects, with the totals derived (all zero in a build that does not
/// count).
fn expected(
    values: &[(Counter, u64)],
    opcodes: &[(usize, OpcodeCounts)],
    term: Option<bool>,
) -> Counters {
    let mut c = Counters::default();
    for (k, v) in values {
        c.set(*k, *v);
    }
    c.opcodes = ops(opcodes);
    if let Some(sent) = term {
        // DDP tagged buffer error, invalid STag.
        c.add_terminate(sent, 1, 1, 0, 1);
    }
    c.derive_totals();
    if COUNTING { c } else { Counters::default() }
}

/// Everything but the timing-dependent counters, which it checks by bounds.
fn check(got: &Counters, want: &Counters, posts: u64) {
    assert!(got.get(Counter::InlineTransmits) <= posts, "{got:?}");
    // Every FPDU came in through some read, and only reads can find nothing.
    assert!(
        !COUNTING
            || (got.get(Counter::SocketReads) > 0
                && got.get(Counter::EmptyReads) < got.get(Counter::SocketReads)),
        "{got:?}"
    );
    let mut got = got.clone();
    got.set(Counter::InlineTransmits, 0);
    got.set(Counter::ProgressWakeups, 0);
    got.set(Counter::SocketReads, 0);
    got.set(Counter::EmptyReads, 0);
    // Every FPDU went out through some write; a write may carry several.
    assert!(
        !COUNTING || got.get(Counter::RDMAOutFrames) == 0 || got.get(Counter::SocketWrites) > 0,
        "{got:?}"
    );
    got.set(Counter::SocketWrites, 0);
    got.set(Counter::LeaseReturns, 0);
    assert_eq!(&got, want);
}

fn known_workload(ip: IpAddr) {
    let mut server = Side::new(ip);
    let mut client = Side::new(ip);
    let mut server_qp = server.qp(1);
    let mut client_qp = client.qp(2);
    let s_buf = Buffer::new(64 * 1024);
    let s_mr = server.register(
        &s_buf,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_WRITE | MrFlags::ALLOW_REMOTE_READ,
    );
    let c_buf = Buffer::new(64 * 1024);
    let c_mr = client.register(&c_buf, MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK);
    for k in 0..SENDS {
        server_qp
            .receiver()
            .receive(100 + k, &[sge(&s_buf, &*s_mr, 32768 + k * 1024, 1024)])
            .unwrap();
    }
    assert_eq!(interface(&*client_qp).query(), Counters::default());
    assert_eq!(interface(&*client_qp).counting(), COUNTING);
    assert_eq!(interface(&*client.adapter).counting(), COUNTING);

    // Connect (IRD/ORD 1/1: the high-water marks are 1 whatever the timing).
    let (tx, rx) = mpsc::channel::<Box<dyn Connector>>();
    let tx = std::sync::Mutex::new(tx);
    let listener = server
        .adapter
        .create_listener(Arc::new(move |c| tx.lock().unwrap().send(c).unwrap()))
        .wait()
        .unwrap();
    listener.listen(SocketAddr::new(ip, 0)).wait().unwrap();
    let address = listener.local_address().unwrap();
    let connector = client.adapter.create_connector().wait().unwrap();
    let pending = connector.connect(&*client_qp, SocketAddr::new(ip, 0), address, 1, 1, b"");
    let incoming = rx.recv_timeout(WAIT).unwrap();
    let accepted = incoming.accept(&*server_qp, 1, 1, b"", None);
    pending.wait_timeout(WAIT).unwrap();
    connector.complete_connect(None).wait_timeout(WAIT).unwrap();
    accepted.wait_timeout(WAIT).unwrap();

    // The workload.
    let remote = RemoteToken(s_mr.remote_token().0);
    let q = client_qp.initiator();
    for k in 0..WRITES {
        q.write(
            k,
            &[sge(&c_buf, &*c_mr, k * WRITE_LEN, WRITE_LEN)],
            s_buf.address() + k * WRITE_LEN,
            remote,
            OpFlags::empty(),
        )
        .unwrap();
    }
    for k in 0..READS {
        q.read(
            10 + k,
            &[sge(&c_buf, &*c_mr, 16384 + k * READ_LEN, READ_LEN)],
            s_buf.address() + k * READ_LEN,
            remote,
            OpFlags::empty(),
        )
        .unwrap();
    }
    for k in 0..SENDS {
        q.send(
            20 + k,
            &[sge(&c_buf, &*c_mr, k * SEND_LEN, SEND_LEN)],
            OpFlags::empty(),
        )
        .unwrap();
    }
    let c = client.completions((WRITES + READS + SENDS) as usize);
    assert!(c.iter().all(|c| c.status == Status::SUCCESS), "{c:?}");
    let s = server.completions(SENDS as usize);
    assert!(s.iter().all(|c| c.status == Status::SUCCESS), "{s:?}");

    // One Terminate: a write to an STag the server does not have.
    q.write(
        30,
        &[sge(&c_buf, &*c_mr, 0, BAD_WRITE_LEN)],
        0x1000,
        RemoteToken(0xBAD0_0000),
        OpFlags::empty(),
    )
    .unwrap();
    let c = client.completions(1);
    assert_eq!(c[0].status, Status::SUCCESS);

    // One reject: a listener that refuses, on the server's adapter.
    let refuser = server
        .adapter
        .create_listener(Arc::new(|c: Box<dyn Connector>| c.reject(b"no").unwrap()))
        .wait()
        .unwrap();
    refuser.listen(SocketAddr::new(ip, 0)).wait().unwrap();
    let rejected_qp = client.qp(3);
    let connector2 = client.adapter.create_connector().wait().unwrap();
    let r = connector2.connect(
        &*rejected_qp,
        SocketAddr::new(ip, 0),
        refuser.local_address().unwrap(),
        1,
        1,
        b"",
    );
    assert_eq!(
        r.wait_timeout(WAIT).map_err(Status::from),
        Err(Status::CONNECTION_REFUSED)
    );

    let posts = WRITES + READS + SENDS + 1;
    let client_want = expected(
        &[
            (Counter::Connect, 1),
            (Counter::ConnectFailure, 1),
            (Counter::ConnectionError, 1),
            (Counter::MpaRejectsReceived, 1),
            (Counter::OrdHighWater, 1),
            (Counter::PlacedBufferedOctets, READS * READ_LEN),
        ],
        &[
            // The ready-to-receive zero-length Write (NDK peer-to-peer mode), the writes, the
            // bad one.
            (
                WRITE,
                out(1 + WRITES + 1, WRITES * WRITE_LEN + BAD_WRITE_LEN),
            ),
            (READ_REQUEST, out(READS, 0)),
            (READ_RESPONSE, inb(READS, READS * READ_LEN)),
            (SEND, out(SENDS, SENDS * SEND_LEN)),
            (TERMINATE, inb(1, 0)),
        ],
        Some(false),
    );
    let server_want = expected(
        &[
            (Counter::Accept, 1),
            (Counter::ConnectionError, 1),
            (Counter::MpaRejectsSent, 1),
            (Counter::IrdHighWater, 1),
            (
                Counter::PlacedBufferedOctets,
                WRITES * WRITE_LEN + SENDS * SEND_LEN,
            ),
        ],
        &[
            (
                WRITE,
                inb(1 + WRITES + 1, WRITES * WRITE_LEN + BAD_WRITE_LEN),
            ),
            (READ_REQUEST, inb(READS, 0)),
            (READ_RESPONSE, out(READS, READS * READ_LEN)),
            (SEND, inb(SENDS, SENDS * SEND_LEN)),
            (TERMINATE, out(1, 0)),
        ],
        Some(true),
    );
    let done = |c: &Counters| {
        c.get(Counter::ConnectionError) == 1 && c.get(Counter::ActiveConnection) == 0
    };
    // Without counting there is nothing to wait for: the connection ended above.
    let got = settle(
        || client.counters(),
        |c| !COUNTING || (done(c) && c.get(Counter::ConnectFailure) == 1),
    );
    check(&got, &client_want, posts);
    assert_eq!(got.get(Counter::ProgressWakeups) > 0, COUNTING);
    let got = settle(
        || server.counters(),
        |c| !COUNTING || (done(c) && c.get(Counter::MpaRejectsSent) == 1),
    );
    check(&got, &server_want, 0);

    // Per QP: the connected QP has everything but the rejected attempt.
    let mut qp_want = client_want.clone();
    qp_want.set(Counter::ConnectFailure, 0);
    qp_want.set(Counter::MpaRejectsReceived, 0);
    check(&interface(&*client_qp).query(), &qp_want, posts);
    let rejected = interface(&*rejected_qp).query();
    assert_eq!(rejected.get(Counter::ConnectFailure), u64::from(COUNTING));
    assert_eq!(
        rejected.get(Counter::MpaRejectsReceived),
        u64::from(COUNTING)
    );
    assert_eq!(rejected.get(Counter::RDMAOutFrames), 0);

    // Closed QPs stay in the adapter's totals.
    let before = client.counters();
    let qp_ext = interface(&*client_qp);
    drop((connector, connector2, client_qp, rejected_qp));
    drop((incoming, listener, refuser, server_qp));
    let after = client.counters();
    let mut a = after.clone();
    // The timing-dependent ones may still grow: the teardown wakes the progress thread and
    // reads the peer's FIN.
    for c in MOVING {
        assert!(after.get(c) >= before.get(c), "{c:?}");
        a.set(c, before.get(c));
    }
    assert_eq!(a, before);
    // Once the engine lets go of the QP too, its interface answers zeros.
    settle(|| qp_ext.query(), |c| *c == Counters::default());
    check(&server.counters(), &server_want, 0);
    // Unknown extensions are still refused.
    assert_eq!(
        client
            .adapter
            .query_extension(&netdirect::Guid([0; 16]), COUNTERS_VERSION)
            .err(),
        Some(Status::NOT_SUPPORTED)
    );
}

#[test]
fn known_workload_counts_exactly_ipv4() {
    known_workload("127.0.0.1".parse().unwrap());
}

#[test]
fn known_workload_counts_exactly_ipv6() {
    known_workload("::1".parse().unwrap());
}
