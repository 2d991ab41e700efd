//! The shared receive queue's rules: limits, FIFO, the notify threshold (once, re-arm, keep,
//! immediate), fatal errors, re-entrancy, serialization and close.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak, mpsc};
use std::thread;
use std::time::Duration;

use netdirect_soft::cq::Notification;
use netdirect_soft::srq::{Srq, SrqLimits};
use netdirect_types::Status;

const LIMITS: SrqLimits = SrqLimits {
    max_depth: 64,
    max_sge: 4,
};

type Log = Arc<Mutex<Vec<Status>>>;

fn recorded(depth: u32, threshold: u32) -> (Arc<Srq<u64>>, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let srq = Srq::new(
        depth,
        4,
        threshold,
        LIMITS,
        Some(Arc::new(move |s| l.lock().unwrap().push(s))),
    )
    .unwrap();
    (srq, log)
}

fn taken(log: &Log) -> Vec<Status> {
    std::mem::take(&mut *log.lock().unwrap())
}

fn post_n(srq: &Srq<u64>, range: std::ops::Range<u64>) {
    for i in range {
        srq.post(1, i).unwrap();
    }
}

const SUCCESS: Status = Status::SUCCESS;

#[test]
fn creation_limits() {
    let new = |depth, sge, limits| Srq::<u64>::new(depth, sge, 0, limits, None).map(|_| ());
    assert_eq!(new(0, 1, LIMITS), Err(Status::INVALID_PARAMETER));
    assert_eq!(new(65, 1, LIMITS), Err(Status::INVALID_PARAMETER));
    assert_eq!(new(8, 5, LIMITS), Err(Status::INVALID_PARAMETER));
    let unsupported = SrqLimits {
        max_depth: 0,
        max_sge: 4,
    };
    assert_eq!(new(1, 1, unsupported), Err(Status::INVALID_PARAMETER));
    assert_eq!(new(64, 4, LIMITS), Ok(()));
    assert_eq!(new(1, 0, LIMITS), Ok(()), "receives without SGEs");
}

#[test]
fn fifo_and_post_limits() {
    let (srq, log) = recorded(3, 0);
    assert_eq!(srq.post(5, 0).unwrap_err(), Status::DATA_OVERRUN);
    post_n(&srq, 0..3);
    assert_eq!(srq.post(0, 3).unwrap_err(), Status::NO_MORE_ENTRIES);
    assert_eq!(srq.len(), 3);
    assert_eq!(srq.take(), Some(0));
    srq.post(4, 3).unwrap();
    assert_eq!(
        [srq.take(), srq.take(), srq.take(), srq.take()],
        [Some(1), Some(2), Some(3), None]
    );
    assert!(srq.is_empty());
    assert!(taken(&log).is_empty(), "threshold 0: never notified");
}

#[test]
fn threshold_notifies_once_when_the_count_drops_below() {
    let (srq, log) = recorded(8, 3);
    assert!(srq.is_armed(), "armed at creation");
    assert!(taken(&log).is_empty(), "no notification at creation");
    post_n(&srq, 0..5);
    srq.take();
    srq.take();
    assert!(taken(&log).is_empty(), "3 left: not below 3");
    srq.take();
    assert_eq!(taken(&log), [SUCCESS], "2 left: below 3");
    assert!(!srq.is_armed());
    srq.take();
    srq.take();
    assert!(taken(&log).is_empty(), "disarmed after one notification");
    assert_eq!(srq.take(), None);
}

#[test]
fn modify_rearms() {
    let (srq, log) = recorded(8, 2);
    post_n(&srq, 0..3);
    srq.take();
    srq.take();
    assert_eq!(taken(&log), [SUCCESS]);
    post_n(&srq, 3..6);
    assert_eq!(srq.len(), 4);
    srq.modify(0, 4).unwrap();
    assert!(srq.is_armed());
    assert_eq!(srq.threshold(), 4);
    assert!(taken(&log).is_empty(), "4 queued: not below 4");
    srq.take();
    assert_eq!(taken(&log), [SUCCESS]);
}

