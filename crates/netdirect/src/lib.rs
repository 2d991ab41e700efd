//! The Network Direct (NDK) object model for Rust.
//!
//! Consumers program against the traits here; providers implement them. The traits mirror the
//! NDK's dispatch tables one to one — `NdkCreateQp` is [`Pd::create_qp`], `NdkFastRegister` is
//! [`QpInitiator::fast_register`] — and each carries `#[doc(alias)]` with its NDK name, so the
//! documentation search finds `NdkFastRegister` too. The full mapping is the table below,
//! [`NDK_ENTRY_POINTS`]; a test fails if an NDK entry point or callback has no Rust item.
//!
//! # Start here
//!
//! This crate is the interface; a **provider** implements it. Open an adapter from one:
//!
//! * `netdirect_soft::SoftProvider` (crate `netdirect-soft`, provider name `soft`): the software
//!   iWARP RNIC, on any Linux machine, IPv4 and IPv6, interoperable with Linux siw.
//!
//! ```ignore
//! use netdirect::{OpenParameters, Provider};
//! let adapter = netdirect_soft::SoftProvider::new().open_adapter(OpenParameters {
//!     address: "127.0.0.1".parse()?,
//!     version: netdirect::types::Version::V2_1,
//! })?;
//! let pd = adapter.create_pd().wait()?; // NdkCreatePd
//! ```
//!
//! Then: a CQ ([`Adapter::create_cq`]), a QP ([`Pd::create_qp`]), memory ([`Buffer`],
//! [`Pd::create_mr`], [`Mr::register`]), a connection ([`connector`] has the order of calls as a
//! sequence diagram), work ([`QpInitiator`], [`QpReceiver`]) and completions
//! ([`Cq::get_results_ex`]). The soft provider's `examples/hello.rs` does all of it in one file.
//!
//! # How the NDK maps to Rust
//!
//! * **Objects** are trait objects owned by the consumer: `Box<dyn Cq>`, `Box<dyn Qp>`, …
//!   Creates return the object, closes consume it ([`Cq::close`]). Dropping an object is a close
//!   nobody waits for: a provider releases on drop what the close releases (an early return on
//!   an error path must not leave a connection open or memory registered). Passing an object to
//!   another call (a PD to create a QP) borrows it; a provider accepts only its own objects of
//!   the same adapter (`STATUS_INVALID_PARAMETER` otherwise).
//! * **`STATUS_PENDING` and completion callbacks** are a [`Request<T>`]: completed before the
//!   call returns (the inline case) or later by the provider; wait for it or give it a callback.
//! * **Serialization rules are borrows.** Posting takes `&mut` on its queue ([`QpInitiator`],
//!   [`QpReceiver`], [`Srq::receive`]); a QP splits into its two queues, which may move to
//!   different threads; [`Cq::get_results`] and [`Cq::arm`] take `&mut Cq`; flush and close take
//!   `&self`/`self`.
//! * **Memory** is a [`Buffer`], shared by the region registered over it and by every request in
//!   flight that touches it: dropping a handle never frees memory a provider still uses.
//!   SGEs are [`netdirect_types::Sge`]s with addresses inside a registered buffer.
//! * **Statuses** are [`netdirect_types::Status`] (NTSTATUS, same names and values as Windows).
//! * **Addresses** are [`std::net::SocketAddr`] (IPv4 and IPv6) instead of `SOCKADDR` + length,
//!   so `STATUS_BUFFER_TOO_SMALL` on address getters cannot happen.
//! * **Providers** are chosen by name from a [`Registry`]; there is no default.
//! * **Extensions** (`NdkQueryExtension`, [`Object::query_extension`]): netdirect defines two,
//!   the counters ([`counters`]: `NDIS_NDK_PERFORMANCE_COUNTERS` and the iWARP detail, per
//!   adapter and per QP), and an adapter's [`deviations`] from NDK rules its device cannot keep.
//!
//! # NDK entry points and callbacks
//!
//! The table is [`NDK_ENTRY_POINTS`]: every NDK entry point of spec §3.1 and consumer callback
//! of §4, with the Rust item that implements it.
//!
//! # Threading
//!
//! Every object is `Send + Sync`; the provider documents which thread runs callbacks (they must
//! not block). This crate holds no threads and takes no locks except inside [`Buffer`] and
//! [`Request`].
#![deny(unsafe_code)]

pub mod adapter;
pub mod callbacks;
pub mod connector;
pub mod counters;
pub mod cq;
pub mod cq_waker;
pub mod deviations;
pub mod listener;
pub mod memory;
pub mod mr;
pub mod mw;
pub mod object;
pub mod pd;
pub mod qp;
pub mod registry;
pub mod request;
pub mod shared_endpoint;
pub mod srq;

pub use adapter::{Adapter, Affinity, Lam};
pub use callbacks::{
    ConnectEvent, CqNotification, DisconnectEvent, DisconnectEventEx, SrqNotification,
};
pub use connector::{ConnectionData, Connector};
pub use cq::Cq;
pub use cq_waker::{Completions, CqWaker};
pub use listener::Listener;
pub use memory::Buffer;
pub use mr::Mr;
pub use mw::Mw;
pub use object::{Extension, Guid, Object};
pub use pd::{Pd, QpConfig, QpWithSrqConfig, SrqConfig};
pub use qp::{InvalidateTarget, Qp, QpInitiator, QpReceiver};
pub use registry::{OpenParameters, Provider, Registry};
pub use request::{Completer, Request, WATCH_PERIOD, WaitError};
pub use shared_endpoint::SharedEndpoint;
pub use srq::Srq;

pub use netdirect_types as types;

