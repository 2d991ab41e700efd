//! Capture helpers for the siw replay: read an Ethernet pcap into TCP segments and reassemble
//! each connection's two byte streams. Copied from `netdirect-wire/tests/common/mod.rs` (the
//! reading half only).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::BufReader;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use netdirect_wire::mpa;
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;

/// Hex of `bytes`, for failure messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// One TCP segment of a capture.
#[derive(Debug, Clone)]
pub(crate) struct TcpSegment {
    /// 1-based frame number, as tshark counts.
    pub(crate) frame: usize,
    /// Sender.
    pub(crate) src: SocketAddr,
    /// Receiver.
    pub(crate) dst: SocketAddr,
    /// Sequence number.
    pub(crate) seq: u32,
    /// SYN flag.
    pub(crate) syn: bool,
    /// ACK flag.
    pub(crate) ack: bool,
    /// FIN flag.
    pub(crate) fin: bool,
    /// TCP payload.
    pub(crate) payload: Vec<u8>,
}

/// Every TCP segment of an Ethernet pcap (IPv4 and IPv6). Panics on anything else: the captures
/// are ours and must be complete.
pub(crate) fn read_pcap(path: &Path) -> Vec<TcpSegment> {
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
pub(crate) struct Stream {
    /// Sender.
    pub(crate) src: SocketAddr,
    /// Receiver.
    pub(crate) dst: SocketAddr,
    /// Sequence number of the SYN, when the capture has it.
    pub(crate) isn: Option<u32>,
    /// Sequence number of `data[0]`.
    pub(crate) base_seq: u32,
    /// The contiguous bytes from `base_seq` on, in sequence order.
    pub(crate) data: Vec<u8>,
    /// Stream offsets where the segments (in sequence order) ended: feed a deframer in these
    /// pieces to see the stream as TCP delivered it.
    pub(crate) segment_ends: Vec<usize>,
    /// Payload octets that were already in the stream (retransmissions, overlaps).
    pub(crate) duplicate_octets: usize,
    /// Segments that started below the highest sequence number already seen (retransmissions
    /// and reordering).
    pub(crate) late_segments: usize,
    /// Octets captured after a hole in the sequence space (not in `data`).
    pub(crate) after_hole: usize,
    /// Frame numbers of the segments that carried payload.
    pub(crate) frames: Vec<usize>,
}

/// One TCP connection: the initiator's stream (the side that sent the SYN, or the MPA Request
/// when the SYN was not captured) and the responder's.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    /// Bytes from the initiator.
    pub(crate) initiator: Stream,
    /// Bytes from the responder.
    pub(crate) responder: Stream,
    /// Frame number of the connection's first segment.
    pub(crate) first_frame: usize,
}

impl Connection {
    /// "client:port → server:port".
    pub(crate) fn name(&self) -> String {
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
pub(crate) fn connections(segments: &[TcpSegment]) -> Vec<Connection> {
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
