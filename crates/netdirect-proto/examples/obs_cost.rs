//! The data path of one connection moving RDMA Writes, single-threaded and deterministic, for
//! counting its instructions (`bench/obs-cost.py` runs it under callgrind, built with and
//! without the `counters` feature).
//!
//! `obs_cost SIZE COUNT` runs the MPA handshake in memory, then COUNT signaled writes of SIZE
//! octets, 128 in flight at most (perftest's `write_bw` depth), and prints what it moved. It
//! drives both streams as the soft provider's driver does on loopback: FPDUs sized for a
//! 65483-octet MSS; payloads up to 4 KiB copied into the sender's out buffer, larger ones
//! handed over as their own slice (the driver's vectored write); header-first receive
//! ([`Stream::direct_target`]) for large payloads, which land without a user-space copy (the
//! kernel's copy in the real driver); the driver's own counting (an inline transmit per post,
//! a CQ error per failed completion). What the real driver adds (sockets, locks, CQs) is the
//! same with counters on or off, so this is where counting shows most.

use netdirect_proto::handshake::{Event as HsEvent, Handshake, MpaConfig, ReadLimits};
use netdirect_proto::stream::{
    Access, DIRECT_MIN, Host, Payload, PostFlags, Request, Stream, TaggedError,
};
use netdirect_proto::{Negotiated, ProviderError};
use netdirect_test_support::host::{self, Region};
use netdirect_types::counters::Counter;
use netdirect_wire::mpa::{self, FpduWriter};
use std::process::ExitCode;
use std::time::Instant;

const STAG: u32 = 0xB0;
const BASE: u64 = 0x1000;
const DEPTH: u64 = 128;
/// The soft driver copies payloads up to this into its out buffer (`SMALL_PAYLOAD`).
const SMALL_PAYLOAD: usize = 4096;
/// TCP's MSS on Linux loopback.
const LOOPBACK_MSS: usize = 65483;

struct Target {
    region: Region,
}

impl Host for Target {
    type Lease = u32;

    fn tagged(&mut self, stag: u32, to: u64, len: u64, access: Access) -> Result<u32, TaggedError> {
        host::tagged(Some(&self.region), stag, to, len, access)
    }

    fn invalidate(&mut self, _stag: u32) -> Result<(), TaggedError> {
        Err(TaggedError::InvalidStag)
    }

    fn take_receive(&mut self) -> Option<(u64, u64)> {
        None
    }
}

/// What goes over the "socket": bytes, or a payload slice of the source (no copy).
enum Segment {
    Bytes(Vec<u8>),
    Source { offset: usize, len: usize },
}

fn negotiate() -> Result<(Negotiated, Negotiated), String> {
    let now = Instant::now();
    let limits = ReadLimits { ird: 16, ord: 16 };
    let mut i =
        Handshake::initiator(MpaConfig::default(), limits, b"", now).map_err(|e| e.to_string())?;
    let mut r = Handshake::responder(MpaConfig::default(), now);
    let mut wire = Vec::new();
    i.poll_transmit(&mut wire);
    let n = r.handle_input(&wire);
    wire.drain(..n);
    let Some(HsEvent::Request(_)) = r.poll_event() else {
        return Err("no MPA Request".into());
    };
    r.accept(limits, b"").map_err(|e| e.to_string())?;
    let Some(HsEvent::Established(rn)) = r.poll_event() else {
        return Err("responder not established".into());
    };
    r.poll_transmit(&mut wire);
    i.handle_input(&wire);
    let Some(HsEvent::Established(inn)) = i.poll_event() else {
        return Err("initiator not established".into());
    };
    Ok((inn, rn))
}

/// Takes every frame the sender has, as the driver writes them.
fn transmit(
    s: &mut Stream<u32>,
    writer: &FpduWriter,
    src: &[u8],
    wire: &mut Vec<Segment>,
) -> Result<(), String> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    loop {
        while let Some(a) = s.poll_action() {
            s.local_done(a.wr, netdirect_types::Status::SUCCESS);
        }
        let Some(frame) = s.poll_transmit() else {
            break;
        };
        let (offset, len) = match frame.payload {
            Some(Payload::Request { offset, len, .. }) => (offset as usize, len as usize),
            None => (0, 0),
            Some(Payload::Tagged { .. }) => return Err("no reads here".into()),
        };
        let payload = &src[offset..offset + len];
        if len <= SMALL_PAYLOAD {
            writer
                .append(frame.seq, &frame.header, &[payload], &mut scratch, &mut out)
                .map_err(|e| e.to_string())?;
        } else {
            let trailer = writer
                .trailer(&frame.header, &[payload])
                .map_err(|e| e.to_string())?;
            out.extend_from_slice(&frame.header);
            wire.push(Segment::Bytes(std::mem::take(&mut out)));
            wire.push(Segment::Source { offset, len });
            out.extend_from_slice(trailer.as_bytes());
        }
    }
    if !out.is_empty() {
        wire.push(Segment::Bytes(out));
    }
    Ok(())
}

