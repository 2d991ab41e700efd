//! MPA connection setup (RFC 5044 §7.1, RFC 6581): the Request/Reply exchange, CRC and marker
//! negotiation, IRD/ORD negotiation and the peer-to-peer ready-to-receive choice.
//!
//! One [`Handshake`] per TCP connection, for the time between the TCP connect and the first
//! FPDU. Bytes from the peer go in through [`Handshake::handle_input`], bytes for the peer come
//! out of [`Handshake::poll_transmit`], and what happened comes out of
//! [`Handshake::poll_event`]. Time comes in through [`Handshake::handle_timeout`].
//!
//! ```text
//! initiator: SendingRequest ─Reply→ Established | Rejected | Failed
//! responder: AwaitingRequest ─Request→ AwaitingDecision ─accept→ Established
//!                                                       └reject→ Rejected
//! ```
//!
//! # Negotiation rules
//!
//! * **Revision.** The initiator offers its revision; the responder answers with the lower of
//!   the offer and its own. A Reply with a higher revision than offered is invalid.
//! * **CRC** is on when either startup frame has C. The responder sets C in its Reply when the
//!   Request had it or it wants CRC itself, so both frames on the wire tell the truth.
//! * **Markers** are per direction: M in a frame asks the *other* side to insert markers.
//! * **IRD/ORD** (revision 2, enhanced): each side's effective inbound limit is
//!   `min(own IRD, peer ORD)` and outbound limit `min(own ORD, peer IRD)` (NDK §7.6). The
//!   responder puts its effective values in the Reply. An initiator whose IRD is below the
//!   Reply's ORD cannot honour it and fails with a Terminate "insufficient IRD" (LLP 0x06).
//!   Without enhanced data (revision 1), each side keeps its own values; a Linux peer then has
//!   ORD 0 and cannot issue reads (docs/spec/iwarp.md §2.2).
//! * **Ready-to-receive** (RFC 6581 peer-to-peer): the initiator offers the kinds it can send;
//!   the responder picks one, preferring a zero-length RDMA Write, then Read, then Send (siw's
//!   order; Write needs no receive buffer and no IRD). The initiator must then send that message
//!   first; the responder's stream absorbs it. A Reply choosing a kind that was not offered is
//!   answered with a Terminate "no matching RTR option" (LLP 0x07).
//! * **Private data** over the configured limit fails the handshake; the RFC's 512-octet ceiling
//!   is enforced by the wire layer.

use std::time::{Duration, Instant};

use netdirect_wire::mpa::{self, Enhanced, Rtr, StartupKind, StartupPacket, StartupRepr};
use netdirect_wire::terminate::TermError;

/// Which end of the TCP connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Opened the TCP connection; sends the MPA Request and then the first FPDU.
    Initiator,
    /// Accepted the TCP connection; answers with the MPA Reply.
    Responder,
}

/// The ready-to-receive message the initiator sends first in peer-to-peer mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RtrKind {
    /// A zero-length Send (consumes a receive at the responder).
    Send,
    /// A zero-length RDMA Write.
    Write,
    /// A zero-length RDMA Read Request (needs IRD ≥ 1 at the responder).
    Read,
}

impl RtrKind {
    fn offered_in(self, rtr: Rtr) -> bool {
        match self {
            RtrKind::Send => rtr.send,
            RtrKind::Write => rtr.write,
            RtrKind::Read => rtr.read,
        }
    }

    fn as_rtr(self) -> Rtr {
        Rtr {
            send: self == RtrKind::Send,
            write: self == RtrKind::Write,
            read: self == RtrKind::Read,
        }
    }
}

/// Local MPA settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpaConfig {
    /// Revision offered (initiator) or the highest answered (responder): 1 or 2.
    pub revision: u8,
    /// Ask for CRCs.
    pub crc: bool,
    /// Ask the peer to insert markers in what it sends us.
    pub markers: bool,
    /// Largest private data accepted from the peer, the RFC 6581 prefix not counted.
    pub max_private_data: usize,
    /// Peer-to-peer mode: the RTR kinds we can send (initiator) or take (responder).
    pub peer_to_peer: Option<Rtr>,
    /// How long to wait for the peer's startup frame.
    pub timeout: Duration,
}

