//! RDMAP messages (RFC 5040 §4, RFC 7306): the control octet inside the DDP header, the Read
//! Request header, the RFC 7306 atomic and immediate-data headers, and [`Repr`], one whole ULPDU
//! (DDP header, RDMAP header, payload) as values.
//!
//! ```text
//! RDMAP control (DDP octet 1): RV(0xC0) = 1 | reserved(0x30) | opcode(0x0F)
//! ```
//!
//! | opcode | message | DDP model | QN |
//! |---|---|---|---|
//! | 0x0 | RDMA Write | tagged | |
//! | 0x1 | RDMA Read Request | untagged | 1 |
//! | 0x2 | RDMA Read Response | tagged | |
//! | 0x3 | Send | untagged | 0 |
//! | 0x4 | Send with Invalidate | untagged | 0 |
//! | 0x5 | Send with Solicited Event | untagged | 0 |
//! | 0x6 | Send with Solicited Event and Invalidate | untagged | 0 |
//! | 0x7 | Terminate | untagged | 2 |
//! | 0x8 | Immediate Data (RFC 7306) | untagged | 0 |
//! | 0x9 | Immediate Data with Solicited Event (RFC 7306) | untagged | 0 |
//! | 0xA | Atomic Request (RFC 7306) | untagged | 1 |
//! | 0xB | Atomic Response (RFC 7306) | untagged | 3 |
//!
//! The RFC 7306 queue numbers are our reading (no copy of the RFC text was at hand to check
//! them): Atomic Requests share QN 1 with Read Requests, as they share IRD/ORD and ordering, and
//! Atomic Responses take the new QN 3. Wireshark 4.0 does not look at the QN of either. The
//! atomic opcodes are FetchAdd 0, Swap 1, CompareSwap 2 (Wireshark names 0 and 2).

use crate::ddp::{self, Placement};
use crate::terminate;
use crate::{Error, Result};

mod field {
    use core::ops::Range;
    pub(super) const RV: u8 = 0xC0;
    pub(super) const RV_SHIFT: u8 = 6;
    pub(super) const OPCODE: u8 = 0x0F;

    // Read Request header, after the untagged DDP header.
    pub(super) const RR_SINK_STAG: Range<usize> = 0..4;
    pub(super) const RR_SINK_TO: Range<usize> = 4..12;
    pub(super) const RR_SIZE: Range<usize> = 12..16;
    pub(super) const RR_SRC_STAG: Range<usize> = 16..20;
    pub(super) const RR_SRC_TO: Range<usize> = 20..28;

    // Atomic Request header, after the untagged DDP header.
    pub(super) const AR_OPCODE: Range<usize> = 0..4;
    pub(super) const AR_REQ_ID: Range<usize> = 4..8;
    pub(super) const AR_STAG: Range<usize> = 8..12;
    pub(super) const AR_TO: Range<usize> = 12..20;
    pub(super) const AR_ADD_SWAP: Range<usize> = 20..28;
    pub(super) const AR_ADD_SWAP_MASK: Range<usize> = 28..36;
    pub(super) const AR_COMPARE: Range<usize> = 36..44;
    pub(super) const AR_COMPARE_MASK: Range<usize> = 44..52;
    pub(super) const AR_OPCODE_MASK: u32 = 0x0F;

    // Atomic Response header.
    pub(super) const AS_REQ_ID: Range<usize> = 0..4;
    pub(super) const AS_DATA: Range<usize> = 4..12;
}

/// The RDMAP version this crate speaks (RFC 5040).
pub const VERSION: u8 = 1;
/// Octets of the Read Request header after the DDP header.
pub const READ_REQUEST_LEN: usize = 28;
/// Octets of the RFC 7306 Atomic Request header after the DDP header.
pub const ATOMIC_REQUEST_LEN: usize = 52;
/// Octets of the RFC 7306 Atomic Response header after the DDP header.
pub const ATOMIC_RESPONSE_LEN: usize = 12;
/// Octets of RFC 7306 immediate data.
pub const IMMEDIATE_DATA_LEN: usize = 8;

