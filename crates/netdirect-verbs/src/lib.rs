//! The `verbs` provider: the netdirect (NDK) object model over rdma-core — libibverbs for the
//! data path, librdmacm for connections — on any RDMA device Linux has (Mellanox/NVIDIA, Intel,
//! Broadcom, Chelsio RNICs, and the kernel's siw and rxe).
//!
//! ```ignore
//! use netdirect::{OpenParameters, Provider};
//! let provider = netdirect_verbs::VerbsProvider::new()?; // loads libibverbs.so.1 + librdmacm.so.1
//! let adapter = provider.open_adapter(OpenParameters {
//!     address: "10.0.2.15".parse()?,
//!     version: netdirect::types::Version::V2_1,
//! })?;
//! ```
//!
//! # Loading, and why this binding
//!
//! rdma-core is loaded **at run time** (`libloading`, `dlopen` of `libibverbs.so.1` and
//! `librdmacm.so.1`): the workspace builds and tests on a machine without rdma-core, and
//! [`VerbsProvider::new`] fails there with a [`VerbsError`] naming the missing library
//! (`NETDIRECT_VERBS_LIBIBVERBS` / `NETDIRECT_VERBS_LIBRDMACM` override the file names). On a
//! machine with the libraries but no RDMA device, [`VerbsProvider::devices`] and
//! [`VerbsProvider::open`] fail with [`VerbsError::NoDevice`].
//!
//! The binding is a small hand-written FFI (`ffi.rs`, all of the crate's `unsafe`), from
//! rdma-core v44's `verbs.h` and `rdma_cma.h` (Debian 12's rdma-core), with tests that pin every
//! struct size and field offset used. The existing crates do not fit the rule "no build-time
//! dependency": `sideway` builds on `rdma-mummy-sys`, which links libibverbs and librdmacm at
//! build time (its build script runs bindgen over the installed headers, or builds rdma-core
//! from source), so a machine without rdma-core cannot build the workspace. The data-path
//! calls `ibv_post_send`, `ibv_post_recv`, `ibv_post_srq_recv`, `ibv_poll_cq` and
//! `ibv_req_notify_cq` are static inlines in the header that call through
//! `ibv_context.ops`; the FFI does the same, which is why `ibv_context_ops`'s layout must be
//! exact.
//!
//! # Where it is tested
//!
//! Unit tests here (struct layouts, the missing-library and no-device statuses, the mapping
//! table's completeness) run anywhere. `examples/verbs_check.rs` runs in the interop VM
//! (`tests/interop/siw.sh`, stage `verbs`) on siw (iWARP) and rxe (RoCEv2), IPv4 and IPv6:
//! listener and connector on one adapter with private data, RDMA write, send/receive and RDMA
//! read with the data compared, effective IRD/ORD on both ends, a CQ notification,
//! `Cq::wait`, a disconnect event, a flush, a reject with private data, and an SRQ with its
//! limit notification.
//!
//! # Threads
//!
//! Each adapter runs two threads: the CM thread (librdmacm's event channel: address and route
//! resolution, connect requests, establishment, rejects, disconnects; connect events and
//! disconnect callbacks run on it) and the CQ thread (the adapter's completion channel; CQ
//! notifications run on it, never two of one CQ at once). Both hold the adapter weakly and stop
//! when the adapter and every object under it are gone: an adapter's close does not wait for
//! its children (the NDK's blocking close is not kept), but their events still arrive.
//!
//! # NDK entry points over verbs
//!
//! | NDK | verbs / rdma-cm |
//! |---|---|
//! | `OpenNDKAdapterHandler` | `rdma_bind_addr` of a scratch CM id to find the device and port serving the address; `ibv_query_device`, `ibv_query_port` |
//! | `CloseNDKAdapterHandler` | stops the CM and CQ threads; `rdma_destroy_event_channel`, `ibv_destroy_comp_channel` when the last child goes |
//! | `NdkQueryExtension` | not supported (`STATUS_NOT_SUPPORTED`): the counters extension is the soft provider's |
//! | `NdkQueryAdapterInfo` | from `ibv_query_device` / `ibv_query_port` (see [`VerbsAdapter`]); inline size probed with a scratch QP |
//! | `NdkCreateCq` / `NdkCloseCq` | `ibv_create_cq` on the adapter's completion channel / `ibv_destroy_cq` |
//! | `NdkResizeCq` | `ibv_resize_cq` (`STATUS_NOT_SUPPORTED` where the device refuses; `CQ_RESIZE_SUPPORTED` not advertised) |
//! | `NdkArmCq` | `ibv_req_notify_cq` (`solicited_only` for `NDK_CQ_NOTIFY_SOLICITED`), then one completion polled ahead into the CQ's buffer: one of the armed kind there fires at once (§7.4), once per arm; `NDK_CQ_NOTIFY_ERRORS` arms nothing: CQ errors are async events, always delivered (`IBV_EVENT_CQ_ERR` → `STATUS_BUFFER_OVERFLOW`, `IBV_EVENT_DEVICE_FATAL` → `STATUS_INTERNAL_ERROR`), and fail the CQ and its QPs' posts |
//! | `NdkGetCqResults`, `NdkGetCqResultsEx` | the CQ's buffer first, then `ibv_poll_cq` (through `ops.poll_cq`; nothing after an overflow); an error completion puts its QP in error for posts |
//! | `NdkControlCqInterruptModeration` | not supported: user verbs have no standard moderation call (`ibv_modify_cq` is device-specific) |
//! | `NdkCreatePd` / `NdkClosePd` | `ibv_alloc_pd` / `ibv_dealloc_pd` |
//! | `NdkCreateMr` / `NdkCloseMr` | an empty region (user verbs register in one call) |
//! | `NdkRegisterMr` / `NdkDeregisterMr` | `ibv_reg_mr` / `ibv_dereg_mr` |
//! | `NdkGetLocalTokenFromMr` / `NdkGetRemoteTokenFromMr` | `lkey` / `rkey` |
//! | `NdkInitializeFastRegisterMr`, `NdkFastRegister` | not supported: fast registration takes adapter page lists (LAMs), a kernel-verbs concept; `FRMRPageCount` 0 says so |
//! | `NdkBuildLAM` / `NdkReleaseLAM` | not supported: user space has no adapter logical addresses |
//! | `NdkGetPrivilegedMemoryRegionToken` | token 0, which no SGE may use: there is no privileged lkey in user verbs (`reserved_lkey` is kernel-only) |
//! | `NdkCreateMw`, `NdkCloseMw` | `ibv_alloc_mw(IBV_MW_TYPE_2)` / `ibv_dealloc_mw`, where the device binds type 2 windows (`MaxWindowSize` ≠ 0: rxe, most RoCE and InfiniBand RNICs); else `STATUS_NOT_SUPPORTED` (siw has no windows). Every MR is then registered with `IBV_ACCESS_MW_BIND` |
//! | `NdkBind` | `IBV_WR_BIND_MW` on the initiator queue with the window's next key (`ibv_inc_rkey`), checked first as the NDK does: range inside the MR (`STATUS_INVALID_PARAMETER`), remote write needs local write on the MR (`STATUS_ACCESS_VIOLATION`); completion `NdkOperationTypeBind` |
//! | `NdkGetRemoteTokenFromMw` | the rkey of the latest bind posted (valid when `NdkBind` returns) |
//! | `NdkInvalidate` | a window: `IBV_WR_LOCAL_INV` of its rkey (completion `NdkOperationTypeInvalidate`); an MR: `STATUS_NOT_SUPPORTED` (fast-registered MRs are kernel verbs only) |
//! | `NdkCreateSrq` / `NdkModifySrq` / `NdkSrqReceive` / `NdkCloseSrq` | `ibv_create_srq` / `ibv_modify_srq` (`max_wr`, `srq_limit`) / `ops.post_srq_recv` / `ibv_destroy_srq`; the notify threshold is `srq_limit` (armed by create and by `modify`) |
//! | `NdkCreateQp` / `NdkCreateQpWithSrq` / `NdkCloseQp` | `ibv_create_qp` (RC, `sq_sig_all = 0`), then INIT with `rdma_init_qp_attr`'s attributes for the adapter's address and remote access granted (receives may precede the connection) / `ibv_destroy_qp` |
//! | `NdkFlush` | `ibv_modify_qp` to ERR: everything outstanding completes `IBV_WC_WR_FLUSH_ERR` → `STATUS_CANCELLED` in posting order per queue; later posts fail `STATUS_CONNECTION_INVALID` |
//! | `NdkSend` / `NdkSendAndInvalidate` | `IBV_WR_SEND` / `IBV_WR_SEND_WITH_INV` through `ops.post_send`, after the NDK's inline checks (`qp.rs`: flags, connection, SGE count, inline bytes, queue depth, tokens) |
//! | `NdkRead` / `NdkWrite` | `IBV_WR_RDMA_READ` / `IBV_WR_RDMA_WRITE`, same checks (a read's sink needs the sink right on iWARP); `NDK_OP_FLAG_READ_FENCE` is `IBV_SEND_FENCE`, left off reads on siw, which refuses fenced reads |
//! | `NdkReceive` | `ops.post_recv`, after the checks; on a QP in error (flushed, disconnected) not handed to the device (iWARP would never complete it) but completed `STATUS_CANCELLED` by the provider at the CQ's next poll, as on the soft provider |
//! | `NdkCreateConnector` / `NdkCloseConnector` | `rdma_create_id` (`RDMA_PS_TCP`) on connect / `rdma_disconnect`, `rdma_destroy_id` |
//! | `NdkConnect` | `rdma_resolve_addr`, `rdma_resolve_route`, the QP attached to the id and brought to INIT (`rdma_init_qp_attr`), `rdma_connect` (IRD/ORD as `responder_resources`/`initiator_depth`, private data); completes on `RDMA_CM_EVENT_ESTABLISHED` |
//! | `NdkCompleteConnect`, `NdkCompleteConnectEx` | nothing on the wire: librdmacm already sent the RTU (IB/RoCE) or the MPA exchange finished (iWARP); installs the disconnect callback |
//! | `NdkAccept`, `NdkAcceptEx` | `rdma_accept`; completes on `RDMA_CM_EVENT_ESTABLISHED` |
//! | `NdkReject` | `rdma_reject` with private data (the peer's connect fails `STATUS_CONNECTION_REFUSED`) |
//! | `NdkGetConnectionData` | the peer's private data and `responder_resources`/`initiator_depth` from its CM event |
//! | `NdkGetLocalAddress` / `NdkGetPeerAddress` | the CM id's `route.addr` |
//! | `NdkDisconnect` | `rdma_disconnect`, then the QP is flushed (§7.7); the peer's `RDMA_CM_EVENT_DISCONNECTED` runs its disconnect callback and puts its QP in error for posts |
//! | `NdkConnectWithSharedEndpoint`, `NdkCreateSharedEndpoint`, `NdkCloseSharedEndpoint` | not supported yet: rdma-cm binds one id per connection |
//! | `NdkCreateListener` / `NdkListen` / `NdkCloseListener` | `rdma_create_id`, `rdma_bind_addr`, `rdma_listen` / `rdma_destroy_id` |
//! | `NdkControlConnectEvents` | paused: incoming requests are rejected (`rdma_reject`) |
//! | `NdkCreateCompletion`, `NdkRequestCompletion`, `NdkCloseCompletion` | [`netdirect::Request`]: creates, registration and closes complete inline; connect, accept and disconnect complete from the CM thread |
//! | `NdkSrqNotificationCallback` | async events (`ibv_get_async_event`): `IBV_EVENT_SRQ_LIMIT_REACHED` → `STATUS_SUCCESS`, `IBV_EVENT_SRQ_ERR` → `STATUS_INTERNAL_ERROR` |
//! | `NdkCqNotificationCallback` | the completion channel's event (`ibv_get_cq_event`, `ibv_ack_cq_events`) |
//! | `NdkConnectEventCallback` / `NdkDisconnectEventCallback`, `NdkDisconnectEventCallbackEx` | `RDMA_CM_EVENT_CONNECT_REQUEST` / `RDMA_CM_EVENT_DISCONNECTED` |
//!
//! Rules a device cannot keep are declared, not hidden: the adapter answers netdirect's
//! deviations extension ([`netdirect::deviations`], through `NdkQueryExtension`) with
//! `no_solicited_notifications` on siw (it notifies a SOLICITED arm for send completions only,
//! and a work completion does not say whether a receive was solicited, so the provider cannot
//! emulate it), `peer_disconnect_flushes` on iWARP (below; a graceful close and a peer's
//! Terminate look alike through verbs, so the flush cannot be held back),
//! `no_terminate_detail` everywhere (verbs never shows the Terminate), and
//! `cq_overflow_beyond_depth` everywhere (devices round CQ sizes up). The conformance suite
//! skips or adapts by these.
//!
//! NDK rules the hardware enforces differently: the NDK's "a peer's disconnect does not flush
//! the QP" holds on IB and RoCE (the provider answers the DREQ without touching the QP), but an
//! iWARP RNIC moves the QP to error itself when the connection closes (seen on siw: receives
//! posted afterwards are never completed, earlier ones complete `STATUS_CANCELLED`); on IB and RoCE the peer's private data arrives
//! padded with zeros to the CM message's fixed size (56 octets on connect, 196 on accept; seen
//! on rxe), so `NdkGetConnectionData` reports that size, not the length the peer sent (iWARP
//! keeps the length); a Send with no receive posted at the peer is
//! retried (RNR, `rnr_retry_count` 7: forever) on InfiniBand and RoCE instead of terminating the
//! connection as iWARP does; an RDMA read sink needs remote-write access on iWARP (the read
//! response is a tagged write), so `MrFlags::RDMA_READ_SINK` registers with
//! `IBV_ACCESS_REMOTE_WRITE` there, and `RDMA_READ_SINK_NOT_REQUIRED` is advertised only on IB
//! and RoCE.
#![deny(unsafe_code)]

