//! The memory window (`NDK_MW`).

use netdirect_types::RemoteToken;

use crate::{Object, Request};

/// A memory window: bound to part of a region by `QpInitiator::bind`, revoked by
/// `QpInitiator::invalidate`.
pub trait Mw: Object {
    /// The window's remote token, valid once `bind` has returned.
    #[doc(alias = "NdkGetRemoteTokenFromMw")]
    fn remote_token(&self) -> RemoteToken;

    /// Closes the window.
    #[doc(alias = "NdkCloseMw")]
    fn close(self: Box<Self>) -> Request<()>;
}