/// Untagged queue of the Send family and immediate data.
pub const QN_SEND: u32 = 0;
/// Untagged queue of RDMA Read Requests.
pub const QN_READ_REQUEST: u32 = 1;
/// Untagged queue of Terminate messages.
pub const QN_TERMINATE: u32 = 2;
/// Untagged queue of RFC 7306 Atomic Requests (shared with Read Requests).
pub const QN_ATOMIC_REQUEST: u32 = 1;
/// Untagged queue of RFC 7306 Atomic Responses.
pub const QN_ATOMIC_RESPONSE: u32 = 3;

/// An RDMAP opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Opcode {
    /// RDMA Write.
    Write = 0x0,
    /// RDMA Read Request.
    ReadRequest = 0x1,
    /// RDMA Read Response.
    ReadResponse = 0x2,
    /// Send.
    Send = 0x3,
    /// Send with Invalidate.
    SendInvalidate = 0x4,
    /// Send with Solicited Event.
    SendSe = 0x5,
    /// Send with Solicited Event and Invalidate.
    SendSeInvalidate = 0x6,
    /// Terminate.
    Terminate = 0x7,
    /// Immediate Data (RFC 7306).
    ImmediateData = 0x8,
    /// Immediate Data with Solicited Event (RFC 7306).
    ImmediateDataSe = 0x9,
    /// Atomic Request (RFC 7306).
    AtomicRequest = 0xA,
    /// Atomic Response (RFC 7306).
    AtomicResponse = 0xB,
}

impl Opcode {
    /// Every opcode, in numeric order.
    pub const ALL: [Opcode; 12] = [
        Opcode::Write,
        Opcode::ReadRequest,
        Opcode::ReadResponse,
        Opcode::Send,
        Opcode::SendInvalidate,
        Opcode::SendSe,
        Opcode::SendSeInvalidate,
        Opcode::Terminate,
        Opcode::ImmediateData,
        Opcode::ImmediateDataSe,
        Opcode::AtomicRequest,
        Opcode::AtomicResponse,
    ];

    /// The opcode with this 4-bit value.
    pub fn from_u8(v: u8) -> Option<Opcode> {
        Self::ALL.get(usize::from(v)).copied()
    }

    /// Whether this opcode uses the tagged buffer model.
    pub const fn is_tagged(self) -> bool {
        matches!(self, Opcode::Write | Opcode::ReadResponse)
    }

    /// The untagged queue this opcode goes to (`None` for tagged opcodes).
    pub const fn queue_number(self) -> Option<u32> {
        match self {
            Opcode::Write | Opcode::ReadResponse => None,
            Opcode::ReadRequest => Some(QN_READ_REQUEST),
            Opcode::Terminate => Some(QN_TERMINATE),
            Opcode::AtomicRequest => Some(QN_ATOMIC_REQUEST),
            Opcode::AtomicResponse => Some(QN_ATOMIC_RESPONSE),
            Opcode::Send
            | Opcode::SendInvalidate
            | Opcode::SendSe
            | Opcode::SendSeInvalidate
            | Opcode::ImmediateData
            | Opcode::ImmediateDataSe => Some(QN_SEND),
        }
    }

    /// Whether the opcode comes from RFC 7306 (Linux siw implements none of them).
    pub const fn is_rfc7306(self) -> bool {
        (self as u8) >= 0x8
    }
}

/// The opcode bits of the RDMAP control octet (DDP's `rsvd_ulp`).
pub const OPCODE_MASK: u8 = field::OPCODE;

/// The RDMAP control octet for `opcode` (RV = 1, reserved bits zero).
pub const fn control(opcode: Opcode) -> u8 {
    (VERSION << field::RV_SHIFT) | opcode as u8
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

macro_rules! view {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps a buffer without checking it; accessors may panic if it is too short.
            pub const fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            /// Wraps a buffer after checking that it holds the whole header.
            pub fn new_checked(buffer: T) -> Result<Self> {
                if buffer.as_ref().len() < $len {
                    return Err(Error::Truncated);
                }
                Ok(Self::new_unchecked(buffer))
            }
        }
    };
}