impl Default for MpaConfig {
    /// Revision 2, no CRC request, no markers, 252 octets of private data (what Linux accepts
    /// after the IRD/ORD prefix), client-server mode, siw's 10 s timeout.
    fn default() -> Self {
        MpaConfig {
            revision: 2,
            crc: false,
            markers: false,
            max_private_data: 252,
            peer_to_peer: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Inbound (IRD) and outbound (ORD) RDMA Read limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ReadLimits {
    /// Inbound read queue depth: reads from the peer this side serves at once.
    pub ird: u16,
    /// Outbound read queue depth: reads this side has in flight at once.
    pub ord: u16,
}

/// What the peer asked for in its MPA Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRequest {
    /// Revision of the Request.
    pub revision: u8,
    /// The initiator wants CRCs.
    pub crc: bool,
    /// The initiator wants markers in what we send.
    pub markers: bool,
    /// The initiator's IRD/ORD (revision 2, enhanced only).
    pub limits: Option<ReadLimits>,
    /// RTR kinds offered (peer-to-peer mode only).
    pub rtr: Option<Rtr>,
    /// The initiator's private data.
    pub private_data: Vec<u8>,
}

/// The outcome of a successful handshake, for the RDMAP stream that follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Our role.
    pub role: Role,
    /// MPA revision in use.
    pub revision: u8,
    /// CRCs are generated and checked.
    pub crc: bool,
    /// We insert markers in what we send.
    pub markers_tx: bool,
    /// The peer inserts markers in what it sends.
    pub markers_rx: bool,
    /// Effective read limits of this side.
    pub limits: ReadLimits,
    /// The peer-to-peer ready-to-receive message, if any: the initiator sends it first, the
    /// responder absorbs it.
    pub rtr: Option<RtrKind>,
    /// The peer's private data (from the Request or the Reply).
    pub peer_private_data: Vec<u8>,
}

/// Why a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer's startup frame is malformed (bad key, revision, flags or lengths).
    #[error("invalid MPA startup frame: {0}")]
    Invalid(netdirect_wire::Error),
    /// The peer's private data exceeds what we accept.
    #[error("peer private data too long ({0} octets)")]
    PrivateDataTooLong(usize),
    /// The Reply asks for more inbound reads than we can serve.
    #[error("insufficient IRD: peer ORD {peer_ord} exceeds our IRD {ird}")]
    InsufficientIrd {
        /// Our IRD.
        ird: u16,
        /// The ORD in the Reply.
        peer_ord: u16,
    },
    /// The Reply picked a ready-to-receive kind we did not offer.
    #[error("no matching RTR option")]
    NoMatchingRtr,
    /// The peer's startup frame did not arrive in time.
    #[error("MPA startup timed out")]
    Timeout,
    /// Our own parameters cannot be encoded (private data too long, IRD/ORD over 14 bits).
    #[error("local MPA parameters rejected: {0}")]
    Local(netdirect_wire::Error),
    /// The handshake is not in a state that allows this call.
    #[error("MPA handshake in the wrong state")]
    State,
}

impl HandshakeError {
    /// The Terminate the initiator sends for this failure (after the Reply, the stream is in
    /// FPDU mode; RFC 6581 §3). A responder never sends one: it just closes.
    pub fn term_error(&self) -> Option<TermError> {
        match self {
            HandshakeError::Invalid(_) | HandshakeError::PrivateDataTooLong(_) => {
                Some(TermError::LlpInvalidStartup)
            }
            HandshakeError::InsufficientIrd { .. } => Some(TermError::LlpInsufficientIrd),
            HandshakeError::NoMatchingRtr => Some(TermError::LlpNoMatchingRtr),
            HandshakeError::Timeout | HandshakeError::Local(_) | HandshakeError::State => None,
        }
    }
}

