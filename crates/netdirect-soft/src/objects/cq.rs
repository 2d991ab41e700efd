//! `NDK_CQ` over the completion ring of [`crate::cq`].

use std::sync::Arc;
use std::time::Duration;

use netdirect::{Cq, Request};
use netdirect_types::{BasicCompletion, Completion, CqNotifyType, Status};

use super::AdapterId;
use super::lifetime::{Antecedent, Reference};

/// A completion queue of the software RNIC.
pub struct SoftCq {
    pub(crate) ring: Arc<crate::cq::Cq>,
    adapter: AdapterId,
    /// The CQ as antecedent of its QPs: the ring closes when the last of them is gone.
    lifetime: Antecedent,
    /// The adapter's reference, until the close completed (`None` once released).
    adapter_reference: Option<Reference>,
}

impl SoftCq {
    pub(crate) fn new(
        ring: Arc<crate::cq::Cq>,
        adapter: AdapterId,
        adapter_reference: Reference,
    ) -> SoftCq {
        SoftCq {
            ring,
            adapter,
            lifetime: Antecedent::new(),
            adapter_reference: Some(adapter_reference),
        }
    }

    /// Connections examined by progress passes of this CQ's polls so far (tests).
    #[doc(hidden)]
    pub fn pass_visits(&self) -> u64 {
        self.ring.pass_visits()
    }

    /// Connections on this CQ's active list (tests).
    #[doc(hidden)]
    pub fn active_connections(&self) -> usize {
        self.ring.active_connections()
    }

    /// A reference for a QP that will complete into the ring (get the CQ through
    /// [`super::ours`]).
    pub(crate) fn reference(&self) -> Reference {
        self.lifetime.reference()
    }

    /// What `close` and `Drop` release (idempotent): §2.6, the ring closes (and the adapter
    /// reference goes) when no QP completes into it any more.
    fn release(&mut self) -> Request<()> {
        match self.adapter_reference.take() {
            Some(adapter) => {
                let ring = self.ring.clone();
                self.lifetime.close(move || {
                    ring.close();
                    drop(adapter);
                })
            }
            None => Request::ok(()),
        }
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

    fn wait(&mut self, out: &mut [Completion], spin: Duration, timeout: Duration) -> usize {
        self.ring.wait(out, spin, timeout)
    }

    fn control_interrupt_moderation(&mut self, interval: u32, count: u32) -> Result<(), Status> {
        self.ring.control_interrupt_moderation(interval, count)
    }

    fn close(mut self: Box<Self>) -> Request<()> {
        self.release()
    }
}

impl Drop for SoftCq {
    /// What `close` releases (idempotent, so a close followed by its drop is one close).
    fn drop(&mut self) {
        drop(self.release());
    }
}
