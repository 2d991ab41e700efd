//! The provider and the adapter.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use netdirect::counters::{COUNTERS_GUID, Counters, CountersInterface};
use netdirect::{
    Adapter, Affinity, Buffer, ConnectEvent, Connector, Cq, CqNotification, Lam, Listener,
    OpenParameters, Pd, Provider, Request, SharedEndpoint,
};
use netdirect::{Extension, Guid};
use netdirect_types::{AdapterInfo, Status, Version};

use super::AdapterId;
use super::answers::Activity;
use super::connector::SoftConnector;
use super::cq::SoftCq;
use super::lifetime::Antecedent;
use super::limits;
use super::listener::SoftListener;
use super::pd::SoftPd;
use super::qp::SoftHost;
use super::shared_endpoint::SoftSharedEndpoint;
use crate::counters::Publisher;
use crate::dma::{DmaPlacer, Placement};
use crate::memory::{MemoryConfig, MemoryTable};
use crate::transport::{Engine, EngineConfig, MpaConfig, ndk_mpa_config};

/// The software iWARP RNIC as a provider, registered as `"soft"`.
///
/// ```
/// use netdirect::{OpenParameters, Registry};
/// use netdirect_soft::SoftProvider;
/// let mut registry = Registry::new();
/// registry.register(std::sync::Arc::new(SoftProvider::new())).unwrap();
/// let adapter = registry
///     .open_adapter("soft", OpenParameters {
///         address: "127.0.0.1".parse().unwrap(),
///         version: netdirect_types::Version::V1_2,
///     })
///     .unwrap();
/// assert_eq!(adapter.query_info().rdma_technology, netdirect_types::RdmaTechnology::IWarp);
/// adapter.close();
/// ```
#[derive(Debug)]
pub struct SoftProvider {
    engine: EngineConfig,
    placement: Placement,
    mpa: MpaConfig,
}

impl Default for SoftProvider {
    fn default() -> Self {
        SoftProvider {
            engine: EngineConfig::default(),
            placement: Placement::Cpu,
            mpa: ndk_mpa_config(),
        }
    }
}

impl SoftProvider {
    /// The provider with default engine settings.
    pub fn new() -> SoftProvider {
        SoftProvider::default()
    }

    /// The provider with these engine settings (FPDU size, timeouts, buffer sizes).
    pub fn with_engine_config(engine: EngineConfig) -> SoftProvider {
        SoftProvider {
            engine,
            ..SoftProvider::default()
        }
    }

    /// The provider negotiating MPA as `mpa` says, on every connect and listen of its adapters
    /// (default: [`ndk_mpa_config`]). Use it to ask for CRCs, offer revision 1, or leave out
    /// the peer-to-peer RTR offer; the NDK has no per-connection knob for these.
    pub fn with_mpa(mut self, mpa: MpaConfig) -> SoftProvider {
        self.mpa = mpa;
        self
    }

    /// The provider placing inbound payloads as `placement` says (CPU or a NetDMA channel).
    pub fn with_placement(mut self, placement: Placement) -> SoftProvider {
        self.placement = placement;
        self
    }

    /// Opens an adapter directly (what [`Provider::open_adapter`] does).
    pub fn open(&self, params: OpenParameters) -> Result<SoftAdapter, Status> {
        let version = limits::negotiate(params.version)?;
        check_local_address(params.address)?;
        let info = limits::adapter_info(version);
        let memory = Arc::new(MemoryTable::new(MemoryConfig::for_adapter(
            limits::MAX_FRMR_PAGES,
            info.adapter_flags,
        )));
        let mut engine_config = self.engine.clone();
        engine_config.thread_name = format!("nd-soft {}", params.address);
        let id = AdapterId::next();
        let span = tracing::info_span!(
            "adapter",
            id = id.0,
            address = %params.address,
            progress_threads = engine_config.progress_threads.max(1),
            capture = engine_config.capture.is_some(),
        );
        let engine = Engine::with_span(engine_config, span.clone())?;
        tracing::info!(parent: &span, version = ?version, "adapter opened");
        let publisher = if self.engine.publish_counters {
            Publisher::start(params.address.to_string(), engine.counter_source())
        } else {
            None
        };
        let placer = match self.placement {
            Placement::Cpu => None,
            Placement::NetDma => Some(Arc::new(DmaPlacer::new()?)),
        };
        Ok(SoftAdapter {
            shared: Arc::new(AdapterShared {
                id,
                version,
                info,
                address: params.address,
                memory,
                engine,
                placer,
                mpa: self.mpa.clone(),
                lifetime: Antecedent::new(),
                activity: Activity::default(),
                publisher,
            }),
        })
    }
}