mod adapter;
mod cm;
mod cq;
mod device;
mod events;
mod ffi;
mod mr;
mod mw;
mod pd;
mod qp;
mod srq;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use netdirect::{Adapter, OpenParameters, Provider};
use netdirect_types::{RdmaTechnology, Status};

pub use adapter::VerbsAdapter;
pub use device::{DeviceLimits, DeviceReport, PortReport};

/// Why the verbs provider cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerbsError {
    /// A library could not be loaded (rdma-core is not installed).
    MissingLibrary {
        /// The file name that failed to load.
        library: String,
        /// The loader's reason.
        reason: String,
    },
    /// A library loaded but lacks an entry point this binding needs.
    MissingSymbol {
        /// The libraries searched.
        library: String,
        /// The entry point and the loader's reason.
        reason: String,
    },
    /// rdma-core is there but there is no RDMA device.
    NoDevice,
    /// No RDMA device serves this address.
    NoDeviceForAddress(IpAddr),
    /// An NDK status.
    Status(Status),
}

impl VerbsError {
    /// The NTSTATUS a `Provider::open_adapter` caller sees: `STATUS_NOT_SUPPORTED` for a
    /// missing library, `STATUS_INVALID_ADDRESS` when no device serves the address.
    pub fn status(&self) -> Status {
        match self {
            VerbsError::MissingLibrary { .. } | VerbsError::MissingSymbol { .. } => {
                Status::NOT_SUPPORTED
            }
            VerbsError::NoDevice | VerbsError::NoDeviceForAddress(_) => Status::INVALID_ADDRESS,
            VerbsError::Status(s) => *s,
        }
    }
}

