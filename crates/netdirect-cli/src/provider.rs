//! The providers `nd` can run over, chosen by name (`--provider soft|verbs`, default `soft`):
//! the one place the CLI (and `ndk-conformance`) turns a name into a [`Provider`].
//!
//! * `soft` — netdirect's software iWARP RNIC (`netdirect-soft`), with this process's MPA and
//!   engine flags ([`crate::conn::mpa_args`], [`crate::conn::provider_args`]).
//! * `verbs` — rdma-core's devices (`netdirect-verbs`). This build does not link it: opening it
//!   fails with `STATUS_NOT_SUPPORTED` and says so; the private `open_verbs` below is the hook
//!   where it plugs in.

use clap::ValueEnum;
use netdirect::Provider;
use netdirect_soft::SoftProvider;
use netdirect_types::Status;
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

/// The verbs provider. This is the hook for `netdirect_verbs::VerbsProvider`: once that crate
/// is a dependency, return it here (its own open reports a missing libibverbs/librdmacm).
fn open_verbs() -> Result<Box<dyn Provider>> {
    Err(Error::status(
        "the verbs provider is not available: this build of nd does not include netdirect-verbs \
         (rdma-core devices cannot be opened); use --provider soft",
        Status::NOT_SUPPORTED,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_opens_and_verbs_says_why_not() {
        assert_eq!(open(ProviderName::Soft).unwrap().name(), "soft");
        let e = open(ProviderName::Verbs).err().unwrap();
        assert_eq!(e.status, Some(Status::NOT_SUPPORTED));
        assert!(e.message.contains("netdirect-verbs"), "{e}");
    }
}
