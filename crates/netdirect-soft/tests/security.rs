//! Issue 14, security: objects of one adapter passed to another, an MR closed while a window is
//! bound to it, and tokens of MRs dropped without a close. IPv4 and IPv6 where connections are
//! involved.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use netdirect::{Adapter, Buffer, InvalidateTarget, QpConfig, QpWithSrqConfig, SrqConfig};
use netdirect_types::{MrFlags, OpFlags, OperationType, RemoteToken, Status};
use support::{Endpoint, Listening, WAIT, connect, open, sge};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// A client endpoint of its own adapter connected to a server endpoint of another.
struct Pair {
    server_adapter: Box<dyn Adapter>,
    server: Endpoint,
    client_adapter: Box<dyn Adapter>,
    client: Endpoint,
    _listening: Listening,
    _connected: support::Connected,
}

fn pair(ip: IpAddr) -> Pair {
    let server_adapter = open(ip);
    let client_adapter = open(ip);
    let server = Endpoint::new(&*server_adapter, 1, 16);
    let client = Endpoint::new(&*client_adapter, 2, 16);
    let listening = Listening::new(&*server_adapter, ip);
    let connected = connect(&*client_adapter, &*client.qp, &listening, &*server.qp, WAIT);
    Pair {
        server_adapter,
        server,
        client_adapter,
        client,
        _listening: listening,
        _connected: connected,
    }
}

/// The reproduction of issue 14 point 1: adapter A's QP binds A's window to adapter B's MR
/// (whose id equals one of A's) at an address outside B's MR.
fn foreign_mr_in_bind(ip: IpAddr) {
    let mut p = pair(ip);
    let a = &*p.client_adapter;
    // A: PD (slot 1, in the endpoint), MR (slot 2), MW (slot 3).
    let a_buf = Buffer::new(4096);
    let a_mr = p
        .client
        .register(&a_buf, 0, 4096, MrFlags::ALLOW_LOCAL_WRITE);
    let mw = p.client.pd.create_mw().wait().unwrap();
    // B: PD (slot 1), MR (slot 2) over 64 octets: the same ids as A's.
    let b = open(ip);
    let b_pd = b.create_pd().wait().unwrap();
    let b_buf = Buffer::new(64);
    let b_mr = b_pd.create_mr(false).wait().unwrap();
    b_mr.register(&b_buf, 0, 64, MrFlags::ALLOW_LOCAL_WRITE)
        .wait()
        .unwrap();
    let outside_b = a_buf.address() + 1024;
    assert_eq!(
        p.client
            .qp
            .initiator()
            .bind(7, &*b_mr, &*mw, outside_b, 1024, OpFlags::ALLOW_REMOTE_READ),
        Err(Status::INVALID_PARAMETER)
    );
    let c = p.client.drain(Duration::from_millis(100));
    assert!(
        c.iter().all(|c| c.status != Status::SUCCESS),
        "a refused bind completed: {c:?}"
    );
    // A's own MR binds (the QP and the window are fine).
    p.client
        .qp
        .initiator()
        .bind(8, &*a_mr, &*mw, outside_b, 1024, OpFlags::ALLOW_REMOTE_READ)
        .unwrap();
    let c = p.client.completions(1);
    assert_eq!((c[0].request_context, c[0].status), (8, Status::SUCCESS));
    drop((a, b_mr, b_pd));
}

