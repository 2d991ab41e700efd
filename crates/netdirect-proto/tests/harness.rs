//! The deterministic two-engine harness: two endpoints run the MPA handshake and RDMAP streams
//! against each other over an in-memory pipe that re-chunks the byte stream at random, with
//! simulated time. Whatever the chunking, the bytes placed, the completions and the events must
//! be the same, and the same again when large payloads are received header-first, straight into
//! their destination ([`Stream::direct_target`]), in random pieces.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use netdirect_proto::handshake::{Event as HsEvent, Handshake, MpaConfig, ReadLimits};
use netdirect_proto::stream::{
    Access, Dest, Event, Host, Payload, PostFlags, Request, Stream, TaggedError, TermCode,
    WorkCompletion, WorkKind,
};
use netdirect_test_support::host::{self, Region};
use netdirect_test_support::rng::Rng;
use netdirect_types::Status;
use netdirect_types::counters::Counter;
use netdirect_wire::mpa::{self, FpduWriter, MarkerLayout};
use netdirect_wire::terminate::TermError;

/// The host side of one endpoint: regions by STag, posted receives, and their buffers.
#[derive(Debug, Default)]
struct FakeHost {
    regions: HashMap<u32, Region>,
    receives: VecDeque<(u64, u64)>,
    recv_data: HashMap<u64, Vec<u8>>,
}

impl Host for FakeHost {
    type Lease = u32;

    fn tagged(&mut self, stag: u32, to: u64, len: u64, access: Access) -> Result<u32, TaggedError> {
        host::tagged(self.regions.get(&stag), stag, to, len, access)
    }

    fn invalidate(&mut self, stag: u32) -> Result<(), TaggedError> {
        let r = self
            .regions
            .get_mut(&stag)
            .filter(|r| r.valid)
            .ok_or(TaggedError::InvalidStag)?;
        r.valid = false;
        Ok(())
    }

    fn take_receive(&mut self) -> Option<(u64, u64)> {
        self.receives.pop_front()
    }
}

struct Node {
    name: &'static str,
    stream: Stream<u32>,
    host: FakeHost,
    crc: bool,
    /// Header-first receive is on: payloads are written straight into their destination.
    direct: bool,
    /// Chooses how direct reads are split and whether read hints are followed.
    rng: Rng,
    /// Payload octets received directly.
    direct_octets: usize,
    /// Gather lists of posted send-queue requests, flattened.
    gather: HashMap<u64, Vec<u8>>,
    completions: Vec<WorkCompletion>,
    events: Vec<Event>,
}

impl Node {
    fn post_recv(&mut self, id: u64, cap: usize) {
        self.host.receives.push_back((id, cap as u64));
        self.host.recv_data.insert(id, vec![0; cap]);
    }

    fn region(&mut self, stag: u32, base: u64, data: Vec<u8>) {
        self.host.regions.insert(stag, Region::new(base, data));
    }

    fn post(&mut self, wr: u64, req: Request, data: Vec<u8>) {
        self.gather.insert(wr, data);
        let flags = PostFlags {
            signaled: true,
            read_fence: false,
            local_invalidate: false,
        };
        self.stream.post(wr, req, flags).unwrap();
    }

    /// Runs local actions and returns the bytes the stream wants to send.
    fn transmit(&mut self) -> Vec<u8> {
        self.transmit_frames(usize::MAX)
    }

    /// [`Node::transmit`], at most `frames` FPDUs.
    fn transmit_frames(&mut self, frames: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..frames {
            while let Some(a) = self.stream.poll_action() {
                self.stream.local_done(a.wr, Status::SUCCESS);
            }
            // What a driver uses to set MSG_MORE must agree with what comes next.
            let pending = self.stream.tx_pending();
            let frame = self.stream.poll_transmit();
            assert_eq!(pending, frame.is_some(), "{}: tx_pending", self.name);
            let Some(frame) = frame else {
                break;
            };
            let payload: Vec<u8> = match &frame.payload {
                None => Vec::new(),
                Some(Payload::Request { wr, offset, len }) => {
                    let g = &self.gather[wr];
                    g[*offset as usize..*offset as usize + *len as usize].to_vec()
                }
                Some(Payload::Tagged { lease, to, len }) => {
                    let r = &self.host.regions[lease];
                    let at = (to - r.base) as usize;
                    r.data[at..at + *len as usize].to_vec()
                }
            };
            let writer = FpduWriter {
                crc: self.crc,
                markers: self.stream.markers_tx().then(|| MarkerLayout::new(0)),
            };
            writer
                .append(
                    frame.seq,
                    &frame.header,
                    &[&payload],
                    &mut Vec::new(),
                    &mut out,
                )
                .expect("the stream sizes its frames");
        }
        out
    }

    /// Feeds received bytes and carries out placements.
    fn receive(&mut self, mut bytes: &[u8]) {
        if !self.direct {
            self.stream.push_input(bytes);
            self.place_all();
            self.drain();
            return;
        }
        // As a socket driver would: buffered input first, then, while the stream names a
        // direct target, "read" payload straight into it (in random pieces, as a vectored
        // read into several slices would land), else into the input buffer (sometimes as
        // much as there is, sometimes what the read hint asks for).
        while !bytes.is_empty() {
            self.place_all();
            if let Some(t) = self.stream.direct_target() {
                let n = t.len.min(bytes.len());
                let mut at = 0;
                while at < n {
                    let k = (1 + self.rng.below(n as u64) as usize).min(n - at);
                    let dest = t.dest.advanced(at as u64);
                    let landed = self.dest_bytes(&dest, k);
                    landed.copy_from_slice(&bytes[at..at + k]);
                    let landed = landed.to_vec();
                    assert_eq!(self.stream.direct_placed(&landed), k);
                    self.direct_octets += k;
                    at += k;
                }
                if n == t.len {
                    // Nothing beyond the target is taken.
                    assert_eq!(self.stream.direct_placed(&[0]), 0);
                }
                bytes = &bytes[n..];
                if n == t.len && self.rng.below(2) == 0 {
                    // The same read went on into the input buffer: trailer, next header.
                    let k = t.then.min(bytes.len());
                    let tail = self.stream.prefetch(t.then);
                    tail[..k].copy_from_slice(&bytes[..k]);
                    assert_eq!(self.stream.prefetched(k), k);
                    bytes = &bytes[k..];
                }
            } else {
                let all = bytes.len();
                let n = match self.stream.read_hint() {
                    Some(h) if self.rng.below(2) == 0 => h.min(all),
                    _ => all,
                };
                self.stream.push_input(&bytes[..n]);
                bytes = &bytes[n..];
            }
        }
        self.place_all();
        self.drain();
    }

