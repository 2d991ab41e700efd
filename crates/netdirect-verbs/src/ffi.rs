//! The hand-written binding to libibverbs and librdmacm (rdma-core v44, Debian 12), loaded at
//! run time with `libloading`. All of the crate's `unsafe` is here.
//!
//! Layouts are x86-64 LP64 and were computed by hand from rdma-core v44's `verbs.h` and
//! `rdma_cma.h`; the tests at the bottom pin every size and offset used. Only the leading
//! fields a caller reads are declared for structs the libraries allocate (`ibv_qp`, `ibv_cq`,
//! `rdma_cm_id`, ...); structs we allocate are declared whole (`ibv_send_wr`, `ibv_wc`, ...).
//!
//! Handles (`*mut ibv_*`) are created and destroyed only through [`Lib`]'s methods, and the
//! crate's objects own each handle exactly once (destroyed in their `Drop`), so the safe
//! wrappers below rely on that discipline: a handle passed in is live.
#![allow(unsafe_code, non_camel_case_types, missing_docs, dead_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ptr;

use libloading::Library;

/// File names opened by default.
pub(crate) const LIBIBVERBS: &str = "libibverbs.so.1";
pub(crate) const LIBRDMACM: &str = "librdmacm.so.1";

// ---------------------------------------------------------------- verbs.h structs

#[repr(C)]
pub(crate) struct ibv_device {
    _ops: [*mut c_void; 2],
    pub node_type: c_int,
    pub transport_type: c_int,
}

#[repr(C)]
pub(crate) struct ibv_context_ops {
    _compat0: [*mut c_void; 7],
    pub alloc_mw: Option<unsafe extern "C" fn(*mut ibv_pd, c_int) -> *mut ibv_mw>,
    _bind_mw: *mut c_void,
    pub dealloc_mw: Option<unsafe extern "C" fn(*mut ibv_mw) -> c_int>,
    _compat0b: [*mut c_void; 1],
    pub poll_cq: Option<unsafe extern "C" fn(*mut ibv_cq, c_int, *mut ibv_wc) -> c_int>,
    pub req_notify_cq: Option<unsafe extern "C" fn(*mut ibv_cq, c_int) -> c_int>,
    _compat1: [*mut c_void; 7],
    pub post_srq_recv: Option<
        unsafe extern "C" fn(*mut ibv_srq, *mut ibv_recv_wr, *mut *mut ibv_recv_wr) -> c_int,
    >,
    _compat2: [*mut c_void; 4],
    pub post_send:
        Option<unsafe extern "C" fn(*mut ibv_qp, *mut ibv_send_wr, *mut *mut ibv_send_wr) -> c_int>,
    pub post_recv:
        Option<unsafe extern "C" fn(*mut ibv_qp, *mut ibv_recv_wr, *mut *mut ibv_recv_wr) -> c_int>,
    _compat3: [*mut c_void; 5],
}

/// `struct ibv_context` up to `abi_compat` (size 328).
#[repr(C)]
pub(crate) struct ibv_context {
    pub device: *mut ibv_device,
    pub ops: ibv_context_ops,
    pub cmd_fd: c_int,
    pub async_fd: c_int,
    pub num_comp_vectors: c_int,
    _mutex: [u64; 5],
    _abi_compat: *mut c_void,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ibv_device_attr {
    pub fw_ver: [c_char; 64],
    pub node_guid: u64,
    pub sys_image_guid: u64,
    pub max_mr_size: u64,
    pub page_size_cap: u64,
    pub vendor_id: u32,
    pub vendor_part_id: u32,
    pub hw_ver: u32,
    pub max_qp: c_int,
    pub max_qp_wr: c_int,
    pub device_cap_flags: u32,
    pub max_sge: c_int,
    pub max_sge_rd: c_int,
    pub max_cq: c_int,
    pub max_cqe: c_int,
    pub max_mr: c_int,
    pub max_pd: c_int,
    pub max_qp_rd_atom: c_int,
    pub max_ee_rd_atom: c_int,
    pub max_res_rd_atom: c_int,
    pub max_qp_init_rd_atom: c_int,
    pub max_ee_init_rd_atom: c_int,
    pub atomic_cap: c_int,
    pub max_ee: c_int,
    pub max_rdd: c_int,
    pub max_mw: c_int,
    pub max_raw_ipv6_qp: c_int,
    pub max_raw_ethy_qp: c_int,
    pub max_mcast_grp: c_int,
    pub max_mcast_qp_attach: c_int,
    pub max_total_mcast_qp_attach: c_int,
    pub max_ah: c_int,
    pub max_fmr: c_int,
    pub max_map_per_fmr: c_int,
    pub max_srq: c_int,
    pub max_srq_wr: c_int,
    pub max_srq_sge: c_int,
    pub max_pkeys: u16,
    pub local_ca_ack_delay: u8,
    pub phys_port_cnt: u8,
}

/// `struct ibv_port_attr` (52 bytes in v44), with room behind it for fields later versions
/// append (the library writes the size it knows).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ibv_port_attr {
    pub state: c_int,
    pub max_mtu: c_int,
    pub active_mtu: c_int,
    pub gid_tbl_len: c_int,
    pub port_cap_flags: u32,
    pub max_msg_sz: u32,
    pub bad_pkey_cntr: u32,
    pub qkey_viol_cntr: u32,
    pub pkey_tbl_len: u16,
    pub lid: u16,
    pub sm_lid: u16,
    pub lmc: u8,
    pub max_vl_num: u8,
    pub sm_sl: u8,
    pub subnet_timeout: u8,
    pub init_type_reply: u8,
    pub active_width: u8,
    pub active_speed: u8,
    pub phys_state: u8,
    pub link_layer: u8,
    pub flags: u8,
    pub port_cap_flags2: u16,
}

#[repr(C)]
struct PortAttrRoom {
    attr: ibv_port_attr,
    _room: [u8; 64],
}

/// The leading fields of `struct ibv_pd`.
#[repr(C)]
pub(crate) struct ibv_pd {
    pub context: *mut ibv_context,
    pub handle: u32,
}

/// The leading fields of `struct ibv_cq`.
#[repr(C)]
pub(crate) struct ibv_cq {
    pub context: *mut ibv_context,
    pub channel: *mut ibv_comp_channel,
    pub cq_context: *mut c_void,
    pub handle: u32,
    pub cqe: c_int,
}

/// The leading fields of `struct ibv_qp`.
#[repr(C)]
pub(crate) struct ibv_qp {
    pub context: *mut ibv_context,
    pub qp_context: *mut c_void,
    pub pd: *mut ibv_pd,
    pub send_cq: *mut ibv_cq,
    pub recv_cq: *mut ibv_cq,
    pub srq: *mut ibv_srq,
    pub handle: u32,
    pub qp_num: u32,
    pub state: c_int,
    pub qp_type: c_int,
}

/// The leading fields of `struct ibv_srq`.
#[repr(C)]
pub(crate) struct ibv_srq {
    pub context: *mut ibv_context,
    pub srq_context: *mut c_void,
    pub pd: *mut ibv_pd,
    pub handle: u32,
}

