//! An outside oracle: TCP conversations built with this crate's emitters only, written to a
//! pcap and decoded by Wireshark's `tshark` (4.0 on Debian 12). Every FPDU we send must come out
//! as MPA + DDP + RDMAP with the fields we put in, CRCs must check "Good", nothing may be
//! malformed, and the only expert warnings allowed are Wireshark 4.0's two complaints about
//! RFC 6581 (revision 2) Requests. Negative controls show the oracle can say no: a corrupted CRC
//! is reported Bad and a truncated Read Request is flagged malformed.
//!
//! Wireshark 4.0 facts relied on: its MPA dissector finds a connection only from a Request and
//! Reply it saw; Send payloads are also offered to heuristic dissectors (RPC-over-RDMA, SMB
//! Direct), which we turn off; a tagged Terminate carries the failing segment's 14-octet DDP
//! header; CRCs are checked when the Reply says CRC is on. Without TCP reassembly
//! (`tcp.desegment_tcp_streams`) FPDUs that span segments are not decoded.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::Command;

use netdirect_test_support::capture::{self, PcapBuilder, TcpConversation, TempPath};
use netdirect_wire::Error;
use netdirect_wire::ddp::Placement;
use netdirect_wire::mpa::{self, Enhanced, MarkerLayout, Rtr, StartupKind, StartupRepr};
use netdirect_wire::rdmap::{
    self, AtomicOp, AtomicRequest, AtomicResponse, Message, Opcode, ReadRequest,
};
use netdirect_wire::terminate::{self, FailingDdp};

// ---------------------------------------------------------------------------------------------
// Running tshark
// ---------------------------------------------------------------------------------------------

/// Whether tshark can run here. Without it a test prints why and passes without checking,
/// unless `ND_TEST_REQUIRE_TOOLS` is set (as `.ci/run` does): then a missing tool fails.
fn tshark_missing(test: &str) -> bool {
    let found = Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return false;
    }
    assert!(
        std::env::var_os("ND_TEST_REQUIRE_TOOLS").is_none(),
        "{test}: tshark is not installed and ND_TEST_REQUIRE_TOOLS is set \
         (apt-get install -y tshark)"
    );
    eprintln!("{test} skipped: tshark is not installed (apt-get install -y tshark)");
    true
}

/// Runs tshark on `pcap` with reassembly on and RDMA heuristics off, and returns its standard output.
fn tshark(pcap: &Path, extra: &[&str]) -> String {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(pcap)
        .args(["-o", "tcp.desegment_tcp_streams:TRUE"])
        // Send payloads would otherwise be offered to RPC-over-RDMA and SMB Direct.
        .args(["--disable-heuristic", "rpcrdma_iwarp"])
        .args(["--disable-heuristic", "smb_direct_iwarp"])
        .args(extra);
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("running tshark: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tshark {extra:?} exited with {}: {stderr}",
        out.status
    );
    String::from_utf8(out.stdout).expect("tshark prints UTF-8")
}

/// Every value of each field, in frame order (several FPDUs of one frame in their order).
fn fields(pcap: &Path, names: &[&str]) -> BTreeMap<String, Vec<String>> {
    let mut args = vec!["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=;"];
    for n in names {
        args.push("-e");
        args.push(n);
    }
    let out = tshark(pcap, &args);
    let mut map: BTreeMap<String, Vec<String>> =
        names.iter().map(|n| (n.to_string(), Vec::new())).collect();
    for line in out.lines() {
        for (name, col) in names.iter().zip(line.split('\t')) {
            if !col.is_empty() {
                map.get_mut(*name)
                    .expect("asked for")
                    .extend(col.split(';').map(str::to_owned));
            }
        }
    }
    map
}

/// A tshark integer, decimal or 0x-hex.
fn int(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|e| panic!("tshark value {s:?}: {e}"))
}

fn ints(v: &[String]) -> Vec<u64> {
    v.iter().map(|s| int(s)).collect()
}

/// The expert summaries of `tshark -z expert`, by severity section ("Errors", "Warns", …):
/// (count, protocol, summary).
fn expert(pcap: &Path) -> BTreeMap<String, Vec<(usize, String, String)>> {
    let out = tshark(pcap, &["-q", "-z", "expert"]);
    let mut map: BTreeMap<String, Vec<(usize, String, String)>> = BTreeMap::new();
    let mut section = String::new();
    for line in out.lines() {
        let t = line.trim();
        if let Some((name, rest)) = t.split_once(" (")
            && rest.ends_with(')')
            && !name.contains(' ')
        {
            section = name.to_owned();
            map.entry(section.clone()).or_default();
            continue;
        }
        let cols: Vec<&str> = t.split_whitespace().collect();
        if cols.len() >= 4
            && let Ok(n) = cols[0].parse::<usize>()
        {
            map.entry(section.clone()).or_default().push((
                n,
                cols[2].to_owned(),
                cols[3..].join(" "),
            ));
        }
    }
    map
}

// ---------------------------------------------------------------------------------------------
// Building conversations
// ---------------------------------------------------------------------------------------------

