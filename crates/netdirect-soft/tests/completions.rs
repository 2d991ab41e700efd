//! Completion rules over the NDK object model that need the soft provider's engine settings,
//! end to end on 127.0.0.1 and ::1: one completion per posted receive whatever a flush races
//! with (§7.3). The provider-independent completion cases (read with local invalidate, the
//! peer's Terminate, CQ overflow) are in `netdirect-conformance`'s `completions` module; the
//! `ndk` test runs them here.

mod support;

use std::net::IpAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netdirect::{Buffer, OpenParameters, Provider};
use netdirect_soft::SoftProvider;
use netdirect_soft::transport::EngineConfig;
use netdirect_types::{Completion, MrFlags, Status, Version};

use support::{Endpoint, Listening, WAIT, connect, sge};

/// Receives posted right after a flush, or while it runs: each one whose post returned `Ok`
/// completes exactly once, `STATUS_CANCELLED`, in posting order (§7.3). A flush travels to the
/// progress thread while the consumer keeps posting; the race was a receive that checked "not
/// flushed", then was queued after the flush had drained the queue, and never completed.
/// Even rounds flush and then post; odd rounds flush from another thread while this one posts.
fn receives_posted_around_a_flush_all_complete(ip: IpAddr) {
    const RECEIVES: u64 = 3000;
    // Before the fix, 300 rounds lost a completion in every run (in 40 to 260 rounds), and
    // take a few seconds; ND_FLUSH_ROUNDS runs more.
    let rounds: usize = std::env::var("ND_FLUSH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    // No hold before the first FPDU: connections come up in a millisecond or two.
    let fast = || {
        SoftProvider::with_engine_config(EngineConfig {
            first_fpdu_delay: Duration::ZERO,
            ..EngineConfig::default()
        })
        .open_adapter(OpenParameters {
            address: ip,
            version: Version::V2_1,
        })
        .expect("open adapter")
    };
    let server_adapter = fast();
    let client_adapter = fast();
    let listening = Listening::new(&*server_adapter, ip);
    let buf = Buffer::new(64);
    for round in 0..rounds {
        let mut server = Endpoint::new(&*server_adapter, 1, 4096);
        let client = Endpoint::new(&*client_adapter, 2, 16);
        let mr = server.register(&buf, 0, 64, MrFlags::ALLOW_LOCAL_WRITE);
        let conn = connect(&*client_adapter, &*client.qp, &listening, &*server.qp, WAIT);
        let s = [sge(&buf, &*mr, 0, 64)];
        let (init, rx) = server.qp.split();
        let post_all = |rx: &mut dyn netdirect::QpReceiver, go: Option<mpsc::Sender<()>>| {
            let mut posted = Vec::new();
            for k in 0..RECEIVES {
                if k == 50 {
                    if let Some(go) = &go {
                        let _ = go.send(());
                    }
                }
                match rx.receive(k, &s) {
                    Ok(()) => posted.push(k),
                    Err(e) => panic!("round {round}: receive {k}: {e}"),
                }
            }
            posted
        };
        let posted = if round % 2 == 1 {
            std::thread::scope(|scope| {
                let (go, wait) = mpsc::channel();
                scope.spawn(move || {
                    let _ = wait.recv();
                    init.flush();
                });
                post_all(rx, Some(go))
            })
        } else {
            init.flush();
            post_all(rx, None)
        };
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut out = [Completion::EMPTY; 64];
        while got.len() < posted.len() && Instant::now() < deadline {
            let n = server.cq.get_results_ex(&mut out);
            got.extend_from_slice(&out[..n]);
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let mut contexts: Vec<u64> = got.iter().map(|c| c.request_context).collect();
        let in_order = contexts == posted;
        contexts.sort_unstable();
        let missing: Vec<u64> = posted
            .iter()
            .copied()
            .filter(|k| contexts.binary_search(k).is_err())
            .collect();
        assert!(
            missing.is_empty() && contexts.len() == posted.len(),
            "round {round}: {} receives posted Ok, {} completions; never completed: {missing:?}",
            posted.len(),
            got.len()
        );
        assert!(in_order, "round {round}: completions out of posting order");
        assert!(got.iter().all(|c| c.status == Status::CANCELLED));
        assert!(server.drain(Duration::ZERO).is_empty());
        drop(conn);
    }
}

/// Runs each test body on 127.0.0.1 and on ::1.
macro_rules! both_families {
    ($($name:ident),* $(,)?) => {
        mod v4 {
            $(#[test]
            fn $name() {
                super::$name("127.0.0.1".parse().unwrap());
            })*
        }
        mod v6 {
            $(#[test]
            fn $name() {
                super::$name("::1".parse().unwrap());
            })*
        }
    };
}

both_families!(receives_posted_around_a_flush_all_complete);
