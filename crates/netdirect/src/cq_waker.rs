//! Awaiting a CQ: completions as a `Future`, through the NDK's own arming rules.
//!
//! A [`CqWaker`] is made before the CQ; its [`CqWaker::notification`] is the CQ's notification
//! callback. [`CqWaker::completions`] then polls the CQ and, when it is empty, arms it for the
//! next completion (`NdkArmCq` with `NDK_CQ_NOTIFY_ANY`) and sleeps until the notification wakes
//! the task. NDK §7.4 has a provider fire an arm at once when an entry arrived after the last
//! notification, so a completion that lands between the empty poll and the arm is not missed. It works with any provider and any async runtime (tokio, smol, a hand-rolled
//! executor): nothing here spawns a thread or depends on a reactor.
//!
//! ```
//! # use netdirect::{Cq, CqWaker};
//! # async fn demo(adapter: &dyn netdirect::Adapter) -> Result<(), netdirect_types::Status> {
//! let waker = CqWaker::new();
//! let mut cq = adapter.create_cq(64, waker.notification(), None).wait()?;
//! let mut out = [netdirect_types::Completion::EMPTY; 16];
//! let n = waker.completions(&mut *cq, &mut out).await;
//! # let _ = n;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use netdirect_types::{Completion, CqNotifyType, Status};
use parking_lot::Mutex;

use crate::callbacks::CqNotification;
use crate::cq::Cq;

#[derive(Default)]
struct Shared {
    /// The task to wake at the next notification.
    waker: Option<Waker>,
    /// A notification arrived since the task last looked (it may have been before it slept).
    notified: bool,
    /// The last notification's status when it was not a success (a CQ error).
    error: Option<Status>,
}

/// The notification side of an awaitable CQ (see the module docs).
#[derive(Clone, Default)]
pub struct CqWaker {
    shared: Arc<Mutex<Shared>>,
}

impl std::fmt::Debug for CqWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CqWaker")
    }
}

impl CqWaker {
    /// A waker for one CQ.
    pub fn new() -> CqWaker {
        CqWaker::default()
    }

    /// The notification callback to create the CQ with: it wakes the task awaiting
    /// [`CqWaker::completions`] (and remembers a CQ error, which that future then reports).
    pub fn notification(&self) -> CqNotification {
        let shared = self.shared.clone();
        Arc::new(move |status: Status| {
            let waker = {
                let mut s = shared.lock();
                s.notified = true;
                if !status.is_success() {
                    s.error = Some(status);
                }
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        })
    }

    /// A CQ error the notification reported (`STATUS_BUFFER_OVERFLOW`, `STATUS_INTERNAL_ERROR`),
    /// if one did: the CQ delivers nothing more after it.
    pub fn error(&self) -> Option<Status> {
        self.shared.lock().error
    }

    /// Completes with at least one completion moved into `out` (their count), or with 0 when
    /// the CQ reported an error ([`CqWaker::error`] says which) or `out` is empty.
    pub fn completions<'a>(
        &'a self,
        cq: &'a mut dyn Cq,
        out: &'a mut [Completion],
    ) -> Completions<'a> {
        Completions {
            waker: self,
            cq,
            out,
        }
    }
}

/// The future of [`CqWaker::completions`].
pub struct Completions<'a> {
    waker: &'a CqWaker,
    cq: &'a mut dyn Cq,
    out: &'a mut [Completion],
}

impl std::fmt::Debug for Completions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Completions")
    }
}

impl Future for Completions<'_> {
    type Output = usize;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        let this = self.get_mut();
        if this.out.is_empty() {
            return Poll::Ready(0);
        }
        let n = this.cq.get_results_ex(this.out);
        if n > 0 {
            return Poll::Ready(n);
        }
        {
            let mut s = this.waker.shared.lock();
            if s.error.is_some() {
                return Poll::Ready(0);
            }
            s.notified = false;
            s.waker = Some(cx.waker().clone());
        }
        // Arm. NDK §7.4: an arm with an entry that arrived after the last notification fires at
        // once, which closes the race "polled empty, entry arrives, arm"; so no poll after the
        // arm (a provider's poll may take back from its progress thread what the arm gave it).
        this.cq.arm(CqNotifyType::Any);
        let mut s = this.waker.shared.lock();
        if s.notified || s.error.is_some() {
            // The notification ran during the arm or since: poll again at once.
            s.waker = None;
            drop(s);
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}