/// A foreign CQ, SRQ, QP, shared endpoint, MR or MW in a create or post call, and objects of
/// another PD of the same adapter where the PD matters.
fn foreign_objects(ip: IpAddr) {
    let mut p = pair(ip);
    let a = &*p.client_adapter;
    let b = open(ip);
    let b_pd = b.create_pd().wait().unwrap();
    let b_cq = b.create_cq(16, Arc::new(|_| {}), None).wait().unwrap();
    let b_srq = b_pd
        .create_srq(SrqConfig {
            depth: 4,
            max_receive_sge: 1,
            notify_threshold: 0,
            notification: None,
            affinity: None,
        })
        .wait()
        .unwrap();
    let a_pd2 = a.create_pd().wait().unwrap();
    let a_srq_other_pd = a_pd2
        .create_srq(SrqConfig {
            depth: 4,
            max_receive_sge: 1,
            notify_threshold: 0,
            notification: None,
            affinity: None,
        })
        .wait()
        .unwrap();
    let qp_config = |receive_cq, initiator_cq| QpConfig {
        receive_cq,
        initiator_cq,
        context: 9,
        receive_queue_depth: 4,
        initiator_queue_depth: 4,
        max_receive_sge: 1,
        max_initiator_sge: 1,
        inline_data_size: 0,
    };
    let a_cq = &*p.client.cq;
    for (receive_cq, initiator_cq) in [(&*b_cq, a_cq), (a_cq, &*b_cq)] {
        assert_eq!(
            p.client
                .pd
                .create_qp(qp_config(receive_cq, initiator_cq))
                .wait()
                .err(),
            Some(Status::INVALID_PARAMETER)
        );
    }
    for srq in [&*b_srq, &*a_srq_other_pd] {
        let r = p
            .client
            .pd
            .create_qp_with_srq(QpWithSrqConfig {
                receive_cq: a_cq,
                initiator_cq: a_cq,
                srq,
                context: 9,
                initiator_queue_depth: 4,
                max_initiator_sge: 1,
                inline_data_size: 0,
            })
            .wait();
        assert_eq!(r.err(), Some(Status::INVALID_PARAMETER));
    }

    // A connector of A given B's QP, or B's shared endpoint.
    let b_qp = b_pd.create_qp(qp_config(&*b_cq, &*b_cq)).wait().unwrap();
    let listening = Listening::new(&*p.server_adapter, ip);
    let conn = a.create_connector().wait().unwrap();
    let any = SocketAddr::new(ip, 0);
    assert_eq!(
        conn.connect(&*b_qp, any, listening.address, 1, 1, b"")
            .wait()
            .err(),
        Some(Status::INVALID_PARAMETER)
    );
    let a_qp = p.client.pd.create_qp(qp_config(a_cq, a_cq)).wait().unwrap();
    let b_endpoint = b.create_shared_endpoint(any).wait().unwrap();
    assert_eq!(
        conn.connect_with_shared_endpoint(&*a_qp, &*b_endpoint, listening.address, 1, 1, b"")
            .wait()
            .err(),
        Some(Status::INVALID_PARAMETER)
    );
    // The refused calls left the connector usable.
    let pending = conn.connect(&*a_qp, any, listening.address, 1, 1, b"");
    let passive = listening.next(WAIT);
    assert_eq!(
        passive.accept(&*b_qp, 1, 1, b"", None).wait().err(),
        Some(Status::INVALID_PARAMETER),
        "accept on the server's adapter with a QP of another adapter"
    );
    drop(passive);
    assert!(
        matches!(
            pending.wait_timeout(WAIT),
            Err(netdirect::WaitError::Failed(_))
        ),
        "the connect fails in time"
    );

    // Posts on A's connected QP with B's MR and MW, or A's of another PD.
    let b_buf = Buffer::new(8192);
    let b_mr = b_pd.create_mr(false).wait().unwrap();
    b_mr.register(&b_buf, 0, 8192, MrFlags::ALLOW_LOCAL_WRITE)
        .wait()
        .unwrap();
    let b_mw = b_pd.create_mw().wait().unwrap();
    let b_fr = b_pd.create_mr(true).wait().unwrap();
    b_fr.initialize_fast_register(4, true).wait().unwrap();
    let a_buf = Buffer::new(8192);
    let a_mr = p
        .client
        .register(&a_buf, 0, 8192, MrFlags::ALLOW_LOCAL_WRITE);
    let a_mw = p.client.pd.create_mw().wait().unwrap();
    let a_fr = p.client.pd.create_mr(true).wait().unwrap();
    a_fr.initialize_fast_register(4, true).wait().unwrap();
    let a2_mr = a_pd2.create_mr(false).wait().unwrap();
    a2_mr
        .register(&a_buf, 0, 8192, MrFlags::ALLOW_LOCAL_WRITE)
        .wait()
        .unwrap();
    let a2_mw = a_pd2.create_mw().wait().unwrap();
    let a2_fr = a_pd2.create_mr(true).wait().unwrap();
    a2_fr.initialize_fast_register(4, true).wait().unwrap();
    let lam = a.build_lam(&a_buf, 0, 8192).wait().unwrap();
    let pages = lam.mapping.adapter_page_array.clone();
    let q = p.client.qp.initiator();
    let addr = a_buf.address();
    let read = OpFlags::ALLOW_REMOTE_READ;
    for (mr, mw) in [
        (&*b_mr, &*a_mw),
        (&*a_mr, &*b_mw),
        (&*a2_mr, &*a2_mw),
        (&*a_mr, &*a2_mw),
    ] {
        assert_eq!(
            q.bind(1, mr, mw, addr, 64, read),
            Err(Status::INVALID_PARAMETER)
        );
    }
    for fr in [&*b_fr, &*a2_fr] {
        assert_eq!(
            q.fast_register(2, fr, &pages, 0, 4096, 0, read),
            Err(Status::INVALID_PARAMETER)
        );
        assert_eq!(
            q.invalidate(3, InvalidateTarget::Mr(fr), OpFlags::empty()),
            Err(Status::INVALID_PARAMETER)
        );
    }
    for mw in [&*b_mw, &*a2_mw] {
        assert_eq!(
            q.invalidate(4, InvalidateTarget::Mw(mw), OpFlags::empty()),
            Err(Status::INVALID_PARAMETER)
        );
    }
    let c = p.client.drain(Duration::from_millis(100));
    assert!(c.is_empty(), "refused posts completed: {c:?}");
    // The same objects of A's own PD are accepted.
    let q = p.client.qp.initiator();
    q.bind(5, &*a_mr, &*a_mw, addr, 64, read).unwrap();
    q.fast_register(6, &*a_fr, &pages, 0, 4096, 0, read)
        .unwrap();
    let c = p.client.completions(2);
    assert!(c.iter().all(|c| c.status == Status::SUCCESS), "{c:?}");
}

