//! Captures without root: every connection's bytes, both directions, as a pcap file with
//! synthesized Ethernet, IPv4 or IPv6 and TCP headers, so Wireshark's iWARP dissectors
//! (`iwarp_mpa`, `iwarp_ddp_rdmap`) decode the MPA startup frames, FPDUs and CRCs.
//!
//! A [`Capture`] is a shared sink ([`transport::EngineConfig::capture`](crate::transport::EngineConfig::capture),
//! `nd --pcap FILE`). Each connection of the engine writes into it through its own
//! `ConnCapture`: a SYN, SYN-ACK and ACK when the connection is made (the client is the side
//! that connected), then one TCP segment per chunk of at most [`SEGMENT`] octets of what was
//! read or written, with correct sequence and acknowledgement numbers per direction, and a FIN
//! per direction when that side closed. The bytes are the ones the socket took or gave,
//! captured where they are read or written (so header-first receive and vectored writes are
//! seen as on the wire); what the kernel segmented differently is invisible and irrelevant
//! to the dissectors, which reassemble the TCP stream.
//!
//! **Size limit.** The file stops growing at its limit: the frame that would cross it and every
//! later one are dropped, [`CaptureStats::truncated`] turns true and one `warn` event says so.
//! **Cost.** A connection without capture pays one branch on an `Option` per read and write; with
//! capture every write of a frame takes the sink's mutex (shared by the progress threads and the
//! consumer threads doing inline I/O).
//!
//! When both ends of a connection live in the same process and write to the same sink (a
//! loopback test), only the first end that opens is captured: the two would describe the same
//! TCP conversation twice with different sequence numbers.
//!
//! Besides the frames, the sink counts the FPDUs of each connection and direction by following
//! the MPA framing of the captured bytes ([`ConnectionStats::fpdus`]), an account of the capture
//! itself that a reader of the file (tshark) must match. With markers negotiated it stops
//! counting (the count is then `None`).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use etherparse::PacketBuilder;
use netdirect_wire::mpa;
use parking_lot::Mutex;

/// Payload octets per synthesized TCP segment: fits an IPv4 or IPv6 packet with room to spare.
pub const SEGMENT: usize = 32 * 1024;
/// The file's snapshot length: larger than any frame written.
const SNAPLEN: u32 = 262_144;
/// pcap's global header.
const FILE_HEADER: u64 = 24;
/// pcap's per-record header.
const RECORD_HEADER: u64 = 16;
/// MAC addresses of the synthesized Ethernet headers.
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// A pcap file that connections write to, bounded by a size limit. Share it (`Arc`) among
/// engines; cheap to keep, its file is flushed on [`Capture::flush`] and when dropped.
pub struct Capture {
    path: PathBuf,
    limit: u64,
    sink: Mutex<Sink>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("path", &self.path)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

struct Sink {
    /// `None` once writing failed (the error is kept) or the limit was reached and flushed.
    writer: Option<BufWriter<File>>,
    error: Option<io::ErrorKind>,
    octets: u64,
    frames: u64,
    truncated: bool,
    /// The (client, server) pairs captured so far, so the other end in this process is skipped.
    pairs: HashSet<(SocketAddr, SocketAddr)>,
    connections: Vec<ConnectionStats>,
}

/// What a capture holds so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames written.
    pub frames: u64,
    /// Octets of the file (headers included).
    pub octets: u64,
    /// The size limit dropped frames.
    pub truncated: bool,
    /// Writing failed (the kind of error); nothing was written after it.
    pub error: Option<io::ErrorKind>,
    /// Each captured connection, in the order they opened.
    pub connections: Vec<ConnectionStats>,
}

/// One captured connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionStats {
    /// This process's end.
    pub local: SocketAddr,
    /// The peer's end.
    pub peer: SocketAddr,
    /// FPDUs in the captured bytes, `[sent, received]`, following the MPA framing (`None`
    /// once it cannot be followed: markers, or a startup frame that is not MPA).
    pub fpdus: [Option<u64>; 2],
    /// Octets captured, `[sent, received]` (also those the size limit kept out of the file).
    pub octets: [u64; 2],
}

