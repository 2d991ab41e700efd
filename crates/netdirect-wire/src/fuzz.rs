//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the corpus replay test, so CI
//! runs exactly what the fuzzer runs. Each must never panic, whatever the input.

use crate::mpa::{Deframer, DeframerConfig, FpduPacket, MarkerLayout, StartupRepr};
use crate::{ddp, rdmap, terminate};

/// Feeds `data` to deframers in every configuration, chunked by its own bytes, and parses every
/// ULPDU that comes out down to RDMAP; parsed frames must re-emit to what was parsed.
pub fn deframer(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let config = DeframerConfig {
        crc: ctl & 1 != 0,
        markers: ctl & 2 != 0,
        first_seq: u32::from(ctl >> 2).wrapping_mul(0x0101_0101),
    };
    let mut d = Deframer::new(config);
    let step = usize::from(ctl % 7) + 1;
    for chunk in rest.chunks(step) {
        d.push(chunk);
        while let Some(r) = d.next_ulpdu() {
            match r {
                Ok(ulpdu) => rdmap_roundtrip(ulpdu),
                Err(_) => return,
            }
        }
    }
}

/// Parses `data` as an MPA startup frame; re-emits what parses and checks it round-trips.
pub fn startup(data: &[u8]) {
    if let Ok(r) = StartupRepr::parse(data) {
        let mut buf = vec![0u8; r.buffer_len()];
        let n = r.emit(&mut buf).expect("a parsed startup frame re-emits");
        assert_eq!(StartupRepr::parse(&buf[..n]), Ok(r));
    }
}

/// Parses `data` as one ULPDU through DDP and RDMAP, and as a Terminate body.
pub fn ulpdu(data: &[u8]) {
    let _ = ddp::Repr::parse(data);
    rdmap_roundtrip(data);
    if let Ok(t) = terminate::Repr::parse(data) {
        let mut buf = vec![0u8; t.buffer_len()];
        t.emit(&mut buf).expect("a parsed terminate re-emits");
        assert_eq!(terminate::Repr::parse(&buf), Ok(t));
    }
}

/// Views `data` as an FPDU and strips markers at a position chosen by its first bytes.
pub fn fpdu(data: &[u8]) {
    if let Ok(p) = FpduPacket::new_checked(data) {
        let _ = (p.check_crc(), p.ulpdu(), p.pad());
    }
    if data.len() >= 4 {
        let base = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        let layout = MarkerLayout::new(base & !3);
        let mut out = Vec::new();
        let seq = base.wrapping_add(u32::from(data[3]) * 4);
        let _ = layout.strip(seq, &data[4..], true, &mut out);
    }
}

fn rdmap_roundtrip(ulpdu: &[u8]) {
    if let Ok(r) = rdmap::Repr::parse(ulpdu) {
        let mut buf = vec![0u8; r.buffer_len()];
        let n = r.emit(&mut buf).expect("a parsed ULPDU re-emits");
        assert_eq!(rdmap::Repr::parse(&buf[..n]), Ok(r));
    }
}
