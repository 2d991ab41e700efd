//! The software channel shared by the built-in engines: queue, §10 state machine, completion
//! write-back, and the executor loop (on a worker thread, or inline on the submitting thread).

use crate::copy::ChannelToken;
use crate::descriptor::{CompletionStatus, DescriptorAddress, Submission, TransferStatus};
use crate::flags::ControlFlags;
use crate::prepared::{ExecOptions, PreparedChain};
use crate::provider::{ChannelState, CompletionCallback, CompletionEvent, ProviderChannel};
use crate::status::{Result, Status};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

struct Job {
    chain: PreparedChain,
    first_seq: u64,
    cursor: usize,
    /// Small enough to run on the submitting thread (CPU engine, idle channel).
    inline_ok: bool,
}

/// How long an idle worker polls for new work before it sleeps: a streaming client appends
/// again within microseconds, and catching that without a futex wake saves both sides a
/// system call.
const WORKER_SPIN: Duration = Duration::from_micros(20);

/// How long `wait` polls before it blocks (the worker then pays for a wake-up). Yielding
/// instead was no better on a loaded machine: a woken thread gets the CPU back sooner than
/// one that yielded it.
const WAIT_SPIN: Duration = Duration::from_micros(20);

/// CPU engine: a streaming client's submissions of at least this many bytes go to the worker
/// (see [`ProviderCharacteristics::inline_threshold`](crate::ProviderCharacteristics)); smaller
/// ones still run inline on an idle channel. Below it the hand-off (the job's cache lines
/// crossing to the worker's CPU and the completion crossing back) costs more than the copy
/// that overlapping saves: streams of single copies on the development VM were faster inline
/// up to 32 KiB (0.82x `memcpy` inline, 0.75x on the worker) and on the worker from 64 KiB
/// (0.84x inline, 0.89x on the worker; 4 KiB: 0.35x inline, 0.12x on the worker).
pub const STREAM_TO_WORKER_FROM: u64 = 64 << 10;

/// The worker takes up to this many queued jobs per turn of the channel lock (while their
/// copies add up to at most [`BATCH_BYTES`]): a stream of single-descriptor submissions then
/// costs one lock hand-off between client and worker per batch, not per copy. Completions
/// inside a batch are still published one by one, leases released first.
const BATCH_JOBS: usize = 16;

/// See [`BATCH_JOBS`].
const BATCH_BYTES: u64 = 1 << 20;

/// With a CPU to spare (see [`cpu_to_spare`]), `wait` keeps polling as long as the executor
/// completes something at least every [`WAIT_SPIN`], up to this long: a client waiting for
/// the middle of a stream would otherwise block, make the worker pay a futex wake, and come
/// back late (a wake-up of an idle CPU costs tens of microseconds on a virtual machine), with
/// the worker idle meanwhile if the queue ran dry.
const WAIT_SPIN_PROGRESSING: Duration = Duration::from_millis(2);

/// Worker threads of this process that are awake (copying, or spinning before they sleep).
/// A client spins in `wait` only while a CPU is left for it: with as many awake workers as
/// CPUs, a spinning client takes its time slices from a worker. That matters when copies
/// complete faster than every [`WAIT_SPIN`] (descriptors up to a few hundred KiB), where
/// the client would spin on for up to [`WAIT_SPIN_PROGRESSING`].
static AWAKE_WORKERS: AtomicUsize = AtomicUsize::new(0);

/// Counts a worker thread in [`AWAKE_WORKERS`] while it lives; the executor loop takes it
/// out for as long as it sleeps on its condvar.
struct Awake;

impl Awake {
    fn new() -> Self {
        AWAKE_WORKERS.fetch_add(1, Ordering::Relaxed);
        Awake
    }
}

