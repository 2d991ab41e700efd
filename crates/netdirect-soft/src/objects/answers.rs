//! Answers this process owes itself (§10 table, row 33).
//!
//! When both ends of a connection are connectors of this process, each end can see whether the
//! other end's consumer owes an answer: the passive end's connect event has run and nobody has
//! accepted or rejected yet, or the active end's connect has completed and nobody has called
//! `complete_connect` or rejected yet. A thread that **blocks** waiting for its own end (a
//! connect waiting for the accept, an accept waiting for the complete) while the other end
//! owes that answer is, in the usual program, the thread that would give it: driving both ends
//! from one thread in the order connect → wait → accept waits for itself. The connector's
//! request watches its blocked waits ([`netdirect::Request::pending_watched`]); once the wait
//! has blocked for [`ANSWER_GRACE`], the answer has been owed that long, and no consumer has
//! called into the other end's adapter for as long (creating an object, a connector call: a
//! thread that prepares the answer), the request fails `STATUS_POSSIBLE_DEADLOCK` and the
//! connection is given up, instead of the thread stalling until the MPA Reply timeout
//! (connect, 10 s, then `STATUS_IO_TIMEOUT`) or forever (accept).
//!
//! The provider cannot know which thread will answer, so this is a judgement, not a proof: a
//! program whose other thread holds the request longer than [`ANSWER_GRACE`] without calling
//! into its adapter, while this one blocks in `wait`, gets the same failure. Waits that block
//! no thread (awaiting the request, `on_complete`) are never watched, and peers in other
//! processes never are.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
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

/// When a consumer last called into an adapter (milliseconds since [`epoch`], plus one; 0:
/// never); the calls that count are the control calls that prepare an answer: creating
/// objects, connector calls.
#[derive(Debug, Clone, Default)]
pub(crate) struct Activity(Arc<AtomicU64>);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Activity {
    /// A consumer called into the adapter now.
    pub(crate) fn touch(&self) {
        self.0.store(
            millis(epoch().elapsed()).saturating_add(1),
            Ordering::Relaxed,
        );
    }

    /// How long since the last call.
    fn idle(&self) -> Duration {
        match self.0.load(Ordering::Relaxed) {
            0 => Duration::MAX,
            last => {
                let now = millis(epoch().elapsed()).saturating_add(1);
                Duration::from_millis(now.saturating_sub(last))
            }
        }
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

/// Whether a wait that has `blocked` this long is waiting for the end `other`, in this
/// process, whose consumer has owed its answer for [`ANSWER_GRACE`] too, with no call into
/// that end's adapter for as long.
pub(crate) fn waits_for_itself(other: Key, blocked: Duration) -> bool {
    if blocked < ANSWER_GRACE {
        return false;
    }
    // The table's lock is let go before the end's own.
    let Some(owed) = ENDS.lock().get(&other).and_then(Weak::upgrade) else {
        return false;
    };
    let since = *owed.since.lock();
    since.is_some_and(|t| t.elapsed() >= ANSWER_GRACE) && owed.activity.idle() >= ANSWER_GRACE
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
        // A thread calling into the adapter is preparing the answer.
        activity.touch();
        assert!(!waits_for_itself(key, ANSWER_GRACE), "touched just now");
        activity.0.store(1, Ordering::Relaxed);
        let _ = epoch();
        assert_eq!(
            waits_for_itself(key, ANSWER_GRACE),
            epoch().elapsed() >= ANSWER_GRACE,
            "touched at the epoch"
        );
        activity.0.store(0, Ordering::Relaxed);
        assert!(waits_for_itself(key, ANSWER_GRACE), "never touched");
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
