//! The NDK objects of the software RNIC: the glue between the object model (`netdirect`), the
//! memory table, the completion and receive queues, and the transport.
//!
//! # Objects crossing the API
//!
//! Every object a consumer passes into a call (a CQ to create a QP, an MR to bind a window, a
//! QP to connect) goes through `ours` (or `ours_in` where the PD matters): it is accepted
//! only if it is this provider's object of the expected type **and** belongs to the calling
//! object's adapter (`AdapterId`, unique in the process), else `STATUS_INVALID_PARAMETER`.
//! Handles inside an adapter (memory-table ids, queue rings) are meaningless in another
//! adapter, so nothing may reach them without this check.
//!
//! Every object type implements [`netdirect::Object`] through `soft_object!`, which also
//! gives it its adapter for `ours`.
//!
//! # Dropping is closing
//!
//! Every object's `Drop` releases what its close releases (§10 table, row 29), so an early
//! return that drops objects leaves no connection open and no memory registered: a connector or
//! the last handle of a QP disconnects, an MR's token dies before its drop returns, a window
//! unbinds, a CQ or SRQ closes. Both go through one private, idempotent `release` per object,
//! which for an antecedent is its [`lifetime`] close: a dropped CQ, SRQ, PD, listener or shared
//! endpoint still waits for its successors (§10 table, row 30) before it lets go.

use std::sync::atomic::{AtomicU64, Ordering};

use netdirect::Object;
use netdirect_types::Status;

use crate::memory::PdId;

pub mod adapter;
pub mod answers;
pub mod connector;
pub mod cq;
pub mod lifetime;
pub mod limits;
pub mod listener;
pub mod mr;
pub mod mw;
pub mod pd;
pub mod ports;
pub mod qp;
pub mod shared_endpoint;
pub mod srq;

/// An adapter's identity, unique in the process (never reused), carried by every object of
/// the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct AdapterId(pub(crate) u64);

impl AdapterId {
    /// A new identity.
    pub(crate) fn next() -> AdapterId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        AdapterId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// An NDK object of this provider: its type, and the adapter it belongs to.
pub(crate) trait SoftObject: Object + Sized {
    /// The adapter the object belongs to.
    fn adapter(&self) -> AdapterId;
}

/// An object that lives in a protection domain and is passed into calls (MR, MW, SRQ).
pub(crate) trait InPd: SoftObject {
    /// The object's PD.
    fn pd(&self) -> PdId;
}

/// `object` as our `T`, if it is one (type) and belongs to `adapter`; else
/// `STATUS_INVALID_PARAMETER`. The one gate for objects crossing the API.
pub(crate) fn ours<T: SoftObject>(adapter: AdapterId, object: &dyn Object) -> Result<&T, Status> {
    object
        .as_any()
        .downcast_ref::<T>()
        .filter(|o| o.adapter() == adapter)
        .ok_or(Status::INVALID_PARAMETER)
}

/// [`ours`], and in `pd` too (§10 table: an MR, MW or SRQ of another PD than the QP's is
/// `STATUS_INVALID_PARAMETER`).
pub(crate) fn ours_in<T: InPd>(
    adapter: AdapterId,
    pd: PdId,
    object: &dyn Object,
) -> Result<&T, Status> {
    ours::<T>(adapter, object)
        .ok()
        .filter(|o| o.pd() == pd)
        .ok_or(Status::INVALID_PARAMETER)
}

/// Implements [`netdirect::Object`] and [`SoftObject`] for an object type:
/// `soft_object!(SoftMr, Mr, |mr| mr.shared.id)` (the closure names the object's adapter).
macro_rules! soft_object {
    (@adapter $ty:ty, |$this:ident| $adapter:expr) => {
        impl $crate::objects::SoftObject for $ty {
            fn adapter(&self) -> $crate::objects::AdapterId {
                let $this = self;
                $adapter
            }
        }
    };
    ($ty:ty, $kind:ident, |$this:ident| $adapter:expr) => {
        impl ::netdirect::Object for $ty {
            fn object_type(&self) -> ::netdirect_types::ObjectType {
                ::netdirect_types::ObjectType::$kind
            }

            fn as_any(&self) -> &dyn ::std::any::Any {
                self
            }
        }
        $crate::objects::soft_object!(@adapter $ty, |$this| $adapter);
    };
    ($ty:ty, $kind:ident, |$this:ident| $adapter:expr, extension: $ext:path) => {
        impl ::netdirect::Object for $ty {
            fn object_type(&self) -> ::netdirect_types::ObjectType {
                ::netdirect_types::ObjectType::$kind
            }

            fn as_any(&self) -> &dyn ::std::any::Any {
                self
            }

            fn query_extension(
                &self,
                id: &::netdirect::Guid,
                version: ::netdirect_types::Version,
            ) -> ::std::result::Result<::netdirect::Extension, ::netdirect_types::Status> {
                $ext(self, id, version)
            }
        }
        $crate::objects::soft_object!(@adapter $ty, |$this| $adapter);
    };
}
pub(crate) use soft_object;
