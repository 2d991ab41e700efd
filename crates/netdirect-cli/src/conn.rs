//! One side of a connection: adapter, PD, CQ, QP, a data buffer and a receive ring, plus the
//! control protocol of [`crate::proto`] (credits, control messages) on top.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::Args;

use netdirect::{Adapter, Buffer, Cq, Mr, OpenParameters, Pd, Qp, QpConfig};
use netdirect_soft::transport::EngineConfig;
use netdirect_types::{
    AdapterInfo, MrFlags, OpFlags, OperationType, RemoteToken, Sge, Status, Version,
};

use crate::endpoint::{Endpoint, REMOTE_ACCESS, Shape};
use crate::error::{Context, Error, Result, wait};
use crate::proto::{CTRL_LEN, Ctrl, Kind};
pub use crate::provider::ProviderName;

/// Queue sizes of a QP whose two queues share one polled CQ (no notification callback).
#[derive(Debug, Clone, Copy)]
pub struct QueueSizes {
    /// Receive queue depth.
    pub receive: usize,
    /// Initiator queue depth.
    pub initiator: usize,
    /// SGEs per initiator request.
    pub initiator_sge: usize,
    /// Inline data size.
    pub inline: u32,
    /// CQ entries beyond the two queues' depths.
    pub spare: usize,
}

/// Creates a CQ for both queues of a QP, and the QP on it, whose receives take up to
/// `receive_sge` entries; `what` ("a", "the control", …) names them in errors, which carry the
/// adapter's limits.
pub fn cq_and_qp(
    side: &Side,
    q: QueueSizes,
    receive_sge: u32,
    what: &str,
    timeout: Duration,
) -> Result<(Box<dyn Cq>, Box<dyn Qp>)> {
    let depth = (q.receive + q.initiator + q.spare) as u32;
    let cq = wait(
        side.adapter.create_cq(depth, Arc::new(|_| {}), None),
        timeout,
        &format!("cannot create {what} completion queue of {depth} entries"),
    )?;
    let qp = wait(
        side.pd.create_qp(QpConfig {
            receive_cq: &*cq,
            initiator_cq: &*cq,
            context: 0,
            receive_queue_depth: q.receive as u32,
            initiator_queue_depth: q.initiator as u32,
            max_receive_sge: receive_sge,
            max_initiator_sge: q.initiator_sge as u32,
            inline_data_size: q.inline,
        }),
        timeout,
        &format!(
            "cannot create {what} queue pair (send depth {}, receive depth {}, inline {}; adapter limits {} / {} / {})",
            q.initiator,
            q.receive,
            q.inline,
            side.info.max_initiator_queue_depth,
            side.info.max_receive_queue_depth,
            side.info.max_inline_data_size
        ),
    )?;
    Ok((cq, qp))
}

/// MPA negotiation flags of the commands that connect (the NDK has no per-connection knob for
/// these; they are the soft provider's settings). Unset ones take [`MpaArgs`]' defaults.
#[derive(Args, Debug, Clone, Copy, Default)]
#[command(next_help_heading = "MPA options")]
pub struct MpaFlags {
    /// MPA revision to offer (initiator) or answer at most (responder): 1 or 2 [default: 2].
    /// Revision 1 carries no IRD/ORD, so Linux peers cannot issue RDMA reads over it.
    #[arg(long = "mpa-rev", value_name = "REV", value_parser = clap::value_parser!(u8).range(1..=2))]
    pub revision: Option<u8>,
    /// Ask the peer for CRC32c on every FPDU (either side may ask; the peer must honour it).
    #[arg(long = "mpa-crc")]
    pub crc: bool,
    /// Offer RFC 6581 peer-to-peer mode (a zero-length Write or Read as ready-to-receive)
    /// when connecting [default: true]. Needed by an `nd` server to see a client's connect
    /// completed before the client speaks; Linux rdma_cm (rping, perftest) never offers it. As
    /// responder, a peer's offer is always answered.
    #[arg(long = "mpa-p2p", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub peer_to_peer: Option<bool>,
    /// Ask the peer for MPA markers (RFC 5044 §5) in what it sends us. Linux siw refuses them
    /// (it rejects the connection).
    #[arg(long = "mpa-markers")]
    pub markers: bool,
    /// The provider to run over: `soft` (netdirect's software iWARP RNIC over TCP) or `verbs`
    /// (RDMA devices through rdma-core) [default: soft].
    #[arg(
        long = "provider",
        value_enum,
        value_name = "NAME",
        help_heading = "Provider options"
    )]
    pub provider: Option<ProviderName>,
    /// Progress threads per adapter (the soft provider's reactors; connections are spread over
    /// them when made) [default: 1]. One is enough when the consumer polls (progress then runs
    /// on its thread); more spread the progress nobody polls for (targets of reads and writes)
    /// over cores.
    #[arg(long = "progress-threads", value_name = "N", help_heading = "Provider options", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub progress_threads: Option<u16>,
    /// Print the counters of the run (each adapter's, from open to exit) on stderr when the
    /// command ends (`nd stat` documents them).
    #[arg(long = "counters", help_heading = "Provider options")]
    pub counters: bool,
    /// Do not publish this process's counters for `nd stat` (see `nd stat --help`).
    #[arg(long = "no-publish-counters", help_heading = "Provider options")]
    pub no_publish_counters: bool,
}

