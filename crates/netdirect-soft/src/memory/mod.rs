//! The adapter's memory table: protection domains' privileged tokens, memory regions (regular and
//! fast-register), memory windows, logical address mappings (LAMs), and the checks every local
//! SGE and every inbound tagged access goes through.
//!
//! One [`MemoryTable`] exists per adapter. It is plain data behind one `parking_lot::RwLock`:
//! no threads, no I/O, deterministic. Checks ([`MemoryTable::check_local`],
//! [`MemoryTable::check_remote`]) take the read lock, index a slot vector with the token's
//! index and return a [`Lease`]; registrations take the write lock. Section numbers (§) refer to
//! the project's NDKPI digest, `spec/ndkpi.md`.
//!
//! # Check, then commit
//!
//! A bind or fast register posted on a QP is checked when posted (its inline status) and
//! carried out now or later, in queue order. The two are separate steps:
//! [`MemoryTable::check_bind`] / [`MemoryTable::check_fast_register`] run every check under
//! the **read** lock (as every post does) and return a plan ([`BindPlan`],
//! [`FastRegisterPlan`]); [`MemoryTable::commit_bind`] / [`MemoryTable::commit_fast_register`]
//! take the **write** lock and check again only what may have changed in between (handles,
//! bound or registered, the MR's registration, the initialization). [`MemoryTable::bind`] and
//! [`MemoryTable::fast_register`] are the two steps back to back.
//!
//! # Files
//!
//! | file | what |
//! |---|---|
//! | `tokens.rs` | the token layout and key rotation: the only place that knows them |
//! | `slots.rs` | token slots, the slot table, protection domains |
//! | `regions.rs` | memory regions: create, register, deregister, tokens, close |
//! | `fast_register.rs` | initialize and fast register (check, commit) |
//! | `windows.rs` | memory windows: bind (check, commit), close |
//! | `invalidate.rs` | invalidation, local and by token |
//! | `lams.rs` | logical address mappings |
//! | `checks.rs` | local SGE and inbound tagged access checks |
//! | `leases.rs` | leases and the mappings behind them |
//!
//! # Tokens
//!
//! A token (STag on the wire) is `index << 8 | key`, as in Linux siw. `index` (24 bits) names a
//! slot of the table; `key` (8 bits) is the slot's current key. A token is valid only while its
//! key is the slot's key *and* the slot holds a live registration (§10.17):
//!
//! * the key is rotated (incremented) on every [`MemoryTable::register_mr`], every
//!   [`MemoryTable::fast_register`] and every [`MemoryTable::bind`], and when a slot is freed, so
//!   a token from an earlier registration fails after re-registration (§10.6). After 256
//!   rotations of one slot a key repeats, as siw's;
//! * index 0 is never used, so tokens `0..=0xFF` are never valid;
//! * an MR's local and remote token are **the same value** (as Linux: lkey = rkey). Remote use is
//!   governed by the region's rights, not by the token;
//! * each PD gets a slot for its privileged token ([`PdId::privileged_token`]); that token is
//!   never valid remotely;
//! * freed slots are reused oldest first, which spreads key reuse.
//!
//! # Region kinds
//!
//! | kind | created by | revoked by |
//! |---|---|---|
//! | regular MR | [`MemoryTable::register_mr`] over a [`Buffer`](netdirect::Buffer) range; base address = `buffer.address() + offset` | [`MemoryTable::deregister_mr`], then re-registration is allowed |
//! | fast-register MR | [`MemoryTable::initialize_fast_register`], then [`MemoryTable::fast_register`] over LAM pages | [`MemoryTable::invalidate`] or [`MemoryTable::invalidate_remote`], then a new fast register |
//! | memory window | [`MemoryTable::bind`] to a sub-range of a registered regular MR | [`MemoryTable::invalidate`] or [`MemoryTable::invalidate_remote`], then a rebind |
//!
//! # Logical addresses (§5.4, §7.12, §10.19)
//!
//! [`MemoryTable::build_lam`] maps a buffer range to page addresses in the adapter's simulated
//! 64-bit logical space:
//!
//! ```text
//!  63          44 43      32 31               12 11        0
//! | LAM slot + 1 | gen (12) | page index (20)   | in page    |
//! ```
//!
//! The LAM slot field is never 0, so no logical address below 2⁴⁴ is valid; the generation is
//! bumped when a LAM is released, so a released LAM's addresses fail even after its slot is
//! reused (until the 12-bit generation wraps, 4096 reuses of one slot later). Pages of one LAM
//! are logically contiguous, so a privileged-token SGE may span several pages of one LAM. A LAM
//! maps at most 2²⁰ pages (4 GiB); only the bytes of the range it was built for are reachable
//! through it: the parts of its first and last pages outside that range are not.
//!
//! # Checks and their statuses
//!
//! Local SGEs ([`MemoryTable::check_local`], §5.3, §10.1): every failure is
//! `STATUS_ACCESS_VIOLATION` — unknown or stale token, a window's token, a region of another PD,
//! another PD's privileged token, missing rights, range outside the region, address range that
//! wraps. Rights: [`LocalAccess::Read`] always granted; [`LocalAccess::Write`] needs local write;
//! [`LocalAccess::ReadSink`] needs local write and, unless the adapter sets
//! `RDMA_READ_SINK_NOT_REQUIRED`, the read-sink right. The privileged token grants read and
//! write on any live LAM address, and read sink only when the sink right is not required.
//!
//! Inbound tagged accesses ([`MemoryTable::check_remote`]) fail, in this order (siw's order):
//!
//! | step | failure | error |
//! |---|---|---|
//! | 1 | no live region or bound window has the STag (also: the privileged token, except as our own read sink when sinks need no right) | [`TaggedError::InvalidStag`](netdirect_proto::stream::TaggedError::InvalidStag) |
//! | 2 | the STag belongs to another PD | [`TaggedError::NotAssociated`](netdirect_proto::stream::TaggedError::NotAssociated) |
//! | 3 | the region or window lacks the right ([`Access::ReadSink`](netdirect_proto::stream::Access::ReadSink) on a window always does) | [`TaggedError::AccessRights`](netdirect_proto::stream::TaggedError::AccessRights) |
//! | 4 | `to + len` does not fit in a `u64` (reaches 2⁶⁴) | [`TaggedError::ToWrap`](netdirect_proto::stream::TaggedError::ToWrap) |
//! | 5 | `[to, to + len)` is not inside the region or window | [`TaggedError::BaseBounds`](netdirect_proto::stream::TaggedError::BaseBounds) |
//!
//! Zero-length checks (local or remote) are checked like any other: the token, PD and rights
//! must be good and `to` must lie in `[base, base + length]` (end included); the lease is empty.
//!
//! # Leases
//!
//! A [`Lease`] is what a check returns: it holds clones of the [`Buffer`](netdirect::Buffer)s behind the checked
//! range and maps tagged offsets to bytes, across non-contiguous pages. It stays usable after
//! the region is invalidated, deregistered or closed, and after its LAM is released: in-flight
//! work finishes on memory that is still alive, and no memory is ever freed under the engine.
//! That is the memory-safety guarantee; the NDK's rule that the consumer must not reuse memory
//! while work on it is outstanding is unchanged. A lease never reaches a byte outside the range it
//! was checked for: every access is re-checked against that range (cheaply) and fails with
//! [`LeaseRangeError`] instead of panicking.
//!
//! # Decisions (where the NDK is silent, §10)
//!
//! | case | decision |
//! |---|---|
//! | token layout (§10.17) | `index << 8 \| key`, 24-bit index, 8-bit key; index 0 unused |
//! | key rotation (§10.6) | on every register, fast register, bind, and slot free |
//! | local vs remote token | the same value |
//! | object handle closed or stale ([`MrId`], [`MwId`], [`PdId`]) | `STATUS_INVALID_HANDLE` |
//! | table full (token slots, LAM slots) | `STATUS_INSUFFICIENT_RESOURCES` |
//! | register: zero length, range outside the buffer, address range wraps | `STATUS_INVALID_PARAMETER` |
//! | register: unknown `MrFlags` bits | `STATUS_INVALID_PARAMETER` |
//! | operation on the wrong kind of MR (register on fast-register MR, initialize or fast register on a regular MR, invalidate or deregister of the other kind) | `STATUS_INVALID_DEVICE_REQUEST` (NDSPI's "malformed request") |
//! | operation in the wrong state: register or fast register while registered, deregister or invalidate while not registered, fast register before initialize, bind on a bound window, invalidate of an unbound window (§10.8), bind over an unregistered MR | `STATUS_INVALID_DEVICE_REQUEST` (NDSPI uses it for invalidating an unbound window; one status for "not now") |
//! | re-registration after deregister | allowed, new key |
//! | initialize: 0 pages | `STATUS_INVALID_PARAMETER`; above the adapter's maximum: `STATUS_IMPLEMENTATION_LIMIT` (§3.8) |
//! | initialize again while not registered | allowed, replaces the page capacity and remote flag; while registered: `STATUS_INVALID_DEVICE_REQUEST` |
//! | fast register, check order | handle → kind → initialized → not registered → flags ⊆ `FAST_REGISTER_VALID` (`INVALID_PARAMETER`) → remote right on a non-remote MR (`ACCESS_VIOLATION`) → 1 ≤ pages ≤ initialized count → FBO < `PAGE_SIZE` → 1 ≤ length ≤ pages·`PAGE_SIZE` − FBO → base = n·`PAGE_SIZE` + FBO → base + length does not wrap (all `INVALID_PARAMETER`) → every page a live logical address whose bytes the LAM maps (`ACCESS_VIOLATION`) |
//! | fast register with `RDMA_READ_SINK` | grants the sink right; when the adapter sets `RDMA_READ_SINK_NOT_REQUIRED` the flag is accepted and not needed |
//! | LAM released while a fast registration uses its pages | the registration stays valid (it holds the buffers); the NDK forbids it anyway |
//! | deregister of an MR with windows bound (§10.8) | `STATUS_DEVICE_BUSY` (NDSPI), nothing changes |
//! | close of an MR with windows bound (§2.5, §2.6) | never fails: the MR's token dies at once (locally and remotely), the windows keep their bindings, and the close completes when the last of them is unbound |
//! | close of a registered MR without windows | implicit deregister / invalidate (close never fails) |
//! | close of a bound window | implicit unbind |
//! | close of a PD that still owns MRs or MWs | `STATUS_DEVICE_BUSY` (the object model keeps the PD until its children are closed, §2.6) |
//! | bind over a fast-register MR (§10.8) | refused, `STATUS_ACCESS_VIOLATION` ("the MR does not permit" windows) |
//! | bind, check order | handles → flags ⊆ `BIND_VALID` and at least one remote right (`INVALID_PARAMETER`) → window unbound (`INVALID_DEVICE_REQUEST`) → same PD (`INVALID_PARAMETER`) → MR kind (`ACCESS_VIOLATION`) → MR registered (`INVALID_DEVICE_REQUEST`) → remote write needs MR local write (`ACCESS_VIOLATION`, §7.10) → 1 ≤ length, range inside the MR (`INVALID_PARAMETER`, §9.7) |
//! | window association | with the PD; not with one QP (iWARP type-2 QP association is left to the caller) |
//! | remote invalidation (Send with Invalidate, read-local-invalidate) of a regular MR | [`TaggedError::AccessRights`](netdirect_proto::stream::TaggedError::AccessRights); of a privileged token: [`TaggedError::InvalidStag`](netdirect_proto::stream::TaggedError::InvalidStag) |
//! | window token in a local SGE | `STATUS_ACCESS_VIOLATION`: windows are for remote access only |
//! | build LAM: zero length or range outside the buffer | `STATUS_INVALID_PARAMETER`; more than 2²⁰ pages: `STATUS_INSUFFICIENT_RESOURCES` |
//! | release of an unknown or already released LAM | `STATUS_INVALID_PARAMETER` (`NdkReleaseLAM` is `VOID`; the object model may ignore it) |
//! | region whose end would be 2⁶⁴ | refused: `base + length` must fit in a `u64` |

