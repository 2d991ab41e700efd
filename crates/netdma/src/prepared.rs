//! Chain validation (what the NetDMA interface checks before a provider sees a chain) and
//! descriptor execution (shared by every software engine).

use crate::copy::{self, ChannelToken, CopyMethod, Lease};
use crate::descriptor::{Chain, Link, Pa};
use crate::flags::{ControlFlags, Extensions, OpType, ProviderFlags};
use crate::method::CopyPlan;
use crate::status::{Result, Status};
use smallvec::SmallVec;
use std::sync::atomic::{AtomicBool, Ordering};

/// What validation needs to know about the provider.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caps {
    pub(crate) version: (u8, u8),
    pub(crate) flags: ProviderFlags,
    pub(crate) extensions: Extensions,
    pub(crate) max_transfer: u32,
}

#[derive(Clone, Debug)]
enum Kind {
    Null,
    ContextChange,
    /// A copy; page breaks and CRC (rare) are boxed so that a plain copy op stays small.
    Copy {
        src: Pa,
        dst: Pa,
        ex: Option<Box<CopyEx>>,
    },
    Fill {
        dst: Pa,
        pattern: u64,
    },
    Compare {
        a: Pa,
        b: Pa,
        result: Pa,
    },
    Crc {
        src: Pa,
        seed: u32,
        result: Pa,
    },
}

#[derive(Clone, Copy, Debug, Default)]
struct CopyEx {
    src_next: Option<Pa>,
    dst_next: Option<Pa>,
    crc: Option<(u32, Pa)>,
}

impl CopyEx {
    fn boxed(self) -> Option<Box<CopyEx>> {
        (self.src_next.is_some() || self.dst_next.is_some() || self.crc.is_some())
            .then(|| Box::new(self))
    }
}

#[derive(Clone, Debug)]
struct Op {
    flags: ControlFlags,
    len: u64,
    kind: Kind,
    user: [u64; 2],
}

/// How an engine executes descriptors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOptions {
    /// Which copy kernel for which descriptor size (the whole descriptor's `TransferSize`).
    pub plan: CopyPlan,
    /// Work is split into pieces of at most this many bytes; `abort` is checked between pieces.
    pub chunk: u64,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            plan: CopyPlan::fixed(CopyMethod::Memcpy),
            chunk: 1 << 20,
        }
    }
}

/// A validated chain in execution order, holding leases on the buffers it uses: what the
/// interface passes to [`ProviderChannel::start`](crate::ProviderChannel::start) /
/// [`append`](crate::ProviderChannel::append).
///
/// Dropping it releases the leases; an engine must drop it (or let it be discarded) before it
/// reports the submission as finished, so that the client can access the buffers right away.
#[derive(Debug)]
pub struct PreparedChain {
    // Inline for the common single copy between two buffers: a streamed submission's memory
    // is allocated by the client and freed by the worker, on another CPU.
    ops: SmallVec<[Op; 1]>,
    leases: SmallVec<[Option<Lease>; 2]>,
}

const PAGE: u64 = 4096;

