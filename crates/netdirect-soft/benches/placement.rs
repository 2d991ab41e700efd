//! RDMA write and read over loopback with inbound payloads placed by the CPU and by a NetDMA
//! channel, measured in the same run. `cargo bench -p netdirect-soft --bench placement`.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use netdirect::{Adapter, Buffer, Connector, Cq, OpenParameters, Pd, Provider, Qp, QpConfig};
use netdirect_soft::{Placement, SoftProvider};
use netdirect_types::{Completion, MrFlags, OpFlags, RemoteToken, Sge, Status, Version};

const TOTAL: usize = 256 << 20;
const MSG: usize = 1 << 20;
const WINDOW: usize = 16;

struct Side {
    adapter: Box<dyn Adapter>,
    pd: Box<dyn Pd>,
    cq: Box<dyn Cq>,
    qp: Box<dyn Qp>,
    wake: Arc<(Mutex<bool>, Condvar)>,
}

fn side(ip: IpAddr, placement: Placement) -> Side {
    let adapter = SoftProvider::new()
        .with_placement(placement)
        .open_adapter(OpenParameters {
            address: ip,
            version: Version::V1_2,
        })
        .expect("open adapter");
    let pd = adapter.create_pd().wait().unwrap();
    let wake = Arc::new((Mutex::new(false), Condvar::new()));
    let w = wake.clone();
    let cq = adapter
        .create_cq(
            1024,
            Arc::new(move |_| {
                *w.0.lock().unwrap() = true;
                w.1.notify_one();
            }),
            None,
        )
        .wait()
        .unwrap();
    let qp = pd
        .create_qp(QpConfig {
            receive_cq: &*cq,
            initiator_cq: &*cq,
            context: 0,
            receive_queue_depth: 64,
            initiator_queue_depth: 256,
            max_receive_sge: 1,
            max_initiator_sge: 1,
            inline_data_size: 0,
        })
        .wait()
        .unwrap();
    Side {
        adapter,
        pd,
        cq,
        qp,
        wake,
    }
}

/// Waits for `n` successful completions, sleeping on the CQ notification when there is none
/// (busy polling would take a core from the progress threads on a 2-core machine).
fn drain(cq: &mut dyn Cq, wake: &(Mutex<bool>, Condvar), n: usize) {
    let mut buf = [Completion::EMPTY; 64];
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < n {
        assert!(Instant::now() < deadline, "timed out");
        let k = cq.get_results_ex(&mut buf[..(n - got).min(64)]);
        for c in &buf[..k] {
            assert_eq!(c.status, Status::SUCCESS);
        }
        got += k;
        if k == 0 {
            *wake.0.lock().unwrap() = false;
            cq.arm(netdirect_types::CqNotifyType::Any);
            // An entry that arrived before the arm fires it at once (NDK §7.4).
            let fired = wake.0.lock().unwrap();
            if !*fired {
                let _ = wake
                    .1
                    .wait_timeout(fired, Duration::from_millis(50))
                    .unwrap();
            }
        }
    }
}

/// MB/s of RDMA write and RDMA read of `TOTAL` bytes in `MSG` messages.
fn run(placement: Placement) -> (f64, f64) {
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let server = side(ip, placement);
    let mut client = side(ip, placement);
    let (tx, rx) = mpsc::channel::<Box<dyn Connector>>();
    let tx = std::sync::Mutex::new(tx);
    let listener = server
        .adapter
        .create_listener(Arc::new(move |c| tx.lock().unwrap().send(c).unwrap()))
        .wait()
        .unwrap();
    listener.listen(SocketAddr::new(ip, 0)).wait().unwrap();
    let connector = client.adapter.create_connector().wait().unwrap();
    let pending = connector.connect(
        &*client.qp,
        SocketAddr::new(ip, 0),
        listener.local_address().unwrap(),
        16,
        16,
        b"",
    );
    let incoming = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let accepted = incoming.accept(&*server.qp, 16, 16, b"", None);
    pending.wait().unwrap();
    connector.complete_connect(None).wait().unwrap();
    accepted.wait().unwrap();
    let remote = Buffer::new(MSG * WINDOW);
    remote.with_mut(|b| b.fill(1));
    let rmr = server.pd.create_mr(false).wait().unwrap();
    rmr.register(
        &remote,
        0,
        remote.len(),
        MrFlags::ALLOW_REMOTE_WRITE | MrFlags::ALLOW_REMOTE_READ,
    )
    .wait()
    .unwrap();
    let local = Buffer::new(MSG * WINDOW);
    local.with_mut(|b| b.fill(2));
    let lmr = client.pd.create_mr(false).wait().unwrap();
    lmr.register(
        &local,
        0,
        local.len(),
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK,
    )
    .wait()
    .unwrap();
    let token = RemoteToken(rmr.remote_token().0);
    let mut rates = [0.0; 2];
    for (k, write) in [true, false].into_iter().enumerate() {
        let count = TOTAL / MSG;
        let start = Instant::now();
        let mut posted = 0;
        let mut done = 0;
        while done < count {
            while posted < count && posted - done < WINDOW {
                let slot = (posted % WINDOW) * MSG;
                let sge = [Sge::new(
                    local.address() + slot as u64,
                    MSG as u32,
                    lmr.local_token(),
                )];
                let at = remote.address() + slot as u64;
                let q = client.qp.initiator();
                if write {
                    q.write(posted as u64, &sge, at, token, OpFlags::empty())
                        .unwrap();
                } else {
                    q.read(posted as u64, &sge, at, token, OpFlags::empty())
                        .unwrap();
                }
                posted += 1;
            }
            drain(&mut *client.cq, &client.wake, 1);
            done += 1;
        }
        rates[k] = TOTAL as f64 / start.elapsed().as_secs_f64() / 1e6;
    }
    (rates[0], rates[1])
}

fn main() {
    let (cw, cr) = run(Placement::Cpu);
    let (dw, dr) = run(Placement::NetDma);
    println!(
        "RDMA over 127.0.0.1, {} MiB in {} KiB messages, window {WINDOW}",
        TOTAL >> 20,
        MSG >> 10
    );
    println!(
        "{:<10} {:>12} {:>12}",
        "placement", "write MB/s", "read MB/s"
    );
    println!("{:<10} {:>12.0} {:>12.0}", "cpu", cw, cr);
    println!("{:<10} {:>12.0} {:>12.0}", "netdma", dw, dr);
    println!("{:<10} {:>12.2} {:>12.2}", "ratio", dw / cw, dr / cr);
}
