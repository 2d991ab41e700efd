//! The adapter: one RDMA device port serving one local address, its CM and CQ threads.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use netdirect::deviations::{DEVIATIONS_GUID, Deviations};
use netdirect::{
    Adapter, Affinity, Buffer, ConnectEvent, Connector, Cq, CqNotification, Extension, Guid, Lam,
    Listener, Object, OpenParameters, Pd, Request, SharedEndpoint,
};
use netdirect_types::{AdapterFlags, AdapterInfo, ObjectType, RdmaTechnology, Status, Version};
use parking_lot::{Mutex, RwLock};

use crate::cm::{self, ConnShared, ListenShared};
use crate::cq::{CqShared, VerbsCq};
use crate::ffi::{self, ChanH, Ctx, EvChH, Lib};
use crate::pd::VerbsPd;
use crate::qp::QpShared;
use crate::{VerbsError, errno_status, technology};

static NEXT_ADAPTER: AtomicU64 = AtomicU64::new(1);

/// What every object of one adapter shares.
pub(crate) struct AdapterInner {
    pub(crate) lib: Arc<Lib>,
    pub(crate) ctx: Ctx,
    pub(crate) id: u64,
    pub(crate) address: IpAddr,
    pub(crate) info: AdapterInfo,
    /// The attributes that bring a new QP to INIT on this device and port (`rdma_init_qp_attr`
    /// of the scratch id), so receives can be posted before it connects (IB devices refuse
    /// them in RESET).
    pub(crate) qp_init: (ffi::ibv_qp_attr, i32),
    pub(crate) comp_channel: ChanH,
    pub(crate) event_channel: EvChH,
    next_key: AtomicU64,
    pub(crate) cqs: Mutex<HashMap<u64, Weak<CqShared>>>,
    pub(crate) qps: RwLock<HashMap<u32, Weak<QpShared>>>,
    pub(crate) conns: Mutex<HashMap<usize, Weak<ConnShared>>>,
    pub(crate) listeners: Mutex<HashMap<usize, Weak<ListenShared>>>,
}

impl AdapterInner {
    pub(crate) fn key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }
}

impl Drop for AdapterInner {
    fn drop(&mut self) {
        // Every child holds the adapter, so its CQs and CM ids are gone by now.
        crate::events::adapter_closed(self.ctx);
        self.lib.destroy_comp_channel(self.comp_channel);
        self.lib.destroy_event_channel(self.event_channel);
    }
}

/// An open verbs adapter.
///
/// `NdkQueryAdapterInfo` from `ibv_query_device` and `ibv_query_port`:
///
/// | field | from |
/// |---|---|
/// | `vendor_id`, `device_id` | `vendor_id`, `vendor_part_id` |
/// | `max_registration_size` | `max_mr_size` |
/// | `max_window_size` | `max_mr_size` where the device binds type 2 windows (`IBV_DEVICE_MEM_WINDOW` with `…_TYPE_2A`/`2B`, `max_mw` > 0: rxe, most RoCE and InfiniBand RNICs), else 0 (siw) |
/// | `frmr_page_count` | 0: fast registration is not supported (the suite skips its cases by this) |
/// | `max_initiator_request_sge`, `max_receive_request_sge` | `max_sge` |
/// | `max_read_request_sge` | `max_sge_rd` (`max_sge` when 0: iWARP devices report 0) |
/// | `max_transfer_length` | the port's `max_msg_sz` |
/// | `max_inline_data_size` | what a scratch QP asking for 256 got back |
/// | `max_inbound_read_limit` / `max_outbound_read_limit` | `max_qp_rd_atom` / `max_qp_init_rd_atom` |
/// | queue depths / `max_cq_depth` | `max_qp_wr` / `max_cqe` |
/// | `max_srq_depth` | `max_srq_wr` (0 when `max_srq` is 0) |
/// | `max_caller_data` / `max_callee_data` | iWARP 252/252 (MPA's 256 less IRD/ORD); IB and RoCE 56/196 (CM REQ/REP less rdma-cm's header) |
/// | `adapter_flags` | `LOOPBACK_CONNECTIONS_SUPPORTED`; `RDMA_READ_SINK_NOT_REQUIRED` on IB/RoCE |
/// | `rdma_technology` | iWARP from the device's transport, else InfiniBand or RoCEv2 from the port's link layer |
pub struct VerbsAdapter {
    inner: Arc<AdapterInner>,
}

