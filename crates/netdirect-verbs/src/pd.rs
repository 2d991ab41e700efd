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
    regions: RwLock<HashMap<u32, Region>>,
}

/// A registered region as posts see it.
#[derive(Clone, Copy)]
pub(crate) struct Region {
    pub(crate) address: u64,
    pub(crate) length: u64,
    pub(crate) flags: MrFlags,
}

impl PdShared {
    pub(crate) fn add_region(&self, lkey: u32, region: Region) {
        self.regions.write().insert(lkey, region);
    }

    pub(crate) fn region(&self, lkey: u32) -> Option<Region> {
        self.regions.read().get(&lkey).copied()
    }

    pub(crate) fn remove_region(&self, lkey: u32) {
        self.regions.write().remove(&lkey);
    }

    /// Each SGE lies in a region of this PD registered under its token (a zero-length SGE
    /// too: its token must still be valid); with `sink`, each region is an RDMA read sink.
    pub(crate) fn check_sges(&self, sges: &[ibv_sge], sink: bool) -> Result<(), Status> {
        let regions = self.regions.read();
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

impl Drop for PdShared {
    fn drop(&mut self) {
        self.adapter.lib.dealloc_pd(self.pd);
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
                regions: RwLock::new(HashMap::new()),
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
