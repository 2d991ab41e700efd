//! One RDMAP stream (RFC 5040) over MPA, from the first FPDU to the Terminate or close: the send
//! queue with ORD and read fences, segmentation, inbound validation and placement decisions,
//! inbound RDMA Read service (IRD), completions in posting order, and error handling.
//!
//! # How a driver uses it
//!
//! ```text
//! post(..)                      a work request enters the send queue
//! poll_transmit() -> TxFrame    the next FPDU to send: header bytes + where the payload comes from
//! poll_action() -> Action       a local operation (bind, fast register, invalidate) to carry out
//! local_done(wr, status)        ... and its outcome
//! push_input(bytes)             bytes read from TCP
//! poll_rx(&mut host) -> Place   where the payload of the next inbound segment goes
//! poll_completion()             work completions, FIFO per queue
//! poll_event()                  Terminate sent or received, peer closed
//! ```
//!
//! # Header-first receive (large payloads straight from the socket)
//!
//! With [`Stream::set_direct_min`] on, a driver can read large payloads from the socket
//! straight into their destination, smoltcp/quinn style (the engine still touches neither
//! sockets nor memory):
//!
//! ```text
//! read_hint() -> Option<usize>          how much to read into the input buffer next (header + trailer sized while large FPDUs arrive)
//! fill_input_with / push_input          ... as before
//! poll_rx(&mut host) -> Place           as before; buffered payload octets of a direct FPDU come out here too
//! direct_target() -> DirectTarget       the validated destination of the rest of the payload and its length
//! direct_placed(&landed)                each piece a (vectored) read put there, in order: counted and CRC'd
//! ```
//!
//! When the input buffer holds the length field and DDP/RDMAP header of an FPDU (markers off)
//! whose payload still misses at least the threshold, and the header is a Send, RDMA Write or
//! Read Response that passes every check the buffered path makes (STag, TO, bounds and rights
//! through [`Host::tagged`], MSN, MO, receive available and large enough, outstanding read,
//! ...), the header leaves the buffer and [`Stream::direct_target`] names the rest of the
//! payload's destination. Anything else — a complete or small FPDU, a header that fails a
//! check, the responder's first FPDU — stays on the buffered path, which decides exactly as
//! before (CRC first). Once the payload is in, the pad and CRC come through the input buffer;
//! the segment is then accounted for by the same code as a buffered one (completions, MSNs,
//! invalidation), so a CRC error or a stream that ends mid-payload gives the same Terminate,
//! state and completions as on the buffered path. The octets already placed are then
//! undefined; nothing outside the validated range is ever written. One difference remains: the
//! first segment of a Send takes its receive when its header is validated, so if the FPDU then
//! fails, that receive is the receive in progress and completes `STATUS_CANCELLED` from the
//! stream (from a QP's own queue the driver would have cancelled it just the same; from an SRQ it
//! is consumed instead of left in the SRQ — its buffer was written).
//!
//! The engine never touches memory. A [`Host`] answers its questions: whether a tagged range may
//! be accessed (returning a *lease* that keeps the region alive while the engine holds it),
//! which posted receive takes the next inbound Send, and invalidations.
//!
//! # Decisions (where RFC 5040 and NDK leave a choice)
//!
//! | case | decision |
//! |---|---|
//! | Send/Write completion | when its last segment has been handed to the driver ("handed to TCP", as siw) |
//! | completion order | FIFO per queue: a Send posted after a Read completes after it |
//! | more reads posted than ORD | queued in order until a read completes (§10.15) |
//! | peer exceeds our IRD | Terminate DDP untagged "no buffer" (0x02) on QN 1 |
//! | inbound Send, no receive posted | Terminate DDP untagged "no buffer" (0x02) |
//! | inbound Send longer than the receive | the receive completes `STATUS_BUFFER_OVERFLOW`, Terminate DDP "message too long" (0x05) |
//! | inbound tagged access failure | Terminate DDP tagged (invalid STag 0x00, base/bounds 0x01, STag not associated 0x02, TO wrap 0x03); access rights map to invalid STag, as siw |
//! | inbound Read Request access failure | Terminate RDMAP remote protection, code by failure |
//! | zero-length inbound Write or Read | not checked against the region table (as siw, which sends STag 1 for RTR) |
//! | RFC 7306 opcodes | not negotiated: Terminate RDMAP "unexpected opcode" (as siw) |
//! | Terminate received | the request whose header it copies (an outstanding read's Read Request; a Write's segment or a Send's MSN, for one not yet reported — still being sent, or waiting behind a read) completes with the mapped status: invalid STag, rights, not associated, cannot invalidate `STATUS_ACCESS_VIOLATION`; bounds, TO wrap, no receive, receive too small `STATUS_REMOTE_RESOURCES`; else `STATUS_CONNECTION_ABORTED`. Without a copy, the oldest outstanding read for an RDMAP protection error. The rest `STATUS_CANCELLED` |
//! | read with local invalidate ([`PostFlags::local_invalidate`]) | the sink STag is invalidated when the last Read Response arrives, silent success or not; if it cannot be, the read completes `STATUS_INVALID_DEVICE_REQUEST` and the stream fails (Terminate RDMAP local catastrophic, no header copied) |
//! | after any error | no more input is processed, everything pending completes `STATUS_CANCELLED` |
//! | responder sending first | held until the first inbound FPDU (RFC 5044 "initiator speaks first") |
//!
//! `provider_error_code` of an error completion packs the Terminate: `0x01LLTTCC` when we sent
//! it, `0x02LLTTCC` when we received it (layer, type, code).

use std::collections::VecDeque;

use netdirect_types::Status;
use netdirect_wire::crc::{self as wire_crc, FpduCrc};
use netdirect_wire::ddp;
use netdirect_wire::mpa::{self, Deframer, DeframerConfig, FpduPacket, MarkerLayout};
use netdirect_wire::rdmap::{self, Message, ReadRequest};
use netdirect_wire::terminate::{self, TermError};

use crate::handshake::{Negotiated, Role, RtrKind};

/// How a tagged access is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// An inbound RDMA Write places data.
    RemoteWrite,
    /// An inbound RDMA Read Request reads data.
    RemoteRead,
    /// An inbound Read Response places data into our own read sink.
    ReadSink,
}

/// Why a tagged access was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaggedError {
    /// No valid region or window has this STag.
    InvalidStag,
    /// The range is outside the region.
    BaseBounds,
    /// The region does not grant the access.
    AccessRights,
    /// The STag belongs to another protection domain (or QP, for windows).
    NotAssociated,
    /// The tagged offset plus length wraps 2⁶⁴.
    ToWrap,
}

/// The driver's side of the engine: memory checks, receive buffers, invalidation.
pub trait Host {
    /// A handle that keeps a checked region alive (and its check valid) while held.
    type Lease: Clone;

    /// Checks `len` octets at tagged offset `to` of `stag` for `access`.
    fn tagged(
        &mut self,
        stag: u32,
        to: u64,
        len: u64,
        access: Access,
    ) -> Result<Self::Lease, TaggedError>;

    /// Invalidates `stag` for a Send with Invalidate. Fails if it cannot be invalidated.
    fn invalidate(&mut self, stag: u32) -> Result<(), TaggedError>;

    /// Takes the next posted receive (from the QP's receive queue or its SRQ): its id and
    /// capacity in octets.
    fn take_receive(&mut self) -> Option<(u64, u64)>;
}

/// A work request for the send queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// Send `len` octets of the request's gather list.
    Send {
        /// Octets.
        len: u32,
        /// Send with Solicited Event.
        solicited: bool,
        /// Send with Invalidate: the peer's STag to invalidate.
        invalidate: Option<u32>,
    },
    /// RDMA Write of `len` octets to the peer's `stag` at `to`.
    Write {
        /// Octets.
        len: u32,
        /// Peer STag.
        stag: u32,
        /// Peer tagged offset.
        to: u64,
    },
    /// RDMA Read of `len` octets from the peer's `stag`/`to` into our `sink_stag`/`sink_to`.
    Read {
        /// Octets.
        len: u32,
        /// Our sink STag (the Read Response is tagged with it).
        sink_stag: u32,
        /// Our sink tagged offset.
        sink_to: u64,
        /// Peer source STag.
        stag: u32,
        /// Peer source tagged offset.
        to: u64,
    },
    /// A local operation (bind, fast register, invalidate) carried out by the driver in queue
    /// order.
    Local,
}

/// Flags of a send-queue work request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PostFlags {
    /// Report success too (the NDK's default; false for `SILENT_SUCCESS`).
    pub signaled: bool,
    /// Start only after every earlier RDMA Read has completed.
    pub read_fence: bool,
    /// Reads: invalidate the sink STag through [`Host::invalidate`] when the read succeeds
    /// (NDK `RDMA_READ_LOCAL_INVALIDATE`), whether or not the success is reported. If it cannot
    /// be invalidated the read completes `STATUS_INVALID_DEVICE_REQUEST` and the stream fails
    /// (Terminate RDMAP local catastrophic). Ignored for other requests.
    pub local_invalidate: bool,
}

