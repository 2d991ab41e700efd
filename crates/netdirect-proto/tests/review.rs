//! Review tests for the RDMAP stream: one engine driven directly with hand-built FPDUs, checked
//! against RFC 5040/5041 and against what Linux siw sends and expects (docs/spec/iwarp.md §7, siw
//! `siw_qp.c` / `siw_qp_rx.c`).
//!
//! Each test here once showed a defect of the engine (found in review) and now pins the fix.

use std::collections::HashMap;

use netdirect_proto::handshake::{Negotiated, ReadLimits, Role};
use netdirect_proto::stream::{
    Access, Dest, Event, Host, Payload, PostFlags, Request, Stream, TaggedError, TermCode,
    WorkCompletion,
};
use netdirect_types::Status;
use netdirect_wire::mpa::{self, Deframer, DeframerConfig};
use netdirect_wire::rdmap::{self, Message, ReadRequest};
use netdirect_wire::terminate::TermError;

use netdirect_test_support::rng::Rng;

/// A host that grants every access inside its regions and hands out receives of a fixed size.
#[derive(Default)]
struct TestHost {
    /// STag → (base TO, length).
    regions: HashMap<u32, (u64, u64)>,
    receives: Vec<(u64, u64)>,
    taken: usize,
}

impl Host for TestHost {
    type Lease = u32;

    fn tagged(&mut self, stag: u32, to: u64, len: u64, _: Access) -> Result<u32, TaggedError> {
        let &(base, size) = self.regions.get(&stag).ok_or(TaggedError::InvalidStag)?;
        let end = to.checked_add(len).ok_or(TaggedError::ToWrap)?;
        if to < base || end > base.saturating_add(size) {
            return Err(TaggedError::BaseBounds);
        }
        Ok(stag)
    }

    fn invalidate(&mut self, _: u32) -> Result<(), TaggedError> {
        Ok(())
    }

    fn take_receive(&mut self) -> Option<(u64, u64)> {
        let r = self.receives.get(self.taken).copied();
        self.taken += usize::from(r.is_some());
        r
    }
}

fn negotiated(role: Role, limits: ReadLimits) -> Negotiated {
    Negotiated {
        role,
        revision: 2,
        crc: false,
        markers_tx: false,
        markers_rx: false,
        limits,
        rtr: None,
        peer_private_data: Vec::new(),
    }
}

fn stream(role: Role, mulpdu: usize) -> Stream<u32> {
    Stream::new(&negotiated(role, ReadLimits { ird: 1, ord: 1 }), mulpdu)
}

/// One FPDU (CRC off) holding `ulpdu`.
fn fpdu(ulpdu: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; mpa::fpdu_len(ulpdu.len())];
    let n = mpa::emit_fpdu(ulpdu, false, &mut out).unwrap();
    out.truncate(n);
    out
}

/// One FPDU for `message` with `payload`.
fn frame(last: bool, message: Message<'_>, payload: &[u8]) -> Vec<u8> {
    let repr = rdmap::Repr {
        last,
        message,
        payload,
    };
    let mut ulpdu = vec![0u8; repr.buffer_len()];
    repr.emit(&mut ulpdu).unwrap();
    fpdu(&ulpdu)
}

/// Every frame the stream wants to send, as ULPDUs (payload octets filled with 0xEE).
fn transmit(s: &mut Stream<u32>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(f) = s.poll_transmit() {
        let mut ulpdu = f.header[2..].to_vec();
        let len = f.payload.as_ref().map_or(0, Payload::len) as usize;
        ulpdu.extend(std::iter::repeat_n(0xEE, len));
        out.push(ulpdu);
    }
    out
}

/// Feeds bytes; returns the placements (dest, octets).
fn receive(s: &mut Stream<u32>, host: &mut TestHost, bytes: &[u8]) -> Vec<(Dest<u32>, usize)> {
    s.push_input(bytes);
    let mut placed = Vec::new();
    while let Some(p) = s.poll_rx(host) {
        placed.push((p.dest, p.data.len()));
    }
    placed
}

fn events(s: &mut Stream<u32>) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn completions(s: &mut Stream<u32>) -> Vec<WorkCompletion> {
    std::iter::from_fn(|| s.poll_completion()).collect()
}

const SIGNALED: PostFlags = PostFlags {
    signaled: true,
    read_fence: false,
    local_invalidate: false,
};

