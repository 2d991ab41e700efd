//! Memory windows: bind (§7.10), tokens, close.

use std::sync::Arc;

use netdirect_types::{OpFlags, RemoteToken, Status};

use super::leases::Mapping;
use super::regions::{MrKind, OnReleased, range_inside};
use super::slots::{Entry, Slot, Tables};
use super::tokens::{join, rotate};
use super::{MemoryTable, MrId, MwId, PdId};

pub(super) struct Binding {
    pub(super) mr: MrId,
    pub(super) base: u64,
    pub(super) len: u64,
    pub(super) remote_read: bool,
    pub(super) remote_write: bool,
    pub(super) map: Arc<Mapping>,
}

pub(super) struct MwEntry {
    pub(super) pd: PdId,
    pub(super) binding: Option<Binding>,
}

impl Tables {
    /// One window less on `mr` (after an unbind). When that frees a closed MR, returns what
    /// its close waits for; the caller runs it after releasing the table's lock.
    #[must_use]
    pub(super) fn unbind_from(&mut self, mr: MrId) -> Option<OnReleased> {
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
}

impl MemoryTable {
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

    pub(super) fn bind_impl(
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
        *key = rotate(*key);
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
}