mod checks;
mod fast_register;
mod invalidate;
mod lams;
mod leases;
mod regions;
mod slots;
mod tokens;
mod windows;

pub use fast_register::FastRegisterPlan;
pub use lams::{MAX_LAM_PAGES, MAX_LAMS};
pub use leases::{Lease, LeaseRangeError, Spans};
pub use regions::OnReleased;
pub use tokens::MAX_TOKEN_INDEX;
pub(crate) use tokens::next_token;
pub use windows::BindPlan;

use std::collections::VecDeque;
use std::fmt;

use netdirect_types::{AdapterFlags, LocalToken, PAGE_SIZE};
use parking_lot::RwLock;

use slots::{Entry, Slot, Tables};

const PAGE: u64 = PAGE_SIZE as u64;

/// A memory table's limits and the adapter settings its rules depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    /// The largest page count [`MemoryTable::initialize_fast_register`] accepts (above it:
    /// `STATUS_IMPLEMENTATION_LIMIT`).
    pub frmr_max_pages: u32,
    /// The adapter advertises `NDK_ADAPTER_FLAG_RDMA_READ_SINK_NOT_REQUIRED`: read sinks need no
    /// sink right, and privileged-token addresses may be read sinks.
    pub read_sink_not_required: bool,
    /// Token slots (PDs + MRs + MWs alive at once), at most [`MAX_TOKEN_INDEX`].
    pub max_objects: u32,
    /// LAMs alive at once, at most [`MAX_LAMS`].
    pub max_lams: u32,
}

