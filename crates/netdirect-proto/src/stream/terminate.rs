//! Terminates: the one we send (with the failing segment's headers), the error state, which
//! request a received one blames and the status it gets, and `provider_error` packing.

use netdirect_types::Status;
use netdirect_wire::ddp;
use netdirect_wire::rdmap::{self, Message};
use netdirect_wire::terminate::{self, TermError};

use super::send::TxKind;
use super::{
    Core, Dest, Event, Request, State, TaggedError, TxFrame, TxMsg, WorkCompletion, WorkKind,
};

/// A Terminate as raw layer/type/code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TermCode {
    /// Layer.
    pub layer: u8,
    /// Error type.
    pub error_type: u8,
    /// Error code.
    pub error_code: u8,
}

impl TermCode {
    /// The `provider_error_code` form of this Terminate: `0x01LLTTCC` when we sent it,
    /// `0x02LLTTCC` when we received it.
    pub fn provider_error(self, sent: bool) -> u32 {
        self.packed(if sent { 1 } else { 2 })
    }

    pub(super) fn packed(self, origin: u32) -> u32 {
        origin << 24
            | u32::from(self.layer) << 16
            | u32::from(self.error_type) << 8
            | u32::from(self.error_code)
    }

    /// The named error, if the tables have one.
    pub fn error(self) -> Option<TermError> {
        TermError::from_parts(self.layer, self.error_type, self.error_code)
    }
}

impl From<TermError> for TermCode {
    fn from(e: TermError) -> Self {
        let (l, t, c) = e.parts();
        TermCode {
            layer: l as u8,
            error_type: t,
            error_code: c,
        }
    }
}

pub(super) fn tagged_term(e: TaggedError) -> TermError {
    match e {
        TaggedError::InvalidStag | TaggedError::AccessRights => TermError::DdpTaggedInvalidStag,
        TaggedError::BaseBounds => TermError::DdpTaggedBaseBounds,
        TaggedError::NotAssociated => TermError::DdpTaggedStagNotAssociated,
        TaggedError::ToWrap => TermError::DdpTaggedToWrap,
    }
}

pub(super) fn read_term(e: TaggedError) -> TermError {
    match e {
        TaggedError::InvalidStag => TermError::RdmapInvalidStag,
        TaggedError::BaseBounds => TermError::RdmapBaseBounds,
        TaggedError::AccessRights => TermError::RdmapAccessRights,
        TaggedError::NotAssociated => TermError::RdmapStagNotAssociated,
        TaggedError::ToWrap => TermError::RdmapToWrap,
    }
}

/// The status the blamed request gets when the peer terminates.
fn remote_status(code: TermCode) -> Status {
    match code.error() {
        Some(
            TermError::RdmapInvalidStag
            | TermError::RdmapAccessRights
            | TermError::RdmapStagNotAssociated
            | TermError::RdmapCannotInvalidate
            | TermError::DdpTaggedInvalidStag
            | TermError::DdpTaggedStagNotAssociated,
        ) => Status::ACCESS_VIOLATION,
        // The request caused an error at the peer's QP (NDSPI's ND_REMOTE_ERROR, the same
        // value): out of bounds, or a Send that found no receive or one too small.
        Some(
            TermError::RdmapBaseBounds
            | TermError::RdmapToWrap
            | TermError::DdpTaggedBaseBounds
            | TermError::DdpTaggedToWrap
            | TermError::DdpUntaggedNoBuffer
            | TermError::DdpUntaggedTooLong,
        ) => Status::REMOTE_RESOURCES,
        _ => Status::CONNECTION_ABORTED,
    }
}

/// Whether `ulpdu` is an untagged Terminate (opcode 7 on QN 2) with at least its control field.
pub(super) fn is_terminate(ulpdu: &[u8]) -> bool {
    let Ok(p) = ddp::Packet::new_checked(ulpdu) else {
        return false;
    };
    ulpdu.len() >= ddp::UNTAGGED_HEADER_LEN + 4
        && !p.tagged()
        && p.rsvd_ulp() & 0x0F == rdmap::Opcode::Terminate as u8
        && p.queue_number() == rdmap::QN_TERMINATE
}