/// Where a marker fell in its FPDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum MarkerAt {
    /// The FPDU's first octet (FPDUPTR 0).
    Start,
    /// Inside the length field, ULPDU or pad.
    Inside,
    /// Between the pad and the CRC.
    BeforeCrc,
}

/// One FPDU we put on the wire.
#[derive(Debug, Clone)]
struct SentFpdu {
    ulpdu: Vec<u8>,
    crc: bool,
    /// FPDUPTR of each marker in it.
    markers: Vec<(MarkerAt, u16)>,
}

/// Everything written so far, in the order tshark will show it.
#[derive(Debug, Default)]
struct Capture {
    pcap: PcapBuilder,
    fpdus: Vec<SentFpdu>,
    requests: usize,
    replies: usize,
    rev2_requests: usize,
}

/// One MPA connection being written.
struct Conv {
    tcp: TcpConversation,
    crc: bool,
    markers: bool,
    layout: [Option<MarkerLayout>; 2],
    /// Sequence number of the next octet produced, per side (0 client, 1 server).
    produced: [u32; 2],
    /// Produced but not yet sent.
    buf: [Vec<u8>; 2],
    /// FPDUs produced, with the sequence number just past their end, not yet wholly sent.
    pending: [VecDeque<(u32, SentFpdu)>; 2],
    request: Option<(bool, bool)>,
}

fn side(from_client: bool) -> usize {
    usize::from(!from_client)
}

impl Conv {
    fn open(cap: &mut Capture, client: SocketAddr, server: SocketAddr, isns: (u32, u32)) -> Self {
        let mut tcp = TcpConversation::new(client, server, isns.0, isns.1);
        tcp.handshake(&mut cap.pcap);
        Conv {
            produced: [tcp.next_seq(true), tcp.next_seq(false)],
            tcp,
            crc: false,
            markers: false,
            layout: [None, None],
            buf: [Vec::new(), Vec::new()],
            pending: [VecDeque::new(), VecDeque::new()],
            request: None,
        }
    }

    /// Emits a startup frame (Request from the client, Reply from the server) as one segment.
    fn startup(&mut self, cap: &mut Capture, repr: &StartupRepr<'_>) {
        let from_client = repr.kind == StartupKind::Request;
        let mut out = vec![0u8; repr.buffer_len()];
        let n = repr.emit(&mut out).expect("startup frame emits");
        match repr.kind {
            StartupKind::Request => {
                self.request = Some((repr.crc, repr.markers));
                cap.requests += 1;
                cap.rev2_requests += usize::from(repr.revision == 2);
            }
            StartupKind::Reply => {
                let (c, m) = self.request.expect("Request first");
                self.crc = c || repr.crc;
                // Wireshark assumes both directions marked if either frame has M; we only
                // build symmetric marker use.
                assert_eq!(
                    m, repr.markers,
                    "asymmetric markers cannot be checked by tshark"
                );
                self.markers = m;
                cap.replies += 1;
            }
        }
        self.produce(from_client, &out[..n]);
        self.flush(cap, from_client);
    }

    fn produce(&mut self, from_client: bool, bytes: &[u8]) {
        let s = side(from_client);
        self.buf[s].extend_from_slice(bytes);
        self.produced[s] = self.produced[s].wrapping_add(bytes.len() as u32);
    }

    /// Emits one FPDU carrying `repr` into the side's pending bytes.
    fn fpdu(&mut self, from_client: bool, repr: &rdmap::Repr<'_>) {
        let mut ulpdu = vec![0u8; repr.buffer_len()];
        let n = repr.emit(&mut ulpdu).expect("ULPDU emits");
        ulpdu.truncate(n);
        // Our own parser must agree with what we emitted.
        assert_eq!(&rdmap::Repr::parse(&ulpdu).expect("parses back"), repr);
        self.raw_fpdu(from_client, &ulpdu);
    }

    /// Frames `ulpdu` (which need not be a valid ULPDU) as an FPDU with the connection's CRC and
    /// markers.
    fn raw_fpdu(&mut self, from_client: bool, ulpdu: &[u8]) {
        let s = side(from_client);
        let seq = self.produced[s];
        let mut fpdu = vec![0u8; mpa::fpdu_len(ulpdu.len())];
        let n = mpa::emit_fpdu(ulpdu, self.crc, &mut fpdu).expect("FPDU emits");
        let mut markers = Vec::new();
        let wire = if self.markers {
            // Markers count from the first octet of the first FPDU of the direction.
            let layout = *self.layout[s].get_or_insert(MarkerLayout::new(seq));
            let mut raw = vec![0u8; layout.marked_len(seq, n)];
            let m = layout
                .insert(seq, &fpdu[..n], self.crc, &mut raw)
                .expect("markers insert");
            raw.truncate(m);
            for k in (0..m).step_by(4) {
                if layout.is_marker_at(seq.wrapping_add(k as u32)) {
                    let at = if k == 0 {
                        MarkerAt::Start
                    } else if k == m - 8 {
                        MarkerAt::BeforeCrc
                    } else {
                        MarkerAt::Inside
                    };
                    assert_eq!(raw[k..k + 2], [0, 0], "marker reserved bits");
                    markers.push((at, u16::from_be_bytes([raw[k + 2], raw[k + 3]])));
                }
            }
            raw
        } else {
            fpdu[..n].to_vec()
        };
        self.produce(from_client, &wire);
        self.pending[s].push_back((
            self.produced[s],
            SentFpdu {
                ulpdu: ulpdu.to_vec(),
                crc: self.crc,
                markers,
            },
        ));
    }

