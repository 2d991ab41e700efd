//! # NetDMA for Rust
//!
//! Memory-to-memory DMA engines behind one interface, modelled on the Windows NetDMA interface
//! (`netdma.h`, NetDMA 1.0/1.1/2.0; `docs/spec/netdma.md`), with a few extensions from modern engines
//! (Intel DSA, Linux dmaengine). Names mirror NetDMA: `NetDmaRegisterProvider` →
//! [`NetDma::register_provider`], `StartDma` → [`Channel::start`], `NET_DMA_NULL_TRANSFER` →
//! [`ControlFlags::NULL_TRANSFER`]; the NetDMA spellings are doc aliases.
//!
//! ## Roles
//!
//! * [`NetDma`] — the interface: providers register ([`NetDma::register_provider`] →
//!   [`ProviderHandle`]: start, stop, power notifications, deregister), clients find them
//!   ([`NetDma::providers`], [`NetDma::register_client`] for PnP notifications) and allocate
//!   channels ([`NetDma::allocate_channel`] with [`ChannelParameters`]; the chosen CPU is
//!   [`Channel::cpu_number`]). A channel is owned by the one [`Channel`] value that allocated it.
//! * Providers implement [`Provider`] (characteristics, `SetDmaChannelCpuAffinity`,
//!   `AllocateDmaChannel`) and [`ProviderChannel`] (the channel handlers).
//!   Built in: [`CpuEngine`] (one worker thread per channel) and [`InlineEngine`] (executes on
//!   the submitting thread; the reference the conformance suite also runs against).
//! * Clients build a [`Chain`] of 64-byte [`Descriptor`]s over [`DmaBuffer`]s and submit it with
//!   [`Channel::start`] / [`Channel::append`]; they learn about completion from the completion
//!   slot ([`Channel::completion`]), the per-descriptor callback
//!   ([`ChannelParameters::completion_callback`] for `INTERRUPT_ON_COMPLETION`), or by polling /
//!   waiting on the returned [`Submission`] ([`Channel::poll`], [`Channel::wait`]).
//!
//! ```
//! use netdma::*;
//! let netdma = NetDma::new();
//! let engine = CpuEngine::register(&netdma, EngineConfig::new(2)).unwrap();
//! let ch = netdma.allocate_channel(engine.id(), ChannelParameters::default()).unwrap();
//! let src = DmaBuffer::from_slice(b"hello, dma");
//! let dst = DmaBuffer::new(10);
//! let mut chain = Chain::new();
//! chain.copy(&src, 0, &dst, 0, 10, ControlFlags::STATUS_UPDATE_ON_COMPLETION);
//! let sub = ch.start(chain).unwrap();
//! assert_eq!(ch.wait(&sub, None), Status::SUCCESS);
//! assert_eq!(&dst.to_vec().unwrap()[..], b"hello, dma");
//! assert_eq!(ch.completion().status(), TransferStatus::Idle);
//! ```
//!
//! ## Memory safety
//!
//! Descriptors cannot name arbitrary memory. A [`Pa`] is (buffer slot, offset) in the
//! submitting [`Chain`]'s own buffer table; the engine bounds-checks every range right before
//! touching it (a bad address halts the channel with `STATUS_ACCESS_VIOLATION`, like an I/OAT
//! address error). From admission until its submission retires, a chain holds a *lease* on every
//! buffer it uses (read, or write for destinations and result words), which keeps the buffer
//! alive and excludes conflicting access: the client's [`DmaBuffer::read`] / [`DmaBuffer::write`]
//! and other channels' leases fail with `STATUS_SHARING_VIOLATION` instead of racing. Leases are
//! released before a submission is reported complete, so after [`Channel::wait`] returns the
//! client can read the result at once. Raw memory enters only through the `unsafe`
//! [`DmaBuffer::from_raw_parts`] with a written contract. All `unsafe` code lives in one module
//! (`copy.rs`: buffer storage, guards, leases and the copy kernels), whose docs state the
//! contract; the rest of the crate is `#![deny(unsafe_code)]`.
//!
//! ## Threading model and lock order
//!
//! * CPU engine: one worker thread per channel, pinned (best effort) to the reported CPU when
//!   the client's `processor_affinity_mask` excludes some online CPU, left to the scheduler
//!   when the mask admits them all (the default); it polls for about 20 µs before it
//!   sleeps, so a streaming client's next Append needs no wake-up. Whoever executes a job
//!   (the worker, or a submitter running a small job inline) marks the channel busy under the
//!   channel lock first, so jobs run one at a time and in order. The worker
//!   takes a whole submitted chain out of the queue under the channel lock (and up to 15 more
//!   queued chains, at most 1 MiB in all, none after one that asks for a callback: a stream of
//!   single copies costs one lock hand-off per batch, not per copy) and executes them
//!   without the lock; the chains of a batch complete one by one, each after its leases are
//!   released; between descriptors (and between 1 MiB pieces of a descriptor) it checks
//!   two atomics (`stop_after`: suspend / replacing start; `stop_now`: abort, reset, free).
//!   Intermediate completions are published with atomic stores (completed sequence number, the
//!   completion slot); the last descriptor of a chain is published under the channel lock, which
//!   also decides Idle vs Active atomically with respect to Append.
//! * Submission: validation and leasing happen before the channel lock; then one lock
//!   acquisition enqueues and, only if the worker sleeps, one condvar notify. Polling a
//!   submission is two atomic loads; waiting spins briefly (with several CPUs: on, up to
//!   2 ms, while the executor keeps completing work at least every 20 µs) and then blocks on a
//!   condvar that the worker signals only when someone waits. A client does not spin at all
//!   while the process has as many awake workers as CPUs: its spin would take those CPUs'
//!   time from the workers (it matters for copies that complete faster than every 20 µs,
//!   which would keep a spinning client going for its 2 ms).
//! * Control calls (start on a running channel, suspend, abort, reset, free) set the stop
//!   flags and wait until the executor has handed its chain back; then they change the state.
//! * Completion callbacks run on the executor thread outside every lock (the "DPC"); blocking
//!   calls on the same channel from inside a callback return `STATUS_INVALID_DEVICE_STATE`.
//! * Lock order: provider entry lock → (released) → channel slot `RwLock` (read for calls,
//!   write only to free) → channel lock → buffer lease lock. The buffer lease lock is a leaf;
//!   the registry/client lists are never held while calling out.
//!
//! ## Decisions where the spec is open (`[decide]`)
//!
//! * **Status codes**: NTSTATUS values ([`Status`], a local newtype to be unified with
//!   `netdirect-types` later). Calls outside the §10 table return
//!   `STATUS_INVALID_DEVICE_STATE` (more specific than the spec's "Unsuccessful");
//!   malformed descriptors `STATUS_INVALID_PARAMETER`; features the provider does not advertise
//!   (optional handlers, extensions, 2.0 chains on a 1.x provider, DCA context change without
//!   DCA) `STATUS_NOT_SUPPORTED`; no free channel `STATUS_INSUFFICIENT_RESOURCES` (NetDMA's
//!   "STATUS_RESOURCES"); a provider newer than the interface `STATUS_REVISION_MISMATCH`;
//!   discarded work `STATUS_CANCELLED`; powered-down provider `STATUS_DEVICE_NOT_READY`;
//!   stopped provider `STATUS_DEVICE_REMOVED`.
//! * **Masks**: `NET_DMA_OP_TYPE_MASK` = `0xFF000000`, `NET_DMA_RESERVED_MASK` = `0x00FFFD00`
//!   (the inferred values); reserved bits are rejected.
//! * **Completion value**: descriptor addresses are 64-byte aligned sequence numbers
//!   ([`DescriptorAddress`]) assigned in execution order and never reused; status in bits 0–2,
//!   bits 3–5 zero. Start writes `Armed`; flagged descriptors write `Active`/`Idle`; suspend
//!   writes `Suspend`; abort, reset and errors write `Halted` (always, as if status reporting
//!   were on). Completion is published strictly in order; the software engines always behave as
//!   if `SERIALIZE_TRANSFER` were set.
//! * **Suspend** returns `Option<DescriptorAddress>` (the last processed descriptor) and is a
//!   no-op on an idle channel; **Append while suspended** is allowed and runs on resume.
//! * **Start on a running channel** is legal (spec §6/§10): the current descriptor finishes,
//!   the rest is discarded (`STATUS_CANCELLED`). Start on a *suspended* channel is illegal.
//! * **Errors**: the engine halts, [`Channel::last_error`] gives the cause, the callback gets an
//!   event with `descriptor: None` (NetDMA's DPC with NULL); recovery is `reset` (or `start`).
//!   After `abort` `last_error` is `STATUS_CANCELLED`.
//! * **Free** with work outstanding aborts, frees, and reports `STATUS_INVALID_DEVICE_STATE`;
//!   dropping a [`Channel`] aborts and frees silently.
//! * **CPU affinity**: the `SetDmaChannelCpuAffinity` table size is an element count; the
//!   interface proposes channel i → CPU i mod n; allocation prefers a channel already targeting
//!   an allowed CPU, else retargets one; a mask with no online CPU is
//!   `STATUS_INVALID_PARAMETER`.
//! * **Chains**: `next` is a [`Link`] to an index of the same chain (0 = NULL). 1.x chains are
//!   walked until NULL, 2.0 chains for `DescriptorCount` descriptors (the tail's link is not
//!   followed); cycles and out-of-range links are `STATUS_INVALID_PARAMETER`. Page breaks use
//!   4 KiB "pages" of the buffer's offset space; the second address must be 4 KiB aligned.
//! * **Copy method**: chosen per descriptor size by a [`CopyPlan`], by default measured once
//!   per process on the running machine ([`Calibration::get`]): `memcpy`, `rep movsb` and
//!   vector stores on hot buffers at every power of two from 1 KiB to ¼ of the L3 (a method must
//!   beat `memcpy` by 10 % to be chosen), and those against non-temporal
//!   stores at ½ and all of the L3 that sysfs reports; non-temporal stores are used from
//!   the smallest of those sizes at which they win there and at every larger one (never, if
//!   they never win). [`EngineConfig::copy_plan`] fixes a plan instead.
//! * **Cache hints**: `DESTINATION_NO_SNOOP` selects non-temporal stores for that descriptor,
//!   `DESTINATION_DCA_ENABLE` forbids them (data wanted in cache: the plan's temporal method).
//! * **Inline execution** (an extension; Intel's DSA library keeps copies below 8 KiB on the
//!   CPU for the same reason): a submission moving at most
//!   [`ProviderCharacteristics::inline_threshold`] bytes in at most
//!   [`ProviderCharacteristics::inline_max_descriptors`] data descriptors (default
//!   [`INLINE_MAX_DESCRIPTORS`] = 1: single copies; a chain's per-descriptor client work
//!   overlaps its copies only on the worker) to a CPU-engine channel with nothing
//!   queued or running, from a client that has seen every completion so far, executes inside
//!   Start/Append on the submitting thread (callbacks too). A client that appends again
//!   without polling, waiting or reading the completion slot is streaming: its submissions of
//!   64 KiB and more go to the worker, which copies while the client builds the next one
//!   (inline, the client's ~300–400 ns per submission would add to every copy instead);
//!   smaller ones stay inline, where the hand-off to another CPU costs more than the copy.
//!   The threshold is the largest power of two that the best copy method, at that size's own
//!   measured rate, copies within one measured hand-off to a sleeping thread and back, at most
//!   [`MAX_INLINE_THRESHOLD`] (1 MiB); 0 disables it ([`EngineConfig::inline_threshold`]).
//!   The hand-off is measured, so on a busy machine (where a wake-up waits for a CPU) more
//!   runs inline.
//! * **PnP**: late clients get Registered/Arrival/ChannelArrival replayed; ChannelArrival is
//!   also sent when a channel is freed. PowerDown blocks new work (`STATUS_DEVICE_NOT_READY`)
//!   and drains; PowerUp re-starts idle channels with a NULL descriptor. Stop waits for running
//!   work, cancels work left in suspended channels and frees every channel.
//! * **Extensions** ([`Extensions`], op types numbered like DSA opcodes): fill, compare,
//!   CRC32c, copy+CRC32c and batch admission; operand layout in [`OpType`].
//!
//! ## Performance (CPU engine)
//!
//! `nd dma` (`--json`) measures the engine against `memcpy` in the same run: single
//! descriptors, chains of 16/64/256 descriptors (one channel; client on one CPU, worker on
//! another, `memcpy` on the worker's CPU), and N channels on N CPUs against N pinned `memcpy`
//! threads. A cell runs 8 rounds of one 10 ms engine trial next to one 10 ms `memcpy` trial;
//! its ratio is the median of the rounds' ratios (this VM's CPUs change speed for ~100 ms
//! stretches, so only neighbouring trials compare). Its header shows the calibration.
//!
//! Client cost per descriptor, single thread (inline engine, chain of 64 × 64 B: build,
//! validate, lease, execute, retire): 64 ns before the builder and `op_of` were inlined,
//! 26–38 ns after; on two CPUs a chain of 64 × 4 KiB costs its client 1.6–2 µs (was 4.5 µs,
//! more than the worker's copies). A single-descriptor submission costs ~300–400 ns from
//! build to retirement.
//!
//! `nd dma --json`, medians of three runs on the 2-vCPU development VM (AMD EPYC, 512 KiB L2,
//! 32 MiB L3), ratio to `memcpy`; "before" is the engine of the previous release measured with
//! the same harness in alternation:
//!
//! | size | single, before → now | chain of 64, before → now | 2 channels / 2 threads, now |
//! |---|---|---|---|
//! | 4 KiB | 0.23 → 0.22 (inline) | 0.64–0.83 → 1.13 | 0.40 |
//! | 64 KiB | 0.84 → 0.95 | 0.99 → 0.99 | 0.89 |
//! | 128 KiB | 0.89 → 0.98 | 0.99 → 0.98 | 0.87 |
//! | 1 MiB | 0.99 → 0.99 | 0.99 → 1.00 | 0.93 |
//! | 4 MiB | 0.98 → 0.99 | 1.00 → 1.00 | 0.91 |
//! | 8 MiB | 0.94 → 0.98 | 1.01 → 1.00 | 0.87 |
//! | 64 MiB | 1.04 → 1.91 | 1.05 → 1.93 | 1.41 |
//!
//! At 64 MiB the engine's non-temporal stores beat `memcpy` when the host's L3 is busy (1.1×
//! on a quiet one). Single copies below 64 KiB run inline and cost their ~300 ns each; chains
//! are the way to move small copies. A run on a busier host read 0.72 for 4 KiB chains (the
//! client's and worker's cross-CPU traffic suffers where a one-CPU `memcpy` does not).

