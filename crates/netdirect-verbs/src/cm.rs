//! Connectors and listeners over librdmacm, and the adapter's CM thread.
//!
//! Active side: `connect` creates a CM id and resolves the address; the CM thread resolves the
//! route, attaches the QP to the id (INIT through `rdma_init_qp_attr`) and calls
//! `rdma_connect`; `RDMA_CM_EVENT_ESTABLISHED` completes the connect. librdmacm moves the QP to
//! RTR/RTS itself (it holds the QP in `id->qp`), and for IB/RoCE sends the RTU, so
//! `complete_connect` sends nothing. Passive side: `RDMA_CM_EVENT_CONNECT_REQUEST` on a
//! listener's id delivers a connector for the new id; `accept` attaches the QP and calls
//! `rdma_accept`; `RDMA_CM_EVENT_ESTABLISHED` completes it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use netdirect::{
    Completer, ConnectEvent, ConnectionData, Connector, DisconnectEvent, DisconnectEventEx,
    Listener, Object, Qp, Request, SharedEndpoint,
};
use netdirect_types::{ObjectType, RdmaTechnology, Status};
use parking_lot::Mutex;

use crate::adapter::{AdapterInner, readable, same_adapter};
use crate::errno_status;
use crate::ffi::{self, CmEvent, IdH, rdma_conn_param};
use crate::qp::{QpShared, VerbsQp};

/// How long address and route resolution may take.
const RESOLVE_MS: i32 = 5000;

enum OnDisconnect {
    None,
    Plain(DisconnectEvent),
    Ex(DisconnectEventEx),
}

#[derive(Default)]
struct ConnState {
    id: Option<IdH>,
    qp: Option<Arc<QpShared>>,
    /// What `rdma_connect` sends once the route is resolved: IRD, ORD, private data.
    connect_params: Option<(u32, u32, Vec<u8>)>,
    /// Our IRD and ORD as asked, to compute the effective limits.
    asked: (u32, u32),
    connect_done: Option<Completer<()>>,
    accept_done: Option<Completer<()>>,
    disconnect_done: Option<Completer<()>>,
    on_disconnect: Option<OnDisconnect>,
    data: ConnectionData,
    established: bool,
    disconnected: bool,
}

pub(crate) struct ConnShared {
    adapter: Arc<AdapterInner>,
    state: Mutex<ConnState>,
}

impl ConnShared {
    fn release(&self) {
        let (id, established, disconnected, qp) = {
            let mut s = self.state.lock();
            (s.id.take(), s.established, s.disconnected, s.qp.clone())
        };
        if let Some(id) = id {
            if established && !disconnected {
                let _ = self.adapter.lib.disconnect(id);
            }
            // A close disconnects, and a disconnect flushes (§7.7).
            if let (true, Some(qp)) = (established, qp) {
                qp.flush();
            }
            self.adapter.conns.lock().remove(&(id.0 as usize));
            self.adapter.lib.destroy_id(id);
        }
        self.state.lock().qp = None;
    }
}

/// A verbs connector.
pub(crate) struct VerbsConnector {
    shared: Arc<ConnShared>,
}

impl VerbsConnector {
    pub(crate) fn new_active(adapter: &Arc<AdapterInner>) -> VerbsConnector {
        VerbsConnector {
            shared: Arc::new(ConnShared {
                adapter: adapter.clone(),
                state: Mutex::new(ConnState::default()),
            }),
        }
    }

    fn our_qp(&self, qp: &dyn Qp) -> Result<Arc<QpShared>, Status> {
        let qp = qp
            .as_any()
            .downcast_ref::<VerbsQp>()
            .ok_or(Status::INVALID_PARAMETER)?;
        same_adapter(&self.shared.adapter, &qp.shared.adapter)?;
        Ok(qp.shared.clone())
    }

