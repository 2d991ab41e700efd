//! `NDK_SRQ` over the queue of [`crate::srq`].

use std::sync::Arc;

use netdirect::{Request, Srq, SrqConfig};
use netdirect_types::{Sge, Status};

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
    pub(crate) queue: Arc<SrqQueue>,
    /// The SRQ as antecedent of its QPs: the queue closes when the last of them is gone.
    lifetime: Antecedent,
    /// The PD's reference, until the close completed (`None` once released).
    pd_reference: Option<Reference>,
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
            pd_reference: Some(pd_reference),
        })
    }

    /// A reference for a QP that will take receives from the queue (get the SRQ through
    /// [`super::ours_in`]).
    pub(crate) fn reference(&self) -> Reference {
        self.lifetime.reference()
    }

    /// What `close` and `Drop` release (idempotent): §2.6, the queue closes (its receives are
    /// dropped, the PD reference goes) when no QP takes from it any more; closing it under them
    /// would leave their receives without buffers.
    fn release(&mut self) -> Request<()> {
        match self.pd_reference.take() {
            Some(pd_reference) => {
                let queue = self.queue.clone();
                self.lifetime.close(move || {
                    queue.close();
                    drop(queue.drain());
                    drop(pd_reference);
                })
            }
            None => Request::ok(()),
        }
    }
}

super::soft_object!(SoftSrq, Srq, |srq| srq.shared.id);

impl super::InPd for SoftSrq {
    fn pd(&self) -> PdId {
        self.pd
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

    fn close(mut self: Box<Self>) -> Request<()> {
        self.release()
    }
}

impl Drop for SoftSrq {
    /// What `close` releases (idempotent, so a close followed by its drop is one close).
    fn drop(&mut self) {
        drop(self.release());
    }
}