impl Drop for Awake {
    fn drop(&mut self) {
        AWAKE_WORKERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether a waiting client may spin: several CPUs, and one not taken by an awake worker.
fn cpu_to_spare() -> bool {
    let cpus = crate::interface::online_cpus();
    cpus > 1 && AWAKE_WORKERS.load(Ordering::Relaxed) < cpus
}

struct Inner {
    state: ChannelState,
    queue: VecDeque<Job>,
    next_seq: u64,
    busy: bool,
    exec_thread: Option<ThreadId>,
    worker_waiting: bool,
    discards: Vec<(u64, u64, Status)>,
    error: Option<Status>,
    completed_since_start: bool,
    shutdown: bool,
}

/// One value on its own cache line, so that the client's polling of completion words does not
/// slow down the executor's reads of its control flags (and the other way round).
#[repr(align(64))]
struct Line<T>(T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

pub(crate) struct Shared {
    inner: Mutex<Inner>,
    worker_cv: Condvar,
    client_cv: Condvar,
    slot: Line<AtomicU64>,
    /// Last completed sequence number. Stored at the end of every job, for descriptors that ask
    /// for a status write or a callback, and when the executor stops or fails mid-job; so it is
    /// exact whenever a submission ends or the executor is quiesced (what `poll`, `suspend` and
    /// discards read), without a store to a line the client polls after every descriptor.
    completed: Line<AtomicU64>,
    last_discard_end: Line<AtomicU64>,
    /// Smallest sequence number a blocked client waits for (`u64::MAX`: none; 0: any change).
    wake_seq: Line<AtomicU64>,
    stop_now: AtomicBool,
    stop_after: AtomicBool,
    waiters: AtomicUsize,
    state_mirror: AtomicU8,
    callback: Option<CompletionCallback>,
    opts: ExecOptions,
    /// Submissions of at most this many bytes run on the submitting thread when the channel
    /// is idle (CPU engine; the inline engine runs everything there).
    inline_threshold: u64,
    /// ... and at most this many data descriptors.
    inline_max_descriptors: u32,
    /// Jobs ever enqueued (lets an idle worker notice new work without the lock).
    enqueued: AtomicU64,
    /// Highest sequence number the client has seen complete (`poll`, `wait`, the completion
    /// slot). Below `completed`, the client is streaming: it submits again without looking
    /// at what finished, so its submissions go to the worker (which copies while the client
    /// prepares the next) instead of running inline one after the other.
    observed: Line<AtomicU64>,
    /// Wake-ups sent to a sleeping worker.
    worker_wakeups: AtomicU64,
    /// The execution right; held by whichever thread executes a job (one at a time: `busy`).
    token: Mutex<Option<ChannelToken>>,
    on_free: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

fn state_code(s: ChannelState) -> u8 {
    s as u8
}

fn code_state(c: u8) -> ChannelState {
    use ChannelState::*;
    [Allocated, Armed, Active, Idle, Suspended, Halted, Free][c as usize]
}

enum Outcome {
    Done,
    Stopped,
    Failed(Status),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_state(&self, g: &mut Inner, s: ChannelState) {
        g.state = s;
        self.state_mirror.store(state_code(s), Ordering::Release);
    }

    fn last_addr(&self) -> Option<DescriptorAddress> {
        match self.completed.load(Ordering::Acquire) {
            0 => None,
            s => Some(DescriptorAddress::from_seq(s)),
        }
    }

    fn write_slot(&self, status: TransferStatus) {
        let v = CompletionStatus::new(self.last_addr(), status);
        self.slot.store(v.0, Ordering::Release);
    }

    /// Publishes the completion of descriptor `seq`: the slot first (if asked for), then the
    /// sequence number that `poll`/`wait` read, so a client that saw the completion also sees
    /// the slot.
    fn publish(&self, seq: u64, slot: Option<TransferStatus>) {
        if let Some(st) = slot {
            let v = CompletionStatus::new(Some(DescriptorAddress::from_seq(seq)), st);
            self.slot.store(v.0, Ordering::Release);
        }
        self.completed.store(seq, Ordering::Release);
    }

    fn notify_clients(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.wake_seq.store(u64::MAX, Ordering::SeqCst);
            self.client_cv.notify_all();
        }
    }

    /// After a job ended (under the lock): wakes blocked clients only if one waits for a
    /// descriptor up to `done` (or for any change), not for every job of a long stream.
    fn notify_done(&self, done: u64) {
        if self.waiters.load(Ordering::SeqCst) > 0 && self.wake_seq.load(Ordering::SeqCst) <= done {
            self.wake_seq.store(u64::MAX, Ordering::SeqCst);
            self.client_cv.notify_all();
        }
    }

    /// Wakes the worker if it sleeps. The flag is cleared here, not only when the worker runs
    /// again: a woken worker may wait a long time for a CPU on a busy machine, and every
    /// Append in that time would otherwise pay another futex wake for nothing.
    fn notify_worker(&self, g: &mut Inner) {
        if g.worker_waiting {
            g.worker_waiting = false;
            self.worker_wakeups.fetch_add(1, Ordering::Relaxed);
            self.worker_cv.notify_one();
        }
    }

    /// Blocks until a notification; `target`: the sequence number awaited (0: any change).
    fn wait_client_for<'a>(&self, g: MutexGuard<'a, Inner>, target: u64) -> MutexGuard<'a, Inner> {
        self.wake_seq.fetch_min(target, Ordering::SeqCst);
        self.wait_client(g)
    }

    fn wait_client<'a>(&self, g: MutexGuard<'a, Inner>) -> MutexGuard<'a, Inner> {
        self.wake_seq.fetch_min(0, Ordering::SeqCst);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let g = self.client_cv.wait(g).unwrap_or_else(|e| e.into_inner());
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        g
    }

    /// [`Self::wait_client`] bounded by `deadline`; `None` once it has passed.
    fn wait_client_until<'a>(
        &self,
        g: MutexGuard<'a, Inner>,
        deadline: Option<Instant>,
        target: u64,
    ) -> Option<MutexGuard<'a, Inner>> {
        let Some(d) = deadline else {
            return Some(self.wait_client_for(g, target));
        };
        let now = Instant::now();
        if now >= d {
            return None;
        }
        self.wake_seq.fetch_min(target, Ordering::SeqCst);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let (g, _) = self
            .client_cv
            .wait_timeout(g, d - now)
            .unwrap_or_else(|e| e.into_inner());
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        Some(g)
    }

    /// Fails if the caller is the executor itself (a completion callback): waiting for the
    /// executor from its own thread would deadlock.
    fn not_reentrant(&self, g: &Inner) -> Result<()> {
        if g.busy && g.exec_thread == Some(std::thread::current().id()) {
            return Err(Status::INVALID_DEVICE_STATE);
        }
        Ok(())
    }

    /// Asks the executor to stop (now, or after the current descriptor) and waits until it
    /// has handed its job back to the queue.
    fn quiesce<'a>(&self, mut g: MutexGuard<'a, Inner>, now: bool) -> MutexGuard<'a, Inner> {
        if now {
            self.stop_now.store(true, Ordering::SeqCst);
        }
        self.stop_after.store(true, Ordering::SeqCst);
        while g.busy {
            g = self.wait_client(g);
        }
        g
    }

    fn release_stop(&self) {
        self.stop_now.store(false, Ordering::SeqCst);
        self.stop_after.store(false, Ordering::SeqCst);
    }

    /// Drops every queued job, recording its descriptors as discarded with `status`.
    fn discard_pending(&self, g: &mut Inner, status: Status) {
        let from = (self.completed.load(Ordering::Acquire) + 1)
            .max(self.last_discard_end.load(Ordering::Acquire) + 1);
        let end = g.next_seq - 1;
        g.queue.clear();
        if from <= end {
            g.discards.push((from, end, status));
            self.last_discard_end.store(end, Ordering::Release);
        }
    }

    fn enqueue(&self, g: &mut Inner, chain: PreparedChain) -> Submission {
        let first = g.next_seq;
        g.next_seq += chain.len() as u64;
        let sub = Submission {
            first: DescriptorAddress::from_seq(first),
            last: DescriptorAddress::from_seq(g.next_seq - 1),
        };
        let inline_ok = self.inline_threshold > 0
            && chain.bytes() <= self.inline_threshold
            && chain.data_descriptors() <= self.inline_max_descriptors as usize;
        g.queue.push_back(Job {
            chain,
            first_seq: first,
            cursor: 0,
            inline_ok,
        });
        self.enqueued.fetch_add(1, Ordering::Release);
        sub
    }

    fn runnable(g: &Inner) -> bool {
        matches!(g.state, ChannelState::Armed | ChannelState::Active) && !g.queue.is_empty()
    }

    /// After the first completion since a Start: Armed becomes Active (checked without the
    /// lock first; only the first completion takes it).
    fn armed_to_active(&self) {
        if self.state_mirror.load(Ordering::Acquire) == state_code(ChannelState::Armed) {
            let mut g = self.lock();
            if g.state == ChannelState::Armed {
                self.set_state(&mut g, ChannelState::Active);
            }
            g.completed_since_start = true;
        }
    }

    /// Runs one job from its cursor without the lock.
    fn exec_job(&self, token: &mut ChannelToken, job: &mut Job) -> Outcome {
        let n = job.chain.len();
        // Completed but not yet stored in `completed` (see there).
        let mut unpublished = None;
        let flush = |u: Option<u64>| {
            if let Some(seq) = u {
                self.completed.store(seq, Ordering::Release);
            }
        };
        while job.cursor < n {
            // Fast path: a run of plain copies.
            let (k, r) = job
                .chain
                .run_plain(job.cursor, token, &self.opts, &self.stop_after);
            if k > 0 {
                job.cursor += k;
                if job.cursor == n && r.is_ok() {
                    return Outcome::Done;
                }
                unpublished = Some(job.first_seq + job.cursor as u64 - 1);
                self.armed_to_active();
            }
            if let Err(s) = r {
                flush(unpublished);
                return Outcome::Failed(s);
            }
            if job.cursor == n {
                break;
            }
            if self.stop_after.load(Ordering::Relaxed) {
                flush(unpublished);
                return Outcome::Stopped;
            }
            let i = job.cursor;
            match job.chain.execute(i, token, &self.opts, &self.stop_now) {
                Ok(()) => {}
                Err(s) if s == Status::CANCELLED && self.stop_now.load(Ordering::SeqCst) => {
                    flush(unpublished);
                    return Outcome::Stopped;
                }
                Err(s) => {
                    flush(unpublished);
                    return Outcome::Failed(s);
                }
            }
            if i + 1 == n {
                return Outcome::Done;
            }
            job.cursor += 1;
            let seq = job.first_seq + i as u64;
            let f = job.chain.flags(i);
            let upd = f.contains(ControlFlags::STATUS_UPDATE_ON_COMPLETION);
            if upd || f.contains(ControlFlags::INTERRUPT_ON_COMPLETION) {
                self.publish(seq, upd.then_some(TransferStatus::Active));
                unpublished = None;
            } else {
                unpublished = Some(seq);
            }
            self.armed_to_active();
            if f.contains(ControlFlags::INTERRUPT_ON_COMPLETION) {
                if let Some(cb) = &self.callback {
                    cb(CompletionEvent {
                        descriptor: Some(DescriptorAddress::from_seq(seq)),
                        status: Status::SUCCESS,
                        user_context: job.chain.user_context(i),
                    });
                }
            }
        }
        Outcome::Done
    }

    /// The executor loop. `inline`: run on the calling (submitting) thread and return as soon
    /// as nothing is runnable; with `small_only` it takes only jobs marked `inline_ok` and
    /// leaves the rest to the worker. Whoever pops a job sets `busy` under the lock, so at most
    /// one thread executes at a time, in queue order.
    fn run(&self, inline: bool, small_only: bool) {
        self.run_locked(self.lock(), inline, small_only)
    }

    /// [`Self::run`] with the channel lock already held.
    fn run_locked(&self, g: MutexGuard<'_, Inner>, inline: bool, small_only: bool) {
        let mut g = g;
        let mut spun = false;
        loop {
            let mut job = loop {
                if g.shutdown {
                    return;
                }
                if Self::runnable(&g)
                    && !g.busy
                    && !self.stop_after.load(Ordering::SeqCst)
                    && (!small_only || g.queue.front().is_some_and(|j| j.inline_ok))
                {
                    match g.queue.pop_front() {
                        Some(j) => break j,
                        None => continue,
                    }
                }
                if inline {
                    if Self::runnable(&g) && !g.busy {
                        self.notify_worker(&mut g);
                    }
                    return;
                }
                if !spun {
                    spun = true;
                    let seen = self.enqueued.load(Ordering::Acquire);
                    drop(g);
                    let t = Instant::now();
                    while self.enqueued.load(Ordering::Acquire) == seen && t.elapsed() < WORKER_SPIN
                    {
                        std::hint::spin_loop();
                    }
                    g = self.lock();
                    continue;
                }
                spun = false;
                g.worker_waiting = true;
                AWAKE_WORKERS.fetch_sub(1, Ordering::Relaxed);
                g = self.worker_cv.wait(g).unwrap_or_else(|e| e.into_inner());
                AWAKE_WORKERS.fetch_add(1, Ordering::Relaxed);
                g.worker_waiting = false;
            };
            spun = false;
            // More queued jobs for the same turn (worker only; not across a callback).
            let mut batch = VecDeque::new();
            if !inline {
                let mut bytes = job.chain.bytes();
                let mut last = &job;
                while batch.len() + 1 < BATCH_JOBS
                    && !last
                        .chain
                        .flags(last.chain.len() - 1)
                        .contains(ControlFlags::INTERRUPT_ON_COMPLETION)
                {
                    match g.queue.front() {
                        Some(next) if bytes + next.chain.bytes() <= BATCH_BYTES => {
                            bytes += next.chain.bytes();
                        }
                        _ => break,
                    }
                    match g.queue.pop_front() {
                        Some(next) => batch.push_back(next),
                        None => break,
                    }
                    last = batch.back().unwrap_or(&job);
                }
            }
            g.busy = true;
            g.exec_thread = Some(std::thread::current().id());
            drop(g);
            let outcome = {
                let mut t = self.token.lock().unwrap_or_else(|e| e.into_inner());
                match t.as_mut() {
                    Some(token) => loop {
                        let o = self.exec_job(token, &mut job);
                        if !matches!(o, Outcome::Done) {
                            break o;
                        }
                        let Some(next) = batch.pop_front() else {
                            break o;
                        };
                        // A job inside the batch: more follow, so the channel stays active.
                        let i = job.chain.len() - 1;
                        let seq = job.first_seq + i as u64;
                        let upd = job
                            .chain
                            .flags(i)
                            .contains(ControlFlags::STATUS_UPDATE_ON_COMPLETION);
                        drop(std::mem::replace(&mut job, next)); // leases first
                        self.publish(seq, upd.then_some(TransferStatus::Active));
                        self.armed_to_active();
                    },
                    None => Outcome::Failed(Status::INVALID_DEVICE_STATE),
                }
            };
            if !batch.is_empty() {
                // Stopped or failed inside a batch: the rest goes back to the queue, in order.
                let mut g = self.lock();
                while let Some(j) = batch.pop_back() {
                    g.queue.push_front(j);
                }
            }
            let mut event = None;
            let done = matches!(outcome, Outcome::Done);
            match outcome {
                Outcome::Done => {
                    let i = job.chain.len() - 1;
                    let seq = job.first_seq + i as u64;
                    let (f, user) = (job.chain.flags(i), job.chain.user_context(i));
                    drop(job); // release leases before the submission is reported complete
                    g = self.lock();
                    g.completed_since_start = true;
                    let st = if g.queue.is_empty() {
                        self.set_state(&mut g, ChannelState::Idle);
                        TransferStatus::Idle
                    } else {
                        self.set_state(&mut g, ChannelState::Active);
                        TransferStatus::Active
                    };
                    let upd = f.contains(ControlFlags::STATUS_UPDATE_ON_COMPLETION);
                    self.publish(seq, upd.then_some(st));
                    if f.contains(ControlFlags::INTERRUPT_ON_COMPLETION) {
                        event = Some(CompletionEvent {
                            descriptor: Some(DescriptorAddress::from_seq(seq)),
                            status: Status::SUCCESS,
                            user_context: user,
                        });
                    }
                }
                Outcome::Stopped => {
                    g = self.lock();
                    g.queue.push_front(job);
                }
                Outcome::Failed(status) => {
                    drop(job);
                    g = self.lock();
                    self.discard_pending(&mut g, status);
                    g.error = Some(status);
                    self.set_state(&mut g, ChannelState::Halted);
                    self.write_slot(TransferStatus::Halted);
                    event = Some(CompletionEvent {
                        descriptor: None,
                        status,
                        user_context: [0; 2],
                    });
                }
            }
            g.busy = false;
            g.exec_thread = None;
            if done {
                self.notify_done(self.completed.load(Ordering::Acquire));
            } else {
                self.notify_clients();
            }
            if let (Some(ev), Some(cb)) = (event, &self.callback) {
                // Run the callback like a DPC: outside the lock, still marked as the executor
                // so that blocking calls on this channel from inside it fail instead of hanging.
                g.busy = true;
                g.exec_thread = Some(std::thread::current().id());
                drop(g);
                cb(ev);
                g = self.lock();
                g.busy = false;
                g.exec_thread = None;
                self.notify_clients();
            }
        }
    }

    fn poll(&self, sub: &Submission) -> Status {
        let (first, last) = (sub.first.seq(), sub.last.seq());
        let done = self.completed.load(Ordering::Acquire);
        if self.last_discard_end.load(Ordering::Acquire) < first {
            return if done >= last {
                self.observe(done);
                Status::SUCCESS
            } else {
                Status::PENDING
            };
        }
        let g = self.lock();
        self.poll_locked(&g, sub)
    }
}

