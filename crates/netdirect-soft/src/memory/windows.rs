//! Memory windows: bind (§7.10), tokens, close.

use std::sync::Arc;

use netdirect_types::{OpFlags, RemoteToken, Status};

use super::leases::Mapping;
use super::regions::{MrKind, OnReleased, range_inside};
use super::slots::{Entry, Slot, Tables};
use super::tokens::{join, rotate};
use super::{MemoryTable, MrId, MwId, PdId};

/// A window's binding: a range of a registration, with remote rights.
pub(super) struct Binding {
    pub(super) mr: MrId,
    pub(super) base: u64,
    pub(super) len: u64,
    pub(super) remote_read: bool,
    pub(super) remote_write: bool,
    pub(super) map: Arc<Mapping>,
}

/// A memory window: its PD and binding.
pub(super) struct MwEntry {
    pub(super) pd: PdId,
    pub(super) binding: Option<Binding>,
}

/// A bind checked under the read lock ([`MemoryTable::check_bind`]), for
/// [`MemoryTable::commit_bind`].
pub struct BindPlan {
    mw: MwId,
    binding: Binding,
}

impl std::fmt::Debug for BindPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindPlan")
            .field("mw", &self.mw)
            .field("mr", &self.binding.mr)
            .field(
                "range",
                &(self.binding.base..self.binding.base + self.binding.len),
            )
            .finish()
    }
}

impl Tables {
    /// A bind's first checks, in order: the MR's handle, the window's handle, the flags (valid
    /// for a bind, at least one remote right). Returns the window.
    fn bind_handles(&self, mw: MwId, mr: MrId, flags: OpFlags) -> Result<&MwEntry, Status> {
        self.mr(mr)?;
        let (w, _) = self.mw(mw)?;
        let valid = OpFlags::BIND_VALID.contains(flags);
        if !valid || !(flags.grants_remote_read() || flags.grants_remote_write()) {
            return Err(Status::INVALID_PARAMETER);
        }
        Ok(w)
    }

    /// The rest of a bind's checks, in order (after the handles and, for a bind carried out
    /// now, "window unbound"): same PD, MR kind, MR registered, rights, range.
    fn plan_bind(
        &self,
        mw: MwId,
        mr: MrId,
        va: u64,
        len: u64,
        flags: OpFlags,
    ) -> Result<BindPlan, Status> {
        let e = self.mr(mr)?;
        let (w, _) = self.mw(mw)?;
        if w.pd != e.pd {
            return Err(Status::INVALID_PARAMETER);
        }
        if matches!(e.kind, MrKind::Fast { .. }) {
            return Err(Status::ACCESS_VIOLATION);
        }
        let Some(r) = &e.region else {
            return Err(Status::INVALID_DEVICE_REQUEST);
        };
        let remote_write = flags.grants_remote_write();
        if remote_write && !r.rights.local_write {
            return Err(Status::ACCESS_VIOLATION);
        }
        if len == 0 || !range_inside(r.base, r.len, va, len) {
            return Err(Status::INVALID_PARAMETER);
        }
        Ok(BindPlan {
            mw,
            binding: Binding {
                mr,
                base: va,
                len,
                remote_read: flags.grants_remote_read(),
                remote_write,
                map: r.map.clone(),
            },
        })
    }

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
    ///
    /// The checks run under the read lock ([`MemoryTable::check_bind`], plus "window unbound"
    /// in its place in the order), the change under the write lock ([`MemoryTable::commit_bind`]).
    #[doc(alias = "NdkBind")]
    pub fn bind(
        &self,
        mw: MwId,
        mr: MrId,
        va: u64,
        len: u64,
        flags: OpFlags,
    ) -> Result<RemoteToken, Status> {
        let plan = {
            let t = self.tables.read();
            if t.bind_handles(mw, mr, flags)?.binding.is_some() {
                return Err(Status::INVALID_DEVICE_REQUEST);
            }
            t.plan_bind(mw, mr, va, len, flags)?
        };
        self.commit_bind(plan)
    }

    /// Every check of [`MemoryTable::bind`] except "window not bound yet" (a queued invalidate
    /// may come first), under the read lock, changing nothing: the provider's inline answer
    /// when a bind is posted. The plan commits with [`MemoryTable::commit_bind`].
    pub fn check_bind(
        &self,
        mw: MwId,
        mr: MrId,
        va: u64,
        len: u64,
        flags: OpFlags,
    ) -> Result<BindPlan, Status> {
        let t = self.tables.read();
        t.bind_handles(mw, mr, flags)?;
        t.plan_bind(mw, mr, va, len, flags)
    }

    /// Carries out a checked bind, under the write lock. What may have changed since the check
    /// is checked again: both handles live (`STATUS_INVALID_HANDLE`), the window unbound and
    /// the MR still holding the registration the plan was made for
    /// (`STATUS_INVALID_DEVICE_REQUEST`).
    pub fn commit_bind(&self, plan: BindPlan) -> Result<RemoteToken, Status> {
        let BindPlan { mw, binding } = plan;
        let mut t = self.tables.write();
        let same_registration = t
            .mr(binding.mr)?
            .region
            .as_ref()
            .is_some_and(|r| Arc::ptr_eq(&r.map, &binding.map));
        let (w, key) = t.mw_mut(mw)?;
        if w.binding.is_some() || !same_registration {
            return Err(Status::INVALID_DEVICE_REQUEST);
        }
        *key = rotate(*key);
        let token = RemoteToken(join(mw.index, *key));
        let mr = binding.mr;
        w.binding = Some(binding);
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
