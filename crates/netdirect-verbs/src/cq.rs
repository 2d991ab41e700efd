//! The completion queue: `ibv_cq` on the adapter's completion channel.
//!
//! Arming is `ibv_req_notify_cq`; the CQ thread takes the channel's events and runs the
//! consumer's notification with `STATUS_SUCCESS`, once per arm. Verbs fires only for a
//! completion that arrives after the arm, the NDK also for one already there (§7.4): the arm
//! polls one completion ahead into the CQ's own buffer (which `get_results` hands out first,
//! so the order is kept) and, when there is one of the armed kind, fires at once. For a
//! SOLICITED arm only an error completion is known to be of its kind: a work completion does
//! not say whether the peer's send was solicited.
//!
//! An overflow (`IBV_EVENT_CQ_ERR`) is fatal to the CQ and its QPs (§7.3, §10 row 5): from the
//! event on, their posts fail `STATUS_CONNECTION_INVALID`; the completions queued before it
//! are moved into the buffer and stay readable, and nothing after them is delivered.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use netdirect::{Cq, CqNotification, Object, Request};
use netdirect_types::{BasicCompletion, Completion, CqNotifyType, ObjectType, Status};

use crate::adapter::{AdapterInner, readable};
use crate::errno_status;
use crate::ffi::{CqH, ibv_wc};

pub(crate) struct CqShared {
    pub(crate) adapter: Arc<AdapterInner>,
    pub(crate) cq: CqH,
    key: u64,
    notification: CqNotification,
    /// Notifications seen, for [`Cq::wait`] to sleep on.
    events: Mutex<u64>,
    fired: Condvar,
    /// Held while the consumer's notification runs: the CQ thread and the async-event thread
    /// never run two of one CQ at once.
    notifying: Mutex<()>,
    /// Completions polled ahead (by an arm, or at an overflow), handed out before the device's.
    buffer: Mutex<VecDeque<Completion>>,
    /// The buffer is not empty (read without its lock on the polling path).
    buffered: AtomicBool,
    /// An arm is pending: the next notification of the CQ's own (not an error) is due.
    armed: AtomicBool,
    /// Overflowed (or failed): nothing more is polled from the device.
    failed: AtomicBool,
    /// QPs in error whose outstanding requests this CQ completes cancelled once the device
    /// has none left (iWARP, see `QpShared::set_error`), by QP number.
    orphans: Mutex<Vec<u32>>,
    has_orphans: AtomicBool,
}

impl CqShared {
    pub(crate) fn notify(&self, status: Status) {
        let _one = self.notifying.lock();
        (self.notification)(status);
    }

    /// A QP of this CQ went into error (iWARP).
    pub(crate) fn adopt(&self, qp_num: u32) {
        let mut orphans = self.orphans.lock();
        if !orphans.contains(&qp_num) {
            orphans.push(qp_num);
        }
        self.has_orphans.store(true, Ordering::Release);
    }

    /// A request was queued on a QP in error (never handed to the device): the next poll
    /// completes it cancelled, and a pending arm fires for it (a cancelled completion is of
    /// every kind an arm asks for).
    pub(crate) fn adopt_and_notify(self: &Arc<Self>, qp_num: u32) {
        self.adopt(qp_num);
        if self.armed.load(Ordering::Acquire) {
            self.fire_elsewhere();
        }
    }

    /// Runs [`Self::fire`] on a thread of its own, not on the consumer's: it may hold the CQ
    /// (the callback polls it).
    fn fire_elsewhere(self: &Arc<Self>) {
        let shared = self.clone();
        let _ = std::thread::Builder::new()
            .name("verbs-cq-arm".into())
            .spawn(move || shared.fire());
    }

    /// Cancelled completions for the outstanding requests of QPs in error (after the device
    /// had nothing more to say): how many went into `out`.
    fn cancel_orphans(&self, out: &mut [Completion]) -> usize {
        let mut orphans = self.orphans.lock();
        let qps = self.adapter.qps.read();
        let mut n = 0;
        orphans.retain(|num| {
            let Some(qp) = qps.get(num).and_then(|w| w.upgrade()) else {
                return false;
            };
            let (k, empty) = qp.cancel_outstanding(self, &mut out[n..]);
            n += k;
            !empty
        });
        self.has_orphans
            .store(!orphans.is_empty(), Ordering::Release);
        n
    }

