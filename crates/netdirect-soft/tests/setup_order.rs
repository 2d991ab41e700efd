//! Connection setup in the order a newcomer writes it on one thread: connect, *wait*, then
//! accept. The connect completes only when the server has accepted (NDK §7.6), so that thread
//! waits for an answer only it can give. The soft provider sees it (the listener is in this
//! process, its request was delivered and is still unanswered while the thread is blocked) and
//! fails the wait after a second with `STATUS_POSSIBLE_DEADLOCK` instead of stalling for the
//! MPA Reply timeout (10 s) and then saying `STATUS_IO_TIMEOUT` (§10 table, row 34). The same
//! for the second step: an accept waited on before the client's `complete_connect`. The order
//! that works, and the same code across two threads, still work. Both address families.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netdirect::Connector;
use netdirect_types::Status;
use support::{Endpoint, Listening, WAIT, disconnect_event, open};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// How soon a one-thread program that waits for its own answer must hear about it.
const PROMPT: Duration = Duration::from_secs(3);

/// Runs a one-thread program on its own thread; fails the test if it has not finished in
/// `limit` (the program is left to finish on its own).
fn one_thread<T: Send + 'static>(
    limit: Duration,
    program: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(program());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("the one-thread program still waits after {limit:?}"))
}

/// Two adapters on `ip`, a QP on each, a listener on the server.
struct Setup {
    _server: Box<dyn netdirect::Adapter>,
    client: Box<dyn netdirect::Adapter>,
    server_ep: Endpoint,
    client_ep: Endpoint,
    listening: Listening,
}

impl Setup {
    fn new(ip: IpAddr) -> Setup {
        let server = open(ip);
        let client = open(ip);
        let server_ep = Endpoint::new(&*server, 1, 4);
        let client_ep = Endpoint::new(&*client, 2, 4);
        let listening = Listening::new(&*server, ip);
        Setup {
            _server: server,
            client,
            server_ep,
            client_ep,
            listening,
        }
    }

    fn connector(&self) -> Box<dyn Connector> {
        self.client
            .create_connector()
            .wait()
            .expect("create connector")
    }

    fn local(&self) -> SocketAddr {
        SocketAddr::new(self.listening.address.ip(), 0)
    }
}

/// What the connect → wait → accept program saw.
#[derive(Debug)]
struct Trapped {
    connect: Result<(), Status>,
    waited: Duration,
    accept: Result<(), Status>,
}

fn connect_wait_accept(ip: IpAddr) {
    let seen = one_thread(PROMPT + Duration::from_secs(2), move || {
        let s = Setup::new(ip);
        let active = s.connector();
        let start = Instant::now();
        let connect = active
            .connect(
                &*s.client_ep.qp,
                s.local(),
                s.listening.address,
                4,
                4,
                b"hi",
            )
            .wait();
        let waited = start.elapsed();
        // The request the wait kept this thread from answering: the client has given up.
        let passive = s.listening.next(WAIT);
        let accept = passive
            .accept(&*s.server_ep.qp, 4, 4, b"", None)
            .wait_timeout(WAIT)
            .map_err(Status::from);
        Trapped {
            connect,
            waited,
            accept,
        }
    });
    assert_eq!(seen.connect, Err(Status::POSSIBLE_DEADLOCK), "{seen:?}");
    assert!(seen.waited < PROMPT, "{seen:?}");
    assert_eq!(seen.accept, Err(Status::CONNECTION_ABORTED), "{seen:?}");
}

#[test]
fn connect_waited_before_the_accept_of_this_process_fails_fast_v4() {
    connect_wait_accept(V4);
}

#[test]
fn connect_waited_before_the_accept_of_this_process_fails_fast_v6() {
    connect_wait_accept(V6);
}

