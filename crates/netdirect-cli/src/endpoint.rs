//! One side of a connection as every persona uses it: a CQ shared by both queues of a QP, a
//! registered data buffer, a registered receive ring, the connector, and posting receives,
//! polling, waiting (busy or by CQ notification) and reaping with one error text. The
//! protocols on top ([`crate::conn::Conn`] for nd's own, [`crate::perftest_cm`] for perftest's
//! `-R`, [`crate::rping`] for Linux rping) differ only in what they post and how they read the
//! completions.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netdirect::{Buffer, Connector, Cq, Mr, Qp, QpWithSrqConfig, Srq, SrqConfig};
use netdirect_types::{Completion, MrFlags, Sge, Status};

use crate::conn::{QueueSizes, Side, cq_and_qp, idle, op_name, register};
use crate::error::{Context, Error, Result, explain, wait};

/// A CQ, a QP on it, and the SRQ the QP takes its receives from.
type Objects = (Box<dyn Cq>, Box<dyn Qp>, Box<dyn Srq>);

/// [`cq_and_qp`] with the receives on an SRQ of `q.receive` entries.
fn cq_and_qp_with_srq(
    side: &Side,
    q: QueueSizes,
    receive_sge: u32,
    what: &str,
    timeout: Duration,
) -> Result<Objects> {
    let depth = (q.receive + q.initiator + q.spare) as u32;
    let cq = wait(
        side.adapter.create_cq(depth, Arc::new(|_| {}), None),
        timeout,
        &format!("cannot create {what} completion queue of {depth} entries"),
    )?;
    let srq = wait(
        side.pd.create_srq(SrqConfig {
            depth: q.receive as u32,
            max_receive_sge: receive_sge,
            notify_threshold: 0,
            notification: None,
            affinity: None,
        }),
        timeout,
        &format!(
            "cannot create {what} shared receive queue of {} entries (adapter limit {})",
            q.receive, side.info.max_srq_depth
        ),
    )?;
    let qp = wait(
        side.pd.create_qp_with_srq(QpWithSrqConfig {
            receive_cq: &*cq,
            initiator_cq: &*cq,
            srq: &*srq,
            context: 0,
            initiator_queue_depth: q.initiator as u32,
            max_initiator_sge: q.initiator_sge as u32,
            inline_data_size: q.inline,
        }),
        timeout,
        &format!(
            "cannot create {what} queue pair on a shared receive queue (send depth {}, inline {})",
            q.initiator, q.inline
        ),
    )?;
    Ok((cq, qp, srq))
}

/// What an [`Endpoint`] is made of.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    /// Queue depths of the QP (and so of the CQ).
    pub queues: QueueSizes,
    /// Octets of the data buffer.
    pub data_len: usize,
    /// What the peer (and our reads) may do with the data buffer.
    pub data_access: MrFlags,
    /// Octets of one receive slot.
    pub slot: usize,
    /// Receive slots.
    pub slots: usize,
    /// Non-zero (and less than `slot`): each slot keeps only its first `private_head` octets
    /// to itself, and the rest of every slot is one buffer they share, posted as a second SGE
    /// (the adapter must take two receive SGEs). This is perftest's receive layout: its receives of more
    /// than half its cycle buffer all point at the same octets, so a Send target moves data
    /// into one cache-resident buffer, as a TCP receiver's single buffer does. A control
    /// message that fits in the head is never overwritten by the messages behind it.
    pub private_head: usize,
    /// Names the CQ and QP in errors ("a", "the control", …).
    pub what: &'a str,
    /// Receives go to a shared receive queue of the QP's (perftest's `--use-srq`) instead of
    /// the QP's own receive queue.
    pub srq: bool,
}

/// The access a data buffer gets that the peer writes and reads and we read into.
pub const REMOTE_ACCESS: MrFlags = MrFlags::ALLOW_LOCAL_WRITE
    .union(MrFlags::ALLOW_REMOTE_WRITE)
    .union(MrFlags::ALLOW_REMOTE_READ)
    .union(MrFlags::RDMA_READ_SINK);

/// What a poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    /// A successful completion.
    Done(Completion),
    /// Nothing yet.
    Empty,
    /// The connection ended: a request was flushed (`STATUS_CANCELLED`, its Terminate kept for
    /// [`Endpoint::gone`]), or the CQ is empty after the disconnect event fired.
    Ended,
}

