//! The progress thread: commands in, sockets driven, hosts called.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io::{self, ErrorKind, IoSlice, IoSliceMut, Read};
use std::net::Shutdown;
use std::sync::atomic::{self, AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use netdirect_proto::handshake::{Event as HsEvent, Handshake, MpaConfig, PeerRequest, ReadLimits};
use netdirect_proto::stream::{
    Event, Payload, PostFlags, Request, Stream, TxFrame, WorkCompletion, WorkKind,
};
use netdirect_types::Status;
use netdirect_types::counters::Counter;
use netdirect_wire::mpa::{self, MarkerLayout};
use netdirect_wire::rdmap::{self, Message};
use netdirect_wire::terminate::{self, TermError};
use parking_lot::{Mutex, MutexGuard};
use socket2::SockRef;

use super::errno::{connect_status, handshake_status, resources};
use super::{
    ConnShared, ConnState, ConnectCallback, ConnectError, EngineConfig, Incoming, Inner, Pool,
    QpHost, StatusCallback,
};
use crate::callback::{Section, run_or_defer};
use crate::capture::{Capture, ConnCapture};
use crate::counters::Cells;

/// How long an engine being dropped keeps writing bytes already queued.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(500);

/// The waker's token; connections and listeners use their ids (from 1).
pub(crate) const WAKER: Token = Token(0);

/// `ConnCell::last_poll` of a lease its consumer handed back: expired at once. (A stamp of 0
/// would not do: stamps count from the engine's start, so within the first lease period 0 is
/// not old enough, and a hand-back that found the connection locked waited for the whole
/// lease: a consumer blocked in `Cq::wait` missed its message for `poll_lease`.)
const RELEASED: u64 = u64::MAX;

/// The longest interval between two looks at the consumers' leases, in leases
/// ([`Reactor::check_leases`]).
const LEASE_CHECK_MAX: u32 = 4;

/// Payloads up to this size are copied behind their header and coalesced.
const SMALL_PAYLOAD: usize = 4096;
/// Larger frames ready together leave in one vectored write of up to about this many octets,
/// as a TCP benchmark's 1 MiB writes: the per-call cost (socket lock, backlog, push) stays
/// off the byte path. 64 KiB → 1 MiB took `nd write-bw` of 64 KiB messages from 2.1–2.9 to
/// 3.6–5.5 GB/s on lo (paired runs), 256 KiB stopping halfway.
const GATHER: usize = 1024 * 1024;
// A gathered write is the pending bytes and, per frame, a header, one contiguous payload
// span ([`QpHost::with_payloads`] lends only those) and a trailer; frames over
// `SMALL_PAYLOAD`, up to `GATHER` and one more: within the kernel's `UIO_MAXIOV` (buffers
// per `sendmsg`; more fails with `EMSGSIZE`).
const GATHER_IOV: usize = 1 + 3 * (GATHER / (SMALL_PAYLOAD + 1) + 2);
const _: () = assert!(GATHER_IOV <= libc::UIO_MAXIOV as usize);
/// Coalesced bytes are written once they reach this size.
const COALESCE: usize = 64 * 1024;
/// Out buffers up to this capacity are kept when they drain; larger ones are freed (an idle
/// connection holds little memory).
const OUT_KEEP: usize = 8 * 1024;
/// Bytes buffered from a peer that should be silent (before accept or complete).
const EARLY_INPUT_CAP: usize = 64 * 1024;

/// A command from a consumer thread.
pub(crate) enum Cmd<H: QpHost> {
    Listen {
        id: usize,
        listener: TcpListener,
        config: MpaConfig,
        paused: Arc<AtomicBool>,
        error: Arc<AtomicU32>,
        on_request: Box<dyn FnMut(Incoming<H>) + Send>,
    },
    CloseListener {
        id: usize,
        /// Runs once the socket is closed (the port is free for a new listen).
        on_closed: Option<Box<dyn FnOnce() + Send>>,
    },
    Connect {
        cell: Arc<ConnCell<H>>,
        host: H,
        connected_now: bool,
        on_done: ConnectCallback,
    },
    Accept {
        id: usize,
        limits: ReadLimits,
        private_data: Vec<u8>,
        host: H,
        on_done: StatusCallback,
    },
    Reject {
        id: usize,
        private_data: Vec<u8>,
    },
    Complete {
        id: usize,
        on_done: StatusCallback,
    },
    Abandon {
        id: usize,
    },
    Flush {
        id: usize,
    },
    Disconnect {
        id: usize,
        on_done: Option<StatusCallback>,
    },
    /// An accepted connection placed on this reactor by the listeners' reactor.
    Adopt {
        cell: Arc<ConnCell<H>>,
    },
    /// To the listeners' reactor: a connection of another reactor parsed its Request.
    Deliver {
        cell: Arc<ConnCell<H>>,
        request: PeerRequest,
        listener: Option<usize>,
    },
    /// From the listeners' reactor: listener `id` closed; handshakes waiting for their
    /// Request close.
    ListenerClosed {
        id: usize,
    },
}

impl<H: QpHost> Cmd<H> {
    /// Runs the callbacks of a command that can no longer be carried out (engine gone).
    pub(crate) fn fail(self) {
        match self {
            Cmd::Connect { cell, on_done, .. } => {
                cell.shared.set_state(ConnState::Closed);
                on_done(Err(ConnectError::new(Status::CANCELLED)));
            }
            Cmd::Accept { on_done, .. } | Cmd::Complete { on_done, .. } => {
                on_done(Status::CANCELLED)
            }
            Cmd::Disconnect {
                on_done: Some(cb), ..
            } => cb(Status::SUCCESS),
            Cmd::CloseListener {
                on_closed: Some(cb),
                ..
            } => cb(),
            Cmd::Adopt { cell } => cell.shared.set_state(ConnState::Closed),
            // Nobody decides: the connection's reactor rejects it (if it still runs).
            Cmd::Deliver { cell, .. } => {
                cell.shared.set_state(ConnState::Closed);
                cell.inner.send(Cmd::Reject {
                    id: cell.shared.id,
                    private_data: Vec::new(),
                });
            }
            _ => {}
        }
    }
}

/// Finds where the initiator's first FPDU ends in the stream (passive side).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FirstFpdu {
    markers: bool,
    head: [u8; 6],
    seen: usize,
    total: Option<usize>,
}

impl FirstFpdu {
    fn new(markers: bool) -> Self {
        FirstFpdu {
            markers,
            head: [0; 6],
            seen: 0,
            total: None,
        }
    }

    /// Accounts for `data`; `Some(k)` when the first FPDU ends `k` octets into it.
    fn feed(&mut self, data: &[u8]) -> Option<usize> {
        let hl: usize = if self.markers { 6 } else { 2 };
        let start = self.seen;
        for (i, b) in data.iter().take(hl.saturating_sub(start)).enumerate() {
            self.head[start + i] = *b;
        }
        self.seen += data.len();
        if self.total.is_none() && self.seen >= hl {
            let len = usize::from(u16::from_be_bytes([self.head[hl - 2], self.head[hl - 1]]));
            let fpdu = mpa::fpdu_len(len);
            self.total = Some(if self.markers {
                MarkerLayout::new(0).marked_len(0, fpdu)
            } else {
                fpdu
            });
        }
        let total = self.total?;
        (self.seen >= total).then(|| total - start)
    }
}

/// A Terminate FPDU built without a stream (an initiator refusing a Reply).
fn terminate_fpdu(err: TermError, crc: bool, markers: bool) -> Vec<u8> {
    let repr = rdmap::Repr {
        last: true,
        message: Message::Terminate {
            msn: 1,
            terminate: terminate::Repr::new(err),
        },
        payload: &[],
    };
    let mut head = vec![0u8; mpa::LENGTH_LEN + repr.buffer_len()];
    let Ok(len) = mpa::header(repr.buffer_len()) else {
        return Vec::new();
    };
    head[..mpa::LENGTH_LEN].copy_from_slice(&len);
    if repr.emit(&mut head[mpa::LENGTH_LEN..]).is_err() {
        return Vec::new();
    }
    let writer = mpa::FpduWriter {
        crc,
        markers: markers.then(|| MarkerLayout::new(0)),
    };
    let mut out = Vec::new();
    match writer.append(0, &head, &[], &mut Vec::new(), &mut out) {
        Ok(_) => out,
        Err(_) => Vec::new(),
    }
}

/// Hands a completion to the host; an error status is logged first (what the consumer sees).
fn completed<H: QpHost>(span: &tracing::Span, host: &mut H, c: WorkCompletion) {
    if c.status != Status::SUCCESS {
        tracing::debug!(
            parent: span,
            wr = c.wr,
            kind = ?c.kind,
            status = %c.status,
            provider_error = %netdirect_proto::ProviderError(c.provider_error),
            "error completion"
        );
    }
    host.completed(c);
}

/// Logs a stream event; a Terminate in words (layer, type and code decoded).
fn event(span: &tracing::Span, e: Event) {
    match e {
        Event::TerminateSent(t) | Event::TerminateReceived(t) => {
            let sent = matches!(e, Event::TerminateSent(_));
            tracing::warn!(
                parent: span,
                direction = if sent { "sent" } else { "received" },
                layer = t.layer,
                error_type = t.error_type,
                error_code = t.error_code,
                terminate = %netdirect_proto::ProviderError(t.provider_error(sent)),
                "Terminate"
            );
        }
        Event::PeerClosed => tracing::debug!(parent: span, "stream saw the peer's close"),
    }
}

/// Hands the first `n` octets of `iov` to `f`, slice by slice (capture only).
fn capture_iov<S: std::ops::Deref<Target = [u8]>>(
    iov: &[S],
    mut n: usize,
    mut f: impl FnMut(&[u8]),
) {
    for s in iov {
        if n == 0 {
            break;
        }
        let k = n.min(s.len());
        f(&s[..k]);
        n -= k;
    }
}

