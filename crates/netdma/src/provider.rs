//! The provider side: characteristics, attributes, channel parameters and the handler traits
//! (spec §3.2–§3.5, §6).

use crate::copy::ChannelToken;
use crate::descriptor::{CompletionStatus, DescriptorAddress, Submission};
use crate::flags::{Extensions, ProviderFlags};
use crate::prepared::PreparedChain;
use crate::status::{Result, Status};
use bitflags::bitflags;
use std::sync::Arc;
use std::time::Duration;

/// `NET_DMA_PROVIDER_REVISION_1`.
pub const NET_DMA_PROVIDER_REVISION_1: u32 = 1;
/// `NET_DMA_PROVIDER_REVISION_2`.
pub const NET_DMA_PROVIDER_REVISION_2: u32 = 2;
/// `NET_DMA_CHANNEL_REVISION_1` (Vista / Server 2008 parameter block).
pub const NET_DMA_CHANNEL_REVISION_1: u16 = 1;
/// `NET_DMA_CHANNEL_REVISION_2` (Windows 7 parameter block, with group affinity).
pub const NET_DMA_CHANNEL_REVISION_2: u16 = 2;
/// `NET_DMA_PNP_NOTIFICATION_REVISION_1`.
pub const NET_DMA_PNP_NOTIFICATION_REVISION_1: u32 = 1;

bitflags! {
    /// Which optional handler slots of the characteristics a provider fills (a NULL slot in
    /// `netdma.h`). Calling a missing one returns `STATUS_NOT_SUPPORTED`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct OptionalHandlers: u32 {
        /// `SetDmaChannelCpuAffinity`.
        const SET_CPU_AFFINITY = 0x1;
        /// `SuspendDma` and `ResumeDma` (always together).
        const SUSPEND_RESUME = 0x2;
        /// `AbortDma`.
        const ABORT = 0x4;
        /// `ResetChannel`.
        const RESET = 0x8;
    }
}

/// `NET_DMA_PROVIDER_CHARACTERISTICS` (spec §3.4), minus the pointers that Rust replaces by the
/// [`Provider`] / [`ProviderChannel`] traits.
#[derive(Clone, Debug, PartialEq, Eq)]
#[doc(alias = "NET_DMA_PROVIDER_CHARACTERISTICS")]
pub struct ProviderCharacteristics {
    /// `MajorVersion`: NetDMA version implemented (must be ≤ the interface's).
    pub major_version: u8,
    /// `MinorVersion`.
    pub minor_version: u8,
    /// `Flags` (must be empty below 2.0).
    pub flags: ProviderFlags,
    /// `MaxDmaChannelCount`: the most channels this kind of engine can have (≥ 1).
    pub max_dma_channel_count: u32,
    /// Optional handler slots that are filled.
    pub handlers: OptionalHandlers,
    /// Extensions beyond NetDMA (this crate's).
    pub extensions: Extensions,
    /// `FriendlyName` (2.0).
    pub friendly_name: String,
    /// Extension: a submission (Start/Append) moving at most this many bytes to a channel
    /// with nothing queued or running, from a client that has seen every completion so far
    /// (polled, waited for, or read the completion slot), is executed on the submitting
    /// thread, inside the call, because handing it to the engine would cost more than the
    /// copy (Intel's DSA library keeps copies below 8 KiB on the CPU for the same reason). A
    /// client that submits again without looking streams: its submissions of 64 KiB and more
    /// go to the engine, which copies while the client prepares the next one (below that the
    /// hand-off costs more than the overlap saves). Completion, status and
    /// callbacks are as usual, but on the caller's thread. 0: never; `u64::MAX`: always
    /// (the inline reference engine). See also [`Self::inline_max_descriptors`].
    pub inline_threshold: u64,
    /// Extension: the most data descriptors (NULL transfers not counted) a submission may
    /// have to run inline. Each descriptor costs the client building, validation and leasing
    /// on its own thread; handed to the engine, that overlaps the copies, inline it adds to
    /// them. `u32::MAX`: no limit.
    pub inline_max_descriptors: u32,
}

