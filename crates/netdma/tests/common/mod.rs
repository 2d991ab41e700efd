//! The provider conformance suite: every function takes a provider constructor, so the same
//! expectations run against every provider (see `conformance.rs`).
#![allow(dead_code, unreachable_pub, missing_docs)]

use netdma::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Builds a started provider on `netdma`.
pub type Make = fn(&NetDma, EngineConfig) -> Result<ProviderHandle>;

pub const T: Option<Duration> = Some(Duration::from_secs(30));

/// The deterministic PRNG (xorshift64*) shared by the workspace's tests, so failures reproduce
/// from the printed seed.
pub use netdirect_test_support::rng::Rng;

pub struct Setup {
    pub netdma: NetDma,
    pub handle: ProviderHandle,
}

impl Setup {
    pub fn new(make: Make, cfg: EngineConfig) -> Setup {
        let netdma = NetDma::new();
        let handle = make(&netdma, cfg).expect("provider registers");
        Setup { netdma, handle }
    }
    pub fn channel(&self) -> Channel {
        self.netdma
            .allocate_channel(self.handle.id(), ChannelParameters::default())
            .unwrap()
    }
    pub fn channel_with(&self, p: ChannelParameters) -> Channel {
        self.netdma.allocate_channel(self.handle.id(), p).unwrap()
    }
}

/// A random descriptor length: mostly small, sometimes up to several MiB.
fn rand_len(r: &mut Rng, max: u64) -> u64 {
    match r.below(20) {
        0 => r.below(max + 1),
        1..=5 => r.below(256 * 1024),
        6 => 0,
        _ => r.below(8192),
    }
}

/// Random copies (lengths 0..several MiB, all alignments, chain lengths 1..12, both chain
/// styles), compared byte for byte with a plain copy applied in the same order.
pub fn random_copies(make: Make, cfg: EngineConfig, seed: u64, rounds: usize) {
    let s = Setup::new(make, cfg);
    let ch = s.channel();
    let mut r = Rng::new(seed);
    const SRC: usize = 6 << 20;
    const DST: usize = 6 << 20;
    let src_data = r.bytes(SRC);
    let src = DmaBuffer::from_slice(&src_data);
    let dst = DmaBuffer::new(DST);
    let mut model = vec![0u8; DST];
    let mut started = false;
    let mut subs = Vec::new();
    for round in 0..rounds {
        let n = 1 + r.below(12) as usize;
        let mut chain = Chain::new();
        let mut budget = 5u64 << 20;
        for _ in 0..n {
            let len = rand_len(&mut r, 5 << 20).min(budget);
            budget -= len;
            let so = r.below(SRC as u64 - len + 1);
            let d = r.below(DST as u64 - len + 1);
            let flags = if r.below(4) == 0 {
                ControlFlags::DESTINATION_NO_SNOOP
            } else {
                ControlFlags::empty()
            };
            chain.copy(&src, so, &dst, d, len as u32, flags);
            model[d as usize..(d + len) as usize]
                .copy_from_slice(&src_data[so as usize..(so + len) as usize]);
        }
        if r.below(2) == 0 {
            chain = chain.counted();
        }
        let sub = if !started || r.below(5) == 0 {
            started = true;
            // A replacing Start would discard queued work; wait for it first.
            assert_eq!(ch.wait_idle(T), Status::SUCCESS);
            ch.start(chain)
        } else {
            ch.append(chain)
        }
        .unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
        assert_eq!(sub.count(), n as u64);
        subs.push(sub);
    }
    for sub in &subs {
        assert_eq!(ch.wait(sub, T), Status::SUCCESS, "seed {seed}");
    }
    assert_eq!(ch.state(), ChannelState::Idle);
    let got = dst.to_vec().unwrap();
    if got != model {
        let i = got.iter().zip(&model).position(|(a, b)| a != b).unwrap();
        panic!("seed {seed}: first mismatch at byte {i}");
    }
}

/// Descriptors `k` of a chain of `n` copies of `size` bytes, each to its own destination
/// range, so progress can be read from the destination.
pub fn striped_chain(
    src: &DmaBuffer,
    dst: &DmaBuffer,
    n: usize,
    size: usize,
    flags: ControlFlags,
) -> Chain {
    let mut c = Chain::new();
    for k in 0..n {
        c.copy(
            src,
            (k * size) as u64,
            dst,
            (k * size) as u64,
            size as u32,
            flags,
        );
    }
    c
}

/// How many leading stripes equal the source; asserts every later stripe, except possibly the
/// one right after them (`partial_ok`), is untouched (still `fill`).
pub fn stripes_done(
    src: &[u8],
    dst: &[u8],
    n: usize,
    size: usize,
    fill: u8,
    partial_ok: bool,
) -> usize {
    let done = (0..n)
        .take_while(|&k| src[k * size..(k + 1) * size] == dst[k * size..(k + 1) * size])
        .count();
    for k in done..n {
        let untouched = dst[k * size..(k + 1) * size].iter().all(|&b| b == fill);
        if k == done && partial_ok {
            continue;
        }
        assert!(
            untouched,
            "stripe {k} touched after {done} complete stripes"
        );
    }
    done
}

