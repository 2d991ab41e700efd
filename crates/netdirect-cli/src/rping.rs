//! `nd rping-compat`: Linux `rping` (librdmacm's `examples/rping.c`) on the wire, so that `nd`
//! can ping a Linux iWARP stack (siw, or an RNIC) and be pinged by it.
//!
//! # Protocol (per iteration, exactly as rping)
//! 1. The client Sends its source advertisement, `struct rping_rdma_info { __be64 buf;
//!    __be32 rkey; __be32 size; }` (16 octets, big-endian).
//! 2. The server RDMA-READs `size` octets of the client's source buffer.
//! 3. The server Sends "go ahead": 16 octets (rping sends its never-filled `send_buf`: zeros).
//! 4. The client Sends its sink advertisement.
//! 5. The server RDMA-WRITEs `strlen(data) + 1` octets of what it read into the sink.
//! 6. The server Sends "go ahead" again: the write is complete.
//!
//! The data is rping's: `"rdma-ping-%d: "` followed by ASCII `A`…`z` rotating from a start
//! character that advances by one per ping, with a NUL in the last octet. No private data
//! (rping sends none); IRD/ORD 1/1; both data buffers registered for local write and remote
//! read and write, as rping registers them.
//!
//! # Flags (rping's)
//! `-s` server, `-c` client, `-a addr` (server: the one address to listen on, default
//! 127.0.0.1, as the soft RNIC has no wildcard; client: the server), `-p port`
//! (default 7174), `-v` print the ping data (`ping data: …` on the client, `server ping data: …`
//! on the server), `-V` validate (client: the echo equals what it sent, `data mismatch!`;
//! server, beyond rping: what it read equals rping's pattern for that ping), `-C count` (client:
//! pings; server: pings to serve, then wait for the client's disconnect; default: until the
//! client disconnects), `-S size` (26..=65535, default 64; the server takes any size up to
//! 65535 from the advertisement), `-I addr` client source address, `-d` debug lines on stderr.
//! The server serves one client and exits, as rping without `-P`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use netdirect::{Buffer, Connector, Mr};
use netdirect_types::{MrFlags, OpFlags, RemoteToken, Sge, Status};

use crate::conn::{QueueSizes, Side, local_for, op_name, register};
use crate::endpoint::{Endpoint, Polled, REMOTE_ACCESS, Shape};
use crate::error::{Context, Error, Result, explain, wait};
use crate::{outln, parse_ip};

/// rping's default port.
pub const DEFAULT_PORT: u16 = 7174;
/// rping's `RPING_BUFSIZE`: sizes are below it.
pub const BUFSIZE: usize = 64 * 1024;
/// rping's `RPING_MIN_BUFSIZE`: `sizeof("2147483647") + sizeof("rdma-ping-%d: ")`.
pub const MIN_SIZE: usize = 11 + 15;
/// `sizeof(struct rping_rdma_info)`.
pub const INFO_LEN: usize = 16;
/// rping's send queue depth.
const SQ_DEPTH: u32 = 16;
/// Receives kept posted (rping posts one; a second one costs nothing and is never needed).
const RQ_DEPTH: u32 = 2;

const CTX_SEND: u64 = 1;
const CTX_READ: u64 = 2;
const CTX_WRITE: u64 = 3;
const CTX_RECV: u64 = 4;

/// `nd rping-compat`'s flags: rping's.
#[derive(Args, Debug, Clone)]
pub struct RpingArgs {
    /// Server side.
    #[arg(
        short = 's',
        conflicts_with = "client",
        required_unless_present = "client"
    )]
    pub server: bool,
    /// Client side.
    #[arg(short = 'c')]
    pub client: bool,
    /// Address: the server's to listen on (default: every local address, as `0.0.0.0` for IPv4
    /// and `::`/`::0` for both), the client's server (required).
    #[arg(short = 'a')]
    pub addr: Option<String>,
    /// Source address to bind to (client).
    #[arg(short = 'I')]
    pub source: Option<String>,
    /// Port.
    #[arg(short = 'p', default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Display ping data to stdout.
    #[arg(short = 'v')]
    pub verbose: bool,
    /// Validate ping data.
    #[arg(short = 'V')]
    pub validate: bool,
    /// Debug lines on stderr.
    #[arg(short = 'd')]
    pub debug: bool,
    /// Ping count (client; 0 or none: until interrupted). Server: pings to serve.
    #[arg(short = 'C')]
    pub count: Option<u64>,
    /// Ping data size (26..=65535; default 64).
    #[arg(short = 'S', default_value_t = 64)]
    pub size: usize,
    /// Longest wait for anything (a client, the connection, a completion), in seconds.
    #[arg(long = "timeout", default_value_t = 120.0)]
    pub timeout: f64,
    /// Interop testing: the server reads the client's source with a wrong STag key, so the
    /// peer must answer with a Terminate (RDMAP remote protection, invalid STag).
    #[arg(long = "inject-bad-stag", hide = true)]
    pub inject_bad_stag: bool,
}

