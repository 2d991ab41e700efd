//! `NDK_CONNECTOR`: one connection, active (created by the consumer) or passive (delivered by a
//! listener).
//!
//! Decisions (NDK §10):
//! * private data over `MaxCallerData`/`MaxCalleeData` (252): `STATUS_INVALID_BUFFER_SIZE`
//!   (NDSPI's choice);
//! * connect or accept with a QP that already has a connection: `STATUS_CONNECTION_ACTIVE`; a
//!   connector is used for one connection only (second connect: `STATUS_CONNECTION_ACTIVE`);
//! * calls in the wrong state (complete-connect before the peer accepted, accept on an active
//!   connector, addresses before a connection exists): `STATUS_CONNECTION_INVALID` (§10.21);
//!   so is a connect or accept with a QP flushed before it had a connection (a flush is final);
//! * `NdkGetConnectionData` reports exactly the private data the peer sent; before there is
//!   any (an active connector whose connect has not completed) it is `STATUS_CONNECTION_INVALID`
//!   like the other wrong-state calls;
//! * endpoints (§2.8, [`super::ports`]): `NdkConnect` holds its local address and port (port 0:
//!   an NDK ephemeral port) until the connector is closed; a connector over a shared endpoint,
//!   or delivered by a listener, holds a reference on that object instead, so its close pends
//!   ([`super::lifetime`]);
//! * the timeouts are the transport's: 20 s for TCP connect, 10 s for the MPA Reply; a consumer
//!   may take as long as it likes to accept or complete (§7.6);
//! * a thread blocked waiting for a connect (or an accept) whose other end is a connector of
//!   this process that owes the answer (accept, or complete-connect) fails after
//!   [`answers::ANSWER_GRACE`] with `STATUS_POSSIBLE_DEADLOCK`, and the connection is given up
//!   ([`answers`], §10 table, row 34).

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use netdirect::{
    ConnectionData, Connector, DisconnectEvent, DisconnectEventEx, Qp, Request, SharedEndpoint,
};
use netdirect_proto::handshake::ReadLimits;
use netdirect_types::Status;
use parking_lot::Mutex;

use super::adapter::AdapterShared;
use super::answers::{self, End, Key, Owed};
use super::lifetime::Reference;
use super::limits::MAX_PRIVATE_DATA;
use super::ours;
use super::ports::Port;
use super::qp::{DisconnectCallback, QpCore, SoftHost, SoftQp};
use super::shared_endpoint::SoftSharedEndpoint;
use crate::transport::{ConnectParams, Incoming};

enum State {
    /// Active connector, nothing done yet.
    Idle,
    /// Active: connect in progress, or accepted by the peer (the QP holds the connection).
    Active { qp: Arc<QpCore> },
    /// Passive: the request waiting for accept or reject.
    Requested(Incoming<SoftHost>),
    /// Passive: accepted on this QP.
    Accepted { qp: Arc<QpCore> },
    /// Rejected, failed, or closed.
    Done,
}

struct Inner {
    state: State,
    /// `None` until there is connection data (passive: at once; active: when the connect
    /// completed).
    data: Option<ConnectionData>,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
}

/// Where a connection's local endpoint comes from, and what the connector holds of it until it
/// is closed (§2.8).
enum Endpoint {
    /// `NdkConnect`: the connector's own port.
    Own { _port: Port },
    /// A reference on the shared endpoint or listener that holds the port.
    Over { _on: Reference },
}

/// The local side of a connect.
enum Local {
    Own(SocketAddr),
    Shared(SocketAddr, Reference),
}

/// A connector of the software RNIC.
pub struct SoftConnector {
    shared: Arc<AdapterShared>,
    inner: Arc<Mutex<Inner>>,
    endpoint: Mutex<Option<Endpoint>>,
    /// Whether this end's consumer owes the other end an answer, and under which key the
    /// other ends of this process find it ([`answers`]).
    owed: Owed,
    key: Mutex<Option<Key>>,
    /// Last, so that the adapter's shared state is released first.
    _adapter: Reference,
}