/// siw's Terminate for a Send with Invalidate whose STag cannot be invalidated
/// (`siw_proc_send` → RDMAP / remote protection / 0x09; `siw_send_terminate` then sets M, D and
/// R but attaches only the failing frame's `struct iwarp_send`: 2 octets of length and the
/// 18-octet untagged DDP header, no 28-octet RDMAP header). The engine must report the peer's
/// Terminate, not treat it as a malformed segment and answer with a Terminate of its own.
#[test]
fn siw_terminate_with_r_and_send_header_is_received() {
    let mut s = stream(Role::Initiator, 1024);
    let mut host = TestHost::default();
    s.post(
        1,
        Request::Send {
            len: 4,
            solicited: false,
            invalidate: Some(0x1234_5600),
        },
        SIGNALED,
    )
    .unwrap();
    assert_eq!(transmit(&mut s).len(), 1);
    // The Terminate ULPDU exactly as siw builds it (42 octets).
    let mut ulpdu = vec![0x41, 0x47, 0, 0, 0, 0];
    ulpdu.extend_from_slice(&2u32.to_be_bytes()); // QN 2
    ulpdu.extend_from_slice(&1u32.to_be_bytes()); // MSN 1
    ulpdu.extend_from_slice(&0u32.to_be_bytes()); // MO 0
    ulpdu.extend_from_slice(&[0x01, 0x09, 0xE0, 0x00]); // RDMAP, type 1, code 0x09, M D R
    ulpdu.extend_from_slice(&4u16.to_be_bytes()); // payload length of the failing segment
    ulpdu.extend_from_slice(&[0x41, 0x44, 0x12, 0x34, 0x56, 0x00]); // Send with Invalidate
    ulpdu.extend_from_slice(&0u32.to_be_bytes()); // QN 0
    ulpdu.extend_from_slice(&1u32.to_be_bytes()); // MSN 1
    ulpdu.extend_from_slice(&0u32.to_be_bytes()); // MO 0
    assert_eq!(ulpdu.len(), 42);
    assert!(receive(&mut s, &mut host, &fpdu(&ulpdu)).is_empty());
    let code = TermCode {
        layer: 0,
        error_type: 1,
        error_code: 0x09,
    };
    assert_eq!(events(&mut s), vec![Event::TerminateReceived(code)]);
    assert!(
        transmit(&mut s).is_empty(),
        "a Terminate was sent in answer to the peer's Terminate"
    );
}

/// A Read Response for the right sink STag at the wrong tagged offset. The STag is valid, so
/// "invalid STag" is the wrong report; siw (`siw_rresp_check_ntoh`) and RFC 5041 call an offset
/// outside what the request allows a base/bounds violation (DDP tagged 0x01).
#[test]
fn read_response_at_wrong_offset_is_base_bounds() {
    let mut s = stream(Role::Initiator, 1024);
    let mut host = TestHost::default();
    host.regions.insert(0xA0, (0x1000, 100));
    s.post(
        1,
        Request::Read {
            len: 100,
            sink_stag: 0xA0,
            sink_to: 0x1000,
            stag: 0xB0,
            to: 0,
        },
        SIGNALED,
    )
    .unwrap();
    assert_eq!(transmit(&mut s).len(), 1);
    let wrong = frame(
        false,
        Message::ReadResponse {
            stag: 0xA0,
            to: 0x1010,
        },
        &[1; 16],
    );
    assert!(receive(&mut s, &mut host, &wrong).is_empty());
    assert_eq!(
        events(&mut s),
        vec![Event::TerminateSent(TermError::DdpTaggedBaseBounds.into())]
    );
}

/// A Read Response that ends (L set) before the requested size arrived. siw reports DDP tagged
/// base/bounds (`rresp len: … != …`); the engine reports RDMAP remote operation "unspecified".
/// Lower severity than the test above: both end the stream, but the peer's diagnosis differs.
#[test]
fn short_read_response_is_base_bounds() {
    let mut s = stream(Role::Initiator, 1024);
    let mut host = TestHost::default();
    host.regions.insert(0xA0, (0x1000, 100));
    s.post(
        1,
        Request::Read {
            len: 100,
            sink_stag: 0xA0,
            sink_to: 0x1000,
            stag: 0xB0,
            to: 0,
        },
        SIGNALED,
    )
    .unwrap();
    transmit(&mut s);
    let short = frame(
        true,
        Message::ReadResponse {
            stag: 0xA0,
            to: 0x1000,
        },
        &[1; 16],
    );
    receive(&mut s, &mut host, &short);
    assert_eq!(
        events(&mut s),
        vec![Event::TerminateSent(TermError::DdpTaggedBaseBounds.into())]
    );
}

