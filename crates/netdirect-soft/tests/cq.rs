//! The completion queue's rules: depth limits, FIFO, the arm merge table, immediate fires, the
//! poll/arrive/arm race, SOLICITED, overflow, resize, re-entrancy, serialization and close.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread;
use std::time::Duration;

use netdirect_soft::cq::{Cq, Notification};
use netdirect_types::{BasicCompletion, Completion, CqNotifyType, MAXULONG, OperationType, Status};

use CqNotifyType::{Any, Errors, Solicited};

fn wc(status: Status, ctx: u64) -> Completion {
    Completion {
        status,
        bytes_transferred: 0,
        qp_context: 1,
        request_context: ctx,
        op_type: OperationType::Receive,
        provider_error_code: 0,
        type_specific: 0,
    }
}

fn ok(ctx: u64) -> Completion {
    wc(Status::SUCCESS, ctx)
}

type Log = Arc<Mutex<Vec<Status>>>;

/// A CQ whose callback records every notification status.
fn recorded(depth: u32) -> (Arc<Cq>, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let cq = Cq::new(depth, 1024, Arc::new(move |s| l.lock().unwrap().push(s))).unwrap();
    (cq, log)
}

fn taken(log: &Log) -> Vec<Status> {
    std::mem::take(&mut *log.lock().unwrap())
}

fn drain(cq: &Cq) -> Vec<u64> {
    let mut out = [ok(0); 8];
    let mut all = Vec::new();
    loop {
        let n = cq.get_results(&mut out);
        all.extend(out[..n].iter().map(|c| c.request_context));
        if n < out.len() {
            return all;
        }
    }
}

const SUCCESS: Status = Status::SUCCESS;

#[test]
fn depth_limits_at_creation() {
    let cb: Notification = Arc::new(|_| {});
    assert_eq!(
        Cq::new(0, 16, cb.clone()).unwrap_err(),
        Status::INVALID_PARAMETER
    );
    assert_eq!(
        Cq::new(17, 16, cb.clone()).unwrap_err(),
        Status::INVALID_PARAMETER
    );
    assert_eq!(Cq::new(16, 16, cb).unwrap().depth(), 16);
}

#[test]
fn fifo_and_basic_results() {
    let (cq, log) = recorded(16);
    for i in 0..10 {
        cq.push(ok(i), false).unwrap();
    }
    assert_eq!(cq.len(), 10);
    let mut out = [ok(0); 3];
    assert_eq!(cq.get_results(&mut out), 3);
    assert_eq!(out.map(|c| c.request_context), [0, 1, 2]);
    let mut basic = [BasicCompletion::from(ok(0)); 4];
    assert_eq!(cq.get_results_basic(&mut basic), 4);
    assert_eq!(basic.map(|c| c.request_context), [3, 4, 5, 6]);
    assert_eq!(drain(&cq), [7, 8, 9]);
    assert_eq!(cq.get_results(&mut out), 0);
    assert!(cq.is_empty());
    assert!(taken(&log).is_empty(), "never armed, never notified");
}

#[test]
fn arm_merge_table_all_nine_cells() {
    let table = [
        (Any, [Any, Any, Any]),
        (Errors, [Any, Errors, Solicited]),
        (Solicited, [Any, Solicited, Solicited]),
    ];
    for (first, row) in table {
        for (second, want) in [Any, Errors, Solicited].into_iter().zip(row) {
            let (cq, log) = recorded(16);
            cq.arm(first);
            cq.arm(second);
            assert_eq!(cq.armed(), Some(want), "{first:?} then {second:?}");
            // Observable: a plain success fires only ANY; a solicited one fires ANY and
            // SOLICITED; ERRORS fires on neither.
            cq.push(ok(1), false).unwrap();
            let after_plain = taken(&log).len();
            cq.push(ok(2), true).unwrap();
            let after_solicited = taken(&log).len();
            let got = match (after_plain, after_solicited) {
                (1, 0) => Any,
                (0, 1) => Solicited,
                (0, 0) => Errors,
                other => panic!("{first:?} then {second:?}: {other:?}"),
            };
            assert_eq!(got, want, "{first:?} then {second:?}");
        }
    }
}

