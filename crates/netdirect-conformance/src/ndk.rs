//! The NDK object model end to end from one local address to itself: connection setup through
//! connector and listener, then send/receive, RDMA write, RDMA read, fast registration and
//! memory windows, checking the bytes that land, the completions and the statuses.
//!
//! Each case opens its adapters from the provider it is given on the address it is given; the
//! crate docs list the capabilities each needs.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netdirect::{
    Adapter, Buffer, Connector, Cq, InvalidateTarget, Mr, OpenParameters, Pd, Provider, Qp,
    QpConfig,
};
use netdirect_types::{
    AdapterFlags, Completion, CqNotifyType, LocalToken, MrFlags, OpFlags, OperationType,
    RdmaTechnology, RemoteToken, Sge, Status, Version,
};

use crate::{
    Outcome, adapter_info, assert_private_data, deviations, require_fast_register, require_kept,
    require_loopback, require_memory_windows, require_read_local_invalidate, require_srq,
    supported,
};

const WAIT: Duration = Duration::from_secs(10);

fn open(p: &dyn Provider, ip: IpAddr) -> Box<dyn Adapter> {
    p.open_adapter(OpenParameters {
        address: ip,
        version: Version::V1_2,
    })
    .expect("open adapter")
}

/// One side: adapter, PD, one CQ for both queues, a QP.
struct Side {
    adapter: Box<dyn Adapter>,
    pd: Box<dyn Pd>,
    cq: Box<dyn Cq>,
    qp: Box<dyn Qp>,
}

impl Side {
    fn new(p: &dyn Provider, ip: IpAddr, context: u64) -> Side {
        let adapter = open(p, ip);
        let pd = adapter.create_pd().wait().unwrap();
        let cq = adapter
            .create_cq(256, Arc::new(|_| {}), None)
            .wait()
            .unwrap();
        let qp = pd
            .create_qp(QpConfig {
                receive_cq: &*cq,
                initiator_cq: &*cq,
                context,
                receive_queue_depth: 64,
                initiator_queue_depth: 64,
                max_receive_sge: 4,
                max_initiator_sge: 4,
                inline_data_size: crate::inline_within(&*adapter, 256),
            })
            .wait()
            .unwrap();
        Side {
            adapter,
            pd,
            cq,
            qp,
        }
    }

    fn register(&self, buffer: &Buffer, flags: MrFlags) -> Box<dyn Mr> {
        let mr = self.pd.create_mr(false).wait().unwrap();
        mr.register(buffer, 0, buffer.len(), flags).wait().unwrap();
        mr
    }

    /// Waits for `n` completions.
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
}

/// The adapter refuses RDMA-read sinks registered without `NDK_MR_FLAG_RDMA_READ_SINK`.
fn sink_required(p: &dyn Provider, ip: IpAddr) -> bool {
    !adapter_info(p, ip)
        .adapter_flags
        .contains(AdapterFlags::RDMA_READ_SINK_NOT_REQUIRED)
}

fn sge(buffer: &Buffer, mr: &dyn Mr, offset: usize, len: u32) -> Sge {
    Sge::new(buffer.address() + offset as u64, len, mr.local_token())
}

/// Connects `client` to `server` through a listener and a connector.
/// A listener on `ip` (ephemeral port) whose connect events arrive on the returned channel.
fn listen_on(
    adapter: &dyn Adapter,
    ip: IpAddr,
) -> (
    Box<dyn netdirect::Listener>,
    mpsc::Receiver<Box<dyn Connector>>,
) {
    let (tx, rx) = mpsc::channel::<Box<dyn Connector>>();
    let tx = std::sync::Mutex::new(tx);
    let listener = adapter
        .create_listener(Arc::new(move |c| tx.lock().unwrap().send(c).unwrap()))
        .wait()
        .unwrap();
    listener.listen(SocketAddr::new(ip, 0)).wait().unwrap();
    (listener, rx)
}

/// Connects `client_qp` to the listener at `address`, accepts on `server_qp` with
/// `disconnect`, and completes both sides (IRD/ORD 1/1, no private data).
fn establish(
    client: &dyn Adapter,
    client_qp: &dyn Qp,
    events: &mpsc::Receiver<Box<dyn Connector>>,
    address: SocketAddr,
    server_qp: &dyn Qp,
    disconnect: Option<netdirect::DisconnectEvent>,
) -> (Box<dyn Connector>, Box<dyn Connector>) {
    let connector = client.create_connector().wait().unwrap();
    let local = SocketAddr::new(address.ip(), 0);
    let pending = connector.connect(client_qp, local, address, 1, 1, b"");
    let incoming = events.recv_timeout(WAIT).expect("connect event");
    let accepted = incoming.accept(server_qp, 1, 1, b"", disconnect);
    pending.wait_timeout(WAIT).expect("connect");
    connector
        .complete_connect(None)
        .wait_timeout(WAIT)
        .expect("complete");
    accepted.wait_timeout(WAIT).expect("accept");
    (incoming, connector)
}

fn connect(
    server: &mut Side,
    client: &mut Side,
    ip: IpAddr,
    private: &[u8],
) -> (Box<dyn Connector>, Box<dyn Connector>) {
    let (listener, rx) = listen_on(&*server.adapter, ip);
    let address = listener.local_address().unwrap();
    assert_ne!(address.port(), 0);
    let connector = client.adapter.create_connector().wait().unwrap();
    let pending = connector.connect(&*client.qp, SocketAddr::new(ip, 0), address, 4, 4, private);
    let incoming = rx.recv_timeout(WAIT).expect("connect event");
    let technology = server.adapter.query_info().rdma_technology;
    let data = incoming.connection_data().unwrap();
    assert_private_data(technology, &data.private_data, private);
    assert_eq!((data.inbound_read_limit, data.outbound_read_limit), (4, 4));
    let accepted = incoming.accept(&*server.qp, 4, 4, b"welcome", None);
    pending.wait_timeout(WAIT).expect("connect completes");
    let data = connector.connection_data().unwrap();
    assert_private_data(technology, &data.private_data, b"welcome");
    connector.complete_connect(None).wait_timeout(WAIT).unwrap();
    accepted.wait_timeout(WAIT).expect("accept completes");
    assert_eq!(
        incoming.peer_address().unwrap(),
        connector.local_address().unwrap()
    );
    drop(listener);
    (incoming, connector)
}