/// An error detected while our multi-segment Send is half-way out. The Terminate is an untagged
/// message too (QN 2); sending it between two segments of the Send interleaves two untagged
/// messages, which siw refuses ("packet intersection", `siw_get_hdr`), so siw never sees our
/// Terminate. siw itself skips the Terminate when a send is in progress
/// (`siw_send_terminate`: "cannot send TERMINATE: op in progress"); finishing the message first
/// would do too.
#[test]
fn terminate_is_not_interleaved_into_an_unfinished_send() {
    // MULPDU 64: 46 payload octets per segment, so a 100-octet Send takes three segments.
    let mut s = stream(Role::Initiator, 64);
    let mut host = TestHost::default();
    s.post(
        1,
        Request::Send {
            len: 100,
            solicited: false,
            invalidate: None,
        },
        SIGNALED,
    )
    .unwrap();
    let first = s.poll_transmit().expect("first segment");
    let first_ulpdu = first.header[2..].to_vec();
    assert_eq!(first_ulpdu[0] & 0xC0, 0x00, "untagged, not last");
    // The peer sends a Send although we have no receive posted: DDP "no buffer".
    let bad = frame(
        true,
        Message::Send {
            msn: 1,
            mo: 0,
            solicited: false,
            invalidate: None,
        },
        b"x",
    );
    receive(&mut s, &mut host, &bad);
    assert_eq!(
        events(&mut s),
        vec![Event::TerminateSent(TermError::DdpUntaggedNoBuffer.into())]
    );
    // Whatever follows on the wire must not start another untagged message before the Send's
    // last segment.
    let mut open_untagged = true;
    for u in transmit(&mut s) {
        let untagged = u[0] & 0x80 == 0;
        let last = u[0] & 0x40 != 0;
        let qn = u32::from_be_bytes([u[6], u[7], u[8], u[9]]);
        if untagged && open_untagged {
            assert_eq!(
                qn,
                0,
                "QN {qn} message (opcode {}) interleaved into an unfinished Send",
                u[1] & 0x0F
            );
        }
        if untagged && qn == 0 {
            open_untagged = !last;
        }
    }
}

/// IRD is released when the response to an inbound Read Request has been handed out: with IRD 1
/// the peer may send its next Read Request as soon as the previous response is complete.
#[test]
fn ird_credit_returns_after_the_response() {
    let mut s = stream(Role::Responder, 1024);
    let mut host = TestHost::default();
    host.regions.insert(0xB0, (0, 4096));
    for msn in 1..=3 {
        let rr = frame(
            true,
            Message::ReadRequest {
                msn,
                request: ReadRequest {
                    sink_stag: 0xA0,
                    sink_to: 0x1000,
                    size: 3000,
                    source_stag: 0xB0,
                    source_to: 0,
                },
            },
            &[],
        );
        receive(&mut s, &mut host, &rr);
        let out = transmit(&mut s);
        // 3000 octets in segments of at most 1006.
        assert_eq!(out.len(), 3, "read {msn}");
        assert!(out.iter().all(|u| u[1] & 0x0F == 2));
        assert_eq!(out[2][0] & 0x40, 0x40);
    }
    assert_eq!(events(&mut s), vec![]);
    assert!(s.is_active());
}

