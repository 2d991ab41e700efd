//! Hostile and broken peers, through the NDK object model.
//!
//! The project's rule: a hostile or broken peer gets an iWARP Terminate with the right RFC error
//! code, the QP goes to error, outstanding work completes `STATUS_CANCELLED`, nothing panics, no
//! memory outside a region is touched, and other QPs carry on.
//!
//! Each test opens a [`SoftProvider`](netdirect_soft::SoftProvider) adapter, listens on
//! loopback, and first connects a **healthy** client to it (its own adapter, its own PD on the
//! server adapter). Then a **raw peer** — a blocking `std::net::TcpStream` with timeouts written
//! here — connects to the same listener with a valid MPA Request (revision 2, enhanced, IRD/ORD
//! 4/4, peer-to-peer offering a zero-length RDMA Write or Read as ready-to-receive, as
//! `ndk_mpa_config` does), reads our Reply, sends the zero-length Write the Reply chose so that
//! the NDK accept completes, and reads the RDMA Read Request our side posted (it stays
//! outstanding: the raw peer never answers it). Then it writes crafted FPDUs and reads back,
//! until the socket closes, the Terminate our side sent. The test then checks the completions
//! (the read `STATUS_CANCELLED` with the Terminate in `provider_error_code`, `0x01LLTTCC`), that
//! the QP is in error, that the registered buffer — including canary bytes around the
//! registered middle part — is untouched, and that the healthy connection still sends, writes
//! and reads.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use netdirect::{Adapter, Buffer, Connector, Mr};
use netdirect_test_support::mpa::{self as raw, fpdu, ulpdu};
use netdirect_types::{Completion, MrFlags, OpFlags, OperationType, RemoteToken, Status};
use netdirect_wire::ddp;
use netdirect_wire::mpa::{
    self, Deframer, DeframerConfig, Enhanced, Rtr, StartupKind, StartupRepr,
};
use netdirect_wire::rdmap::{self, AtomicOp, AtomicRequest, Message, ReadRequest};
use netdirect_wire::terminate::TermError;

use support::{Connected, Endpoint, Listening, WAIT, connect, disconnect_event, open, sge};

/// Octets of the registered middle part of the hostile QP's buffer.
const REGION: usize = 64 * 1024;
/// Canary octets on each side of the registered part.
const CANARY: usize = 4096;
/// Capacity of each receive posted on the hostile QP.
const RECV_LEN: usize = 256;
/// Request context of the RDMA Read our side posts and the raw peer never answers.
const READ_CTX: u64 = 0x0EAD;
/// The raw peer's (made-up) source of that read.
const PEER_STAG: u32 = 0x7777_0100;

fn v4() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn v6() -> IpAddr {
    "::1".parse().unwrap()
}

/// `provider_error_code` of a completion failed by a Terminate we sent (`stream.rs`).
fn sent_code(e: TermError) -> u32 {
    let (layer, etype, code) = e.parts();
    0x0100_0000 | u32::from(layer as u8) << 16 | u32::from(etype) << 8 | u32::from(code)
}

/// The message of the known engine bug: the progress thread drops the last reference to its
/// own adapter (held by the listener's connect-event closure) and joins itself.
const SELF_JOIN: &str = "failed to join thread";

/// Panics seen on progress threads (`nd-soft …`), recorded by a process-wide panic hook.
static ENGINE_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Installs the panic hook once: it records panics of progress threads, then prints as usual.
fn watch_engine_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if thread.name().is_some_and(|n| n.starts_with("nd-soft")) {
                let message = info
                    .payload()
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                ENGINE_PANICS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!(
                        "{}: {message} at {:?}",
                        thread.name().unwrap_or(""),
                        info.location()
                    ));
            }
            default(info);
        }));
    });
}

/// No progress thread panicked (apart from the known self-join at teardown, which has its own
/// ignored test: [`dropping_an_adapter_right_after_its_listener_does_not_panic`]).
fn assert_no_engine_panic() {
    let panics = ENGINE_PANICS.lock().unwrap_or_else(|e| e.into_inner());
    let other: Vec<_> = panics.iter().filter(|p| !p.contains(SELF_JOIN)).collect();
    assert!(other.is_empty(), "progress threads panicked: {other:?}");
}

// ---------------------------------------------------------------------------------------------
// Frames

fn send(msn: u32) -> Message<'static> {
    Message::Send {
        msn,
        mo: 0,
        solicited: false,
        invalidate: None,
    }
}

fn read_request(msn: u32, stag: u32, to: u64, size: u32) -> Message<'static> {
    Message::ReadRequest {
        msn,
        request: ReadRequest {
            sink_stag: 0x1234_5600,
            sink_to: 0,
            size,
            source_stag: stag,
            source_to: to,
        },
    }
}

/// Sets the DDP version (the low two bits of the DDP control octet).
fn with_ddp_version(mut ulpdu: Vec<u8>, version: u8) -> Vec<u8> {
    ulpdu[0] = (ulpdu[0] & !0x03) | (version & 0x03);
    ulpdu
}

/// Sets the RDMAP version (the top two bits of the RDMAP control octet).
fn with_rdmap_version(mut ulpdu: Vec<u8>, version: u8) -> Vec<u8> {
    ulpdu[1] = (ulpdu[1] & 0x3F) | ((version & 0x03) << 6);
    ulpdu
}

/// Sets the RDMAP opcode (the low four bits of the RDMAP control octet).
fn with_opcode(mut ulpdu: Vec<u8>, opcode: u8) -> Vec<u8> {
    ulpdu[1] = (ulpdu[1] & 0xF0) | (opcode & 0x0F);
    ulpdu
}

/// Sets the queue number of an untagged header.
fn with_qn(mut ulpdu: Vec<u8>, qn: u32) -> Vec<u8> {
    ulpdu[6..10].copy_from_slice(&qn.to_be_bytes());
    ulpdu
}

// ---------------------------------------------------------------------------------------------
// The raw peer

/// Reads until the peer closes (FIN or reset) or `WAIT` passes; a timeout fails the test.
fn read_until_close(s: &mut TcpStream) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    let mut all = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return all,
            Err(e) => panic!(
                "the NDK side did not close the connection in time ({e}); {} octets read",
                all.len()
            ),
        }
        assert!(Instant::now() < deadline, "the NDK side keeps sending");
    }
}

/// Reads one FPDU (blocking, with the socket's timeout) and returns its ULPDU.
fn read_one_fpdu(s: &mut TcpStream, crc: bool) -> Vec<u8> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("an FPDU header");
    let total = mpa::fpdu_len(usize::from(u16::from_be_bytes(len)));
    let mut frame = len.to_vec();
    frame.resize(total, 0);
    s.read_exact(&mut frame[2..]).expect("the rest of the FPDU");
    let mut d = Deframer::new(DeframerConfig {
        crc,
        ..Default::default()
    });
    d.push(&frame);
    d.next_ulpdu()
        .expect("one whole FPDU")
        .expect("a valid FPDU")
        .to_vec()
}

