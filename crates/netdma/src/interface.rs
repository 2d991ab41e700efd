//! The NetDMA interface: provider registry, client discovery and channel allocation, PnP and
//! power notifications (spec §2, §5, §8, §9, §11).

use crate::copy::ChannelToken;
use crate::descriptor::{Chain, CompletionStatus, DescriptorAddress, Submission};
use crate::flags::{Extensions, ProviderFlags};
use crate::prepared::{Caps, PreparedChain};
use crate::provider::{
    ChannelCpuAffinity, ChannelParameters, ChannelSetup, ChannelState, OptionalHandlers, Provider,
    ProviderAttributes, ProviderChannel, ProviderCharacteristics,
};
use crate::status::{Result, Status};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

/// Identifies a registered provider within one [`NetDma`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderId(pub u32);

/// `NET_DMA_PNP_NOTIFICATION_CODE` (spec §3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
#[doc(alias = "NET_DMA_PNP_NOTIFICATION_CODE")]
pub enum PnpNotificationCode {
    /// `NetDmaNotificationProviderRegistered` (1).
    ProviderRegistered = 1,
    /// `NetDmaNotificationProviderArrival` (2): started, usable.
    ProviderArrival = 2,
    /// `NetDmaNotificationProviderRemoval` (3): about to stop.
    ProviderRemoval = 3,
    /// `NetDmaNotificationChannelArrival` (4): a channel became available.
    ChannelArrival = 4,
    /// `NetDmaNotificationProviderPowerDown` (5).
    ProviderPowerDown = 5,
    /// `NetDmaNotificationProviderPowerUp` (6).
    ProviderPowerUp = 6,
}

impl PnpNotificationCode {
    /// `NetDmaNotificationMax` (7).
    pub const MAX: u32 = 7;
}

/// A PnP / power notification delivered to clients (`NET_DMA_PNP_NOTIFICATION`; the payload
/// buffer is replaced by typed fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(alias = "NET_DMA_PNP_NOTIFICATION")]
pub struct PnpNotification {
    /// `NotificationCode`.
    pub code: PnpNotificationCode,
    /// The provider concerned.
    pub provider: ProviderId,
    /// For `ChannelArrival`: the channel index that became available.
    pub channel: Option<u32>,
}

/// A client's notification handler. Called synchronously on the thread of the provider event
/// (register, start, stop, power change); it must not call back into provider control
/// ([`ProviderHandle`] methods) of the same provider.
pub type ClientCallback = Arc<dyn Fn(&PnpNotification) + Send + Sync>;

/// What clients can learn about a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderInfo {
    /// Its id.
    pub id: ProviderId,
    /// Registered characteristics.
    pub characteristics: ProviderCharacteristics,
    /// Attributes of the current start, `None` while stopped.
    pub attributes: Option<ProviderAttributes>,
    /// False between `PowerDown` and `PowerUp`.
    pub powered: bool,
    /// Channels currently allocated.
    pub allocated_channels: u32,
}

struct ChannelSlot {
    chan: RwLock<Option<Arc<dyn ProviderChannel>>>,
}

struct ProviderState {
    attributes: Option<ProviderAttributes>,
    powered: bool,
    channels: Vec<Weak<ChannelSlot>>,
    deregistered: bool,
}

struct ProviderEntry {
    id: ProviderId,
    provider: Arc<dyn Provider>,
    chars: ProviderCharacteristics,
    state: Mutex<ProviderState>,
}

impl ProviderEntry {
    fn lock(&self) -> MutexGuard<'_, ProviderState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live_channels(&self) -> Vec<Arc<ChannelSlot>> {
        let mut st = self.lock();
        st.channels.retain(|w| w.strong_count() > 0);
        st.channels.iter().filter_map(Weak::upgrade).collect()
    }
}

#[derive(Default)]
struct Registry {
    providers: Mutex<Vec<Arc<ProviderEntry>>>,
    clients: Mutex<Vec<(u64, ClientCallback)>>,
    next_id: Mutex<(u32, u64)>,
}

impl Registry {
    fn notify(&self, n: PnpNotification) {
        let clients: Vec<ClientCallback> = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|c| c.1.clone())
            .collect();
        for c in clients {
            c(&n);
        }
    }

    fn entry(&self, id: ProviderId) -> Result<Arc<ProviderEntry>> {
        self.providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|e| e.id == id)
            .cloned()
            .ok_or(Status::NOT_FOUND)
    }
}

