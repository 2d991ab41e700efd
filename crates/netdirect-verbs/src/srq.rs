//! The shared receive queue: `ibv_srq`.
//!
//! The notify threshold is verbs' SRQ limit (`ibv_modify_srq` with `IBV_SRQ_LIMIT`), armed at
//! create and by each `modify` with a non-zero threshold; `IBV_EVENT_SRQ_LIMIT_REACHED` (an
//! async event, one per arm as in the NDK) runs the notification with `STATUS_SUCCESS`,
//! `IBV_EVENT_SRQ_ERR` with `STATUS_INTERNAL_ERROR`.

use std::collections::HashMap;
use std::sync::Arc;

use netdirect::{Object, Request, Srq, SrqConfig, SrqNotification};
use netdirect_types::{ObjectType, Sge, Status};
use parking_lot::Mutex;

use crate::adapter::AdapterInner;
use crate::errno_status;
use crate::ffi::{self, SrqH, ibv_recv_wr, ibv_sge, ibv_srq_attr, ibv_srq_init_attr};
use crate::pd::PdShared;
use crate::qp::{SRQ_BIT, to_sges};

pub(crate) struct SrqShared {
    pub(crate) adapter: Arc<AdapterInner>,
    pub(crate) srq: SrqH,
    max_sge: u32,
    /// Posted receives by work-request id (an SRQ's receives may complete out of order across
    /// its QPs).
    pending: Mutex<(u64, HashMap<u64, u64>)>,
    notification: Option<SrqNotification>,
    notifying: Mutex<()>,
    _pd: Arc<PdShared>,
}

impl SrqShared {
    pub(crate) fn notify(&self, status: Status) {
        let _one = self.notifying.lock();
        if let Some(n) = &self.notification {
            n(status);
        }
    }

    fn arm(&self, threshold: u32) -> Result<(), Status> {
        let mut attr = ibv_srq_attr {
            max_wr: 0,
            max_sge: 0,
            srq_limit: threshold,
        };
        match self
            .adapter
            .lib
            .modify_srq(self.srq, &mut attr, ffi::IBV_SRQ_LIMIT)
        {
            0 => Ok(()),
            e => Err(errno_status(e)),
        }
    }

    pub(crate) fn retire(&self, wr_id: u64) -> Option<u64> {
        self.pending.lock().1.remove(&wr_id)
    }
}

impl Drop for SrqShared {
    fn drop(&mut self) {
        crate::events::unregister_srq(self);
        self.adapter.lib.destroy_srq(self.srq);
    }
}

/// A verbs SRQ.
pub(crate) struct VerbsSrq {
    pub(crate) shared: Arc<SrqShared>,
}

impl VerbsSrq {
    pub(crate) fn create(pd: &Arc<PdShared>, config: SrqConfig) -> Result<VerbsSrq, Status> {
        let info = &pd.adapter.info;
        if info.max_srq_depth == 0 {
            return Err(Status::NOT_SUPPORTED);
        }
        if config.notify_threshold > config.depth {
            return Err(Status::INVALID_PARAMETER);
        }
        if config.depth == 0
            || config.depth > info.max_srq_depth
            || config.max_receive_sge > info.max_receive_request_sge
        {
            return Err(Status::INVALID_PARAMETER);
        }
        let mut attr = ibv_srq_init_attr {
            srq_context: std::ptr::null_mut(),
            attr: ibv_srq_attr {
                max_wr: config.depth,
                max_sge: config.max_receive_sge.max(1),
                srq_limit: 0,
            },
        };
        let srq = pd
            .adapter
            .lib
            .create_srq(pd.pd, &mut attr)
            .map_err(errno_status)?;
        let shared = Arc::new(SrqShared {
            adapter: pd.adapter.clone(),
            srq,
            max_sge: config.max_receive_sge.max(1),
            pending: Mutex::new((0, HashMap::new())),
            notification: config.notification,
            notifying: Mutex::new(()),
            _pd: pd.clone(),
        });
        crate::events::register_srq(&shared);
        if config.notify_threshold != 0 {
            shared.arm(config.notify_threshold)?;
        }
        Ok(VerbsSrq { shared })
    }
}

impl Object for VerbsSrq {
    fn object_type(&self) -> ObjectType {
        ObjectType::Srq
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Srq for VerbsSrq {
    fn modify(&self, depth: u32, notify_threshold: u32) -> Request<()> {
        if notify_threshold != 0 {
            if let Err(s) = self.shared.arm(notify_threshold) {
                return Request::failed(s);
            }
        }
        if depth == 0 {
            return Request::ok(());
        }
        let mut attr = ibv_srq_attr {
            max_wr: depth,
            max_sge: 0,
            srq_limit: 0,
        };
        let s = &self.shared;
        match s
            .adapter
            .lib
            .modify_srq(s.srq, &mut attr, ffi::IBV_SRQ_MAX_WR)
        {
            0 => Request::ok(()),
            e => Request::failed(errno_status(e)),
        }
    }

    fn receive(&mut self, request_context: u64, sges: &[Sge]) -> Result<(), Status> {
        let s = &self.shared;
        let mut v = [ibv_sge::default(); 32];
        let n = to_sges(sges, s.max_sge, &mut v)?;
        s._pd.check_sges(&v[..n], false)?;
        let mut pending = s.pending.lock();
        let wr_id = SRQ_BIT | pending.0;
        pending.0 += 1;
        pending.1.insert(wr_id, request_context);
        let mut wr = ibv_recv_wr {
            wr_id,
            next: std::ptr::null_mut(),
            sg_list: v.as_mut_ptr(),
            num_sge: n as i32,
        };
        match s.adapter.lib.post_srq_recv(s.srq, &mut wr) {
            0 => Ok(()),
            e => {
                pending.1.remove(&wr_id);
                Err(if e == libc::ENOMEM {
                    Status::INSUFFICIENT_RESOURCES
                } else {
                    Status::INVALID_PARAMETER
                })
            }
        }
    }

    fn close(self: Box<Self>) -> Request<()> {
        Request::ok(())
    }
}