impl Capture {
    /// Creates (truncates) `path` and writes the pcap header. `limit`: the largest file size in
    /// octets (at least the header; frames that do not fit are dropped).
    pub fn create(path: impl AsRef<Path>, limit: u64) -> io::Result<Arc<Capture>> {
        let path = path.as_ref().to_path_buf();
        let mut writer = BufWriter::new(File::create(&path)?);
        // pcap 2.4, microseconds, native byte order, Ethernet.
        let mut header = Vec::with_capacity(FILE_HEADER as usize);
        header.extend_from_slice(&0xa1b2_c3d4u32.to_ne_bytes());
        header.extend_from_slice(&2u16.to_ne_bytes());
        header.extend_from_slice(&4u16.to_ne_bytes());
        header.extend_from_slice(&0i32.to_ne_bytes());
        header.extend_from_slice(&0u32.to_ne_bytes());
        header.extend_from_slice(&SNAPLEN.to_ne_bytes());
        header.extend_from_slice(&1u32.to_ne_bytes());
        writer.write_all(&header)?;
        Ok(Arc::new(Capture {
            path,
            limit,
            sink: Mutex::new(Sink {
                writer: Some(writer),
                error: None,
                octets: FILE_HEADER,
                frames: 0,
                truncated: false,
                pairs: HashSet::new(),
                connections: Vec::new(),
            }),
        }))
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The size limit in octets.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// What the capture holds so far.
    pub fn stats(&self) -> CaptureStats {
        let s = self.sink.lock();
        CaptureStats {
            frames: s.frames,
            octets: s.octets,
            truncated: s.truncated,
            error: s.error,
            connections: s.connections.clone(),
        }
    }

    /// Writes buffered frames to the file.
    pub fn flush(&self) -> io::Result<()> {
        let mut s = self.sink.lock();
        match s.writer.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }

    /// Starts capturing a connection between `local` and `peer`; `client`: this end connected.
    /// Writes the TCP handshake. `None` when the other end of the same connection is already
    /// captured here.
    pub(crate) fn open(
        self: &Arc<Self>,
        local: SocketAddr,
        peer: SocketAddr,
        client: bool,
    ) -> Option<ConnCapture> {
        let (c, s) = if client { (local, peer) } else { (peer, local) };
        let mut sink = self.sink.lock();
        if !sink.pairs.insert((c, s)) {
            return None;
        }
        let index = sink.connections.len();
        sink.connections.push(ConnectionStats {
            local,
            peer,
            fpdus: [Some(0), Some(0)],
            octets: [0, 0],
        });
        drop(sink);
        // Arbitrary, distinct initial sequence numbers; each direction starts after its SYN.
        let isn = [0x1000_0000u32, 0x2000_0000u32];
        let mut cc = ConnCapture {
            capture: self.clone(),
            index,
            local,
            peer,
            client,
            next: if client { isn } else { [isn[1], isn[0]] },
            framing: [Framing::default(), Framing::default()],
            head: [Vec::new(), Vec::new()],
            fin: [false, false],
        };
        // SYN from the client, SYN-ACK from the server, ACK from the client.
        let from_local = client;
        cc.segment(from_local, TcpFlags::SYN, &[]);
        cc.bump(from_local, 1);
        cc.segment(!from_local, TcpFlags::SYN_ACK, &[]);
        cc.bump(!from_local, 1);
        cc.segment(from_local, TcpFlags::ACK, &[]);
        Some(cc)
    }

    fn write(&self, frame: &[u8]) {
        let mut s = self.sink.lock();
        let s = &mut *s;
        let size = RECORD_HEADER + frame.len() as u64;
        let Some(w) = s.writer.as_mut() else {
            return;
        };
        if s.truncated || s.octets + size > self.limit {
            if !s.truncated {
                s.truncated = true;
                tracing::warn!(
                    path = %self.path.display(),
                    limit = self.limit,
                    frames = s.frames,
                    "capture reached its size limit; later frames are dropped"
                );
                let _ = w.flush();
            }
            return;
        }
        let ts = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let len = frame.len() as u32;
        let mut record = [0u8; RECORD_HEADER as usize];
        record[0..4].copy_from_slice(&(ts.as_secs() as u32).to_ne_bytes());
        record[4..8].copy_from_slice(&ts.subsec_micros().to_ne_bytes());
        record[8..12].copy_from_slice(&len.to_ne_bytes());
        record[12..16].copy_from_slice(&len.to_ne_bytes());
        match w.write_all(&record).and_then(|()| w.write_all(frame)) {
            Ok(_) => {
                s.octets += size;
                s.frames += 1;
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "capture write failed; capture stopped");
                s.error = Some(e.kind());
                s.writer = None;
            }
        }
    }

