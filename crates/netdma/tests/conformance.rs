//! The conformance suite, run against every provider in this crate.
#![allow(missing_docs)]

mod common;

use common::{Rng, Setup, T, random_copies, striped_chain};
use netdma::*;
use proptest::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn cpu(n: &NetDma, c: EngineConfig) -> Result<ProviderHandle> {
    CpuEngine::register(n, c).map(CpuEngine::into_handle)
}

/// The CPU engine with every submission handed to the worker (no inline execution).
fn cpu_worker(n: &NetDma, mut c: EngineConfig) -> Result<ProviderHandle> {
    c.inline_threshold = Some(0);
    cpu(n, c)
}

fn inline(n: &NetDma, c: EngineConfig) -> Result<ProviderHandle> {
    InlineEngine::register(n, c).map(InlineEngine::into_handle)
}

macro_rules! suite {
    ($m:ident, $make:expr) => {
        mod $m {
            use super::*;
            #[test]
            fn random_copies_temporal() {
                let mut c = EngineConfig::new(1);
                c.copy_plan = Some(CopyPlan::fixed(CopyMethod::Memcpy));
                random_copies($make, c, 1, 24);
            }
            #[test]
            fn random_copies_non_temporal() {
                let mut c = EngineConfig::new(1);
                c.copy_plan = Some(CopyPlan::with_nt_threshold(CopyMethod::Memcpy, 300));
                random_copies($make, c, 2, 24);
            }
            #[test]
            fn random_copies_rep_movsb_and_vector() {
                let mut c = EngineConfig::new(1);
                c.copy_plan = Some(CopyPlan::new(&[
                    (0, CopyMethod::RepMovsb),
                    (2000, CopyMethod::Vector),
                    (9000, CopyMethod::RepMovsb),
                ]));
                random_copies($make, c, 4, 24);
            }
            #[test]
            fn random_copies_default() {
                random_copies($make, EngineConfig::new(1), 3, 24);
            }
            #[test]
            fn chain_completion_order() {
                common::chain_completion_order($make);
            }
            #[test]
            fn append_while_running() {
                common::append_while_running($make);
            }
            #[test]
            fn suspend_resume() {
                common::suspend_resume($make);
            }
            #[test]
            fn abort_mid_chain() {
                common::abort_mid_chain($make);
            }
            #[test]
            fn reset_after_error() {
                common::reset_after_error($make);
            }
            #[test]
            fn completion_and_callbacks() {
                common::completion_and_callbacks($make);
            }
            #[test]
            fn links_and_page_breaks() {
                common::links_and_page_breaks($make);
            }
            #[test]
            fn extensions() {
                common::extensions($make);
            }
            #[test]
            fn start_replaces_running_chain() {
                common::start_replaces_running_chain($make);
            }
            #[test]
            fn allocation() {
                common::allocation($make);
            }
            #[test]
            fn pnp_and_power() {
                common::pnp_and_power($make);
            }
            #[test]
            fn invalid_use() {
                common::invalid_use($make);
            }
        }
    };
}

suite!(cpu_engine, cpu);
suite!(cpu_engine_worker_only, cpu_worker);
suite!(inline_engine, inline);

