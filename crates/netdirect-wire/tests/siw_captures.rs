//! A real peer's bytes: every MPA startup frame and every FPDU that Linux siw (and the host test
//! peer) sent in the captures of `testdata/siw/` must parse with this crate and re-emit to
//! exactly the captured bytes, CRC field included.
//!
//! The expected frame counts were read off `tshark -r FILE` (Wireshark 4.0.17) and match what
//! rping does per iteration: the client Sends its source buffer advertisement, the server Reads
//! it (Read Request → Read Response), the server Sends "go ahead", the client Sends its sink
//! advertisement, the server Writes the echo and Sends "go ahead" again.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use netdirect_test_support::capture::{
    self, Connection, ConnectionReport, DirectionReport, TcpSegment, analyze, hex, siw_capture,
};
use netdirect_wire::ddp::Placement;
use netdirect_wire::rdmap::{Message, Opcode, ReadRequest};

/// (opcode, DDP segments, messages) sent by one side.
type Sent = &'static [(Opcode, usize, usize)];

struct Expect {
    initiator_port: u16,
    responder_port: u16,
    revision: u8,
    request_crc: bool,
    reply_crc: bool,
    initiator: Sent,
    responder: Sent,
}

const NOTHING: Sent = &[];

/// `iterations` of a 64-octet rping seen from the client (initiator) and the server.
macro_rules! rping {
    ($ini:expr, $res:expr, $rev:expr, $req_crc:expr, $rep_crc:expr, $n:expr) => {
        Expect {
            initiator_port: $ini,
            responder_port: $res,
            revision: $rev,
            request_crc: $req_crc,
            reply_crc: $rep_crc,
            initiator: &[
                (Opcode::Send, 2 * $n, 2 * $n),
                (Opcode::ReadResponse, $n, $n),
            ],
            responder: &[
                (Opcode::ReadRequest, $n, $n),
                (Opcode::Send, 2 * $n, 2 * $n),
                (Opcode::Write, $n, $n),
            ],
        }
    };
}

/// Runs every connection of a capture through the wire crate and fails with every problem found.
fn check_capture(name: &str) -> (Vec<Connection>, Vec<ConnectionReport>) {
    let segments: Vec<TcpSegment> = capture::read_pcap(&siw_capture(name));
    let conns = capture::connections(&segments);
    let reports: Vec<ConnectionReport> = conns.iter().map(analyze).collect();
    let mut problems = Vec::new();
    for (c, r) in conns.iter().zip(&reports) {
        for (side, s, d) in [
            ("initiator", &c.initiator, &r.initiator),
            ("responder", &c.responder, &r.responder),
        ] {
            eprintln!(
                "{name} {} {side}: {} octets, {} FPDUs {:?}, {} duplicate octets, {} late \
                 segments, partial tail {} octets",
                r.name,
                s.data.len(),
                d.fpdus.len(),
                counts(d),
                s.duplicate_octets,
                s.late_segments,
                d.partial_tail
            );
            if d.partial_tail > 0 {
                eprintln!(
                    "  NOTE: {name} {} {side} ends in the middle of an FPDU ({} octets)",
                    r.name, d.partial_tail
                );
            }
        }
        problems.extend(r.problems.iter().cloned());
        problems.extend(sequencing(r));
    }
    assert!(
        problems.is_empty(),
        "{name}: {} problem(s) with siw's bytes:\n{}",
        problems.len(),
        problems.join("\n")
    );
    (conns, reports)
}

fn counts(d: &DirectionReport) -> BTreeMap<Opcode, (usize, usize)> {
    let mut m = BTreeMap::new();
    for f in &d.fpdus {
        let e = m.entry(f.opcode()).or_insert((0, 0));
        e.0 += 1;
        e.1 += usize::from(f.repr().last);
    }
    m
}