impl MpaFlags {
    /// The engine settings these flags ask for.
    pub fn provider(&self) -> ProviderArgs {
        ProviderArgs {
            provider: self.provider.unwrap_or_default(),
            progress_threads: self.progress_threads.unwrap_or(1),
            counters: self.counters,
            no_publish_counters: self.no_publish_counters,
        }
    }
}

/// The same flags before the subcommand (`nd --mpa-crc rping-compat …`, as scripts wrote
/// them when they were global); hidden from help, as they mean nothing to `nd info`/`nd dma`.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct LegacyMpaFlags {
    #[arg(long = "mpa-rev", hide = true, value_parser = clap::value_parser!(u8).range(1..=2))]
    revision: Option<u8>,
    #[arg(long = "mpa-crc", hide = true)]
    crc: bool,
    #[arg(long = "mpa-p2p", hide = true, action = clap::ArgAction::Set)]
    peer_to_peer: Option<bool>,
    #[arg(long = "mpa-markers", hide = true)]
    markers: bool,
}

/// The MPA settings a command runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MpaArgs {
    /// MPA revision (1 or 2).
    pub revision: u8,
    /// Ask for CRC32c.
    pub crc: bool,
    /// Offer peer-to-peer mode.
    pub peer_to_peer: bool,
    /// Ask for markers.
    pub markers: bool,
}

impl Default for MpaArgs {
    fn default() -> Self {
        MpaArgs {
            revision: 2,
            crc: false,
            peer_to_peer: true,
            markers: false,
        }
    }
}

impl MpaFlags {
    /// The settings: these flags, else the ones given before the subcommand, else defaults.
    pub fn resolve(&self, before: &LegacyMpaFlags) -> MpaArgs {
        let d = MpaArgs::default();
        MpaArgs {
            revision: self.revision.or(before.revision).unwrap_or(d.revision),
            crc: self.crc || before.crc,
            peer_to_peer: self
                .peer_to_peer
                .or(before.peer_to_peer)
                .unwrap_or(d.peer_to_peer),
            markers: self.markers || before.markers,
        }
    }
}

impl MpaArgs {
    /// The soft provider's MPA settings these flags ask for.
    pub fn config(&self) -> netdirect_soft::transport::MpaConfig {
        let mut config = netdirect_soft::transport::ndk_mpa_config();
        config.revision = self.revision;
        config.crc = self.crc;
        config.markers = self.markers;
        if !self.peer_to_peer {
            config.peer_to_peer = None;
        }
        config
    }
}

static MPA: OnceLock<MpaArgs> = OnceLock::new();

/// Sets the MPA flags every [`Side::open`] of this process uses (once; later calls are ignored).
pub fn set_mpa(args: MpaArgs) {
    let _ = MPA.set(args);
}

/// The MPA flags this process uses (what [`set_mpa`] set, or the defaults).
pub fn mpa_args() -> MpaArgs {
    MPA.get().copied().unwrap_or_default()
}

/// The soft provider's engine settings of a command that connects ([`MpaFlags::provider`]).
#[derive(Debug, Clone, Copy)]
pub struct ProviderArgs {
    /// The provider every [`Side::open`] opens adapters of.
    pub provider: ProviderName,
    /// Progress threads per adapter.
    pub progress_threads: u16,
    /// Print the run's counter deltas on stderr at the end.
    pub counters: bool,
    /// Do not publish this process's counters for `nd stat`.
    pub no_publish_counters: bool,
}

impl Default for ProviderArgs {
    fn default() -> Self {
        ProviderArgs {
            provider: ProviderName::Soft,
            progress_threads: 1,
            counters: false,
            no_publish_counters: false,
        }
    }
}