/// A channel held mid-chain deterministically: the callback of descriptor 0 blocks the worker
/// until released, and the release happens only after `suspend` has raised its request.
#[test]
fn cpu_suspend_is_exact_mid_chain() {
    let s = Setup::new(cpu_worker, EngineConfig::new(1));
    let go = Arc::new(AtomicBool::new(false));
    let entered = Arc::new(AtomicBool::new(false));
    let (g2, e2) = (go.clone(), entered.clone());
    let ch = s.channel_with(ChannelParameters {
        completion_callback: Some(Arc::new(move |_| {
            e2.store(true, Ordering::SeqCst);
            while !g2.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
        })),
        ..ChannelParameters::default()
    });
    let mut r = Rng::new(3);
    let (n, size) = (8, 4096);
    let sv = r.bytes(n * size);
    let src = DmaBuffer::from_slice(&sv);
    let dst = DmaBuffer::new(n * size);
    let mut c = striped_chain(&src, &dst, n, size, ControlFlags::empty());
    c.descriptors_mut()[0].control_flags = ControlFlags::INTERRUPT_ON_COMPLETION;
    let sub = ch.start(c).unwrap();
    while !entered.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let releaser = {
        let go = go.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            go.store(true, Ordering::SeqCst);
        })
    };
    let last = ch.suspend().unwrap();
    releaser.join().unwrap();
    assert_eq!(ch.state(), ChannelState::Suspended);
    assert_eq!(last, Some(sub.first));
    assert_eq!(ch.completion().status(), TransferStatus::Suspend);
    // Start on a suspended channel is the invalid case.
    let mut null = Chain::new();
    null.null(ControlFlags::empty());
    assert_eq!(
        ch.start(null.clone()).err(),
        Some(Status::INVALID_DEVICE_STATE)
    );
    let extra = ch.append(null).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(
        ch.poll(&sub),
        Status::PENDING,
        "nothing runs while suspended"
    );
    ch.resume().unwrap();
    assert_eq!(ch.wait(&extra, T), Status::SUCCESS);
    assert_eq!(dst.to_vec().unwrap(), sv);
    // Free with work outstanding: reported, but the channel is freed (and its leases dropped).
    go.store(false, Ordering::SeqCst);
    entered.store(false, Ordering::SeqCst);
    let mut c = striped_chain(&src, &dst, n, size, ControlFlags::empty());
    c.descriptors_mut()[0].control_flags = ControlFlags::INTERRUPT_ON_COMPLETION;
    ch.start(c).unwrap();
    while !entered.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    assert_eq!(ch.state(), ChannelState::Active);
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        go.store(true, Ordering::SeqCst);
    });
    assert_eq!(ch.free().err(), Some(Status::INVALID_DEVICE_STATE));
    releaser.join().unwrap();
    assert!(dst.write().is_ok(), "leases released by free");
    assert_eq!(s.netdma.providers()[0].allocated_channels, 0);
}

/// Blocking calls from inside a completion callback fail instead of deadlocking; append works.
#[test]
fn cpu_callback_reentrancy() {
    let s = Setup::new(cpu_worker, EngineConfig::new(1));
    let slot: Arc<std::sync::Mutex<Option<Arc<Channel>>>> = Arc::default();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s2, seen2) = (slot.clone(), seen.clone());
    let ch = Arc::new(s.channel_with(ChannelParameters {
        completion_callback: Some(Arc::new(move |ev| {
            if ev.user_context[0] != 1 {
                return;
            }
            let ch = s2.lock().unwrap().clone().unwrap();
            let mut v = seen2.lock().unwrap();
            v.push(ch.abort().err());
            v.push(ch.suspend().err());
            let mut c = Chain::new();
            c.null(ControlFlags::empty());
            v.push(ch.start(c.clone()).err());
            v.push(ch.append(c).err());
        })),
        ..ChannelParameters::default()
    }));
    *slot.lock().unwrap() = Some(ch.clone());
    let mut c = Chain::new();
    let i = c.null(ControlFlags::INTERRUPT_ON_COMPLETION);
    c.descriptors_mut()[i].user_context1 = 1;
    ch.start(c).unwrap();
    assert_eq!(ch.wait_idle(T), Status::SUCCESS);
    // The callback of the last descriptor runs with the channel idle: abort would have to wait
    // for the executor (refused), suspend is the documented no-op, start and append are legal.
    let bad = Some(Status::INVALID_DEVICE_STATE);
    assert_eq!(*seen.lock().unwrap(), vec![bad, None, None, None]);
    slot.lock().unwrap().take();
}

