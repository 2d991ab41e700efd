//! The memory region (`NDK_MR`).

use netdirect_types::{LocalToken, MrFlags, RemoteToken};

use crate::{Buffer, Object, Request};

/// A memory region: registered over a [`Buffer`] range ([`Mr::register`]) or prepared for fast
/// registration ([`Mr::initialize_fast_register`] then `QpInitiator::fast_register`),
/// depending on how it was created.
pub trait Mr: Object {
    /// Registers `length` octets of `buffer` from `offset` with `flags`. The region's base
    /// address is `buffer.address() + offset`; SGEs and remote accesses use addresses from there.
    /// The region keeps the buffer alive.
    #[doc(alias = "NdkRegisterMr")]
    fn register(
        &self,
        buffer: &Buffer,
        offset: usize,
        length: usize,
        flags: MrFlags,
    ) -> Request<()>;

    /// Revokes the registration.
    #[doc(alias = "NdkDeregisterMr")]
    fn deregister(&self) -> Request<()>;

    /// Prepares a fast-register region for up to `page_count` pages; `remote_access` must be
    /// set if any fast registration will grant remote rights.
    #[doc(alias = "NdkInitializeFastRegisterMr")]
    fn initialize_fast_register(&self, page_count: u32, remote_access: bool) -> Request<()>;

    /// The token for local SGEs.
    #[doc(alias = "NdkGetLocalTokenFromMr")]
    fn local_token(&self) -> LocalToken;

    /// The token the peer uses for RDMA read and write (for fast-register regions: read it after
    /// `fast_register` returns).
    #[doc(alias = "NdkGetRemoteTokenFromMr")]
    fn remote_token(&self) -> RemoteToken;

    /// Closes the region (pending while windows are bound to it).
    #[doc(alias = "NdkCloseMr")]
    fn close(self: Box<Self>) -> Request<()>;
}