fn check_expected(name: &str, conns: &[Connection], reports: &[ConnectionReport], want: &[Expect]) {
    let found: Vec<(u16, u16)> = conns
        .iter()
        .map(|c| (c.initiator.src.port(), c.initiator.dst.port()))
        .collect();
    let wanted: Vec<(u16, u16)> = want
        .iter()
        .map(|e| (e.initiator_port, e.responder_port))
        .collect();
    assert_eq!(
        found, wanted,
        "{name}: connections (initiator port, responder port)"
    );
    for (e, r) in want.iter().zip(reports) {
        let req = r.initiator.startup.as_ref().expect("request");
        let rep = r.responder.startup.as_ref().expect("reply");
        assert_eq!(
            (req.revision, rep.revision),
            (e.revision, e.revision),
            "{}: MPA revision",
            r.name
        );
        assert_eq!(
            (req.crc, rep.crc),
            (e.request_crc, e.reply_crc),
            "{}: C bits",
            r.name
        );
        assert!(
            !req.markers && !rep.markers,
            "{}: siw never uses markers",
            r.name
        );
        assert!(!rep.reject, "{}: rejected", r.name);
        if e.revision == 2 {
            let (qe, pe) = (
                req.enhanced.expect("enhanced"),
                rep.enhanced.expect("enhanced"),
            );
            assert_eq!(
                (qe.ird, qe.ord, pe.ird, pe.ord),
                (1, 1, 1, 1),
                "{}: rping's IRD/ORD",
                r.name
            );
        }
        for (side, d, sent) in [
            ("initiator", &r.initiator, e.initiator),
            ("responder", &r.responder, e.responder),
        ] {
            let want: BTreeMap<Opcode, (usize, usize)> = sent
                .iter()
                .map(|&(op, segs, msgs)| (op, (segs, msgs)))
                .collect();
            assert_eq!(
                counts(d),
                want,
                "{name} {} {side}: FPDUs per opcode (segments, messages)",
                r.name
            );
            assert_eq!(
                d.partial_tail, 0,
                "{name} {} {side}: capture cut mid-FPDU",
                r.name
            );
        }
    }
}

/// RFC 5040/5041 sequencing across a direction: MSN per untagged queue starts at 1 and goes up
/// by one per message; message offsets and tagged offsets advance by the payload of the segments
/// before; a tagged message does not change STag midway; each Read Response answers the peer's
/// Read Requests in order, at the requested sink, for the requested size.
fn sequencing(r: &ConnectionReport) -> Vec<String> {
    let mut problems = Vec::new();
    let mut reads_toward: [Vec<ReadRequest>; 2] = [Vec::new(), Vec::new()];
    for (i, d) in [&r.initiator, &r.responder].into_iter().enumerate() {
        for f in &d.fpdus {
            if let Message::ReadRequest { request, .. } = f.repr().message {
                // Answered by the other side.
                reads_toward[1 - i].push(request);
            }
        }
    }
    for (i, (side, d)) in [("initiator", &r.initiator), ("responder", &r.responder)]
        .into_iter()
        .enumerate()
    {
        let who = format!("{} {side}", r.name);
        let mut next_msn: BTreeMap<u32, u32> = BTreeMap::new();
        let mut untagged_mo: Option<(u32, u32, u32)> = None; // (qn, msn, next mo)
        let mut tagged: Option<(Opcode, u32, u64, u64)> = None; // (op, stag, next to, total)
        let mut reads = reads_toward[i].iter();
        for f in &d.fpdus {
            let repr = f.repr();
            let op = repr.message.opcode();
            let len = repr.payload.len() as u64;
            match repr.message.placement() {
                Placement::Untagged { qn, msn, mo } => {
                    let expect_msn = *next_msn.get(&qn).unwrap_or(&1);
                    match untagged_mo {
                        Some((q, m, next)) if q == qn => {
                            if msn != m || mo != next {
                                problems.push(format!(
                                    "{who}: {op:?} QN {qn} MSN {msn} MO {mo}, expected the \
                                     next segment of MSN {m} at MO {next}"
                                ));
                            }
                        }
                        _ => {
                            if msn != expect_msn || mo != 0 {
                                problems.push(format!(
                                    "{who}: {op:?} QN {qn} MSN {msn} MO {mo}, expected MSN \
                                     {expect_msn} MO 0"
                                ));
                            }
                        }
                    }
                    untagged_mo = (!repr.last).then_some((qn, msn, mo + len as u32));
                    if repr.last {
                        next_msn.insert(qn, msn.wrapping_add(1));
                    }
                }
                Placement::Tagged { stag, to } => {
                    let (start_to, total) = match tagged {
                        Some((o, s, next, total)) => {
                            if o != op || s != stag || next != to {
                                problems.push(format!(
                                    "{who}: {op:?} STag {stag:#x} TO {to:#x}, expected the next \
                                     {o:?} segment for STag {s:#x} at TO {next:#x}"
                                ));
                            }
                            (to, total)
                        }
                        None => {
                            if op == Opcode::ReadResponse {
                                match reads.next() {
                                    Some(rr) if rr.sink_stag == stag && rr.sink_to == to => {}
                                    Some(rr) => problems.push(format!(
                                        "{who}: Read Response to STag {stag:#x} TO {to:#x}, but \
                                         the Read Request asked for STag {:#x} TO {:#x}",
                                        rr.sink_stag, rr.sink_to
                                    )),
                                    None => problems.push(format!(
                                        "{who}: Read Response without a Read Request"
                                    )),
                                }
                            }
                            (to, 0)
                        }
                    };
                    let total = total + len;
                    tagged = (!repr.last).then_some((op, stag, start_to + len, total));
                    if repr.last && op == Opcode::ReadResponse {
                        // The size check needs the request of this message: it was taken above
                        // when the message started; find it again by sink STag.
                        let asked = reads_toward[i]
                            .iter()
                            .find(|rr| rr.sink_stag == stag)
                            .map(|rr| u64::from(rr.size));
                        if asked.is_some_and(|a| a != total) {
                            problems.push(format!(
                                "{who}: Read Response of {total} octets, the request asked for \
                                 {asked:?}"
                            ));
                        }
                    }
                }
            }
        }
        if untagged_mo.is_some() || tagged.is_some() {
            problems.push(format!("{who}: the last message has no segment with L set"));
        }
    }
    problems
}

