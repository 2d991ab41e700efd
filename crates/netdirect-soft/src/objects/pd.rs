//! `NDK_PD`.

use std::sync::Arc;

use netdirect::{Cq, Mr, Mw, Pd, Qp, QpConfig, QpWithSrqConfig, Request, Srq, SrqConfig};
use netdirect_types::{LocalToken, Status};

use super::adapter::AdapterShared;
use super::cq::SoftCq;
use super::mr::SoftMr;
use super::mw::SoftMw;
use super::qp::{QpLimits, SoftQp};
use super::srq::SoftSrq;
use super::{ours, ours_in};
use crate::memory::PdId;

/// A protection domain of the software RNIC.
pub struct SoftPd {
    shared: Arc<AdapterShared>,
    id: PdId,
}

impl SoftPd {
    pub(crate) fn new(shared: Arc<AdapterShared>, id: PdId) -> SoftPd {
        SoftPd { shared, id }
    }

    /// The ring of a CQ of this adapter.
    fn cq(&self, cq: &dyn Cq) -> Result<Arc<crate::cq::Cq>, Status> {
        Ok(ours::<SoftCq>(self.shared.id, cq)?.ring.clone())
    }
}

super::soft_object!(SoftPd, Pd, |pd| pd.shared.id);

impl Pd for SoftPd {
    fn create_mr(&self, fast_register: bool) -> Request<Box<dyn Mr>> {
        Request::ready(
            self.shared
                .memory
                .create_mr(self.id, fast_register)
                .map(|id| Box::new(SoftMr::new(self.shared.clone(), id, self.id)) as Box<dyn Mr>),
        )
    }

    fn create_mw(&self) -> Request<Box<dyn Mw>> {
        Request::ready(
            self.shared
                .memory
                .create_mw(self.id)
                .map(|id| Box::new(SoftMw::new(self.shared.clone(), id, self.id)) as Box<dyn Mw>),
        )
    }

    fn create_srq(&self, config: SrqConfig) -> Request<Box<dyn Srq>> {
        Request::ready(
            SoftSrq::new(self.shared.clone(), self.id, config).map(|s| Box::new(s) as Box<dyn Srq>),
        )
    }

    fn create_qp(&self, config: QpConfig<'_>) -> Request<Box<dyn Qp>> {
        let result = (|| {
            let info = &self.shared.info;
            if config.receive_queue_depth > info.max_receive_queue_depth
                || config.max_receive_sge > info.max_receive_request_sge
            {
                return Err(Status::INVALID_PARAMETER);
            }
            let limits = QpLimits::new(
                info,
                config.initiator_queue_depth,
                config.max_initiator_sge,
                config.inline_data_size,
            )?;
            Ok(Box::new(SoftQp::new(
                self.shared.clone(),
                self.id,
                self.cq(config.receive_cq)?,
                self.cq(config.initiator_cq)?,
                None,
                config.context,
                limits.with_receive(config.receive_queue_depth, config.max_receive_sge),
            )) as Box<dyn Qp>)
        })();
        Request::ready(result)
    }

    fn create_qp_with_srq(&self, config: QpWithSrqConfig<'_>) -> Request<Box<dyn Qp>> {
        let result = (|| {
            let limits = QpLimits::new(
                &self.shared.info,
                config.initiator_queue_depth,
                config.max_initiator_sge,
                config.inline_data_size,
            )?;
            // §10 table: the SRQ must be of this PD, as the CQs of this adapter.
            let srq = ours_in::<SoftSrq>(self.shared.id, self.id, config.srq)?;
            Ok(Box::new(SoftQp::new(
                self.shared.clone(),
                self.id,
                self.cq(config.receive_cq)?,
                self.cq(config.initiator_cq)?,
                Some(srq.queue.clone()),
                config.context,
                limits,
            )) as Box<dyn Qp>)
        })();
        Request::ready(result)
    }

    fn privileged_token(&self) -> LocalToken {
        self.id.privileged_token()
    }

    fn close(self: Box<Self>) -> Request<()> {
        // The memory table refuses while MRs or MWs remain; the PD then stays until they are
        // closed (NDK §2.6: the close would pend), which here means it is simply dropped.
        let _ = self.shared.memory.close_pd(self.id);
        Request::ok(())
    }
}

impl Drop for SoftPd {
    /// What `close` releases (a stale id after a close is refused, so this is one close).
    fn drop(&mut self) {
        let _ = self.shared.memory.close_pd(self.id);
    }
}