/// rping's `struct rping_rdma_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Info {
    /// Buffer address (`buf`).
    pub buf: u64,
    /// Its rkey / STag.
    pub rkey: u32,
    /// Its size.
    pub size: u32,
}

impl Info {
    /// The 16 octets on the wire (big-endian).
    pub fn encode(&self) -> [u8; INFO_LEN] {
        let mut b = [0u8; INFO_LEN];
        b[..8].copy_from_slice(&self.buf.to_be_bytes());
        b[8..12].copy_from_slice(&self.rkey.to_be_bytes());
        b[12..].copy_from_slice(&self.size.to_be_bytes());
        b
    }

    /// Decodes 16 octets.
    pub fn decode(b: &[u8; INFO_LEN]) -> Info {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        let mut k = [0u8; 4];
        k.copy_from_slice(&b[8..12]);
        let mut s = [0u8; 4];
        s.copy_from_slice(&b[12..]);
        Info {
            buf: u64::from_be_bytes(a),
            rkey: u32::from_be_bytes(k),
            size: u32::from_be_bytes(s),
        }
    }
}

/// rping's ping data for ping number `ping` of `size` octets (`rping_test_client`):
/// `"rdma-ping-%d: "`, then characters from `65 + ping % 58` upwards, wrapping from `z` (122)
/// to `A` (65), and a NUL in the last octet.
pub fn pattern(ping: u64, size: usize) -> Vec<u8> {
    let mut b = vec![0u8; size];
    if size == 0 {
        return b;
    }
    let head = format!("rdma-ping-{}: ", ping as i32);
    // snprintf(buf, size, …): at most size - 1 characters, cc = the untruncated length.
    let n = head.len().min(size - 1);
    b[..n].copy_from_slice(&head.as_bytes()[..n]);
    let mut c = 65 + (ping % 58) as u8;
    for x in b.iter_mut().skip(head.len()) {
        *x = c;
        c += 1;
        if c > 122 {
            c = 65;
        }
    }
    b[size - 1] = 0;
    b
}

/// The octets before the first NUL, as text (`printf("%s")`).
fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&x| x == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Runs `nd rping-compat`.
pub fn run(a: &RpingArgs) -> Result<()> {
    if a.size < MIN_SIZE || a.size > BUFSIZE - 1 {
        return Err(Error::msg(format!(
            "Invalid size {} (valid range is {MIN_SIZE} to {})",
            a.size,
            BUFSIZE - 1
        )));
    }
    if !(a.timeout > 0.0 && a.timeout.is_finite()) {
        return Err(Error::msg("--timeout must be a positive number of seconds"));
    }
    if a.count.is_some_and(|c| c > i32::MAX as u64) {
        return Err(Error::msg("-C: the count must be at most 2147483647"));
    }
    if a.server { serve(a) } else { client(a) }
}

/// One connection's endpoint (its data buffer is the client's sink, the server's read target
/// and write source; its receive ring holds the advertisements) plus rping's other buffers.
struct Ep {
    ep: Endpoint,
    /// The client's source buffer.
    start: Option<(Buffer, Box<dyn Mr>)>,
    send: Buffer,
    send_mr: Box<dyn Mr>,
    sends_out: u32,
    debug: bool,
}

/// What the CQ said.
enum Got {
    /// A receive of this many octets (the receive is reposted).
    Recv(usize),
    /// An RDMA read or write completed.
    Rdma(u64),
    /// The peer disconnected (flushed requests, or the disconnect event).
    Disconnected,
}