impl ProviderArgs {
    /// The soft provider's engine settings these flags ask for (the rest default).
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            progress_threads: usize::from(self.progress_threads),
            publish_counters: !self.no_publish_counters,
            capture: crate::obs::capture(),
            ..EngineConfig::default()
        }
    }
}

static PROVIDER: OnceLock<ProviderArgs> = OnceLock::new();

/// Sets the engine flags every [`Side::open`] of this process uses (once; later calls are
/// ignored).
pub fn set_provider(args: ProviderArgs) {
    let _ = PROVIDER.set(args);
}

/// The engine flags this process uses (what [`set_provider`] set, or the defaults).
pub fn provider_args() -> ProviderArgs {
    PROVIDER.get().copied().unwrap_or_default()
}

/// An open adapter and its protection domain.
pub struct Side {
    /// The adapter.
    pub adapter: Box<dyn Adapter>,
    /// Its PD.
    pub pd: Box<dyn Pd>,
    /// `NDK_ADAPTER_INFO`.
    pub info: AdapterInfo,
    /// The local address it serves.
    pub address: IpAddr,
}

impl Side {
    /// Opens an adapter of the provider `--provider` chose on `address`.
    pub fn open(address: IpAddr, timeout: Duration) -> Result<Side> {
        Side::open_with(provider_args().provider, address, timeout)
    }

    /// Opens an adapter of provider `name` on `address`.
    pub fn open_with(name: ProviderName, address: IpAddr, timeout: Duration) -> Result<Side> {
        let adapter = crate::provider::open(name)?
            .open_adapter(OpenParameters {
                address,
                version: Version::V1_2,
            })
            .context(|| format!("cannot open an adapter on {address} (provider {name})"))?;
        crate::stat::track(&*adapter, &address.to_string());
        let pd = wait(
            adapter.create_pd(),
            timeout,
            "cannot create a protection domain",
        )?;
        let info = adapter.query_info();
        Ok(Side {
            adapter,
            pd,
            info,
            address,
        })
    }
}

/// Queue sizes and buffer layout of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Octets of each half (inbox, outbox) of the data buffer.
    pub half: usize,
    /// Octets of one receive slot.
    pub slot: usize,
    /// Receives kept posted.
    pub rx_depth: usize,
    /// Initiator requests outstanding at most (data plus control).
    pub tx_depth: usize,
    /// Inline size of the QP (at least a control message).
    pub inline: u32,
    /// Data requests of at most this many octets are posted inline (`-I`).
    pub data_inline: u32,
    /// IRD and ORD asked for.
    pub read_limit: u32,
    /// Scatter/gather entries per Send or write (the ND tools' `-n`); reads use one.
    pub sge: usize,
    /// Receives on a shared receive queue (`--use-srq`).
    pub srq: bool,
    /// Non-zero: the receive slots keep only this many octets each and share the rest
    /// ([`Shape::private_head`]).
    pub private_head: usize,
}

/// Initiator requests reserved for control messages on top of the data window.
pub const CTRL_TX: usize = 16;
/// Peer receives only credit messages may use.
pub const CREDIT_RESERVE: u64 = 3;

/// Idle turns (each gives the CPU away once) after which a side returns the credits it owes
/// without waiting for a full batch.
pub const FLUSH_AFTER_IDLE_TURNS: u32 = 32;
/// The fewest receives a side posts.
pub const MIN_RX: usize = 8;
/// perftest's cycle buffer (its default, the page size): a bandwidth test's messages go to
/// the same octets when they are at least this long, as perftest's do, so that the buffers
/// stay in cache as a TCP benchmark's single buffer does.
pub const CYCLE_BUFFER: usize = 4096;
const RX_TAG: u64 = 1 << 63;
const CTRL_TAG: u64 = 1 << 62;

/// The peer's buffer (its inbox) as advertised in `Hello`/`HelloAck`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Remote {
    /// Inbox address.
    pub address: u64,
    /// Inbox length; the outbox follows it.
    pub len: u64,
    /// Token.
    pub token: u32,
}

/// What came off the CQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A data request posted with this context completed.
    TxDone(u64),
    /// A control message.
    Ctrl(Ctrl),
    /// A data message in receive slot `slot`, `len` octets: call [`Conn::repost`] when done.
    Data {
        /// Receive slot.
        slot: usize,
        /// Octets received.
        len: usize,
    },
}