/// The second trap of one thread: connect, accept, wait for the connect, then wait for the
/// *accept* before `complete_connect` (the accept completes with the client's first FPDU).
fn accept_waited_before_complete_connect(ip: IpAddr) {
    let seen = one_thread(PROMPT + Duration::from_secs(2), move || {
        let s = Setup::new(ip);
        let active = s.connector();
        let connecting = active.connect(
            &*s.client_ep.qp,
            s.local(),
            s.listening.address,
            4,
            4,
            b"hi",
        );
        let passive = s.listening.next(WAIT);
        let accepting = passive.accept(&*s.server_ep.qp, 4, 4, b"", None);
        connecting
            .wait()
            .expect("the connect completes once accepted");
        let start = Instant::now();
        let accept = accepting.wait();
        let waited = start.elapsed();
        // The server has given the connection up: completing it fails, or succeeds and the
        // client hears the disconnect at once.
        let (event, disconnected) = disconnect_event();
        let complete = active
            .complete_connect(Some(event))
            .wait_timeout(WAIT)
            .map_err(Status::from);
        let heard = complete.is_err() || disconnected.recv_timeout(WAIT).is_ok();
        (
            Trapped {
                connect: complete,
                waited,
                accept,
            },
            heard,
        )
    });
    let (seen, heard) = seen;
    assert_eq!(seen.accept, Err(Status::POSSIBLE_DEADLOCK), "{seen:?}");
    assert!(seen.waited < PROMPT, "{seen:?}");
    assert!(
        matches!(seen.connect, Ok(()) | Err(Status::CONNECTION_ABORTED)),
        "{seen:?}"
    );
    assert!(heard, "the client hears that the server gave up: {seen:?}");
}

#[test]
fn accept_waited_before_complete_connect_of_this_process_fails_fast_v4() {
    accept_waited_before_complete_connect(V4);
}

#[test]
fn accept_waited_before_complete_connect_of_this_process_fails_fast_v6() {
    accept_waited_before_complete_connect(V6);
}

/// The order that works on one thread (start connect, accept, wait connect, complete, wait
/// accept), and the natural order across two threads with a server of its own thread (as
/// `nd bench` runs one) that holds the request 1.5 s, longer than the provider's grace, without
/// calling into its adapter meanwhile: both connect.
fn working_orders(ip: IpAddr) {
    one_thread(WAIT, move || {
        let s = Setup::new(ip);
        let active = s.connector();
        let connecting = active.connect(
            &*s.client_ep.qp,
            s.local(),
            s.listening.address,
            4,
            4,
            b"hi",
        );
        let passive = s.listening.next(WAIT);
        let accepting = passive.accept(&*s.server_ep.qp, 4, 4, b"", None);
        connecting.wait().expect("connect");
        active.complete_connect(None).wait().expect("complete");
        accepting.wait().expect("accept");
    });
    let (tx, address) = mpsc::channel();
    let server = std::thread::spawn(move || {
        let adapter = open(ip);
        let ep = Endpoint::new(&*adapter, 1, 4);
        let listening = Listening::new(&*adapter, ip);
        tx.send(listening.address).unwrap();
        let passive = listening.next(WAIT);
        std::thread::sleep(Duration::from_millis(1500));
        let accepting = passive.accept(&*ep.qp, 4, 4, b"", None);
        accepting.wait().expect("accept, across threads");
        (passive, ep, listening, adapter)
    });
    let client = open(ip);
    let ep = Endpoint::new(&*client, 2, 4);
    let to = address.recv_timeout(WAIT).unwrap();
    let active = client.create_connector().wait().unwrap();
    active
        .connect(&*ep.qp, SocketAddr::new(ip, 0), to, 4, 4, b"hi")
        .wait()
        .expect("connect waited on while another thread's server takes its time");
    active.complete_connect(None).wait().expect("complete");
    let kept = server.join().expect("server thread");
    drop((active, ep, kept, client));
}

#[test]
fn the_working_orders_still_connect() {
    working_orders(V4);
    working_orders(V6);
}