#[test]
fn any_is_one_shot_and_fires_for_errors() {
    let (cq, log) = recorded(16);
    cq.arm(Any);
    cq.push(wc(Status::CANCELLED, 1), false).unwrap();
    assert_eq!(taken(&log), [SUCCESS]);
    assert_eq!(cq.armed(), None);
    cq.push(ok(2), false).unwrap();
    assert!(taken(&log).is_empty(), "one arm, one notification");
}

#[test]
fn solicited_semantics() {
    let (cq, log) = recorded(16);
    cq.arm(Solicited);
    cq.push(ok(1), false).unwrap();
    assert!(taken(&log).is_empty(), "non-solicited success");
    assert_eq!(cq.armed(), Some(Solicited));
    cq.push(ok(2), true).unwrap();
    assert_eq!(taken(&log), [SUCCESS], "solicited receive");
    assert_eq!(drain(&cq), [1, 2]);
    cq.arm(Solicited);
    cq.push(wc(Status::ACCESS_VIOLATION, 3), false).unwrap();
    assert_eq!(taken(&log), [SUCCESS], "any error completion");
    drain(&cq);
    cq.arm(Solicited);
    cq.push(wc(Status::CANCELLED, 4), false).unwrap();
    assert_eq!(taken(&log), [SUCCESS], "flushed is an error too");
}

#[test]
fn errors_arm_ignores_failed_completions() {
    let (cq, log) = recorded(16);
    cq.arm(Errors);
    cq.push(wc(Status::ACCESS_VIOLATION, 1), true).unwrap();
    cq.push(ok(2), true).unwrap();
    assert!(taken(&log).is_empty());
    assert_eq!(cq.armed(), Some(Errors));
    // A CQ error does fire it (and would even unarmed).
    cq.fail();
    assert_eq!(taken(&log), [Status::INTERNAL_ERROR]);
}

#[test]
fn arm_fires_at_once_for_entries_since_the_last_notification() {
    let (cq, log) = recorded(16);
    cq.push(ok(1), false).unwrap();
    cq.arm(Any);
    assert_eq!(taken(&log), [SUCCESS], "arrived before any notification");
    assert_eq!(cq.armed(), None);
    // Re-armed without draining and nothing new: waits.
    cq.arm(Any);
    assert!(taken(&log).is_empty());
    assert_eq!(cq.armed(), Some(Any));
    cq.push(ok(2), false).unwrap();
    assert_eq!(taken(&log), [SUCCESS]);
    // Entry arrives after the notification, unarmed; the next arm fires at once.
    cq.push(ok(3), false).unwrap();
    assert!(taken(&log).is_empty());
    cq.arm(Any);
    assert_eq!(taken(&log), [SUCCESS]);
    // Drained: nothing to report, the arm waits.
    assert_eq!(drain(&cq), [1, 2, 3]);
    cq.arm(Any);
    assert!(taken(&log).is_empty());
}

