//! The completion queue: `ibv_cq` on the adapter's completion channel.
//!
//! Arming is `ibv_req_notify_cq`; the CQ thread takes the channel's events and runs the
//! consumer's notification with `STATUS_SUCCESS`. Verbs fires on a completion that arrives
//! after the arm: a consumer that arms and then finds the CQ non-empty must poll (the NDK's
//! rule that an arm on a non-empty CQ fires at once is the consumer's poll-after-arm here).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use netdirect::{Cq, CqNotification, Object, Request};
use netdirect_types::{BasicCompletion, Completion, CqNotifyType, ObjectType, Status};

use crate::adapter::{AdapterInner, readable};
use crate::errno_status;
use crate::ffi::{CqH, ibv_wc};

pub(crate) struct CqShared {
    pub(crate) adapter: Arc<AdapterInner>,
    pub(crate) cq: CqH,
    key: u64,
    notification: CqNotification,
    /// Notifications seen, for [`Cq::wait`] to sleep on.
    events: Mutex<u64>,
    fired: Condvar,
    /// Held while the consumer's notification runs: the CQ thread and the async-event thread
    /// never run two of one CQ at once.
    notifying: Mutex<()>,
}

impl CqShared {
    pub(crate) fn notify(&self, status: Status) {
        let _one = self.notifying.lock();
        (self.notification)(status);
    }
}

impl Drop for CqShared {
    fn drop(&mut self) {
        self.adapter.cqs.lock().remove(&self.key);
        crate::events::unregister_cq(self);
        self.adapter.lib.destroy_cq(self.cq);
    }
}

/// A verbs CQ.
pub(crate) struct VerbsCq {
    pub(crate) shared: Arc<CqShared>,
    wc: Vec<ibv_wc>,
}

impl VerbsCq {
    pub(crate) fn create(
        adapter: &Arc<AdapterInner>,
        depth: u32,
        notification: CqNotification,
    ) -> Result<VerbsCq, Status> {
        if depth == 0 || depth > adapter.info.max_cq_depth {
            return Err(Status::INVALID_PARAMETER);
        }
        let key = adapter.key();
        let cq = adapter
            .lib
            .create_cq(adapter.ctx, depth as i32, key, adapter.comp_channel)
            .ok_or(Status::INSUFFICIENT_RESOURCES)?;
        let shared = Arc::new(CqShared {
            adapter: adapter.clone(),
            cq,
            key,
            notification,
            events: Mutex::new(0),
            fired: Condvar::new(),
            notifying: Mutex::new(()),
        });
        crate::events::register_cq(&shared);
        adapter.cqs.lock().insert(key, Arc::downgrade(&shared));
        Ok(VerbsCq {
            shared,
            wc: vec![ibv_wc::default(); 64],
        })
    }
}

impl Object for VerbsCq {
    fn object_type(&self) -> ObjectType {
        ObjectType::Cq
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Cq for VerbsCq {
    fn resize(&self, depth: u32) -> Request<()> {
        if depth == 0 || depth > self.shared.adapter.info.max_cq_depth {
            return Request::failed(Status::INVALID_PARAMETER);
        }
        match self
            .shared
            .adapter
            .lib
            .resize_cq(self.shared.cq, depth as i32)
        {
            0 => Request::ok(()),
            e => Request::failed(errno_status(e)),
        }
    }

    fn arm(&mut self, notify: CqNotifyType) {
        let solicited = match notify {
            CqNotifyType::Any => false,
            CqNotifyType::Solicited => true,
            // CQ errors come as async events, delivered whether armed or not.
            _ => return,
        };
        let _ = self
            .shared
            .adapter
            .lib
            .req_notify_cq(self.shared.cq, solicited);
    }

    fn get_results(&mut self, out: &mut [BasicCompletion]) -> usize {
        let mut ex = [Completion::EMPTY; 16];
        let mut n = 0;
        while n < out.len() {
            let want = (out.len() - n).min(ex.len());
            let got = self.get_results_ex(&mut ex[..want]);
            for (o, c) in out[n..].iter_mut().zip(&ex[..got]) {
                *o = c.to_basic();
            }
            n += got;
            if got < want {
                break;
            }
        }
        n
    }

    fn get_results_ex(&mut self, out: &mut [Completion]) -> usize {
        let want = out.len().min(self.wc.len());
        if want == 0 {
            return 0;
        }
        let lib = &self.shared.adapter.lib;
        let got = lib.poll_cq(self.shared.cq, &mut self.wc[..want]);
        if got <= 0 {
            return 0;
        }
        let qps = self.shared.adapter.qps.read();
        let mut n = 0;
        for wc in &self.wc[..got as usize] {
            let qp = qps.get(&wc.qp_num).and_then(|w| w.upgrade());
            out[n] = match qp {
                Some(qp) => qp.completion(wc),
                // The QP is gone: its completions have nobody to go to.
                None => continue,
            };
            n += 1;
        }
        n
    }

    /// Polls for `spin`, then arms for any completion and sleeps until the CQ thread sees the
    /// notification (which also runs the consumer's callback) or `timeout` passes.
    fn wait(&mut self, out: &mut [Completion], spin: Duration, timeout: Duration) -> usize {
        let start = Instant::now();
        loop {
            let n = self.get_results_ex(out);
            if n > 0 || out.is_empty() {
                return n;
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return 0;
            }
            if waited < spin {
                std::hint::spin_loop();
                continue;
            }
            let seen = *self.shared.events.lock();
            self.arm(CqNotifyType::Any);
            // A completion that came between the poll and the arm fires nothing: poll again.
            let n = self.get_results_ex(out);
            if n > 0 {
                return n;
            }
            let mut events = self.shared.events.lock();
            if *events == seen {
                let left = timeout.saturating_sub(start.elapsed());
                let _ = self.shared.fired.wait_for(&mut events, left);
            }
        }
    }

    fn control_interrupt_moderation(&mut self, _interval: u32, _count: u32) -> Result<(), Status> {
        Err(Status::NOT_SUPPORTED)
    }

    fn close(self: Box<Self>) -> Request<()> {
        Request::ok(())
    }
}

/// The CQ thread: takes completion-channel events and runs the CQs' notifications.
pub(crate) fn run(weak: Weak<AdapterInner>) {
    let Some(fd) = weak
        .upgrade()
        .map(|a| a.lib.comp_channel_fd(a.comp_channel))
    else {
        return;
    };
    loop {
        // Closed with the adapter's last reference: POLLNVAL, and the upgrade below fails.
        if !readable(fd, 100) {
            if weak.strong_count() == 0 {
                return;
            }
            continue;
        }
        let Some(adapter) = weak.upgrade() else {
            return;
        };
        let Some(key) = adapter.lib.take_cq_event(adapter.comp_channel) else {
            continue;
        };
        let cq = adapter.cqs.lock().get(&key).and_then(|w| w.upgrade());
        if let Some(cq) = cq {
            *cq.events.lock() += 1;
            cq.fired.notify_all();
            cq.notify(Status::SUCCESS);
        }
    }
}