type Threads = Arc<std::sync::Mutex<Vec<std::thread::ThreadId>>>;

/// A channel whose completion callback records the thread it runs on.
fn recording_channel(s: &Setup) -> (Channel, Threads) {
    let threads: Threads = Arc::default();
    let t2 = threads.clone();
    let ch = s.channel_with(ChannelParameters {
        completion_callback: Some(Arc::new(move |_| {
            t2.lock().unwrap().push(std::thread::current().id())
        })),
        ..ChannelParameters::default()
    });
    (ch, threads)
}

/// The threads recorded once `n` callbacks ran (or after 10 s).
fn callbacks_seen(threads: &Threads, n: usize) -> Vec<std::thread::ThreadId> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while threads.lock().unwrap().len() < n && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    threads.lock().unwrap().clone()
}

/// A channel whose completion callback holds its executor until `gate` is true.
fn gated_channel(s: &Setup, gate: &Arc<AtomicBool>) -> Channel {
    let g = gate.clone();
    s.channel_with(ChannelParameters {
        completion_callback: Some(Arc::new(move |_| {
            while !g.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
        })),
        ..ChannelParameters::default()
    })
}

/// Two channels copy concurrently; a buffer written by one cannot be leased by the other.
#[test]
fn cpu_two_channels_and_sharing() {
    let s = Setup::new(cpu_worker, EngineConfig::new(2));
    let go = Arc::new(AtomicBool::new(true));
    let a = gated_channel(&s, &go);
    let b = s.channel();
    assert_ne!(a.index(), b.index());
    let mut r = Rng::new(9);
    let sv = r.bytes(1 << 20);
    let src = DmaBuffer::from_slice(&sv);
    let (d1, d2) = (DmaBuffer::new(1 << 20), DmaBuffer::new(1 << 20));
    let mut c1 = Chain::new();
    c1.copy(&src, 0, &d1, 0, 1 << 20, ControlFlags::empty());
    let mut c2 = Chain::new();
    c2.copy(&src, 0, &d2, 0, 1 << 20, ControlFlags::empty());
    let (s1, s2) = (a.start(c1).unwrap(), b.start(c2).unwrap());
    assert_eq!(a.wait(&s1, T), Status::SUCCESS);
    assert_eq!(b.wait(&s2, T), Status::SUCCESS);
    assert_eq!(d1.to_vec().unwrap(), sv);
    assert_eq!(d2.to_vec().unwrap(), sv);
    // Channel `a` is held inside a callback while its chain leases d1 for writing: `b` may
    // neither read nor write d1 until that chain retires.
    go.store(false, Ordering::SeqCst);
    let mut hold = Chain::new();
    hold.null(ControlFlags::INTERRUPT_ON_COMPLETION);
    hold.copy(&src, 0, &d1, 0, 16, ControlFlags::empty());
    let held = a.start(hold).unwrap();
    let mut other = Chain::new();
    other.copy(&d1, 0, &d2, 0, 16, ControlFlags::empty());
    assert_eq!(
        b.append(other.clone()).err(),
        Some(Status::SHARING_VIOLATION)
    );
    assert_eq!(d1.read().err(), Some(Status::SHARING_VIOLATION));
    go.store(true, Ordering::SeqCst);
    assert_eq!(a.wait(&held, T), Status::SUCCESS);
    let sub = b.append(other).unwrap();
    assert_eq!(b.wait(&sub, T), Status::SUCCESS);
}