#![deny(unsafe_code)]

mod copy;
mod descriptor;
mod engines;
mod flags;
mod interface;
mod method;
mod prepared;
mod provider;
mod soft;
mod status;

pub use copy::{
    BUFFER_ALIGN, ChannelToken, CopyMethod, DmaBuffer, Lease, ReadGuard, WriteGuard,
    non_temporal_available,
};
pub use descriptor::{
    BufferSlot, Chain, ChainStyle, CompletionStatus, Descriptor, DescriptorAddress, Link, Pa,
    Submission, TransferStatus,
};
pub use engines::{
    CpuEngine, EngineConfig, INLINE_MAX_DESCRIPTORS, InlineEngine, current_thread_cpus,
    pin_current_thread,
};
pub use flags::{ControlFlags, Extensions, OpType, ProviderFlags};
pub use interface::{
    Channel, ClientCallback, ClientRegistration, NetDma, PnpNotification, PnpNotificationCode,
    ProviderHandle, ProviderId, ProviderInfo, online_cpus,
};
pub use method::{CacheInfo, Calibration, CopyPlan, MAX_INLINE_THRESHOLD, Sample};
pub use prepared::{ExecOptions, PreparedChain};
pub use provider::{
    AllocatedChannel, ChannelCpuAffinity, ChannelParameters, ChannelSetup, ChannelState,
    CompletionCallback, CompletionEvent, NET_DMA_CHANNEL_REVISION_1, NET_DMA_CHANNEL_REVISION_2,
    NET_DMA_PNP_NOTIFICATION_REVISION_1, NET_DMA_PROVIDER_REVISION_1, NET_DMA_PROVIDER_REVISION_2,
    OptionalHandlers, Provider, ProviderAttributes, ProviderChannel, ProviderCharacteristics,
};
pub use soft::STREAM_TO_WORKER_FROM;
pub use status::{Result, Status};