impl fmt::Display for VerbsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerbsError::MissingLibrary { library, reason } => {
                write!(
                    f,
                    "verbs provider: cannot load {library} (is rdma-core installed?): {reason}"
                )
            }
            VerbsError::MissingSymbol { library, reason } => {
                write!(
                    f,
                    "verbs provider: {library} lacks an entry point: {reason}"
                )
            }
            VerbsError::NoDevice => f.write_str("verbs provider: no RDMA device exists"),
            VerbsError::NoDeviceForAddress(a) => {
                write!(f, "verbs provider: no RDMA device serves {a}")
            }
            VerbsError::Status(s) => write!(f, "verbs provider: {s}"),
        }
    }
}

impl std::error::Error for VerbsError {}

/// One RDMA device as `ibv_get_device_list` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The kernel device name (`siw0`, `rxe0`, `mlx5_0`).
    pub name: String,
    /// The transport, when the device says it without a port query (iWARP, or IB-family).
    pub iwarp: bool,
}

/// The `verbs` provider: adapters over rdma-core devices.
pub struct VerbsProvider {
    lib: Arc<ffi::Lib>,
}

impl fmt::Debug for VerbsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VerbsProvider")
    }
}

impl VerbsProvider {
    /// Loads libibverbs and librdmacm. Fails with [`VerbsError::MissingLibrary`] naming the
    /// library when rdma-core is not installed.
    pub fn new() -> Result<VerbsProvider, VerbsError> {
        let verbs = std::env::var("NETDIRECT_VERBS_LIBIBVERBS");
        let cm = std::env::var("NETDIRECT_VERBS_LIBRDMACM");
        Self::with_libraries(
            verbs.as_deref().unwrap_or(ffi::LIBIBVERBS),
            cm.as_deref().unwrap_or(ffi::LIBRDMACM),
        )
    }