/// A software channel; `worker` is `None` for the inline engine.
pub(crate) struct SoftChannel {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
    inline: bool,
}

impl SoftChannel {
    /// Creates a channel. Threaded: a worker thread (pinned to `pin` if given) runs the queue,
    /// and submissions of at most `inline_limit.0` bytes in at most `inline_limit.1` data
    /// descriptors to an idle channel run on the submitting thread. Inline (`inline`):
    /// everything runs on the submitting thread.
    pub(crate) fn new(
        token: ChannelToken,
        callback: Option<CompletionCallback>,
        opts: ExecOptions,
        inline: bool,
        (inline_threshold, inline_max_descriptors): (u64, u32),
        pin: Option<usize>,
        on_free: Box<dyn FnOnce() + Send>,
    ) -> std::io::Result<SoftChannel> {
        let name = format!("netdma-ch{}", token.id());
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                state: ChannelState::Allocated,
                queue: VecDeque::new(),
                next_seq: 1,
                busy: false,
                exec_thread: None,
                worker_waiting: false,
                discards: Vec::new(),
                error: None,
                completed_since_start: false,
                shutdown: false,
            }),
            worker_cv: Condvar::new(),
            client_cv: Condvar::new(),
            slot: Line(AtomicU64::new(0)),
            completed: Line(AtomicU64::new(0)),
            last_discard_end: Line(AtomicU64::new(0)),
            wake_seq: Line(AtomicU64::new(u64::MAX)),
            stop_now: AtomicBool::new(false),
            stop_after: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
            state_mirror: AtomicU8::new(state_code(ChannelState::Allocated)),
            callback,
            opts,
            inline_threshold: if inline { u64::MAX } else { inline_threshold },
            inline_max_descriptors: if inline {
                u32::MAX
            } else {
                inline_max_descriptors
            },
            enqueued: AtomicU64::new(0),
            observed: Line(AtomicU64::new(0)),
            worker_wakeups: AtomicU64::new(0),
            token: Mutex::new(Some(token)),
            on_free: Mutex::new(Some(on_free)),
        });
        let worker = if inline {
            None
        } else {
            let s = shared.clone();
            Some(std::thread::Builder::new().name(name).spawn(move || {
                if let Some(cpu) = pin {
                    // Best effort: an unpinned worker is still correct.
                    let _ = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                }
                let _awake = Awake::new();
                s.run(false, false)
            })?)
        };
        Ok(SoftChannel {
            shared,
            worker: Mutex::new(worker),
            inline,
        })
    }

    /// After a submission: run it here (inline engine; or a small submission to an idle CPU
    /// engine channel), else make sure the worker is awake. From inside the executor (a
    /// callback that appends) the running executor loop picks the work up.
    fn after_submit(&self, mut g: MutexGuard<'_, Inner>) {
        let sh = &*self.shared;
        let reentrant = g.busy && g.exec_thread == Some(std::thread::current().id());
        let here = !reentrant
            && (self.inline
                || (!g.busy
                    && g.queue.len() == 1
                    && g.queue.front().is_some_and(|j| j.inline_ok)
                    && Shared::runnable(&g)
                    && !(sh.streaming()
                        && g.queue
                            .front()
                            .is_some_and(|j| j.chain.bytes() >= STREAM_TO_WORKER_FROM))));
        if here {
            sh.run_locked(g, true, !self.inline);
        } else {
            sh.notify_worker(&mut g);
        }
    }
}