    /// The `len` bytes of host memory at `dest` (panics outside the region or receive).
    fn dest_bytes(&mut self, dest: &Dest<u32>, len: usize) -> &mut [u8] {
        match *dest {
            Dest::Receive { recv, offset } => {
                let buf = self.host.recv_data.get_mut(&recv).expect("posted receive");
                &mut buf[offset as usize..offset as usize + len]
            }
            Dest::Tagged { lease, to } => {
                let r = self.host.regions.get_mut(&lease).expect("leased region");
                let at = (to - r.base) as usize;
                &mut r.data[at..at + len]
            }
        }
    }

    fn place_all(&mut self) {
        while let Some(place) = self.stream.poll_rx(&mut self.host) {
            let (dest, data) = (place.dest, place.data.to_vec());
            self.dest_bytes(&dest, data.len()).copy_from_slice(&data);
        }
    }

    fn drain(&mut self) {
        while let Some(c) = self.stream.poll_completion() {
            self.completions.push(c);
        }
        while let Some(e) = self.stream.poll_event() {
            self.events.push(e);
        }
    }
}

/// A pipe in each direction that delivers in random chunks.
struct World {
    a: Node,
    b: Node,
    rng: Rng,
    a_to_b: Vec<u8>,
    b_to_a: Vec<u8>,
}

fn deliver(rng: &mut Rng, pipe: &mut Vec<u8>, to: &mut Node) -> bool {
    if pipe.is_empty() {
        return false;
    }
    let n = 1 + rng.below(pipe.len().min(3000) as u64) as usize;
    let chunk: Vec<u8> = pipe.drain(..n).collect();
    to.receive(&chunk);
    true
}

impl World {
    /// Runs the MPA handshake over the pipe (re-chunked too) and builds the two streams.
    fn connect(seed: u64, ic: MpaConfig, il: ReadLimits, rc: MpaConfig, rl: ReadLimits) -> World {
        let mut rng = Rng(seed | 1);
        let now = Instant::now();
        let mut i = Handshake::initiator(ic, il, b"client", now).unwrap();
        let mut r = Handshake::responder(rc, now);
        let mut wire = Vec::new();
        i.poll_transmit(&mut wire);
        while !wire.is_empty() {
            let n = 1 + rng.below(wire.len() as u64) as usize;
            let used = r.handle_input(&wire[..n]);
            assert_eq!(used, n);
            wire.drain(..n);
        }
        let Some(HsEvent::Request(req)) = r.poll_event() else {
            panic!("no request")
        };
        assert_eq!(req.private_data, b"client");
        r.accept(rl, b"server").unwrap();
        let Some(HsEvent::Established(rn)) = r.poll_event() else {
            panic!("responder")
        };
        r.poll_transmit(&mut wire);
        while !wire.is_empty() {
            let n = 1 + rng.below(wire.len() as u64) as usize;
            wire.drain(..i.handle_input(&wire[..n]));
        }
        let Some(HsEvent::Established(inn)) = i.poll_event() else {
            panic!("initiator")
        };
        let node = |name, n: &netdirect_proto::Negotiated, seed: u64| Node {
            name,
            stream: Stream::new(n, 1200),
            host: FakeHost::default(),
            crc: n.crc,
            direct: false,
            rng: Rng(seed | 1),
            direct_octets: 0,
            gather: HashMap::new(),
            completions: Vec::new(),
            events: Vec::new(),
        };
        World {
            a: node("initiator", &inn, seed.rotate_left(17)),
            b: node("responder", &rn, seed.rotate_left(31)),
            rng,
            a_to_b: Vec::new(),
            b_to_a: Vec::new(),
        }
    }

    /// Turns header-first receive on at both ends (payloads missing at least `min` octets).
    fn direct(&mut self, min: usize) {
        for n in [&mut self.a, &mut self.b] {
            n.direct = true;
            n.stream.set_direct_min(Some(min));
        }
    }

    /// Moves bytes until both sides are quiet.
    fn run(&mut self) {
        for _ in 0..1_000_000 {
            let out = self.a.transmit();
            self.a_to_b.extend_from_slice(&out);
            let out = self.b.transmit();
            self.b_to_a.extend_from_slice(&out);
            let moved_ab = if self.rng.below(2) == 0 {
                deliver(&mut self.rng, &mut self.a_to_b, &mut self.b)
            } else {
                false
            };
            let moved_ba = deliver(&mut self.rng, &mut self.b_to_a, &mut self.a);
            let moved_ab = moved_ab || deliver(&mut self.rng, &mut self.a_to_b, &mut self.b);
            self.a.drain();
            self.b.drain();
            if !moved_ab && !moved_ba && self.a_to_b.is_empty() && self.b_to_a.is_empty() {
                let (x, y) = (self.a.transmit(), self.b.transmit());
                if x.is_empty() && y.is_empty() {
                    return;
                }
                self.a_to_b.extend_from_slice(&x);
                self.b_to_a.extend_from_slice(&y);
            }
        }
        panic!("no quiescence: {} / {}", self.a.name, self.b.name);
    }
}

fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// What one run of the mixed workload leaves behind.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    a_completions: Vec<WorkCompletion>,
    b_completions: Vec<WorkCompletion>,
    a_recv: Vec<Vec<u8>>,
    b_recv: Vec<Vec<u8>>,
    a_region: Vec<u8>,
    b_region: Vec<u8>,
    events: (Vec<Event>, Vec<Event>),
}

