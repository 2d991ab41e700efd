//! DDP segment headers (RFC 5041 §4): tagged (14 octets) and untagged (18 octets).
//!
//! ```text
//! octet 0: T(0x80) L(0x40) reserved(0x3C) DV(0x03)    octet 1: RsvdULP (RDMAP control)
//! tagged:   2-5 STag        6-13 TO (64-bit)
//! untagged: 2-5 RsvdULP     6-9 QN     10-13 MSN     14-17 MO
//! ```
//!
//! The ULP fields (octet 1, and octets 2-5 of an untagged header) belong to RDMAP; this layer
//! carries them as opaque values and [`crate::rdmap`] gives them meaning.

use crate::{Error, Result};

mod field {
    use core::ops::Range;
    pub(super) const CONTROL: usize = 0;
    pub(super) const RSVD_ULP: usize = 1;
    pub(super) const STAG: Range<usize> = 2..6;
    pub(super) const TO: Range<usize> = 6..14;
    pub(super) const RSVD_ULP32: Range<usize> = 2..6;
    pub(super) const QN: Range<usize> = 6..10;
    pub(super) const MSN: Range<usize> = 10..14;
    pub(super) const MO: Range<usize> = 14..18;

    pub(super) const T: u8 = 0x80;
    pub(super) const L: u8 = 0x40;
    pub(super) const DV: u8 = 0x03;
}

/// Octets of a tagged DDP header.
pub const TAGGED_HEADER_LEN: usize = 14;
/// Octets of an untagged DDP header.
pub const UNTAGGED_HEADER_LEN: usize = 18;
/// The DDP version this crate speaks (RFC 5041).
pub const VERSION: u8 = 1;

/// A read/write view of one DDP segment (a whole ULPDU: header and payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic if it is too short.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after checking that it holds the header its T bit announces.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        let len = packet.buffer.as_ref().len();
        if len < 1 || len < packet.header_len() {
            return Err(Error::Truncated);
        }
        Ok(packet)
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// T: tagged buffer model.
    pub fn tagged(&self) -> bool {
        self.buffer.as_ref()[field::CONTROL] & field::T != 0
    }

    /// L: last segment of its DDP message.
    pub fn last(&self) -> bool {
        self.buffer.as_ref()[field::CONTROL] & field::L != 0
    }

    /// DV: the DDP version.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::CONTROL] & field::DV
    }

    /// Header octets: 14 tagged, 18 untagged.
    pub fn header_len(&self) -> usize {
        if self.tagged() {
            TAGGED_HEADER_LEN
        } else {
            UNTAGGED_HEADER_LEN
        }
    }

    /// Octet 1, owned by the ULP (the RDMAP control octet).
    pub fn rsvd_ulp(&self) -> u8 {
        self.buffer.as_ref()[field::RSVD_ULP]
    }

    /// Tagged: the steering tag of the data sink buffer.
    pub fn stag(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::STAG])
    }

    /// Tagged: the tagged offset of this segment's first payload octet.
    pub fn tagged_offset(&self) -> u64 {
        be64(&self.buffer.as_ref()[field::TO])
    }

    /// Untagged: the 32-bit ULP field (RDMAP: the STag to invalidate, or zero).
    pub fn rsvd_ulp32(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::RSVD_ULP32])
    }

    /// Untagged: queue number.
    pub fn queue_number(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::QN])
    }

    /// Untagged: message sequence number.
    pub fn msn(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::MSN])
    }

    /// Untagged: message offset of this segment's first payload octet.
    pub fn message_offset(&self) -> u32 {
        be32(&self.buffer.as_ref()[field::MO])
    }

    /// Everything after the DDP header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes the control octet: T, L and DV (reserved bits zero).
    pub fn set_control(&mut self, tagged: bool, last: bool, version: u8) {
        let mut c = version & field::DV;
        if tagged {
            c |= field::T;
        }
        if last {
            c |= field::L;
        }
        self.buffer.as_mut()[field::CONTROL] = c;
    }

    /// Sets the ULP octet.
    pub fn set_rsvd_ulp(&mut self, v: u8) {
        self.buffer.as_mut()[field::RSVD_ULP] = v;
    }

    /// Tagged: sets the STag.
    pub fn set_stag(&mut self, v: u32) {
        self.buffer.as_mut()[field::STAG].copy_from_slice(&v.to_be_bytes());
    }

    /// Tagged: sets the tagged offset.
    pub fn set_tagged_offset(&mut self, v: u64) {
        self.buffer.as_mut()[field::TO].copy_from_slice(&v.to_be_bytes());
    }

    /// Untagged: sets the 32-bit ULP field.
    pub fn set_rsvd_ulp32(&mut self, v: u32) {
        self.buffer.as_mut()[field::RSVD_ULP32].copy_from_slice(&v.to_be_bytes());
    }

    /// Untagged: sets the queue number.
    pub fn set_queue_number(&mut self, v: u32) {
        self.buffer.as_mut()[field::QN].copy_from_slice(&v.to_be_bytes());
    }

    /// Untagged: sets the MSN.
    pub fn set_msn(&mut self, v: u32) {
        self.buffer.as_mut()[field::MSN].copy_from_slice(&v.to_be_bytes());
    }

    /// Untagged: sets the message offset.
    pub fn set_message_offset(&mut self, v: u32) {
        self.buffer.as_mut()[field::MO].copy_from_slice(&v.to_be_bytes());
    }

    /// Everything after the DDP header, to be filled.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

