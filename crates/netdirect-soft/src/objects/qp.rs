//! `NDK_QP`: the queue pair, its two queues, and its host for the transport.
//!
//! # Posting (consumer threads)
//!
//! A post is checked completely before it is queued, so a request that fails inline leaves no
//! trace (NDK §7.1). The checks and their statuses, in order (§10.1):
//!
//! | check | status |
//! |---|---|
//! | flags not valid for the operation | `STATUS_INVALID_PARAMETER` |
//! | an MR or MW of another adapter, or of another PD than the QP's (bind, fast register, invalidate; §10.28) | `STATUS_INVALID_PARAMETER` |
//! | QP not connected (initiator requests), or one of its CQs failed (both queues, §10.5) | `STATUS_CONNECTION_INVALID` |
//! | more SGEs than the QP's limit (reads: `MaxReadRequestSge`) | `STATUS_DATA_OVERRUN` |
//! | more bytes than `MaxTransferLength`, or inline bytes over the QP's inline size | `STATUS_BUFFER_OVERFLOW` |
//! | queue full (outstanding requests = depth) | `STATUS_NO_MORE_ENTRIES` |
//! | an SGE's token, rights or range (memory table) | `STATUS_ACCESS_VIOLATION` |
//! | a bind or fast register the memory table refuses | its status (e.g. `STATUS_ACCESS_VIOLATION` for remote rights on a non-remote fast-register MR) |
//!
//! Decisions:
//! * `NDK_OP_FLAG_DEFER` is accepted and ignored: every request is handed to the engine at once
//!   (the flag is a permission, §7.1), so nothing deferred can be lost at flush or close.
//! * `NDK_OP_FLAG_INLINE` on `send`/`write` copies the SGEs' bytes at post time (the buffers may
//!   be reused when the call returns); the SGEs are still checked, since safe Rust cannot read
//!   memory that is not registered. [`QpInitiator::send_inline`] takes plain slices.
//! * "Outstanding" (§10.4): a request occupies its queue slot until its completion is queued; a
//!   `SILENT_SUCCESS` request until a later completion of its queue retires it, as verbs do.
//! * Receives may be posted before the connection; after a flush they complete
//!   `STATUS_CANCELLED` at once. The queue's "flushed" mark is set under its lock by the flush
//!   that drains it, so a receive posted while the engine flushes is drained or sees the mark:
//!   every receive posted `Ok` completes, and in posting order. A flush is final, also before
//!   any connection: the QP is in the error state, and a connect or accept with it fails inline
//!   `STATUS_CONNECTION_INVALID` (initiator posts fail so already: no connection). Flushing an
//!   SRQ-attached QP leaves the SRQ's receives alone (§10.14): they belong to every attached QP.
//! * A failed CQ (overflow) makes the QP unusable (§7.3, §10.5): posts fail inline
//!   `STATUS_CONNECTION_INVALID`, and the first completion the CQ refuses flushes the QP.
//! * Bind and fast register are checked against the memory table when posted (so the NDK's
//!   inline statuses are inline). When the window or region is free they take effect at once,
//!   so requests posted right after them may use the new registration (a region only becomes
//!   valid early, never late), and complete in send-queue order; behind a queued invalidate of
//!   the same object they are carried out in queue order. Either way the remote token is
//!   readable as soon as the post returns (§7.9).
//! * `RDMA_READ_LOCAL_INVALIDATE` invalidates the first SGE's token when the read succeeds,
//!   silent success or not (the stream does it when the last Read Response arrives); if that
//!   token cannot be invalidated (not a fast-registered region), the read completes
//!   `STATUS_INVALID_DEVICE_REQUEST`, silent or not, and the QP goes to error (§10.3).
//! * After a peer's close, or a Terminate either side sent, the disconnect callback runs;
//!   nothing is flushed because of it (§7.7). Receives cancelled after a Terminate carry it in
//!   `provider_error_code`, like the initiator requests.
//!
//! # Engine side (whichever thread drives the connection)
//!
//! [`SoftHost`] is the QP as the transport sees it, called under the connection's lock by the
//! progress thread or, with inline progress, by a consumer thread posting or polling. It owns
//! the records of requests in flight (their leases keep every region they touch alive), turns
//! the engine's work completions into NDK completions on the QP's CQs, scatters inbound data
//! into receive buffers and regions, and carries out local operations. Locks it takes per completion: the CQ ring's; per receive
//! taken: the receive queue's (or SRQ's).

use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use netdirect::{
    Buffer, DisconnectEvent, DisconnectEventEx, InvalidateTarget, Mr, Mw, Object, Qp, QpInitiator,
    QpReceiver, Request,
};
use netdirect_proto::stream::{
    Access, Dest, Event, Host, Payload, PostFlags, Request as WorkRequest, TaggedError,
    WorkCompletion, WorkKind,
};
use netdirect_types::{
    AdapterInfo, Completion, LogicalAddress, OpFlags, OperationType, RemoteToken, Sge, Status,
};
use parking_lot::Mutex;
use smallvec::SmallVec;

use super::adapter::AdapterShared;
use super::lifetime::Reference;
use super::mr::SoftMr;
use super::mw::SoftMw;
use super::srq::SrqQueue;
use super::{AdapterId, InPd, ours_in};
use crate::dma::DmaPlacer;
use crate::memory::{Lease, LocalAccess, MemoryObject, MemoryTable, MrId, MwId, PdId, next_token};
use crate::transport::{Connection, QpHost};
use netdirect::counters::{COUNTERS_GUID, Counters, CountersInterface};
use netdirect::{Extension, Guid};

/// A posted receive: its context and the leases on its scatter list.
pub(crate) struct RecvEntry {
    context: u64,
    /// Most receives have one or two segments: no allocation per posted receive for those.
    sges: SmallVec<[Lease; 2]>,
    len: u64,
}

impl RecvEntry {
    pub(crate) fn new(
        memory: &MemoryTable,
        pd: PdId,
        context: u64,
        sges: &[Sge],
        access: LocalAccess,
    ) -> Result<RecvEntry, Status> {
        let mut leases = SmallVec::with_capacity(sges.len());
        let mut len = 0u64;
        for sge in sges {
            leases.push(memory.check_local(pd, sge, access)?);
            len += u64::from(sge.length);
        }
        Ok(RecvEntry {
            context,
            sges: leases,
            len,
        })
    }