macro_rules! getters {
    ($name:ident { $($(#[$doc:meta])* $get:ident / $set:ident : $ty:ty = $range:expr, $rd:ident;)* }) => {
        impl<T: AsRef<[u8]>> $name<T> {
            $($(#[$doc])* pub fn $get(&self) -> $ty { $rd(&self.buffer.as_ref()[$range]) })*
        }
        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            $(
                #[doc = concat!("Sets the field read by [`Self::", stringify!($get), "`].")]
                pub fn $set(&mut self, v: $ty) {
                    self.buffer.as_mut()[$range].copy_from_slice(&v.to_be_bytes());
                }
            )*
        }
    };
}

view!(
    /// A view of the 28-octet RDMA Read Request header (RFC 5040 §4.4).
    ReadRequestPacket,
    READ_REQUEST_LEN
);
getters!(ReadRequestPacket {
    /// Data Sink STag: the requester's buffer, the STag of the Read Response.
    sink_stag / set_sink_stag: u32 = field::RR_SINK_STAG, be32;
    /// Data Sink Tagged Offset.
    sink_to / set_sink_to: u64 = field::RR_SINK_TO, be64;
    /// RDMA Read Message Size in octets.
    size / set_size: u32 = field::RR_SIZE, be32;
    /// Data Source STag: the responder's buffer.
    source_stag / set_source_stag: u32 = field::RR_SRC_STAG, be32;
    /// Data Source Tagged Offset.
    source_to / set_source_to: u64 = field::RR_SRC_TO, be64;
});

view!(
    /// A view of the 52-octet RFC 7306 Atomic Request header.
    AtomicRequestPacket,
    ATOMIC_REQUEST_LEN
);
getters!(AtomicRequestPacket {
    /// The first word: 28 reserved bits and the 4-bit atomic opcode.
    opcode_word / set_opcode_word: u32 = field::AR_OPCODE, be32;
    /// Request Identifier, echoed in the response.
    request_id / set_request_id: u32 = field::AR_REQ_ID, be32;
    /// Remote STag of the target word.
    remote_stag / set_remote_stag: u32 = field::AR_STAG, be32;
    /// Remote Tagged Offset of the target word.
    remote_to / set_remote_to: u64 = field::AR_TO, be64;
    /// Add or Swap Data.
    add_or_swap / set_add_or_swap: u64 = field::AR_ADD_SWAP, be64;
    /// Add or Swap Mask.
    add_or_swap_mask / set_add_or_swap_mask: u64 = field::AR_ADD_SWAP_MASK, be64;
    /// Compare Data.
    compare / set_compare: u64 = field::AR_COMPARE, be64;
    /// Compare Mask.
    compare_mask / set_compare_mask: u64 = field::AR_COMPARE_MASK, be64;
});

view!(
    /// A view of the 12-octet RFC 7306 Atomic Response header.
    AtomicResponsePacket,
    ATOMIC_RESPONSE_LEN
);
getters!(AtomicResponsePacket {
    /// Original Request Identifier.
    request_id / set_request_id: u32 = field::AS_REQ_ID, be32;
    /// Original Remote Data Value (the target word before the operation).
    original_data / set_original_data: u64 = field::AS_DATA, be64;
});

/// The body of an RDMA Read Request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReadRequest {
    /// Requester's sink STag (the Read Response goes there).
    pub sink_stag: u32,
    /// Requester's sink tagged offset.
    pub sink_to: u64,
    /// Octets to read.
    pub size: u32,
    /// Responder's source STag.
    pub source_stag: u32,
    /// Responder's source tagged offset.
    pub source_to: u64,
}

impl ReadRequest {
    fn parse(body: &[u8]) -> Result<ReadRequest> {
        let p = ReadRequestPacket::new_checked(body)?;
        Ok(ReadRequest {
            sink_stag: p.sink_stag(),
            sink_to: p.sink_to(),
            size: p.size(),
            source_stag: p.source_stag(),
            source_to: p.source_to(),
        })
    }

    fn emit(&self, buf: &mut [u8]) {
        let mut p = ReadRequestPacket::new_unchecked(buf);
        p.set_sink_stag(self.sink_stag);
        p.set_sink_to(self.sink_to);
        p.set_size(self.size);
        p.set_source_stag(self.source_stag);
        p.set_source_to(self.source_to);
    }
}

/// RFC 7306 atomic operation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AtomicOp {
    /// Fetch and add (with the add mask for the masked variant).
    FetchAdd = 0x0,
    /// Swap (unconditional).
    Swap = 0x1,
    /// Compare and swap (with compare and swap masks for the masked variant).
    CompareSwap = 0x2,
}

impl AtomicOp {
    fn from_u8(v: u8) -> Option<AtomicOp> {
        match v {
            0x0 => Some(AtomicOp::FetchAdd),
            0x1 => Some(AtomicOp::Swap),
            0x2 => Some(AtomicOp::CompareSwap),
            _ => None,
        }
    }
}

/// The body of an RFC 7306 Atomic Request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AtomicRequest {
    /// The operation.
    pub op: AtomicOp,
    /// Request identifier, echoed in the response.
    pub request_id: u32,
    /// STag of the 8-octet target.
    pub remote_stag: u32,
    /// Tagged offset of the 8-octet target.
    pub remote_to: u64,
    /// Add or swap data.
    pub add_or_swap: u64,
    /// Add or swap mask.
    pub add_or_swap_mask: u64,
    /// Compare data.
    pub compare: u64,
    /// Compare mask.
    pub compare_mask: u64,
}

impl AtomicRequest {
    fn parse(body: &[u8]) -> Result<AtomicRequest> {
        let p = AtomicRequestPacket::new_checked(body)?;
        let word = p.opcode_word();
        let op = AtomicOp::from_u8((word & field::AR_OPCODE_MASK) as u8).ok_or(Error::Malformed)?;
        Ok(AtomicRequest {
            op,
            request_id: p.request_id(),
            remote_stag: p.remote_stag(),
            remote_to: p.remote_to(),
            add_or_swap: p.add_or_swap(),
            add_or_swap_mask: p.add_or_swap_mask(),
            compare: p.compare(),
            compare_mask: p.compare_mask(),
        })
    }

    fn emit(&self, buf: &mut [u8]) {
        let mut p = AtomicRequestPacket::new_unchecked(buf);
        p.set_opcode_word(u32::from(self.op as u8));
        p.set_request_id(self.request_id);
        p.set_remote_stag(self.remote_stag);
        p.set_remote_to(self.remote_to);
        p.set_add_or_swap(self.add_or_swap);
        p.set_add_or_swap_mask(self.add_or_swap_mask);
        p.set_compare(self.compare);
        p.set_compare_mask(self.compare_mask);
    }
}

/// The body of an RFC 7306 Atomic Response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AtomicResponse {
    /// The request identifier of the request answered.
    pub request_id: u32,
    /// The target word before the operation.
    pub original_data: u64,
}

