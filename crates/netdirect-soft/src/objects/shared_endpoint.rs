//! `NDK_SHARED_ENDPOINT`: a local address and port that several outgoing connections share.
//!
//! The port is held by a bound (not listening) TCP socket with `SO_REUSEADDR` for the
//! endpoint's life; connections bind the same address with `SO_REUSEADDR`, and the kernel
//! refuses a duplicate 4-tuple (`STATUS_ADDRESS_ALREADY_EXISTS`).
//!
//! Close (§2.6, §2.8): pends until the connectors connected over the endpoint are closed
//! ([`super::lifetime`]); the socket and the port ([`super::ports`]) are held until then, so a
//! listen, connect or shared endpoint on that address and port fails with
//! `STATUS_SHARING_VIOLATION`. Port 0 takes an NDK ephemeral port.

use std::net::SocketAddr;

use netdirect::{Request, SharedEndpoint};
use netdirect_types::Status;
use socket2::{Domain, Protocol, Socket, Type};

use super::AdapterId;
use super::adapter::AdapterShared;
use super::lifetime::{Antecedent, Reference};
use super::ports::Port;
use crate::transport::bind_status;

/// What the endpoint holds until its close completes.
struct Held {
    _socket: Socket,
    _port: Port,
    _adapter: Reference,
}

/// A shared endpoint of the software RNIC.
pub struct SoftSharedEndpoint {
    adapter: AdapterId,
    pub(crate) address: SocketAddr,
    /// The endpoint as antecedent of the connectors connected over it.
    lifetime: Antecedent,
    held: Option<Held>,
}

impl SoftSharedEndpoint {
    pub(crate) fn new(
        shared: &AdapterShared,
        address: SocketAddr,
    ) -> Result<SoftSharedEndpoint, Status> {
        let address = shared.local(address)?;
        let (port, (socket, address)) = Port::bind(address, |address| {
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
            Ok((socket, address))
        })?;
        Ok(SoftSharedEndpoint {
            adapter: shared.id,
            address,
            lifetime: Antecedent::new(),
            held: Some(Held {
                _socket: socket,
                _port: port,
                _adapter: shared.lifetime.reference(),
            }),
        })
    }

    /// A reference for a connector that connects over the endpoint (get the endpoint through
    /// [`super::ours`]).
    pub(crate) fn reference(&self) -> Reference {
        self.lifetime.reference()
    }

    /// What `close` and `Drop` release (idempotent): the socket, port and adapter reference,
    /// once the connectors over the endpoint are closed.
    fn release(&mut self) -> Request<()> {
        match self.held.take() {
            Some(held) => self.lifetime.close(move || drop(held)),
            None => Request::ok(()),
        }
    }
}

super::soft_object!(SoftSharedEndpoint, SharedEndpoint, |e| e.adapter);

impl SharedEndpoint for SoftSharedEndpoint {
    fn local_address(&self) -> Result<SocketAddr, Status> {
        Ok(self.address)
    }

    fn close(mut self: Box<Self>) -> Request<()> {
        self.release()
    }
}

impl Drop for SoftSharedEndpoint {
    /// What `close` releases (§10 table, row 29).
    fn drop(&mut self) {
        drop(self.release());
    }
}
