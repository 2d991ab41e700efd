//! Real Linux siw traffic through our engine.
//!
//! For every connection of the captures in `testdata/siw/`, our [`Handshake`] plays each role
//! against the captured startup frame of the other side, and then our [`Stream`] plays each role
//! against the other side's captured FPDUs:
//!
//! * the captured timeline is followed frame by frame: the peer's bytes are pushed when the
//!   capture shows them (at the captured TCP segment boundaries, or re-chunked at random between
//!   two of our own frames), and the work requests behind our side's captured frames (Sends,
//!   Writes, Read Requests) are posted when the capture shows that side sending them;
//! * the host's regions and receives come from the capture: receives of exactly the size of each
//!   inbound Send, a region for every STag the peer reads from, writes to or answers a read into,
//!   the read source filled with what the captured Read Responses carried;
//! * every byte our engine sends must equal the byte the captured side sent (Read Requests,
//!   Sends, Writes and the Read Responses the engine builds itself, CRC included), every inbound
//!   payload must be placed exactly where the captured headers say, the completions must come in
//!   order, and nothing may end in a Terminate.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use netdirect_proto::handshake::{Event as HsEvent, Handshake, MpaConfig, ReadLimits};
use netdirect_proto::stream::{
    Access, Dest, Host, Payload, PostFlags, Request, Segmentation, Stream, TaggedError,
    WorkCompletion, WorkKind,
};
use netdirect_proto::{Negotiated, Role};
use netdirect_test_support::capture::{self, Connection, hex, siw_capture};
use netdirect_test_support::host::{self, Region};
use netdirect_test_support::rng::Rng;
use netdirect_types::Status;
use netdirect_wire::crc::FpduCrc;
use netdirect_wire::mpa::{self, Deframer, DeframerConfig, StartupKind, StartupRepr};
use netdirect_wire::rdmap::{self, Message, Opcode, ReadRequest};

// ---------------------------------------------------------------------------------------------
// The capture, cut into what each side sent
// ---------------------------------------------------------------------------------------------

/// One FPDU of a captured direction, after the startup frame.
#[derive(Debug, Clone)]
struct Seg {
    /// Offset of its first octet in the direction's FPDU stream.
    start: usize,
    /// Offset after its last octet.
    end: usize,
    ulpdu: Vec<u8>,
}

impl Seg {
    fn repr(&self) -> rdmap::Repr<'_> {
        rdmap::Repr::parse(&self.ulpdu).expect("captured ULPDU parses")
    }
}

/// One direction of a connection.
struct Side {
    /// The startup frame's length.
    startup_len: usize,
    /// The bytes after the startup frame.
    fpdu_bytes: Vec<u8>,
    /// Every FPDU of `fpdu_bytes`.
    segs: Vec<Seg>,
    /// (frame number, end offset in `fpdu_bytes`) of each captured TCP segment with FPDU bytes.
    pieces: Vec<(usize, usize)>,
}

fn side(s: &capture::Stream, kind: StartupKind, crc: bool) -> Side {
    assert_eq!(
        (s.duplicate_octets, s.late_segments, s.after_hole),
        (0, 0, 0),
        "{} → {}: the replay needs a clean capture",
        s.src,
        s.dst
    );
    assert_eq!(s.frames.len(), s.segment_ends.len());
    let startup_len = if s.data.is_empty() {
        0
    } else {
        let r = StartupRepr::parse_expecting(&s.data, kind).expect("startup frame");
        r.buffer_len()
    };
    let fpdu_bytes = s.data[startup_len..].to_vec();
    let mut d = Deframer::new(DeframerConfig {
        crc,
        ..Default::default()
    });
    d.push(&fpdu_bytes);
    let mut segs = Vec::new();
    loop {
        let start = d.seq() as usize;
        let Some(u) = d.next_ulpdu() else { break };
        let ulpdu = u.expect("captured FPDU deframes").to_vec();
        segs.push(Seg {
            start,
            end: d.seq() as usize,
            ulpdu,
        });
    }
    assert_eq!(
        d.buffered(),
        0,
        "{} → {}: capture ends mid-FPDU",
        s.src,
        s.dst
    );
    let pieces = s
        .frames
        .iter()
        .zip(&s.segment_ends)
        .filter(|&(_, &e)| e > startup_len)
        .map(|(&f, &e)| (f, e - startup_len))
        .collect();
    Side {
        startup_len,
        fpdu_bytes,
        segs,
        pieces,
    }
}

