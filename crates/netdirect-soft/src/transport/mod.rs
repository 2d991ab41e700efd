//! The TCP driver and progress engine: moves the bytes of every connection of an adapter.
//!
//! An [`Engine`] owns its **progress threads** ([`EngineConfig::progress_threads`], one by
//! default), each with a `mio` reactor. Every socket of the adapter (listeners and connections)
//! is non-blocking and registered with one of them: listeners with the first, a connection
//! with the least loaded when it is made, for good. Each connection runs the
//! MPA handshake ([`netdirect_proto::Handshake`]) and the RDMAP stream
//! ([`netdirect_proto::stream::Stream`]): reads what TCP has, places it, sends what the stream
//! produces, and reports completions and events to its host ([`QpHost`]).
//!
//! # Who drives a connection: run to completion
//!
//! A connection's state is behind its own lock, and whichever thread holds the lock drives it
//! ([`EngineConfig::inline_progress`], on by default):
//!
//! * **Posting thread.** [`Connection::post`] queues the request on the connection, then, if the
//!   lock is free, sends what the stream has right there (until the socket would block) and
//!   delivers the completions that follow. Taken: the holder picks the post up after releasing
//!   the lock. Would block: the progress thread finishes when the socket is writable.
//! * **Polling thread.** [`Connection::progress`] (what a poll of an empty CQ runs for each
//!   connection completing there, [`crate::cq::Poller`]) sends and reads without blocking. The
//!   first pass leases the connection's arrivals to the consumers: the socket is registered for
//!   writability only, so the progress thread is not woken per message; it takes them back once
//!   nobody polled for [`EngineConfig::poll_lease`], or when a consumer blocks
//!   ([`crate::cq::Poller::release`]). A poll visits only the connections on its CQ's active
//!   list ([`crate::cq`]): a connection is listed when it gets work (a post, an arrival the
//!   progress thread heard, a lease taken) and leaves at the pass that finds it without work
//!   for two lease periods (arrivals a pass read are work), handing its lease back (§10 row 33
//!   in the crate docs). A pass reads while reads fill their buffers; a short read means the
//!   socket was drained, so the next pass asks the kernel (a `poll`, no socket lock) before
//!   reading: no read per message that finds nothing
//!   ([`netdirect::counters::Counter::EmptyReads`] counts the ones left). A pass that used its
//!   read budget leaves the rest to the next pass while its consumer holds the lease. Polls
//!   that find completions (no pass) keep a lease too. [`netdirect::counters::Counter::LeaseReturns`]
//!   counts the hand-backs.
//! * **Progress thread.** Everything else, so that progress is automatic, like hardware: a
//!   connection nobody polls (a target serving reads and writes), handshakes and closes,
//!   timers (a heap), sends that hit `EAGAIN`. It sleeps while no connection has work for it,
//!   but only [`EngineConfig::progress_spin`] after it last read input (yielding the CPU
//!   between looks): a requester's next RDMA read comes a round trip later and finds it awake;
//!   a consumer hands a connection over through a lock-free queue and writes the eventfd at
//!   most once per batch (a "wake pending" flag). [`Engine::wakeups`] counts its wakeups.
//!   It hands a connection back to a consumer that ran a pass within a few leases: it leases
//!   the connection after driving it, leaves room to send on a leased connection to the
//!   consumer's next pass, and drives any connection for at most a few turns at a time. A
//!   consumer pinned to this thread's CPU gets little CPU while this thread has work. Before,
//!   a busy Send stream's target was read by this thread, and its consumer never got the
//!   connection back.
//!
//! Consumers only ever *try* a connection lock; callbacks never run under one (the thread
//! defers them until it released the lock, [`crate::callback`]).
//!
//! # API
//!
//! | NDK | here |
//! |---|---|
//! | NdkListen / NdkGetLocalAddress (listener) | [`Engine::listen`] → [`Listener`], [`Listener::local_addr`] |
//! | NdkControlConnectEvents | [`Listener::pause`] |
//! | connect event | the listener's callback gets an [`Incoming`] |
//! | NdkAccept / NdkReject (passive) | [`Incoming::accept`] / [`Incoming::reject`] |
//! | NdkConnect | [`Engine::connect`] (completion: [`Negotiated`] or [`ConnectError`]) |
//! | NdkCompleteConnect / NdkReject (active) | [`Connection::complete`] / [`Connection::reject`] |
//! | post on the initiator queue, NdkFlush | [`Connection::post`], [`Connection::flush`] |
//! | NdkDisconnect | [`Connection::disconnect`] (and dropping the [`Connection`]) |
//!
//! Callbacks (completions, events, the host's calls) run on the progress thread or, with
//! inline progress, on the consumer thread whose post or poll made them due, after the
//! connection lock is released. They must not block (the NDK rule for callbacks) and may call
//! back into the engine.
//!
//! # Connection life
//!
//! * **Active side.** [`Engine::connect`] binds (if a local address is given), starts a
//!   non-blocking TCP connect and queues the MPA Request. The completion reports the peer's
//!   acceptance with the [`Negotiated`] parameters (the Reply's private data and the effective
//!   IRD/ORD), *before* the stream starts: nothing is sent until [`Connection::complete`] (NDK
//!   "complete connect"), which starts the stream; its first FPDU (the RFC 6581 RTR message when
//!   peer-to-peer mode was negotiated) tells the passive side that the connection is complete.
//!   [`Connection::reject`] instead sends a Terminate (LLP "local catastrophic", 0x05) and
//!   closes: the passive side's accept completes `STATUS_CONNECTION_ABORTED`.
//! * **Passive side.** An accepted TCP connection runs the responder handshake; when the Request
//!   is parsed the listener's callback gets an [`Incoming`]. [`Incoming::accept`] sends the
//!   Reply and builds the stream. With RFC 6581 peer-to-peer mode negotiated, its completion
//!   fires when the initiator's RTR (its **first FPDU**) has arrived (NDK: accept completes when
//!   the active side completed the connect); use [`ndk_mpa_config`] (RTR offered) for that.
//!   Without it nothing on the wire marks the initiator's complete-connect, and the initiator
//!   may wait for us to speak first (perftest's `write_lat`), so, as siw does, the accept
//!   completes once the Reply is queued and we may send at once.
//!   [`Incoming::reject`] (or dropping the `Incoming`) sends a Reply with R set and closes.
//!   While a listener is paused, a Request is answered with such a reject (empty private data),
//!   which the initiator reports as `STATUS_CONNECTION_REFUSED`.
//! * **Disconnect.** [`Connection::disconnect`] stops taking new frames from the stream, finishes
//!   the FPDU being written, shuts down the sending side of TCP (FIN), then flushes the stream
//!   (pending requests complete `STATUS_CANCELLED`) and calls [`QpHost::flushed`]. The socket is
//!   kept open, reading and discarding, until the peer's FIN or
//!   [`EngineConfig::disconnect_timeout`], so that closing never resets data in flight.
//! * **Peer close.** A FIN (or a reset) from the peer is reported as
//!   [`Event::PeerClosed`] and nothing is flushed (NDK §7.7); the consumer disconnects.
//! * **Errors.** When the stream sends a Terminate ([`Event::TerminateSent`]), the engine writes
//!   it, shuts down and closes; when it receives one, it closes. The stream has completed
//!   everything pending; [`QpHost::flushed`] follows.
//!
//! Posting is allowed on a connected connection (also after a peer close, where requests
//! complete `STATUS_CANCELLED`). Before the connection is complete, once the stream stopped
//! (an error, a Terminate either way, NdkFlush) and after [`Connection::disconnect`], a post
//! fails inline with `STATUS_CONNECTION_INVALID` (§10.3). The state changes before the first
//! flushed completion is delivered, so a consumer that has seen one is refused deterministically;
//! a post racing the change still completes `STATUS_CANCELLED`. A read with ORD 0 fails inline
//! with `STATUS_INSUFFICIENT_RESOURCES`.
//!
//! # Errors: errno → NTSTATUS
//!
//! | when | errno | status |
//! |---|---|---|
//! | bind (listen, or connect from a local address) | `EADDRINUSE` | `STATUS_SHARING_VIOLATION` |
//! | bind | `EADDRNOTAVAIL` (address not local), `EINVAL`, `EAFNOSUPPORT` | `STATUS_INVALID_ADDRESS` |
//! | bind | `EACCES` | `STATUS_ACCESS_DENIED` |
//! | connect | `ECONNREFUSED`, `ECONNRESET` (RST) | `STATUS_CONNECTION_REFUSED` |
//! | connect | `ENETUNREACH`, `ENETDOWN` | `STATUS_NETWORK_UNREACHABLE` |
//! | connect | `EHOSTUNREACH`, `EHOSTDOWN` | `STATUS_HOST_UNREACHABLE` |
//! | connect | `ETIMEDOUT`, or [`EngineConfig::connect_timeout`] | `STATUS_IO_TIMEOUT` |
//! | connect with an explicit local port | `EADDRNOTAVAIL`, `EADDRINUSE` (the 4-tuple exists) | `STATUS_ADDRESS_ALREADY_EXISTS` |
//! | connect from an ephemeral port | `EADDRNOTAVAIL` (no port left) | `STATUS_TOO_MANY_ADDRESSES` |
//! | any | `ENOMEM`, `ENOBUFS`, `EMFILE`, `ENFILE` | `STATUS_INSUFFICIENT_RESOURCES` |
//! | accept (listener) | `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM` | the connection is reset at once with a descriptor kept in reserve (the initiator: `STATUS_CONNECTION_REFUSED`), [`Listener::take_error`] gives `STATUS_INSUFFICIENT_RESOURCES`; without a reserve the accept is retried every 10 ms |
//! | MPA | peer rejected (Reply with R) | `STATUS_CONNECTION_REFUSED` + its private data |
//! | MPA | the connection closed before the Reply | `STATUS_CONNECTION_REFUSED` |
//! | MPA | Reply timed out ([`MpaConfig::timeout`]) | `STATUS_IO_TIMEOUT` |
//! | MPA | invalid Reply, IRD, RTR (a Terminate is sent) | `STATUS_CONNECTION_ABORTED` |
//! | accept/complete | the peer went away, rejected, or terminated | `STATUS_CONNECTION_ABORTED` |
//!
//! Listeners set `SO_REUSEADDR` (as siw), so a second listener on a port in use still fails
//! (Linux refuses it while one socket listens), and IPv6 listeners are `IPV6_V6ONLY`, so IPv4 and
//! IPv6 listeners on one port are independent. A connect from an explicit local address also
//! sets `SO_REUSEADDR`: several connections may share a local port as long as their peers
//! differ (NDK shared endpoints), and a duplicate 4-tuple is the `ADDRESS_ALREADY_EXISTS` case.
//!
//! # Threading model and lock order
//!
//! * [`EngineConfig::progress_threads`] reactors per [`Engine`], each its own thread, `mio`
//!   poll, waker, timer heap and queues; every connection's state is a `ConnCell`: a
//!   `parking_lot::Mutex` around the socket, handshake, stream and host, a lock-free queue of
//!   posts, readiness bits and the lease flag. A connection's reactor holds its cell in a map
//!   by id and waits for its lock; consumer threads only `try_lock` them. Accepted sockets go
//!   from the listeners' reactor to theirs by its command queue, their Requests back the same
//!   way.
//! * Commands (connect, accept, complete, flush, disconnect; listen to the first reactor) go
//!   through a lock-free queue to the connection's progress thread; connections consumers hand
//!   over (a blocked send, a close seen inline, a new lease) through another. The eventfd is written only when the thread
//!   sleeps and no wake is pending (a `SeqCst` flag/queue handshake), so a busy engine takes
//!   work without any system call on the producing side.
//! * Consumer-visible connection state (connected, ORD) lives in atomics, so inline post checks
//!   (`STATUS_CONNECTION_INVALID`, ORD 0) need no lock.
//! * A post that finds the lock taken leaves its request in the queue and rings the
//!   connection's doorbell (a flag; deferred posts do not ring it): the holder, after releasing
//!   the lock, looks at the doorbell (a `SeqCst` fence on both sides) and takes the queue
//!   (inline) or hands the connection to the progress thread; nothing is left behind. Only
//!   paths that then send (a drive, an inline pass) or flush take the queue; a lock taken for
//!   something else (a timer, a lease) leaves it, so deferred posts keep waiting.
//! * **Lock order:** connection lock → whatever the host takes (memory table → buffer lock,
//!   receive queue or SRQ, CQ ring). Never two connection locks at once. Callbacks run after
//!   the connection lock is released (see the crate docs, *Threading and lock order*).
//!
//! # Data path
//!
//! * **Receive:** the thread reads into the stream's input buffer, as much as its read window
//!   says (at most [`EngineConfig::read_buffer`]); a large payload whose header is in is read
//!   straight into its destination, with its trailer and the next header in the same read.
//!   It feeds the stream, and calls [`QpHost::place`] for every
//!   placement before it drains completions (completions come after placement) and events. One
//!   connection reads at most [`EngineConfig::read_budget`] octets per turn before the others get
//!   theirs.
//! * **Transmit:** FPDUs are framed by [`netdirect_wire::mpa::FpduWriter`]. Those with small
//!   payloads (at most 4 KiB) or markers are built in the connection's out buffer and
//!   coalesced (up to 64 KiB per write). Large payloads go out with one vectored write —
//!   pending coalesced bytes, then per FPDU its header, its payload spans straight from
//!   registered memory and its pad and CRC — so the payload is not copied in user space; only
//!   what the kernel did not take is copied into the out buffer, and the connection waits for
//!   `WRITABLE` before it takes the next frame from the stream. Large FPDUs ready together
//!   share that write up to 1 MiB and one more FPDU ([`QpHost::with_payloads`], when their
//!   payloads lie in one buffer): the two 32 KiB FPDUs of a 64 KiB message leave in one
//!   `sendmsg`, as one 64 KiB TCP write would (`Counter::SocketWrites` counts them; measured on
//!   `lo`, pinned: 64 KiB RDMA write and send about a third faster than one write per FPDU).
//! * **FPDU size:** MULPDU is `mpa::mulpdu(mpa::gso_seglen(TCP_MAXSEG))` (one 64 KiB GSO
//!   packet, as siw's `mss × gso_segs`; with markers, one segment) capped at
//!   [`EngineConfig::max_mulpdu`] (the provider setting for hardware peers; what each choice
//!   costs is in [`DEFAULT_MAX_MULPDU`]). A message is cut into equal FPDUs, none over MULPDU,
//!   so no runt follows a run of full ones. `TCP_NODELAY` is set on every connection, as siw
//!   does. A write carries `MSG_MORE` while the stream has another frame ready and the write
//!   is under half the TCP send unit (so small FPDUs, say with a 16 KiB cap, share full GSO
//!   packets); a larger FPDU leaves at once, as holding half a packet back costs the receiver
//!   its head start (measured: RDMA read of 64 KiB, two 32 KiB FPDUs per response, lost a
//!   third of its throughput on `lo` with `MSG_MORE` on every FPDU).
//! * **Memory:** input buffers follow what is in flight (a read window that starts at 4 KiB
//!   and doubles while reads fill it, [`netdirect_wire::mpa::Deframer::read_window`]) and are
//!   given back when the socket is drained and nothing is buffered; out buffers over 8 KiB
//!   are freed when they drain. An idle connection keeps at most a few KiB of buffers.