/// The NetDMA interface: where providers register and clients find them and allocate channels.
///
/// There is no global instance: create one and pass it around (providers are chosen explicitly).
#[derive(Clone, Default)]
pub struct NetDma {
    reg: Arc<Registry>,
}

impl std::fmt::Debug for NetDma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetDma")
            .field("providers", &self.providers().len())
            .finish()
    }
}

impl NetDma {
    /// Interface version implemented: NetDMA 2.0.
    pub const VERSION: (u8, u8) = (2, 0);

    /// A new, empty interface.
    pub fn new() -> NetDma {
        NetDma::default()
    }

    /// `NetDmaGetVersion`: `(major << 16) | minor` = `0x0002_0000`.
    #[doc(alias = "NetDmaGetVersion")]
    pub fn get_version(&self) -> u32 {
        (u32::from(Self::VERSION.0) << 16) | u32::from(Self::VERSION.1)
    }

    /// `NetDmaRegisterProvider`. Checks the version rule (provider ≤ interface, else
    /// `STATUS_REVISION_MISMATCH`), `Flags` = 0 below 2.0 and `MaxDmaChannelCount` ≥ 1
    /// (`STATUS_INVALID_PARAMETER`); calls `SetDmaChannelCpuAffinity` with one entry per
    /// possible channel (channel i → CPU i mod CPU count) if the provider has that handler.
    #[doc(alias = "NetDmaRegisterProvider")]
    pub fn register_provider(&self, provider: Arc<dyn Provider>) -> Result<ProviderHandle> {
        let chars = provider.characteristics();
        if (chars.major_version, chars.minor_version) > Self::VERSION {
            return Err(Status::REVISION_MISMATCH);
        }
        if chars.major_version == 0 {
            return Err(Status::REVISION_MISMATCH);
        }
        if chars.major_version < 2 && !chars.flags.is_empty() {
            return Err(Status::INVALID_PARAMETER);
        }
        if chars.max_dma_channel_count == 0 {
            return Err(Status::INVALID_PARAMETER);
        }
        if chars.handlers.contains(OptionalHandlers::SET_CPU_AFFINITY) {
            let cpus = online_cpus() as u32;
            let table: Vec<_> = (0..chars.max_dma_channel_count)
                .map(|i| ChannelCpuAffinity {
                    dma_channel: i,
                    cpu_number: i % cpus,
                })
                .collect();
            provider.set_dma_channel_cpu_affinity(&table)?;
        }
        let id = {
            let mut n = self.reg.next_id.lock().unwrap_or_else(|e| e.into_inner());
            n.0 += 1;
            ProviderId(n.0)
        };
        let entry = Arc::new(ProviderEntry {
            id,
            provider,
            chars,
            state: Mutex::new(ProviderState {
                attributes: None,
                powered: true,
                channels: Vec::new(),
                deregistered: false,
            }),
        });
        self.reg
            .providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry.clone());
        self.reg.notify(PnpNotification {
            code: PnpNotificationCode::ProviderRegistered,
            provider: id,
            channel: None,
        });
        Ok(ProviderHandle {
            reg: self.reg.clone(),
            entry: Some(entry),
        })
    }

    /// Registers a client's PnP handler. Started providers are announced to it right away
    /// (`ProviderRegistered`, `ProviderArrival`, one `ChannelArrival` per free channel), so a
    /// late client sees the same picture as an early one.
    pub fn register_client(&self, callback: ClientCallback) -> ClientRegistration {
        let id = {
            let mut n = self.reg.next_id.lock().unwrap_or_else(|e| e.into_inner());
            n.1 += 1;
            n.1
        };
        for p in self.providers() {
            let n = |code, channel| PnpNotification {
                code,
                provider: p.id,
                channel,
            };
            callback(&n(PnpNotificationCode::ProviderRegistered, None));
            if let Some(a) = p.attributes {
                callback(&n(PnpNotificationCode::ProviderArrival, None));
                for c in p.allocated_channels..a.dma_channel_count {
                    callback(&n(PnpNotificationCode::ChannelArrival, Some(c)));
                }
            }
        }
        self.reg
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, callback));
        ClientRegistration {
            reg: Arc::downgrade(&self.reg),
            id,
        }
    }

    /// Registered providers (started or not).
    pub fn providers(&self) -> Vec<ProviderInfo> {
        let list = self
            .reg
            .providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        list.iter()
            .map(|e| {
                let n = e.live_channels().len() as u32;
                let st = e.lock();
                ProviderInfo {
                    id: e.id,
                    characteristics: e.chars.clone(),
                    attributes: st.attributes,
                    powered: st.powered,
                    allocated_channels: n,
                }
            })
            .collect()
    }

    /// Allocates a channel of `provider` (`AllocateDmaChannel`). Errors:
    /// `STATUS_NOT_FOUND` (no such provider), `STATUS_INVALID_DEVICE_STATE` (not started),
    /// `STATUS_DEVICE_NOT_READY` (powered down), `STATUS_INVALID_PARAMETER` (bad revision,
    /// non-zero flags, empty CPU mask), `STATUS_INSUFFICIENT_RESOURCES` (all channels in use).
    /// The chosen CPU is [`Channel::cpu_number`].
    #[doc(alias = "AllocateDmaChannel")]
    pub fn allocate_channel(
        &self,
        provider: ProviderId,
        params: ChannelParameters,
    ) -> Result<Channel> {
        let entry = self.reg.entry(provider)?;
        if !matches!(params.revision, 1 | 2)
            || params.flags != 0
            || params.processor_affinity_mask == 0
        {
            return Err(Status::INVALID_PARAMETER);
        }
        let mut st = entry.lock();
        let Some(attrs) = st.attributes else {
            return Err(Status::INVALID_DEVICE_STATE);
        };
        if !st.powered {
            return Err(Status::DEVICE_NOT_READY);
        }
        let token = ChannelToken::new();
        let id = token.id();
        let alloc = entry.provider.allocate_dma_channel(ChannelSetup {
            token,
            parameters: params,
        })?;
        let slot = Arc::new(ChannelSlot {
            chan: RwLock::new(Some(alloc.channel)),
        });
        st.channels.retain(|w| w.strong_count() > 0);
        st.channels.push(Arc::downgrade(&slot));
        drop(st);
        let c = &entry.chars;
        Ok(Channel {
            slot,
            entry: entry.clone(),
            reg: self.reg.clone(),
            id,
            index: alloc.index,
            cpu: alloc.cpu_number,
            caps: Caps {
                version: (c.major_version, c.minor_version),
                flags: c.flags,
                extensions: c.extensions,
                max_transfer: attrs.maximum_transfer_size,
            },
        })
    }
}

