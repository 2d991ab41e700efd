//! The send queue: work requests in order under ORD and read fences, local operations, read
//! responses for the peer's reads, and segmentation of each message into FPDUs.

use netdirect_types::Status;
use netdirect_wire::mpa;
use netdirect_wire::rdmap::{self, Message, ReadRequest};
use netdirect_wire::terminate::TermError;

use super::{
    Action, Core, FrameHeader, Payload, PostError, PostFlags, Request, Segmentation, State, Stream,
    TxFrame, WorkCompletion, WorkKind,
};
use crate::handshake::RtrKind;
use netdirect_types::counters::Counter;

#[derive(Debug, Clone)]
pub(super) struct SqEntry {
    pub(super) wr: u64,
    pub(super) req: Request,
    pub(super) flags: PostFlags,
    /// `Some` once finished: the status to report.
    pub(super) done: Option<Status>,
    /// A Send once started: its MSN (what a Terminate about it copies).
    pub(super) msn: Option<u32>,
}

#[derive(Debug, Clone)]
pub(super) enum TxKind<L> {
    Send {
        wr: u64,
        solicited: bool,
        invalidate: Option<u32>,
        msn: u32,
    },
    Write {
        wr: u64,
        stag: u32,
        to: u64,
    },
    ReadResponse {
        lease: Option<L>,
        sink_stag: u32,
        sink_to: u64,
        to: u64,
    },
}

#[derive(Debug, Clone)]
pub(super) struct TxMsg<L> {
    pub(super) kind: TxKind<L>,
    pub(super) len: u32,
    pub(super) sent: u32,
    /// The send-queue entry to mark done after the last segment.
    pub(super) entry: Option<u64>,
}

#[derive(Debug, Clone)]
pub(super) struct OutRead {
    pub(super) entry: u64,
    pub(super) msn: u32,
    pub(super) sink_stag: u32,
    pub(super) sink_to: u64,
    pub(super) len: u32,
    pub(super) got: u32,
    pub(super) rtr: bool,
}

impl<L: Clone> Stream<L> {
    /// How messages are cut into FPDUs from now on (default [`Segmentation::Even`]).
    pub fn set_segmentation(&mut self, segmentation: Segmentation) {
        self.core.segmentation = segmentation;
    }

    /// Queues a send-queue work request with id `wr`.
    pub fn post(&mut self, wr: u64, req: Request, flags: PostFlags) -> Result<(), PostError> {
        if self.core.state != State::Active {
            return Err(PostError::NotConnected);
        }
        if matches!(req, Request::Read { .. }) && self.core.limits.ord == 0 {
            return Err(PostError::NoReadCredits);
        }
        let id = self.core.next_entry;
        self.core.next_entry += 1;
        self.core.sq.push_back((
            id,
            SqEntry {
                wr,
                req,
                flags,
                done: None,
                msn: None,
            },
        ));
        Ok(())
    }

    /// The outcome of a local operation handed out by [`Stream::poll_action`].
    pub fn local_done(&mut self, wr: u64, status: Status) {
        let core = &mut self.core;
        let Some(id) = core.local_pending else { return };
        // An answer for another request is ignored: the pending one still waits for its own.
        if let Some((_, e)) = core.sq.iter_mut().find(|(i, e)| *i == id && e.wr == wr) {
            e.done = Some(status);
            core.local_pending = None;
            if !status.is_success() {
                core.fail(Some(TermError::RdmapLocalCatastrophic.into()), None, None);
            }
            core.retire();
        }
    }

    /// The next local operation to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.core.schedule_local();
        self.core.actions.pop_front()
    }

    /// The next FPDU to send, if any.
    pub fn poll_transmit(&mut self) -> Option<TxFrame<L>> {
        // Counted where the frame is built (`Core::header_frame`), from what the stream
        // knows: reading the opcode back out of the header here cost more than the counting.
        self.core.poll_transmit()
    }

    /// Whether [`Stream::poll_transmit`] has another frame ready now: the driver tells TCP
    /// more is coming (`MSG_MORE`) so that FPDUs share full segments.
    pub fn tx_pending(&self) -> bool {
        self.core.tx_pending()
    }
}

