//! The shared receive queue (`NDK_SRQ`).

use netdirect_types::{Sge, Status};

use crate::{Object, Request};

/// A shared receive queue. [`Srq::receive`] takes `&mut self`: the NDK serializes posts per
/// queue.
pub trait Srq: Object {
    /// Changes the depth (0: keep) and the notify threshold (0: keep threshold and arm state;
    /// non-zero: set and re-arm).
    #[doc(alias = "NdkModifySrq")]
    fn modify(&self, depth: u32, notify_threshold: u32) -> Request<()>;

    /// Posts a receive any attached QP may consume; its completion goes to that QP's receive
    /// CQ with `request_context`.
    #[doc(alias = "NdkSrqReceive")]
    fn receive(&mut self, request_context: u64, sges: &[Sge]) -> Result<(), Status>;

    /// Closes the SRQ (pending while QPs use it).
    #[doc(alias = "NdkCloseSrq")]
    fn close(self: Box<Self>) -> Request<()>;
}
