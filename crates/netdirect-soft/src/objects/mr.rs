//! `NDK_MR`.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use netdirect::{Buffer, Mr, Object, Request};
use netdirect_types::{LocalToken, MrFlags, ObjectType, RemoteToken, Status};

use super::adapter::AdapterShared;
use super::lifetime::Reference;
use crate::memory::MrId;

/// A memory region of the software RNIC.
pub struct SoftMr {
    pub(crate) shared: Arc<AdapterShared>,
    pub(crate) id: MrId,
    /// The region's token (local = remote). For fast-register regions it is set when a fast
    /// register is *posted*: NDK §7.9 lets the consumer advertise it as soon as the post returns.
    pub(crate) token: AtomicU32,
    /// Keeps the PD's close pending while the region lives ([`super::lifetime`]).
    pub(crate) _pd: Reference,
}

impl SoftMr {
    pub(crate) fn of(mr: &dyn Mr) -> Result<&SoftMr, Status> {
        mr.as_any()
            .downcast_ref::<SoftMr>()
            .ok_or(Status::INVALID_PARAMETER)
    }

    fn refresh(&self) {
        if let Ok(t) = self.shared.memory.local_token(self.id) {
            self.token.store(t.0, Ordering::Release);
        }
    }
}

impl Object for SoftMr {
    fn object_type(&self) -> ObjectType {
        ObjectType::Mr
    }

    fn as_any(&self) -> &dyn Any {
        self
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

    fn close(self: Box<Self>) -> Request<()> {
        Request::ready(self.shared.memory.close_mr(self.id))
    }
}

/// The token a region's slot gets after its next registration: registrations rotate the 8-bit
/// key by one ([`crate::memory`]).
pub(crate) fn next_token(token: u32) -> u32 {
    (token & !0xFF) | (token.wrapping_add(1) & 0xFF)
}
