//! The provider setting for captures ([`EngineConfig::capture`]): a known workload between two
//! adapters of this process writes one TCP conversation (the two ends of one connection in one
//! process are captured once) that the workspace's own capture reader reassembles without a
//! hole or a duplicate, whose FPDUs all check (CRC on) and match the writer's own count, with
//! the run's sends, writes and reads in it; and a capture bounded by its size limit stops at
//! whole frames and says it was truncated. IPv4 and IPv6, two progress threads.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use netdirect::{Adapter, Buffer, OpenParameters, Provider};
use netdirect_soft::SoftProvider;
use netdirect_soft::capture::Capture;
use netdirect_soft::transport::{EngineConfig, ndk_mpa_config};
use netdirect_test_support::capture::{self as reader, TempPath};
use netdirect_types::{MrFlags, OpFlags, RemoteToken, Version};
use netdirect_wire::rdmap::Opcode;
use support::{Endpoint, Listening, WAIT, connect, sge};

fn open(ip: IpAddr, capture: &Arc<Capture>) -> Box<dyn Adapter> {
    let mut mpa = ndk_mpa_config();
    mpa.crc = true;
    SoftProvider::with_engine_config(EngineConfig {
        capture: Some(capture.clone()),
        progress_threads: 2,
        ..EngineConfig::default()
    })
    .with_mpa(mpa)
    .open_adapter(OpenParameters {
        address: ip,
        version: Version::V2_1,
    })
    .expect("open adapter")
}

const SENDS: u64 = 3;
const WRITE: usize = 512 * 1024;
const READ: usize = 256 * 1024;

/// Three sends of 100 octets, a 512 KiB write and a 256 KiB read, from the client.
fn workload(ip: IpAddr, capture: &Arc<Capture>) {
    let server = open(ip, capture);
    let client = open(ip, capture);
    let mut s = Endpoint::new(&*server, 1, 16);
    let mut c = Endpoint::new(&*client, 2, 16);
    let sbuf = Buffer::new(1 << 20);
    let smr = s.register(
        &sbuf,
        0,
        sbuf.len(),
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_WRITE | MrFlags::ALLOW_REMOTE_READ,
    );
    for k in 0..SENDS {
        s.qp.receiver()
            .receive(k, &[sge(&sbuf, &*smr, k as usize * 4096, 4096)])
            .unwrap();
    }
    let listening = Listening::new(&*server, ip);
    let conn = connect(&*client, &*c.qp, &listening, &*s.qp, WAIT);
    let cbuf = Buffer::new(1 << 20);
    let cmr = c.register(
        &cbuf,
        0,
        cbuf.len(),
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK,
    );
    let q = c.qp.initiator();
    for k in 0..SENDS {
        q.send(k, &[sge(&cbuf, &*cmr, 0, 100)], OpFlags::empty())
            .unwrap();
    }
    let remote = RemoteToken(smr.remote_token().0);
    q.write(
        10,
        &[sge(&cbuf, &*cmr, 0, WRITE)],
        sbuf.address() + 65536,
        remote,
        OpFlags::empty(),
    )
    .unwrap();
    q.read(
        11,
        &[sge(&cbuf, &*cmr, WRITE, READ)],
        sbuf.address() + 65536,
        remote,
        OpFlags::READ_FENCE,
    )
    .unwrap();
    let done = c.completions(SENDS as usize + 2);
    assert!(done.iter().all(|d| d.status.is_success()), "{done:?}");
    s.completions(SENDS as usize);
    // Disconnect, then close everything: the adapters' closes join their progress threads,
    // so every byte and FIN is in the capture afterwards.
    drop(conn);
    drop((smr, cmr));
    drop((s, c, listening));
    server.close();
    client.close();
}

fn captured_workload(ip: IpAddr) {
    let path = TempPath::new(&format!("soft-capture-{}", u8::from(ip.is_ipv6())));
    let capture = Capture::create(&path.0, 64 << 20).unwrap();
    workload(ip, &capture);
    capture.flush().unwrap();
    let stats = capture.stats();
    assert!(!stats.truncated && stats.error.is_none(), "{stats:?}");
    assert_eq!(stats.connections.len(), 1, "one end captured: {stats:?}");
    let mine = stats.connections[0];
    assert_eq!(
        std::fs::metadata(&path.0).unwrap().len(),
        stats.octets,
        "the file holds what the stats say"
    );

    let segments = reader::read_pcap(&path.0);
    assert_eq!(segments.len() as u64, stats.frames);
    let conns = reader::connections(&segments);
    assert_eq!(conns.len(), 1, "{conns:?}");
    let conn = &conns[0];
    for s in [&conn.initiator, &conn.responder] {
        assert!(s.isn.is_some(), "a SYN each way");
        assert_eq!(
            (s.duplicate_octets, s.late_segments, s.after_hole),
            (0, 0, 0),
            "sequence numbers follow the bytes"
        );
    }
    assert_eq!(
        segments.iter().filter(|s| s.fin).count(),
        2,
        "a FIN each way"
    );
    let r = reader::analyze(conn);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert!(r.initiator.crc && r.responder.crc);
    assert_eq!(r.initiator.count(Opcode::Send) as u64, SENDS);
    assert!(r.initiator.count(Opcode::Write) >= WRITE / 65535, "{r:?}");
    assert_eq!(r.initiator.messages(Opcode::ReadRequest), 1);
    assert!(r.responder.count(Opcode::ReadResponse) >= READ / 65535);
    // The writer's own count agrees with the reader's, direction by direction.
    let (sent, received) = if mine.local == conn.initiator.src {
        (&r.initiator, &r.responder)
    } else {
        (&r.responder, &r.initiator)
    };
    assert_eq!(
        mine.fpdus,
        [
            Some(sent.fpdus.len() as u64),
            Some(received.fpdus.len() as u64)
        ]
    );
    assert_eq!(
        mine.octets[0] as usize,
        if mine.local == conn.initiator.src {
            conn.initiator.data.len()
        } else {
            conn.responder.data.len()
        }
    );
}

#[test]
fn a_captured_workload_reads_back_whole_ipv4() {
    captured_workload(IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn a_captured_workload_reads_back_whole_ipv6() {
    captured_workload(IpAddr::V6(Ipv6Addr::LOCALHOST));
}

fn bounded(ip: IpAddr) {
    let path = TempPath::new(&format!("soft-capture-limit-{}", u8::from(ip.is_ipv6())));
    const LIMIT: u64 = 100 * 1024;
    let capture = Capture::create(&path.0, LIMIT).unwrap();
    workload(ip, &capture);
    capture.flush().unwrap();
    let stats = capture.stats();
    assert!(stats.truncated, "{stats:?}");
    let len = std::fs::metadata(&path.0).unwrap().len();
    assert!(len <= LIMIT && len == stats.octets, "{len} {stats:?}");
    // Whole frames only: the reader takes every one, the handshake first.
    let segments = reader::read_pcap(&path.0);
    assert_eq!(segments.len() as u64, stats.frames);
    assert!(segments[0].syn && !segments[0].ack);
    // The count goes on past the limit.
    let mine = stats.connections[0];
    assert!(mine.octets[0] + mine.octets[1] > LIMIT, "{mine:?}");
}

#[test]
fn a_capture_stops_at_its_size_limit_ipv4() {
    bounded(IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn a_capture_stops_at_its_size_limit_ipv6() {
    bounded(IpAddr::V6(Ipv6Addr::LOCALHOST));
}