    /// [`VerbsProvider::new`] with explicit library file names (for a non-standard install,
    /// and the seam the tests use to see the missing-library path).
    pub fn with_libraries(libibverbs: &str, librdmacm: &str) -> Result<VerbsProvider, VerbsError> {
        let lib = ffi::Lib::load(libibverbs, librdmacm).map_err(|e| match e {
            ffi::LoadFailure::Missing { library, reason } => {
                VerbsError::MissingLibrary { library, reason }
            }
            ffi::LoadFailure::Symbol { library, reason } => {
                VerbsError::MissingSymbol { library, reason }
            }
        })?;
        Ok(VerbsProvider { lib: Arc::new(lib) })
    }

    /// The RDMA devices; [`VerbsError::NoDevice`] when there are none.
    pub fn devices(&self) -> Result<Vec<DeviceInfo>, VerbsError> {
        let list = self.lib.device_names();
        if list.is_empty() {
            return Err(VerbsError::NoDevice);
        }
        Ok(list
            .into_iter()
            .map(|(name, t)| DeviceInfo {
                name,
                iwarp: t == ffi::IBV_TRANSPORT_IWARP,
            })
            .collect())
    }

    /// Every RDMA device with its ports (state, link layer, GIDs), limits, and which of
    /// `addresses` rdma-cm maps to each port (where an adapter can be opened);
    /// [`VerbsError::NoDevice`] when there is none.
    pub fn device_reports(&self, addresses: &[IpAddr]) -> Result<Vec<DeviceReport>, VerbsError> {
        device::reports(&self.lib, addresses)
    }