#[test]
fn siw_rping_every_frame_round_trips() {
    let (conns, reports) = check_capture("siw-rping.pcap");
    check_expected(
        "siw-rping.pcap",
        &conns,
        &reports,
        &[
            // rping -v -V -C 10, 64-octet messages.
            rping!(54157, 7174, 2, false, false, 10),
            // rping -S 65534, two iterations: Read Responses and Writes of three segments
            // (32748 + 32748 + 38 octets of payload).
            Expect {
                initiator_port: 51391,
                responder_port: 7177,
                revision: 2,
                request_crc: false,
                reply_crc: false,
                initiator: &[(Opcode::Send, 4, 4), (Opcode::ReadResponse, 6, 2)],
                responder: &[
                    (Opcode::ReadRequest, 2, 2),
                    (Opcode::Send, 4, 4),
                    (Opcode::Write, 6, 2),
                ],
            },
        ],
    );
    let c = &conns[0];
    let r = &reports[0];
    // The exchange of docs/spec/iwarp.md §6, byte for byte. The STags and addresses differ from the
    // ones quoted there (0x767d2a00, 0xb10ac000, …), which come from another run; the layout is
    // the same and the values below are this capture's.
    assert_eq!(
        hex(&c.initiator.data[..24]),
        "4d504120494420526571204672616d651002000400010001"
    );
    assert_eq!(
        hex(&c.responder.data[..24]),
        "4d504120494420526570204672616d651002000400010001"
    );
    // The client's Send advertises its source buffer {addr, rkey, size}.
    let send = &r.initiator.fpdus[0];
    assert_eq!(
        hex(&c.initiator.data[send.offset..send.offset + send.wire_len]),
        "0022414300000000000000000000000100000000\
         000055ece0cf24505ae78b000000004000000000"
    );
    // The server reads it: the Read Request's source is exactly what the Send advertised.
    let rr = &r.responder.fpdus[0];
    assert_eq!(
        hex(&c.responder.data[rr.offset..rr.offset + rr.wire_len]),
        "002e414100000000000000010000000100000000e882b300000055f7aec83120\
         000000405ae78b00000055ece0cf245000000000"
    );
    assert_eq!(
        rr.repr().message,
        Message::ReadRequest {
            msn: 1,
            request: ReadRequest {
                sink_stag: 0xe882_b300,
                sink_to: 0x55f7_aec8_3120,
                size: 64,
                source_stag: 0x5ae7_8b00,
                source_to: 0x55ec_e0cf_2450,
            },
        }
    );
    let advertised = send.repr().payload.to_vec();
    assert_eq!(hex(&advertised), "000055ece0cf24505ae78b0000000040");
    let resp = r.initiator.fpdus[1].repr();
    assert_eq!(
        resp.message,
        Message::ReadResponse {
            stag: 0xe882_b300,
            to: 0x55f7_aec8_3120
        }
    );
    assert!(resp.last);
    assert_eq!(resp.payload.len(), 64);
    assert!(
        resp.payload.starts_with(b"rdma-ping-0: ABC"),
        "{:?}",
        resp.payload
    );
    let write = r
        .responder
        .fpdus
        .iter()
        .find(|f| f.opcode() == Opcode::Write)
        .expect("a Write");
    assert_eq!(
        write.repr().message,
        Message::Write {
            stag: 0x1151_5b00,
            to: 0x55ec_e0ce_f120
        }
    );
    assert_eq!(
        write.repr().payload,
        resp.payload,
        "the server writes back what it read"
    );
    // Every Read Request asks for 64 octets; the ten Read Requests count MSN 1..=10.
    let msns: Vec<u32> = r
        .responder
        .fpdus
        .iter()
        .filter_map(|f| match f.repr().message {
            Message::ReadRequest { msn, request } => {
                assert_eq!(request.size, 64);
                Some(msn)
            }
            _ => None,
        })
        .collect();
    assert_eq!(msns, (1..=10).collect::<Vec<_>>());
    // CRC off: every CRC field is zero (also implied by the byte-exact re-emission).
    for d in [&r.initiator, &r.responder] {
        assert!(!d.crc);
        assert!(d.fpdus.iter().all(|f| f.crc_field == [0; 4]));
    }
    // The 65534-octet connection: 32768-octet FPDUs (ULPDU 32762), TO step 32748.
    let big = &reports[1];
    let lens: Vec<(usize, bool)> = big
        .initiator
        .fpdus
        .iter()
        .filter(|f| f.opcode() == Opcode::ReadResponse)
        .map(|f| (f.ulpdu.len(), f.repr().last))
        .collect();
    assert_eq!(
        lens,
        [(32762, false), (32762, false), (52, true)].repeat(2),
        "Read Response segments"
    );
    assert!(
        big.initiator
            .fpdus
            .iter()
            .filter(|f| f.ulpdu.len() == 32762)
            .all(|f| f.wire_len == 32768)
    );
}