fn mixed(seed: u64, crc: bool, markers: bool) -> Outcome {
    mixed_with(seed, crc, markers, None).0
}

/// The mixed workload, with header-first receive on when `direct` gives its threshold; also
/// returns the payload octets received directly.
fn mixed_with(seed: u64, crc: bool, markers: bool, direct: Option<usize>) -> (Outcome, usize) {
    let cfg = MpaConfig {
        crc,
        markers,
        ..MpaConfig::default()
    };
    let l = ReadLimits { ird: 4, ord: 2 };
    let mut w = World::connect(seed, cfg.clone(), l, cfg, l);
    if let Some(min) = direct {
        w.direct(min);
    }
    w.a.region(0xA0, 0x1000, vec![0; 300_000]);
    w.b.region(0xB0, 0x9000_0000, pattern(7, 150_000));
    for id in 0..4 {
        w.a.post_recv(100 + id, 70_000);
        w.b.post_recv(200 + id, 70_000);
    }
    // Initiator: two sends (one multi-segment), a write, three reads (ORD 2 queues one), a
    // local operation, a send with invalidate of the responder's region... after the reads.
    w.a.post(
        1,
        Request::Send {
            len: 100,
            solicited: false,
            invalidate: None,
        },
        pattern(1, 100),
    );
    w.a.post(
        2,
        Request::Send {
            len: 65_000,
            solicited: true,
            invalidate: None,
        },
        pattern(2, 65_000),
    );
    w.a.post(
        3,
        Request::Write {
            len: 40_000,
            stag: 0xB0,
            to: 0x9000_0010,
        },
        pattern(3, 40_000),
    );
    for (k, (len, to)) in [
        (30_000u32, 0x9000_0000u64),
        (1, 0x9000_1000),
        (90_000, 0x9000_2000),
    ]
    .into_iter()
    .enumerate()
    {
        let sink_to = 0x1000 + 60_000 * k as u64;
        w.a.post(
            10 + k as u64,
            Request::Read {
                len,
                sink_stag: 0xA0,
                sink_to,
                stag: 0xB0,
                to,
            },
            Vec::new(),
        );
    }
    w.a.post(20, Request::Local, Vec::new());
    w.a.post(
        21,
        Request::Send {
            len: 0,
            solicited: false,
            invalidate: None,
        },
        Vec::new(),
    );
    // Responder: a send back and a write into the initiator's region.
    w.b.post(
        30,
        Request::Send {
            len: 3000,
            solicited: false,
            invalidate: None,
        },
        pattern(4, 3000),
    );
    w.b.post(
        31,
        Request::Write {
            len: 5000,
            stag: 0xA0,
            to: 0x1000 + 250_000,
        },
        pattern(5, 5000),
    );
    w.run();
    let outcome = Outcome {
        a_completions: w.a.completions.clone(),
        b_completions: w.b.completions.clone(),
        a_recv: (100..104).map(|i| w.a.host.recv_data[&i].clone()).collect(),
        b_recv: (200..204).map(|i| w.b.host.recv_data[&i].clone()).collect(),
        a_region: w.a.host.regions[&0xA0].data.clone(),
        b_region: w.b.host.regions[&0xB0].data.clone(),
        events: (w.a.events.clone(), w.b.events.clone()),
    };
    (outcome, w.a.direct_octets + w.b.direct_octets)
}

#[test]
fn mixed_workload_places_and_completes() {
    let o = mixed(1, true, false);
    let ok = |wr, kind| WorkCompletion {
        wr,
        kind,
        status: Status::SUCCESS,
        bytes: 0,
        invalidated: None,
        solicited: false,
        provider_error: 0,
    };
    // Initiator send queue, in posting order; then its one receive.
    let sq: Vec<_> = o
        .a_completions
        .iter()
        .filter(|c| c.kind != WorkKind::Receive)
        .copied()
        .collect();
    assert_eq!(
        sq,
        vec![
            ok(1, WorkKind::Send),
            ok(2, WorkKind::Send),
            ok(3, WorkKind::Write),
            ok(10, WorkKind::Read),
            ok(11, WorkKind::Read),
            ok(12, WorkKind::Read),
            ok(20, WorkKind::Local),
            ok(21, WorkKind::Send),
        ]
    );
    let recv: Vec<_> = o
        .a_completions
        .iter()
        .filter(|c| c.kind == WorkKind::Receive)
        .collect();
    assert_eq!(recv.len(), 1);
    assert_eq!((recv[0].wr, recv[0].bytes), (100, 3000));
    assert_eq!(o.a_recv[0][..3000], pattern(4, 3000)[..]);
    // Responder receives: 100, 65000 (solicited), 0 octets.
    let brecv: Vec<_> = o
        .b_completions
        .iter()
        .filter(|c| c.kind == WorkKind::Receive)
        .map(|c| (c.wr, c.bytes, c.solicited))
        .collect();
    assert_eq!(
        brecv,
        vec![(200, 100, false), (201, 65_000, true), (202, 0, false)]
    );
    assert_eq!(o.b_recv[0][..100], pattern(1, 100)[..]);
    assert_eq!(o.b_recv[1][..65_000], pattern(2, 65_000)[..]);
    // The write landed in the responder's region; the reads came back.
    let src = pattern(7, 150_000);
    let mut expected_b = src.clone();
    expected_b[0x10..0x10 + 40_000].copy_from_slice(&pattern(3, 40_000));
    assert_eq!(o.b_region, expected_b);
    // Reads were queued behind the write, so they see the written bytes.
    assert_eq!(o.a_region[..30_000], expected_b[..30_000]);
    assert_eq!(o.a_region[60_000], expected_b[0x1000]);
    assert_eq!(
        o.a_region[120_000..210_000],
        expected_b[0x2000..0x2000 + 90_000]
    );
    assert_eq!(o.a_region[250_000..255_000], pattern(5, 5000)[..]);
    assert!(o.a_region[210_000..250_000].iter().all(|&b| b == 0));
    assert_eq!(o.events, (vec![], vec![]));
}