/// Small submissions to an idle channel run on the submitting thread, exactly up to the
/// threshold the provider declares in its characteristics and only with as many data
/// descriptors as it declares (one by default; a NULL completion marker does not count);
/// larger ones, chains (and any submission while the channel is busy) go to the worker.
/// Without the threshold everything goes to the worker.
#[test]
fn cpu_small_copies_inline_as_declared() {
    for threshold in [8192u64, 0] {
        let mut cfg = EngineConfig::new(1);
        cfg.inline_threshold = Some(threshold);
        let s = Setup::new(cpu, cfg);
        assert_eq!(
            s.netdma.providers()[0].characteristics.inline_threshold,
            threshold
        );
        assert_eq!(
            s.netdma.providers()[0]
                .characteristics
                .inline_max_descriptors,
            INLINE_MAX_DESCRIPTORS
        );
        let (ch, threads) = recording_channel(&s);
        let src = DmaBuffer::from_slice(&[3u8; 16384]);
        let dst = DmaBuffer::new(16384);
        let me = std::thread::current().id();
        // (bytes per copy, copies, NULL marker at the end, expected inline)
        for (len, copies, marker, want_here) in [
            (8192u32, 1, false, threshold >= 8192),
            (8193, 1, false, false),
            (100, 1, false, threshold > 0),
            (100, 1, true, threshold > 0),
            (100, 2, false, false),
        ] {
            let mut c = Chain::new();
            for k in 0..copies {
                let last = k + 1 == copies && !marker;
                let f = if last {
                    ControlFlags::INTERRUPT_ON_COMPLETION
                } else {
                    ControlFlags::empty()
                };
                c.copy(&src, 0, &dst, 0, len, f);
            }
            if marker {
                c.null(ControlFlags::INTERRUPT_ON_COMPLETION);
            }
            threads.lock().unwrap().clear();
            let sub = ch.start(c).unwrap();
            if want_here {
                assert_eq!(ch.poll(&sub), Status::SUCCESS, "{len} ran inside start");
            }
            assert_eq!(ch.wait(&sub, T), Status::SUCCESS);
            assert_eq!(ch.wait_idle(T), Status::SUCCESS);
            let ran = callbacks_seen(&threads, 1);
            assert_eq!(ran.len(), 1);
            assert_eq!(
                ran[0] == me,
                want_here,
                "threshold {threshold}, {copies} x {len} bytes, marker {marker}"
            );
            assert_eq!(
                &dst.to_vec().unwrap()[..len as usize],
                &vec![3u8; len as usize][..]
            );
        }
    }
}

/// A client that appends again without looking at what completed is streaming: its
/// submissions of 64 KiB and more go to the worker (which copies while the client prepares the
/// next one), smaller ones still run inline; once it has seen every completion, a submission
/// to the idle channel runs inline again.
#[test]
fn cpu_streaming_client_is_served_by_the_worker() {
    const BIG: u64 = 64 << 10;
    let mut cfg = EngineConfig::new(1);
    cfg.inline_threshold = Some(1 << 20);
    let s = Setup::new(cpu, cfg);
    let (ch, threads) = recording_channel(&s);
    let src = DmaBuffer::from_slice(&vec![5u8; BIG as usize]);
    let dst = DmaBuffer::new(4 * BIG as usize);
    let me = std::thread::current().id();
    let copy = |k: u64, len: u64| {
        let mut c = Chain::new();
        c.copy(
            &src,
            0,
            &dst,
            k * BIG,
            len as u32,
            ControlFlags::INTERRUPT_ON_COMPLETION,
        );
        c
    };
    let first = ch.start(copy(0, BIG)).unwrap();
    // Not polled: the next Appends stream. A small one still runs here (the callbacks say
    // where) ...
    let small = ch.append(copy(1, 4096)).unwrap();
    // ... a large one goes to the worker.
    let big = ch.append(copy(2, BIG)).unwrap();
    assert_eq!(ch.wait(&big, T), Status::SUCCESS);
    assert_eq!(ch.poll(&first), Status::SUCCESS);
    assert_eq!(ch.poll(&small), Status::SUCCESS);
    assert_eq!(ch.wait_idle(T), Status::SUCCESS);
    // Every completion seen: the next copy to the idle channel runs inline.
    let last = ch.append(copy(3, BIG)).unwrap();
    assert_eq!(ch.poll(&last), Status::SUCCESS, "ran inside append");
    let ran = callbacks_seen(&threads, 4);
    assert_eq!(ran.len(), 4);
    assert_eq!(ran[0], me, "the first copy ran inline");
    assert_eq!(ran[1], me, "a small streamed copy ran inline");
    assert_ne!(ran[2], me, "a large streamed copy ran on the worker");
    assert_eq!(
        ran[3], me,
        "inline again once the client saw every completion"
    );
    let got = dst.to_vec().unwrap();
    for (k, len) in [(0u64, BIG), (1, 4096), (2, BIG), (3, BIG)] {
        let at = (k * BIG) as usize;
        assert!(
            got[at..at + len as usize].iter().all(|&b| b == 5),
            "copy {k}"
        );
    }
}