    /// Sends the pending bytes of one side as TCP segments cut at `cuts` (offsets into the
    /// pending bytes); FPDUs complete in the order they were produced.
    fn flush_cut(&mut self, cap: &mut Capture, from_client: bool, cuts: &[usize]) {
        let s = side(from_client);
        let bytes = std::mem::take(&mut self.buf[s]);
        assert!(!bytes.is_empty(), "nothing to send");
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
            assert!(end > start && end <= bytes.len(), "bad cut {end}");
            self.tcp
                .send(&mut cap.pcap, from_client, &bytes[start..end]);
            let sent = self.tcp.next_seq(from_client);
            while let Some((fpdu_end, _)) = self.pending[s].front() {
                if sent.wrapping_sub(*fpdu_end) as i32 >= 0 {
                    let (_, f) = self.pending[s].pop_front().expect("front");
                    cap.fpdus.push(f);
                } else {
                    break;
                }
            }
            start = end;
        }
    }

    /// Sends everything pending from one side as one segment.
    fn flush(&mut self, cap: &mut Capture, from_client: bool) {
        self.flush_cut(cap, from_client, &[]);
    }

    /// One FPDU, sent as its own segment.
    fn put(&mut self, cap: &mut Capture, from_client: bool, repr: &rdmap::Repr<'_>) {
        self.fpdu(from_client, repr);
        self.flush(cap, from_client);
    }

    fn close(&mut self, cap: &mut Capture) {
        assert!(self.buf.iter().all(Vec::is_empty), "unsent bytes");
        self.tcp.close(&mut cap.pcap);
    }
}

fn v4(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)), port)
}

fn v6(last: u16, port: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)),
        port,
    )
}

/// Payload octets that no heuristic would mistake for an RPC or SMB header.
fn text(tag: &str, len: usize) -> Vec<u8> {
    let pattern = format!("netdirect {tag} ");
    pattern.bytes().cycle().take(len).collect()
}

fn send_repr(
    msn: u32,
    mo: u32,
    last: bool,
    solicited: bool,
    invalidate: Option<u32>,
    payload: &[u8],
) -> rdmap::Repr<'_> {
    rdmap::Repr {
        last,
        message: Message::Send {
            msn,
            mo,
            solicited,
            invalidate,
        },
        payload,
    }
}

/// A message of several segments: `Message` for each segment from its offset, payload split in
/// `sizes`.
fn segments<'a>(
    payload: &'a [u8],
    sizes: &[usize],
    message: impl Fn(u64) -> Message<'static>,
) -> Vec<rdmap::Repr<'a>> {
    assert_eq!(sizes.iter().sum::<usize>(), payload.len());
    let mut out = Vec::new();
    let mut at = 0;
    for (i, &n) in sizes.iter().enumerate() {
        out.push(rdmap::Repr {
            last: i + 1 == sizes.len(),
            message: message(at as u64),
            payload: &payload[at..at + n],
        });
        at += n;
    }
    out
}

fn request<'a>(
    crc: bool,
    markers: bool,
    revision: u8,
    e: Option<Enhanced>,
    pd: &'a [u8],
) -> StartupRepr<'a> {
    StartupRepr {
        kind: StartupKind::Request,
        markers,
        crc,
        reject: false,
        revision,
        enhanced: e,
        private_data: pd,
    }
}

fn reply<'a>(
    crc: bool,
    markers: bool,
    revision: u8,
    e: Option<Enhanced>,
    pd: &'a [u8],
) -> StartupRepr<'a> {
    StartupRepr {
        kind: StartupKind::Reply,
        ..request(crc, markers, revision, e, pd)
    }
}

fn enhanced(ird: u16, ord: u16, p2p: bool, rtr: Rtr) -> Option<Enhanced> {
    Some(Enhanced {
        ird,
        ord,
        peer_to_peer: p2p,
        rtr,
    })
}

const C: bool = true; // from the client (initiator)
const S: bool = false; // from the server (responder)