fn patterned(r: &mut Rng, len: usize) -> (Vec<u8>, DmaBuffer) {
    let v: Vec<u8> = r.bytes(len).into_iter().map(|b| b | 1).collect();
    let b = DmaBuffer::from_slice(&v);
    (v, b)
}

/// Append while running, then completion slot and state at the end.
pub fn append_while_running(make: Make) {
    let s = Setup::new(make, EngineConfig::new(1));
    let ch = s.channel();
    let mut r = Rng::new(7);
    let (n, size) = (16, 128 * 1024);
    let (sv, src) = patterned(&mut r, n * size);
    let dst = DmaBuffer::new(n * size);
    let first = ch
        .start(striped_chain(
            &src,
            &dst,
            n / 2,
            size,
            ControlFlags::empty(),
        ))
        .unwrap();
    let mut last = first;
    for k in n / 2..n {
        let mut c = Chain::new();
        c.copy(
            &src,
            (k * size) as u64,
            &dst,
            (k * size) as u64,
            size as u32,
            ControlFlags::STATUS_UPDATE_ON_COMPLETION,
        );
        let sub = ch.append(c).unwrap();
        assert_eq!(
            sub.first.seq(),
            last.last.seq() + 1,
            "addresses continue in order"
        );
        last = sub;
    }
    assert_eq!(ch.wait(&last, T), Status::SUCCESS);
    assert_eq!(ch.poll(&first), Status::SUCCESS);
    assert_eq!(ch.state(), ChannelState::Idle);
    let cs = ch.completion();
    assert_eq!(cs.status(), TransferStatus::Idle);
    assert_eq!(cs.last_completed(), Some(last.last));
    assert_eq!(dst.to_vec().unwrap(), sv);
    // Append on an idle channel restarts it.
    let mut c = Chain::new();
    c.null(ControlFlags::STATUS_UPDATE_ON_COMPLETION);
    let sub = ch.append(c).unwrap();
    assert_eq!(ch.wait(&sub, T), Status::SUCCESS);
    assert_eq!(ch.completion().last_completed(), Some(sub.last));
    ch.free().unwrap();
}

/// Suspend mid-chain: everything up to the returned descriptor is done, the rest untouched;
/// append while suspended; resume finishes everything.
pub fn suspend_resume(make: Make) {
    let s = Setup::new(make, EngineConfig::new(1));
    let ch = s.channel();
    let mut r = Rng::new(11);
    let (n, size) = (48, 64 * 1024);
    let (sv, src) = patterned(&mut r, n * size);
    let dst = DmaBuffer::new(n * size);
    let sub = ch
        .start(striped_chain(
            &src,
            &dst,
            n - 1,
            size,
            ControlFlags::empty(),
        ))
        .unwrap();
    let last = ch.suspend().unwrap();
    let state = ch.state();
    assert!(
        matches!(state, ChannelState::Suspended | ChannelState::Idle),
        "{state:?}"
    );
    let mut tail = Chain::new();
    tail.copy(
        &src,
        ((n - 1) * size) as u64,
        &dst,
        ((n - 1) * size) as u64,
        size as u32,
        ControlFlags::empty(),
    );
    let sub2 = ch.append(tail).unwrap();
    if state == ChannelState::Suspended {
        assert_eq!(ch.completion().status(), TransferStatus::Suspend);
        assert_eq!(ch.completion().last_completed(), last);
        // The buffers are leased until the submission retires.
        assert_eq!(dst.read().err(), Some(Status::SHARING_VIOLATION));
        assert_eq!(
            ch.start(Chain::new()).err(),
            Some(Status::INVALID_PARAMETER)
        );
        let mut c = Chain::new();
        c.null(ControlFlags::empty());
        assert_eq!(ch.start(c).err(), Some(Status::INVALID_DEVICE_STATE));
        assert_eq!(ch.suspend().err(), Some(Status::INVALID_DEVICE_STATE));
        assert_eq!(ch.poll(&sub2), Status::PENDING);
        ch.resume().unwrap();
        if let Some(l) = last {
            let done = l.seq() + 1 - sub.first.seq();
            assert!(done < n as u64);
        }
    } else {
        assert_eq!(ch.resume().err(), Some(Status::INVALID_DEVICE_STATE));
    }
    assert_eq!(ch.wait(&sub2, T), Status::SUCCESS);
    assert_eq!(ch.poll(&sub), Status::SUCCESS);
    assert_eq!(dst.to_vec().unwrap(), sv);
}