/// A connection with nd's control protocol: an [`Endpoint`] whose data buffer is inbox then
/// outbox, receive credits, control messages.
pub struct Conn {
    /// The CQ, QP, buffers and connector.
    pub ep: Endpoint,
    /// Layout.
    pub layout: Layout,
    /// The peer's buffer.
    pub remote: Remote,
    ctrl_out: usize,
    backlog: VecDeque<Event>,
    /// Sends made to the peer (each consumes one of its receives).
    pub sent: u64,
    /// Sends the peer can take: its receive depth plus the credits it returned.
    pub credit_limit: u64,
    peer_rx_depth: u64,
    consumed: u64,
    /// A receive other than a `Credit` was consumed since credits last went out: an idle
    /// side returns them at once ([`Conn::flush_credits`]).
    credit_due: bool,
    /// Idle turns since the last receive was consumed (see [`Conn::flush_credits`]).
    idle_turns: u32,
    credited: u64,
    /// Mark the next data requests `DEFER`: the caller posts more right after and ends the
    /// batch with one posted while this is false.
    pub defer: bool,
}

impl std::ops::Deref for Conn {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.ep
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Endpoint {
        &mut self.ep
    }
}

impl Conn {
    /// Creates the CQ, QP, buffers and regions, and posts the receives.
    pub fn new(side: &Side, layout: Layout, timeout: Duration) -> Result<Conn> {
        let ep = Endpoint::new(
            side,
            Shape {
                queues: QueueSizes {
                    receive: layout.rx_depth,
                    initiator: layout.tx_depth + CTRL_TX,
                    initiator_sge: layout.sge.max(1),
                    inline: layout.inline,
                    spare: 16,
                },
                data_len: 2 * layout.half,
                data_access: REMOTE_ACCESS,
                slot: layout.slot,
                slots: layout.rx_depth,
                what: "a",
                srq: layout.srq,
                private_head: layout.private_head,
            },
            timeout,
        )?;
        ep.data
            .with_mut(|b| crate::proto::fill_pattern(&mut b[layout.half..]));
        // The inbox and the receive ring are written now, at set-up, as perftest writes its
        // buffers: a send-bw target's ring of whole slots (up to 64 MiB) was first touched by
        // the placements themselves, about 17,000 page faults inside the measurement.
        ep.data.with_mut(|b| b[..layout.half].fill(0));
        ep.rx.with_mut(|b| b.fill(0));
        let mut conn = Conn {
            ep,
            layout,
            remote: Remote::default(),
            ctrl_out: 0,
            backlog: VecDeque::new(),
            sent: 0,
            credit_limit: 1 + CREDIT_RESERVE,
            peer_rx_depth: 0,
            consumed: 0,
            credit_due: false,
            idle_turns: 0,
            credited: 0,
            defer: false,
        };
        for slot in 0..layout.rx_depth {
            conn.ep.post_receive(RX_TAG | slot as u64, slot)?;
        }
        Ok(conn)
    }

    /// Our advertisement: inbox address, length, token, receive depth.
    pub fn hello(&self, kind: Kind) -> Ctrl {
        Ctrl {
            kind,
            a: self.data.address(),
            b: self.layout.half as u64,
            c: u64::from(self.data_mr.remote_token().0),
            d: self.layout.rx_depth as u64,
        }
    }

    /// Takes the peer's advertisement.
    pub fn set_remote(&mut self, c: &Ctrl) {
        self.remote = Remote {
            address: c.a,
            len: c.b,
            token: c.c as u32,
        };
        self.peer_rx_depth = c.d;
        self.credit_limit = self.credit_limit.max(c.d);
    }

    /// Message slots of `size` octets that the bandwidth tests cycle through: perftest's cycle
    /// buffer ([`CYCLE_BUFFER`]: messages from a page up all use offset 0, smaller ones step
    /// through one page), within both our buffer halves and the peer's.
    pub fn slots(&self, size: usize) -> u64 {
        let mut len = self.layout.half.min(size.max(CYCLE_BUFFER));
        if self.remote.len != 0 {
            len = len.min(self.remote.len as usize);
        }
        (len / size.max(1)).max(1) as u64
    }

    /// The peer's inbox address at `offset`.
    pub fn remote_inbox(&self, offset: usize) -> u64 {
        self.remote.address + offset as u64
    }

    /// The peer's outbox address at `offset`.
    pub fn remote_outbox(&self, offset: usize) -> u64 {
        self.remote.address + self.remote.len + offset as u64
    }

    /// The peer's token.
    pub fn remote_token(&self) -> RemoteToken {
        RemoteToken(self.remote.token)
    }

