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
//! | regular MR | [`MemoryTable::register_mr`] over a [`Buffer`] range; base address = `buffer.address() + offset` | [`MemoryTable::deregister_mr`], then re-registration is allowed |
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
//! | 1 | no live region or bound window has the STag (also: the privileged token, except as our own read sink when sinks need no right) | [`TaggedError::InvalidStag`] |
//! | 2 | the STag belongs to another PD | [`TaggedError::NotAssociated`] |
//! | 3 | the region or window lacks the right ([`Access::ReadSink`] on a window always does) | [`TaggedError::AccessRights`] |
//! | 4 | `to + len` does not fit in a `u64` (reaches 2⁶⁴) | [`TaggedError::ToWrap`] |
//! | 5 | `[to, to + len)` is not inside the region or window | [`TaggedError::BaseBounds`] |
//!
//! Zero-length checks (local or remote) are checked like any other: the token, PD and rights
//! must be good and `to` must lie in `[base, base + length]` (end included); the lease is empty.
//!
//! # Leases
//!
//! A [`Lease`] is what a check returns: it holds clones of the [`Buffer`]s behind the checked
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
//! | remote invalidation (Send with Invalidate, read-local-invalidate) of a regular MR | [`TaggedError::AccessRights`]; of a privileged token: [`TaggedError::InvalidStag`] |
//! | window token in a local SGE | `STATUS_ACCESS_VIOLATION`: windows are for remote access only |
//! | build LAM: zero length or range outside the buffer | `STATUS_INVALID_PARAMETER`; more than 2²⁰ pages: `STATUS_INSUFFICIENT_RESOURCES` |
//! | release of an unknown or already released LAM | `STATUS_INVALID_PARAMETER` (`NdkReleaseLAM` is `VOID`; the object model may ignore it) |
//! | region whose end would be 2⁶⁴ | refused: `base + length` must fit in a `u64` |

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use netdirect::{Buffer, Lam};
use netdirect_proto::stream::{Access, TaggedError};
use netdirect_types::{
    AdapterFlags, LocalToken, LogicalAddress, LogicalAddressMapping, MrFlags, OpFlags, PAGE_SIZE,
    RemoteToken, Sge, Status,
};
use parking_lot::RwLock;

const PAGE: u64 = PAGE_SIZE as u64;

/// The largest token index: tokens have 24 index bits.
pub const MAX_TOKEN_INDEX: u32 = (1 << 24) - 1;

/// The most pages one LAM maps (2²⁰, 4 GiB): the page-index field of a logical address.
pub const MAX_LAM_PAGES: u64 = 1 << 20;

/// The most LAMs alive at once (2²⁰ - 1): the LAM field of a logical address, minus the
/// never-used 0.
pub const MAX_LAMS: u32 = (1 << 20) - 1;

const LAM_SHIFT: u32 = 44;
const GEN_SHIFT: u32 = 32;
const GEN_MASK: u64 = 0xFFF;
const LAM_OFFSET_MASK: u64 = 0xFFFF_FFFF;

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

/// An access outside the range a [`Lease`] was checked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("range {to:#x}..+{len} outside the lease {lease:#x?}")]
pub struct LeaseRangeError {
    /// Tagged offset asked for.
    pub to: u64,
    /// Length asked for.
    pub len: u64,
    /// The range the lease covers.
    pub lease: Range<u64>,
}

fn split(token: u32) -> (u32, u8) {
    (token >> 8, token as u8)
}

fn join(index: u32, key: u8) -> u32 {
    (index << 8) | u32::from(key)
}

/// One contiguous piece of a region: `len` bytes of `buffer` from `offset`.
struct Span {
    buffer: Buffer,
    offset: usize,
    len: usize,
}

/// The bytes behind a region, in tagged-offset order: spans laid end to end from `base`.
struct Mapping {
    base: u64,
    spans: Vec<Span>,
    /// Offset (from `base`) of each span's first byte.
    starts: Vec<u64>,
}

impl Mapping {
    fn new(base: u64, spans: Vec<Span>) -> Mapping {
        let mut starts = Vec::with_capacity(spans.len());
        let mut len = 0u64;
        for s in &spans {
            starts.push(len);
            len += s.len as u64;
        }
        Mapping {
            base,
            spans,
            starts,
        }
    }

