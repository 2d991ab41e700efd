//! [`Request`]: the outcome of an NDK call that may complete later.
//!
//! The NDK has three completion callbacks — `NdkCreateCompletion` for creates,
//! `NdkRequestCompletion` for asynchronous requests (connect, accept, register, …) and
//! `NdkCloseCompletion` for closes — each paired with a call that returns `STATUS_PENDING`. In
//! Rust all three are a [`Request<T>`]: the provider either completes it before returning (the
//! NDK's inline `STATUS_SUCCESS` or inline failure) or later, from its own thread (the NDK's
//! `STATUS_PENDING` followed by the callback). The consumer waits for it, polls it, or hands it
//! a callback with [`Request::on_complete`], which runs exactly once.
//!
//! A `Request<T>` is also a [`Future`]: `request.await` works in any async runtime (the waker is
//! woken from the provider's completion, whatever thread that is on), so netdirect code drops
//! into tokio or smol without a thread per request. Waiting with a deadline gives a
//! [`WaitError`] that says whether the request failed or is still pending (and hands it back).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use netdirect_types::Status;
use parking_lot::{Condvar, Mutex, MutexGuard};

type Callback<T> = Box<dyn FnOnce(Result<T, Status>) + Send>;

/// A provider's look at a thread blocked in [`Request::wait`] or [`Request::wait_timeout`]
/// ([`Request::pending_watched`]).
type Watch = Box<dyn Fn(Duration) + Send + Sync>;

/// How often a blocked wait calls its request's watch.
pub const WATCH_PERIOD: Duration = Duration::from_millis(100);

enum Slot<T> {
    /// Not complete: the callback to run, or the waker of a task awaiting it.
    Pending(Option<Callback<T>>, Option<Waker>),
    Done(Result<T, Status>),
    Taken,
}