impl ProviderChannel for SoftChannel {
    fn start(&self, chain: PreparedChain) -> Result<Submission> {
        let sh = &*self.shared;
        let mut g = sh.lock();
        use ChannelState::*;
        match g.state {
            Allocated | Idle | Halted => {}
            Armed | Active => {
                sh.not_reentrant(&g)?;
                g = sh.quiesce(g, false);
            }
            Suspended | Free => return Err(Status::INVALID_DEVICE_STATE),
        }
        sh.discard_pending(&mut g, Status::CANCELLED);
        sh.release_stop();
        let sub = sh.enqueue(&mut g, chain);
        g.error = None;
        g.completed_since_start = false;
        sh.set_state(&mut g, Armed);
        sh.slot.store(
            CompletionStatus::new(None, TransferStatus::Armed).0,
            Ordering::Release,
        );
        sh.notify_clients();
        self.after_submit(g);
        Ok(sub)
    }

    fn append_one(&self, chain: PreparedChain) -> Result<Submission> {
        let sh = &*self.shared;
        let mut g = sh.lock();
        use ChannelState::*;
        match g.state {
            Armed | Active | Suspended => {}
            Idle => sh.set_state(&mut g, Active),
            Allocated | Halted | Free => return Err(Status::INVALID_DEVICE_STATE),
        }
        let sub = sh.enqueue(&mut g, chain);
        self.after_submit(g);
        Ok(sub)
    }

