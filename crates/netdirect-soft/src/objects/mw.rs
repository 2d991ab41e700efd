//! `NDK_MW`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use netdirect::{Mw, Request};
use netdirect_types::RemoteToken;

use super::adapter::AdapterShared;
use crate::memory::{MwId, PdId};

/// A memory window of the software RNIC.
pub struct SoftMw {
    pub(crate) shared: Arc<AdapterShared>,
    pub(crate) id: MwId,
    pub(crate) pd: PdId,
    /// The token the next (or current) binding has: set when a bind is posted, so that
    /// `NdkGetRemoteTokenFromMw` answers as soon as `NdkBind` returns.
    pub(crate) token: AtomicU32,
    /// `close` ran: the drop that follows has nothing left to release.
    closed: bool,
}

impl SoftMw {
    pub(crate) fn new(shared: Arc<AdapterShared>, id: MwId, pd: PdId) -> SoftMw {
        let token = shared.memory.mw_remote_token(id).map_or(0, |t| t.0);
        SoftMw {
            shared,
            id,
            pd,
            token: AtomicU32::new(token),
            closed: false,
        }
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
        self.closed = true;
        Request::ready(self.shared.memory.close_mw(self.id))
    }
}

impl Drop for SoftMw {
    /// What `close` releases: the binding (and with it, perhaps, a closed MR waiting for it).
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.shared.memory.close_mw(self.id);
        }
    }
}