impl Ep {
    fn new(side: &Side, rdma_len: usize, client: bool, timeout: Duration) -> Result<Ep> {
        let ep = Endpoint::new(
            side,
            Shape {
                queues: QueueSizes {
                    receive: RQ_DEPTH as usize,
                    initiator: SQ_DEPTH as usize,
                    initiator_sge: 1,
                    inline: 0,
                    spare: SQ_DEPTH as usize,
                },
                data_len: rdma_len,
                data_access: REMOTE_ACCESS,
                slot: INFO_LEN,
                slots: RQ_DEPTH as usize,
                what: "a",
                srq: false,
                private_head: 0,
            },
            timeout,
        )?;
        let start = if client {
            let b = Buffer::new(rdma_len);
            let mr = register(side, &b, REMOTE_ACCESS, timeout)?;
            Some((b, mr))
        } else {
            None
        };
        let send = Buffer::new(INFO_LEN);
        let send_mr = register(side, &send, MrFlags::empty(), timeout)?;
        let mut ep = Ep {
            ep,
            start,
            send,
            send_mr,
            sends_out: 0,
            debug: false,
        };
        for slot in 0..RQ_DEPTH as usize {
            ep.post_recv(slot)?;
        }
        Ok(ep)
    }

    fn post_recv(&mut self, slot: usize) -> Result<()> {
        self.ep.post_receive(CTX_RECV | (slot as u64) << 8, slot)
    }

    /// Sends `info` (after earlier sends completed: the send buffer is reused).
    fn send_info(&mut self, info: Info) -> Result<()> {
        self.wait_sends()?;
        self.send
            .write_at(0, &info.encode())
            .map_err(|e| Error::msg(e.to_string()))?;
        let sge = Sge::new(
            self.send.address(),
            INFO_LEN as u32,
            self.send_mr.local_token(),
        );
        self.ep
            .qp
            .initiator()
            .send(CTX_SEND, &[sge], OpFlags::empty())
            .context(|| "post send error".into())?;
        self.sends_out += 1;
        if self.debug {
            eprintln!(
                "posted send: addr {:#x} rkey {:#x} len {}",
                info.buf, info.rkey, info.size
            );
        }
        Ok(())
    }

    fn wait_sends(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.ep.timeout;
        while self.sends_out > 0 {
            match self.poll()? {
                Some(Got::Disconnected) => return Err(self.gone("a send to complete")),
                Some(_) => {
                    return Err(Error::msg(
                        "protocol error: a message arrived while a send was outstanding",
                    ));
                }
                None => self.ep.idle(deadline, "a send to complete")?,
            }
        }
        Ok(())
    }

    /// One completion of interest, if any; send completions are counted and skipped.
    fn poll(&mut self) -> Result<Option<Got>> {
        loop {
            let c = match self.ep.poll()? {
                Polled::Done(c) => c,
                Polled::Empty => return Ok(None),
                Polled::Ended => return Ok(Some(Got::Disconnected)),
            };
            match c.request_context & 0xff {
                CTX_SEND => {
                    self.sends_out -= 1;
                    if self.debug {
                        eprintln!("send completion");
                    }
                }
                CTX_RECV => {
                    let slot = (c.request_context >> 8) as usize;
                    let len = c.bytes_transferred as usize;
                    if self.debug {
                        eprintln!("recv completion ({len} octets)");
                    }
                    if len != INFO_LEN {
                        return Err(Error::msg(format!("Received bogus data, size {len}")));
                    }
                    return Ok(Some(Got::Recv(slot)));
                }
                x => {
                    if self.debug {
                        eprintln!("{} completion", op_name(c.op_type));
                    }
                    return Ok(Some(Got::Rdma(x)));
                }
            }
        }
    }

    /// Waits for the next received advertisement and reposts its receive; `None` if the peer
    /// disconnected instead.
    fn recv_info(&mut self, what: &str) -> Result<Option<Info>> {
        let deadline = Instant::now() + self.ep.timeout;
        loop {
            match self.poll()? {
                Some(Got::Recv(slot)) => {
                    let mut m = [0u8; INFO_LEN];
                    self.ep.read_slot(slot, &mut m)?;
                    self.post_recv(slot)?;
                    return Ok(Some(Info::decode(&m)));
                }
                Some(Got::Disconnected) => return Ok(None),
                Some(Got::Rdma(_)) => {
                    return Err(Error::msg(format!(
                        "protocol error: waiting for {what}, an RDMA request completed"
                    )));
                }
                None => self.ep.idle(deadline, what)?,
            }
        }
    }

