//! A sans-I/O FPDU deframer: bytes of one TCP direction in, ULPDUs out.

use super::fpdu::{CRC_LEN, FpduPacket, LENGTH_LEN, fpdu_len};
use super::marker::MarkerLayout;
use crate::{Error, Result};

/// What was negotiated for the direction being received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DeframerConfig {
    /// CRC was negotiated (C in either startup frame): check every FPDU's CRC.
    pub crc: bool,
    /// We asked for markers (M in our startup frame): the peer inserts them in what we receive.
    pub markers: bool,
    /// Sequence number (or stream offset mod 2³²) of the first octet of the first FPDU, the
    /// marker base.
    pub first_seq: u32,
}

/// Splits the byte stream of one direction into FPDUs, strips markers, checks CRCs, and hands
/// out each ULPDU.
///
/// It buffers what it is given and never panics. Once it has seen a bad CRC, a marker that does
/// not match, or a malformed length, it stops: every later [`Deframer::next_ulpdu`] returns the
/// same error, because the stream can no longer be trusted.
///
/// ```
/// use netdirect_wire::mpa::{Deframer, DeframerConfig, emit_fpdu};
/// let mut wire = vec![0u8; 64];
/// let n = emit_fpdu(b"first", true, &mut wire).unwrap();
/// let m = emit_fpdu(b"second", true, &mut wire[n..]).unwrap();
/// let mut d = Deframer::new(DeframerConfig { crc: true, ..Default::default() });
/// d.push(&wire[..3]);
/// assert_eq!(d.next_ulpdu(), None);
/// d.push(&wire[3..n + m]);
/// assert_eq!(d.next_ulpdu(), Some(Ok(&b"first"[..])));
/// assert_eq!(d.next_ulpdu(), Some(Ok(&b"second"[..])));
/// assert_eq!(d.next_ulpdu(), None);
/// ```
#[derive(Debug, Clone)]
pub struct Deframer {
    config: DeframerConfig,
    markers: Option<MarkerLayout>,
    /// Received octets live in `buf[head..end]`; `buf[end..]` is initialized spare room that
    /// [`Deframer::fill_with`] lends out, so a socket can read straight into it.
    buf: Vec<u8>,
    head: usize,
    end: usize,
    seq: u32,
    stripped: Vec<u8>,
    failed: Option<Error>,
    /// The ULPDU last handed out: (from `stripped`?, start, length).
    last: Option<(bool, usize, usize)>,
    /// How many octets the next socket read should ask for ([`Deframer::read_window`]).
    window: usize,
    /// The last read returned less than it was offered: the socket is drained for now.
    drained: bool,
    /// Octets of spare room lent by [`Deframer::spare`] and not yet committed.
    lent: usize,
}

/// The smallest read window, and the input buffer a connection keeps while idle: a page of
/// payload with every header, pad, CRC and marker an FPDU wraps it in (27 octets, and 36 of
/// markers). A read that takes a whole page-sized message then comes back short, and the
/// socket counts as drained. (At 4 KiB even, a 4 KiB write, 4,116 octets on the wire, took
/// two reads on a receiver that kept up: 4,096 octets, then the last 20.)
pub const READ_MIN: usize = 4 * 1024 + 64;
/// The largest read window: reads double up to this while each fills its window.
pub const READ_MAX: usize = 256 * 1024;

