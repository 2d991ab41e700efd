//! The built-in providers: [`CpuEngine`] (one worker thread per channel) and [`InlineEngine`]
//! (a deliberately simple reference provider that executes on the submitting thread).

use crate::flags::{Extensions, ProviderFlags};
use crate::interface::{NetDma, ProviderHandle, ProviderId, online_cpus};
use crate::method::{Calibration, CopyPlan};
use crate::prepared::ExecOptions;
use crate::provider::{
    AllocatedChannel, ChannelCpuAffinity, ChannelSetup, OptionalHandlers, Provider,
    ProviderAttributes, ProviderCharacteristics,
};
use crate::soft::SoftChannel;
use crate::status::{Result, Status};
use std::sync::{Arc, Mutex};

/// Configuration of a software engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Channels (`DmaChannelCount` = `MaxDmaChannelCount`).
    pub channels: u32,
    /// NetDMA version to register with (default 2.0; 1.x disables counted chains and page
    /// breaks, 1.0 also PnP notifications).
    pub version: (u8, u8),
    /// Extensions to advertise (default: all).
    pub extensions: Extensions,
    /// Optional handlers to advertise (default: all).
    pub handlers: OptionalHandlers,
    /// Which copy kernel for which size; `None` (default): the plan measured on this machine
    /// at first use ([`Calibration::get`]).
    pub copy_plan: Option<CopyPlan>,
    /// CPU engine: submissions of at most this many bytes to an idle channel run on the
    /// submitting thread (0: never); `None` (default): the measured
    /// [`Calibration::inline_threshold`]. Reported as
    /// [`ProviderCharacteristics::inline_threshold`].
    pub inline_threshold: Option<u64>,
    /// CPU engine: only submissions with at most this many data descriptors run inline
    /// (default [`INLINE_MAX_DESCRIPTORS`]). Reported as
    /// [`ProviderCharacteristics::inline_max_descriptors`].
    pub inline_max_descriptors: u32,
    /// `MaximumTransferSize` (≥ 4096).
    pub maximum_transfer_size: u32,
    /// Pin each worker to the CPU reported as `CpuNumber` when the client's affinity mask
    /// excludes some online CPU (CPU engine only); a mask admitting every CPU leaves the
    /// worker unpinned either way.
    pub pin_workers: bool,
    /// `FriendlyName`.
    pub friendly_name: String,
}

impl EngineConfig {
    /// Defaults with `channels` channels.
    pub fn new(channels: u32) -> EngineConfig {
        EngineConfig {
            channels,
            version: (2, 0),
            extensions: Extensions::all(),
            handlers: OptionalHandlers::all(),
            copy_plan: None,
            inline_threshold: None,
            inline_max_descriptors: INLINE_MAX_DESCRIPTORS,
            maximum_transfer_size: u32::MAX,
            pin_workers: true,
            friendly_name: String::new(),
        }
    }
}

/// Default [`EngineConfig::inline_max_descriptors`]: single copies run inline, chains go to
/// the worker. Measured on the 2-vCPU development VM (busy), chains of 64 × 4 KiB reached
/// 0.5–0.7× `memcpy` inline (the client's per-descriptor work and the copies in series) and
/// about 1× on the worker (in parallel).
pub const INLINE_MAX_DESCRIPTORS: u32 = 1;

struct SoftProvider {
    config: EngineConfig,
    plan: CopyPlan,
    inline_threshold: u64,
    inline_max_descriptors: u32,
    inline: bool,
    in_use: Arc<Mutex<Vec<bool>>>,
    affinity: Mutex<Vec<u32>>,
}

impl Provider for SoftProvider {
    fn characteristics(&self) -> ProviderCharacteristics {
        let c = &self.config;
        ProviderCharacteristics {
            major_version: c.version.0,
            minor_version: c.version.1,
            flags: ProviderFlags::empty(),
            max_dma_channel_count: c.channels,
            handlers: c.handlers,
            extensions: c.extensions,
            friendly_name: c.friendly_name.clone(),
            inline_threshold: self.inline_threshold,
            inline_max_descriptors: self.inline_max_descriptors,
        }
    }

    fn set_dma_channel_cpu_affinity(&self, table: &[ChannelCpuAffinity]) -> Result<()> {
        let mut a = self.affinity.lock().unwrap_or_else(|e| e.into_inner());
        for e in table {
            if let Some(slot) = a.get_mut(e.dma_channel as usize) {
                *slot = e.cpu_number;
            }
        }
        Ok(())
    }

