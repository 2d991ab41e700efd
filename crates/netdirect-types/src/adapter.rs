//! `NDK_ADAPTER_INFO`: what an adapter can do.

use crate::{AdapterFlags, RdmaTechnology, Version};

/// `NDK_ADAPTER_INFO` (spec §5.1): the adapter's limits and capabilities, returned by
/// `NdkQueryAdapterInfo`.
///
/// Fields are in the header's order. `SIZE_T` fields are `u64` so the structure does not depend
/// on the host's pointer width; `ULONG` fields are `u32`.
///
/// ```
/// use netdirect_types::{AdapterFlags, AdapterInfo, RdmaTechnology, Version, FRMR_PAGE_COUNT_MIN};
///
/// let info = AdapterInfo {
///     version: Version::V2_1,
///     vendor_id: 0,
///     device_id: 0,
///     max_registration_size: 1 << 30,
///     max_window_size: 1 << 30,
///     frmr_page_count: FRMR_PAGE_COUNT_MIN,
///     max_initiator_request_sge: 16,
///     max_receive_request_sge: 16,
///     max_read_request_sge: 16,
///     max_transfer_length: 1 << 30,
///     max_inline_data_size: 256,
///     max_inbound_read_limit: 16,
///     max_outbound_read_limit: 16,
///     max_receive_queue_depth: 1024,
///     max_initiator_queue_depth: 1024,
///     max_srq_depth: 0,
///     max_cq_depth: 4096,
///     large_request_threshold: 8192,
///     max_caller_data: 512,
///     max_callee_data: 512,
///     adapter_flags: AdapterFlags::CQ_RESIZE_SUPPORTED,
///     rdma_technology: RdmaTechnology::IWarp,
/// };
/// assert!(!info.supports_srq());
/// ```
#[doc(alias = "NDK_ADAPTER_INFO")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdapterInfo {
    /// The negotiated NDKPI version.
    #[doc(alias = "Version")]
    pub version: Version,
    /// Vendor OUI.
    #[doc(alias = "VendorId")]
    pub vendor_id: u32,
    /// Vendor device id.
    #[doc(alias = "DeviceId")]
    pub device_id: u32,
    /// Largest single memory registration, in bytes.
    #[doc(alias = "MaxRegistrationSize")]
    pub max_registration_size: u64,
    /// Largest single memory window, in bytes.
    #[doc(alias = "MaxWindowSize")]
    pub max_window_size: u64,
    /// FRMR size, in [`PAGE_SIZE`](crate::PAGE_SIZE) pages, at which the adapter supports the most
    /// fast-register MRs. At least [`FRMR_PAGE_COUNT_MIN`]; advertise more only if the number of
    /// such FRMRs does not drop meaningfully.
    #[doc(alias = "FRMRPageCount")]
    pub frmr_page_count: u32,
    /// Maximum SGEs per initiator request.
    #[doc(alias = "MaxInitiatorRequestSge")]
    pub max_initiator_request_sge: u32,
    /// Maximum SGEs per receive request.
    #[doc(alias = "MaxReceiveRequestSge")]
    pub max_receive_request_sge: u32,
    /// Maximum SGEs per RDMA read; overrides `max_initiator_request_sge` for reads.
    #[doc(alias = "MaxReadRequestSge")]
    pub max_read_request_sge: u32,
    /// Maximum total bytes over all SGEs of one send, receive, read or write.
    #[doc(alias = "MaxTransferLength")]
    pub max_transfer_length: u32,
    /// Maximum inline bytes for one send or write.
    #[doc(alias = "MaxInlineDataSize")]
    pub max_inline_data_size: u32,
    /// Maximum incoming in-flight RDMA reads per QP (the IRD cap).
    #[doc(alias = "MaxInboundReadLimit")]
    pub max_inbound_read_limit: u32,
    /// Maximum outgoing in-flight RDMA reads per QP (the ORD cap).
    #[doc(alias = "MaxOutboundReadLimit")]
    pub max_outbound_read_limit: u32,
    /// Maximum outstanding receives per receive queue.
    #[doc(alias = "MaxReceiveQueueDepth")]
    pub max_receive_queue_depth: u32,
    /// Maximum outstanding requests per initiator queue.
    #[doc(alias = "MaxInitiatorQueueDepth")]
    pub max_initiator_queue_depth: u32,
    /// Maximum outstanding receives per SRQ; 0 means SRQs are not supported.
    #[doc(alias = "MaxSrqDepth")]
    pub max_srq_depth: u32,
    /// Maximum entries per CQ.
    #[doc(alias = "MaxCqDepth")]
    pub max_cq_depth: u32,
    /// Hint: above this size, read/write beats send/receive.
    #[doc(alias = "LargeRequestThreshold")]
    pub large_request_threshold: u32,
    /// Maximum private-data bytes on connect.
    #[doc(alias = "MaxCallerData")]
    pub max_caller_data: u32,
    /// Maximum private-data bytes on accept or reject.
    #[doc(alias = "MaxCalleeData")]
    pub max_callee_data: u32,
    /// Capability flags.
    #[doc(alias = "AdapterFlags")]
    pub adapter_flags: AdapterFlags,
    /// Transport kind (absent from older headers).
    #[doc(alias = "RdmaTechnology")]
    pub rdma_technology: RdmaTechnology,
}

/// The smallest legal [`AdapterInfo::frmr_page_count`] (spec §5.1, §6.4).
pub const FRMR_PAGE_COUNT_MIN: u32 = 16;

impl AdapterInfo {
    /// The adapter supports shared receive queues (`max_srq_depth != 0`).
    #[inline]
    pub const fn supports_srq(&self) -> bool {
        self.max_srq_depth != 0
    }
}