/// Why a post was refused (nothing was queued).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PostError {
    /// The stream is in error or closed.
    #[error("stream is not connected")]
    NotConnected,
    /// A read with ORD 0: it could never be issued.
    #[error("no outbound read credits (ORD 0)")]
    NoReadCredits,
}

/// Where a frame's payload comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload<L> {
    /// Octets `[offset, offset + len)` of work request `wr`'s gather list.
    Request {
        /// Work request id.
        wr: u64,
        /// Offset in the gather list.
        offset: u64,
        /// Octets.
        len: u32,
    },
    /// Octets at tagged offset `to` of our own region held by `lease` (a Read Response).
    Tagged {
        /// The region, checked when the Read Request arrived.
        lease: L,
        /// Tagged offset.
        to: u64,
        /// Octets.
        len: u32,
    },
}

impl<L> Payload<L> {
    /// Octets of payload.
    pub fn len(&self) -> u32 {
        match self {
            Payload::Request { len, .. } | Payload::Tagged { len, .. } => *len,
        }
    }

    /// Whether there are no payload octets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One FPDU to send: `header` (ULPDU_Length and the DDP/RDMAP headers), then `payload`, then
/// the pad and CRC ([`netdirect_wire::mpa::trailer`]), with markers inserted at `seq` when
/// [`Stream::markers_tx`] is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxFrame<L> {
    /// ULPDU_Length and the headers.
    pub header: Vec<u8>,
    /// The payload, if any.
    pub payload: Option<Payload<L>>,
    /// Stream position of the FPDU's first octet, relative to the first FPDU (the marker base).
    pub seq: u32,
}

/// Where an inbound segment's payload goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest<L> {
    /// Into posted receive `recv`, at `offset` of its scatter list.
    Receive {
        /// Receive id (from [`Host::take_receive`]).
        recv: u64,
        /// Message offset.
        offset: u64,
    },
    /// Into a tagged region at tagged offset `to`.
    Tagged {
        /// The checked region.
        lease: L,
        /// Tagged offset.
        to: u64,
    },
}

impl<L: Clone> Dest<L> {
    /// The destination `n` octets further on.
    pub fn advanced(&self, n: u64) -> Dest<L> {
        match self {
            Dest::Receive { recv, offset } => Dest::Receive {
                recv: *recv,
                offset: offset + n,
            },
            Dest::Tagged { lease, to } => Dest::Tagged {
                lease: lease.clone(),
                to: to.wrapping_add(n),
            },
        }
    }
}

/// Where the rest of a large inbound payload goes when the driver reads it from the socket
/// straight into its destination ([`Stream::direct_target`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectTarget<L> {
    /// Where the next payload octet goes: a range of the host's lease (a region, or a posted
    /// receive), validated as a whole when the segment's header arrived.
    pub dest: Dest<L>,
    /// Payload octets still to come; the driver must not read more than this into `dest`.
    pub len: usize,
    /// Octets that follow the payload and may be read with it, in the same read, into the
    /// input buffer ([`Stream::prefetch`]): this FPDU's pad and CRC and the next FPDU's header.
    pub then: usize,
}

/// Payload octets to place.
#[derive(Debug, PartialEq, Eq)]
pub struct Place<'a, L> {
    /// Where.
    pub dest: Dest<L>,
    /// What.
    pub data: &'a [u8],
}

/// Which queue and kind of request a completion is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkKind {
    /// Send or Send with Invalidate.
    Send,
    /// RDMA Write.
    Write,
    /// RDMA Read.
    Read,
    /// A local operation.
    Local,
    /// A receive.
    Receive,
}

/// A work completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkCompletion {
    /// Work request id (or receive id).
    pub wr: u64,
    /// Kind.
    pub kind: WorkKind,
    /// Outcome.
    pub status: Status,
    /// Receives: octets placed.
    pub bytes: u32,
    /// Receives: the STag a Send with Invalidate invalidated.
    pub invalidated: Option<u32>,
    /// Receives: the Send carried Solicited Event.
    pub solicited: bool,
    /// The Terminate behind an error (see the module docs), 0 otherwise.
    pub provider_error: u32,
}

/// A Terminate as raw layer/type/code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TermCode {
    /// Layer.
    pub layer: u8,
    /// Error type.
    pub error_type: u8,
    /// Error code.
    pub error_code: u8,
}

impl TermCode {
    /// The `provider_error_code` form of this Terminate: `0x01LLTTCC` when we sent it,
    /// `0x02LLTTCC` when we received it.
    pub fn provider_error(self, sent: bool) -> u32 {
        self.packed(if sent { 1 } else { 2 })
    }

    fn packed(self, origin: u32) -> u32 {
        origin << 24
            | u32::from(self.layer) << 16
            | u32::from(self.error_type) << 8
            | u32::from(self.error_code)
    }

    /// The named error, if the tables have one.
    pub fn error(self) -> Option<TermError> {
        TermError::from_parts(self.layer, self.error_type, self.error_code)
    }
}

impl From<TermError> for TermCode {
    fn from(e: TermError) -> Self {
        let (l, t, c) = e.parts();
        TermCode {
            layer: l as u8,
            error_type: t,
            error_code: c,
        }
    }
}

/// What the stream reports besides completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// We detected an error and queued a Terminate; close the connection once it is sent.
    TerminateSent(TermCode),
    /// The peer sent a Terminate; close the connection.
    TerminateReceived(TermCode),
    /// The peer closed its side of TCP.
    PeerClosed,
}

/// A local operation to carry out now, in send-queue order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Action {
    /// The work request to carry out; answer with [`Stream::local_done`].
    pub wr: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    Error,
}

#[derive(Debug, Clone)]
struct SqEntry {
    wr: u64,
    req: Request,
    flags: PostFlags,
    /// `Some` once finished: the status to report.
    done: Option<Status>,
    /// A Send once started: its MSN (what a Terminate about it copies).
    msn: Option<u32>,
}

#[derive(Debug, Clone)]
enum TxKind<L> {
    Send {
        wr: u64,
        solicited: bool,
        invalidate: Option<u32>,
        msn: u32,
    },
    Write {
        wr: u64,
        stag: u32,
        to: u64,
    },
    ReadResponse {
        lease: Option<L>,
        sink_stag: u32,
        sink_to: u64,
        to: u64,
    },
}

#[derive(Debug, Clone)]
struct TxMsg<L> {
    kind: TxKind<L>,
    len: u32,
    sent: u32,
    /// The send-queue entry to mark done after the last segment.
    entry: Option<u64>,
}

#[derive(Debug, Clone)]
struct OutRead {
    entry: u64,
    msn: u32,
    sink_stag: u32,
    sink_to: u64,
    len: u32,
    got: u32,
    rtr: bool,
}

#[derive(Debug, Clone)]
struct InRead<L> {
    lease: Option<L>,
    sink_stag: u32,
    sink_to: u64,
    to: u64,
    len: u32,
}

#[derive(Debug, Clone, Copy)]
struct RxMsg {
    recv: u64,
    cap: u64,
    got: u64,
    absorb: bool,
}

/// Everything but the deframer, so that a placement can borrow the deframer's buffer while the
/// state changes.
#[derive(Debug, Clone)]
struct Core<L> {
    state: State,
    limits: crate::ReadLimits,
    max_payload: u32,
    segmentation: Segmentation,
    markers_tx: Option<MarkerLayout>,
    tx_seq: u32,
    tx_allowed: bool,
    rtr_tx: Option<RtrKind>,
    rtr_rx: Option<RtrKind>,
    // Send side.
    next_entry: u64,
    sq: VecDeque<(u64, SqEntry)>,
    started: usize,
    current: Option<TxMsg<L>>,
    local_pending: Option<u64>,
    outstanding: VecDeque<OutRead>,
    irq: VecDeque<InRead<L>>,
    responses_in_a_row: u32,
    send_msn: u32,
    read_msn: u32,
    term_tx: Option<(TermCode, Option<Copied>)>,
    rx_copy: Option<Copied>,
    pending_frame: Option<TxFrame<L>>,
    // Receive side.
    recv_msn: u32,
    rreq_msn: u32,
    rx: Option<RxMsg>,
    // Out.
    completions: VecDeque<WorkCompletion>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

/// One RDMAP stream, sans I/O. `L` is the driver's lease type ([`Host::Lease`]).
#[derive(Debug, Clone)]
pub struct Stream<L> {
    deframer: Deframer,
    core: Core<L>,
    /// Header-first receive: the least payload still missing for an FPDU to be received
    /// directly (`None`: off).
    direct_min: Option<usize>,
    /// The FPDU being received directly.
    drx: Option<DirectRx<L>>,
    /// The last FPDU received was large: size reads so that the next one's header arrives
    /// alone ([`Stream::read_hint`]).
    large_streak: bool,
}

/// An FPDU whose header was validated and whose payload goes straight to its destination.
#[derive(Debug, Clone)]
struct DirectRx<L> {
    /// ULPDU_Length and the DDP/RDMAP headers as received (at most 2 + 18 octets).
    header: [u8; mpa::LENGTH_LEN + 18],
    header_len: usize,
    /// Where payload octet 0 goes.
    dest: Dest<L>,
    payload_len: usize,
    /// Payload octets placed so far (copied from the input buffer or read directly).
    placed: usize,
    /// CRC over the length field, the headers and the payload placed so far.
    crc: FpduCrc,
}

/// What [`Stream::poll_rx`] does next with the FPDU being received directly.
enum DirectStep<L> {
    /// More input needed.
    Wait,
    /// Place the next `n` buffered octets at the destination.
    Place(Dest<L>, usize),
    /// The FPDU is finished (or the stream failed): go on.
    Done,
}

/// How a message is cut into FPDUs ([`Stream::set_segmentation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Segmentation {
    /// As few FPDUs as MULPDU allows, of equal size (±1 octet): no runt after full ones.
    #[default]
    Even,
    /// Every FPDU full but the last, which takes the rest (what Linux siw sends).
    Greedy,
}