impl Deframer {
    /// A deframer for a direction configured as `config`.
    pub fn new(config: DeframerConfig) -> Self {
        Deframer {
            config,
            markers: config.markers.then(|| MarkerLayout::new(config.first_seq)),
            buf: Vec::new(),
            head: 0,
            end: 0,
            seq: config.first_seq,
            stripped: Vec::new(),
            failed: None,
            last: None,
            window: READ_MIN,
            drained: false,
            lent: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> DeframerConfig {
        self.config
    }

    /// Makes room for `n` more octets after the buffered ones; returns where they go.
    fn reserve(&mut self, n: usize) -> usize {
        self.last = None;
        self.lent = 0;
        if self.head > 0 && (self.head == self.end || self.head >= self.buf.len() / 2) {
            self.buf.copy_within(self.head..self.end, 0);
            self.end -= self.head;
            self.head = 0;
        }
        if self.buf.len() < self.end + n {
            // Zeroed once when the buffer grows, not on every fill.
            self.buf.resize(self.end + n, 0);
        }
        self.end
    }

    /// Adds bytes received from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        let at = self.reserve(bytes.len());
        self.buf[at..at + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Lends up to `n` writable octets after the buffered ones to `read` (a socket read straight
    /// into the deframer, saving a copy) and keeps the first `k` of them when it returns
    /// `Ok(k)` (`k` is clamped to `n`). An `Err` (a read that would block) means the socket
    /// is drained: with nothing buffered the input buffer is given back
    /// ([`Deframer::release_idle`]).
    pub fn fill_with<E>(
        &mut self,
        n: usize,
        read: impl FnOnce(&mut [u8]) -> core::result::Result<usize, E>,
    ) -> core::result::Result<usize, E> {
        let at = self.reserve(n);
        let k = match read(&mut self.buf[at..at + n]) {
            Ok(k) => k.min(n),
            Err(e) => {
                // Would block (or the connection broke): the socket is drained.
                self.drained = true;
                self.release_idle();
                return Err(e);
            }
        };
        self.end += k;
        self.account_read(n, k);
        Ok(k)
    }

    /// Adapts the read window to what the socket had: double it after a read that filled it,
    /// note a short one (the socket is drained).
    fn account_read(&mut self, offered: usize, got: usize) {
        self.drained = got < offered;
        if !self.drained && offered >= self.window {
            self.window = (self.window * 2).min(READ_MAX);
        }
    }

    /// How many octets to ask the socket for next: [`READ_MIN`] while reads come back short
    /// (a quiet or latency-bound connection), doubling up to [`READ_MAX`] while each read fills
    /// its window (a backlog), back to the minimum once the input is drained
    /// ([`Deframer::release_idle`]). The input buffer grows with it, so a connection holds
    /// what is in flight, not the largest read it ever made.
    pub fn read_window(&self) -> usize {
        self.window
    }

    /// Gives the input buffer back when there is nothing buffered and the last read found the
    /// socket drained: a buffer larger than [`READ_MIN`] is freed and the read window starts
    /// again from the minimum. Returns whether memory was freed.
    pub fn release_idle(&mut self) -> bool {
        if self.head != self.end || !self.drained || self.lent != 0 {
            return false;
        }
        self.window = READ_MIN;
        if self.buf.len() <= READ_MIN && self.stripped.capacity() <= READ_MIN {
            return false;
        }
        self.buf = Vec::new();
        self.stripped = Vec::new();
        self.head = 0;
        self.end = 0;
        self.last = None;
        true
    }

    /// Octets of memory the deframer holds (input buffer and marker scratch).
    pub fn footprint(&self) -> usize {
        self.buf.capacity() + self.stripped.capacity()
    }

    /// Lends `n` writable octets after the buffered ones for a read that also lands
    /// elsewhere (the tail of a vectored read whose first pieces are a payload's destination).
    /// Only the first `k` become input, with [`Deframer::commit`]`(k)`, which must come before
    /// anything else that takes `&mut self` except [`Deframer::skip`]: the payload octets read
    /// into the other pieces come first in the stream.
    pub fn spare(&mut self, n: usize) -> &mut [u8] {
        let at = self.reserve(n);
        self.lent = n;
        &mut self.buf[at..at + n]
    }

    /// Keeps the first `k` octets (clamped to what was lent) of the last [`Deframer::spare`]
    /// as received input; returns how many were kept.
    pub fn commit(&mut self, k: usize) -> usize {
        let k = k.min(self.lent);
        self.end += k;
        self.account_read(self.lent, k);
        self.lent = 0;
        k
    }

    /// Octets received but not yet handed out as part of an FPDU.
    pub fn buffered(&self) -> usize {
        self.end - self.head
    }

    /// The octets received but not yet handed out, as they came off the wire (markers
    /// included). Lets a caller read the head of an FPDU that is not complete yet, to place
    /// its payload elsewhere ([`Deframer::consume`], [`Deframer::skip`]).
    pub fn peek(&self) -> &[u8] {
        &self.buf[self.head..self.end]
    }

    /// Drops the first `n` buffered octets (clamped to what is buffered) that the caller took
    /// from [`Deframer::peek`] itself, advancing the sequence number; returns how many were
    /// dropped. Only for streams without markers (with markers it does nothing and returns 0):
    /// the caller then owns the FPDU boundaries and the CRC of what it took.
    pub fn consume(&mut self, n: usize) -> usize {
        if self.markers.is_some() || self.failed.is_some() {
            return 0;
        }
        self.last = None;
        let n = n.min(self.end - self.head);
        self.head += n;
        // n ≤ buffer length; the sequence number is the stream offset mod 2³².
        self.seq = self.seq.wrapping_add(n as u32);
        if self.head == self.end {
            self.head = 0;
            self.end = 0;
        }
        n
    }

    /// [`Deframer::consume`], returning the octets dropped (valid until the next call that
    /// takes `&mut self`).
    pub fn consume_slice(&mut self, n: usize) -> &[u8] {
        let at = self.head;
        let n = self.consume(n);
        &self.buf[at..at + n]
    }

    /// Counts `n` octets of the stream that the caller received somewhere else (a socket
    /// read straight into their destination) after the buffered ones, which must all have
    /// been consumed: the sequence number moves on. Only without markers, like
    /// [`Deframer::consume`]; returns whether the octets were counted.
    pub fn skip(&mut self, n: usize) -> bool {
        if self.markers.is_some() || self.failed.is_some() || self.head != self.end {
            return false;
        }
        self.last = None;
        self.seq = self.seq.wrapping_add(n as u32);
        true
    }

    /// Sequence number of the next octet to deframe.
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// The error that stopped the deframer, if any.
    pub fn error(&self) -> Option<Error> {
        self.failed
    }

    /// The next complete ULPDU, `None` when more bytes are needed, or the error that stopped
    /// the stream.
    pub fn next_ulpdu(&mut self) -> Option<Result<&[u8]>> {
        self.last = None;
        if let Some(e) = self.failed {
            return Some(Err(e));
        }
        let raw = &self.buf[self.head..self.end];
        let step = match self.markers {
            None => Self::plain(raw, self.config.crc).map(|o| o.map(|n| (n, false))),
            Some(layout) => {
                self.stripped.clear();
                layout
                    .strip(self.seq, raw, self.config.crc, &mut self.stripped)
                    .map(|o| o.map(|n| (n, true)))
            }
        };
        match step {
            Ok(None) => None,
            Err(e) => {
                self.failed = Some(e);
                Some(Err(e))
            }
            Ok(Some((used, stripped))) => {
                let at = self.head;
                self.head += used;
                // used ≤ 65541 + markers, far below 2³².
                self.seq = self.seq.wrapping_add(used as u32);
                let fpdu = if stripped {
                    &self.stripped[..]
                } else {
                    &self.buf[at..at + used]
                };
                let n = usize::from(u16::from_be_bytes([fpdu[0], fpdu[1]]));
                let start = if stripped {
                    LENGTH_LEN
                } else {
                    at + LENGTH_LEN
                };
                self.last = Some((stripped, start, n));
                Some(Ok(&fpdu[LENGTH_LEN..LENGTH_LEN + n]))
            }
        }
    }

    /// The ULPDU last returned by [`Deframer::next_ulpdu`], until the next call to `push` or
    /// `next_ulpdu`. Lets a caller look at it again after the borrow of `next_ulpdu` ended.
    pub fn last_ulpdu(&self) -> Option<&[u8]> {
        let (stripped, start, n) = self.last?;
        let src = if stripped {
            &self.stripped[..]
        } else {
            &self.buf[..]
        };
        src.get(start..start + n)
    }

    fn plain(raw: &[u8], crc: bool) -> Result<Option<usize>> {
        let Some(len) = raw.get(..LENGTH_LEN) else {
            return Ok(None);
        };
        let total = fpdu_len(usize::from(u16::from_be_bytes([len[0], len[1]])));
        if raw.len() < total {
            return Ok(None);
        }
        if crc {
            FpduPacket::new_unchecked(&raw[..total]).check_crc()?;
        }
        debug_assert!(total >= LENGTH_LEN + CRC_LEN);
        Ok(Some(total))
    }
}

#[cfg(test)]
mod tests {
    use super::super::emit_fpdu;
    use super::*;

    #[test]
    fn crc_off_ignores_field_and_crc_on_stops_on_error() {
        let mut wire = vec![0u8; 16];
        let n = emit_fpdu(b"abcd", true, &mut wire).unwrap();
        wire[n - 1] ^= 0xFF;
        let mut off = Deframer::new(DeframerConfig::default());
        off.push(&wire[..n]);
        assert_eq!(off.next_ulpdu(), Some(Ok(&b"abcd"[..])));
        let mut on = Deframer::new(DeframerConfig {
            crc: true,
            ..Default::default()
        });
        on.push(&wire[..n]);
        on.push(&wire[..n]);
        let first = on.next_ulpdu();
        assert!(matches!(first, Some(Err(Error::Crc { .. }))));
        assert!(matches!(on.next_ulpdu(), Some(Err(Error::Crc { .. }))));
        assert!(on.error().is_some());
    }

    #[test]
    fn fill_with_reads_in_place() {
        let mut wire = vec![0u8; 64];
        let n = emit_fpdu(b"in place", false, &mut wire).unwrap();
        let mut d = Deframer::new(DeframerConfig::default());
        let mut at = 0;
        while at < n {
            // A short "read" of 5 octets into a 16-octet window.
            let k: core::result::Result<usize, ()> = d.fill_with(16, |buf| {
                let k = (n - at).min(5);
                buf[..k].copy_from_slice(&wire[at..at + k]);
                Ok(k)
            });
            at += k.unwrap();
        }
        assert_eq!(d.buffered(), n);
        assert_eq!(d.next_ulpdu(), Some(Ok(&b"in place"[..])));
        // An error keeps nothing; a claim beyond the window is clamped.
        assert_eq!(d.fill_with(8, |_| Err::<usize, _>("io")), Err("io"));
        assert_eq!(d.fill_with(8, |_| Ok::<_, ()>(100)), Ok(8));
        assert_eq!(d.buffered(), 8);
    }

    #[test]
    fn consume_and_skip_take_an_fpdu_around_the_buffer() {
        let mut wire = vec![0u8; 64];
        let n = emit_fpdu(b"0123456789", true, &mut wire).unwrap();
        let m = emit_fpdu(b"next", true, &mut wire[n..]).unwrap();
        let mut d = Deframer::new(DeframerConfig {
            crc: true,
            first_seq: 7,
            ..Default::default()
        });
        // Header and 3 payload octets buffered; 7 payload octets "read elsewhere".
        d.push(&wire[..5]);
        assert_eq!(d.peek(), &wire[..5]);
        assert!(!d.skip(7), "buffered octets come first");
        assert_eq!(d.consume(100), 5);
        assert!(d.skip(7));
        assert_eq!(d.seq(), 7 + 12);
        // The trailer and the next FPDU go through the buffer again.
        d.push(&wire[12..n + m]);
        assert_eq!(d.consume_slice(n - 12), &wire[12..n]);
        assert_eq!(d.next_ulpdu(), Some(Ok(&b"next"[..])));
        assert_eq!(d.seq(), 7 + (n + m) as u32);
        // With markers the caller cannot own the boundaries.
        let mut marked = Deframer::new(DeframerConfig {
            markers: true,
            ..Default::default()
        });
        marked.push(&wire[..4]);
        assert_eq!(marked.consume(4), 0);
        assert!(!marked.skip(4));
    }

    #[test]
    fn the_smallest_read_takes_a_page_sized_message_whole() {
        use super::super::{MarkerLayout, fpdu_len};
        // A page of payload behind the longest header (untagged: 18 octets).
        let plain = fpdu_len(18 + 4096);
        // With markers, at the worst phase against the marker grid.
        let marked = (0..512u32)
            .map(|seq| MarkerLayout::new(0).marked_len(seq, plain))
            .max()
            .unwrap();
        // Strictly less: the read comes back short, so the socket counts as drained.
        assert!(plain < READ_MIN && marked < READ_MIN, "{plain} {marked}");
    }

    #[test]
    fn read_window_grows_with_a_backlog_and_the_buffer_goes_back_when_idle() {
        let mut d = Deframer::new(DeframerConfig::default());
        assert_eq!(d.read_window(), READ_MIN);
        // Reads that fill their window: a backlog; the window doubles up to the maximum.
        let mut w = Vec::new();
        for _ in 0..10 {
            let n = d.read_window();
            w.push(n);
            d.fill_with(n, |buf| Ok::<_, ()>(buf.len())).unwrap();
            d.consume(n);
        }
        assert_eq!(w[..3], [READ_MIN, 2 * READ_MIN, 4 * READ_MIN]);
        assert_eq!(d.read_window(), READ_MAX);
        assert!(d.footprint() >= READ_MAX);
        // Not drained yet: nothing is released.
        assert!(!d.release_idle());
        // A short read (the socket is empty), everything consumed: the buffer goes back.
        d.fill_with(d.read_window(), |buf| {
            // An empty ULPDU with CRC off: length, pad, CRC.
            buf[..8].fill(0);
            Ok::<_, ()>(8)
        })
        .unwrap();
        assert!(!d.release_idle(), "an FPDU is buffered");
        assert_eq!(d.next_ulpdu(), Some(Ok(&[][..])));
        assert!(d.release_idle());
        assert_eq!(d.footprint(), 0);
        assert_eq!(d.read_window(), READ_MIN);
        // A small buffer is kept.
        d.fill_with(64, |_| Ok::<_, ()>(0)).unwrap();
        assert!(!d.release_idle());
        assert_eq!(d.footprint(), 64);
        // A read that would block after a backlog releases at once.
        for _ in 0..4 {
            let n = d.read_window();
            d.fill_with(n, |buf| Ok::<_, ()>(buf.len())).unwrap();
            d.consume(n);
        }
        assert!(d.footprint() > READ_MIN);
        assert_eq!(
            d.fill_with(d.read_window(), |_| Err::<usize, _>("would block")),
            Err("would block")
        );
        assert_eq!(d.footprint(), 0);
    }

    #[test]
    fn spare_and_commit_take_the_tail_of_a_read() {
        let mut wire = vec![0u8; 64];
        let n = emit_fpdu(b"0123456789", true, &mut wire).unwrap();
        let m = emit_fpdu(b"next", true, &mut wire[n..]).unwrap();
        let mut d = Deframer::new(DeframerConfig {
            crc: true,
            ..Default::default()
        });
        d.push(&wire[..4]);
        assert_eq!(d.consume(4), 4);
        // One "read": 8 payload octets elsewhere, then the trailer and the next FPDU here.
        let tail = d.spare(32);
        tail[..n - 12 + m].copy_from_slice(&wire[12..n + m]);
        assert!(d.skip(8));
        assert_eq!(d.commit(1000), 32, "clamped to what was lent");
        assert_eq!(d.buffered(), 32);
        let mut d = Deframer::new(DeframerConfig {
            crc: true,
            ..Default::default()
        });
        d.push(&wire[..4]);
        d.consume(4);
        let tail = d.spare(32);
        tail[..n - 12 + m].copy_from_slice(&wire[12..n + m]);
        assert!(d.skip(8));
        assert_eq!(d.commit(n - 12 + m), n - 12 + m);
        assert_eq!(d.consume_slice(n - 12), &wire[12..n]);
        assert_eq!(d.next_ulpdu(), Some(Ok(&b"next"[..])));
        assert_eq!(d.seq(), (n + m) as u32);
        assert_eq!(d.commit(5), 0, "nothing lent");
    }

    #[test]
    fn markers_across_many_fpdus() {
        let config = DeframerConfig {
            crc: true,
            markers: true,
            first_seq: 0xFFFF_FF00,
        };
        let layout = MarkerLayout::new(config.first_seq);
        let mut wire = Vec::new();
        let mut seq = config.first_seq;
        let payloads: Vec<Vec<u8>> = (0..20).map(|i| vec![i as u8; i * 37 % 700]).collect();
        for p in &payloads {
            let mut f = vec![0u8; fpdu_len(p.len())];
            emit_fpdu(p, true, &mut f).unwrap();
            let mut raw = vec![0u8; f.len() + 16];
            let n = layout.insert(seq, &f, true, &mut raw).unwrap();
            wire.extend_from_slice(&raw[..n]);
            seq = seq.wrapping_add(n as u32);
        }
        let mut d = Deframer::new(config);
        let mut got = Vec::new();
        for chunk in wire.chunks(13) {
            d.push(chunk);
            while let Some(r) = d.next_ulpdu() {
                got.push(r.unwrap().to_vec());
                assert_eq!(d.last_ulpdu(), got.last().map(|v| &v[..]));
            }
            assert_eq!(d.last_ulpdu(), None);
        }
        assert_eq!(got, payloads);
        assert_eq!(d.seq(), seq);
        assert_eq!(d.buffered(), 0);
    }
}
