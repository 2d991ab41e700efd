//! MPA markers (RFC 5044 §5): insert and strip.
//!
//! When the receiver of a direction asked for markers (M in its startup frame), the sender puts
//! a 4-octet marker at every 512th octet of that direction's TCP sequence space, counted from the
//! first octet of the first FPDU. A marker is 16 reserved bits (zero) and a 16-bit FPDUPTR: the
//! number of octets from the start of the `ULPDU_Length` field of the FPDU the marker sits in to
//! the marker. A marker that falls exactly where an FPDU starts belongs to that FPDU and carries
//! FPDUPTR 0.
//!
//! FPDUs are multiples of 4 octets and the first one starts on a marker, so markers never split a
//! field: they fall at an FPDU start, between any two 4-octet groups of the ULPDU and pad, or
//! between the pad and the CRC. Markers count in the CRC but not in `ULPDU_Length` or the pad.
//!
//! Positions are TCP sequence numbers (or any 32-bit stream counter) and wrap: 2³² is a
//! multiple of 512, so marker positions stay right across the wrap.
//!
//! On receive we accept FPDUPTR measured from the `ULPDU_Length` field (the RFC's definition,
//! what we send) and, for an FPDU that starts with a marker, also measured from that leading
//! marker, since the two readings differ by 4 there and peers differ too. Wireshark 4.0 does not
//! check FPDUPTR at all.

use super::fpdu::{CRC_LEN, LENGTH_LEN, fpdu_len};
use crate::crc;
use crate::{Error, Result};

/// Octets of TCP sequence space between markers.
pub const MARKER_INTERVAL: usize = 512;
/// Octets of a marker.
pub const MARKER_LEN: usize = 4;
const GROUP: usize = 4;

/// Where the markers of one direction fall.
///
/// ```
/// use netdirect_wire::mpa::{MarkerLayout, emit_fpdu};
/// let layout = MarkerLayout::new(1000); // the first FPDU starts at sequence number 1000
/// let mut fpdu = [0u8; 600];
/// let n = emit_fpdu(&[7u8; 590], true, &mut fpdu).unwrap();
/// let mut raw = [0u8; 620];
/// let m = layout.insert(1000, &fpdu[..n], true, &mut raw).unwrap();
/// assert_eq!(m, n + 8); // a marker at 1000 and one at 1512
/// let mut out = Vec::new();
/// assert_eq!(layout.strip(1000, &raw[..m], true, &mut out), Ok(Some(m)));
/// // Everything but the CRC field, which covered the markers on the wire.
/// assert_eq!(out[..n - 4], fpdu[..n - 4]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MarkerLayout {
    base: u32,
}

impl MarkerLayout {
    /// Markers counted from `first_fpdu_seq`, the sequence number of the first octet of the first
    /// FPDU of the direction.
    pub const fn new(first_fpdu_seq: u32) -> Self {
        MarkerLayout {
            base: first_fpdu_seq,
        }
    }

    fn offset(&self, seq: u32) -> usize {
        seq.wrapping_sub(self.base) as usize % MARKER_INTERVAL
    }

    /// Whether a marker starts at `seq`.
    pub fn is_marker_at(&self, seq: u32) -> bool {
        self.offset(seq) == 0
    }

    fn check_aligned(&self, seq: u32) -> Result<()> {
        if self.offset(seq) % GROUP != 0 {
            return Err(Error::Marker);
        }
        Ok(())
    }

    /// Octets on the wire of an FPDU of `fpdu_len` octets (markers excluded) starting at `seq`.
    pub fn marked_len(&self, seq: u32, fpdu_len: usize) -> usize {
        let mut raw = 0usize;
        let mut logical = 0usize;
        while logical < fpdu_len {
            if self.is_marker_at(seq.wrapping_add(raw as u32)) {
                raw += MARKER_LEN;
            }
            raw += GROUP;
            logical += GROUP;
        }
        raw
    }

