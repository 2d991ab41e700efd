//! `NDK_CQ` over the completion ring of [`crate::cq`].

use std::sync::Arc;

use netdirect::{Cq, Request};
use netdirect_types::{BasicCompletion, Completion, CqNotifyType, Status};

use super::AdapterId;

/// A completion queue of the software RNIC.
pub struct SoftCq {
    pub(crate) ring: Arc<crate::cq::Cq>,
    adapter: AdapterId,
}

impl SoftCq {
    pub(crate) fn new(ring: Arc<crate::cq::Cq>, adapter: AdapterId) -> SoftCq {
        SoftCq { ring, adapter }
    }
}

super::soft_object!(SoftCq, Cq, |cq| cq.adapter);

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
        self.ring.close();
        Request::ok(())
    }
}

impl Drop for SoftCq {
    /// What `close` releases (idempotent, so a close followed by its drop is one close).
    fn drop(&mut self) {
        self.ring.close();
    }
}
