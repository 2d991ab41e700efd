//! Two processes: a server that exposes a buffer and a client that writes into it, reads it
//! back and tells the server with a Send. The server hands its buffer's address and remote
//! token to the client in the private data of its accept, the way NDK programs usually do.
//!
//! ```sh
//! cargo run -p netdirect-soft --example server_client -- server 127.0.0.1:7471 &
//! cargo run -p netdirect-soft --example server_client -- client 127.0.0.1:7471
//! ```
//! (`[::1]:7471` works the same.) The server serves one client and exits.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netdirect::{Adapter, Buffer, Cq, OpenParameters, Provider, QpConfig};
use netdirect_soft::SoftProvider;
use netdirect_types::{Completion, MrFlags, OpFlags, RemoteToken, Sge, Status, Version};

type Error = Box<dyn std::error::Error>;

const LEN: usize = 64 * 1024;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let (role, addr) = match args.as_slice() {
        [_, role, addr] => (role.as_str(), addr.parse::<SocketAddr>()?),
        _ => return Err("usage: server_client server|client ADDR:PORT".into()),
    };
    let adapter = SoftProvider::new().open_adapter(OpenParameters {
        address: addr.ip(),
        version: Version::V2_1,
    })?;
    match role {
        "server" => server(&*adapter, addr),
        "client" => client(&*adapter, addr),
        _ => Err(format!("unknown role {role:?}").into()),
    }
}

fn server(adapter: &dyn Adapter, addr: SocketAddr) -> Result<(), Error> {
    let pd = adapter.create_pd().wait()?;
    let mut cq = adapter.create_cq(64, Arc::new(|_| {}), None).wait()?;
    let mut qp = pd.create_qp(config(&*cq)).wait()?;
    let buf = Buffer::new(LEN);
    let mr = pd.create_mr(false).wait()?;
    let rights =
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_READ | MrFlags::ALLOW_REMOTE_WRITE;
    mr.register(&buf, 0, LEN, rights).wait()?;
    // The client's "done" Send lands in the last 64 octets.
    let done_at = (LEN - 64) as u64;
    qp.receiver().receive(
        1,
        &[Sge::new(buf.address() + done_at, 64, mr.local_token())],
    )?;

    let (tx, incoming) = mpsc::channel();
    let tx = Mutex::new(tx);
    let listener = adapter
        .create_listener(Arc::new(move |c| {
            let _ = tx.lock().expect("listener channel").send(c);
        }))
        .wait()?;
    listener.listen(addr).wait()?;
    println!("server: listening on {}", listener.local_address()?);
    let connector = incoming.recv()?;
    // Private data: our buffer's address and remote token, for the client's writes and reads.
    let mut offer = buf.address().to_le_bytes().to_vec();
    offer.extend_from_slice(&mr.remote_token().0.to_le_bytes());
    connector.accept(&*qp, 4, 4, &offer, None).wait()?;
    println!("server: accepted {}", connector.peer_address()?);

    let done = poll_one(&mut *cq, Duration::from_secs(30))?;
    let mut text = vec![0u8; done.bytes_transferred as usize];
    buf.read_at(done_at as usize, &mut text)?;
    let sum: u64 = buf.with(|b| b[..LEN - 64].iter().map(|&x| u64::from(x)).sum());
    println!(
        "server: client says {:?}; sum of the written octets {sum}",
        String::from_utf8_lossy(&text)
    );
    connector.disconnect().wait()?;
    connector.close().wait()?;
    listener.close().wait()?;
    qp.close().wait()?;
    mr.close().wait()?;
    cq.close().wait()?;
    pd.close().wait()?;
    Ok(())
}

fn client(adapter: &dyn Adapter, server: SocketAddr) -> Result<(), Error> {
    let pd = adapter.create_pd().wait()?;
    let mut cq = adapter.create_cq(64, Arc::new(|_| {}), None).wait()?;
    let buf = Buffer::new(2 * LEN);
    let mr = pd.create_mr(false).wait()?;
    let rights = MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK;
    mr.register(&buf, 0, 2 * LEN, rights).wait()?;
    buf.with_mut(|b| {
        b[..LEN]
            .iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = i as u8)
    });

    // The server may still be starting: retry a refused connect for a few seconds. A QP serves
    // one connection attempt (a refused one included), so each attempt takes a fresh QP.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (connector, mut qp) = loop {
        let qp = pd.create_qp(config(&*cq)).wait()?;
        let connector = adapter.create_connector().wait()?;
        let local = SocketAddr::new(server.ip(), 0);
        match connector.connect(&*qp, local, server, 4, 4, b"").wait() {
            Ok(()) => break (connector, qp),
            Err(s) if s == Status::CONNECTION_REFUSED && Instant::now() < deadline => {
                connector.close().wait()?;
                qp.close().wait()?;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(s) => return Err(s.into()),
        }
    };
    let data = connector.connection_data()?;
    let offer = data
        .private_data
        .get(..12)
        .ok_or("server sent no buffer offer")?;
    let remote = u64::from_le_bytes(offer[..8].try_into()?);
    let token = RemoteToken(u32::from_le_bytes(offer[8..12].try_into()?));
    connector.complete_connect(None).wait()?;
    println!(
        "client: connected to {server}; server buffer {remote:#x}, token {:#x}",
        token.0
    );

    let local = |offset: usize, len: usize| {
        Sge::new(buf.address() + offset as u64, len as u32, mr.local_token())
    };
    let payload = LEN - 64;
    let qp_out = qp.initiator();
    qp_out.write(1, &[local(0, payload)], remote, token, OpFlags::empty())?;
    qp_out.read(2, &[local(LEN, payload)], remote, token, OpFlags::empty())?;
    buf.write_at(LEN - 64, b"done")?;
    qp_out.send(3, &[local(LEN - 64, 4)], OpFlags::empty())?;
    for _ in 0..3 {
        poll_one(&mut *cq, Duration::from_secs(10))?;
    }
    let same = buf.with(|b| b[..payload] == b[LEN..LEN + payload]);
    println!(
        "client: wrote and read back {payload} octets: {}",
        if same { "ok" } else { "MISMATCH" }
    );
    connector.disconnect().wait()?;
    connector.close().wait()?;
    qp.close().wait()?;
    mr.close().wait()?;
    cq.close().wait()?;
    pd.close().wait()?;
    if same {
        Ok(())
    } else {
        Err("read-back mismatch".into())
    }
}

fn config(cq: &dyn Cq) -> QpConfig<'_> {
    QpConfig {
        receive_cq: cq,
        initiator_cq: cq,
        context: 0,
        receive_queue_depth: 8,
        initiator_queue_depth: 8,
        max_receive_sge: 1,
        max_initiator_sge: 1,
        inline_data_size: 0,
    }
}

/// One successful completion within `timeout`.
fn poll_one(cq: &mut dyn Cq, timeout: Duration) -> Result<Completion, Error> {
    let deadline = Instant::now() + timeout;
    let mut out = [Completion::EMPTY; 1];
    while cq.get_results_ex(&mut out) == 0 {
        if Instant::now() > deadline {
            return Err("timed out waiting for a completion".into());
        }
        std::thread::yield_now();
    }
    if out[0].status != Status::SUCCESS {
        return Err(format!("request failed: {:?}", out[0]).into());
    }
    Ok(out[0])
}