    /// An SGE over our inbox at `offset`.
    pub fn inbox_sge(&self, offset: usize, len: usize) -> Sge {
        Sge::new(
            self.data.address() + offset as u64,
            len as u32,
            self.data_mr.local_token(),
        )
    }

    /// An SGE over our outbox at `offset`.
    pub fn outbox_sge(&self, offset: usize, len: usize) -> Sge {
        self.inbox_sge(self.layout.half + offset, len)
    }

    /// Our outbox from `offset`, `len` octets, as up to `layout.sge` contiguous SGEs.
    fn outbox_sgl(&self, offset: usize, len: usize) -> Vec<Sge> {
        let n = self.layout.sge.clamp(1, len.max(1));
        let piece = len.div_ceil(n).max(1);
        (0..len)
            .step_by(piece)
            .map(|at| self.outbox_sge(offset + at, piece.min(len - at)))
            .collect()
    }

    /// Whether the peer has a receive for one more Send (keeping [`CREDIT_RESERVE`] receives
    /// for credit messages, so that credits can always flow).
    pub fn can_send(&self) -> bool {
        self.sent + CREDIT_RESERVE < self.credit_limit
    }

    /// Flags of the next data request: `DEFER` while the caller has said more follow
    /// ([`Conn::defer`]), so that a batch of posts is handed over at once (NDK §7.1).
    fn data_flags(&self) -> OpFlags {
        if self.defer {
            OpFlags::DEFER
        } else {
            OpFlags::empty()
        }
    }

    /// Posts a data Send from the outbox (inline when it fits the inline size).
    pub fn send_data(&mut self, context: u64, len: usize) -> Result<()> {
        let flags = self.data_flags();
        let r = if len as u32 <= self.layout.data_inline && len > 0 {
            let mut copy = OutboxCopy::default();
            let bytes = copy.take(&self.data, self.layout.half, len)?;
            self.qp.initiator().send_inline(context, &[bytes], flags)
        } else {
            let sgl = self.outbox_sgl(0, len);
            self.qp.initiator().send(context, &sgl, flags)
        };
        r.context(|| format!("cannot post a send of {len} octets"))?;
        self.sent += 1;
        self.ep.tx_out += 1;
        Ok(())
    }

    /// Posts an RDMA Write of `len` octets from our outbox at `offset` to the peer's inbox at
    /// `offset`.
    pub fn write_data(&mut self, context: u64, offset: usize, len: usize) -> Result<()> {
        let flags = self.data_flags();
        let remote = self.remote_inbox(offset);
        let token = self.remote_token();
        let r = if len as u32 <= self.layout.data_inline && len > 0 {
            let mut copy = OutboxCopy::default();
            let bytes = copy.take(&self.data, self.layout.half + offset, len)?;
            self.qp
                .initiator()
                .write_inline(context, &[bytes], remote, token, flags)
        } else {
            let sgl = self.outbox_sgl(offset, len);
            self.qp
                .initiator()
                .write(context, &sgl, remote, token, flags)
        };
        r.context(|| format!("cannot post an RDMA write of {len} octets"))?;
        self.ep.tx_out += 1;
        Ok(())
    }

    /// Posts an RDMA Read of `len` octets from the peer's outbox at `offset` into our inbox at
    /// `offset`.
    pub fn read_data(&mut self, context: u64, offset: usize, len: usize) -> Result<()> {
        let flags = self.data_flags();
        let sge = self.inbox_sge(offset, len);
        let remote = self.remote_outbox(offset);
        let token = self.remote_token();
        self.qp
            .initiator()
            .read(context, &[sge], remote, token, flags)
            .context(|| format!("cannot post an RDMA read of {len} octets"))?;
        self.ep.tx_out += 1;
        Ok(())
    }

