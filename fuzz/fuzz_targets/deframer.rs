//! Fuzz target: `netdirect_wire::fuzz::deframer` (its corpus is replayed by
//! `crates/netdirect-wire/tests/fuzz_corpus.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netdirect_wire::fuzz::deframer(data));