/// Send, inline send with solicit, a 512 KiB RDMA write and a fenced 256 KiB RDMA read over one
/// connection (private data both ways, IRD/ORD 4/4): completions in order and the bytes placed.
pub fn data_path(p: &dyn Provider, ip: IpAddr) -> Outcome {
    require_loopback(p, ip)?;
    let mut server = Side::new(p, ip, 0x5E);
    let mut client = Side::new(p, ip, 0xC1);
    // The server posts receives before accepting.
    let srv_buf = Buffer::new(1 << 20);
    let srv_mr = server.register(
        &srv_buf,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_WRITE | MrFlags::ALLOW_REMOTE_READ,
    );
    for k in 0..4 {
        server
            .qp
            .receiver()
            .receive(100 + k, &[sge(&srv_buf, &*srv_mr, k as usize * 4096, 4096)])
            .expect("receive before connecting");
    }
    let (_server_conn, _client_conn) = connect(&mut server, &mut client, ip, b"hello");

    let cli_buf = Buffer::new(4 << 20);
    let pattern: Vec<u8> = (0..cli_buf.len()).map(|i| (i * 7 % 251) as u8).collect();
    cli_buf.write_at(0, &pattern).unwrap();
    let cli_mr = client.register(
        &cli_buf,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK,
    );

    // Send 100 bytes, then an inline send, then RDMA write 512 KiB into the server's buffer.
    client
        .qp
        .initiator()
        .send(1, &[sge(&cli_buf, &*cli_mr, 0, 100)], OpFlags::empty())
        .expect("send");
    client
        .qp
        .initiator()
        .send_inline(2, &[b"inline ", b"data"], OpFlags::SEND_AND_SOLICIT_EVENT)
        .expect("inline send");
    let remote = RemoteToken(srv_mr.remote_token().0);
    client
        .qp
        .initiator()
        .write(
            3,
            &[sge(&cli_buf, &*cli_mr, 4096, 512 * 1024)],
            srv_buf.address() + 65536,
            remote,
            OpFlags::empty(),
        )
        .expect("write");
    // Read 256 KiB back from the server into the client's buffer at 1 MiB.
    client
        .qp
        .initiator()
        .read(
            4,
            &[sge(&cli_buf, &*cli_mr, 1 << 20, 256 * 1024)],
            srv_buf.address() + 65536,
            remote,
            OpFlags::READ_FENCE,
        )
        .expect("fenced read");
    let c = client.completions(4);
    let ctx: Vec<_> = c
        .iter()
        .map(|c| (c.request_context, c.status, c.op_type, c.qp_context))
        .collect();
    assert_eq!(
        ctx,
        vec![
            (1, Status::SUCCESS, OperationType::Send, 0xC1),
            (2, Status::SUCCESS, OperationType::Send, 0xC1),
            (3, Status::SUCCESS, OperationType::Write, 0xC1),
            (4, Status::SUCCESS, OperationType::Read, 0xC1),
        ]
    );
    let s = server.completions(2);
    assert_eq!(
        (s[0].request_context, s[0].bytes_transferred, s[0].op_type),
        (100, 100, OperationType::Receive)
    );
    assert_eq!((s[1].request_context, s[1].bytes_transferred), (101, 11));
    assert_eq!(s[0].qp_context, 0x5E);
    let mut got = vec![0u8; 100];
    srv_buf.read_at(0, &mut got).unwrap();
    assert_eq!(got, pattern[..100]);
    let mut got = vec![0u8; 11];
    srv_buf.read_at(4096, &mut got).unwrap();
    assert_eq!(&got, b"inline data");
    let mut got = vec![0u8; 512 * 1024];
    srv_buf.read_at(65536, &mut got).unwrap();
    assert_eq!(got, pattern[4096..4096 + 512 * 1024]);
    let mut got = vec![0u8; 256 * 1024];
    cli_buf.read_at(1 << 20, &mut got).unwrap();
    assert_eq!(got, pattern[4096..4096 + 256 * 1024]);
    Ok(())
}

/// Initiator requests on an unconnected QP fail inline with `STATUS_CONNECTION_INVALID` (after
/// flag checks); receives may be posted before connecting, a bad token is refused inline, and a
/// flush cancels them.
pub fn initiator_requests_need_a_connection(p: &dyn Provider, ip: IpAddr) -> Outcome {
    let mut side = Side::new(p, ip, 1);
    let buf = Buffer::new(4096);
    let mr = side.register(&buf, MrFlags::ALLOW_LOCAL_WRITE);
    let s = [sge(&buf, &*mr, 0, 16)];
    let q = side.qp.initiator();
    assert_eq!(
        q.send(1, &s, OpFlags::empty()),
        Err(Status::CONNECTION_INVALID)
    );
    assert_eq!(
        q.write(1, &s, 0, RemoteToken(1), OpFlags::empty()),
        Err(Status::CONNECTION_INVALID)
    );
    assert_eq!(
        q.read(1, &s, 0, RemoteToken(1), OpFlags::empty()),
        Err(Status::CONNECTION_INVALID)
    );
    // Flags not valid for the operation come first.
    assert_eq!(
        q.send(1, &s, OpFlags::ALLOW_REMOTE_READ),
        Err(Status::INVALID_PARAMETER)
    );
    // Receives may be posted before connecting.
    side.qp.receiver().receive(1, &s).unwrap();
    // A bad token is refused inline.
    let bad = [Sge::new(buf.address(), 16, LocalToken(0xDEAD_BE00))];
    assert_eq!(
        side.qp.receiver().receive(2, &bad),
        Err(Status::ACCESS_VIOLATION)
    );
    // Flushing an unconnected QP cancels its receives.
    side.qp.flush();
    let c = side.completions(1);
    assert_eq!((c[0].request_context, c[0].status), (1, Status::CANCELLED));
    Ok(())
}

/// Connecting to a closed port and to a listener that rejects (its private data arrives),
/// oversized private data, a second listener on a port, and listening on a foreign address.
pub fn connect_refused_and_rejected(p: &dyn Provider, ip: IpAddr) -> Outcome {
    require_loopback(p, ip)?;
    let client = Side::new(p, ip, 1);
    // Nothing listens on this port (bound and closed just now).
    let port = std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let connector = client.adapter.create_connector().wait().unwrap();
    let r = connector.connect(
        &*client.qp,
        SocketAddr::new(ip, 0),
        SocketAddr::new(ip, port),
        1,
        1,
        b"",
    );
    assert_eq!(
        r.wait_timeout(WAIT).map_err(Status::from),
        Err(Status::CONNECTION_REFUSED)
    );

    // A listener that rejects with private data.
    let server = Side::new(p, ip, 2);
    let listener = server
        .adapter
        .create_listener(Arc::new(|c: Box<dyn Connector>| {
            c.reject(b"not today").unwrap();
        }))
        .wait()
        .unwrap();
    listener.listen(SocketAddr::new(ip, 0)).wait().unwrap();
    let client = Side::new(p, ip, 3);
    let connector = client.adapter.create_connector().wait().unwrap();
    let r = connector.connect(
        &*client.qp,
        SocketAddr::new(ip, 0),
        listener.local_address().unwrap(),
        1,
        1,
        b"",
    );
    assert_eq!(
        r.wait_timeout(WAIT).map_err(Status::from),
        Err(Status::CONNECTION_REFUSED)
    );
    assert_private_data(
        client.adapter.query_info().rdma_technology,
        &connector.connection_data().unwrap().private_data,
        b"not today",
    );
    // Oversized private data.
    let connector = client.adapter.create_connector().wait().unwrap();
    let r = connector.connect(
        &*client.qp,
        SocketAddr::new(ip, 0),
        listener.local_address().unwrap(),
        1,
        1,
        &[0; 253],
    );
    assert_eq!(r.wait(), Err(Status::INVALID_BUFFER_SIZE));
    // A second listener on the same port.
    let other = server
        .adapter
        .create_listener(Arc::new(|_| {}))
        .wait()
        .unwrap();
    assert_eq!(
        other.listen(listener.local_address().unwrap()).wait(),
        Err(Status::SHARING_VIOLATION)
    );
    // An address that is not the adapter's.
    assert_eq!(
        other
            .listen(SocketAddr::new(
                if ip.is_ipv4() {
                    "127.0.0.2".parse().unwrap()
                } else {
                    "::2".parse().unwrap()
                },
                0
            ))
            .wait(),
        Err(Status::INVALID_ADDRESS)
    );
    Ok(())
}