impl AtomicResponse {
    fn parse(body: &[u8]) -> Result<AtomicResponse> {
        let p = AtomicResponsePacket::new_checked(body)?;
        Ok(AtomicResponse {
            request_id: p.request_id(),
            original_data: p.original_data(),
        })
    }

    fn emit(&self, buf: &mut [u8]) {
        let mut p = AtomicResponsePacket::new_unchecked(buf);
        p.set_request_id(self.request_id);
        p.set_original_data(self.original_data);
    }
}

/// What a segment is, with the fields of its buffer model and its RDMAP header.
///
/// Illegal combinations (an untagged Write, a Read Request on the Send queue) cannot be built:
/// the buffer model and the queue number follow from the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Message<'a> {
    /// RDMA Write segment into the sink buffer `stag` at `to`.
    Write {
        /// Sink STag.
        stag: u32,
        /// Tagged offset of this segment's payload.
        to: u64,
    },
    /// RDMA Read Response segment into the requester's sink.
    ReadResponse {
        /// Sink STag (from the Read Request).
        stag: u32,
        /// Tagged offset of this segment's payload.
        to: u64,
    },
    /// RDMA Read Request (QN 1), one segment, message offset 0.
    ReadRequest {
        /// Message sequence number on QN 1.
        msn: u32,
        /// The request.
        request: ReadRequest,
    },
    /// A Send-family segment (QN 0): Send, Send with SE, and their Invalidate forms.
    Send {
        /// Message sequence number on QN 0.
        msn: u32,
        /// Message offset of this segment's payload.
        mo: u32,
        /// Send with Solicited Event.
        solicited: bool,
        /// Send with Invalidate: the STag the receiver invalidates.
        invalidate: Option<u32>,
    },
    /// Terminate (QN 2).
    Terminate {
        /// Message sequence number on QN 2 (1: a stream terminates once).
        msn: u32,
        /// The Terminate header and the copied headers of the failing segment.
        terminate: terminate::Repr<'a>,
    },
    /// RFC 7306 Immediate Data (QN 0): 8 octets delivered into a posted receive.
    ImmediateData {
        /// Message sequence number on QN 0.
        msn: u32,
        /// With Solicited Event.
        solicited: bool,
        /// The immediate data.
        data: [u8; IMMEDIATE_DATA_LEN],
    },
    /// RFC 7306 Atomic Request (QN 1, shared with Read Requests).
    AtomicRequest {
        /// Message sequence number on QN 1.
        msn: u32,
        /// The request.
        request: AtomicRequest,
    },
    /// RFC 7306 Atomic Response (QN 3).
    AtomicResponse {
        /// Message sequence number on QN 3.
        msn: u32,
        /// The response.
        response: AtomicResponse,
    },
}

