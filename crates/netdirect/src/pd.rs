//! The protection domain (`NDK_PD`): the scope of memory registrations and queue pairs.

use netdirect_types::LocalToken;

use crate::adapter::Affinity;
use crate::callbacks::SrqNotification;
use crate::{Cq, Mr, Mw, Object, Qp, Request, Srq};

/// Parameters of [`Pd::create_qp`].
#[derive(Clone, Copy)]
pub struct QpConfig<'a> {
    /// CQ for receive completions.
    pub receive_cq: &'a dyn Cq,
    /// CQ for initiator completions (may be the receive CQ).
    pub initiator_cq: &'a dyn Cq,
    /// Echoed as `qp_context` in every completion of this QP.
    pub context: u64,
    /// Receives outstanding at once (≤ `MaxReceiveQueueDepth`).
    pub receive_queue_depth: u32,
    /// Initiator requests outstanding at once (≤ `MaxInitiatorQueueDepth`).
    pub initiator_queue_depth: u32,
    /// SGEs per receive (≤ `MaxReceiveRequestSge`).
    pub max_receive_sge: u32,
    /// SGEs per initiator request (≤ `MaxInitiatorRequestSge`).
    pub max_initiator_sge: u32,
    /// Inline bytes per send or write (≤ `MaxInlineDataSize`).
    pub inline_data_size: u32,
}

/// Parameters of [`Pd::create_qp_with_srq`]: receives come from `srq`.
#[derive(Clone, Copy)]
pub struct QpWithSrqConfig<'a> {
    /// CQ for receive completions.
    pub receive_cq: &'a dyn Cq,
    /// CQ for initiator completions.
    pub initiator_cq: &'a dyn Cq,
    /// The shared receive queue.
    pub srq: &'a dyn Srq,
    /// Echoed as `qp_context` in every completion of this QP.
    pub context: u64,
    /// Initiator requests outstanding at once.
    pub initiator_queue_depth: u32,
    /// SGEs per initiator request.
    pub max_initiator_sge: u32,
    /// Inline bytes per send or write.
    pub inline_data_size: u32,
}

/// Parameters of [`Pd::create_srq`].
#[derive(Clone)]
pub struct SrqConfig {
    /// Receives the SRQ holds (≤ `MaxSrqDepth`).
    pub depth: u32,
    /// SGEs per receive (≤ `MaxReceiveRequestSge`).
    pub max_receive_sge: u32,
    /// Notify when fewer receives than this are posted (0: never).
    pub notify_threshold: u32,
    /// The notification callback.
    pub notification: Option<SrqNotification>,
    /// Preferred processors for the callback.
    pub affinity: Option<Affinity>,
}

/// A protection domain. Parent of MRs, MWs, SRQs and QPs.
pub trait Pd: Object {
    /// Creates a memory region for [`Mr::register`] (`fast_register == false`) or for fast
    /// registration (`true`); never both.
    #[doc(alias = "NdkCreateMr")]
    fn create_mr(&self, fast_register: bool) -> Request<Box<dyn Mr>>;

    /// Creates an unbound memory window.
    #[doc(alias = "NdkCreateMw")]
    fn create_mw(&self) -> Request<Box<dyn Mw>>;

    /// Creates a shared receive queue.
    #[doc(alias = "NdkCreateSrq")]
    fn create_srq(&self, config: SrqConfig) -> Request<Box<dyn Srq>>;

    /// Creates a queue pair with its own receive queue.
    #[doc(alias = "NdkCreateQp")]
    fn create_qp(&self, config: QpConfig<'_>) -> Request<Box<dyn Qp>>;

    /// Creates a queue pair whose receives come from an SRQ.
    #[doc(alias = "NdkCreateQpWithSrq")]
    fn create_qp_with_srq(&self, config: QpWithSrqConfig<'_>) -> Request<Box<dyn Qp>>;

    /// The token that lets SGEs carry adapter logical addresses (from a LAM) without
    /// registration: local read and write only, never remote.
    #[doc(alias = "NdkGetPrivilegedMemoryRegionToken")]
    fn privileged_token(&self) -> LocalToken;

    /// Closes the PD (pending until its children are closed).
    #[doc(alias = "NdkClosePd")]
    #[doc(alias = "NdkCloseObject")]
    fn close(self: Box<Self>) -> Request<()>;
}