fn limit(v: u32) -> u16 {
    u16::try_from(v.min(super::limits::MAX_READ_LIMIT)).unwrap_or(u16::MAX)
}

impl SoftConnector {
    pub(crate) fn active(shared: Arc<AdapterShared>) -> SoftConnector {
        let adapter = shared.lifetime.reference();
        let owed = Owed::new(shared.activity.clone());
        SoftConnector {
            shared,
            inner: Arc::new(Mutex::new(Inner {
                state: State::Idle,
                data: None,
                local: None,
                peer: None,
            })),
            endpoint: Mutex::new(None),
            owed,
            key: Mutex::new(None),
            _adapter: adapter,
        }
    }

    pub(crate) fn passive(
        shared: Arc<AdapterShared>,
        incoming: Incoming<SoftHost>,
        listener: Reference,
    ) -> SoftConnector {
        let request = incoming.request();
        let (ird, ord) = request.limits.map_or((0, 0), |l| (l.ord, l.ird));
        let data = ConnectionData {
            // As seen from here before accepting: what the peer asked for, capped by our maxima
            // (§7.6: inbound is the peer's outbound request and vice versa).
            inbound_read_limit: u32::from(ird).min(shared.info.max_inbound_read_limit),
            outbound_read_limit: u32::from(ord).min(shared.info.max_outbound_read_limit),
            private_data: request.private_data.clone(),
        };
        let (local, peer) = (incoming.local_addr(), incoming.peer_addr());
        let adapter = shared.lifetime.reference();
        let owed = Owed::new(shared.activity.clone());
        let key = (peer, local, End::Passive);
        answers::register(key, &owed);
        SoftConnector {
            shared,
            inner: Arc::new(Mutex::new(Inner {
                state: State::Requested(incoming),
                data: Some(data),
                local: Some(local),
                peer: Some(peer),
            })),
            endpoint: Mutex::new(Some(Endpoint::Over { _on: listener })),
            owed,
            key: Mutex::new(Some(key)),
            _adapter: adapter,
        }
    }

    /// What the listener marks once its connect event has handed this connector over.
    pub(crate) fn delivery(&self) -> Delivered {
        Delivered {
            inner: self.inner.clone(),
            owed: self.owed.clone(),
        }
    }

    fn start(
        &self,
        qp: &dyn Qp,
        local: Local,
        remote: SocketAddr,
        ird: u32,
        ord: u32,
        private_data: &[u8],
    ) -> Request<()> {
        self.shared.activity.touch();
        if private_data.len() > MAX_PRIVATE_DATA as usize {
            return Request::failed(Status::INVALID_BUFFER_SIZE);
        }
        let core = match self.qp_core(qp) {
            Ok(c) => c,
            Err(e) => return Request::failed(e),
        };
        let mut inner = self.inner.lock();
        if !matches!(inner.state, State::Idle) || core.conn.get().is_some() {
            return Request::failed(Status::CONNECTION_ACTIVE);
        }
        if core.is_flushed() {
            return Request::failed(Status::CONNECTION_INVALID);
        }
        // One completer for every attempt (port 0 may take a few, [`Port::bind`]); the watch
        // over blocked waits gives up a connect whose accept this process owes itself.
        let done = Arc::new(Mutex::new(None));
        let (request, completer) = Request::pending_watched(give_up_when_waiting_for_itself(
            End::Passive,
            Arc::downgrade(&self.inner),
            Arc::downgrade(&done),
        ));
        *done.lock() = Some(completer);
        let attempt = |local: SocketAddr| {
            let params = ConnectParams {
                local: Some(local),
                remote,
                config: self.shared.mpa.clone(),
                limits: ReadLimits {
                    ird: limit(ird),
                    ord: limit(ord),
                },
                private_data: private_data.to_vec(),
            };
            let state = self.inner.clone();
            let done = done.clone();
            let owed = self.owed.clone();
            self.shared
                .engine
                .connect(params, SoftHost::new(core.clone()), move |result| {
                    let Some(done) = done.lock().take() else {
                        return;
                    };
                    let mut inner = state.lock();
                    match result {
                        Ok(n) => {
                            inner.data = Some(ConnectionData {
                                inbound_read_limit: u32::from(n.limits.ird),
                                outbound_read_limit: u32::from(n.limits.ord),
                                private_data: n.peer_private_data,
                            });
                            // Complete-connect or reject is this consumer's now.
                            owed.owe();
                            drop(inner);
                            done.complete(Ok(()));
                        }
                        Err(e) => {
                            inner.data = Some(ConnectionData {
                                private_data: e.private_data,
                                ..ConnectionData::default()
                            });
                            inner.state = State::Done;
                            drop(inner);
                            done.complete(Err(e.status));
                        }
                    }
                })
        };
        let conn = match local {
            Local::Own(local) => {
                Port::bind(local, attempt).map(|(port, conn)| (conn, Endpoint::Own { _port: port }))
            }
            Local::Shared(local, endpoint) => {
                attempt(local).map(|conn| (conn, Endpoint::Over { _on: endpoint }))
            }
        };
        match conn {
            Ok((conn, endpoint)) => {
                inner.local = Some(conn.local_addr());
                inner.peer = Some(conn.peer_addr());
                let key = (conn.local_addr(), conn.peer_addr(), End::Active);
                answers::register(key, &self.owed);
                *self.key.lock() = Some(key);
                *self.endpoint.lock() = Some(endpoint);
                if let Err(e) = core.set_connection(conn) {
                    return Request::failed(e);
                }
                inner.state = State::Active { qp: core };
                request
            }
            Err(e) => {
                inner.state = State::Done;
                Request::failed(e)
            }
        }
    }