/// Conversation A: IPv4, CRC requested by the initiator, revision 2 with IRD/ORD and RTR, every
/// RFC 5040 message kind in both directions, RFC 7306 atomics and immediate data, both Terminate
/// shapes, several FPDUs in one segment and one FPDU split over two.
fn conversation_a(cap: &mut Capture) {
    let mut c = Conv::open(cap, v4(1, 49152), v4(2, 4791), (0x1000_0000, 0x2000_0000));
    let offer = Rtr {
        send: false,
        write: true,
        read: true,
    };
    let chosen = Rtr {
        write: true,
        ..Rtr::default()
    };
    c.startup(
        cap,
        &request(true, false, 2, enhanced(16, 8, true, offer), b"netdirect A"),
    );
    c.startup(
        cap,
        &reply(false, false, 2, enhanced(8, 16, true, chosen), &[]),
    );

    // RTR: a zero-length RDMA Write, STag 1 TO 1.
    c.put(
        cap,
        C,
        &rdmap::Repr {
            last: true,
            message: Message::Write { stag: 1, to: 1 },
            payload: &[],
        },
    );
    // Four Send kinds in one TCP segment.
    let (p1, p2, p3, p4) = (
        text("send", 100),
        text("send-se", 64),
        text("send-inv", 48),
        text("send-se-inv", 41),
    );
    c.fpdu(C, &send_repr(1, 0, true, false, None, &p1));
    c.fpdu(C, &send_repr(2, 0, true, true, None, &p2));
    c.fpdu(C, &send_repr(3, 0, true, false, Some(0x0bad_5600), &p3));
    c.fpdu(C, &send_repr(4, 0, true, true, Some(0x0bad_5701), &p4));
    c.flush(cap, C);
    // A Send of three segments, MO advancing, L on the last only.
    let big = text("multi-segment send", 2500);
    for r in segments(&big, &[1000, 1000, 500], |mo| Message::Send {
        msn: 5,
        mo: mo as u32,
        solicited: false,
        invalidate: None,
    }) {
        c.put(cap, C, &r);
    }
    // An RDMA Write of three segments; the first FPDU is split over two TCP segments and the
    // other two share one.
    let wdata = text("rdma write", 3001);
    let write = segments(&wdata, &[1400, 1400, 201], |off| Message::Write {
        stag: 0xabcd_0101,
        to: 0x7f00_0000_1000 + off,
    });
    for r in &write {
        c.fpdu(C, r);
    }
    c.flush_cut(cap, C, &[700, mpa::fpdu_len(14 + 1400)]);
    // RDMA Read: request, and a response of three segments.
    let rr = ReadRequest {
        sink_stag: 0x1111_2200,
        sink_to: 0x5500_0000_0010,
        size: 3000,
        source_stag: 0x3333_4400,
        source_to: 0x6600_0000_0020,
    };
    c.put(
        cap,
        C,
        &rdmap::Repr {
            last: true,
            message: Message::ReadRequest {
                msn: 1,
                request: rr,
            },
            payload: &[],
        },
    );
    let rdata = text("read response", 3000);
    for r in segments(&rdata, &[1400, 1400, 200], |off| Message::ReadResponse {
        stag: rr.sink_stag,
        to: rr.sink_to + off,
    }) {
        c.put(cap, S, &r);
    }
    // A zero-length Read (the RTR shape) and its zero-length response.
    c.put(
        cap,
        C,
        &rdmap::Repr {
            last: true,
            message: Message::ReadRequest {
                msn: 2,
                request: ReadRequest {
                    sink_stag: 1,
                    sink_to: 1,
                    size: 0,
                    source_stag: 1,
                    source_to: 1,
                },
            },
            payload: &[],
        },
    );
    c.put(
        cap,
        S,
        &rdmap::Repr {
            last: true,
            message: Message::ReadResponse { stag: 1, to: 1 },
            payload: &[],
        },
    );
    // Sends the other way.
    let sp = text("server send", 80);
    c.put(cap, S, &send_repr(1, 0, true, false, None, &sp));
    c.put(
        cap,
        S,
        &send_repr(2, 0, true, true, Some(0x4444_5500), &sp[..44]),
    );
    // RFC 7306: FetchAdd and CompareSwap requests, their responses.
    let fetch_add = AtomicRequest {
        op: AtomicOp::FetchAdd,
        request_id: 0x0000_0a01,
        remote_stag: 0x7777_8800,
        remote_to: 0x8000_0000_0008,
        add_or_swap: 5,
        add_or_swap_mask: u64::MAX,
        compare: 0,
        compare_mask: 0,
    };
    let cmp_swap = AtomicRequest {
        op: AtomicOp::CompareSwap,
        request_id: 0x0000_0a02,
        add_or_swap: 0x1122_3344_5566_7788,
        compare: 0x99,
        compare_mask: u64::MAX,
        ..fetch_add
    };
    for (msn, request) in [(3, fetch_add), (4, cmp_swap)] {
        c.fpdu(
            C,
            &rdmap::Repr {
                last: true,
                message: Message::AtomicRequest { msn, request },
                payload: &[],
            },
        );
    }
    c.flush(cap, C);
    for (msn, request_id, original_data) in [(1, 0x0a01, 37), (2, 0x0a02, 0x99)] {
        c.put(
            cap,
            S,
            &rdmap::Repr {
                last: true,
                message: Message::AtomicResponse {
                    msn,
                    response: AtomicResponse {
                        request_id,
                        original_data,
                    },
                },
                payload: &[],
            },
        );
    }
    // RFC 7306 Immediate Data, plain and with SE, in one segment.
    for (msn, solicited) in [(6, false), (7, true)] {
        c.fpdu(
            C,
            &rdmap::Repr {
                last: true,
                message: Message::ImmediateData {
                    msn,
                    solicited,
                    data: *b"imm-data",
                },
                payload: &[],
            },
        );
    }
    c.flush(cap, C);
    // Terminate with the failing segment's DDP header (tagged, 14 octets: Wireshark
    // sizes the copy by the error type) and RDMAP header (28 octets).
    let mut ddp_header = [0u8; 14];
    write[0].ddp().emit(&mut ddp_header).expect("DDP header");
    let mut rdmap_header = [0u8; 28];
    let mut rr_ulpdu = [0u8; 46];
    rdmap::Repr {
        last: true,
        message: Message::ReadRequest {
            msn: 1,
            request: rr,
        },
        payload: &[],
    }
    .emit(&mut rr_ulpdu)
    .expect("Read Request");
    rdmap_header.copy_from_slice(&rr_ulpdu[18..]);
    c.put(
        cap,
        S,
        &rdmap::Repr {
            last: true,
            message: Message::Terminate {
                msn: 1,
                terminate: terminate::Repr {
                    m: true,
                    failing_ddp: Some(FailingDdp {
                        segment_length: 1400,
                        header: &ddp_header,
                    }),
                    rdmap_header: Some(&rdmap_header),
                    ..terminate::Repr::new(terminate::TermError::RdmapInvalidStag)
                },
            },
            payload: &[],
        },
    );
    // Terminate with the control word only (LLP: CRC error).
    c.put(
        cap,
        C,
        &rdmap::Repr {
            last: true,
            message: Message::Terminate {
                msn: 1,
                terminate: terminate::Repr::new(terminate::TermError::LlpCrc),
            },
            payload: &[],
        },
    );
    c.close(cap);
}

