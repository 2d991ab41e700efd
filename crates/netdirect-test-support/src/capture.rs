//! The siw captures and other pcaps: read a pcap into reassembled TCP byte streams, write a
//! pcap of synthetic TCP conversations, and run one MPA connection through the wire crate
//! (startup frames, deframing, parse, re-emit) collecting every disagreement.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use netdirect_wire::mpa::{
    self, Deframer, DeframerConfig, Enhanced, MarkerLayout, StartupKind, StartupPacket, StartupRepr,
};
use netdirect_wire::rdmap::{self, Opcode};
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};

/// The folder of the siw captures, `testdata/siw/` at the top of the repository.
pub const SIW_CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/siw/");

/// The path of capture `name` in [`SIW_CAPTURES`]; fails the test when the folder or the file
/// is missing (these tests need the repository's test data and do not skip).
pub fn siw_capture(name: &str) -> PathBuf {
    let dir = Path::new(SIW_CAPTURES);
    assert!(
        dir.is_dir(),
        "capture directory {} is missing: these tests need testdata/siw/ in the \
         repository; they do not skip",
        dir.display()
    );
    let path = dir.join(name);
    assert!(path.is_file(), "capture {} is missing", path.display());
    path
}

/// Hex of `bytes`, for failure messages.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Hex of at most the first `max` octets, with the total length when cut.
pub fn hex_cut(bytes: &[u8], max: usize) -> String {
    if bytes.len() <= max {
        hex(bytes)
    } else {
        format!("{}… ({} octets)", hex(&bytes[..max]), bytes.len())
    }
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// One TCP segment of a capture.
#[derive(Debug, Clone)]
pub struct TcpSegment {
    /// 1-based frame number, as tshark counts.
    pub frame: usize,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// SYN flag.
    pub syn: bool,
    /// ACK flag.
    pub ack: bool,
    /// FIN flag.
    pub fin: bool,
    /// TCP payload.
    pub payload: Vec<u8>,
}

/// Every TCP segment of an Ethernet pcap (IPv4 and IPv6). Panics on anything else: the captures
/// are ours and must be complete.
pub fn read_pcap(path: &Path) -> Vec<TcpSegment> {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut reader = PcapReader::new(BufReader::new(file))
        .unwrap_or_else(|e| panic!("{}: not a pcap: {e}", path.display()));
    assert_eq!(
        reader.header().datalink,
        DataLink::ETHERNET,
        "{}: only Ethernet captures are supported",
        path.display()
    );
    let mut out = Vec::new();
    let mut frame = 0usize;
    while let Some(packet) = reader.next_packet() {
        frame += 1;
        let packet = packet.unwrap_or_else(|e| panic!("{} frame {frame}: {e}", path.display()));
        assert_eq!(
            packet.orig_len as usize,
            packet.data.len(),
            "{} frame {frame} was cut by the snap length",
            path.display()
        );
        let sliced = SlicedPacket::from_ethernet(&packet.data)
            .unwrap_or_else(|e| panic!("{} frame {frame}: {e}", path.display()));
        let (src_ip, dst_ip): (IpAddr, IpAddr) = match &sliced.net {
            Some(NetSlice::Ipv4(ip)) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
            Some(NetSlice::Ipv6(ip)) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
            None => continue,
        };
        let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
            continue;
        };
        out.push(TcpSegment {
            frame,
            src: SocketAddr::new(src_ip, tcp.source_port()),
            dst: SocketAddr::new(dst_ip, tcp.destination_port()),
            seq: tcp.sequence_number(),
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            payload: tcp.payload().to_vec(),
        });
    }
    out
}

/// The reassembled bytes one endpoint sent on one connection.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Sequence number of the SYN, when the capture has it.
    pub isn: Option<u32>,
    /// Sequence number of `data[0]`.
    pub base_seq: u32,
    /// The contiguous bytes from `base_seq` on, in sequence order.
    pub data: Vec<u8>,
    /// Stream offsets where the segments (in sequence order) ended: feed a deframer in these
    /// pieces to see the stream as TCP delivered it.
    pub segment_ends: Vec<usize>,
    /// Payload octets that were already in the stream (retransmissions, overlaps).
    pub duplicate_octets: usize,
    /// Segments that started below the highest sequence number already seen (retransmissions
    /// and reordering).
    pub late_segments: usize,
    /// Octets captured after a hole in the sequence space (not in `data`).
    pub after_hole: usize,
    /// Frame numbers of the segments that carried payload.
    pub frames: Vec<usize>,
}

