//! The RDMAP Terminate message (RFC 5040 §4.8, §7) and the error tables of RDMAP, DDP
//! (RFC 5041 §7) and MPA (RFC 5044 §8, RFC 6581).
//!
//! A Terminate is an untagged message on QN 2. After the DDP header:
//!
//! ```text
//! 0      Layer (4 bits) | Error type (4 bits)
//! 1      Error code
//! 2-3    M (0x8000) D (0x4000) R (0x2000), 13 reserved bits
//! then   DDP Segment Length (16 bits) and the failing DDP header (14 octets tagged /
//!        18 untagged), when D is set
//! then   the failing RDMAP header (28 octets), when R is set
//! ```
//!
//! M only says that the segment length is meaningful; D decides whether it is there (this is how
//! siw builds Terminates — it always sets M with D — and how Wireshark reads them). The size of
//! the copied DDP header follows its own T bit. Wireshark 4.0 instead sizes it by the error type
//! (14 octets when the type is 1); it then mis-splits an RDMAP protection error that copies an
//! untagged header, but flags nothing.

use crate::Error;
use crate::ddp::{TAGGED_HEADER_LEN, UNTAGGED_HEADER_LEN};

mod field {
    use core::ops::Range;
    pub(super) const LAYER_TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const HDRCT: Range<usize> = 2..4;
    pub(super) const SEGMENT_LENGTH: Range<usize> = 4..6;
    pub(super) const COPIED: usize = 6;
    pub(super) const CONTROL_LEN: usize = 4;

    pub(super) const M: u16 = 0x8000;
    pub(super) const D: u16 = 0x4000;
    pub(super) const R: u16 = 0x2000;
    pub(super) const DDP_T: u8 = 0x80;
}

/// Octets of the Terminate control field (layer, type, code, header-control bits).
pub const CONTROL_LEN: usize = field::CONTROL_LEN;
/// Octets of a copied RDMAP header (the size of a Read Request header).
pub const RDMAP_HEADER_LEN: usize = crate::rdmap::READ_REQUEST_LEN;

/// A read/write view of a Terminate header (what follows the DDP header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic if it is too short.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after checking that it holds everything the header-control bits announce.
    pub fn new_checked(buffer: T) -> crate::Result<Self> {
        let p = Self::new_unchecked(buffer);
        let len = p.buffer.as_ref().len();
        if len < field::CONTROL_LEN {
            return Err(Error::Truncated);
        }
        if p.d() && len <= field::COPIED {
            return Err(Error::Truncated);
        }
        if len < p.header_len() {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Layer (0 RDMAP, 1 DDP, 2 LLP).
    pub fn layer(&self) -> u8 {
        self.buffer.as_ref()[field::LAYER_TYPE] >> 4
    }

    /// Error type.
    pub fn error_type(&self) -> u8 {
        self.buffer.as_ref()[field::LAYER_TYPE] & 0x0F
    }

    /// Error code.
    pub fn error_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    fn hdrct(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::HDRCT];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// M: the DDP Segment Length field is valid.
    pub fn m(&self) -> bool {
        self.hdrct() & field::M != 0
    }

    /// D: the failing DDP header is included.
    pub fn d(&self) -> bool {
        self.hdrct() & field::D != 0
    }

    /// R: the failing RDMAP header is included.
    pub fn r(&self) -> bool {
        self.hdrct() & field::R != 0
    }

    /// DDP Segment Length of the failing segment (present when D is set).
    pub fn ddp_segment_length(&self) -> Option<u16> {
        self.d().then(|| {
            let b = &self.buffer.as_ref()[field::SEGMENT_LENGTH];
            u16::from_be_bytes([b[0], b[1]])
        })
    }

    fn ddp_header_len(&self) -> usize {
        if !self.d() {
            return 0;
        }
        if self.buffer.as_ref()[field::COPIED] & field::DDP_T != 0 {
            TAGGED_HEADER_LEN
        } else {
            UNTAGGED_HEADER_LEN
        }
    }

    /// The copied DDP header, when D is set.
    pub fn ddp_header(&self) -> Option<&[u8]> {
        self.d()
            .then(|| &self.buffer.as_ref()[field::COPIED..field::COPIED + self.ddp_header_len()])
    }

    fn rdmap_header_start(&self) -> usize {
        if self.d() {
            field::COPIED + self.ddp_header_len()
        } else {
            field::CONTROL_LEN
        }
    }

    /// The copied RDMAP header, when R is set.
    pub fn rdmap_header(&self) -> Option<&[u8]> {
        let start = self.rdmap_header_start();
        self.r()
            .then(|| &self.buffer.as_ref()[start..start + RDMAP_HEADER_LEN])
    }

    /// Octets of the whole Terminate header as its control bits announce it.
    pub fn header_len(&self) -> usize {
        self.rdmap_header_start() + if self.r() { RDMAP_HEADER_LEN } else { 0 }
    }
}

/// The error layer of a Terminate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Layer {
    /// RDMAP (RFC 5040).
    Rdmap = 0,
    /// DDP (RFC 5041).
    Ddp = 1,
    /// The lower layer protocol: MPA over TCP (RFC 5044).
    Llp = 2,
}

