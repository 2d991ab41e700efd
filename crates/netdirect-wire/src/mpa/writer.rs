//! Building FPDUs for sending: the length field and headers, the payload from one or more
//! spans, pad, CRC, and markers when negotiated.

use super::fpdu::{LENGTH_LEN, Trailer, fpdu_len, trailer};
use super::marker::MarkerLayout;
use crate::crc::FpduCrc;
use crate::{Error, Result};

/// Writes the FPDUs of one direction of a connection as negotiated (CRC, markers).
///
/// The sender hands it each frame as the RDMAP engine describes it: `head` is the ULPDU_Length
/// field followed by the DDP/RDMAP headers, `payload` the payload in pieces (straight from
/// registered memory, say). [`FpduWriter::append`] builds the whole FPDU at the end of a
/// buffer (coalescing small frames); [`FpduWriter::trailer`] gives only pad and CRC, for a
/// vectored write that sends head and payload from where they are. `seq` is the stream
/// offset (mod 2³²) of the FPDU's first octet, where markers are placed from.
///
/// ```
/// use netdirect_wire::mpa::{Deframer, DeframerConfig, FpduWriter, MarkerLayout};
/// let writer = FpduWriter { crc: true, markers: Some(MarkerLayout::new(0)) };
/// let (mut out, mut scratch) = (Vec::new(), Vec::new());
/// let payload = [0x5Au8; 1000];
/// let mut seq = 0;
/// for _ in 0..3 {
///     let head = [0x03, 0xE8]; // ULPDU_Length 1000, no header in this example
///     seq += writer.append(seq, &head, &[&payload[..400], &payload[400..]], &mut scratch, &mut out)? as u32;
/// }
/// let mut d = Deframer::new(DeframerConfig { crc: true, markers: true, first_seq: 0 });
/// d.push(&out);
/// for _ in 0..3 {
///     assert_eq!(d.next_ulpdu(), Some(Ok(&payload[..])));
/// }
/// # Ok::<(), netdirect_wire::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FpduWriter {
    /// CRC was negotiated: every FPDU carries its CRC32c (zero otherwise).
    pub crc: bool,
    /// The peer asked for markers in what we send, placed from this layout.
    pub markers: Option<MarkerLayout>,
}

impl FpduWriter {
    /// Checks that `head`'s ULPDU_Length matches what follows it; returns the ULPDU length.
    fn ulpdu_len(head: &[u8], payload: &[&[u8]]) -> Result<usize> {
        let [a, b, ..] = *head else {
            return Err(Error::Truncated);
        };
        let ulpdu = head.len() - LENGTH_LEN + payload.iter().map(|p| p.len()).sum::<usize>();
        if usize::from(u16::from_be_bytes([a, b])) != ulpdu {
            return Err(Error::Malformed);
        }
        Ok(ulpdu)
    }

    /// Pad and CRC field of the FPDU made of `head` and `payload` (no markers: with markers
    /// the FPDU must be built whole, [`FpduWriter::append`]).
    pub fn trailer(&self, head: &[u8], payload: &[&[u8]]) -> Result<Trailer> {
        if self.markers.is_some() {
            return Err(Error::Malformed);
        }
        let ulpdu = Self::ulpdu_len(head, payload)?;
        let crc = self.crc.then(|| {
            let mut c = FpduCrc::new();
            c.update(head);
            for p in payload {
                c.update(p);
            }
            c
        });
        Ok(trailer(ulpdu, crc))
    }

    /// Appends the FPDU made of `head` and `payload` to `out`, with markers when negotiated
    /// (built in `scratch` first, which is left holding the unmarked FPDU); returns the octets
    /// appended (what the stream offset moves by). Fails, appending nothing, when `head`'s
    /// length field does not match the frame or a marker would not fit.
    pub fn append(
        &self,
        seq: u32,
        head: &[u8],
        payload: &[&[u8]],
        scratch: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<usize> {
        let ulpdu = Self::ulpdu_len(head, payload)?;
        let Some(layout) = self.markers else {
            let start = out.len();
            Self::plain(self.crc, ulpdu, head, payload, out);
            return Ok(out.len() - start);
        };
        scratch.clear();
        Self::plain(self.crc, ulpdu, head, payload, scratch);
        let start = out.len();
        out.resize(start + layout.marked_len(seq, scratch.len()), 0);
        match layout.insert(seq, scratch, self.crc, &mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                Ok(n)
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    fn plain(crc_on: bool, ulpdu: usize, head: &[u8], payload: &[&[u8]], out: &mut Vec<u8>) {
        let start = out.len();
        out.reserve(fpdu_len(ulpdu));
        out.extend_from_slice(head);
        for p in payload {
            out.extend_from_slice(p);
        }
        let crc = crc_on.then(|| {
            let mut c = FpduCrc::new();
            c.update(&out[start..]);
            c
        });
        out.extend_from_slice(trailer(ulpdu, crc).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Deframer, DeframerConfig, emit_fpdu};
    use super::*;

    #[test]
    fn pieces_make_the_same_fpdu_as_emit_fpdu() {
        let ulpdu: Vec<u8> = (0..=254u8).collect();
        for crc in [false, true] {
            let mut whole = vec![0u8; fpdu_len(ulpdu.len())];
            emit_fpdu(&ulpdu, crc, &mut whole).unwrap();
            let w = FpduWriter { crc, markers: None };
            let head = [&[0u8, 255][..], &ulpdu[..10]].concat();
            let (mut out, mut scratch) = (Vec::new(), Vec::new());
            let n = w
                .append(
                    0,
                    &head,
                    &[&ulpdu[10..100], &ulpdu[100..]],
                    &mut scratch,
                    &mut out,
                )
                .unwrap();
            assert_eq!(n, whole.len());
            assert_eq!(out, whole);
            let t = w.trailer(&head, &[&ulpdu[10..]]).unwrap();
            assert_eq!(t.as_bytes(), &whole[2 + ulpdu.len()..]);
        }
    }

    #[test]
    fn a_wrong_length_field_or_markers_without_a_whole_frame_are_refused() {
        let w = FpduWriter::default();
        let (mut out, mut scratch) = (vec![7], Vec::new());
        assert_eq!(
            w.append(0, &[0, 5], &[b"abcd"], &mut scratch, &mut out),
            Err(Error::Malformed)
        );
        assert_eq!(
            w.append(0, &[0], &[], &mut scratch, &mut out),
            Err(Error::Truncated)
        );
        assert_eq!(out, [7]);
        let marked = FpduWriter {
            crc: false,
            markers: Some(MarkerLayout::new(0)),
        };
        assert_eq!(marked.trailer(&[0, 0], &[]), Err(Error::Malformed));
    }

    #[test]
    fn marked_fpdus_deframe_across_marker_positions() {
        let config = DeframerConfig {
            crc: true,
            markers: true,
            first_seq: 0xFFFF_FE00,
        };
        let w = FpduWriter {
            crc: true,
            markers: Some(MarkerLayout::new(config.first_seq)),
        };
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        let mut seq = config.first_seq;
        let payloads: Vec<Vec<u8>> = (0..12).map(|i| vec![i as u8; i * 131 % 900]).collect();
        for p in &payloads {
            let head = u16::try_from(p.len()).unwrap().to_be_bytes();
            let n = w.append(seq, &head, &[p], &mut scratch, &mut out).unwrap();
            seq = seq.wrapping_add(n as u32);
        }
        let mut d = Deframer::new(config);
        d.push(&out);
        for p in &payloads {
            assert_eq!(d.next_ulpdu(), Some(Ok(&p[..])));
        }
        assert_eq!(d.buffered(), 0);
    }
}
