//! The listener (`NDK_LISTENER`).

use std::net::SocketAddr;

use netdirect_types::Status;

use crate::{Object, Request};

/// A listener: delivers a connector per incoming connection request to its connect event.
pub trait Listener: Object {
    /// Listens on `address` (port 0: ephemeral).
    #[doc(alias = "NdkListen")]
    fn listen(&self, address: SocketAddr) -> Request<()>;

    /// The address listened on (with the port chosen for port 0).
    #[doc(alias = "NdkGetListenerLocalAddress")]
    #[doc(alias = "NdkGetLocalAddress")]
    fn local_address(&self) -> Result<SocketAddr, Status>;

    /// Pauses (`true`) or resumes connect events; while paused, requests are refused as if no
    /// one listened.
    #[doc(alias = "NdkControlConnectEvents")]
    fn control_connect_events(&self, pause: bool);

    /// Not an NDK call (the NDK has no way to tell a listener's consumer): the status of the
    /// last incoming connection the provider refused on its own since the previous call (say
    /// `STATUS_INSUFFICIENT_RESOURCES` when it ran out of descriptors), and clears it. `None`
    /// when there was none, or the provider does not report it.
    fn take_error(&self) -> Option<Status> {
        None
    }

    /// Closes the listener: new requests are refused at once; the close completes when the
    /// connectors accepted through it are closed.
    #[doc(alias = "NdkCloseListener")]
    fn close(self: Box<Self>) -> Request<()>;
}
