//! Test helpers that more than one of netdirect's crates use, in one place instead of
//! `#[path]` includes and copies. `publish = false`; a dev-dependency only.
//!
//! | module | feature | what | used by |
//! |---|---|---|---|
//! | [`rng`] | — | the deterministic PRNG (xorshift64*) and a pattern fill | `netdirect-proto`, `netdirect-soft`, `netdma` |
//! | `capture` | `capture` | the siw captures of `testdata/siw/`: pcap reader, TCP reassembly, the MPA/DDP/RDMAP check of a connection, and a pcap writer of synthetic TCP conversations | `netdirect-wire`, `netdirect-proto` |
//! | `host` | `host` | a fake host's registered regions and their tagged-access check | `netdirect-proto`, `netdirect-soft` |
//! | `mpa` | `mpa` | a raw MPA peer over a blocking TCP socket: startup frames, FPDUs | `netdirect-soft` |
//!
//! Helpers that one crate alone uses stay in that crate's `tests/`.
#![forbid(unsafe_code)]

#[cfg(feature = "capture")]
pub mod capture;
#[cfg(feature = "host")]
pub mod host;
#[cfg(feature = "mpa")]
pub mod mpa;
pub mod rng;