    /// Lends the memory at message offset `offset` for up to `len` octets (the part inside
    /// one scatter entry's buffer) to `f`; see [`lend_lease`].
    fn lend<R>(
        &self,
        mut offset: u64,
        len: u64,
        f: impl FnOnce(&mut [&mut [u8]]) -> R,
    ) -> Option<R> {
        for lease in &self.sges {
            if offset >= lease.len() {
                offset -= lease.len();
                continue;
            }
            let n = (lease.len() - offset).min(len);
            return lend_lease(lease, lease.to() + offset, n, f);
        }
        None
    }

    /// Scatters `data` at message offset `offset` (already bounded by the engine).
    fn write(&self, mut offset: u64, mut data: &[u8], placer: Option<&DmaPlacer>) {
        for lease in &self.sges {
            if data.is_empty() {
                return;
            }
            if offset >= lease.len() {
                offset -= lease.len();
                continue;
            }
            let n = (lease.len() - offset).min(data.len() as u64) as usize;
            write_lease(lease, lease.to() + offset, &data[..n], placer);
            data = &data[n..];
            offset = 0;
        }
    }
}

/// Copies `data` to tagged offset `to` of `lease`: on this thread, or through the NetDMA
/// channel when one is configured (falling back to a CPU copy if the channel fails, so that no
/// data is lost). The range is inside the lease by construction.
fn write_lease(lease: &Lease, to: u64, data: &[u8], placer: Option<&DmaPlacer>) {
    match placer {
        None => {
            let _ = lease.write(to, data);
        }
        Some(p) => {
            let mut at = 0;
            let _ = lease.for_each_span_mut(to, data.len() as u64, |piece| {
                let src = &data[at..at + piece.len()];
                if p.copy(src, piece).is_err() {
                    piece.copy_from_slice(src);
                }
                at += piece.len();
            });
        }
    }
}

/// The most pieces one direct read is given.
const MAX_DIRECT_PIECES: usize = 64;

/// Lends `[to, to + len)` of `lease` for writing to `f`, as the pieces of that range which lie
/// in the buffer of its first piece (disjoint, in order; a region over several buffers, or
/// pages mapped out of order, is lent one part at a time). One buffer write lock is held
/// while `f` runs, as for a copy; `None` for an empty or out-of-lease range.
fn lend_lease<R>(
    lease: &Lease,
    to: u64,
    len: u64,
    f: impl FnOnce(&mut [&mut [u8]]) -> R,
) -> Option<R> {
    let mut spans = lease.spans(to, len).ok()?;
    let (buffer, first) = spans.next()?;
    let mut ranges = vec![first];
    for (b, r) in spans {
        let after = ranges.last().is_some_and(|last| r.start >= last.end);
        if !b.ptr_eq(buffer) || !after || ranges.len() == MAX_DIRECT_PIECES {
            break;
        }
        ranges.push(r);
    }
    Some(buffer.with_mut(|bytes| {
        // The ranges are inside the buffer (the region's mapping was checked when it was
        // registered), ascending and disjoint: split them off one after another.
        let mut rest = bytes;
        let mut base = 0;
        let mut pieces: Vec<&mut [u8]> = Vec::with_capacity(ranges.len());
        for r in &ranges {
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(r.start - base);
            let (piece, tail) = tail.split_at_mut(r.len());
            pieces.push(piece);
            rest = tail;
            base = r.end;
        }
        f(&mut pieces)
    }))
}

/// A local operation carried out in send-queue order.
pub(crate) enum LocalOp {
    Bind {
        mw: MwId,
        mr: MrId,
        address: u64,
        length: u64,
        flags: OpFlags,
    },
    FastRegister {
        mr: MrId,
        pages: Vec<LogicalAddress>,
        fbo: u32,
        length: u64,
        base: u64,
        flags: OpFlags,
    },
    Invalidate(MemoryObject),
    /// Already carried out when posted; completes in queue order.
    Done,
}

/// What a send-queue request carries to the engine.
pub(crate) enum WrData {
    Gather(Vec<Lease>),
    /// The bytes of an inline request, copied at the post; up to 64 of them without an
    /// allocation (a latency test's messages).
    Inline(SmallVec<[u8; 64]>),
    Local(LocalOp),
}

/// A send-queue request in flight.
pub struct WrRecord {
    context: u64,
    op: OperationType,
    data: WrData,
}

/// The QP's limits, from its creation parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QpLimits {
    sq_depth: u32,
    max_initiator_sge: u32,
    inline_size: u32,
    rq_depth: u32,
    max_receive_sge: u32,
    max_read_sge: u32,
    max_transfer: u64,
}

impl QpLimits {
    pub(crate) fn new(
        info: &AdapterInfo,
        sq_depth: u32,
        max_initiator_sge: u32,
        inline_size: u32,
    ) -> Result<QpLimits, Status> {
        if sq_depth > info.max_initiator_queue_depth
            || max_initiator_sge > info.max_initiator_request_sge
            || inline_size > info.max_inline_data_size
        {
            return Err(Status::INVALID_PARAMETER);
        }
        Ok(QpLimits {
            sq_depth,
            max_initiator_sge,
            inline_size,
            rq_depth: 0,
            max_receive_sge: 0,
            max_read_sge: info.max_read_request_sge,
            max_transfer: u64::from(info.max_transfer_length),
        })
    }

    pub(crate) fn with_receive(mut self, depth: u32, max_sge: u32) -> QpLimits {
        self.rq_depth = depth;
        self.max_receive_sge = max_sge;
        self
    }
}

/// The disconnect callback a connect or accept registered.
pub(crate) enum DisconnectCallback {
    Plain(DisconnectEvent),
    Ex(DisconnectEventEx),
}

/// The QP's own receive queue.
///
/// `flushed` lives under the same lock as the entries, so a receive posted while the engine
/// flushes is either drained by the flush or sees it and completes `STATUS_CANCELLED`: never
/// left behind (§7.3). Flushed receives wait in `cancelled` and are completed in posting order
/// by one thread at a time (`delivering`), without the lock held (the CQ's callback may post).
#[derive(Default)]
struct RecvQueue {
    entries: VecDeque<RecvEntry>,
    flushed: bool,
    cancelled: VecDeque<u64>,
    delivering: bool,
}

/// Clears `RecvQueue::delivering` if a CQ callback unwinds through the delivery loop.
struct Delivering<'a>(&'a Mutex<RecvQueue>);

impl Drop for Delivering<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().delivering = false;
        }
    }
}