/// Fast registration over a LAM: the token rotates, a peer writes across a page boundary and
/// invalidates it with send-and-invalidate; the seed rules refused inline.
pub fn fast_register_over_the_wire(p: &dyn Provider, ip: IpAddr) -> Outcome {
    require_loopback(p, ip)?;
    require_fast_register(p, ip)?;
    let mut server = Side::new(p, ip, 1);
    let mut client = Side::new(p, ip, 2);
    let (_s, _c) = connect(&mut server, &mut client, ip, b"");
    // Server: a fast-register region over 3 pages of a buffer, with remote write.
    let buf = Buffer::new(4 * 4096);
    let lam = server
        .adapter
        .build_lam(&buf, 4096, 3 * 4096)
        .wait()
        .unwrap();
    let fr = server.pd.create_mr(true).wait().unwrap();
    fr.initialize_fast_register(16, true).wait().unwrap();
    let pages = lam.mapping.adapter_page_array.clone();
    let before = fr.remote_token();
    server
        .qp
        .initiator()
        .fast_register(
            10,
            &*fr,
            &pages,
            0,
            3 * 4096,
            0x10_0000,
            OpFlags::ALLOW_REMOTE_WRITE | OpFlags::ALLOW_REMOTE_READ,
        )
        .unwrap();
    let token = fr.remote_token();
    assert_ne!(token, before, "the token rotates on every fast register");
    let c = server.completions(1);
    assert_eq!(
        (c[0].request_context, c[0].status, c[0].op_type),
        (10, Status::SUCCESS, OperationType::FastRegister)
    );
    // Client writes into it at base + 5000 (across the page boundary).
    let src = Buffer::from_slice(&[0xAB; 6000]);
    let src_mr = client.register(&src, MrFlags::empty());
    client
        .qp
        .initiator()
        .write(
            1,
            &[sge(&src, &*src_mr, 0, 6000)],
            0x10_0000 + 5000,
            token,
            OpFlags::empty(),
        )
        .unwrap();
    // Then invalidates it remotely with a send-and-invalidate.
    let rbuf = Buffer::new(64);
    let rmr = server.register(&rbuf, MrFlags::ALLOW_LOCAL_WRITE);
    server
        .qp
        .receiver()
        .receive(20, &[sge(&rbuf, &*rmr, 0, 64)])
        .unwrap();
    client
        .qp
        .initiator()
        .send_and_invalidate(2, &[sge(&src, &*src_mr, 0, 8)], OpFlags::empty(), token)
        .unwrap();
    let c = client.completions(2);
    assert!(c.iter().all(|c| c.status == Status::SUCCESS), "{c:?}");
    let r = server.completions(1);
    assert_eq!(r[0].op_type, OperationType::ReceiveAndInvalidate);
    assert_eq!(r[0].type_specific, u64::from(token.0));
    let mut got = vec![0u8; 6000];
    buf.read_at(4096 + 5000, &mut got).unwrap();
    assert_eq!(got, vec![0xAB; 6000]);

    // Fast-register seed rules, inline: remote rights without remote initialization.
    let local_only = server.pd.create_mr(true).wait().unwrap();
    local_only
        .initialize_fast_register(16, false)
        .wait()
        .unwrap();
    assert_eq!(
        server.qp.initiator().fast_register(
            11,
            &*local_only,
            &pages,
            0,
            4096,
            0,
            OpFlags::ALLOW_REMOTE_READ
        ),
        Err(Status::ACCESS_VIOLATION)
    );
    // Base address must be n·PAGE_SIZE + FBO.
    assert_eq!(
        server.qp.initiator().fast_register(
            12,
            &*local_only,
            &pages,
            16,
            4096,
            0x1000,
            OpFlags::ALLOW_LOCAL_WRITE
        ),
        Err(Status::INVALID_PARAMETER)
    );
    Ok(())
}

/// A memory window bound over a regular region, written through by the peer, then invalidated.
pub fn memory_windows_over_the_wire(p: &dyn Provider, ip: IpAddr) -> Outcome {
    require_loopback(p, ip)?;
    require_memory_windows(p, ip)?;
    let mut server = Side::new(p, ip, 1);
    let mut client = Side::new(p, ip, 2);
    let (_s, _c) = connect(&mut server, &mut client, ip, b"");
    let src = Buffer::from_slice(&[0xAB; 1024]);
    let src_mr = client.register(&src, MrFlags::empty());
    // A window over a regular region, bound and used remotely.
    let wbuf = Buffer::new(8192);
    let wmr = server.register(
        &wbuf,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_WRITE,
    );
    let mw = server.pd.create_mw().wait().unwrap();
    server
        .qp
        .initiator()
        .bind(
            13,
            &*wmr,
            &*mw,
            wbuf.address() + 4096,
            1024,
            OpFlags::ALLOW_REMOTE_WRITE,
        )
        .unwrap();
    let wtoken = mw.remote_token();
    client
        .qp
        .initiator()
        .write(
            3,
            &[sge(&src, &*src_mr, 0, 1024)],
            wbuf.address() + 4096,
            wtoken,
            OpFlags::empty(),
        )
        .unwrap();
    client.completions(1);
    server.completions(1);
    // The write's completion says it left the client, not that it is placed (RDMA semantics;
    // with inline progress it completes as soon as TCP took it): wait for the octets.
    let mut got = vec![0u8; 1024];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while got != vec![0xAB; 1024] && std::time::Instant::now() < deadline {
        std::thread::yield_now();
        wbuf.read_at(4096, &mut got).unwrap();
    }
    assert_eq!(got, vec![0xAB; 1024]);
    server
        .qp
        .initiator()
        .invalidate(14, InvalidateTarget::Mw(&*mw), OpFlags::empty())
        .unwrap();
    let inv = server.completions(1)[0];
    assert_eq!(
        (inv.status, inv.op_type),
        (Status::SUCCESS, OperationType::Invalidate)
    );
    // Invalidated, the window binds again (elsewhere in the MR) under a new token.
    server
        .qp
        .initiator()
        .bind(
            15,
            &*wmr,
            &*mw,
            wbuf.address(),
            1024,
            OpFlags::ALLOW_REMOTE_WRITE,
        )
        .unwrap();
    let again = mw.remote_token();
    assert_ne!(again, wtoken, "a new binding has a new token");
    let bind = server.completions(1)[0];
    assert_eq!(
        (bind.status, bind.op_type),
        (Status::SUCCESS, OperationType::Bind)
    );
    src.write_at(0, &[0xCD; 1024]).unwrap();
    client
        .qp
        .initiator()
        .write(
            4,
            &[sge(&src, &*src_mr, 0, 1024)],
            wbuf.address(),
            again,
            OpFlags::empty(),
        )
        .unwrap();
    assert_eq!(client.completions(1)[0].status, Status::SUCCESS);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while got != vec![0xCD; 1024] && std::time::Instant::now() < deadline {
        std::thread::yield_now();
        wbuf.read_at(0, &mut got).unwrap();
    }
    assert_eq!(got, vec![0xCD; 1024]);
    Ok(())
}