/// The raw peer's MPA Request: revision 2, enhanced, IRD/ORD 4/4, peer-to-peer offering a
/// zero-length Write or Read as RTR (what `ndk_mpa_config` offers).
fn raw_connect(to: SocketAddr, crc: bool) -> TcpStream {
    let req = StartupRepr {
        kind: StartupKind::Request,
        markers: false,
        crc,
        reject: false,
        revision: 2,
        enhanced: Some(Enhanced {
            ird: 4,
            ord: 4,
            peer_to_peer: true,
            rtr: Rtr {
                send: false,
                write: true,
                read: true,
            },
        }),
        private_data: b"hostile",
    };
    raw::connect(to, &req, WAIT)
}

/// Reads the MPA Reply; returns its CRC flag and enhanced prefix.
fn raw_reply(s: &mut TcpStream) -> (bool, Enhanced) {
    let all = raw::read_startup(s);
    let reply = StartupRepr::parse(&all).expect("a valid Reply");
    assert_eq!(reply.kind, StartupKind::Reply);
    assert!(!reply.reject, "the NDK side accepted");
    assert_eq!(reply.revision, 2);
    (reply.crc, reply.enhanced.expect("an enhanced Reply"))
}

/// What the raw peer read after its hostile frames: the ULPDUs, and the Terminate among them.
struct Received {
    /// Every ULPDU after the ones read during setup, in order.
    ulpdus: Vec<Vec<u8>>,
    /// Index of the Terminate in `ulpdus`.
    terminate: Option<usize>,
}

impl Received {
    fn parse(bytes: &[u8], crc: bool) -> Received {
        let mut d = Deframer::new(DeframerConfig {
            crc,
            ..Default::default()
        });
        d.push(bytes);
        let mut ulpdus = Vec::new();
        let mut terminate = None;
        while let Some(u) = d.next_ulpdu() {
            let u = u.expect("our side sends valid FPDUs").to_vec();
            if terminate.is_none()
                && matches!(
                    rdmap::Repr::parse(&u).map(|r| r.message),
                    Ok(Message::Terminate { .. })
                )
            {
                terminate = Some(ulpdus.len());
            }
            ulpdus.push(u);
        }
        assert_eq!(d.buffered(), 0, "the stream ends on an FPDU boundary");
        Received { ulpdus, terminate }
    }

    fn terminate(&self) -> rdmap::Repr<'_> {
        let i = self.terminate.unwrap_or_else(|| {
            panic!(
                "no Terminate among the {} FPDUs the NDK side sent",
                self.ulpdus.len()
            )
        });
        assert_eq!(i + 1, self.ulpdus.len(), "nothing after the Terminate");
        rdmap::Repr::parse(&self.ulpdus[i]).unwrap()
    }

    /// Asserts the Terminate's layer/type/code; returns the copied DDP header, if any.
    fn expect(&self, expected: TermError) -> Option<Vec<u8>> {
        let repr = self.terminate();
        let Message::Terminate { msn, terminate } = repr.message else {
            unreachable!()
        };
        let (layer, etype, code) = expected.parts();
        assert_eq!(
            (terminate.layer, terminate.error_type, terminate.error_code),
            (layer as u8, etype, code),
            "expected {expected:?}, got {:?}",
            terminate.error()
        );
        assert_eq!(msn, 1, "a stream terminates once: MSN 1 on QN 2");
        terminate.failing_ddp.map(|f| f.header.to_vec())
    }

    /// How many Read Responses came before the Terminate.
    fn read_responses(&self) -> usize {
        self.ulpdus
            .iter()
            .filter(|u| {
                matches!(
                    rdmap::Repr::parse(u).map(|r| r.message),
                    Ok(Message::ReadResponse { .. })
                )
            })
            .count()
    }
}

// ---------------------------------------------------------------------------------------------
// The healthy connection

/// A healthy connection on the server adapter (own PD and CQ), driven by its own client
/// adapter: it must keep working whatever the hostile peer does.
struct Healthy {
    cli: Endpoint,
    srv: Endpoint,
    cli_buf: Buffer,
    cli_mr: Box<dyn Mr>,
    srv_buf: Buffer,
    srv_mr: Box<dyn Mr>,
    _conn: Connected,
    round: u64,
    _client: Box<dyn Adapter>,
}

const HEALTHY_LEN: usize = 64 * 1024;

impl Healthy {
    fn new(server: &dyn Adapter, listening: &Listening, ip: IpAddr) -> Healthy {
        let client = open(ip);
        let mut cli = Endpoint::new(&*client, 0xC11, 32);
        let srv = Endpoint::new(server, 0x5E1, 32);
        let cli_buf = Buffer::new(3 * HEALTHY_LEN);
        let cli_mr = cli.register(
            &cli_buf,
            0,
            cli_buf.len(),
            MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK,
        );
        let srv_buf = Buffer::new(2 * HEALTHY_LEN);
        let srv_mr = srv.register(
            &srv_buf,
            0,
            srv_buf.len(),
            MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_WRITE | MrFlags::ALLOW_REMOTE_READ,
        );
        let conn = connect(&*client, &*cli.qp, listening, &*srv.qp, WAIT);
        assert!(cli.drain(Duration::ZERO).is_empty());
        Healthy {
            cli,
            srv,
            cli_buf,
            cli_mr,
            srv_buf,
            srv_mr,
            _conn: conn,
            round: 0,
            _client: client,
        }
    }

    /// One round of Send, RDMA Write and RDMA Read, checked byte for byte.
    fn check(&mut self) {
        self.round += 1;
        let r = self.round;
        let mut data = vec![0u8; HEALTHY_LEN];
        support::fill_pattern(&mut data, 0x4EA1 + r);
        self.cli_buf.write_at(0, &data).unwrap();
        self.srv
            .qp
            .receiver()
            .receive(100 + r, &[sge(&self.srv_buf, &*self.srv_mr, 0, 4096)])
            .unwrap();
        let init = self.cli.qp.initiator();
        init.send(
            1,
            &[sge(&self.cli_buf, &*self.cli_mr, 0, 100)],
            OpFlags::empty(),
        )
        .unwrap();
        let remote = self.srv_mr.remote_token();
        let at = self.srv_buf.address() + HEALTHY_LEN as u64;
        init.write(
            2,
            &[sge(&self.cli_buf, &*self.cli_mr, 0, HEALTHY_LEN)],
            at,
            remote,
            OpFlags::empty(),
        )
        .unwrap();
        init.read(
            3,
            &[sge(&self.cli_buf, &*self.cli_mr, HEALTHY_LEN, HEALTHY_LEN)],
            at,
            remote,
            OpFlags::READ_FENCE,
        )
        .unwrap();
        let c = self.cli.completions(3);
        let got: Vec<_> = c.iter().map(|c| (c.request_context, c.status)).collect();
        assert_eq!(
            got,
            vec![
                (1, Status::SUCCESS),
                (2, Status::SUCCESS),
                (3, Status::SUCCESS)
            ],
            "the healthy connection still works"
        );
        let s = self.srv.completions(1);
        assert_eq!(
            (s[0].request_context, s[0].status, s[0].bytes_transferred),
            (100 + r, Status::SUCCESS, 100)
        );
        let mut got = vec![0u8; HEALTHY_LEN];
        self.srv_buf.read_at(0, &mut got[..100]).unwrap();
        assert_eq!(got[..100], data[..100]);
        self.srv_buf.read_at(HEALTHY_LEN, &mut got).unwrap();
        assert!(got == data, "the healthy write landed");
        self.cli_buf.read_at(HEALTHY_LEN, &mut got).unwrap();
        assert!(got == data, "the healthy read came back");
    }
}

