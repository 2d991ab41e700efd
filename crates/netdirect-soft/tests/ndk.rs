//! The NDK object model over the software RNIC, end to end over TCP loopback (127.0.0.1 and
//! ::1): connection setup through connector and listener, then send/receive, RDMA write, RDMA
//! read, fast registration and memory windows, checking the bytes that land, the completions
//! and the statuses.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netdirect::{
    Adapter, Buffer, Connector, Cq, InvalidateTarget, Mr, OpenParameters, Pd, Provider, Qp,
    QpConfig,
};
use netdirect_soft::SoftProvider;
use netdirect_types::{
    Completion, CqNotifyType, LocalToken, MrFlags, OpFlags, OperationType, RemoteToken, Sge,
    Status, Version,
};

const WAIT: Duration = Duration::from_secs(10);

fn open(ip: IpAddr) -> Box<dyn Adapter> {
    SoftProvider::new()
        .open_adapter(OpenParameters {
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
    fn new(ip: IpAddr, context: u64) -> Side {
        let adapter = open(ip);
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
                inline_data_size: 256,
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
        let mut buf = [Completion {
            status: Status::SUCCESS,
            bytes_transferred: 0,
            qp_context: 0,
            request_context: 0,
            op_type: OperationType::Send,
            provider_error_code: 0,
            type_specific: 0,
        }; 16];
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

fn sge(buffer: &Buffer, mr: &dyn Mr, offset: usize, len: u32) -> Sge {
    Sge::new(buffer.address() + offset as u64, len, mr.local_token())
}

/// Connects `client` to `server` through a listener and a connector.
fn connect(
    server: &mut Side,
    client: &mut Side,
    ip: IpAddr,
    private: &[u8],
) -> (Box<dyn Connector>, Box<dyn Connector>) {
    let (tx, rx) = mpsc::channel::<Box<dyn Connector>>();
    let tx = std::sync::Mutex::new(tx);
    let listener = server
        .adapter
        .create_listener(Arc::new(move |c| tx.lock().unwrap().send(c).unwrap()))
        .wait()
        .unwrap();
    listener.listen(SocketAddr::new(ip, 0)).wait().unwrap();
    let address = listener.local_address().unwrap();
    assert_ne!(address.port(), 0);
    let connector = client.adapter.create_connector().wait().unwrap();
    let pending = connector.connect(&*client.qp, SocketAddr::new(ip, 0), address, 4, 4, private);
    let incoming = rx.recv_timeout(WAIT).expect("connect event");
    let data = incoming.connection_data().unwrap();
    assert_eq!(data.private_data, private);
    assert_eq!((data.inbound_read_limit, data.outbound_read_limit), (4, 4));
    let accepted = incoming.accept(&*server.qp, 4, 4, b"welcome", None);
    pending
        .wait_timeout(WAIT)
        .expect("connect completes")
        .unwrap();
    let data = connector.connection_data().unwrap();
    assert_eq!(data.private_data, b"welcome");
    connector
        .complete_connect(None)
        .wait_timeout(WAIT)
        .unwrap()
        .unwrap();
    accepted
        .wait_timeout(WAIT)
        .expect("accept completes")
        .unwrap();
    assert_eq!(
        incoming.peer_address().unwrap(),
        connector.local_address().unwrap()
    );
    drop(listener);
    (incoming, connector)
}

fn data_path(ip: IpAddr) {
    let mut server = Side::new(ip, 0x5E);
    let mut client = Side::new(ip, 0xC1);
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
            .unwrap();
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
        .unwrap();
    client
        .qp
        .initiator()
        .send_inline(2, &[b"inline ", b"data"], OpFlags::SEND_AND_SOLICIT_EVENT)
        .unwrap();
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
        .unwrap();
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
        .unwrap();
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
}

#[test]
fn data_path_ipv4() {
    data_path("127.0.0.1".parse().unwrap());
}

#[test]
fn data_path_ipv6() {
    data_path("::1".parse().unwrap());
}

#[test]
fn initiator_requests_need_a_connection() {
    let mut side = Side::new("127.0.0.1".parse().unwrap(), 1);
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
}

#[test]
fn connect_refused_and_rejected() {
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let client = Side::new(ip, 1);
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
        r.wait_timeout(WAIT).unwrap(),
        Err(Status::CONNECTION_REFUSED)
    );

    // A listener that rejects with private data.
    let server = Side::new(ip, 2);
    let listener = server
        .adapter
        .create_listener(Arc::new(|c: Box<dyn Connector>| {
            c.reject(b"not today").unwrap();
        }))
        .wait()
        .unwrap();
    listener.listen(SocketAddr::new(ip, 0)).wait().unwrap();
    let client = Side::new(ip, 3);
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
        r.wait_timeout(WAIT).unwrap(),
        Err(Status::CONNECTION_REFUSED)
    );
    assert_eq!(
        connector.connection_data().unwrap().private_data,
        b"not today"
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
        other.listen("127.0.0.2:0".parse().unwrap()).wait(),
        Err(Status::INVALID_ADDRESS)
    );
}

#[test]
fn fast_register_and_windows_over_the_wire() {
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let mut server = Side::new(ip, 1);
    let mut client = Side::new(ip, 2);
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
    let mut got = vec![0u8; 1024];
    wbuf.read_at(4096, &mut got).unwrap();
    assert_eq!(got, vec![0xAB; 1024]);
    server
        .qp
        .initiator()
        .invalidate(14, InvalidateTarget::Mw(&*mw), OpFlags::empty())
        .unwrap();
    assert_eq!(server.completions(1)[0].status, Status::SUCCESS);
}

#[test]
fn write_to_invalid_token_terminates_and_cancels() {
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let mut server = Side::new(ip, 1);
    let mut client = Side::new(ip, 2);
    let (_s, _c) = connect(&mut server, &mut client, ip, b"");
    let buf = Buffer::new(4096);
    let mr = client.register(&buf, MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK);
    client
        .qp
        .receiver()
        .receive(7, &[sge(&buf, &*mr, 0, 64)])
        .unwrap();
    client
        .qp
        .initiator()
        .write(
            1,
            &[sge(&buf, &*mr, 0, 64)],
            0x1000,
            RemoteToken(0xBAD0_0000),
            OpFlags::empty(),
        )
        .unwrap();
    client
        .qp
        .initiator()
        .read(
            2,
            &[sge(&buf, &*mr, 0, 64)],
            0x1000,
            RemoteToken(0xBAD0_0000),
            OpFlags::READ_FENCE,
        )
        .unwrap();
    let c = client.completions(3);
    let st: Vec<_> = c.iter().map(|c| (c.request_context, c.status)).collect();
    assert_eq!(st[0], (1, Status::SUCCESS));
    assert!(st.contains(&(2, Status::CANCELLED)), "{st:?}");
    assert!(st.contains(&(7, Status::CANCELLED)), "{st:?}");
    // The error completion carries the Terminate we received (DDP tagged invalid STag).
    let read = c.iter().find(|c| c.request_context == 2).unwrap();
    assert_eq!(read.provider_error_code, 0x0201_0100);
    let _ = CqNotifyType::Any;
}