impl Message<'_> {
    /// The opcode of this message.
    pub const fn opcode(&self) -> Opcode {
        match self {
            Message::Write { .. } => Opcode::Write,
            Message::ReadResponse { .. } => Opcode::ReadResponse,
            Message::ReadRequest { .. } => Opcode::ReadRequest,
            Message::Send {
                solicited: false,
                invalidate: None,
                ..
            } => Opcode::Send,
            Message::Send {
                solicited: false,
                invalidate: Some(_),
                ..
            } => Opcode::SendInvalidate,
            Message::Send {
                solicited: true,
                invalidate: None,
                ..
            } => Opcode::SendSe,
            Message::Send {
                solicited: true,
                invalidate: Some(_),
                ..
            } => Opcode::SendSeInvalidate,
            Message::Terminate { .. } => Opcode::Terminate,
            Message::ImmediateData {
                solicited: false, ..
            } => Opcode::ImmediateData,
            Message::ImmediateData {
                solicited: true, ..
            } => Opcode::ImmediateDataSe,
            Message::AtomicRequest { .. } => Opcode::AtomicRequest,
            Message::AtomicResponse { .. } => Opcode::AtomicResponse,
        }
    }

    /// Octets of the RDMAP header after the DDP header.
    pub fn rdmap_header_len(&self) -> usize {
        match self {
            Message::ReadRequest { .. } => READ_REQUEST_LEN,
            Message::Terminate { terminate, .. } => terminate.buffer_len(),
            Message::ImmediateData { .. } => IMMEDIATE_DATA_LEN,
            Message::AtomicRequest { .. } => ATOMIC_REQUEST_LEN,
            Message::AtomicResponse { .. } => ATOMIC_RESPONSE_LEN,
            _ => 0,
        }
    }

    /// The DDP placement fields of this message.
    pub const fn placement(&self) -> Placement {
        let (qn, msn, mo) = match *self {
            Message::Write { stag, to } | Message::ReadResponse { stag, to } => {
                return Placement::Tagged { stag, to };
            }
            Message::ReadRequest { msn, .. } => (QN_READ_REQUEST, msn, 0),
            Message::Send { msn, mo, .. } => (QN_SEND, msn, mo),
            Message::Terminate { msn, .. } => (QN_TERMINATE, msn, 0),
            Message::ImmediateData { msn, .. } => (QN_SEND, msn, 0),
            Message::AtomicRequest { msn, .. } => (QN_ATOMIC_REQUEST, msn, 0),
            Message::AtomicResponse { msn, .. } => (QN_ATOMIC_RESPONSE, msn, 0),
        };
        Placement::Untagged { qn, msn, mo }
    }
}