#[repr(C)]
pub(crate) struct ibv_mr {
    pub context: *mut ibv_context,
    pub pd: *mut ibv_pd,
    pub addr: *mut c_void,
    pub length: usize,
    pub handle: u32,
    pub lkey: u32,
    pub rkey: u32,
}

#[repr(C)]
pub(crate) struct ibv_comp_channel {
    pub context: *mut ibv_context,
    pub fd: c_int,
    pub refcnt: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct ibv_wc {
    pub wr_id: u64,
    pub status: c_int,
    pub opcode: c_int,
    pub vendor_err: u32,
    pub byte_len: u32,
    /// `imm_data` / `invalidated_rkey`.
    pub imm_or_inv: u32,
    pub qp_num: u32,
    pub src_qp: u32,
    pub wc_flags: u32,
    pub pkey_index: u16,
    pub slid: u16,
    pub sl: u8,
    pub dlid_path_bits: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct ibv_sge {
    pub addr: u64,
    pub length: u32,
    pub lkey: u32,
}

/// `struct ibv_send_wr` (128 bytes): the `wr` union is 32 bytes (its `atomic` member), the
/// `bind_mw`/`tso` union 48 bytes at offset 80.
#[repr(C)]
pub(crate) struct ibv_send_wr {
    pub wr_id: u64,
    pub next: *mut ibv_send_wr,
    pub sg_list: *mut ibv_sge,
    pub num_sge: c_int,
    pub opcode: c_int,
    pub send_flags: u32,
    /// `imm_data` / `invalidate_rkey`.
    pub imm_or_inv: u32,
    /// `wr.rdma.remote_addr`.
    pub remote_addr: u64,
    /// `wr.rdma.rkey`.
    pub rkey: u32,
    _wr_rest: [u32; 5],
    _qp_type: u32,
    /// `bind_mw` (the `tso` member of the same union is smaller).
    pub bind_mw: ibv_send_wr_bind_mw,
}

/// The `bind_mw` member of `struct ibv_send_wr` (48 bytes): the window, its new rkey, and
/// `struct ibv_mw_bind_info`.
#[repr(C)]
pub(crate) struct ibv_send_wr_bind_mw {
    pub mw: *mut ibv_mw,
    pub rkey: u32,
    pub mr: *mut ibv_mr,
    pub addr: u64,
    pub length: u64,
    pub mw_access_flags: c_int,
}

/// `struct ibv_mw`.
#[repr(C)]
pub(crate) struct ibv_mw {
    pub context: *mut ibv_context,
    pub pd: *mut ibv_pd,
    pub rkey: u32,
    pub handle: u32,
    pub mw_type: c_int,
}

#[repr(C)]
pub(crate) struct ibv_recv_wr {
    pub wr_id: u64,
    pub next: *mut ibv_recv_wr,
    pub sg_list: *mut ibv_sge,
    pub num_sge: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct ibv_qp_cap {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
}

#[repr(C)]
pub(crate) struct ibv_qp_init_attr {
    pub qp_context: *mut c_void,
    pub send_cq: *mut ibv_cq,
    pub recv_cq: *mut ibv_cq,
    pub srq: *mut ibv_srq,
    pub cap: ibv_qp_cap,
    pub qp_type: c_int,
    pub sq_sig_all: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct ibv_srq_attr {
    pub max_wr: u32,
    pub max_sge: u32,
    pub srq_limit: u32,
}

#[repr(C)]
pub(crate) struct ibv_srq_init_attr {
    pub srq_context: *mut c_void,
    pub attr: ibv_srq_attr,
}

/// `struct ibv_qp_attr` is 144 bytes; we only fill it through `rdma_init_qp_attr` or set
/// `qp_state` (offset 0), so it is opaque room here.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub(crate) struct ibv_qp_attr {
    pub qp_state: c_int,
    _rest: [u8; 252],
}

/// `qp_access_flags` (offset 32) and its mask bit.
const QP_ACCESS_FLAGS_OFFSET: usize = 32;
pub(crate) const IBV_QP_ACCESS_FLAGS: c_int = 1 << 3;

impl ibv_qp_attr {
    /// Grants the peer RDMA read and write on the QP (the regions' own rights still apply).
    /// rdma-cm gives an iWARP QP no access before its connection exists (an active id has no
    /// iWARP CM id until `rdma_connect`), and siw then refuses the QP's own RDMA reads.
    pub(crate) fn allow_remote_access(&mut self, mask: &mut c_int) {
        let flags =
            (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ) as u32;
        let at = QP_ACCESS_FLAGS_OFFSET - std::mem::size_of::<c_int>();
        let old = u32::from_ne_bytes(self._rest[at..at + 4].try_into().unwrap_or([0; 4]));
        self._rest[at..at + 4].copy_from_slice(&(old | flags).to_ne_bytes());
        *mask |= IBV_QP_ACCESS_FLAGS;
    }
}

/// `struct ibv_async_event`: the element (a CQ, QP, SRQ or WQ pointer, or a port number) and
/// the event type.
#[repr(C)]
pub(crate) struct ibv_async_event {
    pub element: *mut c_void,
    pub event_type: c_int,
}

pub(crate) const IBV_EVENT_CQ_ERR: c_int = 0;
pub(crate) const IBV_EVENT_DEVICE_FATAL: c_int = 8;
pub(crate) const IBV_EVENT_SRQ_ERR: c_int = 14;
pub(crate) const IBV_EVENT_SRQ_LIMIT_REACHED: c_int = 15;

// Constants (verbs.h).
pub(crate) const IBV_TRANSPORT_IB: c_int = 0;
pub(crate) const IBV_TRANSPORT_IWARP: c_int = 1;
pub(crate) const IBV_LINK_LAYER_INFINIBAND: u8 = 1;
pub(crate) const IBV_LINK_LAYER_ETHERNET: u8 = 2;
pub(crate) const IBV_DEVICE_RESIZE_MAX_WR: u32 = 1;
pub(crate) const IBV_DEVICE_SRQ_RESIZE: u32 = 1 << 13;
pub(crate) const IBV_DEVICE_MEM_WINDOW: u32 = 1 << 17;
/// Type 2 windows (bound by a work request on a QP), with and without the QP association.
pub(crate) const IBV_DEVICE_MEM_WINDOW_TYPE_2A: u32 = 1 << 23;
pub(crate) const IBV_DEVICE_MEM_WINDOW_TYPE_2B: u32 = 1 << 24;
pub(crate) const IBV_MW_TYPE_2: c_int = 2;
/// An MR windows may be bound over.
pub(crate) const IBV_ACCESS_MW_BIND: c_int = 16;
pub(crate) const IBV_WR_LOCAL_INV: c_int = 7;
pub(crate) const IBV_WR_BIND_MW: c_int = 8;
pub(crate) const IBV_DEVICE_MEM_MGT_EXTENSIONS: u32 = 1 << 21;
pub(crate) const IBV_QPT_RC: c_int = 2;
pub(crate) const IBV_QPS_INIT: c_int = 1;
pub(crate) const IBV_QPS_ERR: c_int = 6;
pub(crate) const IBV_QP_STATE: c_int = 1;
pub(crate) const IBV_SRQ_MAX_WR: c_int = 1;
pub(crate) const IBV_SRQ_LIMIT: c_int = 2;
pub(crate) const IBV_ACCESS_LOCAL_WRITE: c_int = 1;
pub(crate) const IBV_ACCESS_REMOTE_WRITE: c_int = 2;
pub(crate) const IBV_ACCESS_REMOTE_READ: c_int = 4;
pub(crate) const IBV_WR_RDMA_WRITE: c_int = 0;
pub(crate) const IBV_WR_SEND: c_int = 2;
pub(crate) const IBV_WR_RDMA_READ: c_int = 4;
pub(crate) const IBV_WR_SEND_WITH_INV: c_int = 9;
pub(crate) const IBV_SEND_FENCE: u32 = 1;
pub(crate) const IBV_SEND_SIGNALED: u32 = 2;
pub(crate) const IBV_SEND_SOLICITED: u32 = 4;
pub(crate) const IBV_SEND_INLINE: u32 = 8;
pub(crate) const IBV_WC_SUCCESS: c_int = 0;
pub(crate) const IBV_WC_LOC_LEN_ERR: c_int = 1;
pub(crate) const IBV_WC_LOC_QP_OP_ERR: c_int = 2;
pub(crate) const IBV_WC_LOC_PROT_ERR: c_int = 4;
pub(crate) const IBV_WC_WR_FLUSH_ERR: c_int = 5;
pub(crate) const IBV_WC_LOC_ACCESS_ERR: c_int = 8;
pub(crate) const IBV_WC_REM_INV_REQ_ERR: c_int = 9;
pub(crate) const IBV_WC_REM_ACCESS_ERR: c_int = 10;
pub(crate) const IBV_WC_REM_OP_ERR: c_int = 11;
pub(crate) const IBV_WC_RETRY_EXC_ERR: c_int = 12;
pub(crate) const IBV_WC_RNR_RETRY_EXC_ERR: c_int = 13;
pub(crate) const IBV_WC_WITH_INV: u32 = 1 << 3;

// ---------------------------------------------------------------- rdma_cma.h structs

#[repr(C)]
pub(crate) struct rdma_event_channel {
    pub fd: c_int,
}

/// The leading fields of `struct rdma_cm_id`; `route.addr.src_addr` is at 32 and
/// `route.addr.dst_addr` at 160 (two `sockaddr_storage`s).
#[repr(C)]
pub(crate) struct rdma_cm_id {
    pub verbs: *mut ibv_context,
    pub channel: *mut rdma_event_channel,
    pub context: *mut c_void,
    pub qp: *mut ibv_qp,
    pub src_addr: libc::sockaddr_storage,
    pub dst_addr: libc::sockaddr_storage,
    _ib_addr: [u64; 5],
    _path_rec: *mut c_void,
    _num_paths: c_int,
    _route_pad: c_int,
    pub ps: c_int,
    pub port_num: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct rdma_conn_param {
    pub private_data: *const c_void,
    pub private_data_len: u8,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    pub flow_control: u8,
    pub retry_count: u8,
    pub rnr_retry_count: u8,
    pub srq: u8,
    pub qp_num: u32,
}

/// The leading fields of `struct rdma_cm_event` (the `param` union starts with `conn`).
#[repr(C)]
pub(crate) struct rdma_cm_event {
    pub id: *mut rdma_cm_id,
    pub listen_id: *mut rdma_cm_id,
    pub event: c_int,
    pub status: c_int,
    pub conn: rdma_conn_param,
}

pub(crate) const RDMA_PS_TCP: c_int = 0x0106;
pub(crate) const RDMA_CM_EVENT_ADDR_RESOLVED: c_int = 0;
pub(crate) const RDMA_CM_EVENT_ADDR_ERROR: c_int = 1;
pub(crate) const RDMA_CM_EVENT_ROUTE_RESOLVED: c_int = 2;
pub(crate) const RDMA_CM_EVENT_ROUTE_ERROR: c_int = 3;
pub(crate) const RDMA_CM_EVENT_CONNECT_REQUEST: c_int = 4;
pub(crate) const RDMA_CM_EVENT_CONNECT_RESPONSE: c_int = 5;
pub(crate) const RDMA_CM_EVENT_CONNECT_ERROR: c_int = 6;
pub(crate) const RDMA_CM_EVENT_UNREACHABLE: c_int = 7;
pub(crate) const RDMA_CM_EVENT_REJECTED: c_int = 8;
pub(crate) const RDMA_CM_EVENT_ESTABLISHED: c_int = 9;
pub(crate) const RDMA_CM_EVENT_DISCONNECTED: c_int = 10;
pub(crate) const RDMA_CM_EVENT_DEVICE_REMOVAL: c_int = 11;
pub(crate) const RDMA_CM_EVENT_TIMEWAIT_EXIT: c_int = 15;

// ---------------------------------------------------------------- the loaded libraries

macro_rules! symbols {
    ($name:ident { $($lib:ident $f:ident : fn($($a:ty),*) -> $r:ty;)* }) => {
        /// The entry points, resolved once at load.
        pub(crate) struct $name {
            $($f: unsafe extern "C" fn($($a),*) -> $r,)*
        }
        impl $name {
            fn resolve(verbs: &Library, cm: &Library) -> Result<$name, String> {
                let _ = (&verbs, &cm);
                Ok($name {
                    $($f: {
                        let lib = symbols!(@lib $lib, verbs, cm);
                        // SAFETY: the symbol is declared with the prototype of rdma-core v44's
                        // header; the pointer is copied out and used only while `Lib` keeps
                        // both libraries loaded (it owns them and outlives every use).
                        let s = unsafe {
                            lib.get::<unsafe extern "C" fn($($a),*) -> $r>(
                                concat!(stringify!($f), "\0").as_bytes())
                        };
                        *s.map_err(|e| format!("{}: {e}", stringify!($f)))?
                    },)*
                })
            }
        }
    };
    (@lib verbs, $v:ident, $c:ident) => { $v };
    (@lib cm, $v:ident, $c:ident) => { $c };
}

symbols!(Fns {
    verbs ibv_get_device_list: fn(*mut c_int) -> *mut *mut ibv_device;
    verbs ibv_free_device_list: fn(*mut *mut ibv_device) -> ();
    verbs ibv_get_device_name: fn(*mut ibv_device) -> *const c_char;
    verbs ibv_query_device: fn(*mut ibv_context, *mut ibv_device_attr) -> c_int;
    verbs ibv_query_port: fn(*mut ibv_context, u8, *mut ibv_port_attr) -> c_int;
    verbs ibv_query_gid: fn(*mut ibv_context, u8, c_int, *mut [u8; 16]) -> c_int;
    verbs ibv_alloc_pd: fn(*mut ibv_context) -> *mut ibv_pd;
    verbs ibv_dealloc_pd: fn(*mut ibv_pd) -> c_int;
    verbs ibv_create_comp_channel: fn(*mut ibv_context) -> *mut ibv_comp_channel;
    verbs ibv_destroy_comp_channel: fn(*mut ibv_comp_channel) -> c_int;
    verbs ibv_create_cq: fn(*mut ibv_context, c_int, *mut c_void, *mut ibv_comp_channel, c_int) -> *mut ibv_cq;
    verbs ibv_resize_cq: fn(*mut ibv_cq, c_int) -> c_int;
    verbs ibv_destroy_cq: fn(*mut ibv_cq) -> c_int;
    verbs ibv_get_cq_event: fn(*mut ibv_comp_channel, *mut *mut ibv_cq, *mut *mut c_void) -> c_int;
    verbs ibv_ack_cq_events: fn(*mut ibv_cq, u32) -> ();
    verbs ibv_reg_mr: fn(*mut ibv_pd, *mut c_void, usize, c_int) -> *mut ibv_mr;
    verbs ibv_dereg_mr: fn(*mut ibv_mr) -> c_int;
    verbs ibv_create_qp: fn(*mut ibv_pd, *mut ibv_qp_init_attr) -> *mut ibv_qp;
    verbs ibv_modify_qp: fn(*mut ibv_qp, *mut ibv_qp_attr, c_int) -> c_int;
    verbs ibv_destroy_qp: fn(*mut ibv_qp) -> c_int;
    verbs ibv_create_srq: fn(*mut ibv_pd, *mut ibv_srq_init_attr) -> *mut ibv_srq;
    verbs ibv_modify_srq: fn(*mut ibv_srq, *mut ibv_srq_attr, c_int) -> c_int;
    verbs ibv_destroy_srq: fn(*mut ibv_srq) -> c_int;
    verbs ibv_get_async_event: fn(*mut ibv_context, *mut ibv_async_event) -> c_int;
    verbs ibv_ack_async_event: fn(*mut ibv_async_event) -> ();
    cm rdma_get_devices: fn(*mut c_int) -> *mut *mut ibv_context;
    cm rdma_free_devices: fn(*mut *mut ibv_context) -> ();
    cm rdma_create_event_channel: fn() -> *mut rdma_event_channel;
    cm rdma_destroy_event_channel: fn(*mut rdma_event_channel) -> ();
    cm rdma_create_id: fn(*mut rdma_event_channel, *mut *mut rdma_cm_id, *mut c_void, c_int) -> c_int;
    cm rdma_destroy_id: fn(*mut rdma_cm_id) -> c_int;
    cm rdma_bind_addr: fn(*mut rdma_cm_id, *const libc::sockaddr) -> c_int;
    cm rdma_resolve_addr: fn(*mut rdma_cm_id, *const libc::sockaddr, *const libc::sockaddr, c_int) -> c_int;
    cm rdma_resolve_route: fn(*mut rdma_cm_id, c_int) -> c_int;
    cm rdma_listen: fn(*mut rdma_cm_id, c_int) -> c_int;
    cm rdma_connect: fn(*mut rdma_cm_id, *mut rdma_conn_param) -> c_int;
    cm rdma_accept: fn(*mut rdma_cm_id, *mut rdma_conn_param) -> c_int;
    cm rdma_reject: fn(*mut rdma_cm_id, *const c_void, u8) -> c_int;
    cm rdma_disconnect: fn(*mut rdma_cm_id) -> c_int;
    cm rdma_get_cm_event: fn(*mut rdma_event_channel, *mut *mut rdma_cm_event) -> c_int;
    cm rdma_ack_cm_event: fn(*mut rdma_cm_event) -> c_int;
    cm rdma_init_qp_attr: fn(*mut rdma_cm_id, *mut ibv_qp_attr, *mut c_int) -> c_int;
});

/// Why the libraries could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoadFailure {
    /// `dlopen` failed for this file.
    Missing { library: String, reason: String },
    /// The file loaded but lacks an entry point (not rdma-core, or too old).
    Symbol { library: String, reason: String },
}

/// libibverbs and librdmacm, loaded.
pub(crate) struct Lib {
    f: Fns,
    _verbs: Library,
    _cm: Library,
}

fn open(name: &str) -> Result<Library, LoadFailure> {
    // SAFETY: loading runs the library's initialisers; libibverbs and librdmacm are ordinary
    // C libraries whose constructors only set up their own globals.
    unsafe { Library::new(name) }.map_err(|e| LoadFailure::Missing {
        library: name.to_string(),
        reason: e.to_string(),
    })
}

impl Lib {
    /// Loads both libraries.
    pub(crate) fn load(verbs_name: &str, cm_name: &str) -> Result<Lib, LoadFailure> {
        let verbs = open(verbs_name)?;
        let cm = open(cm_name)?;
        let f = Fns::resolve(&verbs, &cm).map_err(|reason| LoadFailure::Symbol {
            library: format!("{verbs_name} / {cm_name}"),
            reason,
        })?;
        Ok(Lib {
            f,
            _verbs: verbs,
            _cm: cm,
        })
    }

    /// The names of the verbs devices (`ibv_get_device_list`), with their transport.
    pub(crate) fn device_names(&self) -> Vec<(String, c_int)> {
        let mut n: c_int = 0;
        // SAFETY: `n` is a valid out-pointer; the list is freed below.
        let list = unsafe { (self.f.ibv_get_device_list)(&mut n) };
        if list.is_null() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for i in 0..n.max(0) as usize {
            // SAFETY: the list holds `n` valid device pointers until it is freed.
            let dev = unsafe { *list.add(i) };
            // SAFETY: `dev` is valid; the name is a NUL-terminated string inside it.
            let name = unsafe { CStr::from_ptr((self.f.ibv_get_device_name)(dev)) };
            // SAFETY: `dev` is a valid `ibv_device`; `transport_type` is at offset 20.
            let transport = unsafe { (*dev).transport_type };
            out.push((name.to_string_lossy().into_owned(), transport));
        }
        // SAFETY: `list` came from `ibv_get_device_list` and is freed once.
        unsafe { (self.f.ibv_free_device_list)(list) };
        out
    }

    /// librdmacm's device contexts (`rdma_get_devices`): the contexts its CM ids bind to, so
    /// the QPs we create on them can be connected. Never closed (librdmacm owns them).
    pub(crate) fn cm_devices(&self) -> Vec<Ctx> {
        let mut n: c_int = 0;
        // SAFETY: `n` is a valid out-pointer; the array is freed below (not the contexts).
        let list = unsafe { (self.f.rdma_get_devices)(&mut n) };
        if list.is_null() {
            return Vec::new();
        }
        // SAFETY: the array holds `n` context pointers.
        let out = (0..n.max(0) as usize)
            .map(|i| Ctx(unsafe { *list.add(i) }))
            .collect();
        // SAFETY: `list` came from `rdma_get_devices`; freeing it leaves the contexts open.
        unsafe { (self.f.rdma_free_devices)(list) };
        out
    }

    pub(crate) fn ctx_device_name(&self, ctx: Ctx) -> String {
        // SAFETY: a live context points at its device, whose name is NUL-terminated.
        unsafe { CStr::from_ptr((self.f.ibv_get_device_name)((*ctx.0).device)) }
            .to_string_lossy()
            .into_owned()
    }

    pub(crate) fn ctx_transport(&self, ctx: Ctx) -> c_int {
        // SAFETY: a live context points at its device.
        unsafe { (*(*ctx.0).device).transport_type }
    }

    pub(crate) fn query_device(&self, ctx: Ctx) -> Result<ibv_device_attr, c_int> {
        // SAFETY: all-zero is a valid `ibv_device_attr` (integers and chars).
        let mut attr: ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: live context, out-pointer to a whole struct.
        let rc = unsafe { (self.f.ibv_query_device)(ctx.0, &mut attr) };
        if rc == 0 { Ok(attr) } else { Err(rc) }
    }

    pub(crate) fn query_port(&self, ctx: Ctx, port: u8) -> Result<ibv_port_attr, c_int> {
        // SAFETY: all-zero is a valid port attribute block.
        let mut room: PortAttrRoom = unsafe { std::mem::zeroed() };
        // SAFETY: live context; the out-buffer is larger than any version's struct.
        let rc = unsafe { (self.f.ibv_query_port)(ctx.0, port, &mut room.attr) };
        if rc == 0 { Ok(room.attr) } else { Err(rc) }
    }

    /// Entry `index` of a port's GID table (`union ibv_gid`: 16 octets).
    pub(crate) fn query_gid(&self, ctx: Ctx, port: u8, index: c_int) -> Result<[u8; 16], c_int> {
        let mut gid = [0u8; 16];
        // SAFETY: live context; the out-pointer is a whole 16-octet `union ibv_gid`.
        let rc = unsafe { (self.f.ibv_query_gid)(ctx.0, port, index, &mut gid) };
        if rc == 0 { Ok(gid) } else { Err(rc) }
    }

    pub(crate) fn alloc_pd(&self, ctx: Ctx) -> Option<PdH> {
        // SAFETY: live context.
        let p = unsafe { (self.f.ibv_alloc_pd)(ctx.0) };
        (!p.is_null()).then_some(PdH(p))
    }

    pub(crate) fn dealloc_pd(&self, pd: PdH) -> c_int {
        // SAFETY: `pd` is live and released once (its owner's Drop).
        unsafe { (self.f.ibv_dealloc_pd)(pd.0) }
    }

    pub(crate) fn create_comp_channel(&self, ctx: Ctx) -> Option<ChanH> {
        // SAFETY: live context.
        let p = unsafe { (self.f.ibv_create_comp_channel)(ctx.0) };
        (!p.is_null()).then_some(ChanH(p))
    }

    pub(crate) fn destroy_comp_channel(&self, ch: ChanH) {
        // SAFETY: `ch` is live, its CQs are destroyed, released once.
        unsafe { (self.f.ibv_destroy_comp_channel)(ch.0) };
    }

    pub(crate) fn comp_channel_fd(&self, ch: ChanH) -> c_int {
        // SAFETY: live channel.
        unsafe { (*ch.0).fd }
    }

    pub(crate) fn create_cq(&self, ctx: Ctx, cqe: c_int, key: u64, ch: ChanH) -> Option<CqH> {
        // SAFETY: live context and channel; the key is carried as an opaque pointer value.
        let p = unsafe { (self.f.ibv_create_cq)(ctx.0, cqe, key as usize as *mut c_void, ch.0, 0) };
        (!p.is_null()).then_some(CqH(p))
    }

    /// The entries the device's CQ holds (`cq->cqe`, at least what was asked).
    pub(crate) fn cq_size(&self, cq: CqH) -> usize {
        // SAFETY: live CQ; `cqe` is the provider's, set at create and resize.
        unsafe { (*cq.0).cqe.max(0) as usize }
    }

    pub(crate) fn resize_cq(&self, cq: CqH, cqe: c_int) -> c_int {
        // SAFETY: live CQ.
        unsafe { (self.f.ibv_resize_cq)(cq.0, cqe) }
    }

    pub(crate) fn destroy_cq(&self, cq: CqH) -> c_int {
        // SAFETY: live CQ without QPs, released once.
        unsafe { (self.f.ibv_destroy_cq)(cq.0) }
    }

    /// `ibv_get_cq_event` then `ibv_ack_cq_events` (the channel fd must be readable, or the
    /// call blocks): the key of the CQ that fired.
    pub(crate) fn take_cq_event(&self, ch: ChanH) -> Option<u64> {
        let mut cq = ptr::null_mut();
        let mut key = ptr::null_mut();
        // SAFETY: live channel; out-pointers valid.
        let rc = unsafe { (self.f.ibv_get_cq_event)(ch.0, &mut cq, &mut key) };
        if rc != 0 {
            return None;
        }
        // SAFETY: the event's CQ is live until its events are acknowledged (destroy waits).
        unsafe { (self.f.ibv_ack_cq_events)(cq, 1) };
        Some(key as usize as u64)
    }

    pub(crate) fn async_fd(&self, ctx: Ctx) -> c_int {
        // SAFETY: live context.
        unsafe { (*ctx.0).async_fd }
    }

    /// One async event (the context's async fd must be readable, or the call blocks): its type
    /// and element pointer (as an address: CQ, QP or SRQ), acknowledged.
    pub(crate) fn take_async_event(&self, ctx: Ctx) -> Option<(c_int, usize)> {
        let mut ev = ibv_async_event {
            element: ptr::null_mut(),
            event_type: -1,
        };
        // SAFETY: live context; out-pointer valid.
        if unsafe { (self.f.ibv_get_async_event)(ctx.0, &mut ev) } != 0 {
            return None;
        }
        let out = (ev.event_type, ev.element as usize);
        // SAFETY: acknowledged once (the element's destroy waits for it).
        unsafe { (self.f.ibv_ack_async_event)(&mut ev) };
        Some(out)
    }

    pub(crate) fn req_notify_cq(&self, cq: CqH, solicited_only: bool) -> c_int {
        // SAFETY: live CQ; `ops.req_notify_cq` is the provider's entry point (what the
        // header's static inline `ibv_req_notify_cq` calls).
        unsafe {
            let ctx = (*cq.0).context;
            match (*ctx).ops.req_notify_cq {
                Some(f) => f(cq.0, solicited_only as c_int),
                None => libc::EOPNOTSUPP,
            }
        }
    }

    /// `ibv_poll_cq` through `ops.poll_cq`: completions into `wc`, or a negative error.
    pub(crate) fn poll_cq(&self, cq: CqH, wc: &mut [ibv_wc]) -> c_int {
        // SAFETY: live CQ; `wc` has room for `wc.len()` entries.
        unsafe {
            let ctx = (*cq.0).context;
            match (*ctx).ops.poll_cq {
                Some(f) => f(
                    cq.0,
                    wc.len().min(c_int::MAX as usize) as c_int,
                    wc.as_mut_ptr(),
                ),
                None => -libc::EOPNOTSUPP,
            }
        }
    }

    pub(crate) fn reg_mr(
        &self,
        pd: PdH,
        addr: u64,
        len: usize,
        access: c_int,
    ) -> Result<MrH, c_int> {
        // SAFETY: live PD. The range belongs to a `Buffer` the MR keeps alive while registered.
        let p = unsafe { (self.f.ibv_reg_mr)(pd.0, addr as usize as *mut c_void, len, access) };
        if p.is_null() {
            Err(errno())
        } else {
            Ok(MrH(p))
        }
    }

    /// `ibv_alloc_mw` (an inline function of the header: the context's `alloc_mw` op).
    pub(crate) fn alloc_mw(&self, pd: PdH, mw_type: c_int) -> Result<MwH, c_int> {
        // SAFETY: live PD and its live context.
        unsafe {
            let Some(f) = (*(*pd.0).context).ops.alloc_mw else {
                return Err(libc::EOPNOTSUPP);
            };
            let p = f(pd.0, mw_type);
            if p.is_null() {
                Err(errno())
            } else {
                Ok(MwH(p))
            }
        }
    }

    /// `ibv_dealloc_mw` (inline in the header).
    pub(crate) fn dealloc_mw(&self, mw: MwH) -> c_int {
        // SAFETY: live MW, released once.
        unsafe {
            match (*(*mw.0).context).ops.dealloc_mw {
                Some(f) => f(mw.0),
                None => libc::EOPNOTSUPP,
            }
        }
    }

    /// The window's rkey as allocated (a bind gives it a new low byte).
    pub(crate) fn mw_rkey(&self, mw: MwH) -> u32 {
        // SAFETY: live MW.
        unsafe { (*mw.0).rkey }
    }

    /// Records a bound window's new rkey in its `ibv_mw`, as `ibv_bind_mw` does for type 1:
    /// providers name the window by it in the next bind or invalidate (rxe checks it against
    /// the kernel's key).
    pub(crate) fn set_mw_rkey(&self, mw: MwH, rkey: u32) {
        // SAFETY: live MW; the crate serialises its posts (`&mut` initiator), and nothing else
        // writes this field.
        unsafe { (*mw.0).rkey = rkey }
    }

    pub(crate) fn mr_keys(&self, mr: MrH) -> (u32, u32) {
        // SAFETY: live MR.
        unsafe { ((*mr.0).lkey, (*mr.0).rkey) }
    }

    pub(crate) fn dereg_mr(&self, mr: MrH) -> c_int {
        // SAFETY: live MR, released once.
        unsafe { (self.f.ibv_dereg_mr)(mr.0) }
    }

    pub(crate) fn create_qp(&self, pd: PdH, attr: &mut ibv_qp_init_attr) -> Result<QpH, c_int> {
        // SAFETY: live PD and CQs/SRQ named in `attr`.
        let p = unsafe { (self.f.ibv_create_qp)(pd.0, attr) };
        if p.is_null() {
            Err(errno())
        } else {
            Ok(QpH(p))
        }
    }

    pub(crate) fn qp_num(&self, qp: QpH) -> u32 {
        // SAFETY: live QP.
        unsafe { (*qp.0).qp_num }
    }

    pub(crate) fn modify_qp_state(&self, qp: QpH, state: c_int) -> c_int {
        // SAFETY: all-zero is a valid attribute block; only `qp_state` is read (mask).
        let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = state;
        // SAFETY: live QP.
        unsafe { (self.f.ibv_modify_qp)(qp.0, &mut attr, IBV_QP_STATE) }
    }

    pub(crate) fn destroy_qp(&self, qp: QpH) -> c_int {
        // SAFETY: live QP, released once.
        unsafe { (self.f.ibv_destroy_qp)(qp.0) }
    }

    pub(crate) fn post_send(&self, qp: QpH, wr: &mut ibv_send_wr) -> c_int {
        let mut bad = ptr::null_mut();
        // SAFETY: live QP; `wr` and its SGE list live for the call (the provider copies them).
        unsafe {
            match (*(*qp.0).context).ops.post_send {
                Some(f) => f(qp.0, wr, &mut bad),
                None => libc::EOPNOTSUPP,
            }
        }
    }

    pub(crate) fn post_recv(&self, qp: QpH, wr: &mut ibv_recv_wr) -> c_int {
        let mut bad = ptr::null_mut();
        // SAFETY: as `post_send`.
        unsafe {
            match (*(*qp.0).context).ops.post_recv {
                Some(f) => f(qp.0, wr, &mut bad),
                None => libc::EOPNOTSUPP,
            }
        }
    }

    pub(crate) fn create_srq(&self, pd: PdH, attr: &mut ibv_srq_init_attr) -> Result<SrqH, c_int> {
        // SAFETY: live PD.
        let p = unsafe { (self.f.ibv_create_srq)(pd.0, attr) };
        if p.is_null() {
            Err(errno())
        } else {
            Ok(SrqH(p))
        }
    }

    pub(crate) fn modify_srq(&self, srq: SrqH, attr: &mut ibv_srq_attr, mask: c_int) -> c_int {
        // SAFETY: live SRQ.
        unsafe { (self.f.ibv_modify_srq)(srq.0, attr, mask) }
    }

    pub(crate) fn destroy_srq(&self, srq: SrqH) -> c_int {
        // SAFETY: live SRQ without QPs, released once.
        unsafe { (self.f.ibv_destroy_srq)(srq.0) }
    }

    pub(crate) fn post_srq_recv(&self, srq: SrqH, wr: &mut ibv_recv_wr) -> c_int {
        let mut bad = ptr::null_mut();
        // SAFETY: as `post_send`.
        unsafe {
            match (*(*srq.0).context).ops.post_srq_recv {
                Some(f) => f(srq.0, wr, &mut bad),
                None => libc::EOPNOTSUPP,
            }
        }
    }

    // ------------------------------------------------------------ librdmacm

    pub(crate) fn create_event_channel(&self) -> Option<EvChH> {
        // SAFETY: no arguments.
        let p = unsafe { (self.f.rdma_create_event_channel)() };
        (!p.is_null()).then_some(EvChH(p))
    }

    pub(crate) fn destroy_event_channel(&self, ch: EvChH) {
        // SAFETY: live channel whose ids are destroyed, released once.
        unsafe { (self.f.rdma_destroy_event_channel)(ch.0) }
    }

    pub(crate) fn event_channel_fd(&self, ch: EvChH) -> c_int {
        // SAFETY: live channel.
        unsafe { (*ch.0).fd }
    }

    pub(crate) fn create_id(&self, ch: EvChH) -> Result<IdH, c_int> {
        let mut id = ptr::null_mut();
        // SAFETY: live channel; out-pointer valid.
        let rc = unsafe { (self.f.rdma_create_id)(ch.0, &mut id, ptr::null_mut(), RDMA_PS_TCP) };
        if rc == 0 { Ok(IdH(id)) } else { Err(errno()) }
    }

    pub(crate) fn destroy_id(&self, id: IdH) {
        // SAFETY: live id; our QP is detached first so librdmacm does not touch it later.
        unsafe {
            (*id.0).qp = ptr::null_mut();
            (self.f.rdma_destroy_id)(id.0);
        }
    }

    pub(crate) fn bind_addr(&self, id: IdH, addr: SocketAddr) -> c_int {
        let (sa, _) = to_sockaddr(addr);
        // SAFETY: live id; `sa` is a valid sockaddr for the call.
        let rc = unsafe { (self.f.rdma_bind_addr)(id.0, &sa as *const _ as *const libc::sockaddr) };
        if rc == 0 { 0 } else { errno() }
    }

    /// The device context and port an id is bound to (after bind or resolve).
    pub(crate) fn id_device(&self, id: IdH) -> Option<(Ctx, u8)> {
        // SAFETY: live id.
        let (v, p) = unsafe { ((*id.0).verbs, (*id.0).port_num) };
        (!v.is_null()).then_some((Ctx(v), p))
    }

    pub(crate) fn resolve_addr(
        &self,
        id: IdH,
        src: Option<SocketAddr>,
        dst: SocketAddr,
        ms: c_int,
    ) -> c_int {
        let s = src.map(to_sockaddr);
        let (d, _) = to_sockaddr(dst);
        let sp = s
            .as_ref()
            .map_or(ptr::null(), |(s, _)| s as *const _ as *const libc::sockaddr);
        // SAFETY: live id; addresses valid for the call.
        let rc = unsafe {
            (self.f.rdma_resolve_addr)(id.0, sp, &d as *const _ as *const libc::sockaddr, ms)
        };
        if rc == 0 { 0 } else { errno() }
    }

    pub(crate) fn resolve_route(&self, id: IdH, ms: c_int) -> c_int {
        // SAFETY: live id.
        let rc = unsafe { (self.f.rdma_resolve_route)(id.0, ms) };
        if rc == 0 { 0 } else { errno() }
    }

    pub(crate) fn listen(&self, id: IdH, backlog: c_int) -> c_int {
        // SAFETY: live, bound id.
        let rc = unsafe { (self.f.rdma_listen)(id.0, backlog) };
        if rc == 0 { 0 } else { errno() }
    }

    /// Attaches `qp` to `id` (so librdmacm moves it through RTR/RTS and to ERR on disconnect)
    /// and brings it to INIT with the id's attributes (what `rdma_create_qp` does).
    /// The INIT attributes (`rdma_init_qp_attr`) of a QP on `id`'s device and port: bound
    /// ids answer too (IB: port and P_Key index; iWARP: access flags 0).
    pub(crate) fn init_qp_attr(&self, id: IdH) -> Result<(ibv_qp_attr, c_int), c_int> {
        // SAFETY: all-zero is a valid attribute block.
        let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = IBV_QPS_INIT;
        let mut mask: c_int = 0;
        // SAFETY: live id bound to a device; out-pointers valid.
        let rc = unsafe { (self.f.rdma_init_qp_attr)(id.0, &mut attr, &mut mask) };
        if rc != 0 {
            return Err(errno());
        }
        attr.allow_remote_access(&mut mask);
        Ok((attr, mask))
    }

    /// `ibv_modify_qp` with attributes from [`Lib::init_qp_attr`].
    pub(crate) fn modify_qp(&self, qp: QpH, attr: &ibv_qp_attr, mask: c_int) -> c_int {
        let mut attr = *attr;
        // SAFETY: live QP; the attribute block is rdma-cm's, valid for `mask`.
        unsafe { (self.f.ibv_modify_qp)(qp.0, &mut attr, mask) }
    }

    pub(crate) fn attach_qp(&self, id: IdH, qp: QpH) -> c_int {
        // SAFETY: all-zero is a valid attribute block.
        let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = IBV_QPS_INIT;
        let mut mask: c_int = 0;
        // SAFETY: live id with a resolved device; live QP on that device.
        unsafe {
            let rc = (self.f.rdma_init_qp_attr)(id.0, &mut attr, &mut mask);
            if rc != 0 {
                return errno();
            }
            attr.allow_remote_access(&mut mask);
            let rc = (self.f.ibv_modify_qp)(qp.0, &mut attr, mask);
            if rc != 0 {
                return rc;
            }
            (*id.0).qp = qp.0;
        }
        0
    }

    pub(crate) fn connect(&self, id: IdH, p: &mut rdma_conn_param) -> c_int {
        // SAFETY: live id with a QP attached; `p` and its private data live for the call.
        let rc = unsafe { (self.f.rdma_connect)(id.0, p) };
        if rc == 0 { 0 } else { errno() }
    }

    pub(crate) fn accept(&self, id: IdH, p: &mut rdma_conn_param) -> c_int {
        // SAFETY: as `connect`.
        let rc = unsafe { (self.f.rdma_accept)(id.0, p) };
        if rc == 0 { 0 } else { errno() }
    }

    pub(crate) fn reject(&self, id: IdH, data: &[u8]) -> c_int {
        // SAFETY: live id; `data` lives for the call (length capped by the caller).
        let rc = unsafe {
            (self.f.rdma_reject)(
                id.0,
                data.as_ptr() as *const c_void,
                data.len().min(255) as u8,
            )
        };
        if rc == 0 { 0 } else { errno() }
    }

    pub(crate) fn disconnect(&self, id: IdH) -> c_int {
        // SAFETY: live id.
        let rc = unsafe { (self.f.rdma_disconnect)(id.0) };
        if rc == 0 { 0 } else { errno() }
    }

    /// Answers the peer's disconnect (on IB/RoCE the DREP the peer waits for) without
    /// flushing our QP: the NDK leaves that to the consumer's own disconnect or close, while
    /// `rdma_disconnect` would move an attached QP to ERR first.
    pub(crate) fn disconnect_reply(&self, id: IdH) -> c_int {
        // SAFETY: live id; the QP pointer is put back as it was.
        unsafe {
            let qp = (*id.0).qp;
            (*id.0).qp = ptr::null_mut();
            let rc = (self.f.rdma_disconnect)(id.0);
            (*id.0).qp = qp;
            rc
        }
    }

    pub(crate) fn id_addresses(&self, id: IdH) -> (Option<SocketAddr>, Option<SocketAddr>) {
        // SAFETY: live id; the two `sockaddr_storage`s are plain data.
        let (s, d) = unsafe { ((*id.0).src_addr, (*id.0).dst_addr) };
        (from_sockaddr(&s), from_sockaddr(&d))
    }

    /// One CM event, copied out and acknowledged (the channel fd must be readable, or the call
    /// blocks).
    pub(crate) fn take_cm_event(&self, ch: EvChH) -> Option<CmEvent> {
        let mut ev = ptr::null_mut();
        // SAFETY: live channel; out-pointer valid.
        if unsafe { (self.f.rdma_get_cm_event)(ch.0, &mut ev) } != 0 {
            return None;
        }
        // SAFETY: `ev` is valid until acknowledged; its private data has `private_data_len`
        // octets (or is null).
        let out = unsafe {
            let e = &*ev;
            let data = if e.conn.private_data.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(
                    e.conn.private_data as *const u8,
                    e.conn.private_data_len as usize,
                )
                .to_vec()
            };
            CmEvent {
                id: IdH(e.id),
                listen_id: (!e.listen_id.is_null()).then_some(IdH(e.listen_id)),
                event: e.event,
                status: e.status,
                private_data: data,
                responder_resources: e.conn.responder_resources,
                initiator_depth: e.conn.initiator_depth,
            }
        };
        // SAFETY: acknowledged once.
        unsafe { (self.f.rdma_ack_cm_event)(ev) };
        Some(out)
    }
}

/// A CM event, copied out of librdmacm's.
#[derive(Debug)]
pub(crate) struct CmEvent {
    pub id: IdH,
    pub listen_id: Option<IdH>,
    pub event: c_int,
    pub status: c_int,
    pub private_data: Vec<u8>,
    pub responder_resources: u8,
    pub initiator_depth: u8,
}

fn errno() -> c_int {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Waits up to `ms` for `fd` to be readable.
pub(crate) fn readable(fd: c_int, ms: c_int) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 && p.revents & libc::POLLIN != 0 }
}

fn to_sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { ptr::write(&mut s as *mut _ as *mut libc::sockaddr_in, sin) };
            (s, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above.
            unsafe { ptr::write(&mut s as *mut _ as *mut libc::sockaddr_in6, sin6) };
            (s, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

fn from_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as c_int {
        libc::AF_INET => {
            // SAFETY: the family says it holds a sockaddr_in.
            let sin = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it holds a sockaddr_in6.
            let sin6 = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

macro_rules! handle {
    ($($name:ident($t:ty);)*) => {$(
        /// A live handle owned by one object of this crate.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) struct $name(pub(crate) *mut $t);
        // SAFETY: rdma-core's handles may be used from any thread (the libraries lock
        // internally; per-queue serialisation is the crate's `&mut` discipline).
        unsafe impl Send for $name {}
        // SAFETY: as above.
        unsafe impl Sync for $name {}
    )*};
}

handle! {
    Ctx(ibv_context);
    PdH(ibv_pd);
    ChanH(ibv_comp_channel);
    CqH(ibv_cq);
    MrH(ibv_mr);
    MwH(ibv_mw);
    QpH(ibv_qp);
    SrqH(ibv_srq);
    EvChH(rdma_event_channel);
    IdH(rdma_cm_id);
}

impl ibv_send_wr {
    /// A zeroed work request.
    pub(crate) fn zeroed() -> ibv_send_wr {
        // SAFETY: all-zero is a valid `ibv_send_wr` (null pointers, zero integers).
        unsafe { std::mem::zeroed() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Sizes and offsets computed by hand from rdma-core v44's headers (x86-64).
    #[test]
    fn layouts_match_rdma_core_v44() {
        assert_eq!(size_of::<ibv_context_ops>(), 32 * 8);
        assert_eq!(offset_of!(ibv_context_ops, poll_cq), 88);
        assert_eq!(offset_of!(ibv_context_ops, req_notify_cq), 96);
        assert_eq!(offset_of!(ibv_context_ops, post_srq_recv), 160);
        assert_eq!(offset_of!(ibv_context_ops, post_send), 200);
        assert_eq!(offset_of!(ibv_context_ops, post_recv), 208);
        assert_eq!(offset_of!(ibv_context, ops), 8);
        assert_eq!(offset_of!(ibv_context, cmd_fd), 264);
        assert_eq!(offset_of!(ibv_context, num_comp_vectors), 272);
        assert_eq!(size_of::<ibv_context>(), 328);
        assert_eq!(offset_of!(ibv_device, transport_type), 20);
        assert_eq!(offset_of!(ibv_device_attr, max_mr_size), 80);
        assert_eq!(offset_of!(ibv_device_attr, vendor_id), 96);
        assert_eq!(offset_of!(ibv_device_attr, max_qp_wr), 112);
        assert_eq!(offset_of!(ibv_device_attr, device_cap_flags), 116);
        assert_eq!(offset_of!(ibv_device_attr, max_cqe), 132);
        assert_eq!(offset_of!(ibv_device_attr, max_qp_rd_atom), 144);
        assert_eq!(offset_of!(ibv_device_attr, max_qp_init_rd_atom), 156);
        assert_eq!(offset_of!(ibv_device_attr, max_mw), 176);
        assert_eq!(offset_of!(ibv_device_attr, max_srq_wr), 216);
        assert_eq!(offset_of!(ibv_device_attr, phys_port_cnt), 227);
        assert_eq!(size_of::<ibv_device_attr>(), 232);
        assert_eq!(offset_of!(ibv_port_attr, max_msg_sz), 20);
        assert_eq!(offset_of!(ibv_port_attr, link_layer), 46);
        assert_eq!(size_of::<ibv_port_attr>(), 52);
        assert_eq!(offset_of!(ibv_cq, cq_context), 16);
        assert_eq!(offset_of!(ibv_qp, qp_num), 52);
        assert_eq!(offset_of!(ibv_mr, lkey), 36);
        assert_eq!(offset_of!(ibv_mr, rkey), 40);
        assert_eq!(size_of::<ibv_mr>(), 48);
        assert_eq!(offset_of!(ibv_comp_channel, fd), 8);
        assert_eq!(size_of::<ibv_wc>(), 48);
        assert_eq!(offset_of!(ibv_wc, status), 8);
        assert_eq!(offset_of!(ibv_wc, byte_len), 20);
        assert_eq!(offset_of!(ibv_wc, qp_num), 28);
        assert_eq!(offset_of!(ibv_wc, wc_flags), 36);
        assert_eq!(size_of::<ibv_sge>(), 16);
        assert_eq!(size_of::<ibv_send_wr>(), 128);
        assert_eq!(offset_of!(ibv_send_wr, num_sge), 24);
        assert_eq!(offset_of!(ibv_send_wr, send_flags), 32);
        assert_eq!(offset_of!(ibv_send_wr, imm_or_inv), 36);
        assert_eq!(offset_of!(ibv_send_wr, remote_addr), 40);
        assert_eq!(offset_of!(ibv_send_wr, rkey), 48);
        assert_eq!(offset_of!(ibv_send_wr, _qp_type), 72);
        assert_eq!(offset_of!(ibv_send_wr, bind_mw), 80);
        assert_eq!(size_of::<ibv_send_wr_bind_mw>(), 48);
        assert_eq!(offset_of!(ibv_send_wr_bind_mw, mr), 16);
        assert_eq!(offset_of!(ibv_send_wr_bind_mw, mw_access_flags), 40);
        assert_eq!(offset_of!(ibv_mw, rkey), 16);
        assert_eq!(offset_of!(ibv_mw, mw_type), 24);
        assert_eq!(offset_of!(ibv_context_ops, alloc_mw), 7 * 8);
        assert_eq!(offset_of!(ibv_context_ops, dealloc_mw), 9 * 8);
        assert_eq!(offset_of!(ibv_context_ops, poll_cq), 11 * 8);
        assert_eq!(size_of::<ibv_recv_wr>(), 32);
        assert_eq!(size_of::<ibv_qp_init_attr>(), 64);
        assert_eq!(offset_of!(ibv_qp_init_attr, cap), 32);
        assert_eq!(offset_of!(ibv_qp_init_attr, qp_type), 52);
        assert_eq!(size_of::<ibv_srq_init_attr>(), 24);
        assert!(size_of::<ibv_qp_attr>() >= 144);
        assert_eq!(size_of::<ibv_async_event>(), 16);
        assert_eq!(offset_of!(ibv_async_event, event_type), 8);
        assert_eq!(offset_of!(rdma_cm_id, qp), 24);
        assert_eq!(offset_of!(rdma_cm_id, src_addr), 32);
        assert_eq!(offset_of!(rdma_cm_id, dst_addr), 160);
        assert_eq!(offset_of!(rdma_cm_id, ps), 344);
        assert_eq!(offset_of!(rdma_cm_id, port_num), 348);
        assert_eq!(size_of::<rdma_conn_param>(), 24);
        assert_eq!(offset_of!(rdma_cm_event, event), 16);
        assert_eq!(offset_of!(rdma_cm_event, conn), 24);
    }

    #[test]
    fn sockaddr_round_trip() {
        for a in ["10.0.2.15:7174", "[fd5a:5157:7369:77::15]:7175"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(from_sockaddr(&to_sockaddr(a).0), Some(a));
        }
    }
}
