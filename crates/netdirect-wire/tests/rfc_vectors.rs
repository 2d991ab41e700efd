//! Byte vectors written by hand from the RFC layouts, one per frame kind: each must parse to the
//! expected values and the values must emit the same bytes.

use netdirect_wire::mpa::{
    self, Deframer, DeframerConfig, Enhanced, Rtr, StartupKind, StartupRepr,
};
use netdirect_wire::rdmap::{
    self, AtomicOp, AtomicRequest, AtomicResponse, Message, Opcode, ReadRequest,
};
use netdirect_wire::terminate::{self, FailingDdp, TermError};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn check_startup(bytes: &[u8], expected: StartupRepr<'_>) {
    assert_eq!(StartupRepr::parse(bytes), Ok(expected));
    let mut out = vec![0u8; expected.buffer_len()];
    assert_eq!(expected.emit(&mut out), Ok(bytes.len()));
    assert_eq!(out, bytes);
}

/// `fpdu` is a whole FPDU with CRC; checks framing, CRC, and the ULPDU both ways.
fn check_fpdu(fpdu: &[u8], expected: rdmap::Repr<'_>) {
    let mut d = Deframer::new(DeframerConfig {
        crc: true,
        ..Default::default()
    });
    d.push(fpdu);
    let ulpdu = d
        .next_ulpdu()
        .expect("a whole FPDU")
        .expect("good CRC")
        .to_vec();
    assert_eq!(d.buffered(), 0);
    assert_eq!(rdmap::Repr::parse(&ulpdu), Ok(expected));
    let mut u = vec![0u8; expected.buffer_len()];
    expected.emit(&mut u).unwrap();
    let mut f = vec![0u8; mpa::fpdu_len(u.len())];
    mpa::emit_fpdu(&u, true, &mut f).unwrap();
    assert_eq!(f, fpdu);
}

/// Builds a whole FPDU around a hand-written ULPDU (the CRC is the one computed value).
fn framed(ulpdu_hex: &str) -> Vec<u8> {
    let u = hex(ulpdu_hex);
    let mut f = vec![0u8; mpa::fpdu_len(u.len())];
    mpa::emit_fpdu(&u, true, &mut f).unwrap();
    assert_eq!(f[..2], (u.len() as u16).to_be_bytes());
    assert_eq!(f[2..2 + u.len()], u);
    f
}

#[test]
fn mpa_request_revision_1() {
    // RFC 5044 §7.1: key, flags M|C (0xC0), Rev 1, PD_Length 3, "abc".
    let bytes = hex("4d504120494420526571204672616d65 c0 01 0003 616263");
    check_startup(
        &bytes,
        StartupRepr {
            kind: StartupKind::Request,
            markers: true,
            crc: true,
            reject: false,
            revision: 1,
            enhanced: None,
            private_data: b"abc",
        },
    );
}

#[test]
fn mpa_request_enhanced() {
    // RFC 6581: Rev 2, enhanced bit 0x10 with C, IRD 16 ORD 4 with P, Z and R set, then "xy".
    let bytes = hex("4d504120494420526571204672616d65 50 02 0006 c010 4004 7879");
    check_startup(
        &bytes,
        StartupRepr {
            kind: StartupKind::Request,
            markers: false,
            crc: true,
            reject: false,
            revision: 2,
            enhanced: Some(Enhanced {
                ird: 16,
                ord: 4,
                peer_to_peer: true,
                rtr: Rtr {
                    send: true,
                    write: false,
                    read: true,
                },
            }),
            private_data: b"xy",
        },
    );
}

#[test]
fn mpa_reply_reject() {
    // Reply with R (0x20), Rev 2 enhanced, IRD/ORD 0, reason "no".
    let bytes = hex("4d504120494420526570204672616d65 30 02 0006 0000 0000 6e6f");
    check_startup(
        &bytes,
        StartupRepr {
            kind: StartupKind::Reply,
            markers: false,
            crc: false,
            reject: true,
            revision: 2,
            enhanced: Some(Enhanced::default()),
            private_data: b"no",
        },
    );
}

#[test]
fn fpdu_padding_and_crc() {
    // ULPDU lengths 18..=21 need pads 0, 3, 2, 1.
    for (n, pad) in [(18usize, 0usize), (19, 3), (20, 2), (21, 1)] {
        assert_eq!(mpa::pad_len(n), pad);
        let u = vec![0x41u8; n];
        let mut f = vec![0u8; mpa::fpdu_len(n)];
        mpa::emit_fpdu(&u, true, &mut f).unwrap();
        assert_eq!(f.len(), 2 + n + pad + 4);
        assert!(f[2 + n..2 + n + pad].iter().all(|&b| b == 0));
        let crc = netdirect_wire::crc::crc32c(&f[..2 + n + pad]);
        assert_eq!(f[2 + n + pad..], crc.to_le_bytes());
    }
}

