//! FPDU framing (RFC 5044 §4): `[ULPDU_Length][ULPDU][pad][CRC]`.
//!
//! This module sees an FPDU without markers; [`super::marker`] inserts and strips them.

use crate::crc::{self, FpduCrc};
use crate::{Error, Result};

mod field {
    use core::ops::Range;
    pub(super) const ULPDU_LENGTH: Range<usize> = 0..2;
    pub(super) const ULPDU: usize = 2;
}

/// Octets of the ULPDU_Length field.
pub const LENGTH_LEN: usize = 2;
/// Octets of the CRC field (always present, zero when CRC is off).
pub const CRC_LEN: usize = 4;
/// Largest ULPDU an FPDU can carry (the length field is 16 bits).
pub const MAX_ULPDU: usize = u16::MAX as usize;

/// Pad octets after a ULPDU of `ulpdu_len` octets, so that length field, ULPDU and pad are a
/// multiple of 4.
pub const fn pad_len(ulpdu_len: usize) -> usize {
    (4 - (LENGTH_LEN + ulpdu_len) % 4) % 4
}

/// Octets of an FPDU carrying `ulpdu_len` octets, markers not counted.
pub const fn fpdu_len(ulpdu_len: usize) -> usize {
    LENGTH_LEN + ulpdu_len + pad_len(ulpdu_len) + CRC_LEN
}

/// MULPDU: the largest ULPDU whose FPDU fits one TCP segment of `emss` octets (RFC 5044 §4.4).
///
/// Without markers, `EMSS − (6 + EMSS mod 4)`. With markers the RFC also takes 4 octets per
/// marker that may fall in the segment: `EMSS − (6 + 4·⌈EMSS/512⌉ + EMSS mod 4)`. Returns 0 when
/// `emss` is too small for any payload.
///
/// ```
/// use netdirect_wire::mpa::{fpdu_len, mulpdu};
/// assert_eq!(mulpdu(1460, false), 1454);
/// assert_eq!(fpdu_len(1454), 1460);
/// assert_eq!(mulpdu(1460, true), 1442);
/// ```
pub const fn mulpdu(emss: usize, markers: bool) -> usize {
    let mut overhead = LENGTH_LEN + CRC_LEN + emss % 4;
    if markers {
        overhead += 4 * emss.div_ceil(super::marker::MARKER_INTERVAL);
    }
    let m = emss.saturating_sub(overhead);
    if m > MAX_ULPDU { MAX_ULPDU } else { m }
}

/// Octets of one GSO packet on Linux by default (`GSO_MAX_SIZE` of `lo` and most NICs).
pub const GSO_SIZE: usize = 64 * 1024;

/// The TCP send unit an FPDU is sized to, from the connection's MSS (`TCP_MAXSEG`): as siw's
/// `mss_cache × gso_segs`, with as many whole segments as fit one [`GSO_SIZE`] packet (at
/// least one). Pass it to [`mulpdu`]. An FPDU of this size leaves the sender as one GSO packet
/// that the NIC (or `lo`) cuts into whole MSS-sized segments; a peer that needs each FPDU
/// inside one wire segment (hardware RNICs) needs [`mulpdu`] of the MSS itself instead.
///
/// ```
/// use netdirect_wire::mpa::{gso_seglen, mulpdu};
/// assert_eq!(gso_seglen(1448), 45 * 1448);
/// assert_eq!(gso_seglen(32741), 2 * 32741); // lo
/// assert_eq!(gso_seglen(65483), 65483);
/// assert!(mulpdu(gso_seglen(32741), false) <= 65535);
/// ```
pub const fn gso_seglen(mss: usize) -> usize {
    if mss == 0 || mss >= GSO_SIZE {
        return mss;
    }
    mss * (GSO_SIZE / mss)
}