/// The failing segment's headers, kept for the Terminate we may send about it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Copied {
    ddp: [u8; 18],
    ddp_len: usize,
    rdmap: Option<[u8; terminate::RDMAP_HEADER_LEN]>,
    seg_len: u16,
}

impl Copied {
    pub(super) fn of(ulpdu: &[u8], extra: usize) -> Option<Copied> {
        let p = ddp::Packet::new_checked(ulpdu).ok()?;
        let (tagged, ddp_len) = (p.tagged(), p.header_len());
        let mut ddp = [0u8; ddp::UNTAGGED_HEADER_LEN];
        ddp[..ddp_len].copy_from_slice(&ulpdu[..ddp_len]);
        let is_read_request = !tagged && p.rsvd_ulp() & 0x0F == rdmap::Opcode::ReadRequest as u8;
        let rdmap = ulpdu
            .get(ddp_len..ddp_len + terminate::RDMAP_HEADER_LEN)
            .filter(|_| is_read_request)
            .map(|h| {
                let mut a = [0u8; terminate::RDMAP_HEADER_LEN];
                a.copy_from_slice(h);
                a
            });
        let headers = ddp_len + rdmap.map_or(0, |_| terminate::RDMAP_HEADER_LEN);
        // As siw: the failing segment's payload length, informational.
        let seg_len =
            u16::try_from((ulpdu.len() + extra).saturating_sub(headers)).unwrap_or(u16::MAX);
        Some(Copied {
            ddp,
            ddp_len,
            rdmap,
            seg_len,
        })
    }
}

impl<L: Clone> Core<L> {
    /// The Terminate we send: `t`, with the failing segment's headers as its layer and type
    /// call for.
    pub(super) fn terminate_frame(&mut self, t: TermCode, copied: Option<Copied>) -> TxFrame<L> {
        // Layer/type decide what to copy (RFC 5040 §4.8, as siw): DDP errors copy the DDP
        // header, RDMAP errors also the RDMAP header, LLP and catastrophic errors nothing.
        let copy = copied.filter(|_| {
            t.layer == terminate::Layer::Ddp as u8
                || (t.layer == terminate::Layer::Rdmap as u8 && t.error_type != 0)
        });
        let rdmap_copy = copy.as_ref().and_then(|c| c.rdmap);
        let terminate = terminate::Repr {
            layer: t.layer,
            error_type: t.error_type,
            error_code: t.error_code,
            m: copy.is_some(),
            failing_ddp: copy.as_ref().map(|c| terminate::FailingDdp {
                segment_length: c.seg_len,
                header: &c.ddp[..c.ddp_len],
            }),
            rdmap_header: rdmap_copy
                .as_ref()
                .filter(|_| t.layer == terminate::Layer::Rdmap as u8)
                .map(|h| &h[..]),
        };
        let repr = rdmap::Repr {
            last: true,
            message: Message::Terminate { msn: 1, terminate },
            payload: &[],
        };
        self.header_frame(&repr, None)
    }

    /// Enters the error state: queue a Terminate if `sent` names one, blame the oldest
    /// unfinished request with `blame`, cancel the rest.
    pub(super) fn fail(
        &mut self,
        sent: Option<TermCode>,
        received: Option<TermCode>,
        blame: Option<u64>,
    ) {
        if self.state == State::Error {
            return;
        }
        self.state = State::Error;
        // A Terminate is untagged: it must not land between the segments of a Send we are half
        // way through (siw rejects that), so then it is not sent, as siw does.
        let mid_send = matches!(
            &self.current,
            Some(TxMsg { kind: TxKind::Send { .. }, sent, len, .. }) if *sent > 0 && sent < len
        );
        if let Some(t) = sent {
            if !mid_send {
                self.term_tx = Some((t, self.rx_copy.take()));
                self.counters
                    .terminate(true, t.layer, t.error_type, t.error_code);
            }
            self.events.push_back(Event::TerminateSent(t));
        }
        if let Some(t) = received {
            self.counters
                .terminate(false, t.layer, t.error_type, t.error_code);
            self.events.push_back(Event::TerminateReceived(t));
        }
        let provider_error = match (sent, received) {
            (Some(t), _) => t.packed(1),
            (None, Some(t)) => t.packed(2),
            (None, None) => 0,
        };
        self.ended_by = provider_error;
        let blame_status = received.map(remote_status).unwrap_or(Status::CANCELLED);
        self.current = None;
        self.local_pending = None;
        for (id, e) in self.sq.drain(..) {
            // The request the Terminate names gets its status even when it had finished on our
            // side (a Write handed out, waiting behind a read to be reported).
            let status = match e.done {
                _ if Some(id) == blame => blame_status,
                Some(s) => s,
                None => Status::CANCELLED,
            };
            if e.flags.signaled || !status.is_success() {
                self.completions.push_back(WorkCompletion {
                    wr: e.wr,
                    kind: Self::kind_of(&e.req),
                    status,
                    bytes: 0,
                    invalidated: None,
                    solicited: false,
                    provider_error: if status.is_success() {
                        0
                    } else {
                        provider_error
                    },
                });
            }
        }
        self.outstanding.clear();
        self.irq.clear();
        if let Some(rx) = self.rx.take().filter(|m| !m.absorb) {
            self.completions.push_back(WorkCompletion {
                wr: rx.recv,
                kind: WorkKind::Receive,
                status: Status::CANCELLED,
                bytes: 0,
                invalidated: None,
                solicited: false,
                provider_error,
            });
        }
    }