/// Keeps a client's PnP handler registered; dropping it unregisters.
#[derive(Debug)]
pub struct ClientRegistration {
    reg: Weak<Registry>,
    id: u64,
}

impl Drop for ClientRegistration {
    fn drop(&mut self) {
        if let Some(r) = self.reg.upgrade() {
            r.clients
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|c| c.0 != self.id);
        }
    }
}

/// The provider's handle on the interface (`NetDmaProviderHandle`): start, stop, power events,
/// deregistration. Dropping it deregisters (stopping first if needed).
pub struct ProviderHandle {
    reg: Arc<Registry>,
    entry: Option<Arc<ProviderEntry>>,
}

impl std::fmt::Debug for ProviderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderHandle")
            .field("id", &self.id())
            .finish()
    }
}

impl ProviderHandle {
    fn entry(&self) -> &Arc<ProviderEntry> {
        self.entry.as_ref().expect("present until drop")
    }

    /// The provider's id.
    pub fn id(&self) -> ProviderId {
        self.entry().id
    }

    /// `NetDmaProviderStart`: the provider can now serve requests. `DmaChannelCount` must be
    /// 1 ≤ n ≤ `MaxDmaChannelCount` and `MaximumTransferSize` ≥ 4096
    /// (`STATUS_INVALID_PARAMETER`); starting a started provider is
    /// `STATUS_INVALID_DEVICE_STATE`. Clients get `ProviderArrival` and one `ChannelArrival`
    /// per channel.
    #[doc(alias = "NetDmaProviderStart")]
    pub fn start(&self, attributes: ProviderAttributes) -> Result<()> {
        let e = self.entry();
        if attributes.dma_channel_count == 0
            || attributes.dma_channel_count > e.chars.max_dma_channel_count
            || attributes.maximum_transfer_size < 4096
        {
            return Err(Status::INVALID_PARAMETER);
        }
        {
            let mut st = e.lock();
            if st.attributes.is_some() || st.deregistered {
                return Err(Status::INVALID_DEVICE_STATE);
            }
            st.attributes = Some(attributes);
        }
        self.reg.notify(PnpNotification {
            code: PnpNotificationCode::ProviderArrival,
            provider: e.id,
            channel: None,
        });
        for c in 0..attributes.dma_channel_count {
            self.reg.notify(PnpNotification {
                code: PnpNotificationCode::ChannelArrival,
                provider: e.id,
                channel: Some(c),
            });
        }
        Ok(())
    }