/// Abort mid-chain: completed prefix intact, nothing after the interrupted descriptor touched,
/// the rest cancelled; append after abort is refused; a new Start works.
pub fn abort_mid_chain(make: Make) {
    let s = Setup::new(make, EngineConfig::new(1));
    let ch = s.channel();
    let mut r = Rng::new(13);
    let (n, size) = (64, 64 * 1024);
    let (sv, src) = patterned(&mut r, n * size);
    let dst = DmaBuffer::new(n * size);
    let sub = ch
        .start(striped_chain(&src, &dst, n, size, ControlFlags::empty()))
        .unwrap();
    ch.abort().unwrap();
    assert_eq!(ch.state(), ChannelState::Halted);
    assert_eq!(ch.completion().status(), TransferStatus::Halted);
    let st = ch.poll(&sub);
    assert!(st == Status::CANCELLED || st == Status::SUCCESS, "{st}");
    assert_eq!(ch.last_error(), Some(Status::CANCELLED));
    let got = dst.to_vec().unwrap();
    let done = stripes_done(&sv, &got, n, size, 0, true);
    if let Some(a) = ch.completion().last_completed() {
        assert!(a.seq() + 1 - sub.first.seq() <= done as u64);
    }
    let mut c = Chain::new();
    c.null(ControlFlags::empty());
    assert_eq!(
        ch.append(c.clone()).err(),
        Some(Status::INVALID_DEVICE_STATE)
    );
    assert_eq!(ch.abort().err(), Some(Status::INVALID_DEVICE_STATE));
    let sub = ch
        .start(striped_chain(&src, &dst, n, size, ControlFlags::empty()))
        .unwrap();
    assert_eq!(ch.wait(&sub, T), Status::SUCCESS);
    assert_eq!(ch.last_error(), None);
    assert_eq!(dst.to_vec().unwrap(), sv);
}

/// Waits (up to `T`) until at least `n` callbacks arrived: a callback runs after the
/// write-back it reports, so it may trail `wait` a little.
fn wait_for_events<E>(events: &Mutex<Vec<E>>, n: usize) {
    let deadline = std::time::Instant::now() + T.unwrap();
    while events.lock().unwrap().len() < n && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
}

/// A bad address halts the channel with a readable status; reset recovers it.
pub fn reset_after_error(make: Make) {
    let s = Setup::new(make, EngineConfig::new(1));
    let events = Arc::new(Mutex::new(Vec::new()));
    let e2 = events.clone();
    let ch = s.channel_with(ChannelParameters {
        completion_callback: Some(Arc::new(move |ev| e2.lock().unwrap().push(ev))),
        ..ChannelParameters::default()
    });
    let src = DmaBuffer::from_slice(&[7u8; 4096]);
    let dst = DmaBuffer::new(4096);
    let mut c = Chain::new();
    c.copy(
        &src,
        0,
        &dst,
        0,
        100,
        ControlFlags::STATUS_UPDATE_ON_COMPLETION,
    );
    c.copy(&src, 4000, &dst, 200, 200, ControlFlags::empty()); // source out of bounds
    c.copy(&src, 0, &dst, 1000, 100, ControlFlags::empty());
    let sub = ch.start(c).unwrap();
    assert_eq!(ch.wait(&sub, T), Status::ACCESS_VIOLATION);
    assert_eq!(ch.wait_idle(T), Status::SUCCESS);
    assert_eq!(ch.state(), ChannelState::Halted);
    assert_eq!(ch.last_error(), Some(Status::ACCESS_VIOLATION));
    let cs = ch.completion();
    assert_eq!(cs.status(), TransferStatus::Halted);
    assert_eq!(cs.last_completed(), Some(sub.first));
    let got = dst.to_vec().unwrap();
    assert!(got[..100].iter().all(|&b| b == 7));
    assert!(
        got[100..].iter().all(|&b| b == 0),
        "nothing after the failing descriptor"
    );
    wait_for_events(&events, 1);
    {
        let ev = events.lock().unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].descriptor, None);
        assert_eq!(ev[0].status, Status::ACCESS_VIOLATION);
    }
    // A bad slot is an error too.
    let mut c = Chain::new();
    c.push(Descriptor::copy(
        Pa::new(BufferSlot(9), 0),
        Pa::new(BufferSlot(9), 8),
        8,
        ControlFlags::empty(),
    ));
    ch.reset().unwrap();
    assert_eq!(ch.state(), ChannelState::Allocated);
    assert_eq!(ch.last_error(), None);
    assert_eq!(ch.reset().err(), Some(Status::INVALID_DEVICE_STATE));
    let sub = ch.start(c).unwrap();
    assert_eq!(ch.wait(&sub, T), Status::ACCESS_VIOLATION);
    ch.reset().unwrap();
    let mut c = Chain::new();
    c.copy(&src, 0, &dst, 0, 4096, ControlFlags::empty());
    let sub = ch.start(c).unwrap();
    assert_eq!(ch.wait(&sub, T), Status::SUCCESS);
    assert_eq!(dst.to_vec().unwrap(), vec![7u8; 4096]);
}

