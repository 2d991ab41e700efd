//! Async events (`ibv_get_async_event`): CQ errors to CQ notifications, SRQ limits and errors to
//! SRQ notifications.
//!
//! librdmacm's device contexts are shared by every adapter of the process on that device, and
//! so is a context's async event queue: one reader thread per context, started with the first
//! adapter on it and ended with the last, dispatches by element address to the CQs and SRQs
//! registered here.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Weak};

use netdirect_types::Status;
use parking_lot::Mutex;

use crate::cq::CqShared;
use crate::ffi::{self, Ctx, Lib, readable};
use crate::srq::SrqShared;

#[derive(Default)]
struct Registry {
    /// Adapters open per context (address).
    adapters: HashMap<usize, usize>,
    cqs: HashMap<usize, (usize, Weak<CqShared>)>,
    srqs: HashMap<usize, Weak<SrqShared>>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

/// An adapter on `ctx` opened: starts the context's reader if it is the first.
pub(crate) fn adapter_opened(lib: &Arc<Lib>, ctx: Ctx) {
    let mut r = REGISTRY.lock();
    let n = r.adapters.entry(ctx.0 as usize).or_insert(0);
    *n += 1;
    if *n == 1 {
        let lib = lib.clone();
        let _ = std::thread::Builder::new()
            .name("verbs-async".into())
            .spawn(move || run(lib, ctx));
    }
}

/// An adapter on `ctx` closed (its last object gone).
pub(crate) fn adapter_closed(ctx: Ctx) {
    let mut r = REGISTRY.lock();
    if let Some(n) = r.adapters.get_mut(&(ctx.0 as usize)) {
        *n -= 1;
        if *n == 0 {
            r.adapters.remove(&(ctx.0 as usize));
        }
    }
}

pub(crate) fn register_cq(cq: &Arc<CqShared>) {
    REGISTRY.lock().cqs.insert(
        cq.cq.0 as usize,
        (cq.adapter.ctx.0 as usize, Arc::downgrade(cq)),
    );
}

pub(crate) fn unregister_cq(cq: &CqShared) {
    REGISTRY.lock().cqs.remove(&(cq.cq.0 as usize));
}

pub(crate) fn register_srq(srq: &Arc<SrqShared>) {
    REGISTRY
        .lock()
        .srqs
        .insert(srq.srq.0 as usize, Arc::downgrade(srq));
}

pub(crate) fn unregister_srq(srq: &SrqShared) {
    REGISTRY.lock().srqs.remove(&(srq.srq.0 as usize));
}

fn run(lib: Arc<Lib>, ctx: Ctx) {
    let fd = lib.async_fd(ctx);
    loop {
        if !readable(fd, 100) {
            let mut r = REGISTRY.lock();
            if !r.adapters.contains_key(&(ctx.0 as usize)) {
                // A new first adapter starts a new reader; this one ends.
                r.cqs
                    .retain(|_, (c, w)| *c != ctx.0 as usize || w.strong_count() > 0);
                return;
            }
            continue;
        }
        let Some((kind, element)) = lib.take_async_event(ctx) else {
            continue;
        };
        match kind {
            ffi::IBV_EVENT_CQ_ERR => {
                let cq = REGISTRY
                    .lock()
                    .cqs
                    .get(&element)
                    .and_then(|(_, w)| w.upgrade());
                if let Some(cq) = cq {
                    cq.fail(Status::BUFFER_OVERFLOW);
                }
            }
            ffi::IBV_EVENT_SRQ_LIMIT_REACHED | ffi::IBV_EVENT_SRQ_ERR => {
                let srq = REGISTRY.lock().srqs.get(&element).and_then(Weak::upgrade);
                if let Some(srq) = srq {
                    srq.notify(if kind == ffi::IBV_EVENT_SRQ_ERR {
                        Status::INTERNAL_ERROR
                    } else {
                        Status::SUCCESS
                    });
                }
            }
            ffi::IBV_EVENT_DEVICE_FATAL => {
                let cqs: Vec<_> = REGISTRY
                    .lock()
                    .cqs
                    .values()
                    .filter(|(c, _)| *c == ctx.0 as usize)
                    .filter_map(|(_, w)| w.upgrade())
                    .collect();
                for cq in cqs {
                    cq.fail(Status::INTERNAL_ERROR);
                }
            }
            _ => {}
        }
    }
}