    /// Waits for the RDMA request `ctx` to complete.
    fn rdma_done(&mut self, ctx: u64, what: &str) -> Result<()> {
        let deadline = Instant::now() + self.ep.timeout;
        loop {
            match self.poll()? {
                Some(Got::Rdma(x)) if x == ctx => return Ok(()),
                Some(Got::Disconnected) => return Err(self.gone(what)),
                Some(_) => {
                    return Err(Error::msg(format!(
                        "protocol error: waiting for {what}, something else completed"
                    )));
                }
                None => self.ep.idle(deadline, what)?,
            }
        }
    }

    /// The connection ended while waiting for `what`: a Terminate if one came, else a
    /// disconnect.
    fn gone(&self, what: &str) -> Error {
        self.ep.gone(what)
    }

    fn rdma_info(&self) -> Info {
        Info {
            buf: self.ep.data.address(),
            rkey: self.ep.data_mr.remote_token().0,
            size: 0,
        }
    }
}

fn client(a: &RpingArgs) -> Result<()> {
    let timeout = Duration::from_secs_f64(a.timeout);
    let Some(addr) = a.addr.as_deref() else {
        return Err(Error::msg("the client needs the server's address: -a ADDR"));
    };
    let server = SocketAddr::new(parse_ip(addr)?, a.port);
    let local_ip = match a.source.as_deref() {
        Some(s) => parse_ip(s)?,
        None => local_for(server.ip())?,
    };
    if local_ip.is_ipv4() != server.is_ipv4() {
        return Err(Error::status(
            format!("source address {local_ip} and server {server} are of different families"),
            Status::INVALID_ADDRESS,
        ));
    }
    let side = Side::open(local_ip, timeout)?;
    let mut ep = Ep::new(&side, a.size, true, timeout)?;
    ep.debug = a.debug;
    let connector = wait(
        side.adapter.create_connector(),
        timeout,
        "cannot create a connector",
    )?;
    if let Err(mut e) = wait(
        connector.connect(&*ep.ep.qp, SocketAddr::new(local_ip, 0), server, 1, 1, b""),
        timeout,
        &format!("cannot connect to {server}"),
    ) {
        if let Some(s) = e.status {
            e.message = format!("{}: {}", e.message, explain(s));
        }
        return Err(e);
    }
    wait(
        connector.complete_connect(Some(ep.ep.disconnect_event())),
        timeout,
        &format!("cannot complete the connection to {server}"),
    )?;
    if a.debug {
        let d = connector.connection_data().unwrap_or_default();
        eprintln!(
            "connected {} -> {} (IRD {} ORD {})",
            connector
                .local_address()
                .map_or("?".into(), |x| x.to_string()),
            server,
            d.inbound_read_limit,
            d.outbound_read_limit
        );
    }
    let result = client_loop(a, &mut ep);
    if a.debug {
        eprintln!("disconnecting");
    }
    let _ = connector
        .disconnect()
        .wait_timeout(timeout.min(Duration::from_secs(5)));
    let _ = connector.close().wait_timeout(Duration::from_secs(2));
    result
}

fn client_loop(a: &RpingArgs, ep: &mut Ep) -> Result<()> {
    let size = a.size;
    let count = a.count.unwrap_or(0);
    let (start_addr, start_rkey) = match &ep.start {
        Some((b, mr)) => (b.address(), mr.remote_token().0),
        None => return Err(Error::msg("internal: no source buffer")),
    };
    let mut ping = 0u64;
    while count == 0 || ping < count {
        let data = pattern(ping, size);
        if let Some((b, _)) = &ep.start {
            b.write_at(0, &data)
                .map_err(|e| Error::msg(e.to_string()))?;
        }
        ep.send_info(Info {
            buf: start_addr,
            rkey: start_rkey,
            size: size as u32,
        })?;
        // The server read the source and says go ahead.
        if ep.recv_info("the server's go-ahead")?.is_none() {
            return Err(ep.gone("RDMA_WRITE_ADV (rping's state)"));
        }
        let sink = Info {
            size: size as u32,
            ..ep.rdma_info()
        };
        ep.send_info(sink)?;
        // The server wrote the sink and says so.
        if ep.recv_info("the server's write-complete")?.is_none() {
            return Err(ep.gone("RDMA_WRITE_COMPLETE (rping's state)"));
        }
        let mut echo = vec![0u8; size];
        ep.ep
            .data
            .read_at(0, &mut echo)
            .map_err(|e| Error::msg(e.to_string()))?;
        if a.validate && echo != data {
            let at = echo
                .iter()
                .zip(&data)
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            eprintln!("data mismatch!");
            return Err(Error::msg(format!(
                "data mismatch in ping {ping} at octet {at}: got {:#04x}, sent {:#04x}",
                echo[at], data[at]
            )));
        }
        if a.verbose {
            outln!("ping data: {}", c_str(&echo));
        }
        ping += 1;
    }
    ep.wait_sends()
}