/// Completion slot only for flagged descriptors, callbacks for INTERRUPT ones with their user
/// context, NULL transfers complete like real ones.
pub fn completion_and_callbacks(make: Make) {
    let s = Setup::new(make, EngineConfig::new(1));
    let events = Arc::new(Mutex::new(Vec::new()));
    let e2 = events.clone();
    let ch = s.channel_with(ChannelParameters {
        completion_callback: Some(Arc::new(move |ev| e2.lock().unwrap().push(ev))),
        ..ChannelParameters::default()
    });
    let src = DmaBuffer::from_slice(&[1u8; 1000]);
    let dst = DmaBuffer::new(1000);
    let mut c = Chain::new();
    let i0 = c.copy(&src, 0, &dst, 0, 10, ControlFlags::INTERRUPT_ON_COMPLETION);
    c.descriptors_mut()[i0].user_context1 = 0xAA;
    c.copy(
        &src,
        0,
        &dst,
        10,
        10,
        ControlFlags::STATUS_UPDATE_ON_COMPLETION,
    );
    c.copy(&src, 0, &dst, 20, 10, ControlFlags::empty());
    let i3 =
        c.null(ControlFlags::INTERRUPT_ON_COMPLETION | ControlFlags::STATUS_UPDATE_ON_COMPLETION);
    c.descriptors_mut()[i3].user_context2 = 0xBB;
    let sub = ch.start(c).unwrap();
    assert_eq!(ch.wait(&sub, T), Status::SUCCESS);
    let cs = ch.completion();
    assert_eq!(cs.last_completed(), Some(sub.last));
    assert_eq!(cs.status(), TransferStatus::Idle);
    // The callback of the last descriptor runs after its completion is published (the DPC
    // follows the write-back, as with hardware), so it may trail `wait` a little.
    wait_for_events(&events, 2);
    let ev = events.lock().unwrap().clone();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].descriptor, Some(sub.address_of(0)));
    assert_eq!(ev[0].user_context, [0xAA, 0]);
    assert_eq!(ev[1].descriptor, Some(sub.address_of(3)));
    assert_eq!(ev[1].user_context, [0, 0xBB]);
    // No flags: the slot keeps its old value.
    let mut c = Chain::new();
    c.copy(&src, 0, &dst, 30, 10, ControlFlags::empty());
    let sub2 = ch.append(c).unwrap();
    assert_eq!(ch.wait(&sub2, T), Status::SUCCESS);
    assert_eq!(ch.completion(), cs);
    assert_eq!(&dst.to_vec().unwrap()[..40], &[1u8; 40]);
}

