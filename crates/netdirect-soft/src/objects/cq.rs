//! `NDK_CQ` over the completion ring of [`crate::cq`].

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use netdirect::{Cq, Object, Request};
use netdirect_types::{BasicCompletion, Completion, CqNotifyType, ObjectType, Status};

/// A completion queue of the software RNIC.
pub struct SoftCq {
    pub(crate) ring: Arc<crate::cq::Cq>,
}

impl SoftCq {
    pub(crate) fn new(ring: Arc<crate::cq::Cq>) -> SoftCq {
        SoftCq { ring }
    }

    /// The ring behind a consumer's CQ object, if it is one of ours.
    pub(crate) fn ring_of(cq: &dyn Cq) -> Result<Arc<crate::cq::Cq>, Status> {
        cq.as_any()
            .downcast_ref::<SoftCq>()
            .map(|c| c.ring.clone())
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

    fn wait(&mut self, out: &mut [Completion], spin: Duration, timeout: Duration) -> usize {
        self.ring.wait(out, spin, timeout)
    }

    fn control_interrupt_moderation(&mut self, interval: u32, count: u32) -> Result<(), Status> {
        self.ring.control_interrupt_moderation(interval, count)
    }

    fn close(self: Box<Self>) -> Request<()> {
        self.ring.close();
        Request::ok(())
    }
}