#[test]
fn siw_hostpeer_every_frame_round_trips_crc_off_and_on() {
    let (conns, reports) = check_capture("siw-hostpeer.pcap");
    check_expected(
        "siw-hostpeer.pcap",
        &conns,
        &reports,
        &[
            // Test peer connects to siw's rping server, then closes right after the Reply.
            Expect {
                initiator_port: 56010,
                responder_port: 7174,
                revision: 2,
                request_crc: false,
                reply_crc: false,
                initiator: NOTHING,
                responder: NOTHING,
            },
            rping!(56020, 7174, 2, false, false, 2),
            // CRC requested by the test peer; siw's Reply sets C too.
            rping!(56412, 7174, 2, true, true, 2),
            // Revision 1: the test peer Sends once; siw closes (rev 1 gives rping's server
            // no ORD, so its Read fails: docs/spec/iwarp.md §2.2).
            Expect {
                initiator_port: 56418,
                responder_port: 7174,
                revision: 1,
                request_crc: false,
                reply_crc: false,
                initiator: &[(Opcode::Send, 1, 1)],
                responder: NOTHING,
            },
            // siw's rping client against the test peer's server.
            rping!(40068, 7175, 2, false, false, 3),
            // siw's client, the peer answers C=1: CRC on; 4000-octet messages.
            Expect {
                initiator_port: 40196,
                responder_port: 7175,
                revision: 2,
                request_crc: false,
                reply_crc: true,
                initiator: &[(Opcode::Send, 4, 4), (Opcode::ReadResponse, 6, 2)],
                responder: &[
                    (Opcode::ReadRequest, 2, 2),
                    (Opcode::Send, 4, 4),
                    (Opcode::Write, 2, 2),
                ],
            },
        ],
    );
    // CRC-on connections: every FPDU carried a CRC, verified by the deframer and re-emitted to
    // the same four octets.
    let crc_on: Vec<&ConnectionReport> = reports.iter().filter(|r| r.initiator.crc).collect();
    assert_eq!(crc_on.len(), 2);
    let crc_fpdus: usize = crc_on
        .iter()
        .map(|r| r.initiator.fpdus.len() + r.responder.fpdus.len())
        .sum();
    assert_eq!(crc_fpdus, 14 + 18, "CRC-on FPDUs");
    for r in &crc_on {
        for d in [&r.initiator, &r.responder] {
            assert!(d.fpdus.iter().all(|f| f.crc_field != [0; 4]), "{}", r.name);
        }
    }
    // docs/spec/iwarp.md §1.5: the first CRC-on Send carries CRC32c 0x4EBB6A2D, least significant
    // octet first.
    let first = &crc_on[0].initiator.fpdus[0];
    assert_eq!(first.crc_field, [0x2d, 0x6a, 0xbb, 0x4e]);
    // siw's own CRC-on FPDUs (the 7174 server side and the 40196 client side).
    let siw_crc = crc_on[0].responder.fpdus.len() + crc_on[1].initiator.fpdus.len();
    assert_eq!(siw_crc, 8 + 10);
}