    /// `NetDmaProviderStop`: tells clients (`ProviderRemoval`), waits for running work on every
    /// channel to finish, then frees every channel (work left in suspended channels is
    /// cancelled; the clients' [`Channel`]s then answer `STATUS_DEVICE_REMOVED`). Stopping a
    /// stopped provider is `STATUS_INVALID_DEVICE_STATE`.
    #[doc(alias = "NetDmaProviderStop")]
    pub fn stop(&self) -> Result<()> {
        let e = self.entry();
        if e.lock().attributes.is_none() {
            return Err(Status::INVALID_DEVICE_STATE);
        }
        self.reg.notify(PnpNotification {
            code: PnpNotificationCode::ProviderRemoval,
            provider: e.id,
            channel: None,
        });
        for slot in e.live_channels() {
            let ch = slot.chan.write().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(ch) = ch {
                ch.wait_idle(None);
                ch.free();
            }
        }
        let mut st = e.lock();
        st.attributes = None;
        st.channels.clear();
        Ok(())
    }

    /// `NetDmaPnPEventNotify` (1.1+; a 1.0 provider gets `STATUS_NOT_SUPPORTED`). `PowerDown`:
    /// clients are told, new submissions and allocations fail with `STATUS_DEVICE_NOT_READY`,
    /// and the call returns once every channel has drained. `PowerUp`: every idle channel is
    /// re-initialised with a Start of a NULL descriptor (spec §9), then clients are told. Other
    /// codes are `STATUS_INVALID_PARAMETER`; a repeated transition is
    /// `STATUS_INVALID_DEVICE_STATE`.
    #[doc(alias = "NetDmaPnPEventNotify")]
    pub fn pnp_event_notify(&self, code: PnpNotificationCode) -> Result<()> {
        let e = self.entry();
        if (e.chars.major_version, e.chars.minor_version) < (1, 1) {
            return Err(Status::NOT_SUPPORTED);
        }
        let n = PnpNotification {
            code,
            provider: e.id,
            channel: None,
        };
        match code {
            PnpNotificationCode::ProviderPowerDown => {
                {
                    let mut st = e.lock();
                    if !st.powered {
                        return Err(Status::INVALID_DEVICE_STATE);
                    }
                    st.powered = false;
                }
                self.reg.notify(n);
                for slot in e.live_channels() {
                    let ch = slot.chan.read().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(ch) = ch {
                        ch.wait_idle(None);
                    }
                }
                Ok(())
            }
            PnpNotificationCode::ProviderPowerUp => {
                {
                    let mut st = e.lock();
                    if st.powered {
                        return Err(Status::INVALID_DEVICE_STATE);
                    }
                    st.powered = true;
                }
                let caps = Caps {
                    version: (e.chars.major_version, e.chars.minor_version),
                    flags: e.chars.flags,
                    extensions: e.chars.extensions,
                    max_transfer: u32::MAX,
                };
                for slot in e.live_channels() {
                    let ch = slot.chan.read().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(ch) = ch {
                        if ch.state() == ChannelState::Idle {
                            let mut c = Chain::new();
                            c.null(crate::flags::ControlFlags::STATUS_UPDATE_ON_COMPLETION);
                            let p = PreparedChain::prepare(c, &caps, 0)?;
                            ch.start(p)?;
                        }
                    }
                }
                self.reg.notify(n);
                Ok(())
            }
            _ => Err(Status::INVALID_PARAMETER),
        }
    }