/// The worker takes queued single-copy submissions in batches: a failing one in the middle
/// of a batch leaves the earlier ones complete and copied, fails with its own status, and
/// discards the later ones (nothing of theirs is written); the channel halts.
#[test]
fn cpu_error_inside_a_batch_of_submissions() {
    let s = Setup::new(cpu_worker, EngineConfig::new(1));
    // The worker is held inside the callback of a first NULL descriptor until every
    // submission is queued, so that it finds them all at once.
    let gate = Arc::new(AtomicBool::new(false));
    let ch = gated_channel(&s, &gate);
    let src = DmaBuffer::from_slice(&[9u8; 1024]);
    let dst = DmaBuffer::new(24 * 1024);
    let mut c = Chain::new();
    c.null(ControlFlags::INTERRUPT_ON_COMPLETION);
    let held = ch.start(c).unwrap();
    let mut subs = Vec::new();
    for k in 0..24u64 {
        let mut c = Chain::new();
        // Submission 10 reads past the end of its source.
        let so = if k == 10 { 512 } else { 0 };
        c.copy(&src, so, &dst, k * 1024, 1024, ControlFlags::empty());
        subs.push(ch.append(c).unwrap());
    }
    gate.store(true, Ordering::SeqCst);
    assert_eq!(ch.wait(&held, T), Status::SUCCESS);
    for (k, sub) in subs.iter().enumerate() {
        let got = ch.wait(sub, T);
        match k {
            0..10 => assert_eq!(got, Status::SUCCESS, "submission {k}"),
            10 => assert_eq!(got, Status::ACCESS_VIOLATION, "submission {k}"),
            _ => assert!(
                got != Status::SUCCESS && got != Status::PENDING,
                "submission {k} after the failure: {got:?}"
            ),
        }
    }
    assert_eq!(ch.wait_idle(T), Status::SUCCESS);
    assert_eq!(ch.state(), ChannelState::Halted);
    let got = dst.to_vec().unwrap();
    assert!(got[..10 * 1024].iter().all(|&b| b == 9));
    assert!(
        got[10 * 1024..].iter().all(|&b| b == 0),
        "nothing from 10 on"
    );
}

/// A client pinned to one CPU can still ask for a channel on another (the engine counts the
/// machine's online CPUs, not the caller's affinity mask).
#[test]
fn cpu_pinned_client_allocates_on_another_cpu() {
    let cpus = current_thread_cpus();
    if cpus.len() < 2 {
        return; // one CPU: nothing to check
    }
    let (here, there) = (cpus[0], cpus[1]);
    std::thread::spawn(move || {
        assert!(pin_current_thread(here));
        let s = Setup::new(cpu_worker, EngineConfig::new(2));
        let ch = s.channel_with(ChannelParameters {
            processor_affinity_mask: 1 << there,
            ..ChannelParameters::default()
        });
        assert_eq!(ch.cpu_number(), there as u32);
    })
    .join()
    .unwrap();
}