/// Hand-made links in both styles, page breaks.
pub fn links_and_page_breaks(make: Make) {
    let s = Setup::new(make, EngineConfig::new(1));
    let ch = s.channel();
    let src = DmaBuffer::from_slice(&(0..16384u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    let sv = src.to_vec().unwrap();
    let dst = DmaBuffer::new(16384);
    // Array order 0,1,2 but link order 2 -> 0 -> 1... start is always index 0: 0 -> 2 -> 1.
    let mut c = Chain::new();
    let a = c.addr(&src, 0);
    let d = c.addr(&dst, 0);
    c.push(Descriptor {
        next: Link::to(2),
        ..Descriptor::copy(a, d, 4, ControlFlags::empty())
    });
    c.push(Descriptor::copy(
        a.add(8),
        d.add(8),
        4,
        ControlFlags::empty(),
    )); // next NULL
    c.push(Descriptor {
        next: Link::to(1),
        ..Descriptor::copy(a.add(4), d.add(4), 4, ControlFlags::empty())
    });
    c.push(Descriptor::copy(
        a.add(12),
        d.add(12),
        4,
        ControlFlags::empty(),
    )); // unreachable
    let sub = ch.start(c.clone()).unwrap();
    assert_eq!(sub.count(), 3);
    assert_eq!(ch.wait(&sub, T), Status::SUCCESS);
    let got = dst.to_vec().unwrap();
    assert_eq!(&got[..12], &sv[..12]);
    assert_eq!(&got[12..16], &[0, 0, 0, 0]);
    // Counted: 2 descriptors, the second's NULL link is not consulted; 4 would follow NULL.
    let mut c2 = c.clone();
    c2.set_style(ChainStyle::Counted(2));
    let sub = ch.append(c2).unwrap();
    assert_eq!(sub.count(), 2);
    assert_eq!(ch.wait(&sub, T), Status::SUCCESS);
    c.set_style(ChainStyle::Counted(4));
    assert_eq!(ch.append(c).err(), Some(Status::INVALID_PARAMETER));
    // Page breaks: source 4000..4096 then 8192..; destination 100..4096 then 12288..
    let mut c = Chain::new();
    let mut dsc = Descriptor::copy(
        c.addr(&src, 4000),
        c.addr(&dst, 4096 - 50),
        200,
        ControlFlags::SOURCE_PAGE_BREAK | ControlFlags::DESTINATION_PAGE_BREAK,
    );
    dsc.next_source = c.addr(&src, 8192);
    dsc.next_destination = c.addr(&dst, 12288);
    c.link(dsc);
    let sub = ch.append(c).unwrap();
    assert_eq!(ch.wait(&sub, T), Status::SUCCESS);
    let data: Vec<u8> = sv[4000..4096]
        .iter()
        .chain(&sv[8192..8192 + 104])
        .copied()
        .collect();
    let got = dst.to_vec().unwrap();
    assert_eq!(&got[4046..4096], &data[..50]);
    assert_eq!(&got[12288..12288 + 150], &data[50..]);
    assert_eq!(got[12288 + 150], 0);
}

/// Fill, compare, CRC32c, copy+CRC32c and batch admission.
pub fn extensions(make: Make) {
    let s = Setup::new(make, EngineConfig::new(1));
    let ch = s.channel();
    let mut r = Rng::new(5);
    let data = r.bytes(100_000);
    let src = DmaBuffer::from_slice(&data);
    let dst = DmaBuffer::new(100_000);
    let res = DmaBuffer::new(64);
    let mut c = Chain::new();
    c.fill(&dst, 3, 1001, 0x1122_3344_5566_7788, ControlFlags::empty());
    c.compare(&src, 0, &src, 0, 100_000, &res, 0, ControlFlags::empty());
    c.crc32c(&src, 0, 50_000, 0, &res, 8, ControlFlags::empty());
    c.crc32c(&src, 50_000, 50_000, 0, &res, 12, ControlFlags::empty()); // seed patched below
    c.copy_crc32c(
        &src,
        0,
        &dst,
        2000,
        90_000,
        0,
        &res,
        16,
        ControlFlags::empty(),
    );
    c.compare(&src, 0, &dst, 2000, 90_000, &res, 24, ControlFlags::empty());
    c.compare(&src, 0, &dst, 2001, 90_000, &res, 32, ControlFlags::empty());
    let seed = crc32c::crc32c(&data[..50_000]);
    c.descriptors_mut()[3].next_source = Pa(u64::from(seed));
    let sub = ch.start(c).unwrap();
    assert_eq!(ch.wait(&sub, T), Status::SUCCESS);
    let out = dst.to_vec().unwrap();
    let pat = 0x1122_3344_5566_7788u64.to_le_bytes();
    for k in 0..1001 {
        assert_eq!(out[3 + k], pat[k % 8]);
    }
    assert_eq!(out[2], 0);
    assert_eq!(out[1004], 0);
    assert_eq!(&out[2000..92_000], &data[..90_000]);
    let rv = res.to_vec().unwrap();
    let u64at = |o: usize| u64::from_le_bytes(rv[o..o + 8].try_into().unwrap());
    let u32at = |o: usize| u32::from_le_bytes(rv[o..o + 4].try_into().unwrap());
    assert_eq!(u64at(0), u64::MAX);
    assert_eq!(u32at(8), seed);
    assert_eq!(u32at(12), crc32c::crc32c(&data));
    assert_eq!(u32at(16), crc32c::crc32c(&data[..90_000]));
    assert_eq!(u64at(24), u64::MAX);
    let first_diff = (0..90_000)
        .find(|&i| data[i] != out[2001 + i])
        .map_or(u64::MAX, |i| i as u64);
    assert_eq!(u64at(32), first_diff);
    // Batch: all or nothing.
    let mut a = Chain::new();
    a.copy(&src, 0, &dst, 0, 10, ControlFlags::empty());
    let mut bad = Chain::new();
    bad.push(Descriptor {
        control_flags: ControlFlags::from_bits_retain(0x100),
        ..Descriptor::default()
    });
    assert_eq!(
        ch.append_batch(vec![a.clone(), bad]).err(),
        Some(Status::INVALID_PARAMETER)
    );
    let mut b = Chain::new();
    b.copy(&src, 10, &dst, 10, 10, ControlFlags::empty());
    let subs = ch.append_batch(vec![a, b]).unwrap();
    assert_eq!(subs.len(), 2);
    assert_eq!(ch.wait(&subs[1], T), Status::SUCCESS);
    assert_eq!(&dst.to_vec().unwrap()[..20], &data[..20]);
}

/// A Start on a running channel finishes the current descriptor and discards the rest.
pub fn start_replaces_running_chain(make: Make) {
    let s = Setup::new(make, EngineConfig::new(1));
    let ch = s.channel();
    let mut r = Rng::new(17);
    let (n, size) = (64, 64 * 1024);
    let (sv, src) = patterned(&mut r, n * size);
    let dst = DmaBuffer::new(n * size);
    let dst2 = DmaBuffer::new(16);
    let sub1 = ch
        .start(striped_chain(&src, &dst, n, size, ControlFlags::empty()))
        .unwrap();
    let mut c = Chain::new();
    c.copy(
        &src,
        0,
        &dst2,
        0,
        16,
        ControlFlags::STATUS_UPDATE_ON_COMPLETION,
    );
    let sub2 = ch.start(c).unwrap();
    assert_eq!(ch.wait(&sub2, T), Status::SUCCESS);
    let st = ch.poll(&sub1);
    assert!(st == Status::CANCELLED || st == Status::SUCCESS, "{st}");
    let done = stripes_done(&sv, &dst.to_vec().unwrap(), n, size, 0, false);
    if st == Status::CANCELLED {
        assert!(done < n);
    }
    assert_eq!(dst2.to_vec().unwrap(), &sv[..16]);
}

/// Allocation: exclusive channels, resources, affinity, free returns the channel.
pub fn allocation(make: Make) {
    let s = Setup::new(make, EngineConfig::new(3));
    let chans: Vec<Channel> = (0..3).map(|_| s.channel()).collect();
    let mut idx: Vec<u32> = chans.iter().map(Channel::index).collect();
    idx.sort();
    assert_eq!(idx, vec![0, 1, 2]);
    assert_eq!(
        s.netdma
            .allocate_channel(s.handle.id(), ChannelParameters::default())
            .err(),
        Some(Status::INSUFFICIENT_RESOURCES)
    );
    drop(chans);
    let p = ChannelParameters {
        processor_affinity_mask: 1,
        ..ChannelParameters::default()
    };
    let ch = s.channel_with(p);
    assert_eq!(ch.cpu_number(), 0);
    let bad = |p: ChannelParameters| s.netdma.allocate_channel(s.handle.id(), p).err();
    assert_eq!(
        bad(ChannelParameters {
            flags: 1,
            ..Default::default()
        }),
        Some(Status::INVALID_PARAMETER)
    );
    assert_eq!(
        bad(ChannelParameters {
            revision: 3,
            ..Default::default()
        }),
        Some(Status::INVALID_PARAMETER)
    );
    assert_eq!(
        bad(ChannelParameters {
            processor_affinity_mask: 0,
            ..Default::default()
        }),
        Some(Status::INVALID_PARAMETER)
    );
    assert_eq!(
        s.netdma
            .allocate_channel(ProviderId(999), ChannelParameters::default())
            .err(),
        Some(Status::NOT_FOUND)
    );
}

/// PnP: notifications, power down/up, stop frees channels.
pub fn pnp_and_power(make: Make) {
    let netdma = NetDma::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l2 = log.clone();
    let _reg = netdma.register_client(Arc::new(move |n: &PnpNotification| {
        l2.lock().unwrap().push((n.code, n.channel))
    }));
    let h = make(&netdma, EngineConfig::new(2)).unwrap();
    use PnpNotificationCode::*;
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            (ProviderRegistered, None),
            (ProviderArrival, None),
            (ChannelArrival, Some(0)),
            (ChannelArrival, Some(1))
        ]
    );
    let ch = netdma
        .allocate_channel(h.id(), ChannelParameters::default())
        .unwrap();
    let mut c = Chain::new();
    c.null(ControlFlags::empty());
    ch.start(c.clone()).unwrap();
    // A late client sees the same picture.
    let late = Arc::new(AtomicUsize::new(0));
    let l3 = late.clone();
    let reg2 = netdma.register_client(Arc::new(move |_: &PnpNotification| {
        l3.fetch_add(1, Ordering::SeqCst);
    }));
    assert_eq!(late.load(Ordering::SeqCst), 3); // registered, arrival, one free channel
    drop(reg2);
    h.pnp_event_notify(ProviderPowerDown).unwrap();
    assert_eq!(
        h.pnp_event_notify(ProviderPowerDown).err(),
        Some(Status::INVALID_DEVICE_STATE)
    );
    assert_eq!(ch.append(c.clone()).err(), Some(Status::DEVICE_NOT_READY));
    assert_eq!(
        netdma
            .allocate_channel(h.id(), ChannelParameters::default())
            .err(),
        Some(Status::DEVICE_NOT_READY)
    );
    h.pnp_event_notify(ProviderPowerUp).unwrap();
    assert_eq!(
        h.pnp_event_notify(ChannelArrival).err(),
        Some(Status::INVALID_PARAMETER)
    );
    // Re-initialised with a Start of a NULL descriptor: once the engine ran it (a CPU worker
    // does so asynchronously), the slot reads Idle and append works.
    assert_eq!(ch.wait_idle(T), Status::SUCCESS);
    assert_eq!(ch.completion().status(), TransferStatus::Idle);
    let sub = ch.append(c.clone()).unwrap();
    assert_eq!(ch.wait(&sub, T), Status::SUCCESS);
    assert!(netdma.providers()[0].powered);
    h.stop().unwrap();
    assert_eq!(ch.state(), ChannelState::Free);
    assert_eq!(ch.append(c.clone()).err(), Some(Status::DEVICE_REMOVED));
    assert_eq!(h.stop().err(), Some(Status::INVALID_DEVICE_STATE));
    assert_eq!(
        netdma
            .allocate_channel(h.id(), ChannelParameters::default())
            .err(),
        Some(Status::INVALID_DEVICE_STATE)
    );
    // Restart with new attributes.
    h.start(ProviderAttributes {
        dma_channel_count: 1,
        maximum_transfer_size: 4096,
        ..Default::default()
    })
    .unwrap();
    let ch2 = netdma
        .allocate_channel(h.id(), ChannelParameters::default())
        .unwrap();
    let mut big = Chain::new();
    let b = DmaBuffer::new(8192);
    big.copy(&b, 0, &b, 4096, 4097, ControlFlags::empty());
    assert_eq!(
        ch2.start(big).err(),
        Some(Status::INVALID_PARAMETER),
        "MaximumTransferSize applies"
    );
    let codes: Vec<_> = log.lock().unwrap().iter().map(|x| x.0).collect();
    assert!(
        codes.contains(&ProviderPowerDown)
            && codes.contains(&ProviderPowerUp)
            && codes.contains(&ProviderRemoval)
    );
    drop(ch2);
    h.deregister();
    assert!(netdma.providers().is_empty());
}

