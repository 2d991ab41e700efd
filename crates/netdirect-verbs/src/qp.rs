//! The queue pair: an RC `ibv_qp`, attached to a CM id when it connects.
//!
//! Work-request ids are sequence numbers into a per-queue ring of (request context, operation
//! type): verbs leaves the opcode of a failed completion undefined, while NDK completions carry
//! their type whatever their status. A signaled send completion also retires the unsignaled
//! (`SILENT_SUCCESS`) requests before it, as verbs defines, but not signaled ones, nor, on
//! iWARP, unsignaled Reads: siw completes Sends and Writes before the Reads posted ahead of
//! them (a Read completes when its response arrives).
//!
//! The NDK's posting rules are checked here before verbs sees a request (verbs would accept
//! some of these and fail them later, or, on siw, leave them queued on the QP), in the order of
//! §10 row 1: flags not valid for the operation `STATUS_INVALID_PARAMETER`; a QP without a
//! connection (not connected yet, or after a flush, a disconnect, an error completion, or its
//! CQ's overflow) `STATUS_CONNECTION_INVALID`; too many SGEs `STATUS_DATA_OVERRUN`; inline
//! bytes above the QP's inline size `STATUS_BUFFER_OVERFLOW`; a full queue (silent successes
//! hold their slots until a later completion retires them) `STATUS_NO_MORE_ENTRIES`; an SGE
//! outside a region of the QP's PD registered under its token, or a read sink without the
//! sink right where the adapter requires it, `STATUS_ACCESS_VIOLATION`. Receives may be posted
//! before the connection (the QP is brought to INIT at creation), and after it: once the QP
//! is in error (flushed, disconnected) a receive is not handed to the device, which would
//! never complete it on iWARP, but completes `STATUS_CANCELLED` through the receive CQ at its
//! next poll (and fires a pending arm), as on the soft provider. A receive posted just as the
//! peer's close arrives is therefore not an error.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use netdirect::{
    InvalidateTarget, Mr, Mw, Object, Qp, QpConfig, QpInitiator, QpReceiver, QpWithSrqConfig,
    Request,
};
use netdirect_types::{
    AdapterFlags, Completion, LogicalAddress, ObjectType, OpFlags, OperationType, RdmaTechnology,
    RemoteToken, Sge, Status,
};
use parking_lot::Mutex;

use crate::adapter::{AdapterInner, same_adapter};
use crate::cq::{CqShared, VerbsCq};
use crate::ffi::{
    self, Ctx, Lib, QpH, ibv_qp_cap, ibv_qp_init_attr, ibv_recv_wr, ibv_send_wr, ibv_sge, ibv_wc,
};
use crate::mr::VerbsMr;
use crate::mw::VerbsMw;
use crate::pd::PdShared;
use crate::srq::{SrqShared, VerbsSrq};

const MAX_SGE: usize = 32;

/// Receive-queue work-request ids have this bit; SRQ ones [`SRQ_BIT`].
const RECV_BIT: u64 = 1 << 63;
/// SRQ work-request ids have this bit.
pub(crate) const SRQ_BIT: u64 = 1 << 62;

/// One outstanding request: sequence number (the work-request id), request context,
/// operation, and whether it was posted signaled.
type Entry = (u64, u64, OperationType, bool);

#[derive(Default)]
struct Ring {
    next: u64,
    pending: VecDeque<Entry>,
}

impl Ring {
    fn starting_at(next: u64) -> Ring {
        Ring {
            next,
            pending: VecDeque::new(),
        }
    }

    fn push(&mut self, context: u64, op: OperationType, signaled: bool) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.pending.push_back((seq, context, op, signaled));
        seq
    }

    /// The oldest outstanding request, retired.
    fn take_front(&mut self) -> Option<(u64, OperationType)> {
        self.pending.pop_front().map(|(_, c, op, _)| (c, op))
    }

    /// Requests posted and not yet retired by a completion the consumer took.
    fn outstanding(&self) -> usize {
        self.pending.len()
    }

    fn unpush(&mut self) {
        self.pending.pop_back();
        self.next -= 1;
    }

    /// Retires request `seq`, whose completion arrived, and returns it, with the unsignaled
    /// requests posted before it (verbs: a completion covers them). A signaled request posted
    /// before it stays for its own completion, and so does an unsignaled Read when
    /// `reads_complete_late` and `seq` is not a Read: an iWARP device completes a Read when
    /// its response has arrived, after Sends and Writes posted behind it (siw does), so their
    /// completion says nothing of it (Reads complete in order among themselves).
    fn retire(&mut self, seq: u64, reads_complete_late: bool) -> Option<(u64, OperationType)> {
        let at = self.pending.iter().position(|e| e.0 >= seq)?;
        let (s, context, op, _) = self.pending[at];
        if s != seq {
            return None;
        }
        self.pending.remove(at);
        let keep_reads = reads_complete_late && op != OperationType::Read;
        let mut i = 0;
        let mut left = at;
        while i < left {
            let (_, _, before, signaled) = self.pending[i];
            if signaled || (keep_reads && before == OperationType::Read) {
                i += 1;
            } else {
                self.pending.remove(i);
                left -= 1;
            }
        }
        Some((context, op))
    }
}