/// The default for [`Stream::set_direct_min`]: an FPDU whose payload still misses at least
/// this many octets (16 KiB) when its header has arrived is read straight into its
/// destination.
///
/// Header-first receive costs read system calls: one for the trailer and the next header, one
/// (or more) for the payload, where buffered reads take many FPDUs at once. Below some size the
/// saved copy is cheaper than those calls: on the 2-vCPU development machine a 1 KiB threshold
/// put 4 KiB messages on the small-read path and cost them throughput, while the copy of a
/// 4 KiB payload takes a fraction of a system call. 16 KiB keeps everything up to that on
/// the buffered path and takes the soft provider's large FPDUs (up to 64 KiB) header-first.
pub const DIRECT_MIN: usize = 16 * 1024;

/// The octets a header-first read asks for: the longest DDP/RDMAP header (untagged, 18) with
/// the length field before it.
const HEADER_READ: usize = mpa::LENGTH_LEN + 18;

/// The largest MULPDU we segment to by default: a whole 1500-MTU segment is not required on
/// loopback, and siw accepts any FPDU up to 65535 octets (spec/iwarp.md §7.3).
pub const DEFAULT_MULPDU: usize = 16 * 1024;

impl<L: Clone> Stream<L> {
    /// A stream in FPDU mode after `negotiated`, segmenting to `mulpdu` octets per ULPDU.
    pub fn new(negotiated: &Negotiated, mulpdu: usize) -> Stream<L> {
        let mulpdu = mulpdu.clamp(64, mpa::MAX_ULPDU);
        Stream {
            deframer: Deframer::new(DeframerConfig {
                crc: negotiated.crc,
                markers: negotiated.markers_rx,
                first_seq: 0,
            }),
            core: Core {
                state: State::Active,
                limits: negotiated.limits,
                // Room for the largest data header (untagged, 18 octets).
                max_payload: (mulpdu - 18) as u32,
                segmentation: Segmentation::Even,
                markers_tx: negotiated.markers_tx.then(|| MarkerLayout::new(0)),
                tx_seq: 0,
                // RFC 5044 §7.1.3 has the responder wait for the initiator's first FPDU; with
                // RFC 6581 RTR negotiated we do. Without, Linux (siw) sends at once and its
                // ULPs rely on it (perftest's write_lat server writes first), so we do too:
                // an initiator that needs the wait offers RTR.
                tx_allowed: negotiated.role == Role::Initiator || negotiated.rtr.is_none(),
                rtr_tx: negotiated
                    .rtr
                    .filter(|_| negotiated.role == Role::Initiator),
                rtr_rx: negotiated
                    .rtr
                    .filter(|_| negotiated.role == Role::Responder),
                next_entry: 0,
                sq: VecDeque::new(),
                started: 0,
                current: None,
                local_pending: None,
                outstanding: VecDeque::new(),
                irq: VecDeque::new(),
                responses_in_a_row: 0,
                send_msn: 1,
                read_msn: 1,
                term_tx: None,
                rx_copy: None,
                pending_frame: None,
                recv_msn: 1,
                rreq_msn: 1,
                rx: None,
                completions: VecDeque::new(),
                actions: VecDeque::new(),
                events: VecDeque::new(),
            },
            direct_min: None,
            drx: None,
            large_streak: false,
        }
    }

    /// How messages are cut into FPDUs from now on (default [`Segmentation::Even`]).
    pub fn set_segmentation(&mut self, segmentation: Segmentation) {
        self.core.segmentation = segmentation;
    }

    /// Turns header-first receive on (`Some(min)`, see [`DIRECT_MIN`]) or off (`None`, the
    /// default). When on and the peer sends without markers, an FPDU whose payload still
    /// misses at least `min` octets once its header is buffered is validated from its header,
    /// and [`Stream::direct_target`] then names where the rest of its payload goes. With
    /// markers on in what we receive it does nothing: markers would land inside the payload,
    /// so every FPDU goes through the input buffer.
    pub fn set_direct_min(&mut self, min: Option<usize>) {
        self.direct_min = min.map(|m| m.max(1));
    }

    /// Where the payload of the FPDU being received now goes, when the driver should read it
    /// from the socket straight into that memory: a validated range of `len` octets. `None`
    /// when there is no such FPDU, when buffered input must be processed first
    /// ([`Stream::poll_rx`]) or when the stream stopped.
    ///
    /// The driver reads at most `len` octets into `dest`'s bytes (a vectored read when they
    /// are several pieces), reports each piece that landed, in order, with
    /// [`Stream::direct_placed`], and goes on with [`Stream::poll_rx`] as usual: the pad and CRC
    /// come through the input buffer, and the segment's completions and errors are exactly
    /// those of the buffered path. A CRC error found then leaves the octets already placed in
    /// the destination undefined (the FPDU is never delivered: the stream terminates with an
    /// LLP CRC error, as RFC 5044 requires); nothing outside the validated range is touched.
    pub fn direct_target(&self) -> Option<DirectTarget<L>> {
        let d = self.drx.as_ref()?;
        if self.core.state != State::Active || self.deframer.buffered() != 0 {
            return None;
        }
        let len = d.payload_len - d.placed;
        let ulpdu = d.header_len - mpa::LENGTH_LEN + d.payload_len;
        (len > 0).then(|| DirectTarget {
            dest: d.dest.advanced(d.placed as u64),
            len,
            then: mpa::pad_len(ulpdu) + mpa::CRC_LEN + HEADER_READ,
        })
    }

    /// Lends `n` octets of input buffer for the tail of a read whose first pieces are the
    /// [`Stream::direct_target`] (its `then`): one read takes the rest of a payload, its
    /// trailer and the next header. Report the payload pieces with [`Stream::direct_placed`]
    /// first, then how many octets landed here with [`Stream::prefetched`]; nothing else in
    /// between.
    pub fn prefetch(&mut self, n: usize) -> &mut [u8] {
        self.deframer.spare(n)
    }

    /// Keeps the first `k` octets of the last [`Stream::prefetch`] as input; returns how many.
    pub fn prefetched(&mut self, k: usize) -> usize {
        self.deframer.commit(k)
    }

    /// Octets of memory the stream holds for input (buffers only, not its queues).
    pub fn input_footprint(&self) -> usize {
        self.deframer.footprint()
    }

    /// Payload octets the driver read into the [`Stream::direct_target`] destination, in
    /// order: they are counted and added to the FPDU's CRC. Returns how many were taken (never
    /// more than the target's `len`; 0 when there is no target).
    pub fn direct_placed(&mut self, landed: &[u8]) -> usize {
        if self.direct_target().is_none() {
            return 0;
        }
        let crc_on = self.deframer.config().crc;
        let Some(d) = self.drx.as_mut() else { return 0 };
        let k = landed.len().min(d.payload_len - d.placed);
        if crc_on {
            d.crc.update(&landed[..k]);
        }
        d.placed += k;
        self.deframer.skip(k);
        k
    }