// ---------------------------------------------------------------------------------------------
// The harness

/// How the hostile QP is set up.
#[derive(Clone, Copy)]
struct Opts {
    ip: IpAddr,
    /// C in the raw peer's Request.
    crc: bool,
    /// Rights of the registered region.
    region_flags: MrFlags,
    /// Octets of the registered region.
    region_len: usize,
    /// Receives posted before the accept, `RECV_LEN` octets each.
    receives: usize,
    /// Our inbound read limit (IRD) in the accept.
    ird: u32,
}

impl Opts {
    fn new(ip: IpAddr) -> Opts {
        Opts {
            ip,
            crc: false,
            region_flags: MrFlags::ALLOW_LOCAL_WRITE
                | MrFlags::ALLOW_REMOTE_WRITE
                | MrFlags::ALLOW_REMOTE_READ,
            region_len: REGION,
            receives: 2,
            ird: 4,
        }
    }
}

/// A server adapter with a healthy connection and a hostile one, set up to the point where
/// the raw peer may send its crafted frames.
struct Harness {
    raw: TcpStream,
    crc: bool,
    conn: Box<dyn Connector>,
    disconnected: Receiver<()>,
    ep: Endpoint,
    /// Canary + region + canary; only the middle is registered.
    buf: Buffer,
    _mr: Box<dyn Mr>,
    /// Tagged offset (= virtual address) of the region's first octet.
    base: u64,
    /// The region's STag.
    stag: u32,
    region_len: usize,
    snapshot: Vec<u8>,
    recv_buf: Buffer,
    _recv_mr: Box<dyn Mr>,
    receives: usize,
    _sink: Buffer,
    _sink_mr: Box<dyn Mr>,
    /// Our effective IRD as the Reply stated it.
    reply: Enhanced,
    healthy: Healthy,
    listening: Listening,
    server: Box<dyn Adapter>,
}

impl Harness {
    fn new(opts: Opts) -> Harness {
        watch_engine_panics();
        let server = open(opts.ip);
        let listening = Listening::new(&*server, opts.ip);
        let mut healthy = Healthy::new(&*server, &listening, opts.ip);
        healthy.check();

        let mut ep = Endpoint::new(&*server, 0x4057, 64);
        let buf = Buffer::new(opts.region_len + 2 * CANARY);
        let mut fill = vec![0u8; buf.len()];
        support::fill_pattern(&mut fill, 0xCA7A);
        buf.write_at(0, &fill).unwrap();
        let mr = ep.register(&buf, CANARY, opts.region_len, opts.region_flags);
        let base = buf.address() + CANARY as u64;
        let stag = mr.remote_token().0;
        let recv_buf = Buffer::new(opts.receives.max(1) * RECV_LEN);
        let recv_mr = ep.register(&recv_buf, 0, recv_buf.len(), MrFlags::ALLOW_LOCAL_WRITE);
        for k in 0..opts.receives {
            ep.qp
                .receiver()
                .receive(
                    k as u64,
                    &[sge(&recv_buf, &*recv_mr, k * RECV_LEN, RECV_LEN)],
                )
                .unwrap();
        }
        let sink = Buffer::new(4096);
        let sink_mr = ep.register(
            &sink,
            0,
            sink.len(),
            MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK,
        );

        let mut raw = raw_connect(listening.address, opts.crc);
        let conn = listening.next(WAIT);
        let data = conn.connection_data().unwrap();
        assert_eq!(data.private_data, b"hostile");
        let (event, disconnected) = disconnect_event();
        let accepted = conn.accept(&*ep.qp, opts.ird, 4, b"", Some(event));
        let (crc, reply) = raw_reply(&mut raw);
        assert_eq!(crc, opts.crc, "CRC is on when the Request asks for it");
        assert!(reply.peer_to_peer);
        assert_eq!(
            reply.rtr,
            Rtr {
                send: false,
                write: true,
                read: false
            },
            "the responder picks the zero-length Write"
        );
        assert_eq!(u32::from(reply.ird), opts.ird.min(4));
        // The RTR the Reply chose; only then does the accept complete.
        raw.write_all(&fpdu(
            &ulpdu(Message::Write { stag: 1, to: 0 }, &[], true),
            crc,
        ))
        .unwrap();
        accepted
            .wait_timeout(WAIT)
            .expect("the accept completes once the RTR arrived, and accept succeeds");

        // Work that stays outstanding: a read the raw peer never answers.
        ep.qp
            .initiator()
            .read(
                READ_CTX,
                &[sge(&sink, &*sink_mr, 0, 64)],
                0x1000,
                RemoteToken(PEER_STAG),
                OpFlags::empty(),
            )
            .unwrap();
        let rr = read_one_fpdu(&mut raw, crc);
        match rdmap::Repr::parse(&rr).unwrap().message {
            Message::ReadRequest { msn, request } => {
                assert_eq!(msn, 1);
                assert_eq!(
                    (request.size, request.source_stag, request.source_to),
                    (64, PEER_STAG, 0x1000)
                );
            }
            m => panic!("expected our Read Request, got {m:?}"),
        }
        assert!(ep.drain(Duration::from_millis(20)).is_empty());

        Harness {
            raw,
            crc,
            conn,
            disconnected,
            ep,
            snapshot: fill,
            buf,
            _mr: mr,
            base,
            stag,
            region_len: opts.region_len,
            recv_buf,
            _recv_mr: recv_mr,
            receives: opts.receives,
            _sink: sink,
            _sink_mr: sink_mr,
            reply,
            healthy,
            listening,
            server,
        }
    }

    /// Sends one ULPDU as an FPDU.
    fn send_ulpdu(&mut self, ulpdu: &[u8]) {
        let f = fpdu(ulpdu, self.crc);
        self.raw.write_all(&f).unwrap();
    }