/// One TCP connection: the initiator's stream (the side that sent the SYN, or the MPA Request
/// when the SYN was not captured) and the responder's.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Bytes from the initiator.
    pub initiator: Stream,
    /// Bytes from the responder.
    pub responder: Stream,
    /// Frame number of the connection's first segment.
    pub first_frame: usize,
}

impl Connection {
    /// "client:port → server:port".
    pub fn name(&self) -> String {
        format!("{} → {}", self.initiator.src, self.initiator.dst)
    }
}

fn key(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b { (a, b) } else { (b, a) }
}

/// Groups segments into connections (a new SYN with another sequence number on the same
/// address pair starts a new connection) and reassembles both directions of each.
///
/// Panics if a retransmission disagrees with the bytes already captured for the same sequence
/// numbers: that would make the capture ambiguous.
pub fn connections(segments: &[TcpSegment]) -> Vec<Connection> {
    // Conversation index per address pair, and the segments of each conversation.
    let mut current: BTreeMap<(SocketAddr, SocketAddr), usize> = BTreeMap::new();
    let mut groups: Vec<Vec<&TcpSegment>> = Vec::new();
    let mut isn_of: Vec<Option<(SocketAddr, u32)>> = Vec::new();
    for seg in segments {
        let k = key(seg.src, seg.dst);
        let fresh_syn = seg.syn && !seg.ack;
        let idx = match current.get(&k) {
            Some(&i) if !(fresh_syn && isn_of[i].is_some_and(|(_, s)| s != seg.seq)) => i,
            _ => {
                groups.push(Vec::new());
                isn_of.push(None);
                current.insert(k, groups.len() - 1);
                groups.len() - 1
            }
        };
        if fresh_syn && isn_of[idx].is_none() {
            isn_of[idx] = Some((seg.src, seg.seq));
        }
        groups[idx].push(seg);
    }
    groups
        .into_iter()
        .zip(isn_of)
        .map(|(segs, isn)| {
            let first = segs[0];
            let initiator = match isn {
                Some((a, _)) => a,
                None => segs
                    .iter()
                    .find(|s| s.payload.starts_with(&mpa::REQUEST_KEY))
                    .map_or(first.src, |s| s.src),
            };
            let responder = if first.src == initiator {
                first.dst
            } else {
                first.src
            };
            Connection {
                initiator: reassemble(&segs, initiator, responder),
                responder: reassemble(&segs, responder, initiator),
                first_frame: first.frame,
            }
        })
        .collect()
}