    /// Opens an adapter on the device serving `params.address`, with the reason on failure.
    pub fn open(&self, params: OpenParameters) -> Result<VerbsAdapter, VerbsError> {
        adapter::open(&self.lib, params)
    }
}

impl Provider for VerbsProvider {
    fn name(&self) -> &str {
        "verbs"
    }

    fn open_adapter(&self, params: OpenParameters) -> Result<Box<dyn Adapter>, Status> {
        self.open(params)
            .map(|a| Box::new(a) as Box<dyn Adapter>)
            .map_err(|e| e.status())
    }
}

/// The transport of a device port: iWARP from the device, else InfiniBand or RoCE from the
/// port's link layer (RoCE through rdma-cm with IP addresses is RoCEv2 where the device has
/// RoCEv2 GIDs, which every current device does).
pub(crate) fn technology(transport: i32, link_layer: u8) -> RdmaTechnology {
    match (transport, link_layer) {
        (ffi::IBV_TRANSPORT_IWARP, _) => RdmaTechnology::IWarp,
        (ffi::IBV_TRANSPORT_IB, ffi::IBV_LINK_LAYER_ETHERNET) => RdmaTechnology::RoCEv2,
        (ffi::IBV_TRANSPORT_IB, ffi::IBV_LINK_LAYER_INFINIBAND) => RdmaTechnology::InfiniBand,
        _ => RdmaTechnology::Undefined,
    }
}

