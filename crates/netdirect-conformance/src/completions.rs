//! Completion and ordering rules over the NDK object model, end to end from one local address
//! to itself: what a read with local invalidate does when its success is silent or it fails
//! (§3.7, §6.1), which status a request named by the peer's Terminate gets (§10.2), the QP
//! after an error completion (§10.3) and after its CQ overflowed (§7.3).

use std::net::IpAddr;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netdirect::{Adapter, Buffer, Cq, Mr, Provider, Qp, QpConfig};
use netdirect_types::{Completion, MrFlags, OpFlags, OperationType, RdmaTechnology, Sge, Status};

use crate::support::{Connected, Endpoint, Listening, WAIT, connect, open, sge};
use crate::{
    Outcome, Skip, adapter_info, deviations, require_fast_register, require_kept, require_loopback,
    require_read_local_invalidate,
};

/// Two adapters on `ip` and a connected QP on each (`server` from the listener).
struct Pair {
    // Connections first: they go before their QPs and adapters.
    conn: Connected,
    server: Endpoint,
    client: Endpoint,
    _listening: Listening,
    server_adapter: Box<dyn Adapter>,
    _client_adapter: Box<dyn Adapter>,
}

impl Pair {
    fn new(p: &dyn Provider, ip: IpAddr, depth: u32) -> Pair {
        let server_adapter = open(p, ip);
        let client_adapter = open(p, ip);
        let server = Endpoint::new(&*server_adapter, 0x5E, depth);
        let client = Endpoint::new(&*client_adapter, 0xC1, depth);
        let listening = Listening::new(&*server_adapter, ip);
        let conn = connect(&*client_adapter, &*client.qp, &listening, &*server.qp, WAIT);
        Pair {
            conn,
            server,
            client,
            _listening: listening,
            server_adapter,
            _client_adapter: client_adapter,
        }
    }
}

/// A fast-register MR of `server` over `buf`, registered at `base` as a read sink.
fn fast_registered_sink(pair: &mut Pair, buf: &Buffer, base: u64) -> Box<dyn Mr> {
    let lam = pair
        .server_adapter
        .build_lam(buf, 0, buf.len())
        .wait()
        .unwrap();
    let sink = pair.server.pd.create_mr(true).wait().unwrap();
    let pages = lam.mapping.adapter_page_array.clone();
    sink.initialize_fast_register(pages.len() as u32, false)
        .wait()
        .unwrap();
    pair.server
        .qp
        .initiator()
        .fast_register(
            1,
            &*sink,
            &pages,
            0,
            buf.len() as u64,
            base,
            OpFlags::ALLOW_LOCAL_WRITE | OpFlags::RDMA_READ_SINK,
        )
        .unwrap();
    let c = pair.server.completions(1);
    assert_eq!(
        (c[0].request_context, c[0].status, c[0].op_type),
        (1, Status::SUCCESS, OperationType::FastRegister)
    );
    sink
}

