//! The completion queue: a bounded FIFO of [`Completion`]s with the NDK's arming and
//! notification rules (§3.5, §7.3, §7.4).
//!
//! A [`Cq`] is shared (`Arc`) between the engine, which [`Cq::push`]es completions, and the
//! consumer, which [`Cq::get_results`] and [`Cq::arm`]s. It is plain data behind one
//! `parking_lot::Mutex`, with no thread of its own: the notification callback runs on the
//! thread whose call made it due (see *Notifications*).
//!
//! # Arming (§7.4)
//!
//! * Notifications are off until [`Cq::arm`]; each arm requests **one** notification. When it is
//!   satisfied the arm is cleared and the callback runs once with `STATUS_SUCCESS`.
//! * [`CqNotifyType::Any`]: any completion satisfies it, error completions included (§6.2).
//!   [`CqNotifyType::Solicited`]: a completion pushed with `solicited = true` (a receive whose
//!   send carried `SEND_AND_SOLICIT_EVENT`) or any completion whose status is not a success.
//!   [`CqNotifyType::Errors`]: CQ-level errors only — failed work completions do not satisfy it
//!   (§10.5).
//! * Arming again before the arm fired merges the types: `Any` wins over everything, two
//!   `Errors` stay `Errors`, otherwise `Solicited` (the §7.4 table).
//! * An arm fires **at once** if the CQ holds an entry that satisfies the (merged) type and that
//!   arrived after the previous notification was issued. This closes the race "poll found the
//!   CQ empty → an entry arrives → arm". If every entry in the CQ was already there at the
//!   previous notification, the arm waits for a new one (the NDK allows either). Entries are
//!   numbered as they arrive, so the test is O(1).
//!
//! # Errors (§7.3, §10.5)
//!
//! * Overflow: a [`Cq::push`] into a full CQ drops that completion, makes the CQ unusable (every
//!   later push is dropped and returns `STATUS_BUFFER_OVERFLOW`, arms do nothing) and delivers
//!   one `STATUS_BUFFER_OVERFLOW` notification **whether or not the CQ is armed**.
//! * [`Cq::fail`]: a fatal error; the same with `STATUS_INTERNAL_ERROR`.
//! * Entries queued before the error stay readable with [`Cq::get_results`]: they are real
//!   completions of real requests, and losing them would hide which requests finished.
//! * Exactly one error notification per CQ, ever.
//! * The error is fatal to the CQ's queue pairs too (§7.3 "its QPs become unusable"): from the
//!   moment it is set ([`Cq::is_failed`], before the notification runs) their posts fail inline
//!   with `STATUS_CONNECTION_INVALID`, and a QP whose completion the CQ refused is flushed (see
//!   [`crate::objects::qp`]). Requests accepted before the error get no completion: the CQ
//!   can no longer report one.
//!
//! # Notifications
//!
//! The callback ([`Notification`], `Arc<dyn Fn(Status) + Send + Sync>`) is called with no lock
//! held, on the thread whose [`Cq::push`], [`Cq::arm`] or [`Cq::fail`] made it due — so an arm
//! that fires at once calls the callback before `arm` returns. A push made while its thread
//! holds a connection lock (the engine driving a connection, on the progress thread or inline
//! on a consumer's thread inside a post or a poll) notifies once that lock is released
//! ([`crate::callback`]). Callbacks must not block (they may run on the engine's progress
//! thread; NDK callbacks run at `DISPATCH_LEVEL`).
//!
//! # Progress and waiting
//!
//! A poll that finds the CQ empty ([`Cq::get_results`]) first runs a non-blocking progress pass
//! over the connections that complete here ([`Poller`], registered by their QPs), so a polling
//! consumer moves its own messages. [`Cq::wait`] spins on that, then hands the connections back
//! to the progress thread, arms for any completion and sleeps until a notification.
//!
//! The pass visits only the CQ's **active list**: the connections that may have work for it.
//! A connection enters it ([`PollerEntry::activate`]) when it gets work — a post, an arrival
//! the progress thread heard, a lease its consumer took — and leaves it at the pass that finds
//! it idle ([`Poller::wants_pass`] false; its lease, if any, is handed back to the progress
//! thread first, which then hears its arrivals and brings it back). A flag per entry keeps a
//! connection from being listed twice. So an empty poll of a CQ shared by 10,000 connections
//! costs what its busy ones cost, not a visit per connection. A connection that feeds two CQs
//! (receive and initiator) has an entry in each; each CQ's pass drops it on its own.
//!
//! * Serialized per CQ: never two callbacks of one CQ at once. A notification that becomes due
//!   while a callback runs is queued and delivered, in order, by the thread running that
//!   callback after it returns.
//! * Re-entrant: the callback may call [`Cq::get_results`], [`Cq::arm`] (a fire is then queued,
//!   not nested), [`Cq::push`] and [`Cq::close`] on the same CQ.
//! * [`Cq::close`] waits until a running callback has returned (§2.5) and no notification is
//!   made after it; called from inside the callback it does not wait for itself.
//! * A panicking callback does not wedge the CQ: the serialization state is reset.
//!
//! # Decisions (where the NDK is silent, §10)
//!
//! | case | decision |
//! |---|---|
//! | depth 0, or above the adapter's maximum, at creation or resize | `STATUS_INVALID_PARAMETER` |
//! | resize below the entries queued (§10.9) | `STATUS_BUFFER_OVERFLOW`, CQ unchanged (NDSPI); nothing is ever lost |
//! | resize of a failed or closed CQ | `STATUS_INVALID_DEVICE_STATE` (after the parameter check) |
//! | ERRORS arm and failed completions (§10.5) | not satisfied; only CQ errors |
//! | CQ error when not armed (§10.5) | delivered anyway, once |
//! | arm of a failed or closed CQ | ignored |
//! | arm with only entries older than the last notification | waits for a new entry |
//! | push into a closed CQ | dropped, `STATUS_INVALID_DEVICE_STATE` |
//! | `get_results` after an overflow | returns the entries queued before it |
//! | `get_results` after close | 0 (the queue is dropped at close) |
//! | interrupt moderation | the adapter does not advertise it: [`Cq::control_interrupt_moderation`] always answers `STATUS_NOT_SUPPORTED`, before looking at the arguments — the NDK reserves that status for exactly this case, and a consumer probing the capability gets the same answer whatever it passes (so `STATUS_INVALID_PARAMETER_MIX` is never returned) |

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{self, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use netdirect_types::{BasicCompletion, Completion, CqNotifyType, Status};
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::callback;

/// A CQ or SRQ notification callback (`NDK_FN_CQ_NOTIFICATION_CALLBACK`,
/// `NDK_FN_SRQ_NOTIFICATION_CALLBACK`): called with the notification status. Must not block.
#[doc(alias = "NdkCqNotificationCallback")]
pub type Notification = Arc<dyn Fn(Status) + Send + Sync>;

/// Serialized delivery of notifications for one object (CQ or SRQ). Lives inside the object's
/// mutex-protected state.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    /// Notifications due, oldest first.
    due: VecDeque<Status>,
    /// The thread running the delivery loop (and maybe a callback right now).
    delivering: Option<ThreadId>,
    /// No more notifications.
    closed: bool,
}