mod errno;
mod reactor;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{
    self, AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;
use netdirect_proto::handshake::{Handshake, PeerRequest};
use netdirect_proto::stream::{Dest, Event, Host, Payload, PostFlags, Request, WorkCompletion};
use netdirect_types::Status;
use netdirect_types::counters::{Counter, Counters};
use netdirect_wire::mpa;
use socket2::{Domain, Protocol, Socket, Type};

pub use errno::{bind_status, connect_status};
pub use netdirect_proto::handshake::{MpaConfig, Negotiated, ReadLimits};

use reactor::{Cmd, ConnCell};

use crate::counters::{Cells, Registry};

/// What the engine needs from the owner of a connection (the queue pair).
///
/// Every method is called under the connection's lock, on the thread driving the connection
/// (the progress thread, or a consumer posting or polling); the host must not invoke consumer
/// callbacks from inside ([`crate::callback`] defers them). Besides the
/// stream's memory questions ([`Host`]: tagged checks with leases, receives, invalidation), the
/// host gives access to payload bytes for sending and takes placements, completions and events.
pub trait QpHost: Host<Lease: Send> + Send + 'static {
    /// What a post carries to the host besides the request (typically the gather list with its
    /// leases); handed over by [`QpHost::posted`] on the progress thread, before the stream
    /// sees the request.
    type Work: Send + 'static;