    /// Appends `len` bytes of `buffer` from `offset`, merging with the last span when the bytes
    /// follow it in the same buffer.
    fn push_span(spans: &mut Vec<Span>, buffer: &Buffer, offset: usize, len: usize) {
        if let Some(last) = spans.last_mut() {
            if last.buffer.ptr_eq(buffer) && last.offset + last.len == offset {
                last.len += len;
                return;
            }
        }
        spans.push(Span {
            buffer: buffer.clone(),
            offset,
            len,
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Rights {
    local_write: bool,
    remote_read: bool,
    remote_write: bool,
    read_sink: bool,
}

/// A live registration: `[base, base + len)` in tagged-offset space, over `map`.
struct Region {
    base: u64,
    len: u64,
    rights: Rights,
    map: Arc<Mapping>,
}

fn range_inside(base: u64, len: u64, to: u64, n: u64) -> bool {
    // `base + len` never wraps (checked at registration); `to + n` is checked here.
    match to.checked_add(n) {
        Some(end) => to >= base && end <= base + len,
        None => false,
    }
}

enum MrKind {
    Regular,
    Fast { init: Option<(u32, bool)> },
}

struct MrEntry {
    pd: PdId,
    kind: MrKind,
    region: Option<Region>,
    windows: u32,
    /// Closed while windows were bound: the handle is dead, the slot waits for the last
    /// window's unbind, which runs this.
    closing: Option<OnReleased>,
}

/// What runs when a closed MR's slot is finally freed ([`MemoryTable::close_mr`]).
pub type OnReleased = Box<dyn FnOnce() + Send + Sync>;

struct Binding {
    mr: MrId,
    base: u64,
    len: u64,
    remote_read: bool,
    remote_write: bool,
    map: Arc<Mapping>,
}

struct MwEntry {
    pd: PdId,
    binding: Option<Binding>,
}

enum Entry {
    Free,
    Privileged,
    Mr(MrEntry),
    Mw(MwEntry),
}

struct Slot {
    key: u8,
    serial: u64,
    /// For privileged slots: the PD. For MR and MW slots the PD lives in the entry.
    pd: Option<PdId>,
    entry: Entry,
}

struct LamEntry {
    pages: u64,
    fbo: u64,
    len: u64,
    /// The LAM's bytes; `map.base` is the logical address of the first byte (page 0 + FBO).
    map: Arc<Mapping>,
}

struct LamSlot {
    generation: u64,
    lam: Option<LamEntry>,
}

fn lam_address(slot: u32, generation: u64, page: u64) -> u64 {
    ((u64::from(slot) + 1) << LAM_SHIFT) | ((generation & GEN_MASK) << GEN_SHIFT) | (page * PAGE)
}

/// Splits a logical address into (LAM slot, generation, offset in the LAM).
fn lam_split(address: u64) -> Option<(u32, u64, u64)> {
    let field = address >> LAM_SHIFT;
    if field == 0 {
        return None;
    }
    Some((
        (field - 1) as u32,
        (address >> GEN_SHIFT) & GEN_MASK,
        address & LAM_OFFSET_MASK,
    ))
}

struct Tables {
    slots: Vec<Slot>,
    free: VecDeque<u32>,
    next_serial: u64,
    lams: Vec<LamSlot>,
    lam_free: VecDeque<u32>,
}

impl Tables {
    /// The live slot named by `token` (key matches, not free).
    fn by_token(&self, token: u32) -> Option<&Slot> {
        let (index, key) = split(token);
        let slot = self.slots.get(index as usize)?;
        (index != 0 && slot.key == key && !matches!(slot.entry, Entry::Free)).then_some(slot)
    }

    fn alloc(&mut self, max: u32, pd: Option<PdId>, entry: Entry) -> Result<(u32, u64), Status> {
        let index = match self.free.pop_front() {
            Some(i) => i,
            None => {
                let i = self.slots.len() as u32;
                if i > max.min(MAX_TOKEN_INDEX) {
                    return Err(Status::INSUFFICIENT_RESOURCES);
                }
                self.slots.push(Slot {
                    key: 0,
                    serial: 0,
                    pd: None,
                    entry: Entry::Free,
                });
                i
            }
        };
        self.next_serial += 1;
        let serial = self.next_serial;
        let slot = &mut self.slots[index as usize];
        slot.serial = serial;
        slot.pd = pd;
        slot.entry = entry;
        Ok((index, serial))
    }

    fn release(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        slot.entry = Entry::Free;
        slot.pd = None;
        slot.key = slot.key.wrapping_add(1);
        self.free.push_back(index);
    }

    /// The live slot `index` of generation `serial`: a stale or unknown handle is
    /// `STATUS_INVALID_HANDLE`.
    fn slot(&self, index: u32, serial: u64) -> Result<&Slot, Status> {
        self.slots
            .get(index as usize)
            .filter(|s| s.serial == serial)
            .ok_or(Status::INVALID_HANDLE)
    }

    fn slot_mut(&mut self, index: u32, serial: u64) -> Result<&mut Slot, Status> {
        self.slots
            .get_mut(index as usize)
            .filter(|s| s.serial == serial)
            .ok_or(Status::INVALID_HANDLE)
    }

    /// A live MR: a closed one (even while its windows hold its slot) is
    /// `STATUS_INVALID_HANDLE`.
    fn mr(&self, mr: MrId) -> Result<&MrEntry, Status> {
        match &self.slot(mr.index, mr.serial)?.entry {
            Entry::Mr(e) if e.closing.is_none() => Ok(e),
            _ => Err(Status::INVALID_HANDLE),
        }
    }

    fn mr_mut(&mut self, mr: MrId) -> Result<(&mut MrEntry, &mut u8), Status> {
        match self.slot_mut(mr.index, mr.serial)? {
            Slot {
                key,
                entry: Entry::Mr(e),
                ..
            } if e.closing.is_none() => Ok((e, key)),
            _ => Err(Status::INVALID_HANDLE),
        }
    }

    fn mw(&self, mw: MwId) -> Result<(&MwEntry, u8), Status> {
        match self.slot(mw.index, mw.serial)? {
            Slot {
                key,
                entry: Entry::Mw(e),
                ..
            } => Ok((e, *key)),
            _ => Err(Status::INVALID_HANDLE),
        }
    }

    fn mw_mut(&mut self, mw: MwId) -> Result<(&mut MwEntry, &mut u8), Status> {
        match self.slot_mut(mw.index, mw.serial)? {
            Slot {
                key,
                entry: Entry::Mw(e),
                ..
            } => Ok((e, key)),
            _ => Err(Status::INVALID_HANDLE),
        }
    }

    /// One window less on `mr` (after an unbind). When that frees a closed MR, returns what
    /// its close waits for; the caller runs it after releasing the table's lock.
    #[must_use]
    fn unbind_from(&mut self, mr: MrId) -> Option<OnReleased> {
        let Ok(Slot {
            entry: Entry::Mr(e),
            ..
        }) = self.slot_mut(mr.index, mr.serial)
        else {
            return None;
        };
        e.windows = e.windows.saturating_sub(1);
        if e.windows > 0 || e.closing.is_none() {
            return None;
        }
        let done = e.closing.take();
        self.release(mr.index);
        done
    }

    fn lam(&self, address: u64) -> Option<(&LamEntry, u64)> {
        let (slot, generation, offset) = lam_split(address)?;
        let s = self.lams.get(slot as usize)?;
        let lam = s.lam.as_ref()?;
        (s.generation & GEN_MASK == generation).then_some((lam, offset))
    }

    /// A lease on `[address, address + len)` of a live LAM, if the LAM maps all of it.
    fn lam_lease(&self, address: u64, len: u64) -> Option<Lease> {
        let (lam, offset) = self.lam(address)?;
        let end = offset.checked_add(len)?;
        (offset >= lam.fbo && end <= lam.fbo + lam.len).then(|| Lease {
            map: lam.map.clone(),
            start: address,
            end: address + len,
        })
    }
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

    // ---- protection domains ------------------------------------------------------------

    /// `NdkCreatePd`: a new PD with its privileged token.
    ///
    /// `STATUS_INSUFFICIENT_RESOURCES` when the token slots are used up.
    #[doc(alias = "NdkCreatePd")]
    pub fn create_pd(&self) -> Result<PdId, Status> {
        let mut t = self.tables.write();
        let (index, serial) = t.alloc(self.config.max_objects, None, Entry::Privileged)?;
        let slot = &mut t.slots[index as usize];
        let pd = PdId {
            serial,
            token: join(index, slot.key),
        };
        slot.pd = Some(pd);
        Ok(pd)
    }

    /// `NdkClosePd`: frees the PD and its privileged token.
    ///
    /// `STATUS_DEVICE_BUSY` while MRs or MWs of the PD exist (the object model keeps the PD
    /// until they are closed); `STATUS_INVALID_HANDLE` if already closed. Scans the table
    /// (closing a PD is rare).
    #[doc(alias = "NdkClosePd")]
    pub fn close_pd(&self, pd: PdId) -> Result<(), Status> {
        let mut t = self.tables.write();
        let (index, _) = split(pd.token);
        match t.slots.get(index as usize) {
            Some(s) if s.serial == pd.serial && matches!(s.entry, Entry::Privileged) => {}
            _ => return Err(Status::INVALID_HANDLE),
        }
        let busy = t.slots.iter().any(|s| match &s.entry {
            Entry::Mr(e) => e.pd == pd,
            Entry::Mw(e) => e.pd == pd,
            _ => false,
        });
        if busy {
            return Err(Status::DEVICE_BUSY);
        }
        t.release(index);
        Ok(())
    }

    // ---- memory regions ----------------------------------------------------------------

    /// `NdkCreateMr`: a new, unregistered MR in `pd`, for fast registration if `fast_register`.
    ///
    /// `STATUS_INVALID_HANDLE` for a closed PD, `STATUS_INSUFFICIENT_RESOURCES` when the token
    /// slots are used up.
    #[doc(alias = "NdkCreateMr")]
    pub fn create_mr(&self, pd: PdId, fast_register: bool) -> Result<MrId, Status> {
        let mut t = self.tables.write();
        self.live_pd(&t, pd)?;
        let kind = if fast_register {
            MrKind::Fast { init: None }
        } else {
            MrKind::Regular
        };
        let (index, serial) = t.alloc(
            self.config.max_objects,
            None,
            Entry::Mr(MrEntry {
                pd,
                kind,
                region: None,
                windows: 0,
                closing: None,
            }),
        )?;
        Ok(MrId { index, serial })
    }

    fn live_pd(&self, t: &Tables, pd: PdId) -> Result<(), Status> {
        match t.by_token(pd.token) {
            Some(s) if s.serial == pd.serial && matches!(s.entry, Entry::Privileged) => Ok(()),
            _ => Err(Status::INVALID_HANDLE),
        }
    }

    /// `NdkRegisterMr`: registers `len` bytes of `buffer` from `offset` with `flags`; the base
    /// address is `buffer.address() + offset`. Rotates the key; the new token is
    /// [`MemoryTable::local_token`] (= [`MemoryTable::remote_token`]).
    ///
    /// Statuses: `INVALID_HANDLE` (closed MR), `INVALID_DEVICE_REQUEST` (fast-register MR, or
    /// already registered), `INVALID_PARAMETER` (unknown flag bits, zero length, range outside
    /// the buffer, address range wraps).
    #[doc(alias = "NdkRegisterMr")]
    pub fn register_mr(
        &self,
        mr: MrId,
        buffer: &Buffer,
        offset: usize,
        len: usize,
        flags: MrFlags,
    ) -> Result<(), Status> {
        let mut t = self.tables.write();
        let (e, key) = t.mr_mut(mr)?;
        if !matches!(e.kind, MrKind::Regular) || e.region.is_some() {
            return Err(Status::INVALID_DEVICE_REQUEST);
        }
        if flags.bits() & !MrFlags::all().bits() != 0 || len == 0 {
            return Err(Status::INVALID_PARAMETER);
        }
        match offset.checked_add(len) {
            Some(end) if end <= buffer.len() => {}
            _ => return Err(Status::INVALID_PARAMETER),
        }
        let base = buffer.address().wrapping_add(offset as u64);
        if base < buffer.address() || base.checked_add(len as u64).is_none() {
            return Err(Status::INVALID_PARAMETER);
        }
        let map = Mapping::new(
            base,
            vec![Span {
                buffer: buffer.clone(),
                offset,
                len,
            }],
        );
        *key = key.wrapping_add(1);
        e.region = Some(Region {
            base,
            len: len as u64,
            rights: Rights {
                local_write: flags.grants_local_write(),
                remote_read: flags.grants_remote_read(),
                remote_write: flags.grants_remote_write(),
                read_sink: flags.is_rdma_read_sink(),
            },
            map: Arc::new(map),
        });
        Ok(())
    }

    /// `NdkDeregisterMr`: revokes a regular registration; the MR can be registered again.
    /// Leases already handed out stay usable.
    ///
    /// Statuses: `INVALID_HANDLE`, `INVALID_DEVICE_REQUEST` (fast-register MR, or not
    /// registered), `DEVICE_BUSY` (windows bound; nothing changes).
    #[doc(alias = "NdkDeregisterMr")]
    pub fn deregister_mr(&self, mr: MrId) -> Result<(), Status> {
        let mut t = self.tables.write();
        let (e, _) = t.mr_mut(mr)?;
        if !matches!(e.kind, MrKind::Regular) || e.region.is_none() {
            return Err(Status::INVALID_DEVICE_REQUEST);
        }
        if e.windows > 0 {
            return Err(Status::DEVICE_BUSY);
        }
        e.region = None;
        Ok(())
    }

    /// `NdkInitializeFastRegisterMr`: prepares a fast-register MR for up to `page_count` pages;
    /// `remote_access` must be set for any later fast registration with remote rights.
    ///
    /// Statuses: `INVALID_HANDLE`, `INVALID_DEVICE_REQUEST` (regular MR, or currently
    /// registered), `INVALID_PARAMETER` (0 pages), `IMPLEMENTATION_LIMIT` (more pages than the
    /// adapter's maximum).
    #[doc(alias = "NdkInitializeFastRegisterMr")]
    pub fn initialize_fast_register(
        &self,
        mr: MrId,
        page_count: u32,
        remote_access: bool,
    ) -> Result<(), Status> {
        let mut t = self.tables.write();
        let (e, _) = t.mr_mut(mr)?;
        let MrKind::Fast { init } = &mut e.kind else {
            return Err(Status::INVALID_DEVICE_REQUEST);
        };
        if e.region.is_some() {
            return Err(Status::INVALID_DEVICE_REQUEST);
        }
        if page_count == 0 {
            return Err(Status::INVALID_PARAMETER);
        }
        if page_count > self.config.frmr_max_pages {
            return Err(Status::IMPLEMENTATION_LIMIT);
        }
        *init = Some((page_count, remote_access));
        Ok(())
    }

    /// `NdkFastRegister`: registers `length` bytes from offset `fbo` of the first of `pages`
    /// (logical addresses from [`MemoryTable::build_lam`]) at `base_va`, with the rights in
    /// `flags`. Rotates the key and returns the new token (also [`MemoryTable::remote_token`]):
    /// readable as soon as this returns, as §7.9 requires. The registration takes effect at
    /// once.
    ///
    /// Every rule of §7.9, in this order (statuses in the module docs): handle, kind,
    /// initialized, not registered, flags, remote rights vs. initialization
    /// (`STATUS_ACCESS_VIOLATION`), page count, FBO, length, base address, wrap, pages.
    #[doc(alias = "NdkFastRegister")]
    pub fn fast_register(
        &self,
        mr: MrId,
        pages: &[LogicalAddress],
        fbo: u32,
        length: u64,
        base_va: u64,
        flags: OpFlags,
    ) -> Result<RemoteToken, Status> {
        self.fast_register_impl(mr, pages, fbo, length, base_va, flags, true)
    }

    /// Every check of [`MemoryTable::fast_register`] except "not registered yet" (a queued
    /// invalidate may come first), changing nothing: what a provider answers inline when the
    /// request is posted.
    pub fn check_fast_register(
        &self,
        mr: MrId,
        pages: &[LogicalAddress],
        fbo: u32,
        length: u64,
        base_va: u64,
        flags: OpFlags,
    ) -> Result<(), Status> {
        self.fast_register_impl(mr, pages, fbo, length, base_va, flags, false)
            .map(drop)
    }

    #[allow(clippy::too_many_arguments)]
    fn fast_register_impl(
        &self,
        mr: MrId,
        pages: &[LogicalAddress],
        fbo: u32,
        length: u64,
        base_va: u64,
        flags: OpFlags,
        commit: bool,
    ) -> Result<RemoteToken, Status> {
        let mut t = self.tables.write();
        let e = t.mr(mr)?;
        let MrKind::Fast { init } = e.kind else {
            return Err(Status::INVALID_DEVICE_REQUEST);
        };
        let Some((max_pages, remote_access)) = init else {
            return Err(Status::INVALID_DEVICE_REQUEST);
        };
        if e.region.is_some() && commit {
            return Err(Status::INVALID_DEVICE_REQUEST);
        }
        if !OpFlags::FAST_REGISTER_VALID.contains(flags) {
            return Err(Status::INVALID_PARAMETER);
        }
        let rights = Rights {
            local_write: flags.grants_local_write(),
            remote_read: flags.grants_remote_read(),
            remote_write: flags.grants_remote_write(),
            read_sink: flags.contains(OpFlags::RDMA_READ_SINK),
        };
        if (rights.remote_read || rights.remote_write) && !remote_access {
            return Err(Status::ACCESS_VIOLATION);
        }
        let fbo = u64::from(fbo);
        if pages.is_empty() || pages.len() as u64 > u64::from(max_pages) || fbo >= PAGE {
            return Err(Status::INVALID_PARAMETER);
        }
        if length == 0 || length > pages.len() as u64 * PAGE - fbo {
            return Err(Status::INVALID_PARAMETER);
        }
        if base_va % PAGE != fbo || base_va.checked_add(length).is_none() {
            return Err(Status::INVALID_PARAMETER);
        }
        // Resolve the pages: region byte r lives in page (fbo + r) / PAGE.
        let mut spans = Vec::new();
        let mut done = 0u64;
        for (k, page) in pages.iter().enumerate() {
            if done == length {
                // Pages past the region's end carry no bytes, but must still be live pages.
                let live = page.is_page_aligned()
                    && t.lam(page.0)
                        .is_some_and(|(lam, off)| off / PAGE < lam.pages);
                if !live {
                    return Err(Status::ACCESS_VIOLATION);
                }
                continue;
            }
            let in_page = if k == 0 { fbo } else { 0 };
            let n = (PAGE - in_page).min(length - done);
            let lam_offset = page.0 & LAM_OFFSET_MASK;
            let ok = page.is_page_aligned()
                && t.lam(page.0).is_some_and(|(lam, _)| {
                    let from = lam_offset + in_page;
                    lam_offset / PAGE < lam.pages
                        && from >= lam.fbo
                        && from + n <= lam.fbo + lam.len
                });
            if !ok {
                return Err(Status::ACCESS_VIOLATION);
            }
            let (lam, _) = t.lam(page.0).expect("checked above");
            // The LAM's single span starts at its first mapped byte (offset `fbo`).
            let span = &lam.map.spans[0];
            let at = span.offset + (lam_offset + in_page - lam.fbo) as usize;
            Mapping::push_span(&mut spans, &span.buffer, at, n as usize);
            done += n;
        }
        if !commit {
            return Ok(RemoteToken(0));
        }
        let map = Arc::new(Mapping::new(base_va, spans));
        let (e, key) = t.mr_mut(mr)?;
        *key = key.wrapping_add(1);
        e.region = Some(Region {
            base: base_va,
            len: length,
            rights,
            map,
        });
        Ok(RemoteToken(join(mr.index, *key)))
    }

    /// `NdkGetLocalTokenFromMr`: the MR's current token. Meaningful once registered (or, for a
    /// fast-register MR, after [`MemoryTable::fast_register`] returned); `STATUS_INVALID_HANDLE`
    /// for a closed MR.
    #[doc(alias = "NdkGetLocalTokenFromMr")]
    pub fn local_token(&self, mr: MrId) -> Result<LocalToken, Status> {
        let t = self.tables.read();
        t.mr(mr)?;
        Ok(LocalToken(join(mr.index, t.slots[mr.index as usize].key)))
    }

    /// `NdkGetRemoteTokenFromMr`: the same value as [`MemoryTable::local_token`].
    #[doc(alias = "NdkGetRemoteTokenFromMr")]
    pub fn remote_token(&self, mr: MrId) -> Result<RemoteToken, Status> {
        self.local_token(mr).map(|t| RemoteToken(t.0))
    }

    /// Whether the MR currently has a registration (regular or fast).
    pub fn is_registered(&self, mr: MrId) -> Result<bool, Status> {
        Ok(self.tables.read().mr(mr)?.region.is_some())
    }

    /// `NdkCloseMr`: deregisters or invalidates the MR implicitly; its token is invalid, locally
    /// and remotely, from the moment this returns. Without bound windows the slot is freed at
    /// once and `on_released` runs before this returns; with windows bound (its successors,
    /// NDK §2.6) the slot stays until the last of them is unbound (closed or invalidated), and
    /// `on_released` runs then, on that thread, outside the table's lock. Either way the handle
    /// is dead at once (`STATUS_INVALID_HANDLE` for anything else).
    ///
    /// `STATUS_INVALID_HANDLE` if already closed (`on_released` is dropped, not run).
    #[doc(alias = "NdkCloseMr")]
    pub fn close_mr(
        &self,
        mr: MrId,
        on_released: impl FnOnce() + Send + Sync + 'static,
    ) -> Result<(), Status> {
        let mut t = self.tables.write();
        let (e, key) = t.mr_mut(mr)?;
        if e.windows == 0 {
            t.release(mr.index);
            drop(t);
            on_released();
            return Ok(());
        }
        e.region = None;
        e.closing = Some(Box::new(on_released));
        *key = key.wrapping_add(1);
        Ok(())
    }

    // ---- memory windows ----------------------------------------------------------------

    /// `NdkCreateMw`: a new, unbound window in `pd`.
    #[doc(alias = "NdkCreateMw")]
    pub fn create_mw(&self, pd: PdId) -> Result<MwId, Status> {
        let mut t = self.tables.write();
        self.live_pd(&t, pd)?;
        let (index, serial) = t.alloc(
            self.config.max_objects,
            None,
            Entry::Mw(MwEntry { pd, binding: None }),
        )?;
        Ok(MwId { index, serial })
    }

    /// `NdkBind`: binds `mw` to `[va, va + len)` of the registered regular MR `mr` with the remote
    /// rights in `flags`. Rotates the window's key and returns its new remote token (also
    /// [`MemoryTable::mw_remote_token`]). Check order and statuses in the module docs.
    #[doc(alias = "NdkBind")]
    pub fn bind(
        &self,
        mw: MwId,
        mr: MrId,
        va: u64,
        len: u64,
        flags: OpFlags,
    ) -> Result<RemoteToken, Status> {
        self.bind_impl(mw, mr, va, len, flags, true)
    }

    /// Every check of [`MemoryTable::bind`] except "window not bound yet" (a queued invalidate
    /// may come first), changing nothing: the provider's inline answer when a bind is posted.
    pub fn check_bind(
        &self,
        mw: MwId,
        mr: MrId,
        va: u64,
        len: u64,
        flags: OpFlags,
    ) -> Result<(), Status> {
        self.bind_impl(mw, mr, va, len, flags, false).map(drop)
    }

    fn bind_impl(
        &self,
        mw: MwId,
        mr: MrId,
        va: u64,
        len: u64,
        flags: OpFlags,
        commit: bool,
    ) -> Result<RemoteToken, Status> {
        let mut t = self.tables.write();
        let (mr_pd, mr_kind_fast, region) = {
            let e = t.mr(mr)?;
            (
                e.pd,
                matches!(e.kind, MrKind::Fast { .. }),
                e.region
                    .as_ref()
                    .map(|r| (r.base, r.len, r.rights, r.map.clone())),
            )
        };
        let (w, _) = t.mw_mut(mw)?;
        let remote_read = flags.grants_remote_read();
        let remote_write = flags.grants_remote_write();
        if !OpFlags::BIND_VALID.contains(flags) || !(remote_read || remote_write) {
            return Err(Status::INVALID_PARAMETER);
        }
        if w.binding.is_some() && commit {
            return Err(Status::INVALID_DEVICE_REQUEST);
        }
        if w.pd != mr_pd {
            return Err(Status::INVALID_PARAMETER);
        }
        if mr_kind_fast {
            return Err(Status::ACCESS_VIOLATION);
        }
        let Some((base, rlen, rights, map)) = region else {
            return Err(Status::INVALID_DEVICE_REQUEST);
        };
        if remote_write && !rights.local_write {
            return Err(Status::ACCESS_VIOLATION);
        }
        if len == 0 || !range_inside(base, rlen, va, len) {
            return Err(Status::INVALID_PARAMETER);
        }
        if !commit {
            return Ok(RemoteToken(0));
        }
        let (w, key) = t.mw_mut(mw)?;
        *key = key.wrapping_add(1);
        w.binding = Some(Binding {
            mr,
            base: va,
            len,
            remote_read,
            remote_write,
            map,
        });
        let token = RemoteToken(join(mw.index, *key));
        t.mr_mut(mr)?.0.windows += 1;
        Ok(token)
    }

    /// `NdkGetRemoteTokenFromMw`: the window's current token (meaningful after
    /// [`MemoryTable::bind`]).
    #[doc(alias = "NdkGetRemoteTokenFromMw")]
    pub fn mw_remote_token(&self, mw: MwId) -> Result<RemoteToken, Status> {
        let (_, key) = self.tables.read().mw(mw)?;
        Ok(RemoteToken(join(mw.index, key)))
    }

    /// Whether the window is bound.
    pub fn is_bound(&self, mw: MwId) -> Result<bool, Status> {
        Ok(self.tables.read().mw(mw)?.0.binding.is_some())
    }

    /// `NdkCloseMw`: frees the window, unbinding it first if bound.
    #[doc(alias = "NdkCloseMw")]
    pub fn close_mw(&self, mw: MwId) -> Result<(), Status> {
        let mut t = self.tables.write();
        let (w, _) = t.mw_mut(mw)?;
        let released = w.binding.take().and_then(|b| t.unbind_from(b.mr));
        t.release(mw.index);
        drop(t);
        if let Some(f) = released {
            f();
        }
        Ok(())
    }

    // ---- invalidation ------------------------------------------------------------------

    /// `NdkInvalidate`: revokes a fast registration or a window binding. Leases already handed
    /// out stay usable.
    ///
    /// Statuses: `INVALID_HANDLE`; `INVALID_DEVICE_REQUEST` for a regular MR (those are
    /// deregistered), a fast-register MR that is not registered, or an unbound window (§10.8).
    #[doc(alias = "NdkInvalidate")]
    pub fn invalidate(&self, target: impl Into<MemoryObject>) -> Result<(), Status> {
        let mut t = self.tables.write();
        match target.into() {
            MemoryObject::Mr(mr) => {
                let (e, _) = t.mr_mut(mr)?;
                if !matches!(e.kind, MrKind::Fast { .. }) || e.region.is_none() {
                    return Err(Status::INVALID_DEVICE_REQUEST);
                }
                e.region = None;
            }
            MemoryObject::Mw(mw) => {
                let (w, _) = t.mw_mut(mw)?;
                let Some(b) = w.binding.take() else {
                    return Err(Status::INVALID_DEVICE_REQUEST);
                };
                if let Some(f) = t.unbind_from(b.mr) {
                    drop(t);
                    f();
                }
            }
        }
        Ok(())
    }

    /// Invalidation by token, within `pd`: a Send with Invalidate from the peer (§7.11), or a
    /// read with `RDMA_READ_LOCAL_INVALIDATE`. Only fast registrations and bound windows can be
    /// invalidated.
    ///
    /// Errors: [`TaggedError::InvalidStag`] (no live fast registration or bound window has the
    /// token; the privileged token), [`TaggedError::NotAssociated`] (another PD),
    /// [`TaggedError::AccessRights`] (a regular MR).
    pub fn invalidate_remote(&self, pd: PdId, stag: u32) -> Result<(), TaggedError> {
        let mut t = self.tables.write();
        let slot = t.by_token(stag).ok_or(TaggedError::InvalidStag)?;
        let index = stag >> 8;
        let serial = slot.serial;
        match &slot.entry {
            Entry::Mr(e) => {
                if e.region.is_none() {
                    return Err(TaggedError::InvalidStag);
                }
                if e.pd != pd {
                    return Err(TaggedError::NotAssociated);
                }
                if matches!(e.kind, MrKind::Regular) {
                    return Err(TaggedError::AccessRights);
                }
                let (e, _) = t
                    .mr_mut(MrId { index, serial })
                    .map_err(|_| TaggedError::InvalidStag)?;
                e.region = None;
                Ok(())
            }
            Entry::Mw(w) => {
                if w.binding.is_none() {
                    return Err(TaggedError::InvalidStag);
                }
                if w.pd != pd {
                    return Err(TaggedError::NotAssociated);
                }
                let (w, _) = t
                    .mw_mut(MwId { index, serial })
                    .map_err(|_| TaggedError::InvalidStag)?;
                if let Some(f) = w.binding.take().and_then(|b| t.unbind_from(b.mr)) {
                    drop(t);
                    f();
                }
                Ok(())
            }
            Entry::Privileged | Entry::Free => Err(TaggedError::InvalidStag),
        }
    }

    // ---- logical address mappings ------------------------------------------------------

    /// `NdkBuildLAM`: maps `len` bytes of `buffer` from `offset` to logical page addresses.
    /// Returns the page list, the FBO (offset of the first byte in its page, from the buffer's
    /// address) and, in [`Lam::context`], the mapping's id for
    /// [`MemoryTable::release_lam`].
    ///
    /// Statuses: `INVALID_PARAMETER` (zero length, range outside the buffer),
    /// `INSUFFICIENT_RESOURCES` (more than [`MAX_LAM_PAGES`] pages, or too many LAMs).
    #[doc(alias = "NdkBuildLAM")]
    pub fn build_lam(&self, buffer: &Buffer, offset: usize, len: usize) -> Result<Lam, Status> {
        match offset.checked_add(len) {
            Some(end) if len > 0 && end <= buffer.len() => {}
            _ => return Err(Status::INVALID_PARAMETER),
        }
        let fbo = buffer.address().wrapping_add(offset as u64) % PAGE;
        let pages = (fbo + len as u64).div_ceil(PAGE);
        if pages > MAX_LAM_PAGES {
            return Err(Status::INSUFFICIENT_RESOURCES);
        }
        let mut t = self.tables.write();
        let slot = match t.lam_free.pop_front() {
            Some(s) => s,
            None => {
                let s = t.lams.len() as u32;
                if s >= self.config.max_lams.min(MAX_LAMS) {
                    return Err(Status::INSUFFICIENT_RESOURCES);
                }
                t.lams.push(LamSlot {
                    generation: 0,
                    lam: None,
                });
                s
            }
        };
        let entry = &mut t.lams[slot as usize];
        let generation = entry.generation & GEN_MASK;
        let first = lam_address(slot, generation, 0);
        entry.lam = Some(LamEntry {
            pages,
            fbo,
            len: len as u64,
            map: Arc::new(Mapping::new(
                first + fbo,
                vec![Span {
                    buffer: buffer.clone(),
                    offset,
                    len,
                }],
            )),
        });
        Ok(Lam {
            mapping: LogicalAddressMapping {
                adapter_page_array: (0..pages)
                    .map(|p| LogicalAddress(lam_address(slot, generation, p)))
                    .collect(),
            },
            fbo: fbo as u32,
            context: first,
        })
    }

    /// `NdkReleaseLAM`: unmaps `lam`; its addresses become invalid for privileged-token SGEs and
    /// fast registrations. Registrations and leases made from it stay valid.
    ///
    /// `STATUS_INVALID_PARAMETER` if `lam` is unknown or already released.
    #[doc(alias = "NdkReleaseLAM")]
    pub fn release_lam(&self, lam: &Lam) -> Result<(), Status> {
        let mut t = self.tables.write();
        let Some((slot, generation, 0)) = lam_split(lam.context) else {
            return Err(Status::INVALID_PARAMETER);
        };
        match t.lams.get_mut(slot as usize) {
            Some(s) if s.lam.is_some() && s.generation & GEN_MASK == generation => {
                s.lam = None;
                s.generation = s.generation.wrapping_add(1);
                t.lam_free.push_back(slot);
                Ok(())
            }
            _ => Err(Status::INVALID_PARAMETER),
        }
    }

    // ---- checks ------------------------------------------------------------------------

    /// Checks a consumer SGE of `pd` for `access` and returns a lease on its bytes
    /// (`[sge.address, sge.address + sge.length)`).
    ///
    /// Every failure is `STATUS_ACCESS_VIOLATION` (see the module docs for the cases).
    pub fn check_local(&self, pd: PdId, sge: &Sge, access: LocalAccess) -> Result<Lease, Status> {
        const AV: Status = Status::ACCESS_VIOLATION;
        let t = self.tables.read();
        let slot = t.by_token(sge.token.0).ok_or(AV)?;
        let len = u64::from(sge.length);
        match &slot.entry {
            Entry::Privileged => {
                if slot.pd != Some(pd) {
                    return Err(AV);
                }
                if access == LocalAccess::ReadSink && !self.config.read_sink_not_required {
                    return Err(AV);
                }
                t.lam_lease(sge.address, len).ok_or(AV)
            }
            Entry::Mr(e) => {
                let r = e.region.as_ref().ok_or(AV)?;
                let granted = match access {
                    LocalAccess::Read => true,
                    LocalAccess::Write => r.rights.local_write,
                    LocalAccess::ReadSink => {
                        r.rights.local_write
                            && (r.rights.read_sink || self.config.read_sink_not_required)
                    }
                };
                if e.pd != pd || !granted || !range_inside(r.base, r.len, sge.address, len) {
                    return Err(AV);
                }
                Ok(Lease {
                    map: r.map.clone(),
                    start: sge.address,
                    end: sge.address + len,
                })
            }
            Entry::Mw(_) | Entry::Free => Err(AV),
        }
    }

    /// Checks an inbound tagged access for the iWARP engine (the engine's
    /// [`Host::tagged`](netdirect_proto::stream::Host::tagged)): `len` bytes at tagged offset
    /// `to` of `stag`, for `access`, on a connection of `pd`. Check order in the module docs.
    /// Never overflows or panics, whatever the inputs.
    pub fn check_remote(
        &self,
        pd: PdId,
        stag: u32,
        to: u64,
        len: u64,
        access: Access,
    ) -> Result<Lease, TaggedError> {
        let t = self.tables.read();
        let slot = t.by_token(stag).ok_or(TaggedError::InvalidStag)?;
        let (base, rlen, map) = match &slot.entry {
            Entry::Privileged => {
                // Only as the sink of our own RDMA read, and only if sinks need no right.
                if access != Access::ReadSink || !self.config.read_sink_not_required {
                    return Err(TaggedError::InvalidStag);
                }
                if slot.pd != Some(pd) {
                    return Err(TaggedError::NotAssociated);
                }
                to.checked_add(len).ok_or(TaggedError::ToWrap)?;
                return t.lam_lease(to, len).ok_or(TaggedError::BaseBounds);
            }
            Entry::Mr(e) => {
                let r = e.region.as_ref().ok_or(TaggedError::InvalidStag)?;
                if e.pd != pd {
                    return Err(TaggedError::NotAssociated);
                }
                let granted = match access {
                    Access::RemoteWrite => r.rights.remote_write,
                    Access::RemoteRead => r.rights.remote_read,
                    Access::ReadSink => {
                        r.rights.local_write
                            && (r.rights.read_sink || self.config.read_sink_not_required)
                    }
                };
                if !granted {
                    return Err(TaggedError::AccessRights);
                }
                (r.base, r.len, &r.map)
            }
            Entry::Mw(w) => {
                let b = w.binding.as_ref().ok_or(TaggedError::InvalidStag)?;
                if w.pd != pd {
                    return Err(TaggedError::NotAssociated);
                }
                let granted = match access {
                    Access::RemoteWrite => b.remote_write,
                    Access::RemoteRead => b.remote_read,
                    Access::ReadSink => false,
                };
                if !granted {
                    return Err(TaggedError::AccessRights);
                }
                (b.base, b.len, &b.map)
            }
            Entry::Free => return Err(TaggedError::InvalidStag),
        };
        let end = to.checked_add(len).ok_or(TaggedError::ToWrap)?;
        if !range_inside(base, rlen, to, len) {
            return Err(TaggedError::BaseBounds);
        }
        Ok(Lease {
            map: map.clone(),
            start: to,
            end,
        })
    }
}

/// A checked range of registered memory, kept alive while held (see the
/// [module docs](self#leases)).
///
/// Tagged offsets (`to`) are in the region's address space: the SGE's virtual address for a
/// local check, the tagged offset for a remote one. Clones are cheap (an `Arc`).
#[derive(Clone)]
pub struct Lease {
    map: Arc<Mapping>,
    start: u64,
    end: u64,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lease({:#x}..{:#x})", self.start, self.end)
    }
}

impl Lease {
    /// The first tagged offset the lease covers.
    pub fn to(&self) -> u64 {
        self.start
    }

    /// Bytes covered.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the lease covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The tagged-offset range covered.
    pub fn range(&self) -> Range<u64> {
        self.start..self.end
    }

    fn check(&self, to: u64, len: u64) -> Result<(), LeaseRangeError> {
        match to.checked_add(len) {
            Some(end) if to >= self.start && end <= self.end => Ok(()),
            _ => Err(LeaseRangeError {
                to,
                len,
                lease: self.range(),
            }),
        }
    }

    /// A lease on a sub-range of this one.
    pub fn sub(&self, to: u64, len: u64) -> Result<Lease, LeaseRangeError> {
        self.check(to, len)?;
        Ok(Lease {
            map: self.map.clone(),
            start: to,
            end: to + len,
        })
    }

    /// The buffer pieces behind `[to, to + len)`, in order: each a buffer and a byte range of
    /// it. For vectored I/O straight from (or into) registered memory.
    pub fn spans(&self, to: u64, len: u64) -> Result<Spans<'_>, LeaseRangeError> {
        self.check(to, len)?;
        if len == 0 {
            return Ok(Spans {
                map: &self.map,
                index: self.map.spans.len(),
                at: 0,
                remaining: 0,
            });
        }
        // `to` is inside the mapping (the lease was checked against the region, which the
        // mapping covers), so the offset fits.
        let rel = to - self.map.base;
        let index = self.map.starts.partition_point(|&s| s <= rel) - 1;
        Ok(Spans {
            map: &self.map,
            index,
            at: (rel - self.map.starts[index]) as usize,
            remaining: len,
        })
    }

    /// Calls `f` with each contiguous piece of `[to, to + len)`, in order (each under the
    /// buffer's read lock, one at a time).
    pub fn for_each_span(
        &self,
        to: u64,
        len: u64,
        mut f: impl FnMut(&[u8]),
    ) -> Result<(), LeaseRangeError> {
        for (buffer, range) in self.spans(to, len)? {
            buffer.with(|b| f(&b[range]));
        }
        Ok(())
    }

    /// Calls `f` with each contiguous piece of `[to, to + len)` for writing, in order (each
    /// under the buffer's write lock, one at a time).
    pub fn for_each_span_mut(
        &self,
        to: u64,
        len: u64,
        mut f: impl FnMut(&mut [u8]),
    ) -> Result<(), LeaseRangeError> {
        for (buffer, range) in self.spans(to, len)? {
            buffer.with_mut(|b| f(&mut b[range]));
        }
        Ok(())
    }

    /// Copies `out.len()` bytes at tagged offset `to` into `out`.
    pub fn read(&self, to: u64, out: &mut [u8]) -> Result<(), LeaseRangeError> {
        let mut at = 0;
        self.for_each_span(to, out.len() as u64, |piece| {
            out[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        })
    }

    /// Copies `data` to tagged offset `to`.
    pub fn write(&self, to: u64, data: &[u8]) -> Result<(), LeaseRangeError> {
        let mut at = 0;
        self.for_each_span_mut(to, data.len() as u64, |piece| {
            let n = piece.len();
            piece.copy_from_slice(&data[at..at + n]);
            at += n;
        })
    }
}

/// The pieces of a lease range ([`Lease::spans`]): `(buffer, byte range in that buffer)`.
pub struct Spans<'a> {
    map: &'a Mapping,
    index: usize,
    at: usize,
    remaining: u64,
}

impl fmt::Debug for Spans<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spans")
            .field("index", &self.index)
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl<'a> Iterator for Spans<'a> {
    type Item = (&'a Buffer, Range<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let span = self.map.spans.get(self.index)?;
        let available = span.len.saturating_sub(self.at);
        let n = available.min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if n == 0 {
            self.remaining = 0;
            return None;
        }
        let start = span.offset + self.at;
        self.remaining -= n as u64;
        self.index += 1;
        self.at = 0;
        Some((&span.buffer, start..start + n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_lam_encodings() {
        assert_eq!(split(join(0x12_3456, 0xAB)), (0x12_3456, 0xAB));
        let a = lam_address(5, 0xFFF, 7);
        assert_eq!(a % PAGE, 0);
        assert_eq!(lam_split(a), Some((5, 0xFFF, 7 * PAGE)));
        assert_eq!(lam_split(0xFFF_FFFF_FFFF), None);
        assert_eq!(
            lam_split(lam_address(MAX_LAMS - 1, 0, 0)).unwrap().0,
            MAX_LAMS - 1
        );
    }

    #[test]
    fn mapping_merges_adjacent_pages() {
        let b = Buffer::new(3 * PAGE_SIZE);
        let mut spans = Vec::new();
        Mapping::push_span(&mut spans, &b, 0, PAGE_SIZE);
        Mapping::push_span(&mut spans, &b, PAGE_SIZE, PAGE_SIZE);
        Mapping::push_span(&mut spans, &b, 0, 10);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].len, 2 * PAGE_SIZE);
    }

    #[test]
    fn spans_stop_at_the_mapping_end() {
        let b = Buffer::new(10);
        let lease = Lease {
            map: Arc::new(Mapping::new(
                100,
                vec![Span {
                    buffer: b,
                    offset: 0,
                    len: 10,
                }],
            )),
            start: 100,
            end: 110,
        };
        let pieces: Vec<_> = lease.spans(104, 6).unwrap().map(|(_, r)| r).collect();
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0], 4..10);
        assert!(lease.spans(104, 7).is_err());
        assert_eq!(lease.spans(110, 0).unwrap().count(), 0);
    }
}