/// `NET_DMA_PROVIDER_ATTRIBUTES` (spec §3.5), given at `NetDmaProviderStart`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[doc(alias = "NET_DMA_PROVIDER_ATTRIBUTES")]
pub struct ProviderAttributes {
    /// `MajorHwVersion`.
    pub major_hw_version: u8,
    /// `MinorHwVersion`.
    pub minor_hw_version: u8,
    /// `Flags` (reserved, 0).
    pub flags: u32,
    /// `VendorId` (PCI vendor id; 0 for software engines).
    pub vendor_id: u32,
    /// `DmaChannelCount`: channels actually available (1 ≤ n ≤ `MaxDmaChannelCount`).
    pub dma_channel_count: u32,
    /// `MaximumTransferSize`: largest `TransferSize` (≥ 4096).
    pub maximum_transfer_size: u32,
    /// `MaximumAddressSpace`: highest reachable address (informational here).
    pub maximum_address_space: u64,
}

/// `NET_DMA_CHANNEL_CPU_AFFINITY` (spec §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(alias = "NET_DMA_CHANNEL_CPU_AFFINITY")]
pub struct ChannelCpuAffinity {
    /// `DmaChannel`: channel index.
    pub dma_channel: u32,
    /// `CpuNumber`: CPU to target.
    pub cpu_number: u32,
}

/// What a completion callback receives (the `NetDmaInterruptDpc` call).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletionEvent {
    /// The descriptor whose `INTERRUPT_ON_COMPLETION` fired; `None` for an error notification
    /// (NetDMA's DPC with a NULL descriptor).
    pub descriptor: Option<DescriptorAddress>,
    /// `STATUS_SUCCESS`, or the error that halted the channel.
    pub status: Status,
    /// `UserContext1` / `UserContext2` of that descriptor (zeros for errors).
    pub user_context: [u64; 2],
}

/// The channel's "interrupt": runs on the channel's executor (the worker thread, pinned to the
/// reported CPU, for the CPU engine; the submitting thread for submissions the provider runs
/// inline, see [`ProviderCharacteristics::inline_threshold`]). It must not block; it may `append`, but Start, Suspend,
/// Abort, Reset and waits on its own channel return `STATUS_INVALID_DEVICE_STATE` from inside
/// it (they would wait for the very thread that runs the callback).
pub type CompletionCallback = Arc<dyn Fn(CompletionEvent) + Send + Sync>;

/// `NET_DMA_CHANNEL_PARAMETERS` (spec §3.2), input of channel allocation.
#[derive(Clone)]
#[doc(alias = "NET_DMA_CHANNEL_PARAMETERS")]
pub struct ChannelParameters {
    /// `Revision`: [`NET_DMA_CHANNEL_REVISION_1`] or [`NET_DMA_CHANNEL_REVISION_2`].
    pub revision: u16,
    /// `Flags`: none defined, must be 0.
    pub flags: u32,
    /// `ProcessorAffinityMask` / `ProcessorAffinityMaskEx.Mask`: CPUs acceptable for the
    /// channel (bit n = CPU n); must not be 0.
    pub processor_affinity_mask: u64,
    /// `ChannelPriority` (informational for the software engines).
    pub channel_priority: u32,
    /// The completion callback (replaces the ISR/DPC path); `None` to poll only.
    pub completion_callback: Option<CompletionCallback>,
}

impl Default for ChannelParameters {
    fn default() -> Self {
        ChannelParameters {
            revision: NET_DMA_CHANNEL_REVISION_2,
            flags: 0,
            processor_affinity_mask: u64::MAX,
            channel_priority: 0,
            completion_callback: None,
        }
    }
}

impl std::fmt::Debug for ChannelParameters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelParameters")
            .field("revision", &self.revision)
            .field("flags", &self.flags)
            .field(
                "processor_affinity_mask",
                &format_args!("{:#x}", self.processor_affinity_mask),
            )
            .field("channel_priority", &self.channel_priority)
            .field("completion_callback", &self.completion_callback.is_some())
            .finish()
    }
}

/// Channel states of spec §10.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelState {
    /// Allocated (or reset), no chain: Start and Free are legal.
    Allocated,
    /// Started, first descriptor not complete.
    Armed,
    /// Running, at least one descriptor complete.
    Active,
    /// Every submitted descriptor processed.
    Idle,
    /// Suspended by `suspend`.
    Suspended,
    /// Stopped by an error or `abort`.
    Halted,
    /// Freed (the provider was stopped, or the channel freed).
    Free,
}

