//! perftest's `-R` (rdma_cm) protocol, as perftest 4.5-0.17 (Debian 12; it calls itself
//! version 6.06) speaks it, so that `nd write-bw -R` and `ib_write_bw -R` run against each other
//! in either role. Learned from captures of siw↔siw runs of that build and from perftest's
//! sources (`perftest_communication.c`).
//!
//! # Connections
//! Two rdma_cm (MPA) connections to the same port, one after the other, neither with private
//! data beyond MPA v2's IRD/ORD:
//! 1. the *control* connection (IRD/ORD 0/0), whose QP carries every exchange below as Sends;
//! 2. the *data* connection, opened after the first zero handshake (IRD/ORD 0/0 for write and
//!    Send tests, `out_reads`/`out_reads` for read tests). perftest's server starts listening
//!    again only after that handshake, so the client retries refused connects (perftest: 10
//!    times, 100 ms apart).
//!
//! # Control messages
//! Each exchange is one Send each way: the client sends first, the server answers after it has
//! received (and reposted its single receive of 56 octets; no message is longer). In order:
//!
//! | # | octets | content |
//! |---|---|---|
//! | 1 | 16 | version string, NUL-padded (`"6.06"`; ≥ 5.70 is needed, older ones are refused) |
//! | 2 | 4 | cycle buffer (page size), i32 big-endian; both use the larger |
//! | 3 | 4 | cache line size, i32 big-endian |
//! | 4 | 2 | active MTU as `"%d"` of the `ibv_mtu` enum plus NUL (`"3"` = 1024) |
//! | 5 | 56 | handshake of zeros, then the data connection is made |
//! | 6 | 56 | handshake of zeros |
//! | 7… | 56 | handshakes of each side's *dest* (below): 3 for write/read BW, 4 for the others |
//! |  | | the measurement on the data connection |
//! | | 56 | BW write/read only: handshake (the client has finished), then five 8-octet reports |
//! | last | 56 | handshake ("close"; not in `write_lat`), then both disconnect: data connection first |
//!
//! A dest is `struct pingpong_dest`, every field big-endian: lid i32, out_reads i32, qpn i32,
//! psn i32, rkey u32, 4 octets padding, vaddr u64, gid 16 octets, srqn u32, gid_index i32.
//! `rkey`/`vaddr` name the buffer the peer targets (writes, reads), or for `send_bw` the 32-bit
//! credit counter the server RDMA-writes. perftest only reads lid…gid.
//!
//! A BW report (the client's; the server prints it, its own is garbage) is size u64, iterations
//! u64, peak, average (both f64 in MB/s = 2^20 B/s, or Gb/s with `--report_gbits`) and message
//! rate (f64, Mpps), each big-endian and each its own exchange.
//!
//! # Measurements
//! - `write_bw`/`read_bw`: the client writes (reads) `size` octets at the server's vaddr; the
//!   server only waits.
//! - `send_bw`: the client keeps `sent + 1 - credit < rx_depth`, where `credit` is the u32
//!   (host order: little-endian here) the server RDMA-writes into the client's dest buffer: its
//!   receive count, whenever `(count % rx_depth) % (rx_depth / 3) == 0`. `rx_depth` defaults to
//!   `min(512, iterations)` on both sides.
//! - `write_lat`: ping-pong by RDMA writes of `size` octets whose last octet is the sender's
//!   count (mod 256); each side polls the last octet of its own buffer. The *server* writes first.
//! - `send_lat`: Send ping-pong, the client first. `read_lat`: the client reads; the server waits.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use netdirect::{Connector, Qp};
use netdirect_types::{Completion, MrFlags, OpFlags, RdmaTechnology, RemoteToken, Sge, Status};

use crate::conn::{QueueSizes, Side, idle, local_for};
use crate::endpoint::{Endpoint, Polled, REMOTE_ACCESS, Shape};
use crate::error::{Error, Result, explain, wait};
use crate::meter::{BwLink, LatMeter, bw_meter};
use crate::perf::{BwRow, ClientRun, LatRow, Opts, Row, Stop, Test};

/// The version we claim: the behaviour implemented here is that version's.
pub const VERSION: &str = "6.06";
/// The oldest peer version this exchange suits (perftest refuses older ones itself).
const MIN_VERSION: f64 = 5.70;
/// Octets of a dest (`struct pingpong_dest`) and of perftest's control receive.
pub const DEST_LEN: usize = 56;
/// Our cycle buffer and cache line.
const CYCLE_BUFFER: i32 = crate::conn::CYCLE_BUFFER as i32;
const CACHE_LINE: i32 = 64;
/// `IBV_MTU_1024`, what siw reports.
const MTU: &[u8; 2] = b"3\0";
const RX_TAG: u64 = 1 << 63;