    /// Sends one RDMAP message.
    fn send_message(&mut self, message: Message<'_>, payload: &[u8]) {
        self.send_ulpdu(&ulpdu(message, payload, true));
    }

    /// Reads everything until the NDK side closes.
    fn receive_all(&mut self) -> Received {
        let bytes = read_until_close(&mut self.raw);
        Received::parse(&bytes, self.crc)
    }

    /// Reads until close, asserts the Terminate; returns what was received and the copied DDP
    /// header.
    fn expect_terminate(&mut self, expected: TermError) -> (Received, Option<Vec<u8>>) {
        let received = self.receive_all();
        let ddp = received.expect(expected);
        (received, ddp)
    }

    /// Collects the completions a stream error produces: the outstanding read `CANCELLED`
    /// with `code` in `provider_error_code`, every posted receive completed (`CANCELLED`
    /// unless `first_receive` says otherwise). Returns the receive completions in order.
    fn expect_failed(
        &mut self,
        code: u32,
        first_receive: Option<(Status, u32)>,
    ) -> Vec<Completion> {
        let c = self.ep.completions(1 + self.receives);
        let extra = self.ep.drain(Duration::from_millis(50));
        assert!(extra.is_empty(), "unexpected completions {extra:?}");
        let read: Vec<_> = c
            .iter()
            .filter(|c| c.op_type == OperationType::Read)
            .collect();
        assert_eq!(read.len(), 1, "{c:?}");
        assert_eq!(
            (
                read[0].request_context,
                read[0].status,
                read[0].provider_error_code
            ),
            (READ_CTX, Status::CANCELLED, code),
            "the outstanding read is cancelled and carries the Terminate ({code:#010x})"
        );
        assert_eq!(read[0].qp_context, 0x4057);
        let recvs: Vec<Completion> = c
            .iter()
            .filter(|c| c.op_type == OperationType::Receive)
            .copied()
            .collect();
        assert_eq!(recvs.len(), self.receives, "{c:?}");
        for (k, r) in recvs.iter().enumerate() {
            assert_eq!(r.request_context, k as u64, "receives complete in order");
            match (k, first_receive) {
                (0, Some((status, provider))) => {
                    assert_eq!((r.status, r.provider_error_code), (status, provider));
                }
                _ => assert_eq!(r.status, Status::CANCELLED, "{r:?}"),
            }
        }
        recvs
    }

    /// After a stream error (§10.3): a new receive completes `STATUS_CANCELLED`, a new
    /// initiator request is refused inline with `STATUS_CONNECTION_INVALID`.
    fn expect_qp_in_error(&mut self) {
        let recv_mr = &self._recv_mr;
        self.ep
            .qp
            .receiver()
            .receive(900, &[sge(&self.recv_buf, &**recv_mr, 0, RECV_LEN)])
            .unwrap();
        assert_eq!(
            self.ep
                .qp
                .initiator()
                .send_inline(901, &[b"late"], OpFlags::empty())
                .err(),
            Some(Status::CONNECTION_INVALID),
            "a post on a QP in error is refused"
        );
        let c = self.ep.completions(1);
        assert_eq!(
            (c[0].request_context, c[0].status, c[0].op_type),
            (900, Status::CANCELLED, OperationType::Receive),
            "a receive posted after the error is cancelled"
        );
    }

    /// The whole buffer (canaries and region) is byte for byte what it was.
    fn expect_buffer_untouched(&self) {
        let now = self.buf.to_vec();
        if now != self.snapshot {
            let first = now
                .iter()
                .zip(&self.snapshot)
                .position(|(a, b)| a != b)
                .unwrap();
            panic!(
                "memory changed at buffer offset {first} (region is [{CANARY}, {}))",
                CANARY + self.region_len
            );
        }
    }

    /// The receive buffers are still zero (nothing placed).
    fn expect_receives_untouched(&self) {
        assert!(
            self.recv_buf.to_vec().iter().all(|&b| b == 0),
            "nothing was placed in the receive buffers"
        );
    }

    /// The rest of the standard after a Terminate we sent: the QP is in error, the disconnect
    /// completes, the healthy connection works.
    fn finish(mut self) {
        assert_no_engine_panic();
        self.expect_qp_in_error();
        self.conn
            .disconnect()
            .wait_timeout(WAIT)
            .expect("disconnect completes in time, and disconnect after a Terminate succeeds");
        self.healthy.check();
        // The listener still takes connections.
        let mut again = Healthy::new(&*self.server, &self.listening, self.listening.address.ip());
        again.check();
        self.healthy.check();
        assert_no_engine_panic();
    }

    /// Runs a case that must end in `expected` with nothing placed anywhere.
    fn run_simple(mut self, frames: &[Vec<u8>], expected: TermError) -> Received {
        for f in frames {
            self.send_ulpdu(f);
        }
        let (received, _) = self.expect_terminate(expected);
        self.expect_failed(sent_code(expected), None);
        self.expect_buffer_untouched();
        self.expect_receives_untouched();
        self.finish();
        received
    }
}

// ---------------------------------------------------------------------------------------------
// MPA

#[test]
fn bad_crc_gets_llp_crc_and_nothing_is_placed() {
    let mut h = Harness::new(Opts {
        crc: true,
        ..Opts::new(v4())
    });
    // A valid Send, and a Write into the region, both with a broken CRC: neither may land.
    let mut bad = fpdu(&ulpdu(send(1), b"poisoned payload", true), true);
    let n = bad.len();
    bad[n - 1] ^= 0x5A;
    let base = h.base;
    let stag = h.stag;
    let mut bad_write = fpdu(
        &ulpdu(Message::Write { stag, to: base }, &[0xEE; 64], true),
        true,
    );
    bad_write[20] ^= 0x01;
    h.raw.write_all(&bad).unwrap();
    h.raw.write_all(&bad_write).unwrap();
    h.expect_terminate(TermError::LlpCrc);
    h.expect_failed(sent_code(TermError::LlpCrc), None);
    h.expect_buffer_untouched();
    h.expect_receives_untouched();
    h.finish();
}

// ---------------------------------------------------------------------------------------------
// Tagged (RDMA Write)

#[test]
fn write_to_unknown_stag_gets_ddp_invalid_stag() {
    for ip in [v4(), v6()] {
        let h = Harness::new(Opts::new(ip));
        let w = ulpdu(
            Message::Write {
                stag: 0xDEAD_BE00,
                to: h.base,
            },
            &[0xEE; 64],
            true,
        );
        h.run_simple(&[w], TermError::DdpTaggedInvalidStag);
    }
}

#[test]
fn write_with_a_stale_key_gets_ddp_invalid_stag() {
    let h = Harness::new(Opts::new(v4()));
    // The region's index with another key (the low 8 bits).
    let w = ulpdu(
        Message::Write {
            stag: h.stag ^ 0x01,
            to: h.base,
        },
        &[0xEE; 64],
        true,
    );
    h.run_simple(&[w], TermError::DdpTaggedInvalidStag);
}