/// Issue 14 point 2: an MR closed while a window is bound to it. The close does not fail; it
/// completes once the window is closed; the MR's token is dead from the close on.
fn closed_mr_with_a_window(ip: IpAddr) {
    let mut p = pair(ip);
    let secret = Buffer::from_slice(&[0x5A; 4096]);
    let mr = p.server.register(
        &secret,
        0,
        4096,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_READ,
    );
    let mr_token = mr.remote_token();
    let mw = p.server.pd.create_mw().wait().unwrap();
    p.server
        .qp
        .initiator()
        .bind(
            1,
            &*mr,
            &*mw,
            secret.address(),
            4096,
            OpFlags::ALLOW_REMOTE_READ,
        )
        .unwrap();
    assert_eq!(p.server.completions(1)[0].status, Status::SUCCESS);
    let mw_token = mw.remote_token();

    let sink = Buffer::new(4096);
    let sink_mr = p.client.register(
        &sink,
        0,
        4096,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK,
    );
    let read = |p: &mut Pair, ctx: u64, token: RemoteToken| {
        sink.write_at(0, &[0; 64]).unwrap();
        p.client
            .qp
            .initiator()
            .read(
                ctx,
                &[sge(&sink, &*sink_mr, 0, 64)],
                secret.address(),
                token,
                OpFlags::empty(),
            )
            .unwrap();
        let c = p.client.completions(1);
        assert_eq!(
            (c[0].request_context, c[0].op_type),
            (ctx, OperationType::Read)
        );
        c[0].status
    };

    let closing = mr.close();
    assert!(
        closing.is_pending(),
        "the MR's close waits for its window: {:?}",
        closing.status()
    );
    // The window (a successor, not closed) still reads.
    assert_eq!(read(&mut p, 10, mw_token), Status::SUCCESS);
    let mut got = [0u8; 64];
    sink.read_at(0, &mut got).unwrap();
    assert_eq!(got, [0x5A; 64]);
    mw.close().wait().unwrap();
    closing.wait_timeout(WAIT).expect("the close completes");
    // Both closed: the MR's token reaches nothing.
    let status = read(&mut p, 11, mr_token);
    assert_eq!(
        status,
        Status::ACCESS_VIOLATION,
        "read through a closed MR: the peer's Terminate (invalid STag)"
    );
    sink.read_at(0, &mut got).unwrap();
    assert_eq!(got, [0; 64], "no byte of the closed MR arrived");
    assert!(
        p._connected.active_disconnected.recv_timeout(WAIT).is_ok(),
        "the peer's bad read ends the connection"
    );
}