/// A write to a token the peer does not know terminates the connection: later requests and
/// receives complete cancelled (with the Terminate's code on iWARP), and posts fail inline.
pub fn write_to_invalid_token_terminates_and_cancels(p: &dyn Provider, ip: IpAddr) -> Outcome {
    require_loopback(p, ip)?;
    let iwarp = adapter_info(p, ip).rdma_technology == RdmaTechnology::IWarp;
    let terminate_detail = !deviations(p, ip).no_terminate_detail;
    let mut server = Side::new(p, ip, 1);
    let mut client = Side::new(p, ip, 2);
    let (_s, _c) = connect(&mut server, &mut client, ip, b"");
    let buf = Buffer::new(4096);
    let mr = client.register(&buf, MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK);
    client
        .qp
        .receiver()
        .receive(7, &[sge(&buf, &*mr, 0, 64)])
        .unwrap();
    let q = client.qp.initiator();
    q.write(
        1,
        &[sge(&buf, &*mr, 0, 64)],
        0x1000,
        RemoteToken(0xBAD0_0000),
        OpFlags::empty(),
    )
    .unwrap();
    // The peer's Terminate may already have closed the connection: then the post fails inline.
    let read = q.read(
        2,
        &[sge(&buf, &*mr, 0, 64)],
        0x1000,
        RemoteToken(0xBAD0_0000),
        OpFlags::READ_FENCE,
    );
    assert!(
        matches!(read, Ok(()) | Err(Status::CONNECTION_INVALID)),
        "{read:?}"
    );
    let c = client.completions(if read.is_ok() { 3 } else { 2 });
    let st: Vec<_> = c.iter().map(|c| (c.request_context, c.status)).collect();
    // iWARP completes the write once sent and hears of the failure in the peer's Terminate;
    // on InfiniBand and RoCE the responder's NAK may fail the write itself.
    if iwarp && terminate_detail {
        assert_eq!(st[0], (1, Status::SUCCESS), "{c:?}");
    } else if iwarp {
        // Without the Terminate's detail a write the Terminate caught being sent fails
        // `STATUS_CONNECTION_ABORTED` (the declared deviation).
        assert!(
            st[0] == (1, Status::SUCCESS) || st[0] == (1, Status::CONNECTION_ABORTED),
            "{c:?}"
        );
    } else {
        assert!(
            st[0] == (1, Status::SUCCESS) || st[0] == (1, Status::ACCESS_VIOLATION),
            "{st:?}"
        );
    }
    assert!(st.contains(&(7, Status::CANCELLED)), "{st:?}");
    if read.is_ok() && iwarp && terminate_detail {
        // The error completion carries the Terminate we received (DDP tagged invalid STag).
        let r = c.iter().find(|c| c.request_context == 2).unwrap();
        assert_eq!(
            (r.status, r.provider_error_code),
            (Status::CANCELLED, 0x0201_0100)
        );
    }
    // Afterwards every initiator post fails inline.
    assert_eq!(
        client
            .qp
            .initiator()
            .send_inline(3, &[b"x"], OpFlags::empty())
            .err(),
        Some(Status::CONNECTION_INVALID)
    );
    Ok(())
}

/// A side whose receive CQ reports notifications to a channel.
fn side_with_notifications(
    p: &dyn Provider,
    ip: IpAddr,
    context: u64,
) -> (Side, mpsc::Receiver<Status>) {
    let adapter = open(p, ip);
    let pd = adapter.create_pd().wait().unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let cq = adapter
        .create_cq(
            8,
            Arc::new(move |s| tx.lock().unwrap().send(s).unwrap()),
            None,
        )
        .wait()
        .unwrap();
    let qp = pd
        .create_qp(QpConfig {
            receive_cq: &*cq,
            initiator_cq: &*cq,
            context,
            receive_queue_depth: 4,
            initiator_queue_depth: 4,
            max_receive_sge: 1,
            max_initiator_sge: 1,
            inline_data_size: crate::inline_within(&*adapter, 64),
        })
        .wait()
        .unwrap();
    (
        Side {
            adapter,
            pd,
            cq,
            qp,
        },
        rx,
    )
}

/// CQ arming: a SOLICITED arm ignores unsolicited sends and fires for a solicited one; ANY fires
/// once per arm.
pub fn cq_arming_solicited_and_any(p: &dyn Provider, ip: IpAddr) -> Outcome {
    require_loopback(p, ip)?;
    require_kept(
        deviations(p, ip).no_solicited_notifications,
        "no_solicited_notifications (a SOLICITED arm never fires for a solicited receive)",
    )?;
    let (mut server, notes) = side_with_notifications(p, ip, 1);
    let mut client = Side::new(p, ip, 2);
    let buf = Buffer::new(4096);
    let mr = server.register(&buf, MrFlags::ALLOW_LOCAL_WRITE);
    for k in 0..3 {
        server
            .qp
            .receiver()
            .receive(k, &[sge(&buf, &*mr, k as usize * 64, 64)])
            .unwrap();
    }
    let (_s, _c) = connect(&mut server, &mut client, ip, b"");
    server.cq.arm(CqNotifyType::Solicited);
    // An unsolicited send does not satisfy a SOLICITED arm.
    client
        .qp
        .initiator()
        .send_inline(1, &[b"plain"], OpFlags::empty())
        .unwrap();
    assert_eq!(server.completions(1)[0].request_context, 0);
    assert!(
        notes.recv_timeout(Duration::from_millis(200)).is_err(),
        "fired for an unsolicited send"
    );
    // A solicited one does.
    client
        .qp
        .initiator()
        .send_inline(2, &[b"wake"], OpFlags::SEND_AND_SOLICIT_EVENT)
        .unwrap();
    assert_eq!(notes.recv_timeout(WAIT), Ok(Status::SUCCESS));
    assert_eq!(server.completions(1)[0].request_context, 1);
    // ANY fires for the next completion; one notification per arm.
    server.cq.arm(CqNotifyType::Any);
    client
        .qp
        .initiator()
        .send_inline(3, &[b"any"], OpFlags::empty())
        .unwrap();
    assert_eq!(notes.recv_timeout(WAIT), Ok(Status::SUCCESS));
    assert_eq!(server.completions(1)[0].request_context, 2);
    assert!(notes.recv_timeout(Duration::from_millis(100)).is_err());
    client.completions(3);
    Ok(())
}

