//! Helpers of the cases: opening an adapter, one queue pair with its PD and CQ, waiting for
//! completions with a deadline, and connecting two queue pairs through a listener and a
//! connector, over any provider (the soft provider's integration tests use them too).
//!
//! Every wait here has a deadline: a provider bug must fail a case or a test, never hang it.

use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netdirect::{
    Adapter, Buffer, Connector, Cq, DisconnectEvent, Listener, Mr, OpenParameters, Pd, Provider,
    Qp, QpConfig,
};
use netdirect_types::{Completion, MrFlags, Sge, Version};

/// Opens an adapter of `p` on `ip`.
pub fn open(p: &dyn Provider, ip: IpAddr) -> Box<dyn Adapter> {
    p.open_adapter(OpenParameters {
        address: ip,
        version: Version::V2_1,
    })
    .expect("open adapter")
}

/// One queue pair with its own protection domain and one CQ for both of its queues.
pub struct Endpoint {
    /// Its protection domain.
    pub pd: Box<dyn Pd>,
    /// The CQ of both queues.
    pub cq: Box<dyn Cq>,
    /// The queue pair.
    pub qp: Box<dyn Qp>,
}

impl Endpoint {
    /// A QP of `adapter` with queues of `depth` entries and context `context`.
    pub fn new(adapter: &dyn Adapter, context: u64, depth: u32) -> Endpoint {
        let pd = adapter.create_pd().wait().expect("create PD");
        let cq = adapter
            .create_cq(4 * depth, Arc::new(|_| {}), None)
            .wait()
            .expect("create CQ");
        let qp = pd
            .create_qp(QpConfig {
                receive_cq: &*cq,
                initiator_cq: &*cq,
                context,
                receive_queue_depth: depth,
                initiator_queue_depth: depth,
                max_receive_sge: 4,
                max_initiator_sge: 4,
                inline_data_size: crate::inline_within(adapter, 256),
            })
            .wait()
            .expect("create QP");
        Endpoint { pd, cq, qp }
    }

    /// Registers `len` octets of `buffer` from `offset` with `flags`.
    pub fn register(
        &self,
        buffer: &Buffer,
        offset: usize,
        len: usize,
        flags: MrFlags,
    ) -> Box<dyn Mr> {
        let mr = self.pd.create_mr(false).wait().expect("create MR");
        mr.register(buffer, offset, len, flags)
            .wait()
            .expect("register MR");
        mr
    }

    /// Waits up to `timeout` for `n` completions; fails the test with what arrived otherwise.
    pub fn completions_within(&mut self, n: usize, timeout: Duration) -> Vec<Completion> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut buf = [Completion::EMPTY; 16];
        while out.len() < n {
            let k = self.cq.get_results_ex(&mut buf[..(n - out.len()).min(16)]);
            out.extend_from_slice(&buf[..k]);
            if k == 0 {
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {n} completions; got {out:?}"
                );
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        out
    }

    /// [`Endpoint::completions_within`] with the default 5 s.
    pub fn completions(&mut self, n: usize) -> Vec<Completion> {
        self.completions_within(n, WAIT)
    }

    /// Whatever completions arrive within `quiet`.
    pub fn drain(&mut self, quiet: Duration) -> Vec<Completion> {
        let deadline = Instant::now() + quiet;
        let mut out = Vec::new();
        let mut buf = [Completion::EMPTY; 16];
        while Instant::now() < deadline {
            let k = self.cq.get_results_ex(&mut buf);
            out.extend_from_slice(&buf[..k]);
            if k == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        out
    }
}

/// The default deadline of a blocking wait.
pub const WAIT: Duration = Duration::from_secs(5);

/// An SGE over `len` octets of `buffer` from `offset`, with `mr`'s local token.
pub fn sge(buffer: &Buffer, mr: &dyn Mr, offset: usize, len: usize) -> Sge {
    Sge::new(
        buffer.address() + offset as u64,
        u32::try_from(len).expect("SGE length fits u32"),
        mr.local_token(),
    )
}

/// A listener of an adapter and the connectors its connect event delivered.
pub struct Listening {
    /// The listener (held: dropping it stops listening).
    pub listener: Box<dyn Listener>,
    /// The connectors its connect event delivered.
    pub incoming: Receiver<Box<dyn Connector>>,
    /// Where it listens.
    pub address: SocketAddr,
}

impl Listening {
    /// Listens on `ip`, ephemeral port.
    pub fn new(adapter: &dyn Adapter, ip: IpAddr) -> Listening {
        let (tx, incoming) = mpsc::channel::<Box<dyn Connector>>();
        let tx = Mutex::new(tx);
        let listener = adapter
            .create_listener(Arc::new(move |c| {
                let _ = tx.lock().unwrap().send(c);
            }))
            .wait()
            .expect("create listener");
        listener
            .listen(SocketAddr::new(ip, 0))
            .wait()
            .expect("listen");
        let address = listener.local_address().expect("listener address");
        Listening {
            listener,
            incoming,
            address,
        }
    }

    /// The next connect event, within `timeout`.
    pub fn next(&self, timeout: Duration) -> Box<dyn Connector> {
        self.incoming
            .recv_timeout(timeout)
            .expect("a connect event in time")
    }
}

/// A disconnect callback and the channel it reports on.
pub fn disconnect_event() -> (DisconnectEvent, Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    (
        Box::new(move || {
            let _ = tx.send(());
        }),
        rx,
    )
}

/// A connected pair of connectors: `passive` from the listener, `active` from the client.
/// The connectors are held: dropping one disconnects.
pub struct Connected {
    /// The listener's connector.
    pub passive: Box<dyn Connector>,
    /// The client's connector.
    pub active: Box<dyn Connector>,
    /// Fires when the passive side sees the peer disconnect.
    pub passive_disconnected: Receiver<()>,
    /// Fires when the active side sees the peer disconnect.
    pub active_disconnected: Receiver<()>,
}

/// Connects `client_qp` of `client` to `server_qp` through `listening`, with read limits 4/4.
pub fn connect(
    client: &dyn Adapter,
    client_qp: &dyn Qp,
    listening: &Listening,
    server_qp: &dyn Qp,
    timeout: Duration,
) -> Connected {
    let local = SocketAddr::new(listening.address.ip(), 0);
    connect_from(client, client_qp, local, listening, server_qp, timeout)
}

/// [`connect`] from an explicit local address.
pub fn connect_from(
    client: &dyn Adapter,
    client_qp: &dyn Qp,
    local: SocketAddr,
    listening: &Listening,
    server_qp: &dyn Qp,
    timeout: Duration,
) -> Connected {
    let active = client.create_connector().wait().expect("create connector");
    let pending = active.connect(client_qp, local, listening.address, 4, 4, b"hello");
    let passive = listening.next(timeout);
    let (passive_event, passive_disconnected) = disconnect_event();
    let accepted = passive.accept(server_qp, 4, 4, b"welcome", Some(passive_event));
    pending
        .wait_timeout(timeout)
        .expect("connect completes in time, and connect succeeds");
    let (active_event, active_disconnected) = disconnect_event();
    active
        .complete_connect(Some(active_event))
        .wait_timeout(timeout)
        .expect("complete-connect completes in time, and complete-connect succeeds");
    accepted
        .wait_timeout(timeout)
        .expect("accept completes in time, and accept succeeds");
    Connected {
        passive,
        active,
        passive_disconnected,
        active_disconnected,
    }
}
