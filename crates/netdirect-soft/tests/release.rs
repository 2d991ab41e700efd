//! Closing everything gives every socket back: the engine's per-connection state (shared with
//! the consumer's handles since run-to-completion) must not keep itself alive through the QP
//! it serves. One test in its own process, so that the descriptor and thread counts are its
//! own.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use netdirect::{Adapter, Connector, OpenParameters, Provider, QpConfig};
use netdirect_soft::SoftProvider;
use netdirect_soft::transport::EngineConfig;
use netdirect_types::Version;

const WAIT: Duration = Duration::from_secs(20);

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// The descriptor count once it stopped falling: a dropped adapter's progress thread stops with
/// its last child, on its own thread, so its descriptors go a moment after the drop.
fn settled(count: fn() -> usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut last = count();
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

fn open(ip: IpAddr, progress_threads: usize) -> Box<dyn Adapter> {
    SoftProvider::with_engine_config(EngineConfig {
        progress_threads,
        ..EngineConfig::default()
    })
    .open_adapter(OpenParameters {
        address: ip,
        version: Version::V2_1,
    })
    .unwrap()
}

fn round(ip: IpAddr, progress_threads: usize) {
    let server = open(ip, progress_threads);
    let client = open(ip, progress_threads);
    let (tx, rx) = mpsc::channel::<Box<dyn Connector>>();
    let tx = Mutex::new(tx);
    let listener = server
        .create_listener(Arc::new(move |c| tx.lock().unwrap().send(c).unwrap()))
        .wait()
        .unwrap();
    listener.listen(SocketAddr::new(ip, 0)).wait().unwrap();
    let address = listener.local_address().unwrap();
    let mut keep = Vec::new();
    for _ in 0..4 {
        let mut ends = Vec::new();
        for a in [&server, &client] {
            let pd = a.create_pd().wait().unwrap();
            let cq = a.create_cq(64, Arc::new(|_| {}), None).wait().unwrap();
            let qp = pd
                .create_qp(QpConfig {
                    receive_cq: &*cq,
                    initiator_cq: &*cq,
                    context: 1,
                    receive_queue_depth: 8,
                    initiator_queue_depth: 8,
                    max_receive_sge: 1,
                    max_initiator_sge: 1,
                    inline_data_size: 0,
                })
                .wait()
                .unwrap();
            ends.push((pd, cq, qp));
        }
        let connector = client.create_connector().wait().unwrap();
        let pending = connector.connect(&*ends[1].2, SocketAddr::new(ip, 0), address, 1, 1, b"");
        let incoming = rx.recv_timeout(WAIT).unwrap();
        let accepted = incoming.accept(&*ends[0].2, 1, 1, b"", None);
        pending.wait_timeout(WAIT).unwrap();
        connector.complete_connect(None).wait_timeout(WAIT).unwrap();
        accepted.wait_timeout(WAIT).unwrap();
        connector.disconnect().wait_timeout(WAIT).unwrap();
        keep.push((ends, connector, incoming));
    }
    drop(keep);
    drop(listener);
    drop(client);
    drop(server);
}

#[test]
fn closing_everything_releases_every_socket() {
    // Warm up (lazy statics, the test harness's own descriptors).
    round("127.0.0.1".parse().unwrap(), 1);
    let before = settled(open_fds);
    let threads_before = settled(threads);
    // One progress thread per adapter, and several (each with its own epoll and eventfd).
    for progress_threads in [1, 4] {
        for ip in ["127.0.0.1", "::1"] {
            round(ip.parse().unwrap(), progress_threads);
        }
    }
    assert_eq!(settled(open_fds), before, "descriptors left open");
    assert_eq!(
        settled(threads),
        threads_before,
        "progress threads left running"
    );
}