/// Invalid use gets the documented status, never a panic.
pub fn invalid_use(make: Make) {
    let s = Setup::new(make, EngineConfig::new(1));
    let ch = s.channel();
    let buf = DmaBuffer::new(4096);
    let mut null = Chain::new();
    null.null(ControlFlags::empty());
    // Before the first Start.
    assert_eq!(
        ch.append(null.clone()).err(),
        Some(Status::INVALID_DEVICE_STATE)
    );
    assert_eq!(ch.abort().err(), Some(Status::INVALID_DEVICE_STATE));
    assert_eq!(ch.reset().err(), Some(Status::INVALID_DEVICE_STATE));
    assert_eq!(ch.resume().err(), Some(Status::INVALID_DEVICE_STATE));
    assert_eq!(ch.suspend().err(), Some(Status::INVALID_DEVICE_STATE));
    // Malformed chains.
    assert_eq!(
        ch.start(Chain::new()).err(),
        Some(Status::INVALID_PARAMETER)
    );
    for bit in 0..32 {
        let f = 1u32 << bit;
        if f & ControlFlags::RESERVED_MASK == 0 {
            continue;
        }
        let mut c = Chain::new();
        c.push(Descriptor::null(ControlFlags::from_bits_retain(f)));
        assert_eq!(
            ch.start(c).err(),
            Some(Status::INVALID_PARAMETER),
            "reserved bit {bit}"
        );
    }
    let one = |d: Descriptor| {
        let mut c = Chain::new();
        c.buffer(&buf);
        c.push(d);
        c
    };
    let op = |o: u8| {
        Descriptor::copy(
            Pa::NULL,
            Pa::NULL,
            1,
            ControlFlags::empty().with_op_type(OpType(o)),
        )
    };
    assert_eq!(
        ch.start(one(op(0x42))).err(),
        Some(Status::INVALID_PARAMETER)
    );
    assert_eq!(
        ch.start(one(op(0xFF))).err(),
        Some(Status::NOT_SUPPORTED),
        "no DCA"
    );
    let mut cyc = one(Descriptor {
        next: Link::to(0),
        ..Descriptor::null(ControlFlags::empty())
    });
    assert_eq!(ch.start(cyc.clone()).err(), Some(Status::INVALID_PARAMETER));
    cyc.descriptors_mut()[0].next = Link::to(5);
    assert_eq!(ch.start(cyc.clone()).err(), Some(Status::INVALID_PARAMETER));
    cyc.set_style(ChainStyle::Counted(0));
    assert_eq!(ch.start(cyc.clone()).err(), Some(Status::INVALID_PARAMETER));
    cyc.set_style(ChainStyle::Counted(1));
    assert!(
        ch.start(cyc.clone()).is_ok(),
        "the tail link of a counted chain is not followed"
    );
    let mut pb = Descriptor::copy(Pa::NULL, Pa::NULL, 10, ControlFlags::SOURCE_PAGE_BREAK);
    pb.next_source = Pa(100);
    assert_eq!(
        ch.start(one(pb)).err(),
        Some(Status::INVALID_PARAMETER),
        "unaligned page break"
    );
    // Abort, then append is refused; start again is fine.
    assert_eq!(ch.wait_idle(T), Status::SUCCESS);
    ch.abort().unwrap();
    assert_eq!(
        ch.append(null.clone()).err(),
        Some(Status::INVALID_DEVICE_STATE)
    );
    assert_eq!(ch.resume().err(), Some(Status::INVALID_DEVICE_STATE));
    assert_eq!(ch.suspend().err(), Some(Status::INVALID_DEVICE_STATE));
    // Sharing: a client read guard blocks a submission that writes the buffer.
    let g = buf.read().unwrap();
    let mut w = Chain::new();
    w.copy(&buf, 0, &buf, 100, 10, ControlFlags::empty());
    assert_eq!(ch.start(w.clone()).err(), Some(Status::SHARING_VIOLATION));
    drop(g);
    let sub = ch.start(w).unwrap();
    assert_eq!(ch.wait(&sub, T), Status::SUCCESS);
    assert!(buf.write().is_ok());

    // Provider-level rules.
    let nd = NetDma::new();
    assert_eq!(nd.get_version(), 0x0002_0000);
    let cfg = |f: fn(&mut EngineConfig)| {
        let mut c = EngineConfig::new(1);
        f(&mut c);
        c
    };
    assert_eq!(
        make(&nd, cfg(|c| c.channels = 0)).err(),
        Some(Status::INVALID_PARAMETER),
        "zero channels"
    );
    assert_eq!(
        make(&nd, cfg(|c| c.version = (2, 1))).err(),
        Some(Status::REVISION_MISMATCH)
    );
    assert_eq!(
        make(&nd, cfg(|c| c.version = (3, 0))).err(),
        Some(Status::REVISION_MISMATCH)
    );
    assert_eq!(
        make(&nd, cfg(|c| c.maximum_transfer_size = 4095)).err(),
        Some(Status::INVALID_PARAMETER)
    );
    // A 1.1 provider: no 2.0 chains or page breaks.
    let h = make(&nd, cfg(|c| c.version = (1, 1))).unwrap();
    let ch = nd
        .allocate_channel(h.id(), ChannelParameters::default())
        .unwrap();
    assert_eq!(
        ch.start(null.clone().counted()).err(),
        Some(Status::NOT_SUPPORTED)
    );
    let mut pb = Descriptor::copy(Pa::NULL, Pa::NULL, 10, ControlFlags::DESTINATION_PAGE_BREAK);
    pb.next_destination = Pa(4096);
    assert_eq!(ch.start(one(pb)).err(), Some(Status::NOT_SUPPORTED));
    assert!(ch.start(null.clone()).is_ok());
    drop(ch);
    h.stop().unwrap();
    assert_eq!(
        h.start(ProviderAttributes {
            dma_channel_count: 0,
            maximum_transfer_size: 4096,
            ..Default::default()
        })
        .err(),
        Some(Status::INVALID_PARAMETER)
    );
    assert_eq!(
        h.start(ProviderAttributes {
            dma_channel_count: 2,
            maximum_transfer_size: 4096,
            ..Default::default()
        })
        .err(),
        Some(Status::INVALID_PARAMETER)
    );
    let h10 = make(&nd, cfg(|c| c.version = (1, 0))).unwrap();
    assert_eq!(
        h10.pnp_event_notify(PnpNotificationCode::ProviderPowerDown)
            .err(),
        Some(Status::NOT_SUPPORTED)
    );
    assert_eq!(
        h10.start(ProviderAttributes {
            dma_channel_count: 1,
            maximum_transfer_size: 4096,
            ..Default::default()
        })
        .err(),
        Some(Status::INVALID_DEVICE_STATE)
    );
    // No extensions, no optional handlers.
    let h = make(
        &nd,
        cfg(|c| {
            c.extensions = Extensions::empty();
            c.handlers = OptionalHandlers::empty();
        }),
    )
    .unwrap();
    let ch = nd
        .allocate_channel(h.id(), ChannelParameters::default())
        .unwrap();
    let mut f = Chain::new();
    f.fill(&buf, 0, 8, 0, ControlFlags::empty());
    assert_eq!(ch.start(f).err(), Some(Status::NOT_SUPPORTED));
    assert_eq!(
        ch.append_batch(vec![null.clone()]).err(),
        Some(Status::NOT_SUPPORTED)
    );
    assert_eq!(ch.suspend().err(), Some(Status::NOT_SUPPORTED));
    assert_eq!(ch.resume().err(), Some(Status::NOT_SUPPORTED));
    assert_eq!(ch.abort().err(), Some(Status::NOT_SUPPORTED));
    assert_eq!(ch.reset().err(), Some(Status::NOT_SUPPORTED));
    // Free with outstanding work is reported but still frees.
    assert!(ch.start(null).is_ok());
    assert_eq!(ch.wait_idle(T), Status::SUCCESS);
    assert!(ch.free().is_ok());
}

