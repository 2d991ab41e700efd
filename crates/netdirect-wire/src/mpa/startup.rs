//! MPA startup frames: the Request and the Reply (RFC 5044 §7.1), with the RFC 6581 enhanced
//! IRD/ORD prefix.

use crate::{Error, Result};

/// Key of an MPA Request ("MPA ID Req Frame").
pub const REQUEST_KEY: [u8; 16] = *b"MPA ID Req Frame";
/// Key of an MPA Reply ("MPA ID Rep Frame").
pub const REPLY_KEY: [u8; 16] = *b"MPA ID Rep Frame";
/// Largest private data an MPA startup frame may carry (RFC 5044 §7.1).
pub const MAX_PRIVATE_DATA: usize = 512;
/// Size of the RFC 6581 IRD/ORD prefix of the private data.
pub const ENHANCED_LEN: usize = 4;
/// Largest IRD or ORD value the RFC 6581 prefix can carry (14 bits).
pub const MAX_IRD_ORD: u16 = 0x3FFF;

mod field {
    use core::ops::{Range, RangeFrom};
    pub(super) const KEY: Range<usize> = 0..16;
    pub(super) const FLAGS: usize = 16;
    pub(super) const REV: usize = 17;
    pub(super) const PD_LENGTH: Range<usize> = 18..20;
    pub(super) const PRIVATE_DATA: RangeFrom<usize> = 20..;
    pub(super) const HEADER_LEN: usize = 20;

    // Flags octet.
    pub(super) const FLAG_M: u8 = 0x80;
    pub(super) const FLAG_C: u8 = 0x40;
    pub(super) const FLAG_R: u8 = 0x20;
    pub(super) const FLAG_ENHANCED: u8 = 0x10;

    // RFC 6581 prefix: two big-endian 16-bit words.
    pub(super) const IRD: Range<usize> = 0..2;
    pub(super) const ORD: Range<usize> = 2..4;
    pub(super) const IRD_P: u16 = 0x8000;
    pub(super) const IRD_Z: u16 = 0x4000;
    pub(super) const ORD_W: u16 = 0x8000;
    pub(super) const ORD_R: u16 = 0x4000;
    pub(super) const COUNT_MASK: u16 = 0x3FFF;
}

/// Length of the fixed part of a startup frame (key, flags, revision, private data length).
pub const HEADER_LEN: usize = field::HEADER_LEN;

/// A read/write view of an MPA Request or Reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartupPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> StartupPacket<T> {
    /// Wraps a buffer without checking it; accessors may panic if it is too short.
    pub const fn new_unchecked(buffer: T) -> Self {
        StartupPacket { buffer }
    }

    /// Wraps a buffer after checking that it holds the whole frame, private data included.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the fixed header and the announced private data.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < field::HEADER_LEN || len < field::HEADER_LEN + usize::from(self.pd_length()) {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Length of the whole frame as announced by its header.
    pub fn frame_len(&self) -> usize {
        field::HEADER_LEN + usize::from(self.pd_length())
    }

    /// The 16-octet key.
    pub fn key(&self) -> &[u8] {
        &self.buffer.as_ref()[field::KEY]
    }

    /// The flags octet, reserved bits included.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// M: the sender wants markers in the FPDUs sent to it.
    pub fn markers(&self) -> bool {
        self.flags() & field::FLAG_M != 0
    }

    /// C: the sender wants CRCs.
    pub fn crc(&self) -> bool {
        self.flags() & field::FLAG_C != 0
    }

    /// R: the responder rejects the connection (meaningful in a Reply only).
    pub fn reject(&self) -> bool {
        self.flags() & field::FLAG_R != 0
    }

    /// The RFC 6581 enhanced-connection bit (meaningful with revision 2 only).
    pub fn enhanced_flag(&self) -> bool {
        self.flags() & field::FLAG_ENHANCED != 0
    }

    /// The MPA revision.
    pub fn revision(&self) -> u8 {
        self.buffer.as_ref()[field::REV]
    }

    /// PD_Length: the number of private-data octets that follow.
    pub fn pd_length(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::PD_LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// All private data, the RFC 6581 prefix included.
    pub fn private_data(&self) -> &[u8] {
        let end = self.frame_len();
        &self.buffer.as_ref()[field::HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> StartupPacket<T> {
    /// Sets the key.
    pub fn set_key(&mut self, key: &[u8; 16]) {
        self.buffer.as_mut()[field::KEY].copy_from_slice(key);
    }

    /// Sets the whole flags octet.
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the revision.
    pub fn set_revision(&mut self, rev: u8) {
        self.buffer.as_mut()[field::REV] = rev;
    }

    /// Sets PD_Length.
    pub fn set_pd_length(&mut self, len: u16) {
        self.buffer.as_mut()[field::PD_LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// The private data area after the fixed header, to be filled.
    pub fn private_data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PRIVATE_DATA]
    }
}

/// Which startup frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StartupKind {
    /// "MPA ID Req Frame", sent by the initiator (the side that connected).
    Request,
    /// "MPA ID Rep Frame", sent by the responder.
    Reply,
}

impl StartupKind {
    /// The key of this frame kind.
    pub const fn key(self) -> &'static [u8; 16] {
        match self {
            StartupKind::Request => &REQUEST_KEY,
            StartupKind::Reply => &REPLY_KEY,
        }
    }
}

/// The ready-to-receive message kinds of RFC 6581 peer-to-peer mode.
///
/// In a Request these are the kinds the initiator can send; in a Reply, the one the responder
/// chose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Rtr {
    /// Z: a zero-length Send.
    pub send: bool,
    /// W: a zero-length RDMA Write.
    pub write: bool,
    /// R: a zero-length RDMA Read Request.
    pub read: bool,
}

