//! Property tests: parse(emit(r)) == r for arbitrary valid reprs, arbitrary bytes never panic,
//! markers round-trip at every stream offset, and the deframer gives the same ULPDUs however
//! the stream is chunked.

use netdirect_wire::mpa::{
    self, Deframer, DeframerConfig, Enhanced, MarkerLayout, Rtr, StartupKind, StartupRepr,
};
use netdirect_wire::rdmap::{self, AtomicOp, AtomicRequest, AtomicResponse, Message, ReadRequest};
use netdirect_wire::terminate::{self, FailingDdp};
use netdirect_wire::{Error, fuzz};
use proptest::prelude::*;

fn enhanced() -> impl Strategy<Value = Enhanced> {
    (
        0..=mpa::MAX_IRD_ORD,
        0..=mpa::MAX_IRD_ORD,
        any::<bool>(),
        any::<[bool; 3]>(),
    )
        .prop_map(|(ird, ord, peer_to_peer, [send, write, read])| Enhanced {
            ird,
            ord,
            peer_to_peer,
            rtr: Rtr { send, write, read },
        })
}

fn startup_case() -> impl Strategy<Value = (StartupKind, [bool; 3], u8, Option<Enhanced>, Vec<u8>)>
{
    (
        any::<bool>(),
        any::<[bool; 3]>(),
        1u8..=2,
        proptest::option::of(enhanced()),
        0usize..=508,
    )
        .prop_flat_map(|(req, flags, rev, enh, len)| {
            let kind = if req {
                StartupKind::Request
            } else {
                StartupKind::Reply
            };
            let enh = if rev == 2 { enh } else { None };
            (
                Just(kind),
                Just(flags),
                Just(rev),
                Just(enh),
                proptest::collection::vec(any::<u8>(), len),
            )
        })
}