/// Chains of 16, 64 and 256 descriptors appended back to back (two at once): every
/// descriptor's callback arrives once, in submission order, with its own address and user
/// context; the slot ends at the last descriptor with `Idle`; the data is right.
pub fn chain_completion_order(make: Make) {
    let s = Setup::new(make, EngineConfig::new(1));
    let events = Arc::new(Mutex::new(Vec::new()));
    let e2 = events.clone();
    let ch = s.channel_with(ChannelParameters {
        completion_callback: Some(Arc::new(move |ev| e2.lock().unwrap().push(ev))),
        ..ChannelParameters::default()
    });
    let mut r = Rng::new(11);
    let size = 4096usize;
    let total = 16 + 64 + 256;
    let sv = r.bytes(total * size);
    let src = DmaBuffer::from_slice(&sv);
    let dst = DmaBuffer::new(total * size);
    let mut first = Chain::new();
    first.null(ControlFlags::empty());
    let s0 = ch.start(first).unwrap();
    assert_eq!(ch.wait(&s0, T), Status::SUCCESS);
    let mut subs = Vec::new();
    let mut at = 0usize;
    let mut user = 0u64;
    for k in [16usize, 64, 256] {
        let mut c = Chain::with_capacity(k);
        for _ in 0..k {
            let o = (at * size) as u64;
            let i = c.copy(
                &src,
                o,
                &dst,
                o,
                size as u32,
                ControlFlags::INTERRUPT_ON_COMPLETION | ControlFlags::STATUS_UPDATE_ON_COMPLETION,
            );
            c.descriptors_mut()[i].user_context1 = user;
            user += 1;
            at += 1;
        }
        subs.push((ch.append(c).unwrap(), k));
    }
    for (sub, k) in &subs {
        assert_eq!(sub.count(), *k as u64);
        assert_eq!(ch.wait(sub, T), Status::SUCCESS);
    }
    let last = subs[2].0.last;
    wait_for_events(&events, total);
    let ev = events.lock().unwrap().clone();
    assert_eq!(ev.len(), total);
    let mut n = 0u64;
    for (sub, k) in &subs {
        for j in 0..*k as u64 {
            let e = ev[n as usize];
            assert_eq!(e.descriptor, Some(sub.address_of(j)), "event {n}");
            assert_eq!(e.user_context, [n, 0]);
            assert_eq!(e.status, Status::SUCCESS);
            n += 1;
        }
    }
    assert_eq!(ch.wait_idle(T), Status::SUCCESS);
    let cs = ch.completion();
    assert_eq!(cs.last_completed(), Some(last));
    assert_eq!(cs.status(), TransferStatus::Idle);
    assert_eq!(dst.to_vec().unwrap(), sv);
}