#[test]
fn modify_with_zero_keeps_threshold_and_arm_state() {
    // Armed stays armed.
    let (srq, log) = recorded(8, 2);
    post_n(&srq, 0..4);
    srq.modify(0, 0).unwrap();
    assert!(srq.is_armed());
    assert_eq!(srq.threshold(), 2);
    srq.modify(16, 0).unwrap();
    assert_eq!(
        (srq.depth(), srq.threshold(), srq.is_armed()),
        (16, 2, true)
    );
    srq.take();
    srq.take();
    srq.take();
    assert_eq!(taken(&log), [SUCCESS]);
    // Disarmed stays disarmed.
    srq.modify(0, 0).unwrap();
    assert!(!srq.is_armed());
    srq.take();
    assert!(taken(&log).is_empty());
    // Never armed (threshold 0 at creation) stays unarmed.
    let (srq, log) = recorded(8, 0);
    post_n(&srq, 0..2);
    srq.modify(4, 0).unwrap();
    srq.take();
    assert!(!srq.is_armed());
    assert!(taken(&log).is_empty());
}

#[test]
fn modify_below_the_count_notifies_at_once() {
    let (srq, log) = recorded(8, 0);
    post_n(&srq, 0..2);
    srq.modify(0, 5).unwrap();
    assert_eq!(taken(&log), [SUCCESS]);
    assert!(
        !srq.is_armed(),
        "the immediate notification consumed the arm"
    );
    assert_eq!(srq.threshold(), 5);
    srq.take();
    assert!(taken(&log).is_empty());
    // Empty SRQ, threshold 1: 0 < 1.
    let (srq, log) = recorded(8, 0);
    srq.modify(0, 1).unwrap();
    assert_eq!(taken(&log), [SUCCESS]);
}

#[test]
fn modify_depth_rules() {
    let (srq, log) = recorded(8, 3);
    post_n(&srq, 0..5);
    assert_eq!(srq.modify(65, 0).unwrap_err(), Status::INVALID_PARAMETER);
    assert_eq!(srq.modify(4, 7).unwrap_err(), Status::BUFFER_OVERFLOW);
    assert_eq!((srq.depth(), srq.threshold()), (8, 3), "nothing changed");
    assert!(taken(&log).is_empty());
    srq.modify(5, 0).unwrap();
    assert_eq!(srq.post(1, 9).unwrap_err(), Status::NO_MORE_ENTRIES);
    srq.modify(6, 0).unwrap();
    srq.post(1, 9).unwrap();
    assert_eq!(srq.len(), 6);
}

#[test]
fn no_callback_means_no_arm() {
    let srq = Srq::<u64>::new(8, 1, 4, LIMITS, None).unwrap();
    assert!(!srq.is_armed());
    srq.post(1, 1).unwrap();
    srq.modify(0, 6).unwrap();
    assert!(!srq.is_armed());
    assert_eq!(srq.threshold(), 6);
    assert_eq!(srq.take(), Some(1));
    srq.fail();
    assert!(srq.is_failed());
}

#[test]
fn fatal_error_notifies_internal_error_once() {
    let (srq, log) = recorded(8, 0);
    post_n(&srq, 0..3);
    srq.fail();
    srq.fail();
    assert_eq!(
        taken(&log),
        [Status::INTERNAL_ERROR],
        "delivered although not armed"
    );
    assert_eq!(srq.post(1, 9).unwrap_err(), Status::INVALID_DEVICE_STATE);
    assert_eq!(srq.modify(0, 5).unwrap_err(), Status::INVALID_DEVICE_STATE);
    assert_eq!(srq.take(), None);
    assert_eq!(srq.drain(), [0, 1, 2]);
}

/// An SRQ whose callback runs `f(srq, status)`.
fn reentrant(
    depth: u32,
    threshold: u32,
    f: impl Fn(&Srq<u64>, Status) + Send + Sync + 'static,
) -> Arc<Srq<u64>> {
    let slot: Arc<OnceLock<Weak<Srq<u64>>>> = Arc::default();
    let s = slot.clone();
    let cb: Notification = Arc::new(move |status| {
        if let Some(srq) = s.get().and_then(Weak::upgrade) {
            f(&srq, status);
        }
    });
    let srq = Srq::new(depth, 4, threshold, LIMITS, Some(cb)).unwrap();
    slot.set(Arc::downgrade(&srq)).unwrap();
    srq
}

