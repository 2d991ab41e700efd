//! `NDK_LISTENER`.
//!
//! Decisions: listening on an address that is not the adapter's is `STATUS_INVALID_ADDRESS`
//! (the unspecified address means the adapter's); a second `listen` on one listener is
//! `STATUS_INVALID_DEVICE_STATE`; port 0 takes an NDK ephemeral port ([`super::ports`]).
//!
//! Out of descriptors, an incoming connection is reset at once (its initiator's connect fails
//! `STATUS_CONNECTION_REFUSED` instead of timing out) and [`Listener::take_error`] reports
//! `STATUS_INSUFFICIENT_RESOURCES`; accepting resumes by itself when descriptors are free.
//!
//! Close (§2.6, §2.8): new requests are refused at once (the progress thread closes the
//! socket); the close completes when the socket is closed *and* every connector the listener
//! delivered is closed ([`super::lifetime`]). The port stays held until then: a listen, connect
//! or shared endpoint on it fails with `STATUS_SHARING_VIOLATION`, and when the close completes
//! the port is free. Dropping a listener starts the same close.

use std::net::SocketAddr;
use std::sync::Arc;

use netdirect::{ConnectEvent, Listener, Request};
use netdirect_types::Status;
use parking_lot::Mutex;

use super::adapter::AdapterShared;
use super::connector::SoftConnector;
use super::lifetime::{Antecedent, Reference};
use super::ports::Port;
use super::qp::SoftHost;
use crate::transport;

/// What a listening listener holds: the socket (with a reference on the listener's lifetime
/// that the progress thread drops once it closed it) and the port.
struct Listening {
    socket: transport::Listener<SoftHost>,
    socket_open: Reference,
    port: Port,
}

/// A listener of the software RNIC.
pub struct SoftListener {
    shared: Arc<AdapterShared>,
    connect_event: ConnectEvent,
    listening: Mutex<Option<Listening>>,
    /// The listener as antecedent of the connectors it delivers and of its own socket.
    lifetime: Antecedent,
    adapter: Option<Reference>,
}

impl SoftListener {
    pub(crate) fn new(shared: Arc<AdapterShared>, connect_event: ConnectEvent) -> SoftListener {
        let adapter = Some(shared.lifetime.reference());
        SoftListener {
            shared,
            connect_event,
            listening: Mutex::new(None),
            lifetime: Antecedent::new(),
            adapter,
        }
    }

    /// What `close` and `Drop` release (idempotent): stops accepting and returns the close
    /// request, which completes when the socket is closed and the delivered connectors are
    /// gone; then the port and the adapter are let go.
    fn release(&mut self) -> Request<()> {
        let Some(adapter) = self.adapter.take() else {
            return Request::ok(());
        };
        let listening = self.listening.get_mut().take();
        let (socket, port) = match listening {
            Some(Listening {
                socket,
                socket_open,
                port,
            }) => (Some((socket, socket_open)), Some(port)),
            None => (None, None),
        };
        let closed = self.lifetime.close(move || {
            drop(port);
            drop(adapter);
        });
        if let Some((socket, socket_open)) = socket {
            // Refused from now on, also requests parsed before the socket closes (§2.6).
            socket.pause(true);
            socket.close(move || drop(socket_open));
        }
        closed
    }
}

impl Drop for SoftListener {
    /// What `close` releases (§10 table, row 29).
    fn drop(&mut self) {
        drop(self.release());
    }
}

super::soft_object!(SoftListener, Listener, |l| l.shared.id);

impl Listener for SoftListener {
    fn listen(&self, address: SocketAddr) -> Request<()> {
        let address = match self.shared.local(address) {
            Ok(a) => a,
            Err(e) => return Request::failed(e),
        };
        let mut slot = self.listening.lock();
        if slot.is_some() {
            return Request::failed(Status::INVALID_DEVICE_STATE);
        }
        let result = Port::bind(address, |address| {
            // Weak: the engine owns this closure, and a strong reference would keep the
            // adapter (and so the engine) alive from inside its own thread, which could then
            // not be joined when the consumer lets go of the adapter.
            let shared = Arc::downgrade(&self.shared);
            let event = self.connect_event.clone();
            let lifetime = self.lifetime.clone();
            self.shared
                .engine
                .listen(address, self.shared.mpa.clone(), move |incoming| {
                    // Adapter gone: dropping the request rejects it.
                    if let Some(shared) = shared.upgrade() {
                        let listener = lifetime.reference();
                        let connector = SoftConnector::passive(shared, incoming, listener);
                        let delivery = connector.delivery();
                        event(Box::new(connector));
                        delivery.handed_over();
                    }
                })
        });
        Request::ready(result.map(|(port, socket)| {
            *slot = Some(Listening {
                socket,
                socket_open: self.lifetime.reference(),
                port,
            });
        }))
    }

    fn local_address(&self) -> Result<SocketAddr, Status> {
        self.listening
            .lock()
            .as_ref()
            .map(|l| l.socket.local_addr())
            .ok_or(Status::INVALID_DEVICE_STATE)
    }

    fn control_connect_events(&self, pause: bool) {
        if let Some(l) = self.listening.lock().as_ref() {
            l.socket.pause(pause);
        }
    }

    fn take_error(&self) -> Option<Status> {
        self.listening
            .lock()
            .as_ref()
            .and_then(|l| l.socket.take_error())
    }

    fn close(mut self: Box<Self>) -> Request<()> {
        self.release()
    }
}
