//! Allocations on the submission path, counted by a global allocator that tallies this
//! test binary's 64-byte-aligned allocations (the descriptor arrays of chains).
#![allow(missing_docs)]

use netdma::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALIGNED: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator; the counter has no effect
// on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.align() >= 64 {
            ALIGNED.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` was allocated by `System` with `l` (every allocation goes through it).
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// A client that builds and submits chains over and over does not pay an aligned
/// allocation per chain: the descriptor array of a submitted chain serves the thread's next
/// chain.
#[test]
fn chains_reuse_descriptor_arrays() {
    let n = NetDma::new();
    let e = InlineEngine::register(&n, EngineConfig::new(1)).unwrap();
    let ch = n
        .allocate_channel(e.id(), ChannelParameters::default())
        .unwrap();
    let src = DmaBuffer::from_slice(&[7u8; 4096]);
    let dst = DmaBuffer::new(4096);
    let mut first = Chain::new();
    first.null(ControlFlags::empty());
    let s = ch.start(first).unwrap();
    assert_eq!(ch.wait(&s, None), Status::SUCCESS);
    let before = ALIGNED.load(Ordering::Relaxed);
    for k in 1..=100usize {
        let mut c = Chain::with_capacity(k % 8 + 1);
        for _ in 0..k % 8 + 1 {
            c.copy(&src, 0, &dst, 0, 4096, ControlFlags::empty());
        }
        let s = ch.append(c).unwrap();
        assert_eq!(ch.wait(&s, None), Status::SUCCESS);
    }
    let aligned = ALIGNED.load(Ordering::Relaxed) - before;
    // A few arrays grow to the largest chain; not one per chain.
    assert!(aligned <= 8, "{aligned} aligned allocations for 100 chains");
    assert_eq!(dst.to_vec().unwrap(), vec![7u8; 4096]);
}