    /// A send-queue request `wr` with its `work` is about to be queued in the stream. Send-queue
    /// completions are FIFO: an unsignaled request is finished when a later one completes.
    fn posted(&mut self, wr: u64, work: Self::Work);

    /// Calls `f` once with the bytes of `payload`, as one or more spans in order (one per
    /// gather entry, say), borrowed straight from registered memory.
    fn with_payload<R>(
        &mut self,
        payload: &Payload<Self::Lease>,
        f: impl FnOnce(&[&[u8]]) -> R,
    ) -> R;

    /// Calls `f` once with the bytes of every payload of `payloads`, in order (for each, its
    /// spans in order), borrowed at once so that several FPDUs leave in one vectored write.
    /// `None` (the default) when the host cannot lend them together (say, they lie in different
    /// buffers): the driver then writes them one by one through [`QpHost::with_payload`].
    fn with_payloads<R>(
        &mut self,
        payloads: &[&Payload<Self::Lease>],
        f: impl FnOnce(&[&[&[u8]]]) -> R,
    ) -> Option<R> {
        let _ = (payloads, f);
        None
    }

    /// Places inbound payload `data` at `dest` (already checked by [`Host`]).
    fn place(&mut self, dest: Dest<Self::Lease>, data: &[u8]);

    /// Lends the memory of up to `len` octets at `dest` (a range the stream validated through
    /// [`Host`]) for writing: calls `f` once with its pieces, disjoint and in order, so that a
    /// socket read can land there directly (header-first receive,
    /// [`netdirect_proto::stream::Stream::direct_target`]). The pieces may cover only a prefix
    /// of the range (say, the part in one buffer); they never reach outside it. `None` (the
    /// default) when the host cannot lend the memory: the payload then comes through the
    /// input buffer and [`QpHost::place`].
    fn with_dest_mut<R>(
        &mut self,
        dest: &Dest<Self::Lease>,
        len: usize,
        f: impl FnOnce(&mut [&mut [u8]]) -> R,
    ) -> Option<R> {
        let _ = (dest, len, f);
        None
    }

    /// A work completion, after the placements it covers.
    fn completed(&mut self, completion: WorkCompletion);

    /// A stream event: Terminate sent or received (the connection closes), or the peer closed
    /// (nothing is flushed).
    fn event(&mut self, event: Event);

    /// Carries out local operation `wr` (bind, fast register, invalidate) in queue order.
    fn local(&mut self, wr: u64) -> Status;

    /// The stream was flushed or failed: every send-queue request has its completion. Complete
    /// the posted receives of the QP's own receive queue with `STATUS_CANCELLED`.
    fn flushed(&mut self) {}
}

/// The default cap on MULPDU: none below what MPA's 16-bit length allows, so FPDUs are sized
/// by the connection alone (`mpa::mulpdu(mpa::gso_seglen(TCP_MAXSEG))`: one 64 KiB GSO packet,
/// as siw's `mss × gso_segs`; on `lo` two 32 KiB segments).
///
/// What each choice costs (set it with [`EngineConfig::max_mulpdu`], a provider setting):
///
/// * **64 KiB (default):** for soft peers and Linux siw, which accepts any FPDU up to 65535
///   octets whatever the segmentation (spec/iwarp.md §7.3). Fewest headers, CRCs, writes and
///   reads per MiB (17 FPDUs; one read each with header-first receive); an FPDU spans several
///   wire segments, so a peer that places per segment cannot take it.
/// * **16 KiB (`mpa::mulpdu(16 * 1024, false)`):** Chelsio T6 and other RNICs that take at most
///   16 KiB per FPDU. 4x the FPDUs of the default: about 4x the per-FPDU work on both sides
///   (a header, a CRC, a read), still several FPDUs per TCP segment thanks to `MSG_MORE`.
/// * **MSS-sized (`mpa::mulpdu(1460, false)` on a 1500-MTU link):** RNICs that want every FPDU
///   inside one TCP segment (RFC 5044's FPDU alignment). About 45x the FPDUs of the default:
///   per-FPDU costs dominate and throughput drops accordingly; only for such peers.
pub const DEFAULT_MAX_MULPDU: usize = mpa::MAX_ULPDU;