#[test]
fn write_outside_the_region_gets_ddp_base_bounds_and_canaries_survive() {
    // (offset from the region's base, length)
    let cases: [(i64, usize); 4] = [
        (REGION as i64 - 16, 64),   // runs past the end
        (-16, 64),                  // starts before the base
        (REGION as i64, 1),         // one octet just past the end
        (-(CANARY as i64), CANARY), // the whole canary in front
    ];
    for (offset, len) in cases {
        let h = Harness::new(Opts::new(v4()));
        let to = h.base.wrapping_add_signed(offset);
        let w = ulpdu(Message::Write { stag: h.stag, to }, &vec![0xEE; len], true);
        h.run_simple(&[w], TermError::DdpTaggedBaseBounds);
    }
}

#[test]
fn write_whose_second_segment_leaves_the_region_stops_at_the_end() {
    let mut h = Harness::new(Opts::new(v4()));
    let (stag, end) = (h.stag, h.base + REGION as u64);
    // First segment: the last 32 octets of the region (legal, placed). Second: past the end.
    h.send_ulpdu(&ulpdu(
        Message::Write { stag, to: end - 32 },
        &[0xA1; 32],
        false,
    ));
    h.send_ulpdu(&ulpdu(Message::Write { stag, to: end }, &[0xB2; 32], true));
    h.expect_terminate(TermError::DdpTaggedBaseBounds);
    h.expect_failed(sent_code(TermError::DdpTaggedBaseBounds), None);
    let mut expected = h.snapshot.clone();
    expected[CANARY + REGION - 32..CANARY + REGION].fill(0xA1);
    h.snapshot = expected;
    h.expect_buffer_untouched();
    h.finish();
}

#[test]
fn write_whose_offset_wraps_gets_ddp_to_wrap() {
    let h = Harness::new(Opts::new(v4()));
    let w = ulpdu(
        Message::Write {
            stag: h.stag,
            to: u64::MAX - 15,
        },
        &[0xEE; 64],
        true,
    );
    h.run_simple(&[w], TermError::DdpTaggedToWrap);
}

#[test]
fn write_to_a_read_only_region_gets_ddp_invalid_stag() {
    let h = Harness::new(Opts {
        region_flags: MrFlags::ALLOW_REMOTE_READ,
        ..Opts::new(v4())
    });
    let w = ulpdu(
        Message::Write {
            stag: h.stag,
            to: h.base,
        },
        &[0xEE; 64],
        true,
    );
    h.run_simple(&[w], TermError::DdpTaggedInvalidStag);
}

#[test]
fn write_to_another_pds_region_gets_ddp_stag_not_associated() {
    let mut h = Harness::new(Opts::new(v4()));
    // The healthy QP's region lives on the same adapter, in another PD.
    let stag = h.healthy.srv_mr.remote_token().0;
    let to = h.healthy.srv_buf.address();
    let before = h.healthy.srv_buf.to_vec();
    h.send_message(Message::Write { stag, to }, &[0xEE; 64]);
    h.expect_terminate(TermError::DdpTaggedStagNotAssociated);
    assert!(
        h.healthy.srv_buf.to_vec() == before,
        "the other PD's region got nothing"
    );
    h.expect_failed(sent_code(TermError::DdpTaggedStagNotAssociated), None);
    h.expect_buffer_untouched();
    h.finish();
}

// ---------------------------------------------------------------------------------------------
// Untagged (Send)

#[test]
fn send_with_no_receive_posted_gets_ddp_no_buffer() {
    let h = Harness::new(Opts {
        receives: 0,
        ..Opts::new(v4())
    });
    h.run_simple(
        &[ulpdu(send(1), b"nobody listens", true)],
        TermError::DdpUntaggedNoBuffer,
    );
}

#[test]
fn send_longer_than_the_receive_gets_too_long_and_buffer_overflow() {
    let mut h = Harness::new(Opts::new(v4()));
    let payload = vec![0xEE; RECV_LEN + 1];
    h.send_message(send(1), &payload);
    h.expect_terminate(TermError::DdpUntaggedTooLong);
    let code = sent_code(TermError::DdpUntaggedTooLong);
    h.expect_failed(code, Some((Status::BUFFER_OVERFLOW, code)));
    h.expect_buffer_untouched();
    // Nothing of the oversized message was placed, in the first receive or past it.
    h.expect_receives_untouched();
    h.finish();
}

#[test]
fn send_too_long_in_its_second_segment_overflows_without_touching_neighbours() {
    let mut h = Harness::new(Opts::new(v4()));
    // First segment fits (200 of 256 octets), the second would need 100 more.
    h.send_ulpdu(&ulpdu(send(1), &[0xA1; 200], false));
    h.send_ulpdu(&ulpdu(
        Message::Send {
            msn: 1,
            mo: 200,
            solicited: false,
            invalidate: None,
        },
        &[0xB2; 100],
        true,
    ));
    h.expect_terminate(TermError::DdpUntaggedTooLong);
    let code = sent_code(TermError::DdpUntaggedTooLong);
    h.expect_failed(code, Some((Status::BUFFER_OVERFLOW, code)));
    h.expect_buffer_untouched();
    let r = h.recv_buf.to_vec();
    assert!(
        r[..200].iter().all(|&b| b == 0xA1),
        "the first segment landed"
    );
    assert!(
        r[200..].iter().all(|&b| b == 0),
        "nothing past it: not the rest of the receive, not the next receive"
    );
    h.finish();
}

#[test]
fn send_with_msn_out_of_range_gets_ddp_msn_range() {
    let h = Harness::new(Opts::new(v4()));
    h.run_simple(
        &[ulpdu(send(5), b"from the future", true)],
        TermError::DdpUntaggedMsnRange,
    );
}

#[test]
fn send_on_an_invalid_queue_number_gets_ddp_invalid_qn() {
    let h = Harness::new(Opts::new(v4()));
    let f = with_qn(ulpdu(send(1), b"wrong queue", true), 7);
    h.run_simple(&[f], TermError::DdpUntaggedInvalidQn);
}

// ---------------------------------------------------------------------------------------------
// RDMA Read Requests