#[inline(always)]
fn op_of(d: &crate::descriptor::Descriptor, caps: &Caps) -> Result<Op> {
    let f = d.control_flags;
    if f.has_reserved_bits() {
        return Err(Status::INVALID_PARAMETER);
    }
    let v2 = caps.version >= (2, 0);
    let len = u64::from(d.transfer_size);
    let pb = f.intersects(ControlFlags::SOURCE_PAGE_BREAK | ControlFlags::DESTINATION_PAGE_BREAK);
    let op = f.op_type();
    let user = [d.user_context1, d.user_context2];
    let ext = |e: Extensions| {
        if caps.extensions.contains(e) {
            Ok(())
        } else {
            Err(Status::NOT_SUPPORTED)
        }
    };
    let kind = match op {
        OpType::CONTEXT_CHANGE => {
            if !caps.flags.contains(ProviderFlags::DCA_SUPPORTED) {
                return Err(Status::NOT_SUPPORTED);
            }
            return Ok(Op {
                flags: f,
                len: 0,
                kind: Kind::ContextChange,
                user,
            });
        }
        OpType::STANDARD_DMA
        | OpType::FILL
        | OpType::COMPARE
        | OpType::CRC32C
        | OpType::COPY_CRC32C => {
            if op != OpType::STANDARD_DMA {
                ext(match op {
                    OpType::FILL => Extensions::FILL,
                    OpType::COMPARE => Extensions::COMPARE,
                    OpType::CRC32C => Extensions::CRC32C,
                    _ => Extensions::COPY_CRC32C,
                })?;
                if pb {
                    return Err(Status::INVALID_PARAMETER);
                }
            }
            if f.contains(ControlFlags::NULL_TRANSFER) {
                Kind::Null
            } else {
                if d.transfer_size > caps.max_transfer {
                    return Err(Status::INVALID_PARAMETER);
                }
                match op {
                    OpType::STANDARD_DMA => {
                        if pb && !v2 {
                            return Err(Status::NOT_SUPPORTED);
                        }
                        let brk = |flag, next: Pa| {
                            if !f.contains(flag) {
                                Ok(None)
                            } else if next.offset() % PAGE != 0 {
                                Err(Status::INVALID_PARAMETER)
                            } else {
                                Ok(Some(next))
                            }
                        };
                        Kind::Copy {
                            src: d.source,
                            dst: d.destination,
                            ex: CopyEx {
                                src_next: brk(ControlFlags::SOURCE_PAGE_BREAK, d.next_source)?,
                                dst_next: brk(
                                    ControlFlags::DESTINATION_PAGE_BREAK,
                                    d.next_destination,
                                )?,
                                crc: None,
                            }
                            .boxed(),
                        }
                    }
                    OpType::FILL => Kind::Fill {
                        dst: d.destination,
                        pattern: d.source.0,
                    },
                    OpType::COMPARE => Kind::Compare {
                        a: d.source,
                        b: d.destination,
                        result: d.next_destination,
                    },
                    OpType::CRC32C => Kind::Crc {
                        src: d.source,
                        seed: d.next_source.0 as u32,
                        result: d.destination,
                    },
                    _ => Kind::Copy {
                        src: d.source,
                        dst: d.destination,
                        ex: CopyEx {
                            crc: Some((d.next_source.0 as u32, d.next_destination)),
                            ..CopyEx::default()
                        }
                        .boxed(),
                    },
                }
            }
        }
        _ => return Err(Status::INVALID_PARAMETER),
    };
    Ok(Op {
        flags: f,
        len,
        kind,
        user,
    })
}

impl PreparedChain {
    /// Validates `chain` for a provider with `caps` and leases its buffers for `channel`.
    pub(crate) fn prepare(chain: Chain, caps: &Caps, channel: u64) -> Result<PreparedChain> {
        let n = chain.descriptors.len();
        if n == 0 {
            return Err(Status::INVALID_PARAMETER);
        }
        // Fast path: the builder's sequential links 0 -> 1 -> ... (NULL-terminated at the end,
        // or followed for `count` descriptors).
        let walk = match chain.style {
            None => n,
            Some(c) => (c as usize).clamp(1, n),
        };
        let sequential = (0..walk - 1).all(|i| chain.descriptors[i].next == Link::to(i + 1))
            && (chain.style.is_some() || chain.descriptors[n - 1].next == Link::NULL);
        let mut order = Vec::new();
        let mut seen = Vec::new();
        let mut i = 0usize;
        match chain.style {
            _ if sequential && (chain.style.is_none() || caps.version >= (2, 0)) => {
                if let Some(c) = chain.style {
                    if c == 0 || c as usize > n {
                        return Err(Status::INVALID_PARAMETER);
                    }
                }
                // No order table needed: execution order is array order.
                let mut ops = SmallVec::with_capacity(walk);
                for d in &chain.descriptors[..walk] {
                    ops.push(op_of(d, caps)?);
                }
                return Self::with_leases(chain, ops, channel);
            }
            None => {
                seen.resize(n, false);
                loop {
                    if seen[i] {
                        return Err(Status::INVALID_PARAMETER); // cycle
                    }
                    seen[i] = true;
                    order.push(i);
                    match chain.descriptors[i].next.index() {
                        None => break,
                        Some(j) if j < n => i = j,
                        Some(_) => return Err(Status::INVALID_PARAMETER),
                    }
                }
            }
            Some(count) => {
                if caps.version < (2, 0) {
                    return Err(Status::NOT_SUPPORTED);
                }
                if count == 0 || count as usize > n {
                    return Err(Status::INVALID_PARAMETER);
                }
                seen.resize(n, false);
                for k in 0..count as usize {
                    if seen[i] {
                        return Err(Status::INVALID_PARAMETER);
                    }
                    seen[i] = true;
                    order.push(i);
                    if k + 1 < count as usize {
                        match chain.descriptors[i].next.index() {
                            Some(j) if j < n => i = j,
                            _ => return Err(Status::INVALID_PARAMETER),
                        }
                    }
                }
            }
        }
        let mut ops = SmallVec::with_capacity(order.len());
        for &i in &order {
            ops.push(op_of(&chain.descriptors[i], caps)?);
        }
        Self::with_leases(chain, ops, channel)
    }