/// Responses come back in request order, each at its own sink, with TOs advancing per segment,
/// even when several requests are queued (IRD 4).
#[test]
fn read_responses_in_request_order() {
    let mut s = Stream::new(
        &negotiated(Role::Responder, ReadLimits { ird: 4, ord: 4 }),
        1024,
    );
    let mut host = TestHost::default();
    host.regions.insert(0xB0, (0, 1 << 20));
    let mut wire = Vec::new();
    for msn in 1..=4u32 {
        wire.extend(frame(
            true,
            Message::ReadRequest {
                msn,
                request: ReadRequest {
                    sink_stag: 0xA0 + msn,
                    sink_to: 0x10_0000 * u64::from(msn),
                    size: 1500 * msn,
                    source_stag: 0xB0,
                    source_to: 7 * u64::from(msn),
                },
            },
            &[],
        ));
    }
    receive(&mut s, &mut host, &wire);
    let mut got: Vec<(u32, u64, usize, bool)> = Vec::new();
    while let Some(f) = s.poll_transmit() {
        let repr = rdmap::Repr::parse(&f.header[2..]).unwrap();
        let Message::ReadResponse { stag, to } = repr.message else {
            panic!("{:?}", repr.message)
        };
        let Some(Payload::Tagged { to: src, len, .. }) = f.payload else {
            panic!("no payload")
        };
        // The source offset advances with the sink offset.
        assert_eq!(
            src - 7 * u64::from(stag - 0xA0),
            to - 0x10_0000 * u64::from(stag - 0xA0)
        );
        got.push((stag, to, len as usize, repr.last));
    }
    let mut expect = Vec::new();
    for msn in 1..=4u32 {
        let total = 1500 * msn as usize;
        let mut off = 0;
        while off < total {
            // Equal shares of what is left, at most MULPDU − 18 each.
            let left = total - off;
            let n = left.div_ceil(left.div_ceil(1024 - 18));
            expect.push((
                0xA0 + msn,
                0x10_0000 * u64::from(msn) + off as u64,
                n,
                off + n == total,
            ));
            off += n;
        }
    }
    assert_eq!(got, expect);
}

/// A permissive host: every STag exists and spans all of 2⁶⁴ (so that the engine's own range
/// arithmetic is what gets exercised), and receives of random sizes.
struct Anything(Rng);

impl Host for Anything {
    type Lease = u32;

    fn tagged(&mut self, stag: u32, to: u64, len: u64, _: Access) -> Result<u32, TaggedError> {
        to.checked_add(len).ok_or(TaggedError::ToWrap)?;
        Ok(stag)
    }

    fn invalidate(&mut self, _: u32) -> Result<(), TaggedError> {
        Ok(())
    }

    fn take_receive(&mut self) -> Option<(u64, u64)> {
        let cap = self
            .0
            .pick(&[0, 1, 100, 5000, u64::from(u32::MAX), u64::MAX]);
        Some((self.0.next_u64(), cap))
    }
}