    fn append(&self, chains: Vec<PreparedChain>) -> Result<Vec<Submission>> {
        let sh = &*self.shared;
        let mut g = sh.lock();
        use ChannelState::*;
        match g.state {
            Armed | Active | Suspended => {}
            Idle => sh.set_state(&mut g, Active),
            Allocated | Halted | Free => return Err(Status::INVALID_DEVICE_STATE),
        }
        let subs = chains.into_iter().map(|c| sh.enqueue(&mut g, c)).collect();
        self.after_submit(g);
        Ok(subs)
    }

    fn suspend(&self) -> Result<Option<DescriptorAddress>> {
        let sh = &*self.shared;
        let mut g = sh.lock();
        match g.state {
            ChannelState::Idle => return Ok(sh.last_addr()),
            ChannelState::Armed | ChannelState::Active => {}
            _ => return Err(Status::INVALID_DEVICE_STATE),
        }
        sh.not_reentrant(&g)?;
        g = sh.quiesce(g, false);
        sh.release_stop();
        // The executor may have drained the queue while we waited.
        let s = if g.state == ChannelState::Idle {
            ChannelState::Idle
        } else {
            ChannelState::Suspended
        };
        sh.set_state(&mut g, s);
        if s == ChannelState::Suspended {
            sh.write_slot(TransferStatus::Suspend);
        }
        sh.notify_clients();
        Ok(sh.last_addr())
    }