fn serve(a: &RpingArgs) -> Result<()> {
    let timeout = Duration::from_secs_f64(a.timeout);
    // Without -a, or with a wildcard (0.0.0.0, ::, rping's ::0), every local address, as rping
    // binds INADDR_ANY: one adapter and listener per address, the first client served.
    let bind = a.addr.as_deref().map(parse_ip).transpose()?;
    let ips = crate::conn::listen_addresses(bind);
    let explicit = bind.is_some_and(|ip| !ip.is_unspecified());
    let (tx, rx) = mpsc::channel::<(usize, Box<dyn Connector>)>();
    let mut sides = Vec::new();
    let mut listeners = Vec::new();
    for ip in ips {
        let side = match Side::open(ip, timeout) {
            Ok(s) => s,
            Err(_) if !explicit => continue,
            Err(e) => return Err(e),
        };
        let k = sides.len();
        let tx = std::sync::Mutex::new(tx.clone());
        let listener = wait(
            side.adapter
                .create_listener(Arc::new(move |c: Box<dyn Connector>| {
                    if let Ok(tx) = tx.lock() {
                        let _ = tx.send((k, c));
                    }
                })),
            timeout,
            "cannot create a listener",
        )?;
        let addr = SocketAddr::new(ip, a.port);
        wait(listener.listen(addr), timeout, "").map_err(|e| {
            let s = e.status.unwrap_or(Status::UNSUCCESSFUL);
            Error::status(format!("cannot listen on {addr}: {}", explain(s)), s)
        })?;
        if a.debug {
            eprintln!("listening on {addr}");
        }
        sides.push(side);
        listeners.push(listener);
    }
    if sides.is_empty() {
        return Err(Error::status(
            "no local address to listen on".to_string(),
            Status::INVALID_ADDRESS,
        ));
    }
    let (k, c) = rx.recv_timeout(timeout).map_err(|_| {
        match listeners.iter().find_map(|l| l.take_error()) {
            // Clients came but were refused (out of descriptors, say): say so, not "nobody came".
            Some(s) => Error::status(
                format!("client connections were refused here: {}", explain(s)),
                s,
            ),
            None => Error::status(
                format!("no client connected within {} s", timeout.as_secs_f64()),
                Status::IO_TIMEOUT,
            ),
        }
    })?;
    // The listeners go: rping without -P serves one client. New requests are refused at
    // once; the close of the listener that delivered `c` completes only when `c` is closed
    // (NDK §2.6), so none is waited for.
    for listener in listeners {
        drop(listener.close());
    }
    let side = &sides[k];
    let mut ep = Ep::new(side, BUFSIZE, false, timeout)?;
    ep.debug = a.debug;
    if a.debug {
        let d = c.connection_data().unwrap_or_default();
        eprintln!(
            "connect request from {} (IRD {} ORD {}, {} octets of private data)",
            c.peer_address().map_or("?".into(), |x| x.to_string()),
            d.inbound_read_limit,
            d.outbound_read_limit,
            d.private_data.len()
        );
    }
    wait(
        c.accept(&*ep.ep.qp, 1, 1, b"", Some(ep.ep.disconnect_event())),
        timeout,
        "cannot accept the client's connection",
    )?;
    let result = server_loop(a, &mut ep);
    let _ = c
        .disconnect()
        .wait_timeout(timeout.min(Duration::from_secs(5)));
    let _ = c.close().wait_timeout(Duration::from_secs(2));
    result
}