    fn complete(&self, disconnect: Option<DisconnectCallback>) -> Request<()> {
        self.shared.activity.touch();
        let inner = self.inner.lock();
        let State::Active { qp } = &inner.state else {
            return Request::failed(Status::CONNECTION_INVALID);
        };
        let Ok(conn) = qp.connection() else {
            return Request::failed(Status::CONNECTION_INVALID);
        };
        *qp.disconnect.lock() = disconnect;
        self.owed.settle();
        let (request, done) = Request::pending();
        conn.complete(move |status| done.complete(status_result(status)));
        request
    }

    fn accept_with(
        &self,
        qp: &dyn Qp,
        ird: u32,
        ord: u32,
        private_data: &[u8],
        disconnect: Option<DisconnectCallback>,
    ) -> Request<()> {
        self.shared.activity.touch();
        if private_data.len() > MAX_PRIVATE_DATA as usize {
            return Request::failed(Status::INVALID_BUFFER_SIZE);
        }
        let core = match self.qp_core(qp) {
            Ok(c) => c,
            Err(e) => return Request::failed(e),
        };
        if core.conn.get().is_some() {
            return Request::failed(Status::CONNECTION_ACTIVE);
        }
        if core.is_flushed() {
            // The request stays: the consumer may accept with another QP or reject.
            return Request::failed(Status::CONNECTION_INVALID);
        }
        let mut inner = self.inner.lock();
        let State::Requested(incoming) = std::mem::replace(&mut inner.state, State::Done) else {
            return Request::failed(Status::CONNECTION_INVALID);
        };
        self.owed.settle();
        *core.disconnect.lock() = disconnect;
        let limits = ReadLimits {
            ird: limit(ird),
            ord: limit(ord),
        };
        // The watch over blocked waits gives up an accept whose complete-connect this process
        // owes itself.
        let done = Arc::new(Mutex::new(None));
        let (request, completer) = Request::pending_watched(give_up_when_waiting_for_itself(
            End::Active,
            Arc::downgrade(&self.inner),
            Arc::downgrade(&done),
        ));
        *done.lock() = Some(completer);
        match incoming.accept(
            limits,
            private_data,
            SoftHost::new(core.clone()),
            move |status| {
                if let Some(done) = done.lock().take() {
                    done.complete(status_result(status));
                }
            },
        ) {
            Ok(conn) => {
                let _ = core.set_connection(conn);
                inner.state = State::Accepted { qp: core };
                request
            }
            Err(e) => Request::failed(e),
        }
    }