/// The QP's connection as posts see it.
const UNCONNECTED: u8 = 0;
const CONNECTED: u8 = 1;
/// Flushed, disconnected (either end), or an error completion was taken: final.
const IN_ERROR: u8 = 2;

pub(crate) struct QpShared {
    pub(crate) adapter: Arc<AdapterInner>,
    pub(crate) qp: QpH,
    qp_num: u32,
    context: u64,
    state: AtomicU8,
    send: Mutex<Ring>,
    recv: Mutex<Ring>,
    send_depth: u32,
    recv_depth: u32,
    inline: u32,
    max_initiator_sge: u32,
    max_receive_sge: u32,
    _cqs: (Arc<CqShared>, Arc<CqShared>),
    _srq: Option<Arc<SrqShared>>,
    _pd: Arc<PdShared>,
}

impl Drop for QpShared {
    fn drop(&mut self) {
        self.adapter.qps.write().remove(&self.qp_num);
        self.adapter.lib.destroy_qp(self.qp);
    }
}

/// NDK status of a work completion's verbs status.
pub(crate) fn wc_status(s: i32) -> Status {
    match s {
        ffi::IBV_WC_SUCCESS => Status::SUCCESS,
        ffi::IBV_WC_WR_FLUSH_ERR => Status::CANCELLED,
        ffi::IBV_WC_LOC_LEN_ERR => Status::INVALID_BUFFER_SIZE,
        ffi::IBV_WC_LOC_PROT_ERR | ffi::IBV_WC_LOC_ACCESS_ERR | ffi::IBV_WC_REM_ACCESS_ERR => {
            Status::ACCESS_VIOLATION
        }
        ffi::IBV_WC_REM_INV_REQ_ERR => Status::INVALID_PARAMETER,
        // Our checks leave no malformed request: what siw reports for a request still being
        // sent when the connection failed (a peer's Terminate).
        ffi::IBV_WC_LOC_QP_OP_ERR => Status::CONNECTION_ABORTED,
        ffi::IBV_WC_RETRY_EXC_ERR | ffi::IBV_WC_RNR_RETRY_EXC_ERR => Status::IO_TIMEOUT,
        ffi::IBV_WC_REM_OP_ERR => Status::CONNECTION_ABORTED,
        _ => Status::DATA_ERROR,
    }
}

