//! Header-first receive: an FPDU's header validated from the input buffer, its payload read
//! by the driver straight into place ([`Stream::direct_target`]).

use netdirect_wire::crc::{self as wire_crc, FpduCrc};
use netdirect_wire::ddp;
use netdirect_wire::mpa::{self, FpduPacket};
use netdirect_wire::rdmap::{self, Message};

use super::receive::{ReadResponse, RxMsg};
use super::{Access, Core, Dest, DirectTarget, Host, State, Stream};

/// An FPDU whose header was validated and whose payload goes straight to its destination.
#[derive(Debug, Clone)]
pub(super) struct DirectRx<L> {
    /// ULPDU_Length and the DDP/RDMAP headers as received (at most 2 + 18 octets).
    header: [u8; mpa::LENGTH_LEN + 18],
    header_len: usize,
    /// Where payload octet 0 goes.
    dest: Dest<L>,
    payload_len: usize,
    /// Payload octets placed so far (copied from the input buffer or read directly).
    placed: usize,
    /// CRC over the length field, the headers and the payload placed so far.
    crc: FpduCrc,
}

/// What [`Stream::poll_rx`] does next with the FPDU being received directly.
pub(super) enum DirectStep<L> {
    /// More input needed.
    Wait,
    /// Place the next `n` buffered octets at the destination.
    Place(Dest<L>, usize),
    /// The FPDU is finished (or the stream failed): go on.
    Done,
}

/// The octets a header-first read asks for: the longest DDP/RDMAP header (untagged, 18) with
/// the length field before it.
pub(super) const HEADER_READ: usize = mpa::LENGTH_LEN + 18;

impl<L: Clone> Stream<L> {
    /// Turns header-first receive on (`Some(min)`, see [`DIRECT_MIN`]) or off (`None`, the
    /// default). When on and the peer sends without markers, an FPDU whose payload still
    /// misses at least `min` octets once its header is buffered is validated from its header,
    /// and [`Stream::direct_target`] then names where the rest of its payload goes. With
    /// markers on in what we receive it does nothing: markers would land inside the payload,
    /// so every FPDU goes through the input buffer.
    ///
    /// [`DIRECT_MIN`]: super::DIRECT_MIN
    pub fn set_direct_min(&mut self, min: Option<usize>) {
        self.direct_min = min.map(|m| m.max(1));
    }

    /// Where the payload of the FPDU being received now goes, when the driver should read it
    /// from the socket straight into that memory: a validated range of `len` octets. `None`
    /// when there is no such FPDU, when buffered input must be processed first
    /// ([`Stream::poll_rx`]) or when the stream stopped.
    ///
    /// The driver reads at most `len` octets into `dest`'s bytes (a vectored read when they
    /// are several pieces), reports each piece that landed, in order, with
    /// [`Stream::direct_placed`], and goes on with [`Stream::poll_rx`] as usual: the pad and CRC
    /// come through the input buffer, and the segment's completions and errors are exactly
    /// those of the buffered path. A CRC error found then leaves the octets already placed in
    /// the destination undefined (the FPDU is never delivered: the stream terminates with an
    /// LLP CRC error, as RFC 5044 requires); nothing outside the validated range is touched.
    pub fn direct_target(&self) -> Option<DirectTarget<L>> {
        let d = self.drx.as_ref()?;
        if self.core.state != State::Active || self.deframer.buffered() != 0 {
            return None;
        }
        let len = d.payload_len - d.placed;
        let ulpdu = d.header_len - mpa::LENGTH_LEN + d.payload_len;
        (len > 0).then(|| DirectTarget {
            dest: d.dest.advanced(d.placed as u64),
            len,
            then: mpa::pad_len(ulpdu) + mpa::CRC_LEN + HEADER_READ,
        })
    }

    /// Lends `n` octets of input buffer for the tail of a read whose first pieces are the
    /// [`Stream::direct_target`] (its `then`): one read takes the rest of a payload, its
    /// trailer and the next header. Report the payload pieces with [`Stream::direct_placed`]
    /// first, then how many octets landed here with [`Stream::prefetched`]; nothing else in
    /// between.
    pub fn prefetch(&mut self, n: usize) -> &mut [u8] {
        self.deframer.spare(n)
    }

