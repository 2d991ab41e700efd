//! `NDK_MW`.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use netdirect::{Mw, Object, Request};
use netdirect_types::{ObjectType, RemoteToken, Status};

use super::adapter::AdapterShared;
use super::lifetime::Reference;
use crate::memory::MwId;

/// A memory window of the software RNIC.
pub struct SoftMw {
    pub(crate) shared: Arc<AdapterShared>,
    pub(crate) id: MwId,
    /// The token the next (or current) binding has: set when a bind is posted, so that
    /// `NdkGetRemoteTokenFromMw` answers as soon as `NdkBind` returns.
    pub(crate) token: AtomicU32,
    /// Keeps the PD's close pending while the window lives ([`super::lifetime`]).
    pub(crate) _pd: Reference,
}

impl SoftMw {
    pub(crate) fn of(mw: &dyn Mw) -> Result<&SoftMw, Status> {
        mw.as_any()
            .downcast_ref::<SoftMw>()
            .ok_or(Status::INVALID_PARAMETER)
    }
}

impl Object for SoftMw {
    fn object_type(&self) -> ObjectType {
        ObjectType::Mw
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Mw for SoftMw {
    fn remote_token(&self) -> RemoteToken {
        RemoteToken(self.token.load(Ordering::Acquire))
    }

    fn close(self: Box<Self>) -> Request<()> {
        Request::ready(self.shared.memory.close_mw(self.id))
    }
}