impl QpShared {
    /// The connection is established: initiator posts are allowed (once: a QP serves one
    /// connection).
    pub(crate) fn connected(&self) {
        let _ = self.state.compare_exchange(
            UNCONNECTED,
            CONNECTED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// The QP is in error for the consumer: later posts fail inline.
    ///
    /// An iWARP device moves the QP to error on its own (a Terminate, the connection closing)
    /// and flushes what it holds then; a request posted before we knew (siw takes it into the
    /// mapped queue and its doorbell answers success) is never completed. So on iWARP the QP's
    /// CQs complete whatever is still outstanding `STATUS_CANCELLED` once the device has no
    /// more (see [`QpShared::cancel_outstanding`]); a device completion that comes after is
    /// dropped (its request is no longer outstanding).
    pub(crate) fn set_error(&self) {
        let was = self.state.swap(IN_ERROR, Ordering::AcqRel);
        if was != IN_ERROR && self.adapter.info.rdma_technology == RdmaTechnology::IWarp {
            self._cqs.0.adopt(self.qp_num);
            if !Arc::ptr_eq(&self._cqs.0, &self._cqs.1) {
                self._cqs.1.adopt(self.qp_num);
            }
        }
    }

    /// Completes `STATUS_CANCELLED`, in posting order, what is outstanding on the queues that
    /// complete to `cq` (into `out`): how many, and whether nothing is left there.
    pub(crate) fn cancel_outstanding(
        &self,
        cq: &CqShared,
        out: &mut [Completion],
    ) -> (usize, bool) {
        let mut n = 0;
        let mut empty = true;
        for (ring, on) in [(&self.send, &self._cqs.0), (&self.recv, &self._cqs.1)] {
            if !std::ptr::eq(&**on, cq) {
                continue;
            }
            let mut ring = ring.lock();
            while n < out.len() {
                let Some((context, op)) = ring.take_front() else {
                    break;
                };
                out[n] = Completion {
                    status: Status::CANCELLED,
                    bytes_transferred: 0,
                    qp_context: self.context,
                    request_context: context,
                    op_type: op,
                    provider_error_code: 0,
                    type_specific: 0,
                };
                n += 1;
            }
            empty &= ring.outstanding() == 0;
        }
        (n, empty)
    }

    /// Flushes the QP (`IBV_QPS_ERR`): everything outstanding completes cancelled.
    pub(crate) fn flush(&self) {
        self.set_error();
        let _ = self.adapter.lib.modify_qp_state(self.qp, ffi::IBV_QPS_ERR);
    }

    /// `STATUS_CONNECTION_INVALID` unless the QP may take a request of this queue now.
    fn usable(&self, initiator: bool) -> Result<(), Status> {
        let state = self.state.load(Ordering::Acquire);
        let ok = match state {
            CONNECTED => true,
            UNCONNECTED => !initiator,
            _ => false,
        };
        // An overflowed CQ is fatal to every QP using it (§7.3, §10 row 5).
        if !ok || self._cqs.0.in_error() || self._cqs.1.in_error() {
            return Err(Status::CONNECTION_INVALID);
        }
        Ok(())
    }

    /// The NDK completion of one of this QP's work completions.
    pub(crate) fn completion(&self, wc: &ibv_wc) -> Option<Completion> {
        // The id says the queue (a failed completion's opcode is undefined in verbs).
        let found = if wc.wr_id & SRQ_BIT != 0 {
            self._srq
                .as_ref()
                .and_then(|s| s.retire(wc.wr_id))
                .map(|c| (c, OperationType::Receive))
        } else if wc.wr_id & RECV_BIT != 0 {
            self.recv.lock().retire(wc.wr_id, false)
        } else {
            let late = self.adapter.info.rdma_technology == RdmaTechnology::IWarp;
            self.send.lock().retire(wc.wr_id, late)
        };
        // Not outstanding: already completed cancelled by the provider (see `set_error`).
        let (request_context, mut op) = found?;
        let mut type_specific = 0;
        if op == OperationType::Receive && wc.wc_flags & ffi::IBV_WC_WITH_INV != 0 {
            op = OperationType::ReceiveAndInvalidate;
            type_specific = u64::from(wc.imm_or_inv);
        }
        let status = wc_status(wc.status);
        if status != Status::SUCCESS {
            // An error completion ends the connection (§10 row 3): later posts fail inline.
            self.set_error();
        }
        Some(Completion {
            status,
            bytes_transferred: if op.is_receive() { wc.byte_len } else { 0 },
            qp_context: self.context,
            request_context,
            op_type: op,
            provider_error_code: if status == Status::SUCCESS {
                0
            } else {
                // The verbs status (≥ 1), or the device's own code.
                if wc.vendor_err != 0 {
                    wc.vendor_err
                } else {
                    wc.status as u32
                }
            },
            type_specific,
        })
    }
}

/// The inline size a device grants: a scratch RC QP asking for 256 octets.
pub(crate) fn probe_inline(lib: &Lib, ctx: Ctx) -> u32 {
    let Some(pd) = lib.alloc_pd(ctx) else {
        return 0;
    };
    let Some(ch) = lib.create_comp_channel(ctx) else {
        lib.dealloc_pd(pd);
        return 0;
    };
    let mut inline = 0;
    if let Some(cq) = lib.create_cq(ctx, 4, 0, ch) {
        for ask in [256u32, 128, 64, 32, 0] {
            let mut attr = init_attr(
                cq.0,
                cq.0,
                None,
                ibv_qp_cap {
                    max_send_wr: 1,
                    max_recv_wr: 1,
                    max_send_sge: 1,
                    max_recv_sge: 1,
                    max_inline_data: ask,
                },
            );
            if let Ok(qp) = lib.create_qp(pd, &mut attr) {
                inline = attr.cap.max_inline_data;
                lib.destroy_qp(qp);
                break;
            }
        }
        lib.destroy_cq(cq);
    }
    lib.destroy_comp_channel(ch);
    lib.dealloc_pd(pd);
    inline
}

fn init_attr(
    send_cq: *mut ffi::ibv_cq,
    recv_cq: *mut ffi::ibv_cq,
    srq: Option<*mut ffi::ibv_srq>,
    cap: ibv_qp_cap,
) -> ibv_qp_init_attr {
    ibv_qp_init_attr {
        qp_context: std::ptr::null_mut(),
        send_cq,
        recv_cq,
        srq: srq.unwrap_or(std::ptr::null_mut()),
        cap,
        qp_type: ffi::IBV_QPT_RC,
        sq_sig_all: 0,
    }
}

fn our_cq<'a>(pd: &PdShared, cq: &'a dyn netdirect::Cq) -> Result<&'a VerbsCq, Status> {
    let cq = cq
        .as_any()
        .downcast_ref::<VerbsCq>()
        .ok_or(Status::INVALID_PARAMETER)?;
    same_adapter(&pd.adapter, &cq.shared.adapter)?;
    Ok(cq)
}