/// Hostile but well-framed input: random sequences of segments with header fields drawn from
/// edge values, against both roles, with our own work in flight. Nothing may panic, and the
/// engine must either stay active or report exactly one Terminate.
#[test]
fn hostile_segments_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let u32s = [0, 1, 2, 3, 0x7FFF_FFFF, 0xFFFF_FFFE, u32::MAX];
    let u64s = [0, 1, 0x1000, u64::MAX - 10, u64::MAX];
    for round in 0..2000 {
        let role = if round % 2 == 0 {
            Role::Initiator
        } else {
            Role::Responder
        };
        let mulpdu = rng.pick(&[64, 1000, 65535]);
        let limits = ReadLimits {
            ird: rng.pick(&[0, 1, 4]),
            ord: rng.pick(&[1, 2]),
        };
        let mut s: Stream<u32> = Stream::new(&negotiated(role, limits), mulpdu);
        let mut host = Anything(Rng(rng.next_u64() | 1));
        for wr in 0..rng.below(3) {
            let req = match rng.below(3) {
                0 => Request::Send {
                    len: rng.pick(&[0, 10, 70_000]),
                    solicited: false,
                    invalidate: None,
                },
                1 => Request::Write {
                    len: 100,
                    stag: 1,
                    to: rng.pick(&u64s),
                },
                _ => Request::Read {
                    len: rng.pick(&u32s),
                    sink_stag: rng.pick(&[1, 2]),
                    sink_to: rng.pick(&u64s),
                    stag: 3,
                    to: rng.pick(&u64s),
                },
            };
            let _ = s.post(wr, req, SIGNALED);
        }
        let mut wire = Vec::new();
        for _ in 0..1 + rng.below(6) {
            let payload = vec![0x5A; rng.pick(&[0, 1, 46, 1000])];
            let msn = rng.pick(&[1, 1, 2, 0, u32::MAX]);
            let message = match rng.below(6) {
                0 => Message::Write {
                    stag: rng.pick(&[1, 2]),
                    to: rng.pick(&u64s),
                },
                1 => Message::ReadResponse {
                    stag: rng.pick(&[1, 2]),
                    to: rng.pick(&u64s),
                },
                2 => Message::ReadRequest {
                    msn,
                    request: ReadRequest {
                        sink_stag: 9,
                        sink_to: rng.pick(&u64s),
                        size: rng.pick(&u32s),
                        source_stag: 3,
                        source_to: rng.pick(&u64s),
                    },
                },
                _ => Message::Send {
                    msn,
                    mo: rng.pick(&[0, 0, 1, 46, u32::MAX]),
                    solicited: rng.below(2) == 0,
                    invalidate: None,
                },
            };
            let payload = if matches!(message, Message::ReadRequest { .. }) {
                &[][..]
            } else {
                &payload[..]
            };
            wire.extend(frame(rng.below(3) != 0, message, payload));
        }
        // Interleave our transmissions with the input, in random chunks.
        let mut at = 0;
        let mut sent = Vec::new();
        while at < wire.len() {
            let n = 1 + rng.below((wire.len() - at) as u64) as usize;
            s.push_input(&wire[at..at + n]);
            at += n;
            while let Some(p) = s.poll_rx(&mut host) {
                let _ = p.data.len();
            }
            for _ in 0..rng.below(4) {
                if let Some(f) = s.poll_transmit() {
                    sent.push(f);
                }
            }
        }
        while let Some(f) = s.poll_transmit() {
            sent.push(f);
            // A hostile 4 GiB Read Request would take millions of frames: a prefix is enough.
            if sent.len() > 300 {
                break;
            }
        }
        let ev = events(&mut s);
        let terms = ev
            .iter()
            .filter(|e| matches!(e, Event::TerminateSent(_)))
            .count();
        assert!(terms <= 1, "round {round}: {ev:?}");
        assert_eq!(terms == 1, !s.is_active(), "round {round}: {ev:?}");
        let _ = completions(&mut s);
        // Every frame we sent parses.
        for f in &sent {
            let len = f.payload.as_ref().map_or(0, Payload::len) as usize;
            let mut ulpdu = f.header[2..].to_vec();
            ulpdu.extend(std::iter::repeat_n(0, len));
            assert_eq!(
                usize::from(u16::from_be_bytes([f.header[0], f.header[1]])),
                ulpdu.len()
            );
            rdmap::Repr::parse(&ulpdu)
                .unwrap_or_else(|e| panic!("round {round}: we sent an unparsable frame: {e}"));
        }
    }
}

/// What the engine sends back for a Terminate must itself deframe: sanity for the copy of a
/// failing Read Request (RDMAP remote protection: M, D, R and the 28-octet header, as siw).
#[test]
fn terminate_for_bad_read_request_copies_ddp_and_rdmap_headers() {
    let mut s = stream(Role::Responder, 1024);
    let mut host = TestHost::default();
    let rr = frame(
        true,
        Message::ReadRequest {
            msn: 1,
            request: ReadRequest {
                sink_stag: 0xA0,
                sink_to: 0x1000,
                size: 64,
                source_stag: 0xDEAD,
                source_to: 0,
            },
        },
        &[],
    );
    receive(&mut s, &mut host, &rr);
    assert_eq!(
        events(&mut s),
        vec![Event::TerminateSent(TermError::RdmapInvalidStag.into())]
    );
    let out: Vec<u8> = {
        let f = s.poll_transmit().expect("terminate");
        assert!(f.payload.is_none());
        let mut b = f.header.to_vec();
        b.extend_from_slice(mpa::trailer(f.header.len() - 2, None).as_bytes());
        b
    };
    let mut d = Deframer::new(DeframerConfig::default());
    d.push(&out);
    let ulpdu = d.next_ulpdu().unwrap().unwrap().to_vec();
    let repr = rdmap::Repr::parse(&ulpdu).unwrap();
    let Message::Terminate { msn, terminate } = repr.message else {
        panic!()
    };
    assert_eq!(msn, 1);
    assert!(terminate.m);
    let f = terminate.failing_ddp.expect("D");
    assert_eq!(f.header, &rr[2..20]);
    assert_eq!(terminate.rdmap_header, Some(&rr[20..48]));
    assert_eq!(f.segment_length, 0);
    assert!(s.poll_transmit().is_none());
    let _ = Status::SUCCESS;
}
