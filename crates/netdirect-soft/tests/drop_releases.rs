//! Issue 14 point 3: objects dropped instead of closed release what their close releases. A
//! loop connects, drops the client's connector, QP, MR, CQ and PD without a disconnect or a
//! close, and checks that the peer hears of it and that the process's file descriptors and the
//! adapter's registered regions come back to where they were.
//!
//! Alone in its test binary: it counts the process's file descriptors.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use netdirect::{Buffer, OpenParameters};
use netdirect_soft::transport::EngineConfig;
use netdirect_soft::{SoftAdapter, SoftProvider};
use netdirect_types::{MrFlags, Version};
use support::{Endpoint, Listening, WAIT, connect};

const CYCLES: usize = 300;

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

fn open(ip: IpAddr) -> SoftAdapter {
    // No 20 ms hold of the first FPDU: the loop has no FPDU to hold.
    SoftProvider::with_engine_config(EngineConfig {
        first_fpdu_delay: Duration::ZERO,
        ..EngineConfig::default()
    })
    .open(OpenParameters {
        address: ip,
        version: Version::V2_1,
    })
    .expect("open adapter")
}

fn regions(adapter: &SoftAdapter) -> usize {
    adapter.memory().usage().regions
}

/// One connection whose client side is dropped without a close: the connector first, or (with
/// `qp_first`) the QP, CQ, MR and PD while the connector stays until the peer heard of it.
fn cycle(client: &SoftAdapter, server: &SoftAdapter, listening: &Listening, qp_first: bool) {
    let server_side = Endpoint::new(server, 1, 4);
    let client_side = Endpoint::new(client, 2, 4);
    let buffer = Buffer::new(64 * 1024);
    let mr = client_side.register(
        &buffer,
        0,
        buffer.len(),
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_READ,
    );
    let connected = connect(client, &*client_side.qp, listening, &*server_side.qp, WAIT);
    assert_eq!(regions(client), 1);
    // What an early return on an error path does: everything goes, nothing is closed.
    let active = connected.active;
    if !qp_first {
        drop(active);
    }
    drop(mr);
    drop(client_side);
    drop(buffer);
    assert_eq!(regions(client), 0, "the dropped MR is deregistered at once");
    assert!(
        connected.passive_disconnected.recv_timeout(WAIT).is_ok(),
        "the peer is told of the dropped connection (qp_first: {qp_first})"
    );
    drop(connected.passive);
    drop(server_side);
}

fn drop_cycles(ip: IpAddr) {
    let server = open(ip);
    let client = open(ip);
    let listening = Listening::new(&server, ip);
    cycle(&client, &server, &listening, false);
    let baseline = fds();
    let start = Instant::now();
    for i in 0..CYCLES {
        cycle(&client, &server, &listening, i % 2 == 1);
    }
    let deadline = Instant::now() + WAIT;
    while fds() > baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let now = fds();
    assert!(
        now <= baseline,
        "file descriptors: {baseline} before, {now} after {CYCLES} dropped connections ({ip})"
    );
    assert_eq!(regions(&client), 0);
    assert_eq!(regions(&server), 0);
    eprintln!("{CYCLES} cycles over {ip} in {:?}", start.elapsed());
}

#[test]
fn dropped_objects_release_what_close_releases() {
    drop_cycles(IpAddr::V4(Ipv4Addr::LOCALHOST));
    drop_cycles(IpAddr::V6(Ipv6Addr::LOCALHOST));
}