impl Provider for SoftProvider {
    fn name(&self) -> &str {
        "soft"
    }

    fn open_adapter(&self, params: OpenParameters) -> Result<Box<dyn Adapter>, Status> {
        Ok(Box::new(self.open(params)?))
    }
}

/// `STATUS_INVALID_ADDRESS` unless `address` is one of this machine's (a TCP bind to it works).
fn check_local_address(address: IpAddr) -> Result<(), Status> {
    if address.is_unspecified() || address.is_multicast() {
        return Err(Status::INVALID_ADDRESS);
    }
    std::net::TcpListener::bind(SocketAddr::new(address, 0))
        .map(drop)
        .map_err(|_| Status::INVALID_ADDRESS)
}

/// What every object of an adapter shares.
pub(crate) struct AdapterShared {
    /// The adapter's identity: what [`super::ours`] compares.
    pub(crate) id: AdapterId,
    pub(crate) version: Version,
    pub(crate) info: AdapterInfo,
    pub(crate) address: IpAddr,
    pub(crate) memory: Arc<MemoryTable>,
    pub(crate) engine: Engine<SoftHost>,
    pub(crate) placer: Option<Arc<DmaPlacer>>,
    /// MPA settings of every connect and listen.
    pub(crate) mpa: MpaConfig,
    /// The adapter as antecedent of its PDs, CQs, connectors, listeners and shared endpoints.
    pub(crate) lifetime: Antecedent,
    /// When a consumer last created an object here or called a connector of it
    /// ([`super::answers`]).
    pub(crate) activity: Activity,
    /// Publishes the counters for other processes
    /// ([`crate::transport::EngineConfig::publish_counters`]).
    pub(crate) publisher: Option<Publisher>,
}

impl AdapterShared {
    /// `address` with the adapter's IP when it names none (unspecified), or
    /// `STATUS_INVALID_ADDRESS` when it names another IP.
    pub(crate) fn local(&self, address: SocketAddr) -> Result<SocketAddr, Status> {
        if address.ip().is_unspecified() && address.is_ipv4() == self.address.is_ipv4() {
            return Ok(SocketAddr::new(self.address, address.port()));
        }
        if address.ip() != self.address {
            return Err(Status::INVALID_ADDRESS);
        }
        Ok(address)
    }
}

/// An open adapter of the software RNIC: its progress threads (one by default), one memory
/// table.
pub struct SoftAdapter {
    pub(crate) shared: Arc<AdapterShared>,
}

impl SoftAdapter {
    /// How many times the adapter's progress thread woke from a wait (readiness, a timer, a
    /// consumer handing it work). A relaxed counter, for measurements: with inline progress a
    /// polling consumer's messages should not wake it.
    pub fn progress_wakeups(&self) -> u64 {
        self.shared.engine.wakeups()
    }

    /// The adapter's counters: every QP it had (closed ones included), connection attempts
    /// that never reached a QP (rejects, failures), and the progress threads' wakeups. The
    /// same as the [`netdirect::counters`] extension returns.
    pub fn counters(&self) -> Counters {
        self.shared.engine.counters()
    }

    /// Where the adapter publishes its counters for `nd stat`, if it does
    /// ([`crate::transport::EngineConfig::publish_counters`]).
    pub fn counters_path(&self) -> Option<&std::path::Path> {
        self.shared.publisher.as_ref().map(Publisher::path)
    }