impl Notifier {
    /// Queues a notification (dropped once closed).
    pub(crate) fn push(&mut self, status: Status) {
        if !self.closed {
            self.due.push_back(status);
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }
}

/// Resets the delivery state if a callback unwinds.
struct Unwind<'a, S> {
    lock: &'a Mutex<S>,
    idle: &'a Condvar,
    notifier: fn(&mut S) -> &mut Notifier,
}

impl<S> Drop for Unwind<'_, S> {
    fn drop(&mut self) {
        if thread::panicking() {
            let mut g = self.lock.lock();
            (self.notifier)(&mut g).delivering = None;
            self.idle.notify_all();
        }
    }
}

/// Delivers every due notification unless another delivery loop runs (then that loop delivers
/// them after its current callback returns). Called with the state's guard; releases it around
/// each callback.
pub(crate) fn deliver<'a, S>(
    lock: &'a Mutex<S>,
    idle: &Condvar,
    mut guard: MutexGuard<'a, S>,
    notifier: fn(&mut S) -> &mut Notifier,
    callback: Option<&Notification>,
) {
    let n = notifier(&mut guard);
    let Some(callback) = callback else {
        n.due.clear();
        return;
    };
    if n.delivering.is_some() || n.due.is_empty() {
        return;
    }
    n.delivering = Some(thread::current().id());
    loop {
        let n = notifier(&mut guard);
        let Some(status) = n.due.pop_front() else {
            break;
        };
        drop(guard);
        {
            let _unwind = Unwind {
                lock,
                idle,
                notifier,
            };
            callback(status);
        }
        guard = lock.lock();
    }
    notifier(&mut guard).delivering = None;
    idle.notify_all();
}