/// Maps an errno from rdma-core to an NTSTATUS.
pub(crate) fn errno_status(e: i32) -> Status {
    match e.abs() {
        libc::ENOMEM | libc::ENOSPC | libc::EAGAIN => Status::INSUFFICIENT_RESOURCES,
        libc::EINVAL => Status::INVALID_PARAMETER,
        libc::EOPNOTSUPP | libc::ENOSYS => Status::NOT_SUPPORTED,
        libc::EADDRINUSE => Status::ADDRESS_ALREADY_EXISTS,
        libc::EADDRNOTAVAIL | libc::ENODEV => Status::INVALID_ADDRESS,
        libc::ETIMEDOUT => Status::IO_TIMEOUT,
        libc::ECONNREFUSED => Status::CONNECTION_REFUSED,
        libc::ECONNRESET => Status::CONNECTION_RESET,
        libc::ENETUNREACH => Status::NETWORK_UNREACHABLE,
        libc::EHOSTUNREACH => Status::HOST_UNREACHABLE,
        libc::EACCES | libc::EPERM | libc::EFAULT => Status::ACCESS_VIOLATION,
        _ => Status::UNSUCCESSFUL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without rdma-core (here: library names that do not exist) the provider
    /// fails to open with a message naming the library.
    #[test]
    fn missing_library_is_named() {
        let e = VerbsProvider::with_libraries("libibverbs-missing.so.1", ffi::LIBRDMACM)
            .expect_err("a missing library fails");
        assert!(
            matches!(e, VerbsError::MissingLibrary { ref library, .. } if library == "libibverbs-missing.so.1"),
            "{e:?}"
        );
        assert_eq!(e.status(), Status::NOT_SUPPORTED);
        assert!(
            e.to_string()
                .contains("cannot load libibverbs-missing.so.1"),
            "{e}"
        );
        let e = VerbsProvider::with_libraries(ffi::LIBIBVERBS, "librdmacm-missing.so.1")
            .expect_err("a missing library fails");
        // Without rdma-core at all, libibverbs (loaded first) is the one named.
        assert!(e.to_string().contains(".so.1"), "{e}");
        if VerbsProvider::with_libraries(ffi::LIBIBVERBS, ffi::LIBRDMACM).is_ok() {
            assert!(e.to_string().contains("librdmacm-missing.so.1"), "{e}");
        }
    }

    /// With the libraries but no device (this host), `devices` and `open` say so.
    #[test]
    fn no_device_is_reported() {
        let provider = VerbsProvider::with_libraries(ffi::LIBIBVERBS, ffi::LIBRDMACM);
        let Ok(provider) = provider else {
            assert!(
                std::env::var_os("ND_TEST_REQUIRE_TOOLS").is_none(),
                "rdma-core (libibverbs1, librdmacm1) is not installed and ND_TEST_REQUIRE_TOOLS is set"
            );
            eprintln!("rdma-core not installed here: the missing-library test covers this host");
            return;
        };
        match provider.devices() {
            Err(e) => {
                assert_eq!(e, VerbsError::NoDevice);
                assert_eq!(e.to_string(), "verbs provider: no RDMA device exists");
                let open = provider.open(OpenParameters {
                    address: "127.0.0.1".parse().unwrap(),
                    version: netdirect_types::Version::V2_1,
                });
                assert_eq!(open.err(), Some(VerbsError::NoDevice));
                let status = provider
                    .open_adapter(OpenParameters {
                        address: "::1".parse().unwrap(),
                        version: netdirect_types::Version::V2_1,
                    })
                    .err();
                assert_eq!(status, Some(Status::INVALID_ADDRESS));
            }
            Ok(devices) => eprintln!("this machine has RDMA devices: {devices:?}"),
        }
    }

    /// Every NDK entry point and callback netdirect maps has a row in the crate docs' table.
    #[test]
    fn every_ndk_entry_point_has_a_row() {
        let rows: Vec<&str> = include_str!("lib.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! | "))
            .map(|l| l.split(" | ").next().unwrap_or(""))
            .collect();
        let mut missing = Vec::new();
        for (ndk, _) in netdirect::NDK_ENTRY_POINTS {
            let name = ndk.split(' ').next().unwrap_or(ndk);
            let found = rows
                .iter()
                .any(|cell| cell.split(['`', ',', '/', ' ']).any(|w| w == name));
            if !found {
                missing.push(*ndk);
            }
        }
        assert!(
            missing.is_empty(),
            "no row in the verbs mapping table: {missing:?}"
        );
    }

    #[test]
    fn technology_from_transport_and_link_layer() {
        assert_eq!(
            technology(ffi::IBV_TRANSPORT_IWARP, 0),
            RdmaTechnology::IWarp
        );
        assert_eq!(technology(ffi::IBV_TRANSPORT_IB, 2), RdmaTechnology::RoCEv2);
        assert_eq!(
            technology(ffi::IBV_TRANSPORT_IB, 1),
            RdmaTechnology::InfiniBand
        );
        assert_eq!(technology(4, 0), RdmaTechnology::Undefined);
    }
}