#[test]
fn solicited_arm_fires_at_once_only_for_new_solicited_or_failed_entries() {
    // Only a plain success is new: the arm waits.
    let (cq, log) = recorded(16);
    cq.push(ok(1), false).unwrap();
    cq.arm(Solicited);
    assert!(taken(&log).is_empty());
    assert_eq!(cq.armed(), Some(Solicited));
    // A new solicited entry, or a failed one: fires at once.
    for (c, solicited) in [(ok(2), true), (wc(Status::CANCELLED, 3), false)] {
        let (cq, log) = recorded(16);
        cq.push(ok(1), false).unwrap();
        cq.push(c, solicited).unwrap();
        cq.arm(Solicited);
        assert_eq!(taken(&log), [SUCCESS]);
        assert_eq!(cq.armed(), None);
    }
    // The solicited entry was reaped before the arm: nothing to report.
    let (cq, log) = recorded(16);
    cq.push(ok(1), true).unwrap();
    cq.push(ok(2), false).unwrap();
    let mut one = [ok(0)];
    assert_eq!(cq.get_results(&mut one), 1);
    cq.arm(Solicited);
    assert!(taken(&log).is_empty());
    // A solicited entry already reported by the previous notification does not fire again.
    let (cq, log) = recorded(16);
    cq.arm(Solicited);
    cq.push(ok(1), true).unwrap();
    assert_eq!(taken(&log), [SUCCESS]);
    cq.arm(Solicited);
    assert!(taken(&log).is_empty());
    cq.push(ok(2), true).unwrap();
    assert_eq!(taken(&log), [SUCCESS]);
}

#[test]
fn poll_empty_arrive_arm_race_fires() {
    let (cq, log) = recorded(16);
    cq.arm(Any);
    cq.push(ok(1), false).unwrap();
    assert_eq!(taken(&log), [SUCCESS]);
    assert_eq!(drain(&cq), [1]);
    // Consumer polls empty ...
    assert_eq!(drain(&cq), Vec::<u64>::new());
    // ... an entry arrives before it arms ...
    cq.push(ok(2), false).unwrap();
    // ... and the arm must fire.
    cq.arm(Any);
    assert_eq!(taken(&log), [SUCCESS]);
}

#[test]
fn no_lost_wakeups_between_threads() {
    const N: u64 = 20_000;
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let cq = Cq::new(
        N as u32,
        N as u32,
        Arc::new(move |s| tx.lock().unwrap().send(s).unwrap()),
    )
    .unwrap();
    let producer = {
        let cq = cq.clone();
        thread::spawn(move || {
            for i in 0..N {
                cq.push(ok(i), false).unwrap();
                if i % 1000 == 0 {
                    thread::yield_now();
                }
            }
        })
    };
    let mut seen = 0u64;
    while seen < N {
        let got = drain(&cq);
        for (k, ctx) in got.iter().enumerate() {
            assert_eq!(*ctx, seen + k as u64, "FIFO");
        }
        seen += got.len() as u64;
        if seen == N {
            break;
        }
        cq.arm(Any);
        let s = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a notification (no lost wake-up)");
        assert_eq!(s, SUCCESS);
    }
    producer.join().unwrap();
}

#[test]
fn overflow_notifies_unarmed_and_kills_the_cq() {
    let (cq, log) = recorded(2);
    cq.push(ok(1), false).unwrap();
    cq.push(ok(2), false).unwrap();
    assert_eq!(cq.push(ok(3), false).unwrap_err(), Status::BUFFER_OVERFLOW);
    assert_eq!(
        taken(&log),
        [Status::BUFFER_OVERFLOW],
        "delivered although not armed"
    );
    assert_eq!(cq.error(), Some(Status::BUFFER_OVERFLOW));
    // Unusable: later pushes dropped, arms ignored, one error notification ever.
    assert_eq!(cq.push(ok(4), true).unwrap_err(), Status::BUFFER_OVERFLOW);
    cq.arm(Any);
    assert_eq!(cq.armed(), None);
    cq.fail();
    assert!(taken(&log).is_empty());
    assert_eq!(cq.resize(8).unwrap_err(), Status::INVALID_DEVICE_STATE);
    // The entries accepted before the overflow are still there.
    assert_eq!(drain(&cq), [1, 2]);
}

#[test]
fn overflow_while_armed_delivers_only_the_overflow() {
    let (cq, log) = recorded(1);
    cq.push(ok(1), false).unwrap();
    cq.arm(Errors);
    assert_eq!(cq.push(ok(2), true).unwrap_err(), Status::BUFFER_OVERFLOW);
    assert_eq!(taken(&log), [Status::BUFFER_OVERFLOW]);
}