/// What the consumer's QP object, its halves, its connector and its engine host share.
pub(crate) struct QpCore {
    pub(crate) adapter: AdapterId,
    pub(crate) memory: Arc<MemoryTable>,
    pub(crate) pd: PdId,
    recv_cq: Arc<crate::cq::Cq>,
    init_cq: Arc<crate::cq::Cq>,
    srq: Option<Arc<SrqQueue>>,
    context: u64,
    limits: QpLimits,
    rq: Mutex<RecvQueue>,
    sq_outstanding: AtomicU32,
    next_wr: AtomicU64,
    /// A completion of this QP was refused by a failed CQ: the QP was flushed for it.
    lost_cq: AtomicBool,
    pub(crate) conn: OnceLock<Connection<SoftHost>>,
    pub(crate) disconnect: Mutex<Option<DisconnectCallback>>,
    placer: Option<Arc<DmaPlacer>>,
    /// The Terminate that ended the connection (`provider_error_code` form), for the receives
    /// flushed after it.
    terminate: AtomicU32,
    /// The QP's references on its antecedents, for the engine host.
    antecedents: Weak<Antecedents>,
}

/// The QP's references on its PD, CQs and SRQ ([`super::lifetime`]), shared by the consumer's
/// QP object (or its two halves) and the engine host until the host has flushed: their closes
/// pend while the QP may still take a receive or complete into a CQ.
pub(crate) struct Antecedents {
    _references: Vec<Reference>,
}

impl QpCore {
    fn receive_completion(&self, context: u64, status: Status) -> Completion {
        Completion {
            status,
            bytes_transferred: 0,
            qp_context: self.context,
            request_context: context,
            op_type: OperationType::Receive,
            provider_error_code: if status.is_success() {
                0
            } else {
                self.terminate.load(Ordering::Acquire)
            },
            type_specific: 0,
        }
    }

    /// Marks the QP's own receive queue flushed and completes `taken` (receives the engine
    /// took, oldest first) and every queued receive with `STATUS_CANCELLED`, in that order.
    fn flush_receives(&self, taken: impl IntoIterator<Item = u64>) {
        {
            let mut rq = self.rq.lock();
            rq.flushed = true;
            let queued: Vec<u64> = rq.entries.drain(..).map(|e| e.context).collect();
            rq.cancelled.extend(taken);
            rq.cancelled.extend(queued);
        }
        self.deliver_cancelled();
    }

    /// Completes the flushed receives in posting order, unless another thread is doing so
    /// (it then completes those queued meanwhile too).
    fn deliver_cancelled(&self) {
        {
            let mut rq = self.rq.lock();
            if rq.delivering {
                return;
            }
            rq.delivering = true;
        }
        let _unwind = Delivering(&self.rq);
        loop {
            let next = {
                let mut rq = self.rq.lock();
                let next = rq.cancelled.pop_front();
                // Seen empty and no longer delivering in one step: a receive queued after this
                // finds no one delivering and delivers itself.
                rq.delivering = next.is_some();
                next
            };
            let Some(context) = next else { return };
            let c = self.receive_completion(context, Status::CANCELLED);
            self.push(&self.recv_cq, c, false);
        }
    }

    /// Queues a completion. A CQ that cannot take it because it failed (overflow, §7.3) makes
    /// the QP unusable: posts are refused from then on ([`QpCore::postable`]) and the QP is
    /// flushed once, so it stops like after any error.
    fn push(&self, cq: &crate::cq::Cq, completion: Completion, solicited: bool) {
        if cq.push(completion, solicited).is_err()
            && cq.is_failed()
            && !self.lost_cq.swap(true, Ordering::AcqRel)
        {
            if let Some(conn) = self.conn.get() {
                conn.flush();
            }
        }
    }

    fn flush(&self) {
        match self.conn.get() {
            Some(conn) => conn.flush(),
            None => self.flush_receives([]),
        }
    }

    /// Whether the QP was flushed (NdkFlush, or its connection ended): it serves no
    /// connection after that.
    pub(crate) fn is_flushed(&self) -> bool {
        self.rq.lock().flushed
    }

    /// Attaches the QP's connection (once): polls of the QP's CQs then make progress on it.
    pub(crate) fn set_connection(&self, conn: Connection<SoftHost>) -> Result<(), Status> {
        self.conn.set(conn).map_err(|_| Status::CONNECTION_ACTIVE)?;
        let conn = self.conn.get().ok_or(Status::CONNECTION_INVALID)?;
        if Arc::ptr_eq(&self.recv_cq, &self.init_cq) {
            conn.poll_through(&[&self.recv_cq]);
        } else {
            conn.poll_through(&[&self.recv_cq, &self.init_cq]);
        }
        Ok(())
    }

    pub(crate) fn connection(&self) -> Result<&Connection<SoftHost>, Status> {
        self.conn.get().ok_or(Status::CONNECTION_INVALID)
    }

    /// The connection for an initiator post: `STATUS_CONNECTION_INVALID` when there is none,
    /// or when one of the QP's CQs failed (its completions could never be reported).
    fn postable(&self) -> Result<&Connection<SoftHost>, Status> {
        if self.cq_failed() {
            return Err(Status::CONNECTION_INVALID);
        }
        self.connection()
    }

    /// Whether the receive or initiator CQ overflowed or failed.
    fn cq_failed(&self) -> bool {
        self.recv_cq.is_failed() || self.init_cq.is_failed()
    }

    /// Runs the registered disconnect callback once.
    pub(crate) fn peer_disconnected(&self) {
        match self.disconnect.lock().take() {
            Some(DisconnectCallback::Plain(f)) => f(),
            Some(DisconnectCallback::Ex(f)) => f(0),
            None => {}
        }
    }
}

/// The consumer's hold on a QP, shared by the QP object and its two halves. When the last of
/// them goes, closed or dropped, the QP's connection is disconnected, as `NdkCloseQp` does.
/// (The engine's host holds the core too, and the core holds the connection: without this,
/// a dropped QP would keep its connection, and so itself, alive.)
///
/// It also carries the consumer's side of the QP's references on its antecedents (the
/// engine's host holds them too, until it has flushed).
struct QpHandle {
    core: Arc<QpCore>,
    _antecedents: Arc<Antecedents>,
}

impl Drop for QpHandle {
    fn drop(&mut self) {
        if let Some(conn) = self.core.conn.get() {
            conn.disconnect(|_| {});
        }
    }
}

