//! Inbound ULPDUs: validation, where each payload goes, and the completions they finish.

use netdirect_types::Status;
use netdirect_types::counters::Counter;
use netdirect_wire::ddp;
use netdirect_wire::rdmap::{self, Message};
use netdirect_wire::terminate::{self, TermError};

use super::direct::{DirectStep, HEADER_READ};
use super::send::TxKind;
use super::terminate::{Copied, is_terminate, read_term, tagged_term};
use super::{
    Access, Core, Dest, Event, Host, Place, Request, State, Stream, TermCode, TxMsg,
    WorkCompletion, WorkKind,
};
use crate::handshake::RtrKind;

#[derive(Debug, Clone)]
pub(super) struct InRead<L> {
    pub(super) lease: Option<L>,
    pub(super) sink_stag: u32,
    pub(super) sink_to: u64,
    pub(super) to: u64,
    pub(super) len: u32,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct RxMsg {
    pub(super) recv: u64,
    pub(super) cap: u64,
    pub(super) got: u64,
    pub(super) absorb: bool,
}

impl<L: Clone> Stream<L> {
    /// Bytes read from TCP.
    pub fn push_input(&mut self, bytes: &[u8]) {
        if self.core.state == State::Active {
            self.deframer.push(bytes);
        }
    }

    /// Lets `read` write up to `n` received octets straight into the stream's input buffer
    /// (a socket read without an extra copy); keeps what it reports. When the stream is no
    /// longer active the octets are read and dropped.
    pub fn fill_input_with<E>(
        &mut self,
        n: usize,
        read: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        if self.core.state == State::Active {
            self.deframer.fill_with(n, read)
        } else {
            let mut scratch = vec![0u8; n.min(64 * 1024)];
            read(&mut scratch)
        }
    }

    /// The peer closed its side of TCP.
    pub fn handle_eof(&mut self) {
        if self.core.state == State::Active {
            self.core.events.push_back(Event::PeerClosed);
        }
    }

    /// Processes buffered input up to the next payload to place; `None` when more input is
    /// needed or the stream is in error. Place the data before polling completions.
    pub fn poll_rx<H: Host<Lease = L>>(&mut self, host: &mut H) -> Option<Place<'_, L>> {
        let (dest, range) = loop {
            if self.core.state != State::Active {
                return None;
            }
            if self.drx.is_some() {
                match self.direct_step(host) {
                    DirectStep::Wait => return None,
                    DirectStep::Done => continue,
                    DirectStep::Place(dest, n) => {
                        self.core
                            .counters
                            .bump(Counter::PlacedBufferedOctets, n as u64);
                        let data = self.deframer.consume_slice(n);
                        return Some(Place { dest, data });
                    }
                }
            }
            if let Some(min) = self.direct_min {
                if let Some(d) = self.probe_direct(min, host) {
                    self.drx = Some(d);
                    continue;
                }
            }
            let Some(next) = self.deframer.next_ulpdu() else {
                // Everything buffered is taken: an idle connection gives its input buffer
                // back.
                self.deframer.release_idle();
                return None;
            };
            let ulpdu = match next {
                Ok(u) => u,
                Err(e) => {
                    self.core.framing_error(e);
                    return None;
                }
            };
            if let Some(min) = self.direct_min {
                self.large_streak = ulpdu.len() >= min + HEADER_READ;
            }
            if let Some(place) = self.core.on_ulpdu(ulpdu, 0, host) {
                break place;
            }
        };
        let ulpdu = self.deframer.last_ulpdu()?;
        self.core
            .counters
            .bump(Counter::PlacedBufferedOctets, range.len() as u64);
        Some(Place {
            dest,
            data: &ulpdu[range],
        })
    }
}

/// What a valid Read Response segment is ([`Core::check_read_response`]).
pub(super) enum ReadResponse {
    /// The answer to our ready-to-receive zero-length Read.
    Rtr,
    /// Data for the oldest outstanding read; `done`: its last segment.
    Data { done: bool },
}