/// One ULPDU — a DDP segment with its RDMAP meaning — as values.
///
/// `payload` is what follows the DDP and RDMAP headers: the data of a Write, Read Response or
/// Send segment; empty for the other messages.
///
/// ```
/// use netdirect_wire::rdmap::{Message, ReadRequest, Repr};
/// // A siw Read Request (docs/spec/iwarp.md §4.3), without its MPA framing.
/// let ulpdu = [
///     0x41, 0x41, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, // DDP: QN 1, MSN 1, MO 0
///     0x76, 0x7d, 0x2a, 0x00, 0, 0, 0x56, 0x17, 0x58, 0x26, 0x81, 0x20, 0, 0, 0, 0x40,
///     0xb1, 0x0a, 0xc0, 0x00, 0, 0, 0x56, 0x28, 0xa6, 0xed, 0x14, 0x50,
/// ];
/// let repr = Repr::parse(&ulpdu).unwrap();
/// assert_eq!(repr.message, Message::ReadRequest {
///     msn: 1,
///     request: ReadRequest {
///         sink_stag: 0x767d_2a00, sink_to: 0x5617_5826_8120, size: 64,
///         source_stag: 0xb10a_c000, source_to: 0x5628_a6ed_1450,
///     },
/// });
/// let mut out = [0u8; 46];
/// assert_eq!(repr.emit(&mut out), Ok(46));
/// assert_eq!(out, ulpdu);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr<'a> {
    /// L: the last segment of its message.
    pub last: bool,
    /// The message and its header fields.
    pub message: Message<'a>,
    /// The data after the headers.
    pub payload: &'a [u8],
}

impl<'a> Repr<'a> {
    /// Parses one ULPDU.
    ///
    /// Checks, in this order, what RFC 5040/5041 make protocol errors: DDP version, RDMAP
    /// version, a defined opcode in its buffer model, the queue number of untagged opcodes, the
    /// RDMAP header length, and the fixed fields of single-segment messages (a Read Request,
    /// Terminate, immediate data or atomic message must be one segment at message offset 0, and
    /// carries nothing after its header).
    pub fn parse(ulpdu: &'a [u8]) -> Result<Repr<'a>> {
        let (ddp, rest) = ddp::Repr::parse(ulpdu)?;
        let rv = (ddp.rsvd_ulp & field::RV) >> field::RV_SHIFT;
        if rv != VERSION {
            return Err(Error::RdmapVersion(rv));
        }
        let raw_opcode = ddp.rsvd_ulp & field::OPCODE;
        let opcode = Opcode::from_u8(raw_opcode).ok_or(Error::Opcode(raw_opcode))?;
        let (qn, msn, mo) = match ddp.placement {
            Placement::Tagged { stag, to } => {
                let message = match opcode {
                    Opcode::Write => Message::Write { stag, to },
                    Opcode::ReadResponse => Message::ReadResponse { stag, to },
                    _ => return Err(Error::Opcode(raw_opcode)),
                };
                return Ok(Repr {
                    last: ddp.last,
                    message,
                    payload: rest,
                });
            }
            Placement::Untagged { qn, msn, mo } => (qn, msn, mo),
        };
        match opcode.queue_number() {
            None => return Err(Error::Opcode(raw_opcode)),
            Some(expected) if expected != qn => return Err(Error::QueueNumber(qn)),
            Some(_) => {}
        }
        let single = |len: usize| -> Result<&'a [u8]> {
            if !ddp.last || mo != 0 {
                return Err(Error::Malformed);
            }
            let body = rest.get(..len).ok_or(Error::Truncated)?;
            if rest.len() != len {
                return Err(Error::Malformed);
            }
            Ok(body)
        };
        let message = match opcode {
            Opcode::Send | Opcode::SendInvalidate | Opcode::SendSe | Opcode::SendSeInvalidate => {
                let invalidate =
                    matches!(opcode, Opcode::SendInvalidate | Opcode::SendSeInvalidate)
                        .then_some(ddp.rsvd_ulp32);
                let solicited = matches!(opcode, Opcode::SendSe | Opcode::SendSeInvalidate);
                return Ok(Repr {
                    last: ddp.last,
                    message: Message::Send {
                        msn,
                        mo,
                        solicited,
                        invalidate,
                    },
                    payload: rest,
                });
            }
            Opcode::ReadRequest => Message::ReadRequest {
                msn,
                request: ReadRequest::parse(single(READ_REQUEST_LEN)?)?,
            },
            Opcode::Terminate => {
                if !ddp.last || mo != 0 {
                    return Err(Error::Malformed);
                }
                let terminate = terminate::Repr::parse(rest)?;
                if terminate.buffer_len() != rest.len() {
                    return Err(Error::Malformed);
                }
                Message::Terminate { msn, terminate }
            }
            Opcode::ImmediateData | Opcode::ImmediateDataSe => {
                let body = single(IMMEDIATE_DATA_LEN)?;
                let mut data = [0u8; IMMEDIATE_DATA_LEN];
                data.copy_from_slice(body);
                Message::ImmediateData {
                    msn,
                    solicited: opcode == Opcode::ImmediateDataSe,
                    data,
                }
            }
            Opcode::AtomicRequest => Message::AtomicRequest {
                msn,
                request: AtomicRequest::parse(single(ATOMIC_REQUEST_LEN)?)?,
            },
            Opcode::AtomicResponse => Message::AtomicResponse {
                msn,
                response: AtomicResponse::parse(single(ATOMIC_RESPONSE_LEN)?)?,
            },
            Opcode::Write | Opcode::ReadResponse => return Err(Error::Opcode(raw_opcode)),
        };
        Ok(Repr {
            last: ddp.last,
            message,
            payload: &[],
        })
    }

