//! Every NDK entry point (spec §3.1) and consumer callback (§4) has a Rust item.

use std::collections::BTreeSet;

fn spec() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/spec/ndkpi.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("the NDK spec {path} is missing: {e}"))
}

fn section<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let a = text
        .find(start)
        .unwrap_or_else(|| panic!("no section {start}"));
    let b = text[a..].find(end).map_or(text.len(), |b| a + b);
    &text[a..b]
}

fn mapped() -> BTreeSet<&'static str> {
    netdirect::NDK_ENTRY_POINTS
        .iter()
        .map(|(ndk, _)| *ndk)
        .collect()
}

#[test]
fn every_entry_point_has_an_item() {
    let text = spec();
    let table = section(&text, "### 3.1 Summary table", "### 3.2");
    let mut wanted = BTreeSet::new();
    for line in table.lines().filter(|l| {
        l.starts_with("| ") && l.contains("NDK_FN") || l.contains("NDK_ADAPTER_HANDLER")
    }) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (object, slot) = (cells[2], cells[3]);
        let name = slot.split_whitespace().next().unwrap_or("");
        if let Some(list) = name
            .strip_prefix("NdkClose{")
            .and_then(|r| r.strip_suffix('}'))
        {
            for object in list.split(',') {
                wanted.insert(format!("NdkClose{object}"));
            }
        } else if name == "NdkGetLocalAddress" {
            wanted.insert(format!("NdkGetLocalAddress ({object})"));
        } else {
            wanted.insert(name.to_string());
        }
    }
    assert!(
        wanted.len() >= 60,
        "parsed only {} entry points: {wanted:?}",
        wanted.len()
    );
    let have = mapped();
    let missing: Vec<_> = wanted
        .iter()
        .filter(|w| !have.contains(w.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "NDK entry points without a Rust item: {missing:?}"
    );
}

#[test]
fn every_callback_has_an_item() {
    let text = spec();
    let table = section(&text, "## 4. Consumer callbacks", "## 5.");
    let wanted: BTreeSet<&str> = table
        .lines()
        .filter(|l| l.starts_with("| Ndk"))
        .filter_map(|l| l.split('|').nth(1))
        .map(|c| c.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(wanted.len(), 8, "{wanted:?}");
    let have = mapped();
    let missing: Vec<_> = wanted.iter().filter(|w| !have.contains(*w)).collect();
    assert!(
        missing.is_empty(),
        "NDK callbacks without a Rust item: {missing:?}"
    );
}

#[test]
fn table_has_no_duplicates() {
    assert_eq!(mapped().len(), netdirect::NDK_ENTRY_POINTS.len());
}