/// §3.7, §6.1: a silent read with local invalidate still invalidates the sink's token when it
/// succeeds; only its completion is left out.
pub fn silent_read_local_invalidate_invalidates_the_sink(p: &dyn Provider, ip: IpAddr) -> Outcome {
    require_loopback(p, ip)?;
    require_fast_register(p, ip)?;
    require_read_local_invalidate(p, ip)?;
    let mut pair = Pair::new(p, ip, 16);
    let buf = Buffer::new(2 * 4096);
    let sink = fast_registered_sink(&mut pair, &buf, 0x4000_0000);
    let src = Buffer::from_slice(&[7u8; 8192]);
    let src_mr = pair
        .client
        .register(&src, 0, src.len(), MrFlags::ALLOW_REMOTE_READ);
    let sink_sge = [Sge::new(0x4000_0000, 8192, sink.local_token())];
    pair.server
        .qp
        .initiator()
        .read(
            2,
            &sink_sge,
            src.address(),
            src_mr.remote_token(),
            OpFlags::RDMA_READ_LOCAL_INVALIDATE | OpFlags::SILENT_SUCCESS,
        )
        .unwrap();
    // A signaled read behind it reports that both finished.
    let other = Buffer::new(64);
    let other_mr = pair.server.register(
        &other,
        0,
        64,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK,
    );
    pair.server
        .qp
        .initiator()
        .read(
            3,
            &[sge(&other, &*other_mr, 0, 64)],
            src.address(),
            src_mr.remote_token(),
            OpFlags::empty(),
        )
        .unwrap();
    let c = pair.server.completions(1);
    assert_eq!((c[0].request_context, c[0].status), (3, Status::SUCCESS));
    assert_eq!(buf.to_vec(), vec![7u8; 8192]);
    // The sink's token is gone: using it again is refused inline.
    assert_eq!(
        pair.server.qp.initiator().read(
            4,
            &sink_sge,
            src.address(),
            src_mr.remote_token(),
            OpFlags::empty()
        ),
        Err(Status::ACCESS_VIOLATION)
    );
    assert!(pair.server.drain(Duration::from_millis(50)).is_empty());
    Ok(())
}

/// A read with local invalidate into a sink whose token cannot be invalidated (a regular MR):
/// it fails `STATUS_INVALID_DEVICE_REQUEST` and completes even when silent success was asked
/// (§6.1); the error completion puts the QP in error (§10.3): the next post fails inline with
/// `STATUS_CONNECTION_INVALID`, and the peer hears of it (Terminate, disconnect event).
fn failed_read_local_invalidate(p: &dyn Provider, ip: IpAddr, flags: OpFlags) -> Outcome {
    require_loopback(p, ip)?;
    require_read_local_invalidate(p, ip)?;
    let iwarp = adapter_info(p, ip).rdma_technology == RdmaTechnology::IWarp;
    let mut pair = Pair::new(p, ip, 16);
    let buf = Buffer::new(4096);
    let sink = pair.server.register(
        &buf,
        0,
        4096,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK,
    );
    let src = Buffer::from_slice(&[3u8; 4096]);
    let src_mr = pair
        .client
        .register(&src, 0, src.len(), MrFlags::ALLOW_REMOTE_READ);
    pair.server
        .qp
        .initiator()
        .read(
            5,
            &[sge(&buf, &*sink, 0, 4096)],
            src.address(),
            src_mr.remote_token(),
            OpFlags::RDMA_READ_LOCAL_INVALIDATE | flags,
        )
        .unwrap();
    let c = pair.server.completions(1);
    assert_eq!(
        (c[0].request_context, c[0].status, c[0].op_type),
        (5, Status::INVALID_DEVICE_REQUEST, OperationType::Read)
    );
    if iwarp {
        // We sent the Terminate: RDMAP local catastrophic.
        assert_eq!(c[0].provider_error_code, 0x0100_0000);
    }
    assert_eq!(
        pair.server
            .qp
            .initiator()
            .send_inline(6, &[b"x"], OpFlags::empty()),
        Err(Status::CONNECTION_INVALID)
    );
    pair.conn
        .active_disconnected
        .recv_timeout(WAIT)
        .expect("the peer's disconnect event");
    Ok(())
}

/// A read with local invalidate into a sink whose token cannot be invalidated (a regular MR)
/// fails `STATUS_INVALID_DEVICE_REQUEST`; the QP is in error afterwards (§6.1, §10.3).
pub fn regular_sink_read_local_invalidate_fails_and_errors_the_qp(
    p: &dyn Provider,
    ip: IpAddr,
) -> Outcome {
    failed_read_local_invalidate(p, ip, OpFlags::empty())
}

/// The failing read of [`regular_sink_read_local_invalidate_fails_and_errors_the_qp`] with
/// silent success asked: it completes all the same (§6.1).
pub fn silent_regular_sink_read_local_invalidate_still_completes(
    p: &dyn Provider,
    ip: IpAddr,
) -> Outcome {
    failed_read_local_invalidate(p, ip, OpFlags::SILENT_SUCCESS)
}