/// A verbs QP: its two queues.
pub(crate) struct VerbsQp {
    pub(crate) shared: Arc<QpShared>,
    initiator: VerbsInitiator,
    receiver: VerbsReceiver,
}

impl VerbsQp {
    #[allow(clippy::too_many_arguments)]
    fn build(
        pd: &Arc<PdShared>,
        receive_cq: &dyn netdirect::Cq,
        initiator_cq: &dyn netdirect::Cq,
        srq: Option<Arc<SrqShared>>,
        context: u64,
        cap: ibv_qp_cap,
    ) -> Result<VerbsQp, Status> {
        let info = &pd.adapter.info;
        if cap.max_send_wr == 0
            || cap.max_send_wr > info.max_initiator_queue_depth
            || cap.max_recv_wr > info.max_receive_queue_depth
            || cap.max_send_sge > info.max_initiator_request_sge
            || cap.max_recv_sge > info.max_receive_request_sge
            || cap.max_inline_data > info.max_inline_data_size
        {
            return Err(Status::INVALID_PARAMETER);
        }
        let rcq = our_cq(pd, receive_cq)?.shared.clone();
        let icq = our_cq(pd, initiator_cq)?.shared.clone();
        let mut attr = init_attr(icq.cq.0, rcq.cq.0, srq.as_ref().map(|s| s.srq.0), cap);
        let lib = &pd.adapter.lib;
        let qp = lib
            .create_qp(pd.pd, &mut attr)
            .map_err(crate::errno_status)?;
        // INIT now, so receives may be posted before the connection (IB devices refuse them in
        // RESET); rdma-cm's INIT at connect or accept is an INIT to INIT then.
        let (init, mask) = &pd.adapter.qp_init;
        let rc = lib.modify_qp(qp, init, *mask);
        if rc != 0 {
            lib.destroy_qp(qp);
            return Err(crate::errno_status(rc));
        }
        let qp_num = lib.qp_num(qp);
        let shared = Arc::new(QpShared {
            adapter: pd.adapter.clone(),
            qp,
            qp_num,
            context,
            state: AtomicU8::new(UNCONNECTED),
            send: Mutex::new(Ring::default()),
            recv: Mutex::new(Ring::starting_at(RECV_BIT)),
            send_depth: cap.max_send_wr,
            recv_depth: cap.max_recv_wr,
            inline: cap.max_inline_data,
            max_initiator_sge: cap.max_send_sge.max(1),
            max_receive_sge: cap.max_recv_sge.max(1),
            _cqs: (icq, rcq),
            _srq: srq,
            _pd: pd.clone(),
        });
        pd.adapter
            .qps
            .write()
            .insert(qp_num, Arc::downgrade(&shared));
        Ok(VerbsQp {
            initiator: VerbsInitiator(shared.clone()),
            receiver: VerbsReceiver(shared.clone()),
            shared,
        })
    }

    pub(crate) fn create(pd: &Arc<PdShared>, c: QpConfig<'_>) -> Result<VerbsQp, Status> {
        Self::build(
            pd,
            c.receive_cq,
            c.initiator_cq,
            None,
            c.context,
            ibv_qp_cap {
                max_send_wr: c.initiator_queue_depth,
                max_recv_wr: c.receive_queue_depth,
                max_send_sge: c.max_initiator_sge,
                max_recv_sge: c.max_receive_sge,
                max_inline_data: c.inline_data_size,
            },
        )
    }

    pub(crate) fn create_with_srq(
        pd: &Arc<PdShared>,
        c: QpWithSrqConfig<'_>,
    ) -> Result<VerbsQp, Status> {
        let srq = c
            .srq
            .as_any()
            .downcast_ref::<VerbsSrq>()
            .ok_or(Status::INVALID_PARAMETER)?;
        same_adapter(&pd.adapter, &srq.shared.adapter)?;
        Self::build(
            pd,
            c.receive_cq,
            c.initiator_cq,
            Some(srq.shared.clone()),
            c.context,
            ibv_qp_cap {
                max_send_wr: c.initiator_queue_depth,
                max_recv_wr: 0,
                max_send_sge: c.max_initiator_sge,
                max_recv_sge: 0,
                max_inline_data: c.inline_data_size,
            },
        )
    }
}

fn flush(shared: &QpShared) {
    shared.flush();
}