// ---------------------------------------------------------------------------------------------
// The host
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct CaptureHost {
    regions: HashMap<u32, Region>,
    /// (id, capacity), in posting order.
    receives: Vec<(u64, u64)>,
    next_receive: usize,
    tagged_checks: usize,
}

impl Host for CaptureHost {
    type Lease = u32;

    fn tagged(&mut self, stag: u32, to: u64, len: u64, access: Access) -> Result<u32, TaggedError> {
        self.tagged_checks += 1;
        host::tagged(self.regions.get(&stag), stag, to, len, access)
    }

    fn invalidate(&mut self, _: u32) -> Result<(), TaggedError> {
        Err(TaggedError::InvalidStag)
    }

    fn take_receive(&mut self) -> Option<(u64, u64)> {
        let r = self.receives.get(self.next_receive).copied()?;
        self.next_receive += 1;
        Some(r)
    }
}

/// Grows `regions[stag]` to cover `[to, to + len)` and grants `set`.
fn cover(
    regions: &mut BTreeMap<u32, (u64, u64, [bool; 3])>,
    stag: u32,
    to: u64,
    len: u64,
    set: usize,
) {
    let e = regions.entry(stag).or_insert((to, to + len, [false; 3]));
    e.0 = e.0.min(to);
    e.1 = e.1.max(to + len);
    e.2[set] = true;
}

// ---------------------------------------------------------------------------------------------
// What one role must see
// ---------------------------------------------------------------------------------------------

/// A work request behind one of our side's captured messages.
#[derive(Debug, Clone)]
struct Post {
    /// Index (in our side's FPDUs) of the message's first segment.
    at_seg: usize,
    wr: u64,
    req: Request,
    gather: Vec<u8>,
}

struct Plan {
    host: CaptureHost,
    posts: Vec<Post>,
    /// Where every inbound payload must land, in order.
    placements: Vec<(Dest<u32>, Vec<u8>)>,
    /// Send-queue completions, in order.
    sq: Vec<(u64, WorkKind)>,
    /// Receive completions: (id, octets, solicited), in order.
    rq: Vec<(u64, u32, bool)>,
    /// Segmentation that reproduces our side's captured FPDUs.
    mulpdu: usize,
    /// What the read source holds when our side sends each Read Response segment: (index of
    /// the response's first segment in our side's FPDUs, STag, TO, octets). rping rewrites its buffer every
    /// iteration, so the region is filled as the capture goes.
    fills: Vec<(usize, u32, u64, Vec<u8>)>,
}