/// The RFC 6581 enhanced-connection prefix: IRD/ORD and the peer-to-peer controls.
///
/// ```text
///  0                   1                   2                   3
/// |P|Z|        IRD (14 bits)      |W|R|        ORD (14 bits)      |
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Enhanced {
    /// Inbound RDMA Read queue depth of the sender (≤ [`MAX_IRD_ORD`]).
    pub ird: u16,
    /// Outbound RDMA Read queue depth the sender wants (≤ [`MAX_IRD_ORD`]).
    pub ord: u16,
    /// P: peer-to-peer mode, requested (Request) or accepted (Reply).
    pub peer_to_peer: bool,
    /// Ready-to-receive kinds offered (Request) or chosen (Reply).
    pub rtr: Rtr,
}

impl Enhanced {
    /// Parses the 4-octet prefix.
    pub fn parse(bytes: &[u8]) -> Result<Enhanced> {
        let b = bytes.get(..ENHANCED_LEN).ok_or(Error::MpaStartup)?;
        let ird = u16::from_be_bytes([b[field::IRD.start], b[field::IRD.start + 1]]);
        let ord = u16::from_be_bytes([b[field::ORD.start], b[field::ORD.start + 1]]);
        Ok(Enhanced {
            ird: ird & field::COUNT_MASK,
            ord: ord & field::COUNT_MASK,
            peer_to_peer: ird & field::IRD_P != 0,
            rtr: Rtr {
                send: ird & field::IRD_Z != 0,
                write: ord & field::ORD_W != 0,
                read: ord & field::ORD_R != 0,
            },
        })
    }

    /// The 4-octet prefix. Fails if IRD or ORD does not fit 14 bits.
    pub fn to_bytes(&self) -> Result<[u8; ENHANCED_LEN]> {
        if self.ird > MAX_IRD_ORD || self.ord > MAX_IRD_ORD {
            return Err(Error::TooLarge);
        }
        let mut ird = self.ird;
        let mut ord = self.ord;
        if self.peer_to_peer {
            ird |= field::IRD_P;
        }
        if self.rtr.send {
            ird |= field::IRD_Z;
        }
        if self.rtr.write {
            ord |= field::ORD_W;
        }
        if self.rtr.read {
            ord |= field::ORD_R;
        }
        let (i, o) = (ird.to_be_bytes(), ord.to_be_bytes());
        Ok([i[0], i[1], o[0], o[1]])
    }
}