    /// Sends a control message, waiting for a credit and queue room first.
    pub fn send_ctrl(&mut self, c: Ctrl) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        let reserve = if c.kind == Kind::Credit {
            0
        } else {
            CREDIT_RESERVE
        };
        while self.sent + reserve >= self.credit_limit || self.ctrl_out >= CTRL_TX {
            match self.poll_one()? {
                Some(e) => self.backlog.push_back(e),
                None => self.idle(deadline, "a receive credit from the peer")?,
            }
        }
        self.qp
            .initiator()
            .send_inline(CTRL_TAG, &[&c.encode()], OpFlags::empty())
            .context(|| format!("cannot send the {:?} control message", c.kind))?;
        self.sent += 1;
        self.ctrl_out += 1;
        Ok(())
    }

    /// Reposts receive slot `slot` after a [`Event::Data`], returning credits when due.
    pub fn repost(&mut self, slot: usize) -> Result<()> {
        self.credit_due = true;
        self.repost_slot(slot)
    }

    /// Reposts `slot`; credits go out in batches of a quarter of the ring.
    fn repost_slot(&mut self, slot: usize) -> Result<()> {
        self.ep.post_receive(RX_TAG | slot as u64, slot)?;
        self.consumed += 1;
        self.idle_turns = 0;
        if self.consumed - self.credited >= (self.layout.rx_depth as u64 / 4).max(1) {
            self.send_credit()?;
        }
        Ok(())
    }

    fn send_credit(&mut self) -> Result<()> {
        self.credited = self.consumed;
        self.credit_due = false;
        self.send_ctrl(Ctrl::new(Kind::Credit, self.consumed, 0))
    }

    /// Called on each idle turn: once this side has idled [`FLUSH_AFTER_IDLE_TURNS`] turns
    /// in a row, returns the credits still owed. Batched credits could otherwise deadlock two
    /// sides that both wait, each holding back less than a batch of the other's credits while
    /// it waits for its own. Only a side that has gone quiet flushes, so a stream of messages
    /// still gets its credits in batches; and consuming a `Credit` alone does not make credits
    /// due, so two idle sides do not trade credits for credits.
    pub fn flush_credits(&mut self) -> Result<()> {
        self.idle_turns = self.idle_turns.saturating_add(1);
        if self.idle_turns >= FLUSH_AFTER_IDLE_TURNS
            && self.credit_due
            && self.consumed > self.credited
        {
            self.send_credit()?;
        }
        Ok(())
    }

    /// Waits a little for the next completion (see [`Endpoint::idle`]), after returning the
    /// credits owed: a side that waits never holds back what its peer may wait for.
    pub fn idle(&mut self, deadline: Instant, what: &str) -> Result<()> {
        if self.ep.events {
            return self.sleep(deadline, what);
        }
        self.flush_credits()?;
        self.ep.idle(deadline, what)
    }

    /// Sleeps on the CQ's notification until the next completion (or the deadline), `-e` or
    /// not, after returning the credits owed.
    pub fn sleep(&mut self, deadline: Instant, what: &str) -> Result<()> {
        // About to block on a notification: nothing owed may wait for that.
        self.idle_turns = FLUSH_AFTER_IDLE_TURNS;
        self.flush_credits()?;
        self.ep.sleep(deadline, what)
    }

    /// The next event, if one is there.
    pub fn try_next(&mut self) -> Result<Option<Event>> {
        if let Some(e) = self.backlog.pop_front() {
            return Ok(Some(e));
        }
        self.poll_one()
    }

    /// The next event, waiting at most the timeout; `what` names what we wait for.
    pub fn next(&mut self, what: &str) -> Result<Event> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(e) = self.try_next()? {
                return Ok(e);
            }
            self.idle(deadline, what)?;
        }
    }

    /// Waits for a control message of type `kind`; data requests completing meanwhile are
    /// accounted for, anything else is a protocol error.
    pub fn expect(&mut self, kind: Kind) -> Result<Ctrl> {
        loop {
            match self.next(&format!("the peer's {kind:?} message"))? {
                Event::Ctrl(c) if c.kind == kind => return Ok(c),
                Event::TxDone(_) => {}
                other => {
                    return Err(Error::msg(format!(
                        "protocol error: waiting for {kind:?}, got {other:?}"
                    )));
                }
            }
        }
    }

    /// Waits for the next control message; data requests completing meanwhile are accounted
    /// for, data messages are a protocol error.
    pub fn next_ctrl(&mut self, what: &str) -> Result<Ctrl> {
        loop {
            match self.next(what)? {
                Event::Ctrl(c) => return Ok(c),
                Event::TxDone(_) => {}
                other => {
                    return Err(Error::msg(format!(
                        "protocol error: waiting for {what}, got {other:?}"
                    )));
                }
            }
        }
    }

    /// Makes room for a request: while `max_out` or more data requests are outstanding, reaps
    /// finished ones (waiting if none has finished); other events are kept for
    /// [`Conn::try_next`]. Below `max_out` it does nothing: a poll of the CQ is also a receive
    /// pass over the socket (a system call), which a ping-pong's reply must not wait for; the
    /// completions are reaped by the next [`Conn::try_next`] instead.
    pub fn reap(&mut self, max_out: usize) -> Result<()> {
        if self.tx_out < max_out {
            return Ok(());
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.poll_one()? {
                Some(Event::TxDone(_)) => continue,
                Some(other) => self.backlog.push_back(other),
                None if self.tx_out >= max_out => {
                    self.idle(deadline, "requests to complete")?;
                }
                None => return Ok(()),
            }
        }
    }

    /// Waits until every data request has completed.
    pub fn drain(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        while self.tx_out > 0 {
            match self.poll_one()? {
                Some(Event::TxDone(_)) => {}
                Some(other) => self.backlog.push_back(other),
                None => self.idle(deadline, "outstanding requests to complete")?,
            }
            if self.backlog.len() > 4096 {
                return Err(Error::msg("protocol error: too many unexpected messages"));
            }
        }
        Ok(())
    }

    #[inline]
    fn poll_one(&mut self) -> Result<Option<Event>> {
        loop {
            let Some(c) = self.ep.try_next("the next completion")? else {
                return Ok(None);
            };
            if c.request_context & RX_TAG != 0 {
                let slot = (c.request_context & !RX_TAG) as usize;
                let len = c.bytes_transferred as usize;
                if len == CTRL_LEN {
                    let mut m = [0u8; CTRL_LEN];
                    self.ep.read_slot(slot, &mut m)?;
                    if let Some(ctrl) = Ctrl::decode(&m) {
                        // Nothing follows a Bye, and the peer may be gone already: its slot
                        // is neither reposted nor credited.
                        match ctrl.kind {
                            Kind::Bye => {}
                            Kind::Credit => self.repost_slot(slot)?,
                            _ => self.repost(slot)?,
                        }
                        if ctrl.kind == Kind::Credit {
                            self.credit_limit = self.credit_limit.max(self.peer_rx_depth + ctrl.a);
                            continue;
                        }
                        return Ok(Some(Event::Ctrl(ctrl)));
                    }
                }
                return Ok(Some(Event::Data { slot, len }));
            }
            if c.request_context == CTRL_TAG {
                self.ctrl_out -= 1;
                continue;
            }
            self.ep.tx_out = self.ep.tx_out.saturating_sub(1);
            return Ok(Some(Event::TxDone(c.request_context)));
        }
    }

    /// Disconnects (best effort, bounded by the timeout) and drops everything, after the control
    /// messages already posted have gone out.
    pub fn close(mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.ctrl_out > 0 && Instant::now() < deadline {
            match self.poll_one() {
                Ok(Some(e)) => self.backlog.push_back(e),
                Ok(None) => std::thread::yield_now(),
                Err(_) => break,
            }
        }
        let within = self.timeout.min(Duration::from_secs(5));
        self.ep.close(within);
    }
}