impl Object for VerbsQp {
    fn object_type(&self) -> ObjectType {
        ObjectType::Qp
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Qp for VerbsQp {
    fn split(&mut self) -> (&mut dyn QpInitiator, &mut dyn QpReceiver) {
        (&mut self.initiator, &mut self.receiver)
    }

    fn into_split(self: Box<Self>) -> (Box<dyn QpInitiator>, Box<dyn QpReceiver>) {
        (Box::new(self.initiator), Box::new(self.receiver))
    }

    fn flush(&self) {
        flush(&self.shared);
    }

    fn close(self: Box<Self>) -> Request<()> {
        Request::ok(())
    }
}

/// SGEs to verbs SGEs, checked against the queue's limit (`STATUS_DATA_OVERRUN` above it, as
/// §10 row 1).
pub(crate) fn to_sges(
    sges: &[Sge],
    max: u32,
    out: &mut [ibv_sge; MAX_SGE],
) -> Result<usize, Status> {
    if sges.len() > max as usize || sges.len() > MAX_SGE {
        return Err(Status::DATA_OVERRUN);
    }
    for (o, s) in out.iter_mut().zip(sges) {
        *o = ibv_sge {
            addr: s.address,
            length: s.length,
            lkey: s.token.0,
        };
    }
    Ok(sges.len())
}

pub(crate) struct VerbsInitiator(Arc<QpShared>);
pub(crate) struct VerbsReceiver(Arc<QpShared>);

impl VerbsInitiator {
    /// The first two checks of every initiator post: flags valid for the operation, then a
    /// connection.
    /// The window of a bind or invalidate: `STATUS_NOT_SUPPORTED` on a device without
    /// windows, then the flags (§10 row 1), then a window of this adapter.
    fn window<'a>(
        &self,
        mw: &'a dyn Mw,
        flags: OpFlags,
        valid: OpFlags,
    ) -> Result<&'a VerbsMw, Status> {
        if self.0.adapter.info.max_window_size == 0 {
            return Err(Status::NOT_SUPPORTED);
        }
        self.admit(flags, valid)?;
        let mw = mw
            .as_any()
            .downcast_ref::<VerbsMw>()
            .ok_or(Status::INVALID_PARAMETER)?;
        same_adapter(&self.0.adapter, &mw.pd.adapter)?;
        Ok(mw)
    }

    fn admit(&self, flags: OpFlags, valid: OpFlags) -> Result<(), Status> {
        if !valid.contains(flags) {
            return Err(Status::INVALID_PARAMETER);
        }
        self.0.usable(true)
    }