/// Marks the notifier closed and waits until no callback runs (unless called from the
/// delivering thread itself).
pub(crate) fn close_notifier<S>(
    idle: &Condvar,
    guard: &mut MutexGuard<'_, S>,
    notifier: fn(&mut S) -> &mut Notifier,
) {
    let me = thread::current().id();
    let n = notifier(guard);
    n.closed = true;
    n.due.clear();
    while let Some(t) = notifier(guard).delivering {
        if t == me {
            break;
        }
        idle.wait(guard);
    }
}

/// The merged arm type when `second` is armed while `first` is pending (§7.4 table).
pub fn merge_arm(first: CqNotifyType, second: CqNotifyType) -> CqNotifyType {
    use CqNotifyType::{Any, Errors, Solicited};
    match (first, second) {
        (Any, _) | (_, Any) => Any,
        (Errors, Errors) => Errors,
        _ => Solicited,
    }
}

struct State {
    ring: VecDeque<(u64, Completion)>,
    depth: usize,
    /// Number of the last entry pushed (entries are numbered from 1).
    last_seq: u64,
    /// `last_seq` when the previous notification was issued.
    notified_seq: u64,
    /// Number of the last solicited or failed entry (0: none).
    trigger_seq: u64,
    arm: Option<CqNotifyType>,
    error: Option<Status>,
    notifier: Notifier,
}

fn notifier(s: &mut State) -> &mut Notifier {
    &mut s.notifier
}

impl State {
    /// Clears the arm and queues a success notification.
    fn fire(&mut self) {
        self.arm = None;
        self.notified_seq = self.last_seq;
        self.notifier.push(Status::SUCCESS);
    }

    /// Whether the queue holds an entry newer than the last notification that satisfies `ty`.
    fn satisfied_now(&self, ty: CqNotifyType) -> bool {
        match ty {
            CqNotifyType::Any => self.ring.back().is_some_and(|e| e.0 > self.notified_seq),
            CqNotifyType::Solicited => {
                self.trigger_seq > self.notified_seq
                    && self.ring.front().is_some_and(|e| e.0 <= self.trigger_seq)
            }
            CqNotifyType::Errors => false,
        }
    }

    fn set_error(&mut self, status: Status) -> bool {
        if self.error.is_some() || self.notifier.is_closed() {
            return false;
        }
        self.error = Some(status);
        self.arm = None;
        self.notifier.push(status);
        true
    }
}

/// Something that makes progress for a CQ's consumer when it polls an empty CQ: a connection
/// whose completions go to that CQ (inline progress, [`crate::transport`]).
pub trait Poller: Send + Sync {
    /// One non-blocking pass (try-lock, non-blocking socket I/O); never waits for a lock.
    /// `now` is the pass's clock reading (one per pass, not one per connection).
    fn progress(&self, now: Instant);

    /// The consumer stops polling for now (it is about to block), or a pass found the
    /// connection idle and takes it off the active list: hand background progress back to
    /// the progress thread at once.
    fn release(&self) {}

    /// Whether a pass would find work. `false` takes the connection off the CQ's active list
    /// (an idle connection is the progress thread's), so it must stay `true` for as long as
    /// work waits that only a pass would find; what makes it `true` again must be followed by
    /// [`PollerEntry::activate`].
    fn wants_pass(&self, now: Instant) -> bool {
        let _ = now;
        true
    }
}

/// A connection's entry in one CQ's active list ([`Cq::add_poller`]); the connection keeps it
/// and calls [`PollerEntry::activate`] whenever it gets work.
pub struct PollerEntry {
    cq: Weak<Cq>,
    poller: Weak<dyn Poller>,
    /// In the CQ's active list, or in the hands of a pass that took the list: never listed
    /// twice.
    listed: AtomicBool,
}