    /// How many octets the driver should read into the input buffer next. With header-first
    /// receive on, just enough to reach the next FPDU's header (and the current one's
    /// trailer) while large FPDUs are arriving, so that their payload is read straight into
    /// place; otherwise the deframer's read window ([`Deframer::read_window`]: small while
    /// reads come back short, growing with a backlog), so that the input buffer holds what is
    /// in flight. `None` when the stream stopped (read as much as is convenient, to drop it).
    pub fn read_hint(&self) -> Option<usize> {
        if self.core.state != State::Active {
            return None;
        }
        let window = self.deframer.read_window();
        if self.direct_min.is_none() || self.deframer.config().markers {
            return Some(window);
        }
        let buffered = self.deframer.buffered();
        match &self.drx {
            Some(d) if d.placed < d.payload_len => Some(d.payload_len - d.placed),
            Some(d) => {
                let ulpdu = d.header_len - mpa::LENGTH_LEN + d.payload_len;
                let trailer = mpa::pad_len(ulpdu) + mpa::CRC_LEN;
                Some((trailer + HEADER_READ).saturating_sub(buffered).max(1))
            }
            None if self.large_streak && buffered < HEADER_READ => Some(HEADER_READ - buffered),
            None => Some(window),
        }
    }

    /// Whether we insert markers in what we send (the driver inserts them at [`TxFrame::seq`]).
    pub fn markers_tx(&self) -> bool {
        self.core.markers_tx.is_some()
    }

    /// Whether the stream is still usable.
    pub fn is_active(&self) -> bool {
        self.core.state == State::Active
    }

    /// Effective read limits.
    pub fn limits(&self) -> crate::ReadLimits {
        self.core.limits
    }

    /// Queues a send-queue work request with id `wr`.
    pub fn post(&mut self, wr: u64, req: Request, flags: PostFlags) -> Result<(), PostError> {
        if self.core.state != State::Active {
            return Err(PostError::NotConnected);
        }
        if matches!(req, Request::Read { .. }) && self.core.limits.ord == 0 {
            return Err(PostError::NoReadCredits);
        }
        let id = self.core.next_entry;
        self.core.next_entry += 1;
        self.core.sq.push_back((
            id,
            SqEntry {
                wr,
                req,
                flags,
                done: None,
                msn: None,
            },
        ));
        Ok(())
    }

    /// The outcome of a local operation handed out by [`Stream::poll_action`].
    pub fn local_done(&mut self, wr: u64, status: Status) {
        let core = &mut self.core;
        let Some(id) = core.local_pending else { return };
        // An answer for another request is ignored: the pending one still waits for its own.
        if let Some((_, e)) = core.sq.iter_mut().find(|(i, e)| *i == id && e.wr == wr) {
            e.done = Some(status);
            core.local_pending = None;
            if !status.is_success() {
                core.fail(Some(TermError::RdmapLocalCatastrophic.into()), None, None);
            }
            core.retire();
        }
    }

    /// The next local operation to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.core.schedule_local();
        self.core.actions.pop_front()
    }

    /// The next FPDU to send, if any.
    pub fn poll_transmit(&mut self) -> Option<TxFrame<L>> {
        self.core.poll_transmit()
    }

    /// Whether [`Stream::poll_transmit`] has another frame ready now: the driver tells TCP
    /// more is coming (`MSG_MORE`) so that FPDUs share full segments.
    pub fn tx_pending(&self) -> bool {
        self.core.tx_pending()
    }

    /// Bytes read from TCP.
    pub fn push_input(&mut self, bytes: &[u8]) {
        if self.core.state == State::Active {
            self.deframer.push(bytes);
        }
    }

    /// Lets `read` write up to `n` received octets straight into the stream's input buffer
    /// (a socket read without an extra copy); keeps what it reports. When the stream is no
    /// longer active the octets are read and dropped.
    pub fn fill_input_with<E>(
        &mut self,
        n: usize,
        read: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        if self.core.state == State::Active {
            self.deframer.fill_with(n, read)
        } else {
            let mut scratch = vec![0u8; n.min(64 * 1024)];
            read(&mut scratch)
        }
    }

    /// The peer closed its side of TCP.
    pub fn handle_eof(&mut self) {
        if self.core.state == State::Active {
            self.core.events.push_back(Event::PeerClosed);
        }
    }

    /// Processes buffered input up to the next payload to place; `None` when more input is
    /// needed or the stream is in error. Place the data before polling completions.
    pub fn poll_rx<H: Host<Lease = L>>(&mut self, host: &mut H) -> Option<Place<'_, L>> {
        let (dest, range) = loop {
            if self.core.state != State::Active {
                return None;
            }
            if self.drx.is_some() {
                match self.direct_step(host) {
                    DirectStep::Wait => return None,
                    DirectStep::Done => continue,
                    DirectStep::Place(dest, n) => {
                        let data = self.deframer.consume_slice(n);
                        return Some(Place { dest, data });
                    }
                }
            }
            if let Some(min) = self.direct_min {
                if let Some(d) = self.probe_direct(min, host) {
                    self.drx = Some(d);
                    continue;
                }
            }
            let Some(next) = self.deframer.next_ulpdu() else {
                // Everything buffered is taken: an idle connection gives its input buffer
                // back.
                self.deframer.release_idle();
                return None;
            };
            let ulpdu = match next {
                Ok(u) => u,
                Err(e) => {
                    let term = e
                        .term_error(false)
                        .unwrap_or(TermError::LlpLocalCatastrophic);
                    self.core.rx_copy = None;
                    self.core.fail(Some(term.into()), None, None);
                    return None;
                }
            };
            if let Some(min) = self.direct_min {
                self.large_streak = ulpdu.len() >= min + HEADER_READ;
            }
            if let Some(place) = self.core.on_ulpdu(ulpdu, 0, host) {
                break place;
            }
        };
        let ulpdu = self.deframer.last_ulpdu()?;
        Some(Place {
            dest,
            data: &ulpdu[range],
        })
    }

    /// Looks at the buffered head of the next FPDU: when it is a Send, RDMA Write or Read
    /// Response whose payload still misses at least `min` octets and whose header passes every
    /// check the buffered path makes, takes the header out of the input buffer and returns
    /// the direct receive. Anything else (a complete FPDU, a small one, an invalid header, markers,
    /// the responder's first FPDU) is left to the buffered path, which then decides exactly
    /// as it always has, CRC first.
    fn probe_direct<H: Host<Lease = L>>(
        &mut self,
        min: usize,
        host: &mut H,
    ) -> Option<DirectRx<L>> {
        let config = self.deframer.config();
        if config.markers || self.core.rtr_rx.is_some() {
            return None;
        }
        let raw = self.deframer.peek();
        if raw.len() < mpa::LENGTH_LEN {
            return None;
        }
        let ulpdu_len = usize::from(FpduPacket::new_unchecked(raw).ulpdu_length());
        if raw.len() >= mpa::fpdu_len(ulpdu_len) {
            return None;
        }
        // The whole DDP header (its length from its T bit) must be in.
        let ddp_len = ddp::Packet::new_checked(&raw[mpa::LENGTH_LEN..])
            .ok()?
            .header_len();
        let header_len = mpa::LENGTH_LEN + ddp_len;
        let payload_len = ulpdu_len.checked_sub(ddp_len)?;
        let header = raw.get(..header_len)?;
        if payload_len.saturating_sub(raw.len() - header_len) < min {
            return None;
        }
        let repr = rdmap::Repr::parse(&header[mpa::LENGTH_LEN..]).ok()?;
        let len = payload_len as u64;
        let dest = match repr.message {
            Message::Write { stag, to } => {
                let lease = host.tagged(stag, to, len, Access::RemoteWrite).ok()?;
                Dest::Tagged { lease, to }
            }
            Message::ReadResponse { stag, to } => self
                .core
                .probe_read_response(stag, to, len, repr.last, host)?,
            Message::Send { msn, mo, .. } => self.core.probe_send(msn, mo, len, host)?,
            _ => return None,
        };
        let mut d = DirectRx {
            header: [0; HEADER_READ],
            header_len,
            dest,
            payload_len,
            placed: 0,
            crc: FpduCrc::new(),
        };
        d.header[..header_len].copy_from_slice(header);
        if config.crc {
            d.crc.update(header);
        }
        self.deframer.consume(header_len);
        self.large_streak = true;
        Some(d)
    }

    /// One step of the FPDU being received directly: place payload octets that came through
    /// the input buffer, or check the trailer and finish the segment.
    fn direct_step<H: Host<Lease = L>>(&mut self, host: &mut H) -> DirectStep<L> {
        let crc_on = self.deframer.config().crc;
        let buffered = self.deframer.buffered();
        let Some(d) = self.drx.as_mut() else {
            return DirectStep::Done;
        };
        let missing = d.payload_len - d.placed;
        if missing > 0 {
            if buffered == 0 {
                return DirectStep::Wait;
            }
            let n = buffered.min(missing);
            let dest = d.dest.advanced(d.placed as u64);
            if crc_on {
                d.crc.update(&self.deframer.peek()[..n]);
            }
            d.placed += n;
            return DirectStep::Place(dest, n);
        }
        let ulpdu_len = d.header_len - mpa::LENGTH_LEN + d.payload_len;
        let pad = mpa::pad_len(ulpdu_len);
        if buffered < pad + mpa::CRC_LEN {
            return DirectStep::Wait;
        }
        let d = self.drx.take().expect("checked above");
        let trailer = self.deframer.consume_slice(pad + mpa::CRC_LEN);
        let mut crc = d.crc;
        crc.update(&trailer[..pad]);
        let received = wire_crc::from_wire([
            trailer[pad],
            trailer[pad + 1],
            trailer[pad + 2],
            trailer[pad + 3],
        ]);
        let computed = crc.finish();
        if crc_on && received != computed {
            // As the buffered path: the stream can no longer be trusted.
            let term = netdirect_wire::Error::Crc { received, computed }
                .term_error(false)
                .unwrap_or(TermError::LlpLocalCatastrophic);
            self.core.rx_copy = None;
            self.core.fail(Some(term.into()), None, None);
            return DirectStep::Done;
        }
        // The segment is whole and sound: account for it exactly as the buffered path does
        // (its payload is already in place, so the placement it returns is not used again).
        let _ = self.core.on_ulpdu(
            &d.header[mpa::LENGTH_LEN..d.header_len],
            d.payload_len,
            host,
        );
        DirectStep::Done
    }

    /// The next work completion.
    pub fn poll_completion(&mut self) -> Option<WorkCompletion> {
        self.core.completions.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.events.pop_front()
    }

    /// Cancels everything pending (NdkFlush, or teardown): every unfinished send-queue request
    /// and the receive being filled complete with `STATUS_CANCELLED`; the stream stops.
    pub fn flush(&mut self) {
        self.core.fail(None, None, None);
    }
}