/// Places what the host is told to place (buffered payloads: copied, as the driver does).
fn place(r: &mut Stream<u32>, host: &mut Target) -> Result<(), String> {
    while let Some(p) = r.poll_rx(host) {
        let netdirect_proto::stream::Dest::Tagged { to, .. } = p.dest else {
            return Err("a write was expected".into());
        };
        let at = (to - host.region.base) as usize;
        host.region.data[at..at + p.data.len()].copy_from_slice(p.data);
    }
    Ok(())
}

/// Feeds the receiver: bytes through its input buffer, large payloads header-first.
fn receive(
    r: &mut Stream<u32>,
    host: &mut Target,
    src: &[u8],
    wire: Vec<Segment>,
) -> Result<(), String> {
    for seg in wire {
        match seg {
            Segment::Bytes(b) => r.push_input(&b),
            Segment::Source { offset, len } => {
                place(r, host)?;
                let payload = &src[offset..offset + len];
                match r.direct_target() {
                    Some(t) if t.len == len => {
                        if r.direct_placed(payload) != len {
                            return Err("direct placement refused".into());
                        }
                    }
                    _ => r.push_input(payload),
                }
            }
        }
        place(r, host)?;
    }
    Ok(())
}

fn run(size: usize, count: u64) -> Result<(u64, u64), String> {
    let (inn, rn) = negotiate()?;
    let mulpdu = mpa::mulpdu(mpa::gso_seglen(LOOPBACK_MSS), false);
    let mut s: Stream<u32> = Stream::new(&inn, mulpdu);
    let mut r: Stream<u32> = Stream::new(&rn, mulpdu);
    s.set_direct_min(Some(DIRECT_MIN));
    r.set_direct_min(Some(DIRECT_MIN));
    let writer = |n: &Negotiated| FpduWriter {
        crc: n.crc,
        markers: None,
    };
    let (sw, rw) = (writer(&inn), writer(&rn));
    let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut host = Target {
        region: Region::new(BASE, vec![0; size]),
    };
    let mut idle = Target {
        region: Region::new(0, Vec::new()),
    };
    let flags = PostFlags {
        signaled: true,
        read_fence: false,
        local_invalidate: false,
    };
    let (mut posted, mut done, mut errors) = (0u64, 0u64, 0u64);
    while done < count {
        while posted < count && posted - done < DEPTH {
            let req = Request::Write {
                len: size as u32,
                stag: STAG,
                to: BASE,
            };
            s.post(posted, req, flags).map_err(|e| format!("{e:?}"))?;
            // The driver sends inline from the posting thread.
            s.counters().bump(Counter::InlineTransmits, 1);
            posted += 1;
        }
        let mut wire = Vec::new();
        transmit(&mut s, &sw, &src, &mut wire)?;
        receive(&mut r, &mut host, &src, wire)?;
        // The receiver has nothing to say to writes (its RTR, if any, went first).
        let mut back = Vec::new();
        transmit(&mut r, &rw, &[], &mut back)?;
        receive(&mut s, &mut idle, &[], back)?;
        let before = done;
        while let Some(c) = s.poll_completion() {
            if !c.status.is_success() {
                s.counters().bump(Counter::CQError, 1);
                errors += 1;
                eprintln!("error: {} ({})", c.status, ProviderError(c.provider_error));
            }
            done += 1;
        }
        if done == before {
            return Err(format!("stuck after {done} of {count}"));
        }
    }
    // Payloads placed header-first are not copied (the kernel's copy in the real driver), so
    // only a write small enough to go through the input buffer can be checked.
    if size < DIRECT_MIN && host.region.data != src {
        return Err("the written data differ".into());
    }
    Ok((done, errors))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [size, count] => size.parse::<usize>().ok().zip(count.parse::<u64>().ok()),
        _ => None,
    };
    let Some((size, count)) = parsed.filter(|&(s, _)| s > 0 && s <= u32::MAX as usize) else {
        eprintln!("usage: obs_cost SIZE COUNT");
        return ExitCode::FAILURE;
    };
    match run(size, count) {
        Ok((done, 0)) => {
            let counting = netdirect_proto::counters::COUNTING;
            println!(
                "{done} writes of {size} octets; counters {}",
                if counting { "on" } else { "off" }
            );
            ExitCode::SUCCESS
        }
        Ok((_, errors)) => {
            eprintln!("obs_cost: {errors} writes failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("obs_cost: {e}");
            ExitCode::FAILURE
        }
    }
}