/// Settings of an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Name of the progress thread.
    pub thread_name: String,
    /// Upper bound on MULPDU (the MSS-derived value is used when smaller).
    pub max_mulpdu: usize,
    /// How long a TCP connect may take before it fails with `STATUS_IO_TIMEOUT`.
    pub connect_timeout: Duration,
    /// How long a disconnect may wait for pending bytes to leave and then for the peer's FIN.
    pub disconnect_timeout: Duration,
    /// Size of the engine's receive buffer.
    pub read_buffer: usize,
    /// Octets one connection may read per turn before other connections are served.
    pub read_budget: usize,
    /// Active side: the least time between the peer's MPA Reply and our first FPDU (posts
    /// made sooner wait in the stream). Linux siw's `siw_accept` sends its Reply *before* it
    /// hooks the socket to the QP (`siw_qp_socket_assoc`, or the RTR upcalls in peer-to-peer
    /// mode); an FPDU that arrives in between is left unread in siw's socket until more data
    /// comes, and a ULP waiting for it stalls for good. Seen against siw in a TCG guest:
    /// 3–6 stalls in 10 connections at 0, none in 16 at 20 ms. Zero turns the hold off.
    pub first_fpdu_delay: Duration,
    /// Header-first receive: an inbound FPDU whose payload still misses at least this many
    /// octets once its header is in is read from the socket straight into its destination
    /// (default [`netdirect_proto::stream::DIRECT_MIN`]); `None` reads everything through the
    /// input buffer. Ignored when the peer inserts markers.
    pub direct_min: Option<usize>,
    /// Consumer-driven progress (default on): a post is sent from the posting thread when the
    /// connection is free, and a poll of an empty CQ runs a non-blocking receive pass over the
    /// connections that complete there (see the module docs). Off: every post and every byte
    /// goes through the progress thread. The default can be turned off for a whole process with
    /// the environment variable `NETDIRECT_INLINE_PROGRESS=0` (test matrices).
    pub inline_progress: bool,
    /// Inline progress: how long after a consumer's last progress pass its connection's
    /// arrivals stay its business. Meanwhile the progress thread is not woken by them (the
    /// socket is registered for writability only); it takes the receive side back from a
    /// consumer that stopped polling. It looks `poll_lease` after a lease is taken, then at
    /// doubling intervals of up to 4 `poll_lease` while the consumers keep polling (each look
    /// is a wakeup, on the very CPU of a pinned consumer), so a consumer that stops polling
    /// without blocking has its arrivals taken back within 5 `poll_lease` of its last poll
    /// (5 ms by default). A consumer that blocks in [`crate::cq::Cq::wait`] gives them back
    /// at once. A connection without work for two `poll_lease` periods leaves its CQs' active
    /// lists and gives its lease back too (see [`crate::cq`]).
    pub poll_lease: Duration,
    /// Progress threads of the engine (default 1; 0 counts as 1). Each is a reactor of its
    /// own (a `mio` poll, waker, timer heap, work and command queues); a connection is placed
    /// on the least loaded one when it is made (connect or accept) and stays there, listeners
    /// live on the first. More threads spread the automatic progress (targets nobody polls,
    /// sends that hit `EAGAIN`, handshakes) over cores; consumer-driven progress does not need
    /// them. The default can be changed for a whole process with the environment variable
    /// `NETDIRECT_PROGRESS_THREADS` (test matrices).
    pub progress_threads: usize,
    /// How long a progress thread keeps looking for input after it last read some, instead of
    /// sleeping at once (default 50 µs; zero: sleep at once). It serves what no consumer polls
    /// for, such as RDMA reads of a target that never polls: their requests come a round trip
    /// apart, and a thread asleep must first be woken. Measured (pinned, loopback): 64-octet
    /// reads from such a target ran at about half the rate of a polled one, and a read round
    /// trip took 28-41 µs instead of 11-15. The thread yields the CPU between looks, so a
    /// consumer that shares it runs; polls of a consumer's own connections do not start it.
    pub progress_spin: Duration,
    /// Publish the adapter's counters for other processes (`nd stat`): a thread writes them
    /// every 500 ms to a file in [`netdirect::counters::publish_dir`] and removes it when the
    /// adapter closes (see [`crate::counters`]). Off by default; the environment variable
    /// `NETDIRECT_PUBLISH_COUNTERS=1` turns it on for a whole process.
    pub publish_counters: bool,
    /// Capture every connection's bytes, both directions, into this pcap file (see
    /// [`crate::capture`]; `nd --pcap FILE`). `None` (the default): the data path pays one
    /// branch per read and write.
    pub capture: Option<std::sync::Arc<crate::capture::Capture>>,
    /// The TCP congestion control of connections whose peer is a loopback address
    /// (`TCP_CONGESTION` on the socket); `None` keeps the system's default, as every other
    /// connection does. Default `cubic`: a loopback path has no congestion to probe, and a
    /// pacing algorithm only throttles it. With the system's `bbr` here, loopback throughput
    /// sat for seconds at a time at the rate of its pacing (segments evenly 30-50 µs apart):
    /// RDMA read 4 MiB 6.1-6.6 GB/s against 8.4-9.2 with `cubic`, write 1 MiB 6.5-9.6 against
    /// 8.5-11.2. If the name is not allowed (`net.ipv4.tcp_allowed_congestion_control`), the
    /// default stays. The environment variable `NETDIRECT_LOOPBACK_CC` sets it for a whole
    /// process (`system` keeps the default).
    pub loopback_congestion_control: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            thread_name: "netdirect-soft".into(),
            max_mulpdu: DEFAULT_MAX_MULPDU,
            connect_timeout: Duration::from_secs(20),
            disconnect_timeout: Duration::from_secs(5),
            read_buffer: 256 * 1024,
            read_budget: 4 * 1024 * 1024,
            first_fpdu_delay: Duration::from_millis(20),
            direct_min: Some(netdirect_proto::stream::DIRECT_MIN),
            poll_lease: Duration::from_millis(1),
            inline_progress: std::env::var("NETDIRECT_INLINE_PROGRESS").map_or(true, |v| v != "0"),
            progress_threads: std::env::var("NETDIRECT_PROGRESS_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            progress_spin: Duration::from_micros(50),
            publish_counters: std::env::var("NETDIRECT_PUBLISH_COUNTERS").is_ok_and(|v| v == "1"),
            capture: None,
            loopback_congestion_control: match std::env::var("NETDIRECT_LOOPBACK_CC") {
                Ok(v) if v == "system" || v.is_empty() => None,
                Ok(v) => Some(v),
                Err(_) => Some("cubic".into()),
            },
        }
    }
}

/// MPA settings for NDK semantics: [`MpaConfig::default`] (revision 2, siw's limits) with
/// peer-to-peer mode offering a zero-length RDMA Write or Read as ready-to-receive message, so
/// that [`Connection::complete`] always sends a first FPDU and the passive side's accept
/// completes even when the active side waits for the passive side to speak.
pub fn ndk_mpa_config() -> MpaConfig {
    MpaConfig {
        peer_to_peer: Some(mpa::Rtr {
            send: false,
            write: true,
            read: true,
        }),
        ..MpaConfig::default()
    }
}

/// Why a connect failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("connect failed: {status}")]
pub struct ConnectError {
    /// The NTSTATUS (see the table in the module docs).
    pub status: Status,
    /// The private data of a peer that rejected the connection.
    pub private_data: Vec<u8>,
}

impl ConnectError {
    fn new(status: Status) -> Self {
        ConnectError {
            status,
            private_data: Vec::new(),
        }
    }
}

/// Completion of a connect: the peer accepted (complete or reject next) or the error.
pub type ConnectCallback = Box<dyn FnOnce(Result<Negotiated, ConnectError>) + Send>;
/// Completion of an accept, complete-connect or disconnect.
pub type StatusCallback = Box<dyn FnOnce(Status) + Send>;

