//! [`Request`]: the outcome of an NDK call that may complete later.
//!
//! The NDK has three completion callbacks — `NdkCreateCompletion` for creates,
//! `NdkRequestCompletion` for asynchronous requests (connect, accept, register, …) and
//! `NdkCloseCompletion` for closes — each paired with a call that returns `STATUS_PENDING`. In
//! Rust all three are a [`Request<T>`]: the provider either completes it before returning (the
//! NDK's inline `STATUS_SUCCESS` or inline failure) or later, from its own thread (the NDK's
//! `STATUS_PENDING` followed by the callback). The consumer waits for it, polls it, or hands it
//! a callback with [`Request::on_complete`], which runs exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use netdirect_types::Status;
use parking_lot::{Condvar, Mutex};

type Callback<T> = Box<dyn FnOnce(Result<T, Status>) + Send>;

enum Slot<T> {
    Pending(Option<Callback<T>>),
    Done(Result<T, Status>),
    Taken,
}

struct Shared<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

/// A call's outcome, now or later.
///
/// ```
/// use netdirect::{Request, Completer};
/// use netdirect_types::Status;
/// let (req, done) = Request::<u32>::pending();
/// assert_eq!(req.status(), Status::PENDING);
/// std::thread::spawn(move || done.complete(Ok(7)));
/// assert_eq!(req.wait(), Ok(7));
/// assert_eq!(Request::<()>::failed(Status::CONNECTION_REFUSED).wait(), Err(Status::CONNECTION_REFUSED));
/// ```
#[doc(alias = "NdkRequestCompletion")]
#[doc(alias = "NdkCreateCompletion")]
#[doc(alias = "NdkCloseCompletion")]
#[doc(alias = "NDK_FN_REQUEST_COMPLETION")]
#[doc(alias = "NDK_FN_CREATE_COMPLETION")]
#[doc(alias = "NDK_FN_CLOSE_COMPLETION")]
#[must_use = "a request completes whether or not it is waited for; drop it explicitly to ignore it"]
pub struct Request<T> {
    shared: Arc<Shared<T>>,
}

/// The provider's end of a pending [`Request`]. Dropping it without completing completes the
/// request with `STATUS_CANCELLED`, so a request can never hang on a provider bug.
pub struct Completer<T> {
    shared: Option<Arc<Shared<T>>>,
}

impl<T> std::fmt::Debug for Request<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &*self.shared.slot.lock() {
            Slot::Pending(_) => "pending",
            Slot::Done(Ok(_)) => "succeeded",
            Slot::Done(Err(_)) => "failed",
            Slot::Taken => "taken",
        };
        write!(f, "Request({state})")
    }
}

impl<T> std::fmt::Debug for Completer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Completer")
    }
}

