//! `NDK_MW`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use netdirect::{Mw, Request};
use netdirect_types::{RemoteToken, Status};

use super::adapter::AdapterShared;
use super::lifetime::Reference;
use crate::memory::{MwId, PdId};

/// A memory window of the software RNIC.
pub struct SoftMw {
    pub(crate) shared: Arc<AdapterShared>,
    pub(crate) id: MwId,
    pub(crate) pd: PdId,
    /// The token the next (or current) binding has: set when a bind is posted, so that
    /// `NdkGetRemoteTokenFromMw` answers as soon as `NdkBind` returns.
    pub(crate) token: AtomicU32,
    /// Keeps the PD's close pending while the window lives ([`super::lifetime`]); `None`
    /// once `close` or `Drop` ran.
    pd_reference: Option<Reference>,
}

impl SoftMw {
    pub(crate) fn new(
        shared: Arc<AdapterShared>,
        id: MwId,
        pd: PdId,
        pd_reference: Reference,
    ) -> SoftMw {
        let token = shared.memory.mw_remote_token(id).map_or(0, |t| t.0);
        SoftMw {
            shared,
            id,
            pd,
            token: AtomicU32::new(token),
            pd_reference: Some(pd_reference),
        }
    }

    /// What `close` and `Drop` release (idempotent): the window (unbinding it first, which
    /// may complete a closed MR waiting for it), then the PD reference.
    fn release(&mut self) -> Result<(), Status> {
        let Some(pd_reference) = self.pd_reference.take() else {
            return Ok(());
        };
        let r = self.shared.memory.close_mw(self.id);
        drop(pd_reference);
        r
    }
}

super::soft_object!(SoftMw, Mw, |mw| mw.shared.id);

impl super::InPd for SoftMw {
    fn pd(&self) -> PdId {
        self.pd
    }
}

impl Mw for SoftMw {
    fn remote_token(&self) -> RemoteToken {
        RemoteToken(self.token.load(Ordering::Acquire))
    }

    fn close(mut self: Box<Self>) -> Request<()> {
        Request::ready(self.release())
    }
}

impl Drop for SoftMw {
    /// What `close` releases: the binding (and with it, perhaps, a closed MR waiting for it).
    fn drop(&mut self) {
        let _ = self.release();
    }
}