impl std::fmt::Debug for VerbsAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerbsAdapter({})", self.inner.address)
    }
}

impl VerbsAdapter {
    /// The device's name (`siw0`, `rxe0`, ...).
    pub fn device_name(&self) -> String {
        self.inner.lib.ctx_device_name(self.inner.ctx)
    }
}

fn negotiate(v: Version) -> Result<Version, Status> {
    if v.major == 1 {
        Version::V1_2.negotiate(v)
    } else {
        Version::V2_1.negotiate(v)
    }
}

pub(crate) fn open(lib: &Arc<Lib>, params: OpenParameters) -> Result<VerbsAdapter, VerbsError> {
    let version = negotiate(params.version).map_err(VerbsError::Status)?;
    if lib.device_names().is_empty() {
        return Err(VerbsError::NoDevice);
    }
    // librdmacm's contexts must exist before an id can bind to a device.
    let _ = lib.cm_devices();
    let event_channel = lib
        .create_event_channel()
        .ok_or(VerbsError::Status(Status::INSUFFICIENT_RESOURCES))?;
    // A scratch id bound to the address tells which device and port serve it.
    let found = (|| {
        let id = lib.create_id(event_channel).ok()?;
        let rc = lib.bind_addr(id, SocketAddr::new(params.address, 0));
        let dev = if rc == 0 {
            lib.id_device(id)
                .and_then(|d| lib.init_qp_attr(id).ok().map(|a| (d, a)))
        } else {
            None
        };
        lib.destroy_id(id);
        dev
    })();
    let Some(((ctx, port), qp_init)) = found else {
        lib.destroy_event_channel(event_channel);
        return Err(VerbsError::NoDeviceForAddress(params.address));
    };
    let Some(comp_channel) = lib.create_comp_channel(ctx) else {
        lib.destroy_event_channel(event_channel);
        return Err(VerbsError::Status(Status::INSUFFICIENT_RESOURCES));
    };
    let info = match query_info(lib, ctx, port.max(1), version) {
        Ok(info) => info,
        Err(s) => {
            lib.destroy_comp_channel(comp_channel);
            lib.destroy_event_channel(event_channel);
            return Err(VerbsError::Status(s));
        }
    };
    let inner = Arc::new(AdapterInner {
        lib: lib.clone(),
        ctx,
        id: NEXT_ADAPTER.fetch_add(1, Ordering::Relaxed),
        address: params.address,
        info,
        qp_init,
        comp_channel,
        event_channel,
        next_key: AtomicU64::new(1),
        cqs: Mutex::new(HashMap::new()),
        qps: RwLock::new(HashMap::new()),
        conns: Mutex::new(HashMap::new()),
        listeners: Mutex::new(HashMap::new()),
    });
    crate::events::adapter_opened(lib, ctx);
    // The threads hold the adapter weakly: they run until the adapter and every object under
    // it are gone (a connector outliving its adapter handle still gets its events).
    let cm_inner = Arc::downgrade(&inner);
    let cq_inner = Arc::downgrade(&inner);
    let _threads = [
        std::thread::Builder::new()
            .name("verbs-cm".into())
            .spawn(move || cm::run(cm_inner))
            .map_err(|_| VerbsError::Status(Status::INSUFFICIENT_RESOURCES))?,
        std::thread::Builder::new()
            .name("verbs-cq".into())
            .spawn(move || crate::cq::run(cq_inner))
            .map_err(|_| VerbsError::Status(Status::INSUFFICIENT_RESOURCES))?,
    ];
    Ok(VerbsAdapter { inner })
}

