//! Logical address mappings (LAMs, §5.4, §7.12, §10.19).

use std::sync::Arc;

use netdirect::{Buffer, Lam};
use netdirect_types::{LogicalAddress, LogicalAddressMapping, Status};

use super::leases::{Lease, Mapping, Span};
use super::slots::Tables;
use super::{MemoryTable, PAGE};

/// The most pages one LAM maps (2²⁰, 4 GiB): the page-index field of a logical address.
pub const MAX_LAM_PAGES: u64 = 1 << 20;

/// The most LAMs alive at once (2²⁰ - 1): the LAM field of a logical address, minus the
/// never-used 0.
pub const MAX_LAMS: u32 = (1 << 20) - 1;

pub(super) const LAM_SHIFT: u32 = 44;
pub(super) const GEN_SHIFT: u32 = 32;
pub(super) const GEN_MASK: u64 = 0xFFF;
pub(super) const LAM_OFFSET_MASK: u64 = 0xFFFF_FFFF;

pub(super) struct LamEntry {
    pub(super) pages: u64,
    pub(super) fbo: u64,
    pub(super) len: u64,
    /// The LAM's bytes; `map.base` is the logical address of the first byte (page 0 + FBO).
    pub(super) map: Arc<Mapping>,
}

pub(super) struct LamSlot {
    pub(super) generation: u64,
    pub(super) lam: Option<LamEntry>,
}

pub(super) fn lam_address(slot: u32, generation: u64, page: u64) -> u64 {
    ((u64::from(slot) + 1) << LAM_SHIFT) | ((generation & GEN_MASK) << GEN_SHIFT) | (page * PAGE)
}

/// Splits a logical address into (LAM slot, generation, offset in the LAM).
pub(super) fn lam_split(address: u64) -> Option<(u32, u64, u64)> {
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

impl Tables {
    pub(super) fn lam(&self, address: u64) -> Option<(&LamEntry, u64)> {
        let (slot, generation, offset) = lam_split(address)?;
        let s = self.lams.get(slot as usize)?;
        let lam = s.lam.as_ref()?;
        (s.generation & GEN_MASK == generation).then_some((lam, offset))
    }

    /// A lease on `[address, address + len)` of a live LAM, if the LAM maps all of it.
    pub(super) fn lam_lease(&self, address: u64, len: u64) -> Option<Lease> {
        let (lam, offset) = self.lam(address)?;
        let end = offset.checked_add(len)?;
        (offset >= lam.fbo && end <= lam.fbo + lam.len).then(|| Lease {
            map: lam.map.clone(),
            start: address,
            end: address + len,
        })
    }
}

impl MemoryTable {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lam_encoding() {
        let a = lam_address(5, 0xFFF, 7);
        assert_eq!(a % PAGE, 0);
        assert_eq!(lam_split(a), Some((5, 0xFFF, 7 * PAGE)));
        assert_eq!(lam_split(0xFFF_FFFF_FFFF), None);
        assert_eq!(
            lam_split(lam_address(MAX_LAMS - 1, 0, 0)).unwrap().0,
            MAX_LAMS - 1
        );
    }
}