fn plan(own: &Side, peer: &Side) -> Plan {
    // Regions: (low TO, high TO, [remote write, remote read, read sink]).
    let mut regions: BTreeMap<u32, (u64, u64, [bool; 3])> = BTreeMap::new();
    let mut placements = Vec::new();
    let mut rq = Vec::new();
    let mut receives = Vec::new();
    let mut peer_reads: Vec<ReadRequest> = Vec::new();
    let mut send_len = 0u64;
    for seg in &peer.segs {
        let r = seg.repr();
        let len = r.payload.len() as u64;
        match r.message {
            Message::Send { mo, solicited, .. } => {
                let id = 1000 + rq.len() as u64;
                placements.push((
                    Dest::Receive {
                        recv: id,
                        offset: u64::from(mo),
                    },
                    r.payload.to_vec(),
                ));
                send_len += len;
                if r.last {
                    receives.push((id, send_len));
                    rq.push((id, send_len as u32, solicited));
                    send_len = 0;
                }
            }
            Message::Write { stag, to } | Message::ReadResponse { stag, to } => {
                let write = matches!(r.message, Message::Write { .. });
                cover(&mut regions, stag, to, len, if write { 0 } else { 2 });
                if len > 0 {
                    placements.push((Dest::Tagged { lease: stag, to }, r.payload.to_vec()));
                }
            }
            Message::ReadRequest { request, .. } => {
                cover(
                    &mut regions,
                    request.source_stag,
                    request.source_to,
                    u64::from(request.size),
                    1,
                );
                peer_reads.push(request);
            }
            m => panic!("unexpected inbound {m:?}"),
        }
    }
    // Our side's messages: the work requests to post, and the read source contents.
    let mut posts: Vec<Post> = Vec::new();
    let mut sq = Vec::new();
    let mut open: Option<usize> = None; // index in `posts` of an unfinished Send or Write
    let mut responses = peer_reads.iter();
    let mut answering: Option<(usize, ReadRequest)> = None;
    let mut fills: Vec<(usize, u32, u64, Vec<u8>)> = Vec::new();
    let mut non_last_payload: Option<usize> = None;
    for (i, seg) in own.segs.iter().enumerate() {
        let r = seg.repr();
        if !r.last {
            let p = r.payload.len();
            assert!(
                non_last_payload.is_none_or(|q| q == p),
                "our side's segments are not all cut to one size"
            );
            non_last_payload = Some(p);
        }
        let wr = 1 + posts.len() as u64;
        match r.message {
            Message::Send {
                solicited,
                invalidate,
                ..
            } => {
                let k = *open.get_or_insert_with(|| {
                    sq.push((wr, WorkKind::Send));
                    posts.push(Post {
                        at_seg: i,
                        wr,
                        req: Request::Send {
                            len: 0,
                            solicited,
                            invalidate,
                        },
                        gather: Vec::new(),
                    });
                    posts.len() - 1
                });
                posts[k].gather.extend_from_slice(r.payload);
            }
            Message::Write { stag, to } => {
                let k = *open.get_or_insert_with(|| {
                    sq.push((wr, WorkKind::Write));
                    posts.push(Post {
                        at_seg: i,
                        wr,
                        req: Request::Write { len: 0, stag, to },
                        gather: Vec::new(),
                    });
                    posts.len() - 1
                });
                posts[k].gather.extend_from_slice(r.payload);
            }
            Message::ReadRequest { request, .. } => {
                sq.push((wr, WorkKind::Read));
                posts.push(Post {
                    at_seg: i,
                    wr,
                    req: Request::Read {
                        len: request.size,
                        sink_stag: request.sink_stag,
                        sink_to: request.sink_to,
                        stag: request.source_stag,
                        to: request.source_to,
                    },
                    gather: Vec::new(),
                });
            }
            Message::ReadResponse { to, .. } => {
                // The engine sends a whole response at once: fill all of it when it starts.
                let (first, rr) = *answering.get_or_insert_with(|| {
                    let rr = responses
                        .next()
                        .expect("a captured Read Response answers a captured Read Request");
                    (i, *rr)
                });
                let src = rr.source_to + (to - rr.sink_to);
                fills.push((first, rr.source_stag, src, r.payload.to_vec()));
                if r.last {
                    answering = None;
                }
            }
            m => panic!("unexpected outbound {m:?}"),
        }
        if r.last {
            if let Some(k) = open.take() {
                let n = posts[k].gather.len() as u32;
                match &mut posts[k].req {
                    Request::Send { len, .. } | Request::Write { len, .. } => *len = n,
                    _ => unreachable!(),
                }
            }
        }
    }
    let mut host = CaptureHost {
        receives,
        ..Default::default()
    };
    for (stag, (lo, hi, [w, r, s])) in regions {
        host.regions.insert(
            stag,
            Region {
                base: lo,
                data: vec![0; (hi - lo) as usize],
                remote_write: w,
                remote_read: r,
                read_sink: s,
                valid: true,
            },
        );
    }
    Plan {
        host,
        posts,
        placements,
        sq,
        rq,
        // Our engine cuts every message kind to MULPDU - 18 octets of payload.
        mulpdu: non_last_payload.map_or(mpa::MAX_ULPDU, |p| p + 18),
        fills,
    }
}

// ---------------------------------------------------------------------------------------------
// Running one role
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Chunking {
    /// At the captured TCP segment boundaries.
    Captured,
    /// All peer bytes between two of our own frames, cut at random points.
    Random(u64),
}

