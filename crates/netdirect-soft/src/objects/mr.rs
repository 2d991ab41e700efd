//! `NDK_MR`.
//!
//! Closing and dropping release the same: the MR's token dies at once (the memory table's
//! `close_mr`); a close with windows still bound completes when the last of them is unbound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use netdirect::{Buffer, Mr, Request};
use netdirect_types::{LocalToken, MrFlags, RemoteToken, Status};

use super::adapter::AdapterShared;
use super::lifetime::Reference;
use crate::memory::{MrId, PdId};

/// A memory region of the software RNIC.
pub struct SoftMr {
    pub(crate) shared: Arc<AdapterShared>,
    pub(crate) id: MrId,
    pub(crate) pd: PdId,
    /// The region's token (local = remote). For fast-register regions it is set when a fast
    /// register is *posted*: NDK §7.9 lets the consumer advertise it as soon as the post returns.
    pub(crate) token: AtomicU32,
    /// Keeps the PD's close pending while the region lives, and after its close until the
    /// last bound window is unbound ([`super::lifetime`]); `None` once `close` or `Drop` ran.
    pd_reference: Option<Reference>,
}

impl SoftMr {
    pub(crate) fn new(
        shared: Arc<AdapterShared>,
        id: MrId,
        pd: PdId,
        pd_reference: Reference,
    ) -> SoftMr {
        let token = shared.memory.local_token(id).map_or(0, |t| t.0);
        SoftMr {
            shared,
            id,
            pd,
            token: AtomicU32::new(token),
            pd_reference: Some(pd_reference),
        }
    }

    /// What `close` and `Drop` release (idempotent): the token dies at once; the request
    /// completes, and the PD reference goes, when the last bound window is unbound.
    fn release(&mut self) -> Request<()> {
        let Some(pd_reference) = self.pd_reference.take() else {
            return Request::ok(());
        };
        let (request, done) = Request::pending();
        // The handle is ours until now, so it is live: the call cannot fail.
        let _ = self.shared.memory.close_mr(self.id, move || {
            done.complete(Ok(()));
            drop(pd_reference);
        });
        request
    }

    fn refresh(&self) {
        if let Ok(t) = self.shared.memory.local_token(self.id) {
            self.token.store(t.0, Ordering::Release);
        }
    }
}

super::soft_object!(SoftMr, Mr, |mr| mr.shared.id);

impl super::InPd for SoftMr {
    fn pd(&self) -> PdId {
        self.pd
    }
}

impl Mr for SoftMr {
    fn register(
        &self,
        buffer: &Buffer,
        offset: usize,
        length: usize,
        flags: MrFlags,
    ) -> Request<()> {
        if length as u64 > self.shared.info.max_registration_size {
            return Request::failed(Status::INVALID_PARAMETER);
        }
        let r = self
            .shared
            .memory
            .register_mr(self.id, buffer, offset, length, flags);
        self.refresh();
        Request::ready(r)
    }

    fn deregister(&self) -> Request<()> {
        Request::ready(self.shared.memory.deregister_mr(self.id))
    }

    fn initialize_fast_register(&self, page_count: u32, remote_access: bool) -> Request<()> {
        let r = self
            .shared
            .memory
            .initialize_fast_register(self.id, page_count, remote_access);
        self.refresh();
        Request::ready(r)
    }

    fn local_token(&self) -> LocalToken {
        LocalToken(self.token.load(Ordering::Acquire))
    }

    fn remote_token(&self) -> RemoteToken {
        RemoteToken(self.token.load(Ordering::Acquire))
    }

    fn close(mut self: Box<Self>) -> Request<()> {
        self.release()
    }
}

impl Drop for SoftMr {
    /// What `close` releases (an early return must not leave memory registered).
    fn drop(&mut self) {
        drop(self.release());
    }
}
