//! Counters of an adapter and its QPs, and their publication to other processes.
//!
//! Each connection (a QP's) counts into its own [`Cells`]: its stream counts FPDUs, octets,
//! Terminates, CRC errors, IRD/ORD and placement (one writer, no locked instruction); the
//! transport counts connection events, CQ errors and inline transmits (rare or per post,
//! relaxed `fetch_add`). The adapter's registry lists the live cells and keeps the sum of
//! the closed ones, so an adapter's counters never go down when a QP closes. Nothing here runs
//! on the data path except the cells' adds.
//!
//! Built without the `counters` feature ([`COUNTING`] false), the cells count nothing: every
//! counter of a QP and an adapter reads zero (progress-thread wakeups included, though
//! [`crate::SoftAdapter::progress_wakeups`] still counts them), and the `NdkQueryExtension`
//! interface says so (`CountersInterface::counting` is false). `bench/obs-cost.sh` builds
//! `nd` both ways to measure what counting costs.
//!
//! Publication ([`crate::transport::EngineConfig::publish_counters`]): a thread per adapter
//! writes [`netdirect::counters::Published`] every [`PUBLISH_PERIOD`] to
//! `netdirect.<pid>.<n>.counters` in [`netdirect::counters::publish_dir`] (temporary file,
//! then rename), and removes it when the adapter closes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netdirect::counters::{Counters, Published};
pub use netdirect_proto::counters::{COUNTING, Cells};
use parking_lot::{Condvar, Mutex};

/// How often a publishing adapter rewrites its file.
pub const PUBLISH_PERIOD: Duration = Duration::from_millis(500);

/// The counters of one adapter's connections: the live ones and the sum of the closed ones.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    live: Mutex<Vec<Arc<Cells>>>,
    retired: Cells,
}

impl Registry {
    /// Cells for a new connection.
    pub(crate) fn register(&self) -> Arc<Cells> {
        let cells = Arc::new(Cells::default());
        self.live.lock().push(cells.clone());
        cells
    }

    /// A connection is gone: its counts move to the retired sum (under the lock readers
    /// take, so a reader never sees them in neither place).
    pub(crate) fn retire(&self, cells: &Arc<Cells>) {
        let mut live = self.live.lock();
        if let Some(i) = live.iter().position(|c| Arc::ptr_eq(c, cells)) {
            live.swap_remove(i);
            self.retired.absorb(&cells.snapshot());
        }
    }

    /// The sum over every connection the adapter had. It visits every live connection (the
    /// publisher does this every [`PUBLISH_PERIOD`]), so each costs a few loads and adds
    /// ([`Cells::add_to`]), not a snapshot of its own: with 10,000 idle QPs, building and
    /// merging a snapshot per QP took ~680 instructions each, 6.8 million per publication.
    pub(crate) fn snapshot(&self) -> Counters {
        let live = self.live.lock();
        let mut sum = self.retired.snapshot();
        for c in live.iter() {
            c.add_to(&mut sum);
        }
        drop(live);
        sum.derive_totals();
        sum
    }
}

static NEXT_FILE: AtomicUsize = AtomicUsize::new(0);

/// The thread that publishes one adapter's counters; stopping it removes the file.
pub(crate) struct Publisher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("path", &self.path)
            .finish()
    }
}

impl Publisher {
    /// Starts publishing what `read` returns (it must not keep the adapter's threads alive:
    /// [`crate::transport::Engine::counter_source`]).
    pub(crate) fn start(
        adapter: String,
        read: impl Fn() -> Counters + Send + 'static,
    ) -> Option<Publisher> {
        let pid = std::process::id();
        let n = NEXT_FILE.fetch_add(1, Ordering::Relaxed);
        let dir = netdirect::counters::publish_dir();
        let path = dir.join(format!("netdirect.{pid}.{n}.counters"));
        let tmp = dir.join(format!(".netdirect.{pid}.{n}.tmp"));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (stop2, path2) = (stop.clone(), path.clone());
        let thread = std::thread::Builder::new()
            .name(format!("nd-stat {adapter}"))
            .spawn(move || {
                loop {
                    let p = Published {
                        pid,
                        adapter: adapter.clone(),
                        time_ms: SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64),
                        counters: read(),
                    };
                    // Best effort: a full or missing directory only loses publication.
                    if std::fs::write(&tmp, p.to_text()).is_ok() {
                        let _ = std::fs::rename(&tmp, &path2);
                    }
                    let (lock, cv) = &*stop2;
                    let mut stopped = lock.lock();
                    if !*stopped {
                        cv.wait_for(&mut stopped, PUBLISH_PERIOD);
                    }
                    if *stopped {
                        break;
                    }
                }
                let _ = std::fs::remove_file(&tmp);
                let _ = std::fs::remove_file(&path2);
            })
            .ok()?;
        Some(Publisher {
            stop,
            thread: Some(thread),
            path,
        })
    }

    /// Where the counters are published.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
