//! The shared receive queue: posted receives any attached QP may consume, with the NDK's
//! low-water notification (§3.6, §7.5).
//!
//! An [`Srq<T>`] holds opaque receive entries `T` (the transport's choice: typically the
//! request context and the leases of the checked SGEs) in posting order. The consumer
//! [`Srq::post`]s (`NdkSrqReceive`), the engine [`Srq::take`]s the oldest when a Send arrives on
//! any attached QP. Plain data behind one `parking_lot::Mutex`, no thread of its own; shared
//! with an `Arc`.
//!
//! # Counting
//!
//! The SRQ counts entries *queued*: posted and not yet taken. Both the depth limit and the
//! threshold use that count. Once taken, a receive belongs to the QP that took it; its completion
//! goes to that QP's receive CQ and it no longer occupies the SRQ.
//!
//! # Threshold notification (§7.5)
//!
//! * While armed with a non-zero threshold, a [`Srq::take`] that leaves fewer than `threshold`
//!   entries queued disarms the SRQ and notifies once with `STATUS_SUCCESS`.
//! * [`Srq::modify`] with a non-zero threshold sets it and re-arms; if fewer than the new
//!   threshold are already queued, it notifies at once (and stays disarmed).
//!   A threshold of 0 keeps the threshold *and* the armed/disarmed state.
//! * At creation, a non-zero threshold with a callback arms the SRQ (§10.20), but does not
//!   notify at once even though the new SRQ is empty: the count has not *fallen* below anything
//!   yet, and an immediate notification for a queue the consumer has not filled would be noise.
//!   The first take that leaves fewer than `threshold` entries notifies.
//! * Without a callback nothing is ever armed or notified.
//!
//! # Errors
//!
//! [`Srq::fail`] (fatal error): the SRQ becomes unusable (posts fail, takes find nothing) and a
//! `STATUS_INTERNAL_ERROR` notification is delivered, armed or not, once.
//!
//! Notifications follow the CQ's delivery rules ([`crate::cq`]): serialized per SRQ, delivered
//! on the thread whose call made them due (or the one running a callback at the time), with no
//! lock held, re-entrant, and [`Srq::close`] waits for a running callback.
//!
//! # Decisions (where the NDK is silent, §10)
//!
//! | case | decision |
//! |---|---|
//! | depth 0, depth above the adapter's `MaxSrqDepth` (0: no SRQ support), SGE limit above the adapter's | `STATUS_INVALID_PARAMETER` |
//! | SGE limit 0 | allowed: receives with no SGE (zero-length messages) |
//! | threshold above the depth | allowed (notifies as soon as a take leaves fewer than `threshold`) |
//! | arming at creation (§10.20) | armed if threshold ≠ 0 and a callback is given; no immediate notification |
//! | post into a full SRQ (§10.1) | `STATUS_NO_MORE_ENTRIES` (NDSPI) |
//! | post with more SGEs than the SRQ's limit (§10.1) | `STATUS_DATA_OVERRUN` (NDSPI) |
//! | post or modify after [`Srq::fail`] or [`Srq::close`] | `STATUS_INVALID_DEVICE_STATE` |
//! | modify below the entries queued (§10.9) | `STATUS_BUFFER_OVERFLOW` (NDSPI), nothing changes (not the threshold either) |
//! | modify: depth above the maximum | `STATUS_INVALID_PARAMETER`, nothing changes |
//! | entries left at close or failure | kept until [`Srq::drain`] hands them back (for the caller to release or complete) |

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use netdirect_types::Status;
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::cq::{Notification, Notifier, close_notifier, deliver};

/// The adapter's SRQ limits (`NDK_ADAPTER_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrqLimits {
    /// `MaxSrqDepth` (0: SRQs unsupported).
    pub max_depth: u32,
    /// `MaxReceiveRequestSge`.
    pub max_sge: u32,
}

struct State<T> {
    queue: VecDeque<T>,
    depth: usize,
    threshold: u32,
    armed: bool,
    failed: bool,
    notifier: Notifier,
}

fn notifier<T>(s: &mut State<T>) -> &mut Notifier {
    &mut s.notifier
}

impl<T> State<T> {
    fn below_threshold(&self) -> bool {
        (self.queue.len() as u64) < u64::from(self.threshold)
    }

    fn unusable(&self) -> bool {
        self.failed || self.notifier.is_closed()
    }
}

/// A shared receive queue of entries `T`. See the [module docs](self) for the rules.
pub struct Srq<T> {
    limits: SrqLimits,
    max_sge: u32,
    notification: Option<Notification>,
    state: Mutex<State<T>>,
    idle: Condvar,
}

impl<T> fmt::Debug for Srq<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock();
        f.debug_struct("Srq")
            .field("depth", &s.depth)
            .field("len", &s.queue.len())
            .field("threshold", &s.threshold)
            .field("armed", &s.armed)
            .field("failed", &s.failed)
            .finish()
    }
}

fn check_depth(depth: u32, max_depth: u32) -> Result<usize, Status> {
    if depth == 0 || depth > max_depth {
        return Err(Status::INVALID_PARAMETER);
    }
    usize::try_from(depth).map_err(|_| Status::INVALID_PARAMETER)
}