    /// The DDP header of this segment.
    pub fn ddp(&self) -> ddp::Repr {
        let rsvd_ulp32 = match self.message {
            Message::Send {
                invalidate: Some(stag),
                ..
            } => stag,
            _ => 0,
        };
        ddp::Repr {
            last: self.last,
            rsvd_ulp: control(self.message.opcode()),
            rsvd_ulp32,
            placement: self.message.placement(),
        }
    }

    /// Octets of the DDP and RDMAP headers (everything before the payload).
    pub fn header_len(&self) -> usize {
        self.message.placement().header_len() + self.message.rdmap_header_len()
    }

    /// Octets of the whole ULPDU.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Writes the DDP and RDMAP headers only (for senders that send the payload from another
    /// buffer); returns their length.
    pub fn emit_header(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.header_len();
        let buf = buf.get_mut(..len).ok_or(Error::Truncated)?;
        let at = self.ddp().emit(buf)?;
        let body = &mut buf[at..];
        match &self.message {
            Message::ReadRequest { request, .. } => request.emit(body),
            Message::Terminate { terminate, .. } => {
                terminate.emit(body)?;
            }
            Message::ImmediateData { data, .. } => body.copy_from_slice(data),
            Message::AtomicRequest { request, .. } => request.emit(body),
            Message::AtomicResponse { response, .. } => response.emit(body),
            Message::Write { .. } | Message::ReadResponse { .. } | Message::Send { .. } => {}
        }
        Ok(len)
    }