/// Where a segment's payload goes: the buffer-model specific part of the DDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Tagged buffer model: a registered buffer named by STag, at tagged offset TO.
    Tagged {
        /// Steering tag of the data sink.
        stag: u32,
        /// Tagged offset of the first payload octet.
        to: u64,
    },
    /// Untagged buffer model: the next buffer of queue QN, message MSN, at message offset MO.
    Untagged {
        /// Queue number.
        qn: u32,
        /// Message sequence number (starts at 1 per queue and direction).
        msn: u32,
        /// Message offset of the first payload octet.
        mo: u32,
    },
}

impl Placement {
    /// Header octets of this buffer model.
    pub const fn header_len(&self) -> usize {
        match self {
            Placement::Tagged { .. } => TAGGED_HEADER_LEN,
            Placement::Untagged { .. } => UNTAGGED_HEADER_LEN,
        }
    }
}

/// A DDP header as values. The ULP fields are opaque here.
///
/// ```
/// use netdirect_wire::ddp::{Placement, Repr};
/// // The header of a siw Read Response (docs/spec/iwarp.md §6).
/// let seg = b"\xc1\x42\x76\x7d\x2a\x00\x00\x00\x56\x17\x58\x26\x81\x20payload";
/// let (repr, payload) = Repr::parse(seg).unwrap();
/// assert!(repr.last);
/// assert_eq!(repr.rsvd_ulp, 0x42);
/// assert_eq!(repr.placement, Placement::Tagged { stag: 0x767d_2a00, to: 0x5617_5826_8120 });
/// assert_eq!(payload, b"payload");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// L: last segment of the message.
    pub last: bool,
    /// Octet 1, owned by the ULP.
    pub rsvd_ulp: u8,
    /// Octets 2-5 of an untagged header, owned by the ULP; zero for tagged headers.
    pub rsvd_ulp32: u32,
    /// Buffer model and its fields.
    pub placement: Placement,
}

impl Repr {
    /// Parses a DDP header at the start of `ulpdu`; returns it and the payload after it.
    ///
    /// The version must be 1. Reserved control bits are ignored (RFC 5041 §4.2).
    pub fn parse(ulpdu: &[u8]) -> Result<(Repr, &[u8])> {
        let p = Packet::new_checked(ulpdu)?;
        if p.version() != VERSION {
            return Err(Error::DdpVersion(p.version()));
        }
        let (placement, rsvd_ulp32) = if p.tagged() {
            (
                Placement::Tagged {
                    stag: p.stag(),
                    to: p.tagged_offset(),
                },
                0,
            )
        } else {
            (
                Placement::Untagged {
                    qn: p.queue_number(),
                    msn: p.msn(),
                    mo: p.message_offset(),
                },
                p.rsvd_ulp32(),
            )
        };
        let repr = Repr {
            last: p.last(),
            rsvd_ulp: p.rsvd_ulp(),
            rsvd_ulp32,
            placement,
        };
        Ok((repr, &ulpdu[p.header_len()..]))
    }

    /// Header octets.
    pub const fn header_len(&self) -> usize {
        self.placement.header_len()
    }

    /// Writes the header to the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.header_len();
        let buf = buf.get_mut(..len).ok_or(Error::Truncated)?;
        let mut p = Packet::new_unchecked(buf);
        match self.placement {
            Placement::Tagged { stag, to } => {
                p.set_control(true, self.last, VERSION);
                p.set_stag(stag);
                p.set_tagged_offset(to);
            }
            Placement::Untagged { qn, msn, mo } => {
                p.set_control(false, self.last, VERSION);
                p.set_rsvd_ulp32(self.rsvd_ulp32);
                p.set_queue_number(qn);
                p.set_msn(msn);
                p.set_message_offset(mo);
            }
        }
        p.set_rsvd_ulp(self.rsvd_ulp);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untagged_rfc_layout() {
        // Hand-built from RFC 5041 §4.3: untagged, L=1, DV=1, QN 1, MSN 7, MO 0x10203.
        let bytes = [
            0x41, 0x41, 0xAA, 0xBB, 0xCC, 0xDD, 0, 0, 0, 1, 0, 0, 0, 7, 0, 1, 2, 3, 0xEE,
        ];
        let (r, payload) = Repr::parse(&bytes).unwrap();
        assert_eq!(
            r,
            Repr {
                last: true,
                rsvd_ulp: 0x41,
                rsvd_ulp32: 0xAABB_CCDD,
                placement: Placement::Untagged {
                    qn: 1,
                    msn: 7,
                    mo: 0x10203
                },
            }
        );
        assert_eq!(payload, &[0xEE]);
        let mut out = [0u8; 18];
        assert_eq!(r.emit(&mut out), Ok(18));
        assert_eq!(out, bytes[..18]);
    }

    #[test]
    fn version_and_truncation() {
        let mut bytes = [0xC1u8, 0x40, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(Repr::parse(&bytes).is_ok());
        assert_eq!(Repr::parse(&bytes[..13]), Err(Error::Truncated));
        assert_eq!(Repr::parse(&[]), Err(Error::Truncated));
        bytes[0] = 0xC2;
        assert_eq!(Repr::parse(&bytes), Err(Error::DdpVersion(2)));
        // Untagged needs 18 octets.
        bytes[0] = 0x41;
        assert_eq!(Repr::parse(&bytes), Err(Error::Truncated));
        // Reserved control bits are ignored.
        let r = Repr::parse(&[0xFDu8, 0x40, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0])
            .unwrap()
            .0;
        assert!(r.last);
    }
}