/// Whether the device binds type 2 memory windows.
fn mw_type2(dev: &ffi::ibv_device_attr) -> bool {
    let f = dev.device_cap_flags;
    f & ffi::IBV_DEVICE_MEM_WINDOW != 0
        && f & (ffi::IBV_DEVICE_MEM_WINDOW_TYPE_2A | ffi::IBV_DEVICE_MEM_WINDOW_TYPE_2B) != 0
        && dev.max_mw > 0
}

fn clamp(v: i32) -> u32 {
    v.max(0) as u32
}

fn query_info(lib: &Lib, ctx: Ctx, port: u8, version: Version) -> Result<AdapterInfo, Status> {
    let dev = lib.query_device(ctx).map_err(errno_status)?;
    let pa = lib.query_port(ctx, port).map_err(errno_status)?;
    let tech = technology(lib.ctx_transport(ctx), pa.link_layer);
    let mut flags = AdapterFlags::LOOPBACK_CONNECTIONS_SUPPORTED;
    if tech != RdmaTechnology::IWarp {
        flags |= AdapterFlags::RDMA_READ_SINK_NOT_REQUIRED;
    }
    let (caller, callee) = if tech == RdmaTechnology::IWarp {
        (252, 252)
    } else {
        (56, 196)
    };
    let max_sge = clamp(dev.max_sge);
    Ok(AdapterInfo {
        version,
        vendor_id: dev.vendor_id,
        device_id: dev.vendor_part_id,
        max_registration_size: dev.max_mr_size,
        // Type 2 windows, bound by a work request as NdkBind is (type 1's `ibv_bind_mw` is a
        // verb of its own, with no NDK counterpart).
        max_window_size: if mw_type2(&dev) { dev.max_mr_size } else { 0 },
        // No fast register (kernel verbs only): 0, below the spec's minimum, says so (§10 row 39).
        frmr_page_count: 0,
        max_initiator_request_sge: max_sge,
        max_receive_request_sge: max_sge,
        max_read_request_sge: if dev.max_sge_rd > 0 {
            clamp(dev.max_sge_rd)
        } else {
            max_sge
        },
        max_transfer_length: pa.max_msg_sz,
        max_inline_data_size: crate::qp::probe_inline(lib, ctx),
        max_inbound_read_limit: clamp(dev.max_qp_rd_atom),
        max_outbound_read_limit: clamp(dev.max_qp_init_rd_atom),
        max_receive_queue_depth: clamp(dev.max_qp_wr),
        max_initiator_queue_depth: clamp(dev.max_qp_wr),
        max_srq_depth: if dev.max_srq > 0 {
            clamp(dev.max_srq_wr)
        } else {
            0
        },
        max_cq_depth: clamp(dev.max_cqe),
        large_request_threshold: 8192,
        max_caller_data: caller,
        max_callee_data: callee,
        adapter_flags: flags,
        rdma_technology: tech,
    })
}

impl Object for VerbsAdapter {
    fn object_type(&self) -> ObjectType {
        ObjectType::Adapter
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    /// [`netdirect::deviations`]: the NDK rules this device cannot keep under user verbs.
    fn query_extension(&self, id: &Guid, _version: Version) -> Result<Extension, Status> {
        if *id != DEVIATIONS_GUID {
            return Err(Status::NOT_SUPPORTED);
        }
        Ok(Extension {
            dispatch: Arc::new(deviations(&self.inner.info)),
        })
    }
}

/// Linux siw's `vendor_id` ("bmt").
pub(crate) const SIW_VENDOR_ID: u32 = 0x0062_6d74;

/// What a device of this kind cannot do as the NDK says (the crate docs say why).
pub(crate) fn deviations(info: &AdapterInfo) -> Deviations {
    let iwarp = info.rdma_technology == RdmaTechnology::IWarp;
    Deviations {
        // siw notifies a SOLICITED arm for send completions only (`siw_rqe_complete` passes
        // "signalled"), and a work completion does not say whether a receive was solicited.
        no_solicited_notifications: info.vendor_id == SIW_VENDOR_ID,
        peer_disconnect_flushes: iwarp,
        no_terminate_detail: true,
        cq_overflow_beyond_depth: true,
    }
}

impl Adapter for VerbsAdapter {
    fn query_info(&self) -> AdapterInfo {
        self.inner.info
    }