impl<T> Srq<T> {
    /// `NdkCreateSrq`: an SRQ of `depth` entries of at most `max_sge` SGEs, notifying through
    /// `notification` when fewer than `notify_threshold` are queued (0: not armed).
    ///
    /// `STATUS_INVALID_PARAMETER` if `depth` is 0 or above `limits.max_depth`, or `max_sge` is
    /// above `limits.max_sge`.
    #[doc(alias = "NdkCreateSrq")]
    pub fn new(
        depth: u32,
        max_sge: u32,
        notify_threshold: u32,
        limits: SrqLimits,
        notification: Option<Notification>,
    ) -> Result<Arc<Srq<T>>, Status> {
        let depth = check_depth(depth, limits.max_depth)?;
        if max_sge > limits.max_sge {
            return Err(Status::INVALID_PARAMETER);
        }
        let armed = notify_threshold != 0 && notification.is_some();
        Ok(Arc::new(Srq {
            limits,
            max_sge,
            notification,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                depth,
                threshold: notify_threshold,
                armed,
                failed: false,
                notifier: Notifier::default(),
            }),
            idle: Condvar::new(),
        }))
    }

    fn deliver(&self, guard: MutexGuard<'_, State<T>>) {
        deliver(
            &self.state,
            &self.idle,
            guard,
            notifier,
            self.notification.as_ref(),
        );
    }

    /// `NdkSrqReceive`: queues `entry`, a receive of `sge_count` SGEs (already checked by the
    /// caller).
    ///
    /// Statuses: `INVALID_DEVICE_STATE` (failed or closed), `DATA_OVERRUN` (more SGEs than the
    /// SRQ's limit), `NO_MORE_ENTRIES` (the SRQ is full). On failure `entry` is dropped.
    #[doc(alias = "NdkSrqReceive")]
    pub fn post(&self, sge_count: usize, entry: T) -> Result<(), Status> {
        let mut s = self.state.lock();
        if s.unusable() {
            return Err(Status::INVALID_DEVICE_STATE);
        }
        if sge_count as u64 > u64::from(self.max_sge) {
            return Err(Status::DATA_OVERRUN);
        }
        if s.queue.len() >= s.depth {
            return Err(Status::NO_MORE_ENTRIES);
        }
        s.queue.push_back(entry);
        Ok(())
    }

    /// Takes the oldest queued entry for a QP (`None` if empty, failed or closed). Notifies if
    /// armed and fewer than the threshold remain — possibly calling the callback before
    /// returning.
    pub fn take(self: &Arc<Self>) -> Option<T>
    where
        T: 'static,
    {
        let mut s = self.state.lock();
        if s.unusable() {
            return None;
        }
        let entry = s.queue.pop_front()?;
        if s.armed && s.below_threshold() {
            s.armed = false;
            s.notifier.push(Status::SUCCESS);
            if crate::callback::deferring() {
                // Taken under a connection lock: notify once it is released.
                drop(s);
                let me = self.clone();
                crate::callback::run_or_defer(move || {
                    let s = me.state.lock();
                    me.deliver(s);
                });
            } else {
                self.deliver(s);
            }
        }
        Some(entry)
    }

    /// `NdkModifySrq`: `depth` 0 keeps the depth; `notify_threshold` 0 keeps the threshold and
    /// the armed state, otherwise sets it and re-arms — notifying at once if fewer are queued.
    ///
    /// Statuses: `INVALID_DEVICE_STATE` (failed or closed), `INVALID_PARAMETER` (depth above the
    /// adapter's maximum), `BUFFER_OVERFLOW` (depth below the entries queued). On failure
    /// nothing changes.
    #[doc(alias = "NdkModifySrq")]
    pub fn modify(&self, depth: u32, notify_threshold: u32) -> Result<(), Status> {
        let mut s = self.state.lock();
        if s.unusable() {
            return Err(Status::INVALID_DEVICE_STATE);
        }
        if depth != 0 {
            let depth = check_depth(depth, self.limits.max_depth)?;
            if depth < s.queue.len() {
                return Err(Status::BUFFER_OVERFLOW);
            }
            s.depth = depth;
        }
        if notify_threshold != 0 && self.notification.is_some() {
            s.threshold = notify_threshold;
            if s.below_threshold() {
                s.armed = false;
                s.notifier.push(Status::SUCCESS);
                self.deliver(s);
            } else {
                s.armed = true;
            }
        } else if notify_threshold != 0 {
            s.threshold = notify_threshold;
        }
        Ok(())
    }

    /// A fatal SRQ error: the SRQ becomes unusable and a `STATUS_INTERNAL_ERROR` notification is
    /// delivered, armed or not. Does nothing if already failed or closed.
    pub fn fail(&self) {
        let mut s = self.state.lock();
        if s.unusable() {
            return;
        }
        s.failed = true;
        s.armed = false;
        s.notifier.push(Status::INTERNAL_ERROR);
        self.deliver(s);
    }

    /// Removes and returns every queued entry, oldest first, without notifying (for close, or
    /// after a failure, so the caller can release them).
    pub fn drain(&self) -> Vec<T> {
        self.state.lock().queue.drain(..).collect()
    }

    /// `NdkCloseSrq`: no more notifications, posts or takes. Waits until a running callback has
    /// returned (unless called from that callback). Queued entries stay for [`Srq::drain`].
    #[doc(alias = "NdkCloseSrq")]
    pub fn close(&self) {
        let mut s = self.state.lock();
        close_notifier(&self.idle, &mut s, notifier);
        s.armed = false;
    }

    /// Entries queued.
    pub fn len(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// Whether no entry is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current depth.
    pub fn depth(&self) -> u32 {
        self.state.lock().depth as u32
    }

    /// The SGE limit per receive.
    pub fn max_sge(&self) -> u32 {
        self.max_sge
    }

    /// The current notify threshold.
    pub fn threshold(&self) -> u32 {
        self.state.lock().threshold
    }

    /// Whether a threshold notification is armed.
    pub fn is_armed(&self) -> bool {
        self.state.lock().armed
    }

    /// Whether [`Srq::fail`] made the SRQ unusable.
    pub fn is_failed(&self) -> bool {
        self.state.lock().failed
    }
}