    /// The CQ overflowed or failed.
    pub(crate) fn in_error(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// `IBV_EVENT_CQ_ERR` / `IBV_EVENT_DEVICE_FATAL`: the CQ and its QPs are unusable from
    /// now; what the device holds (the completions before the overflow) moves to the buffer.
    pub(crate) fn fail(&self, status: Status) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            // The full CQ's entries, and no more: each one taken frees a slot a later
            // completion could fill.
            let size = self.adapter.lib.cq_size(self.cq).max(1);
            let mut wc = vec![ibv_wc::default(); size];
            let mut out = vec![Completion::EMPTY; size];
            let n = poll_device(self, &mut wc, &mut out);
            self.buffer.lock().extend(out[..n].iter().copied());
            self.buffered.store(true, Ordering::Release);
        }
        self.notify(status);
    }

    /// Runs the consumer's notification for a pending arm, once.
    fn fire(&self) {
        *self.events.lock() += 1;
        self.fired.notify_all();
        if self.armed.swap(false, Ordering::AcqRel) {
            self.notify(Status::SUCCESS);
        }
    }
}

/// Polls the device into `out` (as NDK completions; a gone QP's are dropped): how many.
fn poll_device(shared: &CqShared, wc: &mut [ibv_wc], out: &mut [Completion]) -> usize {
    let want = out.len().min(wc.len());
    if want == 0 {
        return 0;
    }
    let got = shared.adapter.lib.poll_cq(shared.cq, &mut wc[..want]);
    if got <= 0 {
        return 0;
    }
    let qps = shared.adapter.qps.read();
    let mut n = 0;
    for wc in &wc[..got as usize] {
        let qp = qps.get(&wc.qp_num).and_then(|w| w.upgrade());
        out[n] = match qp.and_then(|qp| qp.completion(wc)) {
            Some(c) => c,
            // The QP is gone (its completions have nobody to go to), or the request was
            // completed cancelled already.
            None => continue,
        };
        n += 1;
    }
    n
}

impl Drop for CqShared {
    fn drop(&mut self) {
        self.adapter.cqs.lock().remove(&self.key);
        crate::events::unregister_cq(self);
        self.adapter.lib.destroy_cq(self.cq);
    }
}

/// A verbs CQ.
pub(crate) struct VerbsCq {
    pub(crate) shared: Arc<CqShared>,
    wc: Vec<ibv_wc>,
}

impl VerbsCq {
    pub(crate) fn create(
        adapter: &Arc<AdapterInner>,
        depth: u32,
        notification: CqNotification,
    ) -> Result<VerbsCq, Status> {
        if depth == 0 || depth > adapter.info.max_cq_depth {
            return Err(Status::INVALID_PARAMETER);
        }
        let key = adapter.key();
        let cq = adapter
            .lib
            .create_cq(adapter.ctx, depth as i32, key, adapter.comp_channel)
            .ok_or(Status::INSUFFICIENT_RESOURCES)?;
        let shared = Arc::new(CqShared {
            adapter: adapter.clone(),
            cq,
            key,
            notification,
            events: Mutex::new(0),
            fired: Condvar::new(),
            notifying: Mutex::new(()),
            buffer: Mutex::new(VecDeque::new()),
            buffered: AtomicBool::new(false),
            armed: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            orphans: Mutex::new(Vec::new()),
            has_orphans: AtomicBool::new(false),
        });
        crate::events::register_cq(&shared);
        adapter.cqs.lock().insert(key, Arc::downgrade(&shared));
        Ok(VerbsCq {
            shared,
            wc: vec![ibv_wc::default(); 64],
        })
    }
}