/// Where a connection is, as seen by consumer threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnState {
    /// TCP connect or MPA handshake in progress; or (passive) waiting for accept/reject.
    Connecting = 0,
    /// Active side: the peer accepted; waiting for [`Connection::complete`] or reject.
    Replied = 1,
    /// Passive side: accepted; waiting for the initiator's first FPDU.
    Accepting = 2,
    /// Established.
    Connected = 3,
    /// The peer closed its side; posts still queue (nothing is flushed until disconnect).
    PeerClosed = 4,
    /// The stream failed or was flushed; posts complete `STATUS_CANCELLED`.
    Error = 5,
    /// Disconnected, rejected or failed: posts fail inline.
    Closed = 6,
}

impl ConnState {
    fn from_u8(v: u8) -> ConnState {
        match v {
            0 => ConnState::Connecting,
            1 => ConnState::Replied,
            2 => ConnState::Accepting,
            3 => ConnState::Connected,
            4 => ConnState::PeerClosed,
            5 => ConnState::Error,
            _ => ConnState::Closed,
        }
    }
}

/// Connection state shared between the handle and the progress thread.
#[derive(Debug)]
pub(crate) struct ConnShared {
    id: usize,
    state: AtomicU8,
    ord: AtomicU16,
    local: SocketAddr,
    peer: SocketAddr,
    /// The connection's (its QP's) counters; the stream counts into them too.
    pub(crate) counters: Arc<Cells>,
    /// The adapter's counters, which keep these once the connection is gone.
    registry: Arc<Registry>,
}

impl Drop for ConnShared {
    fn drop(&mut self) {
        self.registry.retire(&self.counters);
    }
}

impl ConnShared {
    fn new(
        id: usize,
        local: SocketAddr,
        peer: SocketAddr,
        registry: &Arc<Registry>,
    ) -> Arc<ConnShared> {
        Arc::new(ConnShared {
            id,
            state: AtomicU8::new(ConnState::Connecting as u8),
            ord: AtomicU16::new(0),
            local,
            peer,
            counters: registry.register(),
            registry: registry.clone(),
        })
    }

    /// Counts what a state change means: an established connection (`Connect` on the active
    /// side, which came from `Replied`; `Accept` on the passive side) and `ActiveConnection`.
    fn count_transition(&self, from: u8, to: ConnState) {
        let live = |s: u8| s == ConnState::Connected as u8 || s == ConnState::PeerClosed as u8;
        if to == ConnState::Connected && !live(from) {
            let c = if from == ConnState::Replied as u8 {
                Counter::Connect
            } else {
                Counter::Accept
            };
            self.counters.add(c, 1);
            self.counters.add(Counter::ActiveConnection, 1);
        } else if live(from) && matches!(to, ConnState::Error | ConnState::Closed) {
            self.counters.sub(Counter::ActiveConnection, 1);
        }
    }

    pub(crate) fn state(&self) -> ConnState {
        ConnState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Moves to `to` unless the connection is already closed (closed is final).
    pub(crate) fn set_state(&self, to: ConnState) {
        if let Ok(from) = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s != ConnState::Closed as u8).then_some(to as u8)
            })
        {
            self.count_transition(from, to);
        }
    }
}

/// One reactor (progress thread) of an engine: the part consumer threads share with it.
pub(crate) struct Inner<H: QpHost> {
    /// The progress thread's registry, for consumers that take or give back a connection's
    /// receive side.
    registry: mio::Registry,
    /// Origin of [`Inner::stamp`].
    epoch: Instant,
    cmds: SegQueue<Cmd<H>>,
    /// Connections handed to the progress thread by consumer threads.
    work: SegQueue<Arc<ConnCell<H>>>,
    waker: mio::Waker,
    sleeping: AtomicBool,
    /// The waker was written and the progress thread has not woken since: at most one wake
    /// per batch.
    wake_pending: AtomicBool,
    /// Times the progress thread woke from a wait (relaxed; for measurements).
    wakeups: Arc<AtomicU64>,
    stop: AtomicBool,
    closed: AtomicBool,
    /// Ids of connections and listeners (tokens), unique in the engine.
    next_id: Arc<AtomicU64>,
    /// Connections placed on this reactor and not yet removed (for placement).
    load: AtomicUsize,
    config: EngineConfig,
    /// The adapter's `tracing` span, parent of every connection's.
    span: tracing::Span,
}

impl<H: QpHost> Inner<H> {
    /// Nanoseconds since the engine started (for consumers' poll times).
    fn stamp(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn id(&self) -> usize {
        self.next_id.fetch_add(1, Ordering::Relaxed) as usize
    }

    /// Queues a command and wakes the progress thread if it sleeps. Once the engine is gone the
    /// command is failed here (its callbacks run with `STATUS_CANCELLED`).
    fn send(&self, cmd: Cmd<H>) {
        self.cmds.push(cmd);
        atomic::fence(Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.drain_failed();
        } else {
            self.wake();
        }
    }

    /// Wakes the progress thread if it sleeps and no wake is pending (call after queueing).
    fn wake(&self) {
        atomic::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) && !self.wake_pending.swap(true, Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }

    fn drain_failed(&self) {
        while let Some(cmd) = self.cmds.pop() {
            cmd.fail();
        }
    }

    /// A connection placed here left the reactor.
    fn unload(&self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The reactors of one engine. The first also serves the listeners.
pub(crate) struct Pool<H: QpHost> {
    reactors: Vec<Arc<Inner<H>>>,
    /// The counters of the engine's connections.
    pub(crate) counters: Arc<Registry>,
    /// Where the next placement starts looking (ties go round the reactors).
    cursor: AtomicUsize,
}

/// An engine's counters: its connections' and its progress threads' wakeups (zero, like every
/// counter, in a build without the `counters` feature; [`Engine::wakeups`] still counts).
fn counters_of(registry: &Registry, wakeups: &[Arc<AtomicU64>]) -> Counters {
    let mut c = registry.snapshot();
    if !crate::counters::COUNTING {
        return c;
    }
    let sum = wakeups.iter().map(|w| w.load(Ordering::Relaxed)).sum();
    c.set(Counter::ProgressWakeups, sum);
    c
}

impl<H: QpHost> Pool<H> {
    fn counters(&self) -> Counters {
        let wakeups: Vec<_> = self.reactors.iter().map(|r| r.wakeups.clone()).collect();
        counters_of(&self.counters, &wakeups)
    }

    /// The reactor a new connection goes to: the one with the fewest connections, ties in
    /// turn. The connection counts from now on.
    fn place(&self) -> &Arc<Inner<H>> {
        let n = self.reactors.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        let best = (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&i| self.reactors[i].load.load(Ordering::Relaxed))
            .unwrap_or(0);
        let inner = &self.reactors[best];
        inner.load.fetch_add(1, Ordering::Relaxed);
        inner
    }

    /// The reactor of the listeners.
    fn first(&self) -> &Arc<Inner<H>> {
        &self.reactors[0]
    }
}

/// The progress threads and the sockets of one adapter, for connections driven for hosts `H`.
pub struct Engine<H: QpHost> {
    pool: Arc<Pool<H>>,
    threads: Vec<JoinHandle<()>>,
}

impl<H: QpHost> std::fmt::Debug for Engine<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("thread", &self.config().thread_name)
            .field("progress_threads", &self.pool.reactors.len())
            .finish_non_exhaustive()
    }
}

/// What [`Engine::connect`] needs.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    /// Local address to bind (port 0: ephemeral); `None`: chosen by the routing table.
    pub local: Option<SocketAddr>,
    /// The peer's listener.
    pub remote: SocketAddr,
    /// MPA settings ([`ndk_mpa_config`] for NDK semantics).
    pub config: MpaConfig,
    /// Requested IRD/ORD (capped at 14 bits).
    pub limits: ReadLimits,
    /// Private data for the Request (at most 508 octets; Linux peers take 252).
    pub private_data: Vec<u8>,
}