/// Conversation B: IPv6, revision 1 with private data, CRC requested by the responder only.
fn conversation_b(cap: &mut Capture) {
    let mut c = Conv::open(cap, v6(1, 50000), v6(2, 7174), (0xffff_fff0, 77));
    c.startup(cap, &request(false, false, 1, None, b"rev1 private data"));
    c.startup(cap, &reply(true, false, 1, None, b"ok"));
    assert!(c.crc);
    let p = text("ipv6 send", 200);
    c.put(cap, C, &send_repr(1, 0, true, false, None, &p));
    let rr = ReadRequest {
        sink_stag: 0x0101_0100,
        sink_to: 0x1000,
        size: 512,
        source_stag: 0x0202_0200,
        source_to: 0x2000,
    };
    c.put(
        cap,
        S,
        &rdmap::Repr {
            last: true,
            message: Message::ReadRequest {
                msn: 1,
                request: rr,
            },
            payload: &[],
        },
    );
    let data = text("ipv6 read", 512);
    c.put(
        cap,
        C,
        &rdmap::Repr {
            last: true,
            message: Message::ReadResponse {
                stag: rr.sink_stag,
                to: rr.sink_to,
            },
            payload: &data,
        },
    );
    let w = text("ipv6 write", 301);
    c.put(
        cap,
        S,
        &rdmap::Repr {
            last: true,
            message: Message::Write {
                stag: 0x0303_0300,
                to: 0x3000,
            },
            payload: &w,
        },
    );
    c.put(cap, C, &send_repr(2, 0, true, true, None, &p[..50]));
    c.close(cap);
}

/// Conversation C: IPv4, CRC off: several FPDUs in one segment, one FPDU over three segments.
fn conversation_c(cap: &mut Capture) {
    let mut c = Conv::open(cap, v4(3, 40000), v4(4, 7175), (5, 0x8000_0000));
    let e = enhanced(1, 1, false, Rtr::default());
    c.startup(cap, &request(false, false, 2, e, &[]));
    c.startup(cap, &reply(false, false, 2, e, &[]));
    assert!(!c.crc);
    let p = text("crc off", 61);
    c.fpdu(C, &send_repr(1, 0, true, false, None, &p));
    c.fpdu(C, &send_repr(2, 0, true, false, None, &p[..33]));
    c.fpdu(
        C,
        &rdmap::Repr {
            last: true,
            message: Message::Write {
                stag: 0x5a5a_5a00,
                to: 0,
            },
            payload: &p[..7],
        },
    );
    c.flush(cap, C);
    let rr = ReadRequest {
        sink_stag: 0x0a0a_0a00,
        sink_to: 0x40,
        size: 2000,
        source_stag: 0x0b0b_0b00,
        source_to: 0x80,
    };
    c.put(
        cap,
        S,
        &rdmap::Repr {
            last: true,
            message: Message::ReadRequest {
                msn: 1,
                request: rr,
            },
            payload: &[],
        },
    );
    let data = text("split read response", 2000);
    c.fpdu(
        C,
        &rdmap::Repr {
            last: true,
            message: Message::ReadResponse {
                stag: rr.sink_stag,
                to: rr.sink_to,
            },
            payload: &data,
        },
    );
    c.flush_cut(cap, C, &[8, 900]);
    c.put(cap, S, &send_repr(1, 0, true, false, None, &p));
    c.close(cap);
}