    /// The core of a QP of this adapter.
    fn qp_core(&self, qp: &dyn Qp) -> Result<Arc<QpCore>, Status> {
        Ok(ours::<SoftQp>(self.shared.id, qp)?.core.clone())
    }

    fn qp(&self) -> Option<Arc<QpCore>> {
        match &self.inner.lock().state {
            State::Active { qp } | State::Accepted { qp } => Some(qp.clone()),
            _ => None,
        }
    }
}

fn status_result(status: Status) -> Result<(), Status> {
    if status.is_success() {
        Ok(())
    } else {
        Err(status)
    }
}

super::soft_object!(SoftConnector, Connector, |c| c.shared.id);

impl Connector for SoftConnector {
    fn connect(
        &self,
        qp: &dyn Qp,
        local: SocketAddr,
        remote: SocketAddr,
        inbound_read_limit: u32,
        outbound_read_limit: u32,
        private_data: &[u8],
    ) -> Request<()> {
        let local = match self.shared.local(local) {
            Ok(l) => l,
            Err(e) => return Request::failed(e),
        };
        self.start(
            qp,
            Local::Own(local),
            remote,
            inbound_read_limit,
            outbound_read_limit,
            private_data,
        )
    }

    fn connect_with_shared_endpoint(
        &self,
        qp: &dyn Qp,
        endpoint: &dyn SharedEndpoint,
        remote: SocketAddr,
        inbound_read_limit: u32,
        outbound_read_limit: u32,
        private_data: &[u8],
    ) -> Request<()> {
        let local = match ours::<SoftSharedEndpoint>(self.shared.id, endpoint) {
            Ok(e) => Local::Shared(e.address, e.reference()),
            Err(e) => return Request::failed(e),
        };
        self.start(
            qp,
            local,
            remote,
            inbound_read_limit,
            outbound_read_limit,
            private_data,
        )
    }

    fn complete_connect(&self, disconnect: Option<DisconnectEvent>) -> Request<()> {
        self.complete(disconnect.map(DisconnectCallback::Plain))
    }

    fn complete_connect_ex(&self, disconnect: Option<DisconnectEventEx>) -> Request<()> {
        self.complete(disconnect.map(DisconnectCallback::Ex))
    }

    fn accept(
        &self,
        qp: &dyn Qp,
        inbound_read_limit: u32,
        outbound_read_limit: u32,
        private_data: &[u8],
        disconnect: Option<DisconnectEvent>,
    ) -> Request<()> {
        self.accept_with(
            qp,
            inbound_read_limit,
            outbound_read_limit,
            private_data,
            disconnect.map(DisconnectCallback::Plain),
        )
    }

    fn accept_ex(
        &self,
        qp: &dyn Qp,
        inbound_read_limit: u32,
        outbound_read_limit: u32,
        private_data: &[u8],
        disconnect: Option<DisconnectEventEx>,
    ) -> Request<()> {
        self.accept_with(
            qp,
            inbound_read_limit,
            outbound_read_limit,
            private_data,
            disconnect.map(DisconnectCallback::Ex),
        )
    }

    fn reject(&self, private_data: &[u8]) -> Result<(), Status> {
        self.shared.activity.touch();
        if private_data.len() > MAX_PRIVATE_DATA as usize {
            return Err(Status::INVALID_BUFFER_SIZE);
        }
        let mut inner = self.inner.lock();
        self.owed.settle();
        match std::mem::replace(&mut inner.state, State::Done) {
            State::Requested(incoming) => incoming.reject(private_data),
            State::Active { qp } => match qp.connection() {
                Ok(conn) => {
                    conn.reject();
                    Ok(())
                }
                Err(e) => Err(e),
            },
            State::Done => Err(Status::CONNECTION_ABORTED),
            other => {
                inner.state = other;
                Err(Status::CONNECTION_INVALID)
            }
        }
    }

