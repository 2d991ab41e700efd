//! The memory window: a type 2 `ibv_mw`, bound and invalidated by work requests on a QP
//! (`IBV_WR_BIND_MW`, `IBV_WR_LOCAL_INV`), as `NdkBind` and `NdkInvalidate` are.
//!
//! The remote token is the window's rkey. Each bind gives it a new low byte (`ibv_inc_rkey`),
//! chosen when the bind is posted, so the token is valid as soon as `NdkBind` returns (NDK
//! §3.9); a peer still holding the previous binding's token is refused by the device.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use netdirect::{Mw, Object, Request};
use netdirect_types::{ObjectType, RemoteToken, Status};

use crate::errno_status;
use crate::ffi::{IBV_MW_TYPE_2, MwH};
use crate::pd::PdShared;

/// A verbs memory window.
pub(crate) struct VerbsMw {
    pub(crate) pd: Arc<PdShared>,
    pub(crate) mw: MwH,
    /// The rkey of the latest bind posted (the allocated one before any).
    rkey: AtomicU32,
}

/// `ibv_inc_rkey`: the same window, the next key byte.
pub(crate) fn next_rkey(rkey: u32) -> u32 {
    (rkey & 0xffff_ff00) | (rkey.wrapping_add(1) & 0xff)
}

impl VerbsMw {
    pub(crate) fn create(pd: &Arc<PdShared>) -> Result<VerbsMw, Status> {
        if pd.adapter.info.max_window_size == 0 {
            return Err(Status::NOT_SUPPORTED);
        }
        let lib = &pd.adapter.lib;
        let mw = lib.alloc_mw(pd.pd, IBV_MW_TYPE_2).map_err(|e| match e {
            libc::ENOMEM => Status::INSUFFICIENT_RESOURCES,
            e => errno_status(e),
        })?;
        Ok(VerbsMw {
            pd: pd.clone(),
            rkey: AtomicU32::new(lib.mw_rkey(mw)),
            mw,
        })
    }

    /// The key a bind posted now gives the window; [`VerbsMw::bound`] makes it current.
    pub(crate) fn key_for_bind(&self) -> u32 {
        next_rkey(self.rkey.load(Ordering::Acquire))
    }

    /// A bind with `rkey` was posted.
    pub(crate) fn bound(&self, rkey: u32) {
        self.pd.adapter.lib.set_mw_rkey(self.mw, rkey);
        self.rkey.store(rkey, Ordering::Release);
    }

    pub(crate) fn rkey(&self) -> u32 {
        self.rkey.load(Ordering::Acquire)
    }
}

impl Drop for VerbsMw {
    fn drop(&mut self) {
        // A bound window is freed too: the device revokes its key (NdkCloseMw).
        self.pd.adapter.lib.dealloc_mw(self.mw);
    }
}

impl Object for VerbsMw {
    fn object_type(&self) -> ObjectType {
        ObjectType::Mw
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Mw for VerbsMw {
    fn remote_token(&self) -> RemoteToken {
        RemoteToken(self.rkey())
    }

    fn close(self: Box<Self>) -> Request<()> {
        Request::ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::next_rkey;

    #[test]
    fn a_bind_changes_only_the_key_byte() {
        assert_eq!(next_rkey(0x1234_5600), 0x1234_5601);
        assert_eq!(next_rkey(0x1234_56ff), 0x1234_5600);
    }
}