struct Outcome {
    /// Peer FPDUs replayed and our FPDUs compared.
    fed: usize,
    sent: usize,
    placements: Vec<(Dest<u32>, Vec<u8>)>,
    host: CaptureHost,
}

fn encode(
    s: &mut Stream<u32>,
    host: &CaptureHost,
    gather: &HashMap<u64, Vec<u8>>,
    crc: bool,
    out: &mut Vec<u8>,
) -> usize {
    let mut n = 0;
    while let Some(f) = s.poll_transmit() {
        let payload: Vec<u8> = match &f.payload {
            None => Vec::new(),
            Some(Payload::Request { wr, offset, len }) => {
                gather[wr][*offset as usize..(*offset + u64::from(*len)) as usize].to_vec()
            }
            Some(Payload::Tagged { lease, to, len }) => {
                let r = &host.regions[lease];
                let at = (to - r.base) as usize;
                r.data[at..at + *len as usize].to_vec()
            }
        };
        let c = crc.then(|| {
            let mut c = FpduCrc::new();
            c.update(&f.header);
            c.update(&payload);
            c
        });
        out.extend_from_slice(&f.header);
        out.extend_from_slice(&payload);
        out.extend_from_slice(mpa::trailer(f.header.len() - 2 + payload.len(), c).as_bytes());
        n += 1;
    }
    n
}