    fn resume(&self) -> Result<()> {
        let sh = &*self.shared;
        let mut g = sh.lock();
        if g.state != ChannelState::Suspended {
            return Err(Status::INVALID_DEVICE_STATE);
        }
        let s = if g.queue.is_empty() {
            ChannelState::Idle
        } else if g.completed_since_start {
            ChannelState::Active
        } else {
            ChannelState::Armed
        };
        sh.set_state(&mut g, s);
        self.after_submit(g);
        Ok(())
    }

    fn abort(&self) -> Result<()> {
        let sh = &*self.shared;
        let mut g = sh.lock();
        use ChannelState::*;
        if !matches!(g.state, Armed | Active | Idle | Suspended) {
            return Err(Status::INVALID_DEVICE_STATE);
        }
        sh.not_reentrant(&g)?;
        g = sh.quiesce(g, true);
        sh.discard_pending(&mut g, Status::CANCELLED);
        sh.release_stop();
        g.error = Some(Status::CANCELLED);
        sh.set_state(&mut g, Halted);
        sh.write_slot(TransferStatus::Halted);
        sh.notify_clients();
        Ok(())
    }

    fn reset(&self) -> Result<()> {
        let sh = &*self.shared;
        let mut g = sh.lock();
        use ChannelState::*;
        if !matches!(g.state, Armed | Active | Idle | Suspended | Halted) {
            return Err(Status::INVALID_DEVICE_STATE);
        }
        sh.not_reentrant(&g)?;
        g = sh.quiesce(g, true);
        sh.discard_pending(&mut g, Status::CANCELLED);
        sh.release_stop();
        g.error = None;
        sh.set_state(&mut g, Allocated);
        sh.write_slot(TransferStatus::Halted);
        sh.notify_clients();
        Ok(())
    }

