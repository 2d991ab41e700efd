//! The connector (`NDK_CONNECTOR`): one connection, active or passive.
//!
//! # Connection setup, in the order that works
//!
//! ```text
//!  active side (client)                                   passive side (server)
//!  ────────────────────                                   ─────────────────────
//!                                                         create_listener(on_connect)
//!                                                         listen(addr)
//!  create_connector()
//!  connect(qp, local, addr, ird, ord, data) ── MPA Request ──▶ on_connect(connector)
//!      (Request pending)                                  connector.connection_data()
//!                                                         connector.accept(qp, ird, ord, data)
//!                                                             (Request pending)
//!  connect's Request completes     ◀──── MPA Reply ─────────
//!  connector.connection_data()
//!  complete_connect(on_disconnect) ──── first FPDU (RTR) ───▶ accept's Request completes
//!  post work, poll the CQ                                 post work, poll the CQ
//!  disconnect() / close()          ──── FIN ───────────────▶ on_disconnect fires
//! ```
//!
//! * `connect` completes only when the server has called `accept` (the MPA Reply carries its
//!   answer), and `accept` completes only when the client has called `complete_connect`. A
//!   program that drives both ends from **one thread** must therefore *start* `connect`, then
//!   `accept`, then wait for `connect`, call `complete_connect`, and only then wait for `accept`.
//!   Waiting for `connect` before `accept` is called waits for an answer that cannot come, and
//!   so does waiting for `accept` before `complete_connect`. The soft provider sees it when both
//!   ends are in one process: a thread blocked in [`Request::wait`] (or
//!   [`Request::wait_timeout`]) on one end while the other end's request has been in the
//!   consumer's hands, unanswered, for a second, and that end's adapter was last called from
//!   the waiting thread itself, gets `STATUS_POSSIBLE_DEADLOCK`
//!   ([`netdirect_types::Status::POSSIBLE_DEADLOCK`]) after that second, and the connection is
//!   given up (the other end's accept or complete-connect fails `STATUS_CONNECTION_ABORTED`).
//!   That status means: reorder as above, or answer from another thread. Against a peer in
//!   another process nothing can tell, and a connect nobody accepts fails after the MPA Reply
//!   timeout (10 s) with `STATUS_IO_TIMEOUT`.
//! * Across threads or processes the natural code works: the server accepts in (or after) its
//!   connect callback while the client waits.
//! * `reject(data)` instead of `accept` completes the client's `connect` with
//!   `STATUS_CONNECTION_REFUSED` and the reject's private data in `connection_data()`.
//! * The soft provider's `examples/hello.rs` (one thread) and `examples/server_client.rs` (two
//!   processes) are complete programs in this order.

use std::net::SocketAddr;

use netdirect_types::Status;

use crate::callbacks::{DisconnectEvent, DisconnectEventEx};
use crate::{Object, Qp, Request, SharedEndpoint};

/// What [`Connector::connection_data`] reports: the effective read limits and the peer's
/// private data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionData {
    /// Inbound RDMA reads this side serves at once (effective IRD).
    pub inbound_read_limit: u32,
    /// Outbound RDMA reads this side may have in flight (effective ORD).
    pub outbound_read_limit: u32,
    /// The peer's private data (from its connect, accept or reject).
    pub private_data: Vec<u8>,
}

/// A connector. Active side: [`Connector::connect`], then [`Connector::complete_connect`] or
/// [`Connector::reject`]. Passive side (delivered by a listener's connect event):
/// [`Connector::accept`] or [`Connector::reject`].
pub trait Connector: Object {
    /// Connects `qp` from `local` (port 0: ephemeral) to `remote`, asking for `inbound_read_limit`
    /// (IRD) and `outbound_read_limit` (ORD), with `private_data` (≤ `MaxCallerData`). Completes
    /// when the peer has accepted.
    #[doc(alias = "NdkConnect")]
    fn connect(
        &self,
        qp: &dyn Qp,
        local: SocketAddr,
        remote: SocketAddr,
        inbound_read_limit: u32,
        outbound_read_limit: u32,
        private_data: &[u8],
    ) -> Request<()>;

