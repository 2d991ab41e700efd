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
//!
//! # Layout
//!
//! This file holds the public types and [`Stream`]'s state; the rest is one file per concern:
//! `send.rs` (the send queue and segmentation into FPDUs), `receive.rs` (inbound ULPDUs,
//! placement decisions, receive completions), `direct.rs` (header-first receive) and
//! `terminate.rs` (Terminates sent and received, blame, `provider_error`).

use std::collections::VecDeque;
use std::sync::Arc;

use netdirect_types::Status;
use netdirect_wire::mpa::{self, Deframer, DeframerConfig, MarkerLayout};

use crate::counters::Cells;
use crate::handshake::{Negotiated, Role, RtrKind};

mod direct;
mod receive;
mod send;
mod terminate;

pub use terminate::TermCode;

use direct::DirectRx;
use receive::{InRead, RxMsg};
use send::{OutRead, SqEntry, TxMsg};
use terminate::Copied;

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

/// Octets of a [`TxFrame`] header kept inline: MPA's ULPDU_Length (2) and the longest DDP and
/// RDMAP headers but a Terminate's (a Read Request's: 18 + 28).
pub const FRAME_HEADER_INLINE: usize = 48;

/// A [`TxFrame`]'s header octets.
pub type FrameHeader = smallvec::SmallVec<[u8; FRAME_HEADER_INLINE]>;

/// One FPDU to send: `header` (ULPDU_Length and the DDP/RDMAP headers), then `payload`, then
/// the pad and CRC ([`netdirect_wire::mpa::trailer`]), with markers inserted at `seq` when
/// [`Stream::markers_tx`] is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxFrame<L> {
    /// ULPDU_Length and the headers: inline up to [`FRAME_HEADER_INLINE`] octets (every
    /// header but a Terminate's with copied headers), so that building a frame allocates
    /// nothing on the data path.
    pub header: FrameHeader,
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

/// Everything but the deframer, so that a placement can borrow the deframer's buffer while the
/// state changes.
#[derive(Debug, Clone)]
struct Core<L> {
    state: State,
    /// The `provider_error_code` form of the Terminate that ended the stream (0: none).
    ended_by: u32,
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
    /// Where this stream counts (see [`crate::counters`]).
    counters: Arc<Cells>,
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
                ended_by: 0,
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
                counters: Arc::default(),
            },
            direct_min: None,
            drx: None,
            large_streak: false,
        }
    }

    /// Whether we insert markers in what we send (the driver inserts them at [`TxFrame::seq`]).
    pub fn markers_tx(&self) -> bool {
        self.core.markers_tx.is_some()
    }

    /// Counts into `cells` from now on (a driver's per-QP counters; each stream has its own
    /// by default). The stream is their only writer while it runs (see [`crate::counters`]).
    pub fn set_counters(&mut self, cells: Arc<Cells>) {
        self.core.counters = cells;
    }

    /// The cells this stream counts into.
    pub fn counters(&self) -> &Arc<Cells> {
        &self.core.counters
    }

    /// Whether the stream is still usable.
    pub fn is_active(&self) -> bool {
        self.core.state == State::Active
    }

    /// The Terminate that ended the stream, in `provider_error_code` form (`0x01LLTTCC` sent,
    /// `0x02LLTTCC` received; 0 when none did): what a request refused after the end carries,
    /// so the consumer learns why the connection died.
    pub fn ended_by(&self) -> u32 {
        self.core.ended_by
    }

    /// Effective read limits.
    pub fn limits(&self) -> crate::ReadLimits {
        self.core.limits
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