/// §10.2: the Terminate's copied header names our Write (a tagged segment with its STag and
/// offset) while the Write waits behind a read to be reported: it completes with the status
/// the Terminate means (`STATUS_ACCESS_VIOLATION` for an invalid STag), not `STATUS_SUCCESS`;
/// the read is cancelled.
///
/// The peer must see the Read Request and the Write together (else it may answer the whole
/// read before it reads the Write): a large valid Write first fills our socket, so the two
/// queue behind it and leave in one piece. When the read still completes before the Terminate
/// the case did not happen and the attempt is repeated.
pub fn write_named_by_the_peers_terminate_gets_its_status(p: &dyn Provider, ip: IpAddr) -> Outcome {
    require_loopback(p, ip)?;
    // The case is about the iWARP Terminate message and its copied header.
    let technology = adapter_info(p, ip).rdma_technology;
    if technology != RdmaTechnology::IWarp {
        return Err(Skip(format!(
            "not an iWARP adapter (RdmaTechnology {technology}): no Terminate message"
        )));
    }
    require_kept(
        deviations(p, ip).no_terminate_detail,
        "no_terminate_detail (completions do not carry the peer's Terminate)",
    )?;
    const BIG: usize = 4 << 20;
    for _attempt in 0..10 {
        let mut pair = Pair::new(p, ip, 16);
        let remote = Buffer::new(BIG);
        let remote_mr = pair.server.register(
            &remote,
            0,
            BIG,
            MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_READ | MrFlags::ALLOW_REMOTE_WRITE,
        );
        let local = Buffer::new(BIG);
        let local_mr = pair.client.register(
            &local,
            0,
            BIG,
            MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK,
        );
        let q = pair.client.qp.initiator();
        q.write(
            1,
            &[sge(&local, &*local_mr, 0, BIG)],
            remote.address(),
            remote_mr.remote_token(),
            OpFlags::empty(),
        )
        .unwrap();
        q.read(
            2,
            &[sge(&local, &*local_mr, 0, 1 << 20)],
            remote.address(),
            remote_mr.remote_token(),
            OpFlags::empty(),
        )
        .unwrap();
        q.write(
            3,
            &[sge(&local, &*local_mr, 0, 64)],
            0x1000,
            netdirect_types::RemoteToken(0xBAD0_0000),
            OpFlags::empty(),
        )
        .unwrap();
        let c = pair.client.completions(3);
        let st: Vec<_> = c
            .iter()
            .map(|c| (c.request_context, c.status, c.provider_error_code))
            .collect();
        assert_eq!(st[0], (1, Status::SUCCESS, 0));
        if st[1].1 == Status::SUCCESS {
            // The read was answered before the peer read the Write.
            continue;
        }
        // The peer's Terminate: DDP tagged, invalid STag (0x0201_0100 as received).
        assert_eq!(
            st[1..],
            [
                (2, Status::CANCELLED, 0x0201_0100),
                (3, Status::ACCESS_VIOLATION, 0x0201_0100),
            ]
        );
        return Ok(());
    }
    panic!("the read completed before the peer's Terminate in every attempt");
}

/// A CQ with `depth` entries whose notifications go to the returned channel.
fn cq_with_notifications(adapter: &dyn Adapter, depth: u32) -> (Box<dyn Cq>, Receiver<Status>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let cq = adapter
        .create_cq(
            depth,
            Arc::new(move |s| {
                let _ = tx.lock().unwrap().send(s);
            }),
            None,
        )
        .wait()
        .unwrap();
    (cq, rx)
}