    fn free(&self) {
        let sh = &*self.shared;
        let mut g = sh.lock();
        if g.state == ChannelState::Free {
            return;
        }
        if sh.not_reentrant(&g).is_ok() {
            g = sh.quiesce(g, true);
        } else {
            sh.stop_now.store(true, Ordering::SeqCst);
            sh.stop_after.store(true, Ordering::SeqCst);
        }
        sh.discard_pending(&mut g, Status::CANCELLED);
        g.shutdown = true;
        sh.set_state(&mut g, ChannelState::Free);
        sh.worker_cv.notify_all();
        sh.notify_clients();
        drop(g);
        let handle = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
        if let Some(f) = sh.on_free.lock().unwrap_or_else(|e| e.into_inner()).take() {
            f();
        }
    }

    fn state(&self) -> ChannelState {
        code_state(self.shared.state_mirror.load(Ordering::Acquire))
    }

    fn completion(&self) -> CompletionStatus {
        let sh = &*self.shared;
        // Read before the slot: the slot is written before `completed` advances.
        let done = sh.completed.load(Ordering::Acquire);
        let v = CompletionStatus(sh.slot.load(Ordering::Acquire));
        sh.observe(done);
        v
    }

    fn last_error(&self) -> Option<Status> {
        self.shared.lock().error
    }