/// `struct pingpong_dest`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dest {
    /// LID (0 on iWARP).
    pub lid: i32,
    /// Outstanding reads.
    pub out_reads: i32,
    /// QP number.
    pub qpn: i32,
    /// Packet sequence number.
    pub psn: i32,
    /// Remote key of the target buffer.
    pub rkey: u32,
    /// Address of the target buffer.
    pub vaddr: u64,
    /// GID.
    pub gid: [u8; 16],
    /// SRQ number.
    pub srqn: u32,
    /// GID index.
    pub gid_index: i32,
}

impl Dest {
    /// The 56 octets on the wire.
    pub fn encode(&self) -> [u8; DEST_LEN] {
        let mut m = [0u8; DEST_LEN];
        m[0..4].copy_from_slice(&self.lid.to_be_bytes());
        m[4..8].copy_from_slice(&self.out_reads.to_be_bytes());
        m[8..12].copy_from_slice(&self.qpn.to_be_bytes());
        m[12..16].copy_from_slice(&self.psn.to_be_bytes());
        m[16..20].copy_from_slice(&self.rkey.to_be_bytes());
        m[24..32].copy_from_slice(&self.vaddr.to_be_bytes());
        m[32..48].copy_from_slice(&self.gid);
        m[48..52].copy_from_slice(&self.srqn.to_be_bytes());
        m[52..56].copy_from_slice(&self.gid_index.to_be_bytes());
        m
    }

    /// Parses a dest; `None` if `m` is not 56 octets.
    pub fn decode(m: &[u8]) -> Option<Dest> {
        if m.len() != DEST_LEN {
            return None;
        }
        let u = |a: usize| u32::from_be_bytes([m[a], m[a + 1], m[a + 2], m[a + 3]]);
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&m[32..48]);
        Some(Dest {
            lid: u(0) as i32,
            out_reads: u(4) as i32,
            qpn: u(8) as i32,
            psn: u(12) as i32,
            rkey: u(16),
            vaddr: u64::from_be_bytes(m[24..32].try_into().ok()?),
            gid,
            srqn: u(48),
            gid_index: u(52) as i32,
        })
    }
}

/// A GID for `ip` that is not IPv4-mapped, like siw's MAC-based ones (perftest compares the
/// two sides' kinds): a locally administered MAC `02:00:` + the low 32 bits of the address.
fn gid_of(ip: IpAddr) -> [u8; 16] {
    let low = match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let o = a.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    let mut g = [0u8; 16];
    g[0] = 0x02;
    g[2..6].copy_from_slice(&low);
    g
}

/// The version string in a 16-octet message.
fn version_of(m: &[u8]) -> String {
    let end = m.iter().position(|b| *b == 0).unwrap_or(m.len());
    String::from_utf8_lossy(&m[..end]).into_owned()
}

/// perftest's receive depth for `send_bw` (`min(-r, iterations)`).
fn rx_depth(opts: &Opts) -> usize {
    match opts.stop {
        Stop::Iters(n) => opts.rx_depth.min(n as usize).max(1),
        _ => opts.rx_depth.max(1),
    }
}

fn iters(opts: &Opts) -> u64 {
    match opts.stop {
        Stop::Iters(n) => n,
        _ => 0,
    }
}

/// Handshakes of dests before the measurement (after the two zero ones).
fn dest_handshakes(test: Test) -> usize {
    match test {
        Test::WriteBw | Test::ReadBw => 3,
        _ => 4,
    }
}