fn server_loop(a: &RpingArgs, ep: &mut Ep) -> Result<()> {
    let mut ping = 0u64;
    let count = a.count.unwrap_or(0);
    let go = Info::default();
    loop {
        if count != 0 && ping >= count {
            // Served what we were asked to: wait for the client to hang up.
            return match ep.recv_info("the client's disconnect")? {
                None => {
                    eprintln!("server DISCONNECT EVENT...");
                    Ok(())
                }
                Some(_) => Err(Error::msg(format!(
                    "the client goes on after {count} pings (-C {count} here)"
                ))),
            };
        }
        let Some(src) = ep.recv_info("the client's source advertisement")? else {
            eprintln!("server DISCONNECT EVENT...");
            return Ok(());
        };
        if a.debug {
            eprintln!(
                "Received rkey {:x} addr {:x} len {} from peer",
                src.rkey, src.buf, src.size
            );
        }
        let len = src.size as usize;
        if len == 0 || len > BUFSIZE {
            return Err(Error::msg(format!(
                "the client advertised {len} octets (this server takes 1..={BUFSIZE})"
            )));
        }
        let sge = Sge::new(
            ep.ep.data.address(),
            len as u32,
            ep.ep.data_mr.local_token(),
        );
        // The key is the STag's low octet (RFC 5040 §2.5 leaves its use to the RNIC; siw and
        // we check it), so flipping it names the right region with the wrong key.
        let rkey = if a.inject_bad_stag {
            src.rkey ^ 0xff
        } else {
            src.rkey
        };
        ep.ep
            .qp
            .initiator()
            .read(
                CTX_READ,
                &[sge],
                src.buf,
                RemoteToken(rkey),
                OpFlags::empty(),
            )
            .context(|| "post send error (RDMA read)".into())?;
        ep.rdma_done(CTX_READ, "the RDMA read")?;
        let mut got = vec![0u8; len];
        ep.ep
            .data
            .read_at(0, &mut got)
            .map_err(|e| Error::msg(e.to_string()))?;
        if a.verbose {
            outln!("server ping data: {}", c_str(&got));
        }
        if a.validate {
            let want = pattern(ping, len);
            if got != want {
                let at = got.iter().zip(&want).position(|(x, y)| x != y).unwrap_or(0);
                eprintln!("data mismatch!");
                return Err(Error::msg(format!(
                    "data mismatch in ping {ping} at octet {at}: read {:#04x}, rping sends {:#04x}",
                    got[at], want[at]
                )));
            }
        }
        ep.send_info(go)?;
        let Some(sink) = ep.recv_info("the client's sink advertisement")? else {
            return Err(ep.gone("RDMA_WRITE_ADV (rping's state)"));
        };
        // rping writes strlen(rdma_buf) + 1 octets.
        let wlen = got
            .iter()
            .position(|&x| x == 0)
            .map_or(len, |n| n + 1)
            .min(sink.size as usize);
        let sge = Sge::new(
            ep.ep.data.address(),
            wlen as u32,
            ep.ep.data_mr.local_token(),
        );
        ep.ep
            .qp
            .initiator()
            .write(
                CTX_WRITE,
                &[sge],
                sink.buf,
                RemoteToken(sink.rkey),
                OpFlags::empty(),
            )
            .context(|| "post send error (RDMA write)".into())?;
        ep.rdma_done(CTX_WRITE, "the RDMA write")?;
        ep.send_info(go)?;
        ping += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_big_endian() {
        let i = Info {
            buf: 0x0000_5628_a6ed_1450,
            rkey: 0xb10a_c000,
            size: 64,
        };
        let b = i.encode();
        assert_eq!(
            b,
            [
                0, 0, 0x56, 0x28, 0xa6, 0xed, 0x14, 0x50, 0xb1, 0x0a, 0xc0, 0, 0, 0, 0, 0x40
            ]
        );
        assert_eq!(Info::decode(&b), i);
    }

    #[test]
    fn pattern_is_rpings() {
        let p = pattern(0, 64);
        assert_eq!(&p[..13], b"rdma-ping-0: ");
        assert_eq!(&p[13..19], b"ABCDEF");
        assert_eq!(p[63], 0);
        assert_eq!(p.len(), 64);
        let p = pattern(1, 64);
        assert_eq!(&p[..16], b"rdma-ping-1: BCD");
        // Wraps from z to A.
        let p = pattern(57, 40);
        assert_eq!(&p[..17], b"rdma-ping-57: zAB");
        let p = pattern(58, 40);
        assert_eq!(&p[..17], b"rdma-ping-58: ABC");
        let p = pattern(3, 200);
        assert!(p[13..199].iter().all(|&c| (65..=122).contains(&c)));
    }
}