const MAX_PRIVATE_DATA: usize = mpa::MAX_PRIVATE_DATA - mpa::ENHANCED_LEN;

fn cap_limits(l: ReadLimits) -> ReadLimits {
    ReadLimits {
        ird: l.ird.min(mpa::MAX_IRD_ORD),
        ord: l.ord.min(mpa::MAX_IRD_ORD),
    }
}

impl<H: QpHost> Engine<H> {
    /// Starts the progress threads ([`EngineConfig::progress_threads`]).
    pub fn new(config: EngineConfig) -> Result<Engine<H>, Status> {
        let span = tracing::info_span!("engine", name = %config.thread_name);
        Self::with_span(config, span)
    }

    /// [`Engine::new`] with the `tracing` span its connections' spans and events go under (an
    /// adapter's).
    pub fn with_span(config: EngineConfig, span: tracing::Span) -> Result<Engine<H>, Status> {
        let epoch = Instant::now();
        let next_id = Arc::new(AtomicU64::new(1));
        let mut reactors = Vec::new();
        let mut polls = Vec::new();
        for _ in 0..config.progress_threads.max(1) {
            let poll = mio::Poll::new().map_err(|_| Status::INSUFFICIENT_RESOURCES)?;
            let waker = mio::Waker::new(poll.registry(), reactor::WAKER)
                .map_err(|_| Status::INSUFFICIENT_RESOURCES)?;
            let registry = poll
                .registry()
                .try_clone()
                .map_err(|_| Status::INSUFFICIENT_RESOURCES)?;
            reactors.push(Arc::new(Inner {
                registry,
                epoch,
                cmds: SegQueue::new(),
                work: SegQueue::new(),
                waker,
                sleeping: AtomicBool::new(false),
                wake_pending: AtomicBool::new(false),
                wakeups: Arc::default(),
                stop: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                next_id: next_id.clone(),
                load: AtomicUsize::new(0),
                config: config.clone(),
                span: span.clone(),
            }));
            polls.push(poll);
        }
        let pool = Arc::new(Pool {
            reactors,
            counters: Arc::default(),
            cursor: AtomicUsize::new(0),
        });
        let mut engine = Engine {
            pool: pool.clone(),
            threads: Vec::new(),
        };
        for (i, poll) in polls.into_iter().enumerate() {
            let r = reactor::Reactor::new(pool.clone(), i, poll);
            let name = match i {
                0 => config.thread_name.clone(),
                i => format!("{} {i}", config.thread_name),
            };
            // On failure, dropping the engine stops the threads already started.
            let thread = std::thread::Builder::new()
                .name(name)
                .spawn(move || r.run())
                .map_err(|_| Status::INSUFFICIENT_RESOURCES)?;
            engine.threads.push(thread);
        }
        Ok(engine)
    }

    /// Listens on `addr` (port 0: ephemeral). Each valid MPA Request calls `on_request` on the
    /// progress thread with an [`Incoming`] to accept or reject. `config` is the responder's
    /// MPA configuration for every connection of this listener.
    pub fn listen(
        &self,
        addr: SocketAddr,
        config: MpaConfig,
        on_request: impl FnMut(Incoming<H>) + Send + 'static,
    ) -> Result<Listener<H>, Status> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| bind_status(&e))?;
        socket
            .set_reuse_address(true)
            .map_err(|e| bind_status(&e))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true).map_err(|e| bind_status(&e))?;
        }
        socket.bind(&addr.into()).map_err(|e| bind_status(&e))?;
        socket.listen(1024).map_err(|e| bind_status(&e))?;
        socket.set_nonblocking(true).map_err(|e| bind_status(&e))?;
        let local = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or(Status::INVALID_ADDRESS)?;
        let listener = mio::net::TcpListener::from_std(socket.into());
        let inner = self.pool.first();
        let id = inner.id();
        let paused = Arc::new(AtomicBool::new(false));
        let error = Arc::new(AtomicU32::new(0));
        inner.send(Cmd::Listen {
            id,
            listener,
            config,
            paused: paused.clone(),
            error: error.clone(),
            on_request: Box::new(on_request),
        });
        Ok(Listener {
            inner: inner.clone(),
            id,
            local,
            paused,
            error,
        })
    }

    /// Connects to `params.remote` and runs the MPA initiator handshake for `host`.
    ///
    /// Fails inline for what the local stack knows at once (bind errors, a refused loopback
    /// connect, a duplicate 4-tuple, private data over 508 octets); otherwise `on_done` reports
    /// the peer's acceptance ([`Negotiated`]; call [`Connection::complete`] or
    /// [`Connection::reject`] next) or the failure.
    pub fn connect(
        &self,
        params: ConnectParams,
        host: H,
        on_done: impl FnOnce(Result<Negotiated, ConnectError>) + Send + 'static,
    ) -> Result<Connection<H>, Status> {
        let remote = params.remote;
        let r = self.connect_now(params, host, on_done);
        if let Err(status) = &r {
            let span = &self.pool.first().span;
            tracing::info!(parent: span, %remote, status = %status, "connect failed inline");
        }
        r
    }

    fn connect_now(
        &self,
        params: ConnectParams,
        host: H,
        on_done: impl FnOnce(Result<Negotiated, ConnectError>) + Send + 'static,
    ) -> Result<Connection<H>, Status> {
        let ConnectParams {
            local,
            remote,
            config,
            limits,
            private_data,
        } = params;
        if private_data.len() > MAX_PRIVATE_DATA {
            return Err(Status::INVALID_BUFFER_SIZE);
        }
        if local.is_some_and(|l| l.is_ipv4() != remote.is_ipv4()) {
            return Err(Status::INVALID_ADDRESS);
        }
        let hs = Handshake::initiator(config, cap_limits(limits), &private_data, Instant::now())
            .map_err(|e| errno::handshake_status(&e))?;
        let socket = Socket::new(
            Domain::for_address(remote),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .map_err(|e| connect_status(&e, false))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| connect_status(&e, false))?;
        let _ = socket.set_nodelay(true);
        choose_congestion_control(
            socket2::SockRef::from(&socket),
            remote.ip(),
            &self.pool.first().config,
        );
        let explicit_port = local.is_some_and(|l| l.port() != 0);
        if let Some(l) = local {
            socket
                .set_reuse_address(true)
                .map_err(|e| bind_status(&e))?;
            socket.bind(&l.into()).map_err(|e| bind_status(&e))?;
        }
        let connected_now = match socket.connect(&remote.into()) {
            Ok(()) => true,
            Err(e)
                if e.raw_os_error() == Some(115) || e.kind() == std::io::ErrorKind::WouldBlock =>
            {
                false
            }
            Err(e) => return Err(connect_status(&e, explicit_port)),
        };
        let local_addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(remote);
        let sock = mio::net::TcpStream::from_std(socket.into());
        let inner = self.pool.place();
        let shared = ConnShared::new(inner.id(), local_addr, remote, &self.pool.counters);
        let phase = reactor::Phase::TcpConnecting {
            hs,
            explicit_port,
            on_connect: None,
        };
        let conn = reactor::Conn::new(shared, sock, phase, inner);
        let cell = ConnCell::new(inner.clone(), conn);
        inner.send(Cmd::Connect {
            cell: cell.clone(),
            host,
            connected_now,
            on_done: Box::new(on_done),
        });
        Ok(Connection { cell })
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.pool.first().config
    }

    /// How many times the progress threads woke from a wait so far (readiness, a timer, or a
    /// consumer handing them work), all together. A relaxed counter, for measurements.
    pub fn wakeups(&self) -> u64 {
        self.wakeups_per_thread().iter().sum()
    }

    /// The counters of every connection the engine had (closed ones included), with the
    /// progress threads' wakeups.
    pub fn counters(&self) -> Counters {
        self.pool.counters()
    }

    /// What answers [`Engine::counters`] without keeping the engine's threads: for a
    /// publisher or an extension interface that may outlive the adapter.
    pub fn counter_source(&self) -> impl Fn() -> Counters + Send + Sync + 'static {
        // Not the pool: it holds the reactors' polls and wakers (file descriptors).
        let registry = self.pool.counters.clone();
        let wakeups: Vec<_> = self
            .pool
            .reactors
            .iter()
            .map(|r| r.wakeups.clone())
            .collect();
        move || counters_of(&registry, &wakeups)
    }

    /// [`Engine::wakeups`] of each progress thread, in order.
    pub fn wakeups_per_thread(&self) -> Vec<u64> {
        self.pool
            .reactors
            .iter()
            .map(|r| r.wakeups.load(Ordering::Relaxed))
            .collect()
    }

    /// How many connections each progress thread serves (placed and not yet closed and
    /// released), in order. A relaxed snapshot, for measurements and tests.
    pub fn connections_per_thread(&self) -> Vec<usize> {
        self.pool
            .reactors
            .iter()
            .map(|r| r.load.load(Ordering::Relaxed))
            .collect()
    }
}