/// What `-R` supports; anything else is refused before connecting.
pub fn check_opts(opts: &Opts) -> Result<()> {
    if opts.qps != 1 {
        return Err(Error::msg(
            "-R: nd speaks perftest's rdma_cm protocol with one QP (-q 1)",
        ));
    }
    if opts.sizes.len() != 1 {
        return Err(Error::msg("-R: one message size per run (-s), not -a"));
    }
    if !matches!(opts.stop, Stop::Iters(_)) {
        return Err(Error::msg("-R: iterations (-n) only, not -D"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Control connection

/// The control connection: one receive posted at a time, as perftest's.
struct Ctl {
    ep: Endpoint,
    client: bool,
    /// The peer's message when it completed before our own Send did: the peer answers as soon
    /// as it has our message, and a device may report our Send's completion after the answer's
    /// (seen on siw between two verbs QPs in one guest).
    early: Option<Completion>,
}

const CTL_SLOT: usize = 64;

impl std::ops::Deref for Ctl {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.ep
    }
}

impl std::ops::DerefMut for Ctl {
    fn deref_mut(&mut self) -> &mut Endpoint {
        &mut self.ep
    }
}

impl Ctl {
    fn new(side: &Side, client: bool, timeout: Duration) -> Result<Ctl> {
        let ep = Endpoint::new(
            side,
            Shape {
                queues: QueueSizes {
                    receive: 2,
                    initiator: 2,
                    initiator_sge: 1,
                    inline: 0,
                    spare: 4,
                },
                data_len: CTL_SLOT,
                data_access: MrFlags::ALLOW_LOCAL_WRITE,
                slot: CTL_SLOT,
                slots: 1,
                what: "the control",
                srq: false,
                private_head: 0,
            },
            timeout,
        )?;
        let mut c = Ctl {
            ep,
            client,
            early: None,
        };
        c.post_receive()?;
        Ok(c)
    }

    fn post_receive(&mut self) -> Result<()> {
        self.ep.post_receive(RX_TAG, 0).map_err(|e| {
            Error::status(
                "cannot post the control receive",
                e.status.unwrap_or(Status::UNSUCCESSFUL),
            )
        })
    }

    fn next(&mut self, what: &str) -> Result<Completion> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.ep.poll().map_err(|e| Error {
                message: format!(
                    "control connection: {} while waiting for {what}: did the perftest peer exit?",
                    e.message
                ),
                ..e
            })? {
                Polled::Done(c) => return Ok(c),
                Polled::Ended => return Err(self.ep.gone(what)),
                Polled::Empty => self.ep.idle(deadline, what)?,
            }
        }
    }

    fn send(&mut self, data: &[u8], what: &str) -> Result<()> {
        self.ep
            .data
            .write_at(0, data)
            .map_err(|e| Error::msg(e.to_string()))?;
        let sge = Sge::new(
            self.ep.data.address(),
            data.len() as u32,
            self.ep.data_mr.local_token(),
        );
        self.ep
            .qp
            .initiator()
            .send(1, &[sge], OpFlags::empty())
            .map_err(|s| Error::status(format!("cannot send {what}"), s))?;
        loop {
            let c = self.next(&format!("our {what} to go out"))?;
            if c.request_context & RX_TAG == 0 {
                return Ok(());
            }
            // Only one receive is posted: a second message before we read the first is not
            // perftest's exchange.
            if self.early.replace(c).is_some() {
                return Err(Error::msg(format!(
                    "protocol error: the peer sent twice while we sent {what}: is it running the same test?"
                )));
            }
        }
    }

    fn recv(&mut self, what: &str) -> Result<Vec<u8>> {
        let c = match self.early.take() {
            Some(c) => c,
            None => self.next(&format!("the peer's {what}"))?,
        };
        if c.request_context & RX_TAG == 0 {
            return Err(Error::msg("protocol error: unexpected send completion"));
        }
        let mut m = vec![0u8; (c.bytes_transferred as usize).min(CTL_SLOT)];
        self.ep.read_slot(0, &mut m)?;
        self.post_receive()?;
        Ok(m)
    }

    /// One exchange, `want` octets each way (`ctx_xchg_data`): the client sends first.
    fn xchg(&mut self, mine: &[u8], what: &str) -> Result<Vec<u8>> {
        let theirs = if self.client {
            self.send(mine, what)?;
            self.recv(what)?
        } else {
            let t = self.recv(what)?;
            self.send(mine, what)?;
            t
        };
        if theirs.len() != mine.len() {
            return Err(Error::msg(format!(
                "protocol error: the peer's {what} has {} octets, expected {}: does it run the same perftest test with the same options?",
                theirs.len(),
                mine.len()
            )));
        }
        Ok(theirs)
    }

    fn hand_shake(&mut self, my: &Dest, what: &str) -> Result<Dest> {
        let m = self.xchg(&my.encode(), what)?;
        Dest::decode(&m).ok_or_else(|| Error::msg("protocol error: bad dest"))
    }

    /// Version, system data and MTU (exchanges 1–4); returns the cycle buffer both use.
    fn preamble(&mut self) -> Result<usize> {
        let mut v = [0u8; 16];
        v[..VERSION.len()].copy_from_slice(VERSION.as_bytes());
        let theirs = version_of(&self.xchg(&v, "version")?);
        let num: f64 = theirs
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0);
        if num < MIN_VERSION {
            return Err(Error::msg(format!(
                "the peer is perftest version {theirs:?}; nd speaks perftest {VERSION}'s rdma_cm exchange, which needs {MIN_VERSION:.2} or later"
            )));
        }
        let cb = self.xchg(&CYCLE_BUFFER.to_be_bytes(), "cycle buffer size")?;
        let cb = i32::from_be_bytes([cb[0], cb[1], cb[2], cb[3]]).max(CYCLE_BUFFER);
        self.xchg(&CACHE_LINE.to_be_bytes(), "cache line size")?;
        self.xchg(MTU, "MTU")?;
        Ok(cb.clamp(CYCLE_BUFFER, 1 << 30) as usize)
    }

    fn close(self) {
        self.ep.close(Duration::from_secs(2));
    }
}

// ---------------------------------------------------------------------------------------------
// Data connection

/// The data connection: `[outbox S | inbox S | credit 64]`, plus a receive ring for Sends.
struct Data {
    ep: Endpoint,
    s: usize,
    read_limit: u32,
}

impl std::ops::Deref for Data {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.ep
    }
}

impl std::ops::DerefMut for Data {
    fn deref_mut(&mut self) -> &mut Endpoint {
        &mut self.ep
    }
}

/// A finished receive.
struct Rx {
    slot: usize,
    len: usize,
}

