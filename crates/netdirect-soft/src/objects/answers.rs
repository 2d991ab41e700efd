//! Answers this process owes itself (§10 table, row 34).
//!
//! When both ends of a connection are connectors of this process, each end can see whether the
//! other end's consumer owes an answer: the passive end's connect event has run and nobody has
//! accepted or rejected yet, or the active end's connect has completed and nobody has called
//! `complete_connect` or rejected yet. A thread that **blocks** waiting for its own end (a
//! connect waiting for the accept, an accept waiting for the complete) while the other end
//! owes that answer is, in the usual program, the thread that would give it: driving both ends
//! from one thread in the order connect → wait → accept waits for itself. The connector's
//! request watches its blocked waits ([`netdirect::Request::pending_watched`]); once the wait
//! has blocked for [`ANSWER_GRACE`], the answer has been owed that long, and the last consumer
//! call into the other end's adapter (creating an object, a connector call) came from **the
//! waiting thread itself**, the request fails `STATUS_POSSIBLE_DEADLOCK` and the connection is
//! given up, instead of the thread stalling until the MPA Reply timeout (connect, 10 s, then
//! `STATUS_IO_TIMEOUT`) or forever (accept). A server that runs on a thread of its own
//! (`nd bench`: it creates its listener, QPs and buffers there) is never taken for it, however
//! long it takes.
//!
//! The provider cannot know which thread will answer, so this is a judgement, not a proof: a
//! program whose waiting thread set up the other end too, and whose other thread then holds
//! the request longer than [`ANSWER_GRACE`] without calling into that end's adapter, gets the
//! same failure. Waits that block no thread (awaiting the request, `on_complete`) are never
//! watched, and peers in other processes never are.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a wait may block on an answer the other end of its connection, in this process,
/// owes, before it fails `STATUS_POSSIBLE_DEADLOCK`; the answer must have been owed as long.
pub const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// Which end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum End {
    Active,
    Passive,
}

/// One end of one connection: the initiator's address, the responder's, and which end.
pub(crate) type Key = (SocketAddr, SocketAddr, End);

/// Which thread last called into an adapter (a number of this module's, 0: none yet); the
/// calls that count are the control calls that prepare an answer: creating objects, connector
/// calls.
#[derive(Debug, Clone, Default)]
pub(crate) struct Activity(Arc<AtomicU64>);

/// This thread's number (never 0).
fn this_thread() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static ID: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    ID.with(|id| *id)
}

impl Activity {
    /// A consumer called into the adapter, from this thread.
    pub(crate) fn touch(&self) {
        self.0.store(this_thread(), Ordering::Relaxed);
    }

    /// Whether the last call came from this thread.
    fn last_from_this_thread(&self) -> bool {
        self.0.load(Ordering::Relaxed) == this_thread()
    }
}

#[derive(Debug)]
struct OwedState {
    /// Since when the consumer owes an answer (`None`: it owes none now).
    since: Mutex<Option<Instant>>,
    /// Its adapter's.
    activity: Activity,
}

/// Whether an end's consumer owes an answer, and since when.
#[derive(Debug, Clone)]
pub(crate) struct Owed(Arc<OwedState>);

impl Owed {
    /// An end of an adapter with `activity`, owing nothing yet.
    pub(crate) fn new(activity: Activity) -> Owed {
        Owed(Arc::new(OwedState {
            since: Mutex::new(None),
            activity,
        }))
    }

    /// The consumer owes an answer from now (kept if it already did).
    pub(crate) fn owe(&self) {
        self.0.since.lock().get_or_insert_with(Instant::now);
    }

    /// The consumer answered.
    pub(crate) fn settle(&self) {
        *self.0.since.lock() = None;
    }
}

/// The ends of this process's connections, each by its key.
static ENDS: Mutex<BTreeMap<Key, Weak<OwedState>>> = Mutex::new(BTreeMap::new());

/// Makes `owed` the end `key` of a connection until [`unregister`].
pub(crate) fn register(key: Key, owed: &Owed) {
    ENDS.lock().insert(key, Arc::downgrade(&owed.0));
}

/// Forgets the end `key` if it is still `owed`'s.
pub(crate) fn unregister(key: Key, owed: &Owed) {
    let mut ends = ENDS.lock();
    if ends
        .get(&key)
        .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&owed.0)))
    {
        ends.remove(&key);
    }
}

/// Whether a wait that has `blocked` this long, on this thread, is waiting for the end
/// `other`, in this process, whose consumer has owed its answer for [`ANSWER_GRACE`] too, and
/// whose adapter was last called from this thread.
pub(crate) fn waits_for_itself(other: Key, blocked: Duration) -> bool {
    if blocked < ANSWER_GRACE {
        return false;
    }
    // The table's lock is let go before the end's own.
    let Some(owed) = ENDS.lock().get(&other).and_then(Weak::upgrade) else {
        return false;
    };
    let since = *owed.since.lock();
    since.is_some_and(|t| t.elapsed() >= ANSWER_GRACE) && owed.activity.last_from_this_thread()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_owes_from_owe_until_settle_and_leaves_with_its_owner() {
        let key: Key = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            End::Passive,
        );
        let activity = Activity::default();
        activity.touch();
        let owed = Owed::new(activity.clone());
        register(key, &owed);
        assert!(!waits_for_itself(key, ANSWER_GRACE), "owes nothing yet");
        *owed.0.since.lock() = Some(Instant::now() - ANSWER_GRACE);
        assert!(
            !waits_for_itself(key, ANSWER_GRACE / 2),
            "blocked too short"
        );
        assert!(waits_for_itself(key, ANSWER_GRACE));
        owed.owe();
        assert!(waits_for_itself(key, ANSWER_GRACE), "owe keeps the start");
        // Another thread calling into the adapter is preparing the answer.
        let a = activity.clone();
        std::thread::spawn(move || a.touch()).join().unwrap();
        assert!(
            !waits_for_itself(key, ANSWER_GRACE),
            "another thread at work"
        );
        activity.touch();
        assert!(waits_for_itself(key, ANSWER_GRACE), "this thread again");
        owed.settle();
        assert!(!waits_for_itself(key, ANSWER_GRACE));
        owed.owe();
        assert!(!waits_for_itself(key, ANSWER_GRACE), "owed only just now");
        unregister(key, &Owed::new(Activity::default()));
        assert!(
            ENDS.lock().contains_key(&key),
            "only its own end unregisters"
        );
        drop(owed);
        assert!(
            !waits_for_itself(key, ANSWER_GRACE * 2),
            "a dropped end owes nothing"
        );
    }
}