/// One `sendmsg` of `bufs`, counted; `more`: with `MSG_MORE` (more follows at once).
fn send(sock: &TcpStream, counters: &Cells, bufs: &[IoSlice<'_>], more: bool) -> io::Result<usize> {
    counters.bump(Counter::SocketWrites, 1);
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    SockRef::from(sock).send_vectored_with_flags(bufs, flags)
}

/// One vectored write of `iov`; what the kernel did not take is copied to `rest` (cleared
/// first). Returns whether the socket would block.
fn send_keeping_rest(
    sock: &TcpStream,
    counters: &Cells,
    iov: &[IoSlice<'_>],
    more: bool,
    rest: &mut Vec<u8>,
    capture: Option<&mut ConnCapture>,
) -> io::Result<bool> {
    let mut blocked = false;
    let written = loop {
        match send(sock, counters, iov, more) {
            Ok(n) => break n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                blocked = true;
                break 0;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    if let Some(c) = capture {
        capture_iov(iov, written, |b| c.sent(b));
    }
    rest.clear();
    let mut skip = written;
    for s in iov {
        if skip >= s.len() {
            skip -= s.len();
            continue;
        }
        rest.extend_from_slice(&s[skip..]);
        skip = 0;
    }
    Ok(blocked)
}

/// Counts a completion with an error status (`CQError`).
fn count_completion(shared: &ConnShared, c: &WorkCompletion) {
    if !c.status.is_success() {
        // Under the connection's lock (see `tx_pass`).
        shared.counters.bump(Counter::CQError, 1);
    }
}

fn cancelled(wr: u64, request: &Request) -> WorkCompletion {
    WorkCompletion {
        wr,
        kind: match request {
            Request::Send { .. } => WorkKind::Send,
            Request::Write { .. } => WorkKind::Write,
            Request::Read { .. } => WorkKind::Read,
            Request::Local => WorkKind::Local,
        },
        status: Status::CANCELLED,
        bytes: 0,
        invalidated: None,
        solicited: false,
        provider_error: 0,
    }
}

/// The RDMAP side of a connection, from the end of the MPA handshake on. It outlives the
/// connection's close: posts refused by a stream a Terminate ended carry that Terminate's code.
pub(crate) struct Rdma<L> {
    stream: Stream<L>,
    /// CRC on what we send, as negotiated.
    crc: bool,
    /// Markers in what we send, as negotiated.
    markers_tx: bool,
    /// [`QpHost::flushed`] was called.
    flushed: bool,
    /// The peer's close was reported ([`Event::PeerClosed`]).
    peer_closed: bool,
    /// `ConnectionError` was counted.
    errored: bool,
}

/// Where a connection is in its life; each stage carries what only it needs, so that the
/// stages' data cannot get out of step.
pub(crate) enum Phase<H: QpHost> {
    /// Active: TCP connect in progress (the MPA Request waits in the out buffer).
    TcpConnecting {
        hs: Handshake,
        /// A local port was given (changes what `EADDRINUSE` means).
        explicit_port: bool,
        on_connect: Option<ConnectCallback>,
    },
    /// MPA startup frames in flight (`on_connect`: the active side's completion).
    Handshake {
        hs: Handshake,
        on_connect: Option<ConnectCallback>,
        /// What followed the peer's startup frame.
        early: Vec<u8>,
    },
    /// Passive: the Request is with the consumer.
    Decision {
        hs: Handshake,
        /// Until handed to the listener.
        request: Option<PeerRequest>,
        /// The peer went away while the consumer decides.
        aborted: bool,
        early: Vec<u8>,
    },
    /// Active: the peer accepted; waiting for complete or reject.
    Replied {
        rdma: Rdma<H::Lease>,
        replied_at: Instant,
        /// The peer went away meanwhile.
        aborted: bool,
        early: Vec<u8>,
    },
    /// Passive: accepted; waiting for the initiator's first FPDU.
    Accepting {
        rdma: Rdma<H::Lease>,
        first: FirstFpdu,
        on_accept: Option<StatusCallback>,
    },
    /// The stream runs.
    Connected {
        rdma: Rdma<H::Lease>,
        /// Active side: no FPDU leaves before this ([`EngineConfig::first_fpdu_delay`]).
        hold_until: Option<Instant>,
    },
    /// Writing what is left (a Terminate, a Reply), then FIN.
    Closing {
        rdma: Option<Rdma<H::Lease>>,
        /// The stream queued a Terminate: send it, then close.
        terminating: bool,
        /// The consumer disconnects: no new frames are taken from the stream.
        disconnecting: bool,
        /// The stream has nothing more to send.
        tx_drained: bool,
    },
    /// FIN sent; reading and discarding until the peer's FIN.
    Linger { rdma: Option<Rdma<H::Lease>> },
    /// To be removed. `zombie`: the socket is closed, and the connection is kept for its
    /// consumer handle.
    Dead {
        rdma: Option<Rdma<H::Lease>>,
        zombie: bool,
    },
}

impl<H: QpHost> Phase<H> {
    fn rdma(&self) -> Option<&Rdma<H::Lease>> {
        match self {
            Phase::Replied { rdma, .. }
            | Phase::Accepting { rdma, .. }
            | Phase::Connected { rdma, .. } => Some(rdma),
            Phase::Closing { rdma, .. } | Phase::Linger { rdma } | Phase::Dead { rdma, .. } => {
                rdma.as_ref()
            }
            Phase::TcpConnecting { .. } | Phase::Handshake { .. } | Phase::Decision { .. } => None,
        }
    }

    fn rdma_mut(&mut self) -> Option<&mut Rdma<H::Lease>> {
        match self {
            Phase::Replied { rdma, .. }
            | Phase::Accepting { rdma, .. }
            | Phase::Connected { rdma, .. } => Some(rdma),
            Phase::Closing { rdma, .. } | Phase::Linger { rdma } | Phase::Dead { rdma, .. } => {
                rdma.as_mut()
            }
            Phase::TcpConnecting { .. } | Phase::Handshake { .. } | Phase::Decision { .. } => None,
        }
    }

    /// Takes the RDMAP side out (the phase is being left).
    fn take_rdma(&mut self) -> Option<Rdma<H::Lease>> {
        match std::mem::replace(self, Phase::PLACEHOLDER) {
            Phase::Replied { rdma, .. }
            | Phase::Accepting { rdma, .. }
            | Phase::Connected { rdma, .. } => Some(rdma),
            Phase::Closing { rdma, .. } | Phase::Linger { rdma } | Phase::Dead { rdma, .. } => rdma,
            Phase::TcpConnecting { .. } | Phase::Handshake { .. } | Phase::Decision { .. } => None,
        }
    }

    fn hs_mut(&mut self) -> Option<&mut Handshake> {
        match self {
            Phase::TcpConnecting { hs, .. }
            | Phase::Handshake { hs, .. }
            | Phase::Decision { hs, .. } => Some(hs),
            _ => None,
        }
    }

    /// What a phase is left as while it is being taken apart.
    const PLACEHOLDER: Phase<H> = Phase::Dead {
        rdma: None,
        zombie: false,
    };

    fn is_connected(&self) -> bool {
        matches!(self, Phase::Connected { .. })
    }

    fn is_dead(&self) -> bool {
        matches!(self, Phase::Dead { .. })
    }

    fn is_zombie(&self) -> bool {
        matches!(self, Phase::Dead { zombie: true, .. })
    }

    /// Closing, lingering or dead.
    fn is_closing(&self) -> bool {
        matches!(
            self,
            Phase::Closing { .. } | Phase::Linger { .. } | Phase::Dead { .. }
        )
    }
}

/// One connection: its life ([`Phase`]) and what every phase shares (the socket, its buffers
/// and readiness, deadlines, the host and the consumer's handle).
pub(crate) struct Conn<H: QpHost> {
    shared: Arc<ConnShared>,
    sock: TcpStream,
    phase: Phase<H>,
    /// Passive side: the listener that accepted it.
    listener: Option<usize>,
    host: Option<H>,
    emss: usize,
    out: Vec<u8>,
    out_pos: usize,
    spare: Vec<u8>,
    readable: bool,
    /// The last read of a consumer's pass took data: the next pass reads without asking the
    /// kernel first (see [`Conn::rx_pass`]).
    rx_hot: bool,
    /// Octets read from the socket, ever: a consumer's pass that read some kept the
    /// connection busy (see [`ConnCell::progress_pass`]).
    rx_octets: u64,
    writable: bool,
    /// The peer's FIN (or a reset) was read.
    eof: bool,
    /// The socket failed: nothing more is read or written.
    io_dead: bool,
    deadline: Option<Instant>,
    /// The deadline the progress thread's timer heap holds for this connection.
    timer_at: Option<Instant>,
    /// Disconnect completions, run once the connection is closed (in any phase).
    on_disconnect: Option<StatusCallback>,
    /// A consumer handle ([`super::Connection`] or [`Incoming`]) refers to this connection, so
    /// it outlives its socket until released (posts then complete `STATUS_CANCELLED`).
    has_handle: bool,
    /// Capturing this connection's bytes ([`EngineConfig::capture`]); the active side opens
    /// it when TCP connects (`capture_to` until then).
    capture: Option<Box<ConnCapture>>,
    capture_to: Option<Arc<Capture>>,
    /// The connection's `tracing` span (child of its adapter's): events name it as parent,
    /// nothing enters it, so a disabled log costs nothing but the level checks.
    span: tracing::Span,
    /// The "disconnected" event was logged (a close is finished more than once).
    closed_logged: bool,
}

impl<H: QpHost> Conn<H> {
    pub(crate) fn new(
        shared: Arc<ConnShared>,
        sock: TcpStream,
        mut phase: Phase<H>,
        inner: &Inner<H>,
    ) -> Self {
        let capture = inner.config.capture.as_ref();
        let active = matches!(phase, Phase::TcpConnecting { .. });
        let span = tracing::info_span!(
            parent: &inner.span,
            "conn",
            id = shared.id,
            local = %shared.local,
            peer = %shared.peer,
            role = if active { "active" } else { "passive" },
            mpa_rev = tracing::field::Empty,
            crc = tracing::field::Empty,
            markers = tracing::field::Empty,
            ird = tracing::field::Empty,
            ord = tracing::field::Empty,
        );
        let emss = SockRef::from(&sock).mss().unwrap_or(1460) as usize;
        // The active side's Request waits in the out buffer until TCP connects.
        let mut out = Vec::new();
        if let Some(hs) = phase.hs_mut() {
            hs.poll_transmit(&mut out);
        }
        let mut conn = Conn {
            shared,
            sock,
            phase,
            listener: None,
            host: None,
            emss,
            out,
            out_pos: 0,
            spare: Vec::new(),
            readable: false,
            rx_hot: false,
            rx_octets: 0,
            writable: false,
            eof: false,
            io_dead: false,
            deadline: None,
            timer_at: None,
            on_disconnect: None,
            has_handle: false,
            capture: None,
            capture_to: None,
            span,
            closed_logged: false,
        };
        match (capture, active) {
            (Some(c), true) => conn.capture_to = Some(c.clone()),
            (Some(c), false) => {
                conn.capture = c
                    .open(conn.shared.local, conn.shared.peer, false)
                    .map(Box::new)
            }
            (None, _) => {}
        }
        conn
    }

    /// Moves the handshake's output (a Request or a Reply) to the out buffer, in order.
    fn hs_output(&mut self) {
        if let Some(hs) = self.phase.hs_mut() {
            hs.poll_transmit(&mut self.out);
        }
    }

    fn fail_connect(&mut self, status: Status, private_data: Vec<u8>) {
        self.shared.set_state(ConnState::Closed);
        let cb = match &mut self.phase {
            Phase::TcpConnecting { on_connect, .. } | Phase::Handshake { on_connect, .. } => {
                on_connect.take()
            }
            _ => None,
        };
        if let Some(cb) = cb {
            // Once per attempt: the failure the consumer is told of.
            self.shared.counters.add(Counter::ConnectFailure, 1);
            tracing::info!(parent: &self.span, status = %status, private_data = private_data.len(), "connect failed");
            run_or_defer(move || {
                cb(Err(ConnectError {
                    status,
                    private_data,
                }))
            });
        }
    }

    fn fail_accept(&mut self, status: Status) {
        if let Phase::Accepting { on_accept, .. } = &mut self.phase {
            if let Some(cb) = on_accept.take() {
                tracing::info!(parent: &self.span, status = %status, "accept failed");
                run_or_defer(move || cb(status));
            }
        }
    }

    /// Leaving the handshake or the accept for good: a completion still pending fails (the
    /// paths that close say why first; this is the net under them).
    fn fail_pending(&mut self) {
        self.hs_output();
        if let Phase::TcpConnecting {
            on_connect: Some(_),
            ..
        }
        | Phase::Handshake {
            on_connect: Some(_),
            ..
        } = self.phase
        {
            self.fail_connect(Status::CONNECTION_ABORTED, Vec::new());
        }
        self.fail_accept(Status::CONNECTION_ABORTED);
    }

    fn make_stream(
        &mut self,
        neg: &netdirect_proto::Negotiated,
        cfg: &EngineConfig,
    ) -> Rdma<H::Lease> {
        let cap = cfg.max_mulpdu;
        // One GSO packet per FPDU (siw's mss × gso_segs); with markers, one segment.
        let seglen = if neg.markers_tx {
            self.emss
        } else {
            mpa::gso_seglen(self.emss)
        };
        let mulpdu = mpa::mulpdu(seglen, neg.markers_tx).min(cap);
        self.shared.ord.store(neg.limits.ord, Ordering::Release);
        let mut stream = Stream::new(neg, mulpdu);
        stream.set_counters(self.shared.counters.clone());
        // Header-first receive (`receive` reads payloads straight into place once connected).
        stream.set_direct_min(cfg.direct_min);
        Rdma {
            stream,
            crc: neg.crc,
            markers_tx: neg.markers_tx,
            flushed: false,
            peer_closed: false,
            errored: false,
        }
    }

    /// Starts closing: write what is queued, FIN, linger. `disconnecting`: the consumer asked
    /// (no new frames are taken from the stream).
    fn begin_close(&mut self, now: Instant, timeout: Duration, disconnecting: bool) {
        if self.phase.is_closing() {
            return;
        }
        tracing::debug!(parent: &self.span, disconnecting, "closing");
        self.fail_pending();
        let rdma = self.phase.take_rdma();
        self.phase = Phase::Closing {
            rdma,
            terminating: false,
            disconnecting,
            tx_drained: false,
        };
        self.deadline = Some(now + timeout);
    }

    fn kill(&mut self) {
        if !self.phase.is_dead() {
            self.fail_pending();
            let rdma = self.phase.take_rdma();
            self.phase = Phase::Dead {
                rdma,
                zombie: false,
            };
        }
        self.deadline = None;
    }

    /// The TCP connect finished (or failed).
    fn on_tcp_connected(&mut self, now: Instant) {
        let Phase::TcpConnecting { explicit_port, .. } = self.phase else {
            return;
        };
        match self.sock.take_error() {
            Ok(Some(e)) | Err(e) => {
                let st = connect_status(&e, explicit_port);
                self.fail_connect(st, Vec::new());
                return self.kill();
            }
            Ok(None) => {}
        }
        match self.sock.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotConnected => return,
            Err(e) => {
                let st = connect_status(&e, explicit_port);
                self.fail_connect(st, Vec::new());
                return self.kill();
            }
        }
        self.emss = SockRef::from(&self.sock).mss().unwrap_or(1460) as usize;
        tracing::debug!(parent: &self.span, mss = self.emss, "TCP connected");
        if let Some(c) = self.capture_to.take() {
            self.capture = c
                .open(self.shared.local, self.shared.peer, true)
                .map(Box::new);
        }
        let Phase::TcpConnecting { hs, on_connect, .. } =
            std::mem::replace(&mut self.phase, Phase::PLACEHOLDER)
        else {
            unreachable!("checked above");
        };
        // The MPA timeout runs from the connect call (the Handshake was made then).
        self.deadline = hs.poll_timeout();
        self.phase = Phase::Handshake {
            hs,
            on_connect,
            early: Vec::new(),
        };
        let _ = now;
    }

    /// Handles what the handshake reports. `on_accept`: the passive side's accept completion
    /// (the consumer just accepted).
    fn hs_events(
        &mut self,
        now: Instant,
        cfg: &EngineConfig,
        mut on_accept: Option<StatusCallback>,
    ) {
        self.hs_output();
        while let Some(ev) = self.phase.hs_mut().and_then(Handshake::poll_event) {
            match ev {
                HsEvent::Request(req) => {
                    tracing::info!(
                        parent: &self.span,
                        mpa_rev = req.revision,
                        crc = req.crc,
                        markers = req.markers,
                        ird = req.limits.map(|l| l.ird),
                        ord = req.limits.map(|l| l.ord),
                        private_data = req.private_data.len(),
                        "MPA request received"
                    );
                    if let Phase::Handshake { hs, early, .. } =
                        std::mem::replace(&mut self.phase, Phase::PLACEHOLDER)
                    {
                        self.deadline = None;
                        self.phase = Phase::Decision {
                            hs,
                            request: Some(req),
                            aborted: false,
                            early,
                        };
                    }
                }
                HsEvent::Established(neg) => {
                    self.hs_output();
                    self.span.record("mpa_rev", neg.revision);
                    self.span.record("crc", neg.crc);
                    self.span
                        .record("markers", neg.markers_tx || neg.markers_rx);
                    self.span.record("ird", neg.limits.ird);
                    self.span.record("ord", neg.limits.ord);
                    tracing::info!(
                        parent: &self.span,
                        mpa_rev = neg.revision,
                        crc = neg.crc,
                        markers_tx = neg.markers_tx,
                        markers_rx = neg.markers_rx,
                        ird = neg.limits.ird,
                        ord = neg.limits.ord,
                        rtr = ?neg.rtr,
                        "MPA established"
                    );
                    let (on_connect, early) =
                        match std::mem::replace(&mut self.phase, Phase::PLACEHOLDER) {
                            Phase::Handshake {
                                on_connect, early, ..
                            } => (on_connect, early),
                            Phase::Decision { early, .. } => (None, early),
                            _ => (None, Vec::new()),
                        };
                    let rdma = self.make_stream(&neg, cfg);
                    self.deadline = None;
                    if neg.role == netdirect_proto::Role::Initiator {
                        self.phase = Phase::Replied {
                            rdma,
                            replied_at: now,
                            aborted: false,
                            early,
                        };
                        self.shared.set_state(ConnState::Replied);
                        if let Some(cb) = on_connect {
                            run_or_defer(move || cb(Ok(neg)));
                        }
                    } else if neg.rtr.is_none() {
                        // Plain RFC 5044: nothing on the wire tells us the initiator completed
                        // its connect, and it may wait for us to speak first (perftest's
                        // write_lat does). As siw, the accept completes with the Reply queued.
                        self.phase = Phase::Connected {
                            rdma,
                            hold_until: None,
                        };
                        self.shared.set_state(ConnState::Connected);
                        if let Some(cb) = on_accept.take() {
                            run_or_defer(move || cb(Status::SUCCESS));
                        }
                        if !early.is_empty() {
                            self.feed(&early);
                            self.drain(now, cfg);
                        }
                    } else {
                        self.phase = Phase::Accepting {
                            rdma,
                            first: FirstFpdu::new(neg.markers_rx),
                            on_accept: on_accept.take(),
                        };
                        if !early.is_empty() {
                            self.feed(&early);
                        }
                    }
                }
                HsEvent::Rejected { private_data } => {
                    self.shared.counters.add(Counter::MpaRejectsReceived, 1);
                    tracing::info!(parent: &self.span, private_data = private_data.len(), "peer rejected the connection");
                    self.fail_connect(Status::CONNECTION_REFUSED, private_data);
                    self.begin_close(now, cfg.disconnect_timeout, false);
                }
                HsEvent::Failed(e) => {
                    tracing::warn!(parent: &self.span, error = %e, terminate = ?e.term_error(), "MPA handshake failed");
                    let initiator = self.phase.hs_mut().map(|h| h.role())
                        == Some(netdirect_proto::Role::Initiator);
                    if initiator {
                        if let Some(t) = e.term_error() {
                            // Nothing is negotiated yet: no CRC.
                            self.out.extend_from_slice(&terminate_fpdu(t, false, false));
                            let code = netdirect_proto::stream::TermCode::from(t);
                            let cells = &self.shared.counters;
                            cells.terminate(true, code.layer, code.error_type, code.error_code);
                            cells.frame_out(rdmap::Opcode::Terminate as u8, 0);
                        }
                        self.fail_connect(handshake_status(&e), Vec::new());
                    } else {
                        self.shared.set_state(ConnState::Closed);
                    }
                    self.begin_close(now, cfg.disconnect_timeout, false);
                }
            }
        }
        if let Some(cb) = on_accept {
            run_or_defer(move || cb(Status::CONNECTION_ABORTED));
        }
    }

    /// Runs the stream's receive side over buffered input, placing every payload.
    fn rx(&mut self) {
        let (Some(rdma), Some(host)) = (self.phase.rdma_mut(), self.host.as_mut()) else {
            return;
        };
        while let Some(place) = rdma.stream.poll_rx(host) {
            host.place(place.dest, place.data);
        }
    }

    /// Stream-mode input (accepting or connected).
    fn feed(&mut self, data: &[u8]) {
        let first_end = match &mut self.phase {
            Phase::Accepting { first, .. } => first.feed(data),
            _ => None,
        };
        let (head, tail) = data.split_at(first_end.unwrap_or(data.len()));
        let Some(rdma) = self.phase.rdma_mut() else {
            return;
        };
        rdma.stream.push_input(head);
        self.rx();
        if first_end.is_none() {
            return;
        }
        // The initiator's first FPDU is in: the accept completes.
        let ok = self.phase.rdma().is_some_and(|r| r.stream.is_active());
        if ok {
            if let Phase::Accepting {
                rdma, on_accept, ..
            } = std::mem::replace(&mut self.phase, Phase::PLACEHOLDER)
            {
                self.phase = Phase::Connected {
                    rdma,
                    hold_until: None,
                };
                self.shared.set_state(ConnState::Connected);
                if let Some(cb) = on_accept {
                    run_or_defer(move || cb(Status::SUCCESS));
                }
            }
        } else {
            self.fail_accept(Status::CONNECTION_ABORTED);
        }
        if let Some(r) = self.phase.rdma_mut() {
            r.stream.push_input(tail);
        }
        self.rx();
    }

    /// Delivers the stream's completions and events to the host.
    fn drain(&mut self, now: Instant, cfg: &EngineConfig) {
        let span = &self.span;
        let (Some(rdma), Some(host)) = (self.phase.rdma_mut(), self.host.as_mut()) else {
            return;
        };
        let stream = &mut rdma.stream;
        // A stopped stream refuses posts before its flushed completions become visible.
        if !stream.is_active() && !matches!(self.shared.state(), ConnState::Closed) {
            self.shared.set_state(ConnState::Error);
        }
        while let Some(c) = stream.poll_completion() {
            count_completion(&self.shared, &c);
            completed(span, host, c);
        }
        let mut close = false;
        let mut terminate_sent = false;
        while let Some(e) = stream.poll_event() {
            if e == Event::PeerClosed && self.shared.state() == ConnState::Connected {
                self.shared.set_state(ConnState::PeerClosed);
            }
            host.event(e);
            event(span, e);
            match e {
                Event::TerminateSent(_) => {
                    terminate_sent = true;
                    close = true;
                }
                Event::TerminateReceived(_) => close = true,
                Event::PeerClosed => rdma.peer_closed = true,
            }
        }
        if !rdma.stream.is_active() && !rdma.flushed {
            rdma.flushed = true;
            tracing::info!(parent: span, "flushed");
            host.flushed();
        }
        if close {
            self.count_error();
            self.fail_accept(Status::CONNECTION_ABORTED);
            self.begin_close(now, cfg.disconnect_timeout, false);
        }
        if terminate_sent {
            if let Phase::Closing { terminating, .. } = &mut self.phase {
                *terminating = true;
            }
        }
    }

    /// Counts `ConnectionError` once per connection: an established one ended by a
    /// Terminate or a broken socket.
    fn count_error(&mut self) {
        if let Some(rdma) = self.phase.rdma_mut() {
            if !rdma.errored {
                rdma.errored = true;
                self.shared.counters.add(Counter::ConnectionError, 1);
            }
        }
    }

    /// The peer closed (`reset`: or the connection broke).
    fn on_peer_gone(&mut self, reset: bool, now: Instant, cfg: &EngineConfig) {
        tracing::info!(parent: &self.span, reset, "peer closed TCP");
        self.eof = true;
        if reset {
            self.io_dead = true;
            if self.phase.is_connected() {
                self.count_error();
            }
        }
        match &mut self.phase {
            Phase::TcpConnecting { on_connect, .. } | Phase::Handshake { on_connect, .. } => {
                if on_connect.is_some() {
                    self.fail_connect(Status::CONNECTION_REFUSED, Vec::new());
                } else {
                    self.shared.set_state(ConnState::Closed);
                }
                self.kill();
            }
            Phase::Decision { aborted, .. } | Phase::Replied { aborted, .. } => *aborted = true,
            Phase::Accepting { rdma, .. } => {
                rdma.stream.flush();
                self.fail_accept(Status::CONNECTION_ABORTED);
                self.drain(now, cfg);
                self.shared.set_state(ConnState::Closed);
                self.kill();
            }
            Phase::Connected { rdma, .. } => {
                if !rdma.peer_closed {
                    if rdma.stream.is_active() {
                        rdma.stream.handle_eof();
                    } else {
                        // The stream is done; tell the host the connection is gone anyway.
                        rdma.peer_closed = true;
                        if let Some(h) = self.host.as_mut() {
                            h.event(Event::PeerClosed);
                        }
                    }
                    self.drain(now, cfg);
                }
            }
            Phase::Closing { .. } => {
                if reset {
                    self.finish_close();
                    self.kill();
                }
            }
            Phase::Linger { .. } | Phase::Dead { .. } => self.kill(),
        }
    }

    /// Reads once into `rbuf`; returns the octets read (0 on would-block, EOF or error).
    /// `short_read_drains`: a read that did not fill what it offered ends reading (see
    /// [`Conn::drive`]).
    fn receive(
        &mut self,
        rbuf: &mut [u8],
        short_read_drains: bool,
        now: Instant,
        cfg: &EngineConfig,
    ) -> Option<usize> {
        // Established: read straight into the stream's input buffer (one copy fewer), or,
        // for the payload of a large FPDU whose header is in, straight into its destination.
        // `asked`: the room the read offered. TCP fills it unless its receive queue held less:
        // a short read means the socket was drained (though an EOF may wait behind it).
        let mut asked = rbuf.len();
        let (direct, read) = match &mut self.phase {
            Phase::Connected { rdma, .. } => {
                let sock = &self.sock;
                let stream = &mut rdma.stream;
                let capture = &mut self.capture;
                let read = match Self::read_direct(
                    sock,
                    stream,
                    self.host.as_mut(),
                    capture.as_deref_mut(),
                    &mut asked,
                ) {
                    Some(read) => read,
                    None => {
                        // Into the stream's own buffer: as much as its read window says,
                        // on whichever thread reads (a consumer's pass has a small `rbuf`).
                        let cap = cfg.read_buffer.max(4096);
                        let n = stream.read_hint().map_or(cap, |h| h.clamp(1, cap));
                        stream.fill_input_with(n, |buf| {
                            asked = buf.len();
                            let read = (&*sock).read(buf);
                            if let (Some(c), Ok(k)) = (capture.as_deref_mut(), &read) {
                                c.received(&buf[..*k]);
                            }
                            read
                        })
                    }
                };
                (true, read)
            }
            _ => (false, (&self.sock).read(rbuf)),
        };
        let counters = &self.shared.counters;
        counters.bump(Counter::SocketReads, 1);
        if matches!(&read, Err(e) if e.kind() == ErrorKind::WouldBlock) {
            counters.bump(Counter::EmptyReads, 1);
        }
        let n = match read {
            Ok(0) => {
                if let Some(c) = self.capture.as_mut() {
                    c.fin(false);
                }
                self.on_peer_gone(false, now, cfg);
                return Some(0);
            }
            Ok(n) => {
                self.rx_hot = n >= asked;
                self.rx_octets += n as u64;
                if short_read_drains && !self.rx_hot {
                    self.readable = false;
                }
                n
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.readable = false;
                self.rx_hot = false;
                return None;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => return Some(0),
            Err(_) => {
                self.on_peer_gone(true, now, cfg);
                return Some(0);
            }
        };
        if direct {
            self.rx();
            self.drain(now, cfg);
            return Some(n);
        }
        let data = &rbuf[..n];
        if let Some(c) = self.capture.as_mut() {
            c.received(data);
        }
        match &mut self.phase {
            Phase::Handshake { hs, early, .. } => {
                let used = hs.handle_input(data);
                early.extend_from_slice(&data[used..]);
                self.hs_events(now, cfg, None);
            }
            Phase::Decision { early, .. } | Phase::Replied { early, .. } => {
                early.extend_from_slice(data)
            }
            Phase::Accepting { .. } | Phase::Connected { .. } => {
                self.feed(data);
                self.drain(now, cfg);
            }
            Phase::TcpConnecting { .. }
            | Phase::Closing { .. }
            | Phase::Linger { .. }
            | Phase::Dead { .. } => {}
        }
        Some(n)
    }

    /// Header-first receive: when the stream names a direct target, reads from the socket
    /// straight into the host memory behind it and reports what landed. One vectored read
    /// takes the rest of the payload and, into the input buffer behind it, the FPDU's trailer
    /// and the next header (so a run of large FPDUs costs one read each). `None` when there is
    /// no target or the host cannot lend its memory.
    fn read_direct(
        sock: &TcpStream,
        stream: &mut Stream<H::Lease>,
        host: Option<&mut H>,
        capture: Option<&mut ConnCapture>,
        asked: &mut usize,
    ) -> Option<io::Result<usize>> {
        let target = stream.direct_target()?;
        host?.with_dest_mut(&target.dest, target.len, |pieces| {
            let lent: usize = pieces.iter().map(|p| p.len()).sum();
            // The tail may follow only when the pieces cover the whole payload.
            let then = if lent == target.len { target.then } else { 0 };
            let read = {
                let mut iov: Vec<IoSliceMut<'_>> =
                    pieces.iter_mut().map(|p| IoSliceMut::new(p)).collect();
                if then > 0 {
                    iov.push(IoSliceMut::new(stream.prefetch(then)));
                }
                *asked = iov.iter().map(|v| v.len()).sum();
                let read = (&*sock).read_vectored(&mut iov);
                if let (Some(c), Ok(n)) = (capture, &read) {
                    capture_iov(&iov, *n, |b| c.received(b));
                }
                read
            };
            let n = *read.as_ref().unwrap_or(&0);
            // The octets landed in order through the pieces; the stream counts them and adds
            // them to the FPDU's CRC, then keeps what went into its input buffer.
            let mut left = n;
            for piece in pieces.iter() {
                if left == 0 {
                    break;
                }
                let k = left.min(piece.len());
                stream.direct_placed(&piece[..k]);
                left -= k;
            }
            if then > 0 {
                stream.prefetched(left);
            }
            read
        })
    }

    fn wants_read(&self) -> bool {
        if self.eof || self.io_dead {
            return false;
        }
        match &self.phase {
            Phase::TcpConnecting { .. } | Phase::Dead { .. } => false,
            Phase::Decision { early, .. } | Phase::Replied { early, .. } => {
                early.len() < EARLY_INPUT_CAP
            }
            _ => true,
        }
    }

    /// Writes the out buffer; `Ok(true)` when it is empty.
    fn flush_out(&mut self) -> io::Result<bool> {
        while self.out_pos < self.out.len() {
            let buf = [IoSlice::new(&self.out[self.out_pos..])];
            match send(&self.sock, &self.shared.counters, &buf, false) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    if let Some(c) = self.capture.as_mut() {
                        c.sent(&self.out[self.out_pos..self.out_pos + n]);
                    }
                    self.out_pos += n
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.writable = false;
                    return Ok(false);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        // Nothing in flight: an idle connection keeps small buffers only.
        if self.out.capacity() > OUT_KEEP {
            self.out = Vec::new();
        }
        if self.spare.capacity() > OUT_KEEP {
            self.spare = Vec::new();
        }
        Ok(true)
    }

    /// Whether the stream's frames may be taken now.
    fn frames_allowed(&self) -> bool {
        match self.phase {
            Phase::Connected { hold_until, .. } => hold_until.is_none(),
            Phase::Accepting { .. } => true,
            Phase::Closing {
                terminating,
                disconnecting,
                ..
            } => terminating && !disconnecting,
            _ => false,
        }
    }

    /// Takes frames from the stream and writes them. Returns whether anything happened.
    fn transmit(&mut self) -> io::Result<bool> {
        let mut progress = false;
        if self.out.len() - self.out_pos >= COALESCE && !self.flush_out()? {
            return Ok(progress);
        }
        // The last write went out with MSG_MORE: the next one must not, or TCP holds a partial
        // segment back.
        let mut corked = false;
        // Large frames taken but not yet written: they leave together, in one vectored write.
        let mut batch: Vec<TxFrame<H::Lease>> = Vec::new();
        let mut batch_len = 0;
        while self.writable && self.frames_allowed() {
            let (Some(rdma), Some(host)) = (self.phase.rdma_mut(), self.host.as_mut()) else {
                break;
            };
            let stream = &mut rdma.stream;
            while let Some(a) = stream.poll_action() {
                let st = host.local(a.wr);
                stream.local_done(a.wr, st);
                progress = true;
            }
            let Some(frame) = stream.poll_transmit() else {
                if let Phase::Closing { tx_drained, .. } = &mut self.phase {
                    *tx_drained = true;
                }
                break;
            };
            progress = true;
            let plen = frame.payload.as_ref().map_or(0, |p| p.len() as usize);
            if rdma.markers_tx || plen <= SMALL_PAYLOAD {
                // In stream order: what is batched goes first.
                if !batch.is_empty() {
                    corked = self.write_frames(&mut batch, false)?;
                    batch_len = 0;
                }
                self.append_frame(frame);
                if self.out.len() - self.out_pos >= COALESCE && !self.flush_out()? {
                    break;
                }
                continue;
            }
            batch_len += frame.header.len() + plen;
            batch.push(frame);
            let pending = stream.tx_pending();
            if batch_len >= GATHER || !pending {
                // MSG_MORE where it fills packets: a write under half the TCP send unit
                // shares one with the next. A larger one leaves at once: holding half a GSO
                // packet back costs the receiver its head start (RDMA read of 64 KiB on lo,
                // two 32 KiB FPDUs per response: a third less throughput with MSG_MORE on
                // every FPDU).
                let more = pending && batch_len < mpa::gso_seglen(self.emss) / 2;
                corked = self.write_frames(&mut batch, more)?;
                batch_len = 0;
            }
        }
        if !batch.is_empty() {
            corked = self.write_frames(&mut batch, false)?;
        }
        if self.writable && self.out_pos < self.out.len() {
            let before = self.out_pos;
            self.flush_out()?;
            progress |= self.out_pos != before;
        } else if corked && self.out_pos == self.out.len() {
            // MSG_MORE was promised but nothing followed: push what TCP holds back.
            SockRef::from(&self.sock).set_nodelay(true)?;
        }
        Ok(progress)
    }

    /// How FPDUs are framed on this connection (CRC, markers).
    fn writer(&self) -> mpa::FpduWriter {
        let (crc, markers) = self
            .phase
            .rdma()
            .map_or((false, false), |r| (r.crc, r.markers_tx));
        mpa::FpduWriter {
            crc,
            markers: markers.then(|| MarkerLayout::new(0)),
        }
    }

    /// Appends a whole FPDU (header, payload copy, trailer, markers when negotiated) to the
    /// out buffer.
    fn append_frame(&mut self, frame: netdirect_proto::stream::TxFrame<H::Lease>) {
        let writer = self.writer();
        let (out, scratch) = (&mut self.out, &mut self.spare);
        // The stream sizes every frame; a refusal would be an engine bug, and sends nothing.
        let _ = match (frame.payload.as_ref(), self.host.as_mut()) {
            (Some(p), Some(host)) => host.with_payload(p, |spans| {
                writer.append(frame.seq, &frame.header, spans, scratch, out)
            }),
            _ => writer.append(frame.seq, &frame.header, &[], scratch, out),
        };
        if scratch.capacity() > OUT_KEEP {
            *scratch = Vec::new();
        }
    }

    /// Writes the frames of `batch` (taken from the stream, large payloads) and empties it: one
    /// vectored write straight from the host's memory when the host lends all payloads at once
    /// ([`QpHost::with_payloads`]), else one write per frame. Returns what
    /// [`Conn::write_direct`] returns for the last write.
    fn write_frames(&mut self, batch: &mut Vec<TxFrame<H::Lease>>, more: bool) -> io::Result<bool> {
        if batch.len() > 1 {
            let writer = self.writer();
            let payloads: Vec<&Payload<H::Lease>> =
                batch.iter().filter_map(|f| f.payload.as_ref()).collect();
            if let (true, Some(host)) = (payloads.len() == batch.len(), self.host.as_mut()) {
                let (sock, spare) = (&self.sock, &mut self.spare);
                let counters = &*self.shared.counters;
                let pending = &self.out[self.out_pos..];
                let capture = self.capture.as_deref_mut();
                let frames = &batch[..];
                let sent = host.with_payloads(&payloads, |spans| {
                    // The stream sized every frame; a refusal would be an engine bug.
                    let trailers = frames
                        .iter()
                        .zip(spans)
                        .map(|(f, s)| writer.trailer(&f.header, s))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
                    let mut iov = Vec::with_capacity(1 + 4 * frames.len());
                    iov.push(IoSlice::new(pending));
                    for ((f, s), t) in frames.iter().zip(spans).zip(&trailers) {
                        iov.push(IoSlice::new(&f.header));
                        iov.extend(s.iter().map(|s| IoSlice::new(s)));
                        iov.push(IoSlice::new(t.as_bytes()));
                    }
                    debug_assert!(
                        iov.len() <= GATHER_IOV,
                        "{} buffers for one sendmsg",
                        iov.len()
                    );
                    send_keeping_rest(sock, counters, &iov, more, spare, capture)
                });
                if let Some(blocked) = sent {
                    drop(payloads);
                    batch.clear();
                    self.adopt_rest(blocked?);
                    return Ok(more && self.out.is_empty());
                }
            }
        }
        let mut corked = false;
        for frame in batch.drain(..) {
            corked = self.write_direct(frame, more)?;
        }
        Ok(corked)
    }

    /// What a vectored write left in `spare` becomes the out buffer.
    fn adopt_rest(&mut self, blocked: bool) {
        std::mem::swap(&mut self.out, &mut self.spare);
        self.out_pos = 0;
        self.spare.clear();
        if blocked {
            self.writable = false;
        }
    }

    /// Writes an FPDU with a large payload with one vectored write straight from the host's
    /// memory, behind whatever is coalesced; keeps what the kernel did not take. With `more`
    /// (another frame follows) the write carries `MSG_MORE`; returns whether it did and the
    /// kernel took everything (the next write must then push).
    fn write_direct(
        &mut self,
        frame: netdirect_proto::stream::TxFrame<H::Lease>,
        more: bool,
    ) -> io::Result<bool> {
        let writer = self.writer();
        let (Some(payload), Some(host)) = (frame.payload.as_ref(), self.host.as_mut()) else {
            return Ok(false);
        };
        let sock = &self.sock;
        let counters = &*self.shared.counters;
        let pending = &self.out[self.out_pos..];
        let spare = &mut self.spare;
        let capture = self.capture.as_deref_mut();
        let blocked = host.with_payload(payload, |spans| {
            // The stream sized the frame; a refusal would be an engine bug.
            let trailer = writer
                .trailer(&frame.header, spans)
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
            let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(spans.len() + 3);
            iov.push(IoSlice::new(pending));
            iov.push(IoSlice::new(&frame.header));
            iov.extend(spans.iter().map(|s| IoSlice::new(s)));
            iov.push(IoSlice::new(trailer.as_bytes()));
            send_keeping_rest(sock, counters, &iov, more, spare, capture)
        })?;
        self.adopt_rest(blocked);
        Ok(more && self.out.is_empty())
    }

    /// Flushes the stream for a disconnect or teardown, and reports the disconnect.
    fn finish_close(&mut self) {
        let span = &self.span;
        if let Some(rdma) = self.phase.rdma_mut() {
            rdma.stream.flush();
            if let Some(host) = self.host.as_mut() {
                while let Some(c) = rdma.stream.poll_completion() {
                    count_completion(&self.shared, &c);
                    completed(span, host, c);
                }
                while let Some(e) = rdma.stream.poll_event() {
                    host.event(e);
                    event(span, e);
                }
                if !rdma.flushed {
                    rdma.flushed = true;
                    tracing::info!(parent: span, "flushed");
                    host.flushed();
                }
            }
        }
        if !std::mem::replace(&mut self.closed_logged, true) {
            tracing::info!(parent: &self.span, "disconnected");
        }
        if let Some(cb) = self.on_disconnect.take() {
            run_or_defer(move || cb(Status::SUCCESS));
        }
    }

    /// Moves a closing connection on once its bytes are out.
    fn advance_close(&mut self, now: Instant, cfg: &EngineConfig) {
        let Phase::Closing {
            terminating,
            disconnecting,
            tx_drained,
            ..
        } = self.phase
        else {
            return;
        };
        let terminate_pending = terminating && !disconnecting && !tx_drained;
        if (self.out_pos < self.out.len() || terminate_pending) && !self.io_dead {
            return;
        }
        let _ = self.sock.shutdown(Shutdown::Write);
        if let Some(c) = self.capture.as_mut() {
            c.fin(true);
        }
        self.finish_close();
        if self.eof || self.io_dead {
            self.kill();
        } else {
            let rdma = self.phase.take_rdma();
            self.phase = Phase::Linger { rdma };
            self.deadline = Some(now + cfg.disconnect_timeout);
        }
    }

    fn on_deadline(&mut self, now: Instant, cfg: &EngineConfig) {
        match &mut self.phase {
            Phase::TcpConnecting { .. } => {
                self.fail_connect(Status::IO_TIMEOUT, Vec::new());
                self.kill();
            }
            Phase::Handshake { hs, .. } => {
                hs.handle_timeout(now);
                self.hs_events(now, cfg, None);
                if let Phase::Handshake { hs, .. } = &self.phase {
                    self.deadline = hs.poll_timeout();
                }
            }
            Phase::Closing { .. } => {
                // Pending bytes could not leave: reset.
                let _ = SockRef::from(&self.sock).set_linger(Some(Duration::ZERO));
                if let Some(cb) = self.on_disconnect.take() {
                    self.on_disconnect = Some(Box::new(move |_| cb(Status::IO_TIMEOUT)));
                }
                self.finish_close();
                self.kill();
            }
            Phase::Linger { .. } => self.kill(),
            Phase::Connected { hold_until, .. } if hold_until.is_some_and(|t| t <= now) => {
                *hold_until = None;
                self.deadline = None;
            }
            _ => self.deadline = None,
        }
    }

    /// Hands a consumer's post to the host and the stream (a stopped stream completes it
    /// `STATUS_CANCELLED`).
    fn apply_post(&mut self, p: PostItem<H>) {
        let Some(host) = self.host.as_mut() else {
            return;
        };
        host.posted(p.wr, p.work);
        let mut ended_by = 0;
        let ok = self.phase.rdma_mut().is_some_and(|r| {
            ended_by = r.stream.ended_by();
            r.stream.post(p.wr, p.request, p.flags).is_ok()
        });
        if !ok {
            // Refused by a stream a Terminate ended: the completion names that Terminate, as
            // the requests it flushed do (§10 row 2).
            let mut c = cancelled(p.wr, &p.request);
            c.provider_error = ended_by;
            count_completion(&self.shared, &c);
            completed(&self.span, host, c);
        }
    }

    /// Inline send on a consumer's thread: writes what the stream has while the socket takes
    /// it, and delivers the completions that follow. Nothing else (no reads, no closing).
    fn tx_pass(&mut self, now: Instant, cfg: &EngineConfig) {
        if !self.phase.is_connected() || self.io_dead {
            return;
        }
        match self.transmit() {
            // Under the connection's lock, as every count of a connection's cells made here
            // but the state changes' (one writer: no locked instruction per post).
            Ok(true) => self.shared.counters.bump(Counter::InlineTransmits, 1),
            Ok(false) => {}
            Err(_) => self.on_peer_gone(true, now, cfg),
        }
        self.drain(now, cfg);
    }

    /// Inline receive on a consumer's thread (a poll of an empty CQ): sends and reads what the
    /// sockets allow without blocking. Returns whether the read budget was used up (more may
    /// wait in the socket) and whether the progress thread must look at the connection
    /// (anything but the established data path changed).
    fn rx_pass(&mut self, now: Instant, cfg: &EngineConfig) -> (bool, bool) {
        if !self.phase.is_connected() || self.io_dead {
            return (false, false);
        }
        // Edge-triggered readiness belongs to the progress thread. Here a read is tried at once
        // while the stream is flowing; once a read found nothing, the kernel is asked first
        // (a poll reads readiness without the socket lock, which a would-block read takes: a
        // busy-polling consumer would otherwise contend with the kernel delivering the very
        // data it waits for, and find it one pass later).
        self.readable = self.rx_hot || readable_now(&self.sock);
        // Established reads go into the stream's buffer; this takes only what a connection
        // that closes during the pass discards (a phase change hands it to the progress
        // thread, which has a full buffer). Small: zeroing 512 octets on every pass of a
        // busy-polling consumer was a few percent of its instructions.
        let mut scratch = [0u8; 64];
        let again = self.drive(&mut scratch, true, now, cfg);
        (again, self.needs_reactor())
    }

    /// The connection leaves the engine: drop the stream and the host now. The cell itself may
    /// live on in a consumer's handle, and the host holds the QP, which holds that handle: the
    /// host must not outlive the engine's interest in the connection (a cycle otherwise).
    fn release_host(&mut self) {
        self.phase = Phase::Dead {
            rdma: None,
            zombie: true,
        };
        self.host = None;
        self.out = Vec::new();
        self.spare = Vec::new();
    }

    /// Whether something only the progress thread handles happened on a consumer's pass: a
    /// phase change (close, error), a deadline the timer heap does not hold.
    fn needs_reactor(&self) -> bool {
        !self.phase.is_connected() || self.deadline != self.timer_at
    }

    /// Drives the connection as far as the socket allows; returns whether it should get another
    /// turn without waiting for readiness (read budget used up).
    ///
    /// `short_read_drains` (a consumer's pass): a short read ends reading, since the next pass
    /// asks the kernel before it reads, and the kernel reports data or an EOF that came in
    /// meanwhile; that saves a would-block read per message (a syscall, and the socket lock
    /// the kernel's delivery wants). The progress thread reads on until would-block: its
    /// readiness is edge-triggered, and a FIN queued behind the data raised its edge already.
    fn drive(
        &mut self,
        rbuf: &mut [u8],
        short_read_drains: bool,
        now: Instant,
        cfg: &EngineConfig,
    ) -> bool {
        let mut budget = cfg.read_budget;
        // Turns of sending and reading: a responder whose requester keeps asking (RDMA reads)
        // would otherwise never leave this loop, and the thread driving it never looked at
        // anything else (on the progress thread: never gave the connection to its polling
        // consumer, on the CPU that consumer is pinned to).
        let mut turns = DRIVE_TURNS;
        loop {
            if turns == 0 {
                return true;
            }
            turns -= 1;
            let mut progress = false;
            if !self.io_dead
                && !matches!(self.phase, Phase::TcpConnecting { .. } | Phase::Dead { .. })
            {
                match self.transmit() {
                    Ok(p) => progress |= p,
                    Err(_) => {
                        self.on_peer_gone(true, now, cfg);
                        progress = true;
                    }
                }
                // Completions of what was handed to TCP; events of local failures.
                self.drain(now, cfg);
            }
            self.advance_close(now, cfg);
            if self.phase.is_dead() {
                return false;
            }
            if self.readable && self.wants_read() {
                if budget == 0 {
                    return true;
                }
                if let Some(n) = self.receive(rbuf, short_read_drains, now, cfg) {
                    budget = budget.saturating_sub(n.max(1));
                    progress = true;
                }
            }
            if !progress {
                return false;
            }
        }
    }

    /// Called by the accept command: accepts the Request the consumer holds.
    fn accept(
        &mut self,
        limits: ReadLimits,
        private_data: &[u8],
        on_done: StatusCallback,
        now: Instant,
        cfg: &EngineConfig,
    ) {
        let accepted = match &mut self.phase {
            Phase::Decision { hs, .. } => hs.accept(limits, private_data).is_ok(),
            _ => false,
        };
        if accepted {
            self.shared.set_state(ConnState::Accepting);
            self.hs_events(now, cfg, Some(on_done));
        } else {
            run_or_defer(move || on_done(Status::INVALID_PARAMETER));
            self.shared.set_state(ConnState::Closed);
            self.begin_close(now, cfg.disconnect_timeout, false);
        }
    }
}

/// A post from a consumer thread, waiting in its connection's queue.
pub(crate) struct PostItem<H: QpHost> {
    pub(crate) wr: u64,
    pub(crate) work: H::Work,
    pub(crate) request: Request,
    pub(crate) flags: PostFlags,
}

/// The most turns (a send and a read) one drive takes before it lets its thread look
/// elsewhere; the connection gets another turn (see [`Conn::drive`]).
const DRIVE_TURNS: u32 = 16;

/// Readiness the progress thread saw for a connection, applied by the next thread that locks
/// it.
const EV_READ: u8 = 1;
const EV_WRITE: u8 = 2;

/// One connection, shared by the progress thread and the consumer threads: the state behind
/// its own lock, the posts queued for whoever holds it next.
pub(crate) struct ConnCell<H: QpHost> {
    me: Weak<ConnCell<H>>,
    pub(crate) inner: Arc<Inner<H>>,
    pub(crate) shared: Arc<ConnShared>,
    conn: Mutex<Conn<H>>,
    posts: SegQueue<PostItem<H>>,
    /// A post without `DEFER` (or [`ConnCell::ring`]) is queued: the queue must be taken and
    /// sent. Deferred posts alone wait for it (or for a drive, a flush, a disconnect).
    doorbell: AtomicBool,
    /// In the progress thread's work queue.
    queued: AtomicBool,
    /// Readiness bits (`EV_*`) not applied yet.
    ev: AtomicU8,
    /// A consumer's progress passes own the receive side: the socket is registered for
    /// writability only. Changed under the connection lock.
    rx_leased: AtomicBool,
    /// When a consumer last ran a progress pass ([`Inner::stamp`]); [`RELEASED`] once the
    /// consumer handed the lease back.
    last_poll: AtomicU64,
    /// The deadline the timer heap holds for this connection (`Conn::timer_at`) as
    /// [`Inner::stamp`] + 1, 0 for none: written by the progress thread only, so that it can
    /// drop a stale heap entry (a deadline that was cleared or moved, such as the connect
    /// deadline of every established connection) without locking the connection or waking
    /// for it.
    timer: AtomicU64,
    /// When the connection last had work: a post, an arrival the progress thread heard, a
    /// lease taken ([`ConnCell::touch`]). Idle connections leave their CQs' active lists
    /// ([`ConnCell::wants_pass`]).
    last_active: AtomicU64,
    /// The connection's entries in the active lists of the CQs its completions go to (set
    /// once, when its QP is attached).
    cqs: OnceLock<Box<[Arc<crate::cq::PollerEntry>]>>,
    /// The sum of its CQs' polls when the progress thread last looked ([`ConnCell::cq_polled`]).
    seen_polls: AtomicU64,
}

impl<H: QpHost> ConnCell<H> {
    pub(crate) fn new(inner: Arc<Inner<H>>, conn: Conn<H>) -> Arc<ConnCell<H>> {
        Arc::new_cyclic(|me| ConnCell {
            me: me.clone(),
            inner,
            shared: conn.shared.clone(),
            conn: Mutex::new(conn),
            posts: SegQueue::new(),
            doorbell: AtomicBool::new(false),
            queued: AtomicBool::new(false),
            ev: AtomicU8::new(0),
            rx_leased: AtomicBool::new(false),
            last_poll: AtomicU64::new(0),
            last_active: AtomicU64::new(0),
            timer: AtomicU64::new(0),
            cqs: OnceLock::new(),
            seen_polls: AtomicU64::new(0),
        })
    }

    /// Records the connection's entries in its CQs' active lists (once; later calls are
    /// ignored, a QP serves one connection).
    pub(crate) fn join_cqs(&self, entries: Vec<Arc<crate::cq::PollerEntry>>) {
        let _ = self.cqs.set(entries.into_boxed_slice());
    }

    /// Locks the connection (the progress thread: consumers never wait for a connection).
    fn lock(&self) -> ConnGuard<'_, H> {
        let section = Section::open();
        let guard = self.conn.lock();
        self.guard(guard, section)
    }

    /// Locks the connection if nobody holds it.
    fn try_lock(&self) -> Option<ConnGuard<'_, H>> {
        let section = Section::open();
        let guard = self.conn.try_lock()?;
        Some(self.guard(guard, section))
    }

    fn guard<'a>(&'a self, guard: MutexGuard<'a, Conn<H>>, section: Section) -> ConnGuard<'a, H> {
        let mut g = ConnGuard {
            cell: self,
            guard: Some(guard),
            section: Some(section),
        };
        // Usually nothing: a plain load spares every lock a locked instruction. A bit set
        // after this look is the progress thread's, which locks the connection to apply it.
        let ev = match self.ev.load(Ordering::Relaxed) {
            0 => 0,
            _ => self.ev.swap(0, Ordering::AcqRel),
        };
        if ev & EV_READ != 0 {
            g.readable = true;
            // An arrival (or the peer's close) the progress thread heard. Writability alone is
            // not work for a consumer's pass: every (re)registration reports it.
            self.touch(Instant::now());
        }
        if ev & EV_WRITE != 0 {
            g.writable = true;
            if matches!(g.phase, Phase::TcpConnecting { .. }) {
                g.on_tcp_connected(Instant::now());
            }
        }
        g
    }

    /// Queues a post and moves it on: sent from this thread when the connection is free
    /// (inline progress), else left for the thread holding it or the progress thread.
    pub(crate) fn post(&self, item: PostItem<H>, defer: bool) {
        let now = Instant::now();
        if self.inner.config.inline_progress && !defer {
            self.touch(now);
            if let Some(mut g) = self.try_lock() {
                // The connection is free: the post goes to the stream straight away, behind
                // whatever other threads queued first (no trip through the queue).
                g.take_posts();
                g.apply_post(item);
                self.send_now(g, now);
                return;
            }
            self.posts.push(item);
            self.doorbell.store(true, Ordering::SeqCst);
            self.kick_at(now);
            return;
        }
        self.posts.push(item);
        self.touch(now);
        if !self.inner.config.inline_progress {
            self.doorbell.store(true, Ordering::SeqCst);
            self.schedule();
        }
    }

    /// Marks the connection as having work now: it enters its CQs' active lists.
    fn touch(&self, now: Instant) {
        self.mark_active(now);
        for e in self.cqs.get().into_iter().flatten() {
            e.activate();
        }
    }

    /// Records work at `now` (what [`ConnCell::wants_pass`] looks at), without listing the
    /// connection: a pass that is visiting it keeps it listed already.
    fn mark_active(&self, now: Instant) {
        self.last_active
            .store(self.inner.stamp(now), Ordering::Relaxed);
    }

    /// Whether a consumer's poll pass should visit this connection: posts wait, or it had work
    /// within two lease periods. An idle connection leaves its CQs' active lists (a leased one
    /// is handed back first, [`crate::cq::Poller::release`]) and is the progress thread's,
    /// which hears its arrivals: a CQ shared by thousands of idle connections then costs a
    /// poll nothing per idle connection.
    fn wants_pass(&self, now: Instant) -> bool {
        if self.doorbell.load(Ordering::Acquire) || !self.posts.is_empty() {
            return true;
        }
        let now = self.inner.stamp(now);
        let lease = self.inner.config.poll_lease.as_nanos() as u64;
        now.saturating_sub(self.last_active.load(Ordering::Relaxed)) < lease.saturating_mul(2)
    }

    /// The doorbell: queued posts go now.
    pub(crate) fn ring(&self) {
        if self.posts.is_empty() {
            return;
        }
        self.doorbell.store(true, Ordering::SeqCst);
        if self.inner.config.inline_progress {
            self.kick();
        } else {
            self.schedule();
        }
    }

    /// Posts are queued: take them now if the lock is free (its holder looks again after
    /// releasing it, see [`ConnGuard`]'s drop).
    fn kick(&self) {
        self.kick_at(Instant::now());
    }

    fn kick_at(&self, now: Instant) {
        atomic::fence(Ordering::SeqCst);
        let Some(mut g) = self.try_lock() else {
            return;
        };
        g.take_posts();
        self.send_now(g, now);
    }

    /// Sends what the stream has from this thread, under the lock `g` holds.
    fn send_now(&self, mut g: ConnGuard<'_, H>, now: Instant) {
        g.tx_pass(now, &self.inner.config);
        if g.needs_reactor() {
            self.schedule();
        }
    }

    /// Hands the connection to the progress thread (woken at most once per batch).
    fn schedule(&self) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(me) = self.me.upgrade() {
            self.inner.work.push(me);
            self.inner.wake();
        }
    }

    /// A consumer's progress pass (a poll of an empty CQ): non-blocking, never waits for the
    /// lock.
    pub(crate) fn progress_pass(&self, now: Instant) {
        if !self.inner.config.inline_progress || self.inner.closed.load(Ordering::Relaxed) {
            return;
        }
        self.last_poll
            .store(self.inner.stamp(now), Ordering::Relaxed);
        let Some(mut g) = self.try_lock() else {
            return;
        };
        g.take_posts();
        let read_before = g.rx_octets;
        let (budget_used, needs_reactor) = g.rx_pass(now, &self.inner.config);
        // A pass that used its read budget leaves the rest to the next pass of its consumer
        // while the consumer holds the lease (handing it to the progress thread made that
        // thread read a busy stream and hold the lock, on the CPU a pinned consumer spins on).
        let mut hand_over =
            needs_reactor || (budget_used && !self.rx_leased.load(Ordering::Relaxed));
        if g.rx_octets != read_before {
            // Arrivals this consumer reads are work: the connection stays on the active lists
            // and keeps its lease. (Else a target of RDMA writes, which completes nothing,
            // went idle every two leases while data streamed in, and the progress thread
            // took it back and handed it over again, about 2,000 times a second.)
            self.mark_active(now);
        }
        // A consumer polls: arrivals are its business for a while, so the progress thread stops
        // hearing of them (no wakeup per message); it takes them back once the consumer has
        // not polled for `EngineConfig::poll_lease`.
        if self.lease(&mut g, now) {
            hand_over = true;
        }
        drop(g);
        if hand_over {
            self.schedule();
        }
    }

    /// Leases the connection's arrivals to the consumers that poll it: the socket stays
    /// registered for writability only, and their passes do the reading. Under the lock; returns
    /// whether it leased (not if leased already, or not connected).
    fn lease(&self, c: &mut Conn<H>, now: Instant) -> bool {
        if self.rx_leased.load(Ordering::Relaxed) || !c.phase.is_connected() {
            return false;
        }
        let token = Token(self.shared.id);
        if self
            .inner
            .registry
            .reregister(&mut c.sock, token, Interest::WRITABLE)
            .is_err()
        {
            return false;
        }
        self.rx_leased.store(true, Ordering::Release);
        // Only a pass hears the arrivals now: on the active lists of its CQs (a pass through
        // one CQ, or `Connection::progress`, may have taken it).
        self.touch(now);
        true
    }

    /// Whether a consumer's pass visited this connection within the last `LEASE_CHECK_MAX + 1`
    /// poll leases (and has not handed it back since): the progress thread then leaves the
    /// connection to that consumer. A few leases, not one: a consumer pinned to the progress
    /// thread's CPU gets little of it while that thread has work (it yields, and the thread
    /// runs a whole time slice), and must still get its connection back.
    fn polled_lately(&self, now: Instant) -> bool {
        let last = self.last_poll.load(Ordering::Relaxed);
        let window = (self.inner.config.poll_lease * (LEASE_CHECK_MAX + 1)).as_nanos() as u64;
        last != 0 && last != RELEASED && self.inner.stamp(now).saturating_sub(last) < window
    }

    /// Whether a consumer polled one of this connection's CQs since the progress thread last
    /// asked (progress thread only): a consumer whose polls always find completions runs no
    /// pass, so only its polls of the CQ show it is there.
    fn cq_polled(&self) -> bool {
        let polls = self.cqs.get().map_or(0, |es| {
            es.iter().fold(0u64, |n, e| n.wrapping_add(e.cq_polls()))
        });
        self.seen_polls.swap(polls, Ordering::Relaxed) != polls
    }

    /// Gives the receive side back to the progress thread (a consumer about to block).
    pub(crate) fn release(&self) {
        if !self.rx_leased.load(Ordering::Acquire) {
            return;
        }
        // The lease lapses now; if the lock is busy (the progress thread may be looking at this
        // very lease), the progress thread takes the arrivals back on its next turn.
        self.last_poll.store(RELEASED, Ordering::Relaxed);
        match self.try_lock() {
            Some(mut g) => self.unlease(&mut g),
            None => self.schedule(),
        }
    }

    /// Registers for reads again (the kernel reports data already waiting). Under the lock.
    fn unlease(&self, c: &mut Conn<H>) {
        if !self.rx_leased.swap(false, Ordering::AcqRel) || c.phase.is_zombie() {
            return;
        }
        // Under the lock, as every count of a connection's cells.
        c.shared.counters.bump(Counter::LeaseReturns, 1);
        let token = Token(self.shared.id);
        let _ = self.inner.registry.reregister(
            &mut c.sock,
            token,
            Interest::READABLE | Interest::WRITABLE,
        );
        c.readable = true;
    }
}

impl<H: QpHost> crate::cq::Poller for ConnCell<H> {
    fn progress(&self, now: Instant) {
        self.progress_pass(now);
    }

    fn wants_pass(&self, now: Instant) -> bool {
        ConnCell::wants_pass(self, now)
    }

    fn release(&self) {
        ConnCell::release(self);
    }
}

/// A held connection lock. Dropping it releases the lock, then runs the callbacks deferred
/// while it was held, then takes posts that were queued meanwhile (a poster that found the lock
/// taken relies on that).
pub(crate) struct ConnGuard<'a, H: QpHost> {
    cell: &'a ConnCell<H>,
    guard: Option<MutexGuard<'a, Conn<H>>>,
    section: Option<Section>,
}

impl<H: QpHost> std::ops::Deref for ConnGuard<'_, H> {
    type Target = Conn<H>;
    fn deref(&self) -> &Conn<H> {
        self.guard.as_deref().expect("held until dropped")
    }
}

