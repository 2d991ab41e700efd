//! Where a provider cannot keep an NDK rule on its device, declared through the NDK's extension
//! mechanism: [`DEVIATIONS_GUID`] asked of an adapter (`NdkQueryExtension`) answers a
//! [`Deviations`]. A provider that keeps every rule answers `STATUS_NOT_SUPPORTED` (the
//! default of [`crate::Object::query_extension`]), which means [`Deviations::NONE`].
//!
//! `NDK_ADAPTER_INFO` has no flag for these: they are behaviours of a device under another
//! programming model (user verbs), not capabilities the NDK names. Consumers (and the
//! conformance suite, which skips or adapts by them, never by provider name) read them with
//! [`deviations`].
//!
//! ```ignore
//! let d = netdirect::deviations::deviations(&*adapter);
//! if d.peer_disconnect_flushes { /* completions may arrive before our disconnect */ }
//! ```

use netdirect_types::Version;

use crate::{Adapter, Guid};

/// The extension's GUID ("netdirect" + "deviat").
pub const DEVIATIONS_GUID: Guid = Guid([
    0x6e, 0x65, 0x74, 0x64, 0x69, 0x72, 0x65, 0x63, 0x74, 0x00, 0x64, 0x65, 0x76, 0x69, 0x61, 0x74,
]);

/// The extension's version.
pub const DEVIATIONS_VERSION: Version = Version::new(1, 0);

/// The NDK rules an adapter does not keep (each `false` for a provider that keeps them all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deviations {
    /// A SOLICITED arm (§7.4) does not fire for a solicited receive: the device notifies
    /// solicited arms only for send-queue completions (Linux siw).
    pub no_solicited_notifications: bool,
    /// A peer's disconnect flushes the QP (§7.7 says it must not): an iWARP device behind
    /// verbs moves the QP to error when the connection closes, and a graceful close cannot
    /// be told from a peer's Terminate there, so the provider cannot hold the flush back.
    pub peer_disconnect_flushes: bool,
    /// Completions carry no Terminate detail: `ProviderErrorCode` is not the Terminate's
    /// code, and a request the peer's Terminate names does not get the Terminate's status
    /// (§10 row 2): it is cancelled like the rest, or, caught while being sent, fails
    /// `STATUS_CONNECTION_ABORTED`.
    pub no_terminate_detail: bool,
    /// A CQ may hold more entries than its depth (the device rounds the size up), so an
    /// overflow (§7.3) is seen only once the device's CQ is full.
    pub cq_overflow_beyond_depth: bool,
}

impl Deviations {
    /// A provider that keeps every rule.
    pub const NONE: Deviations = Deviations {
        no_solicited_notifications: false,
        peer_disconnect_flushes: false,
        no_terminate_detail: false,
        cq_overflow_beyond_depth: false,
    };
}

/// The adapter's deviations ([`Deviations::NONE`] when it answers the extension with anything
/// but a [`Deviations`]).
pub fn deviations(adapter: &dyn Adapter) -> Deviations {
    adapter
        .query_extension(&DEVIATIONS_GUID, DEVIATIONS_VERSION)
        .ok()
        .and_then(|e| e.dispatch.downcast_ref::<Deviations>().copied())
        .unwrap_or(Deviations::NONE)
}