fn run_role(
    name: &str,
    negotiated: &Negotiated,
    own: &Side,
    peer: &Side,
    chunking: Chunking,
) -> Outcome {
    let who = format!("{name} as {:?} ({chunking:?})", negotiated.role);
    let Plan {
        mut host,
        posts,
        placements: want_placements,
        sq: want_sq,
        rq: want_rq,
        mulpdu,
        fills,
    } = plan(own, peer);
    let mut s: Stream<u32> = Stream::new(negotiated, mulpdu);
    // Byte for byte as siw: every FPDU full but a message's last.
    s.set_segmentation(Segmentation::Greedy);
    let mut rng = Rng(match chunking {
        Chunking::Captured => 1,
        Chunking::Random(seed) => seed | 1,
    });
    let gather: HashMap<u64, Vec<u8>> = posts.iter().map(|p| (p.wr, p.gather.clone())).collect();
    // The captured timeline of this connection: (frame, ours?, end offset).
    let mut timeline: Vec<(usize, bool, usize)> = own
        .pieces
        .iter()
        .map(|&(f, e)| (f, true, e))
        .chain(peer.pieces.iter().map(|&(f, e)| (f, false, e)))
        .collect();
    timeline.sort_unstable();
    let mut out = Vec::new();
    let mut sent = 0;
    let mut placements = Vec::new();
    let mut completions: Vec<WorkCompletion> = Vec::new();
    let mut fed_to = 0;
    let mut pending: Vec<u8> = Vec::new();
    let mut next_post = 0;
    let mut next_fill = 0;
    let deliver = |s: &mut Stream<u32>,
                   host: &mut CaptureHost,
                   bytes: &[u8],
                   placements: &mut Vec<(Dest<u32>, Vec<u8>)>| {
        s.push_input(bytes);
        while let Some(p) = s.poll_rx(host) {
            if let Dest::Tagged { lease, to } = &p.dest {
                let r = host.regions.get_mut(lease).expect("leased region");
                let at = (to - r.base) as usize;
                r.data[at..at + p.data.len()].copy_from_slice(p.data);
            }
            placements.push((p.dest.clone(), p.data.to_vec()));
        }
    };
    let flush = |s: &mut Stream<u32>,
                 host: &mut CaptureHost,
                 pending: &mut Vec<u8>,
                 rng: &mut Rng,
                 placements: &mut Vec<(Dest<u32>, Vec<u8>)>| {
        let mut at = 0;
        while at < pending.len() {
            let n = 1 + rng.below((pending.len() - at) as u64) as usize;
            deliver(s, host, &pending[at..at + n], placements);
            at += n;
        }
        pending.clear();
    };
    for (frame, ours, end) in timeline {
        if !ours {
            let bytes = &peer.fpdu_bytes[fed_to..end];
            fed_to = end;
            match chunking {
                Chunking::Captured => deliver(&mut s, &mut host, bytes, &mut placements),
                Chunking::Random(_) => pending.extend_from_slice(bytes),
            }
            continue;
        }
        flush(&mut s, &mut host, &mut pending, &mut rng, &mut placements);
        // Post what our side started sending in this segment.
        while let Some(p) = posts.get(next_post) {
            if own.segs[p.at_seg].start >= end {
                break;
            }
            let flags = PostFlags {
                signaled: true,
                read_fence: false,
                local_invalidate: false,
            };
            s.post(p.wr, p.req, flags)
                .unwrap_or_else(|e| panic!("{who}: post of wr {} failed: {e}", p.wr));
            next_post += 1;
        }
        // The read source as the capture had it when our side answered.
        while let Some((at_seg, stag, to, bytes)) = fills.get(next_fill) {
            if own.segs[*at_seg].start >= end {
                break;
            }
            let r = host.regions.get_mut(stag).expect("source region");
            let at = (to - r.base) as usize;
            r.data[at..at + bytes.len()].copy_from_slice(bytes);
            next_fill += 1;
        }
        sent += encode(&mut s, &host, &gather, negotiated.crc, &mut out);
        completions.extend(std::iter::from_fn(|| s.poll_completion()));
        let n = out.len().min(own.fpdu_bytes.len());
        if out[..n] != own.fpdu_bytes[..n] {
            let at = (0..n)
                .find(|&i| out[i] != own.fpdu_bytes[i])
                .expect("differs");
            let seg = own.segs.iter().find(|g| g.end > at).expect("in a segment");
            panic!(
                "{who}: at frame {frame}, our bytes differ from the captured ones at offset {at} \
                 (in the captured FPDU at {}..{}):\n captured {}\n ours     {}",
                seg.start,
                seg.end,
                hex(&own.fpdu_bytes[seg.start..seg.end.min(seg.start + 96)]),
                hex(&out[seg.start..out.len().min(seg.start + 96)]),
            );
        }
    }
    flush(&mut s, &mut host, &mut pending, &mut rng, &mut placements);
    sent += encode(&mut s, &host, &gather, negotiated.crc, &mut out);
    completions.extend(std::iter::from_fn(|| s.poll_completion()));
    assert_eq!(next_post, posts.len(), "{who}: posts left over");
    assert_eq!(fed_to, peer.fpdu_bytes.len(), "{who}: peer bytes left over");
    let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(events, vec![], "{who}: events");
    assert!(s.is_active(), "{who}: stream not active");
    assert_eq!(
        out.len(),
        own.fpdu_bytes.len(),
        "{who}: we sent {} octets, the captured side {}",
        out.len(),
        own.fpdu_bytes.len()
    );
    assert!(out == own.fpdu_bytes, "{who}: bytes differ");
    assert_eq!(sent, own.segs.len(), "{who}: FPDU count");
    // Placement: every inbound payload where its captured header says.
    assert_eq!(placements.len(), want_placements.len(), "{who}: placements");
    for (i, (got, want)) in placements.iter().zip(&want_placements).enumerate() {
        assert_eq!(got, want, "{who}: placement {i}");
    }
    // Completions: FIFO per queue, all successful.
    for c in &completions {
        assert_eq!(c.status, Status::SUCCESS, "{who}: {c:?}");
        assert_eq!(c.provider_error, 0, "{who}: {c:?}");
    }
    let sq: Vec<(u64, WorkKind)> = completions
        .iter()
        .filter(|c| c.kind != WorkKind::Receive)
        .map(|c| (c.wr, c.kind))
        .collect();
    assert_eq!(sq, want_sq, "{who}: send-queue completions");
    let rq: Vec<(u64, u32, bool)> = completions
        .iter()
        .filter(|c| c.kind == WorkKind::Receive)
        .map(|c| (c.wr, c.bytes, c.solicited))
        .collect();
    assert_eq!(rq, want_rq, "{who}: receive completions");
    assert_eq!(
        host.next_receive,
        host.receives.len(),
        "{who}: receives used"
    );
    Outcome {
        fed: peer.segs.len(),
        sent,
        placements,
        host,
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------------

/// Runs our responder on the initiator's bytes and our initiator on the responder's bytes; checks
/// that each accepts the captured frame, negotiates what the capture did, and (`exact`) emits
/// the frame the captured side sent. Returns (initiator, responder) outcomes.
fn handshakes(name: &str, c: &Connection, exact: [bool; 2]) -> Option<(Negotiated, Negotiated)> {
    let now = Instant::now();
    let req = StartupRepr::parse_expecting(&c.initiator.data, StartupKind::Request)
        .expect("captured Request");
    let rep = StartupRepr::parse_expecting(&c.responder.data, StartupKind::Reply).ok();
    let req_len = req.buffer_len();
    // Our responder on the initiator's Request, answering as the captured Reply did.
    let mut r = Handshake::responder(
        MpaConfig {
            crc: rep.is_some_and(|p| p.crc),
            ..MpaConfig::default()
        },
        now,
    );
    let mut used = 0;
    for &end in &c.initiator.segment_ends {
        if r.is_done() || used >= req_len {
            break;
        }
        used += r.handle_input(&c.initiator.data[used..end]);
    }
    assert_eq!(used, req_len, "{name}: our responder took the Request only");
    let Some(HsEvent::Request(pr)) = r.poll_event() else {
        panic!("{name}: our responder refused siw's Request")
    };
    assert_eq!(
        (pr.revision, pr.crc, pr.markers),
        (req.revision, req.crc, false),
        "{name}"
    );
    let want_limits = (req.revision == 2).then_some(ReadLimits { ird: 1, ord: 1 });
    assert_eq!(pr.limits, want_limits, "{name}: rping's IRD/ORD");
    let rep = rep?;
    r.accept(ReadLimits { ird: 1, ord: 1 }, rep.private_data)
        .expect("accept");
    let Some(HsEvent::Established(rn)) = r.poll_event() else {
        panic!("{name}: responder not established")
    };
    let mut reply = Vec::new();
    r.poll_transmit(&mut reply);
    let rep_len = rep.buffer_len();
    if exact[1] {
        assert_eq!(
            hex(&reply),
            hex(&c.responder.data[..rep_len]),
            "{name}: our Reply differs from siw's"
        );
    }
    // Our initiator, asking as the captured Request did, on the responder's Reply.
    let mut i = Handshake::initiator(
        MpaConfig {
            revision: req.revision,
            crc: req.crc,
            ..MpaConfig::default()
        },
        ReadLimits { ird: 1, ord: 1 },
        req.private_data,
        now,
    )
    .expect("initiator");
    let mut request = Vec::new();
    i.poll_transmit(&mut request);
    if exact[0] {
        assert_eq!(
            hex(&request),
            hex(&c.initiator.data[..req_len]),
            "{name}: our Request differs from siw's"
        );
    }
    let mut used = 0;
    for &end in &c.responder.segment_ends {
        if i.is_done() || used >= rep_len {
            break;
        }
        used += i.handle_input(&c.responder.data[used..end]);
    }
    assert_eq!(used, rep_len, "{name}: our initiator took the Reply only");
    let Some(HsEvent::Established(inn)) = i.poll_event() else {
        panic!("{name}: our initiator refused the captured Reply")
    };
    let crc = req.crc || rep.crc;
    for n in [&inn, &rn] {
        assert_eq!(
            (n.revision, n.crc),
            (rep.revision, crc),
            "{name}: {:?}",
            n.role
        );
        assert!(!n.markers_tx && !n.markers_rx && n.rtr.is_none(), "{name}");
        assert_eq!(n.limits, ReadLimits { ird: 1, ord: 1 }, "{name}");
    }
    assert_eq!((inn.role, rn.role), (Role::Initiator, Role::Responder));
    Some((inn, rn))
}

// ---------------------------------------------------------------------------------------------
// The captures
// ---------------------------------------------------------------------------------------------

/// Which side of a connection is siw: (initiator, responder).
type SiwSides = fn(&Connection) -> [bool; 2];

/// (role, peer FPDUs fed, our FPDUs sent).
type Row = (Role, usize, usize);

/// What was replayed, per connection: (name, rows).
type Summary = Vec<(String, Vec<Row>)>;

fn replay(file: &str, siw: SiwSides, rping_payloads: bool) -> Summary {
    let segments = capture::read_pcap(&siw_capture(file));
    let conns = capture::connections(&segments);
    let mut summary = Vec::new();
    for c in &conns {
        let name = format!("{file} {}", c.name());
        if c.initiator.data.is_empty() {
            continue;
        }
        let Some((inn, rn)) = handshakes(&name, c, siw(c)) else {
            summary.push((name, vec![]));
            continue;
        };
        let ini = side(&c.initiator, StartupKind::Request, inn.crc);
        let res = side(&c.responder, StartupKind::Reply, rn.crc);
        assert_eq!(
            ini.startup_len + ini.fpdu_bytes.len(),
            c.initiator.data.len()
        );
        let mut rows = Vec::new();
        for (negotiated, own, peer) in [(&rn, &res, &ini), (&inn, &ini, &res)] {
            let reference = run_role(&name, negotiated, own, peer, Chunking::Captured);
            for seed in [3, 17, 255, 4099] {
                let o = run_role(&name, negotiated, own, peer, Chunking::Random(seed));
                assert_eq!(o.placements, reference.placements, "{name} seed {seed}");
            }
            if rping_payloads {
                check_rping(&name, negotiated.role, &reference);
            }
            eprintln!(
                "{name} as {:?}: {} peer FPDUs replayed, {} of our FPDUs equal to the captured \
                 ones, {} placements, {} tagged checks",
                negotiated.role,
                reference.fed,
                reference.sent,
                reference.placements.len(),
                reference.host.tagged_checks
            );
            rows.push((negotiated.role, reference.fed, reference.sent));
        }
        summary.push((name, rows));
    }
    summary
}

/// rping's messages: the client's Sends carry {buf, rkey, size} of a buffer; the server's Read
/// and Write payloads are rping's "rdma-ping-N: …" lines.
fn check_rping(name: &str, role: Role, o: &Outcome) {
    let mut tagged = 0;
    for (dest, data) in &o.placements {
        match dest {
            Dest::Receive { offset: 0, .. } if role == Role::Responder => {
                // struct rping_rdma_info: be64 buf, be32 rkey, be32 size.
                assert_eq!(data.len(), 16, "{name}: rping info");
                let size = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
                assert!(size == 64 || size >= 4000, "{name}: advertised size {size}");
            }
            Dest::Tagged { to, .. } => {
                let region = o
                    .host
                    .regions
                    .values()
                    .find(|r| *to >= r.base && *to < r.base + r.data.len() as u64)
                    .expect("region");
                if *to == region.base {
                    assert!(
                        data.starts_with(b"rdma-ping-"),
                        "{name}: {:?}",
                        String::from_utf8_lossy(&data[..data.len().min(32)])
                    );
                    tagged += 1;
                }
            }
            _ => {}
        }
    }
    let any_tagged = o
        .placements
        .iter()
        .any(|(d, _)| matches!(d, Dest::Tagged { .. }));
    assert_eq!(
        tagged > 0,
        any_tagged,
        "{name} {role:?}: no rping payload placed"
    );
}

fn assert_summary<S: AsRef<str>>(summary: &Summary, want: &[(S, &[Row])]) {
    let got: Summary = summary.clone();
    let want: Summary = want
        .iter()
        .map(|(n, r)| (n.as_ref().to_string(), r.to_vec()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn siw_rping_replays_through_both_roles() {
    let summary = replay("siw-rping.pcap", |_| [true, true], true);
    // rping -C 10: the client sends 20 Sends and 10 Read Responses, the server 10 Read Requests,
    // 20 Sends and 10 Writes. The 65534-octet rping: 2 iterations, three segments per message.
    assert_summary(
        &summary,
        &[
            (
                "siw-rping.pcap 10.0.2.15:54157 → 10.0.2.15:7174",
                &[(Role::Responder, 30, 40), (Role::Initiator, 40, 30)],
            ),
            (
                "siw-rping.pcap 10.0.2.15:51391 → 10.0.2.15:7177",
                &[(Role::Responder, 10, 12), (Role::Initiator, 12, 10)],
            ),
        ],
    );
}

#[test]
fn siw_hostpeer_replays_through_both_roles() {
    // siw is the rping server on 7174 and the client of the test peer's server on 7175.
    let summary = replay(
        "siw-hostpeer.pcap",
        |c| {
            let server = c.initiator.dst.port() == 7174;
            [!server, server]
        },
        true,
    );
    let f = "siw-hostpeer.pcap";
    assert_summary(
        &summary,
        &[
            // The test peer closes right after the Reply.
            (
                &format!("{f} 10.0.2.2:56010 → 10.0.2.15:7174"),
                &[(Role::Responder, 0, 0), (Role::Initiator, 0, 0)],
            ),
            (
                &format!("{f} 10.0.2.2:56020 → 10.0.2.15:7174"),
                &[(Role::Responder, 6, 8), (Role::Initiator, 8, 6)],
            ),
            // CRC on (requested by the test peer).
            (
                &format!("{f} 10.0.2.2:56412 → 10.0.2.15:7174"),
                &[(Role::Responder, 6, 8), (Role::Initiator, 8, 6)],
            ),
            // Revision 1: one Send, then siw closes.
            (
                &format!("{f} 10.0.2.2:56418 → 10.0.2.15:7174"),
                &[(Role::Responder, 1, 0), (Role::Initiator, 0, 1)],
            ),
            (
                &format!("{f} 10.0.2.15:40068 → 10.0.2.100:7175"),
                &[(Role::Responder, 9, 12), (Role::Initiator, 12, 9)],
            ),
            // CRC on (the test peer's Reply sets C), 4000-octet messages.
            (
                &format!("{f} 10.0.2.15:40196 → 10.0.2.100:7175"),
                &[(Role::Responder, 10, 8), (Role::Initiator, 8, 10)],
            ),
        ],
    );
}

#[test]
fn siw_largemsg_replays_through_both_roles() {
    let summary = replay("siw-largemsg-eth0.pcap", |_| [true, false], true);
    assert_summary(
        &summary,
        &[(
            "siw-largemsg-eth0.pcap 10.0.2.15:53144 → 10.0.2.100:7175",
            &[(Role::Responder, 10, 8), (Role::Initiator, 8, 10)],
        )],
    );
}

/// The Read Request our engine builds for the captured parameters is siw's, byte for byte (the
/// replay checks this for every Read Request; this pins the first one of §6 explicitly).
#[test]
fn our_read_request_equals_siws() {
    let segments = capture::read_pcap(&siw_capture("siw-rping.pcap"));
    let c = &capture::connections(&segments)[0];
    let (_, rn) = handshakes("siw-rping.pcap", c, [true, true]).expect("established");
    let res = side(&c.responder, StartupKind::Reply, false);
    let first = res
        .segs
        .iter()
        .find(|g| g.repr().message.opcode() == Opcode::ReadRequest)
        .expect("a Read Request");
    let Message::ReadRequest { request, msn } = first.repr().message else {
        unreachable!()
    };
    assert_eq!(msn, 1);
    let mut s: Stream<u32> = Stream::new(&rn, mpa::MAX_ULPDU);
    s.set_segmentation(Segmentation::Greedy);
    // The responder may not speak before the initiator's first FPDU: feed the client's Send.
    let ini = side(&c.initiator, StartupKind::Request, false);
    s.push_input(&ini.fpdu_bytes[..ini.segs[0].end]);
    let mut host = CaptureHost {
        receives: vec![(1, 16)],
        ..Default::default()
    };
    while s.poll_rx(&mut host).is_some() {}
    s.post(
        7,
        Request::Read {
            len: request.size,
            sink_stag: request.sink_stag,
            sink_to: request.sink_to,
            stag: request.source_stag,
            to: request.source_to,
        },
        PostFlags::default(),
    )
    .unwrap();
    let mut out = Vec::new();
    encode(&mut s, &host, &HashMap::new(), false, &mut out);
    assert_eq!(
        hex(&out),
        hex(&res.fpdu_bytes[first.start..first.end]),
        "our Read Request"
    );
}
