//! netdirect in async code: a Send ping-pong between two QPs, both ends tasks of one tokio
//! current-thread runtime, with no thread per QP. Connection setup awaits the provider's
//! `Request`s; completions are awaited through `CqWaker` (arm + notification -> waker).
//!
//! ```sh
//! cargo run -p netdirect-soft --example tokio_pingpong            # IPv4
//! cargo run -p netdirect-soft --example tokio_pingpong -- --ipv6  # IPv6
//! ```
//!
//! tokio is a dev-dependency only: the library itself is runtime-free (a `Request<T>` is a
//! `Future`, a `CqWaker` turns a CQ into one).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use netdirect::{Adapter, Buffer, Cq, CqWaker, Mr, OpenParameters, Provider, Qp, QpConfig};
use netdirect_soft::SoftProvider;
use netdirect_types::{Completion, MrFlags, OpFlags, Sge, Status, Version};

type Error = Box<dyn std::error::Error>;

const ROUNDS: u32 = 1000;
const LEN: usize = 64;

/// One end: its CQ (with the waker that makes it awaitable), QP and a registered buffer.
struct End {
    waker: CqWaker,
    cq: Box<dyn Cq>,
    qp: Box<dyn Qp>,
    buf: Buffer,
    mr: Box<dyn Mr>,
}

impl End {
    async fn new(adapter: &dyn Adapter) -> Result<End, Error> {
        let pd = adapter.create_pd().await?;
        let waker = CqWaker::new();
        let cq = adapter.create_cq(64, waker.notification(), None).await?;
        let qp = pd
            .create_qp(QpConfig {
                receive_cq: &*cq,
                initiator_cq: &*cq,
                context: 0,
                receive_queue_depth: 8,
                initiator_queue_depth: 8,
                max_receive_sge: 1,
                max_initiator_sge: 1,
                inline_data_size: LEN as u32,
            })
            .await?;
        let buf = Buffer::new(2 * LEN);
        let mr = pd.create_mr(false).await?;
        mr.register(&buf, 0, 2 * LEN, MrFlags::ALLOW_LOCAL_WRITE)
            .await?;
        // The PD stays alive as the QP's and MR's antecedent; its handle may go.
        drop(pd);
        Ok(End {
            waker,
            cq,
            qp,
            buf,
            mr,
        })
    }

    fn post_receive(&mut self) -> Result<(), Status> {
        let sge = Sge::new(self.buf.address(), LEN as u32, self.mr.local_token());
        self.qp.receiver().receive(1, &[sge])
    }

    fn send(&mut self, round: u32) -> Result<(), Status> {
        let mut msg = [0u8; LEN];
        msg[..4].copy_from_slice(&round.to_le_bytes());
        self.qp
            .initiator()
            .send_inline(2, &[&msg], OpFlags::empty())
    }

    /// Awaits completions until the receive of `round` arrived; checks its content.
    async fn receive(&mut self, round: u32) -> Result<(), Error> {
        let mut out = [Completion::EMPTY; 8];
        loop {
            let n = self.waker.completions(&mut *self.cq, &mut out).await;
            if n == 0 {
                return Err(format!("CQ error {:?}", self.waker.error()).into());
            }
            for c in &out[..n] {
                if c.status != Status::SUCCESS {
                    return Err(format!("request failed: {c:?}").into());
                }
                if c.request_context == 1 {
                    let mut got = [0u8; 4];
                    self.buf.read_at(0, &mut got)?;
                    if u32::from_le_bytes(got) != round {
                        return Err(format!("round {round}: got {got:?}").into());
                    }
                    return Ok(());
                }
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
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
    let mut s = End::new(&*server).await?;
    let mut c = End::new(&*client).await?;
    s.post_receive()?;
    c.post_receive()?;

    // Connect: the listener hands the incoming connector over a channel the task awaits.
    let (tx, mut incoming) = tokio::sync::mpsc::unbounded_channel();
    let tx = Mutex::new(tx);
    let listener = server
        .create_listener(Arc::new(move |conn| {
            let _ = tx.lock().expect("listener channel").send(conn);
        }))
        .await?;
    listener.listen(SocketAddr::new(ip, 0)).await?;
    let active = client.create_connector().await?;
    let connecting = active.connect(
        &*c.qp,
        SocketAddr::new(ip, 0),
        listener.local_address()?,
        0,
        0,
        b"",
    );
    let passive = incoming.recv().await.ok_or("listener closed")?;
    let accepting = passive.accept(&*s.qp, 0, 0, b"", None);
    connecting.await?;
    active.complete_connect(None).await?;
    accepting.await?;

    // Both ends are tasks on this one thread: each awaits its CQ, neither blocks the other.
    let started = Instant::now();
    let server_task = async {
        for round in 0..ROUNDS {
            s.receive(round).await?;
            s.post_receive()?;
            s.send(round)?;
        }
        Ok::<_, Error>(())
    };
    let client_task = async {
        for round in 0..ROUNDS {
            c.send(round)?;
            c.receive(round).await?;
            c.post_receive()?;
        }
        Ok::<_, Error>(())
    };
    let (sr, cr) = tokio::join!(server_task, client_task);
    sr?;
    cr?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{ROUNDS} ping-pongs of {LEN} octets over {ip} in {:.3} s: {:.1} us per round trip",
        secs,
        secs * 1e6 / f64::from(ROUNDS)
    );
    active.disconnect().await?;
    Ok(())
}