#[test]
fn more_read_requests_than_ird_get_ddp_no_buffer_on_qn_1() {
    // Big reads, so the first responses are still being sent when the third request arrives.
    const LEN: usize = 4 << 20;
    let mut h = Harness::new(Opts {
        ird: 2,
        region_len: LEN,
        ..Opts::new(v4())
    });
    assert_eq!(h.reply.ird, 2, "the Reply states our IRD");
    let (stag, base) = (h.stag, h.base);
    let mut all = Vec::new();
    for msn in 1..=3 {
        all.extend(fpdu(
            &ulpdu(read_request(msn, stag, base, LEN as u32), &[], true),
            false,
        ));
    }
    h.raw.write_all(&all).unwrap();
    let (received, ddp) = h.expect_terminate(TermError::DdpUntaggedNoBuffer);
    let ddp = ddp.expect("the Terminate copies the failing DDP header");
    let p = ddp::Packet::new_checked(&ddp[..]).unwrap();
    assert!(!p.tagged());
    assert_eq!(
        (p.queue_number(), p.msn()),
        (1, 3),
        "the third Read Request (QN 1, MSN 3) overflowed the IRD"
    );
    eprintln!(
        "IRD overflow: {} Read Response FPDUs before the Terminate",
        received.read_responses()
    );
    h.expect_failed(sent_code(TermError::DdpUntaggedNoBuffer), None);
    h.expect_buffer_untouched();
    h.finish();
}

#[test]
fn read_request_for_an_unknown_stag_gets_rdmap_invalid_stag() {
    let h = Harness::new(Opts::new(v4()));
    let r = ulpdu(read_request(1, 0xDEAD_BE00, h.base, 64), &[], true);
    let received = h.run_simple(&[r], TermError::RdmapInvalidStag);
    assert_eq!(received.read_responses(), 0, "no data leaves");
}

#[test]
fn read_request_outside_the_region_gets_rdmap_base_bounds() {
    for (offset, len) in [(REGION as i64 - 8, 64u32), (-8, 16), (-(CANARY as i64), 64)] {
        let h = Harness::new(Opts::new(v4()));
        let to = h.base.wrapping_add_signed(offset);
        let r = ulpdu(read_request(1, h.stag, to, len), &[], true);
        let received = h.run_simple(&[r], TermError::RdmapBaseBounds);
        assert_eq!(received.read_responses(), 0, "no canary octet leaves");
    }
}

#[test]
fn read_request_without_remote_read_gets_rdmap_access_rights() {
    let h = Harness::new(Opts {
        region_flags: MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_WRITE,
        ..Opts::new(v4())
    });
    let r = ulpdu(read_request(1, h.stag, h.base, 64), &[], true);
    let received = h.run_simple(&[r], TermError::RdmapAccessRights);
    assert_eq!(received.read_responses(), 0);
}

#[test]
fn read_request_for_another_pds_region_gets_rdmap_stag_not_associated() {
    let h = Harness::new(Opts::new(v4()));
    let stag = h.healthy.srv_mr.remote_token().0;
    let to = h.healthy.srv_buf.address();
    let r = ulpdu(read_request(1, stag, to, 64), &[], true);
    let received = h.run_simple(&[r], TermError::RdmapStagNotAssociated);
    assert_eq!(received.read_responses(), 0);
}

#[test]
fn read_request_with_wrapping_offset_gets_rdmap_to_wrap() {
    let h = Harness::new(Opts::new(v4()));
    let r = ulpdu(read_request(1, h.stag, u64::MAX - 7, 64), &[], true);
    let received = h.run_simple(&[r], TermError::RdmapToWrap);
    assert_eq!(received.read_responses(), 0);
}

#[test]
fn a_good_read_request_still_works_through_the_raw_peer() {
    // The control case for the Read Request tests: same setup, a legal request, the data comes
    // back; then a bad one terminates.
    let mut h = Harness::new(Opts::new(v4()));
    let (stag, base) = (h.stag, h.base);
    h.send_message(read_request(1, stag, base + 100, 1000), &[]);
    let u = read_one_fpdu(&mut h.raw, false);
    let repr = rdmap::Repr::parse(&u).unwrap();
    assert_eq!(
        repr.message,
        Message::ReadResponse {
            stag: 0x1234_5600,
            to: 0
        }
    );
    assert!(repr.last);
    assert_eq!(
        repr.payload,
        &h.snapshot[CANARY + 100..CANARY + 1100],
        "the region's octets, not the canary's"
    );
    h.send_message(read_request(2, stag, base + REGION as u64, 1), &[]);
    h.expect_terminate(TermError::RdmapBaseBounds);
    h.expect_failed(sent_code(TermError::RdmapBaseBounds), None);
    h.expect_buffer_untouched();
    h.finish();
}

/// A 1 MiB Read Response leaves in FPDUs of one GSO packet (64 KiB, not one 32 KiB `lo`
/// segment) and of equal size: no runt after a run of full ones.
#[test]
fn a_large_read_response_goes_out_in_equal_gso_sized_fpdus() {
    for ip in [v4(), v6()] {
        let len = 1 << 20;
        let mut opts = Opts::new(ip);
        opts.region_len = len;
        let mut h = Harness::new(opts);
        let (stag, base) = (h.stag, h.base);
        h.send_message(read_request(1, stag, base, len as u32), &[]);
        let mut sizes = Vec::new();
        let mut got = Vec::new();
        loop {
            let u = read_one_fpdu(&mut h.raw, false);
            let repr = rdmap::Repr::parse(&u).unwrap();
            sizes.push(repr.payload.len());
            got.extend_from_slice(repr.payload);
            if repr.last {
                break;
            }
        }
        assert_eq!(got, h.snapshot[CANARY..CANARY + len], "{ip}");
        // 65535-octet ULPDUs carry 65521 payload octets at most: 17 FPDUs per MiB.
        assert_eq!(sizes.len(), 17, "{ip}: {sizes:?}");
        let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(hi - lo <= 1, "{ip}: runt in {sizes:?}");
        h.send_message(read_request(2, stag, base + len as u64, 1), &[]);
        h.expect_terminate(TermError::RdmapBaseBounds);
        h.expect_failed(sent_code(TermError::RdmapBaseBounds), None);
        h.finish();
    }
}

// ---------------------------------------------------------------------------------------------
// Opcodes and versions

#[test]
fn unknown_opcodes_get_rdmap_unexpected_opcode() {
    // Opcode 0xC..0xF untagged (never defined), and a Send opcode on a tagged segment.
    let frames = [
        with_opcode(ulpdu(send(1), b"what is this", true), 0xC),
        with_opcode(ulpdu(send(1), b"what is this", true), 0xF),
        with_opcode(ulpdu(Message::Write { stag: 1, to: 0 }, &[1; 8], true), 0x3),
    ];
    for f in frames {
        let h = Harness::new(Opts::new(v4()));
        h.run_simple(&[f], TermError::RdmapUnexpectedOpcode);
    }
}