fn reassemble(segs: &[&TcpSegment], src: SocketAddr, dst: SocketAddr) -> Stream {
    let mine: Vec<&TcpSegment> = segs.iter().copied().filter(|s| s.src == src).collect();
    let isn = mine.iter().find(|s| s.syn).map(|s| s.seq);
    let with_data: Vec<&TcpSegment> = mine
        .iter()
        .copied()
        .filter(|s| !s.payload.is_empty())
        .collect();
    // The first data octet: after the SYN, or else the lowest sequence number captured
    // (compared relative to the first data segment, so a wrap is handled).
    let base_seq = match (isn, with_data.first()) {
        (Some(isn), _) => isn.wrapping_add(1),
        (None, Some(first)) => with_data
            .iter()
            .map(|s| s.seq)
            .min_by_key(|&s| s.wrapping_sub(first.seq) as i32)
            .unwrap_or(first.seq),
        (None, None) => 0,
    };
    let mut bytes: Vec<Option<u8>> = Vec::new();
    let mut duplicate_octets = 0;
    let mut late_segments = 0;
    let mut highest_end = 0usize;
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    for s in &with_data {
        let rel = i64::from(s.seq.wrapping_sub(base_seq) as i32);
        let mut payload = &s.payload[..];
        let mut start = rel;
        if start < 0 {
            // Octets before the first data octet: only a retransmitted SYN could carry them.
            let skip = usize::try_from(-start)
                .unwrap_or(usize::MAX)
                .min(payload.len());
            duplicate_octets += skip;
            payload = &payload[skip..];
            start = 0;
        }
        let start = usize::try_from(start).expect("non-negative");
        let end = start + payload.len();
        if start < highest_end {
            late_segments += 1;
        }
        if bytes.len() < end {
            bytes.resize(end, None);
        }
        for (i, &b) in payload.iter().enumerate() {
            match bytes[start + i] {
                None => bytes[start + i] = Some(b),
                Some(old) => {
                    assert_eq!(
                        old,
                        b,
                        "frame {}: retransmitted octet at seq {} differs from the captured one",
                        s.frame,
                        s.seq.wrapping_add(i as u32)
                    );
                    duplicate_octets += 1;
                }
            }
        }
        highest_end = highest_end.max(end);
        pieces.push((start, end));
    }
    let contiguous = bytes
        .iter()
        .position(Option::is_none)
        .unwrap_or(bytes.len());
    let after_hole = bytes[contiguous..].iter().filter(|b| b.is_some()).count();
    let data: Vec<u8> = bytes[..contiguous]
        .iter()
        .map(|b| b.expect("filled"))
        .collect();
    pieces.sort_unstable();
    let mut segment_ends: Vec<usize> = Vec::new();
    for &(_, e) in &pieces {
        let e = e.min(contiguous);
        if e > segment_ends.last().copied().unwrap_or(0) {
            segment_ends.push(e);
        }
    }
    Stream {
        src,
        dst,
        isn,
        base_seq,
        data,
        segment_ends,
        duplicate_octets,
        late_segments,
        after_hole,
        frames: with_data.iter().map(|s| s.frame).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Running a connection through the wire crate
// ---------------------------------------------------------------------------------------------

/// A startup frame as owned values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Startup {
    /// Request or Reply.
    pub kind: StartupKind,
    /// M.
    pub markers: bool,
    /// C.
    pub crc: bool,
    /// R.
    pub reject: bool,
    /// Revision.
    pub revision: u8,
    /// RFC 6581 prefix.
    pub enhanced: Option<Enhanced>,
    /// Private data after the prefix.
    pub private_data: Vec<u8>,
    /// Octets on the wire.
    pub len: usize,
}

/// One FPDU found in a stream.
#[derive(Debug, Clone)]
pub struct Fpdu {
    /// Stream offset of its first octet (its leading marker, if any).
    pub offset: usize,
    /// TCP sequence number of its first octet.
    pub seq: u32,
    /// Octets on the wire, markers included.
    pub wire_len: usize,
    /// The ULPDU.
    pub ulpdu: Vec<u8>,
    /// The CRC field as it was on the wire.
    pub crc_field: [u8; 4],
}

impl Fpdu {
    /// The parsed ULPDU (it parsed when the FPDU was recorded).
    pub fn repr(&self) -> rdmap::Repr<'_> {
        rdmap::Repr::parse(&self.ulpdu).expect("checked when recorded")
    }

    /// The opcode.
    pub fn opcode(&self) -> Opcode {
        self.repr().message.opcode()
    }
}

/// What one direction of a connection held.
#[derive(Debug, Clone, Default)]
pub struct DirectionReport {
    /// The startup frame, if the stream held one that parsed.
    pub startup: Option<Startup>,
    /// CRC in force on this direction.
    pub crc: bool,
    /// Markers in this direction.
    pub markers: bool,
    /// Every whole FPDU whose ULPDU parsed.
    pub fpdus: Vec<Fpdu>,
    /// Octets of an unfinished FPDU at the very end of the stream (capture cut, or a hole).
    pub partial_tail: usize,
}

impl DirectionReport {
    /// Number of FPDUs (DDP segments) with `op`.
    pub fn count(&self, op: Opcode) -> usize {
        self.fpdus.iter().filter(|f| f.opcode() == op).count()
    }

    /// Number of messages (segments with L set) with `op`.
    pub fn messages(&self, op: Opcode) -> usize {
        self.fpdus
            .iter()
            .filter(|f| f.opcode() == op && f.repr().last)
            .count()
    }
}

/// Both directions of a connection, and every way the wire crate disagreed with the bytes.
#[derive(Debug, Clone, Default)]
pub struct ConnectionReport {
    /// Connection name.
    pub name: String,
    /// From the initiator.
    pub initiator: DirectionReport,
    /// From the responder.
    pub responder: DirectionReport,
    /// Each problem, with the bytes involved.
    pub problems: Vec<String>,
}