#[test]
fn chunking_does_not_change_the_outcome() {
    for (crc, markers) in [(false, false), (true, false), (true, true), (false, true)] {
        let reference = mixed(1, crc, markers);
        for seed in 2..8 {
            assert_eq!(
                mixed(seed * 7919, crc, markers),
                reference,
                "seed {seed} crc {crc} markers {markers}"
            );
        }
    }
}

#[test]
fn header_first_receive_does_not_change_the_outcome() {
    for (crc, markers) in [(false, false), (true, false), (true, true), (false, true)] {
        let reference = mixed(1, crc, markers);
        for seed in 2..8 {
            for min in [1, 64, netdirect_proto::stream::DIRECT_MIN] {
                let (o, direct) = mixed_with(seed * 7919, crc, markers, Some(min));
                assert_eq!(
                    o, reference,
                    "seed {seed} crc {crc} markers {markers} min {min}"
                );
                // Markers keep every FPDU on the buffered path; without them the large
                // payloads (sends, writes, read responses of up to 1182 octets) go direct.
                if markers {
                    assert_eq!(direct, 0);
                } else if min <= 64 {
                    assert!(direct > 100_000, "only {direct} octets direct, min {min}");
                }
            }
        }
    }
}

#[test]
fn write_to_invalid_stag_terminates_both_sides() {
    let l = ReadLimits { ird: 1, ord: 1 };
    let mut w = World::connect(3, MpaConfig::default(), l, MpaConfig::default(), l);
    w.b.region(0xB0, 0x1000, vec![0; 100]);
    w.a.region(0xA0, 0x1000, vec![0; 100]);
    w.a.post_recv(1, 10);
    w.a.post(
        5,
        Request::Write {
            len: 10,
            stag: 0xBAD,
            to: 0x1000,
        },
        vec![1; 10],
    );
    w.a.post(
        6,
        Request::Read {
            len: 10,
            sink_stag: 0xA0,
            sink_to: 0x1000,
            stag: 0xB0,
            to: 0x1000,
        },
        vec![],
    );
    w.a.post(
        7,
        Request::Send {
            len: 1,
            solicited: false,
            invalidate: None,
        },
        vec![9],
    );
    w.run();
    let term = TermCode::from(TermError::DdpTaggedInvalidStag);
    assert_eq!(w.b.events, vec![Event::TerminateSent(term)]);
    assert_eq!(w.a.events, vec![Event::TerminateReceived(term)]);
    // The write completed when it was handed out; the Terminate copies the Write's header, so
    // no request of ours is blamed: the read in flight is cancelled, carrying the Terminate in
    // its provider error code. The send after it had been handed out already. Posted receives
    // stay with the driver, which flushes them.
    let st: Vec<_> = w.a.completions.iter().map(|c| (c.wr, c.status)).collect();
    assert_eq!(
        st,
        vec![
            (5, Status::SUCCESS),
            (6, Status::CANCELLED),
            (7, Status::SUCCESS)
        ]
    );
    assert_eq!(w.a.completions[1].provider_error, 0x0201_0100);
    assert_eq!(w.a.host.receives.len(), 1);
    assert!(!w.a.stream.is_active() && !w.b.stream.is_active());
    // Nothing was written anywhere.
    assert_eq!(w.b.host.regions[&0xB0].data, vec![0; 100]);
}

#[test]
fn terminate_naming_an_unreported_write_gives_it_the_terminates_status() {
    let l = ReadLimits { ird: 1, ord: 1 };
    let mut w = World::connect(4, MpaConfig::default(), l, MpaConfig::default(), l);
    w.b.region(0xB0, 0x1000, vec![7; 100]);
    w.a.region(0xA0, 0x1000, vec![0; 100]);
    // A read, then two writes: one into the valid region, one to an STag the peer lacks, at
    // an offset inside it. Both writes are handed out at once and wait behind the read to be
    // reported.
    w.a.post(
        1,
        Request::Read {
            len: 10,
            sink_stag: 0xA0,
            sink_to: 0x1000,
            stag: 0xB0,
            to: 0x1000,
        },
        vec![],
    );
    w.a.post(
        2,
        Request::Write {
            len: 10,
            stag: 0xB0,
            to: 0x1010,
        },
        vec![1; 10],
    );
    w.a.post(
        3,
        Request::Write {
            len: 3000,
            stag: 0xBAD,
            to: 0x2000,
        },
        vec![2; 3000],
    );
    // The peer gets all of it at once: it queues the read's response, takes the first write,
    // and terminates at the second (its first segment: TO 0x2000); the response never leaves.
    let out = w.a.transmit();
    w.b.receive(&out);
    let term = TermCode::from(TermError::DdpTaggedInvalidStag);
    assert_eq!(w.b.events, vec![Event::TerminateSent(term)]);
    let back = w.b.transmit();
    w.a.receive(&back);
    assert_eq!(w.a.events, vec![Event::TerminateReceived(term)]);
    // The write the Terminate names gets its status; the read and the other write were not
    // named: cancelled, and the write that finished on our side keeps its success.
    let st: Vec<_> =
        w.a.completions
            .iter()
            .map(|c| (c.wr, c.status, c.provider_error))
            .collect();
    assert_eq!(
        st,
        vec![
            (1, Status::CANCELLED, 0x0201_0100),
            (2, Status::SUCCESS, 0),
            (3, Status::ACCESS_VIOLATION, 0x0201_0100),
        ]
    );
}

#[test]
fn terminate_naming_a_write_still_being_sent_gives_it_the_terminates_status() {
    let l = ReadLimits { ird: 1, ord: 1 };
    let mut w = World::connect(5, MpaConfig::default(), l, MpaConfig::default(), l);
    w.a.post(
        1,
        Request::Write {
            len: 4000,
            stag: 0xBAD,
            to: 0x2000,
        },
        vec![2; 4000],
    );
    w.a.post(
        2,
        Request::Send {
            len: 1,
            solicited: false,
            invalidate: None,
        },
        vec![1],
    );
    // Only the write's first segment has left when the peer's Terminate comes back.
    let first = w.a.transmit_frames(1);
    w.b.receive(&first);
    let back = w.b.transmit();
    w.a.receive(&back);
    let term = TermCode::from(TermError::DdpTaggedInvalidStag);
    assert_eq!(w.a.events, vec![Event::TerminateReceived(term)]);
    let st: Vec<_> = w.a.completions.iter().map(|c| (c.wr, c.status)).collect();
    assert_eq!(
        st,
        vec![(1, Status::ACCESS_VIOLATION), (2, Status::CANCELLED)]
    );
}

