//! The providers `nd` can run over, chosen by name (`--provider soft|verbs`, default `soft`):
//! the one place the CLI (and `ndk-conformance`) turns a name into a [`Provider`].
//!
//! * `soft` — netdirect's software iWARP RNIC (`netdirect-soft`), with this process's MPA and
//!   engine flags ([`crate::conn::mpa_args`], [`crate::conn::provider_args`]).
//! * `verbs` — rdma-core's devices (`netdirect-verbs`: libibverbs and librdmacm loaded at run
//!   time). Without rdma-core it is refused with `STATUS_NOT_SUPPORTED` naming the missing
//!   library; with rdma-core but no RDMA device, with `STATUS_INVALID_ADDRESS` ("no RDMA device
//!   exists"), before anything listens or connects.

use clap::ValueEnum;
use netdirect::Provider;
use netdirect_soft::SoftProvider;
use serde::Serialize;

use crate::error::{Error, Result};

/// A provider `nd` knows, by its `--provider` name.
#[derive(ValueEnum, Serialize, Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    /// netdirect's software iWARP RNIC over TCP.
    #[default]
    Soft,
    /// RDMA devices through rdma-core (libibverbs, librdmacm): real RNICs, siw, rxe.
    Verbs,
}

impl ProviderName {
    /// Every provider, in the order `nd info` lists them.
    pub const ALL: [ProviderName; 2] = [ProviderName::Soft, ProviderName::Verbs];

    /// The name as typed on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderName::Soft => "soft",
            ProviderName::Verbs => "verbs",
        }
    }
}

impl std::fmt::Display for ProviderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Opens the provider called `name`, set up with this process's flags; an error (with
/// `STATUS_NOT_SUPPORTED`) says why when it is not available here.
pub fn open(name: ProviderName) -> Result<Box<dyn Provider>> {
    match name {
        ProviderName::Soft => Ok(Box::new(open_soft())),
        ProviderName::Verbs => open_verbs(),
    }
}

fn open_soft() -> SoftProvider {
    SoftProvider::with_engine_config(crate::conn::provider_args().engine_config())
        .with_mpa(crate::conn::mpa_args().config())
}

/// The verbs provider, refused up front (with the reason) when rdma-core or any RDMA device is
/// missing here.
fn open_verbs() -> Result<Box<dyn Provider>> {
    let unavailable = |e: netdirect_verbs::VerbsError| {
        Error::status(
            format!(
                "the verbs provider is not available: {}",
                e.to_string().trim_start_matches("verbs provider: ")
            ),
            e.status(),
        )
    };
    let p = netdirect_verbs::VerbsProvider::new().map_err(unavailable)?;
    p.devices().map_err(unavailable)?;
    Ok(Box::new(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netdirect_types::Status;

    #[test]
    fn soft_opens_and_verbs_opens_or_says_why_not() {
        assert_eq!(open(ProviderName::Soft).unwrap().name(), "soft");
        match open(ProviderName::Verbs) {
            Ok(p) => assert_eq!(p.name(), "verbs"),
            Err(e) => {
                assert!(
                    e.status == Some(Status::NOT_SUPPORTED)
                        || e.status == Some(Status::INVALID_ADDRESS),
                    "{e}"
                );
                assert!(
                    e.message.contains("the verbs provider is not available"),
                    "{e}"
                );
            }
        }
    }
}