/// §7.4: an arm on a CQ that holds a completion which arrived after the last notification
/// fires at once, one notification per arm; a completion that arrives after the arm fires the
/// next one; the entries are handed out in order.
pub fn cq_arm_on_a_non_empty_cq_fires_at_once(p: &dyn Provider, ip: IpAddr) -> Outcome {
    require_loopback(p, ip)?;
    let (mut server, notes) = side_with_notifications(p, ip, 1);
    let mut client = Side::new(p, ip, 2);
    let buf = Buffer::new(4096);
    let mr = server.register(&buf, MrFlags::ALLOW_LOCAL_WRITE);
    for k in 0..3 {
        server
            .qp
            .receiver()
            .receive(k, &[sge(&buf, &*mr, k as usize * 64, 64)])
            .unwrap();
    }
    let (_s, _c) = connect(&mut server, &mut client, ip, b"");
    // A receive completes while nothing is armed: no notification.
    client
        .qp
        .initiator()
        .send_inline(1, &[b"first"], OpFlags::empty())
        .unwrap();
    client.completions(1);
    assert!(
        notes.recv_timeout(Duration::from_millis(200)).is_err(),
        "fired without an arm"
    );
    // Arming now fires at once for the entry already there.
    server.cq.arm(CqNotifyType::Any);
    assert_eq!(
        notes.recv_timeout(WAIT),
        Ok(Status::SUCCESS),
        "no notification for an arm on a non-empty CQ"
    );
    assert!(
        notes.recv_timeout(Duration::from_millis(100)).is_err(),
        "two notifications for one arm"
    );
    // A completion that arrives after the next arm fires it; both entries come in order.
    server.cq.arm(CqNotifyType::Any);
    let mut second = notes.recv_timeout(Duration::from_millis(100));
    if second.is_err() {
        // The provider did not fire again for the entry already notified (the NDK's "may").
        client
            .qp
            .initiator()
            .send_inline(2, &[b"second"], OpFlags::empty())
            .unwrap();
        second = notes.recv_timeout(WAIT);
    } else {
        client
            .qp
            .initiator()
            .send_inline(2, &[b"second"], OpFlags::empty())
            .unwrap();
    }
    assert_eq!(second, Ok(Status::SUCCESS));
    let c = server.completions(2);
    assert_eq!(
        c.iter()
            .map(|c| (c.request_context, c.bytes_transferred))
            .collect::<Vec<_>>(),
        vec![(0, 5), (1, 6)]
    );
    client.completions(1);
    Ok(())
}

/// One SRQ feeds two connected QPs; its notification fires only when the count drops below
/// the threshold.
pub fn srq_feeds_two_qps_and_notifies_below_threshold(p: &dyn Provider, ip: IpAddr) -> Outcome {
    require_loopback(p, ip)?;
    require_srq(p, ip)?;
    use netdirect::{QpWithSrqConfig, SrqConfig};
    let server_adapter = open(p, ip);
    let pd = server_adapter.create_pd().wait().unwrap();
    let mut cq = server_adapter
        .create_cq(64, Arc::new(|_| {}), None)
        .wait()
        .unwrap();
    let (tx, notes) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let mut srq = pd
        .create_srq(SrqConfig {
            depth: 8,
            max_receive_sge: 1,
            notify_threshold: 2,
            notification: Some(Arc::new(move |s| tx.lock().unwrap().send(s).unwrap())),
            affinity: None,
        })
        .wait()
        .unwrap();
    let buf = Buffer::new(8 * 256);
    let mr = pd.create_mr(false).wait().unwrap();
    mr.register(&buf, 0, buf.len(), MrFlags::ALLOW_LOCAL_WRITE)
        .wait()
        .unwrap();
    for k in 0..4u64 {
        srq.receive(k, &[sge(&buf, &*mr, k as usize * 256, 256)])
            .unwrap();
    }
    let qps: Vec<Box<dyn Qp>> = (0..2u64)
        .map(|ctx| {
            pd.create_qp_with_srq(QpWithSrqConfig {
                receive_cq: &*cq,
                initiator_cq: &*cq,
                srq: &*srq,
                context: 0x100 + ctx,
                initiator_queue_depth: 4,
                max_initiator_sge: 1,
                inline_data_size: crate::inline_within(&*server_adapter, 64),
            })
            .wait()
            .unwrap()
        })
        .collect();
    // Connect two clients, one to each SRQ-attached QP.
    let (listener, events) = listen_on(&*server_adapter, ip);
    let mut clients = Vec::new();
    let mut keep = Vec::new();
    for qp in &qps {
        let client = Side::new(p, ip, 9);
        let address = listener.local_address().unwrap();
        keep.push(establish(
            &*client.adapter,
            &*client.qp,
            &events,
            address,
            &**qp,
            None,
        ));
        clients.push(client);
    }
    clients[0]
        .qp
        .initiator()
        .send_inline(1, &[b"to qp 0"], OpFlags::empty())
        .unwrap();
    clients[1]
        .qp
        .initiator()
        .send_inline(1, &[b"to qp 1"], OpFlags::empty())
        .unwrap();
    // Two of four receives consumed: 2 left, not below the threshold yet.
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut out = [Completion::EMPTY; 4];
    while got.len() < 2 {
        assert!(Instant::now() < deadline);
        let n = cq.get_results_ex(&mut out);
        got.extend_from_slice(&out[..n]);
    }
    let mut contexts: Vec<_> = got
        .iter()
        .map(|c| (c.qp_context, c.bytes_transferred))
        .collect();
    contexts.sort();
    assert_eq!(contexts, vec![(0x100, 7), (0x101, 7)]);
    assert!(notes.recv_timeout(Duration::from_millis(100)).is_err());
    clients[0]
        .qp
        .initiator()
        .send_inline(2, &[b"third"], OpFlags::empty())
        .unwrap();
    assert_eq!(
        notes.recv_timeout(WAIT),
        Ok(Status::SUCCESS),
        "no notification below the threshold"
    );
    Ok(())
}

/// Connects `client` to `server` (accepted with a disconnect callback), then the client
/// disconnects and the server's callback runs. Returns the listener, the server's connector
/// and the client's, which the case keeps.
fn peer_disconnected(
    server: &Side,
    client: &Side,
    ip: IpAddr,
) -> (
    Box<dyn netdirect::Listener>,
    Box<dyn Connector>,
    Box<dyn Connector>,
) {
    let (listener, events) = listen_on(&*server.adapter, ip);
    let (dtx, disconnected) = mpsc::channel();
    let (incoming, connector) = establish(
        &*client.adapter,
        &*client.qp,
        &events,
        listener.local_address().unwrap(),
        &*server.qp,
        Some(Box::new(move || dtx.send(()).unwrap())),
    );
    connector.disconnect().wait_timeout(WAIT).unwrap();
    disconnected.recv_timeout(WAIT).expect("disconnect event");
    (listener, incoming, connector)
}