impl<L: Clone> Core<L> {
    pub(super) fn kind_of(req: &Request) -> WorkKind {
        match req {
            Request::Send { .. } => WorkKind::Send,
            Request::Write { .. } => WorkKind::Write,
            Request::Read { .. } => WorkKind::Read,
            Request::Local => WorkKind::Local,
        }
    }

    /// Moves finished requests at the head of the send queue to the completion queue.
    fn retire(&mut self) {
        while let Some((_, e)) = self.sq.front() {
            let Some(status) = e.done else { break };
            let (_, e) = self.sq.pop_front().expect("front exists");
            self.started = self.started.saturating_sub(1);
            if e.flags.signaled || !status.is_success() {
                self.completions.push_back(WorkCompletion {
                    wr: e.wr,
                    kind: Self::kind_of(&e.req),
                    status,
                    bytes: 0,
                    invalidated: None,
                    solicited: false,
                    provider_error: 0,
                });
            }
        }
    }

    pub(super) fn mark_done(&mut self, id: u64, status: Status) {
        if let Some((_, e)) = self.sq.iter_mut().find(|(i, _)| *i == id) {
            e.done = Some(status);
        }
        self.retire();
    }

    /// Hands out the next local operation if it is at the head of what may start.
    fn schedule_local(&mut self) {
        if self.state != State::Active || self.local_pending.is_some() || self.current.is_some() {
            return;
        }
        if let Some((id, e)) = self.sq.get(self.started) {
            if matches!(e.req, Request::Local) && self.may_start(e) {
                let (id, wr) = (*id, e.wr);
                self.started += 1;
                self.local_pending = Some(id);
                self.actions.push_back(Action { wr });
            }
        }
    }

    /// Whether `poll_transmit` would return a frame now (mirrors its steps).
    fn tx_pending(&self) -> bool {
        if self.term_tx.is_some() {
            return true;
        }
        if self.state != State::Active || !self.tx_allowed {
            return false;
        }
        if self.rtr_tx.is_some() || self.pending_frame.is_some() || self.current.is_some() {
            return true;
        }
        self.local_pending.is_none()
            && (!self.irq.is_empty()
                || self
                    .sq
                    .get(self.started)
                    .is_some_and(|(_, e)| !matches!(e.req, Request::Local) && self.may_start(e)))
    }

    fn may_start(&self, e: &SqEntry) -> bool {
        if e.flags.read_fence && !self.outstanding.is_empty() {
            return false;
        }
        if matches!(e.req, Request::Read { .. })
            && self.outstanding.len() >= usize::from(self.limits.ord)
        {
            return false;
        }
        true
    }

    /// Builds the FPDU of `repr` and `payload` and counts it as sent: every frame it builds
    /// goes out next (but see [`Core::parked_frame`]).
    pub(super) fn header_frame(
        &mut self,
        repr: &rdmap::Repr<'_>,
        payload: Option<Payload<L>>,
    ) -> TxFrame<L> {
        let octets = payload.as_ref().map_or(0, |p| u64::from(p.len()));
        self.counters.frame_out(repr.message.opcode() as u8, octets);
        self.parked_frame(repr, payload)
    }