/// A read/write view of one FPDU (markers already stripped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FpduPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> FpduPacket<T> {
    /// Wraps a buffer without checking it; accessors may panic if it is too short.
    pub const fn new_unchecked(buffer: T) -> Self {
        FpduPacket { buffer }
    }

    /// Wraps a buffer after checking that it holds the whole FPDU its length field announces.
    /// The buffer may be longer (the next FPDU may follow).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        let len = packet.buffer.as_ref().len();
        if len < LENGTH_LEN || len < packet.total_len() {
            return Err(Error::Truncated);
        }
        Ok(packet)
    }

    /// ULPDU_Length: octets of the DDP segment.
    pub fn ulpdu_length(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::ULPDU_LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Octets of the whole FPDU: length field, ULPDU, pad, CRC.
    pub fn total_len(&self) -> usize {
        fpdu_len(usize::from(self.ulpdu_length()))
    }

    /// The ULPDU (one DDP segment).
    pub fn ulpdu(&self) -> &[u8] {
        let n = usize::from(self.ulpdu_length());
        &self.buffer.as_ref()[field::ULPDU..field::ULPDU + n]
    }

    /// The pad octets.
    pub fn pad(&self) -> &[u8] {
        let n = usize::from(self.ulpdu_length());
        let start = field::ULPDU + n;
        &self.buffer.as_ref()[start..start + pad_len(n)]
    }

    /// The CRC field as received (little-endian on the wire).
    pub fn crc(&self) -> u32 {
        let end = self.total_len();
        let b = &self.buffer.as_ref()[end - CRC_LEN..end];
        crc::from_wire([b[0], b[1], b[2], b[3]])
    }

    /// The CRC computed over length field, ULPDU and pad.
    pub fn compute_crc(&self) -> u32 {
        let end = self.total_len() - CRC_LEN;
        crc::crc32c(&self.buffer.as_ref()[..end])
    }

    /// Checks the CRC field against the frame.
    pub fn check_crc(&self) -> Result<()> {
        let (received, computed) = (self.crc(), self.compute_crc());
        if received != computed {
            return Err(Error::Crc { received, computed });
        }
        Ok(())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> FpduPacket<T> {
    /// Sets ULPDU_Length.
    pub fn set_ulpdu_length(&mut self, len: u16) {
        self.buffer.as_mut()[field::ULPDU_LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// The ULPDU, to be filled.
    pub fn ulpdu_mut(&mut self) -> &mut [u8] {
        let n = usize::from(self.ulpdu_length());
        &mut self.buffer.as_mut()[field::ULPDU..field::ULPDU + n]
    }

    /// Zeroes the pad and writes the CRC field: the CRC when `crc` is on, zero otherwise.
    pub fn fill_trailer(&mut self, crc: bool) {
        let n = usize::from(self.ulpdu_length());
        let pad_start = field::ULPDU + n;
        let end = self.total_len();
        self.buffer.as_mut()[pad_start..end - CRC_LEN].fill(0);
        let value = if crc { self.compute_crc() } else { 0 };
        self.buffer.as_mut()[end - CRC_LEN..end].copy_from_slice(&crc::to_wire(value));
    }
}

/// Writes a whole FPDU carrying `ulpdu` to the start of `out`; returns its length.
///
/// ```
/// use netdirect_wire::mpa::emit_fpdu;
/// let mut out = [0u8; 16];
/// assert_eq!(emit_fpdu(b"abc", false, &mut out), Ok(12));
/// assert_eq!(&out[..12], b"\x00\x03abc\x00\x00\x00\x00\x00\x00\x00");
/// ```
pub fn emit_fpdu(ulpdu: &[u8], crc: bool, out: &mut [u8]) -> Result<usize> {
    let header = header(ulpdu.len())?;
    let len = fpdu_len(ulpdu.len());
    let out = out.get_mut(..len).ok_or(Error::Truncated)?;
    out[..LENGTH_LEN].copy_from_slice(&header);
    out[LENGTH_LEN..LENGTH_LEN + ulpdu.len()].copy_from_slice(ulpdu);
    FpduPacket::new_unchecked(out).fill_trailer(crc);
    Ok(len)
}

/// The ULPDU_Length field for a ULPDU of `ulpdu_len` octets; fails over 65535.
pub fn header(ulpdu_len: usize) -> Result<[u8; LENGTH_LEN]> {
    u16::try_from(ulpdu_len)
        .map(u16::to_be_bytes)
        .map_err(|_| Error::TooLarge)
}

/// Pad and CRC field of an FPDU, for senders that write the length field, the DDP header and
/// the payload from separate buffers (a vectored write straight from registered memory).
///
/// Feed `crc` with every octet from the length field through the end of the ULPDU, then call
/// [`trailer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    bytes: [u8; 3 + CRC_LEN],
    len: usize,
}

impl Trailer {
    /// The trailer octets to send after the ULPDU.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Builds the trailer of an FPDU whose ULPDU has `ulpdu_len` octets; `crc` is the running CRC
/// over the length field and ULPDU, or `None` when CRC is off.
///
/// ```
/// use netdirect_wire::crc::FpduCrc;
/// use netdirect_wire::mpa::{emit_fpdu, header, trailer};
/// let ulpdu = b"hello";
/// let mut c = FpduCrc::new();
/// c.update(&header(ulpdu.len()).unwrap());
/// c.update(ulpdu);
/// let t = trailer(ulpdu.len(), Some(c));
/// let mut whole = [0u8; 16];
/// let n = emit_fpdu(ulpdu, true, &mut whole).unwrap();
/// assert_eq!(&whole[2 + ulpdu.len()..n], t.as_bytes());
/// ```
pub fn trailer(ulpdu_len: usize, crc: Option<FpduCrc>) -> Trailer {
    let pad = pad_len(ulpdu_len);
    let value = match crc {
        Some(mut c) => {
            c.update_zeros(pad);
            c.finish()
        }
        None => 0,
    };
    let mut bytes = [0u8; 3 + CRC_LEN];
    bytes[pad..pad + CRC_LEN].copy_from_slice(&crc::to_wire(value));
    Trailer {
        bytes,
        len: pad + CRC_LEN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads() {
        assert_eq!(pad_len(34), 0);
        assert_eq!(fpdu_len(34), 40);
        assert_eq!(fpdu_len(78), 84);
        assert_eq!(pad_len(0), 2);
        assert_eq!(pad_len(1), 1);
        assert_eq!(pad_len(3), 3);
        for n in 0..64 {
            assert_eq!((LENGTH_LEN + n + pad_len(n)) % 4, 0);
        }
    }

    #[test]
    fn siw_crc_vector() {
        // docs/spec/iwarp.md §1.5: a 36-octet FPDU from the siw harness, CRC 0x4EBB6A2D sent
        // least significant octet first.
        let mut fpdu: Vec<u8> = [
            0x00, 0x22, 0x41, 0x43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0x00, 0x00,
            0x7f, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0xab, 0xcd, 0x01, 0x00, 0x00, 0x00, 0x40,
        ]
        .to_vec();
        fpdu.extend_from_slice(&[0x2d, 0x6a, 0xbb, 0x4e]);
        let p = FpduPacket::new_checked(&fpdu[..]).unwrap();
        assert_eq!(p.ulpdu_length(), 34);
        assert_eq!(p.compute_crc(), 0x4EBB_6A2D);
        assert_eq!(p.check_crc(), Ok(()));
        fpdu[10] ^= 1;
        let p = FpduPacket::new_checked(&fpdu[..]).unwrap();
        assert!(matches!(
            p.check_crc(),
            Err(Error::Crc {
                received: 0x4EBB_6A2D,
                ..
            })
        ));
    }

    #[test]
    fn truncated_and_too_large() {
        assert_eq!(FpduPacket::new_checked(&[0u8][..]), Err(Error::Truncated));
        assert_eq!(
            FpduPacket::new_checked(&[0u8, 1, 0, 0, 0, 0, 0][..]),
            Err(Error::Truncated)
        );
        assert!(FpduPacket::new_checked(&[0u8, 1, 9, 0, 0, 0, 0, 0][..]).is_ok());
        assert_eq!(header(65536), Err(Error::TooLarge));
        let mut out = [0u8; 8];
        assert_eq!(emit_fpdu(b"abc", true, &mut out), Err(Error::Truncated));
    }

    #[test]
    fn mulpdu_fits_segment() {
        for emss in [536usize, 1200, 1448, 1460, 8960, 9000, 32768, 65495] {
            let m = mulpdu(emss, false);
            assert!(fpdu_len(m) <= emss, "emss {emss}");
            assert_eq!(pad_len(m), 0);
        }
        assert_eq!(mulpdu(4, false), 0);
        assert_eq!(mulpdu(200_000, false), MAX_ULPDU);
    }
}