/// Conversation D: markers in both directions, CRC on, one FPDU per TCP segment (Wireshark's
/// condition for markers), with markers at FPDU starts, inside ULPDUs and between pad and CRC.
fn conversation_d(cap: &mut Capture) {
    let mut c = Conv::open(cap, v4(5, 41000), v4(6, 7176), (0x7fff_fe00, 0x0000_0100));
    let e = enhanced(4, 4, false, Rtr::default());
    c.startup(cap, &request(true, true, 2, e, &[]));
    c.startup(cap, &reply(true, true, 2, e, &[]));
    let p = text("marker", 3000);
    for from in [C, S] {
        // ULPDU 504: the FPDU fills octets 4..516 after the leading marker, so the next marker
        // falls between the pad and the CRC.
        c.put(cap, from, &send_repr(1, 0, true, false, None, &p[..486]));
        // Markers inside a Write.
        c.put(
            cap,
            from,
            &rdmap::Repr {
                last: true,
                message: Message::Write {
                    stag: 0x0d0d_0d00,
                    to: 0x100,
                },
                payload: &p[..1401],
            },
        );
        // A Send sized so that the next FPDU starts exactly on a marker.
        let s = side(from);
        let layout = c.layout[s].expect("markers on");
        let seq = c.produced[s];
        let n = (0..600)
            .find(|&n| {
                let raw = layout.marked_len(seq, mpa::fpdu_len(18 + n));
                layout.is_marker_at(seq.wrapping_add(raw as u32))
            })
            .expect("a filler length");
        c.put(cap, from, &send_repr(2, 0, true, true, None, &p[..n]));
        // A multi-segment Send with odd lengths (pad 1..3) starting on a marker.
        for r in segments(&p[..1703], &[601, 550, 552], |mo| Message::Send {
            msn: 3,
            mo: mo as u32,
            solicited: false,
            invalidate: None,
        }) {
            c.put(cap, from, &r);
        }
    }
    c.close(cap);
}

/// What tshark must show for the FPDUs we sent, field by field in FPDU order.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    ulpdu_length: Vec<u64>,
    opcode: Vec<u64>,
    last: Vec<u64>,
    stag: Vec<u64>,
    tagged_offset: Vec<u64>,
    qn: Vec<u64>,
    msn: Vec<u64>,
    mo: Vec<u64>,
    inval_stag: Vec<u64>,
    sink_stag: Vec<u64>,
    read_size: Vec<u64>,
    src_stag: Vec<u64>,
    atomic_opcode: Vec<u64>,
    atomic_request_id: Vec<u64>,
    atomic_original_request_id: Vec<u64>,
    atomic_original_value: Vec<u64>,
    term_layer: Vec<u64>,
    term_ddp_header: Vec<String>,
    term_rdma_header: Vec<String>,
    marker_fpduptr: Vec<u64>,
    crc_checks: usize,
}

const FIELDS: &[&str] = &[
    "iwarp_mpa.ulpdulength",
    "iwarp_rdma.opcode",
    "iwarp_ddp.last_flag",
    "iwarp_ddp.stag",
    "iwarp_ddp.tagged_offset",
    "iwarp_ddp.qn",
    "iwarp_ddp.msn",
    "iwarp_ddp.mo",
    "iwarp_rdma.inval_stag",
    "iwarp_rdma.sinkstag",
    "iwarp_rdma.rdmardsz",
    "iwarp_rdma.srcstag",
    "iwarp_rdma.atomic.opcode",
    "iwarp_rdma.atomic.request_identifier",
    "iwarp_rdma.atomic.original_request_identifier",
    "iwarp_rdma.atomic.original_remote_data_value",
    "iwarp_rdma.term_layer",
    "iwarp_rdma.term_ddp_h",
    "iwarp_rdma.term_rdma_h",
    "iwarp_mpa.marker_fpduptr",
    "iwarp_mpa.crc_check",
];

fn expected(fpdus: &[SentFpdu]) -> Expected {
    let mut e = Expected::default();
    for f in fpdus {
        let r = rdmap::Repr::parse(&f.ulpdu).expect("ours");
        e.ulpdu_length.push(f.ulpdu.len() as u64);
        e.opcode.push(r.message.opcode() as u64);
        e.last.push(u64::from(r.last));
        match r.message.placement() {
            Placement::Tagged { stag, to } => {
                e.stag.push(stag.into());
                e.tagged_offset.push(to);
            }
            Placement::Untagged { qn, msn, mo } => {
                e.qn.push(qn.into());
                e.msn.push(msn.into());
                e.mo.push(mo.into());
            }
        }
        match r.message {
            Message::Send {
                invalidate: Some(s),
                ..
            } => e.inval_stag.push(s.into()),
            Message::ReadRequest { request, .. } => {
                e.sink_stag.push(request.sink_stag.into());
                e.read_size.push(request.size.into());
                e.src_stag.push(request.source_stag.into());
            }
            Message::AtomicRequest { request, .. } => {
                e.atomic_opcode.push(request.op as u64);
                e.atomic_request_id.push(request.request_id.into());
            }
            Message::AtomicResponse { response, .. } => {
                e.atomic_original_request_id
                    .push(response.request_id.into());
                e.atomic_original_value.push(response.original_data);
            }
            Message::Terminate { terminate, .. } => {
                e.term_layer.push(terminate.layer.into());
                if let Some(d) = terminate.failing_ddp {
                    e.term_ddp_header.push(capture::hex(d.header));
                }
                if let Some(h) = terminate.rdmap_header {
                    e.term_rdma_header.push(capture::hex(h));
                }
            }
            _ => {}
        }
        e.marker_fpduptr
            .extend(f.markers.iter().map(|&(_, p)| u64::from(p)));
        e.crc_checks += usize::from(f.crc);
    }
    e
}