    /// Builds the FPDU of `repr` and `payload` without counting it: for a frame that waits
    /// in `pending_frame` (a Read Request; counted when it is taken).
    pub(super) fn parked_frame(
        &mut self,
        repr: &rdmap::Repr<'_>,
        payload: Option<Payload<L>>,
    ) -> TxFrame<L> {
        let ulpdu_len = repr.header_len() + payload.as_ref().map_or(0, |p| p.len() as usize);
        let mut header = FrameHeader::from_elem(0, mpa::LENGTH_LEN + repr.header_len());
        // ulpdu_len ≤ max_payload + 46 < 65536 by construction.
        header[..2].copy_from_slice(&(ulpdu_len as u16).to_be_bytes());
        repr.emit_header(&mut header[2..])
            .expect("header buffer sized by header_len");
        let seq = self.tx_seq;
        let fpdu = mpa::fpdu_len(ulpdu_len);
        let wire = match self.markers_tx {
            Some(m) => m.marked_len(seq, fpdu),
            None => fpdu,
        };
        self.tx_seq = self.tx_seq.wrapping_add(wire as u32);
        TxFrame {
            header,
            payload,
            seq,
        }
    }

    fn poll_transmit(&mut self) -> Option<TxFrame<L>> {
        if let Some((t, copied)) = self.term_tx.take() {
            return Some(self.terminate_frame(t, copied));
        }
        if self.state != State::Active || !self.tx_allowed {
            return None;
        }
        if let Some(kind) = self.rtr_tx.take() {
            return Some(self.rtr_frame(kind));
        }
        if self.current.is_none() && self.local_pending.is_none() {
            self.start_next();
        }
        if let Some(frame) = self.pending_frame.take() {
            self.counters.frame_out(rdmap::Opcode::ReadRequest as u8, 0);
            return Some(frame);
        }
        let msg = self.current.as_mut()?;
        let left = msg.len - msg.sent;
        let chunk = match self.segmentation {
            // Equal shares of what is left, none over the maximum: a message is never a run
            // of full FPDUs and a runt (1 MiB in 32 KiB FPDUs used to end with 768 octets).
            Segmentation::Even => left.div_ceil(left.div_ceil(self.max_payload).max(1)),
            Segmentation::Greedy => left.min(self.max_payload),
        };
        let offset = msg.sent;
        msg.sent += chunk;
        let last = msg.sent == msg.len;
        let (message, payload) = match &msg.kind {
            TxKind::Send {
                wr,
                solicited,
                invalidate,
                msn,
            } => (
                Message::Send {
                    msn: *msn,
                    mo: offset,
                    solicited: *solicited,
                    invalidate: *invalidate,
                },
                Payload::Request {
                    wr: *wr,
                    offset: u64::from(offset),
                    len: chunk,
                },
            ),
            TxKind::Write { wr, stag, to } => (
                Message::Write {
                    stag: *stag,
                    to: to.wrapping_add(u64::from(offset)),
                },
                Payload::Request {
                    wr: *wr,
                    offset: u64::from(offset),
                    len: chunk,
                },
            ),
            TxKind::ReadResponse {
                lease,
                sink_stag,
                sink_to,
                to,
            } => (
                Message::ReadResponse {
                    stag: *sink_stag,
                    to: sink_to.wrapping_add(u64::from(offset)),
                },
                match lease {
                    Some(lease) => Payload::Tagged {
                        lease: lease.clone(),
                        to: to.wrapping_add(u64::from(offset)),
                        len: chunk,
                    },
                    None => Payload::Request {
                        wr: 0,
                        offset: 0,
                        len: 0,
                    },
                },
            ),
        };
        let entry = msg.entry;
        if last {
            self.current = None;
        }
        let repr = rdmap::Repr {
            last,
            message,
            payload: &[],
        };
        let payload = (!payload.is_empty()).then_some(payload);
        let frame = self.header_frame(&repr, payload);
        if last {
            if let Some(id) = entry {
                self.mark_done(id, Status::SUCCESS);
            }
        }
        Some(frame)
    }