    /// `NetDmaDeregisterProvider` (stops the provider first if it is started).
    #[doc(alias = "NetDmaDeregisterProvider")]
    pub fn deregister(mut self) {
        self.do_deregister();
    }

    fn do_deregister(&mut self) {
        if let Some(e) = self.entry.take() {
            if e.lock().attributes.is_some() {
                let h = ProviderHandle {
                    reg: self.reg.clone(),
                    entry: Some(e.clone()),
                };
                let _ = h.stop();
                std::mem::forget(h); // its Drop would deregister again
            }
            e.lock().deregistered = true;
            self.reg
                .providers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|p| p.id != e.id);
        }
    }
}

impl Drop for ProviderHandle {
    fn drop(&mut self) {
        self.do_deregister();
    }
}

/// A DMA channel owned by one client (never shared with another allocation).
///
/// Every method is internally synchronized (`&self`), so a client may submit from one thread
/// and wait from another. Dropping the channel aborts whatever is still pending and frees it.
pub struct Channel {
    slot: Arc<ChannelSlot>,
    entry: Arc<ProviderEntry>,
    reg: Arc<Registry>,
    id: u64,
    index: u32,
    cpu: u32,
    caps: Caps,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("provider", &self.entry.id)
            .field("index", &self.index)
            .field("cpu", &self.cpu)
            .field("state", &self.state())
            .finish()
    }
}