impl<T: Send + 'static> Request<T> {
    /// A request completed at once (the NDK's inline return).
    pub fn ready(result: Result<T, Status>) -> Request<T> {
        Request {
            shared: Arc::new(Shared {
                slot: Mutex::new(Slot::Done(result)),
                ready: Condvar::new(),
            }),
        }
    }

    /// A request completed at once with a value.
    pub fn ok(value: T) -> Request<T> {
        Self::ready(Ok(value))
    }

    /// A request failed at once.
    pub fn failed(status: Status) -> Request<T> {
        Self::ready(Err(status))
    }

    /// A pending request and the provider's handle to complete it (`STATUS_PENDING`).
    pub fn pending() -> (Request<T>, Completer<T>) {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot::Pending(None)),
            ready: Condvar::new(),
        });
        (
            Request {
                shared: shared.clone(),
            },
            Completer {
                shared: Some(shared),
            },
        )
    }

    /// `STATUS_PENDING` while pending, otherwise the outcome's status (`STATUS_SUCCESS` on
    /// success).
    pub fn status(&self) -> Status {
        match &*self.shared.slot.lock() {
            Slot::Pending(_) => Status::PENDING,
            Slot::Done(Ok(_)) | Slot::Taken => Status::SUCCESS,
            Slot::Done(Err(s)) => *s,
        }
    }

    /// Whether the request is still pending.
    pub fn is_pending(&self) -> bool {
        matches!(&*self.shared.slot.lock(), Slot::Pending(_))
    }

    /// Blocks until the request completes.
    pub fn wait(self) -> Result<T, Status> {
        let mut slot = self.shared.slot.lock();
        while matches!(&*slot, Slot::Pending(_)) {
            self.shared.ready.wait(&mut slot);
        }
        Self::take(&mut slot)
    }

    /// Blocks until the request completes or `timeout` passes; gives the request back if it is
    /// still pending.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Result<T, Status>, Request<T>> {
        let deadline = Instant::now() + timeout;
        {
            let mut slot = self.shared.slot.lock();
            while matches!(&*slot, Slot::Pending(_)) {
                if self
                    .shared
                    .ready
                    .wait_until(&mut slot, deadline)
                    .timed_out()
                {
                    break;
                }
            }
            if !matches!(&*slot, Slot::Pending(_)) {
                return Ok(Self::take(&mut slot));
            }
        }
        Err(self)
    }

    fn take(slot: &mut Slot<T>) -> Result<T, Status> {
        match std::mem::replace(slot, Slot::Taken) {
            Slot::Done(r) => r,
            Slot::Pending(_) | Slot::Taken => Err(Status::INVALID_DEVICE_STATE),
        }
    }

    /// Runs `f` with the outcome exactly once: now if the request is complete, otherwise on the
    /// provider's thread when it completes (the NDK's completion callback; it must not block).
    pub fn on_complete(self, f: impl FnOnce(Result<T, Status>) + Send + 'static) {
        let mut slot = self.shared.slot.lock();
        match &mut *slot {
            Slot::Pending(cb) => *cb = Some(Box::new(f)),
            _ => {
                let r = Self::take(&mut slot);
                drop(slot);
                f(r);
            }
        }
    }
}

impl<T: Send + 'static> Completer<T> {
    /// Completes the request: wakes a waiter or runs the callback, on this thread.
    pub fn complete(mut self, result: Result<T, Status>) {
        if let Some(shared) = self.shared.take() {
            Self::finish(&shared, result);
        }
    }

    fn finish(shared: &Shared<T>, result: Result<T, Status>) {
        let mut slot = shared.slot.lock();
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Pending(Some(cb)) => {
                drop(slot);
                cb(result);
            }
            Slot::Pending(None) => {
                *slot = Slot::Done(result);
                drop(slot);
                shared.ready.notify_all();
            }
            done => *slot = done,
        }
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let mut slot = shared.slot.lock();
            if let Slot::Pending(cb) = &mut *slot {
                let cb = cb.take();
                *slot = Slot::Taken;
                match cb {
                    Some(cb) => {
                        drop(slot);
                        cb(Err(Status::CANCELLED));
                    }
                    None => {
                        *slot = Slot::Done(Err(Status::CANCELLED));
                        drop(slot);
                        shared.ready.notify_all();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn callback_runs_once_now_or_later() {
        let hits = Arc::new(AtomicU32::new(0));
        let h = hits.clone();
        Request::ok(1u8).on_complete(move |r| {
            assert_eq!(r, Ok(1));
            h.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        let (req, done) = Request::<u8>::pending();
        let h = hits.clone();
        req.on_complete(move |r| {
            assert_eq!(r, Err(Status::IO_TIMEOUT));
            h.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        done.complete(Err(Status::IO_TIMEOUT));
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn dropped_completer_cancels() {
        let (req, done) = Request::<u8>::pending();
        drop(done);
        assert_eq!(req.wait(), Err(Status::CANCELLED));
    }

    #[test]
    fn wait_timeout_gives_the_request_back() {
        let (req, done) = Request::<u8>::pending();
        let req = req.wait_timeout(Duration::from_millis(10)).unwrap_err();
        assert!(req.is_pending());
        done.complete(Ok(3));
        assert_eq!(req.wait_timeout(Duration::from_secs(5)).unwrap(), Ok(3));
    }
}