/// A connection's CQ, QP, buffers and connector.
pub struct Endpoint {
    /// The connector (dropped first by [`Endpoint::close`]).
    pub connector: Option<Box<dyn Connector>>,
    /// The QP.
    pub qp: Box<dyn Qp>,
    /// The SRQ the QP takes its receives from, if any (dropped after the QP).
    srq: Option<Box<dyn Srq>>,
    /// The CQ of both queues.
    pub cq: Box<dyn Cq>,
    /// The data buffer.
    pub data: Buffer,
    /// Its region.
    pub data_mr: Box<dyn Mr>,
    /// The receive ring: `slots` slots of `slot` octets, or (with a private head) `slots`
    /// heads followed by the one tail they share.
    pub rx: Buffer,
    rx_mr: Box<dyn Mr>,
    /// Octets of a receive slot.
    pub slot: usize,
    /// Octets of each slot's own head when the slots share their tail; 0 when they do not.
    head: usize,
    /// Offset of the shared tail in `rx`.
    tail_at: usize,
    /// Initiator requests outstanding that the owner counts (it decides which).
    pub tx_out: usize,
    results: Vec<Completion>,
    ready: VecDeque<Completion>,
    /// How long a wait may last.
    pub timeout: Duration,
    /// Set by the disconnect event ([`Endpoint::disconnect_event`]).
    peer_gone: Arc<AtomicBool>,
    /// The provider code of a flushed completion that carried a Terminate.
    terminate: Option<u32>,
    /// Block on the CQ's notification while waiting (perftest's `-e`) instead of busy polling.
    pub events: bool,
    /// The local address of the connection.
    pub local: Option<SocketAddr>,
    /// The peer's address.
    pub peer: Option<SocketAddr>,
}

impl Endpoint {
    /// Creates the CQ, QP, buffers and regions (no receive posted yet).
    pub fn new(side: &Side, shape: Shape<'_>, timeout: Duration) -> Result<Endpoint> {
        let head = if shape.private_head < shape.slot {
            shape.private_head
        } else {
            0
        };
        let receive_sge = if head > 0 { 2 } else { 1 };
        let (cq, qp, srq) = if shape.srq {
            let (cq, qp, srq) =
                cq_and_qp_with_srq(side, shape.queues, receive_sge, shape.what, timeout)?;
            (cq, qp, Some(srq))
        } else {
            let (cq, qp) = cq_and_qp(side, shape.queues, receive_sge, shape.what, timeout)?;
            (cq, qp, None)
        };
        let data = Buffer::new(shape.data_len.max(1));
        let data_mr = register(side, &data, shape.data_access, timeout)?;
        let (rx_len, tail_at) = if head > 0 {
            let tail_at = head * shape.slots;
            (tail_at + (shape.slot - head), tail_at)
        } else {
            (shape.slot * shape.slots, 0)
        };
        let rx = Buffer::new(rx_len.max(1));
        let rx_mr = register(side, &rx, MrFlags::ALLOW_LOCAL_WRITE, timeout)?;
        Ok(Endpoint {
            connector: None,
            qp,
            srq,
            cq,
            data,
            data_mr,
            rx,
            rx_mr,
            slot: shape.slot,
            head,
            tail_at,
            tx_out: 0,
            results: vec![Completion::EMPTY; 64],
            ready: VecDeque::new(),
            timeout,
            peer_gone: Arc::new(AtomicBool::new(false)),
            terminate: None,
            events: false,
            local: None,
            peer: None,
        })
    }

    /// The disconnect callback to give `accept`/`complete_connect`: once it fired, a poll
    /// that finds the CQ empty says [`Polled::Ended`] (a dead or Ctrl-C'd peer is noticed
    /// within a poll, not at the timeout).
    pub fn disconnect_event(&self) -> netdirect::DisconnectEvent {
        let flag = self.peer_gone.clone();
        Box::new(move || flag.store(true, Ordering::Release))
    }

    /// Posts the receive of slot `slot` with request context `context`.
    #[inline]
    pub fn post_receive(&mut self, context: u64, slot: usize) -> Result<()> {
        let base = self.rx.address();
        let token = self.rx_mr.local_token();
        let split;
        let whole;
        let sges: &[Sge] = if self.head > 0 {
            let tail = (self.slot - self.head) as u32;
            split = [
                Sge::new(base + (slot * self.head) as u64, self.head as u32, token),
                Sge::new(base + self.tail_at as u64, tail, token),
            ];
            &split
        } else {
            whole = Sge::new(base + (slot * self.slot) as u64, self.slot as u32, token);
            std::slice::from_ref(&whole)
        };
        match &mut self.srq {
            Some(srq) => srq.receive(context, sges),
            None => self.qp.receiver().receive(context, sges),
        }
        .context(|| "cannot post a receive".into())
    }