/// A queue pair of the software RNIC.
pub struct SoftQp {
    initiator: SoftInitiator,
    receiver: SoftReceiver,
    /// Last: dropping the core may complete an antecedent's close (and so the adapter's), by
    /// which time the adapter's shared state must be released here already.
    pub(crate) core: Arc<QpCore>,
}

impl SoftQp {
    pub(crate) fn new(
        shared: Arc<AdapterShared>,
        (pd, on_pd): (PdId, Reference),
        (recv_cq, on_recv_cq): (Arc<crate::cq::Cq>, Reference),
        (init_cq, on_init_cq): (Arc<crate::cq::Cq>, Reference),
        srq: Option<(Arc<SrqQueue>, Reference)>,
        context: u64,
        limits: QpLimits,
    ) -> SoftQp {
        let mut references = vec![on_pd, on_recv_cq, on_init_cq];
        let srq = srq.map(|(q, on_srq)| {
            references.push(on_srq);
            q
        });
        let antecedents = Arc::new(Antecedents {
            _references: references,
        });
        let core = Arc::new(QpCore {
            adapter: shared.id,
            memory: shared.memory.clone(),
            pd,
            recv_cq,
            init_cq,
            srq,
            context,
            limits,
            rq: Mutex::new(RecvQueue::default()),
            sq_outstanding: AtomicU32::new(0),
            next_wr: AtomicU64::new(1),
            lost_cq: AtomicBool::new(false),
            conn: OnceLock::new(),
            disconnect: Mutex::new(None),
            placer: shared.placer.clone(),
            terminate: AtomicU32::new(0),
            antecedents: Arc::downgrade(&antecedents),
        });
        let handle = Arc::new(QpHandle {
            core: core.clone(),
            _antecedents: antecedents,
        });
        SoftQp {
            initiator: SoftInitiator {
                core: core.clone(),
                shared,
                _handle: handle.clone(),
            },
            receiver: SoftReceiver {
                core: core.clone(),
                _handle: handle,
            },
            core,
        }
    }
}

super::soft_object!(SoftQp, Qp, |qp| qp.core.adapter, extension: qp_extension);

impl SoftQp {
    /// The QP's counters: those of its connection (zero before it has one). Once the QP is
    /// closed they are part of its adapter's ([`super::adapter::SoftAdapter::counters`]).
    pub fn counters(&self) -> Counters {
        self.core.counters()
    }
}

impl QpCore {
    fn counters(&self) -> Counters {
        self.conn
            .get()
            .map(Connection::counters)
            .unwrap_or_default()
    }
}

/// `NdkQueryExtension` of a QP: the counters interface for [`COUNTERS_GUID`] (version 1.x).
/// It holds the QP weakly: after the QP is closed it answers zeros (the counts live on in
/// the adapter's).
fn qp_extension(
    qp: &SoftQp,
    id: &Guid,
    version: netdirect_types::Version,
) -> Result<Extension, Status> {
    if *id != COUNTERS_GUID || version.major != 1 {
        return Err(Status::NOT_SUPPORTED);
    }
    let core = Arc::downgrade(&qp.core);
    Ok(
        CountersInterface::new(move || core.upgrade().map(|c| c.counters()).unwrap_or_default())
            .with_counting(crate::counters::COUNTING)
            .into_extension(),
    )
}

impl Qp for SoftQp {
    fn split(&mut self) -> (&mut dyn QpInitiator, &mut dyn QpReceiver) {
        (&mut self.initiator, &mut self.receiver)
    }

    fn into_split(self: Box<Self>) -> (Box<dyn QpInitiator>, Box<dyn QpReceiver>) {
        let this = *self;
        (Box::new(this.initiator), Box::new(this.receiver))
    }

    fn flush(&self) {
        self.core.flush();
    }

    fn close(self: Box<Self>) -> Request<()> {
        // Unless its halves live on (`into_split`), this was the last handle: disconnected.
        drop(self);
        Request::ok(())
    }
}

/// The receive queue of a [`SoftQp`].
pub struct SoftReceiver {
    core: Arc<QpCore>,
    _handle: Arc<QpHandle>,
}

impl QpReceiver for SoftReceiver {
    fn receive(&mut self, request_context: u64, sges: &[Sge]) -> Result<(), Status> {
        let r = self.post_receive(request_context, sges);
        if let Err(status) = &r {
            tracing::debug!(status = %status, request_context, "receive refused");
        }
        r
    }

    fn flush(&self) {
        self.core.flush();
    }
}

impl SoftReceiver {
    fn post_receive(&mut self, request_context: u64, sges: &[Sge]) -> Result<(), Status> {
        let core = &self.core;
        if core.srq.is_some() {
            // §10.14: receives of an SRQ-attached QP go through the SRQ.
            return Err(Status::INVALID_DEVICE_REQUEST);
        }
        if core.cq_failed() {
            // Its completion could never be reported.
            return Err(Status::CONNECTION_INVALID);
        }
        if sges.len() as u64 > u64::from(core.limits.max_receive_sge) {
            return Err(Status::DATA_OVERRUN);
        }
        let entry = RecvEntry::new(
            &core.memory,
            core.pd,
            request_context,
            sges,
            LocalAccess::Write,
        )?;
        if entry.len > core.limits.max_transfer {
            return Err(Status::BUFFER_OVERFLOW);
        }
        let mut rq = core.rq.lock();
        if rq.flushed {
            // After the receives flushed before it.
            rq.cancelled.push_back(request_context);
            drop(rq);
            core.deliver_cancelled();
            return Ok(());
        }
        if rq.entries.len() >= core.limits.rq_depth as usize {
            return Err(Status::NO_MORE_ENTRIES);
        }
        rq.entries.push_back(entry);
        Ok(())
    }
}

/// The initiator queue of a [`SoftQp`].
pub struct SoftInitiator {
    core: Arc<QpCore>,
    shared: Arc<AdapterShared>,
    /// Last, so that the adapter's shared state is released first.
    _handle: Arc<QpHandle>,
}