/// Something the handshake reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Responder: a valid Request arrived; answer with [`Handshake::accept`] or
    /// [`Handshake::reject`].
    Request(PeerRequest),
    /// The connection is in FPDU mode. Initiator: after a Reply that accepted. Responder: once
    /// the Reply is queued.
    Established(Negotiated),
    /// Initiator: the responder rejected the connection, with its private data.
    Rejected {
        /// The responder's private data (the reason, if the ULP gave one).
        private_data: Vec<u8>,
    },
    /// The handshake failed. The initiator sends a Terminate first when
    /// [`HandshakeError::term_error`] names one, then closes; a responder closes.
    Failed(HandshakeError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingReply,
    AwaitingRequest,
    AwaitingDecision,
    Done,
}

/// The MPA startup of one connection, sans I/O.
#[derive(Debug, Clone)]
pub struct Handshake {
    role: Role,
    config: MpaConfig,
    limits: ReadLimits,
    state: State,
    deadline: Option<Instant>,
    rx: Vec<u8>,
    tx: Vec<u8>,
    events: std::collections::VecDeque<Event>,
    request: Option<PeerRequest>,
    offered_revision: u8,
}

fn rtr_any(rtr: Rtr) -> bool {
    rtr.send || rtr.write || rtr.read
}

impl Handshake {
    /// Starts the initiator side: queues the MPA Request with `limits` and `private_data`.
    pub fn initiator(
        config: MpaConfig,
        limits: ReadLimits,
        private_data: &[u8],
        now: Instant,
    ) -> Result<Handshake, HandshakeError> {
        let enhanced = (config.revision == 2).then(|| Enhanced {
            ird: limits.ird,
            ord: limits.ord,
            peer_to_peer: config.peer_to_peer.is_some_and(rtr_any),
            rtr: config.peer_to_peer.unwrap_or_default(),
        });
        let request = StartupRepr {
            kind: StartupKind::Request,
            markers: config.markers,
            crc: config.crc,
            reject: false,
            revision: config.revision,
            enhanced,
            private_data,
        };
        let mut tx = vec![0u8; request.buffer_len()];
        request.emit(&mut tx).map_err(HandshakeError::Local)?;
        Ok(Handshake {
            role: Role::Initiator,
            deadline: Some(now + config.timeout),
            offered_revision: config.revision,
            config,
            limits,
            state: State::AwaitingReply,
            rx: Vec::new(),
            tx,
            events: Default::default(),
            request: None,
        })
    }

