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
use netdirect_proto::stream::{Event, PostFlags, Request, Stream, WorkCompletion, WorkKind};
use netdirect_types::Status;
use netdirect_wire::mpa::{self, MarkerLayout};
use netdirect_wire::rdmap::{self, Message};
use netdirect_wire::terminate::{self, TermError};
use parking_lot::{Mutex, MutexGuard};
use socket2::SockRef;

use super::errno::{connect_status, handshake_status, resources};
use super::{
    ConnShared, ConnState, ConnectCallback, ConnectError, EngineConfig, Incoming, Inner, QpHost,
    StatusCallback,
};
use crate::callback::{Section, run_or_defer};

/// How long an engine being dropped keeps writing bytes already queued.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(500);

/// The waker's token; connections and listeners use their ids (from 1).
pub(crate) const WAKER: Token = Token(0);

/// Payloads up to this size are copied behind their header and coalesced.
const SMALL_PAYLOAD: usize = 4096;
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
            _ => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// TCP connect in progress.
    TcpConnecting,
    /// MPA startup frames in flight.
    Handshake,
    /// Passive: the Request is with the consumer.
    Decision,
    /// Active: the peer accepted; waiting for complete or reject.
    Replied,
    /// Passive: accepted; waiting for the first FPDU.
    Accepting,
    /// The stream runs.
    Connected,
    /// Writing what is left (a Terminate, a Reply), then FIN.
    Closing,
    /// FIN sent; reading and discarding until the peer's FIN.
    Linger,
    /// To be removed.
    Dead,
}