#[test]
fn terminate_naming_a_send_gives_it_the_terminates_status() {
    // The peer has one receive: the first send lands, the second finds none. The Terminate
    // copies the second send's header (QN 0, its MSN): that send, waiting behind a read to be
    // reported, learns it failed at the peer.
    let l = ReadLimits { ird: 1, ord: 1 };
    let mut w = World::connect(7, MpaConfig::default(), l, MpaConfig::default(), l);
    w.b.region(0xB0, 0x1000, vec![0; 100]);
    w.a.region(0xA0, 0x1000, vec![0; 100]);
    w.b.post_recv(100, 16);
    w.a.post(
        1,
        Request::Read {
            len: 10,
            sink_stag: 0xA0,
            sink_to: 0x1000,
            stag: 0xB0,
            to: 0x1000,
        },
        vec![],
    );
    let send = Request::Send {
        len: 4,
        solicited: false,
        invalidate: None,
    };
    w.a.post(2, send, vec![1; 4]);
    w.a.post(3, send, vec![2; 4]);
    let out = w.a.transmit();
    w.b.receive(&out);
    let term = TermCode::from(TermError::DdpUntaggedNoBuffer);
    assert_eq!(w.b.events, vec![Event::TerminateSent(term)]);
    let back = w.b.transmit();
    w.a.receive(&back);
    let st: Vec<_> = w.a.completions.iter().map(|c| (c.wr, c.status)).collect();
    assert_eq!(
        st,
        vec![
            (1, Status::CANCELLED),
            (2, Status::SUCCESS),
            (3, Status::REMOTE_RESOURCES)
        ]
    );
}

#[test]
fn terminate_naming_a_later_segment_of_a_write_blames_that_write() {
    // The peer's bounds error at the third segment of a write (its TO is inside the write,
    // not at its start) names that write too.
    let l = ReadLimits { ird: 1, ord: 1 };
    let mut w = World::connect(6, MpaConfig::default(), l, MpaConfig::default(), l);
    w.b.region(0xB0, 0x1000, vec![0; 2500]);
    w.a.region(0xA0, 0x1000, vec![0; 100]);
    w.b.region(0xB1, 0x1000, vec![0; 100]);
    w.a.post(
        1,
        Request::Read {
            len: 10,
            sink_stag: 0xA0,
            sink_to: 0x1000,
            stag: 0xB1,
            to: 0x1000,
        },
        vec![],
    );
    w.a.post(
        2,
        Request::Write {
            len: 4000,
            stag: 0xB0,
            to: 0x1000,
        },
        vec![3; 4000],
    );
    let out = w.a.transmit();
    w.b.receive(&out);
    let term = TermCode::from(TermError::DdpTaggedBaseBounds);
    assert_eq!(w.b.events, vec![Event::TerminateSent(term)]);
    let back = w.b.transmit();
    w.a.receive(&back);
    let st: Vec<_> = w.a.completions.iter().map(|c| (c.wr, c.status)).collect();
    assert_eq!(
        st,
        vec![(1, Status::CANCELLED), (2, Status::REMOTE_RESOURCES)]
    );
}

#[test]
fn read_with_local_invalidate_invalidates_its_sink_even_when_silent() {
    let l = ReadLimits { ird: 2, ord: 2 };
    let mut w = World::connect(8, MpaConfig::default(), l, MpaConfig::default(), l);
    w.b.region(0xB0, 0x1000, vec![4; 100]);
    w.a.region(0xA0, 0x1000, vec![0; 100]);
    w.a.region(0xA1, 0x1000, vec![0; 100]);
    let read = |sink_stag| Request::Read {
        len: 100,
        sink_stag,
        sink_to: 0x1000,
        stag: 0xB0,
        to: 0x1000,
    };
    let silent = PostFlags {
        signaled: false,
        read_fence: false,
        local_invalidate: true,
    };
    w.a.stream.post(1, read(0xA0), silent).unwrap();
    w.a.stream
        .post(
            2,
            read(0xA1),
            PostFlags {
                signaled: true,
                ..silent
            },
        )
        .unwrap();
    w.run();
    // Only the signaled read reports; both sinks hold the data and are invalidated.
    let st: Vec<_> = w.a.completions.iter().map(|c| (c.wr, c.status)).collect();
    assert_eq!(st, vec![(2, Status::SUCCESS)]);
    for stag in [0xA0, 0xA1] {
        let r = &w.a.host.regions[&stag];
        assert_eq!(r.data, vec![4; 100]);
        assert!(!r.valid, "sink {stag:#x} still valid");
    }
    assert!(w.a.stream.is_active());
}