impl SoftInitiator {
    /// An MR or MW passed to a post: of this QP's adapter and PD (§10 table).
    fn ours<'a, T: InPd>(&self, object: &'a dyn Object) -> Result<&'a T, Status> {
        ours_in::<T>(self.core.adapter, self.core.pd, object)
    }

    fn check_flags(flags: OpFlags, valid: OpFlags) -> Result<(), Status> {
        if valid.contains(flags) {
            Ok(())
        } else {
            Err(Status::INVALID_PARAMETER)
        }
    }

    fn gather(
        &self,
        sges: &[Sge],
        max_sge: u32,
        access: LocalAccess,
    ) -> Result<(Vec<Lease>, u64), Status> {
        if sges.len() as u64 > u64::from(max_sge) {
            return Err(Status::DATA_OVERRUN);
        }
        let total = Sge::total_length(sges);
        if total > self.core.limits.max_transfer {
            return Err(Status::BUFFER_OVERFLOW);
        }
        let mut leases = Vec::with_capacity(sges.len());
        for sge in sges {
            leases.push(self.core.memory.check_local(self.core.pd, sge, access)?);
        }
        Ok((leases, total))
    }

    /// Copies the bytes of checked leases (for INLINE posts).
    fn copy(leases: &[Lease]) -> SmallVec<[u8; 64]> {
        let mut out = SmallVec::new();
        for l in leases {
            let _ = l.for_each_span(l.to(), l.len(), |b| out.extend_from_slice(b));
        }
        out
    }

    fn submit(
        &self,
        op: OperationType,
        context: u64,
        data: WrData,
        request: WorkRequest,
        flags: OpFlags,
        local_invalidate: bool,
    ) -> Result<(), Status> {
        let core = &self.core;
        let conn = core.postable()?;
        if core.sq_outstanding.load(Ordering::Acquire) >= core.limits.sq_depth {
            return Err(Status::NO_MORE_ENTRIES);
        }
        let wr = core.next_wr.fetch_add(1, Ordering::Relaxed);
        let record = WrRecord { context, op, data };
        let post_flags = PostFlags {
            signaled: !flags.contains(OpFlags::SILENT_SUCCESS),
            read_fence: flags.contains(OpFlags::READ_FENCE),
            local_invalidate,
        };
        core.sq_outstanding.fetch_add(1, Ordering::AcqRel);
        let posted = if flags.contains(OpFlags::DEFER) {
            conn.post_deferred(wr, record, request, post_flags)
        } else {
            conn.post(wr, record, request, post_flags)
        };
        posted.inspect_err(|_| {
            core.sq_outstanding.fetch_sub(1, Ordering::AcqRel);
        })
    }

    /// Runs an initiator call; NDK §7.1, provider rule: one that fails inline first hands
    /// every deferred request of the QP over.
    fn rung(&mut self, call: impl FnOnce(&mut Self) -> Result<(), Status>) -> Result<(), Status> {
        let r = call(self);
        if let Err(status) = &r {
            tracing::debug!(status = %status, "request refused");
            if let Some(conn) = self.core.conn.get() {
                conn.ring();
            }
        }
        r
    }

    fn data_request(
        &self,
        context: u64,
        sges: &[Sge],
        flags: OpFlags,
        valid: OpFlags,
        make: impl FnOnce(u32) -> WorkRequest,
        op: OperationType,
    ) -> Result<(), Status> {
        Self::check_flags(flags, valid)?;
        self.core.postable()?;
        let (leases, total) = self.gather(
            sges,
            self.core
                .limits
                .max_initiator_sge
                .max(if flags.contains(OpFlags::INLINE) {
                    u32::MAX
                } else {
                    0
                }),
            LocalAccess::Read,
        )?;
        let data = if flags.contains(OpFlags::INLINE) {
            if total > u64::from(self.core.limits.inline_size) {
                return Err(Status::BUFFER_OVERFLOW);
            }
            WrData::Inline(Self::copy(&leases))
        } else {
            WrData::Gather(leases)
        };
        // total ≤ MaxTransferLength ≤ u32::MAX (checked in gather).
        self.submit(op, context, data, make(total as u32), flags, false)
    }

    fn inline_request(
        &self,
        context: u64,
        data: &[&[u8]],
        flags: OpFlags,
        valid: OpFlags,
        make: impl FnOnce(u32) -> WorkRequest,
        op: OperationType,
    ) -> Result<(), Status> {
        Self::check_flags(flags, valid)?;
        self.core.postable()?;
        let total: usize = data.iter().map(|d| d.len()).sum();
        if total as u64 > u64::from(self.core.limits.inline_size) {
            return Err(Status::BUFFER_OVERFLOW);
        }
        let mut bytes = SmallVec::with_capacity(total);
        data.iter().for_each(|d| bytes.extend_from_slice(d));
        self.submit(
            op,
            context,
            WrData::Inline(bytes),
            make(total as u32),
            flags,
            false,
        )
    }

    /// The checks `submit` makes, for operations that change the table before they are queued.
    fn ready_to_post(&self) -> Result<(), Status> {
        self.core.postable()?;
        if self.core.sq_outstanding.load(Ordering::Acquire) >= self.core.limits.sq_depth {
            return Err(Status::NO_MORE_ENTRIES);
        }
        Ok(())
    }

    fn local(
        &self,
        context: u64,
        op: OperationType,
        local: LocalOp,
        flags: OpFlags,
    ) -> Result<(), Status> {
        self.submit(
            op,
            context,
            WrData::Local(local),
            WorkRequest::Local,
            flags,
            false,
        )
    }
}

/// The initiator calls proper; the trait methods wrap them with the doorbell rule.
impl SoftInitiator {
    fn post_send(
        &mut self,
        request_context: u64,
        sges: &[Sge],
        flags: OpFlags,
    ) -> Result<(), Status> {
        let solicited = flags.contains(OpFlags::SEND_AND_SOLICIT_EVENT);
        self.data_request(
            request_context,
            sges,
            flags,
            OpFlags::SEND_VALID,
            |len| WorkRequest::Send {
                len,
                solicited,
                invalidate: None,
            },
            OperationType::Send,
        )
    }

    fn post_send_inline(
        &mut self,
        request_context: u64,
        data: &[&[u8]],
        flags: OpFlags,
    ) -> Result<(), Status> {
        let solicited = flags.contains(OpFlags::SEND_AND_SOLICIT_EVENT);
        self.inline_request(
            request_context,
            data,
            flags,
            OpFlags::SEND_VALID,
            |len| WorkRequest::Send {
                len,
                solicited,
                invalidate: None,
            },
            OperationType::Send,
        )
    }

    fn post_send_and_invalidate(
        &mut self,
        request_context: u64,
        sges: &[Sge],
        flags: OpFlags,
        remote_token: RemoteToken,
    ) -> Result<(), Status> {
        let solicited = flags.contains(OpFlags::SEND_AND_SOLICIT_EVENT);
        self.data_request(
            request_context,
            sges,
            flags,
            OpFlags::SEND_VALID,
            |len| WorkRequest::Send {
                len,
                solicited,
                invalidate: Some(remote_token.0),
            },
            OperationType::Send,
        )
    }