    /// [`SoftAdapter::progress_wakeups`] of each progress thread
    /// ([`crate::transport::EngineConfig::progress_threads`]), in order.
    pub fn progress_wakeups_per_thread(&self) -> Vec<u64> {
        self.shared.engine.wakeups_per_thread()
    }

    /// How many connections each progress thread serves, in order (a relaxed snapshot).
    pub fn connections_per_thread(&self) -> Vec<usize> {
        self.shared.engine.connections_per_thread()
    }
}

impl std::fmt::Debug for SoftAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftAdapter")
            .field("address", &self.shared.address)
            .field("version", &self.shared.version)
            .finish()
    }
}

impl SoftAdapter {
    /// The adapter's memory table (for diagnostics: [`MemoryTable::usage`]).
    pub fn memory(&self) -> &MemoryTable {
        &self.shared.memory
    }
}

super::soft_object!(SoftAdapter, Adapter, |a| a.shared.id, extension: adapter_extension);

/// `NdkQueryExtension` of the adapter: the counters interface for [`COUNTERS_GUID`] (any
/// version 1.x), `STATUS_NOT_SUPPORTED` for anything else.
fn adapter_extension(a: &SoftAdapter, id: &Guid, version: Version) -> Result<Extension, Status> {
    if *id != COUNTERS_GUID || version.major != 1 {
        return Err(Status::NOT_SUPPORTED);
    }
    Ok(CountersInterface::new(a.shared.engine.counter_source())
        .with_counting(crate::counters::COUNTING)
        .into_extension())
}

impl Adapter for SoftAdapter {
    fn query_info(&self) -> AdapterInfo {
        self.shared.info
    }

    fn create_cq(
        &self,
        depth: u32,
        notification: CqNotification,
        _affinity: Option<Affinity>,
    ) -> Request<Box<dyn Cq>> {
        self.shared.activity.touch();
        Request::ready(
            crate::cq::Cq::new(depth, self.shared.info.max_cq_depth, notification).map(|cq| {
                let adapter = self.shared.lifetime.reference();
                Box::new(SoftCq::new(cq, self.shared.id, adapter)) as Box<dyn Cq>
            }),
        )
    }

    fn create_pd(&self) -> Request<Box<dyn Pd>> {
        self.shared.activity.touch();
        Request::ready(
            self.shared
                .memory
                .create_pd()
                .map(|id| Box::new(SoftPd::new(self.shared.clone(), id)) as Box<dyn Pd>),
        )
    }

    fn create_shared_endpoint(&self, address: SocketAddr) -> Request<Box<dyn SharedEndpoint>> {
        self.shared.activity.touch();
        Request::ready(
            SoftSharedEndpoint::new(&self.shared, address)
                .map(|e| Box::new(e) as Box<dyn SharedEndpoint>),
        )
    }

    fn create_connector(&self) -> Request<Box<dyn Connector>> {
        self.shared.activity.touch();
        Request::ok(Box::new(SoftConnector::active(self.shared.clone())))
    }

    fn create_listener(&self, connect_event: ConnectEvent) -> Request<Box<dyn Listener>> {
        self.shared.activity.touch();
        Request::ok(Box::new(SoftListener::new(
            self.shared.clone(),
            connect_event,
        )))
    }

    fn build_lam(&self, buffer: &Buffer, offset: usize, length: usize) -> Request<Lam> {
        Request::ready(self.shared.memory.build_lam(buffer, offset, length))
    }

    fn release_lam(&self, lam: Lam) {
        // NdkReleaseLAM is VOID: releasing an unknown mapping is ignored.
        let _ = self.shared.memory.release_lam(&lam);
    }

    fn close(self: Box<Self>) {
        // §2.6: blocks until every child is closed (each holds a reference, see
        // [`super::lifetime`]); then this is the last holder of the shared state, and dropping
        // it stops and joins the progress thread, so no callback runs after we return.
        let _ = self.shared.lifetime.close(|| {}).wait();
    }
}