/// An MPA Request or Reply as values.
///
/// `private_data` is the consumer's private data: in enhanced mode the 4-octet IRD/ORD prefix is
/// carried in `enhanced` and is not part of it.
///
/// ```
/// use netdirect_wire::mpa::{Enhanced, StartupKind, StartupRepr};
/// // The Request of a Linux siw rping client (docs/spec/iwarp.md §1.1).
/// let bytes = b"MPA ID Req Frame\x10\x02\x00\x04\x00\x01\x00\x01";
/// let req = StartupRepr::parse(bytes).unwrap();
/// assert_eq!(req.kind, StartupKind::Request);
/// assert_eq!(req.enhanced, Some(Enhanced { ird: 1, ord: 1, ..Default::default() }));
/// let mut out = [0u8; 24];
/// assert_eq!(req.emit(&mut out), Ok(24));
/// assert_eq!(&out, bytes);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StartupRepr<'a> {
    /// Request or Reply.
    pub kind: StartupKind,
    /// M: the sender wants markers in what it receives.
    pub markers: bool,
    /// C: the sender wants CRCs (CRC is on if either side sets it).
    pub crc: bool,
    /// R: the connection is rejected (Reply only; always false in a Request).
    pub reject: bool,
    /// MPA revision, 1 or 2.
    pub revision: u8,
    /// The RFC 6581 prefix, present when the revision is 2 and the enhanced bit is set.
    pub enhanced: Option<Enhanced>,
    /// The consumer's private data.
    pub private_data: &'a [u8],
}

