//! A software iWARP RNIC: the netdirect provider that speaks MPA/DDP/RDMAP over TCP.
//!
//! [`SoftProvider`] implements the NDK object model ([`netdirect`]) on any Linux machine. Its
//! wire is standard iWARP, so the peer can be another netdirect, Linux's kernel soft-iWARP
//! (`siw`) or an iWARP RNIC, over IPv4 or IPv6.
//!
//! # Layers
//!
//! | module | what |
//! |---|---|
//! | [`objects`] | the NDK objects (adapter, PD, CQ, SRQ, QP, MR, MW, connector, listener, shared endpoint) |
//! | [`memory`] | the adapter's memory table: regions, windows, LAMs, tokens, local and remote checks, leases |
//! | [`cq`], [`srq`] | completion ring with the NDK arming rules; shared receive queue with its threshold |
//! | [`transport`] | TCP sockets, MPA handshakes, RDMAP streams ([`netdirect_proto`]): driven from the consumers' threads (posts, CQ polls) and one progress thread per adapter |
//! | [`dma`] | optional placement through a NetDMA channel ([`Placement`]) |
//!
//! # Threading and lock order
//!
//! * **Run to completion** ([`transport::EngineConfig::inline_progress`], on by default). Each
//!   connection's state (socket, handshake, stream, the QP's engine-side host
//!   [`objects::qp::SoftHost`]) sits behind **its own lock**; whichever thread holds it drives
//!   the connection. A post queues the request on its connection and, when the lock is free,
//!   sends it from the posting thread at once (a try-lock; on contention the holder takes it
//!   after releasing the lock, on `EAGAIN` the progress thread finishes it when the socket is
//!   writable). A poll of an empty CQ ([`cq::Cq::get_results`]) runs a non-blocking pass over
//!   the connections whose completions go to that CQ (try-lock each, non-blocking reads and
//!   sends, placement, completions), as libfabric's `fi_cq_read` does. Nothing on that path
//!   wakes another thread.
//! * **One progress thread per adapter** still makes progress that nobody polls for, so
//!   progress stays automatic as on hardware: a target that never polls serves RDMA reads and
//!   writes; connection management, timers, sends that hit `EAGAIN`, peers' closes. It sleeps
//!   in `epoll_wait` while no connection has work for it and is woken by readiness, a timer, or
//!   a consumer handing it a connection (at most one eventfd write per batch: a "wake pending"
//!   flag). A consumer that polls **leases** its connection's arrivals: the socket is then
//!   registered for writability only, so arrivals do not wake the progress thread; it takes
//!   them back when the consumer has not polled for [`transport::EngineConfig::poll_lease`]
//!   (1 ms), or at once when the consumer blocks in [`cq::Cq::wait`]. Its work per wakeup is
//!   proportional to the connections that have work (ready sockets, handed-over connections,
//!   due timers in a heap, leases), never a scan of every connection.
//!   [`SoftAdapter::progress_wakeups`] counts its wakeups.
//! * Nothing on the data path is shared by all QPs of an adapter: posts and passes of different
//!   QPs run in parallel on their consumers' threads (the memory table is a read lock for SGE
//!   checks). The progress thread is one per adapter today; the per-connection locks are what a
//!   setting for several (connections spread over their reactors) needs.
//! * **Callbacks** (CQ and SRQ notifications, connect, accept, disconnect completions,
//!   disconnect events) run on the thread that made them due: the progress thread, or, with
//!   inline progress, a consumer thread inside a post, a CQ poll or a [`cq::Cq::wait`] (a
//!   notification then runs before that call returns). They never run under a connection lock:
//!   a thread that holds one defers them ([`callback`]) and runs them after releasing it. When
//!   a callback runs, its thread holds **no lock the consumer can take** (no connection, CQ,
//!   SRQ, receive-queue, memory-table or buffer lock), so a callback may post, poll, arm,
//!   disconnect or close from inside (a callback that polls the CQ it was called for gets what
//!   is there; a pass from inside reaches the connection, whose lock is free). Callbacks must
//!   not block: without inline progress they run on the progress thread.
//! * **Lock order** (a thread holding one may take those after it, never before):
//!   connection lock → memory table → buffer lock (leases copy under a buffer's lock, taken
//!   after the table lookup released the table); connection lock → receive queue or SRQ, CQ
//!   ring (leaves: a notification runs after its ring's lock is released, and after the
//!   connection lock). A CQ's list of connections (a read lock) → connection lock, with
//!   `try_lock` only. **Consumer threads never wait for a connection lock** (they only try it),
//!   and no thread holds two connection locks: so no consumer call can deadlock on one, and
//!   the progress thread, the only thread that waits for connection locks, waits only for a
//!   holder that is doing bounded, non-blocking work. The transport's command queue and work
//!   queue are lock-free.
//! * Locks on the data path per inbound segment: the connection's, one buffer lock (placement,
//!   or per read straight into a region for header-first receive — never two buffer locks at
//!   once); per completion: the CQ ring's; per send segment: one buffer read lock while the
//!   payload is written.
//!
//! # Decisions where the NDK is silent (spec §10)
//!
//! Each is made once, written where it is implemented, and tested.
//!
//! | §10 | decision | where | test |
//! |---|---|---|---|
//! | 1 inline posting statuses | flags `INVALID_PARAMETER`, unconnected `CONNECTION_INVALID`, SGE count `DATA_OVERRUN`, bytes `BUFFER_OVERFLOW`, queue full `NO_MORE_ENTRIES`, token/rights/range `ACCESS_VIOLATION` | [`objects::qp`] | `tests/ndk.rs` `posting_limits_have_their_statuses` |
//! | 2 completion status per failure | peer Terminate: the read it names `ACCESS_VIOLATION`/`REMOTE_RESOURCES`, the rest `CANCELLED`; receive too small `BUFFER_OVERFLOW`; the Terminate in `ProviderErrorCode` | [`netdirect_proto::stream`] | `tests/ndk.rs` `write_to_invalid_token_terminates_and_cancels`, proto `harness.rs` |
//! | 3 QP after an error completion | error: Terminate sent or received, connection closed, everything pending `CANCELLED`; from before the first flushed completion is visible, initiator posts fail inline `CONNECTION_INVALID` (also after NdkFlush), receives complete `CANCELLED` | [`netdirect_proto::stream`], [`transport`] | same; `tests/hostile.rs` (every case) |
//! | 4 ordering, silent success | FIFO per queue; a silent success holds its slot until a later completion retires it | [`objects::qp`] | proto `mixed_workload_places_and_completes`, `posting_limits_have_their_statuses` |
//! | 5 ERRORS arm, unarmed CQ errors | CQ-level errors only; delivered even when not armed | [`cq`] | `tests/cq.rs` |
//! | 6 fast register and tokens | every registration rotates the token's key; fast register on a registered MR completes `INVALID_DEVICE_REQUEST` | [`memory`] | `tests/memory.rs`, `tests/ndk.rs` |
//! | 7 deferred requests | `DEFER` accepted. With inline progress a deferred request waits in its connection's queue until a request without it (the doorbell), an inline failure of any initiator call on the QP (§7.1's provider rule), a progress pass (a poll of the QP's CQ), a flush or a disconnect hands it over, so a chain leaves in one write; without inline progress every request is handed over at once. Nothing deferred can be lost (flush and disconnect take the queue first) | [`objects::qp`], [`transport`] | `tests/progress.rs` `deferred_requests_leave_with_the_doorbell` |
//! | 8 windows and deregistration | deregister with windows `DEVICE_BUSY`; no windows over fast-register MRs (`ACCESS_VIOLATION`); invalidating an unbound window `INVALID_DEVICE_REQUEST` | [`memory`] | `tests/memory.rs` |
//! | 9 shrinking a CQ or SRQ below its content | refused, nothing lost (see the modules) | [`cq`], [`srq`] | `tests/cq.rs`, `tests/srq.rs` |
//! | 10 private data | over 252 octets `INVALID_BUFFER_SIZE`; connection data reports exactly what the peer sent | [`objects::connector`] | `connect_refused_and_rejected` |
//! | 11 timeouts | TCP connect 20 s, MPA Reply 10 s, disconnect 5 s; none on the consumer's accept/complete | [`transport`] | transport tests |
//! | 12 reuse | a QP and a connector serve one connection (`CONNECTION_ACTIVE` after); a listener listens once | [`objects::connector`], [`objects::listener`] | — |
//! | 13 close with pending requests | closing a connector disconnects (flush); pending callbacks complete `CANCELLED` | [`objects::connector`], [`transport`] | transport tests |
//! | 14 receive on an SRQ QP, flush and SRQ | `receive` on an SRQ-attached QP `INVALID_DEVICE_REQUEST`; flush leaves the SRQ's receives | [`objects::qp`] | `srq_feeds_two_qps_and_notifies_below_threshold` |
//! | 15 ORD/IRD | reads beyond ORD wait in order; a peer beyond our IRD gets Terminate DDP untagged 0x02 | [`netdirect_proto::stream`] | proto `ird_is_enforced` |
//! | 16 adapter close, callback threads | the adapter lives until its children are closed; callbacks on the progress thread or, with inline progress, on the consumer thread whose post, poll or wait made them due; never under a connection lock, no lock the consumer can take held; re-entry allowed | this page, [`callback`] | `tests/progress.rs` `callbacks_run_without_connection_locks_…` |
//! | 17 tokens | `index << 8 \| key`, local = remote | [`memory`] | `tests/memory.rs` |
//! | 18 ports, addresses | the host's TCP port space; the adapter's IP (or unspecified, meaning it) else `INVALID_ADDRESS`; loopback connections; IPv4 and IPv6 | [`objects::adapter`] | `connect_refused_and_rejected`, `data_path_ipv6` |
//! | 19 PAGE_SIZE, logical addresses | 4096; `(LAM slot, generation, page)` encoding | [`memory`] | `tests/memory.rs` |
//! | 20 SRQ arming at creation | armed when the threshold and a callback are given | [`srq`] | `tests/srq.rs` |
//! | 21 connector calls in the wrong state | `CONNECTION_INVALID` | [`objects::connector`] | — |
//! | 22 zero-length requests | allowed | [`objects::qp`] | proto harness (zero-length send) |
//! | 23 versions | 1.2 for major 1, 2.1 for major 2; the 2.1 `Ex` calls exist | [`objects::limits`] | `limits` unit tests |
//! | 24 affinity, interrupt moderation | affinity ignored; moderation `NOT_SUPPORTED` | [`objects::adapter`], [`cq`] | `tests/cq.rs` |
//! | 25 send-and-invalidate to a peer without it | our side and siw both implement it | — | `fast_register_and_windows_over_the_wire` |
//! | 26 (provider) large payloads placed before their CRC | header-first receive ([`transport::EngineConfig::direct_min`], default 16 KiB still missing, markers off): the header is validated exactly as on the buffered path, then the payload is read from the socket straight into the validated range of the region or receive buffer (no NetDMA channel, one buffer lock per read), and the CRC is checked after. A CRC error, or a stream that ends mid-payload, then gives the same Terminate, QP error and completions as the buffered path; the octets already placed in the target range are **undefined**, nothing outside it is touched. Reading: RFC 5041 §7.1 lists what must be validated before Placement (STag, bounds, rights, QN/MSN/MO, a buffer) — all header fields; Placement is not Delivery, the ULP may rely on a buffer only once the message completes, and an LLP (MPA CRC) error is fatal to the stream (RFC 5044), so data placed from a segment that then fails is never reported — what siw and RNICs do (they place as segments arrive). Difference: a Send's first segment takes its receive at its header, so on an SRQ a failed one is consumed and completes `CANCELLED` instead of staying in the SRQ | [`netdirect_proto::stream`] (`direct_target`), [`transport`] | `tests/hostile.rs` `bad_crc_in_a_large_directly_placed_write_…`, `truncated_large_write_…`; proto `harness.rs` `header_first_receive_…`, `bad_crc_in_a_directly_received_payload_…` |
//! | 27 (provider) when NdkAccept completes; MPA options | with RFC 6581 peer-to-peer mode negotiated (what our connector offers by default: a zero-length Write or Read as RTR), when the initiator's RTR arrives, i.e. after its NdkCompleteConnect; without it (Linux rdma_cm peers never offer it) nothing on the wire marks the initiator's complete-connect and the initiator may wait for us to speak first (perftest's write_lat), so, as siw, when the Reply is queued, and the responder may send at once (RFC 5044 §7.1.3 has it wait for the initiator's first FPDU; Linux does not, and its ULPs rely on that: perftest's write_lat server writes first; an initiator that needs the wait offers RTR, and then we wait). The initiator holds its first FPDU 20 ms after the Reply ([`transport::EngineConfig::first_fpdu_delay`]): siw's accept hooks its socket to the QP only after sending the Reply, and an FPDU arriving in between stalls that connection for good. Revision, CRC, markers and the RTR offer are the provider's ([`SoftProvider::with_mpa`]) | [`transport`] | `tests/transport.rs` `first_fpdu_waits_…`, `without_rtr_the_accept_completes_…`, `hostile_peer_gets_terminates_…`; `tests/interop/siw.sh` |
//! | 28 (provider) run to completion | posts are sent from the posting thread, a poll of an empty CQ receives; a send-queue completion may therefore be in the CQ when the post returns, and a completion or notification may come on the consumer's thread (row 16). A write's completion still says only that TCP took it, not that the peer placed it (RDMA semantics: wait for the peer's answer or a fenced read). Automatic progress is kept: the progress thread serves every connection nobody polls (a consumer's lease on its arrivals lapses after [`transport::EngineConfig::poll_lease`] without polls). `inline_progress: false` (or `NETDIRECT_INLINE_PROGRESS=0`) puts every byte through the progress thread, as before | [`transport`], [`cq`] | `tests/progress.rs` (all), the suites with `NETDIRECT_INLINE_PROGRESS=0` |
//!
//! `unsafe` appears in one module, [`dma`], to lend a region's bytes to a NetDMA channel for one
//! copy; its contract is written there.
#![deny(unsafe_code)]

pub mod callback;
pub mod cq;
pub mod dma;
pub mod memory;
pub mod objects;
pub mod srq;
pub mod transport;

pub use dma::Placement;
pub use objects::adapter::{SoftAdapter, SoftProvider};