/// What allocation hands a provider: the execution right (leases taken for this channel can
/// only be used with this token) and the completion callback.
#[derive(Debug)]
pub struct ChannelSetup {
    /// The channel's execution token.
    pub token: ChannelToken,
    /// Channel parameters as given by the client.
    pub parameters: ChannelParameters,
}

/// What `AllocateDmaChannel` returns.
pub struct AllocatedChannel {
    /// The provider's channel object (`ProviderChannelContext`).
    pub channel: Arc<dyn ProviderChannel>,
    /// Channel index, 0 ≤ i < `DmaChannelCount`.
    pub index: u32,
    /// `CpuNumber`: where the channel's completion callbacks run.
    pub cpu_number: u32,
}

/// Provider-level handlers (`ProviderContext` handlers of spec §6).
pub trait Provider: Send + Sync {
    /// The characteristics registered with the interface.
    fn characteristics(&self) -> ProviderCharacteristics;

    /// `SetDmaChannelCpuAffinity`: target CPU per channel index (called during registration if
    /// [`OptionalHandlers::SET_CPU_AFFINITY`] is advertised). `table.len()` is an element
    /// count (spec §6 `[decide]`).
    #[doc(alias = "DMA_CHANNELS_CPU_AFFINITY_HANDLER")]
    fn set_dma_channel_cpu_affinity(&self, table: &[ChannelCpuAffinity]) -> Result<()> {
        let _ = table;
        Ok(())
    }

    /// `AllocateDmaChannel`: returns `STATUS_INSUFFICIENT_RESOURCES` when every channel is in
    /// use. Only called while the provider is started.
    #[doc(alias = "DMA_CHANNEL_ALLOCATE_HANDLER")]
    fn allocate_dma_channel(&self, setup: ChannelSetup) -> Result<AllocatedChannel>;
}

/// Channel-level handlers (spec §6), plus the completion reads and waits a client needs.
///
/// The interface validates chains (and builds the [`PreparedChain`]) before calling
/// `start`/`append`; the provider enforces the §10 state machine, returning
/// `STATUS_INVALID_DEVICE_STATE` for calls outside it.
pub trait ProviderChannel: Send + Sync {
    /// `StartDma`.
    fn start(&self, chain: PreparedChain) -> Result<Submission>;
    /// `AppendDma` (several chains: all admitted, linked in order, one doorbell).
    fn append(&self, chains: Vec<PreparedChain>) -> Result<Vec<Submission>>;
    /// `AppendDma` of one chain (the common case, without the vectors).
    fn append_one(&self, chain: PreparedChain) -> Result<Submission> {
        self.append(vec![chain])?
            .pop()
            .ok_or(Status::INVALID_DEVICE_STATE)
    }
    /// `SuspendDma`: returns the last processed descriptor.
    fn suspend(&self) -> Result<Option<DescriptorAddress>> {
        Err(Status::NOT_SUPPORTED)
    }
    /// `ResumeDma`.
    fn resume(&self) -> Result<()> {
        Err(Status::NOT_SUPPORTED)
    }
    /// `AbortDma`.
    fn abort(&self) -> Result<()> {
        Err(Status::NOT_SUPPORTED)
    }
    /// `ResetChannel`.
    fn reset(&self) -> Result<()> {
        Err(Status::NOT_SUPPORTED)
    }
    /// `FreeDmaChannel`: stop everything (pending work is cancelled) and release the channel.
    fn free(&self);
    /// Current state.
    fn state(&self) -> ChannelState;
    /// The completion slot.
    fn completion(&self) -> CompletionStatus;
    /// Why the channel last halted (`None` if it has not, or was reset/started since).
    fn last_error(&self) -> Option<Status>;
    /// `STATUS_SUCCESS`, `STATUS_PENDING`, or the status the submission was discarded with.
    fn poll(&self, submission: &Submission) -> Status;
    /// Waits for a submission to leave `STATUS_PENDING`; `STATUS_TIMEOUT` on timeout.
    fn wait(&self, submission: &Submission, timeout: Option<Duration>) -> Status;
    /// Waits until the channel has nothing it could still run (Idle, Halted, Suspended,
    /// Allocated); `STATUS_TIMEOUT` on timeout.
    fn wait_idle(&self, timeout: Option<Duration>) -> Status;
}