fn observed(pcap: &Path) -> Expected {
    let f = fields(pcap, FIELDS);
    let g = |n: &str| ints(&f[n]);
    Expected {
        ulpdu_length: g("iwarp_mpa.ulpdulength"),
        opcode: g("iwarp_rdma.opcode"),
        last: g("iwarp_ddp.last_flag"),
        stag: g("iwarp_ddp.stag"),
        tagged_offset: g("iwarp_ddp.tagged_offset"),
        qn: g("iwarp_ddp.qn"),
        msn: g("iwarp_ddp.msn"),
        mo: g("iwarp_ddp.mo"),
        inval_stag: g("iwarp_rdma.inval_stag"),
        sink_stag: g("iwarp_rdma.sinkstag"),
        read_size: g("iwarp_rdma.rdmardsz"),
        src_stag: g("iwarp_rdma.srcstag"),
        atomic_opcode: g("iwarp_rdma.atomic.opcode"),
        atomic_request_id: g("iwarp_rdma.atomic.request_identifier"),
        atomic_original_request_id: g("iwarp_rdma.atomic.original_request_identifier"),
        atomic_original_value: g("iwarp_rdma.atomic.original_remote_data_value"),
        term_layer: g("iwarp_rdma.term_layer"),
        term_ddp_header: f["iwarp_rdma.term_ddp_h"].clone(),
        term_rdma_header: f["iwarp_rdma.term_rdma_h"].clone(),
        marker_fpduptr: g("iwarp_mpa.marker_fpduptr"),
        crc_checks: f["iwarp_mpa.crc_check"].len(),
    }
}

/// Counts of "Good CRC32" and "Bad CRC32" in the verbose tree.
fn crc_verdicts(pcap: &Path) -> (usize, usize) {
    let v = tshark(pcap, &["-V"]);
    (
        v.matches("Good CRC32").count(),
        v.matches("Bad CRC32").count(),
    )
}