/// A copy of the octets of an inline post: on the stack up to 256 octets (no allocation per
/// post). A copy, not the buffer itself: an inline post may run a progress pass that places
/// arrivals into that very buffer, which the buffer's read lock would then block.
struct OutboxCopy {
    small: [u8; 256],
    large: Vec<u8>,
}

impl Default for OutboxCopy {
    fn default() -> Self {
        OutboxCopy {
            small: [0; 256],
            large: Vec::new(),
        }
    }
}

impl OutboxCopy {
    /// Copies `len` octets of `data` at `at`.
    fn take(&mut self, data: &Buffer, at: usize, len: usize) -> Result<&[u8]> {
        let bytes = if len <= self.small.len() {
            &mut self.small[..len]
        } else {
            self.large.resize(len, 0);
            &mut self.large[..]
        };
        data.read_at(at, bytes)
            .map_err(|e| Error::msg(e.to_string()))?;
        Ok(bytes)
    }
}

/// Every address of this host an adapter can be opened on, loopback first, as `ibv_devinfo`
/// lists every device: up interfaces' IPv4 and global/unique-local IPv6 addresses (link-local
/// IPv6 needs a scope id the NDK address has no room for).
pub fn local_addresses() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| match ip {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect();
    ips.sort_by_key(|ip| (!ip.is_loopback(), ip.is_ipv6(), *ip));
    ips.dedup();
    if ips.is_empty() {
        ips = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
    }
    ips
}

/// The addresses a server listens on: `bind` itself; for a wildcard (`0.0.0.0`: every local
/// IPv4 address; `::`: every local address of both families, as a dual-stack socket would);
/// nothing given: every local address, as perftest (which binds `INADDR_ANY`).
pub fn listen_addresses(bind: Option<IpAddr>) -> Vec<IpAddr> {
    match bind {
        Some(IpAddr::V4(v4)) if v4.is_unspecified() => local_addresses()
            .into_iter()
            .filter(IpAddr::is_ipv4)
            .collect(),
        Some(IpAddr::V6(v6)) if v6.is_unspecified() => local_addresses(),
        Some(ip) => vec![ip],
        None => local_addresses(),
    }
}