#[test]
fn callback_may_post_and_rearm() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let next = Arc::new(AtomicUsize::new(100));
    let n = next.clone();
    let srq = reentrant(16, 2, move |srq, s| {
        assert_eq!(s, SUCCESS);
        c.fetch_add(1, Ordering::SeqCst);
        for _ in 0..3 {
            srq.post(1, n.fetch_add(1, Ordering::SeqCst) as u64)
                .unwrap();
        }
        srq.modify(0, 2).unwrap();
    });
    post_n(&srq, 0..2);
    let mut got = Vec::new();
    for _ in 0..9 {
        got.push(srq.take().unwrap());
    }
    assert_eq!(got[..4], [0, 1, 100, 101]);
    assert!(calls.load(Ordering::SeqCst) >= 3);
    assert!(srq.is_armed());
}

#[test]
fn an_immediate_notification_inside_the_callback_is_not_nested() {
    let depth = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (d, m, c) = (depth.clone(), max.clone(), calls.clone());
    let srq = reentrant(8, 1, move |srq, _| {
        let now = d.fetch_add(1, Ordering::SeqCst) + 1;
        m.fetch_max(now, Ordering::SeqCst);
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            srq.modify(0, 3).unwrap(); // 0 queued < 3: due at once
        }
        d.fetch_sub(1, Ordering::SeqCst);
    });
    srq.post(1, 1).unwrap();
    srq.take();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(max.load(Ordering::SeqCst), 1);
}

#[test]
fn notifications_are_serialized_under_concurrent_takes() {
    const N: usize = 4000;
    let inside = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (i, o, c) = (inside.clone(), overlaps.clone(), calls.clone());
    let srq = reentrant(64, 8, move |_, _| {
        if i.swap(true, Ordering::SeqCst) {
            o.fetch_add(1, Ordering::SeqCst);
        }
        c.fetch_add(1, Ordering::SeqCst);
        for _ in 0..200 {
            std::hint::spin_loop();
        }
        i.store(false, Ordering::SeqCst);
    });
    let total = Arc::new(AtomicUsize::new(0));
    let takers: Vec<_> = (0..3)
        .map(|_| {
            let (srq, total) = (srq.clone(), total.clone());
            thread::spawn(move || {
                let mut got = 0;
                while total.load(Ordering::SeqCst) < N {
                    if srq.take().is_some() {
                        got += 1;
                        total.fetch_add(1, Ordering::SeqCst);
                    } else {
                        thread::yield_now();
                    }
                }
                got
            })
        })
        .collect();
    let mut posted = 0;
    while posted < N {
        if srq.post(1, posted as u64).is_ok() {
            posted += 1;
            if posted % 16 == 0 {
                // Re-arm after a batch, as a consumer does; may notify at once.
                srq.modify(0, 8).unwrap();
            }
        } else {
            thread::yield_now();
        }
    }
    let got: usize = takers.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two callbacks at once");
    assert!(calls.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        got + srq.drain().len(),
        N,
        "every receive taken exactly once"
    );
}

#[test]
fn close_waits_for_a_running_callback() {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    let srq = Srq::<u64>::new(
        8,
        1,
        1,
        LIMITS,
        Some(Arc::new(move |_| {
            tx.lock().unwrap().send(()).unwrap();
            thread::sleep(Duration::from_millis(150));
            f.store(true, Ordering::SeqCst);
        })),
    )
    .unwrap();
    srq.post(1, 1).unwrap();
    let taker = {
        let srq = srq.clone();
        thread::spawn(move || srq.take())
    };
    rx.recv().unwrap();
    srq.close();
    assert!(
        finished.load(Ordering::SeqCst),
        "close returned while the callback ran"
    );
    assert_eq!(taker.join().unwrap(), Some(1));
    assert_eq!(srq.post(1, 2).unwrap_err(), Status::INVALID_DEVICE_STATE);
    srq.fail();
    assert!(rx.try_recv().is_err(), "no notification after close");
}