/// A channel allocated with the CPU mask {c} reports CPU c, and its worker thread's affinity
/// (`sched_getaffinity`, read inside the completion callback, which runs on the worker) is
/// exactly {c}.
#[test]
fn cpu_channel_affinity_honoured() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = cpus.min(4);
    let s = Setup::new(cpu_worker, EngineConfig::new(n as u32));
    let mut chans = Vec::new();
    for c in (0..n).rev() {
        let seen = Arc::new(std::sync::Mutex::new(None));
        let s2 = seen.clone();
        let ch = s.channel_with(ChannelParameters {
            processor_affinity_mask: 1 << c,
            completion_callback: Some(Arc::new(move |_| {
                *s2.lock().unwrap() = Some(current_thread_cpus())
            })),
            ..ChannelParameters::default()
        });
        assert_eq!(ch.cpu_number(), c as u32);
        let mut chain = Chain::new();
        chain.null(ControlFlags::INTERRUPT_ON_COMPLETION);
        let sub = ch.start(chain).unwrap();
        assert_eq!(ch.wait(&sub, T), Status::SUCCESS);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while seen.lock().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(
            seen.lock().unwrap().clone(),
            Some(vec![c]),
            "channel on CPU {c}"
        );
        chans.push(ch);
    }
    drop(chans);
    // The default mask admits every CPU: the worker is left to the scheduler.
    let seen = Arc::new(std::sync::Mutex::new(None));
    let s2 = seen.clone();
    let ch = s.channel_with(ChannelParameters {
        completion_callback: Some(Arc::new(move |_| {
            *s2.lock().unwrap() = Some(current_thread_cpus())
        })),
        ..ChannelParameters::default()
    });
    let mut chain = Chain::new();
    chain.null(ControlFlags::INTERRUPT_ON_COMPLETION);
    let sub = ch.start(chain).unwrap();
    assert_eq!(ch.wait(&sub, T), Status::SUCCESS);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while seen.lock().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(seen.lock().unwrap().clone(), Some(current_thread_cpus()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
    /// Arbitrary descriptor words never panic: submission is accepted or refused with a status,
    /// and an accepted chain ends idle or halted with a status.
    #[test]
    fn arbitrary_descriptors_never_panic(
        words in proptest::collection::vec((any::<u32>(), any::<u32>(), 0u64..80_000, 0u64..80_000, 0u64..6, any::<u64>(), any::<u64>()), 1..6),
        counted in any::<bool>(),
        use_inline in any::<bool>(),
    ) {
        let s = Setup::new(if use_inline { inline } else { cpu }, EngineConfig::new(1));
        let ch = s.channel();
        let a = DmaBuffer::new(65536);
        let b = DmaBuffer::new(4096);
        let mut c = Chain::new();
        c.buffer(&a);
        c.buffer(&b);
        let n = words.len();
        for (size, flags, src, dst, next, ns, nd) in words {
            let slot = |x: u64| Pa::new(BufferSlot((x % 3) as u16), x / 2);
            c.push(Descriptor {
                transfer_size: size % 100_000,
                control_flags: ControlFlags::from_bits_retain(flags & 0x0400_03FF | (flags & 0x1100_0000)),
                source: slot(src),
                destination: slot(dst),
                next: if next == 0 || next as usize > n { Link::NULL } else { Link::to(next as usize - 1) },
                next_source: Pa(ns % 70_000),
                next_destination: Pa(nd % 70_000),
                user_context1: 0,
                user_context2: 0,
            });
        }
        if counted {
            c.set_style(ChainStyle::Counted(n as u32));
        }
        match ch.start(c) {
            Ok(sub) => {
                let st = ch.wait(&sub, T);
                prop_assert!(st == Status::SUCCESS || st == Status::ACCESS_VIOLATION, "{}", st);
                prop_assert!(matches!(ch.state(), ChannelState::Idle | ChannelState::Halted));
            }
            Err(e) => prop_assert!(
                [Status::INVALID_PARAMETER, Status::NOT_SUPPORTED].contains(&e), "{}", e
            ),
        }
    }
}
