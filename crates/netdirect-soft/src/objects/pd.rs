//! `NDK_PD`.

use std::sync::Arc;

use netdirect::{Cq, Mr, Mw, Pd, Qp, QpConfig, QpWithSrqConfig, Request, Srq, SrqConfig};
use netdirect_types::{LocalToken, Status};

use super::adapter::AdapterShared;
use super::cq::SoftCq;
use super::lifetime::{Antecedent, Reference};
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
    /// The PD as antecedent of its MRs, MWs, QPs and SRQs: its slot in the memory table goes
    /// when the last of them is gone.
    lifetime: Antecedent,
    /// The adapter's reference, until the close completed (`None` once released).
    adapter: Option<Reference>,
}

impl SoftPd {
    pub(crate) fn new(shared: Arc<AdapterShared>, id: PdId) -> SoftPd {
        let adapter = shared.lifetime.reference();
        SoftPd {
            shared,
            id,
            lifetime: Antecedent::new(),
            adapter: Some(adapter),
        }
    }

    /// A reference for a successor (MR, MW, QP, SRQ).
    fn reference(&self) -> Reference {
        self.lifetime.reference()
    }

    /// The ring of a CQ of this adapter, with a reference for the QP that completes into it.
    fn cq(&self, cq: &dyn Cq) -> Result<(Arc<crate::cq::Cq>, Reference), Status> {
        let cq = ours::<SoftCq>(self.shared.id, cq)?;
        Ok((cq.ring.clone(), cq.reference()))
    }

    /// What `close` and `Drop` release (idempotent): §2.6, once its MRs (including one whose
    /// close waits for its windows), MWs, QPs and SRQs are gone, the memory table has nothing
    /// of the PD left and lets its slot go, and the adapter reference goes.
    fn release(&mut self) -> Request<()> {
        match self.adapter.take() {
            Some(adapter) => {
                let (shared, id) = (self.shared.clone(), self.id);
                self.lifetime.close(move || {
                    let _ = shared.memory.close_pd(id);
                    drop(shared);
                    drop(adapter);
                })
            }
            None => Request::ok(()),
        }
    }
}

super::soft_object!(SoftPd, Pd, |pd| pd.shared.id);

impl Pd for SoftPd {
    fn create_mr(&self, fast_register: bool) -> Request<Box<dyn Mr>> {
        self.shared.activity.touch();
        Request::ready(
            self.shared
                .memory
                .create_mr(self.id, fast_register)
                .map(|id| {
                    Box::new(SoftMr::new(
                        self.shared.clone(),
                        id,
                        self.id,
                        self.reference(),
                    )) as Box<dyn Mr>
                }),
        )
    }

    fn create_mw(&self) -> Request<Box<dyn Mw>> {
        self.shared.activity.touch();
        Request::ready(self.shared.memory.create_mw(self.id).map(|id| {
            Box::new(SoftMw::new(
                self.shared.clone(),
                id,
                self.id,
                self.reference(),
            )) as Box<dyn Mw>
        }))
    }

    fn create_srq(&self, config: SrqConfig) -> Request<Box<dyn Srq>> {
        self.shared.activity.touch();
        Request::ready(
            SoftSrq::new(
                self.shared.clone(),
                self.id,
                self.lifetime.reference(),
                config,
            )
            .map(|s| Box::new(s) as Box<dyn Srq>),
        )
    }

    fn create_qp(&self, config: QpConfig<'_>) -> Request<Box<dyn Qp>> {
        self.shared.activity.touch();
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
                (self.id, self.reference()),
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
        self.shared.activity.touch();
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
                (self.id, self.reference()),
                self.cq(config.receive_cq)?,
                self.cq(config.initiator_cq)?,
                Some((srq.queue.clone(), srq.reference())),
                config.context,
                limits,
            )) as Box<dyn Qp>)
        })();
        Request::ready(result)
    }

    fn privileged_token(&self) -> LocalToken {
        self.id.privileged_token()
    }

    fn close(mut self: Box<Self>) -> Request<()> {
        self.release()
    }
}

impl Drop for SoftPd {
    /// What `close` releases (§10 table, row 29).
    fn drop(&mut self) {
        drop(self.release());
    }
}