impl Data {
    fn new(side: &Side, opts: &Opts, cycle: usize) -> Result<Data> {
        let size = opts.sizes[0];
        let s = size.max(cycle).div_ceil(4096) * 4096;
        let slots = if opts.test.is_send() {
            rx_depth(opts).max(16)
        } else {
            1
        };
        let tx = opts.tx_depth.max(2) + 4;
        let ep = Endpoint::new(
            side,
            Shape {
                queues: QueueSizes {
                    receive: slots,
                    initiator: tx,
                    initiator_sge: 1,
                    inline: opts.fit(&side.info).inline.max(8),
                    spare: 8,
                },
                data_len: 2 * s + 64,
                data_access: REMOTE_ACCESS,
                slot: s,
                slots,
                what: "the data",
                srq: false,
                private_head: 0,
            },
            opts.timeout,
        )?;
        if opts.test != Test::WriteLat {
            ep.data
                .with_mut(|b| crate::proto::fill_pattern(&mut b[..s]));
        }
        let mut d = Data {
            ep,
            s,
            read_limit: 0,
        };
        if opts.test.is_send() {
            for k in 0..slots {
                d.post_receive(k)?;
            }
        }
        Ok(d)
    }

    fn post_receive(&mut self, slot: usize) -> Result<()> {
        self.ep.post_receive(RX_TAG | slot as u64, slot)
    }

    /// Our dest: what the peer targets.
    fn dest(&self, test: Test, local: IpAddr, qpn: u16) -> Dest {
        let base = self.data.address();
        let vaddr = match test {
            Test::ReadBw | Test::ReadLat => base,
            Test::SendBw => base + 2 * self.s as u64,
            _ => base + self.s as u64,
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.subsec_nanos());
        let psn = (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) as i32 & 0xff_ffff;
        Dest {
            lid: 0,
            out_reads: if test.is_read() {
                self.read_limit.max(1) as i32
            } else {
                1
            },
            qpn: i32::from(qpn),
            psn,
            rkey: self.data_mr.remote_token().0,
            vaddr,
            gid: gid_of(local),
            srqn: 0,
            gid_index: 0,
        }
    }

    #[inline]
    fn poll(&mut self) -> Result<Option<Completion>> {
        let c = self.ep.try_next("the next completion").map_err(|e| Error {
            message: format!(
                "{}: did the perftest peer exit, or does it run another test?",
                e.message
            ),
            ..e
        })?;
        if let Some(c) = c {
            if c.request_context & RX_TAG == 0 {
                self.ep.tx_out = self.ep.tx_out.saturating_sub(1);
            }
        }
        Ok(c)
    }

    /// Waits for the next receive; send completions meanwhile are counted.
    fn next_rx(&mut self, what: &str) -> Result<Rx> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.poll()? {
                Some(c) if c.request_context & RX_TAG != 0 => {
                    return Ok(Rx {
                        slot: (c.request_context & !RX_TAG) as usize,
                        len: c.bytes_transferred as usize,
                    });
                }
                Some(_) => {}
                None => self.ep.idle(deadline, what)?,
            }
        }
    }

    /// Waits until at most `max` requests are outstanding; receives are an error.
    fn reap(&mut self, max: usize, what: &str) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        while self.tx_out > max {
            match self.poll()? {
                Some(c) if c.request_context & RX_TAG != 0 => {
                    return Err(Error::msg(
                        "protocol error: a Send arrived on a test without Sends: does the peer run the same test?",
                    ));
                }
                Some(_) => {}
                None => self.ep.idle(deadline, what)?,
            }
        }
        Ok(())
    }

    fn write(&mut self, rem: &Dest, size: usize) -> Result<()> {
        let sge = Sge::new(self.data.address(), size as u32, self.data_mr.local_token());
        self.ep
            .qp
            .initiator()
            .write(
                1,
                &[sge],
                rem.vaddr,
                RemoteToken(rem.rkey),
                OpFlags::empty(),
            )
            .map_err(|s| Error::status(format!("cannot post an RDMA write of {size} octets"), s))?;
        self.ep.tx_out += 1;
        Ok(())
    }

    fn read(&mut self, rem: &Dest, size: usize) -> Result<()> {
        let sge = Sge::new(
            self.data.address() + self.s as u64,
            size as u32,
            self.data_mr.local_token(),
        );
        self.ep
            .qp
            .initiator()
            .read(
                1,
                &[sge],
                rem.vaddr,
                RemoteToken(rem.rkey),
                OpFlags::empty(),
            )
            .map_err(|s| Error::status(format!("cannot post an RDMA read of {size} octets"), s))?;
        self.ep.tx_out += 1;
        Ok(())
    }

    fn send(&mut self, size: usize) -> Result<()> {
        let sge = Sge::new(self.data.address(), size as u32, self.data_mr.local_token());
        self.ep
            .qp
            .initiator()
            .send(1, &[sge], OpFlags::empty())
            .map_err(|s| Error::status(format!("cannot post a send of {size} octets"), s))?;
        self.ep.tx_out += 1;
        Ok(())
    }

    /// The credit the peer wrote (u32, host order).
    fn credit(&self) -> u32 {
        let mut b = [0u8; 4];
        let _ = self.data.read_at(2 * self.s, &mut b);
        u32::from_le_bytes(b)
    }

    fn inbox_byte(&self, at: usize) -> u8 {
        let mut b = [0u8];
        let _ = self.data.read_at(self.s + at, &mut b);
        b[0]
    }

    fn close(mut self) {
        let _ = self.reap(0, "requests to finish");
        self.ep.close(Duration::from_secs(2));
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements

fn bw_row(size: usize, n: u64, secs: f64, peak: f64) -> BwRow {
    let secs = secs.max(1e-9);
    let avg = n as f64 * size as f64 / secs;
    BwRow {
        size,
        iters: n,
        peak: peak.max(avg),
        avg,
        msg_rate: n as f64 / secs,
        secs,
    }
}

/// The data connection as the bandwidth meter drives it (one QP).
struct CmLink<'a> {
    d: &'a mut Data,
    rem: &'a Dest,
    test: Test,
    size: usize,
    /// The server's receive depth: Sends may run this far ahead of its credit.
    rx: u64,
    posted: u64,
}