#[test]
fn rfc7306_opcodes_get_rdmap_unexpected_opcode() {
    for atomic in [false, true] {
        let mut h = Harness::new(Opts::new(v4()));
        let f = if atomic {
            // A fetch-and-add on the region: it must not be carried out.
            let request = AtomicRequest {
                op: AtomicOp::FetchAdd,
                request_id: 1,
                remote_stag: h.stag,
                remote_to: h.base,
                add_or_swap: 1,
                add_or_swap_mask: 0,
                compare: 0,
                compare_mask: 0,
            };
            ulpdu(Message::AtomicRequest { msn: 1, request }, &[], true)
        } else {
            let data = [7; 8];
            let m = Message::ImmediateData {
                msn: 1,
                solicited: false,
                data,
            };
            ulpdu(m, &[], true)
        };
        h.send_ulpdu(&f);
        h.expect_terminate(TermError::RdmapUnexpectedOpcode);
        h.expect_failed(sent_code(TermError::RdmapUnexpectedOpcode), None);
        h.expect_buffer_untouched();
        h.expect_receives_untouched();
        h.finish();
    }
}

#[test]
fn wrong_ddp_version_gets_ddp_invalid_version() {
    let h = Harness::new(Opts::new(v4()));
    let f = with_ddp_version(ulpdu(send(1), b"version 2", true), 2);
    h.run_simple(&[f], TermError::DdpUntaggedInvalidVersion);
    let h = Harness::new(Opts::new(v4()));
    let (stag, base) = (h.stag, h.base);
    let f = with_ddp_version(
        ulpdu(Message::Write { stag, to: base }, &[0xEE; 16], true),
        0,
    );
    h.run_simple(&[f], TermError::DdpTaggedInvalidVersion);
}

#[test]
fn wrong_rdmap_version_gets_rdmap_invalid_version() {
    for version in [0, 2, 3] {
        let h = Harness::new(Opts::new(v4()));
        let f = with_rdmap_version(ulpdu(send(1), b"version?", true), version);
        h.run_simple(&[f], TermError::RdmapInvalidVersion);
    }
    let h = Harness::new(Opts::new(v4()));
    let (stag, base) = (h.stag, h.base);
    let f = with_rdmap_version(
        ulpdu(Message::Write { stag, to: base }, &[0xEE; 16], true),
        2,
    );
    h.run_simple(&[f], TermError::RdmapInvalidVersion);
}

// ---------------------------------------------------------------------------------------------
// Broken connections

/// The raw peer sent half a frame and its FIN: the disconnect event runs, nothing is flushed
/// until NdkDisconnect (NDK §7.7), which cancels everything outstanding, and the peer gets no
/// Terminate, only our FIN.
fn peer_gone_then_disconnect(h: &mut Harness) {
    h.disconnected
        .recv_timeout(WAIT)
        .expect("the disconnect event runs when the peer goes away");
    let early = h.ep.drain(Duration::from_millis(100));
    assert!(
        early.is_empty(),
        "nothing flushed before NdkDisconnect: {early:?}"
    );
    h.conn
        .disconnect()
        .wait_timeout(WAIT)
        .expect("disconnect completes in time, and disconnect succeeds");
    let c = h.ep.completions(1 + h.receives);
    assert!(
        c.iter().all(|c| c.status == Status::CANCELLED),
        "everything outstanding is cancelled: {c:?}"
    );
    assert!(
        c.iter()
            .any(|c| (c.op_type, c.request_context) == (OperationType::Read, READ_CTX))
    );
    let received = h.receive_all();
    assert!(
        received.terminate.is_none() && received.ulpdus.is_empty(),
        "nothing but FIN after a truncated frame, got {} FPDUs",
        received.ulpdus.len()
    );
}

#[test]
fn truncated_frame_then_close_is_a_disconnect_without_terminate() {
    let mut h = Harness::new(Opts {
        crc: true,
        ..Opts::new(v4())
    });
    let (stag, base) = (h.stag, h.base);
    // A Write into the region with a valid length field, cut in the middle of its payload.
    let f = fpdu(
        &ulpdu(Message::Write { stag, to: base }, &[0xEE; 1000], true),
        true,
    );
    h.raw.write_all(&f[..f.len() / 2]).unwrap();
    h.raw.shutdown(Shutdown::Write).unwrap();
    peer_gone_then_disconnect(&mut h);
    h.expect_buffer_untouched();
    h.expect_receives_untouched();
    h.healthy.check();
    let mut again = Healthy::new(&*h.server, &h.listening, v4());
    again.check();
}

/// Payload octets of the large Writes below: the FPDU is far above the header-first threshold
/// (`netdirect_proto::stream::DIRECT_MIN`), so its payload is read from the socket straight
/// into the region once the header is in.
const LARGE: usize = 48 * 1024;
/// Where in the region the large Writes go.
const LARGE_AT: usize = 1000;

/// A large Write's FPDU into the hostile region at `LARGE_AT`, and its payload.
fn large_write(h: &Harness) -> (Vec<u8>, Vec<u8>) {
    let mut payload = vec![0u8; LARGE];
    support::fill_pattern(&mut payload, 0x1A26E);
    let to = h.base + LARGE_AT as u64;
    let f = fpdu(
        &ulpdu(Message::Write { stag: h.stag, to }, &payload, true),
        h.crc,
    );
    (f, payload)
}