impl MemoryConfig {
    /// A configuration for an adapter with these flags (only `RDMA_READ_SINK_NOT_REQUIRED`
    /// matters here) and this fast-register page maximum, with the default table sizes.
    pub fn for_adapter(frmr_max_pages: u32, flags: AdapterFlags) -> MemoryConfig {
        MemoryConfig {
            frmr_max_pages,
            read_sink_not_required: flags.contains(AdapterFlags::RDMA_READ_SINK_NOT_REQUIRED),
            ..MemoryConfig::default()
        }
    }
}

impl Default for MemoryConfig {
    /// 256 fast-register pages (1 MiB), read sinks need the sink right, 2²⁰ objects, 2¹⁶ LAMs.
    fn default() -> Self {
        MemoryConfig {
            frmr_max_pages: 256,
            read_sink_not_required: false,
            max_objects: 1 << 20,
            max_lams: 1 << 16,
        }
    }
}

/// What a [`MemoryTable`] holds ([`MemoryTable::usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryUsage {
    /// Protection domains.
    pub pds: usize,
    /// Memory regions (registered or not).
    pub mrs: usize,
    /// Memory regions with a live registration (regular or fast).
    pub regions: usize,
    /// Memory windows (bound or not).
    pub mws: usize,
    /// Bound memory windows.
    pub bound_windows: usize,
    /// Logical address mappings.
    pub lams: usize,
}

