//! `NDK_CQ` over the completion ring of [`crate::cq`].

use std::any::Any;
use std::sync::Arc;

use netdirect::{Cq, Object, Request};
use netdirect_types::{BasicCompletion, Completion, CqNotifyType, ObjectType, Status};

use super::lifetime::{Antecedent, Reference};

/// A completion queue of the software RNIC.
pub struct SoftCq {
    pub(crate) ring: Arc<crate::cq::Cq>,
    /// The CQ as antecedent of its QPs: the ring closes when the last of them is gone.
    lifetime: Antecedent,
    adapter: Reference,
}

impl SoftCq {
    pub(crate) fn new(ring: Arc<crate::cq::Cq>, adapter: Reference) -> SoftCq {
        SoftCq {
            ring,
            lifetime: Antecedent::new(),
            adapter,
        }
    }

    /// The ring behind a consumer's CQ object, if it is one of ours, with a reference for the
    /// QP that will complete into it.
    pub(crate) fn ring_of(cq: &dyn Cq) -> Result<(Arc<crate::cq::Cq>, Reference), Status> {
        cq.as_any()
            .downcast_ref::<SoftCq>()
            .map(|c| (c.ring.clone(), c.lifetime.reference()))
            .ok_or(Status::INVALID_PARAMETER)
    }
}

impl Object for SoftCq {
    fn object_type(&self) -> ObjectType {
        ObjectType::Cq
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Cq for SoftCq {
    fn resize(&self, depth: u32) -> Request<()> {
        Request::ready(self.ring.resize(depth))
    }

    fn arm(&mut self, notify: CqNotifyType) {
        self.ring.arm(notify);
    }

    fn get_results(&mut self, out: &mut [BasicCompletion]) -> usize {
        self.ring.get_results_basic(out)
    }

    fn get_results_ex(&mut self, out: &mut [Completion]) -> usize {
        self.ring.get_results(out)
    }

    fn control_interrupt_moderation(&mut self, interval: u32, count: u32) -> Result<(), Status> {
        self.ring.control_interrupt_moderation(interval, count)
    }

    fn close(self: Box<Self>) -> Request<()> {
        // §2.6: pends while QPs complete into the ring.
        let SoftCq {
            ring,
            lifetime,
            adapter,
        } = *self;
        lifetime.close(move || {
            ring.close();
            drop(adapter);
        })
    }
}
