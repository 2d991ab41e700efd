//! nd's own tables line up without tabs: `nd dma` (every row as wide as its header, so the
//! right-aligned columns line up) and `nd info` (every field's colon in one column). `nd bench`'s
//! tables are checked the same way in tests/e2e.rs (`bench_quick_tables`).

use std::process::Command;

mod common;

use common::ND;

fn stdout(args: &[&str]) -> String {
    let out = Command::new(ND).args(args).output().expect("run nd");
    assert!(out.status.success(), "{args:?}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn dma_table_is_aligned() {
    let out = stdout(&[
        "dma",
        "--min-size",
        "4096",
        "--max-size",
        "1048576",
        "-c",
        "2",
        "--trial-ms",
        "1",
        "--trials",
        "1",
        "--quiet",
    ]);
    assert!(!out.contains('\t'), "{out}");
    // Two tables (single descriptors and chains; channels), each with its header and one row
    // per size, every row as wide as its header.
    let lines: Vec<&str> = out.lines().collect();
    let heads: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("#bytes"))
        .collect();
    assert_eq!(heads.len(), 2, "two tables: {out}");
    for &h in &heads {
        let width = lines[h].trim_end().chars().count();
        let rows: Vec<&str> = lines[h + 1..]
            .iter()
            .take_while(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|w| w.parse::<u64>().is_ok())
            })
            .copied()
            .collect();
        assert_eq!(rows.len(), 9, "4 KiB..1 MiB: {out}");
        for r in rows {
            assert_eq!(
                r.trim_end().chars().count(),
                width,
                "misaligned: {r:?}\n{out}"
            );
        }
    }
}

#[test]
fn info_fields_are_aligned() {
    let out = stdout(&["info"]);
    assert!(!out.contains('\t'), "{out}");
    let colons: Vec<usize> = out
        .lines()
        .filter(|l| l.starts_with("    "))
        .map(|l| l.find(':').unwrap_or_else(|| panic!("no colon: {l:?}")))
        .collect();
    assert!(colons.len() > 10, "{out}");
    assert!(colons.iter().all(|c| *c == colons[0]), "{out}");
}