impl<L: Clone> Core<L> {
    /// Handles one inbound ULPDU; returns where its payload goes, as a range of `ulpdu`.
    ///
    /// `extra` payload octets follow `ulpdu` (0, except for a segment received directly: then
    /// `ulpdu` is the DDP/RDMAP header of a Send, RDMA Write or Read Response and `extra` its
    /// payload length; the returned range then reaches past `ulpdu`).
    pub(super) fn on_ulpdu<H: Host<Lease = L>>(
        &mut self,
        ulpdu: &[u8],
        extra: usize,
        host: &mut H,
    ) -> Option<(Dest<L>, core::ops::Range<usize>)> {
        self.rx_copy = Copied::of(ulpdu, extra);
        let first = !self.tx_allowed || self.rtr_rx.is_some();
        // The responder may send once the initiator's first FPDU arrived (see `tx_allowed`).
        self.tx_allowed = true;
        let repr = match rdmap::Repr::parse(ulpdu) {
            Ok(r) => {
                let op = r.message.opcode() as u8;
                self.counters.frame_in(op, (r.payload.len() + extra) as u64);
                r
            }
            Err(_) if is_terminate(ulpdu) => {
                self.counters.frame_in(rdmap::Opcode::Terminate as u8, 0);
                // A malformed Terminate is still the peer's Terminate (siw copies headers
                // loosely): take its layer, type and code, never answer it with our own.
                // is_terminate checked that the control field is there.
                let t = terminate::Packet::new_unchecked(&ulpdu[ddp::UNTAGGED_HEADER_LEN..]);
                let code = TermCode {
                    layer: t.layer(),
                    error_type: t.error_type(),
                    error_code: t.error_code(),
                };
                self.fail(None, Some(code), None);
                return None;
            }
            Err(e) => {
                if let Ok(p) = ddp::Packet::new_checked(ulpdu) {
                    self.counters.frame_in(p.rsvd_ulp() & rdmap::OPCODE_MASK, 0);
                }
                let tagged = ddp::Packet::new_checked(ulpdu).is_ok_and(|p| p.tagged());
                let term = e
                    .term_error(tagged)
                    .unwrap_or(TermError::RdmapOperationUnspecified);
                return self.local_error(term);
            }
        };
        let payload_at = ulpdu.len() - repr.payload.len();
        let payload = payload_at..ulpdu.len() + extra;
        let len = (repr.payload.len() + extra) as u64;
        // The responder's ready-to-receive message, absorbed without checks.
        if first {
            if let Some(kind) = self.rtr_rx.take() {
                let is_rtr = match (&repr.message, kind) {
                    (Message::Write { .. }, RtrKind::Write) => len == 0,
                    (Message::Send { .. }, RtrKind::Send) => len == 0,
                    (Message::ReadRequest { request, .. }, RtrKind::Read) => request.size == 0,
                    _ => false,
                };
                if is_rtr {
                    match repr.message {
                        Message::Send { .. } => self.recv_msn = self.recv_msn.wrapping_add(1),
                        Message::ReadRequest { request, .. } => {
                            self.rreq_msn = self.rreq_msn.wrapping_add(1);
                            self.counters
                                .raise(Counter::IrdHighWater, self.irq.len() as u64 + 1);
                            self.irq.push_back(InRead {
                                lease: None,
                                sink_stag: request.sink_stag,
                                sink_to: request.sink_to,
                                to: 0,
                                len: 0,
                            });
                        }
                        _ => {}
                    }
                    return None;
                }
            }
        }
        match repr.message {
            Message::Write { stag, to } => {
                if len == 0 {
                    return None;
                }
                match host.tagged(stag, to, len, Access::RemoteWrite) {
                    Ok(lease) => Some((Dest::Tagged { lease, to }, payload)),
                    Err(e) => self.local_error(tagged_term(e)),
                }
            }
            Message::ReadResponse { stag, to } => {
                self.on_read_response(stag, to, len, repr.last, payload, host)
            }
            Message::ReadRequest { msn, request } => {
                if msn != self.rreq_msn {
                    return self.local_error(TermError::DdpUntaggedMsnRange);
                }
                self.rreq_msn = self.rreq_msn.wrapping_add(1);
                let in_service = self.irq.len()
                    + usize::from(matches!(
                        self.current,
                        Some(TxMsg {
                            kind: TxKind::ReadResponse { .. },
                            ..
                        })
                    ));
                if in_service >= usize::from(self.limits.ird) {
                    return self.local_error(TermError::DdpUntaggedNoBuffer);
                }
                let lease = if request.size == 0 {
                    None
                } else {
                    match host.tagged(
                        request.source_stag,
                        request.source_to,
                        u64::from(request.size),
                        Access::RemoteRead,
                    ) {
                        Ok(l) => Some(l),
                        Err(e) => return self.local_error(read_term(e)),
                    }
                };
                self.counters
                    .raise(Counter::IrdHighWater, self.irq.len() as u64 + 1);
                self.irq.push_back(InRead {
                    lease,
                    sink_stag: request.sink_stag,
                    sink_to: request.sink_to,
                    to: request.source_to,
                    len: request.size,
                });
                None
            }
            Message::Send {
                msn,
                mo,
                solicited,
                invalidate,
            } => self.on_send(
                msn, mo, solicited, invalidate, repr.last, payload, len, host,
            ),
            Message::Terminate { terminate, .. } => {
                let code = TermCode {
                    layer: terminate.layer,
                    error_type: terminate.error_type,
                    error_code: terminate.error_code,
                };
                let blame = self.blame(&terminate);
                self.fail(None, Some(code), blame);
                None
            }
            Message::ImmediateData { .. }
            | Message::AtomicRequest { .. }
            | Message::AtomicResponse { .. } => self.local_error(TermError::RdmapUnexpectedOpcode),
        }
    }

