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
}

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
        }
    }

    /// The configuration.
    pub fn config(&self) -> DeframerConfig {
        self.config
    }

    /// Makes room for `n` more octets after the buffered ones; returns where they go.
    fn reserve(&mut self, n: usize) -> usize {
        self.last = None;
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
    /// `Ok(k)` (`k` is clamped to `n`).
    pub fn fill_with<E>(
        &mut self,
        n: usize,
        read: impl FnOnce(&mut [u8]) -> core::result::Result<usize, E>,
    ) -> core::result::Result<usize, E> {
        let at = self.reserve(n);
        let k = read(&mut self.buf[at..at + n])?.min(n);
        self.end += k;
        Ok(k)
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