    fn account(&self, index: usize, f: impl FnOnce(&mut ConnectionStats)) {
        if let Some(c) = self.sink.lock().connections.get_mut(index) {
            f(c);
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(w) = self.sink.get_mut().writer.as_mut() {
            let _ = w.flush();
        }
    }
}

#[derive(Clone, Copy)]
struct TcpFlags {
    syn: bool,
    ack: bool,
    fin: bool,
    psh: bool,
}

impl TcpFlags {
    const SYN: TcpFlags = TcpFlags {
        syn: true,
        ack: false,
        fin: false,
        psh: false,
    };
    const SYN_ACK: TcpFlags = TcpFlags {
        ack: true,
        ..TcpFlags::SYN
    };
    const ACK: TcpFlags = TcpFlags {
        syn: false,
        ack: true,
        fin: false,
        psh: false,
    };
    const DATA: TcpFlags = TcpFlags {
        psh: true,
        ..TcpFlags::ACK
    };
    const FIN: TcpFlags = TcpFlags {
        fin: true,
        ..TcpFlags::ACK
    };
}

/// Where one direction's byte stream is in the MPA framing (for the FPDU count).
#[derive(Debug, Default)]
enum Framing {
    /// Collecting the startup frame's 20-octet header.
    #[default]
    Startup,
    /// Skipping the rest of the startup frame (private data).
    Skip(usize),
    /// At an FPDU boundary: collecting its 2-octet length.
    Length,
    /// Inside an FPDU: octets left.
    Fpdu(usize),
    /// Not followed any more.
    Lost,
}

/// One connection's side of a [`Capture`]: sequence numbers per direction and the framing
/// followed for the FPDU count. Lives with its connection, under the connection's lock.
pub(crate) struct ConnCapture {
    capture: Arc<Capture>,
    index: usize,
    local: SocketAddr,
    peer: SocketAddr,
    client: bool,
    /// Next sequence number, `[local, peer]`.
    next: [u32; 2],
    /// Per direction `[sent, received]`: where the MPA framing is, and the header octets
    /// collected so far (a startup header or an FPDU's length, split across reads).
    framing: [Framing; 2],
    head: [Vec<u8>; 2],
    fin: [bool; 2],
}

impl ConnCapture {
    /// Bytes this end wrote to its socket.
    pub(crate) fn sent(&mut self, data: &[u8]) {
        self.data(true, data);
    }

    /// Bytes this end read from its socket.
    pub(crate) fn received(&mut self, data: &[u8]) {
        self.data(false, data);
    }

    /// `from_local`'s side closed its direction (FIN), once.
    pub(crate) fn fin(&mut self, from_local: bool) {
        let d = usize::from(!from_local);
        if std::mem::replace(&mut self.fin[d], true) {
            return;
        }
        self.segment(from_local, TcpFlags::FIN, &[]);
        self.bump(from_local, 1);
        // The other side acknowledges it.
        self.segment(!from_local, TcpFlags::ACK, &[]);
    }

    fn data(&mut self, from_local: bool, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let d = usize::from(!from_local);
        let fpdus = self.follow(d, data);
        let lost = [
            matches!(self.framing[0], Framing::Lost),
            matches!(self.framing[1], Framing::Lost),
        ];
        self.capture.account(self.index, |c| {
            c.octets[d] += data.len() as u64;
            if let Some(n) = c.fpdus[d].as_mut() {
                *n += fpdus;
            }
            for (count, lost) in c.fpdus.iter_mut().zip(lost) {
                if lost {
                    *count = None;
                }
            }
        });
        for chunk in data.chunks(SEGMENT) {
            self.segment(from_local, TcpFlags::DATA, chunk);
            self.bump(from_local, chunk.len() as u32);
        }
    }

