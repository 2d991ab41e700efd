//! The checks every local SGE and every inbound tagged access goes through.

use netdirect_proto::stream::{Access, TaggedError};
use netdirect_types::{Sge, Status};

use super::leases::Lease;
use super::regions::range_inside;
use super::slots::Entry;
use super::{LocalAccess, MemoryTable, PdId};

impl MemoryTable {
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
