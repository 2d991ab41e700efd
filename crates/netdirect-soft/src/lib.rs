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
//! | [`objects`] | the NDK objects (adapter, PD, CQ, SRQ, QP, MR, MW, connector, listener, shared endpoint); their lifetime model ([`objects::lifetime`]) and the port space ([`objects::ports`]) |
//! | [`memory`] | the adapter's memory table: regions, windows, LAMs, tokens, local and remote checks, leases |
//! | [`cq`], [`srq`] | completion ring with the NDK arming rules; shared receive queue with its threshold |
//! | [`transport`] | TCP sockets, MPA handshakes, RDMAP streams ([`netdirect_proto`]): driven from the consumers' threads (posts, CQ polls) and the adapter's progress threads (one by default) |
//! | [`dma`] | optional placement through a NetDMA channel ([`Placement`]) |
//! | [`capture`] | captures without root: every connection's bytes as a pcap with synthesized Ethernet/IP/TCP headers ([`transport::EngineConfig::capture`]) |
//!
//! # Seeing what happens
//!
//! * **Log** (`tracing`): a span per adapter (`adapter{id, address, progress_threads,
//!   capture}`) and per connection (`conn{id, local, peer, role, mpa_rev, crc, markers, ird,
//!   ord}`, the MPA fields recorded when negotiated). `info`: adapter opened, MPA request
//!   received, MPA established, connection complete, rejects (ours and the peer's), connect and
//!   accept failures with their status, disconnect requested, peer closed, flushed,
//!   disconnected; `warn`: Terminates sent and received, decoded in words
//!   ([`netdirect_proto::ProviderError`]), a failed MPA handshake, a capture that hit its limit;
//!   `debug`: TCP connected, closing, every error completion (status and the Terminate behind
//!   it) and every request a QP refused inline. Nothing is logged per FPDU. Events name their
//!   connection's span as parent (nothing enters a span on the data path), so a disabled log
//!   costs the level checks only. `nd -v`/`-vv`/`-vvv` or `RUST_LOG` show it on stderr.
//! * **Capture** ([`capture`]): `EngineConfig::capture` or `nd --pcap FILE [--pcap-limit MiB]`.
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
//!   wakes another thread. The pass visits only the CQ's **active list** (row 33): the
//!   connections with work, so a CQ shared by 10,000 idle connections costs an empty poll
//!   what its busy ones cost.
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
//! * **Counters publisher** (only with [`transport::EngineConfig::publish_counters`]): one
//!   thread per adapter that reads the counters every 500 ms and writes them to a file for
//!   `nd stat` (see [`counters`]); it holds no adapter state but the counters, and closing the
//!   adapter stops and joins it and removes the file.
//! * **Progress threads per adapter** are a setting
//!   ([`transport::EngineConfig::progress_threads`], default one; `nd --progress-threads`).
//!   Each is a reactor of its own: its `mio` poll, waker, timer heap, command queue and work
//!   queue, and the connections placed on it. A connection is placed when it is made (a
//!   connect, or an accept by the listeners' reactor, which hands the socket over) on the
//!   reactor with the fewest connections (ties in turn), and stays there: its registration,
//!   timers, leases and hand-overs all go to that reactor. Listeners live on the first reactor;
//!   a Request parsed on another comes back to it for the listener's callback (so a listener's
//!   callbacks never run on two threads at once), and a listener's close reaches every reactor.
//!   Reactors share nothing but that and the id counter: no lock is common to two of them.
//!   [`SoftAdapter::progress_wakeups_per_thread`] and [`SoftAdapter::connections_per_thread`]
//!   show the spread; dropping or closing the adapter stops and joins every thread.
//! * Nothing on the data path is shared by all QPs of an adapter: posts and passes of different
//!   QPs run in parallel on their consumers' threads (the memory table is a read lock for SGE
//!   checks and for the checks of a bind or fast register; one carried out at once then takes
//!   its write lock for the change: check, then commit, [`memory`]), and connections on
//!   different progress threads progress in parallel there too.
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
//!   connection lock); connection lock → a CQ's active list (a leaf: held only to add an entry
//!   or to take the list; a pass or an arm's release visits the connections it took with the
//!   list unlocked, and only `try_lock`s them). **Consumer threads never wait for a connection lock** (they only try it),
//!   and no thread holds two connection locks: so no consumer call can deadlock on one, and
//!   the progress threads, the only threads that wait for connection locks (each for its own
//!   connections; the listeners' thread also for a connection whose Request it hands to its
//!   listener), wait only for a holder that is doing bounded, non-blocking work. The transport's command queue and work
//!   queue are lock-free.
//!   Counters ([`counters`]): an adapter's registry lock → a connection's Terminate-count lock
//!   (leaves: taken when a connection is made or its last handle goes, by readers of the
//!   adapter's counters, and for a Terminate; any other lock may be held meanwhile, none is
//!   taken inside). Counting itself takes no lock.
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
//! | 1 inline posting statuses | in this order for every request type: flags `INVALID_PARAMETER`, unconnected `CONNECTION_INVALID`, SGE count `DATA_OVERRUN`, bytes `BUFFER_OVERFLOW`, queue full `NO_MORE_ENTRIES`, token/rights/range `ACCESS_VIOLATION` | [`objects::qp`] | `tests/ndk.rs` `posting_limits_have_their_statuses` |
//! | 2 completion status per failure | peer Terminate: the request whose header it copies — a read's Read Request, or a Write's segment or a Send's MSN when that request is not reported yet (still being sent, or behind a read) — gets the status the Terminate means: STag, rights, association, cannot invalidate `ACCESS_VIOLATION`; bounds, TO wrap, no receive, receive too small `REMOTE_RESOURCES`; else `CONNECTION_ABORTED`; the rest `CANCELLED`. Receive too small `BUFFER_OVERFLOW`; read with local invalidate whose sink cannot be invalidated `INVALID_DEVICE_REQUEST`. The Terminate in `ProviderErrorCode` | [`netdirect_proto::stream`] | `tests/ndk.rs` `write_to_invalid_token_terminates_and_cancels`, `tests/completions.rs` `write_named_by_the_peers_terminate_gets_its_status`, proto `harness.rs` `terminate_naming_…` |
//! | 3 QP after an error completion | error: Terminate sent or received, connection closed, everything pending `CANCELLED`; from before the first flushed completion is visible, initiator posts fail inline `CONNECTION_INVALID` (also after NdkFlush), receives complete `CANCELLED`. Every error completion does this, a failed read-local-invalidate too (we send RDMAP local catastrophic) | [`netdirect_proto::stream`], [`transport`] | same; `tests/hostile.rs` (every case); `tests/completions.rs` `regular_sink_read_local_invalidate_fails_and_errors_the_qp` |
//! | 4 ordering, silent success | FIFO per queue; a silent success holds its slot until a later completion retires it. Silent drops only the CQ entry: the request's effects happen (a read's local invalidate), and a failure always completes. One completion per receive posted `Ok`, in posting order, also when posted while a flush runs | [`objects::qp`] | proto `mixed_workload_places_and_completes`, `read_with_local_invalidate_…`, `posting_limits_have_their_statuses`; `tests/completions.rs` `silent_…`, `receives_posted_around_a_flush_all_complete` |
//! | 5 ERRORS arm, unarmed CQ errors; a CQ's error and its QPs | CQ-level errors only; delivered even when not armed. The error (overflow `BUFFER_OVERFLOW`, failure `INTERNAL_ERROR`) is fatal to the QPs using the CQ (§7.3, as verbs' CQ error): from when it is set, before its notification runs, their posts on either queue fail inline `CONNECTION_INVALID`; a QP whose completion the CQ refused is flushed (its peer hears at disconnect). The CQ delivers nothing after its error, so requests accepted before it may never complete; entries queued before it stay readable | [`cq`], [`objects::qp`] | `tests/cq.rs`; `tests/completions.rs` `cq_overflow_is_fatal_to_its_queue_pairs` |
//! | 6 fast register and tokens | every registration rotates the token's key; fast register on a registered MR completes `INVALID_DEVICE_REQUEST` | [`memory`] | `tests/memory.rs`, `tests/ndk.rs` |
//! | 7 deferred requests | `DEFER` accepted. With inline progress a deferred request waits in its connection's queue until a request without it (the doorbell), an inline failure of any initiator call on the QP (§7.1's provider rule), a progress pass (a poll of the QP's CQ), a flush or a disconnect hands it over, so a chain leaves in one write; without inline progress every request is handed over at once. Nothing deferred can be lost (flush and disconnect take the queue first) | [`objects::qp`], [`transport`] | `tests/progress.rs` `deferred_requests_leave_with_the_doorbell` |
//! | 8 windows and deregistration | deregister with windows `DEVICE_BUSY`; **close** with windows never fails (§2.5): the MR's token dies at once, locally and remotely, the windows keep their bindings (successors, §2.6) and the close completes when the last of them is unbound (closed or invalidated); no windows over fast-register MRs (`ACCESS_VIOLATION`); invalidating an unbound window `INVALID_DEVICE_REQUEST` | [`memory`], [`objects::mr`] | `tests/memory.rs` `closing_an_mr_with_windows_…`; `tests/security.rs` `closed_mr_with_a_window_pends_and_its_token_dies_…`, `closed_mr_token_dies_at_the_close_…` |
//! | 9 shrinking a CQ or SRQ below its content | refused, nothing lost (see the modules) | [`cq`], [`srq`] | `tests/cq.rs`, `tests/srq.rs` |
//! | 10 private data | over 252 octets `INVALID_BUFFER_SIZE`; connection data reports exactly what the peer sent | [`objects::connector`] | `connect_refused_and_rejected` |
//! | 11 timeouts | TCP connect 20 s, MPA Reply 10 s, disconnect 5 s; none on the consumer's accept/complete (but see 34) | [`transport`] | transport tests |
//! | 12 reuse | a QP and a connector serve one connection (`CONNECTION_ACTIVE` after); a listener listens once | [`objects::connector`], [`objects::listener`] | — |
//! | 13 close with pending requests | closing a connector disconnects (flush); pending callbacks complete `CANCELLED` | [`objects::connector`], [`transport`] | transport tests |
//! | 14 receive on an SRQ QP, flush and SRQ | `receive` on an SRQ-attached QP `INVALID_DEVICE_REQUEST`; flush leaves the SRQ's receives | [`objects::qp`] | `srq_feeds_two_qps_and_notifies_below_threshold` |
//! | 15 ORD/IRD | reads beyond ORD wait in order; a peer beyond our IRD gets Terminate DDP untagged 0x02 | [`netdirect_proto::stream`] | proto `ird_is_enforced` |
//! | 16 adapter close, callback threads | `close` blocks until every child (PD, CQ, connector, listener, shared endpoint) is closed — their closes complete only after their own successors', see 30 — then stops and joins the progress threads, so no callback runs after it returns; a consumer that closes the adapter first from the only thread holding the children deadlocks (the NDK has consumers close children first); dropping the adapter without `close` does not block (the progress threads stop with the last child). Callbacks on the progress thread or, with inline progress, on the consumer thread whose post, poll or wait made them due; never under a connection lock, no lock the consumer can take held; re-entry allowed | [`objects::adapter`], [`objects::lifetime`], [`callback`] | `tests/lifetime.rs` `pd_cq_and_adapter_closes_pend_until_their_successors_close`, `tests/progress.rs` `callbacks_run_without_connection_locks_…` |
//! | 17 tokens | `index << 8 \| key`, local = remote | [`memory`] | `tests/memory.rs` |
//! | 18 ports, addresses | the host's TCP port space, with the NDK's endpoint counts (§2.8) on top in one table for the process: a listener's port is held until its close completes (after the connectors it delivered), a shared endpoint's likewise, an `NdkConnect` connector's until it is closed; a listen, connect or shared endpoint on a held address and port is `SHARING_VIOLATION`. Port 0 takes a port from `EPHEMERAL_PORTS` (49152-65535, §2.8), not the host's range. A listener's close completes only once the progress thread closed its socket. Out of descriptors, an incoming connection is reset at once and `Listener::take_error` gives `INSUFFICIENT_RESOURCES`. The adapter's IP (or unspecified, meaning it) else `INVALID_ADDRESS`; loopback connections; IPv4 and IPv6 | [`objects::ports`], [`objects::adapter`], [`objects::listener`] | `tests/lifetime.rs` (`closed_shared_endpoint_…`, `endpoints_of_live_connectors_…`, `listener_port_is_free_…`, `port_zero_takes_an_ndk_ephemeral_port`, `a_server_out_of_descriptors_…`), `connect_refused_and_rejected` |
//! | 19 PAGE_SIZE, logical addresses | 4096; `(LAM slot, generation, page)` encoding | [`memory`] | `tests/memory.rs` |
//! | 20 SRQ arming at creation | armed when the threshold and a callback are given | [`srq`] | `tests/srq.rs` |
//! | 21 connector calls in the wrong state | `CONNECTION_INVALID`, also `connection_data` before there is any (an active connector before its connect completed) and a connect or accept with a QP flushed before it had a connection (a flush is final; the connection request stays for another QP) | [`objects::connector`] | `tests/lifetime.rs` `connection_data_of_a_fresh_connector_…`, `a_qp_flushed_before_its_connection_serves_none` |
//! | 22 zero-length requests | allowed | [`objects::qp`] | proto harness (zero-length send) |
//! | 23 versions | 1.2 for major 1, 2.1 for major 2; the 2.1 `Ex` calls exist | [`objects::limits`] | `limits` unit tests |
//! | 24 affinity, interrupt moderation | affinity ignored; moderation `NOT_SUPPORTED` | [`objects::adapter`], [`cq`] | `tests/cq.rs` |
//! | 25 send-and-invalidate to a peer without it | our side and siw both implement it | — | `fast_register_and_windows_over_the_wire` |
//! | 26 (provider) large payloads placed before their CRC | header-first receive ([`transport::EngineConfig::direct_min`], default 16 KiB still missing, markers off): the header is validated exactly as on the buffered path, then the payload is read from the socket straight into the validated range of the region or receive buffer (no NetDMA channel, one buffer lock per read), and the CRC is checked after. A CRC error, or a stream that ends mid-payload, then gives the same Terminate, QP error and completions as the buffered path; the octets already placed in the target range are **undefined**, nothing outside it is touched. Reading: RFC 5041 §7.1 lists what must be validated before Placement (STag, bounds, rights, QN/MSN/MO, a buffer) — all header fields; Placement is not Delivery, the ULP may rely on a buffer only once the message completes, and an LLP (MPA CRC) error is fatal to the stream (RFC 5044), so data placed from a segment that then fails is never reported — what siw and RNICs do (they place as segments arrive). Difference: a Send's first segment takes its receive at its header, so on an SRQ a failed one is consumed and completes `CANCELLED` instead of staying in the SRQ | [`netdirect_proto::stream`] (`direct_target`), [`transport`] | `tests/hostile.rs` `bad_crc_in_a_large_directly_placed_write_…`, `truncated_large_write_…`; proto `harness.rs` `header_first_receive_…`, `bad_crc_in_a_directly_received_payload_…` |
//! | 27 (provider) when NdkAccept completes; MPA options | with RFC 6581 peer-to-peer mode negotiated (what our connector offers by default: a zero-length Write or Read as RTR), when the initiator's RTR arrives, i.e. after its NdkCompleteConnect; without it (Linux rdma_cm peers never offer it) nothing on the wire marks the initiator's complete-connect and the initiator may wait for us to speak first (perftest's write_lat), so, as siw, when the Reply is queued, and the responder may send at once (RFC 5044 §7.1.3 has it wait for the initiator's first FPDU; Linux does not, and its ULPs rely on that: perftest's write_lat server writes first; an initiator that needs the wait offers RTR, and then we wait). The initiator holds its first FPDU 20 ms after the Reply ([`transport::EngineConfig::first_fpdu_delay`]): siw's accept hooks its socket to the QP only after sending the Reply, and an FPDU arriving in between stalls that connection for good. Revision, CRC, markers and the RTR offer are the provider's ([`SoftProvider::with_mpa`]) | [`transport`] | `tests/transport.rs` `first_fpdu_waits_…`, `without_rtr_the_accept_completes_…`, `hostile_peer_gets_terminates_…`; `tests/interop/siw.sh` |
//! | 28 (provider) objects passed into a call | an object of another adapter (checked by type and a process-wide adapter id, never by per-adapter handles) is `INVALID_PARAMETER`; so is, on a QP, an MR or MW of another PD than the QP's (bind, fast register, invalidate: as verbs require) and, in `NdkCreateQpWithSrq`, an SRQ of another PD | [`objects`] (`ours`, `ours_in`) | `tests/security.rs` `foreign_mr_in_bind_is_refused_…`, `foreign_objects_are_refused_…` |
//! | 29 (provider) dropping an object instead of closing it | releases exactly what its close releases, at the drop: a connector or the QP's last handle (the QP, or both halves after `into_split`) disconnects (the peer gets its disconnect event), an MR is deregistered and its token dead before the drop returns (leases in flight keep their bytes alive, as after a close), a window unbinds, a CQ or SRQ closes; a close followed by its drop is one close | [`objects`] | `tests/drop_releases.rs` `dropped_objects_release_what_close_releases`; `tests/security.rs` `dropped_mr_token_is_dead_…` |
//! | 30 (provider) closing an antecedent before its successors (§2.6) | one model for every antecedent ([`objects::lifetime`]): each successor holds a counted reference; the close marks the antecedent closing and completes (`Request` pending, then completed on the thread that let go of the last reference) when the count is zero; until then nothing the successors use goes away (an SRQ still feeds its QPs, a CQ still takes their completions, a PD keeps its slot, a listener or shared endpoint its port). A QP lets go of its PD, CQs and SRQ when it is closed and its connection has flushed; an MR whose close waits for its bound windows (8) keeps its PD reference until that close completes. Used for the adapter, PD, CQ, SRQ, listener and shared endpoint; dropping a successor releases its reference as its close does, and dropping an antecedent starts its close (29) | [`objects::lifetime`] | `tests/lifetime.rs` `srq_close_pends_while_a_qp_uses_it`, `pd_cq_and_adapter_closes_pend_…`, `closed_shared_endpoint_…`, `endpoints_of_live_connectors_…`; unit tests in [`objects::lifetime`] |
//! | 31 (provider) FPDU size, segmentation, buffers | an FPDU is one GSO packet: `mpa::mulpdu(mpa::gso_seglen(TCP_MAXSEG))` (siw's `mss × gso_segs`; 64 KiB, 17 FPDUs per MiB, within MPA's 16-bit ULPDU length), capped by [`transport::EngineConfig::max_mulpdu`], the provider setting for hardware peers (Chelsio T6: 16 KiB; FPDU-aligned RNICs: `mpa::mulpdu(MSS)`; costs in [`transport::DEFAULT_MAX_MULPDU`]); Linux siw takes any FPDU up to 65535 octets (spec/iwarp.md §7.3). A message is cut into equal FPDUs (no runt). Writes carry `MSG_MORE` while the stream has another frame ready ([`netdirect_proto::stream::Stream::tx_pending`]) and the FPDU is under half the TCP send unit (larger ones leave at once: holding half a GSO packet back cost 64 KiB RDMA reads a third of their throughput). Input buffers start at 4 KiB and double while reads fill them; freed when the socket is drained and nothing is buffered; out buffers over 8 KiB freed when drained | [`transport`], [`netdirect_wire::mpa::Deframer`] | proto `harness.rs` `messages_split_into_equal_fpdus_without_a_runt`, `an_idle_stream_gives_its_input_buffer_back`; `tests/hostile.rs` `a_large_read_response_goes_out_in_equal_gso_sized_fpdus`; `nd scale`; `tests/interop/siw.sh` |
//! | 32 (provider) run to completion | posts are sent from the posting thread, a poll of an empty CQ receives; a send-queue completion may therefore be in the CQ when the post returns, and a completion or notification may come on the consumer's thread (row 16). A write's completion still says only that TCP took it, not that the peer placed it (RDMA semantics: wait for the peer's answer or a fenced read). Automatic progress is kept: the progress thread serves every connection nobody polls (a consumer's lease on its arrivals lapses after [`transport::EngineConfig::poll_lease`] without polls). `inline_progress: false` (or `NETDIRECT_INLINE_PROGRESS=0`) puts every byte through the progress thread, as before | [`transport`], [`cq`] | `tests/progress.rs` (all), the suites with `NETDIRECT_INLINE_PROGRESS=0` |
//! | 33 (provider) a CQ shared by many connections | a poll of an empty CQ visits the CQ's active list only: a connection enters the list of each CQ it completes to when it gets work — a post (on the posting thread, before the post returns), an arrival the progress thread heard, a lease its consumer took — and leaves it at the pass that finds it idle: no post queued and no such work for two [`transport::EngineConfig::poll_lease`] periods. A leased connection that goes idle is handed back to the progress thread (as when a consumer blocks), which then hears its next arrival and lists it again; so a connection whose consumer only polls (receives, no posts) for two lease periods is served by the progress thread until its next arrival. Writability is not work for a pass (every re-registration reports it). One flag per (connection, CQ) keeps an entry listed once; `NdkArmCq` hands back the leases of the listed connections only (a lease implies a listing). Entries of closed connections leave at the next pass, or when the list must grow | [`cq`], [`transport`] | `tests/progress.rs` `a_cq_poll_visits_only_connections_with_work`; `nd scale` |
//! | 34 (provider) a wait for an answer this process owes itself | the NDK's connect completes only when the peer accepted, and its accept only when the peer completed the connect (§7.6), so one thread that waits for its connect before it accepts (or for its accept before it completes) waits for itself: before, a 10 s stall and then `IO_TIMEOUT` (connect), or no end at all (accept). When both ends are connectors of this process, each knows whether the other's consumer owes an answer: the passive end from when its connect event returned until accept or reject, the active end from its connect's success until complete-connect or reject. A thread blocked in `Request::wait`/`wait_timeout` on a connect (accept) whose other end has owed its accept (complete) for [`objects::answers::ANSWER_GRACE`] (1 s), while the wait has blocked as long, and whose adapter was last called (creating an object, a connector call) from the waiting thread itself, gets `STATUS_POSSIBLE_DEADLOCK` (`ntstatus.h` 0xC0000194; the order that works is on `netdirect::connector`), and the connection is disconnected (the other end's accept or complete-connect fails `CONNECTION_ABORTED`, or its disconnect event fires). A judgement, not a proof (which thread will answer cannot be known): a server on a thread of its own (`nd bench`) is never taken for it however slow, but a program whose waiting thread also set up the other end, and whose other thread then holds the request longer than 1 s without calling into that adapter, gets it too; awaiting the request or `on_complete` blocks no thread and is never failed this way, nor is any peer in another process. The watch is `netdirect::Request::pending_watched`, called every 100 ms of a blocked wait | [`objects::answers`], [`objects::connector`] | `tests/setup_order.rs` (IPv4, IPv6: connect → wait → accept and accept → wait → complete fail in ~1 s; the working order, and the two-thread order with a server thread that holds the request 1.5 s, still connect); `answers` unit test; `netdirect` `a_watch_sees_blocked_waits_and_may_end_them` |
//! | 35 (provider) progress threads | [`transport::EngineConfig::progress_threads`] reactors per adapter (default 1). A connection is placed at creation on the reactor with the fewest connections (ties in turn) and never moves (its socket is registered with one `epoll` only; moving it would need a hand-over under its lock for no gain, since consumer-driven progress runs on the consumers' threads anyway); accepted connections are placed the same way by the listeners' reactor (the first), which keeps every listener and runs every listener callback, so those never run concurrently. Completions and callbacks of a connection come from its own reactor or a consumer thread, as with one | [`transport`] | `tests/transport.rs` `several_progress_threads_…`, `connections_spread_over_the_progress_threads_…`, `engine_drop_joins_every_progress_thread`; `tests/release.rs`; the suites with `NETDIRECT_PROGRESS_THREADS=4` |
//! | 36 (provider) counters | `NDIS_NDK_PERFORMANCE_COUNTERS` (exact names, in order) plus the iWARP detail ([`netdirect::counters::Counter`]) per QP and per adapter; read through `NdkQueryExtension` with [`netdirect::counters::COUNTERS_GUID`] (version 1.x; adapter and QP; `STATUS_NOT_SUPPORTED` for any other GUID) or [`SoftAdapter::counters`] / `SoftQp::counters`. Octets are ULP payload octets, frames FPDUs (RTR frames and Terminates included); `Connect` counts established active connections (at complete-connect), `Accept` passive ones, `ConnectFailure` failures reported to a connect, `ConnectionError` established connections ended by a Terminate or a broken socket (not a disconnect or a flush), `CQError` error completions a connection delivers (flushes included), `ActiveConnection` connected now. The stream counts with a relaxed load and store (it is its cells' only writer), the transport under the connection's lock or with a relaxed `fetch_add`; an adapter keeps the sum of its closed connections (moved under the registry lock when the connection's last handle goes, so a reader never sees them twice or not at all). Another process reads them from files the adapter publishes when [`transport::EngineConfig::publish_counters`] is on (`nd` turns it on): `netdirect.<pid>.<n>.counters` in `$NETDIRECT_STAT_DIR` or `/dev/shm`, text ([`netdirect::counters::Published`]), written every 500 ms by a thread of the adapter (temporary file and rename) and removed at close; a mapped shared-memory page would be fresher but needs `unsafe` and a layout contract, a socket a server thread in every process | [`counters`], `netdirect::counters`, `netdirect_proto::counters` | `tests/counters.rs` (IPv4, IPv6: every counter exact after a known workload with one Terminate and one reject); `nd` `tests/stat.rs` (live `write-bw`, Prometheus format) |
//! | 37 (provider) captures | [`capture::Capture`] shared by every connection of the engines given it (`Arc` in [`transport::EngineConfig::capture`]); the bytes are taken where the socket reads and writes them (both directions, header-first receive and vectored writes included), each written as TCP segments of at most 32 KiB ([`capture::SEGMENT`]) with per-direction sequence and acknowledgement numbers, after a synthesized SYN / SYN-ACK / ACK (the client is the end that connected; the active end opens its capture when TCP connects, the passive end when accepted) and before a FIN per direction (ours at `shutdown`, the peer's at EOF, both at teardown). Ethernet, IPv4 or IPv6 as the connection (a v4-mapped mix as IPv6). Two ends of one connection in one process and one capture: only the first to open is captured (the same conversation twice would confuse readers). The size limit counts the file's octets: the first frame that does not fit and all later ones are dropped (whole frames only), `truncated` is set and one `warn` logged; a write error stops the capture (kept in `CaptureStats::error`). The writer counts FPDUs per connection and direction by following the MPA framing of what it captured (`None` with markers). Off (`None`), a read or write pays one branch | [`capture`], [`transport`] | `tests/capture.rs` (v4, v6: a workload reads back whole, the size limit); `netdirect-cli` `tests/pcap.rs` (tshark: no malformed frame, every CRC good, FPDU counts) |
//! | 38 (provider) log levels | see "Seeing what happens" above: setup, rejects, closes and flushes `info`; Terminates `warn` (in words); error completions and inline refusals `debug` (a flush cancels every outstanding request: one event each); nothing per FPDU at any level. The span fields are the connection's as negotiated (`ird`/`ord` are ours after the RFC 6581 exchange) | [`transport`], [`objects::qp`] | `tests/tracing.rs` (v4, v6: connect/accept/complete, a Terminate decoded on both ends, flush, disconnect; a reject on both ends); `netdirect-cli` `tests/log.rs` |
//! | 39 (consumer) capabilities the conformance suite reads | the provider-independent NDK suite (`netdirect-conformance`, run here by `tests/ndk.rs` and by `ndk-conformance --provider …`) skips a case only on what the adapter declares in `NDK_ADAPTER_INFO`, never on the provider's name. The spec has no flag for fast register or memory windows, so: a provider without fast register (and LAMs, which only fast register consumes) reports `FRMRPageCount` 0 (below the minimum 16 the spec asks of one that has it), one without memory windows `MaxWindowSize` 0, one without SRQs `MaxSrqDepth` 0 (the spec's own rule); connections from an address to itself need `LOOPBACK_CONNECTIONS_SUPPORTED`, read with local invalidate `RDMA_READ_LOCAL_INVALIDATE_SUPPORTED`; `NdkCreateSharedEndpoint` answering `STATUS_NOT_SUPPORTED` skips the shared-endpoint case. Assertions on a declared behaviour follow the declaration: read-sink refusals only without `RDMA_READ_SINK_NOT_REQUIRED`, Terminate provider codes (and the Terminate case) only when `RdmaTechnology` is iWARP. The soft adapter declares every one: every case must pass here, a skip fails the test | `netdirect-conformance` | `tests/ndk.rs` (every case on IPv4 and IPv6; `cases_skip_by_declared_capability_with_the_reason`, `every_case_of_the_suite_runs_here`) |
//! | 40 (verbs) what the `verbs` provider (crate `netdirect-verbs`) answers where verbs differ | rdma-core missing: `VerbsProvider::new` fails naming the library, `Provider::open_adapter` would be `STATUS_NOT_SUPPORTED`; no RDMA device or none serving the address: `STATUS_INVALID_ADDRESS` (the `VerbsError` says which); fast register, LAMs, memory windows, shared endpoints, interrupt moderation: `STATUS_NOT_SUPPORTED`; SRQ notify thresholds are verbs' SRQ limit, CQ errors async events (`STATUS_BUFFER_OVERFLOW`); the privileged token is 0 (user verbs have none); on IB/RoCE the peer's private data is reported padded to the CM message's size (56/196); a peer's disconnect does not flush the QP on IB/RoCE, but iWARP RNICs flush it themselves; the table in `netdirect-verbs`' crate docs maps every entry point |
//!
//! `unsafe` appears in one module, [`dma`], to lend a region's bytes to a NetDMA channel for one
//! copy; its contract is written there.
#![deny(unsafe_code)]

pub mod callback;
pub mod capture;
pub mod counters;
pub mod cq;
pub mod dma;
pub mod memory;
pub mod objects;
pub mod srq;
pub mod transport;

/// README.md's code blocks, compiled as doctests so the snippet there cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

pub use dma::Placement;
pub use objects::adapter::{SoftAdapter, SoftProvider};
