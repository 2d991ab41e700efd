//! Helpers shared by the integration tests that go through the NDK object model: the
//! provider-independent ones of `netdirect-conformance` (one queue pair with its PD and CQ,
//! completions with a deadline, connecting through a listener and a connector), and opening
//! an adapter of a fresh [`SoftProvider`].

#![allow(dead_code, unused_imports)] // each test binary uses its own subset

use std::net::IpAddr;

use netdirect::{Adapter, OpenParameters, Provider};
use netdirect_soft::SoftProvider;
use netdirect_types::Version;

pub(crate) use netdirect_conformance::support::{
    Connected, Endpoint, Listening, WAIT, connect, connect_from, disconnect_event, sge,
};
/// The workspace's deterministic pattern fill (xorshift64*).
pub(crate) use netdirect_test_support::rng::fill_pattern;

/// Opens an adapter of a fresh [`SoftProvider`] on `ip`.
pub(crate) fn open(ip: IpAddr) -> Box<dyn Adapter> {
    SoftProvider::new()
        .open_adapter(OpenParameters {
            address: ip,
            version: Version::V2_1,
        })
        .expect("open adapter")
}
