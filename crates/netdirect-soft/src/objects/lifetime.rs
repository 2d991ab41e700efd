//! The lifetime of antecedents and successors (NDK §2.2, §2.6), written once.
//!
//! Every object that others depend on (its **successors**, §2.2) owns an `Antecedent`; each
//! successor holds a counted `Reference` on it for as long as it may use it. Closing an
//! antecedent marks it closing and completes only when the count is zero: at once (the close
//! returns success) or, while successors remain, when the last of them lets go (the close
//! request pends and completes on the thread that dropped the last reference). What the
//! antecedent gives up at close (a CQ's ring, an SRQ's queue, a PD's slot, a port) is given up
//! in the close's `finish` step, which runs exactly then, so nothing a successor uses goes away
//! while it lives. An antecedent's close also keeps the references *it* holds (on its own
//! antecedents) until its `finish` ran, so a chain (adapter ← PD ← QP) unwinds in order.
//!
//! | antecedent | successors holding a reference | released when |
//! |---|---|---|
//! | adapter | PD, CQ, connector, listener, shared endpoint | their close completes (or they are dropped) |
//! | PD | MR, MW, QP, SRQ | MW/SRQ: their close; MR: its close's completion (after its bound windows are unbound); QP: as below |
//! | CQ, SRQ | QP | the QP is closed and its connection has flushed (the progress thread completes nothing into them after that) |
//! | listener | connectors it delivered; its own socket until the progress thread closed it | connector closed; socket closed |
//! | shared endpoint | connectors connected over it | connector closed |
//!
//! A successor dropped without its close releases its reference as its close would, and an
//! antecedent dropped without its close starts it (the dropped request still completes when
//! the references are gone): every object's `close` and `Drop` call one idempotent `release`.
//! The gate `ours` (in [`super`]) hands out the objects; a reference is taken from the object it
//! returned, never by a downcast of its own.

use std::sync::Arc;

use netdirect::{Completer, Request};
use parking_lot::Mutex;

type Finish = Box<dyn FnOnce() + Send>;

struct State {
    references: usize,
    closing: Option<(Finish, Completer<()>)>,
}

struct Lifetime {
    state: Mutex<State>,
}

/// The antecedent's side: hands out references, closes when they are gone.
#[derive(Clone)]
pub(crate) struct Antecedent(Arc<Lifetime>);

impl std::fmt::Debug for Antecedent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.state.lock();
        f.debug_struct("Antecedent")
            .field("references", &s.references)
            .field("closing", &s.closing.is_some())
            .finish()
    }
}

impl Antecedent {
    pub(crate) fn new() -> Antecedent {
        Antecedent(Arc::new(Lifetime {
            state: Mutex::new(State {
                references: 0,
                closing: None,
            }),
        }))
    }

    /// A counted reference for a successor (also taken while the antecedent is closing: a
    /// connection the engine already had in hand may still become a successor).
    pub(crate) fn reference(&self) -> Reference {
        self.0.state.lock().references += 1;
        Reference(self.0.clone())
    }

    /// Closes: runs `finish` and completes when no reference is left, now or when the last one
    /// is dropped. A second close is not possible (closes consume the object).
    pub(crate) fn close(&self, finish: impl FnOnce() + Send + 'static) -> Request<()> {
        let mut s = self.0.state.lock();
        if s.references == 0 {
            drop(s);
            finish();
            return Request::ok(());
        }
        let (request, done) = Request::pending();
        s.closing = Some((Box::new(finish), done));
        request
    }

    /// Successors holding a reference now.
    #[cfg(test)]
    pub(crate) fn references(&self) -> usize {
        self.0.state.lock().references
    }
}

/// A successor's counted reference on its antecedent; dropping it releases it.
pub(crate) struct Reference(Arc<Lifetime>);

impl std::fmt::Debug for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reference")
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let mut s = self.0.state.lock();
        s.references -= 1;
        if s.references == 0 {
            if let Some((finish, done)) = s.closing.take() {
                drop(s);
                finish();
                done.complete(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn close_without_successors_completes_at_once() {
        let a = Antecedent::new();
        let hits = Arc::new(AtomicU32::new(0));
        let h = hits.clone();
        let r = a.close(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        assert!(!r.is_pending());
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn close_pends_until_the_last_reference_goes() {
        let a = Antecedent::new();
        let (r1, r2) = (a.reference(), a.reference());
        let hits = Arc::new(AtomicU32::new(0));
        let h = hits.clone();
        let closing = a.close(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        assert!(closing.is_pending());
        drop(r1);
        assert!(closing.is_pending());
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        drop(r2);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(closing.wait(), Ok(()));
        assert_eq!(a.references(), 0);
    }

    #[test]
    fn a_chain_unwinds_in_order() {
        let adapter = Antecedent::new();
        let pd = Antecedent::new();
        let pd_on_adapter = adapter.reference();
        let qp_on_pd = pd.reference();
        let pd_closed = pd.close(move || drop(pd_on_adapter));
        let adapter_closed = adapter.close(|| {});
        assert!(pd_closed.is_pending() && adapter_closed.is_pending());
        drop(qp_on_pd);
        assert_eq!(pd_closed.wait(), Ok(()));
        assert_eq!(adapter_closed.wait(), Ok(()));
    }
}