    /// Writes `fpdu` (an FPDU without markers, as [`super::emit_fpdu`] builds it) starting at
    /// sequence number `seq` to `out` with its markers, and rewrites its CRC field to cover them
    /// (zero when `crc` is off). Returns the octets written.
    ///
    /// `seq` must be a multiple of 4 octets past the layout's base, and `fpdu` a whole FPDU.
    pub fn insert(&self, seq: u32, fpdu: &[u8], crc: bool, out: &mut [u8]) -> Result<usize> {
        self.check_aligned(seq)?;
        if fpdu.len() < LENGTH_LEN + CRC_LEN
            || fpdu_len(usize::from(u16::from_be_bytes([fpdu[0], fpdu[1]]))) != fpdu.len()
        {
            return Err(Error::Malformed);
        }
        let total = self.marked_len(seq, fpdu.len());
        // FPDUPTR is 16 bits; MULPDU keeps real FPDUs far below this.
        if total > usize::from(u16::MAX) {
            return Err(Error::TooLarge);
        }
        let out = out.get_mut(..total).ok_or(Error::Truncated)?;
        let mut raw = 0usize;
        let mut length_field_at = 0usize;
        for group in fpdu.chunks_exact(GROUP) {
            if self.is_marker_at(seq.wrapping_add(raw as u32)) {
                let ptr = if raw == 0 {
                    length_field_at = MARKER_LEN;
                    0
                } else {
                    raw - length_field_at
                };
                out[raw..raw + 2].fill(0);
                // raw < total ≤ u16::MAX, checked above.
                out[raw + 2..raw + 4].copy_from_slice(&(ptr as u16).to_be_bytes());
                raw += MARKER_LEN;
            }
            out[raw..raw + GROUP].copy_from_slice(group);
            raw += GROUP;
        }
        let value = if crc {
            crc::crc32c(&out[..total - CRC_LEN])
        } else {
            0
        };
        out[total - CRC_LEN..].copy_from_slice(&crc::to_wire(value));
        Ok(total)
    }