impl<H: QpHost> Drop for Engine<H> {
    /// Stops the progress thread and joins it: every connection is flushed (completions
    /// `STATUS_CANCELLED`, then [`QpHost::flushed`]) and closed, every listener closed, every
    /// pending callback called with `STATUS_CANCELLED`.
    fn drop(&mut self) {
        for r in &self.pool.reactors {
            r.stop.store(true, Ordering::SeqCst);
            let _ = r.waker.wake();
        }
        for t in self.threads.drain(..) {
            // The last handle can go on a progress thread itself (a callback that held the
            // adapter was dropped there): then that thread winds down on its own once the
            // current callback returns; joining it would deadlock.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        for r in &self.pool.reactors {
            r.closed.store(true, Ordering::SeqCst);
            r.drain_failed();
        }
    }
}

/// A listening socket. Dropping it closes the socket; connections already handed out as
/// [`Incoming`] are not affected, handshakes still waiting for their Request are closed.
pub struct Listener<H: QpHost> {
    inner: Arc<Inner<H>>,
    id: usize,
    local: SocketAddr,
    paused: Arc<AtomicBool>,
    error: Arc<AtomicU32>,
}

impl<H: QpHost> std::fmt::Debug for Listener<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local", &self.local)
            .field("paused", &self.paused.load(Ordering::Relaxed))
            .finish()
    }
}

impl<H: QpHost> Listener<H> {
    /// The bound address (the ephemeral port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Pauses (`true`) or resumes connect events (NdkControlConnectEvents). While paused, every
    /// new Request is rejected (an MPA Reply with R set and no private data).
    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }

    /// `STATUS_INSUFFICIENT_RESOURCES` when an incoming connection was refused for lack of
    /// resources (descriptors) since the last call, and clears it. Such a connection is reset
    /// at once (its initiator's connect fails `STATUS_CONNECTION_REFUSED`) instead of waiting
    /// in the backlog; accepting resumes by itself when descriptors are free again.
    pub fn take_error(&self) -> Option<Status> {
        match self.error.swap(0, Ordering::AcqRel) {
            0 => None,
            s => Some(Status(s)),
        }
    }

    /// Closes the socket; `on_closed` runs (on the progress thread, or here once the engine is
    /// gone) when it is closed, so that the port is free for a new listen when it runs.
    pub fn close(mut self, on_closed: impl FnOnce() + Send + 'static) {
        let id = std::mem::take(&mut self.id);
        self.inner.send(Cmd::CloseListener {
            id,
            on_closed: Some(Box::new(on_closed)),
        });
    }
}

impl<H: QpHost> Drop for Listener<H> {
    fn drop(&mut self) {
        // Id 0 is no listener's (ids start at 1): [`Listener::close`] sent the command already.
        if self.id != 0 {
            self.inner.send(Cmd::CloseListener {
                id: self.id,
                on_closed: None,
            });
        }
    }
}

/// An incoming connection whose MPA Request has been parsed (the NDK connect event). Accept or
/// reject it; dropping it rejects it.
pub struct Incoming<H: QpHost> {
    cell: Arc<ConnCell<H>>,
    request: PeerRequest,
    decided: bool,
}

impl<H: QpHost> std::fmt::Debug for Incoming<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("peer", &self.cell.shared.peer)
            .field("local", &self.cell.shared.local)
            .field("request", &self.request)
            .finish()
    }
}

impl<H: QpHost> Incoming<H> {
    /// The initiator's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.cell.shared.peer
    }

    /// Our address of this connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.cell.shared.local
    }

    /// The Request: private data, IRD/ORD (revision 2), CRC/marker wishes, RTR offer.
    pub fn request(&self) -> &PeerRequest {
        &self.request
    }

    /// Accepts with our `limits` (capped by the initiator's, NDK §7.6) and `private_data`, for
    /// `host`. The Reply goes out at once; `on_done` runs with `STATUS_SUCCESS` when the
    /// initiator's RTR has arrived (peer-to-peer mode) or, without RTR, once the Reply is queued
    /// (the module docs say why), or with `STATUS_CONNECTION_ABORTED` when the initiator went
    /// away, rejected or terminated first.
    pub fn accept(
        mut self,
        limits: ReadLimits,
        private_data: &[u8],
        host: H,
        on_done: impl FnOnce(Status) + Send + 'static,
    ) -> Result<Connection<H>, Status> {
        if private_data.len() > MAX_PRIVATE_DATA {
            return Err(Status::INVALID_BUFFER_SIZE);
        }
        self.decided = true;
        self.cell.shared.set_state(ConnState::Accepting);
        self.cell.inner.send(Cmd::Accept {
            id: self.cell.shared.id,
            limits: cap_limits(limits),
            private_data: private_data.to_vec(),
            host,
            on_done: Box::new(on_done),
        });
        Ok(Connection {
            cell: self.cell.clone(),
        })
    }

    /// Rejects with `private_data` (an MPA Reply with R set), then closes.
    pub fn reject(mut self, private_data: &[u8]) -> Result<(), Status> {
        if private_data.len() > MAX_PRIVATE_DATA {
            return Err(Status::INVALID_BUFFER_SIZE);
        }
        self.decided = true;
        self.cell.shared.set_state(ConnState::Closed);
        self.cell.inner.send(Cmd::Reject {
            id: self.cell.shared.id,
            private_data: private_data.to_vec(),
        });
        Ok(())
    }
}