#[test]
fn siw_largemsg_multi_segment_messages() {
    let (conns, reports) = check_capture("siw-largemsg-eth0.pcap");
    check_expected(
        "siw-largemsg-eth0.pcap",
        &conns,
        &reports,
        &[Expect {
            initiator_port: 53144,
            responder_port: 7175,
            revision: 2,
            request_crc: false,
            reply_crc: false,
            initiator: &[(Opcode::Send, 4, 4), (Opcode::ReadResponse, 6, 2)],
            responder: &[
                (Opcode::ReadRequest, 2, 2),
                (Opcode::Send, 4, 4),
                (Opcode::Write, 2, 2),
            ],
        }],
    );
    let r = &reports[0];
    // siw sizes FPDUs to the MSS (1460 → 1456-octet FPDUs, ULPDU 1450 = 14 + 1436): a 4000-octet
    // Read Response is 1436 + 1436 + 1128, L set only on the last.
    let segs: Vec<(usize, usize, bool, u64)> = r
        .initiator
        .fpdus
        .iter()
        .filter(|f| f.opcode() == Opcode::ReadResponse)
        .map(|f| {
            let repr = f.repr();
            let Message::ReadResponse { to, .. } = repr.message else {
                unreachable!()
            };
            (f.ulpdu.len(), f.wire_len, repr.last, to)
        })
        .collect();
    for msg in segs.chunks(3) {
        assert_eq!(
            msg.iter().map(|s| (s.0, s.1, s.2)).collect::<Vec<_>>(),
            [(1450, 1456, false), (1450, 1456, false), (1142, 1148, true)]
        );
        assert_eq!(msg[1].3 - msg[0].3, 1436);
        assert_eq!(msg[2].3 - msg[1].3, 1436);
    }
    // The test peer's 4000-octet Write is one 4014-octet ULPDU.
    let writes: Vec<usize> = r
        .responder
        .fpdus
        .iter()
        .filter(|f| f.opcode() == Opcode::Write)
        .map(|f| f.ulpdu.len())
        .collect();
    assert_eq!(writes, [4014, 4014]);
}

// ---------------------------------------------------------------------------------------------
// The reassembly helper itself
// ---------------------------------------------------------------------------------------------