#[test]
fn rdma_write() {
    // Tagged, L, DV 1; RV 1 opcode 0; STag 0x01020304; TO 0x1122334455667788; 4 octets.
    let f = framed("c1 40 01020304 1122334455667788 deadbeef");
    check_fpdu(
        &f,
        rdmap::Repr {
            last: true,
            message: Message::Write {
                stag: 0x0102_0304,
                to: 0x1122_3344_5566_7788,
            },
            payload: &[0xde, 0xad, 0xbe, 0xef],
        },
    );
}

#[test]
fn rdma_write_middle_segment() {
    let f = framed("81 40 00000001 0000000000001000 00");
    check_fpdu(
        &f,
        rdmap::Repr {
            last: false,
            message: Message::Write {
                stag: 1,
                to: 0x1000,
            },
            payload: &[0],
        },
    );
}

#[test]
fn rdma_read_request() {
    // Untagged, L; opcode 1; QN 1, MSN 2, MO 0; sink 0xa/0x10, 0x100 octets, source 0xb/0x20.
    let f = framed(
        "41 41 00000000 00000001 00000002 00000000
         0000000a 0000000000000010 00000100 0000000b 0000000000000020",
    );
    check_fpdu(
        &f,
        rdmap::Repr {
            last: true,
            message: Message::ReadRequest {
                msn: 2,
                request: ReadRequest {
                    sink_stag: 0xa,
                    sink_to: 0x10,
                    size: 0x100,
                    source_stag: 0xb,
                    source_to: 0x20,
                },
            },
            payload: &[],
        },
    );
}

#[test]
fn rdma_read_response() {
    let f = framed("c1 42 0000000a 0000000000000010 0102");
    check_fpdu(
        &f,
        rdmap::Repr {
            last: true,
            message: Message::ReadResponse {
                stag: 0xa,
                to: 0x10,
            },
            payload: &[1, 2],
        },
    );
}

#[test]
fn send_family() {
    let cases = [
        ("41 43 00000000", Opcode::Send, false, None),
        (
            "41 44 cafef00d",
            Opcode::SendInvalidate,
            false,
            Some(0xcafe_f00d),
        ),
        ("41 45 00000000", Opcode::SendSe, true, None),
        (
            "41 46 cafef00d",
            Opcode::SendSeInvalidate,
            true,
            Some(0xcafe_f00d),
        ),
    ];
    for (head, opcode, solicited, invalidate) in cases {
        // QN 0, MSN 5, MO 0x40, payload "hi".
        let f = framed(&format!("{head} 00000000 00000005 00000040 6869"));
        let repr = rdmap::Repr {
            last: true,
            message: Message::Send {
                msn: 5,
                mo: 0x40,
                solicited,
                invalidate,
            },
            payload: b"hi",
        };
        assert_eq!(repr.message.opcode(), opcode);
        check_fpdu(&f, repr);
    }
}

#[test]
fn terminate_control_only() {
    // QN 2, MSN 1, MO 0; LLP (2) type 0 code 0x06 insufficient IRD; no headers.
    let f = framed("41 47 00000000 00000002 00000001 00000000 20 06 0000");
    check_fpdu(
        &f,
        rdmap::Repr {
            last: true,
            message: Message::Terminate {
                msn: 1,
                terminate: terminate::Repr::new(TermError::LlpInsufficientIrd),
            },
            payload: &[],
        },
    );
}

#[test]
fn terminate_with_copied_headers() {
    // RDMAP (0) remote protection (1) access rights (0x02), M|D|R; segment length 0x1c, the
    // failing Read Request's 18-octet DDP header and its 28-octet RDMAP header.
    let ddp = "41 41 00000000 00000001 00000001 00000000";
    let rr = "0000000a 0000000000000010 00000100 0000000b 0000000000000020";
    let f = framed(&format!(
        "41 47 00000000 00000002 00000001 00000000 01 02 e000 001c {ddp} {rr}"
    ));
    let (ddp, rr) = (hex(ddp), hex(rr));
    check_fpdu(
        &f,
        rdmap::Repr {
            last: true,
            message: Message::Terminate {
                msn: 1,
                terminate: terminate::Repr {
                    m: true,
                    failing_ddp: Some(FailingDdp {
                        segment_length: 0x1c,
                        header: &ddp,
                    }),
                    rdmap_header: Some(&rr),
                    ..terminate::Repr::new(TermError::RdmapAccessRights)
                },
            },
            payload: &[],
        },
    );
}

