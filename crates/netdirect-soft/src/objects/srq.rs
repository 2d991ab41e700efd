//! `NDK_SRQ` over the queue of [`crate::srq`].

use std::any::Any;
use std::sync::Arc;

use netdirect::{Object, Request, Srq, SrqConfig};
use netdirect_types::{ObjectType, Sge, Status};

use super::adapter::AdapterShared;
use super::lifetime::{Antecedent, Reference};
use super::qp::RecvEntry;
use crate::memory::{LocalAccess, PdId};
use crate::srq::SrqLimits;

pub(crate) type SrqQueue = crate::srq::Srq<RecvEntry>;

/// A shared receive queue of the software RNIC.
pub struct SoftSrq {
    shared: Arc<AdapterShared>,
    pd: PdId,
    queue: Arc<SrqQueue>,
    /// The SRQ as antecedent of its QPs: the queue closes when the last of them is gone.
    lifetime: Antecedent,
    pd_reference: Reference,
}

impl SoftSrq {
    pub(crate) fn new(
        shared: Arc<AdapterShared>,
        pd: PdId,
        pd_reference: Reference,
        config: SrqConfig,
    ) -> Result<SoftSrq, Status> {
        let limits = SrqLimits {
            max_depth: shared.info.max_srq_depth,
            max_sge: shared.info.max_receive_request_sge,
        };
        let queue = crate::srq::Srq::new(
            config.depth,
            config.max_receive_sge,
            config.notify_threshold,
            limits,
            config.notification,
        )?;
        Ok(SoftSrq {
            shared,
            pd,
            queue,
            lifetime: Antecedent::new(),
            pd_reference,
        })
    }

    /// The queue behind a consumer's SRQ object, if it is one of ours, with its PD and a
    /// reference for the QP that will take from it.
    pub(crate) fn queue_of(srq: &dyn Srq) -> Result<(Arc<SrqQueue>, PdId, Reference), Status> {
        srq.as_any()
            .downcast_ref::<SoftSrq>()
            .map(|s| (s.queue.clone(), s.pd, s.lifetime.reference()))
            .ok_or(Status::INVALID_PARAMETER)
    }
}

impl Object for SoftSrq {
    fn object_type(&self) -> ObjectType {
        ObjectType::Srq
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Srq for SoftSrq {
    fn modify(&self, depth: u32, notify_threshold: u32) -> Request<()> {
        Request::ready(self.queue.modify(depth, notify_threshold))
    }

    fn receive(&mut self, request_context: u64, sges: &[Sge]) -> Result<(), Status> {
        if sges.len() as u64 > u64::from(self.queue.max_sge()) {
            return Err(Status::DATA_OVERRUN);
        }
        let entry = RecvEntry::new(
            &self.shared.memory,
            self.pd,
            request_context,
            sges,
            LocalAccess::Write,
        )?;
        self.queue.post(sges.len(), entry)
    }

    fn close(self: Box<Self>) -> Request<()> {
        // §2.6: pends while QPs take receives from the queue (closing it under them would
        // leave their receives without buffers).
        let SoftSrq {
            queue,
            lifetime,
            pd_reference,
            ..
        } = *self;
        lifetime.close(move || {
            queue.close();
            drop(queue.drain());
            drop(pd_reference);
        })
    }
}
