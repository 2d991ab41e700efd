//! The completion queue (`NDK_CQ`).

use std::time::{Duration, Instant};

use netdirect_types::{BasicCompletion, Completion, CqNotifyType, Status};

use crate::{Object, Request};

/// A completion queue. Taking `&mut self` for [`Cq::get_results`], [`Cq::get_results_ex`] and
/// [`Cq::arm`] is the NDK's rule that these are never called concurrently on one CQ:
///
/// ```compile_fail,E0596
/// # use netdirect::Cq;
/// fn poll(cq: &dyn Cq) -> usize {
///     cq.get_results(&mut [])
/// }
/// ```
pub trait Cq: Object {
    /// Changes the capacity (only when the adapter advertises `CQ_RESIZE_SUPPORTED`).
    #[doc(alias = "NdkResizeCq")]
    fn resize(&self, depth: u32) -> Request<()>;

    /// Requests one notification when the condition of `notify` is met (arms merge as NDK §7.4
    /// says).
    #[doc(alias = "NdkArmCq")]
    fn arm(&mut self, notify: CqNotifyType);

    /// Removes up to `out.len()` completions, oldest first; returns how many.
    #[doc(alias = "NdkGetCqResults")]
    fn get_results(&mut self, out: &mut [BasicCompletion]) -> usize;

    /// Like [`Cq::get_results`], with the operation type, provider error code and
    /// type-specific output.
    #[doc(alias = "NdkGetCqResultsEx")]
    fn get_results_ex(&mut self, out: &mut [Completion]) -> usize;

    /// Waits for completions: polls for up to `spin`, then blocks until one arrives or
    /// `timeout` has passed; returns how many were moved into `out` (0: timed out).
    ///
    /// The default polls [`Cq::get_results_ex`] and yields the CPU between empty polls for the
    /// whole `timeout`. Providers that can block override it (the soft provider arms the CQ for
    /// any completion and sleeps until its notification, so the consumer's notification callback
    /// also runs).
    fn wait(&mut self, out: &mut [Completion], spin: Duration, timeout: Duration) -> usize {
        let _ = spin;
        let start = Instant::now();
        loop {
            let n = self.get_results_ex(out);
            if n > 0 || out.is_empty() || start.elapsed() >= timeout {
                return n;
            }
            std::thread::yield_now();
        }
    }

    /// Sets interrupt moderation; `STATUS_NOT_SUPPORTED` unless the adapter advertises
    /// `CQ_INTERRUPT_MODERATION_SUPPORTED`.
    #[doc(alias = "NdkControlCqInterruptModeration")]
    fn control_interrupt_moderation(&mut self, interval: u32, count: u32) -> Result<(), Status>;

    /// Closes the CQ (pending while a notification callback runs or QPs use it).
    #[doc(alias = "NdkCloseCq")]
    fn close(self: Box<Self>) -> Request<()>;
}