macro_rules! term_errors {
    ($($(#[$doc:meta])* $name:ident = ($layer:ident, $etype:expr, $code:expr),)*) => {
        /// Every error of the Terminate tables, by name.
        ///
        /// | layer | type | codes |
        /// |---|---|---|
        /// | RDMAP | 0 local catastrophic | 0x00 |
        /// | RDMAP | 1 remote protection | 0x00 invalid STag, 0x01 base/bounds, 0x02 access rights, 0x03 STag not associated, 0x04 TO wrap, 0x09 cannot invalidate, 0xFF unspecified |
        /// | RDMAP | 2 remote operation | 0x05 invalid RDMAP version, 0x06 unexpected opcode, 0x07 catastrophic (stream), 0x08 catastrophic (global), 0x09 cannot invalidate, 0xFF unspecified |
        /// | DDP | 0 local catastrophic | 0x00 |
        /// | DDP | 1 tagged buffer | 0x00 invalid STag, 0x01 base/bounds, 0x02 STag not associated, 0x03 TO wrap, 0x04 invalid DDP version |
        /// | DDP | 2 untagged buffer | 0x01 invalid QN, 0x02 no buffer (MSN), 0x03 MSN out of range, 0x04 invalid MO, 0x05 message too long, 0x06 invalid DDP version |
        /// | LLP | 0 MPA | 0x01 TCP connection lost, 0x02 CRC, 0x03 marker/ULPDU mismatch, 0x04 invalid Request/Reply, 0x05 local catastrophic, 0x06 insufficient IRD, 0x07 no matching RTR |
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum TermError {
            $($(#[$doc])* $name,)*
        }

        impl TermError {
            /// Every named error.
            pub const ALL: &'static [TermError] = &[$(TermError::$name,)*];

            /// (layer, error type, error code).
            pub const fn parts(self) -> (Layer, u8, u8) {
                match self {
                    $(TermError::$name => (Layer::$layer, $etype, $code),)*
                }
            }
        }
    };
}

term_errors! {
    /// RDMAP local catastrophic error.
    RdmapLocalCatastrophic = (Rdmap, 0, 0x00),
    /// RDMAP remote protection: invalid STag.
    RdmapInvalidStag = (Rdmap, 1, 0x00),
    /// RDMAP remote protection: base or bounds violation.
    RdmapBaseBounds = (Rdmap, 1, 0x01),
    /// RDMAP remote protection: access rights violation.
    RdmapAccessRights = (Rdmap, 1, 0x02),
    /// RDMAP remote protection: STag not associated with this RDMAP stream.
    RdmapStagNotAssociated = (Rdmap, 1, 0x03),
    /// RDMAP remote protection: TO wrap.
    RdmapToWrap = (Rdmap, 1, 0x04),
    /// RDMAP remote protection: STag cannot be invalidated.
    RdmapCannotInvalidate = (Rdmap, 1, 0x09),
    /// RDMAP remote protection: unspecified.
    RdmapProtectionUnspecified = (Rdmap, 1, 0xFF),
    /// RDMAP remote operation: invalid RDMAP version.
    RdmapInvalidVersion = (Rdmap, 2, 0x05),
    /// RDMAP remote operation: unexpected opcode.
    RdmapUnexpectedOpcode = (Rdmap, 2, 0x06),
    /// RDMAP remote operation: catastrophic error localized to this stream.
    RdmapCatastrophicStream = (Rdmap, 2, 0x07),
    /// RDMAP remote operation: catastrophic error, global.
    RdmapCatastrophicGlobal = (Rdmap, 2, 0x08),
    /// RDMAP remote operation: STag cannot be invalidated.
    RdmapOperationCannotInvalidate = (Rdmap, 2, 0x09),
    /// RDMAP remote operation: unspecified.
    RdmapOperationUnspecified = (Rdmap, 2, 0xFF),
    /// DDP local catastrophic error.
    DdpLocalCatastrophic = (Ddp, 0, 0x00),
    /// DDP tagged buffer: invalid STag.
    DdpTaggedInvalidStag = (Ddp, 1, 0x00),
    /// DDP tagged buffer: base or bounds violation.
    DdpTaggedBaseBounds = (Ddp, 1, 0x01),
    /// DDP tagged buffer: STag not associated with this DDP stream.
    DdpTaggedStagNotAssociated = (Ddp, 1, 0x02),
    /// DDP tagged buffer: TO wrap.
    DdpTaggedToWrap = (Ddp, 1, 0x03),
    /// DDP tagged buffer: invalid DDP version.
    DdpTaggedInvalidVersion = (Ddp, 1, 0x04),
    /// DDP untagged buffer: invalid QN.
    DdpUntaggedInvalidQn = (Ddp, 2, 0x01),
    /// DDP untagged buffer: invalid MSN, no buffer available.
    DdpUntaggedNoBuffer = (Ddp, 2, 0x02),
    /// DDP untagged buffer: invalid MSN, MSN out of range.
    DdpUntaggedMsnRange = (Ddp, 2, 0x03),
    /// DDP untagged buffer: invalid MO.
    DdpUntaggedInvalidMo = (Ddp, 2, 0x04),
    /// DDP untagged buffer: message too long for the buffer.
    DdpUntaggedTooLong = (Ddp, 2, 0x05),
    /// DDP untagged buffer: invalid DDP version.
    DdpUntaggedInvalidVersion = (Ddp, 2, 0x06),
    /// MPA: TCP connection lost.
    LlpConnectionLost = (Llp, 0, 0x01),
    /// MPA: CRC error.
    LlpCrc = (Llp, 0, 0x02),
    /// MPA: marker and ULPDU_Length mismatch.
    LlpMarker = (Llp, 0, 0x03),
    /// MPA: invalid Request or Reply.
    LlpInvalidStartup = (Llp, 0, 0x04),
    /// MPA: local catastrophic error (RFC 6581).
    LlpLocalCatastrophic = (Llp, 0, 0x05),
    /// MPA: insufficient IRD resources (RFC 6581).
    LlpInsufficientIrd = (Llp, 0, 0x06),
    /// MPA: no matching RTR option (RFC 6581).
    LlpNoMatchingRtr = (Llp, 0, 0x07),
}

impl TermError {
    /// The error in words, as the RFC tables name it.
    pub const fn description(self) -> &'static str {
        use TermError::*;
        match self {
            RdmapLocalCatastrophic => "RDMAP local catastrophic error",
            RdmapInvalidStag => "RDMAP remote protection error: invalid STag",
            RdmapBaseBounds => "RDMAP remote protection error: base or bounds violation",
            RdmapAccessRights => "RDMAP remote protection error: access rights violation",
            RdmapStagNotAssociated => {
                "RDMAP remote protection error: STag not associated with this stream"
            }
            RdmapToWrap => "RDMAP remote protection error: tagged offset wraps",
            RdmapCannotInvalidate => "RDMAP remote protection error: STag cannot be invalidated",
            RdmapProtectionUnspecified => "RDMAP remote protection error (unspecified)",
            RdmapInvalidVersion => "RDMAP remote operation error: invalid RDMAP version",
            RdmapUnexpectedOpcode => "RDMAP remote operation error: unexpected opcode",
            RdmapCatastrophicStream => "RDMAP remote operation error: catastrophic (stream)",
            RdmapCatastrophicGlobal => "RDMAP remote operation error: catastrophic (global)",
            RdmapOperationCannotInvalidate => {
                "RDMAP remote operation error: STag cannot be invalidated"
            }
            RdmapOperationUnspecified => "RDMAP remote operation error (unspecified)",
            DdpLocalCatastrophic => "DDP local catastrophic error",
            DdpTaggedInvalidStag => "DDP tagged buffer error: invalid STag",
            DdpTaggedBaseBounds => "DDP tagged buffer error: base or bounds violation",
            DdpTaggedStagNotAssociated => {
                "DDP tagged buffer error: STag not associated with this stream"
            }
            DdpTaggedToWrap => "DDP tagged buffer error: tagged offset wraps",
            DdpTaggedInvalidVersion => "DDP tagged buffer error: invalid DDP version",
            DdpUntaggedInvalidQn => "DDP untagged buffer error: invalid queue number",
            DdpUntaggedNoBuffer => {
                "DDP untagged buffer error: no receive posted for a Send (no buffer)"
            }
            DdpUntaggedMsnRange => "DDP untagged buffer error: MSN out of range",
            DdpUntaggedInvalidMo => "DDP untagged buffer error: invalid message offset",
            DdpUntaggedTooLong => {
                "DDP untagged buffer error: message longer than the posted receive"
            }
            DdpUntaggedInvalidVersion => "DDP untagged buffer error: invalid DDP version",
            LlpConnectionLost => "MPA error: TCP connection lost",
            LlpCrc => "MPA error: CRC mismatch",
            LlpMarker => "MPA error: marker and ULPDU length mismatch",
            LlpInvalidStartup => "MPA error: invalid Request or Reply",
            LlpLocalCatastrophic => "MPA error: local catastrophic",
            LlpInsufficientIrd => "MPA error: insufficient IRD resources",
            LlpNoMatchingRtr => "MPA error: no matching RTR option",
        }
    }

    /// The named error with these parts, if the tables have one.
    pub fn from_parts(layer: u8, etype: u8, code: u8) -> Option<TermError> {
        Self::ALL.iter().copied().find(|e| {
            let (l, t, c) = e.parts();
            l as u8 == layer && t == etype && c == code
        })
    }
}

impl Error {
    /// The Terminate a receiver sends for this parse error, where the RFCs name one.
    ///
    /// `tagged` says which DDP buffer model the failing segment used (it selects the DDP error
    /// type for a bad DDP version).
    pub fn term_error(&self, tagged: bool) -> Option<TermError> {
        Some(match self {
            Error::Crc { .. } => TermError::LlpCrc,
            Error::Marker => TermError::LlpMarker,
            Error::MpaKey | Error::MpaRevision(_) | Error::MpaStartup => {
                TermError::LlpInvalidStartup
            }
            Error::DdpVersion(_) if tagged => TermError::DdpTaggedInvalidVersion,
            Error::DdpVersion(_) => TermError::DdpUntaggedInvalidVersion,
            Error::RdmapVersion(_) => TermError::RdmapInvalidVersion,
            Error::Opcode(_) => TermError::RdmapUnexpectedOpcode,
            Error::QueueNumber(_) => TermError::DdpUntaggedInvalidQn,
            Error::Truncated | Error::Malformed => TermError::RdmapOperationUnspecified,
            Error::TooLarge => return None,
        })
    }
}

/// The copy of the failing segment's DDP header in a Terminate (D bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FailingDdp<'a> {
    /// DDP Segment Length of the failing segment (informational: siw puts the failing payload's
    /// length here).
    pub segment_length: u16,
    /// The DDP header, 14 octets if its T bit is set, else 18.
    pub header: &'a [u8],
}

/// A Terminate header as values.
///
/// The layer, type and code are kept as raw numbers so that unknown values round-trip; use
/// [`Repr::error`] for the named form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr<'a> {
    /// Layer (0 RDMAP, 1 DDP, 2 LLP), 4 bits.
    pub layer: u8,
    /// Error type, 4 bits.
    pub error_type: u8,
    /// Error code.
    pub error_code: u8,
    /// M: the segment length in `failing_ddp` is valid.
    pub m: bool,
    /// D: the failing segment's DDP Segment Length and DDP header.
    pub failing_ddp: Option<FailingDdp<'a>>,
    /// R: the failing RDMAP header (28 octets).
    pub rdmap_header: Option<&'a [u8]>,
}

impl<'a> Repr<'a> {
    /// A Terminate for `error` with no copied headers.
    pub const fn new(error: TermError) -> Repr<'static> {
        let (layer, error_type, error_code) = error.parts();
        Repr {
            layer: layer as u8,
            error_type,
            error_code,
            m: false,
            failing_ddp: None,
            rdmap_header: None,
        }
    }

    /// The named error, if the tables have one for these numbers.
    pub fn error(&self) -> Option<TermError> {
        TermError::from_parts(self.layer, self.error_type, self.error_code)
    }

    /// Parses a Terminate header from the start of `bytes`.
    pub fn parse(bytes: &'a [u8]) -> crate::Result<Repr<'a>> {
        let p = Packet::new_checked(bytes)?;
        let rdmap_start = p.rdmap_header_start();
        let ddp_end = field::COPIED + p.ddp_header_len();
        Ok(Repr {
            layer: p.layer(),
            error_type: p.error_type(),
            error_code: p.error_code(),
            m: p.m(),
            failing_ddp: p.ddp_segment_length().map(|segment_length| FailingDdp {
                segment_length,
                header: &bytes[field::COPIED..ddp_end],
            }),
            rdmap_header: p
                .r()
                .then(|| &bytes[rdmap_start..rdmap_start + RDMAP_HEADER_LEN]),
        })
    }

    /// Octets of the emitted header.
    pub fn buffer_len(&self) -> usize {
        let ddp = self.failing_ddp.map_or(0, |f| 2 + f.header.len());
        field::CONTROL_LEN + ddp + self.rdmap_header.map_or(0, <[u8]>::len)
    }

    /// Writes the header to the start of `buf`; returns its length.
    ///
    /// Fails if a field does not fit (layer or type over 4 bits, a copied DDP header that is
    /// not 14/18 octets or whose T bit disagrees with its length, a copied RDMAP header that is
    /// not 28 octets) or `buf` is too short.
    pub fn emit(&self, buf: &mut [u8]) -> crate::Result<usize> {
        if self.layer > 0x0F || self.error_type > 0x0F {
            return Err(Error::TooLarge);
        }
        if let Some(FailingDdp { header: h, .. }) = self.failing_ddp {
            let tagged = h.first().is_some_and(|c| c & field::DDP_T != 0);
            let want = if tagged {
                TAGGED_HEADER_LEN
            } else {
                UNTAGGED_HEADER_LEN
            };
            if h.len() != want {
                return Err(Error::Malformed);
            }
        }
        if self
            .rdmap_header
            .is_some_and(|h| h.len() != RDMAP_HEADER_LEN)
        {
            return Err(Error::Malformed);
        }
        let len = self.buffer_len();
        let buf = buf.get_mut(..len).ok_or(Error::Truncated)?;
        buf[field::LAYER_TYPE] = (self.layer << 4) | self.error_type;
        buf[field::CODE] = self.error_code;
        let mut hdrct = 0u16;
        if self.m {
            hdrct |= field::M;
        }
        if self.failing_ddp.is_some() {
            hdrct |= field::D;
        }
        if self.rdmap_header.is_some() {
            hdrct |= field::R;
        }
        buf[field::HDRCT].copy_from_slice(&hdrct.to_be_bytes());
        let mut at = field::CONTROL_LEN;
        if let Some(f) = self.failing_ddp {
            buf[at..at + 2].copy_from_slice(&f.segment_length.to_be_bytes());
            at += 2;
            buf[at..at + f.header.len()].copy_from_slice(f.header);
            at += f.header.len();
        }
        if let Some(h) = self.rdmap_header {
            buf[at..at + h.len()].copy_from_slice(h);
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_consistent() {
        for e in TermError::ALL {
            let (l, t, c) = e.parts();
            assert_eq!(TermError::from_parts(l as u8, t, c), Some(*e));
            let r = Repr::new(*e);
            let mut buf = [0u8; 4];
            assert_eq!(r.emit(&mut buf), Ok(4));
            assert_eq!(buf[0], ((l as u8) << 4) | t);
            assert_eq!(buf[1], c);
            assert_eq!(Repr::parse(&buf).unwrap().error(), Some(*e));
        }
        // siw's masks on the 32-bit word (docs/spec/iwarp.md §4.6).
        let r = Repr {
            m: true,
            ..Repr::new(TermError::DdpUntaggedNoBuffer)
        };
        let mut buf = [0u8; 4];
        r.emit(&mut buf).unwrap();
        let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        assert_eq!(word & 0xF000_0000, 1 << 28);
        assert_eq!(word & 0x0F00_0000, 2 << 24);
        assert_eq!(word & 0x00FF_0000, 2 << 16);
        assert_eq!(word & 0xE000, 0x8000);
    }

    #[test]
    fn copied_headers() {
        let ddp = [0x41u8, 0x41, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0];
        let rdmap = [0xAAu8; 28];
        let r = Repr {
            m: true,
            failing_ddp: Some(FailingDdp {
                segment_length: 28,
                header: &ddp,
            }),
            rdmap_header: Some(&rdmap),
            ..Repr::new(TermError::RdmapAccessRights)
        };
        let mut buf = [0u8; 64];
        let n = r.emit(&mut buf).unwrap();
        assert_eq!(n, 4 + 2 + 18 + 28);
        assert_eq!(buf[2..4], [0xE0, 0x00]);
        assert_eq!(Repr::parse(&buf[..n]), Ok(r));
        assert_eq!(Repr::parse(&buf[..n - 1]), Err(Error::Truncated));
        let bad = Repr {
            failing_ddp: Some(FailingDdp {
                segment_length: 0,
                header: &ddp[..14],
            }),
            ..r
        };
        assert_eq!(bad.emit(&mut buf), Err(Error::Malformed));
    }
}