/// Finds where the initiator's first FPDU ends in the stream (passive side).
#[derive(Debug, Clone, Copy)]
struct FirstFpdu {
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

/// One `sendmsg` of `bufs`; `more`: with `MSG_MORE` (more follows at once).
fn send(sock: &TcpStream, bufs: &[IoSlice<'_>], more: bool) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    SockRef::from(sock).send_vectored_with_flags(bufs, flags)
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

/// One connection, owned by the progress thread.
pub(crate) struct Conn<H: QpHost> {
    shared: Arc<ConnShared>,
    sock: TcpStream,
    phase: Phase,
    listener: Option<usize>,
    hs: Option<Handshake>,
    stream: Option<Stream<H::Lease>>,
    host: Option<H>,
    pub(crate) explicit_port: bool,
    emss: usize,
    crc: bool,
    markers_tx: bool,
    out: Vec<u8>,
    out_pos: usize,
    spare: Vec<u8>,
    early: Vec<u8>,
    readable: bool,
    writable: bool,
    eof: bool,
    io_dead: bool,
    deadline: Option<Instant>,
    on_connect: Option<ConnectCallback>,
    on_accept: Option<StatusCallback>,
    on_disconnect: Option<StatusCallback>,
    disconnecting: bool,
    first: Option<FirstFpdu>,
    flushed: bool,
    peer_closed: bool,
    /// The stream queued a Terminate: send it, then close.
    terminating: bool,
    /// Closing: the stream has nothing more to send.
    tx_drained: bool,
    /// A Request waiting to be handed to the listener.
    request: Option<PeerRequest>,
    /// The peer went away while the consumer decides.
    aborted: bool,
    /// A consumer handle ([`super::Connection`] or [`Incoming`]) refers to this connection, so
    /// it outlives its socket until released (posts then complete `STATUS_CANCELLED`).
    has_handle: bool,
    /// Dead, socket closed, kept for its handle.
    zombie: bool,
    /// Active side: when the peer's Reply arrived.
    replied_at: Option<Instant>,
    /// Active side: no FPDU leaves before this ([`EngineConfig::first_fpdu_delay`]).
    hold_until: Option<Instant>,
    /// The deadline the progress thread's timer heap holds for this connection.
    timer_at: Option<Instant>,
}

impl<H: QpHost> Conn<H> {
    pub(crate) fn new(
        shared: Arc<ConnShared>,
        sock: TcpStream,
        phase: Phase,
        hs: Handshake,
    ) -> Self {
        let emss = SockRef::from(&sock).mss().unwrap_or(1460) as usize;
        Conn {
            shared,
            sock,
            phase,
            listener: None,
            hs: Some(hs),
            stream: None,
            host: None,
            explicit_port: false,
            emss,
            crc: false,
            markers_tx: false,
            out: Vec::new(),
            out_pos: 0,
            spare: Vec::new(),
            early: Vec::new(),
            readable: false,
            writable: false,
            eof: false,
            io_dead: false,
            deadline: None,
            on_connect: None,
            on_accept: None,
            on_disconnect: None,
            disconnecting: false,
            first: None,
            flushed: false,
            peer_closed: false,
            terminating: false,
            replied_at: None,
            hold_until: None,
            timer_at: None,
            tx_drained: false,
            request: None,
            aborted: false,
            has_handle: false,
            zombie: false,
        }
    }

    fn fail_connect(&mut self, status: Status, private_data: Vec<u8>) {
        self.shared.set_state(ConnState::Closed);
        if let Some(cb) = self.on_connect.take() {
            run_or_defer(move || {
                cb(Err(ConnectError {
                    status,
                    private_data,
                }))
            });
        }
    }

    fn fail_accept(&mut self, status: Status) {
        if let Some(cb) = self.on_accept.take() {
            run_or_defer(move || cb(status));
        }
    }

    fn make_stream(&mut self, neg: &netdirect_proto::Negotiated, cfg: &EngineConfig) {
        let cap = cfg.max_mulpdu;
        // One GSO packet per FPDU (siw's mss × gso_segs); with markers, one segment.
        let seglen = if neg.markers_tx {
            self.emss
        } else {
            mpa::gso_seglen(self.emss)
        };
        let mulpdu = mpa::mulpdu(seglen, neg.markers_tx).min(cap);
        self.crc = neg.crc;
        self.markers_tx = neg.markers_tx;
        self.shared.ord.store(neg.limits.ord, Ordering::Release);
        let mut stream = Stream::new(neg, mulpdu);
        // Header-first receive (`receive` reads payloads straight into place once connected).
        stream.set_direct_min(cfg.direct_min);
        self.stream = Some(stream);
    }

    /// Starts closing: write what is queued, FIN, linger.
    fn begin_close(&mut self, now: Instant, timeout: Duration) {
        if matches!(self.phase, Phase::Closing | Phase::Linger | Phase::Dead) {
            return;
        }
        self.phase = Phase::Closing;
        self.deadline = Some(now + timeout);
    }

    fn kill(&mut self) {
        self.phase = Phase::Dead;
        self.deadline = None;
    }

    /// The TCP connect finished (or failed).
    fn on_tcp_connected(&mut self, now: Instant) {
        if self.phase != Phase::TcpConnecting {
            return;
        }
        match self.sock.take_error() {
            Ok(Some(e)) | Err(e) => {
                let st = connect_status(&e, self.explicit_port);
                self.fail_connect(st, Vec::new());
                return self.kill();
            }
            Ok(None) => {}
        }
        match self.sock.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotConnected => return,
            Err(e) => {
                let st = connect_status(&e, self.explicit_port);
                self.fail_connect(st, Vec::new());
                return self.kill();
            }
        }
        self.emss = SockRef::from(&self.sock).mss().unwrap_or(1460) as usize;
        self.phase = Phase::Handshake;
        // The MPA timeout runs from the connect call (the Handshake was made then).
        self.deadline = self.hs.as_ref().and_then(Handshake::poll_timeout);
        let _ = now;
    }

    /// Handles what the handshake reports.
    fn hs_events(&mut self, now: Instant, cfg: &EngineConfig) {
        while let Some(ev) = self.hs.as_mut().and_then(Handshake::poll_event) {
            match ev {
                HsEvent::Request(req) => {
                    self.phase = Phase::Decision;
                    self.deadline = None;
                    self.request = Some(req);
                }
                HsEvent::Established(neg) => {
                    self.make_stream(&neg, cfg);
                    self.deadline = None;
                    if neg.role == netdirect_proto::Role::Initiator {
                        self.replied_at = Some(now);
                        self.phase = Phase::Replied;
                        self.shared.set_state(ConnState::Replied);
                        if let Some(cb) = self.on_connect.take() {
                            run_or_defer(move || cb(Ok(neg)));
                        }
                    } else if neg.rtr.is_none() {
                        // Plain RFC 5044: nothing on the wire tells us the initiator completed
                        // its connect, and it may wait for us to speak first (perftest's
                        // write_lat does). As siw, the accept completes with the Reply queued.
                        self.phase = Phase::Connected;
                        self.shared.set_state(ConnState::Connected);
                        if let Some(cb) = self.on_accept.take() {
                            run_or_defer(move || cb(Status::SUCCESS));
                        }
                        let early = std::mem::take(&mut self.early);
                        if !early.is_empty() {
                            self.feed(&early);
                            self.drain(now, cfg);
                        }
                    } else {
                        self.phase = Phase::Accepting;
                        self.first = Some(FirstFpdu::new(neg.markers_rx));
                        let early = std::mem::take(&mut self.early);
                        if !early.is_empty() {
                            self.feed(&early);
                        }
                    }
                }
                HsEvent::Rejected { private_data } => {
                    self.fail_connect(Status::CONNECTION_REFUSED, private_data);
                    self.begin_close(now, cfg.disconnect_timeout);
                }
                HsEvent::Failed(e) => {
                    if self.hs.as_ref().map(Handshake::role)
                        == Some(netdirect_proto::Role::Initiator)
                    {
                        if let Some(t) = e.term_error() {
                            let crc = self.crc;
                            self.out.extend_from_slice(&terminate_fpdu(t, crc, false));
                        }
                        self.fail_connect(handshake_status(&e), Vec::new());
                    } else {
                        self.shared.set_state(ConnState::Closed);
                    }
                    self.begin_close(now, cfg.disconnect_timeout);
                }
            }
        }
    }

    /// Runs the stream's receive side over buffered input, placing every payload.
    fn rx(&mut self) {
        let (Some(stream), Some(host)) = (self.stream.as_mut(), self.host.as_mut()) else {
            return;
        };
        while let Some(place) = stream.poll_rx(host) {
            host.place(place.dest, place.data);
        }
    }

    /// Stream-mode input (accepting or connected).
    fn feed(&mut self, data: &[u8]) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        if self.phase == Phase::Accepting {
            let first = self
                .first
                .as_mut()
                .expect("accepting tracks the first FPDU");
            match first.feed(data) {
                Some(k) => {
                    stream.push_input(&data[..k]);
                    self.rx();
                    let ok = self.stream.as_ref().is_some_and(Stream::is_active);
                    if ok {
                        self.phase = Phase::Connected;
                        self.shared.set_state(ConnState::Connected);
                        if let Some(cb) = self.on_accept.take() {
                            run_or_defer(move || cb(Status::SUCCESS));
                        }
                    } else {
                        self.fail_accept(Status::CONNECTION_ABORTED);
                    }
                    if let Some(s) = self.stream.as_mut() {
                        s.push_input(&data[k..]);
                    }
                    self.rx();
                }
                None => {
                    stream.push_input(data);
                    self.rx();
                }
            }
        } else {
            stream.push_input(data);
            self.rx();
        }
    }

    /// Delivers the stream's completions and events to the host.
    fn drain(&mut self, now: Instant, cfg: &EngineConfig) {
        let (Some(stream), Some(host)) = (self.stream.as_mut(), self.host.as_mut()) else {
            return;
        };
        // A stopped stream refuses posts before its flushed completions become visible.
        if !stream.is_active() && !matches!(self.shared.state(), ConnState::Closed) {
            self.shared.set_state(ConnState::Error);
        }
        while let Some(c) = stream.poll_completion() {
            host.completed(c);
        }
        let mut close = false;
        while let Some(e) = stream.poll_event() {
            if e == Event::PeerClosed && self.shared.state() == ConnState::Connected {
                self.shared.set_state(ConnState::PeerClosed);
            }
            host.event(e);
            match e {
                Event::TerminateSent(_) => {
                    self.terminating = true;
                    close = true;
                }
                Event::TerminateReceived(_) => close = true,
                Event::PeerClosed => self.peer_closed = true,
            }
        }
        if !stream.is_active() && !self.flushed {
            self.flushed = true;
            host.flushed();
        }
        if close {
            if self.phase == Phase::Accepting {
                self.fail_accept(Status::CONNECTION_ABORTED);
            }
            self.begin_close(now, cfg.disconnect_timeout);
        }
    }

    /// The peer closed (`reset`: or the connection broke).
    fn on_peer_gone(&mut self, reset: bool, now: Instant, cfg: &EngineConfig) {
        self.eof = true;
        if reset {
            self.io_dead = true;
        }
        match self.phase {
            Phase::TcpConnecting | Phase::Handshake => {
                if self.on_connect.is_some() {
                    self.fail_connect(Status::CONNECTION_REFUSED, Vec::new());
                } else {
                    self.shared.set_state(ConnState::Closed);
                }
                self.kill();
            }
            Phase::Decision | Phase::Replied => self.aborted = true,
            Phase::Accepting => {
                self.fail_accept(Status::CONNECTION_ABORTED);
                if let Some(s) = self.stream.as_mut() {
                    s.flush();
                }
                self.drain(now, cfg);
                self.shared.set_state(ConnState::Closed);
                self.kill();
            }
            Phase::Connected => {
                if !self.peer_closed {
                    match self.stream.as_mut() {
                        Some(s) if s.is_active() => s.handle_eof(),
                        _ => {
                            // The stream is done; tell the host the connection is gone anyway.
                            self.peer_closed = true;
                            if let Some(h) = self.host.as_mut() {
                                h.event(Event::PeerClosed);
                            }
                        }
                    }
                    self.drain(now, cfg);
                }
            }
            Phase::Closing => {
                if reset {
                    self.finish_close();
                    self.kill();
                }
            }
            Phase::Linger | Phase::Dead => self.kill(),
        }
    }

    /// Reads once into `rbuf`; returns the octets read (0 on would-block, EOF or error).
    fn receive(&mut self, rbuf: &mut [u8], now: Instant, cfg: &EngineConfig) -> Option<usize> {
        // Established: read straight into the stream's input buffer (one copy fewer), or,
        // for the payload of a large FPDU whose header is in, straight into its destination.
        let direct = self.phase == Phase::Connected && self.stream.is_some();
        let read = match (direct, self.stream.as_mut()) {
            (true, Some(stream)) => {
                let sock = &self.sock;
                match Self::read_direct(sock, stream, self.host.as_mut()) {
                    Some(read) => read,
                    None => {
                        let n = stream
                            .read_hint()
                            .map_or(rbuf.len(), |h| h.clamp(1, rbuf.len()));
                        stream.fill_input_with(n, |buf| (&*sock).read(buf))
                    }
                }
            }
            _ => (&self.sock).read(rbuf),
        };
        let n = match read {
            Ok(0) => {
                self.on_peer_gone(false, now, cfg);
                return Some(0);
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.readable = false;
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
        match self.phase {
            Phase::Handshake => {
                let used = self.hs.as_mut().map_or(0, |h| h.handle_input(data));
                self.early.extend_from_slice(&data[used..]);
                self.hs_events(now, cfg);
            }
            Phase::Decision | Phase::Replied => self.early.extend_from_slice(data),
            Phase::Accepting | Phase::Connected => {
                self.feed(data);
                self.drain(now, cfg);
            }
            Phase::TcpConnecting | Phase::Closing | Phase::Linger | Phase::Dead => {}
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
                (&*sock).read_vectored(&mut iov)
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
        match self.phase {
            Phase::TcpConnecting | Phase::Dead => false,
            Phase::Decision | Phase::Replied => self.early.len() < EARLY_INPUT_CAP,
            _ => true,
        }
    }

    /// Writes the out buffer; `Ok(true)` when it is empty.
    fn flush_out(&mut self) -> io::Result<bool> {
        while self.out_pos < self.out.len() {
            let buf = [IoSlice::new(&self.out[self.out_pos..])];
            match send(&self.sock, &buf, false) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
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
            Phase::Connected => !self.disconnecting && self.hold_until.is_none(),
            Phase::Accepting => !self.disconnecting,
            Phase::Closing => self.terminating && !self.disconnecting,
            _ => false,
        }
    }

    /// Takes frames from the stream and writes them. Returns whether anything happened.
    fn transmit(&mut self) -> io::Result<bool> {
        let mut progress = false;
        if let Some(hs) = self.hs.as_mut() {
            let before = self.out.len();
            hs.poll_transmit(&mut self.out);
            progress |= self.out.len() != before;
        }
        if self.out.len() - self.out_pos >= COALESCE && !self.flush_out()? {
            return Ok(progress);
        }
        // The last write went out with MSG_MORE: the next one must not, or TCP holds a partial
        // segment back.
        let mut corked = false;
        while self.writable && self.frames_allowed() {
            let (Some(stream), Some(host)) = (self.stream.as_mut(), self.host.as_mut()) else {
                break;
            };
            while let Some(a) = stream.poll_action() {
                let st = host.local(a.wr);
                stream.local_done(a.wr, st);
                progress = true;
            }
            let Some(frame) = stream.poll_transmit() else {
                if self.phase == Phase::Closing {
                    self.tx_drained = true;
                }
                break;
            };
            progress = true;
            let plen = frame.payload.as_ref().map_or(0, |p| p.len() as usize);
            // MSG_MORE where it fills packets: a frame under half the TCP send unit shares
            // one with the next. A larger one leaves at once: holding half a GSO packet back
            // costs the receiver its head start (RDMA read of 64 KiB on lo, two 32 KiB FPDUs
            // per response: a third less throughput with MSG_MORE on every FPDU).
            let more =
                stream.tx_pending() && frame.header.len() + plen < mpa::gso_seglen(self.emss) / 2;
            if self.markers_tx || plen <= SMALL_PAYLOAD {
                self.append_frame(frame);
            } else {
                corked = self.write_direct(frame, more)?;
                continue;
            }
            if self.out.len() - self.out_pos >= COALESCE && !self.flush_out()? {
                break;
            }
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
        mpa::FpduWriter {
            crc: self.crc,
            markers: self.markers_tx.then(|| MarkerLayout::new(0)),
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
        let pending = &self.out[self.out_pos..];
        let spare = &mut self.spare;
        let mut blocked = false;
        let res: io::Result<()> = host.with_payload(payload, |spans| {
            // The stream sized the frame; a refusal would be an engine bug.
            let trailer = writer
                .trailer(&frame.header, spans)
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
            let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(spans.len() + 3);
            iov.push(IoSlice::new(pending));
            iov.push(IoSlice::new(&frame.header));
            iov.extend(spans.iter().map(|s| IoSlice::new(s)));
            iov.push(IoSlice::new(trailer.as_bytes()));
            let total: usize = iov.iter().map(|s| s.len()).sum();
            let written = loop {
                match send(sock, &iov, more) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        blocked = true;
                        break 0;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            // Keep the rest.
            spare.clear();
            let mut skip = written;
            for s in &iov {
                if skip >= s.len() {
                    skip -= s.len();
                    continue;
                }
                spare.extend_from_slice(&s[skip..]);
                skip = 0;
            }
            debug_assert_eq!(spare.len(), total - written);
            Ok(())
        });
        res?;
        std::mem::swap(&mut self.out, &mut self.spare);
        self.out_pos = 0;
        self.spare.clear();
        if blocked {
            self.writable = false;
        }
        Ok(more && self.out.is_empty())
    }

    /// Flushes the stream for a disconnect or teardown, and reports the disconnect.
    fn finish_close(&mut self) {
        if let Some(s) = self.stream.as_mut() {
            s.flush();
        }
        if let (Some(stream), Some(host)) = (self.stream.as_mut(), self.host.as_mut()) {
            while let Some(c) = stream.poll_completion() {
                host.completed(c);
            }
            while let Some(e) = stream.poll_event() {
                host.event(e);
            }
            if !self.flushed {
                self.flushed = true;
                host.flushed();
            }
        }
        if let Some(cb) = self.on_disconnect.take() {
            run_or_defer(move || cb(Status::SUCCESS));
        }
    }

    /// Moves a closing connection on once its bytes are out.
    fn advance_close(&mut self, now: Instant, cfg: &EngineConfig) {
        if self.phase != Phase::Closing {
            return;
        }
        let terminate_pending = self.terminating && !self.disconnecting && !self.tx_drained;
        if (self.out_pos < self.out.len() || terminate_pending) && !self.io_dead {
            return;
        }
        let _ = self.sock.shutdown(Shutdown::Write);
        self.finish_close();
        if self.eof || self.io_dead {
            self.kill();
        } else {
            self.phase = Phase::Linger;
            self.deadline = Some(now + cfg.disconnect_timeout);
        }
    }

    fn on_deadline(&mut self, now: Instant, cfg: &EngineConfig) {
        match self.phase {
            Phase::TcpConnecting => {
                self.fail_connect(Status::IO_TIMEOUT, Vec::new());
                self.kill();
            }
            Phase::Handshake => {
                if let Some(hs) = self.hs.as_mut() {
                    hs.handle_timeout(now);
                }
                self.hs_events(now, cfg);
                if self.phase == Phase::Handshake {
                    self.deadline = self.hs.as_ref().and_then(Handshake::poll_timeout);
                }
            }
            Phase::Closing => {
                // Pending bytes could not leave: reset.
                let _ = SockRef::from(&self.sock).set_linger(Some(Duration::ZERO));
                if let Some(cb) = self.on_disconnect.take() {
                    self.on_disconnect = Some(Box::new(move |_| cb(Status::IO_TIMEOUT)));
                }
                self.finish_close();
                self.kill();
            }
            Phase::Linger => self.kill(),
            Phase::Connected if self.hold_until.is_some_and(|t| t <= now) => {
                self.hold_until = None;
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
        let ok = self.stream.as_mut().is_some_and(|s| {
            ended_by = s.ended_by();
            s.post(p.wr, p.request, p.flags).is_ok()
        });
        if !ok {
            // Refused by a stream a Terminate ended: the completion names that Terminate, as
            // the requests it flushed do (§10 row 2).
            let mut c = cancelled(p.wr, &p.request);
            c.provider_error = ended_by;
            host.completed(c);
        }
    }

    /// Inline send on a consumer's thread: writes what the stream has while the socket takes
    /// it, and delivers the completions that follow. Nothing else (no reads, no closing).
    fn tx_pass(&mut self, now: Instant, cfg: &EngineConfig) {
        if self.phase != Phase::Connected || self.io_dead {
            return;
        }
        if self.transmit().is_err() {
            self.on_peer_gone(true, now, cfg);
        }
        self.drain(now, cfg);
    }

    /// Inline receive on a consumer's thread (a poll of an empty CQ): sends and reads what the
    /// sockets allow without blocking. Returns whether the progress thread must look at the
    /// connection (read budget used up, or anything but the established data path changed).
    fn rx_pass(&mut self, now: Instant, cfg: &EngineConfig) -> bool {
        if self.phase != Phase::Connected || self.io_dead {
            return false;
        }
        // Edge-triggered readiness belongs to the progress thread; here a read is simply tried
        // (one would-block read when nothing came).
        self.readable = true;
        let mut scratch = [0u8; 2048];
        let again = self.drive(&mut scratch, now, cfg);
        again || self.needs_reactor()
    }

    /// The connection leaves the engine: drop the stream and the host now. The cell itself may
    /// live on in a consumer's handle, and the host holds the QP, which holds that handle: the
    /// host must not outlive the engine's interest in the connection (a cycle otherwise).
    fn release_host(&mut self) {
        self.stream = None;
        self.host = None;
        self.out = Vec::new();
        self.spare = Vec::new();
        self.early = Vec::new();
    }

    /// Whether something only the progress thread handles happened on a consumer's pass: a
    /// phase change (close, error), a deadline the timer heap does not hold.
    fn needs_reactor(&self) -> bool {
        self.phase != Phase::Connected || self.deadline != self.timer_at
    }

    /// Drives the connection as far as the socket allows; returns whether it should get another
    /// turn without waiting for readiness (read budget used up).
    fn drive(&mut self, rbuf: &mut [u8], now: Instant, cfg: &EngineConfig) -> bool {
        let mut budget = cfg.read_budget;
        loop {
            let mut progress = false;
            if !self.io_dead && self.phase != Phase::TcpConnecting && self.phase != Phase::Dead {
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
            if self.phase == Phase::Dead {
                return false;
            }
            if self.readable && self.wants_read() {
                if budget == 0 {
                    return true;
                }
                if let Some(n) = self.receive(rbuf, now, cfg) {
                    budget = budget.saturating_sub(n.max(1));
                    progress = true;
                }
            }
            if !progress {
                return false;
            }
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
    /// When a consumer last ran a progress pass ([`Inner::stamp`]).
    last_poll: AtomicU64,
    /// When the connection last had work: a post, an arrival the progress thread heard, a
    /// lease taken ([`ConnCell::touch`]). Idle connections leave their CQs' active lists
    /// ([`ConnCell::wants_pass`]).
    last_active: AtomicU64,
    /// The connection's entries in the active lists of the CQs its completions go to (set
    /// once, when its QP is attached).
    cqs: OnceLock<Box<[Arc<crate::cq::PollerEntry>]>>,
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
            cqs: OnceLock::new(),
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
        let ev = self.ev.swap(0, Ordering::AcqRel);
        if ev & EV_READ != 0 {
            g.readable = true;
            // An arrival (or the peer's close) the progress thread heard. Writability alone is
            // not work for a consumer's pass: every (re)registration reports it.
            self.touch(Instant::now());
        }
        if ev & EV_WRITE != 0 {
            g.writable = true;
            if g.phase == Phase::TcpConnecting {
                g.on_tcp_connected(Instant::now());
            }
        }
        g
    }

    /// Queues a post and moves it on: sent from this thread when the connection is free
    /// (inline progress), else left for the thread holding it or the progress thread.
    pub(crate) fn post(&self, item: PostItem<H>, defer: bool) {
        self.posts.push(item);
        self.touch(Instant::now());
        if !self.inner.config.inline_progress {
            self.doorbell.store(true, Ordering::SeqCst);
            self.schedule();
        } else if !defer {
            self.doorbell.store(true, Ordering::SeqCst);
            self.kick();
        }
    }

    /// Marks the connection as having work now: it enters its CQs' active lists.
    fn touch(&self, now: Instant) {
        self.last_active
            .store(self.inner.stamp(now), Ordering::Relaxed);
        for e in self.cqs.get().into_iter().flatten() {
            e.activate();
        }
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
        atomic::fence(Ordering::SeqCst);
        let Some(mut g) = self.try_lock() else {
            return;
        };
        let cfg = &self.inner.config;
        g.take_posts();
        g.tx_pass(Instant::now(), cfg);
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
    pub(crate) fn progress_pass(&self) {
        if !self.inner.config.inline_progress || self.inner.closed.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        self.last_poll
            .store(self.inner.stamp(now), Ordering::Relaxed);
        let Some(mut g) = self.try_lock() else {
            return;
        };
        g.take_posts();
        let mut hand_over = g.rx_pass(now, &self.inner.config);
        // A consumer polls: arrivals are its business for a while, so the progress thread stops
        // hearing of them (no wakeup per message); it takes them back once the consumer has
        // not polled for `EngineConfig::poll_lease`.
        if !self.rx_leased.load(Ordering::Relaxed) && g.phase == Phase::Connected && !g.zombie {
            let token = Token(self.shared.id);
            if self
                .inner
                .registry
                .reregister(&mut g.sock, token, Interest::WRITABLE)
                .is_ok()
            {
                self.rx_leased.store(true, Ordering::Release);
                // Only a pass hears the arrivals now: on the active lists of its CQs (a pass
                // through one CQ, or `Connection::progress`, may have taken it).
                self.touch(now);
                hand_over = true;
            }
        }
        drop(g);
        if hand_over {
            self.schedule();
        }
    }

    /// Gives the receive side back to the progress thread (a consumer about to block).
    pub(crate) fn release(&self) {
        if !self.rx_leased.load(Ordering::Acquire) {
            return;
        }
        // The lease lapses now; if the lock is busy (the progress thread may be looking at this
        // very lease), the progress thread takes the arrivals back on its next turn.
        self.last_poll.store(0, Ordering::Relaxed);
        match self.try_lock() {
            Some(mut g) => self.unlease(&mut g),
            None => self.schedule(),
        }
    }

    /// Registers for reads again (the kernel reports data already waiting). Under the lock.
    fn unlease(&self, c: &mut Conn<H>) {
        if !self.rx_leased.swap(false, Ordering::AcqRel) || c.zombie {
            return;
        }
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
    fn progress(&self) {
        self.progress_pass();
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
        self.cell.doorbell.store(false, Ordering::SeqCst);
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

/// The progress thread's state.
pub(crate) struct Reactor<H: QpHost> {
    inner: Arc<Inner<H>>,
    poll: Poll,
    listeners: HashMap<usize, ListenerState<H>>,
    conns: HashMap<usize, Arc<ConnCell<H>>>,
    ready: HashSet<usize>,
    /// Deadlines, soonest first (stale entries are skipped when they come up).
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Connections whose receive side a polling consumer holds (checked every
    /// [`EngineConfig::poll_lease`]).
    leased: HashSet<usize>,
    rbuf: Vec<u8>,
    /// A descriptor kept in reserve: when an accept fails for lack of descriptors, it is
    /// closed to accept the connection and reset it at once (the initiator learns at once
    /// instead of timing out), then reopened.
    spare: Option<std::fs::File>,
}

fn spare_fd() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

impl<H: QpHost> Reactor<H> {
    pub(crate) fn new(inner: Arc<Inner<H>>, poll: Poll) -> Self {
        let rbuf = vec![0u8; inner.config.read_buffer.max(4096)];
        Reactor {
            inner,
            poll,
            listeners: HashMap::new(),
            conns: HashMap::new(),
            ready: HashSet::new(),
            timers: BinaryHeap::new(),
            leased: HashSet::new(),
            rbuf,
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
                let timer = self
                    .timers
                    .peek()
                    .map(|Reverse((d, _))| d.saturating_duration_since(Instant::now()));
                let lease = (!self.leased.is_empty()).then_some(self.inner.config.poll_lease);
                timer.into_iter().chain(lease).min()
            };
            let timeout = if self.listeners.values().any(|l| l.starved) {
                Some(timeout.map_or(STARVED_RETRY, |t| t.min(STARVED_RETRY)))
            } else {
                timeout
            };
            self.inner.sleeping.store(true, Ordering::SeqCst);
            atomic::fence(Ordering::SeqCst);
            let idle = self.inner.cmds.is_empty()
                && self.inner.work.is_empty()
                && !self.inner.stop.load(Ordering::SeqCst);
            let timeout = if idle { timeout } else { Some(Duration::ZERO) };
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
                    self.ready.insert(id);
                }
            }
            self.check_leases(now);
            while let Some(Reverse((at, id))) = self.timers.peek().copied() {
                if at > now {
                    break;
                }
                self.timers.pop();
                let Some(cell) = self.conns.get(&id).cloned() else {
                    continue;
                };
                let mut c = cell.lock();
                if c.timer_at == Some(at) {
                    c.timer_at = None;
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

    /// Takes the receive side back from consumers that stopped polling.
    fn check_leases(&mut self, now: Instant) {
        if self.leased.is_empty() {
            return;
        }
        let stamp = self.inner.stamp(now);
        let lease = self.inner.config.poll_lease.as_nanos() as u64;
        let ids: Vec<usize> = self.leased.iter().copied().collect();
        for id in ids {
            let Some(cell) = self.cell(id) else {
                self.leased.remove(&id);
                continue;
            };
            if !cell.rx_leased.load(Ordering::Acquire) {
                self.leased.remove(&id);
                continue;
            }
            if stamp.saturating_sub(cell.last_poll.load(Ordering::Relaxed)) < lease {
                continue;
            }
            let mut c = cell.lock();
            cell.unlease(&mut c);
            drop(c);
            self.leased.remove(&id);
            self.ready.insert(id);
        }
    }

    /// Connections handed over by consumer threads.
    fn take_work(&mut self) {
        while let Some(cell) = self.inner.work.pop() {
            cell.queued.store(false, Ordering::Release);
            let id = cell.shared.id;
            if self.conns.contains_key(&id) {
                if cell.rx_leased.load(Ordering::Acquire) {
                    self.leased.insert(id);
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
    fn after_drive(&mut self, id: usize, c: &mut Conn<H>) -> Follow {
        if c.deadline != c.timer_at {
            if let Some(d) = c.deadline {
                self.timers.push(Reverse((d, id)));
            }
            c.timer_at = c.deadline;
        }
        Follow {
            request: c.request.take().map(|r| (r, c.listener)),
            dead: c.phase == Phase::Dead && !(c.zombie && c.has_handle),
        }
    }

    fn cell(&self, id: usize) -> Option<Arc<ConnCell<H>>> {
        self.conns.get(&id).cloned()
    }

    fn commands(&mut self, now: Instant) {
        let cfg = self.inner.config.clone();
        while let Some(cmd) = self.inner.cmds.pop() {
            match cmd {
                Cmd::Listen {
                    id,
                    mut listener,
                    config,
                    paused,
                    error,
                    on_request,
                } => {
                    if self
                        .poll
                        .registry()
                        .register(&mut listener, Token(id), Interest::READABLE)
                        .is_ok()
                    {
                        self.listeners.insert(
                            id,
                            ListenerState {
                                listener,
                                config,
                                paused,
                                error,
                                starved: false,
                                on_request,
                            },
                        );
                        self.accept_all(id, now);
                    }
                }
                Cmd::CloseListener { id, on_closed } => {
                    if let Some(mut l) = self.listeners.remove(&id) {
                        let _ = self.poll.registry().deregister(&mut l.listener);
                    }
                    if let Some(cb) = on_closed {
                        cb();
                    }
                    // Rare (a listener closes): a scan is fine here.
                    for (cid, cell) in &self.conns {
                        let mut c = cell.lock();
                        if c.listener == Some(id) && c.phase == Phase::Handshake {
                            c.shared.set_state(ConnState::Closed);
                            c.kill();
                            self.ready.insert(*cid);
                        }
                    }
                }
                Cmd::Connect {
                    cell,
                    host,
                    connected_now,
                    on_done,
                } => {
                    let id = cell.shared.id;
                    let mut c = cell.lock();
                    c.host = Some(host);
                    c.has_handle = true;
                    c.on_connect = Some(on_done);
                    c.deadline = Some(now + cfg.connect_timeout);
                    if !self.register(&mut c) {
                        c.fail_connect(Status::INSUFFICIENT_RESOURCES, Vec::new());
                        continue;
                    }
                    if connected_now {
                        c.writable = true;
                        c.on_tcp_connected(now);
                    }
                    drop(c);
                    self.conns.insert(id, cell);
                    self.ready.insert(id);
                }
                Cmd::Accept {
                    id,
                    limits,
                    private_data,
                    host,
                    on_done,
                } => {
                    let Some(cell) = self.cell(id) else {
                        run_or_defer(move || on_done(Status::CONNECTION_ABORTED));
                        continue;
                    };
                    let mut c = cell.lock();
                    if c.phase != Phase::Decision || c.aborted {
                        c.shared.set_state(ConnState::Closed);
                        c.begin_close(now, cfg.disconnect_timeout);
                        run_or_defer(move || on_done(Status::CONNECTION_ABORTED));
                        drop(c);
                        self.ready.insert(id);
                        continue;
                    }
                    c.host = Some(host);
                    c.on_accept = Some(on_done);
                    let accepted = c.hs.as_mut().map(|h| h.accept(limits, &private_data));
                    match accepted {
                        Some(Ok(())) => {
                            c.shared.set_state(ConnState::Accepting);
                            c.hs_events(now, &cfg);
                        }
                        _ => {
                            c.fail_accept(Status::INVALID_PARAMETER);
                            c.shared.set_state(ConnState::Closed);
                            c.begin_close(now, cfg.disconnect_timeout);
                        }
                    }
                    drop(c);
                    self.ready.insert(id);
                }
                Cmd::Reject { id, private_data } => {
                    if let Some(cell) = self.cell(id) {
                        let mut c = cell.lock();
                        c.has_handle = false;
                        if c.phase == Phase::Decision {
                            if let Some(hs) = c.hs.as_mut() {
                                let _ = hs.reject(&private_data);
                            }
                        }
                        c.shared.set_state(ConnState::Closed);
                        c.begin_close(now, cfg.disconnect_timeout);
                        drop(c);
                        self.ready.insert(id);
                    }
                }
                Cmd::Complete { id, on_done } => {
                    let Some(cell) = self.cell(id) else {
                        run_or_defer(move || on_done(Status::CONNECTION_ABORTED));
                        continue;
                    };
                    let mut c = cell.lock();
                    if c.phase != Phase::Replied {
                        run_or_defer(move || on_done(Status::CONNECTION_INVALID));
                        continue;
                    }
                    if c.aborted {
                        c.shared.set_state(ConnState::Closed);
                        c.begin_close(now, cfg.disconnect_timeout);
                        run_or_defer(move || on_done(Status::CONNECTION_ABORTED));
                        drop(c);
                        self.ready.insert(id);
                        continue;
                    }
                    c.phase = Phase::Connected;
                    c.shared.set_state(ConnState::Connected);
                    let hold = c.replied_at.map(|t| t + cfg.first_fpdu_delay);
                    if let Some(t) = hold.filter(|t| *t > now) {
                        c.hold_until = Some(t);
                        c.deadline = Some(t);
                    }
                    run_or_defer(move || on_done(Status::SUCCESS));
                    let early = std::mem::take(&mut c.early);
                    if !early.is_empty() {
                        c.feed(&early);
                        c.drain(now, &cfg);
                    }
                    drop(c);
                    self.ready.insert(id);
                }
                Cmd::Abandon { id } => {
                    if let Some(cell) = self.cell(id) {
                        let mut c = cell.lock();
                        c.take_posts();
                        if c.phase == Phase::Replied {
                            let t = terminate_fpdu(
                                TermError::LlpLocalCatastrophic,
                                c.crc,
                                c.markers_tx,
                            );
                            c.out.extend_from_slice(&t);
                            c.stream = None;
                        }
                        c.shared.set_state(ConnState::Closed);
                        c.begin_close(now, cfg.disconnect_timeout);
                        drop(c);
                        self.ready.insert(id);
                    }
                }
                Cmd::Flush { id } => {
                    if let Some(cell) = self.cell(id) {
                        let mut c = cell.lock();
                        c.take_posts();
                        if let Some(s) = c.stream.as_mut() {
                            s.flush();
                        }
                        c.drain(now, &cfg);
                        drop(c);
                        self.ready.insert(id);
                    }
                }
                Cmd::Disconnect { id, on_done } => {
                    let Some(cell) = self.cell(id) else {
                        if let Some(cb) = on_done {
                            run_or_defer(move || cb(Status::SUCCESS));
                        }
                        continue;
                    };
                    let mut c = cell.lock();
                    c.take_posts();
                    c.shared.set_state(ConnState::Closed);
                    c.has_handle = false;
                    if let Some(cb) = on_done {
                        match c.on_disconnect.take() {
                            Some(prev) => {
                                c.on_disconnect = Some(Box::new(move |s| {
                                    prev(s);
                                    cb(s);
                                }))
                            }
                            None => c.on_disconnect = Some(cb),
                        }
                    }
                    match c.phase {
                        Phase::TcpConnecting | Phase::Handshake => {
                            c.fail_connect(Status::CANCELLED, Vec::new());
                            c.begin_close(now, cfg.disconnect_timeout);
                        }
                        Phase::Accepting => {
                            c.fail_accept(Status::CANCELLED);
                            c.disconnecting = true;
                            c.begin_close(now, cfg.disconnect_timeout);
                        }
                        // A Terminate or Reply is on its way out: the callback runs once done.
                        Phase::Closing => {}
                        Phase::Linger | Phase::Dead => c.finish_close(),
                        Phase::Decision | Phase::Replied | Phase::Connected => {
                            c.disconnecting = true;
                            c.begin_close(now, cfg.disconnect_timeout);
                        }
                    }
                    drop(c);
                    self.ready.insert(id);
                }
            }
        }
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
            let local = sock.local_addr().unwrap_or(peer);
            let hs = Handshake::responder(l.config.clone(), now);
            let cid = self.inner.id();
            let shared = ConnShared::new(cid, local, peer);
            let mut c = Conn::new(shared, sock, Phase::Handshake, hs);
            c.listener = Some(id);
            c.writable = true;
            c.deadline = c.hs.as_ref().and_then(Handshake::poll_timeout);
            if self.register(&mut c) {
                self.conns.insert(cid, ConnCell::new(self.inner.clone(), c));
                self.ready.insert(cid);
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
                if c.drive(&mut self.rbuf, now, &self.inner.config) {
                    again.push(id);
                }
                let follow = self.after_drive(id, &mut c);
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

    /// Hands a parsed Request to its listener (or rejects it while paused or closed).
    fn deliver_request(
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
                if let Some(hs) = c.hs.as_mut() {
                    let _ = hs.reject(&[]);
                }
                c.shared.set_state(ConnState::Closed);
                c.begin_close(now, cfg.disconnect_timeout);
                drop(c);
                self.ready.insert(id);
            }
        }
    }

    fn reap(&mut self, cell: &Arc<ConnCell<H>>) {
        let id = cell.shared.id;
        let mut c = cell.lock();
        c.take_posts();
        if c.phase != Phase::Dead || (c.zombie && c.has_handle) {
            return;
        }
        if !c.zombie {
            let _ = self.poll.registry().deregister(&mut c.sock);
            let _ = c.sock.shutdown(Shutdown::Both);
            c.finish_close();
            c.fail_accept(Status::CONNECTION_ABORTED);
            c.fail_connect(Status::CONNECTION_ABORTED, Vec::new());
            c.zombie = true;
        }
        self.ready.remove(&id);
        if !c.has_handle {
            c.shared.set_state(ConnState::Closed);
            c.release_host();
            drop(c);
            self.conns.remove(&id);
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
                let c = &mut *c;
                if let Some(hs) = c.hs.as_mut() {
                    hs.poll_transmit(&mut c.out);
                }
                if !c.zombie && !c.io_dead && c.out_pos < c.out.len() {
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
            let mut c = cell.lock();
            c.take_posts();
            if !c.zombie {
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