impl<H: QpHost> std::ops::DerefMut for ConnGuard<'_, H> {
    fn deref_mut(&mut self) -> &mut Conn<H> {
        self.guard.as_deref_mut().expect("held until dropped")
    }
}

impl<H: QpHost> ConnGuard<'_, H> {
    /// Hands every queued post (deferred ones too) to the stream; the caller sends them (a
    /// drive or an inline pass) or flushes.
    fn take_posts(&mut self) {
        // Cleared only when rung: a plain load on every pass instead of a locked store. A ring
        // after this look makes the release of the lock look again (see the drop).
        if self.cell.doorbell.load(Ordering::Relaxed) {
            self.cell.doorbell.store(false, Ordering::SeqCst);
        }
        while let Some(p) = self.cell.posts.pop() {
            self.apply_post(p);
        }
    }
}

impl<H: QpHost> Drop for ConnGuard<'_, H> {
    fn drop(&mut self) {
        drop(self.guard.take());
        drop(self.section.take());
        atomic::fence(Ordering::SeqCst);
        if self.cell.doorbell.load(Ordering::SeqCst) {
            if self.cell.inner.config.inline_progress {
                self.cell.kick();
            } else {
                self.cell.schedule();
            }
        }
    }
}

struct ListenerState<H: QpHost> {
    listener: TcpListener,
    config: MpaConfig,
    paused: Arc<AtomicBool>,
    /// The status of the last request refused for lack of resources (0: none since the
    /// consumer last looked, [`super::Listener::take_error`]).
    error: Arc<AtomicU32>,
    /// An accept failed for lack of resources and the backlog could not be drained: retried
    /// every [`STARVED_RETRY`].
    starved: bool,
    on_request: Box<dyn FnMut(Incoming<H>) + Send>,
}