#[test]
fn hostile_reads_and_sends_get_the_rfc_terminates() {
    let l = ReadLimits { ird: 1, ord: 1 };
    // Read beyond the region.
    let mut w = World::connect(5, MpaConfig::default(), l, MpaConfig::default(), l);
    w.b.region(0xB0, 0x1000, vec![0; 100]);
    w.a.region(0xA0, 0x1000, vec![0; 1000]);
    w.a.post(
        1,
        Request::Read {
            len: 200,
            sink_stag: 0xA0,
            sink_to: 0x1000,
            stag: 0xB0,
            to: 0x1000,
        },
        vec![],
    );
    w.run();
    assert_eq!(
        w.b.events,
        vec![Event::TerminateSent(TermError::RdmapBaseBounds.into())]
    );
    assert_eq!(w.a.completions[0].status, Status::REMOTE_RESOURCES);

    // A send with no receive posted.
    let mut w = World::connect(6, MpaConfig::default(), l, MpaConfig::default(), l);
    w.a.post(
        1,
        Request::Send {
            len: 5,
            solicited: false,
            invalidate: None,
        },
        vec![1; 5],
    );
    w.run();
    assert_eq!(
        w.b.events,
        vec![Event::TerminateSent(TermError::DdpUntaggedNoBuffer.into())]
    );

    // A send longer than the receive.
    let mut w = World::connect(7, MpaConfig::default(), l, MpaConfig::default(), l);
    w.b.post_recv(9, 4);
    w.a.post(
        1,
        Request::Send {
            len: 5,
            solicited: false,
            invalidate: None,
        },
        vec![1; 5],
    );
    w.run();
    assert_eq!(
        w.b.events,
        vec![Event::TerminateSent(TermError::DdpUntaggedTooLong.into())]
    );
    assert_eq!(w.b.completions[0].status, Status::BUFFER_OVERFLOW);
    assert_eq!(w.b.host.recv_data[&9], vec![0; 4]);

    // Send with invalidate of a region, then of one that is no longer valid.
    let mut w = World::connect(8, MpaConfig::default(), l, MpaConfig::default(), l);
    w.b.region(0xB0, 0x1000, vec![0; 100]);
    w.b.post_recv(1, 10);
    w.b.post_recv(2, 10);
    w.a.post(
        1,
        Request::Send {
            len: 1,
            solicited: false,
            invalidate: Some(0xB0),
        },
        vec![1],
    );
    w.a.post(
        2,
        Request::Send {
            len: 1,
            solicited: false,
            invalidate: Some(0xB0),
        },
        vec![1],
    );
    w.run();
    assert_eq!(w.b.completions[0].invalidated, Some(0xB0));
    assert!(!w.b.host.regions[&0xB0].valid);
    assert_eq!(
        w.b.events,
        vec![Event::TerminateSent(
            TermError::RdmapCannotInvalidate.into()
        )]
    );
}

#[test]
fn ird_is_enforced() {
    // The initiator believes it may have 4 reads out; the responder serves 1.
    let mut w = World::connect(
        9,
        MpaConfig::default(),
        ReadLimits { ird: 4, ord: 4 },
        MpaConfig::default(),
        ReadLimits { ird: 4, ord: 4 },
    );
    w.b.stream = {
        // Re-create the responder stream with IRD 1 to play a peer that lies about its IRD.
        let n = netdirect_proto::Negotiated {
            role: netdirect_proto::Role::Responder,
            revision: 2,
            crc: false,
            markers_tx: false,
            markers_rx: false,
            limits: ReadLimits { ird: 1, ord: 4 },
            rtr: None,
            peer_private_data: vec![],
        };
        Stream::new(&n, 1200)
    };
    w.b.region(0xB0, 0x1000, vec![5; 100_000]);
    w.a.region(0xA0, 0x1000, vec![0; 100_000]);
    for k in 0..3u64 {
        w.a.post(
            k,
            Request::Read {
                len: 30_000,
                sink_stag: 0xA0,
                sink_to: 0x1000 + 30_000 * k,
                stag: 0xB0,
                to: 0x1000,
            },
            vec![],
        );
    }
    // Deliver everything the initiator sends before the responder gets a chance to answer.
    let bytes = w.a.transmit();
    w.b.receive(&bytes);
    w.b.drain();
    assert_eq!(
        w.b.events,
        vec![Event::TerminateSent(TermError::DdpUntaggedNoBuffer.into())]
    );
}

#[test]
fn peer_to_peer_rtr_is_sent_and_absorbed() {
    let p2p = MpaConfig {
        peer_to_peer: Some(netdirect_wire::mpa::Rtr {
            send: false,
            write: true,
            read: true,
        }),
        ..MpaConfig::default()
    };
    let l = ReadLimits { ird: 1, ord: 1 };
    let mut w = World::connect(11, p2p, l, MpaConfig::default(), l);
    // The responder has work queued before anything arrived: it must wait for the RTR.
    w.b.post(
        1,
        Request::Write {
            len: 4,
            stag: 0xA0,
            to: 0x1000,
        },
        vec![7; 4],
    );
    w.a.region(0xA0, 0x1000, vec![0; 4]);
    assert!(w.b.transmit().is_empty(), "the responder spoke first");
    w.run();
    assert_eq!(w.a.host.regions[&0xA0].data, vec![7; 4]);
    assert!(w.a.events.is_empty() && w.b.events.is_empty());
    assert_eq!(w.b.completions.len(), 1);
}

#[test]
fn handshake_times_out_in_simulated_time() {
    let t0 = Instant::now();
    let mut r = Handshake::responder(MpaConfig::default(), t0);
    let mut t = t0;
    while r.poll_event().is_none() {
        t += Duration::from_millis(250);
        r.handle_timeout(t);
    }
    assert_eq!(t - t0, Duration::from_secs(10));
}

#[test]
fn read_fence_holds_later_requests_until_reads_complete() {
    let l = ReadLimits { ird: 2, ord: 2 };
    let mut w = World::connect(12, MpaConfig::default(), l, MpaConfig::default(), l);
    w.b.region(0xB0, 0x1000, pattern(9, 10_000));
    w.a.region(0xA0, 0x1000, vec![0; 10_000]);
    w.a.post(
        1,
        Request::Read {
            len: 10_000,
            sink_stag: 0xA0,
            sink_to: 0x1000,
            stag: 0xB0,
            to: 0x1000,
        },
        vec![],
    );
    let fenced = PostFlags {
        signaled: true,
        read_fence: true,
        local_invalidate: false,
    };
    w.a.gather.insert(2, vec![1; 8]);
    w.a.stream
        .post(
            2,
            Request::Write {
                len: 8,
                stag: 0xB0,
                to: 0x1000,
            },
            fenced,
        )
        .unwrap();
    // Before any response arrives, only the Read Request may go out.
    let first = w.a.transmit();
    assert_eq!(
        first.len(),
        mpa::fpdu_len(46),
        "the fenced write went out before the read completed"
    );
    w.a_to_b.extend_from_slice(&first);
    w.run();
    // The read saw the original bytes; the write landed afterwards.
    assert_eq!(w.a.host.regions[&0xA0].data, pattern(9, 10_000));
    assert_eq!(w.b.host.regions[&0xB0].data[..8], [1; 8]);
    let order: Vec<_> = w.a.completions.iter().map(|c| c.wr).collect();
    assert_eq!(order, vec![1, 2]);
}