fn tagged_term(e: TaggedError) -> TermError {
    match e {
        TaggedError::InvalidStag | TaggedError::AccessRights => TermError::DdpTaggedInvalidStag,
        TaggedError::BaseBounds => TermError::DdpTaggedBaseBounds,
        TaggedError::NotAssociated => TermError::DdpTaggedStagNotAssociated,
        TaggedError::ToWrap => TermError::DdpTaggedToWrap,
    }
}

fn read_term(e: TaggedError) -> TermError {
    match e {
        TaggedError::InvalidStag => TermError::RdmapInvalidStag,
        TaggedError::BaseBounds => TermError::RdmapBaseBounds,
        TaggedError::AccessRights => TermError::RdmapAccessRights,
        TaggedError::NotAssociated => TermError::RdmapStagNotAssociated,
        TaggedError::ToWrap => TermError::RdmapToWrap,
    }
}

/// The status the blamed request gets when the peer terminates.
fn remote_status(code: TermCode) -> Status {
    match code.error() {
        Some(
            TermError::RdmapInvalidStag
            | TermError::RdmapAccessRights
            | TermError::RdmapStagNotAssociated
            | TermError::RdmapCannotInvalidate
            | TermError::DdpTaggedInvalidStag
            | TermError::DdpTaggedStagNotAssociated,
        ) => Status::ACCESS_VIOLATION,
        // The request caused an error at the peer's QP (NDSPI's ND_REMOTE_ERROR, the same
        // value): out of bounds, or a Send that found no receive or one too small.
        Some(
            TermError::RdmapBaseBounds
            | TermError::RdmapToWrap
            | TermError::DdpTaggedBaseBounds
            | TermError::DdpTaggedToWrap
            | TermError::DdpUntaggedNoBuffer
            | TermError::DdpUntaggedTooLong,
        ) => Status::REMOTE_RESOURCES,
        _ => Status::CONNECTION_ABORTED,
    }
}

impl<L: Clone> Core<L> {
    fn kind_of(req: &Request) -> WorkKind {
        match req {
            Request::Send { .. } => WorkKind::Send,
            Request::Write { .. } => WorkKind::Write,
            Request::Read { .. } => WorkKind::Read,
            Request::Local => WorkKind::Local,
        }
    }

    /// Moves finished requests at the head of the send queue to the completion queue.
    fn retire(&mut self) {
        while let Some((_, e)) = self.sq.front() {
            let Some(status) = e.done else { break };
            let (_, e) = self.sq.pop_front().expect("front exists");
            self.started = self.started.saturating_sub(1);
            if e.flags.signaled || !status.is_success() {
                self.completions.push_back(WorkCompletion {
                    wr: e.wr,
                    kind: Self::kind_of(&e.req),
                    status,
                    bytes: 0,
                    invalidated: None,
                    solicited: false,
                    provider_error: 0,
                });
            }
        }
    }

    fn mark_done(&mut self, id: u64, status: Status) {
        if let Some((_, e)) = self.sq.iter_mut().find(|(i, _)| *i == id) {
            e.done = Some(status);
        }
        self.retire();
    }

    /// Enters the error state: queue a Terminate if `sent` names one, blame the oldest
    /// unfinished request with `blame`, cancel the rest.
    fn fail(&mut self, sent: Option<TermCode>, received: Option<TermCode>, blame: Option<u64>) {
        if self.state == State::Error {
            return;
        }
        self.state = State::Error;
        // A Terminate is untagged: it must not land between the segments of a Send we are half
        // way through (siw rejects that), so then it is not sent, as siw does.
        let mid_send = matches!(
            &self.current,
            Some(TxMsg { kind: TxKind::Send { .. }, sent, len, .. }) if *sent > 0 && sent < len
        );
        if let Some(t) = sent {
            if !mid_send {
                self.term_tx = Some((t, self.rx_copy.take()));
            }
            self.events.push_back(Event::TerminateSent(t));
        }
        if let Some(t) = received {
            self.events.push_back(Event::TerminateReceived(t));
        }
        let provider_error = match (sent, received) {
            (Some(t), _) => t.packed(1),
            (None, Some(t)) => t.packed(2),
            (None, None) => 0,
        };
        let blame_status = received.map(remote_status).unwrap_or(Status::CANCELLED);
        self.current = None;
        self.local_pending = None;
        for (id, e) in self.sq.drain(..) {
            // The request the Terminate names gets its status even when it had finished on our
            // side (a Write handed out, waiting behind a read to be reported).
            let status = match e.done {
                _ if Some(id) == blame => blame_status,
                Some(s) => s,
                None => Status::CANCELLED,
            };
            if e.flags.signaled || !status.is_success() {
                self.completions.push_back(WorkCompletion {
                    wr: e.wr,
                    kind: Self::kind_of(&e.req),
                    status,
                    bytes: 0,
                    invalidated: None,
                    solicited: false,
                    provider_error: if status.is_success() {
                        0
                    } else {
                        provider_error
                    },
                });
            }
        }
        self.outstanding.clear();
        self.irq.clear();
        if let Some(rx) = self.rx.take().filter(|m| !m.absorb) {
            self.completions.push_back(WorkCompletion {
                wr: rx.recv,
                kind: WorkKind::Receive,
                status: Status::CANCELLED,
                bytes: 0,
                invalidated: None,
                solicited: false,
                provider_error,
            });
        }
    }

    fn local_error(&mut self, term: TermError) -> Option<(Dest<L>, core::ops::Range<usize>)> {
        self.fail(Some(term.into()), None, None);
        None
    }

    /// Hands out the next local operation if it is at the head of what may start.
    fn schedule_local(&mut self) {
        if self.state != State::Active || self.local_pending.is_some() || self.current.is_some() {
            return;
        }
        if let Some((id, e)) = self.sq.get(self.started) {
            if matches!(e.req, Request::Local) && self.may_start(e) {
                let (id, wr) = (*id, e.wr);
                self.started += 1;
                self.local_pending = Some(id);
                self.actions.push_back(Action { wr });
            }
        }
    }

    /// Whether `poll_transmit` would return a frame now (mirrors its steps).
    fn tx_pending(&self) -> bool {
        if self.term_tx.is_some() {
            return true;
        }
        if self.state != State::Active || !self.tx_allowed {
            return false;
        }
        if self.rtr_tx.is_some() || self.pending_frame.is_some() || self.current.is_some() {
            return true;
        }
        self.local_pending.is_none()
            && (!self.irq.is_empty()
                || self
                    .sq
                    .get(self.started)
                    .is_some_and(|(_, e)| !matches!(e.req, Request::Local) && self.may_start(e)))
    }

    fn may_start(&self, e: &SqEntry) -> bool {
        if e.flags.read_fence && !self.outstanding.is_empty() {
            return false;
        }
        if matches!(e.req, Request::Read { .. })
            && self.outstanding.len() >= usize::from(self.limits.ord)
        {
            return false;
        }
        true
    }