    fn connection_data(&self) -> Result<ConnectionData, Status> {
        self.shared.activity.touch();
        self.inner
            .lock()
            .data
            .clone()
            .ok_or(Status::CONNECTION_INVALID)
    }

    fn local_address(&self) -> Result<SocketAddr, Status> {
        self.inner.lock().local.ok_or(Status::CONNECTION_INVALID)
    }

    fn peer_address(&self) -> Result<SocketAddr, Status> {
        self.inner.lock().peer.ok_or(Status::CONNECTION_INVALID)
    }

    fn disconnect(&self) -> Request<()> {
        let Some(qp) = self.qp() else {
            return Request::failed(Status::CONNECTION_INVALID);
        };
        let Ok(conn) = qp.connection() else {
            return Request::failed(Status::CONNECTION_INVALID);
        };
        let (request, done) = Request::pending();
        conn.disconnect(move |status| done.complete(status_result(status)));
        request
    }

    fn close(self: Box<Self>) -> Request<()> {
        drop(self);
        Request::ok(())
    }
}

impl Drop for SoftConnector {
    /// What `close` does (an early return must not leave a connection open): disconnects, or
    /// rejects a request not yet accepted.
    fn drop(&mut self) {
        let mut inner = self.inner.lock();
        match std::mem::replace(&mut inner.state, State::Done) {
            State::Active { qp } | State::Accepted { qp } => {
                if let Ok(conn) = qp.connection() {
                    conn.disconnect(|_| {});
                }
            }
            // Dropping the request rejects it.
            State::Requested(_) | State::Idle | State::Done => {}
        }
        drop(inner);
        if let Some(key) = self.key.lock().take() {
            answers::unregister(key, &self.owed);
        }
        // The port, or the reference on the shared endpoint or listener (§2.8).
        drop(self.endpoint.lock().take());
    }
}

/// A passive connector's marks once the connect event has returned: from then on, until it is
/// accepted or rejected, its consumer owes the active end an answer ([`answers`]).
pub(crate) struct Delivered {
    inner: Arc<Mutex<Inner>>,
    owed: Owed,
}

impl Delivered {
    /// The connect event has returned.
    pub(crate) fn handed_over(self) {
        let inner = self.inner.lock();
        if matches!(inner.state, State::Requested(_)) {
            self.owed.owe();
        }
    }
}

/// The watch of a connect's (`other` = [`End::Passive`]) or an accept's (`other` =
/// [`End::Active`]) request: once a thread has blocked on it for [`answers::ANSWER_GRACE`]
/// while the other end, in this process, has owed its answer as long, the request fails
/// `STATUS_POSSIBLE_DEADLOCK` and the connection is given up (the other end's accept or
/// complete-connect then fails `STATUS_CONNECTION_ABORTED`).
fn give_up_when_waiting_for_itself(
    other: End,
    inner: Weak<Mutex<Inner>>,
    done: Weak<Mutex<Option<netdirect::Completer<()>>>>,
) -> impl Fn(Duration) + Send + Sync + 'static {
    move |blocked| {
        let Some(state) = inner.upgrade() else {
            return;
        };
        let (Some(local), Some(peer)) = ({
            let i = state.lock();
            (i.local, i.peer)
        }) else {
            return;
        };
        // The connection's key: (initiator, responder).
        let key = match other {
            End::Passive => (local, peer, other),
            End::Active => (peer, local, other),
        };
        if !answers::waits_for_itself(key, blocked) {
            return;
        }
        let Some(done) = done.upgrade().and_then(|d| d.lock().take()) else {
            return;
        };
        let mut i = state.lock();
        let qp = match std::mem::replace(&mut i.state, State::Done) {
            State::Active { qp } | State::Accepted { qp } => Some(qp),
            kept => {
                i.state = kept;
                None
            }
        };
        if matches!(other, End::Passive) {
            i.data = Some(ConnectionData::default());
        }
        drop(i);
        if let Some(conn) = qp.as_ref().and_then(|qp| qp.connection().ok()) {
            conn.disconnect(|_| {});
        }
        done.complete(Err(Status::POSSIBLE_DEADLOCK));
    }
}