#[test]
fn silent_success_and_flush() {
    let l = ReadLimits { ird: 1, ord: 1 };
    let mut w = World::connect(13, MpaConfig::default(), l, MpaConfig::default(), l);
    w.b.post_recv(1, 8);
    w.b.post_recv(2, 8);
    let silent = PostFlags {
        signaled: false,
        read_fence: false,
        local_invalidate: false,
    };
    w.a.gather.insert(10, vec![5; 4]);
    w.a.stream
        .post(
            10,
            Request::Send {
                len: 4,
                solicited: false,
                invalidate: None,
            },
            silent,
        )
        .unwrap();
    w.a.post(
        11,
        Request::Send {
            len: 4,
            solicited: false,
            invalidate: None,
        },
        vec![6; 4],
    );
    w.run();
    // The silent send produced no completion; the signaled one did.
    let a: Vec<_> = w.a.completions.iter().map(|c| c.wr).collect();
    assert_eq!(a, vec![11]);
    // A flush cancels what is pending and stops the stream; posts fail inline afterwards.
    w.a.region(0xA0, 0x1000, vec![0; 4]);
    w.b.region(0xB0, 0x1000, vec![0; 4]);
    w.a.post(
        12,
        Request::Read {
            len: 4,
            sink_stag: 0xA0,
            sink_to: 0x1000,
            stag: 0xB0,
            to: 0x1000,
        },
        vec![],
    );
    w.a.stream.flush();
    w.a.drain();
    let last = w.a.completions.last().unwrap();
    assert_eq!((last.wr, last.status), (12, Status::CANCELLED));
    assert!(
        w.a.stream
            .post(13, Request::Local, PostFlags::default())
            .is_err()
    );
    assert!(w.a.transmit().is_empty());
}

#[test]
fn local_operation_failure_terminates() {
    let l = ReadLimits { ird: 1, ord: 1 };
    let mut w = World::connect(14, MpaConfig::default(), l, MpaConfig::default(), l);
    w.a.post(1, Request::Local, vec![]);
    w.a.post(
        2,
        Request::Send {
            len: 1,
            solicited: false,
            invalidate: None,
        },
        vec![1],
    );
    let action =
        w.a.stream
            .poll_action()
            .expect("the local op is at the head");
    assert_eq!(action.wr, 1);
    w.a.stream.local_done(1, Status::ACCESS_VIOLATION);
    w.a.drain();
    let st: Vec<_> = w.a.completions.iter().map(|c| (c.wr, c.status)).collect();
    assert_eq!(
        st,
        vec![(1, Status::ACCESS_VIOLATION), (2, Status::CANCELLED)]
    );
    assert_eq!(
        w.a.events,
        vec![Event::TerminateSent(
            TermError::RdmapLocalCatastrophic.into()
        )]
    );
}

/// What a corrupted large message leaves behind at the receiver: its events, its completions
/// with the receives a driver would flush (`CANCELLED`, the Terminate in the provider error)
/// appended, the sender's completions and events, and the receiver's region.
type Corrupted = (
    Vec<Event>,
    Vec<WorkCompletion>,
    Vec<Event>,
    Vec<WorkCompletion>,
    Vec<u8>,
);

/// A 3000-octet Write (`send` false) or Send from `a` to `b` with CRC on, one payload octet of
/// FPDU `bad_fpdu` flipped on the wire; header-first receive on at `b` when `direct`.
fn corrupted(seed: u64, send: bool, bad_fpdu: usize, direct: bool) -> (Corrupted, usize) {
    let cfg = MpaConfig {
        crc: true,
        ..MpaConfig::default()
    };
    let l = ReadLimits { ird: 1, ord: 1 };
    let mut w = World::connect(seed, cfg.clone(), l, cfg, l);
    if direct {
        w.b.direct = true;
        w.b.stream.set_direct_min(Some(64));
    }
    w.b.region(0xB0, 0x1000, pattern(9, 10_000));
    w.b.post_recv(1, 4000);
    w.b.post_recv(2, 4000);
    let req = if send {
        Request::Send {
            len: 3000,
            solicited: false,
            invalidate: None,
        }
    } else {
        Request::Write {
            len: 3000,
            stag: 0xB0,
            to: 0x1000 + 1000,
        }
    };
    w.a.post(1, req, pattern(3, 3000));
    let mut wire = w.a.transmit();
    // Three FPDUs of 1000 payload octets (MULPDU 1200 allows 1182, the message is split
    // evenly): the headers are 14 (tagged) or 18 octets.
    let fpdu = mpa::fpdu_len(1000 + if send { 18 } else { 14 });
    wire[bad_fpdu * fpdu + 20 + 500] ^= 0x40;
    w.a_to_b = wire;
    w.run();
    // Counted the same on both paths: one CRC error, the FPDUs before the bad one, the
    // Terminate each way (LLP, CRC).
    let (b, a) = (
        w.b.stream.counters().snapshot(),
        w.a.stream.counters().snapshot(),
    );
    let op = if send { 3 } else { 0 };
    if !netdirect_proto::counters::COUNTING {
        // Built without the `counters` feature: nothing counted.
        assert_eq!((&a, &b), (&Default::default(), &Default::default()));
    } else {
        assert_eq!(b.get(Counter::CrcErrors), 1);
        assert_eq!(b.opcode(op).fpdus_in, bad_fpdu as u64);
        assert_eq!(b.opcode(op).octets_in, 1000 * bad_fpdu as u64);
        assert_eq!(
            (b.terminate(true, 2, 0, 2), a.terminate(false, 2, 0, 2)),
            (1, 1)
        );
        assert_eq!(a.opcode(op).fpdus_out, 3);
        assert_eq!(a.get(Counter::RDMAOutOctets), 3000);
        assert_eq!(a.get(Counter::CrcErrors), 0);
    }
    let mut b_completions = w.b.completions.clone();
    let sent = w.b.events.iter().find_map(|e| match e {
        Event::TerminateSent(t) => Some(t.provider_error(true)),
        _ => None,
    });
    for (id, _) in &w.b.host.receives {
        b_completions.push(WorkCompletion {
            wr: *id,
            kind: WorkKind::Receive,
            status: Status::CANCELLED,
            bytes: 0,
            invalidated: None,
            solicited: false,
            provider_error: sent.unwrap_or(0),
        });
    }
    let outcome = (
        w.b.events.clone(),
        b_completions,
        w.a.events.clone(),
        w.a.completions.clone(),
        w.b.host.regions[&0xB0].data.clone(),
    );
    (outcome, w.b.direct_octets)
}