    fn rtr_frame(&mut self, kind: RtrKind) -> TxFrame<L> {
        // STag 1 and TO 1 for the zero-length operations, as cxgb4: the safest values for peers
        // that treat STag 0 specially.
        let message = match kind {
            RtrKind::Write => Message::Write { stag: 1, to: 1 },
            RtrKind::Read => {
                let msn = self.read_msn;
                self.read_msn = self.read_msn.wrapping_add(1);
                self.counters
                    .raise(Counter::OrdHighWater, self.outstanding.len() as u64 + 1);
                self.outstanding.push_back(OutRead {
                    entry: u64::MAX,
                    msn,
                    sink_stag: 1,
                    sink_to: 1,
                    len: 0,
                    got: 0,
                    rtr: true,
                });
                Message::ReadRequest {
                    msn,
                    request: ReadRequest {
                        sink_stag: 1,
                        sink_to: 1,
                        size: 0,
                        source_stag: 1,
                        source_to: 1,
                    },
                }
            }
            RtrKind::Send => {
                let msn = self.send_msn;
                self.send_msn = self.send_msn.wrapping_add(1);
                Message::Send {
                    msn,
                    mo: 0,
                    solicited: false,
                    invalidate: None,
                }
            }
        };
        self.header_frame(
            &rdmap::Repr {
                last: true,
                message,
                payload: &[],
            },
            None,
        )
    }

    /// Starts the next message: a read response or the next send-queue request.
    fn start_next(&mut self) {
        let sq_ready = self
            .sq
            .get(self.started)
            .is_some_and(|(_, e)| !matches!(e.req, Request::Local) && self.may_start(e));
        // At most 4 responses in a row while the send queue has work (siw's burst).
        if !self.irq.is_empty() && (!sq_ready || self.responses_in_a_row < 4) {
            let r = self.irq.pop_front().expect("non-empty");
            self.responses_in_a_row += 1;
            self.current = Some(TxMsg {
                kind: TxKind::ReadResponse {
                    lease: r.lease,
                    sink_stag: r.sink_stag,
                    sink_to: r.sink_to,
                    to: r.to,
                },
                len: r.len,
                sent: 0,
                entry: None,
            });
            return;
        }
        self.responses_in_a_row = 0;
        if !sq_ready {
            return;
        }
        let (id, e) = self
            .sq
            .get(self.started)
            .map(|(i, e)| (*i, e.clone()))
            .expect("ready");
        self.started += 1;
        match e.req {
            Request::Send {
                len,
                solicited,
                invalidate,
            } => {
                let msn = self.send_msn;
                self.send_msn = self.send_msn.wrapping_add(1);
                if let Some((_, entry)) = self.sq.get_mut(self.started - 1) {
                    entry.msn = Some(msn);
                }
                self.current = Some(TxMsg {
                    kind: TxKind::Send {
                        wr: e.wr,
                        solicited,
                        invalidate,
                        msn,
                    },
                    len,
                    sent: 0,
                    entry: Some(id),
                });
            }
            Request::Write { len, stag, to } => {
                self.current = Some(TxMsg {
                    kind: TxKind::Write { wr: e.wr, stag, to },
                    len,
                    sent: 0,
                    entry: Some(id),
                });
            }
            Request::Read {
                len,
                sink_stag,
                sink_to,
                stag,
                to,
            } => {
                let msn = self.read_msn;
                self.read_msn = self.read_msn.wrapping_add(1);
                self.counters
                    .raise(Counter::OrdHighWater, self.outstanding.len() as u64 + 1);
                self.outstanding.push_back(OutRead {
                    entry: id,
                    msn,
                    sink_stag,
                    sink_to,
                    len,
                    got: 0,
                    rtr: false,
                });
                // A Read Request is one header-only segment; send it through the queue of
                // one-off frames.
                let repr = rdmap::Repr {
                    last: true,
                    message: Message::ReadRequest {
                        msn,
                        request: ReadRequest {
                            sink_stag,
                            sink_to,
                            size: len,
                            source_stag: stag,
                            source_to: to,
                        },
                    },
                    payload: &[],
                };
                let frame = self.parked_frame(&repr, None);
                self.pending_frame = Some(frame);
            }
            Request::Local => unreachable!("local requests are handed out by schedule_local"),
        }
    }
}