impl<'a> StartupRepr<'a> {
    /// Parses a startup frame of either kind from the start of `bytes`.
    ///
    /// Checks the key, the revision (1 or 2), the private data limit (512) and, in enhanced mode,
    /// that the IRD/ORD prefix is there. Reserved flag bits are ignored, as RFC 5044 says; the R
    /// bit of a Request is reserved too.
    pub fn parse(bytes: &'a [u8]) -> Result<StartupRepr<'a>> {
        let packet = StartupPacket::new_checked(bytes)?;
        let kind = if packet.key() == REQUEST_KEY {
            StartupKind::Request
        } else if packet.key() == REPLY_KEY {
            StartupKind::Reply
        } else {
            return Err(Error::MpaKey);
        };
        let revision = packet.revision();
        if !(1..=2).contains(&revision) {
            return Err(Error::MpaRevision(revision));
        }
        if usize::from(packet.pd_length()) > MAX_PRIVATE_DATA {
            return Err(Error::MpaStartup);
        }
        let all = &bytes[field::HEADER_LEN..packet.frame_len()];
        let (enhanced, private_data) = if revision == 2 && packet.enhanced_flag() {
            (Some(Enhanced::parse(all)?), &all[ENHANCED_LEN..])
        } else {
            (None, all)
        };
        Ok(StartupRepr {
            kind,
            markers: packet.markers(),
            crc: packet.crc(),
            reject: kind == StartupKind::Reply && packet.reject(),
            revision,
            enhanced,
            private_data,
        })
    }

    /// Parses a startup frame that must be of `kind` (a responder expects a Request, an
    /// initiator a Reply). The wrong key is [`Error::MpaKey`].
    pub fn parse_expecting(bytes: &'a [u8], kind: StartupKind) -> Result<StartupRepr<'a>> {
        let repr = Self::parse(bytes)?;
        if repr.kind != kind {
            return Err(Error::MpaKey);
        }
        Ok(repr)
    }

    /// Octets of private data on the wire, the RFC 6581 prefix included.
    pub fn pd_length(&self) -> usize {
        self.private_data.len()
            + if self.enhanced.is_some() {
                ENHANCED_LEN
            } else {
                0
            }
    }

    /// Length of the emitted frame.
    pub fn buffer_len(&self) -> usize {
        field::HEADER_LEN + self.pd_length()
    }

    /// Writes the frame to the start of `buf` and returns its length.
    ///
    /// Fails, writing nothing, when the frame cannot be encoded (private data over 512, enhanced
    /// data with revision 1, a revision other than 1 or 2, reject in a Request, IRD/ORD over 14
    /// bits) or `buf` is too short.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        if !(1..=2).contains(&self.revision) {
            return Err(Error::MpaRevision(self.revision));
        }
        if (self.enhanced.is_some() && self.revision != 2)
            || (self.reject && self.kind == StartupKind::Request)
        {
            return Err(Error::MpaStartup);
        }
        let pd_length = self.pd_length();
        if pd_length > MAX_PRIVATE_DATA {
            return Err(Error::TooLarge);
        }
        let prefix = self.enhanced.map(|e| e.to_bytes()).transpose()?;
        let len = self.buffer_len();
        let buf = buf.get_mut(..len).ok_or(Error::Truncated)?;
        let mut packet = StartupPacket::new_unchecked(buf);
        packet.set_key(self.kind.key());
        let mut flags = 0;
        if self.markers {
            flags |= field::FLAG_M;
        }
        if self.crc {
            flags |= field::FLAG_C;
        }
        if self.reject {
            flags |= field::FLAG_R;
        }
        if prefix.is_some() {
            flags |= field::FLAG_ENHANCED;
        }
        packet.set_flags(flags);
        packet.set_revision(self.revision);
        // pd_length ≤ 512, so it fits.
        packet.set_pd_length(pd_length as u16);
        let pd = packet.private_data_mut();
        let rest = match prefix {
            Some(p) => {
                pd[..ENHANCED_LEN].copy_from_slice(&p);
                &mut pd[ENHANCED_LEN..]
            }
            None => pd,
        };
        rest.copy_from_slice(self.private_data);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // siw's Reply to an rping client (docs/spec/iwarp.md §6).
    const SIW_REPLY: &[u8] = b"MPA ID Rep Frame\x10\x02\x00\x04\x00\x01\x00\x01";

    #[test]
    fn parse_siw_reply() {
        let r = StartupRepr::parse(SIW_REPLY).unwrap();
        assert_eq!(r.kind, StartupKind::Reply);
        assert!(!r.markers && !r.crc && !r.reject);
        assert_eq!(r.revision, 2);
        assert_eq!(r.enhanced.unwrap().ird, 1);
        assert!(r.private_data.is_empty());
        assert_eq!(
            StartupRepr::parse_expecting(SIW_REPLY, StartupKind::Request),
            Err(Error::MpaKey)
        );
    }

    #[test]
    fn rfc6581_bits() {
        let e = Enhanced {
            ird: 0x3FFF,
            ord: 5,
            peer_to_peer: true,
            rtr: Rtr {
                send: true,
                write: true,
                read: false,
            },
        };
        assert_eq!(e.to_bytes().unwrap(), [0xFF, 0xFF, 0x80, 0x05]);
        assert_eq!(Enhanced::parse(&[0xFF, 0xFF, 0x80, 0x05]).unwrap(), e);
        let too_big = Enhanced {
            ird: 0x4000,
            ..Default::default()
        };
        assert_eq!(too_big.to_bytes(), Err(Error::TooLarge));
    }

    #[test]
    fn rejects_bad_frames() {
        let mut f = SIW_REPLY.to_vec();
        f[17] = 3;
        assert_eq!(StartupRepr::parse(&f), Err(Error::MpaRevision(3)));
        f[17] = 0;
        assert_eq!(StartupRepr::parse(&f), Err(Error::MpaRevision(0)));
        let mut f = SIW_REPLY.to_vec();
        f[0] = b'm';
        assert_eq!(StartupRepr::parse(&f), Err(Error::MpaKey));
        // Enhanced bit with fewer than 4 octets of private data.
        let f = b"MPA ID Req Frame\x10\x02\x00\x02\x00\x01";
        assert_eq!(StartupRepr::parse(f), Err(Error::MpaStartup));
        // Announced private data that is not there.
        assert_eq!(StartupRepr::parse(&SIW_REPLY[..23]), Err(Error::Truncated));
        // Over 512 octets of private data.
        let mut f = b"MPA ID Req Frame\x40\x01\x02\x01".to_vec();
        f.resize(20 + 513, 0);
        assert_eq!(StartupRepr::parse(&f), Err(Error::MpaStartup));
    }

    #[test]
    fn revision_1_ignores_enhanced_bit_and_request_ignores_reject() {
        let f = b"MPA ID Req Frame\x30\x01\x00\x02hi";
        let r = StartupRepr::parse(f).unwrap();
        assert_eq!(r.enhanced, None);
        assert!(!r.reject);
        assert_eq!(r.private_data, b"hi");
    }

    #[test]
    fn emit_refuses_what_cannot_be_encoded() {
        let big = [0u8; 509];
        let r = StartupRepr {
            kind: StartupKind::Request,
            markers: false,
            crc: true,
            reject: false,
            revision: 2,
            enhanced: Some(Enhanced::default()),
            private_data: &big,
        };
        let mut buf = [0u8; 600];
        assert_eq!(r.emit(&mut buf), Err(Error::TooLarge));
        let ok = StartupRepr {
            private_data: &big[..508],
            ..r
        };
        assert_eq!(ok.emit(&mut buf), Ok(532));
        assert_eq!(ok.emit(&mut buf[..531]), Err(Error::Truncated));
        let rej = StartupRepr { reject: true, ..ok };
        assert_eq!(rej.emit(&mut buf), Err(Error::MpaStartup));
        let v1 = StartupRepr { revision: 1, ..ok };
        assert_eq!(v1.emit(&mut buf), Err(Error::MpaStartup));
    }
}