impl BwLink for CmLink<'_> {
    #[inline]
    fn outstanding(&self, _q: usize) -> usize {
        self.d.tx_out
    }

    #[inline]
    fn can_post(&self, _q: usize) -> bool {
        self.test != Test::SendBw
            || (self.posted + 1).saturating_sub(u64::from(self.d.credit())) < self.rx
    }

    #[inline]
    fn post(&mut self, _q: usize, _i: u64, _more: bool) -> Result<()> {
        match self.test {
            Test::WriteBw => self.d.write(self.rem, self.size)?,
            Test::ReadBw => self.d.read(self.rem, self.size)?,
            _ => self.d.send(self.size)?,
        }
        self.posted += 1;
        Ok(())
    }

    #[inline]
    fn reap(&mut self, _q: usize) -> Result<u64> {
        let mut n = 0;
        while let Some(c) = self.d.poll()? {
            if c.request_context & RX_TAG != 0 {
                return Err(Error::msg(
                    "protocol error: a Send arrived during the measurement",
                ));
            }
            n += 1;
        }
        Ok(n)
    }

    fn idle(&mut self, deadline: Instant) -> Result<()> {
        idle(
            deadline,
            if self.test == Test::SendBw {
                "requests to complete or the server's receive credits"
            } else {
                "RDMA requests to complete"
            },
        )
    }
}

/// Client side of write_bw, read_bw, send_bw.
fn client_bw(opts: &Opts, d: &mut Data, rem: &Dest) -> Result<BwRow> {
    let size = opts.sizes[0];
    let n = iters(opts);
    let mut w = opts.tx_depth.clamp(1, n.max(1) as usize);
    if opts.test.is_read() {
        w = w.min(d.read_limit.max(1) as usize);
    }
    let mut link = CmLink {
        d,
        rem,
        test: opts.test,
        size,
        rx: rx_depth(opts) as u64,
        posted: 0,
    };
    let (row, _) = bw_meter(&mut link, 1, size, w, Stop::Iters(n), opts.timeout, || {
        false
    })?;
    Ok(row)
}

/// Server side of send_bw: receive, repost, write credits.
fn server_send_bw(opts: &Opts, d: &mut Data, rem: &Dest) -> Result<BwRow> {
    let size = opts.sizes[0];
    let n = iters(opts);
    let rx = rx_depth(opts) as u64;
    let every = (rx / 3).max(1);
    let mut got = 0u64;
    let mut start = None;
    while got < n {
        let r = d.next_rx("the client's Sends")?;
        start.get_or_insert_with(Instant::now);
        if r.len != size {
            return Err(Error::status(
                format!(
                    "a Send of {} octets arrived; expected {size} (-s must match)",
                    r.len
                ),
                Status::DATA_ERROR,
            ));
        }
        got += 1;
        d.post_receive(r.slot)?;
        if (got % rx) % every == 0 {
            d.reap(opts.tx_depth.max(2), "credit writes to complete")?;
            let credit = (got as u32).to_le_bytes();
            d.qp.initiator()
                .write_inline(
                    2,
                    &[&credit],
                    rem.vaddr,
                    RemoteToken(rem.rkey),
                    OpFlags::empty(),
                )
                .map_err(|s| Error::status("cannot write a receive credit", s))?;
            d.tx_out += 1;
        }
    }
    let secs = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    d.reap(0, "credit writes to complete")?;
    Ok(bw_row(size, n, secs, 0.0))
}