    fn post_read(
        &mut self,
        request_context: u64,
        sges: &[Sge],
        remote_address: u64,
        remote_token: RemoteToken,
        flags: OpFlags,
    ) -> Result<(), Status> {
        Self::check_flags(flags, OpFlags::READ_VALID)?;
        self.core.postable()?;
        let (leases, total) =
            self.gather(sges, self.core.limits.max_read_sge, LocalAccess::ReadSink)?;
        let (sink_stag, sink_to) = sges.first().map_or((0, 0), |s| (s.token.0, s.address));
        // The stream invalidates the sink's token when the read succeeds, silent or not.
        let local_invalidate = flags.contains(OpFlags::RDMA_READ_LOCAL_INVALIDATE)
            && self
                .shared
                .info
                .adapter_flags
                .contains(netdirect_types::AdapterFlags::RDMA_READ_LOCAL_INVALIDATE_SUPPORTED)
            && !sges.is_empty();
        let request = WorkRequest::Read {
            len: total as u32,
            sink_stag,
            sink_to,
            stag: remote_token.0,
            to: remote_address,
        };
        self.submit(
            OperationType::Read,
            request_context,
            WrData::Gather(leases),
            request,
            flags,
            local_invalidate,
        )
    }

    fn post_write(
        &mut self,
        request_context: u64,
        sges: &[Sge],
        remote_address: u64,
        remote_token: RemoteToken,
        flags: OpFlags,
    ) -> Result<(), Status> {
        self.data_request(
            request_context,
            sges,
            flags,
            OpFlags::WRITE_VALID,
            |len| WorkRequest::Write {
                len,
                stag: remote_token.0,
                to: remote_address,
            },
            OperationType::Write,
        )
    }

    fn post_write_inline(
        &mut self,
        request_context: u64,
        data: &[&[u8]],
        remote_address: u64,
        remote_token: RemoteToken,
        flags: OpFlags,
    ) -> Result<(), Status> {
        self.inline_request(
            request_context,
            data,
            flags,
            OpFlags::WRITE_VALID,
            |len| WorkRequest::Write {
                len,
                stag: remote_token.0,
                to: remote_address,
            },
            OperationType::Write,
        )
    }

    fn post_bind(
        &mut self,
        request_context: u64,
        mr: &dyn Mr,
        mw: &dyn Mw,
        address: u64,
        length: u64,
        flags: OpFlags,
    ) -> Result<(), Status> {
        Self::check_flags(flags, OpFlags::BIND_VALID)?;
        let (mr, mw) = (self.ours::<SoftMr>(mr)?, self.ours::<SoftMw>(mw)?);
        self.core.postable()?;
        let memory = &self.core.memory;
        // Checked under the table's read lock; the change, if any, under its write lock.
        let plan = memory.check_bind(mw.id, mr.id, address, length, flags)?;
        // Bind now when the window is free, so that requests posted after this one can use it
        // at once; behind a queued invalidate, bind in queue order.
        if !memory.is_bound(mw.id)? {
            self.ready_to_post()?;
            let token = memory.commit_bind(plan)?;
            mw.token.store(token.0, Ordering::Release);
            return self
                .local(request_context, OperationType::Bind, LocalOp::Done, flags)
                .inspect_err(|_| {
                    let _ = memory.invalidate(mw.id);
                });
        }
        let op = LocalOp::Bind {
            mw: mw.id,
            mr: mr.id,
            address,
            length,
            flags,
        };
        self.local(request_context, OperationType::Bind, op, flags)?;
        mw.token.store(
            next_token(mw.token.load(Ordering::Acquire)),
            Ordering::Release,
        );
        Ok(())
    }

    // The NDK call's own arguments.
    #[allow(clippy::too_many_arguments)]
    fn post_fast_register(
        &mut self,
        request_context: u64,
        mr: &dyn Mr,
        pages: &[LogicalAddress],
        fbo: u32,
        length: u64,
        base_address: u64,
        flags: OpFlags,
    ) -> Result<(), Status> {
        // Flags first, as every request type (§10.1's order).
        Self::check_flags(flags, OpFlags::FAST_REGISTER_VALID)?;
        let mr = self.ours::<SoftMr>(mr)?;
        self.core.postable()?;
        let memory = &self.core.memory;
        // Checked under the table's read lock; the change, if any, under its write lock.
        let plan = memory.check_fast_register(mr.id, pages, fbo, length, base_address, flags)?;
        // Register now when the region is free, so that requests posted after this one can use
        // it at once (its remote token is valid before the completion, §7.9); behind a queued
        // invalidate, register in queue order.
        if !memory.is_registered(mr.id)? {
            self.ready_to_post()?;
            let token = memory.commit_fast_register(plan)?;
            mr.token.store(token.0, Ordering::Release);
            return self
                .local(
                    request_context,
                    OperationType::FastRegister,
                    LocalOp::Done,
                    flags,
                )
                .inspect_err(|_| {
                    let _ = memory.invalidate(mr.id);
                });
        }
        let op = LocalOp::FastRegister {
            mr: mr.id,
            pages: pages.to_vec(),
            fbo,
            length,
            base: base_address,
            flags,
        };
        self.local(request_context, OperationType::FastRegister, op, flags)?;
        mr.token.store(
            next_token(mr.token.load(Ordering::Acquire)),
            Ordering::Release,
        );
        Ok(())
    }

    fn post_invalidate(
        &mut self,
        request_context: u64,
        target: InvalidateTarget<'_>,
        flags: OpFlags,
    ) -> Result<(), Status> {
        Self::check_flags(flags, OpFlags::INVALIDATE_VALID)?;
        let object = match target {
            InvalidateTarget::Mr(mr) => MemoryObject::Mr(self.ours::<SoftMr>(mr)?.id),
            InvalidateTarget::Mw(mw) => MemoryObject::Mw(self.ours::<SoftMw>(mw)?.id),
        };
        self.core.postable()?;
        self.local(
            request_context,
            OperationType::Invalidate,
            LocalOp::Invalidate(object),
            flags,
        )
    }
}

impl QpInitiator for SoftInitiator {
    fn send(&mut self, request_context: u64, sges: &[Sge], flags: OpFlags) -> Result<(), Status> {
        self.rung(|this| this.post_send(request_context, sges, flags))
    }

