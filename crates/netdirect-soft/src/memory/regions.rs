//! Memory regions: creation, regular registration, tokens, close.

use std::sync::Arc;

use netdirect::Buffer;
use netdirect_types::{LocalToken, MrFlags, RemoteToken, Status};

use super::leases::{Mapping, Span};
use super::slots::Entry;
use super::tokens::{join, rotate};
use super::{MemoryTable, MrId, PdId};

/// The rights of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Rights {
    pub(super) local_write: bool,
    pub(super) remote_read: bool,
    pub(super) remote_write: bool,
    pub(super) read_sink: bool,
}

/// A live registration: `[base, base + len)` in tagged-offset space, over `map`.
pub(super) struct Region {
    pub(super) base: u64,
    pub(super) len: u64,
    pub(super) rights: Rights,
    pub(super) map: Arc<Mapping>,
}

pub(super) fn range_inside(base: u64, len: u64, to: u64, n: u64) -> bool {
    // `base + len` never wraps (checked at registration); `to + n` is checked here.
    match to.checked_add(n) {
        Some(end) => to >= base && end <= base + len,
        None => false,
    }
}

/// Regular (`NdkRegisterMr`) or fast-register (with its initialization: page count, remote).
pub(super) enum MrKind {
    Regular,
    Fast { init: Option<(u32, bool)> },
}

/// A memory region: its PD, kind, registration, and the windows bound to it.
pub(super) struct MrEntry {
    pub(super) pd: PdId,
    pub(super) kind: MrKind,
    pub(super) region: Option<Region>,
    pub(super) windows: u32,
    /// Closed while windows were bound: the handle is dead, the slot waits for the last
    /// window's unbind, which runs this.
    pub(super) closing: Option<OnReleased>,
}

/// What runs when a closed MR's slot is finally freed ([`MemoryTable::close_mr`]).
pub type OnReleased = Box<dyn FnOnce() + Send + Sync>;

impl MemoryTable {
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
        *key = rotate(*key);
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
        *key = rotate(*key);
        Ok(())
    }
}