/// write_lat, send_lat (both roles) and read_lat (client): perftest's `run_iter_lat_*`.
fn lat(opts: &Opts, d: &mut Data, rem: &Dest, client: bool) -> Result<LatRow> {
    let size = opts.sizes[0];
    let n = iters(opts);
    let mut meter = LatMeter::new(opts.test != Test::ReadLat, 0)?;
    if opts.unsorted {
        meter.keep_samples(n);
    }
    let (mut scnt, mut rcnt) = (0u64, 0u64);
    while scnt < n || rcnt < n {
        match opts.test {
            Test::ReadLat => {
                meter.post_at(Instant::now());
                d.read(rem, size)?;
                d.reap(0, "the RDMA read to complete")?;
                scnt += 1;
                rcnt += 1;
                continue;
            }
            Test::WriteLat => {
                // perftest's server writes first.
                if rcnt < n && (scnt >= 1 || client) {
                    rcnt += 1;
                    let want = rcnt as u8;
                    let deadline = Instant::now() + opts.timeout;
                    while d.inbox_byte(size - 1) != want {
                        d.reap(1, "our RDMA write to complete")?;
                        idle(deadline, "the peer's RDMA write")?;
                    }
                }
                if scnt < n {
                    scnt += 1;
                    let _ = d.data.write_at(size - 1, &[scnt as u8]);
                    meter.post_at(Instant::now());
                    d.write(rem, size)?;
                    d.reap(0, "our RDMA write to complete")?;
                }
            }
            _ => {
                // perftest's client sends first.
                if rcnt < n && (scnt >= 1 || !client) {
                    let r = d.next_rx("the peer's Send")?;
                    if r.len != size {
                        return Err(Error::status(
                            format!("a Send of {} octets arrived; expected {size}", r.len),
                            Status::DATA_ERROR,
                        ));
                    }
                    rcnt += 1;
                    d.post_receive(r.slot)?;
                }
                if scnt < n {
                    scnt += 1;
                    meter.post_at(Instant::now());
                    d.send(size)?;
                    d.reap(0, "our Send to complete")?;
                }
            }
        }
    }
    if opts.test == Test::ReadLat {
        meter.post_at(Instant::now());
    }
    let (hist, samples) = meter.into_parts();
    Ok(LatRow {
        size,
        hist,
        samples,
    })
}

/// The five report exchanges; returns the peer's report as a row.
fn xchg_report(ctl: &mut Ctl, mine: Option<&BwRow>, gbits: bool) -> Result<BwRow> {
    let unit = if gbits {
        1e9 / 8.0
    } else {
        (1u64 << 20) as f64
    };
    let r = mine.copied().unwrap_or(BwRow {
        size: 0,
        iters: 0,
        peak: 0.0,
        avg: 0.0,
        msg_rate: 0.0,
        secs: 0.0,
    });
    let size = ctl.xchg(&(r.size as u64).to_be_bytes(), "report (size)")?;
    let it = ctl.xchg(&r.iters.to_be_bytes(), "report (iterations)")?;
    let peak = ctl.xchg(&(r.peak / unit).to_be_bytes(), "report (peak)")?;
    let avg = ctl.xchg(&(r.avg / unit).to_be_bytes(), "report (average)")?;
    let rate = ctl.xchg(&(r.msg_rate / 1e6).to_be_bytes(), "report (message rate)")?;
    let u = |m: &[u8]| u64::from_be_bytes(m.try_into().unwrap_or([0; 8]));
    let f = |m: &[u8]| f64::from_be_bytes(m.try_into().unwrap_or([0; 8]));
    let avg = f(&avg) * unit;
    let msg_rate = f(&rate) * 1e6;
    Ok(BwRow {
        size: u(&size) as usize,
        iters: u(&it),
        peak: f(&peak) * unit,
        avg,
        msg_rate,
        secs: if msg_rate > 0.0 {
            u(&it) as f64 / msg_rate
        } else {
            0.0
        },
    })
}

fn zero_dest() -> Dest {
    Dest::default()
}