    fn send_inline(
        &mut self,
        request_context: u64,
        data: &[&[u8]],
        flags: OpFlags,
    ) -> Result<(), Status> {
        self.rung(|this| this.post_send_inline(request_context, data, flags))
    }

    fn send_and_invalidate(
        &mut self,
        request_context: u64,
        sges: &[Sge],
        flags: OpFlags,
        remote_token: RemoteToken,
    ) -> Result<(), Status> {
        self.rung(|this| this.post_send_and_invalidate(request_context, sges, flags, remote_token))
    }

    fn read(
        &mut self,
        request_context: u64,
        sges: &[Sge],
        remote_address: u64,
        remote_token: RemoteToken,
        flags: OpFlags,
    ) -> Result<(), Status> {
        self.rung(|this| this.post_read(request_context, sges, remote_address, remote_token, flags))
    }

    fn write(
        &mut self,
        request_context: u64,
        sges: &[Sge],
        remote_address: u64,
        remote_token: RemoteToken,
        flags: OpFlags,
    ) -> Result<(), Status> {
        self.rung(|this| {
            this.post_write(request_context, sges, remote_address, remote_token, flags)
        })
    }

    fn write_inline(
        &mut self,
        request_context: u64,
        data: &[&[u8]],
        remote_address: u64,
        remote_token: RemoteToken,
        flags: OpFlags,
    ) -> Result<(), Status> {
        self.rung(|this| {
            this.post_write_inline(request_context, data, remote_address, remote_token, flags)
        })
    }

    fn bind(
        &mut self,
        request_context: u64,
        mr: &dyn Mr,
        mw: &dyn Mw,
        address: u64,
        length: u64,
        flags: OpFlags,
    ) -> Result<(), Status> {
        self.rung(|this| this.post_bind(request_context, mr, mw, address, length, flags))
    }

    fn fast_register(
        &mut self,
        request_context: u64,
        mr: &dyn Mr,
        pages: &[LogicalAddress],
        fbo: u32,
        length: u64,
        base_address: u64,
        flags: OpFlags,
    ) -> Result<(), Status> {
        self.rung(|this| {
            this.post_fast_register(request_context, mr, pages, fbo, length, base_address, flags)
        })
    }

    fn invalidate(
        &mut self,
        request_context: u64,
        target: InvalidateTarget<'_>,
        flags: OpFlags,
    ) -> Result<(), Status> {
        self.rung(|this| this.post_invalidate(request_context, target, flags))
    }

    fn flush(&self) {
        self.core.flush();
    }
}

/// The QP as the transport sees it (called under the connection's lock).
pub struct SoftHost {
    core: Arc<QpCore>,
    /// Let go when the connection has flushed: nothing completes into the CQs after that.
    antecedents: Option<Arc<Antecedents>>,
    // Keyed by ids this host hands out in sequence (no peer chooses them): Fx hashing, not
    // SipHash's flooding resistance, three to five lookups per message.
    wrs: FxHashMap<u64, WrRecord>,
    order: VecDeque<u64>,
    receives: FxHashMap<u64, RecvEntry>,
    next_receive: u64,
    scratch: Vec<u8>,
}

impl SoftHost {
    pub(crate) fn new(core: Arc<QpCore>) -> SoftHost {
        SoftHost {
            antecedents: core.antecedents.upgrade(),
            core,
            wrs: FxHashMap::default(),
            order: VecDeque::new(),
            receives: FxHashMap::default(),
            next_receive: 1,
            scratch: Vec::new(),
        }
    }
}

impl Host for SoftHost {
    type Lease = Lease;

    fn tagged(
        &mut self,
        stag: u32,
        to: u64,
        len: u64,
        access: Access,
    ) -> Result<Lease, TaggedError> {
        self.core
            .memory
            .check_remote(self.core.pd, stag, to, len, access)
    }

    fn invalidate(&mut self, stag: u32) -> Result<(), TaggedError> {
        self.core.memory.invalidate_remote(self.core.pd, stag)
    }

    fn take_receive(&mut self) -> Option<(u64, u64)> {
        let entry = match &self.core.srq {
            Some(srq) => srq.take()?,
            None => self.core.rq.lock().entries.pop_front()?,
        };
        let id = self.next_receive;
        self.next_receive += 1;
        let cap = entry.len;
        self.receives.insert(id, entry);
        Some((id, cap))
    }
}

/// The buffer and range `[offset, offset + len)` of a list of leases is, when it is one
/// contiguous piece of one buffer.
fn contiguous(leases: &[Lease], offset: u64, len: u64) -> Option<(&Buffer, Range<usize>)> {
    let mut at = offset;
    for l in leases {
        if at < l.len() {
            if at + len > l.len() {
                return None;
            }
            let mut spans = l.spans(l.to() + at, len).ok()?;
            return match (spans.next(), spans.next()) {
                (Some(piece), None) => Some(piece),
                _ => None,
            };
        }
        at -= l.len();
    }
    None
}

/// Calls `f` with the bytes of `[offset, offset + len)` of a list of leases: straight from
/// memory when they are one contiguous piece, else from a copy in `scratch`.
fn with_leases<R>(
    leases: &[Lease],
    offset: u64,
    len: u64,
    scratch: &mut Vec<u8>,
    f: impl FnOnce(&[&[u8]]) -> R,
) -> R {
    if let Some((buffer, range)) = contiguous(leases, offset, len) {
        return buffer.with(|b| f(&[&b[range]]));
    }
    scratch.clear();
    let mut skip = offset;
    let mut want = len;
    for l in leases {
        if want == 0 {
            break;
        }
        if skip >= l.len() {
            skip -= l.len();
            continue;
        }
        let n = (l.len() - skip).min(want);
        let _ = l.for_each_span(l.to() + skip, n, |b| scratch.extend_from_slice(b));
        want -= n;
        skip = 0;
    }
    f(&[&scratch[..]])
}

impl QpHost for SoftHost {
    type Work = WrRecord;

    fn posted(&mut self, wr: u64, work: WrRecord) {
        self.wrs.insert(wr, work);
        self.order.push_back(wr);
    }