/// A peer's disconnect raises the disconnect event without flushing; the local disconnect then
/// cancels the posted receive and later posts fail inline.
pub fn disconnect_event_without_flush_then_disconnect_flushes(
    p: &dyn Provider,
    ip: IpAddr,
) -> Outcome {
    require_loopback(p, ip)?;
    require_kept(
        deviations(p, ip).peer_disconnect_flushes,
        "peer_disconnect_flushes (the device flushes the QP when the peer disconnects)",
    )?;
    let mut server = Side::new(p, ip, 1);
    let client = Side::new(p, ip, 2);
    let buf = Buffer::new(4096);
    let mr = server.register(&buf, MrFlags::ALLOW_LOCAL_WRITE);
    server
        .qp
        .receiver()
        .receive(5, &[sge(&buf, &*mr, 0, 64)])
        .unwrap();
    // The client disconnects: the server hears of it, and nothing of its is flushed yet.
    let (_listener, incoming, _connector) = peer_disconnected(&server, &client, ip);
    let mut out = [Completion::EMPTY; 4];
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        server.cq.get_results_ex(&mut out),
        0,
        "flushed on a peer disconnect"
    );
    // The server disconnects too: its receive completes cancelled.
    incoming.disconnect().wait_timeout(WAIT).unwrap();
    let c = server.completions(1);
    assert_eq!((c[0].request_context, c[0].status), (5, Status::CANCELLED));
    // Posting afterwards fails inline.
    assert_eq!(
        server
            .qp
            .initiator()
            .send_inline(1, &[b"late"], OpFlags::empty()),
        Err(Status::CONNECTION_INVALID)
    );
    Ok(())
}

/// Reads with Sends and Writes posted behind them, signaled and silent: every signaled request
/// completes once, with its status and type, and each Read's data lands. (An iWARP device may
/// complete the Sends and Writes first: a Read completes when its response has arrived.)
pub fn sends_and_writes_behind_reads_leave_every_read_to_complete(
    p: &dyn Provider,
    ip: IpAddr,
) -> Outcome {
    require_loopback(p, ip)?;
    let mut server = Side::new(p, ip, 1);
    let mut client = Side::new(p, ip, 2);
    let srv_buf = Buffer::new(256 * 1024);
    let pattern: Vec<u8> = (0..srv_buf.len()).map(|i| (i * 13 % 251) as u8).collect();
    srv_buf.write_at(0, &pattern).unwrap();
    let srv_mr = server.register(
        &srv_buf,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_WRITE | MrFlags::ALLOW_REMOTE_READ,
    );
    for k in 0..4 {
        server
            .qp
            .receiver()
            .receive(100 + k, &[sge(&srv_buf, &*srv_mr, 4096 * k as usize, 64)])
            .unwrap();
    }
    let (_s, _c) = connect(&mut server, &mut client, ip, b"");
    let cli_buf = Buffer::new(256 * 1024);
    let cli_mr = client.register(
        &cli_buf,
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK,
    );
    let remote = RemoteToken(srv_mr.remote_token().0);
    let base = srv_buf.address();
    let q = client.qp.initiator();
    let silent = OpFlags::SILENT_SUCCESS;
    // Reads of 32 KiB from the upper half, each followed by a Send or a Write.
    for k in 0..4u64 {
        let at = 128 * 1024 + 32 * 1024 * k as usize;
        let flags = if k == 1 { silent } else { OpFlags::empty() };
        q.read(
            10 + k,
            &[sge(&cli_buf, &*cli_mr, at, 32 * 1024)],
            base + at as u64,
            remote,
            flags,
        )
        .expect("read");
        if k % 2 == 0 {
            q.send_inline(20 + k, &[b"behind a read"], OpFlags::empty())
                .expect("send");
        } else {
            q.write(
                20 + k,
                &[sge(&cli_buf, &*cli_mr, 4096 * k as usize, 64)],
                base + 65536 + 4096 * k,
                remote,
                silent,
            )
            .expect("write");
        }
    }
    // Signaled: reads 10, 12, 13 and sends 20, 22 (read 11 and the writes are silent). A
    // last signaled Read covers what is silent.
    q.read(
        14,
        &[sge(&cli_buf, &*cli_mr, 0, 4096)],
        base,
        remote,
        OpFlags::empty(),
    )
    .expect("read");
    let mut got: Vec<_> = client
        .completions(6)
        .iter()
        .map(|c| (c.request_context, c.status, c.op_type))
        .collect();
    got.sort_unstable_by_key(|g| g.0);
    assert_eq!(
        got,
        vec![
            (10, Status::SUCCESS, OperationType::Read),
            (12, Status::SUCCESS, OperationType::Read),
            (13, Status::SUCCESS, OperationType::Read),
            (14, Status::SUCCESS, OperationType::Read),
            (20, Status::SUCCESS, OperationType::Send),
            (22, Status::SUCCESS, OperationType::Send),
        ]
    );
    std::thread::sleep(Duration::from_millis(50));
    let mut out = [Completion::EMPTY; 4];
    assert_eq!(client.cq.get_results_ex(&mut out), 0, "{:?}", &out[..1]);
    let mut back = vec![0u8; 128 * 1024];
    cli_buf.read_at(128 * 1024, &mut back).unwrap();
    assert!(back == pattern[128 * 1024..], "a Read's data did not land");
    assert_eq!(server.completions(2).len(), 2);
    Ok(())
}

/// A receive posted after the peer disconnected (a consumer re-posting as the peer's close
/// arrives) is taken, not refused: it completes `STATUS_CANCELLED` once the QP is flushed (at
/// once where the peer's disconnect flushes), and after the flush every receive posted still
/// completes cancelled, firing a pending arm.
pub fn receives_posted_after_the_peer_disconnected_complete_cancelled(
    p: &dyn Provider,
    ip: IpAddr,
) -> Outcome {
    require_loopback(p, ip)?;
    let (mut server, notes) = side_with_notifications(p, ip, 1);
    let client = Side::new(p, ip, 2);
    let buf = Buffer::new(4096);
    let mr = server.register(&buf, MrFlags::ALLOW_LOCAL_WRITE);
    let (_listener, incoming, _connector) = peer_disconnected(&server, &client, ip);
    assert_eq!(
        server.qp.receiver().receive(7, &[sge(&buf, &*mr, 0, 64)]),
        Ok(()),
        "a receive posted after the peer's disconnect"
    );
    incoming.disconnect().wait_timeout(WAIT).unwrap();
    let c = server.completions(1);
    assert_eq!((c[0].request_context, c[0].status), (7, Status::CANCELLED));
    assert_eq!(c[0].op_type, OperationType::Receive);
    // Flushed: a receive is still taken, and completes cancelled; an arm fires for it.
    server.cq.arm(CqNotifyType::Any);
    assert!(
        notes.recv_timeout(Duration::from_millis(100)).is_err(),
        "fired on an empty CQ"
    );
    assert_eq!(
        server.qp.receiver().receive(8, &[sge(&buf, &*mr, 64, 64)]),
        Ok(()),
        "a receive posted after the flush"
    );
    assert_eq!(notes.recv_timeout(WAIT), Ok(Status::SUCCESS));
    let c = server.completions(1);
    assert_eq!((c[0].request_context, c[0].status), (8, Status::CANCELLED));
    // Still checked: a receive outside the region fails inline.
    assert_eq!(
        server
            .qp
            .receiver()
            .receive(9, &[sge(&buf, &*mr, 4000, 200)]),
        Err(Status::ACCESS_VIOLATION)
    );
    std::thread::sleep(Duration::from_millis(50));
    let mut out = [Completion::EMPTY; 4];
    assert_eq!(server.cq.get_results_ex(&mut out), 0, "{:?}", &out[..1]);
    Ok(())
}