fn parse_startup(
    data: &[u8],
    kind: StartupKind,
    who: &str,
    problems: &mut Vec<String>,
) -> Option<Startup> {
    if data.is_empty() {
        return None;
    }
    let len = match StartupPacket::new_checked(data) {
        Ok(p) => p.frame_len(),
        Err(e) => {
            problems.push(format!(
                "{who}: no whole {kind:?} at the stream start ({e}): {}",
                hex_cut(data, 64)
            ));
            return None;
        }
    };
    let bytes = &data[..len];
    let repr = match StartupRepr::parse_expecting(bytes, kind) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!(
                "{who}: StartupRepr::parse_expecting({kind:?}) failed with {e:?} on {}",
                hex(bytes)
            ));
            return None;
        }
    };
    let mut out = vec![0u8; repr.buffer_len()];
    match repr.emit(&mut out) {
        Ok(n) if out[..n] == *bytes => {}
        Ok(n) => problems.push(format!(
            "{who}: {kind:?} re-emits as {} but was {}",
            hex(&out[..n]),
            hex(bytes)
        )),
        Err(e) => problems.push(format!(
            "{who}: {kind:?} {} parsed but does not emit: {e:?}",
            hex(bytes)
        )),
    }
    Some(Startup {
        kind: repr.kind,
        markers: repr.markers,
        crc: repr.crc,
        reject: repr.reject,
        revision: repr.revision,
        enhanced: repr.enhanced,
        private_data: repr.private_data.to_vec(),
        len,
    })
}

/// Deframes `stream[from..]` and checks every FPDU: CRC (when on), markers (when on), RDMAP
/// parse, and byte-exact re-emission of the whole FPDU.
fn deframe(
    stream: &Stream,
    from: usize,
    crc: bool,
    markers: bool,
    who: &str,
    report: &mut DirectionReport,
    problems: &mut Vec<String>,
) {
    let data = &stream.data;
    let first_seq = stream.base_seq.wrapping_add(from as u32);
    let mut deframer = Deframer::new(DeframerConfig {
        crc,
        markers,
        first_seq,
    });
    let layout = MarkerLayout::new(first_seq);
    let mut at = from;
    let mut fed = from;
    let mut ends = stream
        .segment_ends
        .iter()
        .copied()
        .filter(|&e| e > from)
        .peekable();
    loop {
        let seq_before = deframer.seq();
        let step = deframer.next_ulpdu().map(|r| r.map(<[u8]>::to_vec));
        match step {
            None => {
                // Feed the next segment's worth of bytes, or stop at the end of the stream.
                match ends.next() {
                    Some(end) => {
                        deframer.push(&data[fed..end]);
                        fed = end;
                    }
                    None => break,
                }
            }
            Some(Err(e)) => {
                problems.push(format!(
                    "{who}: deframer error {e:?} at stream offset {at} (seq {seq_before}): {}",
                    hex_cut(&data[at..], 96)
                ));
                return;
            }
            Some(Ok(ulpdu)) => {
                let used = deframer.seq().wrapping_sub(seq_before) as usize;
                let wire = &data[at..at + used];
                let fpdu = Fpdu {
                    offset: at,
                    seq: seq_before,
                    wire_len: used,
                    crc_field: wire[used - 4..].try_into().expect("4 octets"),
                    ulpdu,
                };
                if check_fpdu(&fpdu, wire, crc, markers.then_some(layout), who, problems) {
                    report.fpdus.push(fpdu);
                }
                at += used;
            }
        }
    }
    report.partial_tail = data.len() - at;
}

