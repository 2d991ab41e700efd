//! What the software RNIC can do, stated honestly (`NDK_ADAPTER_INFO`).

use netdirect_types::{AdapterFlags, AdapterInfo, RdmaTechnology, Status, Version};

/// The NDK versions this provider runs at: 1.2 for consumers asking for major 1, 2.1 for major 2
/// (the `Ex` connector calls and `ProviderErrorCode` in completions).
pub const VERSIONS: [Version; 2] = [Version::V1_2, Version::V2_1];

/// Picks the version to run at for a consumer's request (NDK §1): the highest minor of the
/// requested major, if the requested minor is not above it.
pub fn negotiate(requested: Version) -> Result<Version, Status> {
    VERSIONS
        .iter()
        .find(|v| v.major == requested.major)
        .ok_or(Status::NDIS_BAD_VERSION)?
        .negotiate(requested)
}

/// Pages a fast-register MR may hold at most.
pub const MAX_FRMR_PAGES: u32 = 4096;
/// Largest read limit (IRD or ORD) per QP, as Linux siw.
pub const MAX_READ_LIMIT: u32 = 128;
/// Private data on connect/accept/reject: Linux accepts 256 octets including the 4-octet
/// RFC 6581 prefix, so 252 keeps every peer happy.
pub const MAX_PRIVATE_DATA: u32 = 252;

/// The adapter info reported at `version`.
///
/// * SGE counts and depths are software limits chosen to bound memory per QP, not hardware ones.
/// * `MaxReadRequestSge` is 1: an RDMA Read Request names one sink STag, and a read into several
///   local regions would need a temporary sink registration (not done yet).
/// * `MaxTransferLength` is 1 GiB: message offsets and read sizes are 32 bits on the wire.
/// * Flags: data lands in order (one TCP stream, segments placed in order); read-local-invalidate
///   and CQ resize are implemented; loopback connections work (TCP). Read sinks must carry the
///   read-sink right (`RDMA_READ_SINK_NOT_REQUIRED` is not set); no interrupt moderation
///   (no interrupts); one progress engine per adapter (no multi-engine hint).
pub fn adapter_info(version: Version) -> AdapterInfo {
    AdapterInfo {
        version,
        vendor_id: 0,
        device_id: 0x5357, // "SW"
        max_registration_size: 1 << 40,
        max_window_size: 1 << 40,
        frmr_page_count: 256,
        max_initiator_request_sge: 16,
        max_receive_request_sge: 16,
        max_read_request_sge: 1,
        max_transfer_length: 1 << 30,
        max_inline_data_size: 1024,
        max_inbound_read_limit: MAX_READ_LIMIT,
        max_outbound_read_limit: MAX_READ_LIMIT,
        max_receive_queue_depth: 16384,
        max_initiator_queue_depth: 16384,
        max_srq_depth: 16384,
        max_cq_depth: 1 << 20,
        large_request_threshold: 64 * 1024,
        max_caller_data: MAX_PRIVATE_DATA,
        max_callee_data: MAX_PRIVATE_DATA,
        adapter_flags: AdapterFlags::IN_ORDER_DMA_SUPPORTED
            | AdapterFlags::RDMA_READ_LOCAL_INVALIDATE_SUPPORTED
            | AdapterFlags::CQ_RESIZE_SUPPORTED
            | AdapterFlags::LOOPBACK_CONNECTIONS_SUPPORTED,
        rdma_technology: RdmaTechnology::IWarp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_rules() {
        assert_eq!(negotiate(Version::V1_0), Ok(Version::V1_2));
        assert_eq!(negotiate(Version::V1_2), Ok(Version::V1_2));
        assert_eq!(negotiate(Version::new(1, 3)), Err(Status::NDIS_BAD_VERSION));
        assert_eq!(negotiate(Version::V2_0), Ok(Version::V2_1));
        assert_eq!(negotiate(Version::new(3, 0)), Err(Status::NDIS_BAD_VERSION));
    }

    #[test]
    fn info_is_consistent() {
        let i = adapter_info(Version::V1_2);
        assert!(i.frmr_page_count >= netdirect_types::FRMR_PAGE_COUNT_MIN);
        assert!(i.frmr_page_count <= MAX_FRMR_PAGES);
        assert!(i.supports_srq());
        assert_eq!(i.rdma_technology, RdmaTechnology::IWarp);
        assert!(
            !i.adapter_flags
                .contains(AdapterFlags::CQ_INTERRUPT_MODERATION_SUPPORTED)
        );
    }
}
