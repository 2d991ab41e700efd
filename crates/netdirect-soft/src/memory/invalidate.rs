//! Invalidation: `NdkInvalidate`, and by token for Send with Invalidate and read-local-invalidate.

use netdirect_proto::stream::TaggedError;
use netdirect_types::Status;

use super::regions::MrKind;
use super::slots::Entry;
use super::tokens::split;
use super::{MemoryObject, MemoryTable, MrId, MwId, PdId};

impl MemoryTable {
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
        let (index, _) = split(stag);
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
}