impl<H: QpHost> Drop for Incoming<H> {
    fn drop(&mut self) {
        if !self.decided {
            self.cell.shared.set_state(ConnState::Closed);
            self.cell.inner.send(Cmd::Reject {
                id: self.cell.shared.id,
                private_data: Vec::new(),
            });
        }
    }
}

/// One connection (the connector and the QP's transport). Dropping it disconnects (and
/// flushes) if that was not done.
pub struct Connection<H: QpHost> {
    cell: Arc<ConnCell<H>>,
}

impl<H: QpHost> std::fmt::Debug for Connection<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("local", &self.cell.shared.local)
            .field("peer", &self.cell.shared.peer)
            .field("state", &self.cell.shared.state())
            .finish()
    }
}

impl<H: QpHost> Connection<H> {
    /// Our address.
    pub fn local_addr(&self) -> SocketAddr {
        self.cell.shared.local
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.cell.shared.peer
    }

    /// The connection's counters (its QP's).
    pub fn counters(&self) -> Counters {
        self.cell.shared.counters.snapshot()
    }

    /// Where the connection is.
    pub fn state(&self) -> ConnState {
        self.cell.shared.state()
    }

    /// Active side, after the connect completed: starts the stream (its first FPDU completes
    /// the passive side's accept). `on_done` gets `STATUS_SUCCESS`, `STATUS_CONNECTION_ABORTED`
    /// when the peer went away meanwhile, or `STATUS_CONNECTION_INVALID` in the wrong state.
    pub fn complete(&self, on_done: impl FnOnce(Status) + Send + 'static) {
        self.cell.inner.send(Cmd::Complete {
            id: self.cell.shared.id,
            on_done: Box::new(on_done),
        });
    }

    /// Active side, after the connect completed: refuses the connection instead of completing
    /// it. Sends a Terminate (LLP local catastrophic) and closes.
    pub fn reject(&self) {
        self.cell.shared.set_state(ConnState::Closed);
        self.cell.inner.send(Cmd::Abandon {
            id: self.cell.shared.id,
        });
    }

    /// Queues send-queue request `wr` (its bytes and leases in `work`, handed to
    /// [`QpHost::posted`]) and hands it, with every request deferred before it, to whoever
    /// sends: this thread when the connection is free (inline progress), else its lock holder
    /// or the progress thread. Fails inline with `STATUS_CONNECTION_INVALID` unless connected
    /// (or peer-closed), and with `STATUS_INSUFFICIENT_RESOURCES` for a read when the
    /// negotiated ORD is 0.
    pub fn post(
        &self,
        wr: u64,
        work: H::Work,
        request: Request,
        flags: PostFlags,
    ) -> Result<(), Status> {
        self.post_with(wr, work, request, flags, false)
    }

    /// [`Connection::post`] for a request the consumer marked deferred (NDK
    /// `NDK_OP_FLAG_DEFER`, §7.1): with inline progress it waits in the connection's queue until
    /// a request without the mark ([`Connection::post`]), [`Connection::ring`], a progress pass
    /// (a poll of the QP's CQ), a flush or a disconnect takes it, so that a chain of posts leaves
    /// in one write. Without inline progress it is handed over at once.
    pub fn post_deferred(
        &self,
        wr: u64,
        work: H::Work,
        request: Request,
        flags: PostFlags,
    ) -> Result<(), Status> {
        self.post_with(wr, work, request, flags, true)
    }

    fn post_with(
        &self,
        wr: u64,
        work: H::Work,
        request: Request,
        flags: PostFlags,
        defer: bool,
    ) -> Result<(), Status> {
        match self.cell.shared.state() {
            ConnState::Connected | ConnState::PeerClosed => {}
            _ => return Err(Status::CONNECTION_INVALID),
        }
        if matches!(request, Request::Read { .. })
            && self.cell.shared.ord.load(Ordering::Acquire) == 0
        {
            return Err(Status::INSUFFICIENT_RESOURCES);
        }
        self.cell.post(
            reactor::PostItem {
                wr,
                work,
                request,
                flags,
            },
            defer,
        );
        Ok(())
    }

    /// Hands every deferred request over now (the doorbell; NDK §7.1's provider rule when a
    /// post fails inline).
    pub fn ring(&self) {
        self.cell.ring();
    }

    /// One non-blocking progress pass from the consumer's thread (what a poll of an empty CQ
    /// runs): sends and reads what the socket allows, places, completes. Does nothing when the
    /// connection is busy on another thread, or with [`EngineConfig::inline_progress`] off.
    pub fn progress(&self) {
        self.cell.progress_pass(Instant::now());
    }

    /// The connection as a [`crate::cq::Poller`], for the CQs its completions go to.
    pub fn poller(&self) -> std::sync::Weak<dyn crate::cq::Poller> {
        let weak: std::sync::Weak<ConnCell<H>> = Arc::downgrade(&self.cell);
        weak
    }

    /// Makes the connection a poller of `cqs` (the CQs its completions go to, each once): a
    /// poll that finds one of them empty visits the connection while it has work
    /// ([`crate::cq::Cq::add_poller`]). Once per connection (a QP serves one).
    pub fn poll_through(&self, cqs: &[&crate::cq::Cq]) {
        let entries = cqs.iter().map(|cq| cq.add_poller(self.poller())).collect();
        self.cell.join_cqs(entries);
    }

    /// NdkFlush: every pending request completes `STATUS_CANCELLED` and the stream stops (the
    /// TCP connection stays until [`Connection::disconnect`]).
    pub fn flush(&self) {
        self.cell.inner.send(Cmd::Flush {
            id: self.cell.shared.id,
        });
    }

    /// Graceful disconnect: FIN after the FPDU in progress, then the flush. `on_done` gets
    /// `STATUS_SUCCESS`, or `STATUS_IO_TIMEOUT` when pending bytes could not leave in
    /// [`EngineConfig::disconnect_timeout`] (the connection is then reset).
    pub fn disconnect(&self, on_done: impl FnOnce(Status) + Send + 'static) {
        self.cell.shared.set_state(ConnState::Closed);
        self.cell.inner.send(Cmd::Disconnect {
            id: self.cell.shared.id,
            on_done: Some(Box::new(on_done)),
        });
    }
}

impl<H: QpHost> Drop for Connection<H> {
    fn drop(&mut self) {
        self.cell.shared.set_state(ConnState::Closed);
        self.cell.inner.send(Cmd::Disconnect {
            id: self.cell.shared.id,
            on_done: None,
        });
    }
}

/// Sets [`EngineConfig::loopback_congestion_control`] on a connection's socket when its peer is
/// a loopback address (before the first byte of the connection's stream). Best effort: a name
/// the system does not allow leaves its default. Public so that a benchmark's TCP peer runs
/// with the same congestion control as the connections it is compared with (`nd bench`).
pub fn choose_congestion_control(
    socket: socket2::SockRef<'_>,
    peer: std::net::IpAddr,
    config: &EngineConfig,
) {
    let Some(name) = config.loopback_congestion_control.as_deref() else {
        return;
    };
    if !peer.to_canonical().is_loopback() {
        return;
    }
    if let Err(e) = socket.set_tcp_congestion(name.as_bytes()) {
        tracing::debug!(%peer, congestion_control = name, error = %e, "kept the system's congestion control");
    }
}