    /// Reads one FPDU that starts at sequence number `seq` from `raw`, checks its markers (and
    /// its CRC when `crc` is on), and appends it without markers to `out`. The CRC field is
    /// appended as received: it covers the markers, so it is not the CRC of what is appended.
    ///
    /// Returns `Ok(None)` when `raw` does not hold the whole FPDU yet (nothing is appended), and
    /// `Ok(Some(n))` with the octets of `raw` it used.
    pub fn strip(
        &self,
        seq: u32,
        raw: &[u8],
        crc: bool,
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>> {
        self.check_aligned(seq)?;
        let start = out.len();
        let result = self.strip_inner(seq, raw, crc, out);
        if !matches!(result, Ok(Some(_))) {
            out.truncate(start);
        }
        result
    }

    fn strip_inner(
        &self,
        seq: u32,
        raw: &[u8],
        crc: bool,
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>> {
        let start = out.len();
        let mut at = 0usize;
        let mut length_field_at = 0usize;
        let mut total = usize::MAX;
        let mut crc_from = 0usize;
        while out.len() - start < total {
            if self.is_marker_at(seq.wrapping_add(at as u32)) {
                let Some(m) = raw.get(at..at + MARKER_LEN) else {
                    return Ok(None);
                };
                let ptr = usize::from(u16::from_be_bytes([m[2], m[3]]));
                let ok = if at == 0 {
                    length_field_at = MARKER_LEN;
                    ptr == 0
                } else {
                    ptr == at - length_field_at || ptr == at
                };
                if !ok {
                    return Err(Error::Marker);
                }
                at += MARKER_LEN;
            }
            let Some(g) = raw.get(at..at + GROUP) else {
                return Ok(None);
            };
            if out.len() == start {
                total = fpdu_len(usize::from(u16::from_be_bytes([g[0], g[1]])));
            }
            if out.len() - start + GROUP == total {
                crc_from = at;
            }
            out.extend_from_slice(g);
            at += GROUP;
        }
        if crc {
            let computed = crc::crc32c(&raw[..crc_from]);
            let f = &raw[crc_from..crc_from + CRC_LEN];
            let received = crc::from_wire([f[0], f[1], f[2], f[3]]);
            if received != computed {
                return Err(Error::Crc { received, computed });
            }
        }
        Ok(Some(at))
    }
}

#[cfg(test)]
mod tests {
    use super::super::emit_fpdu;
    use super::*;

    fn fpdu(n: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
        let mut out = vec![0u8; fpdu_len(n)];
        emit_fpdu(&payload, true, &mut out).unwrap();
        out
    }

    #[test]
    fn first_marker_leads_with_zero_pointer() {
        let layout = MarkerLayout::new(0);
        let f = fpdu(10);
        let mut raw = [0u8; 64];
        let n = layout.insert(0, &f, false, &mut raw).unwrap();
        assert_eq!(n, f.len() + 4);
        assert_eq!(raw[..4], [0, 0, 0, 0]);
        assert_eq!(raw[4..6], [0, 10]);
    }

    #[test]
    fn marker_inside_points_at_length_field() {
        let layout = MarkerLayout::new(0);
        // An FPDU starting at 500: the marker at 512 is 12 octets after its length field.
        let f = fpdu(100);
        let mut raw = [0u8; 200];
        let n = layout.insert(500, &f, true, &mut raw).unwrap();
        assert_eq!(n, f.len() + 4);
        assert_eq!(raw[12..16], [0, 0, 0, 12]);
        let mut out = Vec::new();
        assert_eq!(layout.strip(500, &raw[..n], true, &mut out), Ok(Some(n)));
        assert_eq!(out[..f.len() - 4], f[..f.len() - 4]);
        // The CRC covers the marker.
        raw[15] = 16;
        assert_eq!(
            layout.strip(500, &raw[..n], true, &mut out),
            Err(Error::Marker)
        );
        raw[15] = 12;
        raw[13] = 1; // reserved bits are not checked but are in the CRC
        assert!(matches!(
            layout.strip(500, &raw[..n], true, &mut out),
            Err(Error::Crc { .. })
        ));
    }

    #[test]
    fn marker_between_pad_and_crc() {
        let layout = MarkerLayout::new(0);
        // Length field at 4 (after the leading marker), 502 octets of ULPDU and pad: the CRC
        // group would start at raw 512, where the next marker goes.
        let f = fpdu(504);
        assert_eq!(f.len(), 512);
        let mut raw = vec![0u8; 600];
        let n = layout.insert(0, &f, true, &mut raw).unwrap();
        assert_eq!(n, 512 + 8);
        assert_eq!(raw[512..516], [0, 0, 0x01, 0xFC]);
        let mut out = Vec::new();
        assert_eq!(layout.strip(0, &raw[..n], true, &mut out), Ok(Some(n)));
        assert_eq!(out[..f.len() - 4], f[..f.len() - 4]);
    }

    #[test]
    fn incomplete_and_misaligned() {
        let layout = MarkerLayout::new(7);
        let f = fpdu(40);
        let mut raw = [0u8; 64];
        let n = layout.insert(7, &f, true, &mut raw).unwrap();
        let mut out = vec![1u8];
        for cut in 0..n {
            assert_eq!(layout.strip(7, &raw[..cut], true, &mut out), Ok(None));
            assert_eq!(out, [1]);
        }
        assert_eq!(
            layout.strip(9, &raw[..n], true, &mut out),
            Err(Error::Marker)
        );
        assert_eq!(layout.insert(9, &f, true, &mut raw), Err(Error::Marker));
        assert_eq!(
            layout.insert(7, &f[..f.len() - 4], true, &mut raw),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn wraps_with_sequence_numbers() {
        let layout = MarkerLayout::new(u32::MAX - 255);
        let f = fpdu(1000);
        let seq = u32::MAX - 255 + 4 * 10;
        let mut raw = vec![0u8; 1100];
        let n = layout.insert(seq, &f, true, &mut raw).unwrap();
        assert_eq!(n, f.len() + 8);
        let mut out = Vec::new();
        assert_eq!(layout.strip(seq, &raw[..n], true, &mut out), Ok(Some(n)));
        assert_eq!(out[..f.len() - 4], f[..f.len() - 4]);
    }
}