    /// The rules of a Read Response segment against the oldest outstanding read, in the
    /// order they are reported; used by the header-first probe and the buffered path alike.
    pub(super) fn check_read_response(
        &self,
        stag: u32,
        to: u64,
        len: u64,
        last: bool,
    ) -> Result<ReadResponse, TermError> {
        let Some(read) = self.outstanding.front() else {
            return Err(TermError::RdmapUnexpectedOpcode);
        };
        if read.rtr {
            // The zero-length Read of RFC 6581's ready-to-receive.
            return if len != 0 || !last {
                Err(TermError::RdmapUnexpectedOpcode)
            } else {
                Ok(ReadResponse::Rtr)
            };
        }
        let got = u64::from(read.got);
        if stag != read.sink_stag {
            return Err(TermError::DdpTaggedInvalidStag);
        }
        if to != read.sink_to.wrapping_add(got) || got + len > u64::from(read.len) {
            return Err(TermError::DdpTaggedBaseBounds);
        }
        let done = got + len == u64::from(read.len);
        if last != done {
            // A short response (or one that goes on past its size) falls outside the sink the
            // request named: base/bounds, as siw reports it.
            return Err(TermError::DdpTaggedBaseBounds);
        }
        Ok(ReadResponse::Data { done })
    }

    /// The rules of a Send segment before its receive is known: the MSN of the message being
    /// received, and a message's first segment at offset 0. Used by the header-first probe and
    /// the buffered path alike, as [`Core::check_send_fit`].
    pub(super) fn check_send_start(&self, msn: u32, mo: u32) -> Result<(), TermError> {
        if msn != self.recv_msn {
            return Err(TermError::DdpUntaggedMsnRange);
        }
        if self.rx.is_none() && mo != 0 {
            return Err(TermError::DdpUntaggedInvalidMo);
        }
        Ok(())
    }

    /// The rules of a Send segment against its receive: in order, and inside it.
    pub(super) fn check_send_fit(msg: &RxMsg, mo: u32, len: u64) -> Result<(), TermError> {
        if u64::from(mo) != msg.got {
            return Err(TermError::DdpUntaggedInvalidMo);
        }
        if msg.got + len > msg.cap {
            return Err(TermError::DdpUntaggedTooLong);
        }
        Ok(())
    }