    fn accept_any(
        &self,
        qp: &dyn Qp,
        ird: u32,
        ord: u32,
        private_data: &[u8],
        on_disconnect: OnDisconnect,
    ) -> Request<()> {
        let qp = match self.our_qp(qp) {
            Ok(q) => q,
            Err(s) => return Request::failed(s),
        };
        let a = &self.shared.adapter;
        if private_data.len() > a.info.max_callee_data as usize {
            return Request::failed(Status::INVALID_BUFFER_SIZE);
        }
        if ird > a.info.max_inbound_read_limit || ord > a.info.max_outbound_read_limit {
            return Request::failed(Status::INVALID_PARAMETER);
        }
        let mut s = self.shared.state.lock();
        let Some(id) = s.id else {
            return Request::failed(Status::INVALID_DEVICE_STATE);
        };
        if s.qp.is_some() || s.connect_done.is_some() {
            return Request::failed(Status::INVALID_DEVICE_STATE);
        }
        let rc = a.lib.attach_qp(id, qp.qp);
        if rc != 0 {
            return Request::failed(errno_status(rc));
        }
        // Before the accept, the connection data holds the request's bounds as rdma-cm gives
        // them (from our side: the caller's ORD as our inbound limit, its IRD as our outbound).
        let (ird, ord) = effective_limits(
            (ird, ord),
            s.data.inbound_read_limit,
            s.data.outbound_read_limit,
        );
        let mut p = conn_param(ird, ord, private_data);
        let rc = a.lib.accept(id, &mut p);
        if rc != 0 {
            return Request::failed(errno_status(rc));
        }
        s.data.inbound_read_limit = ird;
        s.data.outbound_read_limit = ord;
        s.qp = Some(qp);
        s.on_disconnect = Some(on_disconnect);
        let (req, done) = Request::pending();
        s.accept_done = Some(done);
        req
    }

    fn complete_any(&self, on_disconnect: OnDisconnect) -> Request<()> {
        let mut s = self.shared.state.lock();
        if !s.established {
            return Request::failed(Status::INVALID_DEVICE_STATE);
        }
        if s.disconnected {
            return Request::failed(Status::CONNECTION_DISCONNECTED);
        }
        s.on_disconnect = Some(on_disconnect);
        Request::ok(())
    }
}

/// Our effective IRD and ORD. rdma-cm reports a peer's `responder_resources` and
/// `initiator_depth` from the receiver's side (the kernel swaps the peer's IRD and ORD, seen on
/// rxe and siw): `responder_resources` bounds our IRD (the peer's ORD), `initiator_depth` our
/// ORD (the peer's IRD).
fn effective_limits(
    (ird, ord): (u32, u32),
    responder_resources: u32,
    initiator_depth: u32,
) -> (u32, u32) {
    (ird.min(responder_resources), ord.min(initiator_depth))
}

fn conn_param(ird: u32, ord: u32, data: &[u8]) -> rdma_conn_param {
    rdma_conn_param {
        private_data: if data.is_empty() {
            std::ptr::null()
        } else {
            data.as_ptr().cast()
        },
        private_data_len: data.len().min(255) as u8,
        responder_resources: ird.min(255) as u8,
        initiator_depth: ord.min(255) as u8,
        flow_control: 1,
        retry_count: 7,
        rnr_retry_count: 7,
        srq: 0,
        qp_num: 0,
    }
}

impl Drop for VerbsConnector {
    fn drop(&mut self) {
        self.shared.release();
    }
}