/// Parses and re-emits one FPDU; returns whether its ULPDU parsed.
fn check_fpdu(
    fpdu: &Fpdu,
    wire: &[u8],
    crc: bool,
    markers: Option<MarkerLayout>,
    who: &str,
    problems: &mut Vec<String>,
) -> bool {
    let repr = match rdmap::Repr::parse(&fpdu.ulpdu) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!(
                "{who}: FPDU at stream offset {} (seq {}): ULPDU does not parse ({e:?}); FPDU {}",
                fpdu.offset,
                fpdu.seq,
                hex_cut(wire, 160)
            ));
            return false;
        }
    };
    let mut ulpdu = vec![0u8; repr.buffer_len()];
    let emitted = match repr.emit(&mut ulpdu) {
        Ok(n) => n,
        Err(e) => {
            problems.push(format!(
                "{who}: FPDU at offset {}: {:?} parsed but does not emit ({e:?}); ULPDU {}",
                fpdu.offset,
                repr.message.opcode(),
                hex_cut(&fpdu.ulpdu, 160)
            ));
            return true;
        }
    };
    let mut out = vec![0u8; mpa::fpdu_len(emitted)];
    let n = mpa::emit_fpdu(&ulpdu[..emitted], crc, &mut out).expect("ULPDU fits");
    let out = match markers {
        None => out[..n].to_vec(),
        Some(layout) => {
            let mut raw = vec![0u8; layout.marked_len(fpdu.seq, n)];
            let m = layout
                .insert(fpdu.seq, &out[..n], crc, &mut raw)
                .expect("aligned");
            raw.truncate(m);
            raw
        }
    };
    if out != wire {
        let first_diff = out
            .iter()
            .zip(wire)
            .position(|(a, b)| a != b)
            .unwrap_or(out.len().min(wire.len()));
        problems.push(format!(
            "{who}: {:?} FPDU at stream offset {} (seq {}) re-emits differently \
             (first difference at octet {first_diff}, lengths {} vs {}):\n  captured  {}\n  \
             re-emitted {}",
            repr.message.opcode(),
            fpdu.offset,
            fpdu.seq,
            wire.len(),
            out.len(),
            hex_cut(wire, 160),
            hex_cut(&out, 160)
        ));
    }
    true
}

/// Runs one connection through the wire crate: the Request from the initiator, the Reply from
/// the responder (both re-emitted byte for byte), then every FPDU of both directions.
pub fn analyze(conn: &Connection) -> ConnectionReport {
    let name = conn.name();
    let mut problems = Vec::new();
    let ini_who = format!("{name} initiator→responder");
    let res_who = format!("{name} responder→initiator");
    let req = parse_startup(
        &conn.initiator.data,
        StartupKind::Request,
        &ini_who,
        &mut problems,
    );
    let rep = parse_startup(
        &conn.responder.data,
        StartupKind::Reply,
        &res_who,
        &mut problems,
    );
    let mut report = ConnectionReport {
        name,
        ..Default::default()
    };
    for s in [&conn.initiator, &conn.responder] {
        if s.after_hole > 0 {
            problems.push(format!(
                "{} → {}: {} octets captured after a hole in the sequence space were ignored",
                s.src, s.dst, s.after_hole
            ));
        }
    }
    if let (Some(req), Some(rep)) = (&req, &rep) {
        let crc = req.crc || rep.crc;
        // M in a frame: its sender wants markers in what it receives.
        let ini_markers = rep.markers;
        let res_markers = req.markers;
        if !rep.reject {
            deframe(
                &conn.initiator,
                req.len,
                crc,
                ini_markers,
                &ini_who,
                &mut report.initiator,
                &mut problems,
            );
            deframe(
                &conn.responder,
                rep.len,
                crc,
                res_markers,
                &res_who,
                &mut report.responder,
                &mut problems,
            );
        }
        report.initiator.crc = crc;
        report.responder.crc = crc;
        report.initiator.markers = ini_markers;
        report.responder.markers = res_markers;
    }
    report.initiator.startup = req;
    report.responder.startup = rep;
    report.problems = problems;
    report
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// Frames of a pcap being built, Ethernet, one millisecond apart.
#[derive(Debug, Default)]
pub struct PcapBuilder {
    frames: Vec<Vec<u8>>,
}

impl PcapBuilder {
    /// An empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames so far.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame was added.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Writes the capture to `path`.
    pub fn write(&self, path: &Path) {
        let file = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            snaplen: 262_144,
            ..Default::default()
        };
        let mut w = PcapWriter::with_header(BufWriter::new(file), header).expect("pcap header");
        for (i, f) in self.frames.iter().enumerate() {
            let ts = Duration::from_millis(1_700_000_000_000 + i as u64);
            w.write_packet(&PcapPacket::new(ts, f.len() as u32, f))
                .expect("write packet");
        }
    }
}

/// TCP flags of a synthetic segment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    /// SYN.
    pub syn: bool,
    /// ACK (set on everything but the first SYN).
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// PSH.
    pub psh: bool,
}