    fn on_read_response<H: Host<Lease = L>>(
        &mut self,
        stag: u32,
        to: u64,
        len: u64,
        last: bool,
        payload: core::ops::Range<usize>,
        host: &mut H,
    ) -> Option<(Dest<L>, core::ops::Range<usize>)> {
        let done = match self.check_read_response(stag, to, len, last) {
            Err(term) => return self.local_error(term),
            Ok(ReadResponse::Rtr) => {
                self.outstanding.pop_front();
                return None;
            }
            Ok(ReadResponse::Data { done }) => done,
        };
        if let Some(read) = self.outstanding.front_mut() {
            // len ≤ read.len - read.got (checked), so it fits u32.
            read.got += len as u32;
        }
        let place = if len == 0 {
            None
        } else {
            match host.tagged(stag, to, len, Access::ReadSink) {
                Ok(lease) => Some((Dest::Tagged { lease, to }, payload)),
                Err(e) => return self.local_error(tagged_term(e)),
            }
        };
        if done {
            let read = self.outstanding.pop_front().expect("front exists");
            // Read with local invalidate: the sink's token dies with the read's success,
            // reported or silent; one that cannot die fails the read, and the QP with it.
            let invalidate = self
                .sq
                .iter()
                .find(|(i, _)| *i == read.entry)
                .and_then(|(_, e)| {
                    e.flags
                        .local_invalidate
                        .then_some(read.sink_stag)
                        .filter(|_| matches!(e.req, Request::Read { .. }))
                });
            if let Some(stag) = invalidate {
                if host.invalidate(stag).is_err() {
                    if let Some((_, e)) = self.sq.iter_mut().find(|(i, _)| *i == read.entry) {
                        e.done = Some(Status::INVALID_DEVICE_REQUEST);
                    }
                    // Our own failure, not the segment's: the Terminate copies no header.
                    self.rx_copy = None;
                    return self.local_error(TermError::RdmapLocalCatastrophic);
                }
            }
            self.mark_done(read.entry, Status::SUCCESS);
        }
        place
    }

    #[allow(clippy::too_many_arguments)]
    fn on_send<H: Host<Lease = L>>(
        &mut self,
        msn: u32,
        mo: u32,
        solicited: bool,
        invalidate: Option<u32>,
        last: bool,
        payload: core::ops::Range<usize>,
        len: u64,
        host: &mut H,
    ) -> Option<(Dest<L>, core::ops::Range<usize>)> {
        if let Err(term) = self.check_send_start(msn, mo) {
            return self.local_error(term);
        }
        let mut msg = match self.rx.take() {
            Some(m) => m,
            None => match host.take_receive() {
                Some((recv, cap)) => RxMsg {
                    recv,
                    cap,
                    got: 0,
                    absorb: false,
                },
                None => return self.local_error(TermError::DdpUntaggedNoBuffer),
            },
        };
        match Self::check_send_fit(&msg, mo, len) {
            Ok(()) => {}
            Err(TermError::DdpUntaggedTooLong) => {
                // The receive is too small: it completes with an error, not as cancelled.
                self.completions.push_back(WorkCompletion {
                    wr: msg.recv,
                    kind: WorkKind::Receive,
                    status: Status::BUFFER_OVERFLOW,
                    bytes: 0,
                    invalidated: None,
                    solicited,
                    provider_error: TermCode::from(TermError::DdpUntaggedTooLong).packed(1),
                });
                return self.local_error(TermError::DdpUntaggedTooLong);
            }
            Err(term) => {
                self.rx = Some(msg);
                return self.local_error(term);
            }
        }
        let dest = Dest::Receive {
            recv: msg.recv,
            offset: msg.got,
        };
        msg.got += len;
        if !last {
            self.rx = Some(msg);
            return Some((dest, payload));
        }
        self.recv_msn = self.recv_msn.wrapping_add(1);
        if let Some(stag) = invalidate {
            if host.invalidate(stag).is_err() {
                self.rx = Some(msg);
                return self.local_error(TermError::RdmapCannotInvalidate);
            }
        }
        // The payload of this last segment is placed by the caller before it polls
        // completions, so the completion can be queued now.
        self.completions.push_back(WorkCompletion {
            wr: msg.recv,
            kind: WorkKind::Receive,
            status: Status::SUCCESS,
            // Capacity is bounded by the receive's u32-sized scatter list.
            bytes: u32::try_from(msg.got).unwrap_or(u32::MAX),
            invalidated: invalidate,
            solicited,
            provider_error: 0,
        });
        Some((dest, payload))
    }
}