#[test]
fn terminate_ddp_tagged_error() {
    // DDP (1) tagged (1) base/bounds (0x01), M|D, with a copied 14-octet tagged header.
    let ddp = "c1 40 00000001 0000000000000000";
    let f = framed(&format!(
        "41 47 00000000 00000002 00000001 00000000 11 01 c000 0400 {ddp}"
    ));
    let ddp = hex(ddp);
    let t = match rdmap::Repr::parse(&f[2..f.len() - 4]).unwrap().message {
        Message::Terminate { terminate, .. } => terminate,
        m => panic!("{m:?}"),
    };
    assert_eq!(t.error(), Some(TermError::DdpTaggedBaseBounds));
    assert_eq!(
        t.failing_ddp,
        Some(FailingDdp {
            segment_length: 0x400,
            header: &ddp
        })
    );
    assert_eq!(t.rdmap_header, None);
}

#[test]
fn rfc7306_immediate_data() {
    let f = framed("41 48 00000000 00000000 00000003 00000000 0102030405060708");
    check_fpdu(
        &f,
        rdmap::Repr {
            last: true,
            message: Message::ImmediateData {
                msn: 3,
                solicited: false,
                data: [1, 2, 3, 4, 5, 6, 7, 8],
            },
            payload: &[],
        },
    );
    let f = framed("41 49 00000000 00000000 00000004 00000000 0102030405060708");
    check_fpdu(
        &f,
        rdmap::Repr {
            last: true,
            message: Message::ImmediateData {
                msn: 4,
                solicited: true,
                data: [1, 2, 3, 4, 5, 6, 7, 8],
            },
            payload: &[],
        },
    );
}

#[test]
fn rfc7306_atomics() {
    // Atomic Request on QN 1: CompareSwap (2), id 9, target STag 0x10 TO 0x800.
    let f = framed(
        "41 4a 00000000 00000001 00000007 00000000
         00000002 00000009 00000010 0000000000000800
         0000000000000005 ffffffffffffffff 0000000000000004 ffffffffffffffff",
    );
    check_fpdu(
        &f,
        rdmap::Repr {
            last: true,
            message: Message::AtomicRequest {
                msn: 7,
                request: AtomicRequest {
                    op: AtomicOp::CompareSwap,
                    request_id: 9,
                    remote_stag: 0x10,
                    remote_to: 0x800,
                    add_or_swap: 5,
                    add_or_swap_mask: u64::MAX,
                    compare: 4,
                    compare_mask: u64::MAX,
                },
            },
            payload: &[],
        },
    );
    // Atomic Response on QN 3.
    let f = framed("41 4b 00000000 00000003 00000007 00000000 00000009 0000000000000004");
    check_fpdu(
        &f,
        rdmap::Repr {
            last: true,
            message: Message::AtomicResponse {
                msn: 7,
                response: AtomicResponse {
                    request_id: 9,
                    original_data: 4,
                },
            },
            payload: &[],
        },
    );
    // An unknown atomic opcode is malformed.
    let bad = hex(
        "41 4a 00000000 00000001 00000007 00000000 0000000f 00000009 00000010 0000000000000800
         0000000000000005 ffffffffffffffff 0000000000000004 ffffffffffffffff",
    );
    assert_eq!(
        rdmap::Repr::parse(&bad),
        Err(netdirect_wire::Error::Malformed)
    );
}

#[test]
fn every_opcode_has_a_vector() {
    // The tests above cover each opcode; this pins the table they rely on.
    let tagged: Vec<_> = Opcode::ALL.iter().filter(|o| o.is_tagged()).collect();
    assert_eq!(tagged, [&Opcode::Write, &Opcode::ReadResponse]);
    let qns: Vec<_> = Opcode::ALL.iter().map(|o| o.queue_number()).collect();
    assert_eq!(
        qns,
        [
            None,
            Some(1),
            None,
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(2),
            Some(0),
            Some(0),
            Some(1),
            Some(3)
        ]
    );
    for (i, o) in Opcode::ALL.iter().enumerate() {
        assert_eq!(*o as usize, i);
        assert_eq!(rdmap::control(*o), 0x40 | i as u8);
    }
}