    fn with_payload<R>(&mut self, p: &Payload<Lease>, f: impl FnOnce(&[&[u8]]) -> R) -> R {
        match p {
            Payload::Request { wr, offset, len } => match self.wrs.get(wr).map(|w| &w.data) {
                Some(WrData::Inline(bytes)) => {
                    let start = *offset as usize;
                    f(&[&bytes[start..start + *len as usize]])
                }
                Some(WrData::Gather(leases)) => {
                    with_leases(leases, *offset, u64::from(*len), &mut self.scratch, f)
                }
                _ => f(&[]),
            },
            Payload::Tagged { lease, to, len } => {
                let at = to - lease.to();
                with_leases(
                    std::slice::from_ref(lease),
                    at,
                    u64::from(*len),
                    &mut self.scratch,
                    f,
                )
            }
        }
    }

    /// Payloads that are each one contiguous piece of the same buffer (the FPDUs of one
    /// message, or of messages from one buffer), under one read lock of it; else `None`.
    fn with_payloads<R>(
        &mut self,
        payloads: &[&Payload<Lease>],
        f: impl FnOnce(&[&[&[u8]]]) -> R,
    ) -> Option<R> {
        let mut buffer: Option<&Buffer> = None;
        let mut ranges = Vec::with_capacity(payloads.len());
        for p in payloads {
            let (b, range) = match p {
                Payload::Request { wr, offset, len } => match self.wrs.get(wr).map(|w| &w.data) {
                    Some(WrData::Gather(leases)) => contiguous(leases, *offset, u64::from(*len))?,
                    _ => return None,
                },
                Payload::Tagged { lease, to, len } => contiguous(
                    std::slice::from_ref(lease),
                    to - lease.to(),
                    u64::from(*len),
                )?,
            };
            // One lock only: a second read lock of a buffer whose writer waits would deadlock.
            match buffer {
                None => buffer = Some(b),
                Some(first) if first.ptr_eq(b) => {}
                Some(_) => return None,
            }
            ranges.push(range);
        }
        Some(buffer?.with(|bytes| {
            let pieces: Vec<&[u8]> = ranges.iter().map(|r| &bytes[r.clone()]).collect();
            let spans: Vec<&[&[u8]]> = pieces.iter().map(std::slice::from_ref).collect();
            f(&spans)
        }))
    }

    fn place(&mut self, dest: Dest<Lease>, data: &[u8]) {
        match dest {
            Dest::Receive { recv, offset } => {
                if let Some(e) = self.receives.get(&recv) {
                    e.write(offset, data, self.core.placer.as_deref());
                }
            }
            Dest::Tagged { lease, to } => {
                write_lease(&lease, to, data, self.core.placer.as_deref())
            }
        }
    }

    fn with_dest_mut<R>(
        &mut self,
        dest: &Dest<Lease>,
        len: usize,
        f: impl FnOnce(&mut [&mut [u8]]) -> R,
    ) -> Option<R> {
        // Straight from the socket, not through the NetDMA channel: the kernel's copy is the
        // only one.
        match dest {
            Dest::Receive { recv, offset } => self.receives.get(recv)?.lend(*offset, len as u64, f),
            Dest::Tagged { lease, to } => lend_lease(lease, *to, len as u64, f),
        }
    }

    fn completed(&mut self, c: WorkCompletion) {
        let core = &self.core;
        if c.kind == WorkKind::Receive {
            let Some(entry) = self.receives.remove(&c.wr) else {
                return;
            };
            let completion = Completion {
                status: c.status,
                bytes_transferred: c.bytes,
                qp_context: core.context,
                request_context: entry.context,
                op_type: if c.invalidated.is_some() {
                    OperationType::ReceiveAndInvalidate
                } else {
                    OperationType::Receive
                },
                provider_error_code: c.provider_error,
                type_specific: c.invalidated.map_or(0, u64::from),
            };
            core.push(&core.recv_cq, completion, c.solicited);
            return;
        }
        // Completions are FIFO per queue: everything posted before this request (silent
        // successes) is retired with it.
        let mut retired = 0u32;
        let mut record = None;
        while let Some(id) = self.order.pop_front() {
            retired += 1;
            let r = self.wrs.remove(&id);
            if id == c.wr {
                record = r;
                break;
            }
        }
        core.sq_outstanding.fetch_sub(
            retired.min(core.sq_outstanding.load(Ordering::Acquire)),
            Ordering::AcqRel,
        );
        let Some(record) = record else { return };
        let completion = Completion {
            status: c.status,
            bytes_transferred: 0,
            qp_context: core.context,
            request_context: record.context,
            op_type: record.op,
            provider_error_code: if c.status.is_success() {
                0
            } else {
                c.provider_error
            },
            type_specific: 0,
        };
        core.push(&core.init_cq, completion, false);
    }

    fn event(&mut self, e: Event) {
        // Whichever side terminated, the connection is gone: the consumer hears of it through
        // the disconnect event (nothing is flushed because of it, §7.7; the stream itself has
        // already completed its own requests).
        match e {
            Event::PeerClosed => {}
            Event::TerminateReceived(t) => {
                self.core
                    .terminate
                    .store(t.provider_error(false), Ordering::Release);
            }
            Event::TerminateSent(t) => {
                self.core
                    .terminate
                    .store(t.provider_error(true), Ordering::Release);
            }
        }
        // Called under the connection's lock: the consumer's callback runs once it is released.
        let core = self.core.clone();
        crate::callback::run_or_defer(move || core.peer_disconnected());
    }

    fn local(&mut self, wr: u64) -> Status {
        let memory = &self.core.memory;
        let Some(WrRecord {
            data: WrData::Local(op),
            ..
        }) = self.wrs.get(&wr)
        else {
            return Status::INVALID_DEVICE_REQUEST;
        };
        let result = match op {
            LocalOp::Bind {
                mw,
                mr,
                address,
                length,
                flags,
            } => memory.bind(*mw, *mr, *address, *length, *flags).map(drop),
            LocalOp::FastRegister {
                mr,
                pages,
                fbo,
                length,
                base,
                flags,
            } => memory
                .fast_register(*mr, pages, *fbo, *length, *base, *flags)
                .map(drop),
            LocalOp::Invalidate(object) => memory.invalidate(*object),
            LocalOp::Done => Ok(()),
        };
        result.err().unwrap_or(Status::SUCCESS)
    }

    fn flushed(&mut self) {
        // Receives taken by the engine but not completed (none after a flush; defensive),
        // in the order they were taken, before those still queued.
        let mut taken: Vec<(u64, u64)> = self
            .receives
            .drain()
            .map(|(id, e)| (id, e.context))
            .collect();
        taken.sort_unstable();
        self.core
            .flush_receives(taken.into_iter().map(|(_, context)| context));
        // The last use of the CQs and the SRQ from this side.
        self.antecedents = None;
    }
}