    /// Keeps the first `k` octets of the last [`Stream::prefetch`] as input; returns how many.
    pub fn prefetched(&mut self, k: usize) -> usize {
        self.deframer.commit(k)
    }

    /// Octets of memory the stream holds for input (buffers only, not its queues).
    pub fn input_footprint(&self) -> usize {
        self.deframer.footprint()
    }

    /// Payload octets the driver read into the [`Stream::direct_target`] destination, in
    /// order: they are counted and added to the FPDU's CRC. Returns how many were taken (never
    /// more than the target's `len`; 0 when there is no target).
    pub fn direct_placed(&mut self, landed: &[u8]) -> usize {
        if self.direct_target().is_none() {
            return 0;
        }
        let crc_on = self.deframer.config().crc;
        let Some(d) = self.drx.as_mut() else { return 0 };
        let k = landed.len().min(d.payload_len - d.placed);
        if crc_on {
            d.crc.update(&landed[..k]);
        }
        d.placed += k;
        self.deframer.skip(k);
        self.core.counters.bump(
            netdirect_types::counters::Counter::PlacedDirectOctets,
            k as u64,
        );
        k
    }

    /// How many octets the driver should read into the input buffer next. With header-first
    /// receive on, just enough to reach the next FPDU's header (and the current one's
    /// trailer) while large FPDUs are arriving, so that their payload is read straight into
    /// place; otherwise the deframer's read window ([`Deframer::read_window`]: small while
    /// reads come back short, growing with a backlog), so that the input buffer holds what is
    /// in flight. `None` when the stream stopped (read as much as is convenient, to drop it).
    ///
    /// [`Deframer::read_window`]: netdirect_wire::mpa::Deframer::read_window
    pub fn read_hint(&self) -> Option<usize> {
        if self.core.state != State::Active {
            return None;
        }
        let window = self.deframer.read_window();
        if self.direct_min.is_none() || self.deframer.config().markers {
            return Some(window);
        }
        let buffered = self.deframer.buffered();
        match &self.drx {
            Some(d) if d.placed < d.payload_len => Some(d.payload_len - d.placed),
            Some(d) => {
                let ulpdu = d.header_len - mpa::LENGTH_LEN + d.payload_len;
                let trailer = mpa::pad_len(ulpdu) + mpa::CRC_LEN;
                Some((trailer + HEADER_READ).saturating_sub(buffered).max(1))
            }
            None if self.large_streak && buffered < HEADER_READ => Some(HEADER_READ - buffered),
            None => Some(window),
        }
    }

    /// Looks at the buffered head of the next FPDU: when it is a Send, RDMA Write or Read
    /// Response whose payload still misses at least `min` octets and whose header passes every
    /// check the buffered path makes, takes the header out of the input buffer and returns
    /// the direct receive. Anything else (a complete FPDU, a small one, an invalid header, markers,
    /// the responder's first FPDU) is left to the buffered path, which then decides exactly
    /// as it always has, CRC first.
    pub(super) fn probe_direct<H: Host<Lease = L>>(
        &mut self,
        min: usize,
        host: &mut H,
    ) -> Option<DirectRx<L>> {
        let config = self.deframer.config();
        if config.markers || self.core.rtr_rx.is_some() {
            return None;
        }
        let raw = self.deframer.peek();
        if raw.len() < mpa::LENGTH_LEN {
            return None;
        }
        let ulpdu_len = usize::from(FpduPacket::new_unchecked(raw).ulpdu_length());
        if raw.len() >= mpa::fpdu_len(ulpdu_len) {
            return None;
        }
        // The whole DDP header (its length from its T bit) must be in.
        let ddp_len = ddp::Packet::new_checked(&raw[mpa::LENGTH_LEN..])
            .ok()?
            .header_len();
        let header_len = mpa::LENGTH_LEN + ddp_len;
        let payload_len = ulpdu_len.checked_sub(ddp_len)?;
        let header = raw.get(..header_len)?;
        if payload_len.saturating_sub(raw.len() - header_len) < min {
            return None;
        }
        let repr = rdmap::Repr::parse(&header[mpa::LENGTH_LEN..]).ok()?;
        let len = payload_len as u64;
        let dest = match repr.message {
            Message::Write { stag, to } => {
                let lease = host.tagged(stag, to, len, Access::RemoteWrite).ok()?;
                Dest::Tagged { lease, to }
            }
            Message::ReadResponse { stag, to } => self
                .core
                .probe_read_response(stag, to, len, repr.last, host)?,
            Message::Send { msn, mo, .. } => self.core.probe_send(msn, mo, len, host)?,
            _ => return None,
        };
        let mut d = DirectRx {
            header: [0; HEADER_READ],
            header_len,
            dest,
            payload_len,
            placed: 0,
            crc: FpduCrc::new(),
        };
        d.header[..header_len].copy_from_slice(header);
        if config.crc {
            d.crc.update(header);
        }
        self.deframer.consume(header_len);
        self.large_streak = true;
        Some(d)
    }