    fn header_frame(&mut self, repr: &rdmap::Repr<'_>, payload: Option<Payload<L>>) -> TxFrame<L> {
        let ulpdu_len = repr.header_len() + payload.as_ref().map_or(0, |p| p.len() as usize);
        let mut header = vec![0u8; mpa::LENGTH_LEN + repr.header_len()];
        // ulpdu_len ≤ max_payload + 46 < 65536 by construction.
        header[..2].copy_from_slice(&(ulpdu_len as u16).to_be_bytes());
        repr.emit_header(&mut header[2..])
            .expect("header buffer sized by header_len");
        let seq = self.tx_seq;
        let fpdu = mpa::fpdu_len(ulpdu_len);
        let wire = match self.markers_tx {
            Some(m) => m.marked_len(seq, fpdu),
            None => fpdu,
        };
        self.tx_seq = self.tx_seq.wrapping_add(wire as u32);
        TxFrame {
            header,
            payload,
            seq,
        }
    }

    fn poll_transmit(&mut self) -> Option<TxFrame<L>> {
        if let Some((t, copied)) = self.term_tx.take() {
            // Layer/type decide what to copy (RFC 5040 §4.8, as siw): DDP errors copy the DDP
            // header, RDMAP errors also the RDMAP header, LLP and catastrophic errors nothing.
            let copy = copied.filter(|_| {
                t.layer == terminate::Layer::Ddp as u8
                    || (t.layer == terminate::Layer::Rdmap as u8 && t.error_type != 0)
            });
            let rdmap_copy = copy.as_ref().and_then(|c| c.rdmap);
            let terminate = terminate::Repr {
                layer: t.layer,
                error_type: t.error_type,
                error_code: t.error_code,
                m: copy.is_some(),
                failing_ddp: copy.as_ref().map(|c| terminate::FailingDdp {
                    segment_length: c.seg_len,
                    header: &c.ddp[..c.ddp_len],
                }),
                rdmap_header: rdmap_copy
                    .as_ref()
                    .filter(|_| t.layer == terminate::Layer::Rdmap as u8)
                    .map(|h| &h[..]),
            };
            let repr = rdmap::Repr {
                last: true,
                message: Message::Terminate { msn: 1, terminate },
                payload: &[],
            };
            return Some(self.header_frame(&repr, None));
        }
        if self.state != State::Active || !self.tx_allowed {
            return None;
        }
        if let Some(kind) = self.rtr_tx.take() {
            return Some(self.rtr_frame(kind));
        }
        if self.current.is_none() && self.local_pending.is_none() {
            self.start_next();
        }
        if let Some(frame) = self.pending_frame.take() {
            return Some(frame);
        }
        let msg = self.current.as_mut()?;
        let left = msg.len - msg.sent;
        let chunk = match self.segmentation {
            // Equal shares of what is left, none over the maximum: a message is never a run
            // of full FPDUs and a runt (1 MiB in 32 KiB FPDUs used to end with 768 octets).
            Segmentation::Even => left.div_ceil(left.div_ceil(self.max_payload).max(1)),
            Segmentation::Greedy => left.min(self.max_payload),
        };
        let offset = msg.sent;
        msg.sent += chunk;
        let last = msg.sent == msg.len;
        let (message, payload) = match &msg.kind {
            TxKind::Send {
                wr,
                solicited,
                invalidate,
                msn,
            } => (
                Message::Send {
                    msn: *msn,
                    mo: offset,
                    solicited: *solicited,
                    invalidate: *invalidate,
                },
                Payload::Request {
                    wr: *wr,
                    offset: u64::from(offset),
                    len: chunk,
                },
            ),
            TxKind::Write { wr, stag, to } => (
                Message::Write {
                    stag: *stag,
                    to: to.wrapping_add(u64::from(offset)),
                },
                Payload::Request {
                    wr: *wr,
                    offset: u64::from(offset),
                    len: chunk,
                },
            ),
            TxKind::ReadResponse {
                lease,
                sink_stag,
                sink_to,
                to,
            } => (
                Message::ReadResponse {
                    stag: *sink_stag,
                    to: sink_to.wrapping_add(u64::from(offset)),
                },
                match lease {
                    Some(lease) => Payload::Tagged {
                        lease: lease.clone(),
                        to: to.wrapping_add(u64::from(offset)),
                        len: chunk,
                    },
                    None => Payload::Request {
                        wr: 0,
                        offset: 0,
                        len: 0,
                    },
                },
            ),
        };
        let entry = msg.entry;
        if last {
            self.current = None;
        }
        let repr = rdmap::Repr {
            last,
            message,
            payload: &[],
        };
        let payload = (!payload.is_empty()).then_some(payload);
        let frame = self.header_frame(&repr, payload);
        if last {
            if let Some(id) = entry {
                self.mark_done(id, Status::SUCCESS);
            }
        }
        Some(frame)
    }

    fn rtr_frame(&mut self, kind: RtrKind) -> TxFrame<L> {
        // STag 1 and TO 1 for the zero-length operations, as cxgb4: the safest values for peers
        // that treat STag 0 specially.
        let message = match kind {
            RtrKind::Write => Message::Write { stag: 1, to: 1 },
            RtrKind::Read => {
                let msn = self.read_msn;
                self.read_msn = self.read_msn.wrapping_add(1);
                self.outstanding.push_back(OutRead {
                    entry: u64::MAX,
                    msn,
                    sink_stag: 1,
                    sink_to: 1,
                    len: 0,
                    got: 0,
                    rtr: true,
                });
                Message::ReadRequest {
                    msn,
                    request: ReadRequest {
                        sink_stag: 1,
                        sink_to: 1,
                        size: 0,
                        source_stag: 1,
                        source_to: 1,
                    },
                }
            }
            RtrKind::Send => {
                let msn = self.send_msn;
                self.send_msn = self.send_msn.wrapping_add(1);
                Message::Send {
                    msn,
                    mo: 0,
                    solicited: false,
                    invalidate: None,
                }
            }
        };
        self.header_frame(
            &rdmap::Repr {
                last: true,
                message,
                payload: &[],
            },
            None,
        )
    }

    /// Starts the next message: a read response or the next send-queue request.
    fn start_next(&mut self) {
        let sq_ready = self
            .sq
            .get(self.started)
            .is_some_and(|(_, e)| !matches!(e.req, Request::Local) && self.may_start(e));
        // At most 4 responses in a row while the send queue has work (siw's burst).
        if !self.irq.is_empty() && (!sq_ready || self.responses_in_a_row < 4) {
            let r = self.irq.pop_front().expect("non-empty");
            self.responses_in_a_row += 1;
            self.current = Some(TxMsg {
                kind: TxKind::ReadResponse {
                    lease: r.lease,
                    sink_stag: r.sink_stag,
                    sink_to: r.sink_to,
                    to: r.to,
                },
                len: r.len,
                sent: 0,
                entry: None,
            });
            return;
        }
        self.responses_in_a_row = 0;
        if !sq_ready {
            return;
        }
        let (id, e) = self
            .sq
            .get(self.started)
            .map(|(i, e)| (*i, e.clone()))
            .expect("ready");
        self.started += 1;
        match e.req {
            Request::Send {
                len,
                solicited,
                invalidate,
            } => {
                let msn = self.send_msn;
                self.send_msn = self.send_msn.wrapping_add(1);
                if let Some((_, entry)) = self.sq.get_mut(self.started - 1) {
                    entry.msn = Some(msn);
                }
                self.current = Some(TxMsg {
                    kind: TxKind::Send {
                        wr: e.wr,
                        solicited,
                        invalidate,
                        msn,
                    },
                    len,
                    sent: 0,
                    entry: Some(id),
                });
            }
            Request::Write { len, stag, to } => {
                self.current = Some(TxMsg {
                    kind: TxKind::Write { wr: e.wr, stag, to },
                    len,
                    sent: 0,
                    entry: Some(id),
                });
            }
            Request::Read {
                len,
                sink_stag,
                sink_to,
                stag,
                to,
            } => {
                let msn = self.read_msn;
                self.read_msn = self.read_msn.wrapping_add(1);
                self.outstanding.push_back(OutRead {
                    entry: id,
                    msn,
                    sink_stag,
                    sink_to,
                    len,
                    got: 0,
                    rtr: false,
                });
                // A Read Request is one header-only segment; send it through the queue of
                // one-off frames.
                let repr = rdmap::Repr {
                    last: true,
                    message: Message::ReadRequest {
                        msn,
                        request: ReadRequest {
                            sink_stag,
                            sink_to,
                            size: len,
                            source_stag: stag,
                            source_to: to,
                        },
                    },
                    payload: &[],
                };
                let frame = self.header_frame(&repr, None);
                self.pending_frame = Some(frame);
            }
            Request::Local => unreachable!("local requests are handed out by schedule_local"),
        }
    }
}

/// What a valid Read Response segment is ([`Core::check_read_response`]).
enum ReadResponse {
    /// The answer to our ready-to-receive zero-length Read.
    Rtr,
    /// Data for the oldest outstanding read; `done`: its last segment.
    Data { done: bool },
}