    /// Like [`Connector::connect`], from a shared endpoint's address.
    #[doc(alias = "NdkConnectWithSharedEndpoint")]
    fn connect_with_shared_endpoint(
        &self,
        qp: &dyn Qp,
        endpoint: &dyn SharedEndpoint,
        remote: SocketAddr,
        inbound_read_limit: u32,
        outbound_read_limit: u32,
        private_data: &[u8],
    ) -> Request<()>;

    /// Active side: finishes the connection after the peer accepted; `disconnect` runs if the
    /// peer disconnects later.
    #[doc(alias = "NdkCompleteConnect")]
    fn complete_connect(&self, disconnect: Option<DisconnectEvent>) -> Request<()>;

    /// [`Connector::complete_connect`] with the 2.1 disconnect callback that carries a reason.
    #[doc(alias = "NdkCompleteConnectEx")]
    fn complete_connect_ex(&self, disconnect: Option<DisconnectEventEx>) -> Request<()>;

    /// Passive side: accepts the request on `qp`, with our read limits and `private_data`
    /// (≤ `MaxCalleeData`). Completes when the active side completed its connect.
    #[doc(alias = "NdkAccept")]
    fn accept(
        &self,
        qp: &dyn Qp,
        inbound_read_limit: u32,
        outbound_read_limit: u32,
        private_data: &[u8],
        disconnect: Option<DisconnectEvent>,
    ) -> Request<()>;

    /// [`Connector::accept`] with the 2.1 disconnect callback.
    #[doc(alias = "NdkAcceptEx")]
    fn accept_ex(
        &self,
        qp: &dyn Qp,
        inbound_read_limit: u32,
        outbound_read_limit: u32,
        private_data: &[u8],
        disconnect: Option<DisconnectEventEx>,
    ) -> Request<()>;

    /// Refuses the connection (either side, before it is established), with `private_data`.
    #[doc(alias = "NdkReject")]
    fn reject(&self, private_data: &[u8]) -> Result<(), Status>;

    /// The effective read limits and the peer's private data.
    #[doc(alias = "NdkGetConnectionData")]
    fn connection_data(&self) -> Result<ConnectionData, Status>;

    /// The connection's local address.
    #[doc(alias = "NdkGetLocalAddress")]
    fn local_address(&self) -> Result<SocketAddr, Status>;

    /// The connection's remote address.
    #[doc(alias = "NdkGetPeerAddress")]
    fn peer_address(&self) -> Result<SocketAddr, Status>;

    /// Disconnects gracefully; the QP is flushed afterwards.
    #[doc(alias = "NdkDisconnect")]
    fn disconnect(&self) -> Request<()>;

    /// Closes the connector (disconnecting and flushing if still connected).
    #[doc(alias = "NdkCloseConnector")]
    fn close(self: Box<Self>) -> Request<()>;
}

/// `NdkGetConnectionData`'s private-data buffer protocol, for consumers that use the NDK's
/// fixed-size buffers: copies `min(buffer.len(), rds)` octets and reports `rds`, the provider's
/// private-data size for this connection; `STATUS_BUFFER_TOO_SMALL` when the buffer is shorter.
pub fn copy_private_data(data: &ConnectionData, rds: usize, buffer: &mut [u8]) -> (Status, usize) {
    let n = buffer.len().min(rds).min(data.private_data.len());
    buffer[..n].copy_from_slice(&data.private_data[..n]);
    let end = buffer.len().min(rds);
    buffer[n..end].fill(0);
    let status = if buffer.len() >= rds {
        Status::SUCCESS
    } else {
        Status::BUFFER_TOO_SMALL
    };
    (status, rds)
}
