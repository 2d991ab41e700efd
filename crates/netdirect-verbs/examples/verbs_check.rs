//! Opens the verbs provider on an address, connects two QPs of one adapter to each other over
//! rdma-cm (listener + connector, private data both ways), and checks an RDMA write, a
//! send/receive, an RDMA read (data compared), a CQ notification and a disconnect event.
//!
//! `verbs_check ADDRESS [PORT]`; prints `verbs-check: PASS ...` and exits 0, or says what
//! failed and exits 1. Used by `tests/interop/siw.sh` (stage `verbs`) on siw and rxe.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netdirect::{Adapter, Buffer, Connector, Cq, OpenParameters, QpConfig};
use netdirect_types::{
    Completion, CqNotifyType, MrFlags, OpFlags, OperationType, Sge, Status, Version,
};
use netdirect_verbs::VerbsProvider;

const LEN: usize = 1 << 16;
const T: Duration = Duration::from_secs(15);

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next().and_then(|a| a.parse::<IpAddr>().ok()) else {
        eprintln!("usage: verbs_check ADDRESS [PORT]");
        std::process::exit(2);
    };
    let port = args.next().and_then(|p| p.parse().ok()).unwrap_or(7190u16);
    match run(addr, port) {
        Ok(msg) => println!("verbs-check: PASS {msg}"),
        Err(e) => {
            println!("verbs-check: FAIL {e}");
            std::process::exit(1);
        }
    }
}

fn st(what: &str) -> impl Fn(Status) -> String + '_ {
    move |s| format!("{what}: {s}")
}

fn poll(cq: &mut dyn Cq, what: &str) -> Result<Completion, String> {
    let start = Instant::now();
    let mut out = [Completion::EMPTY; 1];
    while start.elapsed() < T {
        if cq.get_results_ex(&mut out) == 1 {
            if out[0].status != Status::SUCCESS {
                return Err(format!("{what}: completion {:?}", out[0]));
            }
            return Ok(out[0]);
        }
        std::thread::yield_now();
    }
    Err(format!("{what}: no completion in {T:?}"))
}

fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn check(buf: &Buffer, at: usize, want: &[u8], what: &str) -> Result<(), String> {
    let mut got = vec![0; want.len()];
    buf.read_at(at, &mut got).map_err(|e| e.to_string())?;
    if got != want {
        return Err(format!("{what}: data differs"));
    }
    Ok(())
}