/// The MR's token dies with the MR's close even while a window still holds the MR; a second
/// connection shows it.
fn closed_mr_token_dies_at_the_close(ip: IpAddr) {
    let mut p = pair(ip);
    let secret = Buffer::from_slice(&[0xC3; 4096]);
    let mr = p.server.register(
        &secret,
        0,
        4096,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_READ,
    );
    let mr_token = mr.remote_token();
    let mw = p.server.pd.create_mw().wait().unwrap();
    p.server
        .qp
        .initiator()
        .bind(
            1,
            &*mr,
            &*mw,
            secret.address(),
            64,
            OpFlags::ALLOW_REMOTE_READ,
        )
        .unwrap();
    assert_eq!(p.server.completions(1)[0].status, Status::SUCCESS);
    let closing = mr.close();
    let sink = Buffer::new(64);
    let sink_mr = p.client.register(
        &sink,
        0,
        64,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK,
    );
    p.client
        .qp
        .initiator()
        .read(
            2,
            &[sge(&sink, &*sink_mr, 0, 64)],
            secret.address(),
            mr_token,
            OpFlags::empty(),
        )
        .unwrap();
    let c = p.client.completions(1);
    assert_eq!(c[0].status, Status::ACCESS_VIOLATION, "{c:?}");
    assert_eq!(sink.to_vec(), vec![0; 64]);
    assert!(closing.is_pending());
    drop(mw);
    closing
        .wait_timeout(WAIT)
        .expect("the close completes in time");
}

/// Issue 14 point 3: an MR dropped without a close (and its buffer) is deregistered and its
/// token is dead.
fn dropped_mr_token_is_dead(ip: IpAddr) {
    let mut p = pair(ip);
    let secret = Buffer::from_slice(&[0x77; 4096]);
    let mr = p.server.register(
        &secret,
        0,
        4096,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_READ,
    );
    let token = mr.remote_token();
    let address = secret.address();
    drop(mr);
    drop(secret);
    let sink = Buffer::new(64);
    let sink_mr = p.client.register(
        &sink,
        0,
        64,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK,
    );
    p.client
        .qp
        .initiator()
        .read(
            1,
            &[sge(&sink, &*sink_mr, 0, 64)],
            address,
            token,
            OpFlags::empty(),
        )
        .unwrap();
    let c = p.client.completions(1);
    assert_eq!(
        c[0].status,
        Status::ACCESS_VIOLATION,
        "read through a dropped MR: {c:?}"
    );
    assert_eq!(sink.to_vec(), vec![0; 64]);
}

/// The token (and the connection) dies with the last handle the consumer held: a QP split into
/// its two halves stays connected while either half lives.
fn split_qp_disconnects_with_its_last_half(ip: IpAddr) {
    let server_adapter = open(ip);
    let client_adapter = open(ip);
    let server = Endpoint::new(&*server_adapter, 1, 16);
    let client = Endpoint::new(&*client_adapter, 2, 16);
    let listening = Listening::new(&*server_adapter, ip);
    let connected = connect(&*client_adapter, &*client.qp, &listening, &*server.qp, WAIT);
    let Endpoint { pd, cq, qp } = client;
    let (initiator, receiver) = qp.into_split();
    drop(initiator);
    assert!(
        connected
            .passive_disconnected
            .recv_timeout(Duration::from_millis(200))
            .is_err(),
        "one half still holds the connection"
    );
    drop(receiver);
    assert!(
        connected.passive_disconnected.recv_timeout(WAIT).is_ok(),
        "the last half's drop disconnects"
    );
    drop((pd, cq, connected));
}

macro_rules! both_families {
    ($($f:ident: $v4:ident, $v6:ident;)*) => {
        $(
            #[test]
            fn $v4() {
                $f(V4);
            }
            #[test]
            fn $v6() {
                $f(V6);
            }
        )*
    };
}

both_families! {
    foreign_mr_in_bind: foreign_mr_in_bind_is_refused_v4, foreign_mr_in_bind_is_refused_v6;
    foreign_objects: foreign_objects_are_refused_v4, foreign_objects_are_refused_v6;
    closed_mr_with_a_window: closed_mr_with_a_window_pends_and_its_token_dies_v4,
        closed_mr_with_a_window_pends_and_its_token_dies_v6;
    closed_mr_token_dies_at_the_close: closed_mr_token_dies_at_the_close_v4,
        closed_mr_token_dies_at_the_close_v6;
    dropped_mr_token_is_dead: dropped_mr_token_is_dead_v4, dropped_mr_token_is_dead_v6;
    split_qp_disconnects_with_its_last_half: split_qp_disconnects_with_its_last_half_v4,
        split_qp_disconnects_with_its_last_half_v6;
}