/// How often a starved listener retries its accepts.
const STARVED_RETRY: Duration = Duration::from_millis(10);

/// What the progress thread does after driving a connection.
#[derive(Default)]
struct Follow {
    request: Option<(PeerRequest, Option<usize>)>,
    dead: bool,
}

/// One progress thread's state.
pub(crate) struct Reactor<H: QpHost> {
    /// This reactor's shared part (`pool.reactors[index]`).
    inner: Arc<Inner<H>>,
    /// Every reactor of the engine (placement of accepted connections, listener traffic).
    pool: Arc<Pool<H>>,
    index: usize,
    poll: Poll,
    listeners: HashMap<usize, ListenerState<H>>,
    conns: HashMap<usize, Arc<ConnCell<H>>>,
    ready: HashSet<usize>,
    /// Deadlines, soonest first (stale entries are skipped when they come up).
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Connections whose receive side a polling consumer holds (see [`Reactor::check_leases`]).
    leased: HashSet<usize>,
    /// Scratch for a look at the leases (no allocation per look).
    lease_ids: Vec<usize>,
    /// When the leases are looked at next, and the interval that led there: `poll_lease` after
    /// a lease is taken or lapses, doubling (up to [`LEASE_CHECK_MAX`] leases) while every
    /// consumer keeps polling.
    lease_due: Instant,
    lease_every: Duration,
    rbuf: Vec<u8>,
    /// When this thread last read input (see [`EngineConfig::progress_spin`]).
    input_at: Option<Instant>,
    /// A descriptor kept in reserve: when an accept fails for lack of descriptors, it is
    /// closed to accept the connection and reset it at once (the initiator learns at once
    /// instead of timing out), then reopened.
    spare: Option<std::fs::File>,
}

