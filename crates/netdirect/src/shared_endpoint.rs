//! The shared endpoint (`NDK_SHARED_ENDPOINT`).

use std::net::SocketAddr;

use netdirect_types::Status;

use crate::{Object, Request};

/// A local address and port several outgoing connections share.
pub trait SharedEndpoint: Object {
    /// The endpoint's address (with the port chosen for port 0).
    #[doc(alias = "NdkGetSharedEndpointLocalAddress")]
    #[doc(alias = "NdkGetLocalAddress")]
    fn local_address(&self) -> Result<SocketAddr, Status>;

    /// Closes the endpoint (pending until the connectors using it are closed).
    #[doc(alias = "NdkCloseSharedEndpoint")]
    fn close(self: Box<Self>) -> Request<()>;
}