fn frames_matching(pcap: &Path, filter: &str) -> usize {
    tshark(pcap, &["-Y", filter, "-T", "fields", "-e", "frame.number"])
        .lines()
        .count()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn tshark_decodes_everything_we_emit() {
    if tshark_missing("tshark_decodes_everything_we_emit") {
        return;
    }
    let mut cap = Capture::default();
    conversation_a(&mut cap);
    conversation_b(&mut cap);
    conversation_c(&mut cap);
    conversation_d(&mut cap);
    let path = TempPath::new("oracle");
    cap.pcap.write(&path.0);
    if let Some(keep) = std::env::var_os("NETDIRECT_KEEP_PCAP") {
        // For looking at it by hand: NETDIRECT_KEEP_PCAP=/tmp/oracle.pcap cargo test …
        std::fs::copy(&path.0, keep).expect("copy the capture");
    }

    // Our own reader and deframer see the same FPDUs (and the writer made sane TCP).
    let conns = capture::connections(&capture::read_pcap(&path.0));
    assert_eq!(conns.len(), 4);
    let mut ours = 0;
    for c in &conns {
        let r = capture::analyze(c);
        assert!(r.problems.is_empty(), "{}", r.problems.join("\n"));
        ours += r.initiator.fpdus.len() + r.responder.fpdus.len();
        assert_eq!(r.initiator.partial_tail + r.responder.partial_tail, 0);
    }
    assert_eq!(ours, cap.fpdus.len());

    // Every opcode we can send went out.
    let mut per_opcode: BTreeMap<u64, usize> = BTreeMap::new();
    let want = expected(&cap.fpdus);
    for &op in &want.opcode {
        *per_opcode.entry(op).or_default() += 1;
    }
    for op in Opcode::ALL {
        assert!(per_opcode.contains_key(&(op as u64)), "{op:?} never sent");
    }
    // Markers at an FPDU start, inside, and between pad and CRC, in both directions of D.
    let kinds: std::collections::BTreeSet<MarkerAt> = cap
        .fpdus
        .iter()
        .flat_map(|f| f.markers.iter().map(|&(k, _)| k))
        .collect();
    assert_eq!(kinds.len(), 3, "marker positions covered: {kinds:?}");
    let mid_start = cap
        .fpdus
        .iter()
        .filter(|f| f.markers.first().is_some_and(|m| m.0 == MarkerAt::Start))
        .count();
    assert!(mid_start >= 4, "markers at FPDU starts: {mid_start}");

    // MPA found all four connections.
    assert_eq!(frames_matching(&path.0, "iwarp_mpa.req"), cap.requests);
    assert_eq!(frames_matching(&path.0, "iwarp_mpa.rep"), cap.replies);
    assert_eq!(cap.requests, 4);

    // Every FPDU decoded as MPA + DDP + RDMAP with our field values, in order.
    let got = observed(&path.0);
    assert_eq!(got.ulpdu_length, want.ulpdu_length, "ULPDU lengths");
    assert_eq!(got.opcode, want.opcode, "opcodes");
    assert_eq!(got, want);
    for (op, n) in &per_opcode {
        assert_eq!(
            count_of(&got.opcode, *op),
            *n,
            "opcode {op:#x}: tshark count"
        );
    }

    // No malformed frame anywhere.
    assert_eq!(
        frames_matching(&path.0, "_ws.malformed"),
        0,
        "malformed frames"
    );
    // Every CRC-on FPDU checks Good, none Bad.
    let (good, bad) = crc_verdicts(&path.0);
    assert_eq!((good, bad), (want.crc_checks, 0), "Good/Bad CRC32 verdicts");
    assert!(want.crc_checks > 30);

    // Expert info: no errors; the only warnings are the two about revision-2 Requests.
    let ex = expert(&path.0);
    assert!(
        !ex.contains_key("Errors"),
        "expert errors: {:?}",
        ex.get("Errors")
    );
    let warns = ex.get("Warns").cloned().unwrap_or_default();
    let summaries: std::collections::BTreeSet<&str> =
        warns.iter().map(|(_, _, s)| s.as_str()).collect();
    assert_eq!(
        summaries,
        [
            "Res field is NOT set to zero as required by RFC 5044",
            "Rev field is NOT set to one as required by RFC 5044",
        ]
        .into_iter()
        .collect(),
        "expert warnings: {warns:?}"
    );
    assert!(warns.iter().all(|(_, proto, _)| proto == "IWARP_MPA"));
    // Wireshark 4.0 raises them from the Request heuristic only (they appear in `-z expert`,
    // not in the `-V` tree), once per pass over each revision-2 Request: tshark 4.0.17 counts
    // each twice, as it does for the siw captures (10 for 5 Requests in siw-hostpeer.pcap).
    for (n, _, summary) in &warns {
        assert!(
            *n > 0 && n % cap.rev2_requests == 0 && *n <= 2 * cap.rev2_requests,
            "{summary}: {n} warnings for {} revision-2 Requests",
            cap.rev2_requests
        );
    }
    assert_eq!(cap.rev2_requests, 3);
}

fn count_of(opcodes: &[u64], op: u64) -> usize {
    opcodes.iter().filter(|&&o| o == op).count()
}

#[test]
fn tshark_reports_a_bad_crc() {
    if tshark_missing("tshark_reports_a_bad_crc") {
        return;
    }
    let mut cap = Capture::default();
    let mut c = Conv::open(&mut cap, v4(7, 42000), v4(8, 7174), (1, 2));
    c.startup(&mut cap, &request(true, false, 1, None, &[]));
    c.startup(&mut cap, &reply(true, false, 1, None, &[]));
    let p = text("crc control", 64);
    c.put(&mut cap, C, &send_repr(1, 0, true, false, None, &p));
    c.fpdu(C, &send_repr(2, 0, true, false, None, &p));
    // Flip one CRC octet of the second FPDU before it is sent.
    let last = c.buf[0].len() - 1;
    c.buf[0][last] ^= 0x01;
    c.flush(&mut cap, C);
    c.close(&mut cap);
    let path = TempPath::new("badcrc");
    cap.pcap.write(&path.0);

    assert_eq!(crc_verdicts(&path.0), (1, 1), "one Good and one Bad CRC32");
    // Our deframer agrees.
    let conns = capture::connections(&capture::read_pcap(&path.0));
    let r = capture::analyze(&conns[0]);
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].contains("Crc"), "{}", r.problems[0]);
}

#[test]
fn tshark_flags_a_truncated_read_request() {
    if tshark_missing("tshark_flags_a_truncated_read_request") {
        return;
    }
    let mut cap = Capture::default();
    let mut c = Conv::open(&mut cap, v4(9, 43000), v4(10, 7174), (100, 200));
    c.startup(&mut cap, &request(true, false, 1, None, &[]));
    c.startup(&mut cap, &reply(false, false, 1, None, &[]));
    let mut ulpdu = [0u8; 46];
    rdmap::Repr {
        last: true,
        message: Message::ReadRequest {
            msn: 1,
            request: ReadRequest {
                sink_stag: 0x100,
                sink_to: 0,
                size: 64,
                source_stag: 0x200,
                source_to: 0,
            },
        },
        payload: &[],
    }
    .emit(&mut ulpdu)
    .expect("Read Request");
    // Six octets short: the source TO is cut. A well-framed FPDU with a good CRC.
    let short = &ulpdu[..40];
    assert_eq!(rdmap::Repr::parse(short), Err(Error::Truncated));
    c.raw_fpdu(C, short);
    c.flush(&mut cap, C);
    c.close(&mut cap);
    let path = TempPath::new("truncated");
    cap.pcap.write(&path.0);

    assert_eq!(
        frames_matching(&path.0, "_ws.malformed"),
        1,
        "malformed frames"
    );
    assert_eq!(frames_matching(&path.0, "iwarp_rdma.opcode == 1"), 1);
    assert_eq!(crc_verdicts(&path.0), (1, 0), "the framing itself is fine");
}
