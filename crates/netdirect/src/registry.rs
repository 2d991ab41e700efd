//! Providers and the registry consumers choose them from.
//!
//! There is no default provider: a consumer names the one it wants (a CLI flag, a config
//! value), and opens an adapter by local address.

use std::net::IpAddr;
use std::sync::Arc;

use netdirect_types::{Status, Version};

use crate::Adapter;

/// Parameters of [`Provider::open_adapter`] (`NDIS_OPEN_NDK_ADAPTER_PARAMETERS`).
#[doc(alias = "NDIS_OPEN_NDK_ADAPTER_PARAMETERS")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenParameters {
    /// The local address the adapter serves.
    pub address: IpAddr,
    /// The NDK version asked for: the major and the lowest acceptable minor.
    pub version: Version,
}

/// An RDMA provider: something that can open adapters.
pub trait Provider: Send + Sync {
    /// The provider's name in a [`Registry`].
    fn name(&self) -> &str;

    /// Opens an adapter on a local address. `NDIS_STATUS_BAD_VERSION` when the version cannot
    /// be served, `STATUS_INVALID_ADDRESS` when the address is not one of this machine's.
    #[doc(alias = "OpenNDKAdapterHandler")]
    #[doc(alias = "NdkOpenAdapter")]
    fn open_adapter(&self, params: OpenParameters) -> Result<Box<dyn Adapter>, Status>;
}

/// The providers a program knows, by name.
///
/// ```
/// use netdirect::{Registry, OpenParameters};
/// let registry = Registry::new();
/// assert!(registry.names().is_empty());
/// let err = registry.open_adapter("nope", OpenParameters {
///     address: "127.0.0.1".parse().unwrap(),
///     version: netdirect_types::Version::V1_2,
/// });
/// assert_eq!(err.err(), Some(netdirect_types::Status::NOT_SUPPORTED));
/// ```
#[derive(Default, Clone)]
pub struct Registry {
    providers: Vec<Arc<dyn Provider>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a provider; `STATUS_SHARING_VIOLATION` if one with the same name is there.
    pub fn register(&mut self, provider: Arc<dyn Provider>) -> Result<(), Status> {
        if self.get(provider.name()).is_some() {
            return Err(Status::SHARING_VIOLATION);
        }
        self.providers.push(provider);
        Ok(())
    }

    /// The provider called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Provider>> {
        self.providers.iter().find(|p| p.name() == name).cloned()
    }

    /// The names of all providers, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.providers.iter().map(|p| p.name()).collect()
    }

    /// Opens an adapter of provider `name`; `STATUS_NOT_SUPPORTED` if there is no such
    /// provider.
    pub fn open_adapter(
        &self,
        name: &str,
        params: OpenParameters,
    ) -> Result<Box<dyn Adapter>, Status> {
        self.get(name)
            .ok_or(Status::NOT_SUPPORTED)?
            .open_adapter(params)
    }
}
