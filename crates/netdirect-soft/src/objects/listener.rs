//! `NDK_LISTENER`.
//!
//! Decisions: listening on an address that is not the adapter's is `STATUS_INVALID_ADDRESS`
//! (the unspecified address means the adapter's); a second `listen` on one listener is
//! `STATUS_INVALID_DEVICE_STATE`; closing stops accepting at once (the TCP listener closes);
//! connections accepted earlier live on with their own sockets, so the close completes at once
//! too (§2.6's "pending until accepted connectors are closed" only matters for the port, which
//! the kernel keeps reserved while those sockets exist).

use std::net::SocketAddr;
use std::sync::Arc;

use netdirect::{ConnectEvent, Listener, Request};
use netdirect_types::Status;
use parking_lot::Mutex;

use super::adapter::AdapterShared;
use super::connector::SoftConnector;
use super::qp::SoftHost;
use crate::transport;

/// A listener of the software RNIC.
pub struct SoftListener {
    shared: Arc<AdapterShared>,
    connect_event: ConnectEvent,
    listener: Mutex<Option<transport::Listener<SoftHost>>>,
}

impl SoftListener {
    pub(crate) fn new(shared: Arc<AdapterShared>, connect_event: ConnectEvent) -> SoftListener {
        SoftListener {
            shared,
            connect_event,
            listener: Mutex::new(None),
        }
    }
}

super::soft_object!(SoftListener, Listener, |l| l.shared.id);

impl Listener for SoftListener {
    fn listen(&self, address: SocketAddr) -> Request<()> {
        let address = match self.shared.local(address) {
            Ok(a) => a,
            Err(e) => return Request::failed(e),
        };
        let mut slot = self.listener.lock();
        if slot.is_some() {
            return Request::failed(Status::INVALID_DEVICE_STATE);
        }
        // Weak: the engine owns this closure, and a strong reference would keep the adapter
        // (and so the engine) alive from inside its own thread, which could then not be joined
        // when the consumer lets go of the adapter.
        let shared = Arc::downgrade(&self.shared);
        let event = self.connect_event.clone();
        let result = self
            .shared
            .engine
            .listen(address, self.shared.mpa.clone(), move |incoming| {
                // Adapter gone: dropping the request rejects it.
                if let Some(shared) = shared.upgrade() {
                    event(Box::new(SoftConnector::passive(shared, incoming)));
                }
            });
        Request::ready(result.map(|l| *slot = Some(l)))
    }

    fn local_address(&self) -> Result<SocketAddr, Status> {
        self.listener
            .lock()
            .as_ref()
            .map(|l| l.local_addr())
            .ok_or(Status::INVALID_DEVICE_STATE)
    }

    fn control_connect_events(&self, pause: bool) {
        if let Some(l) = self.listener.lock().as_ref() {
            l.pause(pause);
        }
    }

    fn close(self: Box<Self>) -> Request<()> {
        self.listener.lock().take();
        Request::ok(())
    }
}