    fn allocate_dma_channel(&self, setup: ChannelSetup) -> Result<AllocatedChannel> {
        let mask = setup.parameters.processor_affinity_mask;
        let cpus = online_cpus().min(64);
        let allowed = |c: u32| (c as usize) < cpus && mask & (1u64 << c) != 0;
        let first_allowed = (0..cpus as u32)
            .find(|&c| allowed(c))
            .ok_or(Status::INVALID_PARAMETER)?;
        let affinity = self
            .affinity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        // Prefer a free channel whose affinity already targets an allowed CPU; otherwise take
        // any free channel and retarget it (spec §6 AllocateDmaChannel).
        let free = |i: &usize| !in_use[*i];
        let pick = (0..in_use.len())
            .filter(free)
            .find(|&i| allowed(affinity[i]))
            .map(|i| (i, affinity[i]))
            .or_else(|| (0..in_use.len()).find(free).map(|i| (i, first_allowed)));
        let Some((index, cpu)) = pick else {
            return Err(Status::INSUFFICIENT_RESOURCES);
        };
        in_use[index] = true;
        drop(in_use);
        let opts = ExecOptions {
            plan: self.plan.clone(),
            chunk: 1 << 20,
        };
        let release = self.in_use.clone();
        let on_free = Box::new(move || {
            release.lock().unwrap_or_else(|e| e.into_inner())[index] = false;
        });
        // The worker runs where the client's mask allows: a mask that admits every online
        // CPU leaves it to the scheduler (like any thread, it then moves away from a busy
        // CPU); any narrower mask pins it to the chosen CPU.
        let every = (0..cpus as u32).all(allowed);
        let pin = (!self.inline && self.config.pin_workers && !every).then_some(cpu as usize);
        let ch = SoftChannel::new(
            setup.token,
            setup.parameters.completion_callback,
            opts,
            self.inline,
            (self.inline_threshold, self.inline_max_descriptors),
            pin,
            on_free,
        );
        match ch {
            Ok(ch) => Ok(AllocatedChannel {
                channel: Arc::new(ch),
                index: index as u32,
                cpu_number: cpu,
            }),
            Err(_) => {
                self.in_use.lock().unwrap_or_else(|e| e.into_inner())[index] = false;
                Err(Status::INSUFFICIENT_RESOURCES)
            }
        }
    }
}

fn register(netdma: &NetDma, mut config: EngineConfig, inline: bool) -> Result<ProviderHandle> {
    if config.friendly_name.is_empty() {
        config.friendly_name = if inline {
            "NetDMA inline reference engine"
        } else {
            "NetDMA CPU copy engine"
        }
        .into();
    }
    let n = config.channels as usize;
    let attrs = ProviderAttributes {
        major_hw_version: 1,
        minor_hw_version: 0,
        flags: 0,
        vendor_id: 0,
        dma_channel_count: config.channels,
        maximum_transfer_size: config.maximum_transfer_size,
        maximum_address_space: u64::MAX,
    };
    let cpus = online_cpus() as u32;
    let plan = match &config.copy_plan {
        Some(p) => p.clone(),
        None => Calibration::get().plan.clone(),
    };
    let inline_threshold = if inline {
        u64::MAX
    } else {
        config
            .inline_threshold
            .unwrap_or_else(|| Calibration::get().inline_threshold)
    };
    let p = Arc::new(SoftProvider {
        plan,
        inline_threshold,
        inline_max_descriptors: if inline {
            u32::MAX
        } else {
            config.inline_max_descriptors
        },
        config,
        inline,
        in_use: Arc::new(Mutex::new(vec![false; n])),
        affinity: Mutex::new((0..n as u32).map(|i| i % cpus).collect()),
    });
    let h = netdma.register_provider(p)?;
    h.start(attrs)?;
    Ok(h)
}

/// The CPU copy engine: a provider whose channels are worker threads (one per channel, pinned
/// to the channel's CPU), copying with the kernel the [`CopyPlan`] picks for each size (by
/// default measured on this machine). Submissions of at most
/// [`ProviderCharacteristics::inline_threshold`] bytes in at most
/// [`ProviderCharacteristics::inline_max_descriptors`] data descriptors to an idle channel
/// run on the submitting thread, where handing them to the worker would cost more than the
/// copy.
#[derive(Debug)]
pub struct CpuEngine {
    handle: ProviderHandle,
}

impl CpuEngine {
    /// Registers and starts a CPU engine on `netdma`.
    pub fn register(netdma: &NetDma, config: EngineConfig) -> Result<CpuEngine> {
        Ok(CpuEngine {
            handle: register(netdma, config, false)?,
        })
    }

    /// The provider id clients allocate channels from.
    pub fn id(&self) -> ProviderId {
        self.handle.id()
    }

    /// The provider handle (stop, restart, power events).
    pub fn handle(&self) -> &ProviderHandle {
        &self.handle
    }

    /// The provider handle, by value (dropping it deregisters the provider).
    pub fn into_handle(self) -> ProviderHandle {
        self.handle
    }
}

/// The inline reference engine: executes each chain synchronously inside Start/Append/Resume
/// on the calling thread (callbacks run there too). Simple enough to be obviously right, so the
/// conformance suite checks the CPU engine against the same expectations.
#[derive(Debug)]
pub struct InlineEngine {
    handle: ProviderHandle,
}

impl InlineEngine {
    /// Registers and starts an inline engine on `netdma` (`pin_workers` is ignored).
    pub fn register(netdma: &NetDma, config: EngineConfig) -> Result<InlineEngine> {
        Ok(InlineEngine {
            handle: register(netdma, config, true)?,
        })
    }

    /// The provider id.
    pub fn id(&self) -> ProviderId {
        self.handle.id()
    }

    /// The provider handle.
    pub fn handle(&self) -> &ProviderHandle {
        &self.handle
    }

    /// The provider handle, by value (dropping it deregisters the provider).
    pub fn into_handle(self) -> ProviderHandle {
        self.handle
    }
}

/// Pins the calling thread to CPU `cpu` (best effort, as the CPU engine pins its workers);
/// true on success. Exported so that a benchmark can pin its reference threads the same way.
pub fn pin_current_thread(cpu: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}

/// The CPUs the calling thread may run on (its `sched_getaffinity` mask), ascending.
pub fn current_thread_cpus() -> Vec<usize> {
    let mut v: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    v.sort_unstable();
    v
}