    /// Reads the start of receive slot `slot` into `out` (its head, then the shared tail).
    pub fn read_slot(&self, slot: usize, out: &mut [u8]) -> Result<()> {
        let read = |at: usize, out: &mut [u8]| {
            self.rx
                .read_at(at, out)
                .map_err(|e| Error::msg(e.to_string()))
        };
        if self.head == 0 {
            return read(slot * self.slot, out);
        }
        let (head, tail) = out.split_at_mut(out.len().min(self.head));
        read(slot * self.head, head)?;
        read(self.tail_at, tail)
    }

    /// `len` octets of receive slot `slot`.
    pub fn slot_bytes(&self, slot: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        let _ = self.read_slot(slot, &mut v);
        v
    }

    /// The next completion. A failed one (other than a flush) is an error that says what
    /// failed, its status, and the provider's code in words.
    #[inline]
    pub fn poll(&mut self) -> Result<Polled> {
        if self.ready.is_empty() {
            // Read the flag first: completions flushed by the disconnect are in the CQ before
            // the event fires, so an empty CQ after it means nothing more comes.
            let gone = self.peer_gone.load(Ordering::Acquire);
            let n = self.cq.get_results_ex(&mut self.results);
            if n == 0 {
                return Ok(if gone { Polled::Ended } else { Polled::Empty });
            }
            self.ready.extend(self.results[..n].iter().copied());
        }
        let Some(c) = self.ready.pop_front() else {
            return Ok(Polled::Empty);
        };
        if c.status == Status::SUCCESS {
            return Ok(Polled::Done(c));
        }
        if c.status == Status::CANCELLED {
            if c.provider_error_code != 0 {
                self.terminate.get_or_insert(c.provider_error_code);
            }
            return Ok(Polled::Ended);
        }
        Err(Error::status(
            format!(
                "a {} request failed ({}{})",
                op_name(c.op_type),
                explain(c.status),
                if c.provider_error_code != 0 {
                    format!(
                        "; {}",
                        netdirect_proto::ProviderError(c.provider_error_code)
                    )
                } else {
                    String::new()
                }
            ),
            c.status,
        ))
    }

    /// The error for a connection that ended while waiting for `what`: the peer's Terminate
    /// if one came, else a disconnect; `STATUS_CONNECTION_ABORTED`.
    pub fn gone(&self, what: &str) -> Error {
        let peer = self.peer.map_or(String::new(), |p| format!(" {p}"));
        let why = match self.terminate {
            Some(code) => format!(
                "the connection to the peer{peer} was terminated ({}) while waiting for {what}",
                netdirect_proto::ProviderError(code)
            ),
            None => format!("the peer{peer} disconnected while waiting for {what}"),
        };
        Error::status(why, Status::CONNECTION_ABORTED)
    }

    /// The next successful completion, if one is there; a connection that ended is an error
    /// ([`Endpoint::gone`]).
    #[inline]
    pub fn try_next(&mut self, what: &str) -> Result<Option<Completion>> {
        match self.poll()? {
            Polled::Done(c) => Ok(Some(c)),
            Polled::Empty => Ok(None),
            Polled::Ended => Err(self.gone(what)),
        }
    }

    /// Waits for the next completion without taking it: blocks on the CQ's notification with
    /// [`Endpoint::events`] (up to the deadline), else gives the CPU away once (busy polling).
    pub fn idle(&mut self, deadline: Instant, what: &str) -> Result<()> {
        if !self.events || !self.ready.is_empty() {
            return idle(deadline, what);
        }
        self.sleep(deadline, what)
    }

    /// Blocks on the CQ's notification until a completion comes (taken into the ready queue,
    /// not handed out) or the deadline passes (then an error naming `what`).
    pub fn sleep(&mut self, deadline: Instant, what: &str) -> Result<()> {
        if !self.ready.is_empty() {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = self.cq.wait(&mut self.results, Duration::ZERO, left);
        self.ready.extend(self.results[..n].iter().copied());
        if n == 0 && Instant::now() > deadline {
            return idle(deadline, what);
        }
        Ok(())
    }

    /// Disconnects (best effort, at most `within`) and drops everything.
    pub fn close(mut self, within: Duration) {
        if let Some(c) = self.connector.take() {
            let _ = c.disconnect().wait_timeout(within);
            drop(c);
        }
    }
}