/// Whether `ulpdu` is an untagged Terminate (opcode 7 on QN 2) with at least its control field.
fn is_terminate(ulpdu: &[u8]) -> bool {
    let Ok(p) = ddp::Packet::new_checked(ulpdu) else {
        return false;
    };
    ulpdu.len() >= ddp::UNTAGGED_HEADER_LEN + 4
        && !p.tagged()
        && p.rsvd_ulp() & 0x0F == rdmap::Opcode::Terminate as u8
        && p.queue_number() == rdmap::QN_TERMINATE
}

/// The failing segment's headers, kept for the Terminate we may send about it.
#[derive(Debug, Clone, Copy)]
struct Copied {
    ddp: [u8; 18],
    ddp_len: usize,
    rdmap: Option<[u8; terminate::RDMAP_HEADER_LEN]>,
    seg_len: u16,
}

impl Copied {
    fn of(ulpdu: &[u8], extra: usize) -> Option<Copied> {
        let p = ddp::Packet::new_checked(ulpdu).ok()?;
        let (tagged, ddp_len) = (p.tagged(), p.header_len());
        let mut ddp = [0u8; ddp::UNTAGGED_HEADER_LEN];
        ddp[..ddp_len].copy_from_slice(&ulpdu[..ddp_len]);
        let is_read_request = !tagged && p.rsvd_ulp() & 0x0F == rdmap::Opcode::ReadRequest as u8;
        let rdmap = ulpdu
            .get(ddp_len..ddp_len + terminate::RDMAP_HEADER_LEN)
            .filter(|_| is_read_request)
            .map(|h| {
                let mut a = [0u8; terminate::RDMAP_HEADER_LEN];
                a.copy_from_slice(h);
                a
            });
        let headers = ddp_len + rdmap.map_or(0, |_| terminate::RDMAP_HEADER_LEN);
        // As siw: the failing segment's payload length, informational.
        let seg_len =
            u16::try_from((ulpdu.len() + extra).saturating_sub(headers)).unwrap_or(u16::MAX);
        Some(Copied {
            ddp,
            ddp_len,
            rdmap,
            seg_len,
        })
    }
}

impl<L: Clone> Core<L> {
    /// Which of our requests a received Terminate is about: the outstanding read whose Read
    /// Request it copies, or the unreported RDMA Write or Send whose segment it copies (STag
    /// and a tagged offset inside the Write; the Send's MSN); without a copy, the oldest
    /// outstanding read for a protection error.
    fn blame(&self, t: &terminate::Repr<'_>) -> Option<u64> {
        match t.failing_ddp {
            Some(f) if f.header.len() == 14 && f.header[0] & 0x80 != 0 => {
                let h = f.header;
                if h[1] & 0x0F != rdmap::Opcode::Write as u8 {
                    return None;
                }
                let stag = u32::from_be_bytes([h[2], h[3], h[4], h[5]]);
                let to = u64::from_be_bytes([h[6], h[7], h[8], h[9], h[10], h[11], h[12], h[13]]);
                // Only a Write that has begun to go out can be named; the oldest such one.
                self.sq
                    .iter()
                    .take(self.started)
                    .find(|(_, e)| match e.req {
                        Request::Write {
                            len,
                            stag: s,
                            to: start,
                        } => s == stag && to.wrapping_sub(start) < u64::from(len).max(1),
                        _ => false,
                    })
                    .map(|(id, _)| *id)
            }
            Some(f) => {
                let h = ddp::Packet::new_checked(f.header).ok()?;
                let untagged = f.header.len() == ddp::UNTAGGED_HEADER_LEN && !h.tagged();
                if !untagged {
                    return None;
                }
                let msn = h.msn();
                if h.queue_number() == rdmap::QN_SEND {
                    return self
                        .sq
                        .iter()
                        .take(self.started)
                        .find(|(_, e)| e.msn == Some(msn))
                        .map(|(id, _)| *id);
                }
                if h.queue_number() != rdmap::QN_READ_REQUEST {
                    return None;
                }
                self.outstanding
                    .iter()
                    .find(|r| r.msn == msn && !r.rtr)
                    .map(|r| r.entry)
            }
            None if t.layer == terminate::Layer::Rdmap as u8 && t.error_type == 1 => {
                self.outstanding.iter().find(|r| !r.rtr).map(|r| r.entry)
            }
            None => None,
        }
    }

    /// Handles one inbound ULPDU; returns where its payload goes, as a range of `ulpdu`.
    ///
    /// `extra` payload octets follow `ulpdu` (0, except for a segment received directly: then
    /// `ulpdu` is the DDP/RDMAP header of a Send, RDMA Write or Read Response and `extra` its
    /// payload length; the returned range then reaches past `ulpdu`).
    fn on_ulpdu<H: Host<Lease = L>>(
        &mut self,
        ulpdu: &[u8],
        extra: usize,
        host: &mut H,
    ) -> Option<(Dest<L>, core::ops::Range<usize>)> {
        self.rx_copy = Copied::of(ulpdu, extra);
        let first = !self.tx_allowed || self.rtr_rx.is_some();
        // The responder may send once the initiator's first FPDU arrived (see `tx_allowed`).
        self.tx_allowed = true;
        let repr = match rdmap::Repr::parse(ulpdu) {
            Ok(r) => r,
            Err(_) if is_terminate(ulpdu) => {
                // A malformed Terminate is still the peer's Terminate (siw copies headers
                // loosely): take its layer, type and code, never answer it with our own.
                // is_terminate checked that the control field is there.
                let t = terminate::Packet::new_unchecked(&ulpdu[ddp::UNTAGGED_HEADER_LEN..]);
                let code = TermCode {
                    layer: t.layer(),
                    error_type: t.error_type(),
                    error_code: t.error_code(),
                };
                self.fail(None, Some(code), None);
                return None;
            }
            Err(e) => {
                let tagged = ddp::Packet::new_checked(ulpdu).is_ok_and(|p| p.tagged());
                let term = e
                    .term_error(tagged)
                    .unwrap_or(TermError::RdmapOperationUnspecified);
                return self.local_error(term);
            }
        };
        let payload_at = ulpdu.len() - repr.payload.len();
        let payload = payload_at..ulpdu.len() + extra;
        let len = (repr.payload.len() + extra) as u64;
        // The responder's ready-to-receive message, absorbed without checks.
        if first {
            if let Some(kind) = self.rtr_rx.take() {
                let is_rtr = match (&repr.message, kind) {
                    (Message::Write { .. }, RtrKind::Write) => len == 0,
                    (Message::Send { .. }, RtrKind::Send) => len == 0,
                    (Message::ReadRequest { request, .. }, RtrKind::Read) => request.size == 0,
                    _ => false,
                };
                if is_rtr {
                    match repr.message {
                        Message::Send { .. } => self.recv_msn = self.recv_msn.wrapping_add(1),
                        Message::ReadRequest { request, .. } => {
                            self.rreq_msn = self.rreq_msn.wrapping_add(1);
                            self.irq.push_back(InRead {
                                lease: None,
                                sink_stag: request.sink_stag,
                                sink_to: request.sink_to,
                                to: 0,
                                len: 0,
                            });
                        }
                        _ => {}
                    }
                    return None;
                }
            }
        }
        match repr.message {
            Message::Write { stag, to } => {
                if len == 0 {
                    return None;
                }
                match host.tagged(stag, to, len, Access::RemoteWrite) {
                    Ok(lease) => Some((Dest::Tagged { lease, to }, payload)),
                    Err(e) => self.local_error(tagged_term(e)),
                }
            }
            Message::ReadResponse { stag, to } => {
                self.on_read_response(stag, to, len, repr.last, payload, host)
            }
            Message::ReadRequest { msn, request } => {
                if msn != self.rreq_msn {
                    return self.local_error(TermError::DdpUntaggedMsnRange);
                }
                self.rreq_msn = self.rreq_msn.wrapping_add(1);
                let in_service = self.irq.len()
                    + usize::from(matches!(
                        self.current,
                        Some(TxMsg {
                            kind: TxKind::ReadResponse { .. },
                            ..
                        })
                    ));
                if in_service >= usize::from(self.limits.ird) {
                    return self.local_error(TermError::DdpUntaggedNoBuffer);
                }
                let lease = if request.size == 0 {
                    None
                } else {
                    match host.tagged(
                        request.source_stag,
                        request.source_to,
                        u64::from(request.size),
                        Access::RemoteRead,
                    ) {
                        Ok(l) => Some(l),
                        Err(e) => return self.local_error(read_term(e)),
                    }
                };
                self.irq.push_back(InRead {
                    lease,
                    sink_stag: request.sink_stag,
                    sink_to: request.sink_to,
                    to: request.source_to,
                    len: request.size,
                });
                None
            }
            Message::Send {
                msn,
                mo,
                solicited,
                invalidate,
            } => self.on_send(
                msn, mo, solicited, invalidate, repr.last, payload, len, host,
            ),
            Message::Terminate { terminate, .. } => {
                let code = TermCode {
                    layer: terminate.layer,
                    error_type: terminate.error_type,
                    error_code: terminate.error_code,
                };
                let blame = self.blame(&terminate);
                self.fail(None, Some(code), blame);
                None
            }
            Message::ImmediateData { .. }
            | Message::AtomicRequest { .. }
            | Message::AtomicResponse { .. } => self.local_error(TermError::RdmapUnexpectedOpcode),
        }
    }

