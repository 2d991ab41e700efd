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
//! | [`transport`] | one progress thread per adapter: TCP sockets, MPA handshakes, RDMAP streams ([`netdirect_proto`]) |
//! | [`dma`] | optional placement through a NetDMA channel ([`Placement`]) |
//!
//! # Threading and lock order
//!
//! * One **progress thread per adapter** (the transport's engine) owns every socket, handshake
//!   and stream of the adapter, and runs every QP's engine-side host ([`objects::qp::SoftHost`]).
//!   Data moves without the consumer's help.
//! * Consumer threads post through lock-free queues into that thread. A post takes the memory
//!   table's read lock (SGE checks) and, for receives, the receive queue's lock; nothing else.
//! * Callbacks (CQ and SRQ notifications, connect events, request completions, disconnect
//!   events) run on the progress thread, except where a consumer call completes at once. They
//!   must not block; they may call back into the provider (every call there only queues work or
//!   takes a short lock that no callback holds).
//! * **Lock order** (a thread holding one may take those after it, never before): memory table
//!   → buffer lock (leases copy under a buffer's lock, taken after the table lookup released
//!   the table) ; receive queue or SRQ → memory table is never needed (entries are checked
//!   before they are queued); CQ ring locks are leaves: a notification callback runs after the
//!   ring's lock is released. The transport holds no lock while calling the host.
//! * Locks on the data path per inbound segment: one buffer lock (placement, or per read
//!   straight into a region for header-first receive — never two buffer locks at once); per completion:
//!   the CQ ring's; per send segment: one buffer read lock while the payload is written.
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
//! | 7 deferred requests | `DEFER` accepted, every request handed to the engine at once: nothing deferred can be lost | [`objects::qp`] | — (no state to test) |
//! | 8 windows and deregistration | deregister with windows `DEVICE_BUSY`; no windows over fast-register MRs (`ACCESS_VIOLATION`); invalidating an unbound window `INVALID_DEVICE_REQUEST` | [`memory`] | `tests/memory.rs` |
//! | 9 shrinking a CQ or SRQ below its content | refused, nothing lost (see the modules) | [`cq`], [`srq`] | `tests/cq.rs`, `tests/srq.rs` |
//! | 10 private data | over 252 octets `INVALID_BUFFER_SIZE`; connection data reports exactly what the peer sent | [`objects::connector`] | `connect_refused_and_rejected` |
//! | 11 timeouts | TCP connect 20 s, MPA Reply 10 s, disconnect 5 s; none on the consumer's accept/complete | [`transport`] | transport tests |
//! | 12 reuse | a QP and a connector serve one connection (`CONNECTION_ACTIVE` after); a listener listens once | [`objects::connector`], [`objects::listener`] | — |
//! | 13 close with pending requests | closing a connector disconnects (flush); pending callbacks complete `CANCELLED` | [`objects::connector`], [`transport`] | transport tests |
//! | 14 receive on an SRQ QP, flush and SRQ | `receive` on an SRQ-attached QP `INVALID_DEVICE_REQUEST`; flush leaves the SRQ's receives | [`objects::qp`] | `srq_feeds_two_qps_and_notifies_below_threshold` |
//! | 15 ORD/IRD | reads beyond ORD wait in order; a peer beyond our IRD gets Terminate DDP untagged 0x02 | [`netdirect_proto::stream`] | proto `ird_is_enforced` |
//! | 16 adapter close, callback threads | the adapter lives until its children are closed; callbacks on the progress thread, re-entry allowed | this page | — |
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
//!
//! `unsafe` appears in one module, [`dma`], to lend a region's bytes to a NetDMA channel for one
//! copy; its contract is written there.
#![deny(unsafe_code)]

pub(crate) mod callback;
pub mod cq;
pub mod dma;
pub mod memory;
pub mod objects;
pub mod srq;
pub mod transport;

pub use dma::Placement;
pub use objects::adapter::{SoftAdapter, SoftProvider};