    fn poll(&self, sub: &Submission) -> Status {
        self.shared.poll(sub)
    }

    fn wait(&self, sub: &Submission, timeout: Option<Duration>) -> Status {
        let sh = &*self.shared;
        // Spin briefly, and on while the executor makes progress, then block; block at once
        // when every CPU has an awake worker (spinning would slow the workers down).
        let started = Instant::now();
        let mut spin = started;
        let mut seen = sh.completed.load(Ordering::Relaxed);
        let spare = cpu_to_spare();
        loop {
            let s = sh.poll(sub);
            if s != Status::PENDING {
                return s;
            }
            let now = Instant::now();
            if spare && now - started < WAIT_SPIN_PROGRESSING {
                let c = sh.completed.load(Ordering::Relaxed);
                if c != seen {
                    seen = c;
                    spin = now;
                }
            }
            if !spare || now - spin >= WAIT_SPIN || timeout.is_some_and(|t| now - started >= t) {
                break;
            }
            for _ in 0..32 {
                std::hint::spin_loop();
            }
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut g = sh.lock();
        if sh.not_reentrant(&g).is_err() {
            return Status::INVALID_DEVICE_STATE;
        }
        loop {
            // Completion and discard are published under the lock, so this check cannot miss
            // a wake-up.
            let s = sh.poll_locked(&g, sub);
            if s != Status::PENDING {
                return s;
            }
            g = match sh.wait_client_until(g, deadline, sub.last.seq()) {
                Some(g) => g,
                None => return Status::TIMEOUT,
            };
        }
    }

    fn wait_idle(&self, timeout: Option<Duration>) -> Status {
        let sh = &*self.shared;
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut g = sh.lock();
        if sh.not_reentrant(&g).is_err() {
            return Status::INVALID_DEVICE_STATE;
        }
        loop {
            if !g.busy && !Shared::runnable(&g) {
                return Status::SUCCESS;
            }
            g = match sh.wait_client_until(g, deadline, 0) {
                Some(g) => g,
                None => return Status::TIMEOUT,
            };
        }
    }
}

impl Shared {
    /// The client saw everything up to `seq` complete.
    fn observe(&self, seq: u64) {
        // A plain load first: a client polling the same completion again writes nothing.
        if self.observed.load(Ordering::Relaxed) < seq {
            self.observed.fetch_max(seq, Ordering::Relaxed);
        }
    }

    /// True when the client has not looked at everything that completed: it streams.
    fn streaming(&self) -> bool {
        self.observed.load(Ordering::Relaxed) < self.completed.load(Ordering::Relaxed)
    }

    fn poll_locked(&self, g: &Inner, sub: &Submission) -> Status {
        let (first, last) = (sub.first.seq(), sub.last.seq());
        for &(a, b, st) in g.discards.iter().rev() {
            if a <= last && first <= b {
                return st;
            }
        }
        let done = self.completed.load(Ordering::Acquire);
        if done >= last {
            self.observe(done);
            Status::SUCCESS
        } else {
            Status::PENDING
        }
    }
}

impl Drop for SoftChannel {
    fn drop(&mut self) {
        self.free();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With an awake worker on every CPU, a waiting client has no CPU to spin on (other
    /// tests' workers can only add to the count).
    #[test]
    fn no_cpu_to_spare_while_every_cpu_has_an_awake_worker() {
        let held: Vec<Awake> = (0..crate::interface::online_cpus())
            .map(|_| Awake::new())
            .collect();
        assert!(!cpu_to_spare());
        drop(held);
    }

    /// A worker that sleeps gets one wake-up however many submissions arrive before it runs
    /// again (each extra one was a futex system call on the submitting thread).
    #[test]
    fn sleeping_worker_is_woken_once() {
        let ch = SoftChannel::new(
            ChannelToken::new(),
            None,
            ExecOptions::default(),
            false,
            (0, 0),
            None,
            Box::new(|| {}),
        )
        .unwrap();
        let sh = &*ch.shared;
        let mut g = sh.lock();
        // As if the worker had just gone to sleep (it cannot run while we hold the lock).
        g.worker_waiting = true;
        let before = sh.worker_wakeups.load(Ordering::Relaxed);
        for _ in 0..8 {
            sh.notify_worker(&mut g);
        }
        assert_eq!(sh.worker_wakeups.load(Ordering::Relaxed) - before, 1);
        drop(g);
    }
}