/// One TCP connection being written: sequence numbers and ACKs of both sides are tracked, so the
/// segments form a conversation tshark follows without complaint.
#[derive(Debug)]
pub struct TcpConversation {
    client: SocketAddr,
    server: SocketAddr,
    /// Next sequence number of the client and of the server.
    next: [u32; 2],
    open: bool,
}

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

impl TcpConversation {
    /// A conversation between `client` and `server` (both IPv4 or both IPv6), with these initial
    /// sequence numbers. Nothing is written until [`TcpConversation::handshake`].
    pub fn new(client: SocketAddr, server: SocketAddr, client_isn: u32, server_isn: u32) -> Self {
        assert_eq!(client.is_ipv4(), server.is_ipv4(), "mixed address families");
        TcpConversation {
            client,
            server,
            next: [client_isn, server_isn],
            open: false,
        }
    }

    /// Sequence number of the next octet `from_client` (or the server) sends.
    pub fn next_seq(&self, from_client: bool) -> u32 {
        self.next[usize::from(!from_client)]
    }

    fn frame(&self, pcap: &mut PcapBuilder, from_client: bool, flags: Flags, payload: &[u8]) {
        let (src, dst, smac, dmac) = if from_client {
            (self.client, self.server, CLIENT_MAC, SERVER_MAC)
        } else {
            (self.server, self.client, SERVER_MAC, CLIENT_MAC)
        };
        let seq = self.next_seq(from_client);
        let ack_no = self.next_seq(!from_client);
        let eth = PacketBuilder::ethernet2(smac, dmac);
        let ip = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
            _ => unreachable!("checked in new"),
        };
        let mut tcp = ip.tcp(src.port(), dst.port(), seq, 65535);
        if flags.syn {
            tcp = tcp.syn();
        }
        if flags.ack {
            tcp = tcp.ack(ack_no);
        }
        if flags.fin {
            tcp = tcp.fin();
        }
        if flags.psh {
            tcp = tcp.psh();
        }
        let mut frame = Vec::with_capacity(tcp.size(payload.len()));
        tcp.write(&mut frame, payload).expect("frame fits");
        pcap.frames.push(frame);
    }

    /// SYN, SYN-ACK, ACK.
    pub fn handshake(&mut self, pcap: &mut PcapBuilder) {
        let syn = Flags {
            syn: true,
            ..Default::default()
        };
        self.frame(pcap, true, syn, &[]);
        self.next[0] = self.next[0].wrapping_add(1);
        self.frame(pcap, false, Flags { ack: true, ..syn }, &[]);
        self.next[1] = self.next[1].wrapping_add(1);
        self.ack(pcap, true);
        self.open = true;
    }

    /// A bare ACK from one side.
    pub fn ack(&mut self, pcap: &mut PcapBuilder, from_client: bool) {
        let ack = Flags {
            ack: true,
            ..Default::default()
        };
        self.frame(pcap, from_client, ack, &[]);
    }

    /// One segment carrying `payload`, followed by the peer's ACK.
    pub fn send(&mut self, pcap: &mut PcapBuilder, from_client: bool, payload: &[u8]) {
        assert!(self.open, "handshake first");
        assert!(!payload.is_empty(), "empty segment");
        let data = Flags {
            ack: true,
            psh: true,
            ..Default::default()
        };
        self.frame(pcap, from_client, data, payload);
        let i = usize::from(!from_client);
        self.next[i] = self.next[i].wrapping_add(payload.len() as u32);
        self.ack(pcap, !from_client);
    }

    /// FIN from both sides and the last ACK.
    pub fn close(&mut self, pcap: &mut PcapBuilder) {
        let fin = Flags {
            ack: true,
            fin: true,
            ..Default::default()
        };
        self.frame(pcap, true, fin, &[]);
        self.next[0] = self.next[0].wrapping_add(1);
        self.frame(pcap, false, fin, &[]);
        self.next[1] = self.next[1].wrapping_add(1);
        self.ack(pcap, true);
        self.open = false;
    }
}

/// A path in the temporary directory that is removed when dropped.
#[derive(Debug)]
pub struct TempPath(pub PathBuf);

impl TempPath {
    /// `<tmp>/netdirect-wire-<tag>-<pid>-<nanos>.pcap`.
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        TempPath(std::env::temp_dir().join(format!(
            "netdirect-wire-{tag}-{}-{nanos}.pcap",
            std::process::id()
        )))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