/// The local address to reach `remote` from: loopback for loopback, else routing's choice.
pub fn local_for(remote: IpAddr) -> Result<IpAddr> {
    if remote.is_loopback() {
        return Ok(remote);
    }
    let any: IpAddr = if remote.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    // A UDP connect only looks the route up; it sends nothing.
    std::net::UdpSocket::bind((any, 0))
        .and_then(|s| s.connect((remote, 9)).map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .map_err(|e| {
            Error::status(
                format!("no local address routes to {remote} ({e})"),
                Status::HOST_UNREACHABLE,
            )
        })
}

/// [`Conn::flush_credits`] for each connection: one idle turn of a side with several QPs.
pub fn flush_credits(conns: &mut [Conn]) -> Result<()> {
    conns.iter_mut().try_for_each(Conn::flush_credits)
}

/// How long a busy-polling loop spins between two `sched_yield`s. A yield per empty turn cost
/// an 8-byte ping-pong about a sixth of its latency (a system call per turn, and the CPU
/// handed to whatever else is runnable); never yielding would let two spinners that share a
/// CPU (a loaded machine, tests run in parallel) hold it a whole time slice each.
const SPIN_BETWEEN_YIELDS: Duration = Duration::from_micros(50);

/// Idle turns per look at the clock (for the yield and the deadline).
const CLOCK_EVERY: u32 = 8;

/// Whether this machine has a single CPU online: then the two ends of a run share it, and a
/// spinner yields on every turn so that the other end runs at once.
fn single_cpu() -> bool {
    // The machine's CPUs: the process's own mask may be narrower (taskset).
    netdma::online_cpus() == 1
}

/// One idle turn of a busy-polling loop: returns at once to poll again, as perftest's poll
/// loops do, and gives the CPU away every 50 us (`SPIN_BETWEEN_YIELDS`; every turn on a
/// single-CPU machine), so a thread that shares this CPU (the other end of an in-process run,
/// a progress thread) still runs; an error once `deadline` has passed.
///
/// No `pause` between polls. Likely why it matters (not verified: the host's exit counters
/// are not visible): in a VM, `pause`s with little between them (a poll that finds the
/// connection's lock taken makes no system call) are what pause-loop exiting looks for, and
/// the hypervisor then takes the CPU away. Measured here (2 vCPUs, `nd
/// write-bw` pinned, 22 paired runs of 3 s, 1 MiB and 64 KiB): the loopback data path's slow
/// mode (segments 40 µs apart instead of 10) held 41 % of 250 ms samples with a `pause` per
/// turn and 16 % without.
pub fn idle(deadline: Instant, what: &str) -> Result<()> {
    thread_local! {
        static LAST_YIELD: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
        static TURN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    // The clock every `CLOCK_EVERY` turns: a turn is at least a poll's system call, and a
    // clock read per turn was a tenth of a busy-polling consumer's own time (in a VM).
    let turn = TURN.get().wrapping_add(1);
    TURN.set(turn);
    if turn % CLOCK_EVERY != 0 && !single_cpu() {
        return Ok(());
    }
    let now = Instant::now();
    let due = LAST_YIELD
        .get()
        .is_none_or(|t| now.duration_since(t) >= SPIN_BETWEEN_YIELDS);
    if due || single_cpu() {
        std::thread::yield_now();
        LAST_YIELD.set(Some(now));
    }
    if now > deadline {
        return Err(Error::status(
            format!("timed out waiting for {what}"),
            Status::IO_TIMEOUT,
        ));
    }
    Ok(())
}

pub(crate) fn register(
    side: &Side,
    buffer: &Buffer,
    flags: MrFlags,
    timeout: Duration,
) -> Result<Box<dyn Mr>> {
    let mr = wait(
        side.pd.create_mr(false),
        timeout,
        "cannot create a memory region",
    )?;
    wait(
        mr.register(buffer, 0, buffer.len(), flags),
        timeout,
        &format!("cannot register {} octets", buffer.len()),
    )?;
    Ok(mr)
}

pub(crate) fn op_name(op: OperationType) -> &'static str {
    match op {
        OperationType::Send => "send",
        OperationType::Read => "RDMA read",
        OperationType::Write => "RDMA write",
        OperationType::Receive | OperationType::ReceiveAndInvalidate => "receive",
        _ => "queue pair",
    }
}
