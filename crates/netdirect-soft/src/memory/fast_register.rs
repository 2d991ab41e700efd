//! Fast registration (§7.9): initialize, then register over LAM pages.

use std::sync::Arc;

use netdirect_types::{LogicalAddress, OpFlags, RemoteToken, Status};

use super::lams::LAM_OFFSET_MASK;
use super::leases::Mapping;
use super::regions::{MrKind, Region, Rights};
use super::slots::Tables;
use super::tokens::{join, rotate};
use super::{MemoryTable, MrId, PAGE};

impl MemoryTable {
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
    /// (`STATUS_ACCESS_VIOLATION`), page count, FBO, length, base address, wrap, pages. The
    /// checks run under the read lock, the change under the write lock
    /// ([`MemoryTable::commit_fast_register`]).
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
        let plan = {
            let t = self.tables.read();
            let target = t.fast_register_target(mr)?;
            if target.registered {
                return Err(Status::INVALID_DEVICE_REQUEST);
            }
            t.plan_fast_register(mr, target, pages, fbo, length, base_va, flags)?
        };
        self.commit_fast_register(plan)
    }

    /// Every check of [`MemoryTable::fast_register`] except "not registered yet" (a queued
    /// invalidate may come first), under the read lock, changing nothing: what a provider
    /// answers inline when the request is posted. The plan commits with
    /// [`MemoryTable::commit_fast_register`].
    pub fn check_fast_register(
        &self,
        mr: MrId,
        pages: &[LogicalAddress],
        fbo: u32,
        length: u64,
        base_va: u64,
        flags: OpFlags,
    ) -> Result<FastRegisterPlan, Status> {
        let t = self.tables.read();
        let target = t.fast_register_target(mr)?;
        t.plan_fast_register(mr, target, pages, fbo, length, base_va, flags)
    }

    /// Carries out a checked fast register, under the write lock, and returns the new token.
    /// What may have changed since the check is checked again: the handle
    /// (`STATUS_INVALID_HANDLE`), not registered (`STATUS_INVALID_DEVICE_REQUEST`), and the
    /// initialization the plan was checked against (a re-initialization in between: page count
    /// `STATUS_INVALID_PARAMETER`, remote rights `STATUS_ACCESS_VIOLATION`).
    pub fn commit_fast_register(&self, plan: FastRegisterPlan) -> Result<RemoteToken, Status> {
        let FastRegisterPlan { mr, pages, region } = plan;
        let mut t = self.tables.write();
        let target = t.fast_register_target(mr)?;
        if target.registered {
            return Err(Status::INVALID_DEVICE_REQUEST);
        }
        if (region.rights.remote_read || region.rights.remote_write) && !target.remote_access {
            return Err(Status::ACCESS_VIOLATION);
        }
        if pages > target.max_pages as usize {
            return Err(Status::INVALID_PARAMETER);
        }
        let (e, key) = t.mr_mut(mr)?;
        *key = rotate(*key);
        e.region = Some(region);
        Ok(RemoteToken(join(mr.index, *key)))
    }
}

/// A fast register checked under the read lock ([`MemoryTable::check_fast_register`]), for
/// [`MemoryTable::commit_fast_register`].
pub struct FastRegisterPlan {
    mr: MrId,
    /// Pages in the request (checked against the initialization again at commit).
    pages: usize,
    region: Region,
}

impl std::fmt::Debug for FastRegisterPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastRegisterPlan")
            .field("mr", &self.mr)
            .field("pages", &self.pages)
            .field("base", &self.region.base)
            .field("len", &self.region.len)
            .finish()
    }
}

/// A fast-register MR's state, as its first checks see it.
#[derive(Clone, Copy)]
struct Target {
    max_pages: u32,
    remote_access: bool,
    registered: bool,
}

impl Tables {
    /// A fast register's first checks, in order: handle, kind, initialized.
    fn fast_register_target(&self, mr: MrId) -> Result<Target, Status> {
        let e = self.mr(mr)?;
        let MrKind::Fast { init } = e.kind else {
            return Err(Status::INVALID_DEVICE_REQUEST);
        };
        let Some((max_pages, remote_access)) = init else {
            return Err(Status::INVALID_DEVICE_REQUEST);
        };
        Ok(Target {
            max_pages,
            remote_access,
            registered: e.region.is_some(),
        })
    }

    /// The rest of a fast register's checks, in order (after the first ones and, for a
    /// registration carried out now, "not registered"): flags, remote rights, page count, FBO,
    /// length, base address, wrap, pages. Resolves the pages into the region's mapping.
    #[allow(clippy::too_many_arguments)]
    fn plan_fast_register(
        &self,
        mr: MrId,
        target: Target,
        pages: &[LogicalAddress],
        fbo: u32,
        length: u64,
        base_va: u64,
        flags: OpFlags,
    ) -> Result<FastRegisterPlan, Status> {
        if !OpFlags::FAST_REGISTER_VALID.contains(flags) {
            return Err(Status::INVALID_PARAMETER);
        }
        let rights = Rights {
            local_write: flags.grants_local_write(),
            remote_read: flags.grants_remote_read(),
            remote_write: flags.grants_remote_write(),
            read_sink: flags.contains(OpFlags::RDMA_READ_SINK),
        };
        if (rights.remote_read || rights.remote_write) && !target.remote_access {
            return Err(Status::ACCESS_VIOLATION);
        }
        let fbo = u64::from(fbo);
        if pages.is_empty() || pages.len() as u64 > u64::from(target.max_pages) || fbo >= PAGE {
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
            if !page.is_page_aligned() {
                return Err(Status::ACCESS_VIOLATION);
            }
            if done == length {
                // Pages past the region's end carry no bytes, but must still be live pages.
                let live = self
                    .lam(page.0)
                    .is_some_and(|(lam, off)| off / PAGE < lam.pages);
                if !live {
                    return Err(Status::ACCESS_VIOLATION);
                }
                continue;
            }
            let in_page = if k == 0 { fbo } else { 0 };
            let n = (PAGE - in_page).min(length - done);
            let lam_offset = page.0 & LAM_OFFSET_MASK;
            let from = lam_offset + in_page;
            let Some((lam, _)) = self.lam(page.0).filter(|(lam, _)| {
                lam_offset / PAGE < lam.pages && from >= lam.fbo && from + n <= lam.fbo + lam.len
            }) else {
                return Err(Status::ACCESS_VIOLATION);
            };
            // The LAM's single span starts at its first mapped byte (offset `fbo`).
            let span = &lam.map.spans[0];
            let at = span.offset + (from - lam.fbo) as usize;
            Mapping::push_span(&mut spans, &span.buffer, at, n as usize);
            done += n;
        }
        Ok(FastRegisterPlan {
            mr,
            pages: pages.len(),
            region: Region {
                base: base_va,
                len: length,
                rights,
                map: Arc::new(Mapping::new(base_va, spans)),
            },
        })
    }
}