    /// Starts the responder side: waits for the MPA Request.
    pub fn responder(config: MpaConfig, now: Instant) -> Handshake {
        Handshake {
            role: Role::Responder,
            deadline: Some(now + config.timeout),
            offered_revision: 0,
            config,
            limits: ReadLimits::default(),
            state: State::AwaitingRequest,
            rx: Vec::new(),
            tx: Vec::new(),
            events: Default::default(),
            request: None,
        }
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the handshake is over (established, rejected or failed).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds bytes from the peer. Returns how many were consumed: the handshake takes exactly
    /// the peer's startup frame and leaves whatever follows (the first FPDUs) to the caller.
    pub fn handle_input(&mut self, bytes: &[u8]) -> usize {
        if !matches!(self.state, State::AwaitingReply | State::AwaitingRequest) {
            return 0;
        }
        let before = self.rx.len();
        // Never buffer past the frame: take the header first, then exactly its private data.
        let want = if self.rx.len() < mpa::HEADER_LEN {
            mpa::HEADER_LEN - self.rx.len()
        } else {
            let total = StartupPacket::new_unchecked(&self.rx[..]).frame_len();
            total - self.rx.len()
        };
        let take = want.min(bytes.len());
        self.rx.extend_from_slice(&bytes[..take]);
        let mut used = take;
        if self.rx.len() == mpa::HEADER_LEN && before < mpa::HEADER_LEN {
            // Judge the header before waiting for up to 64 KiB of announced private data.
            let header = StartupPacket::new_unchecked(&self.rx[..]);
            let key_ok = header.key() == mpa::REQUEST_KEY || header.key() == mpa::REPLY_KEY;
            if !key_ok || usize::from(header.pd_length()) > mpa::MAX_PRIVATE_DATA {
                let frame = std::mem::take(&mut self.rx);
                self.on_frame(&frame);
                return used;
            }
        }
        if self.rx.len() == mpa::HEADER_LEN && before < mpa::HEADER_LEN && take < bytes.len() {
            // The header just completed: take the private data from the same input.
            used += self.handle_input(&bytes[take..]);
            return used;
        }
        if self.rx.len() >= mpa::HEADER_LEN {
            let total = StartupPacket::new_unchecked(&self.rx[..]).frame_len();
            if self.rx.len() == total {
                let frame = std::mem::take(&mut self.rx);
                self.on_frame(&frame);
            }
        }
        used
    }

    fn fail(&mut self, error: HandshakeError) {
        self.state = State::Done;
        self.deadline = None;
        self.events.push_back(Event::Failed(error));
    }

    fn on_frame(&mut self, frame: &[u8]) {
        let expect = match self.role {
            Role::Initiator => StartupKind::Reply,
            Role::Responder => StartupKind::Request,
        };
        let repr = match StartupRepr::parse_expecting(frame, expect) {
            Ok(r) => r,
            Err(e) => return self.fail(HandshakeError::Invalid(e)),
        };
        if repr.private_data.len() > self.config.max_private_data {
            return self.fail(HandshakeError::PrivateDataTooLong(repr.private_data.len()));
        }
        match self.role {
            Role::Responder => self.on_request(&repr),
            Role::Initiator => self.on_reply(&repr),
        }
    }

    fn on_request(&mut self, repr: &StartupRepr<'_>) {
        let request = PeerRequest {
            revision: repr.revision,
            crc: repr.crc,
            markers: repr.markers,
            limits: repr.enhanced.map(|e| ReadLimits {
                ird: e.ird,
                ord: e.ord,
            }),
            rtr: repr.enhanced.filter(|e| e.peer_to_peer).map(|e| e.rtr),
            private_data: repr.private_data.to_vec(),
        };
        self.state = State::AwaitingDecision;
        // The consumer has no deadline for its decision (NDK §7.6).
        self.deadline = None;
        self.request = Some(request.clone());
        self.events.push_back(Event::Request(request));
    }

    fn on_reply(&mut self, repr: &StartupRepr<'_>) {
        if repr.revision > self.offered_revision {
            return self.fail(HandshakeError::Invalid(netdirect_wire::Error::MpaRevision(
                repr.revision,
            )));
        }
        if repr.reject {
            self.state = State::Done;
            self.deadline = None;
            self.events.push_back(Event::Rejected {
                private_data: repr.private_data.to_vec(),
            });
            return;
        }
        let mut limits = self.limits;
        let mut rtr = None;
        if let Some(e) = repr.enhanced {
            if e.ord > self.limits.ird {
                return self.fail(HandshakeError::InsufficientIrd {
                    ird: self.limits.ird,
                    peer_ord: e.ord,
                });
            }
            limits = ReadLimits {
                ird: e.ord,
                ord: self.limits.ord.min(e.ird),
            };
            if e.peer_to_peer {
                let offered = self.config.peer_to_peer.unwrap_or_default();
                let chosen = [RtrKind::Write, RtrKind::Read, RtrKind::Send]
                    .into_iter()
                    .filter(|k| k.offered_in(e.rtr))
                    .collect::<Vec<_>>();
                match chosen.as_slice() {
                    [k] if k.offered_in(offered) => rtr = Some(*k),
                    _ => return self.fail(HandshakeError::NoMatchingRtr),
                }
            }
        }
        self.state = State::Done;
        self.deadline = None;
        self.events.push_back(Event::Established(Negotiated {
            role: Role::Initiator,
            revision: repr.revision,
            crc: self.config.crc || repr.crc,
            markers_tx: repr.markers,
            markers_rx: self.config.markers,
            limits,
            rtr,
            peer_private_data: repr.private_data.to_vec(),
        }));
    }

    /// Responder: accepts the pending Request with our read `limits` and `private_data`, queues
    /// the Reply, and reports [`Event::Established`].
    pub fn accept(
        &mut self,
        limits: ReadLimits,
        private_data: &[u8],
    ) -> Result<(), HandshakeError> {
        let request = match (self.state, &self.request) {
            (State::AwaitingDecision, Some(r)) => r.clone(),
            _ => return Err(HandshakeError::State),
        };
        let revision = request.revision.min(self.config.revision);
        let effective = match request.limits {
            Some(peer) => ReadLimits {
                ird: limits.ird.min(peer.ord),
                ord: limits.ord.min(peer.ird),
            },
            None => limits,
        };
        let rtr = request
            .rtr
            .filter(|r| rtr_any(*r) || request.limits.is_some())
            .map(|offered| {
                [RtrKind::Write, RtrKind::Read, RtrKind::Send]
                    .into_iter()
                    .find(|k| {
                        k.offered_in(offered)
                            && self
                                .config
                                .peer_to_peer
                                .is_none_or(|ours| k.offered_in(ours))
                            && (*k != RtrKind::Read || effective.ird > 0)
                    })
                    // Nothing acceptable offered: answer Write, as siw does; Write needs nothing.
                    .unwrap_or(RtrKind::Write)
            });
        let enhanced = (revision == 2 && request.limits.is_some()).then(|| Enhanced {
            ird: effective.ird,
            ord: effective.ord,
            peer_to_peer: rtr.is_some(),
            rtr: rtr.map(RtrKind::as_rtr).unwrap_or_default(),
        });
        let crc = request.crc || self.config.crc;
        let reply = StartupRepr {
            kind: StartupKind::Reply,
            markers: self.config.markers,
            crc,
            reject: false,
            revision,
            enhanced,
            private_data,
        };
        let mut tx = vec![0u8; reply.buffer_len()];
        reply.emit(&mut tx).map_err(HandshakeError::Local)?;
        self.tx.extend_from_slice(&tx);
        self.state = State::Done;
        self.events.push_back(Event::Established(Negotiated {
            role: Role::Responder,
            revision,
            crc,
            markers_tx: request.markers,
            markers_rx: self.config.markers,
            limits: effective,
            rtr: if enhanced.is_some() { rtr } else { None },
            peer_private_data: request.private_data,
        }));
        Ok(())
    }

    /// Responder: rejects the pending Request; queues a Reply with R set and `private_data`.
    /// The caller closes the connection once the Reply is sent.
    pub fn reject(&mut self, private_data: &[u8]) -> Result<(), HandshakeError> {
        let request = match (self.state, &self.request) {
            (State::AwaitingDecision, Some(r)) => r.clone(),
            _ => return Err(HandshakeError::State),
        };
        let revision = request.revision.min(self.config.revision);
        let reply = StartupRepr {
            kind: StartupKind::Reply,
            markers: false,
            crc: request.crc || self.config.crc,
            reject: true,
            revision,
            enhanced: (revision == 2 && request.limits.is_some()).then(Enhanced::default),
            private_data,
        };
        let mut tx = vec![0u8; reply.buffer_len()];
        reply.emit(&mut tx).map_err(HandshakeError::Local)?;
        self.tx.extend_from_slice(&tx);
        self.state = State::Done;
        Ok(())
    }

    /// Appends the bytes to send to `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.tx);
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Handshake::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Advances time; fails the handshake once the peer's startup frame is overdue.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| now >= d) {
            self.fail(HandshakeError::Timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pump(a: &mut Handshake, b: &mut Handshake) {
        let mut buf = Vec::new();
        a.poll_transmit(&mut buf);
        let n = b.handle_input(&buf);
        assert_eq!(n, buf.len());
    }

    fn pair(
        ic: MpaConfig,
        il: ReadLimits,
        rc: MpaConfig,
        rl: ReadLimits,
    ) -> (Option<Event>, Option<Event>) {
        let now = Instant::now();
        let mut i = Handshake::initiator(ic, il, b"hello", now).unwrap();
        let mut r = Handshake::responder(rc, now);
        pump(&mut i, &mut r);
        match r.poll_event() {
            Some(Event::Request(req)) => assert_eq!(req.private_data, b"hello"),
            e => panic!("{e:?}"),
        }
        r.accept(rl, b"welcome").unwrap();
        let re = r.poll_event();
        pump(&mut r, &mut i);
        (i.poll_event(), re)
    }

    #[test]
    fn siw_like_defaults() {
        let l = ReadLimits { ird: 1, ord: 1 };
        let (i, r) = pair(MpaConfig::default(), l, MpaConfig::default(), l);
        let Some(Event::Established(i)) = i else {
            panic!()
        };
        let Some(Event::Established(r)) = r else {
            panic!()
        };
        assert_eq!((i.revision, i.crc, i.limits, i.rtr), (2, false, l, None));
        assert_eq!(i.peer_private_data, b"welcome");
        assert_eq!(r.peer_private_data, b"hello");
        assert_eq!(r.limits, l);
    }

    #[test]
    fn ird_ord_cross_cap_and_crc_from_either_side() {
        let crc = MpaConfig {
            crc: true,
            ..MpaConfig::default()
        };
        let (i, r) = pair(
            MpaConfig::default(),
            ReadLimits { ird: 8, ord: 16 },
            crc,
            ReadLimits { ird: 4, ord: 32 },
        );
        let Some(Event::Established(i)) = i else {
            panic!()
        };
        let Some(Event::Established(r)) = r else {
            panic!()
        };
        // Responder: IRD min(4, 16) = 4, ORD min(32, 8) = 8. Initiator: IRD 8, ORD min(16, 4).
        assert_eq!(r.limits, ReadLimits { ird: 4, ord: 8 });
        assert_eq!(i.limits, ReadLimits { ird: 8, ord: 4 });
        assert!(i.crc && r.crc);
    }

    #[test]
    fn revision_1_has_no_limits_exchange() {
        let v1 = MpaConfig {
            revision: 1,
            ..MpaConfig::default()
        };
        let (i, r) = pair(
            v1,
            ReadLimits { ird: 2, ord: 2 },
            MpaConfig::default(),
            ReadLimits::default(),
        );
        let Some(Event::Established(i)) = i else {
            panic!()
        };
        let Some(Event::Established(r)) = r else {
            panic!()
        };
        assert_eq!((i.revision, r.revision), (1, 1));
        assert_eq!(i.limits, ReadLimits { ird: 2, ord: 2 });
    }

    #[test]
    fn peer_to_peer_picks_write() {
        let p2p = MpaConfig {
            peer_to_peer: Some(Rtr {
                send: true,
                write: true,
                read: true,
            }),
            ..MpaConfig::default()
        };
        let (i, r) = pair(
            p2p.clone(),
            ReadLimits { ird: 1, ord: 1 },
            MpaConfig::default(),
            ReadLimits { ird: 1, ord: 1 },
        );
        let Some(Event::Established(i)) = i else {
            panic!()
        };
        let Some(Event::Established(r)) = r else {
            panic!()
        };
        assert_eq!((i.rtr, r.rtr), (Some(RtrKind::Write), Some(RtrKind::Write)));
        // A responder that only takes Send.
        let send_only = MpaConfig {
            peer_to_peer: Some(Rtr {
                send: true,
                ..Rtr::default()
            }),
            ..p2p.clone()
        };
        let (i, _) = pair(
            p2p,
            ReadLimits { ird: 1, ord: 1 },
            send_only,
            ReadLimits { ird: 1, ord: 1 },
        );
        let Some(Event::Established(i)) = i else {
            panic!()
        };
        assert_eq!(i.rtr, Some(RtrKind::Send));
    }

    #[test]
    fn reject_and_bad_replies() {
        let now = Instant::now();
        let mut i =
            Handshake::initiator(MpaConfig::default(), ReadLimits::default(), b"", now).unwrap();
        let mut r = Handshake::responder(MpaConfig::default(), now);
        pump(&mut i, &mut r);
        assert!(matches!(r.poll_event(), Some(Event::Request(_))));
        r.reject(b"go away").unwrap();
        assert_eq!(
            r.accept(ReadLimits::default(), b""),
            Err(HandshakeError::State)
        );
        pump(&mut r, &mut i);
        assert_eq!(
            i.poll_event(),
            Some(Event::Rejected {
                private_data: b"go away".to_vec()
            })
        );

        // A Reply that asks for more reads than our IRD.
        let mut i = Handshake::initiator(
            MpaConfig::default(),
            ReadLimits { ird: 1, ord: 1 },
            b"",
            now,
        )
        .unwrap();
        let reply = b"MPA ID Rep Frame\x10\x02\x00\x04\x00\x01\x00\x05";
        assert_eq!(i.handle_input(reply), 24);
        let Some(Event::Failed(e)) = i.poll_event() else {
            panic!()
        };
        assert_eq!(
            e,
            HandshakeError::InsufficientIrd {
                ird: 1,
                peer_ord: 5
            }
        );
        assert_eq!(e.term_error(), Some(TermError::LlpInsufficientIrd));

        // A Request where a Reply is due, and a Reply with a higher revision than offered.
        let v1 = MpaConfig {
            revision: 1,
            ..MpaConfig::default()
        };
        let mut i = Handshake::initiator(v1, ReadLimits::default(), b"", now).unwrap();
        i.handle_input(b"MPA ID Req Frame\x00\x01\x00\x00");
        assert!(matches!(
            i.poll_event(),
            Some(Event::Failed(HandshakeError::Invalid(
                netdirect_wire::Error::MpaKey
            )))
        ));
        let mut i = Handshake::initiator(
            MpaConfig {
                revision: 1,
                ..MpaConfig::default()
            },
            ReadLimits::default(),
            b"",
            now,
        )
        .unwrap();
        i.handle_input(b"MPA ID Rep Frame\x00\x02\x00\x00");
        assert!(matches!(
            i.poll_event(),
            Some(Event::Failed(HandshakeError::Invalid(_)))
        ));
    }

    #[test]
    fn byte_at_a_time_and_leftover() {
        let now = Instant::now();
        let mut r = Handshake::responder(MpaConfig::default(), now);
        let mut i = Handshake::initiator(
            MpaConfig::default(),
            ReadLimits { ird: 3, ord: 3 },
            &[7u8; 40],
            now,
        )
        .unwrap();
        let mut bytes = Vec::new();
        i.poll_transmit(&mut bytes);
        bytes.extend_from_slice(b"FPDU");
        let mut used = 0;
        for b in bytes.chunks(1) {
            used += r.handle_input(b);
        }
        assert_eq!(used, bytes.len() - 4);
        assert!(
            matches!(r.poll_event(), Some(Event::Request(req)) if req.private_data == [7u8; 40])
        );
    }

    #[test]
    fn hostile_headers_fail_at_once() {
        let now = Instant::now();
        let mut r = Handshake::responder(MpaConfig::default(), now);
        // Announces 65535 octets of private data: no need to wait for them.
        assert_eq!(r.handle_input(b"MPA ID Req Frame\x00\x01\xff\xff"), 20);
        assert!(matches!(
            r.poll_event(),
            Some(Event::Failed(HandshakeError::Invalid(_)))
        ));
        // A bare HTTP request.
        let mut r = Handshake::responder(MpaConfig::default(), now);
        r.handle_input(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(matches!(
            r.poll_event(),
            Some(Event::Failed(HandshakeError::Invalid(_)))
        ));
        assert!(r.is_done());
        assert_eq!(r.handle_input(b"more"), 0);
    }

    #[test]
    fn timeouts_and_limits() {
        let now = Instant::now();
        let mut r = Handshake::responder(MpaConfig::default(), now);
        r.handle_timeout(now + Duration::from_secs(9));
        assert_eq!(r.poll_event(), None);
        r.handle_timeout(r.poll_timeout().unwrap());
        assert_eq!(r.poll_event(), Some(Event::Failed(HandshakeError::Timeout)));
        assert!(r.is_done());

        let small = MpaConfig {
            max_private_data: 4,
            ..MpaConfig::default()
        };
        let mut r = Handshake::responder(small, now);
        let mut i =
            Handshake::initiator(MpaConfig::default(), ReadLimits::default(), b"12345", now)
                .unwrap();
        pump(&mut i, &mut r);
        assert_eq!(
            r.poll_event(),
            Some(Event::Failed(HandshakeError::PrivateDataTooLong(5)))
        );

        let big = [0u8; 509];
        assert!(matches!(
            Handshake::initiator(MpaConfig::default(), ReadLimits::default(), &big, now),
            Err(HandshakeError::Local(netdirect_wire::Error::TooLarge))
        ));
    }
}
