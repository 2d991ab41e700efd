//! The adapter (`NDK_ADAPTER`): an open instance of an RDMA device bound to a local address.

use std::net::SocketAddr;

use netdirect_types::{AdapterInfo, LogicalAddressMapping, Status};

use crate::callbacks::{ConnectEvent, CqNotification};
use crate::{Buffer, Connector, Cq, Listener, Object, Pd, Request, SharedEndpoint};

/// A preferred set of processors for notification callbacks (`GROUP_AFFINITY`); a hint only.
#[doc(alias = "GROUP_AFFINITY")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Affinity {
    /// Processor group.
    pub group: u16,
    /// Processors within the group.
    pub mask: u64,
}

/// A logical address mapping built by [`Adapter::build_lam`]: the adapter's page list for a
/// buffer range, for privileged-token SGEs and fast registration.
#[doc(alias = "NDK_LOGICAL_ADDRESS_MAPPING")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lam {
    /// The page list (`AdapterPageArray`, `AdapterPageCount`).
    pub mapping: LogicalAddressMapping,
    /// Offset of the range's first byte in its first page (`*pFBO`).
    pub fbo: u32,
    /// Provider-private (`AdapterContext`): the consumer must not change it.
    pub context: u64,
}

/// An open adapter. Children are created through it; closing it waits for them.
///
/// Parent of CQs, PDs, connectors, listeners, shared endpoints and LAMs (NDK §2.2).
pub trait Adapter: Object {
    /// The adapter's limits and capabilities.
    #[doc(alias = "NdkQueryAdapterInfo")]
    fn query_info(&self) -> AdapterInfo;

    /// Creates a completion queue of `depth` entries; `notification` runs when an arm is
    /// satisfied or on a CQ error. `STATUS_INVALID_PARAMETER` when `depth` exceeds `MaxCqDepth`.
    #[doc(alias = "NdkCreateCq")]
    fn create_cq(
        &self,
        depth: u32,
        notification: CqNotification,
        affinity: Option<Affinity>,
    ) -> Request<Box<dyn Cq>>;

    /// Creates a protection domain.
    #[doc(alias = "NdkCreatePd")]
    fn create_pd(&self) -> Request<Box<dyn Pd>>;

    /// Creates an endpoint on a local address that several outgoing connections share (port
    /// 0: an ephemeral port).
    #[doc(alias = "NdkCreateSharedEndpoint")]
    fn create_shared_endpoint(&self, address: SocketAddr) -> Request<Box<dyn SharedEndpoint>>;

    /// Creates an unconnected connector for an outgoing connection.
    #[doc(alias = "NdkCreateConnector")]
    fn create_connector(&self) -> Request<Box<dyn Connector>>;

    /// Creates a listener; `connect_event` runs once per incoming connection request once it
    /// listens.
    #[doc(alias = "NdkCreateListener")]
    fn create_listener(&self, connect_event: ConnectEvent) -> Request<Box<dyn Listener>>;

    /// Maps `length` octets of `buffer` from `offset` to the adapter's logical page list.
    #[doc(alias = "NdkBuildLAM")]
    #[doc(alias = "NdkBuildLam")]
    fn build_lam(&self, buffer: &Buffer, offset: usize, length: usize) -> Request<Lam>;

    /// Releases a mapping made by [`Adapter::build_lam`]. The consumer must not release it while
    /// requests that use its addresses are outstanding.
    #[doc(alias = "NdkReleaseLAM")]
    #[doc(alias = "NdkReleaseLam")]
    fn release_lam(&self, lam: Lam);

    /// Closes the adapter; blocks until every callback of every object under it has returned
    /// (`CloseNDKAdapterHandler`), which, while children are open, means until they are closed
    /// (NDK §2.6). Must not be called from an NDK callback.
    #[doc(alias = "CloseNDKAdapterHandler")]
    #[doc(alias = "NdkCloseAdapter")]
    fn close(self: Box<Self>);
}

/// Bytes an `NDK_ADAPTER_INFO` occupies on x64, for consumers that size buffers as the NDK does
/// (`NdkQueryAdapterInfo` answers `STATUS_BUFFER_TOO_SMALL` below it).
pub const ADAPTER_INFO_SIZE: usize = 0x68;

/// `NdkQueryAdapterInfo`'s buffer-size protocol: `STATUS_BUFFER_TOO_SMALL` with the size needed
/// when `buffer_size` is short.
pub fn check_info_buffer(buffer_size: usize) -> Result<(), (Status, usize)> {
    if buffer_size < ADAPTER_INFO_SIZE {
        return Err((Status::BUFFER_TOO_SMALL, ADAPTER_INFO_SIZE));
    }
    Ok(())
}