fn read_request() -> impl Strategy<Value = ReadRequest> {
    (
        any::<u32>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(
            |(sink_stag, sink_to, size, source_stag, source_to)| ReadRequest {
                sink_stag,
                sink_to,
                size,
                source_stag,
                source_to,
            },
        )
}

fn atomic_request() -> impl Strategy<Value = AtomicRequest> {
    (
        prop_oneof![
            Just(AtomicOp::FetchAdd),
            Just(AtomicOp::Swap),
            Just(AtomicOp::CompareSwap)
        ],
        any::<(u32, u32, u64)>(),
        any::<[u64; 4]>(),
    )
        .prop_map(
            |(op, (request_id, remote_stag, remote_to), [a, am, c, cm])| AtomicRequest {
                op,
                request_id,
                remote_stag,
                remote_to,
                add_or_swap: a,
                add_or_swap_mask: am,
                compare: c,
                compare_mask: cm,
            },
        )
}

/// Copied headers for Terminates: a real tagged or untagged DDP header.
fn copied_ddp(tagged: bool, seed: u8) -> Vec<u8> {
    let mut h = vec![seed; if tagged { 14 } else { 18 }];
    h[0] = if tagged { 0xC1 } else { 0x41 };
    h
}

#[derive(Debug, Clone)]
enum Case {
    Data(u8, bool, u32, u64, u32, Option<u32>),
    Read(u32, ReadRequest),
    Term(u8, u8, u8, bool, Option<(bool, u16)>, bool),
    Imm(u32, bool, [u8; 8]),
    AtomicReq(u32, AtomicRequest),
    AtomicResp(u32, u32, u64),
}

fn case() -> impl Strategy<Value = Case> {
    prop_oneof![
        (
            0u8..3,
            any::<bool>(),
            any::<u32>(),
            any::<u64>(),
            any::<u32>(),
            any::<Option<u32>>()
        )
            .prop_map(|(k, s, a, b, c, e)| Case::Data(k, s, a, b, c, e)),
        (any::<u32>(), read_request()).prop_map(|(m, r)| Case::Read(m, r)),
        (
            0u8..16,
            0u8..16,
            any::<u8>(),
            any::<bool>(),
            any::<Option<(bool, u16)>>(),
            any::<bool>()
        )
            .prop_map(|(l, t, c, m, d, r)| Case::Term(l, t, c, m, d, r)),
        (any::<u32>(), any::<bool>(), any::<[u8; 8]>()).prop_map(|(m, s, d)| Case::Imm(m, s, d)),
        (any::<u32>(), atomic_request()).prop_map(|(m, r)| Case::AtomicReq(m, r)),
        any::<(u32, u32, u64)>().prop_map(|(m, i, d)| Case::AtomicResp(m, i, d)),
    ]
}

fn check_case(case: Case, last: bool, payload: &[u8]) -> Result<(), TestCaseError> {
    let ddp_copy;
    let rdmap_copy = [0x5Au8; 28];
    let (message, payload): (Message<'_>, &[u8]) = match case {
        Case::Data(0, _, stag, to, ..) => (Message::Write { stag, to }, payload),
        Case::Data(1, _, stag, to, ..) => (Message::ReadResponse { stag, to }, payload),
        Case::Data(_, solicited, msn, _, mo, invalidate) => (
            Message::Send {
                msn,
                mo,
                solicited,
                invalidate,
            },
            payload,
        ),
        Case::Read(msn, request) => (Message::ReadRequest { msn, request }, &[]),
        Case::Term(layer, error_type, error_code, m, d, r) => {
            ddp_copy = d.map(|(tagged, _)| copied_ddp(tagged, error_code));
            let terminate = terminate::Repr {
                layer,
                error_type,
                error_code,
                m,
                failing_ddp: d.map(|(_, segment_length)| FailingDdp {
                    segment_length,
                    header: ddp_copy.as_deref().unwrap_or_default(),
                }),
                rdmap_header: r.then_some(&rdmap_copy[..]),
            };
            (Message::Terminate { msn: 1, terminate }, &[])
        }
        Case::Imm(msn, solicited, data) => (
            Message::ImmediateData {
                msn,
                solicited,
                data,
            },
            &[],
        ),
        Case::AtomicReq(msn, request) => (Message::AtomicRequest { msn, request }, &[]),
        Case::AtomicResp(msn, request_id, original_data) => (
            Message::AtomicResponse {
                msn,
                response: AtomicResponse {
                    request_id,
                    original_data,
                },
            },
            &[],
        ),
    };
    // Single-segment messages are always last.
    let last = last
        || !matches!(
            message,
            Message::Write { .. } | Message::ReadResponse { .. } | Message::Send { .. }
        );
    let repr = rdmap::Repr {
        last,
        message,
        payload,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    prop_assert_eq!(repr.emit(&mut buf), Ok(buf.len()));
    prop_assert_eq!(rdmap::Repr::parse(&buf), Ok(repr));
    // The same ULPDU inside an FPDU survives the deframer, CRC on.
    let mut fpdu = vec![0u8; mpa::fpdu_len(buf.len())];
    mpa::emit_fpdu(&buf, true, &mut fpdu).unwrap();
    let mut d = Deframer::new(DeframerConfig {
        crc: true,
        ..Default::default()
    });
    d.push(&fpdu);
    prop_assert_eq!(d.next_ulpdu(), Some(Ok(&buf[..])));
    // One byte short of the header is a clean error.
    let short = repr.header_len().saturating_sub(1);
    prop_assert!(rdmap::Repr::parse(&buf[..short]).is_err());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn startup_roundtrip((kind, [m, c, r], revision, enhanced, pd) in startup_case()) {
        let repr = StartupRepr {
            kind,
            markers: m,
            crc: c,
            reject: r && kind == StartupKind::Reply,
            revision,
            enhanced,
            private_data: &pd,
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        prop_assert_eq!(repr.emit(&mut buf), Ok(buf.len()));
        prop_assert_eq!(StartupRepr::parse(&buf), Ok(repr));
        prop_assert_eq!(StartupRepr::parse(&buf[..buf.len() - 1]), Err(Error::Truncated));
    }

    #[test]
    fn ulpdu_roundtrip(
        case in case(),
        last in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        check_case(case, last, &payload)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz::deframer(&data);
        fuzz::startup(&data);
        fuzz::ulpdu(&data);
        fuzz::fpdu(&data);
    }

    #[test]
    fn mutated_frames_never_panic(
        case in case(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        // Valid frames with a few bytes changed reach deeper than random bytes do.
        let payload = [0xA5u8; 40];
        let repr = match case {
            Case::Read(msn, request) => rdmap::Repr { last: true, message: Message::ReadRequest { msn, request }, payload: &[] },
            _ => rdmap::Repr { last: true, message: Message::Send { msn: 1, mo: 0, solicited: false, invalidate: None }, payload: &payload },
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf).unwrap();
        for (i, v) in flips {
            let at = i.index(buf.len());
            buf[at] = v;
        }
        fuzz::ulpdu(&buf);
        let mut fpdu = vec![0u8; mpa::fpdu_len(buf.len())];
        mpa::emit_fpdu(&buf, false, &mut fpdu).unwrap();
        let mut with_ctl = vec![0u8];
        with_ctl.extend_from_slice(&fpdu);
        fuzz::deframer(&with_ctl);
    }

    #[test]
    fn markers_roundtrip_at_every_offset(
        base in any::<u32>(),
        group in 0u32..(1 << 20),
        n in 0usize..1500,
        crc in any::<bool>(),
    ) {
        let layout = MarkerLayout::new(base);
        let seq = base.wrapping_add(group * 4);
        let payload: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
        let mut fpdu = vec![0u8; mpa::fpdu_len(n)];
        mpa::emit_fpdu(&payload, crc, &mut fpdu).unwrap();
        let mut raw = vec![0u8; layout.marked_len(seq, fpdu.len())];
        prop_assert_eq!(layout.insert(seq, &fpdu, crc, &mut raw), Ok(raw.len()));
        // Every 512th octet of sequence space, and no other, starts a marker.
        let markers = (0..raw.len()).filter(|&i| layout.is_marker_at(seq.wrapping_add(i as u32))).count();
        prop_assert_eq!(raw.len(), fpdu.len() + 4 * markers);
        let mut out = Vec::new();
        prop_assert_eq!(layout.strip(seq, &raw, crc, &mut out), Ok(Some(raw.len())));
        prop_assert_eq!(&out[..fpdu.len() - 4], &fpdu[..fpdu.len() - 4]);
        // A cut anywhere is "need more", never an error.
        let cut = (n * 31) % raw.len();
        prop_assert_eq!(layout.strip(seq, &raw[..cut], crc, &mut out), Ok(None));
    }

    #[test]
    fn deframer_is_chunking_invariant(
        sizes in proptest::collection::vec(0usize..2000, 1..12),
        chunks in proptest::collection::vec(1usize..700, 1..40),
        markers in any::<bool>(),
        base in any::<u32>(),
    ) {
        let config = DeframerConfig { crc: true, markers, first_seq: base };
        let layout = MarkerLayout::new(base);
        let mut wire = Vec::new();
        let mut seq = base;
        let payloads: Vec<Vec<u8>> =
            sizes.iter().enumerate().map(|(i, &n)| vec![i as u8; n]).collect();
        for p in &payloads {
            let mut f = vec![0u8; mpa::fpdu_len(p.len())];
            mpa::emit_fpdu(p, true, &mut f).unwrap();
            if markers {
                let mut raw = vec![0u8; layout.marked_len(seq, f.len())];
                layout.insert(seq, &f, true, &mut raw).unwrap();
                seq = seq.wrapping_add(raw.len() as u32);
                wire.extend_from_slice(&raw);
            } else {
                wire.extend_from_slice(&f);
            }
        }
        let mut d = Deframer::new(config);
        let mut got = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < wire.len() {
            let n = chunks[i % chunks.len()].min(wire.len() - at);
            d.push(&wire[at..at + n]);
            at += n;
            i += 1;
            while let Some(r) = d.next_ulpdu() {
                got.push(r.unwrap().to_vec());
            }
        }
        prop_assert_eq!(got, payloads);
        prop_assert_eq!(d.buffered(), 0);
    }
}
