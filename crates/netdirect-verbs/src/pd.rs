//! The protection domain: `ibv_pd`.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use netdirect::{Mr, Mw, Object, Pd, Qp, QpConfig, QpWithSrqConfig, Request, Srq, SrqConfig};
use netdirect_types::{LocalToken, MrFlags, ObjectType, Status};

use crate::adapter::AdapterInner;
use crate::ffi::{PdH, ibv_sge};
use crate::mr::VerbsMr;
use crate::mw::VerbsMw;
use crate::qp::VerbsQp;
use crate::srq::VerbsSrq;

pub(crate) struct PdShared {
    pub(crate) adapter: Arc<AdapterInner>,
    pub(crate) pd: PdH,
    /// The PD's registered regions by local token: posts check their SGEs here first, so a bad
    /// token, range or right is refused inline with the NDK's `STATUS_ACCESS_VIOLATION`
    /// (verbs would accept the post and fail its completion, or on siw leave the request queued).
    pub(crate) regions: Regions,
}

/// A registered region as posts see it.
#[derive(Clone, Copy)]
pub(crate) struct Region {
    pub(crate) address: u64,
    pub(crate) length: u64,
    pub(crate) flags: MrFlags,
}

/// Registered regions by local token.
#[derive(Default)]
pub(crate) struct Regions(RwLock<HashMap<u32, Region>>);

impl Regions {
    pub(crate) fn add(&self, lkey: u32, region: Region) {
        self.0.write().insert(lkey, region);
    }

    pub(crate) fn get(&self, lkey: u32) -> Option<Region> {
        self.0.read().get(&lkey).copied()
    }

    pub(crate) fn remove(&self, lkey: u32) {
        self.0.write().remove(&lkey);
    }

    /// Each SGE lies in a region registered under its token (a zero-length SGE too: its token
    /// must still be valid); with `sink`, each region is an RDMA read sink.
    pub(crate) fn check(&self, sges: &[ibv_sge], sink: bool) -> Result<(), Status> {
        let regions = self.0.read();
        for s in sges {
            let r = regions.get(&s.lkey).ok_or(Status::ACCESS_VIOLATION)?;
            let end = s.addr.checked_add(u64::from(s.length));
            let inside = s.addr >= r.address && end.is_some_and(|e| e <= r.address + r.length);
            if !inside || (sink && !r.flags.is_rdma_read_sink()) {
                return Err(Status::ACCESS_VIOLATION);
            }
        }
        Ok(())
    }
}

impl PdShared {
    pub(crate) fn check_sges(&self, sges: &[ibv_sge], sink: bool) -> Result<(), Status> {
        self.regions.check(sges, sink)
    }
}

/// A verbs PD.
pub(crate) struct VerbsPd {
    pub(crate) shared: Arc<PdShared>,
}

impl VerbsPd {
    pub(crate) fn create(adapter: &Arc<AdapterInner>) -> Result<VerbsPd, Status> {
        let pd = adapter
            .lib
            .alloc_pd(adapter.ctx)
            .ok_or(Status::INSUFFICIENT_RESOURCES)?;
        Ok(VerbsPd {
            shared: Arc::new(PdShared {
                adapter: adapter.clone(),
                pd,
                regions: Regions::default(),
            }),
        })
    }
}

impl Object for VerbsPd {
    fn object_type(&self) -> ObjectType {
        ObjectType::Pd
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Pd for VerbsPd {
    fn create_mr(&self, fast_register: bool) -> Request<Box<dyn Mr>> {
        if fast_register {
            // Fast registration takes adapter page lists (LAMs): kernel verbs only.
            return Request::failed(Status::NOT_SUPPORTED);
        }
        Request::ok(Box::new(VerbsMr::new(&self.shared)))
    }

    fn create_mw(&self) -> Request<Box<dyn Mw>> {
        Request::ready(VerbsMw::create(&self.shared).map(|m| Box::new(m) as _))
    }

    fn create_srq(&self, config: SrqConfig) -> Request<Box<dyn Srq>> {
        Request::ready(VerbsSrq::create(&self.shared, config).map(|s| Box::new(s) as _))
    }

    fn create_qp(&self, config: QpConfig<'_>) -> Request<Box<dyn Qp>> {
        Request::ready(VerbsQp::create(&self.shared, config).map(|q| Box::new(q) as _))
    }

    fn create_qp_with_srq(&self, config: QpWithSrqConfig<'_>) -> Request<Box<dyn Qp>> {
        Request::ready(VerbsQp::create_with_srq(&self.shared, config).map(|q| Box::new(q) as _))
    }

    fn privileged_token(&self) -> LocalToken {
        // User verbs have no privileged lkey; 0 is what no registration hands out on the
        // devices seen (siw and rxe start keys above 0), and SGEs with it fail to post.
        LocalToken(0)
    }

    fn close(self: Box<Self>) -> Request<()> {
        Request::ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sge(addr: u64, length: u32, lkey: u32) -> ibv_sge {
        ibv_sge { addr, length, lkey }
    }

    /// Posts are refused inline with `STATUS_ACCESS_VIOLATION` for an unknown token, a range
    /// outside the region, or a read sink without the right (verbs would take them).
    #[test]
    fn sges_are_checked_against_the_registered_regions() {
        let r = Regions::default();
        r.add(
            7,
            Region {
                address: 0x1000,
                length: 0x1000,
                flags: MrFlags::ALLOW_LOCAL_WRITE,
            },
        );
        r.add(
            8,
            Region {
                address: 0x4000,
                length: 64,
                flags: MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK,
            },
        );
        assert_eq!(r.check(&[sge(0x1000, 0x1000, 7)], false), Ok(()));
        assert_eq!(r.check(&[sge(0x1800, 0, 7)], false), Ok(()));
        assert_eq!(
            r.check(&[sge(0x1000, 16, 0xDEAD_BE00)], false),
            Err(Status::ACCESS_VIOLATION)
        );
        assert_eq!(
            r.check(&[sge(0x1fff, 2, 7)], false),
            Err(Status::ACCESS_VIOLATION)
        );
        assert_eq!(
            r.check(&[sge(u64::MAX, 2, 7)], false),
            Err(Status::ACCESS_VIOLATION)
        );
        assert_eq!(
            r.check(&[sge(0x1000, 16, 7)], true),
            Err(Status::ACCESS_VIOLATION)
        );
        assert_eq!(r.check(&[sge(0x4000, 64, 8)], true), Ok(()));
        // The privileged token 0 is no region's.
        assert_eq!(
            r.check(&[sge(0x1000, 16, 0)], false),
            Err(Status::ACCESS_VIOLATION)
        );
        r.remove(7);
        assert_eq!(
            r.check(&[sge(0x1000, 16, 7)], false),
            Err(Status::ACCESS_VIOLATION)
        );
    }
}