impl fmt::Debug for PollerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollerEntry")
            .field("listed", &self.listed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl PollerEntry {
    /// The polls of this entry's CQ so far ([`Cq::polls`]; 0 once the CQ is gone).
    pub(crate) fn cq_polls(&self) -> u64 {
        self.cq.upgrade().map_or(0, |cq| cq.polls())
    }

    /// Puts the connection on the CQ's active list unless it is there. Call it after making
    /// the work visible to [`Poller::wants_pass`]: a pass that drops the connection at the same
    /// moment then either sees the work or lets this call list it again.
    pub fn activate(self: &Arc<Self>) {
        // Pairs with the fence in `Cq::visit` between unlisting and its last look.
        atomic::fence(Ordering::SeqCst);
        if self.listed.load(Ordering::Relaxed) || self.listed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(cq) = self.cq.upgrade() {
            cq.list(self.clone());
        }
    }
}

/// A completion queue. See the [module docs](self) for the rules.
pub struct Cq {
    me: Weak<Cq>,
    max_depth: u32,
    notification: Notification,
    state: Mutex<State>,
    idle: Condvar,
    /// `State::error` is set: read without the lock by every post of the CQ's QPs.
    failed: AtomicBool,
    /// The active list: connections a poll that finds the CQ empty visits (their entries hold
    /// them weakly: a connection holds its CQs through its QP). A leaf lock, held only to add
    /// to the list or take it.
    active: Mutex<Vec<Arc<PollerEntry>>>,
    /// Entries examined by passes (tests).
    visits: AtomicU64,
    /// Entries queued, as of the last change under the state lock: an empty poll reads it
    /// instead of taking the lock (a busy-polling consumer's every turn).
    queued: AtomicUsize,
    /// Polls by consumers (`get_results`), full or empty: what tells the progress thread a
    /// consumer is there although its polls never find the CQ empty (never run a pass).
    polls: AtomicU64,
    /// Notifications issued (for [`Cq::wait`]).
    notified: Mutex<u64>,
    notified_cv: Condvar,
}

impl fmt::Debug for Cq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock();
        f.debug_struct("Cq")
            .field("depth", &s.depth)
            .field("len", &s.ring.len())
            .field("arm", &s.arm)
            .field("error", &s.error)
            .finish()
    }
}

fn check_depth(depth: u32, max_depth: u32) -> Result<usize, Status> {
    if depth == 0 || depth > max_depth {
        return Err(Status::INVALID_PARAMETER);
    }
    usize::try_from(depth).map_err(|_| Status::INVALID_PARAMETER)
}

impl Cq {
    /// `NdkCreateCq`: a CQ of `depth` entries on an adapter whose `MaxCqDepth` is `max_depth`.
    ///
    /// `STATUS_INVALID_PARAMETER` if `depth` is 0 or above `max_depth`.
    #[doc(alias = "NdkCreateCq")]
    pub fn new(depth: u32, max_depth: u32, notification: Notification) -> Result<Arc<Cq>, Status> {
        let depth = check_depth(depth, max_depth)?;
        Ok(Arc::new_cyclic(|me| Cq {
            me: me.clone(),
            max_depth,
            notification,
            state: Mutex::new(State {
                ring: VecDeque::new(),
                depth,
                last_seq: 0,
                notified_seq: 0,
                trigger_seq: 0,
                arm: None,
                error: None,
                notifier: Notifier::default(),
            }),
            idle: Condvar::new(),
            failed: AtomicBool::new(false),
            active: Mutex::new(Vec::new()),
            visits: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            polls: AtomicU64::new(0),
            notified: Mutex::new(0),
            notified_cv: Condvar::new(),
        }))
    }

    fn deliver(&self, guard: MutexGuard<'_, State>) {
        let due = guard.notifier.due.len() as u64;
        deliver(
            &self.state,
            &self.idle,
            guard,
            notifier,
            Some(&self.notification),
        );
        if due > 0 {
            *self.notified.lock() += due;
            self.notified_cv.notify_all();
        }
    }

    /// Adds a connection to poll when the consumer finds this CQ empty; it starts on the
    /// active list. The connection keeps the entry and activates it when it gets work.
    pub fn add_poller(&self, poller: Weak<dyn Poller>) -> Arc<PollerEntry> {
        let entry = Arc::new(PollerEntry {
            cq: self.me.clone(),
            poller,
            listed: AtomicBool::new(true),
        });
        self.list(entry.clone());
        entry
    }