    /// The rules of a Read Response segment against the oldest outstanding read, in the
    /// order they are reported; used by the header-first probe and the buffered path alike.
    fn check_read_response(
        &self,
        stag: u32,
        to: u64,
        len: u64,
        last: bool,
    ) -> Result<ReadResponse, TermError> {
        let Some(read) = self.outstanding.front() else {
            return Err(TermError::RdmapUnexpectedOpcode);
        };
        if read.rtr {
            // The zero-length Read of RFC 6581's ready-to-receive.
            return if len != 0 || !last {
                Err(TermError::RdmapUnexpectedOpcode)
            } else {
                Ok(ReadResponse::Rtr)
            };
        }
        let got = u64::from(read.got);
        if stag != read.sink_stag {
            return Err(TermError::DdpTaggedInvalidStag);
        }
        if to != read.sink_to.wrapping_add(got) || got + len > u64::from(read.len) {
            return Err(TermError::DdpTaggedBaseBounds);
        }
        let done = got + len == u64::from(read.len);
        if last != done {
            // A short response (or one that goes on past its size) falls outside the sink the
            // request named: base/bounds, as siw reports it.
            return Err(TermError::DdpTaggedBaseBounds);
        }
        Ok(ReadResponse::Data { done })
    }

    /// The checks [`Core::on_read_response`] makes, without changing anything: where the
    /// payload of a valid Read Response segment goes.
    fn probe_read_response<H: Host<Lease = L>>(
        &self,
        stag: u32,
        to: u64,
        len: u64,
        last: bool,
        host: &mut H,
    ) -> Option<Dest<L>> {
        if len == 0
            || !matches!(
                self.check_read_response(stag, to, len, last),
                Ok(ReadResponse::Data { .. })
            )
        {
            return None;
        }
        let lease = host.tagged(stag, to, len, Access::ReadSink).ok()?;
        Some(Dest::Tagged { lease, to })
    }

    /// The checks [`Core::on_send`] makes before placing: where the payload of a valid Send
    /// segment goes. The first segment of a message takes its receive now (it becomes the
    /// receive in progress, as after a first segment placed through the buffer); nothing else
    /// changes.
    fn probe_send<H: Host<Lease = L>>(
        &mut self,
        msn: u32,
        mo: u32,
        len: u64,
        host: &mut H,
    ) -> Option<Dest<L>> {
        self.check_send_start(msn, mo).ok()?;
        if self.rx.is_none() {
            let (recv, cap) = host.take_receive()?;
            self.rx = Some(RxMsg {
                recv,
                cap,
                got: 0,
                absorb: false,
            });
        }
        let msg = self.rx.as_ref()?;
        Self::check_send_fit(msg, mo, len).ok()?;
        Some(Dest::Receive {
            recv: msg.recv,
            offset: msg.got,
        })
    }

    /// The rules of a Send segment before its receive is known: the MSN of the message being
    /// received, and a message's first segment at offset 0. Used by the header-first probe and
    /// the buffered path alike, as [`Core::check_send_fit`].
    fn check_send_start(&self, msn: u32, mo: u32) -> Result<(), TermError> {
        if msn != self.recv_msn {
            return Err(TermError::DdpUntaggedMsnRange);
        }
        if self.rx.is_none() && mo != 0 {
            return Err(TermError::DdpUntaggedInvalidMo);
        }
        Ok(())
    }

    /// The rules of a Send segment against its receive: in order, and inside it.
    fn check_send_fit(msg: &RxMsg, mo: u32, len: u64) -> Result<(), TermError> {
        if u64::from(mo) != msg.got {
            return Err(TermError::DdpUntaggedInvalidMo);
        }
        if msg.got + len > msg.cap {
            return Err(TermError::DdpUntaggedTooLong);
        }
        Ok(())
    }

    fn on_read_response<H: Host<Lease = L>>(
        &mut self,
        stag: u32,
        to: u64,
        len: u64,
        last: bool,
        payload: core::ops::Range<usize>,
        host: &mut H,
    ) -> Option<(Dest<L>, core::ops::Range<usize>)> {
        let done = match self.check_read_response(stag, to, len, last) {
            Err(term) => return self.local_error(term),
            Ok(ReadResponse::Rtr) => {
                self.outstanding.pop_front();
                return None;
            }
            Ok(ReadResponse::Data { done }) => done,
        };
        if let Some(read) = self.outstanding.front_mut() {
            // len ≤ read.len - read.got (checked), so it fits u32.
            read.got += len as u32;
        }
        let place = if len == 0 {
            None
        } else {
            match host.tagged(stag, to, len, Access::ReadSink) {
                Ok(lease) => Some((Dest::Tagged { lease, to }, payload)),
                Err(e) => return self.local_error(tagged_term(e)),
            }
        };
        if done {
            let read = self.outstanding.pop_front().expect("front exists");
            // Read with local invalidate: the sink's token dies with the read's success,
            // reported or silent; one that cannot die fails the read, and the QP with it.
            let invalidate = self
                .sq
                .iter()
                .find(|(i, _)| *i == read.entry)
                .and_then(|(_, e)| {
                    e.flags
                        .local_invalidate
                        .then_some(read.sink_stag)
                        .filter(|_| matches!(e.req, Request::Read { .. }))
                });
            if let Some(stag) = invalidate {
                if host.invalidate(stag).is_err() {
                    if let Some((_, e)) = self.sq.iter_mut().find(|(i, _)| *i == read.entry) {
                        e.done = Some(Status::INVALID_DEVICE_REQUEST);
                    }
                    // Our own failure, not the segment's: the Terminate copies no header.
                    self.rx_copy = None;
                    return self.local_error(TermError::RdmapLocalCatastrophic);
                }
            }
            self.mark_done(read.entry, Status::SUCCESS);
        }
        place
    }

    #[allow(clippy::too_many_arguments)]
    fn on_send<H: Host<Lease = L>>(
        &mut self,
        msn: u32,
        mo: u32,
        solicited: bool,
        invalidate: Option<u32>,
        last: bool,
        payload: core::ops::Range<usize>,
        len: u64,
        host: &mut H,
    ) -> Option<(Dest<L>, core::ops::Range<usize>)> {
        if let Err(term) = self.check_send_start(msn, mo) {
            return self.local_error(term);
        }
        let mut msg = match self.rx.take() {
            Some(m) => m,
            None => match host.take_receive() {
                Some((recv, cap)) => RxMsg {
                    recv,
                    cap,
                    got: 0,
                    absorb: false,
                },
                None => return self.local_error(TermError::DdpUntaggedNoBuffer),
            },
        };
        match Self::check_send_fit(&msg, mo, len) {
            Ok(()) => {}
            Err(TermError::DdpUntaggedTooLong) => {
                // The receive is too small: it completes with an error, not as cancelled.
                self.completions.push_back(WorkCompletion {
                    wr: msg.recv,
                    kind: WorkKind::Receive,
                    status: Status::BUFFER_OVERFLOW,
                    bytes: 0,
                    invalidated: None,
                    solicited,
                    provider_error: TermCode::from(TermError::DdpUntaggedTooLong).packed(1),
                });
                return self.local_error(TermError::DdpUntaggedTooLong);
            }
            Err(term) => {
                self.rx = Some(msg);
                return self.local_error(term);
            }
        }
        let dest = Dest::Receive {
            recv: msg.recv,
            offset: msg.got,
        };
        msg.got += len;
        if !last {
            self.rx = Some(msg);
            return Some((dest, payload));
        }
        self.recv_msn = self.recv_msn.wrapping_add(1);
        if let Some(stag) = invalidate {
            if host.invalidate(stag).is_err() {
                self.rx = Some(msg);
                return self.local_error(TermError::RdmapCannotInvalidate);
            }
        }
        // The payload of this last segment is placed by the caller before it polls
        // completions, so the completion can be queued now.
        self.completions.push_back(WorkCompletion {
            wr: msg.recv,
            kind: WorkKind::Receive,
            status: Status::SUCCESS,
            // Capacity is bounded by the receive's u32-sized scatter list.
            bytes: u32::try_from(msg.got).unwrap_or(u32::MAX),
            invalidated: invalidate,
            solicited,
            provider_error: 0,
        });
        Some((dest, payload))
    }
}