    /// One step of the FPDU being received directly: place payload octets that came through
    /// the input buffer, or check the trailer and finish the segment.
    pub(super) fn direct_step<H: Host<Lease = L>>(&mut self, host: &mut H) -> DirectStep<L> {
        let crc_on = self.deframer.config().crc;
        let buffered = self.deframer.buffered();
        let Some(d) = self.drx.as_mut() else {
            return DirectStep::Done;
        };
        let missing = d.payload_len - d.placed;
        if missing > 0 {
            if buffered == 0 {
                return DirectStep::Wait;
            }
            let n = buffered.min(missing);
            let dest = d.dest.advanced(d.placed as u64);
            if crc_on {
                d.crc.update(&self.deframer.peek()[..n]);
            }
            d.placed += n;
            return DirectStep::Place(dest, n);
        }
        let ulpdu_len = d.header_len - mpa::LENGTH_LEN + d.payload_len;
        let pad = mpa::pad_len(ulpdu_len);
        if buffered < pad + mpa::CRC_LEN {
            return DirectStep::Wait;
        }
        let d = self.drx.take().expect("checked above");
        let trailer = self.deframer.consume_slice(pad + mpa::CRC_LEN);
        let mut crc = d.crc;
        crc.update(&trailer[..pad]);
        let received = wire_crc::from_wire([
            trailer[pad],
            trailer[pad + 1],
            trailer[pad + 2],
            trailer[pad + 3],
        ]);
        let computed = crc.finish();
        if crc_on && received != computed {
            // As the buffered path does with a bad CRC.
            self.core
                .framing_error(netdirect_wire::Error::Crc { received, computed });
            return DirectStep::Done;
        }
        // The segment is whole and sound: account for it exactly as the buffered path does
        // (its payload is already in place, so the placement it returns is not used again).
        let _ = self.core.on_ulpdu(
            &d.header[mpa::LENGTH_LEN..d.header_len],
            d.payload_len,
            host,
        );
        DirectStep::Done
    }
}

impl<L: Clone> Core<L> {
    /// The checks [`Core::on_read_response`] makes, without changing anything: where the
    /// payload of a valid Read Response segment goes.
    fn probe_read_response<H: Host<Lease = L>>(
        &self,
        stag: u32,
        to: u64,
        len: u64,
        last: bool,
        host: &mut H,
    ) -> Option<Dest<L>> {
        if len == 0
            || !matches!(
                self.check_read_response(stag, to, len, last),
                Ok(ReadResponse::Data { .. })
            )
        {
            return None;
        }
        let lease = host.tagged(stag, to, len, Access::ReadSink).ok()?;
        Some(Dest::Tagged { lease, to })
    }

    /// The checks [`Core::on_send`] makes before placing: where the payload of a valid Send
    /// segment goes. The first segment of a message takes its receive now (it becomes the
    /// receive in progress, as after a first segment placed through the buffer); nothing else
    /// changes.
    fn probe_send<H: Host<Lease = L>>(
        &mut self,
        msn: u32,
        mo: u32,
        len: u64,
        host: &mut H,
    ) -> Option<Dest<L>> {
        self.check_send_start(msn, mo).ok()?;
        if self.rx.is_none() {
            let (recv, cap) = host.take_receive()?;
            self.rx = Some(RxMsg {
                recv,
                cap,
                got: 0,
                absorb: false,
            });
        }
        let msg = self.rx.as_ref()?;
        Self::check_send_fit(msg, mo, len).ok()?;
        Some(Dest::Receive {
            recv: msg.recv,
            offset: msg.got,
        })
    }
}