/// §7.3: an overflowed CQ is unusable and so are its QPs. Once the `STATUS_BUFFER_OVERFLOW`
/// notification is seen, posts on every QP using the CQ fail inline with
/// `STATUS_CONNECTION_INVALID` (both queues), instead of being accepted and never completing;
/// the QP that overflowed it is flushed, and no completion is added after the error.
pub fn cq_overflow_is_fatal_to_its_queue_pairs(p: &dyn Provider, ip: IpAddr) -> Outcome {
    require_loopback(p, ip)?;
    // A device that sizes CQs up overflows later: post until it does (within the QP's depth).
    let beyond = deviations(p, ip).cq_overflow_beyond_depth;
    let server_adapter = open(p, ip);
    let client_adapter = open(p, ip);
    let listening = Listening::new(&*server_adapter, ip);
    let pd = server_adapter.create_pd().wait().unwrap();
    let (mut cq, notes) = cq_with_notifications(&*server_adapter, 4);
    let make_qp = |context| -> Box<dyn Qp> {
        pd.create_qp(QpConfig {
            receive_cq: &*cq,
            initiator_cq: &*cq,
            context,
            receive_queue_depth: 8,
            initiator_queue_depth: 16,
            max_receive_sge: 1,
            max_initiator_sge: 1,
            inline_data_size: crate::inline_within(&*server_adapter, 64),
        })
        .wait()
        .unwrap()
    };
    let mut qp = make_qp(1);
    // A second QP on the same CQ, not connected.
    let mut bystander = make_qp(2);
    let mut client = Endpoint::new(&*client_adapter, 3, 16);
    let _conn = connect(&*client_adapter, &*client.qp, &listening, &*qp, WAIT);
    let rbuf = Buffer::new(16 * 16);
    let rmr = client.register(&rbuf, 0, rbuf.len(), MrFlags::ALLOW_LOCAL_WRITE);
    for k in 0..16 {
        client
            .qp
            .receiver()
            .receive(100 + k, &[sge(&rbuf, &*rmr, k as usize * 16, 16)])
            .unwrap();
    }
    // Five signaled sends into a CQ of four (sixteen where the device's CQ may be larger).
    let sends = if beyond { 16 } else { 5 };
    for k in 0..sends {
        match qp.initiator().send_inline(k, &[b"x"], OpFlags::empty()) {
            Ok(()) => {}
            // The device's CQ overflowed while we posted.
            Err(Status::CONNECTION_INVALID) if beyond && k > 4 => break,
            Err(e) => panic!("send {k}: {e}"),
        }
    }
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no BUFFER_OVERFLOW notification");
        if notes.recv_timeout(Duration::from_millis(50)) == Ok(Status::BUFFER_OVERFLOW) {
            break;
        }
    }
    let sbuf = Buffer::new(64);
    let smr = {
        let mr = pd.create_mr(false).wait().unwrap();
        mr.register(&sbuf, 0, 64, MrFlags::ALLOW_LOCAL_WRITE)
            .wait()
            .unwrap();
        mr
    };
    let s = [sge(&sbuf, &*smr, 0, 64)];
    for q in [&mut qp, &mut bystander] {
        assert_eq!(
            q.initiator().send_inline(9, &[b"y"], OpFlags::empty()),
            Err(Status::CONNECTION_INVALID)
        );
        assert_eq!(
            q.receiver().receive(10, &s),
            Err(Status::CONNECTION_INVALID)
        );
    }
    // The four entries queued before the overflow stay readable; nothing comes after them.
    let mut out = [Completion::EMPTY; 32];
    std::thread::sleep(Duration::from_millis(50));
    let n = cq.get_results_ex(&mut out);
    let got: Vec<_> = out[..n]
        .iter()
        .map(|c| (c.request_context, c.status))
        .collect();
    let before = if beyond { got.len().max(4) } else { 4 };
    assert_eq!(
        got,
        (0..before as u64)
            .map(|k| (k, Status::SUCCESS))
            .collect::<Vec<_>>()
    );
    assert_eq!(cq.get_results_ex(&mut out), 0);
    // The peer got the four sends that went out; it is still connected (a flush is local).
    let c = client.completions(5);
    assert!(c.iter().all(|c| c.status == Status::SUCCESS), "{c:?}");
    Ok(())
}