impl Object for VerbsConnector {
    fn object_type(&self) -> ObjectType {
        ObjectType::Connector
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Connector for VerbsConnector {
    fn connect(
        &self,
        qp: &dyn Qp,
        local: SocketAddr,
        remote: SocketAddr,
        inbound_read_limit: u32,
        outbound_read_limit: u32,
        private_data: &[u8],
    ) -> Request<()> {
        let qp = match self.our_qp(qp) {
            Ok(q) => q,
            Err(s) => return Request::failed(s),
        };
        let a = &self.shared.adapter;
        if private_data.len() > a.info.max_caller_data as usize {
            return Request::failed(Status::INVALID_BUFFER_SIZE);
        }
        if inbound_read_limit > a.info.max_inbound_read_limit
            || outbound_read_limit > a.info.max_outbound_read_limit
            || local.is_ipv4() != remote.is_ipv4()
        {
            return Request::failed(Status::INVALID_PARAMETER);
        }
        let mut s = self.shared.state.lock();
        if s.id.is_some() {
            return Request::failed(Status::INVALID_DEVICE_STATE);
        }
        let id = match a.lib.create_id(a.event_channel) {
            Ok(id) => id,
            Err(e) => return Request::failed(errno_status(e)),
        };
        a.conns
            .lock()
            .insert(id.0 as usize, Arc::downgrade(&self.shared));
        // The source is the adapter's address, so the id binds to this adapter's device.
        let src = if local.ip().is_unspecified() {
            SocketAddr::new(a.address, local.port())
        } else {
            local
        };
        s.id = Some(id);
        s.qp = Some(qp);
        s.asked = (inbound_read_limit, outbound_read_limit);
        s.connect_params = Some((
            inbound_read_limit,
            outbound_read_limit,
            private_data.to_vec(),
        ));
        let (req, done) = Request::pending();
        s.connect_done = Some(done);
        let rc = a.lib.resolve_addr(id, Some(src), remote, RESOLVE_MS);
        if rc != 0 {
            if let Some(done) = s.connect_done.take() {
                done.complete(Err(errno_status(rc)));
            }
        }
        req
    }

    fn connect_with_shared_endpoint(
        &self,
        _qp: &dyn Qp,
        _endpoint: &dyn SharedEndpoint,
        _remote: SocketAddr,
        _ird: u32,
        _ord: u32,
        _private_data: &[u8],
    ) -> Request<()> {
        Request::failed(Status::NOT_SUPPORTED)
    }

    fn complete_connect(&self, disconnect: Option<DisconnectEvent>) -> Request<()> {
        self.complete_any(disconnect.map_or(OnDisconnect::None, OnDisconnect::Plain))
    }

    fn complete_connect_ex(&self, disconnect: Option<DisconnectEventEx>) -> Request<()> {
        self.complete_any(disconnect.map_or(OnDisconnect::None, OnDisconnect::Ex))
    }

    fn accept(
        &self,
        qp: &dyn Qp,
        ird: u32,
        ord: u32,
        private_data: &[u8],
        disconnect: Option<DisconnectEvent>,
    ) -> Request<()> {
        let d = disconnect.map_or(OnDisconnect::None, OnDisconnect::Plain);
        self.accept_any(qp, ird, ord, private_data, d)
    }

    fn accept_ex(
        &self,
        qp: &dyn Qp,
        ird: u32,
        ord: u32,
        private_data: &[u8],
        disconnect: Option<DisconnectEventEx>,
    ) -> Request<()> {
        let d = disconnect.map_or(OnDisconnect::None, OnDisconnect::Ex);
        self.accept_any(qp, ird, ord, private_data, d)
    }

    fn reject(&self, private_data: &[u8]) -> Result<(), Status> {
        let a = &self.shared.adapter;
        if private_data.len() > a.info.max_callee_data as usize {
            return Err(Status::INVALID_BUFFER_SIZE);
        }
        let s = self.shared.state.lock();
        let id = s.id.ok_or(Status::INVALID_DEVICE_STATE)?;
        if s.established {
            return Err(Status::INVALID_DEVICE_STATE);
        }
        match a.lib.reject(id, private_data) {
            0 => Ok(()),
            e => Err(errno_status(e)),
        }
    }

    fn connection_data(&self) -> Result<ConnectionData, Status> {
        let s = self.shared.state.lock();
        if s.id.is_none() {
            return Err(Status::INVALID_DEVICE_STATE);
        }
        Ok(s.data.clone())
    }

    fn local_address(&self) -> Result<SocketAddr, Status> {
        let s = self.shared.state.lock();
        let id = s.id.ok_or(Status::INVALID_DEVICE_STATE)?;
        self.shared
            .adapter
            .lib
            .id_addresses(id)
            .0
            .ok_or(Status::INVALID_DEVICE_STATE)
    }

    fn peer_address(&self) -> Result<SocketAddr, Status> {
        let s = self.shared.state.lock();
        let id = s.id.ok_or(Status::INVALID_DEVICE_STATE)?;
        self.shared
            .adapter
            .lib
            .id_addresses(id)
            .1
            .ok_or(Status::INVALID_DEVICE_STATE)
    }

    fn disconnect(&self) -> Request<()> {
        let mut s = self.shared.state.lock();
        let Some(id) = s.id else {
            return Request::failed(Status::INVALID_DEVICE_STATE);
        };
        if !s.established || s.disconnected {
            // The peer disconnected first: ours is the flush the NDK's disconnect does (§7.7).
            if let Some(qp) = &s.qp {
                qp.flush();
            }
            return Request::ok(());
        }
        let (req, done) = Request::pending();
        s.disconnect_done = Some(done);
        let rc = self.shared.adapter.lib.disconnect(id);
        // After the disconnect request went (a graceful close on iWARP), everything still
        // outstanding completes cancelled.
        if let Some(qp) = &s.qp {
            qp.flush();
        }
        if rc != 0 {
            if let Some(done) = s.disconnect_done.take() {
                done.complete(Ok(()));
            }
        }
        req
    }

    fn close(self: Box<Self>) -> Request<()> {
        self.shared.release();
        Request::ok(())
    }
}

/// A verbs listener.
pub(crate) struct VerbsListener {
    shared: Arc<ListenShared>,
}

pub(crate) struct ListenShared {
    adapter: Arc<AdapterInner>,
    id: Mutex<Option<IdH>>,
    callback: ConnectEvent,
    paused: AtomicBool,
}

impl ListenShared {
    fn release(&self) {
        if let Some(id) = self.id.lock().take() {
            self.adapter.listeners.lock().remove(&(id.0 as usize));
            self.adapter.lib.destroy_id(id);
        }
    }
}

impl VerbsListener {
    pub(crate) fn new(adapter: &Arc<AdapterInner>, callback: ConnectEvent) -> VerbsListener {
        VerbsListener {
            shared: Arc::new(ListenShared {
                adapter: adapter.clone(),
                id: Mutex::new(None),
                callback,
                paused: AtomicBool::new(false),
            }),
        }
    }
}

impl Drop for VerbsListener {
    fn drop(&mut self) {
        self.shared.release();
    }
}

impl Object for VerbsListener {
    fn object_type(&self) -> ObjectType {
        ObjectType::Listener
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Listener for VerbsListener {
    fn listen(&self, address: SocketAddr) -> Request<()> {
        let a = &self.shared.adapter;
        let mut slot = self.shared.id.lock();
        if slot.is_some() {
            return Request::failed(Status::INVALID_DEVICE_STATE);
        }
        let id = match a.lib.create_id(a.event_channel) {
            Ok(id) => id,
            Err(e) => return Request::failed(errno_status(e)),
        };
        let address = if address.ip().is_unspecified() {
            SocketAddr::new(a.address, address.port())
        } else {
            address
        };
        // The adapter listens on its own address only (rdma-cm would bind a loopback address
        // to any device).
        if address.ip() != a.address {
            a.lib.destroy_id(id);
            return Request::failed(Status::INVALID_ADDRESS);
        }
        let rc = a.lib.bind_addr(id, address);
        let rc = if rc == 0 { a.lib.listen(id, 64) } else { rc };
        if rc != 0 {
            a.lib.destroy_id(id);
            // A port someone listens on is the NDK's sharing violation (§10 row 18).
            return Request::failed(if rc.abs() == libc::EADDRINUSE {
                Status::SHARING_VIOLATION
            } else {
                errno_status(rc)
            });
        }
        a.listeners
            .lock()
            .insert(id.0 as usize, Arc::downgrade(&self.shared));
        *slot = Some(id);
        Request::ok(())
    }

    fn local_address(&self) -> Result<SocketAddr, Status> {
        let id = (*self.shared.id.lock()).ok_or(Status::INVALID_DEVICE_STATE)?;
        self.shared
            .adapter
            .lib
            .id_addresses(id)
            .0
            .ok_or(Status::INVALID_DEVICE_STATE)
    }

    fn control_connect_events(&self, pause: bool) {
        self.shared.paused.store(pause, Ordering::SeqCst);
    }

    fn close(self: Box<Self>) -> Request<()> {
        self.shared.release();
        Request::ok(())
    }
}

/// NTSTATUS of a failed CM event.
fn event_status(ev: &CmEvent) -> Status {
    match ev.event {
        ffi::RDMA_CM_EVENT_REJECTED => Status::CONNECTION_REFUSED,
        ffi::RDMA_CM_EVENT_UNREACHABLE | ffi::RDMA_CM_EVENT_CONNECT_ERROR
            if ev.status == -libc::ETIMEDOUT =>
        {
            Status::IO_TIMEOUT
        }
        ffi::RDMA_CM_EVENT_ADDR_ERROR | ffi::RDMA_CM_EVENT_ROUTE_ERROR => {
            if ev.status == -libc::ETIMEDOUT {
                Status::IO_TIMEOUT
            } else {
                Status::HOST_UNREACHABLE
            }
        }
        ffi::RDMA_CM_EVENT_DEVICE_REMOVAL => Status::CONNECTION_ABORTED,
        _ if ev.status == -libc::ECONNREFUSED => Status::CONNECTION_REFUSED,
        _ => Status::HOST_UNREACHABLE,
    }
}

/// The CM thread: one event at a time, copied out and acknowledged before it is handled.
pub(crate) fn run(weak: Weak<AdapterInner>) {
    let Some(fd) = weak
        .upgrade()
        .map(|a| a.lib.event_channel_fd(a.event_channel))
    else {
        return;
    };
    loop {
        // Closed with the adapter's last reference: POLLNVAL, and the upgrade below fails.
        if !readable(fd, 100) {
            if weak.strong_count() == 0 {
                return;
            }
            continue;
        }
        let Some(adapter) = weak.upgrade() else {
            return;
        };
        let Some(ev) = adapter.lib.take_cm_event(adapter.event_channel) else {
            continue;
        };
        if ev.event == ffi::RDMA_CM_EVENT_CONNECT_REQUEST {
            incoming(&adapter, ev);
            continue;
        }
        let conn = adapter
            .conns
            .lock()
            .get(&(ev.id.0 as usize))
            .and_then(Weak::upgrade);
        if let Some(conn) = conn {
            on_event(&conn, ev);
        }
    }
}

fn incoming(adapter: &Arc<AdapterInner>, ev: CmEvent) {
    let listener = ev.listen_id.and_then(|l| {
        adapter
            .listeners
            .lock()
            .get(&(l.0 as usize))
            .and_then(Weak::upgrade)
    });
    let Some(listener) = listener else {
        let _ = adapter.lib.reject(ev.id, &[]);
        adapter.lib.destroy_id(ev.id);
        return;
    };
    if listener.paused.load(Ordering::SeqCst) {
        let _ = adapter.lib.reject(ev.id, &[]);
        adapter.lib.destroy_id(ev.id);
        return;
    }
    let shared = Arc::new(ConnShared {
        adapter: adapter.clone(),
        state: Mutex::new(ConnState {
            id: Some(ev.id),
            data: ConnectionData {
                // From our side already (see `effective_limits`).
                inbound_read_limit: u32::from(ev.responder_resources),
                outbound_read_limit: u32::from(ev.initiator_depth),
                private_data: ev.private_data,
            },
            ..ConnState::default()
        }),
    });
    adapter
        .conns
        .lock()
        .insert(ev.id.0 as usize, Arc::downgrade(&shared));
    (listener.callback)(Box::new(VerbsConnector { shared }));
}

fn on_event(conn: &Arc<ConnShared>, ev: CmEvent) {
    let lib = &conn.adapter.lib;
    let mut s = conn.state.lock();
    let Some(id) = s.id else { return };
    match ev.event {
        ffi::RDMA_CM_EVENT_ADDR_RESOLVED => {
            let rc = lib.resolve_route(id, RESOLVE_MS);
            if rc != 0 {
                if let Some(done) = s.connect_done.take() {
                    done.complete(Err(errno_status(rc)));
                }
            }
        }
        ffi::RDMA_CM_EVENT_ROUTE_RESOLVED => {
            let Some((ird, ord, data)) = s.connect_params.take() else {
                return;
            };
            let Some(qp) = s.qp.clone() else { return };
            let mut rc = lib.attach_qp(id, qp.qp);
            if rc == 0 {
                let mut p = conn_param(ird, ord, &data);
                rc = lib.connect(id, &mut p);
            }
            if rc != 0 {
                if let Some(done) = s.connect_done.take() {
                    done.complete(Err(errno_status(rc)));
                }
            }
        }
        ffi::RDMA_CM_EVENT_ESTABLISHED => {
            s.established = true;
            if let Some(qp) = &s.qp {
                qp.connected();
            }
            if let Some(done) = s.connect_done.take() {
                let (rr, id) = (
                    u32::from(ev.responder_resources),
                    u32::from(ev.initiator_depth),
                );
                // On iWARP the established event's pair comes the other way round: the
                // driver reports our side's bounds (siw: `cep->ird = rep_ord`) and the
                // kernel's iWARP CM maps `ird` to `initiator_depth` (seen on siw).
                let iwarp = conn.adapter.info.rdma_technology == RdmaTechnology::IWarp;
                let (rr, id) = if iwarp { (id, rr) } else { (rr, id) };
                let (ird, ord) = effective_limits(s.asked, rr, id);
                s.data = ConnectionData {
                    inbound_read_limit: ird,
                    outbound_read_limit: ord,
                    private_data: ev.private_data,
                };
                drop(s);
                done.complete(Ok(()));
            } else if let Some(done) = s.accept_done.take() {
                drop(s);
                done.complete(Ok(()));
            }
        }
        ffi::RDMA_CM_EVENT_DISCONNECTED => {
            s.disconnected = true;
            // The connection is gone: later posts fail inline (§7.7); the QP is not flushed
            // here (on iWARP the device flushes it itself, see the crate docs).
            if let Some(qp) = &s.qp {
                qp.set_error();
            }
            if let Some(done) = s.disconnect_done.take() {
                drop(s);
                done.complete(Ok(()));
                return;
            }
            // The peer's disconnect: answer it (IB waits for our DREP), leave the QP as is.
            let _ = lib.disconnect_reply(id);
            let cb = s.on_disconnect.take();
            drop(s);
            match cb {
                Some(OnDisconnect::Plain(f)) => f(),
                Some(OnDisconnect::Ex(f)) => f(0),
                _ => {}
            }
        }
        ffi::RDMA_CM_EVENT_TIMEWAIT_EXIT | ffi::RDMA_CM_EVENT_CONNECT_RESPONSE => {}
        _ => {
            let status = event_status(&ev);
            if ev.event == ffi::RDMA_CM_EVENT_REJECTED {
                s.data.private_data = ev.private_data;
            }
            let done = s.connect_done.take().or_else(|| s.accept_done.take());
            drop(s);
            if let Some(done) = done {
                done.complete(Err(status));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_limits_from_our_side() {
        // We ask IRD 4, ORD 2; the peer sends at most 1 read (our responder resources) and
        // serves 8 (our initiator depth).
        assert_eq!(effective_limits((4, 2), 1, 8), (1, 2));
        assert_eq!(effective_limits((4, 16), 16, 8), (4, 8));
    }
}
