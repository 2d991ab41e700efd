//! Where consumer callbacks run: never under a connection lock.
//!
//! With inline progress ([`crate::transport::EngineConfig::inline_progress`]) a connection is
//! driven by whichever thread holds its lock: the progress thread, or a consumer thread that
//! posts or polls a CQ. Driving a connection produces completions, CQ and SRQ notifications,
//! connect and disconnect events. Their callbacks must not run while the connection lock is
//! held (a callback that posts, polls or disconnects from inside would then meet the lock its own
//! thread holds, and one that drops the adapter would wait for the progress thread, which may
//! wait for that lock). So a thread that holds a connection lock is inside a **deferral
//! section** (`Section`): every callback that becomes due there is queued on the thread
//! (`run_or_defer`) and run, in order, by the same thread once its outermost section ends,
//! with no connection lock held. Outside a section, `run_or_defer` runs the callback at once.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

type Deferred = Box<dyn FnOnce()>;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    static QUEUE: RefCell<VecDeque<Deferred>> = const { RefCell::new(VecDeque::new()) };
}

/// Runs `f` now, or at the end of this thread's outermost deferral section if one is open.
pub(crate) fn run_or_defer(f: impl FnOnce() + 'static) {
    if DEPTH.with(Cell::get) == 0 {
        f();
    } else {
        QUEUE.with(|q| q.borrow_mut().push_back(Box::new(f)));
    }
}

/// Whether this thread is inside a deferral section.
pub(crate) fn deferring() -> bool {
    DEPTH.with(Cell::get) > 0
}

/// An open deferral section; dropping the outermost one runs what was deferred (after the
/// owner released its lock: declare the section before the guard, so it drops after it).
pub(crate) struct Section(());

impl Section {
    pub(crate) fn open() -> Section {
        DEPTH.with(|d| d.set(d.get() + 1));
        Section(())
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        let depth = DEPTH.with(|d| {
            let v = d.get().saturating_sub(1);
            d.set(v);
            v
        });
        if depth > 0 {
            return;
        }
        // A deferred callback may open sections of its own; what they defer is run by them or
        // by this loop.
        while let Some(f) = QUEUE.with(|q| q.borrow_mut().pop_front()) {
            f();
        }
    }
}
