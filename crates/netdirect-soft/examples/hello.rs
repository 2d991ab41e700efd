//! Hello, RDMA: two queue pairs of the software RNIC connected over 127.0.0.1 (or `::1` with
//! `--ipv6`), then an RDMA Write, a Send into a posted receive, an RDMA Read, completions polled
//! from a CQ, and everything closed.
//!
//! ```sh
//! cargo run -p netdirect-soft --example hello            # IPv4
//! cargo run -p netdirect-soft --example hello -- --ipv6  # IPv6
//! ```
//!
//! Connection setup follows the order that works when both sides run on one thread, as here:
//! *start* the connect, accept on the server side, then wait for the connect, complete it, and
//! wait for the accept. The sequence diagram and the reasons are on `netdirect::connector`
//! (`cargo doc -p netdirect --open`); waiting for the connect before the accept fails after a
//! second with `STATUS_POSSIBLE_DEADLOCK`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netdirect::{Adapter, Buffer, Cq, OpenParameters, Provider, QpConfig};
use netdirect_soft::SoftProvider;
use netdirect_types::{Completion, MrFlags, OpFlags, OperationType, Sge, Status, Version};

const LEN: usize = 4096;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ip: IpAddr = if std::env::args().any(|a| a == "--ipv6") {
        Ipv6Addr::LOCALHOST.into()
    } else {
        Ipv4Addr::LOCALHOST.into()
    };
    let open = |ip| {
        SoftProvider::new().open_adapter(OpenParameters {
            address: ip,
            version: Version::V2_1,
        })
    };
    let (server, client) = (open(ip)?, open(ip)?);

    // One PD, one CQ and one QP per side.
    let (server_pd, mut server_cq) = pd_and_cq(&*server)?;
    let (client_pd, mut client_cq) = pd_and_cq(&*client)?;
    let mut server_qp = server_pd.create_qp(config(&*server_cq, 1)).wait()?;
    let mut client_qp = client_pd.create_qp(config(&*client_cq, 2)).wait()?;

    // Memory: the server exposes one buffer for remote reads and writes and posts a receive.
    let server_buf = Buffer::new(LEN);
    let server_mr = server_pd.create_mr(false).wait()?;
    let rights =
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_READ | MrFlags::ALLOW_REMOTE_WRITE;
    server_mr.register(&server_buf, 0, LEN, rights).wait()?;
    let client_buf = Buffer::from_slice(&[0x5a; LEN]);
    let client_mr = client_pd.create_mr(false).wait()?;
    client_mr
        // An RDMA Read lands in memory registered with the read-sink right (NDK rule).
        .register(
            &client_buf,
            0,
            LEN,
            MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK,
        )
        .wait()?;
    let receive_at = 2048;
    server_qp.receiver().receive(
        10,
        &[Sge::new(
            server_buf.address() + receive_at,
            64,
            server_mr.local_token(),
        )],
    )?;

    // Connect: listen, connect, accept, then wait for the connect and complete it.
    let (tx, incoming) = mpsc::channel();
    let tx = Mutex::new(tx);
    let listener = server
        .create_listener(Arc::new(move |connector| {
            let _ = tx.lock().expect("listener channel").send(connector);
        }))
        .wait()?;
    listener.listen(SocketAddr::new(ip, 0)).wait()?;
    let server_addr = listener.local_address()?;
    let active = client.create_connector().wait()?;
    let connecting = active.connect(
        &*client_qp,
        SocketAddr::new(ip, 0),
        server_addr,
        1,
        1,
        b"hi",
    );
    let passive = incoming.recv_timeout(Duration::from_secs(5))?;
    let accepting = passive.accept(&*server_qp, 1, 1, b"welcome", None);
    connecting.wait()?;
    active.complete_connect(None).wait()?;
    accepting.wait()?;
    println!("connected {} -> {server_addr}", active.local_address()?);

    // 1. RDMA Write 1 KiB of 0x5a into the server's buffer at offset 0.
    let local = |offset: u64, len: u32| {
        Sge::new(client_buf.address() + offset, len, client_mr.local_token())
    };
    let remote = server_buf.address();
    let token = server_mr.remote_token();
    client_qp
        .initiator()
        .write(1, &[local(0, 1024)], remote, token, OpFlags::empty())?;
    expect(&mut *client_cq, 1, OperationType::Write)?;

    // 2. Send 64 octets into the server's posted receive.
    client_buf.write_at(0, b"hello over iWARP")?;
    client_qp
        .initiator()
        .send(2, &[local(0, 64)], OpFlags::empty())?;
    expect(&mut *client_cq, 2, OperationType::Send)?;
    let received = expect(&mut *server_cq, 10, OperationType::Receive)?;
    let mut text = [0u8; 16];
    server_buf.read_at(receive_at as usize, &mut text)?;
    println!(
        "server received {} octets: {:?}",
        received.bytes_transferred,
        String::from_utf8_lossy(&text)
    );

    // 3. RDMA Read the server's first KiB back into the client's second half.
    client_buf.with_mut(|b| b[2048..3072].fill(0));
    client_qp
        .initiator()
        .read(3, &[local(2048, 1024)], remote, token, OpFlags::empty())?;
    expect(&mut *client_cq, 3, OperationType::Read)?;
    let back = client_buf.with(|b| b[2048..3072].iter().all(|&x| x == 0x5a));
    println!(
        "read back the written KiB: {}",
        if back { "ok" } else { "MISMATCH" }
    );
    if !back {
        return Err("the read did not return what the write wrote".into());
    }

    // Close: connectors first (disconnect), then QPs, MRs, CQs, PDs, adapters.
    active.disconnect().wait()?;
    for connector in [active, passive] {
        connector.close().wait()?;
    }
    listener.close().wait()?;
    client_qp.close().wait()?;
    server_qp.close().wait()?;
    client_mr.close().wait()?;
    server_mr.close().wait()?;
    client_cq.close().wait()?;
    server_cq.close().wait()?;
    client_pd.close().wait()?;
    server_pd.close().wait()?;
    println!("closed");
    Ok(())
}

fn config(cq: &dyn Cq, context: u64) -> QpConfig<'_> {
    QpConfig {
        receive_cq: cq,
        initiator_cq: cq,
        context,
        receive_queue_depth: 16,
        initiator_queue_depth: 16,
        max_receive_sge: 1,
        max_initiator_sge: 1,
        inline_data_size: 64,
    }
}

/// A protection domain and a completion queue.
type PdAndCq = (Box<dyn netdirect::Pd>, Box<dyn Cq>);

fn pd_and_cq(adapter: &dyn Adapter) -> Result<PdAndCq, Status> {
    let pd = adapter.create_pd().wait()?;
    let cq = adapter.create_cq(64, Arc::new(|_| {}), None).wait()?;
    Ok((pd, cq))
}

/// Polls `cq` until one completion arrives (5 s at most) and checks it is `context`'s.
fn expect(
    cq: &mut dyn Cq,
    context: u64,
    kind: OperationType,
) -> Result<Completion, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = [Completion::EMPTY; 1];
    while cq.get_results_ex(&mut out) == 0 {
        if Instant::now() > deadline {
            return Err(format!("no completion for request {context}").into());
        }
        std::thread::yield_now();
    }
    let c = out[0];
    if c.status != Status::SUCCESS || c.request_context != context || c.op_type != kind {
        return Err(format!("unexpected completion {c:?}").into());
    }
    Ok(c)
}