impl Object for VerbsCq {
    fn object_type(&self) -> ObjectType {
        ObjectType::Cq
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Cq for VerbsCq {
    fn resize(&self, depth: u32) -> Request<()> {
        if depth == 0 || depth > self.shared.adapter.info.max_cq_depth {
            return Request::failed(Status::INVALID_PARAMETER);
        }
        match self
            .shared
            .adapter
            .lib
            .resize_cq(self.shared.cq, depth as i32)
        {
            0 => Request::ok(()),
            e => Request::failed(errno_status(e)),
        }
    }

    fn arm(&mut self, notify: CqNotifyType) {
        let solicited = match notify {
            CqNotifyType::Any => false,
            CqNotifyType::Solicited => true,
            // CQ errors come as async events, delivered whether armed or not.
            _ => return,
        };
        let shared = self.shared.clone();
        if shared.in_error() {
            return;
        }
        // A second arm before the first fired merges to the wider kind (§7.4): ANY wins, and
        // verbs' own arm is widened by arming again.
        shared.armed.store(true, Ordering::Release);
        let _ = shared.adapter.lib.req_notify_cq(shared.cq, solicited);
        // The NDK fires at once for an entry already there; verbs only for later ones. Poll one
        // ahead (after the arm: one arriving in between fires verbs' arm, and `fire` runs once).
        if !shared.buffered.load(Ordering::Acquire) {
            let mut one = [Completion::EMPTY; 1];
            let got = match poll_device(&shared, &mut self.wc, &mut one) {
                0 if shared.has_orphans.load(Ordering::Acquire) => shared.cancel_orphans(&mut one),
                n => n,
            };
            if got == 1 {
                shared.buffer.lock().push_back(one[0]);
                shared.buffered.store(true, Ordering::Release);
            }
        }
        let due = {
            let buffer = shared.buffer.lock();
            if solicited {
                buffer.iter().any(|c| c.status != Status::SUCCESS)
            } else {
                !buffer.is_empty()
            }
        };
        if due {
            shared.fire_elsewhere();
        }
    }

    fn get_results(&mut self, out: &mut [BasicCompletion]) -> usize {
        let mut ex = [Completion::EMPTY; 16];
        let mut n = 0;
        while n < out.len() {
            let want = (out.len() - n).min(ex.len());
            let got = self.get_results_ex(&mut ex[..want]);
            for (o, c) in out[n..].iter_mut().zip(&ex[..got]) {
                *o = c.to_basic();
            }
            n += got;
            if got < want {
                break;
            }
        }
        n
    }

    fn get_results_ex(&mut self, out: &mut [Completion]) -> usize {
        let mut n = 0;
        if self.shared.buffered.load(Ordering::Acquire) {
            let mut buffer = self.shared.buffer.lock();
            while n < out.len() {
                let Some(c) = buffer.pop_front() else { break };
                out[n] = c;
                n += 1;
            }
            if buffer.is_empty() {
                self.shared.buffered.store(false, Ordering::Release);
            }
        }
        if self.shared.in_error() {
            // Nothing after the overflow.
            return n;
        }
        n += poll_device(&self.shared, &mut self.wc, &mut out[n..]);
        if n < out.len() && self.shared.has_orphans.load(Ordering::Acquire) {
            // The device has no more: what it will never complete is cancelled now.
            n += self.shared.cancel_orphans(&mut out[n..]);
        }
        n
    }

    /// Polls for `spin`, then arms verbs for any completion and sleeps until the CQ thread
    /// sees the event (which runs the consumer's callback only if the consumer armed) or
    /// `timeout` passes.
    fn wait(&mut self, out: &mut [Completion], spin: Duration, timeout: Duration) -> usize {
        let start = Instant::now();
        loop {
            let n = self.get_results_ex(out);
            if n > 0 || out.is_empty() {
                return n;
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return 0;
            }
            if waited < spin {
                std::hint::spin_loop();
                continue;
            }
            let seen = *self.shared.events.lock();
            // Verbs' arm only: the consumer's notification runs only for its own arms.
            let _ = self.shared.adapter.lib.req_notify_cq(self.shared.cq, false);
            // A completion that came between the poll and the arm fires nothing: poll again.
            let n = self.get_results_ex(out);
            if n > 0 {
                return n;
            }
            let mut events = self.shared.events.lock();
            if *events == seen {
                let left = timeout.saturating_sub(start.elapsed());
                let _ = self.shared.fired.wait_for(&mut events, left);
            }
        }
    }

    fn control_interrupt_moderation(&mut self, _interval: u32, _count: u32) -> Result<(), Status> {
        Err(Status::NOT_SUPPORTED)
    }

    fn close(self: Box<Self>) -> Request<()> {
        Request::ok(())
    }
}

/// The CQ thread: takes completion-channel events and runs the CQs' notifications.
pub(crate) fn run(weak: Weak<AdapterInner>) {
    let Some(fd) = weak
        .upgrade()
        .map(|a| a.lib.comp_channel_fd(a.comp_channel))
    else {
        return;
    };
    loop {
        // Closed with the adapter's last reference: POLLNVAL, and the upgrade below fails.
        if !readable(fd, 100) {
            if weak.strong_count() == 0 {
                return;
            }
            continue;
        }
        let Some(adapter) = weak.upgrade() else {
            return;
        };
        let Some(key) = adapter.lib.take_cq_event(adapter.comp_channel) else {
            continue;
        };
        let cq = adapter.cqs.lock().get(&key).and_then(|w| w.upgrade());
        if let Some(cq) = cq {
            cq.fire();
        }
    }
}
