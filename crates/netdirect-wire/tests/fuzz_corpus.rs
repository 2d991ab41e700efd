//! Replays the cargo-fuzz corpus (`fuzz/corpus/<target>/`) through the same entry points the
//! fuzz targets call, so every input the fuzzer kept is checked in CI on stable Rust.

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {} is missing: {e}", dir.display()));
    let mut count = 0;
    for entry in entries {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} panics", path.display());
        count += 1;
    }
    assert!(count > 0, "fuzz corpus {} is empty", dir.display());
    println!("{target}: {count} inputs");
}

#[test]
fn deframer_corpus() {
    replay("deframer", netdirect_wire::fuzz::deframer);
}

#[test]
fn startup_corpus() {
    replay("startup", netdirect_wire::fuzz::startup);
}

#[test]
fn ulpdu_corpus() {
    replay("ulpdu", netdirect_wire::fuzz::ulpdu);
}

#[test]
fn fpdu_corpus() {
    replay("fpdu", netdirect_wire::fuzz::fpdu);
}