#[test]
fn fatal_error_notifies_once() {
    let (cq, log) = recorded(4);
    cq.fail();
    cq.fail();
    assert_eq!(taken(&log), [Status::INTERNAL_ERROR]);
    assert_eq!(cq.push(ok(1), false).unwrap_err(), Status::INTERNAL_ERROR);
    assert_eq!(cq.error(), Some(Status::INTERNAL_ERROR));
}

#[test]
fn resize_up_and_down_never_loses_completions() {
    let cq = Cq::new(4, 8, Arc::new(|_| {})).unwrap();
    for i in 0..4 {
        cq.push(ok(i), false).unwrap();
    }
    assert_eq!(cq.resize(9).unwrap_err(), Status::INVALID_PARAMETER);
    assert_eq!(cq.resize(0).unwrap_err(), Status::INVALID_PARAMETER);
    assert_eq!(cq.resize(3).unwrap_err(), Status::BUFFER_OVERFLOW);
    assert_eq!(cq.depth(), 4, "unchanged");
    cq.resize(8).unwrap();
    for i in 4..8 {
        cq.push(ok(i), false).unwrap();
    }
    assert_eq!(drain(&cq)[..], [0, 1, 2, 3, 4, 5, 6, 7]);
    cq.push(ok(8), false).unwrap();
    cq.resize(1).unwrap();
    assert_eq!(cq.depth(), 1);
    assert_eq!(cq.push(ok(9), false).unwrap_err(), Status::BUFFER_OVERFLOW);
    assert_eq!(drain(&cq), [8]);
}

#[test]
fn interrupt_moderation_is_not_supported() {
    let cq = Cq::new(4, 8, Arc::new(|_| {})).unwrap();
    for (interval, count) in [(0, 0), (10, 4), (MAXULONG, MAXULONG), (MAXULONG, 5)] {
        assert_eq!(
            cq.control_interrupt_moderation(interval, count)
                .unwrap_err(),
            Status::NOT_SUPPORTED
        );
    }
}

/// A CQ whose callback runs `f(cq, status)`; the callback reaches the CQ through a weak link.
fn reentrant(depth: u32, f: impl Fn(&Cq, Status) + Send + Sync + 'static) -> Arc<Cq> {
    let slot: Arc<OnceLock<std::sync::Weak<Cq>>> = Arc::default();
    let s = slot.clone();
    let cq = Cq::new(
        depth,
        depth,
        Arc::new(move |status| {
            if let Some(cq) = s.get().and_then(std::sync::Weak::upgrade) {
                f(&cq, status);
            }
        }),
    )
    .unwrap();
    slot.set(Arc::downgrade(&cq)).unwrap();
    cq
}

#[test]
fn callback_may_drain_and_rearm() {
    let drained = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let (d, c) = (drained.clone(), calls.clone());
    let cq = reentrant(64, move |cq, s| {
        assert_eq!(s, SUCCESS);
        c.fetch_add(1, Ordering::SeqCst);
        d.lock().unwrap().extend(drain(cq));
        cq.arm(Any);
    });
    cq.arm(Any);
    for i in 0..10 {
        cq.push(ok(i), false).unwrap();
    }
    assert_eq!(*drained.lock().unwrap(), (0..10).collect::<Vec<_>>());
    assert_eq!(calls.load(Ordering::SeqCst), 10);
    assert_eq!(cq.armed(), Some(Any));
}

#[test]
fn a_fire_inside_the_callback_is_delivered_after_it_returns() {
    let depth = Arc::new(AtomicUsize::new(0));
    let max_depth = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (dd, md, c) = (depth.clone(), max_depth.clone(), calls.clone());
    let cq = reentrant(64, move |cq, _| {
        let now = dd.fetch_add(1, Ordering::SeqCst) + 1;
        md.fetch_max(now, Ordering::SeqCst);
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            // A new entry and an arm that is satisfied at once: queued, not nested.
            cq.push(ok(100), false).unwrap();
            cq.arm(Any);
        }
        dd.fetch_sub(1, Ordering::SeqCst);
    });
    cq.arm(Any);
    cq.push(ok(1), false).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(max_depth.load(Ordering::SeqCst), 1, "never nested");
}