    /// Writes the whole ULPDU (headers and payload); returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        let buf = buf.get_mut(..len).ok_or(Error::Truncated)?;
        let at = self.emit_header(buf)?;
        buf[at..].copy_from_slice(self.payload);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(r: &Repr<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; r.buffer_len()];
        assert_eq!(r.emit(&mut buf), Ok(buf.len()));
        assert_eq!(Repr::parse(&buf).as_ref(), Ok(r));
        buf
    }

    #[test]
    fn control_octets_seen_on_the_wire() {
        // docs/spec/iwarp.md §4.1: Send 41 43, Read Request 41 41, Read Response c1 42, Write c1 40.
        let cases = [
            (
                Message::Send {
                    msn: 1,
                    mo: 0,
                    solicited: false,
                    invalidate: None,
                },
                true,
                [0x41, 0x43],
            ),
            (
                Message::ReadRequest {
                    msn: 1,
                    request: ReadRequest::default(),
                },
                true,
                [0x41, 0x41],
            ),
            (Message::ReadResponse { stag: 1, to: 0 }, true, [0xc1, 0x42]),
            (Message::Write { stag: 1, to: 0 }, true, [0xc1, 0x40]),
            (Message::Write { stag: 1, to: 0 }, false, [0x81, 0x40]),
        ];
        for (message, last, first) in cases {
            let bytes = roundtrip(&Repr {
                last,
                message,
                payload: &[],
            });
            assert_eq!(bytes[..2], first, "{message:?}");
        }
    }

    #[test]
    fn send_with_invalidate_carries_stag() {
        let r = Repr {
            last: true,
            message: Message::Send {
                msn: 9,
                mo: 0,
                solicited: true,
                invalidate: Some(0xDEAD_BEEF),
            },
            payload: b"x",
        };
        let bytes = roundtrip(&r);
        assert_eq!(bytes[1], 0x46);
        assert_eq!(bytes[2..6], [0xDE, 0xAD, 0xBE, 0xEF]);
        assert_eq!(bytes[6..10], [0, 0, 0, 0]);
    }

    #[test]
    fn rfc7306_messages() {
        let req = AtomicRequest {
            op: AtomicOp::CompareSwap,
            request_id: 7,
            remote_stag: 0x100,
            remote_to: 0x2000,
            add_or_swap: 5,
            add_or_swap_mask: u64::MAX,
            compare: 4,
            compare_mask: u64::MAX,
        };
        let b = roundtrip(&Repr {
            last: true,
            message: Message::AtomicRequest {
                msn: 1,
                request: req,
            },
            payload: &[],
        });
        assert_eq!(b.len(), 18 + 52);
        assert_eq!(b[1], 0x4A);
        assert_eq!(b[6..10], [0, 0, 0, 1]);
        let b = roundtrip(&Repr {
            last: true,
            message: Message::AtomicResponse {
                msn: 1,
                response: AtomicResponse {
                    request_id: 7,
                    original_data: 4,
                },
            },
            payload: &[],
        });
        assert_eq!(b[6..10], [0, 0, 0, 3]);
        let b = roundtrip(&Repr {
            last: true,
            message: Message::ImmediateData {
                msn: 3,
                solicited: true,
                data: *b"12345678",
            },
            payload: &[],
        });
        assert_eq!(b[1], 0x49);
        assert_eq!(&b[18..], b"12345678");
    }

    #[test]
    fn protocol_errors() {
        let mut send = vec![0u8; 18];
        let r = Repr {
            last: true,
            message: Message::Send {
                msn: 1,
                mo: 0,
                solicited: false,
                invalidate: None,
            },
            payload: &[],
        };
        r.emit(&mut send).unwrap();
        let with = |i: usize, v: u8| {
            let mut b = send.clone();
            b[i] = v;
            Repr::parse(&b).map(|_| ())
        };
        assert_eq!(with(1, 0x03), Err(Error::RdmapVersion(0)));
        assert_eq!(with(1, 0x83), Err(Error::RdmapVersion(2)));
        assert_eq!(with(1, 0x4C), Err(Error::Opcode(0xC)));
        assert_eq!(with(1, 0x40), Err(Error::Opcode(0)));
        assert_eq!(with(9, 5), Err(Error::QueueNumber(5)));
        assert_eq!(with(0, 0x42), Err(Error::DdpVersion(2)));
        // Reserved RDMAP bits are ignored.
        assert_eq!(with(1, 0x73), Ok(()));
        // A tagged Send.
        let mut tagged = [0u8; 14];
        tagged[0] = 0xC1;
        tagged[1] = 0x43;
        assert_eq!(Repr::parse(&tagged), Err(Error::Opcode(3)));
        // A Read Request that is short, long, not last, or at a non-zero offset.
        let mut rr = vec![0u8; 46];
        Repr {
            last: true,
            message: Message::ReadRequest {
                msn: 1,
                request: ReadRequest::default(),
            },
            payload: &[],
        }
        .emit(&mut rr)
        .unwrap();
        assert_eq!(Repr::parse(&rr[..45]), Err(Error::Truncated));
        let mut long = rr.clone();
        long.push(0);
        assert_eq!(Repr::parse(&long), Err(Error::Malformed));
        let mut not_last = rr.clone();
        not_last[0] = 0x01;
        assert_eq!(Repr::parse(&not_last), Err(Error::Malformed));
        let mut offset = rr.clone();
        offset[17] = 1;
        assert_eq!(Repr::parse(&offset), Err(Error::Malformed));
    }
}