fn seg(frame: usize, from_client: bool, seq: u32, syn: bool, payload: &[u8]) -> TcpSegment {
    let c = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40000);
    let s = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 7174);
    let (src, dst) = if from_client { (c, s) } else { (s, c) };
    TcpSegment {
        frame,
        src,
        dst,
        seq,
        syn,
        ack: !(syn && from_client),
        fin: false,
        payload: payload.to_vec(),
    }
}

#[test]
fn reassembly_orders_dedups_and_reports_holes() {
    let isn = u32::MAX - 5; // wraps inside the stream
    let data: Vec<u8> = (0..40u8).collect();
    let at = |o: usize| isn.wrapping_add(1).wrapping_add(o as u32);
    let segments = vec![
        seg(1, true, isn, true, &[]),
        seg(2, false, 1000, true, &[]),
        seg(3, true, at(10), false, &data[10..20]), // out of order
        seg(4, true, at(0), false, &data[0..10]),
        seg(5, true, at(5), false, &data[5..15]), // overlap, same bytes
        seg(6, true, at(10), false, &data[10..20]), // duplicate
        seg(7, true, at(20), false, &data[20..30]),
        seg(8, true, at(35), false, &data[35..40]), // after a hole at 30..35
        seg(9, false, 1001, false, b"reply"),
    ];
    let conns = capture::connections(&segments);
    assert_eq!(conns.len(), 1);
    let c = &conns[0];
    assert_eq!(c.initiator.src.port(), 40000);
    assert_eq!(c.initiator.data, data[..30]);
    assert_eq!(c.initiator.duplicate_octets, 20);
    assert_eq!(c.initiator.after_hole, 5);
    assert_eq!(c.initiator.segment_ends, [10, 15, 20, 30]);
    assert_eq!(c.responder.data, b"reply");
    // A second SYN with a new ISN on the same ports is a new connection.
    let mut again = segments.clone();
    again.push(seg(10, true, 77, true, &[]));
    again.push(seg(11, true, 78, false, b"x"));
    let conns = capture::connections(&again);
    assert_eq!(conns.len(), 2);
    assert_eq!(conns[1].initiator.data, b"x");
}

#[test]
#[should_panic(expected = "differs from the captured one")]
fn reassembly_refuses_conflicting_retransmission() {
    let segments = vec![
        seg(1, true, 99, true, &[]),
        seg(2, true, 100, false, b"abcd"),
        seg(3, true, 102, false, b"XY"),
    ];
    capture::connections(&segments);
}

/// The checks above can fail: corrupt siw's bytes in four ways and each is reported.
#[test]
fn corrupted_siw_bytes_are_caught() {
    let conns = capture::connections(&capture::read_pcap(&siw_capture("siw-hostpeer.pcap")));
    let conn = |port: u16| {
        conns
            .iter()
            .find(|c| c.initiator.src.port() == port)
            .expect("connection")
            .clone()
    };
    let problems = |c: &Connection| {
        let r = analyze(c);
        let mut p = r.problems.clone();
        p.extend(sequencing(&r));
        p.join("\n")
    };
    assert_eq!(problems(&conn(56412)), "");
    assert_eq!(problems(&conn(56020)), "");
    // Both startup frames are 24 octets: the first FPDU starts at stream offset 24.
    // CRC on: one bit of siw's first Read Request.
    let mut c = conn(56412);
    c.responder.data[24 + 30] ^= 0x80;
    assert!(problems(&c).contains("Crc"), "{}", problems(&c));
    // CRC off: a non-zero CRC field no longer re-emits (the Read Request FPDU is 52 octets).
    let mut c = conn(56020);
    c.responder.data[24 + 51] = 1;
    assert!(
        problems(&c).contains("re-emits differently"),
        "{}",
        problems(&c)
    );
    // A DDP version of 2 does not parse.
    let mut c = conn(56020);
    c.initiator.data[24 + 2] = 0x42;
    assert!(problems(&c).contains("DdpVersion(2)"), "{}", problems(&c));
    // The first Send with MSN 2 breaks sequencing.
    let mut c = conn(56020);
    c.initiator.data[24 + 2 + 13] = 2;
    assert!(problems(&c).contains("expected MSN 1"), "{}", problems(&c));
}