    /// Leases every buffer the ops use (read, or write for destinations and results).
    fn with_leases(chain: Chain, ops: SmallVec<[Op; 1]>, channel: u64) -> Result<PreparedChain> {
        // Lease mode per buffer slot: 0 unused, 1 read, 2 write.
        // (On the stack for the usual handful of buffers.)
        let nb = chain.buffers.len();
        let mut small = [0u8; 8];
        let mut heap = Vec::new();
        let mode: &mut [u8] = if nb <= small.len() {
            &mut small[..nb]
        } else {
            heap.resize(nb, 0u8);
            &mut heap
        };
        let mut mark = |pa: Pa, w: bool| {
            if let Some(m) = mode.get_mut(pa.slot().0 as usize) {
                *m = (*m).max(if w { 2 } else { 1 });
            }
        };
        for op in &ops {
            match op.kind {
                Kind::Null | Kind::ContextChange => {}
                Kind::Copy { src, dst, ref ex } => {
                    let CopyEx {
                        src_next,
                        dst_next,
                        crc,
                    } = ex.as_deref().copied().unwrap_or_default();
                    mark(src, false);
                    src_next.into_iter().for_each(|p| mark(p, false));
                    mark(dst, true);
                    dst_next.into_iter().for_each(|p| mark(p, true));
                    if let Some((_, r)) = crc {
                        mark(r, true);
                    }
                }
                Kind::Fill { dst, .. } => mark(dst, true),
                Kind::Compare { a, b, result } => {
                    mark(a, false);
                    mark(b, false);
                    mark(result, true);
                }
                Kind::Crc { src, result, .. } => {
                    mark(src, false);
                    mark(result, true);
                }
            }
        }
        let mut leases = SmallVec::with_capacity(nb);
        for (b, &m) in chain.buffers.iter().zip(mode.iter()) {
            leases.push(match m {
                0 => None,
                m => Some(Lease::acquire(b, channel, m == 2)?),
            });
        }
        crate::descriptor::recycle_descriptors(chain.descriptors);
        Ok(PreparedChain { ops, leases })
    }

    /// Bytes the chain moves or reads (sum of the transfer sizes of its non-NULL
    /// descriptors).
    pub fn bytes(&self) -> u64 {
        self.ops
            .iter()
            .filter(|o| !matches!(o.kind, Kind::Null | Kind::ContextChange))
            .map(|o| o.len)
            .sum()
    }