fn run(addr: IpAddr, port: u16) -> Result<String, String> {
    let provider = VerbsProvider::new().map_err(|e| e.to_string())?;
    let devices = provider.devices().map_err(|e| e.to_string())?;
    let adapter = provider
        .open(OpenParameters {
            address: addr,
            version: Version::V2_1,
        })
        .map_err(|e| e.to_string())?;
    let info = adapter.query_info();
    println!(
        "devices {devices:?}; adapter {} on {addr}: {info:?}",
        adapter.device_name()
    );

    let pd = adapter.create_pd().wait().map_err(st("create_pd"))?;
    let notified = Arc::new(AtomicU32::new(0));
    let n2 = notified.clone();
    let mut cq_a = adapter
        .create_cq(64, Arc::new(|_| {}), None)
        .wait()
        .map_err(st("create_cq a"))?;
    let mut cq_b = adapter
        .create_cq(
            64,
            Arc::new(move |_| {
                n2.fetch_add(1, Ordering::SeqCst);
            }),
            None,
        )
        .wait()
        .map_err(st("create_cq b"))?;
    fn qp_config(cq: &dyn Cq, context: u64) -> QpConfig<'_> {
        QpConfig {
            receive_cq: cq,
            initiator_cq: cq,
            context,
            receive_queue_depth: 16,
            initiator_queue_depth: 16,
            max_receive_sge: 1,
            max_initiator_sge: 1,
            inline_data_size: 0,
        }
    }
    let mut qp_a = pd
        .create_qp(qp_config(&*cq_a, 0xA))
        .wait()
        .map_err(st("create_qp a"))?;
    let mut qp_b = pd
        .create_qp(qp_config(&*cq_b, 0xB))
        .wait()
        .map_err(st("create_qp b"))?;
    let (buf_a, buf_b) = (Buffer::new(LEN), Buffer::new(LEN));
    let flags = MrFlags::ALLOW_LOCAL_WRITE
        | MrFlags::ALLOW_REMOTE_READ
        | MrFlags::ALLOW_REMOTE_WRITE
        | MrFlags::RDMA_READ_SINK;
    let mr_a = pd.create_mr(false).wait().map_err(st("create_mr"))?;
    mr_a.register(&buf_a, 0, LEN, flags)
        .wait()
        .map_err(st("register a"))?;
    let mr_b = pd.create_mr(false).wait().map_err(st("create_mr"))?;
    mr_b.register(&buf_b, 0, LEN, flags)
        .wait()
        .map_err(st("register b"))?;
    let (la, lb, rb) = (mr_a.local_token(), mr_b.local_token(), mr_b.remote_token());

    // Connect A -> B through a listener, private data both ways.
    let (tx, rx) = mpsc::channel::<Box<dyn Connector>>();
    let tx = parking_lot::Mutex::new(tx);
    let listener = adapter
        .create_listener(Arc::new(move |c| {
            let _ = tx.lock().send(c);
        }))
        .wait()
        .map_err(st("create_listener"))?;
    let here = SocketAddr::new(addr, port);
    listener.listen(here).wait().map_err(st("listen"))?;
    // A asks IRD 4, ORD 2; B accepts with 4 and 4: A ends with 4/2, B with 2/4.
    let conn_a = adapter
        .create_connector()
        .wait()
        .map_err(st("create_connector"))?;
    let connecting = conn_a.connect(
        &*qp_a,
        SocketAddr::new(addr, 0),
        here,
        4,
        2,
        b"hello from A",
    );
    let conn_b = rx
        .recv_timeout(T)
        .map_err(|_| "no connect event".to_string())?;
    let data = conn_b.connection_data().map_err(st("connection_data b"))?;
    // IB and RoCE pad private data with zeros to the CM message's size.
    if !data.private_data.starts_with(b"hello from A") {
        return Err(format!("B saw private data {:?}", data.private_data));
    }
    let (dtx, drx) = mpsc::channel::<()>();
    let accepting = conn_b.accept(
        &*qp_b,
        4,
        4,
        b"hello from B",
        Some(Box::new(move || {
            let _ = dtx.send(());
        })),
    );
    connecting
        .wait_timeout(T)
        .map_err(|e| format!("connect: {e}"))?;
    let data = conn_a.connection_data().map_err(st("connection_data a"))?;
    if !data.private_data.starts_with(b"hello from B") {
        return Err(format!("A saw private data {:?}", data.private_data));
    }
    conn_a
        .complete_connect(None)
        .wait()
        .map_err(st("complete_connect"))?;
    accepting
        .wait_timeout(T)
        .map_err(|e| format!("accept: {e}"))?;
    let data_b = conn_b.connection_data().map_err(st("connection_data b"))?;
    let limits = (
        (data.inbound_read_limit, data.outbound_read_limit),
        (data_b.inbound_read_limit, data_b.outbound_read_limit),
    );
    if limits != ((4, 2), (2, 4)) {
        return Err(format!(
            "read limits (A, B) {limits:?}, expected ((4, 2), (2, 4))"
        ));
    }
    let (local, peer) = (conn_a.local_address(), conn_a.peer_address());
    println!(
        "connected {local:?} -> {peer:?}, A's limits {}/{}",
        data.inbound_read_limit, data.outbound_read_limit
    );

    // RDMA write A -> B.
    let w = pattern(1, 4096);
    buf_a.write_at(0, &w).map_err(|e| e.to_string())?;
    let sge = |buf: &Buffer, at: usize, len: usize, token| {
        Sge::new(buf.address() + at as u64, len as u32, token)
    };
    qp_a.initiator()
        .write(
            1,
            &[sge(&buf_a, 0, 4096, la)],
            buf_b.address() + 1024,
            rb,
            OpFlags::empty(),
        )
        .map_err(st("post write"))?;
    let c = poll(&mut *cq_a, "write")?;
    if c.op_type != OperationType::Write || c.request_context != 1 || c.qp_context != 0xA {
        return Err(format!("write completion {c:?}"));
    }
    // A write's completion at the initiator may precede placement at the target on iWARP:
    // the send after it (same QP, in order) is the fence the check waits for.
    // Send/receive A -> B.
    qp_b.receiver()
        .receive(2, &[sge(&buf_b, 8192, 4096, lb)])
        .map_err(st("post receive"))?;
    let s = pattern(2, 1000);
    buf_a.write_at(4096, &s).map_err(|e| e.to_string())?;
    cq_b.arm(CqNotifyType::Any);
    qp_a.initiator()
        .send(3, &[sge(&buf_a, 4096, 1000, la)], OpFlags::empty())
        .map_err(st("post send"))?;
    poll(&mut *cq_a, "send")?;
    let r = poll(&mut *cq_b, "receive")?;
    if r.op_type != OperationType::Receive
        || r.bytes_transferred != 1000
        || r.request_context != 2
        || r.qp_context != 0xB
    {
        return Err(format!("receive completion {r:?}"));
    }
    check(&buf_b, 1024, &w, "write")?;
    check(&buf_b, 8192, &s, "send")?;
    // RDMA read A <- B.
    let rd = pattern(3, 4096);
    buf_b.write_at(16384, &rd).map_err(|e| e.to_string())?;
    qp_a.initiator()
        .read(
            4,
            &[sge(&buf_a, 16384, 4096, la)],
            buf_b.address() + 16384,
            rb,
            OpFlags::empty(),
        )
        .map_err(st("post read"))?;
    // The read's completion through Cq::wait (arm, sleep on the completion channel).
    let mut one = [Completion::EMPTY; 1];
    if cq_a.wait(&mut one, Duration::ZERO, T) != 1 || one[0].status != Status::SUCCESS {
        return Err(format!("read: Cq::wait gave {:?}", one[0]));
    }
    let c = one[0];
    if c.op_type != OperationType::Read || c.request_context != 4 {
        return Err(format!("read completion {c:?}"));
    }
    check(&buf_a, 16384, &rd, "read")?;
    // The arm before the send fired.
    let start = Instant::now();
    while notified.load(Ordering::SeqCst) == 0 && start.elapsed() < T {
        std::thread::sleep(Duration::from_millis(5));
    }
    if notified.load(Ordering::SeqCst) == 0 {
        return Err("CQ notification did not fire".into());
    }
    qp_b.receiver()
        .receive(5, &[sge(&buf_b, 0, 16, lb)])
        .map_err(st("post receive before disconnect"))?;
    // Disconnect from A: B's disconnect event runs.
    conn_a
        .disconnect()
        .wait_timeout(T)
        .map_err(|e| format!("disconnect: {e}"))?;
    drx.recv_timeout(T)
        .map_err(|_| "B's disconnect event did not run".to_string())?;
    // A receive posted before the disconnect is cancelled by B's flush (on iWARP the RNIC
    // already flushed it when the connection closed).
    qp_b.flush();
    let mut out = [Completion::EMPTY; 1];
    let start = Instant::now();
    while cq_b.get_results_ex(&mut out) == 0 && start.elapsed() < T {
        std::thread::yield_now();
    }
    let f = out[0];
    if (f.status, f.op_type, f.request_context) != (Status::CANCELLED, OperationType::Receive, 5) {
        return Err(format!("flushed receive {f:?}"));
    }
    // A reject with private data: the connect fails CONNECTION_REFUSED with it.
    let qp_c = pd
        .create_qp(qp_config(&*cq_a, 0xC))
        .wait()
        .map_err(st("create_qp c"))?;
    let conn_c = adapter
        .create_connector()
        .wait()
        .map_err(st("create_connector"))?;
    let refused = conn_c.connect(&*qp_c, SocketAddr::new(addr, 0), here, 1, 1, b"again");
    let conn_d = rx
        .recv_timeout(T)
        .map_err(|_| "no second connect event".to_string())?;
    conn_d.reject(b"no thanks").map_err(st("reject"))?;
    match refused.wait_timeout(T) {
        Err(netdirect::WaitError::Failed(Status::CONNECTION_REFUSED)) => {}
        other => return Err(format!("rejected connect: {other:?}")),
    }
    let data = conn_c.connection_data().map_err(st("connection_data c"))?;
    if !data.private_data.starts_with(b"no thanks") {
        return Err(format!("reject private data {:?}", data.private_data));
    }
    drop((conn_c, conn_d, qp_c));
    // An SRQ with a notify threshold: F sends to E, whose receives come from the SRQ.
    let srq_hits = Arc::new(AtomicU32::new(0));
    let h = srq_hits.clone();
    let mut srq = pd
        .create_srq(netdirect::SrqConfig {
            depth: 16,
            max_receive_sge: 1,
            notify_threshold: 4,
            notification: Some(Arc::new(move |s| {
                if s == Status::SUCCESS {
                    h.fetch_add(1, Ordering::SeqCst);
                }
            })),
            affinity: None,
        })
        .wait()
        .map_err(st("create_srq"))?;
    for i in 0..4u64 {
        srq.receive(100 + i, &[sge(&buf_b, 32768 + 1024 * i as usize, 1024, lb)])
            .map_err(st("srq receive"))?;
    }
    let qp_e = pd
        .create_qp_with_srq(netdirect::QpWithSrqConfig {
            receive_cq: &*cq_b,
            initiator_cq: &*cq_b,
            srq: &*srq,
            context: 0xE,
            initiator_queue_depth: 4,
            max_initiator_sge: 1,
            inline_data_size: 0,
        })
        .wait()
        .map_err(st("create_qp_with_srq"))?;
    let mut qp_f = pd
        .create_qp(qp_config(&*cq_a, 0xF))
        .wait()
        .map_err(st("create_qp f"))?;
    let conn_f = adapter
        .create_connector()
        .wait()
        .map_err(st("create_connector"))?;
    let connecting = conn_f.connect(&*qp_f, SocketAddr::new(addr, 0), here, 1, 1, b"srq");
    let conn_e = rx
        .recv_timeout(T)
        .map_err(|_| "no third connect event".to_string())?;
    let accepting = conn_e.accept(&*qp_e, 1, 1, b"", None);
    connecting
        .wait_timeout(T)
        .map_err(|e| format!("connect f: {e}"))?;
    conn_f
        .complete_connect(None)
        .wait()
        .map_err(st("complete_connect f"))?;
    accepting
        .wait_timeout(T)
        .map_err(|e| format!("accept e: {e}"))?;
    let m = pattern(9, 700);
    buf_a.write_at(24576, &m).map_err(|e| e.to_string())?;
    qp_f.initiator()
        .send(6, &[sge(&buf_a, 24576, 700, la)], OpFlags::empty())
        .map_err(st("post send f"))?;
    poll(&mut *cq_a, "send f")?;
    let r = poll(&mut *cq_b, "srq receive")?;
    if (
        r.op_type,
        r.request_context,
        r.qp_context,
        r.bytes_transferred,
    ) != (OperationType::Receive, 100, 0xE, 700)
    {
        return Err(format!("srq receive completion {r:?}"));
    }
    check(&buf_b, 32768, &m, "srq send")?;
    let start = Instant::now();
    while srq_hits.load(Ordering::SeqCst) == 0 && start.elapsed() < T {
        std::thread::sleep(Duration::from_millis(5));
    }
    if srq_hits.load(Ordering::SeqCst) == 0 {
        return Err("SRQ notification (limit 4, 3 left) did not fire".into());
    }
    drop((conn_f, conn_e, qp_e, qp_f, srq));
    drop((conn_a, conn_b, listener));
    drop((qp_a, qp_b, mr_a, mr_b, cq_a, cq_b, pd));
    Ok(format!(
        "write, send/receive, read (data checked), IRD/ORD, notification, Cq::wait, disconnect, flush, reject with private data, SRQ receive and limit notification over {} ({:?}) at {here}",
        adapter.device_name(),
        info.rdma_technology,
    ))
}