fn spare_fd() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

impl<H: QpHost> Reactor<H> {
    pub(crate) fn new(pool: Arc<Pool<H>>, index: usize, poll: Poll) -> Self {
        let inner = pool.reactors[index].clone();
        let rbuf = vec![0u8; inner.config.read_buffer.max(4096)];
        let lease_every = inner.config.poll_lease;
        Reactor {
            inner,
            pool,
            index,
            poll,
            listeners: HashMap::new(),
            conns: HashMap::new(),
            ready: HashSet::new(),
            timers: BinaryHeap::new(),
            leased: HashSet::new(),
            lease_ids: Vec::new(),
            lease_due: Instant::now(),
            lease_every,
            rbuf,
            input_at: None,
            spare: spare_fd(),
        }
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            self.commands(now);
            if self.inner.stop.load(Ordering::SeqCst) {
                break;
            }
            let starved: Vec<usize> = self
                .listeners
                .iter()
                .filter(|(_, l)| l.starved)
                .map(|(id, _)| *id)
                .collect();
            for id in starved {
                self.accept_all(id, now);
            }
            self.take_work();
            self.drive_ready(now);
            let timeout = if !self.ready.is_empty() {
                Some(Duration::ZERO)
            } else {
                self.prune_timers();
                let timer = self
                    .timers
                    .peek()
                    .map(|Reverse((d, _))| d.saturating_duration_since(Instant::now()));
                let lease = (!self.leased.is_empty())
                    .then(|| self.lease_due.saturating_duration_since(Instant::now()));
                timer.into_iter().chain(lease).min()
            };
            let timeout = if self.listeners.values().any(|l| l.starved) {
                Some(timeout.map_or(STARVED_RETRY, |t| t.min(STARVED_RETRY)))
            } else {
                timeout
            };
            // Shortly after input, look again instead of sleeping: the next arrival of a
            // request-response stream (reads from a target nobody polls) comes within a round
            // trip, and a sleeping thread must first be woken (an interrupt to its CPU).
            let spin = timeout != Some(Duration::ZERO)
                && self.input_at.is_some_and(|t| {
                    Instant::now().saturating_duration_since(t) < self.inner.config.progress_spin
                });
            let timeout = if spin {
                // Not marked asleep: posters need not wake a thread that looks again. A
                // consumer on this CPU gets it between the looks.
                std::thread::yield_now();
                Some(Duration::ZERO)
            } else {
                self.inner.sleeping.store(true, Ordering::SeqCst);
                atomic::fence(Ordering::SeqCst);
                let idle = self.inner.cmds.is_empty()
                    && self.inner.work.is_empty()
                    && !self.inner.stop.load(Ordering::SeqCst);
                if idle { timeout } else { Some(Duration::ZERO) }
            };
            let res = self.poll.poll(&mut events, timeout);
            self.inner.sleeping.store(false, Ordering::SeqCst);
            self.inner.wake_pending.store(false, Ordering::SeqCst);
            if timeout != Some(Duration::ZERO) {
                self.inner.wakeups.fetch_add(1, Ordering::Relaxed);
            }
            if let Err(e) = res {
                if e.kind() != ErrorKind::Interrupted {
                    break;
                }
            }
            let now = Instant::now();
            for ev in events.iter() {
                let Token(id) = ev.token();
                if ev.token() == WAKER {
                    continue;
                }
                if self.listeners.contains_key(&id) {
                    self.accept_all(id, now);
                    continue;
                }
                if let Some(cell) = self.conns.get(&id) {
                    let mut bits = 0;
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        bits |= EV_READ;
                    }
                    if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                        bits |= EV_WRITE;
                    }
                    cell.ev.fetch_or(bits, Ordering::AcqRel);
                    if bits == EV_WRITE
                        && cell.rx_leased.load(Ordering::Acquire)
                        && cell.polled_lately(now)
                    {
                        // Room to send on a connection whose consumer polls: its next pass
                        // takes the bit and sends (this thread sending there took the CPU a
                        // pinned consumer spins on, and the lock its passes need).
                        cell.touch(now);
                        continue;
                    }
                    self.ready.insert(id);
                }
            }
            self.check_leases(now);
            while let Some(Reverse((at, id))) = self.timers.peek().copied() {
                if at > now {
                    break;
                }
                self.timers.pop();
                let Some(cell) = self.live_timer(at, id) else {
                    continue;
                };
                let mut c = cell.lock();
                if c.timer_at == Some(at) {
                    c.timer_at = None;
                    cell.timer.store(0, Ordering::Relaxed);
                }
                if c.deadline.is_some_and(|d| d <= now) {
                    c.on_deadline(now, &self.inner.config);
                    self.ready.insert(id);
                } else if c.deadline != c.timer_at {
                    // Moved meanwhile: re-arm through the next drive.
                    self.ready.insert(id);
                }
            }
        }
        self.shutdown();
    }

    /// Takes the receive side back from consumers that stopped polling (no poll for
    /// `poll_lease`).
    ///
    /// The leases are looked at `poll_lease` after one is taken or lapses, then at doubling
    /// intervals, up to [`LEASE_CHECK_MAX`] leases, while every consumer keeps polling. A
    /// look wakes this thread, and a benchmark pins it to its consumer's CPU: at a look per
    /// `poll_lease`, the wakeups made one busy-polled 8-octet ping-pong in a hundred take
    /// 15 µs instead of 4.5 (p99 17-19 µs; 5.1-5.5 with looks up to 4 leases apart, 4.7-4.9
    /// up to 16, which would let a consumer that stopped polling keep its arrivals for 17 ms).
    /// A consumer that stops polling without blocking has its arrivals taken back within
    /// `LEASE_CHECK_MAX + 1` leases of its last poll; one that blocks
    /// ([`crate::cq::Cq::wait`], an arm) hands them back at once.
    fn check_leases(&mut self, now: Instant) {
        // Only at a look: a wakeup for anything else costs nothing per leased connection.
        if self.leased.is_empty() || now < self.lease_due {
            return;
        }
        let stamp = self.inner.stamp(now);
        let lease = self.inner.config.poll_lease.as_nanos() as u64;
        let mut lapsed = false;
        let mut ids = std::mem::take(&mut self.lease_ids);
        ids.clear();
        ids.extend(self.leased.iter().copied());
        for &id in &ids {
            let Some(cell) = self.cell(id) else {
                self.leased.remove(&id);
                continue;
            };
            if !cell.rx_leased.load(Ordering::Acquire) {
                self.leased.remove(&id);
                continue;
            }
            let last = cell.last_poll.load(Ordering::Relaxed);
            if last != RELEASED && (stamp.saturating_sub(last) < lease || cell.cq_polled()) {
                // Polled within the lease, by a pass or a poll that found completions.
                continue;
            }
            let mut c = cell.lock();
            cell.unlease(&mut c);
            drop(c);
            self.leased.remove(&id);
            self.ready.insert(id);
            lapsed = true;
        }
        self.lease_ids = ids;
        let base = self.inner.config.poll_lease;
        if lapsed {
            self.lease_every = base;
            self.lease_due = now + base;
        } else {
            self.lease_every = (self.lease_every * 2).min(base * LEASE_CHECK_MAX);
            self.lease_due = now + self.lease_every;
        }
    }

    /// A consumer took a lease: the first look comes one `poll_lease` from now.
    fn lease_taken(&mut self, id: usize) {
        if self.leased.insert(id) {
            let base = self.inner.config.poll_lease;
            let now = Instant::now();
            self.lease_every = base;
            self.lease_due = if self.leased.len() == 1 {
                now + base
            } else {
                self.lease_due.min(now + base)
            };
        }
    }

    /// Connections handed over by consumer threads.
    fn take_work(&mut self) {
        while let Some(cell) = self.inner.work.pop() {
            cell.queued.store(false, Ordering::Release);
            let id = cell.shared.id;
            if self.conns.contains_key(&id) {
                if cell.rx_leased.load(Ordering::Acquire) {
                    self.lease_taken(id);
                    if cell.last_poll.load(Ordering::Relaxed) == RELEASED {
                        // Handed back by a consumer about to block, which found the lock
                        // busy: take the arrivals back on this turn, not at the next look.
                        self.lease_due = Instant::now();
                    }
                }
                self.ready.insert(id);
            } else {
                // Gone from the reactor (a released zombie): locking it takes its posts, which
                // complete `STATUS_CANCELLED`.
                cell.lock().take_posts();
            }
        }
    }

    fn register(&mut self, c: &mut Conn<H>) -> bool {
        self.poll
            .registry()
            .register(
                &mut c.sock,
                Token(c.shared.id),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_ok()
    }

    /// Records a connection's deadline in the timer heap; says what else to do with it.
    fn after_drive(&mut self, cell: &ConnCell<H>, c: &mut Conn<H>) -> Follow {
        if c.deadline != c.timer_at {
            if let Some(d) = c.deadline {
                self.timers.push(Reverse((d, cell.shared.id)));
            }
            c.timer_at = c.deadline;
            let stamp = c.deadline.map_or(0, |d| self.inner.stamp(d) + 1);
            cell.timer.store(stamp, Ordering::Relaxed);
        }
        Follow {
            request: match &mut c.phase {
                Phase::Decision { request, .. } => request.take().map(|r| (r, c.listener)),
                _ => None,
            },
            dead: c.phase.is_dead() && !(c.phase.is_zombie() && c.has_handle),
        }
    }

    /// The connection a heap entry (`at`, `id`) is for, if the entry is still its deadline
    /// (not one cleared or moved since it was pushed).
    fn live_timer(&self, at: Instant, id: usize) -> Option<Arc<ConnCell<H>>> {
        let cell = self.conns.get(&id)?;
        (cell.timer.load(Ordering::Relaxed) == self.inner.stamp(at) + 1).then(|| cell.clone())
    }

    /// Drops stale entries from the top of the timer heap, so that the thread does not wake
    /// for them: after setup every connection's connect (or handshake) deadline is stale, and
    /// with 10,000 connections waking for each, and locking its connection, was 10,000
    /// wakeups a `connect_timeout` later. Each entry is dropped once.
    fn prune_timers(&mut self) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if self.live_timer(at, id).is_some() {
                break;
            }
            self.timers.pop();
        }
    }

    fn cell(&self, id: usize) -> Option<Arc<ConnCell<H>>> {
        self.conns.get(&id).cloned()
    }

    /// Carries out the consumers' commands, one method each.
    fn commands(&mut self, now: Instant) {
        while let Some(cmd) = self.inner.cmds.pop() {
            match cmd {
                Cmd::Listen {
                    id,
                    listener,
                    config,
                    paused,
                    error,
                    on_request,
                } => {
                    let state = ListenerState {
                        listener,
                        config,
                        paused,
                        error,
                        starved: false,
                        on_request,
                    };
                    self.cmd_listen(id, state, now);
                }
                Cmd::CloseListener { id, on_closed } => self.cmd_close_listener(id, on_closed),
                Cmd::Connect {
                    cell,
                    host,
                    connected_now,
                    on_done,
                } => self.cmd_connect(cell, host, connected_now, on_done, now),
                Cmd::Accept {
                    id,
                    limits,
                    private_data,
                    host,
                    on_done,
                } => self.cmd_accept(id, limits, &private_data, host, on_done, now),
                Cmd::Reject { id, private_data } => self.cmd_reject(id, &private_data, now),
                Cmd::Complete { id, on_done } => self.cmd_complete(id, on_done, now),
                Cmd::Abandon { id } => self.cmd_abandon(id, now),
                Cmd::Flush { id } => self.cmd_flush(id, now),
                Cmd::Disconnect { id, on_done } => self.cmd_disconnect(id, on_done, now),
                Cmd::Adopt { cell } => self.cmd_adopt(cell),
                Cmd::Deliver {
                    cell,
                    request,
                    listener,
                } => self.deliver_local(&cell, request, listener, now),
                Cmd::ListenerClosed { id } => self.close_handshakes(id),
            }
        }
    }

    fn cmd_listen(&mut self, id: usize, mut l: ListenerState<H>, now: Instant) {
        if self
            .poll
            .registry()
            .register(&mut l.listener, Token(id), Interest::READABLE)
            .is_ok()
        {
            self.listeners.insert(id, l);
            self.accept_all(id, now);
        }
    }

    fn cmd_close_listener(&mut self, id: usize, on_closed: Option<Box<dyn FnOnce() + Send>>) {
        if let Some(mut l) = self.listeners.remove(&id) {
            let _ = self.poll.registry().deregister(&mut l.listener);
        }
        if let Some(cb) = on_closed {
            cb();
        }
        for (i, r) in self.pool.reactors.iter().enumerate() {
            if i != self.index {
                r.send(Cmd::ListenerClosed { id });
            }
        }
        self.close_handshakes(id);
    }

    /// Closes this reactor's connections of listener `id` still waiting for their Request.
    fn close_handshakes(&mut self, id: usize) {
        // Rare (a listener closes): a scan is fine here.
        for (cid, cell) in &self.conns {
            let mut c = cell.lock();
            if c.listener == Some(id) && matches!(c.phase, Phase::Handshake { .. }) {
                c.shared.set_state(ConnState::Closed);
                c.kill();
                self.ready.insert(*cid);
            }
        }
    }

    fn cmd_connect(
        &mut self,
        cell: Arc<ConnCell<H>>,
        host: H,
        connected_now: bool,
        on_done: ConnectCallback,
        now: Instant,
    ) {
        let id = cell.shared.id;
        let mut c = cell.lock();
        c.host = Some(host);
        c.has_handle = true;
        c.deadline = Some(now + self.inner.config.connect_timeout);
        match &mut c.phase {
            Phase::TcpConnecting { on_connect, .. } => *on_connect = Some(on_done),
            // A connection is made connecting and nothing reaches it before this command.
            _ => {
                run_or_defer(move || on_done(Err(ConnectError::new(Status::CONNECTION_ABORTED))));
                return;
            }
        }
        if !self.register(&mut c) {
            c.fail_connect(Status::INSUFFICIENT_RESOURCES, Vec::new());
            self.inner.unload();
            return;
        }
        if connected_now {
            c.writable = true;
            c.on_tcp_connected(now);
        }
        drop(c);
        self.conns.insert(id, cell);
        self.ready.insert(id);
    }

    fn cmd_adopt(&mut self, cell: Arc<ConnCell<H>>) {
        let id = cell.shared.id;
        let mut c = cell.lock();
        if !self.register(&mut c) {
            // The socket closes with the cell: the initiator sees the connection go.
            c.shared.set_state(ConnState::Closed);
            self.inner.unload();
            return;
        }
        drop(c);
        self.conns.insert(id, cell);
        self.ready.insert(id);
    }

    fn cmd_accept(
        &mut self,
        id: usize,
        limits: ReadLimits,
        private_data: &[u8],
        host: H,
        on_done: StatusCallback,
        now: Instant,
    ) {
        let Some(cell) = self.cell(id) else {
            run_or_defer(move || on_done(Status::CONNECTION_ABORTED));
            return;
        };
        let cfg = &self.inner.config;
        let mut c = cell.lock();
        if matches!(c.phase, Phase::Decision { aborted: false, .. }) {
            c.host = Some(host);
            c.accept(limits, private_data, on_done, now, cfg);
        } else {
            c.shared.set_state(ConnState::Closed);
            c.begin_close(now, cfg.disconnect_timeout, false);
            run_or_defer(move || on_done(Status::CONNECTION_ABORTED));
        }
        drop(c);
        self.ready.insert(id);
    }

    fn cmd_reject(&mut self, id: usize, private_data: &[u8], now: Instant) {
        let Some(cell) = self.cell(id) else {
            return;
        };
        let mut c = cell.lock();
        c.has_handle = false;
        if matches!(c.phase, Phase::Decision { .. }) {
            tracing::info!(parent: &c.span, private_data = private_data.len(), "connection rejected");
        }
        if let Phase::Decision { hs, .. } = &mut c.phase {
            if hs.reject(private_data).is_ok() {
                c.shared.counters.add(Counter::MpaRejectsSent, 1);
            }
        }
        c.shared.set_state(ConnState::Closed);
        c.begin_close(now, self.inner.config.disconnect_timeout, false);
        drop(c);
        self.ready.insert(id);
    }

    fn cmd_complete(&mut self, id: usize, on_done: StatusCallback, now: Instant) {
        let Some(cell) = self.cell(id) else {
            run_or_defer(move || on_done(Status::CONNECTION_ABORTED));
            return;
        };
        let cfg = &self.inner.config;
        let mut c = cell.lock();
        match c.phase {
            Phase::Replied { aborted: false, .. } => {}
            Phase::Replied { aborted: true, .. } => {
                tracing::info!(parent: &c.span, status = %Status::CONNECTION_ABORTED, "complete-connect failed: the peer left");
                c.shared.set_state(ConnState::Closed);
                c.begin_close(now, cfg.disconnect_timeout, false);
                run_or_defer(move || on_done(Status::CONNECTION_ABORTED));
                drop(c);
                self.ready.insert(id);
                return;
            }
            _ => {
                tracing::info!(parent: &c.span, status = %Status::CONNECTION_INVALID, "complete-connect failed");
                run_or_defer(move || on_done(Status::CONNECTION_INVALID));
                return;
            }
        }
        let Phase::Replied {
            rdma,
            replied_at,
            early,
            ..
        } = std::mem::replace(&mut c.phase, Phase::PLACEHOLDER)
        else {
            unreachable!("matched above");
        };
        let hold_until = Some(replied_at + cfg.first_fpdu_delay).filter(|t| *t > now);
        c.deadline = hold_until.or(c.deadline);
        c.phase = Phase::Connected { rdma, hold_until };
        c.shared.set_state(ConnState::Connected);
        tracing::info!(parent: &c.span, "connection complete");
        run_or_defer(move || on_done(Status::SUCCESS));
        if !early.is_empty() {
            c.feed(&early);
            c.drain(now, cfg);
        }
        drop(c);
        self.ready.insert(id);
    }

    fn cmd_abandon(&mut self, id: usize, now: Instant) {
        let Some(cell) = self.cell(id) else {
            return;
        };
        let mut c = cell.lock();
        c.take_posts();
        // Refusing the peer's acceptance: a Terminate (LLP local catastrophic), no stream.
        let refuse = match &c.phase {
            Phase::Replied { rdma, .. } => Some(terminate_fpdu(
                TermError::LlpLocalCatastrophic,
                rdma.crc,
                rdma.markers_tx,
            )),
            _ => None,
        };
        c.shared.set_state(ConnState::Closed);
        c.begin_close(now, self.inner.config.disconnect_timeout, false);
        if let Some(t) = refuse {
            c.out.extend_from_slice(&t);
            if let Phase::Closing { rdma, .. } = &mut c.phase {
                *rdma = None;
            }
        }
        drop(c);
        self.ready.insert(id);
    }

    fn cmd_flush(&mut self, id: usize, now: Instant) {
        let Some(cell) = self.cell(id) else {
            return;
        };
        let mut c = cell.lock();
        c.take_posts();
        tracing::info!(parent: &c.span, "flush requested");
        if let Some(r) = c.phase.rdma_mut() {
            r.stream.flush();
        }
        c.drain(now, &self.inner.config);
        drop(c);
        self.ready.insert(id);
    }

    fn cmd_disconnect(&mut self, id: usize, on_done: Option<StatusCallback>, now: Instant) {
        let Some(cell) = self.cell(id) else {
            if let Some(cb) = on_done {
                run_or_defer(move || cb(Status::SUCCESS));
            }
            return;
        };
        let timeout = self.inner.config.disconnect_timeout;
        let mut c = cell.lock();
        c.take_posts();
        if !c.phase.is_closing() {
            tracing::info!(parent: &c.span, "disconnect requested");
        }
        c.shared.set_state(ConnState::Closed);
        c.has_handle = false;
        if let Some(cb) = on_done {
            c.on_disconnect = Some(match c.on_disconnect.take() {
                Some(prev) => Box::new(move |s| {
                    prev(s);
                    cb(s);
                }),
                None => cb,
            });
        }
        match c.phase {
            Phase::TcpConnecting { .. } | Phase::Handshake { .. } => {
                c.fail_connect(Status::CANCELLED, Vec::new());
                c.begin_close(now, timeout, false);
            }
            Phase::Accepting { .. } => {
                c.fail_accept(Status::CANCELLED);
                c.begin_close(now, timeout, true);
            }
            // A Terminate or Reply is on its way out: the callback runs once done.
            Phase::Closing { .. } => {}
            Phase::Linger { .. } | Phase::Dead { .. } => c.finish_close(),
            Phase::Decision { .. } | Phase::Replied { .. } | Phase::Connected { .. } => {
                c.begin_close(now, timeout, true)
            }
        }
        drop(c);
        self.ready.insert(id);
    }

    fn accept_all(&mut self, id: usize, now: Instant) {
        loop {
            let Some(l) = self.listeners.get_mut(&id) else {
                return;
            };
            let (sock, peer) = match l.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    l.starved = false;
                    if self.spare.is_none() {
                        self.spare = spare_fd();
                    }
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ECONNABORTED and friends: the next one may work.
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
                Err(e) if resources(&e) => {
                    // Out of descriptors: the connection waits in the backlog, and its
                    // initiator would time out. Tell the consumer, and refuse it now with
                    // the spare descriptor (a reset: the initiator's connect fails
                    // `STATUS_CONNECTION_REFUSED`); without one, retry soon.
                    l.error
                        .store(Status::INSUFFICIENT_RESOURCES.0, Ordering::Release);
                    let Some(spare) = self.spare.take() else {
                        l.starved = true;
                        return;
                    };
                    drop(spare);
                    let refused = l.listener.accept();
                    if let Ok((refused, _)) = &refused {
                        let _ = SockRef::from(refused).set_linger(Some(Duration::ZERO));
                    }
                    self.spare = spare_fd();
                    if self.spare.is_none() {
                        l.starved = true;
                        return;
                    }
                    match refused {
                        Ok(_) => continue,
                        // Linux reports EMFILE before it looks at the backlog: that was empty.
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                        Err(_) => {
                            l.starved = true;
                            return;
                        }
                    }
                }
                Err(_) => {
                    l.starved = true;
                    return;
                }
            };
            let _ = sock.set_nodelay(true);
            super::choose_congestion_control(SockRef::from(&sock), peer.ip(), &self.inner.config);
            let local = sock.local_addr().unwrap_or(peer);
            let hs = Handshake::responder(l.config.clone(), now);
            // The connection goes to the least loaded reactor and stays there.
            let target = self.pool.place().clone();
            let cid = target.id();
            let shared = ConnShared::new(cid, local, peer, &self.pool.counters);
            let deadline = hs.poll_timeout();
            let phase = Phase::Handshake {
                hs,
                on_connect: None,
                early: Vec::new(),
            };
            let mut c = Conn::new(shared, sock, phase, &target);
            c.listener = Some(id);
            c.writable = true;
            c.deadline = deadline;
            if !Arc::ptr_eq(&target, &self.inner) {
                target.send(Cmd::Adopt {
                    cell: ConnCell::new(target.clone(), c),
                });
            } else if self.register(&mut c) {
                self.conns.insert(cid, ConnCell::new(target, c));
                self.ready.insert(cid);
            } else {
                self.inner.unload();
            }
        }
    }

    fn drive_ready(&mut self, now: Instant) {
        {
            let ids: Vec<usize> = self.ready.drain().collect();
            let mut again = Vec::new();
            for id in ids {
                let Some(cell) = self.cell(id) else {
                    continue;
                };
                let mut c = cell.lock();
                c.take_posts();
                let read_before = c.rx_octets;
                let mut more = c.drive(&mut self.rbuf, false, now, &self.inner.config);
                if c.rx_octets != read_before {
                    self.input_at = Some(now);
                }
                // A consumer polls this connection (its pass found the lock taken, or the
                // arrivals were taken back while it was descheduled): its passes read from
                // now on. Else, on the CPU a pinned consumer spins on, this thread read every
                // arrival of a busy stream, held the lock nearly always, and the consumer's
                // passes could not take the lease back (a Send stream's target ran at 0.8x an
                // RDMA Write stream's).
                if self.inner.config.inline_progress && cell.polled_lately(now) {
                    if cell.lease(&mut c, now) {
                        self.lease_taken(id);
                    }
                    // What is left to read is the consumer's passes'.
                    more &= !cell.rx_leased.load(Ordering::Relaxed);
                }
                if more {
                    again.push(id);
                }
                let follow = self.after_drive(&cell, &mut c);
                drop(c);
                if let Some((request, listener)) = follow.request {
                    self.deliver_request(&cell, request, listener, now);
                }
                if follow.dead {
                    self.reap(&cell);
                }
            }
            // Connections that used their read budget get their next turn after a poll.
            self.ready.extend(again);
        }
    }

    /// Hands a parsed Request to its listener, on the listeners' reactor.
    fn deliver_request(
        &mut self,
        cell: &Arc<ConnCell<H>>,
        request: PeerRequest,
        listener: Option<usize>,
        now: Instant,
    ) {
        if self.index == 0 {
            self.deliver_local(cell, request, listener, now);
        } else {
            self.pool.first().send(Cmd::Deliver {
                cell: cell.clone(),
                request,
                listener,
            });
        }
    }

    /// Hands a parsed Request to its listener here (or rejects it while paused or closed).
    /// The connection may be another reactor's.
    fn deliver_local(
        &mut self,
        cell: &Arc<ConnCell<H>>,
        request: PeerRequest,
        listener: Option<usize>,
        now: Instant,
    ) {
        let cfg = &self.inner.config;
        let id = cell.shared.id;
        match listener.and_then(|l| self.listeners.get_mut(&l)) {
            Some(l) if !l.paused.load(Ordering::Acquire) => {
                cell.lock().has_handle = true;
                let incoming = Incoming {
                    cell: cell.clone(),
                    request,
                    decided: false,
                };
                (l.on_request)(incoming);
            }
            _ => {
                let mut c = cell.lock();
                if let Phase::Decision { hs, .. } = &mut c.phase {
                    let _ = hs.reject(&[]);
                }
                c.shared.set_state(ConnState::Closed);
                c.begin_close(now, cfg.disconnect_timeout, false);
                drop(c);
                if Arc::ptr_eq(&cell.inner, &self.inner) {
                    self.ready.insert(id);
                } else {
                    cell.schedule();
                }
            }
        }
    }

    fn reap(&mut self, cell: &Arc<ConnCell<H>>) {
        let id = cell.shared.id;
        let mut c = cell.lock();
        c.take_posts();
        if !c.phase.is_dead() || (c.phase.is_zombie() && c.has_handle) {
            return;
        }
        if !c.phase.is_zombie() {
            let _ = self.poll.registry().deregister(&mut c.sock);
            let _ = c.sock.shutdown(Shutdown::Both);
            // The capture shows both sides' FINs now.
            c.capture = None;
            c.finish_close();
            c.fail_accept(Status::CONNECTION_ABORTED);
            c.fail_connect(Status::CONNECTION_ABORTED, Vec::new());
            if let Phase::Dead { zombie, .. } = &mut c.phase {
                *zombie = true;
            }
        }
        self.ready.remove(&id);
        if !c.has_handle {
            c.shared.set_state(ConnState::Closed);
            c.release_host();
            drop(c);
            if self.conns.remove(&id).is_some() {
                self.inner.unload();
            }
        }
    }

    /// Engine drop: flush and close everything, fail every callback.
    fn shutdown(&mut self) {
        for (_, mut l) in self.listeners.drain() {
            let _ = self.poll.registry().deregister(&mut l.listener);
        }
        // Bytes already queued (a reject Reply, a Terminate, the end of a send) still go out,
        // best effort and briefly, before the sockets close.
        let deadline = Instant::now() + SHUTDOWN_FLUSH;
        loop {
            let mut pending = false;
            for cell in self.conns.values() {
                let mut c = cell.lock();
                if !c.phase.is_zombie() && !c.io_dead && c.out_pos < c.out.len() {
                    match c.flush_out() {
                        Ok(true) | Err(_) => {}
                        Ok(false) => pending = true,
                    }
                }
            }
            if !pending || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        for (_, cell) in self.conns.drain() {
            self.inner.unload();
            let mut c = cell.lock();
            c.take_posts();
            if !c.phase.is_zombie() {
                let _ = self.poll.registry().deregister(&mut c.sock);
            }
            c.shared.set_state(ConnState::Closed);
            c.fail_connect(Status::CANCELLED, Vec::new());
            c.fail_accept(Status::CANCELLED);
            c.finish_close();
            c.release_host();
        }
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.drain_failed();
        while let Some(cell) = self.inner.work.pop() {
            cell.queued.store(false, Ordering::Release);
            cell.lock().take_posts();
        }
    }
}

/// Whether the socket has input, an error or the peer's FIN waiting (a zero-timeout poll).
fn readable_now(sock: &TcpStream) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        sock,
        rustix::event::PollFlags::IN,
    )];
    // An error of the poll itself: try the read, which reports it.
    rustix::event::poll(&mut fds, Some(&rustix::event::Timespec::default())).map_or(true, |n| n > 0)
}