#[test]
fn bad_crc_in_a_directly_received_payload_ends_as_on_the_buffered_path() {
    let crc_term = TermCode::from(TermError::LlpCrc);
    for send in [false, true] {
        for bad in [0, 1] {
            let (reference, none) = corrupted(21, send, bad, false);
            assert_eq!(none, 0);
            assert_eq!(reference.0, vec![Event::TerminateSent(crc_term)]);
            assert_eq!(reference.2, vec![Event::TerminateReceived(crc_term)]);
            let mut went_direct = 0;
            for seed in 22..34 {
                let (o, direct) = corrupted(seed, send, bad, true);
                went_direct += usize::from(direct > 0);
                assert_eq!(o.0, reference.0, "events, send {send} bad {bad}");
                assert_eq!(o.1, reference.1, "completions, send {send} bad {bad}");
                assert_eq!(o.2, reference.2);
                assert_eq!(o.3, reference.3);
                // Outside the written range nothing changed; inside, the segments before the
                // bad one were placed on both paths, the bad one's octets are undefined.
                let (lo, hi) = (1000, 1000 + 3000);
                let pristine = pattern(9, 10_000);
                assert_eq!(o.4[..lo], pristine[..lo]);
                assert_eq!(o.4[hi..], pristine[hi..]);
                assert_eq!(o.4[lo..lo + 1000 * bad], reference.4[lo..lo + 1000 * bad]);
            }
            // Random chunking sometimes delivers a whole FPDU at once (then it is buffered).
            assert!(
                went_direct >= 6,
                "send {send} bad {bad}: {went_direct} of 12 direct"
            );
        }
    }
}

/// A message is cut into FPDUs of (nearly) equal size, none over MULPDU: no runt after a run of
/// full ones (1 MiB in 32 KiB FPDUs used to end with a 768-octet one).
#[test]
fn messages_split_into_equal_fpdus_without_a_runt() {
    let mut w = World::connect(
        7,
        MpaConfig::default(),
        ReadLimits::default(),
        MpaConfig::default(),
        ReadLimits::default(),
    );
    // Stream::new(…, 1200): payloads of at most 1200 - 18 octets.
    let max = 1200 - 18;
    for len in [100_000usize, 1182, 1183, 2 * 1182 + 1, 5000, 1, 0] {
        w.a.post(
            len as u64,
            Request::Write {
                len: len as u32,
                stag: 0xB0,
                to: 0,
            },
            vec![0; len],
        );
        let mut sizes = Vec::new();
        while let Some(frame) = w.a.stream.poll_transmit() {
            sizes.push(frame.payload.map_or(0, |p| p.len() as usize));
        }
        assert_eq!(sizes.iter().sum::<usize>(), len, "{len}: {sizes:?}");
        assert_eq!(sizes.len(), len.div_ceil(max).max(1), "{len}: {sizes:?}");
        let big = *sizes.iter().max().unwrap();
        let small = *sizes.iter().min().unwrap();
        assert!(big <= max, "{len}: {sizes:?}");
        assert!(big - small <= 64, "{len}: runt in {sizes:?}");
    }
}

/// Fed as a socket driver feeds it (reads of `read_hint` octets straight into the input buffer,
/// a read that would block once the socket is empty), a stream's input buffer follows what is
/// in flight: it grows with a backlog of small FPDUs and is given back when drained, so an
/// idle connection holds a few KiB, not the largest read it ever made.
#[test]
fn an_idle_stream_gives_its_input_buffer_back() {
    for direct in [false, true] {
        let mut w = World::connect(
            11,
            MpaConfig::default(),
            ReadLimits::default(),
            MpaConfig::default(),
            ReadLimits::default(),
        );
        if direct {
            w.direct(16 * 1024);
        }
        w.b.region(0xB0, 0, vec![0; 1 << 20]);
        // A backlog: 2,000 small Writes (1 KiB each) queued at once on the socket.
        for i in 0..2000u64 {
            w.a.post(
                i,
                Request::Write {
                    len: 1024,
                    stag: 0xB0,
                    to: (i % 1000) * 1024,
                },
                vec![i as u8; 1024],
            );
        }
        let mut socket: VecDeque<u8> = w.a.transmit().into_iter().collect();
        let mut peak = 0;
        loop {
            let n = w.b.stream.read_hint().expect("active");
            let got = w.b.stream.fill_input_with(n, |buf| {
                if socket.is_empty() {
                    return Err("would block");
                }
                let k = n.min(socket.len());
                for (d, s) in buf.iter_mut().zip(socket.drain(..k)) {
                    *d = s;
                }
                Ok(k)
            });
            peak = peak.max(w.b.stream.input_footprint());
            w.b.place_all();
            if got.is_err() {
                break;
            }
        }
        w.b.drain();
        assert!(w.b.completions.is_empty(), "writes complete at the writer");
        assert!(w.b.events.is_empty());
        assert!(
            peak >= 64 * 1024,
            "the backlog was read in large reads: {peak}"
        );
        assert!(
            w.b.stream.input_footprint() <= mpa::READ_MIN,
            "direct {direct}: idle stream holds {} octets",
            w.b.stream.input_footprint()
        );
        assert_eq!(w.b.stream.read_hint(), Some(mpa::READ_MIN));
        assert_eq!(w.b.host.regions[&0xB0].data[999 * 1024], 1999u64 as u8);
    }
}