    /// Posts a work request without SGEs (bind, invalidate) under the queue's depth.
    fn post_wr(
        &mut self,
        context: u64,
        op: OperationType,
        mut wr: ibv_send_wr,
        flags: OpFlags,
    ) -> Result<(), Status> {
        let q = &self.0;
        if !flags.contains(OpFlags::SILENT_SUCCESS) {
            wr.send_flags |= ffi::IBV_SEND_SIGNALED;
        }
        if flags.contains(OpFlags::READ_FENCE) {
            wr.send_flags |= ffi::IBV_SEND_FENCE;
        }
        let mut ring = q.send.lock();
        if ring.outstanding() >= q.send_depth as usize {
            return Err(Status::NO_MORE_ENTRIES);
        }
        let signaled = wr.send_flags & ffi::IBV_SEND_SIGNALED != 0;
        wr.wr_id = ring.push(context, op, signaled);
        match q.adapter.lib.post_send(q.qp, &mut wr) {
            0 => Ok(()),
            e => {
                ring.unpush();
                Err(post_status(e))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn post(
        &mut self,
        context: u64,
        op: OperationType,
        opcode: i32,
        sges: &mut [ibv_sge],
        flags: OpFlags,
        remote: (u64, u32),
        invalidate: u32,
    ) -> Result<(), Status> {
        let q = &self.0;
        let mut send_flags = 0;
        if !flags.contains(OpFlags::SILENT_SUCCESS) {
            send_flags |= ffi::IBV_SEND_SIGNALED;
        }
        // siw refuses a fenced RDMA read ("cannot fence read": its doorbell fails EINVAL and
        // leaves the request in the mapped queue): the fence is left off a read there. siw
        // issues reads in posting order and answers them in order, so only a read waiting for
        // an earlier read's data to land locally loses its ordering (§10 row 40).
        let fence_refused = opcode == ffi::IBV_WR_RDMA_READ
            && q.adapter.info.vendor_id == crate::adapter::SIW_VENDOR_ID;
        if flags.contains(OpFlags::READ_FENCE) && !fence_refused {
            send_flags |= ffi::IBV_SEND_FENCE;
        }
        if flags.contains(OpFlags::SEND_AND_SOLICIT_EVENT) {
            send_flags |= ffi::IBV_SEND_SOLICITED;
        }
        if flags.contains(OpFlags::INLINE) {
            let total: u64 = sges.iter().map(|s| u64::from(s.length)).sum();
            if total > u64::from(q.inline) {
                return Err(Status::BUFFER_OVERFLOW);
            }
            send_flags |= ffi::IBV_SEND_INLINE;
        }
        let mut ring = q.send.lock();
        if ring.outstanding() >= q.send_depth as usize {
            return Err(Status::NO_MORE_ENTRIES);
        }
        if !flags.contains(OpFlags::INLINE) {
            let sink = opcode == ffi::IBV_WR_RDMA_READ
                && !q
                    .adapter
                    .info
                    .adapter_flags
                    .contains(AdapterFlags::RDMA_READ_SINK_NOT_REQUIRED);
            q._pd.check_sges(sges, sink)?;
        }
        let mut wr = ibv_send_wr::zeroed();
        wr.sg_list = sges.as_mut_ptr();
        wr.num_sge = sges.len() as i32;
        wr.opcode = opcode;
        wr.send_flags = send_flags;
        wr.imm_or_inv = invalidate;
        wr.remote_addr = remote.0;
        wr.rkey = remote.1;
        let signaled = wr.send_flags & ffi::IBV_SEND_SIGNALED != 0;
        wr.wr_id = ring.push(context, op, signaled);
        match q.adapter.lib.post_send(q.qp, &mut wr) {
            0 => Ok(()),
            e => {
                ring.unpush();
                Err(post_status(e))
            }
        }
    }

    fn inline_sges(data: &[&[u8]], out: &mut [ibv_sge; MAX_SGE]) -> Result<usize, Status> {
        if data.len() > MAX_SGE {
            return Err(Status::DATA_OVERRUN);
        }
        for (o, d) in out.iter_mut().zip(data) {
            *o = ibv_sge {
                addr: d.as_ptr() as usize as u64,
                length: u32::try_from(d.len()).map_err(|_| Status::INVALID_PARAMETER)?,
                lkey: 0,
            };
        }
        Ok(data.len())
    }
}

/// A post verbs refused after our checks. Providers answer an errno of either sign, and siw
/// `-1` when its doorbell (a `write` to the kernel) failed, with the reason in `errno`.
fn post_status(e: i32) -> Status {
    let e = if e == -1 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        e.abs()
    };
    match e {
        libc::ENOMEM => Status::INSUFFICIENT_RESOURCES,
        libc::EINVAL => Status::INVALID_PARAMETER,
        _ => Status::CONNECTION_INVALID,
    }
}

impl QpInitiator for VerbsInitiator {
    fn send(&mut self, request_context: u64, sges: &[Sge], flags: OpFlags) -> Result<(), Status> {
        self.admit(flags, OpFlags::SEND_VALID)?;
        let mut v = [ibv_sge::default(); MAX_SGE];
        let n = to_sges(sges, self.0.max_initiator_sge, &mut v)?;
        self.post(
            request_context,
            OperationType::Send,
            ffi::IBV_WR_SEND,
            &mut v[..n],
            flags,
            (0, 0),
            0,
        )
    }

    fn send_inline(
        &mut self,
        request_context: u64,
        data: &[&[u8]],
        flags: OpFlags,
    ) -> Result<(), Status> {
        self.admit(flags, OpFlags::SEND_VALID)?;
        let mut v = [ibv_sge::default(); MAX_SGE];
        let n = Self::inline_sges(data, &mut v)?;
        self.post(
            request_context,
            OperationType::Send,
            ffi::IBV_WR_SEND,
            &mut v[..n],
            flags | OpFlags::INLINE,
            (0, 0),
            0,
        )
    }

    fn send_and_invalidate(
        &mut self,
        request_context: u64,
        sges: &[Sge],
        flags: OpFlags,
        remote_token: RemoteToken,
    ) -> Result<(), Status> {
        self.admit(flags, OpFlags::SEND_VALID)?;
        let mut v = [ibv_sge::default(); MAX_SGE];
        let n = to_sges(sges, self.0.max_initiator_sge, &mut v)?;
        self.post(
            request_context,
            OperationType::Send,
            ffi::IBV_WR_SEND_WITH_INV,
            &mut v[..n],
            flags,
            (0, 0),
            remote_token.0,
        )
    }

    fn read(
        &mut self,
        request_context: u64,
        sges: &[Sge],
        remote_address: u64,
        remote_token: RemoteToken,
        flags: OpFlags,
    ) -> Result<(), Status> {
        self.admit(flags, OpFlags::READ_VALID)?;
        let mut v = [ibv_sge::default(); MAX_SGE];
        let max = self
            .0
            .max_initiator_sge
            .min(self.0.adapter.info.max_read_request_sge);
        let n = to_sges(sges, max, &mut v)?;
        self.post(
            request_context,
            OperationType::Read,
            ffi::IBV_WR_RDMA_READ,
            &mut v[..n],
            flags - OpFlags::INLINE,
            (remote_address, remote_token.0),
            0,
        )
    }

    fn write(
        &mut self,
        request_context: u64,
        sges: &[Sge],
        remote_address: u64,
        remote_token: RemoteToken,
        flags: OpFlags,
    ) -> Result<(), Status> {
        self.admit(flags, OpFlags::WRITE_VALID)?;
        let mut v = [ibv_sge::default(); MAX_SGE];
        let n = to_sges(sges, self.0.max_initiator_sge, &mut v)?;
        self.post(
            request_context,
            OperationType::Write,
            ffi::IBV_WR_RDMA_WRITE,
            &mut v[..n],
            flags,
            (remote_address, remote_token.0),
            0,
        )
    }

    fn write_inline(
        &mut self,
        request_context: u64,
        data: &[&[u8]],
        remote_address: u64,
        remote_token: RemoteToken,
        flags: OpFlags,
    ) -> Result<(), Status> {
        self.admit(flags, OpFlags::WRITE_VALID)?;
        let mut v = [ibv_sge::default(); MAX_SGE];
        let n = Self::inline_sges(data, &mut v)?;
        self.post(
            request_context,
            OperationType::Write,
            ffi::IBV_WR_RDMA_WRITE,
            &mut v[..n],
            flags | OpFlags::INLINE,
            (remote_address, remote_token.0),
            0,
        )
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
        let mw = self.window(mw, flags, OpFlags::BIND_VALID)?;
        let mr = mr
            .as_any()
            .downcast_ref::<VerbsMr>()
            .ok_or(Status::INVALID_PARAMETER)?;
        same_adapter(&self.0.adapter, &mr.pd().adapter)?;
        let (mr_h, region) = mr.bind_target().ok_or(Status::INVALID_DEVICE_REQUEST)?;
        // Inside the MR (§7.10), and remote write through the window needs local write on it.
        let end = address.checked_add(length);
        let inside = length > 0
            && address >= region.address
            && end.is_some_and(|e| e <= region.address + region.length);
        if !inside {
            return Err(Status::INVALID_PARAMETER);
        }
        if flags.grants_remote_write() && !region.flags.grants_local_write() {
            return Err(Status::ACCESS_VIOLATION);
        }
        let mut access = 0;
        if flags.grants_remote_read() {
            access |= ffi::IBV_ACCESS_REMOTE_READ;
        }
        if flags.grants_remote_write() {
            access |= ffi::IBV_ACCESS_REMOTE_WRITE;
        }
        let rkey = mw.key_for_bind();
        let mut wr = ibv_send_wr::zeroed();
        wr.opcode = ffi::IBV_WR_BIND_MW;
        wr.bind_mw.mw = mw.mw.0;
        wr.bind_mw.rkey = rkey;
        wr.bind_mw.mr = mr_h.0;
        wr.bind_mw.addr = address;
        wr.bind_mw.length = length;
        wr.bind_mw.mw_access_flags = access;
        self.post_wr(request_context, OperationType::Bind, wr, flags)?;
        // The token is the new key from now on (valid once NdkBind returns, §3.9).
        mw.bound(rkey);
        Ok(())
    }

    fn fast_register(
        &mut self,
        _: u64,
        _: &dyn Mr,
        _: &[LogicalAddress],
        _: u32,
        _: u64,
        _: u64,
        _: OpFlags,
    ) -> Result<(), Status> {
        Err(Status::NOT_SUPPORTED)
    }

    fn invalidate(
        &mut self,
        request_context: u64,
        target: InvalidateTarget<'_>,
        flags: OpFlags,
    ) -> Result<(), Status> {
        // Only windows: fast-registered MRs do not exist here (kernel verbs only).
        let InvalidateTarget::Mw(mw) = target else {
            return Err(Status::NOT_SUPPORTED);
        };
        let mw = self.window(mw, flags, OpFlags::INVALIDATE_VALID)?;
        let mut wr = ibv_send_wr::zeroed();
        wr.opcode = ffi::IBV_WR_LOCAL_INV;
        wr.imm_or_inv = mw.rkey();
        self.post_wr(request_context, OperationType::Invalidate, wr, flags)
    }

    fn flush(&self) {
        flush(&self.0);
    }
}

impl QpReceiver for VerbsReceiver {
    fn receive(&mut self, request_context: u64, sges: &[Sge]) -> Result<(), Status> {
        let q = &self.0;
        if q._srq.is_some() {
            return Err(Status::INVALID_DEVICE_REQUEST);
        }
        // A QP in error still takes receives (as the soft provider does): the device would
        // never complete one posted now (iWARP), so the provider completes it cancelled.
        let in_error = q.state.load(Ordering::Acquire) == IN_ERROR;
        if !in_error {
            q.usable(false)?;
        } else if q._cqs.1.in_error() {
            return Err(Status::CONNECTION_INVALID);
        }
        let mut v = [ibv_sge::default(); MAX_SGE];
        let n = to_sges(sges, q.max_receive_sge, &mut v)?;
        let mut ring = q.recv.lock();
        if ring.outstanding() >= q.recv_depth as usize {
            return Err(Status::NO_MORE_ENTRIES);
        }
        q._pd.check_sges(&v[..n], false)?;
        if in_error {
            ring.push(request_context, OperationType::Receive, true);
            drop(ring);
            q._cqs.1.adopt_and_notify(q.qp_num);
            return Ok(());
        }
        let mut wr = ibv_recv_wr {
            wr_id: 0,
            next: std::ptr::null_mut(),
            sg_list: v.as_mut_ptr(),
            num_sge: n as i32,
        };
        wr.wr_id = ring.push(request_context, OperationType::Receive, true);
        match q.adapter.lib.post_recv(q.qp, &mut wr) {
            0 => Ok(()),
            e => {
                ring.unpush();
                Err(post_status(e))
            }
        }
    }

    fn flush(&self) {
        flush(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_retires_silent_requests_before_a_signaled_one() {
        let mut r = Ring::default();
        let a = r.push(10, OperationType::Write, false);
        let b = r.push(11, OperationType::Write, false);
        let c = r.push(12, OperationType::Send, true);
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(r.retire(c, true), Some((12, OperationType::Send)));
        assert!(r.pending.is_empty());
        let d = r.push(13, OperationType::Read, true);
        r.unpush();
        assert_eq!(r.push(14, OperationType::Read, true), d);
        assert_eq!(r.retire(99, true), None);
    }

    /// siw completes a Send posted behind Reads before them: the Reads stay outstanding, and
    /// their own completions still find them (CI saw a guest read-bw lose its Reads to a
    /// Credit Send's completion and time out).
    #[test]
    fn a_send_completing_before_earlier_reads_leaves_them_outstanding() {
        let mut r = Ring::default();
        let r1 = r.push(1, OperationType::Read, true);
        let r2 = r.push(2, OperationType::Read, false);
        let r3 = r.push(3, OperationType::Read, true);
        let w = r.push(4, OperationType::Write, false);
        let s = r.push(5, OperationType::Send, true);
        // iWARP: the Send's completion retires the silent Write only.
        assert_eq!(r.retire(s, true), Some((5, OperationType::Send)));
        assert_eq!(r.outstanding(), 3);
        assert_eq!(r.retire(r1, true), Some((1, OperationType::Read)));
        // A Read's completion covers the silent Read before it.
        assert_eq!(r.retire(r3, true), Some((3, OperationType::Read)));
        assert_eq!(r.outstanding(), 0);
        assert_eq!(r.retire(r2, true), None);
        assert_eq!(r.retire(w, true), None);
        // In-order devices (RoCE, InfiniBand): a later completion covers silent Reads too,
        // never a signaled request.
        let mut r = Ring::default();
        let r1 = r.push(1, OperationType::Read, true);
        r.push(2, OperationType::Read, false);
        let s = r.push(3, OperationType::Send, true);
        assert_eq!(r.retire(s, false), Some((3, OperationType::Send)));
        assert_eq!(r.outstanding(), 1);
        assert_eq!(r.retire(r1, false), Some((1, OperationType::Read)));
    }

    /// siw's library answers `-1` when its doorbell failed, with the kernel's reason in errno;
    /// others answer an errno of either sign.
    #[test]
    fn post_status_reads_siws_errno() {
        assert_eq!(post_status(libc::EINVAL), Status::INVALID_PARAMETER);
        assert_eq!(post_status(-libc::ENOMEM), Status::INSUFFICIENT_RESOURCES);
        // readlink of a directory fails EINVAL: errno is what a failed doorbell leaves.
        assert!(std::fs::read_link("/").is_err());
        assert_eq!(post_status(-1), Status::INVALID_PARAMETER);
    }

    #[test]
    fn ring_counts_outstanding_requests_until_retired() {
        let mut r = Ring::default();
        let a = r.push(1, OperationType::Send, true);
        r.push(2, OperationType::Send, false);
        let c = r.push(3, OperationType::Send, true);
        assert_eq!(r.outstanding(), 3);
        assert_eq!(r.retire(a, true), Some((1, OperationType::Send)));
        assert_eq!(r.outstanding(), 2);
        // A signaled completion retires the silent ones before it.
        assert_eq!(r.retire(c, true), Some((3, OperationType::Send)));
        assert_eq!(r.outstanding(), 0);
    }

    #[test]
    fn wc_statuses() {
        assert_eq!(wc_status(ffi::IBV_WC_SUCCESS), Status::SUCCESS);
        assert_eq!(wc_status(ffi::IBV_WC_WR_FLUSH_ERR), Status::CANCELLED);
        assert_eq!(
            wc_status(ffi::IBV_WC_REM_ACCESS_ERR),
            Status::ACCESS_VIOLATION
        );
        assert_eq!(wc_status(ffi::IBV_WC_RNR_RETRY_EXC_ERR), Status::IO_TIMEOUT);
        assert_eq!(
            wc_status(ffi::IBV_WC_LOC_QP_OP_ERR),
            Status::CONNECTION_ABORTED
        );
    }
}
