//! `NDK_SHARED_ENDPOINT`: a local address and port that several outgoing connections share.
//!
//! The port is held by a bound (not listening) TCP socket with `SO_REUSEADDR` for the
//! endpoint's life; connections bind the same address with `SO_REUSEADDR`, and the kernel
//! refuses a duplicate 4-tuple (`STATUS_ADDRESS_ALREADY_EXISTS`).

use std::net::SocketAddr;

use netdirect::{Request, SharedEndpoint};
use netdirect_types::Status;
use socket2::{Domain, Protocol, Socket, Type};

use super::AdapterId;
use super::adapter::AdapterShared;
use crate::transport::bind_status;

/// A shared endpoint of the software RNIC.
pub struct SoftSharedEndpoint {
    adapter: AdapterId,
    pub(crate) address: SocketAddr,
    _socket: Socket,
}

impl SoftSharedEndpoint {
    pub(crate) fn new(
        shared: &AdapterShared,
        address: SocketAddr,
    ) -> Result<SoftSharedEndpoint, Status> {
        let address = shared.local(address)?;
        let socket = Socket::new(
            Domain::for_address(address),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .map_err(|e| bind_status(&e))?;
        socket
            .set_reuse_address(true)
            .map_err(|e| bind_status(&e))?;
        socket.bind(&address.into()).map_err(|e| bind_status(&e))?;
        let address = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or(Status::INVALID_ADDRESS)?;
        Ok(SoftSharedEndpoint {
            adapter: shared.id,
            address,
            _socket: socket,
        })
    }
}

super::soft_object!(SoftSharedEndpoint, SharedEndpoint, |e| e.adapter);

impl SharedEndpoint for SoftSharedEndpoint {
    fn local_address(&self) -> Result<SocketAddr, Status> {
        Ok(self.address)
    }

    fn close(self: Box<Self>) -> Request<()> {
        Request::ok(())
    }
}