struct Shared<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
    watch: Option<Watch>,
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
            Slot::Pending(..) => "pending",
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
                watch: None,
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
        Self::pending_with(None)
    }

    /// [`Request::pending`], with a watch over the threads that block waiting for it: while a
    /// thread is blocked in [`Request::wait`] or [`Request::wait_timeout`], `watch` runs on that
    /// thread about every [`WATCH_PERIOD`] (no lock of the request held) with how long this wait
    /// has been blocked. A provider uses it to see a wait that cannot end, one for an answer
    /// only the waiting thread could give, and completes the request (from inside `watch` or
    /// elsewhere) instead of letting the thread stall. Awaiting and [`Request::on_complete`]
    /// block no thread and never call it.
    pub fn pending_watched(
        watch: impl Fn(Duration) + Send + Sync + 'static,
    ) -> (Request<T>, Completer<T>) {
        Self::pending_with(Some(Box::new(watch)))
    }

    fn pending_with(watch: Option<Watch>) -> (Request<T>, Completer<T>) {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot::Pending(None, None)),
            ready: Condvar::new(),
            watch,
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
            Slot::Pending(..) => Status::PENDING,
            Slot::Done(Ok(_)) | Slot::Taken => Status::SUCCESS,
            Slot::Done(Err(s)) => *s,
        }
    }

    /// Whether the request is still pending.
    pub fn is_pending(&self) -> bool {
        matches!(&*self.shared.slot.lock(), Slot::Pending(..))
    }

    /// Blocks until the request completes.
    pub fn wait(self) -> Result<T, Status> {
        let start = Instant::now();
        let mut slot = self.shared.slot.lock();
        while matches!(&*slot, Slot::Pending(..)) {
            match &self.shared.watch {
                None => self.shared.ready.wait(&mut slot),
                Some(watch) => {
                    let waited = self.shared.ready.wait_for(&mut slot, WATCH_PERIOD);
                    if waited.timed_out() && matches!(&*slot, Slot::Pending(..)) {
                        MutexGuard::unlocked(&mut slot, || watch(start.elapsed()));
                    }
                }
            }
        }
        Self::take(&mut slot)
    }

    /// Blocks until the request completes or `timeout` passes. A request still pending comes
    /// back in [`WaitError::TimedOut`], to wait again or drop; `?` turns either error into a
    /// [`Status`] (`STATUS_IO_TIMEOUT` for a timeout).
    ///
    /// ```
    /// use netdirect::{Request, WaitError};
    /// use netdirect_types::Status;
    /// use std::time::Duration;
    /// let (req, done) = Request::<u32>::pending();
    /// let req = match req.wait_timeout(Duration::from_millis(1)) {
    ///     Err(WaitError::TimedOut(req)) => req,
    ///     other => panic!("{other:?}"),
    /// };
    /// done.complete(Ok(7));
    /// assert_eq!(req.wait_timeout(Duration::from_secs(1)).map_err(Status::from), Ok(7));
    /// ```
    pub fn wait_timeout(self, timeout: Duration) -> Result<T, WaitError<T>> {
        let start = Instant::now();
        let deadline = start + timeout;
        {
            let mut slot = self.shared.slot.lock();
            while matches!(&*slot, Slot::Pending(..)) {
                let until = match &self.shared.watch {
                    Some(_) => deadline.min(Instant::now() + WATCH_PERIOD),
                    None => deadline,
                };
                let timed_out = self.shared.ready.wait_until(&mut slot, until).timed_out();
                if !matches!(&*slot, Slot::Pending(..)) {
                    break;
                }
                if timed_out && Instant::now() >= deadline {
                    break;
                }
                if let (true, Some(watch)) = (timed_out, &self.shared.watch) {
                    MutexGuard::unlocked(&mut slot, || watch(start.elapsed()));
                }
            }
            if !matches!(&*slot, Slot::Pending(..)) {
                return Self::take(&mut slot).map_err(WaitError::Failed);
            }
        }
        Err(WaitError::TimedOut(self))
    }

    fn take(slot: &mut Slot<T>) -> Result<T, Status> {
        match std::mem::replace(slot, Slot::Taken) {
            Slot::Done(r) => r,
            Slot::Pending(..) | Slot::Taken => Err(Status::INVALID_DEVICE_STATE),
        }
    }

    /// Runs `f` with the outcome exactly once: now if the request is complete, otherwise on the
    /// provider's thread when it completes (the NDK's completion callback; it must not block).
    pub fn on_complete(self, f: impl FnOnce(Result<T, Status>) + Send + 'static) {
        let mut slot = self.shared.slot.lock();
        match &mut *slot {
            Slot::Pending(cb, _) => *cb = Some(Box::new(f)),
            _ => {
                let r = Self::take(&mut slot);
                drop(slot);
                f(r);
            }
        }
    }
}

/// Awaiting a request: ready with its outcome once the provider completes it. A request given
/// a callback with [`Request::on_complete`] cannot be awaited (that consumes it).
impl<T: Send + 'static> Future for Request<T> {
    type Output = Result<T, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.shared.slot.lock();
        match &mut *slot {
            Slot::Pending(_, waker) => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            _ => Poll::Ready(Self::take(&mut slot)),
        }
    }
}

/// Why [`Request::wait_timeout`] returned without a value.
pub enum WaitError<T> {
    /// The request completed with this failure.
    Failed(Status),
    /// The deadline passed first; the request is still pending and comes back.
    TimedOut(Request<T>),
}

impl<T> WaitError<T> {
    /// The failure's status, or `STATUS_IO_TIMEOUT` for a timeout.
    pub fn status(&self) -> Status {
        match self {
            WaitError::Failed(s) => *s,
            WaitError::TimedOut(_) => Status::IO_TIMEOUT,
        }
    }
}

impl<T> From<WaitError<T>> for Status {
    fn from(e: WaitError<T>) -> Status {
        e.status()
    }
}