    /// Descriptors that move or read data (not NULL transfers or context changes).
    pub fn data_descriptors(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| !matches!(o.kind, Kind::Null | Kind::ContextChange))
            .count()
    }

    /// Number of descriptors, in execution order.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if there are no descriptors (never the case for a validated chain).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Control flags of descriptor `i` (execution order).
    pub fn flags(&self, i: usize) -> ControlFlags {
        self.ops[i].flags
    }

    /// `UserContext1/2` of descriptor `i`.
    pub fn user_context(&self, i: usize) -> [u64; 2] {
        self.ops[i].user
    }

    fn lease(&self, pa: Pa) -> Result<&Lease> {
        self.leases
            .get(pa.slot().0 as usize)
            .and_then(Option::as_ref)
            .ok_or(Status::ACCESS_VIOLATION)
    }

    /// Executes descriptors `from..` for as long as they are plain copies (one contiguous
    /// piece, no completion flags, no extension), checking `stop` before each; returns how
    /// many it executed and the error that ended the run, if any. The executor's fast path:
    /// such descriptors need no bookkeeping between them.
    pub(crate) fn run_plain(
        &self,
        from: usize,
        token: &mut ChannelToken,
        opts: &ExecOptions,
        stop: &AtomicBool,
    ) -> (usize, Result<()>) {
        const FLAGGED: ControlFlags = ControlFlags::INTERRUPT_ON_COMPLETION
            .union(ControlFlags::STATUS_UPDATE_ON_COMPLETION)
            .union(ControlFlags::DESTINATION_DCA_ENABLE)
            .union(ControlFlags::DESTINATION_NO_SNOOP);
        let mut memo = (u64::MAX, CopyMethod::Memcpy);
        // Leases checked once per (source slot, destination slot), not per descriptor.
        let mut pair: Option<(u64, copy::CopyPair<'_>)> = None;
        let mut done = 0;
        for op in &self.ops[from.min(self.ops.len())..] {
            let Kind::Copy { src, dst, ex: None } = op.kind else {
                break;
            };
            if op.flags.intersects(FLAGGED) || op.len > opts.chunk {
                break;
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if memo.0 != op.len {
                memo = (op.len, opts.plan.method_for(op.len));
            }
            let slots = (src.0 >> 48) << 16 | dst.0 >> 48;
            if pair.as_ref().is_none_or(|p| p.0 != slots) {
                let p = match (self.lease(src), self.lease(dst)) {
                    (Ok(sl), Ok(dl)) => copy::CopyPair::new(token, sl, dl),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
                match p {
                    Ok(p) => pair = Some((slots, p)),
                    Err(e) => return (done, Err(e)),
                }
            }
            if let Some((_, p)) = &pair {
                if let Err(e) = p.copy(token, src.offset(), dst.offset(), op.len, memo.1) {
                    return (done, Err(e));
                }
            }
            done += 1;
        }
        (done, Ok(()))
    }

    /// Executes descriptor `i`. Errors: `STATUS_ACCESS_VIOLATION` for an address outside its
    /// buffer (nothing of that piece is touched), `STATUS_CANCELLED` if `abort` was seen
    /// between pieces (the descriptor may be partly done), `STATUS_INVALID_PARAMETER` if
    /// `token` is not the channel the chain was prepared for.
    pub fn execute(
        &self,
        i: usize,
        token: &mut ChannelToken,
        opts: &ExecOptions,
        abort: &AtomicBool,
    ) -> Result<()> {
        let op = &self.ops[i];
        let len = op.len;
        match op.kind {
            Kind::Null | Kind::ContextChange => Ok(()),
            Kind::Fill { dst, pattern } => {
                let l = self.lease(dst)?;
                let chunk = opts.chunk.max(8) & !7;
                let mut done = 0;
                while done < len {
                    if abort.load(Ordering::Relaxed) {
                        return Err(Status::CANCELLED);
                    }
                    let n = chunk.min(len - done);
                    copy::fill(token, l, dst.offset() + done, n, pattern)?;
                    done += n;
                }
                Ok(())
            }
            Kind::Compare { a, b, result } => {
                let r = copy::compare(
                    token,
                    self.lease(a)?,
                    a.offset(),
                    self.lease(b)?,
                    b.offset(),
                    len,
                )?;
                let v = r.unwrap_or(u64::MAX);
                copy::write_bytes(
                    token,
                    self.lease(result)?,
                    result.offset(),
                    &v.to_le_bytes(),
                )
            }
            Kind::Crc { src, seed, result } => {
                let c = copy::crc32c(token, self.lease(src)?, src.offset(), len, seed)?;
                copy::write_bytes(
                    token,
                    self.lease(result)?,
                    result.offset(),
                    &c.to_le_bytes(),
                )
            }
            Kind::Copy { src, dst, ref ex } => {
                // DCA: the consumer wants the data in its cache; NO_SNOOP: it need not be.
                let kind = if op.flags.contains(ControlFlags::DESTINATION_DCA_ENABLE) {
                    opts.plan.temporal_for(len)
                } else if op.flags.contains(ControlFlags::DESTINATION_NO_SNOOP) {
                    CopyMethod::NonTemporal
                } else {
                    opts.plan.method_for(len)
                };
                if ex.is_none() && len <= opts.chunk {
                    // Fast path: one contiguous piece.
                    let (sl, dl) = (self.lease(src)?, self.lease(dst)?);
                    return copy::copy(token, sl, src.offset(), dl, dst.offset(), len, kind);
                }
                let CopyEx {
                    src_next,
                    dst_next,
                    crc,
                } = ex.as_deref().copied().unwrap_or_default();
                let segs = |a: Pa, next: Option<Pa>| -> [(Pa, u64); 2] {
                    match next {
                        None => [(a, len), (a, 0)],
                        Some(nx) => {
                            let first = (PAGE - a.offset() % PAGE).min(len);
                            [(a, first), (nx, len - first)]
                        }
                    }
                };
                let (ss, ds) = (segs(src, src_next), segs(dst, dst_next));
                let (mut si, mut so, mut di, mut dof) = (0usize, 0u64, 0usize, 0u64);
                let mut c = crc.map(|(seed, _)| seed);
                let mut done = 0u64;
                while done < len {
                    if abort.load(Ordering::Relaxed) {
                        return Err(Status::CANCELLED);
                    }
                    while ss[si].1 == so {
                        si += 1;
                        so = 0;
                    }
                    while ds[di].1 == dof {
                        di += 1;
                        dof = 0;
                    }
                    let n = (ss[si].1 - so).min(ds[di].1 - dof).min(opts.chunk.max(1));
                    let (sp, spo) = (ss[si].0, ss[si].0.offset() + so);
                    let (dp, dpo) = (ds[di].0, ds[di].0.offset() + dof);
                    let dl = self.lease(dp)?;
                    copy::copy(token, self.lease(sp)?, spo, dl, dpo, n, kind)?;
                    if let Some(v) = c.as_mut() {
                        *v = copy::crc32c(token, dl, dpo, n, *v)?;
                    }
                    so += n;
                    dof += n;
                    done += n;
                }
                if let (Some(v), Some((_, r))) = (c, crc) {
                    copy::write_bytes(token, self.lease(r)?, r.offset(), &v.to_le_bytes())?;
                }
                Ok(())
            }
        }
    }
}
