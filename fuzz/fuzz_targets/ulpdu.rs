//! Fuzz target: `netdirect_wire::fuzz::ulpdu` (its corpus is replayed by
//! `crates/netdirect-wire/tests/fuzz_corpus.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netdirect_wire::fuzz::ulpdu(data));