    fn create_cq(
        &self,
        depth: u32,
        notification: CqNotification,
        _affinity: Option<Affinity>,
    ) -> Request<Box<dyn Cq>> {
        Request::ready(VerbsCq::create(&self.inner, depth, notification).map(|c| Box::new(c) as _))
    }

    fn create_pd(&self) -> Request<Box<dyn Pd>> {
        Request::ready(VerbsPd::create(&self.inner).map(|p| Box::new(p) as _))
    }

    fn create_shared_endpoint(&self, _address: SocketAddr) -> Request<Box<dyn SharedEndpoint>> {
        Request::failed(Status::NOT_SUPPORTED)
    }

    fn create_connector(&self) -> Request<Box<dyn Connector>> {
        Request::ok(Box::new(cm::VerbsConnector::new_active(&self.inner)))
    }

    fn create_listener(&self, connect_event: ConnectEvent) -> Request<Box<dyn Listener>> {
        Request::ok(Box::new(cm::VerbsListener::new(&self.inner, connect_event)))
    }

    fn build_lam(&self, _buffer: &Buffer, _offset: usize, _length: usize) -> Request<Lam> {
        Request::failed(Status::NOT_SUPPORTED)
    }

    fn release_lam(&self, _lam: Lam) {}

    fn close(self: Box<Self>) {}
}

/// Checks that an object a consumer passed in is this provider's, of this adapter.
pub(crate) fn same_adapter(a: &AdapterInner, b: &AdapterInner) -> Result<(), Status> {
    if a.id == b.id {
        Ok(())
    } else {
        Err(Status::INVALID_PARAMETER)
    }
}

pub(crate) use ffi::readable;

#[cfg(test)]
mod tests {
    use super::*;

    fn info(vendor_id: u32, rdma_technology: RdmaTechnology) -> AdapterInfo {
        AdapterInfo {
            version: Version::V2_1,
            vendor_id,
            device_id: 0,
            max_registration_size: 0,
            max_window_size: 0,
            frmr_page_count: 0,
            max_initiator_request_sge: 0,
            max_receive_request_sge: 0,
            max_read_request_sge: 0,
            max_transfer_length: 0,
            max_inline_data_size: 0,
            max_inbound_read_limit: 0,
            max_outbound_read_limit: 0,
            max_receive_queue_depth: 0,
            max_initiator_queue_depth: 0,
            max_srq_depth: 0,
            max_cq_depth: 0,
            large_request_threshold: 0,
            max_caller_data: 0,
            max_callee_data: 0,
            adapter_flags: AdapterFlags::empty(),
            rdma_technology,
        }
    }

    /// What each kind of device declares it cannot keep (the suite skips or adapts by these).
    #[test]
    fn deviations_by_device() {
        let siw = deviations(&info(SIW_VENDOR_ID, RdmaTechnology::IWarp));
        assert!(siw.no_solicited_notifications && siw.peer_disconnect_flushes);
        let iwarp = deviations(&info(0x1425, RdmaTechnology::IWarp));
        assert!(!iwarp.no_solicited_notifications && iwarp.peer_disconnect_flushes);
        let rxe = deviations(&info(0x00ff_ffff, RdmaTechnology::RoCEv2));
        assert!(!rxe.no_solicited_notifications && !rxe.peer_disconnect_flushes);
        for d in [siw, iwarp, rxe] {
            assert!(d.no_terminate_detail && d.cq_overflow_beyond_depth);
        }
    }
}