impl Channel {
    fn chan(&self) -> Result<Arc<dyn ProviderChannel>> {
        self.slot
            .chan
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Status::DEVICE_REMOVED)
    }

    fn has(&self, h: OptionalHandlers) -> Result<()> {
        if self.entry.chars.handlers.contains(h) {
            Ok(())
        } else {
            Err(Status::NOT_SUPPORTED)
        }
    }

    fn powered(&self) -> Result<()> {
        if self.entry.lock().powered {
            Ok(())
        } else {
            Err(Status::DEVICE_NOT_READY)
        }
    }

    fn prepare(&self, chain: Chain) -> Result<PreparedChain> {
        PreparedChain::prepare(chain, &self.caps, self.id)
    }

    /// The provider this channel belongs to.
    pub fn provider(&self) -> ProviderId {
        self.entry.id
    }

    /// Channel index within the provider.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// `CpuNumber`: the CPU the provider bound the channel (its completion callbacks) to.
    pub fn cpu_number(&self) -> u32 {
        self.cpu
    }

    /// `StartDma`: validates `chain` (reserved bits, op types, links, sizes:
    /// `STATUS_INVALID_PARAMETER`; unadvertised features: `STATUS_NOT_SUPPORTED`), leases its
    /// buffers (`STATUS_SHARING_VIOLATION`), and starts it. On a running channel the current
    /// descriptor finishes and the rest is discarded (`STATUS_CANCELLED`), as spec §6 says.
    /// Illegal when suspended (`STATUS_INVALID_DEVICE_STATE`).
    #[doc(alias = "StartDma")]
    pub fn start(&self, chain: Chain) -> Result<Submission> {
        self.powered()?;
        let p = self.prepare(chain)?;
        self.chan()?.start(p)
    }

    /// `AppendDma`: adds a chain after the last submitted descriptor; legal while armed,
    /// active, idle or suspended (then it runs on resume), `STATUS_INVALID_DEVICE_STATE`
    /// otherwise (before the first Start, after Abort or Reset).
    #[doc(alias = "AppendDma")]
    pub fn append(&self, chain: Chain) -> Result<Submission> {
        self.powered()?;
        let p = self.prepare(chain)?;
        self.chan()?.append_one(p)
    }

    /// Batch submission (extension [`Extensions::BATCH`]): every chain is validated and leased
    /// first, then all are appended with one doorbell, or none is.
    pub fn append_batch(&self, chains: Vec<Chain>) -> Result<Vec<Submission>> {
        if !self.caps.extensions.contains(Extensions::BATCH) {
            return Err(Status::NOT_SUPPORTED);
        }
        self.powered()?;
        let ps = chains
            .into_iter()
            .map(|c| self.prepare(c))
            .collect::<Result<Vec<_>>>()?;
        self.chan()?.append(ps)
    }

    /// `SuspendDma`: finishes the current descriptor, stops, writes `Suspend` status and
    /// returns the last processed descriptor. A no-op on an idle channel.
    #[doc(alias = "SuspendDma")]
    pub fn suspend(&self) -> Result<Option<DescriptorAddress>> {
        self.has(OptionalHandlers::SUSPEND_RESUME)?;
        self.chan()?.suspend()
    }

    /// `ResumeDma`.
    #[doc(alias = "ResumeDma")]
    pub fn resume(&self) -> Result<()> {
        self.has(OptionalHandlers::SUSPEND_RESUME)?;
        self.chan()?.resume()
    }

    /// `AbortDma`: stops at once (the current descriptor may be partly done), discards the
    /// rest (`STATUS_CANCELLED`), writes `Halted`. Next submission must be a Start.
    #[doc(alias = "AbortDma")]
    pub fn abort(&self) -> Result<()> {
        self.has(OptionalHandlers::ABORT)?;
        self.chan()?.abort()
    }

    /// `ResetChannel`: like abort, then back to the just-allocated state (error cleared).
    #[doc(alias = "ResetChannel")]
    pub fn reset(&self) -> Result<()> {
        self.has(OptionalHandlers::RESET)?;
        self.chan()?.reset()
    }

    /// Current state ([`ChannelState::Free`] once the provider stopped).
    pub fn state(&self) -> ChannelState {
        self.chan().map_or(ChannelState::Free, |c| c.state())
    }

    /// The completion slot (last processed descriptor | status).
    pub fn completion(&self) -> CompletionStatus {
        self.chan()
            .map_or(CompletionStatus::default(), |c| c.completion())
    }

    /// Why the channel halted: the error (`STATUS_ACCESS_VIOLATION`, …) or `STATUS_CANCELLED`
    /// after an abort; `None` when not halted since the last Start/Reset.
    pub fn last_error(&self) -> Option<Status> {
        self.chan().ok().and_then(|c| c.last_error())
    }

    /// Cheap completion check (two atomic loads on the fast path): `STATUS_SUCCESS`,
    /// `STATUS_PENDING`, or the status the submission was discarded with.
    pub fn poll(&self, submission: &Submission) -> Status {
        self.chan()
            .map_or(Status::DEVICE_REMOVED, |c| c.poll(submission))
    }

    /// Waits (briefly spinning, then blocking) for `submission`; returns its final status, or
    /// `STATUS_TIMEOUT`.
    pub fn wait(&self, submission: &Submission, timeout: Option<Duration>) -> Status {
        self.chan()
            .map_or(Status::DEVICE_REMOVED, |c| c.wait(submission, timeout))
    }

    /// Waits until nothing more can run (idle, halted, suspended, allocated).
    pub fn wait_idle(&self, timeout: Option<Duration>) -> Status {
        self.chan()
            .map_or(Status::DEVICE_REMOVED, |c| c.wait_idle(timeout))
    }

    /// `FreeDmaChannel`. Legal when nothing is outstanding (allocated, idle, halted); otherwise
    /// the channel is aborted, freed anyway, and `STATUS_INVALID_DEVICE_STATE` reported.
    #[doc(alias = "FreeDmaChannel")]
    pub fn free(self) -> Result<()> {
        let st = self.state();
        let r = match st {
            ChannelState::Allocated | ChannelState::Idle | ChannelState::Halted => Ok(()),
            ChannelState::Free => Err(Status::DEVICE_REMOVED),
            _ => Err(Status::INVALID_DEVICE_STATE),
        };
        drop(self);
        r
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let ch = self
            .slot
            .chan
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(ch) = ch {
            ch.free();
            let started = self.entry.lock().attributes.is_some();
            if started {
                self.reg.notify(PnpNotification {
                    code: PnpNotificationCode::ChannelArrival,
                    provider: self.entry.id,
                    channel: Some(self.index),
                });
            }
        }
    }
}

/// The machine's online CPUs (`/sys/devices/system/cpu/online`, else the calling thread's
/// CPU count), not the calling thread's affinity mask: a client pinned to one CPU may still
/// ask for a channel on another.
pub fn online_cpus() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|l| crate::method::count_cpus(&l))
            .map(|n| n as usize)
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<Channel>();
    f::<NetDma>();
    f::<ProviderHandle>();
    let _ = ProviderFlags::empty();
}