#[test]
fn callbacks_are_serialized_under_concurrent_pushes() {
    const THREADS: u64 = 4;
    const EACH: u64 = 3000;
    let inside = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let reaped = Arc::new(AtomicUsize::new(0));
    let (i, o, c, r) = (
        inside.clone(),
        overlaps.clone(),
        calls.clone(),
        reaped.clone(),
    );
    let cq = reentrant((THREADS * EACH) as u32, move |cq, _| {
        if i.swap(true, Ordering::SeqCst) {
            o.fetch_add(1, Ordering::SeqCst);
        }
        c.fetch_add(1, Ordering::SeqCst);
        // Stay a little while so other pushers hit the running callback.
        for _ in 0..200 {
            std::hint::spin_loop();
        }
        r.fetch_add(drain(cq).len(), Ordering::SeqCst);
        cq.arm(Any);
        i.store(false, Ordering::SeqCst);
    });
    cq.arm(Any);
    let pushers: Vec<_> = (0..THREADS)
        .map(|t| {
            let cq = cq.clone();
            thread::spawn(move || {
                for k in 0..EACH {
                    cq.push(ok(t * EACH + k), t % 2 == 0).unwrap();
                }
            })
        })
        .collect();
    for p in pushers {
        p.join().unwrap();
    }
    let rest = drain(&cq).len();
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two callbacks at once");
    assert!(calls.load(Ordering::SeqCst) > 1);
    assert_eq!(
        reaped.load(Ordering::SeqCst) + rest,
        (THREADS * EACH) as usize,
        "every completion reaped exactly once"
    );
}

#[test]
fn close_waits_for_a_running_callback() {
    let (entered_tx, entered_rx) = mpsc::channel();
    let entered_tx = Mutex::new(entered_tx);
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let cq = Cq::new(
        8,
        8,
        Arc::new(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            entered_tx.lock().unwrap().send(()).unwrap();
            thread::sleep(Duration::from_millis(150));
            f.store(true, Ordering::SeqCst);
        }),
    )
    .unwrap();
    cq.arm(Any);
    let pusher = {
        let cq = cq.clone();
        thread::spawn(move || cq.push(ok(1), false).unwrap())
    };
    entered_rx.recv().unwrap();
    cq.close();
    assert!(
        finished.load(Ordering::SeqCst),
        "close returned while the callback ran"
    );
    pusher.join().unwrap();
    // Nothing after close.
    assert!(cq.is_closed());
    assert_eq!(
        cq.push(ok(2), false).unwrap_err(),
        Status::INVALID_DEVICE_STATE
    );
    cq.arm(Any);
    cq.fail();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(drain(&cq), Vec::<u64>::new());
}

#[test]
fn close_from_inside_the_callback_does_not_deadlock() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let cq = reentrant(8, move |cq, _| {
        c.fetch_add(1, Ordering::SeqCst);
        cq.arm(Any);
        cq.push(ok(9), false).unwrap();
        cq.close();
    });
    cq.arm(Any);
    cq.push(ok(1), false).unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the queued fire is dropped by close"
    );
    assert!(cq.is_closed());
}

#[test]
fn a_panicking_callback_does_not_wedge_the_cq() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let cq = Cq::new(
        8,
        8,
        Arc::new(move |_| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("consumer bug");
            }
        }),
    )
    .unwrap();
    cq.arm(Any);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cq.push(ok(1), false)));
    assert!(r.is_err());
    cq.arm(Any);
    cq.push(ok(2), false).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    cq.close();
}
