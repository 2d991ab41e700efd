//! `NDK_PD`.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use netdirect::{Mr, Mw, Object, Pd, Qp, QpConfig, QpWithSrqConfig, Request, Srq, SrqConfig};
use netdirect_types::{LocalToken, ObjectType, Status};

use super::adapter::AdapterShared;
use super::cq::SoftCq;
use super::lifetime::{Antecedent, Reference};
use super::mr::SoftMr;
use super::mw::SoftMw;
use super::qp::{QpLimits, SoftQp};
use super::srq::SoftSrq;
use crate::memory::PdId;

/// A protection domain of the software RNIC.
pub struct SoftPd {
    shared: Arc<AdapterShared>,
    id: PdId,
    /// The PD as antecedent of its MRs, MWs, QPs and SRQs: its slot in the memory table goes
    /// when the last of them is gone.
    lifetime: Antecedent,
    adapter: Reference,
}

impl SoftPd {
    pub(crate) fn new(shared: Arc<AdapterShared>, id: PdId) -> SoftPd {
        let adapter = shared.lifetime.reference();
        SoftPd {
            shared,
            id,
            lifetime: Antecedent::new(),
            adapter,
        }
    }
}

impl Object for SoftPd {
    fn object_type(&self) -> ObjectType {
        ObjectType::Pd
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Pd for SoftPd {
    fn create_mr(&self, fast_register: bool) -> Request<Box<dyn Mr>> {
        Request::ready(
            self.shared
                .memory
                .create_mr(self.id, fast_register)
                .map(|id| {
                    let token = self.shared.memory.local_token(id).map_or(0, |t| t.0);
                    Box::new(SoftMr {
                        shared: self.shared.clone(),
                        id,
                        token: AtomicU32::new(token),
                        _pd: self.lifetime.reference(),
                    }) as Box<dyn Mr>
                }),
        )
    }

    fn create_mw(&self) -> Request<Box<dyn Mw>> {
        Request::ready(self.shared.memory.create_mw(self.id).map(|id| {
            let token = self.shared.memory.mw_remote_token(id).map_or(0, |t| t.0);
            Box::new(SoftMw {
                shared: self.shared.clone(),
                id,
                token: AtomicU32::new(token),
                _pd: self.lifetime.reference(),
            }) as Box<dyn Mw>
        }))
    }

    fn create_srq(&self, config: SrqConfig) -> Request<Box<dyn Srq>> {
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
                (self.id, self.lifetime.reference()),
                SoftCq::ring_of(config.receive_cq)?,
                SoftCq::ring_of(config.initiator_cq)?,
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
            let srq = SoftSrq::queue_of(config.srq)?;
            Ok(Box::new(SoftQp::new(
                self.shared.clone(),
                (self.id, self.lifetime.reference()),
                SoftCq::ring_of(config.receive_cq)?,
                SoftCq::ring_of(config.initiator_cq)?,
                Some(srq),
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
        // §2.6: pends until its MRs, MWs, QPs and SRQs are closed; then the memory table has
        // nothing of the PD left and lets its slot go.
        let SoftPd {
            shared,
            id,
            lifetime,
            adapter,
        } = *self;
        lifetime.close(move || {
            let _ = shared.memory.close_pd(id);
            drop(shared);
            drop(adapter);
        })
    }
}