/// Checks the peer's dest for what the test needs from it.
fn check_dest(test: Test, rem: &Dest) -> Result<()> {
    let needs = matches!(
        test,
        Test::WriteBw | Test::ReadBw | Test::WriteLat | Test::ReadLat
    ) || test == Test::SendBw;
    if needs && rem.vaddr == 0 {
        return Err(Error::msg(
            "protocol error: the peer advertised no buffer (vaddr 0): does it run the same test?",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Client

/// Runs the test against a perftest (or nd) server started with `-R`.
pub fn client(opts: &Opts, server: SocketAddr, gbits: bool) -> Result<ClientRun> {
    check_opts(opts)?;
    let local_ip = match opts.bind {
        Some(ip) => ip,
        None => local_for(server.ip())?,
    };
    let side = Side::open(local_ip, opts.timeout)?;
    let mut ctl = Ctl::new(&side, true, opts.timeout)?;
    ctl.connector = Some(connect(&side, &*ctl.qp, local_ip, server, 0, opts.timeout)?);
    // perftest's client sleeps 1 s here; siw can lose a Send that follows its MPA Reply at once.
    std::thread::sleep(Duration::from_secs(1));
    let cycle = ctl.preamble()?;
    ctl.hand_shake(&zero_dest(), "handshake before the data connection")?;
    let mut d = connect_data(&side, opts, local_ip, server, cycle)?;
    let run = (|| {
        ctl.hand_shake(&zero_dest(), "handshake after the data connection")?;
        let local = d
            .connector
            .as_ref()
            .and_then(|c| c.local_address().ok())
            .unwrap_or(SocketAddr::new(local_ip, 0));
        let my = d.dest(opts.test, local_ip, local.port());
        let mut rem = zero_dest();
        for _ in 0..dest_handshakes(opts.test) {
            rem = ctl.hand_shake(&my, "dest handshake")?;
        }
        check_dest(opts.test, &rem)?;
        let cpu0 = crate::cpu::process_cpu();
        let t0 = Instant::now();
        let row = if opts.test.is_bw() {
            Row::Bw(client_bw(opts, &mut d, &rem)?)
        } else {
            Row::Lat(lat(opts, &mut d, &rem, true)?)
        };
        let secs = t0.elapsed().as_secs_f64();
        let cpu = crate::cpu::percent(cpu0, crate::cpu::process_cpu(), secs);
        if let (Row::Bw(r), Test::WriteBw | Test::ReadBw) = (&row, opts.test) {
            ctl.hand_shake(&my, "end-of-test handshake")?;
            xchg_report(&mut ctl, Some(r), gbits)?;
        }
        if opts.test != Test::WriteLat {
            ctl.hand_shake(&my, "closing handshake")?;
        }
        Ok::<_, Error>(ClientRun {
            info: side.info,
            local,
            remote: server,
            buffers: [(my.vaddr, my.rkey), (rem.vaddr, rem.rkey)],
            rows: vec![row],
            verified: true,
            secs: vec![secs],
            cpu: vec![cpu],
            interrupted: false,
            directions: Vec::new(),
        })
    })();
    // Let the peer finish its last Send before we go: siw fails a Send whose connection is
    // torn down while it is still completing it ("Bad wc status 2" at perftest's end).
    std::thread::sleep(Duration::from_millis(300));
    d.close();
    ctl.close();
    run
}

fn connect(
    side: &Side,
    qp: &dyn Qp,
    local_ip: IpAddr,
    server: SocketAddr,
    reads: u32,
    timeout: Duration,
) -> Result<Box<dyn Connector>> {
    let connector = wait(
        side.adapter.create_connector(),
        timeout,
        "cannot create a connector",
    )?;
    wait(
        connector.connect(qp, SocketAddr::new(local_ip, 0), server, reads, reads, &[]),
        timeout,
        &format!("cannot connect to {server}"),
    )
    .map_err(|mut e| {
        if let Some(s) = e.status {
            e.message = format!("{}: {}", e.message, explain(s));
        }
        e
    })?;
    wait(
        connector.complete_connect(None),
        timeout,
        &format!("cannot complete the connection to {server}"),
    )?;
    Ok(connector)
}

/// The data connection; perftest's server listens again only after the zero handshake, so a
/// refusal is retried (as perftest's client does) until the timeout.
fn connect_data(
    side: &Side,
    opts: &Opts,
    local_ip: IpAddr,
    server: SocketAddr,
    cycle: usize,
) -> Result<Data> {
    let reads = if opts.test.is_read() {
        opts.outs.clamp(1, side.info.max_outbound_read_limit.max(1))
    } else {
        0
    };
    let deadline = Instant::now() + opts.timeout;
    loop {
        let mut d = Data::new(side, opts, cycle)?;
        match connect(
            side,
            &*d.qp,
            local_ip,
            server,
            reads,
            opts.timeout.min(Duration::from_secs(10)),
        ) {
            Ok(c) => {
                d.read_limit = c
                    .connection_data()
                    .map_or(reads, |cd| cd.outbound_read_limit.min(reads.max(1)));
                d.connector = Some(c);
                return Ok(d);
            }
            Err(e) if Instant::now() + Duration::from_millis(100) < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server

/// What a `-R` server run measured.
#[derive(Debug, Clone)]
pub struct ServeRun {
    /// The serving adapter's transport (for the header).
    pub technology: RdmaTechnology,
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// The rows to print: ours (send_bw, write_lat, send_lat) or the client's report
    /// (write_bw, read_bw, as perftest's server prints it); none for read_lat.
    pub rows: Vec<Row>,
    /// Whether `rows` is the client's report.
    pub remote_report: bool,
}

/// Serves one perftest (or nd) client started with `-R`.
pub fn serve(opts: &Opts, gbits: bool, on_listen: &dyn Fn(&[SocketAddr])) -> Result<ServeRun> {
    check_opts(opts)?;
    let l = crate::perf::listen(opts)?;
    on_listen(&l.bound);
    let next = |what: &str| {
        l.rx.recv_timeout(opts.timeout).map_err(|_| {
            Error::status(
                format!("no {what} within {} s", opts.timeout.as_secs_f64()),
                Status::IO_TIMEOUT,
            )
        })
    };
    let (k, c) = next("client connected")?;
    let side = l
        .sides
        .get(l.side_of[k])
        .and_then(Option::as_ref)
        .cloned()
        .ok_or_else(|| Error::msg("no adapter for the incoming connection"))?;
    let local_ip = side.address;
    let mut ctl = Ctl::new(&side, false, opts.timeout)?;
    wait(
        c.accept(&*ctl.qp, 0, 0, &[], None),
        opts.timeout,
        "cannot accept the control connection",
    )?;
    let peer = c.peer_address().ok();
    ctl.connector = Some(c);
    let result = (|| {
        let cycle = ctl.preamble()?;
        ctl.hand_shake(&zero_dest(), "handshake before the data connection")?;
        let (_, c) = next("data connection (the second rdma_cm connection)")?;
        let asked = c.connection_data().unwrap_or_default();
        let read_test = opts.test.is_read();
        if read_test != (asked.outbound_read_limit > 0) {
            let _ = c.reject(b"test mismatch");
            return Err(Error::msg(format!(
                "the client asked for {} RDMA reads, but this server runs {}: pass the same test to both",
                asked.outbound_read_limit,
                opts.test.name()
            )));
        }
        let mut d = Data::new(&side, opts, cycle)?;
        let limit = if read_test {
            asked
                .inbound_read_limit
                .max(asked.outbound_read_limit)
                .min(side.info.max_inbound_read_limit)
                .max(1)
        } else {
            0
        };
        // With RTR (an nd client) the accept completes with the initiator's first FPDU, sent
        // after its complete-connect: wait for it only after the next handshakes.
        let accepted = c.accept(&*d.qp, limit, limit, &[], None);
        d.read_limit = limit;
        let qpn = c.local_address().map_or(0, |a| a.port());
        d.connector = Some(c);
        let out = (|| {
            ctl.hand_shake(&zero_dest(), "handshake after the data connection")?;
            let my = d.dest(opts.test, local_ip, qpn);
            let mut rem = zero_dest();
            for _ in 0..dest_handshakes(opts.test) {
                rem = ctl.hand_shake(&my, "dest handshake")?;
            }
            // By now the client has completed its connect: a perftest client (no RTR) was
            // accepted with our Reply, an nd client's RTR is on its way. write_lat's server
            // writes first, which needs the accept done.
            wait(accepted, opts.timeout, "the data connection's accept")
                .map_err(|e| Error::msg(format!("the data connection failed: {e}")))?;
            let mut run = ServeRun {
                technology: side.info.rdma_technology,
                peer,
                rows: Vec::new(),
                remote_report: false,
            };
            match opts.test {
                Test::WriteBw | Test::ReadBw => {
                    // The client measures; we wait for its end-of-test handshake.
                    ctl.hand_shake(&my, "the client's end-of-test handshake")?;
                    let r = xchg_report(&mut ctl, None, gbits)?;
                    run.rows.push(Row::Bw(r));
                    run.remote_report = true;
                }
                Test::SendBw => {
                    check_dest(opts.test, &rem)?;
                    run.rows.push(Row::Bw(server_send_bw(opts, &mut d, &rem)?));
                }
                Test::ReadLat => {}
                Test::WriteLat | Test::SendLat => {
                    check_dest(opts.test, &rem)?;
                    run.rows.push(Row::Lat(lat(opts, &mut d, &rem, false)?));
                }
            }
            if opts.test != Test::WriteLat {
                ctl.hand_shake(&my, "closing handshake")?;
            }
            Ok(run)
        })();
        d.close();
        out
    })();
    ctl.close();
    for extra in l.rx.try_iter() {
        let _ = extra.1.reject(b"busy");
    }
    for x in l.listeners {
        let _ = x.close().wait_timeout(Duration::from_secs(2));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dest_matches_the_captured_bytes() {
        // The client's dest of a siw↔siw ib_write_bw -R run.
        let wire = "000000000000000100000003005e624792ae4c0000000000000055f817c5b000525400123456000000000000000000000000000000000000";
        let b: Vec<u8> = (0..wire.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&wire[i..i + 2], 16).unwrap())
            .collect();
        let d = Dest::decode(&b).unwrap();
        assert_eq!(d.out_reads, 1);
        assert_eq!(d.qpn, 3);
        assert_eq!(d.psn, 0x5e6247);
        assert_eq!(d.rkey, 0x92ae4c00);
        assert_eq!(d.vaddr, 0x55f8_17c5_b000);
        assert_eq!(&d.gid[..6], &[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(d.encode().to_vec(), b);
        assert_eq!(version_of(b"6.06\0\0\0\0\0\0\0\0\0\0\0\0"), "6.06");
        let g = gid_of("10.0.2.100".parse().unwrap());
        assert_eq!(&g[..6], &[2, 0, 10, 0, 2, 100]);
    }
}