/// A protection domain of a [`MemoryTable`] ([`MemoryTable::create_pd`]).
///
/// Carries the PD's privileged token, so [`PdId::privileged_token`] needs no lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PdId {
    serial: u64,
    token: u32,
}

impl PdId {
    /// `NdkGetPrivilegedMemoryRegionToken`: the token that lets this PD's SGEs carry logical
    /// addresses from LAMs (local read and write only, never remote).
    #[doc(alias = "NdkGetPrivilegedMemoryRegionToken")]
    pub fn privileged_token(self) -> LocalToken {
        LocalToken(self.token)
    }
}

/// A memory region of a [`MemoryTable`] ([`MemoryTable::create_mr`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MrId {
    index: u32,
    serial: u64,
}

/// A memory window of a [`MemoryTable`] ([`MemoryTable::create_mw`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MwId {
    index: u32,
    serial: u64,
}

/// The target of an `NdkInvalidate`: a fast-registered MR or a bound MW.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemoryObject {
    /// A memory region.
    Mr(MrId),
    /// A memory window.
    Mw(MwId),
}

impl From<MrId> for MemoryObject {
    fn from(mr: MrId) -> Self {
        MemoryObject::Mr(mr)
    }
}

impl From<MwId> for MemoryObject {
    fn from(mw: MwId) -> Self {
        MemoryObject::Mw(mw)
    }
}

/// How a local SGE is used (what [`MemoryTable::check_local`] checks it for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalAccess {
    /// The adapter reads the bytes (send, write, inline-free gather). Always granted.
    Read,
    /// The adapter writes the bytes (receive buffers). Needs local write.
    Write,
    /// The bytes are the destination of an RDMA read. Needs local write and, unless the adapter
    /// sets `RDMA_READ_SINK_NOT_REQUIRED`, the read-sink right.
    ReadSink,
}

/// The adapter's table of protection domains, memory regions, memory windows and logical
/// address mappings. See the [module docs](self) for the rules and statuses.
///
/// `Send + Sync`; share it with an `Arc`.
pub struct MemoryTable {
    config: MemoryConfig,
    tables: RwLock<Tables>,
}

impl fmt::Debug for MemoryTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.tables.read();
        f.debug_struct("MemoryTable")
            .field("config", &self.config)
            .field("slots", &(t.slots.len() - 1 - t.free.len()))
            .field("lams", &(t.lams.len() - t.lam_free.len()))
            .finish()
    }
}

impl MemoryTable {
    /// An empty table.
    pub fn new(config: MemoryConfig) -> MemoryTable {
        MemoryTable {
            config,
            tables: RwLock::new(Tables {
                // Slot 0 is never handed out: tokens 0..=0xFF stay invalid.
                slots: vec![Slot {
                    key: 0,
                    serial: 0,
                    pd: None,
                    entry: Entry::Free,
                }],
                free: VecDeque::new(),
                next_serial: 0,
                lams: Vec::new(),
                lam_free: VecDeque::new(),
            }),
        }
    }

    /// The configuration the table was made with.
    pub fn config(&self) -> &MemoryConfig {
        &self.config
    }

    /// What the table holds now (scans it: for diagnostics and tests).
    pub fn usage(&self) -> MemoryUsage {
        let t = self.tables.read();
        let mut u = MemoryUsage {
            lams: t.lams.iter().filter(|l| l.lam.is_some()).count(),
            ..MemoryUsage::default()
        };
        for s in &t.slots {
            match &s.entry {
                Entry::Free => {}
                Entry::Privileged => u.pds += 1,
                Entry::Mr(e) => {
                    u.mrs += 1;
                    u.regions += usize::from(e.region.is_some());
                }
                Entry::Mw(w) => {
                    u.mws += 1;
                    u.bound_windows += usize::from(w.binding.is_some());
                }
            }
        }
        u
    }
}
