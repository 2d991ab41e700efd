//! The queue pair (`NDK_QP`): an initiator queue and a receive queue.
//!
//! Posting takes `&mut` on the queue it uses: the NDK promises a provider that one queue never
//! sees two concurrent posts, and Rust's borrows hold consumers to that promise. The two queues
//! may be used concurrently, so a QP splits into a [`QpInitiator`] and a [`QpReceiver`], either
//! borrowed ([`Qp::split`], for scoped threads) or owned ([`Qp::into_split`]).
//!
//! The borrow rules, pinned by tests that must not compile:
//!
//! ```compile_fail,E0596
//! # use netdirect::QpInitiator;
//! # use netdirect_types::OpFlags;
//! // Posting through a shared reference: two threads could post to one queue at once.
//! fn post(q: &dyn QpInitiator) {
//!     q.send(1, &[], OpFlags::empty()).unwrap();
//! }
//! ```
//!
//! ```compile_fail,E0596
//! # use netdirect::QpInitiator;
//! # use netdirect_types::OpFlags;
//! # use std::sync::Arc;
//! // Sharing one initiator queue between threads without a lock.
//! fn share(q: Arc<Box<dyn QpInitiator>>) {
//!     let q2 = q.clone();
//!     std::thread::spawn(move || q2.send(1, &[], OpFlags::empty()));
//! }
//! ```
//!
//! ```compile_fail,E0499
//! # use netdirect::Qp;
//! # use netdirect_types::OpFlags;
//! // Two live borrows of the same queue.
//! fn twice(qp: &mut dyn Qp) {
//!     let a = qp.initiator();
//!     let b = qp.initiator();
//!     a.send(1, &[], OpFlags::empty()).unwrap();
//!     b.send(2, &[], OpFlags::empty()).unwrap();
//! }
//! ```
//!
//! The two queues of one QP, though, may be used at the same time:
//!
//! ```
//! # use netdirect::Qp;
//! # use netdirect_types::OpFlags;
//! fn both(qp: &mut dyn Qp) {
//!     let (initiator, receiver) = qp.split();
//!     std::thread::scope(|s| {
//!         s.spawn(|| initiator.send(1, &[], OpFlags::empty()));
//!         s.spawn(|| receiver.receive(2, &[]));
//!     });
//! }
//! ```
//!
//! A post that returns `Ok` produces exactly one completion later (none for a successful
//! `SILENT_SUCCESS` request); a post that returns `Err` produces none (NDK §7.1, §7.3).

use netdirect_types::{LogicalAddress, OpFlags, RemoteToken, Sge, Status};

use crate::{Mr, Mw, Object, Request};

/// The target of [`QpInitiator::invalidate`]: a fast-registered MR or a bound MW.
#[derive(Clone, Copy)]
pub enum InvalidateTarget<'a> {
    /// A fast-registered memory region.
    Mr(&'a dyn Mr),
    /// A bound memory window.
    Mw(&'a dyn Mw),
}

/// The initiator queue of a QP.
pub trait QpInitiator: Send {
    /// Sends the bytes of `sges`; consumes one receive at the peer.
    #[doc(alias = "NdkSend")]
    fn send(&mut self, request_context: u64, sges: &[Sge], flags: OpFlags) -> Result<(), Status>;

    /// Sends bytes copied at post time (`NDK_OP_FLAG_INLINE`): the slices need to live only for
    /// the call; at most the QP's inline size in total.
    #[doc(alias = "NDK_OP_FLAG_INLINE")]
    fn send_inline(
        &mut self,
        request_context: u64,
        data: &[&[u8]],
        flags: OpFlags,
    ) -> Result<(), Status>;

    /// Sends and asks the peer to invalidate `remote_token` before it reports the receive.
    #[doc(alias = "NdkSendAndInvalidate")]
    fn send_and_invalidate(
        &mut self,
        request_context: u64,
        sges: &[Sge],
        flags: OpFlags,
        remote_token: RemoteToken,
    ) -> Result<(), Status>;

    /// Reads `Σ sge lengths` octets from the peer's `remote_address` under `remote_token`.
    #[doc(alias = "NdkRead")]
    fn read(
        &mut self,
        request_context: u64,
        sges: &[Sge],
        remote_address: u64,
        remote_token: RemoteToken,
        flags: OpFlags,
    ) -> Result<(), Status>;

    /// Writes the bytes of `sges` to the peer's `remote_address` under `remote_token`.
    #[doc(alias = "NdkWrite")]
    fn write(
        &mut self,
        request_context: u64,
        sges: &[Sge],
        remote_address: u64,
        remote_token: RemoteToken,
        flags: OpFlags,
    ) -> Result<(), Status>;

    /// Writes bytes copied at post time (inline write).
    fn write_inline(
        &mut self,
        request_context: u64,
        data: &[&[u8]],
        remote_address: u64,
        remote_token: RemoteToken,
        flags: OpFlags,
    ) -> Result<(), Status>;

    /// Binds `mw` to `[address, address + length)` of `mr`.
    #[doc(alias = "NdkBind")]
    fn bind(
        &mut self,
        request_context: u64,
        mr: &dyn Mr,
        mw: &dyn Mw,
        address: u64,
        length: u64,
        flags: OpFlags,
    ) -> Result<(), Status>;

    /// Registers the pages `pages` (from a LAM) as `mr`: `length` octets from offset `fbo` of the
    /// first page, at `base_address` (NDK §7.9 rules).
    #[doc(alias = "NdkFastRegister")]
    #[allow(clippy::too_many_arguments)]
    fn fast_register(
        &mut self,
        request_context: u64,
        mr: &dyn Mr,
        pages: &[LogicalAddress],
        fbo: u32,
        length: u64,
        base_address: u64,
        flags: OpFlags,
    ) -> Result<(), Status>;

    /// Invalidates a fast-registered MR or a bound MW.
    #[doc(alias = "NdkInvalidate")]
    fn invalidate(
        &mut self,
        request_context: u64,
        target: InvalidateTarget<'_>,
        flags: OpFlags,
    ) -> Result<(), Status>;

    /// Cancels everything pending on both queues (completions `STATUS_CANCELLED`).
    #[doc(alias = "NdkFlush")]
    fn flush(&self);
}

/// The receive queue of a QP.
pub trait QpReceiver: Send {
    /// Posts a receive buffer.
    #[doc(alias = "NdkReceive")]
    fn receive(&mut self, request_context: u64, sges: &[Sge]) -> Result<(), Status>;

    /// Cancels everything pending on both queues.
    fn flush(&self);
}

/// A queue pair.
pub trait Qp: Object {
    /// Both queues, borrowed, usable at the same time (from scoped threads).
    fn split(&mut self) -> (&mut dyn QpInitiator, &mut dyn QpReceiver);

    /// Both queues, owned, for threads of their own. The QP closes when both halves are gone.
    fn into_split(self: Box<Self>) -> (Box<dyn QpInitiator>, Box<dyn QpReceiver>);

    /// The initiator queue.
    fn initiator(&mut self) -> &mut dyn QpInitiator {
        self.split().0
    }

    /// The receive queue.
    fn receiver(&mut self) -> &mut dyn QpReceiver {
        self.split().1
    }

    /// Cancels everything pending on both queues; may run concurrently with posts.
    #[doc(alias = "NdkFlush")]
    fn flush(&self);

    /// Closes the QP.
    #[doc(alias = "NdkCloseQp")]
    fn close(self: Box<Self>) -> Request<()>;
}
