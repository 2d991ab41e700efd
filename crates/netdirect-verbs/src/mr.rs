//! The memory region: `ibv_reg_mr` over a [`Buffer`] range; tokens are the lkey and rkey.

use std::sync::Arc;

use netdirect::{Buffer, Mr, Object, Request};
use netdirect_types::{LocalToken, MrFlags, ObjectType, RdmaTechnology, RemoteToken, Status};
use parking_lot::Mutex;

use crate::errno_status;
use crate::ffi::{
    IBV_ACCESS_LOCAL_WRITE, IBV_ACCESS_MW_BIND, IBV_ACCESS_REMOTE_READ, IBV_ACCESS_REMOTE_WRITE,
    MrH,
};
use crate::pd::{PdShared, Region};

struct Registration {
    mr: MrH,
    lkey: u32,
    rkey: u32,
    /// Keeps the registered bytes alive while the device may touch them.
    _buffer: Buffer,
}

/// A verbs MR.
pub(crate) struct VerbsMr {
    pd: Arc<PdShared>,
    reg: Mutex<Option<Registration>>,
}

impl VerbsMr {
    pub(crate) fn new(pd: &Arc<PdShared>) -> VerbsMr {
        VerbsMr {
            pd: pd.clone(),
            reg: Mutex::new(None),
        }
    }

    /// What a window bound over this MR needs: the verbs MR, its range and the NDK flags it
    /// was registered with; `None` while unregistered.
    pub(crate) fn bind_target(&self) -> Option<(MrH, Region)> {
        let reg = self.reg.lock();
        let r = reg.as_ref()?;
        let region = self.pd.regions.get(r.lkey)?;
        Some((r.mr, region))
    }

    pub(crate) fn pd(&self) -> &Arc<PdShared> {
        &self.pd
    }

    fn release(&self) -> Result<(), Status> {
        let Some(r) = self.reg.lock().take() else {
            return Err(Status::INVALID_DEVICE_STATE);
        };
        // The token dies for posts before the device forgets it.
        self.pd.regions.remove(r.lkey);
        match self.pd.adapter.lib.dereg_mr(r.mr) {
            0 => Ok(()),
            e => Err(errno_status(e)),
        }
    }
}

/// NDK access flags to verbs access flags. Remote write implies local write in verbs; an
/// RDMA read sink on iWARP is written by the peer's read response (a tagged write).
pub(crate) fn access(flags: MrFlags, tech: RdmaTechnology) -> i32 {
    let mut a = 0;
    if flags.grants_local_write() {
        a |= IBV_ACCESS_LOCAL_WRITE;
    }
    if flags.grants_remote_read() {
        a |= IBV_ACCESS_REMOTE_READ;
    }
    if flags.grants_remote_write() || (flags.is_rdma_read_sink() && tech == RdmaTechnology::IWarp) {
        a |= IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE;
    }
    if flags.is_rdma_read_sink() {
        a |= IBV_ACCESS_LOCAL_WRITE;
    }
    a
}

impl Object for VerbsMr {
    fn object_type(&self) -> ObjectType {
        ObjectType::Mr
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Mr for VerbsMr {
    fn register(
        &self,
        buffer: &Buffer,
        offset: usize,
        length: usize,
        flags: MrFlags,
    ) -> Request<()> {
        match offset.checked_add(length) {
            Some(end) if end <= buffer.len() && length > 0 => {}
            _ => return Request::failed(Status::INVALID_PARAMETER),
        }
        if length as u64 > self.pd.adapter.info.max_registration_size {
            return Request::failed(Status::INVALID_PARAMETER);
        }
        let mut reg = self.reg.lock();
        if reg.is_some() {
            return Request::failed(Status::INVALID_DEVICE_STATE);
        }
        let lib = &self.pd.adapter.lib;
        let addr = buffer.address() + offset as u64;
        let mut a = access(flags, self.pd.adapter.info.rdma_technology);
        if self.pd.adapter.info.max_window_size != 0 {
            // NdkBind needs no flag on the MR; verbs does.
            a |= IBV_ACCESS_MW_BIND;
        }
        match lib.reg_mr(self.pd.pd, addr, length, a) {
            Ok(mr) => {
                let (lkey, rkey) = lib.mr_keys(mr);
                self.pd.regions.add(
                    lkey,
                    Region {
                        address: addr,
                        length: length as u64,
                        flags,
                    },
                );
                *reg = Some(Registration {
                    mr,
                    lkey,
                    rkey,
                    _buffer: buffer.clone(),
                });
                Request::ok(())
            }
            Err(e) => Request::failed(errno_status(e)),
        }
    }

    fn deregister(&self) -> Request<()> {
        Request::ready(self.release())
    }

    fn initialize_fast_register(&self, _page_count: u32, _remote_access: bool) -> Request<()> {
        Request::failed(Status::NOT_SUPPORTED)
    }

    fn local_token(&self) -> LocalToken {
        LocalToken(self.reg.lock().as_ref().map_or(0, |r| r.lkey))
    }

    fn remote_token(&self) -> RemoteToken {
        RemoteToken(self.reg.lock().as_ref().map_or(0, |r| r.rkey))
    }

    fn close(self: Box<Self>) -> Request<()> {
        Request::ok(())
    }
}

impl Drop for VerbsMr {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_flags() {
        let iw = RdmaTechnology::IWarp;
        let roce = RdmaTechnology::RoCEv2;
        assert_eq!(access(MrFlags::ALLOW_LOCAL_READ, roce), 0);
        assert_eq!(
            access(MrFlags::ALLOW_LOCAL_WRITE, roce),
            IBV_ACCESS_LOCAL_WRITE
        );
        assert_eq!(
            access(MrFlags::ALLOW_REMOTE_READ, roce),
            IBV_ACCESS_REMOTE_READ
        );
        assert_eq!(
            access(MrFlags::ALLOW_REMOTE_WRITE, roce),
            IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE
        );
        assert_eq!(
            access(MrFlags::RDMA_READ_SINK, roce),
            IBV_ACCESS_LOCAL_WRITE
        );
        assert_eq!(
            access(MrFlags::RDMA_READ_SINK, iw),
            IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE
        );
    }
}