/// Each fast-register rule with its status (unconnected, page count, length, base address,
/// remote rights), the good cases, and the read-sink right where the adapter requires it.
pub fn fast_register_seed_rules_each_with_its_status(p: &dyn Provider, ip: IpAddr) -> Outcome {
    require_loopback(p, ip)?;
    require_fast_register(p, ip)?;
    let mut server = Side::new(p, ip, 1);
    let mut client = Side::new(p, ip, 2);
    let buf = Buffer::new(8 * 4096);
    let lam = server.adapter.build_lam(&buf, 0, 8 * 4096).wait().unwrap();
    let pages = lam.mapping.adapter_page_array.clone();
    let mr = server.pd.create_mr(true).wait().unwrap();
    mr.initialize_fast_register(4, true).wait().unwrap();
    let w = OpFlags::ALLOW_LOCAL_WRITE;
    // On an unconnected QP: STATUS_CONNECTION_INVALID.
    assert_eq!(
        server
            .qp
            .initiator()
            .fast_register(1, &*mr, &pages[..1], 0, 4096, 0, w),
        Err(Status::CONNECTION_INVALID)
    );
    let (_s, _c) = connect(&mut server, &mut client, ip, b"");
    let q = server.qp.initiator();
    // More pages than initialized for.
    assert_eq!(
        q.fast_register(2, &*mr, &pages[..5], 0, 4096, 0, w),
        Err(Status::INVALID_PARAMETER)
    );
    // Length above pages·PAGE_SIZE − FBO.
    assert_eq!(
        q.fast_register(3, &*mr, &pages[..2], 100, 2 * 4096 - 99, 100, w),
        Err(Status::INVALID_PARAMETER)
    );
    // Base address not n·PAGE_SIZE + FBO.
    assert_eq!(
        q.fast_register(4, &*mr, &pages[..2], 100, 4096, 0x2000 + 99, w),
        Err(Status::INVALID_PARAMETER)
    );
    // Base address zero with a non-zero FBO.
    assert_eq!(
        q.fast_register(5, &*mr, &pages[..2], 100, 4096, 0, w),
        Err(Status::INVALID_PARAMETER)
    );
    // Remote rights on an MR initialized without remote access.
    let local = server.pd.create_mr(true).wait().unwrap();
    local.initialize_fast_register(4, false).wait().unwrap();
    let q = server.qp.initiator();
    assert_eq!(
        q.fast_register(
            6,
            &*local,
            &pages[..1],
            0,
            4096,
            0,
            OpFlags::ALLOW_REMOTE_WRITE
        ),
        Err(Status::ACCESS_VIOLATION)
    );
    assert_eq!(
        q.fast_register(
            7,
            &*local,
            &pages[..1],
            0,
            4096,
            0,
            OpFlags::ALLOW_REMOTE_READ
        ),
        Err(Status::ACCESS_VIOLATION)
    );
    // The good cases: base = n·PAGE_SIZE + FBO, zero base with zero FBO; the length at the limit.
    q.fast_register(
        8,
        &*mr,
        &pages[..2],
        100,
        2 * 4096 - 100,
        0x7000 + 100,
        w | OpFlags::RDMA_READ_SINK,
    )
    .unwrap();
    q.fast_register(9, &*local, &pages[2..3], 0, 4096, 0, w)
        .unwrap();
    let c = server.completions(2);
    assert!(
        c.iter()
            .all(|c| c.status == Status::SUCCESS && c.op_type == OperationType::FastRegister),
        "{c:?}"
    );
    // RDMA_READ_SINK (where the adapter requires it): a read into the region without it is
    // refused inline; into the one with it, it works.
    let src = Buffer::from_slice(&[7u8; 256]);
    let src_mr = client.register(&src, MrFlags::ALLOW_REMOTE_READ);
    let token = src_mr.remote_token();
    if sink_required(p, ip) {
        let no_sink = [Sge::new(0, 256, local.local_token())];
        assert_eq!(
            server
                .qp
                .initiator()
                .read(10, &no_sink, src.address(), token, OpFlags::empty()),
            Err(Status::ACCESS_VIOLATION)
        );
    }
    let sink = [Sge::new(0x7000 + 100, 256, mr.local_token())];
    server
        .qp
        .initiator()
        .read(11, &sink, src.address(), token, OpFlags::empty())
        .unwrap();
    assert_eq!(server.completions(1)[0].status, Status::SUCCESS);
    let mut got = [0u8; 256];
    buf.read_at(100, &mut got).unwrap();
    assert_eq!(got, [7u8; 256]);
    Ok(())
}

/// Posting limits: too many SGEs (`STATUS_DATA_OVERRUN`), too much inline data
/// (`STATUS_BUFFER_OVERFLOW`), a read sink without the right, a full queue with silent successes
/// holding their slots (`STATUS_NO_MORE_ENTRIES`).
pub fn posting_limits_have_their_statuses(p: &dyn Provider, ip: IpAddr) -> Outcome {
    require_loopback(p, ip)?;
    let (mut server, _notes) = side_with_notifications(p, ip, 1);
    let mut client = Side::new(p, ip, 2);
    let (_s, _c) = connect(&mut server, &mut client, ip, b"");
    let buf = Buffer::new(1 << 16);
    let mr = server.register(&buf, MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK);
    let one = sge(&buf, &*mr, 0, 16);
    let q = server.qp.initiator();
    // More SGEs than the QP's limit (1).
    assert_eq!(
        q.send(1, &[one, one], OpFlags::empty()),
        Err(Status::DATA_OVERRUN)
    );
    // Inline bytes above the QP's inline size (64).
    assert_eq!(
        q.send_inline(2, &[&[0u8; 65]], OpFlags::empty()),
        Err(Status::BUFFER_OVERFLOW)
    );
    // Read sink without the sink right (regular MR), where the adapter requires the right.
    if sink_required(p, ip) {
        let plain = server.register(&buf, MrFlags::ALLOW_LOCAL_WRITE);
        let q = server.qp.initiator();
        assert_eq!(
            q.read(
                3,
                &[sge(&buf, &*plain, 0, 16)],
                0x1000,
                RemoteToken(1),
                OpFlags::empty()
            ),
            Err(Status::ACCESS_VIOLATION)
        );
    }
    // Queue full: depth 4, and the client never posts receives so sends stay... they complete
    // once handed to TCP; use reads the client never answers? Reads are answered by the
    // provider, so fill the queue with silent sends and one more.
    let receiver_buf = Buffer::new(4096);
    let rmr = client.register(&receiver_buf, MrFlags::ALLOW_LOCAL_WRITE);
    for k in 0..4 {
        client
            .qp
            .receiver()
            .receive(k, &[sge(&receiver_buf, &*rmr, 0, 64)])
            .unwrap();
    }
    let q = server.qp.initiator();
    for k in 0..4 {
        q.send_inline(10 + k, &[b"x"], OpFlags::SILENT_SUCCESS)
            .unwrap();
    }
    // Silent successes hold their slots until a later completion retires them.
    assert_eq!(
        q.send_inline(20, &[b"y"], OpFlags::empty()),
        Err(Status::NO_MORE_ENTRIES)
    );
    let c = client.completions(4);
    assert_eq!(c.len(), 4);
    let mut out = [Completion::EMPTY; 4];
    assert_eq!(
        server.cq.get_results_ex(&mut out),
        0,
        "silent successes produced completions"
    );
    Ok(())
}