/// Writes the first `head` octets of `f`, lets our side read them alone, then the rest.
fn write_header_first(h: &mut Harness, f: &[u8], head: usize) {
    h.raw.write_all(&f[..head]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    h.raw.write_all(&f[head..]).unwrap();
}

/// The hostile buffer outside `[LARGE_AT, LARGE_AT + LARGE)` of the region is what it was;
/// returns the octets inside (undefined after a failed direct placement).
fn outside_large_untouched(h: &Harness) -> Vec<u8> {
    let now = h.buf.to_vec();
    let (lo, hi) = (CANARY + LARGE_AT, CANARY + LARGE_AT + LARGE);
    assert!(
        now[..lo] == h.snapshot[..lo],
        "memory before the target changed"
    );
    assert!(
        now[hi..] == h.snapshot[hi..],
        "memory after the target changed"
    );
    now[lo..hi].to_vec()
}

#[test]
fn bad_crc_in_a_large_directly_placed_write_gets_llp_crc_and_stays_in_its_range() {
    for ip in [v4(), v6()] {
        let mut h = Harness::new(Opts {
            crc: true,
            ..Opts::new(ip)
        });
        let (mut f, mut payload) = large_write(&h);
        // One payload octet in the middle flipped: the CRC fails only after most of the
        // payload has been read into the region.
        f[mpa::LENGTH_LEN + ddp::TAGGED_HEADER_LEN + LARGE / 2] ^= 0x01;
        payload[LARGE / 2] ^= 0x01;
        write_header_first(&mut h, &f, 64);
        h.expect_terminate(TermError::LlpCrc);
        h.expect_failed(sent_code(TermError::LlpCrc), None);
        let inside = outside_large_untouched(&h);
        // Undefined by the rules (RFC 5044 §8); here it shows the payload went straight in
        // before its CRC was checked, i.e. that this test took the direct path.
        assert!(inside == payload, "the payload was placed header-first");
        h.expect_receives_untouched();
        h.finish();
    }
}

#[test]
fn truncated_large_write_then_close_is_a_disconnect_and_stays_in_its_range() {
    for crc in [false, true] {
        let mut h = Harness::new(Opts {
            crc,
            ..Opts::new(v4())
        });
        let (f, payload) = large_write(&h);
        // Header and half the payload, then FIN: our side placed what came, directly.
        write_header_first(&mut h, &f[..f.len() / 2], 64);
        h.raw.shutdown(Shutdown::Write).unwrap();
        // As for a small truncated frame.
        peer_gone_then_disconnect(&mut h);
        let inside = outside_large_untouched(&h);
        let got = f.len() / 2 - mpa::LENGTH_LEN - ddp::TAGGED_HEADER_LEN;
        assert!(
            inside[..got] == payload[..got],
            "the first half went straight in"
        );
        assert!(inside[got..] == h.snapshot[CANARY + LARGE_AT + got..CANARY + LARGE_AT + LARGE]);
        h.expect_receives_untouched();
        assert_no_engine_panic();
        h.expect_qp_in_error();
        h.healthy.check();
    }
}

#[test]
fn peer_reset_mid_frame_is_a_disconnect_and_nothing_breaks() {
    let mut h = Harness::new(Opts::new(v4()));
    let (stag, base) = (h.stag, h.base);
    let f = fpdu(
        &ulpdu(Message::Write { stag, to: base }, &[0xEE; 1000], true),
        false,
    );
    h.raw.write_all(&f[..7]).unwrap();
    // SO_LINGER 0, then close: a reset, not a FIN.
    let dummy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpStream::connect_timeout(&dummy.local_addr().unwrap(), WAIT).unwrap();
    let raw = std::mem::replace(&mut h.raw, other);
    socket2::SockRef::from(&raw)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(raw);
    h.disconnected
        .recv_timeout(WAIT)
        .expect("the disconnect event runs when the peer resets");
    let c = h.ep.drain(Duration::from_millis(100));
    assert!(c.is_empty(), "nothing flushed before NdkDisconnect: {c:?}");
    h.conn
        .disconnect()
        .wait_timeout(WAIT)
        .expect("disconnect completes in time, and disconnect succeeds");
    let c = h.ep.completions(1 + h.receives);
    assert!(c.iter().all(|c| c.status == Status::CANCELLED), "{c:?}");
    h.expect_buffer_untouched();
    h.healthy.check();
}

#[test]
fn garbage_instead_of_an_mpa_request_closes_without_a_connect_event() {
    watch_engine_panics();
    let server = open(v4());
    let listening = Listening::new(&*server, v4());
    let mut healthy = Healthy::new(&*server, &listening, v4());
    let garbage: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: netdirect\r\n\r\n",
        // The right key, revision 7.
        b"MPA ID Req Frame\x10\x07\x00\x04\x00\x04\x00\x04",
        // A Reply key where a Request belongs.
        b"MPA ID Rep Frame\x10\x02\x00\x04\x00\x04\x00\x04",
    ];
    for g in garbage {
        let mut s = TcpStream::connect_timeout(&listening.address, WAIT).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(g).unwrap();
        let back = read_until_close(&mut s);
        // Closed; at most a Reply with R set, never an accepted Reply.
        if !back.is_empty() {
            let reply = StartupRepr::parse(&back).expect("only a (reject) Reply may come back");
            assert!(reply.reject, "garbage is never accepted");
        }
        assert!(
            listening
                .incoming
                .recv_timeout(Duration::from_millis(100))
                .is_err(),
            "no connect event for garbage"
        );
    }
    // A bare connect and close, and a half Request then close.
    drop(TcpStream::connect_timeout(&listening.address, WAIT).unwrap());
    let mut s = TcpStream::connect_timeout(&listening.address, WAIT).unwrap();
    s.write_all(b"MPA ID Req").unwrap();
    drop(s);
    assert!(
        listening
            .incoming
            .recv_timeout(Duration::from_millis(200))
            .is_err()
    );
    healthy.check();
    let mut again = Healthy::new(&*server, &listening, v4());
    again.check();
    healthy.check();
}

#[test]
fn many_hostile_peers_do_not_disturb_a_busy_healthy_connection() {
    // One adapter; the healthy connection does a round between every hostile connection.
    watch_engine_panics();
    let server = open(v4());
    let listening = Listening::new(&*server, v4());
    let mut healthy = Healthy::new(&*server, &listening, v4());
    for round in 0..6u32 {
        let mut raw = raw_connect(listening.address, false);
        let conn = listening.next(WAIT);
        let mut ep = Endpoint::new(&*server, 0x4057 + u64::from(round), 8);
        let accepted = conn.accept(&*ep.qp, 4, 4, b"", None);
        raw_reply(&mut raw);
        raw.write_all(&fpdu(
            &ulpdu(Message::Write { stag: 1, to: 0 }, &[], true),
            false,
        ))
        .unwrap();
        accepted.wait_timeout(WAIT).unwrap();
        let bad = match round % 3 {
            0 => ulpdu(send(1), b"no receive", true),
            1 => ulpdu(
                Message::Write {
                    stag: 0xDEAD_BE00,
                    to: 0,
                },
                &[1; 8],
                true,
            ),
            _ => with_opcode(ulpdu(send(1), b"?", true), 0xD),
        };
        raw.write_all(&fpdu(&bad, false)).unwrap();
        let received = Received::parse(&read_until_close(&mut raw), false);
        assert!(received.terminate.is_some());
        healthy.check();
        assert!(
            ep.drain(Duration::ZERO)
                .iter()
                .all(|c| c.status == Status::CANCELLED)
        );
        drop(conn);
    }
    assert_no_engine_panic();
}

#[test]
fn dropping_an_adapter_right_after_its_listener_does_not_panic() {
    watch_engine_panics();
    for _ in 0..20 {
        let server = open(v4());
        let listening = Listening::new(&*server, v4());
        drop(listening);
        drop(server);
    }
    std::thread::sleep(Duration::from_millis(200));
    let panics = ENGINE_PANICS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert!(
        panics.iter().all(|p| !p.contains(SELF_JOIN)),
        "progress threads joined themselves: {panics:?}"
    );
}

#[test]
fn cancelled_receives_carry_the_terminate_too() {
    let mut h = Harness::new(Opts::new(v4()));
    let stag = 0xDEAD_BE00;
    let base = h.base;
    h.send_message(Message::Write { stag, to: base }, &[0xEE; 8]);
    h.expect_terminate(TermError::DdpTaggedInvalidStag);
    let code = sent_code(TermError::DdpTaggedInvalidStag);
    let recvs = h.expect_failed(code, None);
    let codes: Vec<_> = recvs.iter().map(|r| r.provider_error_code).collect();
    assert_eq!(
        codes,
        vec![code; recvs.len()],
        "the flushed receives' provider_error_code"
    );
    h.finish();
}