macro_rules! ndk_map {
    ($($ndk:literal => $kind:ident $tr:ident $(. $m:ident)?;)*) => {
        /// Every NDK entry point (spec §3.1) and consumer callback (§4), with the Rust item that
        /// implements it. The items are named in code too, so the table cannot name something
        /// that does not exist, and a test checks that the spec has no name missing here.
        ///
        #[doc = concat!("| NDK | Rust |\n|---|---|\n", $("| `", $ndk, "` | [`", stringify!($tr) $(, "::", stringify!($m))?, "`] |\n",)*)]
        pub const NDK_ENTRY_POINTS: &[(&str, &str)] = &[
            $(($ndk, concat!(stringify!($tr) $(, "::", stringify!($m))?)),)*
        ];

        #[allow(dead_code, clippy::let_underscore_untyped)]
        fn ndk_items_exist() {
            $(ndk_map!(@item $kind $tr $(. $m)?);)*
        }
    };
    (@item method $tr:ident . $m:ident) => { let _ = <dyn $tr as $tr>::$m; };
    (@item object $tr:ident . $m:ident) => { let _ = <dyn $tr as Object>::$m; };
    (@item type Request) => { let _ = std::any::type_name::<Request<()>>(); };
    (@item type $tr:ident) => { let _ = std::any::type_name::<$tr>(); };
}

ndk_map! {
    "OpenNDKAdapterHandler" => method Provider.open_adapter;
    "CloseNDKAdapterHandler" => method Adapter.close;
    "NdkQueryExtension" => method Object.query_extension;
    "NdkClosePd" => method Pd.close;
    "NdkCloseCq" => method Cq.close;
    "NdkCloseSrq" => method Srq.close;
    "NdkCloseQp" => method Qp.close;
    "NdkCloseMr" => method Mr.close;
    "NdkCloseMw" => method Mw.close;
    "NdkCloseConnector" => method Connector.close;
    "NdkCloseListener" => method Listener.close;
    "NdkCloseSharedEndpoint" => method SharedEndpoint.close;
    "NdkQueryAdapterInfo" => method Adapter.query_info;
    "NdkCreateCq" => method Adapter.create_cq;
    "NdkCreatePd" => method Adapter.create_pd;
    "NdkCreateSharedEndpoint" => method Adapter.create_shared_endpoint;
    "NdkCreateConnector" => method Adapter.create_connector;
    "NdkCreateListener" => method Adapter.create_listener;
    "NdkBuildLAM" => method Adapter.build_lam;
    "NdkReleaseLAM" => method Adapter.release_lam;
    "NdkCreateMr" => method Pd.create_mr;
    "NdkCreateMw" => method Pd.create_mw;
    "NdkCreateSrq" => method Pd.create_srq;
    "NdkCreateQp" => method Pd.create_qp;
    "NdkCreateQpWithSrq" => method Pd.create_qp_with_srq;
    "NdkGetPrivilegedMemoryRegionToken" => method Pd.privileged_token;
    "NdkResizeCq" => method Cq.resize;
    "NdkArmCq" => method Cq.arm;
    "NdkGetCqResults" => method Cq.get_results;
    "NdkControlCqInterruptModeration" => method Cq.control_interrupt_moderation;
    "NdkGetCqResultsEx" => method Cq.get_results_ex;
    "NdkModifySrq" => method Srq.modify;
    "NdkSrqReceive" => method Srq.receive;
    "NdkFlush" => method Qp.flush;
    "NdkSend" => method QpInitiator.send;
    "NdkReceive" => method QpReceiver.receive;
    "NdkBind" => method QpInitiator.bind;
    "NdkFastRegister" => method QpInitiator.fast_register;
    "NdkInvalidate" => method QpInitiator.invalidate;
    "NdkRead" => method QpInitiator.read;
    "NdkWrite" => method QpInitiator.write;
    "NdkSendAndInvalidate" => method QpInitiator.send_and_invalidate;
    "NdkRegisterMr" => method Mr.register;
    "NdkDeregisterMr" => method Mr.deregister;
    "NdkInitializeFastRegisterMr" => method Mr.initialize_fast_register;
    "NdkGetRemoteTokenFromMr" => method Mr.remote_token;
    "NdkGetLocalTokenFromMr" => method Mr.local_token;
    "NdkGetRemoteTokenFromMw" => method Mw.remote_token;
    "NdkConnect" => method Connector.connect;
    "NdkConnectWithSharedEndpoint" => method Connector.connect_with_shared_endpoint;
    "NdkCompleteConnect" => method Connector.complete_connect;
    "NdkAccept" => method Connector.accept;
    "NdkReject" => method Connector.reject;
    "NdkGetConnectionData" => method Connector.connection_data;
    "NdkGetLocalAddress (Connector)" => method Connector.local_address;
    "NdkGetPeerAddress" => method Connector.peer_address;
    "NdkDisconnect" => method Connector.disconnect;
    "NdkCompleteConnectEx" => method Connector.complete_connect_ex;
    "NdkAcceptEx" => method Connector.accept_ex;
    "NdkListen" => method Listener.listen;
    "NdkGetLocalAddress (Listener)" => method Listener.local_address;
    "NdkControlConnectEvents" => method Listener.control_connect_events;
    "NdkGetLocalAddress (Shared endpoint)" => method SharedEndpoint.local_address;
    "NdkCreateCompletion" => type Request;
    "NdkCloseCompletion" => type Request;
    "NdkRequestCompletion" => type Request;
    "NdkCqNotificationCallback" => type CqNotification;
    "NdkSrqNotificationCallback" => type SrqNotification;
    "NdkConnectEventCallback" => type ConnectEvent;
    "NdkDisconnectEventCallback" => type DisconnectEvent;
    "NdkDisconnectEventCallbackEx" => type DisconnectEventEx;
}