/// Two connections from one shared endpoint share its local address and port.
pub fn shared_endpoint_connects_twice_from_one_port(p: &dyn Provider, ip: IpAddr) -> Outcome {
    require_loopback(p, ip)?;
    let mut a = Side::new(p, ip, 1);
    let mut b = Side::new(p, ip, 2);
    let client = Side::new(p, ip, 3);
    let pd2 = client.adapter.create_pd().wait().unwrap();
    let qp2 = pd2
        .create_qp(QpConfig {
            receive_cq: &*client.cq,
            initiator_cq: &*client.cq,
            context: 4,
            receive_queue_depth: 4,
            initiator_queue_depth: 4,
            max_receive_sge: 1,
            max_initiator_sge: 1,
            inline_data_size: crate::inline_within(&*client.adapter, 64),
        })
        .wait()
        .unwrap();
    let endpoint = supported(
        client
            .adapter
            .create_shared_endpoint(SocketAddr::new(ip, 0))
            .wait(),
        "NdkCreateSharedEndpoint",
    )?
    .unwrap();
    let local = endpoint.local_address().unwrap();
    assert_ne!(local.port(), 0);
    let mut connectors = Vec::new();
    for (server, qp) in [(&mut a, &*client.qp), (&mut b, &*qp2)] {
        let (tx, rx) = mpsc::channel::<Box<dyn Connector>>();
        let tx = std::sync::Mutex::new(tx);
        let listener = server
            .adapter
            .create_listener(Arc::new(move |c| tx.lock().unwrap().send(c).unwrap()))
            .wait()
            .unwrap();
        listener.listen(SocketAddr::new(ip, 0)).wait().unwrap();
        let connector = client.adapter.create_connector().wait().unwrap();
        let pending = connector.connect_with_shared_endpoint(
            qp,
            &*endpoint,
            listener.local_address().unwrap(),
            1,
            1,
            b"",
        );
        let incoming = rx.recv_timeout(WAIT).unwrap();
        let accepted = incoming.accept(&*server.qp, 1, 1, b"", None);
        pending.wait_timeout(WAIT).unwrap();
        connector.complete_connect(None).wait_timeout(WAIT).unwrap();
        accepted.wait_timeout(WAIT).unwrap();
        assert_eq!(connector.local_address().unwrap(), local);
        assert_eq!(incoming.peer_address().unwrap(), local);
        connectors.push((connector, incoming, listener));
    }
    Ok(())
}

/// A read with local invalidate invalidates its fast-registered sink; then a CQ overrun is
/// notified with `STATUS_BUFFER_OVERFLOW` though nothing armed it.
pub fn read_local_invalidate_and_cq_overflow(p: &dyn Provider, ip: IpAddr) -> Outcome {
    require_loopback(p, ip)?;
    require_fast_register(p, ip)?;
    require_read_local_invalidate(p, ip)?;
    let (mut server, notes) = side_with_notifications(p, ip, 1);
    let mut client = Side::new(p, ip, 2);
    let (_s, _c) = connect(&mut server, &mut client, ip, b"");
    // The read sink is a fast-registered region; the read invalidates it when it succeeds.
    let buf = Buffer::new(2 * 4096);
    let lam = server.adapter.build_lam(&buf, 0, buf.len()).wait().unwrap();
    let sink = server.pd.create_mr(true).wait().unwrap();
    sink.initialize_fast_register(2, false).wait().unwrap();
    let flags = OpFlags::ALLOW_LOCAL_WRITE | OpFlags::RDMA_READ_SINK;
    let pages = lam.mapping.adapter_page_array.clone();
    server
        .qp
        .initiator()
        .fast_register(1, &*sink, &pages, 0, 8192, 0x4000_0000, flags)
        .unwrap();
    let src = Buffer::from_slice(&[9u8; 8192]);
    let src_mr = client.register(&src, MrFlags::ALLOW_REMOTE_READ);
    let s = [Sge::new(0x4000_0000, 8192, sink.local_token())];
    server
        .qp
        .initiator()
        .read(
            2,
            &s,
            src.address(),
            src_mr.remote_token(),
            OpFlags::RDMA_READ_LOCAL_INVALIDATE,
        )
        .unwrap();
    let c = server.completions(2);
    assert_eq!((c[1].request_context, c[1].status), (2, Status::SUCCESS));
    assert_eq!(buf.to_vec(), vec![9u8; 8192]);
    // The sink's token is gone: using it again is refused inline.
    assert_eq!(
        server.qp.initiator().read(
            3,
            &s,
            src.address(),
            src_mr.remote_token(),
            OpFlags::empty()
        ),
        Err(Status::ACCESS_VIOLATION)
    );
    // CQ overflow: the server's CQ holds 8; nine completions overrun it, and the notification
    // says so even though nothing armed the CQ.
    let rbuf = Buffer::new(9 * 16);
    let rmr = client.register(&rbuf, MrFlags::ALLOW_LOCAL_WRITE);
    for k in 0..9 {
        client
            .qp
            .receiver()
            .receive(k, &[sge(&rbuf, &*rmr, k as usize * 16, 16)])
            .unwrap();
    }
    let mut posted = 0;
    let deadline = Instant::now() + WAIT;
    while posted < 9 {
        assert!(Instant::now() < deadline, "could not post");
        match server
            .qp
            .initiator()
            .send_inline(10 + posted, &[b"x"], OpFlags::empty())
        {
            Ok(()) => posted += 1,
            // Slots free up as completions are queued (even unread).
            Err(Status::NO_MORE_ENTRIES) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("{e}"),
        }
    }
    let mut saw_overflow = false;
    let deadline = Instant::now() + WAIT;
    while !saw_overflow && Instant::now() < deadline {
        saw_overflow =
            notes.recv_timeout(Duration::from_millis(100)) == Ok(Status::BUFFER_OVERFLOW);
    }
    assert!(saw_overflow, "no STATUS_BUFFER_OVERFLOW notification");
    Ok(())
}