    /// Follows direction `d`'s MPA framing over `data`; returns the FPDUs it completed.
    fn follow(&mut self, d: usize, mut data: &[u8]) -> u64 {
        const STARTUP_HEADER: usize = 20;
        let mut fpdus = 0;
        while !data.is_empty() {
            match self.framing[d] {
                Framing::Lost => break,
                Framing::Startup | Framing::Length => {
                    let want = match self.framing[d] {
                        Framing::Startup => STARTUP_HEADER,
                        _ => mpa::LENGTH_LEN,
                    };
                    let head = &mut self.head[d];
                    let take = (want - head.len()).min(data.len());
                    head.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if head.len() < want {
                        break;
                    }
                    let h = std::mem::take(head);
                    self.framing[d] = if want == mpa::LENGTH_LEN {
                        let len = usize::from(u16::from_be_bytes([h[0], h[1]]));
                        Framing::Fpdu(mpa::fpdu_len(len) - mpa::LENGTH_LEN)
                    } else if h[..16] != mpa::REQUEST_KEY[..] && h[..16] != mpa::REPLY_KEY[..] {
                        Framing::Lost
                    } else if h[16] & 0x80 != 0 {
                        // Markers (M) on either startup frame: both directions lose the count.
                        self.framing[1 - d] = Framing::Lost;
                        Framing::Lost
                    } else {
                        Framing::Skip(usize::from(u16::from_be_bytes([h[18], h[19]])))
                    };
                }
                Framing::Skip(k) | Framing::Fpdu(k) => {
                    let take = k.min(data.len());
                    data = &data[take..];
                    let left = k - take;
                    self.framing[d] = match (&self.framing[d], left) {
                        (Framing::Skip(_), 0) => Framing::Length,
                        (Framing::Skip(_), k) => Framing::Skip(k),
                        (_, 0) => {
                            fpdus += 1;
                            Framing::Length
                        }
                        (_, k) => Framing::Fpdu(k),
                    };
                }
            }
        }
        fpdus
    }

    fn bump(&mut self, from_local: bool, n: u32) {
        let d = usize::from(!from_local);
        self.next[d] = self.next[d].wrapping_add(n);
    }

    fn segment(&self, from_local: bool, flags: TcpFlags, payload: &[u8]) {
        let d = usize::from(!from_local);
        let (src, dst) = if from_local {
            (self.local, self.peer)
        } else {
            (self.peer, self.local)
        };
        let from_client = from_local == self.client;
        let (smac, dmac) = if from_client {
            (CLIENT_MAC, SERVER_MAC)
        } else {
            (SERVER_MAC, CLIENT_MAC)
        };
        let eth = PacketBuilder::ethernet2(smac, dmac);
        let ip = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(t)) => eth.ipv4(s.octets(), t.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(t)) => eth.ipv6(s.octets(), t.octets(), 64),
            // A v4-mapped peer on a v6 socket, or the reverse: write both as IPv6.
            (s, t) => eth.ipv6(v6(s), v6(t), 64),
        };
        let mut tcp = ip.tcp(src.port(), dst.port(), self.next[d], 65535);
        if flags.syn {
            tcp = tcp.syn();
        }
        if flags.ack {
            tcp = tcp.ack(self.next[1 - d]);
        }
        if flags.fin {
            tcp = tcp.fin();
        }
        if flags.psh {
            tcp = tcp.psh();
        }
        let mut frame = Vec::with_capacity(tcp.size(payload.len()));
        if tcp.write(&mut frame, payload).is_ok() {
            self.capture.write(&frame);
        }
    }
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

impl Drop for ConnCapture {
    fn drop(&mut self) {
        // The connection is gone: whatever side has not closed yet is shown closing.
        self.fin(true);
        self.fin(false);
    }
}