    /// An MPA framing or CRC error in what we received: the stream can no longer be trusted.
    /// The Terminate (LLP) copies no header.
    pub(super) fn framing_error(&mut self, e: netdirect_wire::Error) {
        if matches!(e, netdirect_wire::Error::Crc { .. }) {
            self.counters
                .bump(netdirect_types::counters::Counter::CrcErrors, 1);
        }
        let term = e
            .term_error(false)
            .unwrap_or(TermError::LlpLocalCatastrophic);
        self.rx_copy = None;
        self.fail(Some(term.into()), None, None);
    }

    pub(super) fn local_error(
        &mut self,
        term: TermError,
    ) -> Option<(Dest<L>, core::ops::Range<usize>)> {
        self.fail(Some(term.into()), None, None);
        None
    }

    /// Which of our requests a received Terminate is about: the outstanding read whose Read
    /// Request it copies, or the unreported RDMA Write or Send whose segment it copies (STag
    /// and a tagged offset inside the Write; the Send's MSN); without a copy, the oldest
    /// outstanding read for a protection error.
    pub(super) fn blame(&self, t: &terminate::Repr<'_>) -> Option<u64> {
        match t.failing_ddp {
            Some(f) if f.header.len() == 14 && f.header[0] & 0x80 != 0 => {
                let h = f.header;
                if h[1] & 0x0F != rdmap::Opcode::Write as u8 {
                    return None;
                }
                let stag = u32::from_be_bytes([h[2], h[3], h[4], h[5]]);
                let to = u64::from_be_bytes([h[6], h[7], h[8], h[9], h[10], h[11], h[12], h[13]]);
                // Only a Write that has begun to go out can be named; the oldest such one.
                self.sq
                    .iter()
                    .take(self.started)
                    .find(|(_, e)| match e.req {
                        Request::Write {
                            len,
                            stag: s,
                            to: start,
                        } => s == stag && to.wrapping_sub(start) < u64::from(len).max(1),
                        _ => false,
                    })
                    .map(|(id, _)| *id)
            }
            Some(f) => {
                let h = ddp::Packet::new_checked(f.header).ok()?;
                let untagged = f.header.len() == ddp::UNTAGGED_HEADER_LEN && !h.tagged();
                if !untagged {
                    return None;
                }
                let msn = h.msn();
                if h.queue_number() == rdmap::QN_SEND {
                    return self
                        .sq
                        .iter()
                        .take(self.started)
                        .find(|(_, e)| e.msn == Some(msn))
                        .map(|(id, _)| *id);
                }
                if h.queue_number() != rdmap::QN_READ_REQUEST {
                    return None;
                }
                self.outstanding
                    .iter()
                    .find(|r| r.msn == msn && !r.rtr)
                    .map(|r| r.entry)
            }
            None if t.layer == terminate::Layer::Rdmap as u8 && t.error_type == 1 => {
                self.outstanding.iter().find(|r| !r.rtr).map(|r| r.entry)
            }
            None => None,
        }
    }
}