    /// Appends to the active list. Entries of connections that are gone leave when a pass
    /// meets them, or here when the list must grow (a CQ nobody polls stays bounded by its
    /// live connections).
    fn list(&self, entry: Arc<PollerEntry>) {
        let mut list = self.active.lock();
        if list.len() == list.capacity() && !list.is_empty() {
            list.retain(|e| e.poller.strong_count() > 0);
        }
        list.push(entry);
    }

    /// Takes the active list (a pass or a release works on it without the lock; a concurrent
    /// pass of another thread finds it empty meanwhile).
    fn take_active(&self) -> Vec<Arc<PollerEntry>> {
        std::mem::take(&mut *self.active.lock())
    }

    /// Takes the active list for a pass and counts its entries as visited (under the list's
    /// lock, which orders every count: no locked add of its own).
    fn take_active_for_pass(&self) -> Vec<Arc<PollerEntry>> {
        let mut list = self.active.lock();
        let n = list.len() as u64;
        self.visits
            .store(self.visits.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        std::mem::take(&mut *list)
    }

    /// Puts back what a pass kept, after what was listed meanwhile.
    fn put_back(&self, mut kept: Vec<Arc<PollerEntry>>) {
        if kept.is_empty() {
            return;
        }
        let mut list = self.active.lock();
        if list.is_empty() {
            std::mem::swap(&mut *list, &mut kept);
        } else {
            list.append(&mut kept);
        }
    }

    /// Runs a progress pass over this CQ's active connections (inline progress). Callbacks
    /// that become due run after every connection lock is released (and with the list not
    /// locked: it never is while a connection is visited).
    fn progress(&self) {
        let _section = callback::Section::open();
        let mut batch = self.take_active_for_pass();
        if batch.is_empty() {
            return;
        }
        let now = Instant::now();
        batch.retain(|e| Self::visit(e, now));
        self.put_back(batch);
    }

    /// One active entry in a pass: progress if the connection has work; else it leaves the
    /// list (its lease handed back to the progress thread). Returns whether it stays.
    fn visit(entry: &Arc<PollerEntry>, now: Instant) -> bool {
        let Some(p) = entry.poller.upgrade() else {
            return false;
        };
        if p.wants_pass(now) {
            p.progress(now);
            return true;
        }
        p.release();
        entry.listed.store(false, Ordering::SeqCst);
        // Work that came meanwhile: its `activate` saw the entry listed and left it to us.
        atomic::fence(Ordering::SeqCst);
        p.wants_pass(now) && !entry.listed.swap(true, Ordering::AcqRel)
    }

    /// Waits for completions: polls (each empty poll runs a progress pass) for up to `spin`,
    /// then arms for any completion and blocks until one arrives, a notification is issued or
    /// `timeout` has passed; returns how many were moved into `out` (0: timed out). The arm
    /// also calls the CQ's notification callback, as any arm does.
    pub fn wait(&self, out: &mut [Completion], spin: Duration, timeout: Duration) -> usize {
        let start = Instant::now();
        loop {
            let n = self.get_results(out);
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
            let seen = *self.notified.lock();
            // Arming hands the leases back (see `arm`).
            self.arm(CqNotifyType::Any);
            // No progress pass here: it would lease the connections again, and their arrivals
            // would wait for the lease to lapse instead of waking us.
            let n = self.take(out, |c| c);
            if n > 0 {
                return n;
            }
            let mut g = self.notified.lock();
            if *g == seen {
                let left = timeout.saturating_sub(start.elapsed());
                let _ = self.notified_cv.wait_for(&mut g, left);
            }
            if self.error().is_some() || self.is_closed() {
                drop(g);
                return self.get_results(out);
            }
        }
    }

    /// Queues a completion from the engine. `solicited`: a receive whose send carried
    /// `SEND_AND_SOLICIT_EVENT` (for [`CqNotifyType::Solicited`] arms). May run the callback
    /// before returning.
    ///
    /// Errors (the completion is dropped): `STATUS_BUFFER_OVERFLOW` when the CQ is full — it is
    /// then unusable — or already overflowed; `STATUS_INTERNAL_ERROR` after [`Cq::fail`];
    /// `STATUS_INVALID_DEVICE_STATE` after [`Cq::close`].
    pub fn push(&self, completion: Completion, solicited: bool) -> Result<(), Status> {
        let mut s = self.state.lock();
        if s.notifier.is_closed() {
            return Err(Status::INVALID_DEVICE_STATE);
        }
        if let Some(e) = s.error {
            return Err(e);
        }
        if s.ring.len() >= s.depth {
            // Set before the notification is delivered: a consumer that saw it finds the
            // CQ failed (and its QPs' posts refused).
            if s.set_error(Status::BUFFER_OVERFLOW) {
                self.failed.store(true, Ordering::Release);
            }
            self.deliver_or_defer(s);
            return Err(Status::BUFFER_OVERFLOW);
        }
        s.last_seq += 1;
        let seq = s.last_seq;
        let trigger = solicited || !completion.status.is_success();
        if trigger {
            s.trigger_seq = seq;
        }
        s.ring.push_back((seq, completion));
        self.queued.store(s.ring.len(), Ordering::Release);
        let fire = match s.arm {
            Some(CqNotifyType::Any) => true,
            Some(CqNotifyType::Solicited) => trigger,
            Some(CqNotifyType::Errors) | None => false,
        };
        if fire {
            s.fire();
            self.deliver_or_defer(s);
        }
        Ok(())
    }

    /// Delivers due notifications now, or, inside a connection lock's deferral section
    /// ([`crate::callback`]), once this thread has released it.
    fn deliver_or_defer(&self, guard: MutexGuard<'_, State>) {
        if let Some(me) = callback::deferring().then(|| self.me.upgrade()).flatten() {
            drop(guard);
            callback::run_or_defer(move || {
                let s = me.state.lock();
                me.deliver(s);
            });
        } else {
            self.deliver(guard);
        }
    }

    /// `NdkGetCqResultsEx`: moves up to `out.len()` completions, oldest first, into `out`;
    /// returns how many. Never blocks (beyond the CQ's short lock).
    #[doc(alias = "NdkGetCqResultsEx")]
    ///
    /// An empty CQ first runs a progress pass over the connections whose completions come
    /// here (non-blocking reads and sends, try-locks only; see [`crate::transport`]).
    pub fn get_results(&self, out: &mut [Completion]) -> usize {
        self.poll_into(out, |c| c)
    }

    /// A consumer's poll: takes what is queued, else runs a progress pass and takes again.
    fn poll_into<T>(&self, out: &mut [T], convert: impl Fn(Completion) -> T) -> usize {
        if out.is_empty() {
            return 0;
        }
        self.count_poll();
        let n = self.take(out, &convert);
        if n > 0 {
            return n;
        }
        self.progress();
        self.take(out, &convert)
    }

    /// A consumer polled. Not a locked add: a signal that moves, not an exact count (two
    /// consumers polling at once may count one).
    fn count_poll(&self) {
        self.polls.store(
            self.polls.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    /// Polls so far ([`Cq::get_results`] and [`Cq::get_results_basic`] calls, approximately).
    pub(crate) fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }

    /// Hands the arrivals of the connections polled through this CQ back to the progress
    /// thread (their leases lapse now). A lease is taken only by a pass or with the connection
    /// activated, so the active connections are all there is to release.
    fn release_pollers(&self) {
        let batch = self.take_active();
        for e in &batch {
            if let Some(p) = e.poller.upgrade() {
                p.release();
            }
        }
        self.put_back(batch);
    }

    /// Moves up to `out.len()` entries into `out`; an empty CQ is seen without the lock.
    fn take<T>(&self, out: &mut [T], convert: impl Fn(Completion) -> T) -> usize {
        if self.queued.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let mut s = self.state.lock();
        let n = out.len().min(s.ring.len());
        for (slot, (_, c)) in out.iter_mut().zip(s.ring.drain(..n)) {
            *slot = convert(c);
        }
        self.queued.store(s.ring.len(), Ordering::Release);
        n
    }

    /// `NdkGetCqResults`: as [`Cq::get_results`], in the `NDK_RESULT` form.
    #[doc(alias = "NdkGetCqResults")]
    pub fn get_results_basic(&self, out: &mut [BasicCompletion]) -> usize {
        self.poll_into(out, |c| c.to_basic())
    }

    /// `NdkArmCq`: requests one notification of type `ty` (merged with a pending arm). Fires at
    /// once — calling the callback before returning, unless a callback is already running — if
    /// a satisfying entry arrived since the previous notification. Ignored on a failed or closed
    /// CQ.
    #[doc(alias = "NdkArmCq")]
    pub fn arm(&self, ty: CqNotifyType) {
        // A consumer that arms waits for a notification: arrivals its polls leased must reach
        // the progress thread again now, or they would wait for the lease to lapse.
        self.release_pollers();
        let mut s = self.state.lock();
        if s.error.is_some() || s.notifier.is_closed() {
            return;
        }
        let merged = s.arm.map_or(ty, |first| merge_arm(first, ty));
        if s.satisfied_now(merged) {
            s.fire();
            self.deliver(s);
        } else {
            s.arm = Some(merged);
        }
    }

    /// `NdkResizeCq`: changes the depth. Statuses: `INVALID_PARAMETER` (0 or above the maximum),
    /// `INVALID_DEVICE_STATE` (failed or closed CQ), `BUFFER_OVERFLOW` (fewer than the entries
    /// queued; nothing changes).
    #[doc(alias = "NdkResizeCq")]
    pub fn resize(&self, depth: u32) -> Result<(), Status> {
        let depth = check_depth(depth, self.max_depth)?;
        let mut s = self.state.lock();
        if s.error.is_some() || s.notifier.is_closed() {
            return Err(Status::INVALID_DEVICE_STATE);
        }
        if depth < s.ring.len() {
            return Err(Status::BUFFER_OVERFLOW);
        }
        s.depth = depth;
        Ok(())
    }

    /// `NdkControlCqInterruptModeration`: always `STATUS_NOT_SUPPORTED` (the adapter does not
    /// advertise `CQ_INTERRUPT_MODERATION_SUPPORTED`; arguments are not examined).
    #[doc(alias = "NdkControlCqInterruptModeration")]
    pub fn control_interrupt_moderation(&self, interval: u32, count: u32) -> Result<(), Status> {
        let _ = (interval, count);
        Err(Status::NOT_SUPPORTED)
    }

    /// A fatal CQ error: the CQ becomes unusable and a `STATUS_INTERNAL_ERROR` notification is
    /// delivered, armed or not. Does nothing if the CQ already failed or is closed.
    pub fn fail(&self) {
        let mut s = self.state.lock();
        if s.set_error(Status::INTERNAL_ERROR) {
            self.failed.store(true, Ordering::Release);
            self.deliver(s);
        }
    }

    /// `NdkCloseCq`: no more notifications; queued entries are dropped. Waits until a running
    /// callback has returned (unless called from that callback).
    #[doc(alias = "NdkCloseCq")]
    pub fn close(&self) {
        let mut s = self.state.lock();
        close_notifier(&self.idle, &mut s, notifier);
        s.arm = None;
        s.ring.clear();
        self.queued.store(0, Ordering::Release);
        drop(s);
        *self.notified.lock() += 1;
        self.notified_cv.notify_all();
    }

    /// Entries queued.
    pub fn len(&self) -> usize {
        self.state.lock().ring.len()
    }

    /// Whether no entry is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current depth.
    pub fn depth(&self) -> u32 {
        self.state.lock().depth as u32
    }

    /// The pending arm, if any.
    pub fn armed(&self) -> Option<CqNotifyType> {
        self.state.lock().arm
    }

    /// The error that made the CQ unusable (`STATUS_BUFFER_OVERFLOW` or
    /// `STATUS_INTERNAL_ERROR`), if any.
    pub fn error(&self) -> Option<Status> {
        self.state.lock().error
    }

    /// Whether the CQ overflowed or failed ([`Cq::error`] is `Some`), without taking its lock.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Connections examined by this CQ's progress passes so far (tests: a pass must visit the
    /// active connections only).
    #[doc(hidden)]
    pub fn pass_visits(&self) -> u64 {
        self.visits.load(Ordering::Relaxed)
    }

    /// Connections on the active list now (tests; a pass in progress holds its part).
    #[doc(hidden)]
    pub fn active_connections(&self) -> usize {
        self.active.lock().len()
    }

    /// Whether [`Cq::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.state.lock().notifier.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CqNotifyType::{Any, Errors, Solicited};

    /// A connection stand-in: has work while `work` is set.
    #[derive(Default)]
    struct Fake {
        work: AtomicBool,
        passes: AtomicU64,
        released: AtomicU64,
    }

    impl Poller for Fake {
        fn progress(&self, _: Instant) {
            self.passes.fetch_add(1, Ordering::Relaxed);
        }
        fn release(&self) {
            self.released.fetch_add(1, Ordering::Relaxed);
        }
        fn wants_pass(&self, _: Instant) -> bool {
            self.work.load(Ordering::SeqCst)
        }
    }

    fn empty_poll(cq: &Cq) -> u64 {
        let before = cq.pass_visits();
        assert_eq!(cq.get_results(&mut [Completion::EMPTY; 1]), 0);
        cq.pass_visits() - before
    }

    #[test]
    fn a_pass_visits_the_active_list_only() {
        let cq = Cq::new(16, 16, Arc::new(|_| {})).unwrap();
        let fakes: Vec<Arc<Fake>> = (0..4).map(|_| Arc::new(Fake::default())).collect();
        let entries: Vec<Arc<PollerEntry>> = fakes
            .iter()
            .map(|f| {
                let weak: Weak<dyn Poller> = Arc::downgrade(&(f.clone() as Arc<dyn Poller>));
                cq.add_poller(weak)
            })
            .collect();
        // New pollers start listed; idle ones leave at the first pass, handed back.
        fakes[1].work.store(true, Ordering::SeqCst);
        assert_eq!(cq.active_connections(), 4);
        assert_eq!(empty_poll(&cq), 4);
        assert_eq!(cq.active_connections(), 1);
        assert_eq!(fakes[1].passes.load(Ordering::Relaxed), 1);
        assert_eq!(fakes[0].released.load(Ordering::Relaxed), 1);
        assert_eq!(fakes[1].released.load(Ordering::Relaxed), 0);
        assert_eq!(empty_poll(&cq), 1);
        // Activation lists an entry once, however often it is called.
        fakes[3].work.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            entries[3].activate();
            entries[1].activate();
        }
        assert_eq!(cq.active_connections(), 2);
        assert_eq!(empty_poll(&cq), 2);
        assert_eq!(fakes[3].passes.load(Ordering::Relaxed), 1);
        fakes[1].work.store(false, Ordering::SeqCst);
        fakes[3].work.store(false, Ordering::SeqCst);
        assert_eq!(empty_poll(&cq), 2);
        assert_eq!(empty_poll(&cq), 0);
        // An arm hands back the listed connections only.
        entries[2].activate();
        cq.arm(CqNotifyType::Any);
        let released: Vec<u64> = fakes
            .iter()
            .map(|f| f.released.load(Ordering::Relaxed))
            .collect();
        assert_eq!(released, [1, 1, 2, 2]);
        // A connection that is gone leaves at the next pass.
        drop(fakes);
        assert_eq!(cq.active_connections(), 1);
        assert_eq!(empty_poll(&cq), 1);
        assert_eq!(cq.active_connections(), 0);
        assert_eq!(empty_poll(&cq), 0);
    }

    #[test]
    fn entries_of_gone_connections_do_not_pile_up_in_a_cq_nobody_polls() {
        let cq = Cq::new(16, 16, Arc::new(|_| {})).unwrap();
        let live = Arc::new(Fake::default());
        let weak: Weak<dyn Poller> = Arc::downgrade(&(live.clone() as Arc<dyn Poller>));
        let _kept = cq.add_poller(weak);
        for _ in 0..10_000 {
            let gone: Arc<dyn Poller> = Arc::new(Fake::default());
            drop(cq.add_poller(Arc::downgrade(&gone)));
        }
        assert!(
            cq.active_connections() <= 64,
            "{} entries listed",
            cq.active_connections()
        );
    }

    #[test]
    fn merge_table() {
        let table = [
            (Any, [Any, Any, Any]),
            (Errors, [Any, Errors, Solicited]),
            (Solicited, [Any, Solicited, Solicited]),
        ];
        for (first, row) in table {
            for (second, want) in [Any, Errors, Solicited].into_iter().zip(row) {
                assert_eq!(merge_arm(first, second), want, "{first:?} then {second:?}");
            }
        }
    }
}