impl<T> std::fmt::Debug for WaitError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitError::Failed(s) => write!(f, "Failed({s:?})"),
            WaitError::TimedOut(_) => f.write_str("TimedOut"),
        }
    }
}

impl<T> std::fmt::Display for WaitError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitError::Failed(s) => write!(f, "request failed: {s}"),
            WaitError::TimedOut(_) => f.write_str("request still pending at the deadline"),
        }
    }
}

impl<T> std::error::Error for WaitError<T> {}

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
            Slot::Pending(Some(cb), _) => {
                drop(slot);
                cb(result);
            }
            Slot::Pending(None, waker) => {
                *slot = Slot::Done(result);
                drop(slot);
                shared.ready.notify_all();
                if let Some(w) = waker {
                    w.wake();
                }
            }
            done => *slot = done,
        }
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let mut slot = shared.slot.lock();
            if let Slot::Pending(cb, waker) = &mut *slot {
                let (cb, waker) = (cb.take(), waker.take());
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
                        if let Some(w) = waker {
                            w.wake();
                        }
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
        let Err(WaitError::TimedOut(req)) = req.wait_timeout(Duration::from_millis(10)) else {
            panic!("a pending request times out");
        };
        assert!(req.is_pending());
        done.complete(Ok(3));
        assert_eq!(req.wait_timeout(Duration::from_secs(5)).unwrap(), 3);
        let failed = Request::<u8>::failed(Status::CONNECTION_REFUSED);
        let e = failed.wait_timeout(Duration::from_secs(1)).unwrap_err();
        assert_eq!(Status::from(e), Status::CONNECTION_REFUSED);
    }

    /// A watch that completes its own request once the wait has blocked 300 ms, as a provider
    /// does for a wait that cannot end; it runs only while a thread blocks.
    fn self_completing() -> (Request<u8>, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let done = Arc::new(Mutex::new(None::<Completer<u8>>));
        let (c, d) = (calls.clone(), done.clone());
        let (req, completer) = Request::pending_watched(move |blocked| {
            c.fetch_add(1, Ordering::SeqCst);
            if blocked >= Duration::from_millis(300) {
                if let Some(done) = d.lock().take() {
                    done.complete(Err(Status::IO_TIMEOUT));
                }
            }
        });
        *done.lock() = Some(completer);
        (req, calls)
    }

    #[test]
    fn a_watch_sees_blocked_waits_and_may_end_them() {
        let (req, calls) = self_completing();
        let start = Instant::now();
        assert_eq!(req.wait(), Err(Status::IO_TIMEOUT));
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(calls.load(Ordering::SeqCst) >= 2);

        let (req, calls) = self_completing();
        let Err(WaitError::TimedOut(req)) = req.wait_timeout(Duration::from_millis(150)) else {
            panic!("the watch lets a short wait time out");
        };
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let e = req.wait_timeout(Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.status(), Status::IO_TIMEOUT);

        let (req, calls) = self_completing();
        req.on_complete(|_| {});
        std::thread::sleep(WATCH_PERIOD * 2);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "no thread blocks, no watch"
        );
    }

    /// A waker that counts its wakes, and a minimal executor step.
    struct Count(AtomicU32);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn awaiting_wakes_on_completion_from_another_thread() {
        let (mut req, done) = Request::<u8>::pending();
        let count = Arc::new(Count(AtomicU32::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut req).poll(&mut cx).is_pending());
        std::thread::spawn(move || done.complete(Ok(9)))
            .join()
            .unwrap();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "completion wakes the task"
        );
        assert_eq!(Pin::new(&mut req).poll(&mut cx), Poll::Ready(Ok(9)));
        // A dropped completer wakes too, with CANCELLED.
        let (mut req, done) = Request::<u8>::pending();
        assert!(Pin::new(&mut req).poll(&mut cx).is_pending());
        drop(done);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(
            Pin::new(&mut req).poll(&mut cx),
            Poll::Ready(Err(Status::CANCELLED))
        );
    }
}
