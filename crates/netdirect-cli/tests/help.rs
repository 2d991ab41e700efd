//! Each command's `--help` lists the flags that apply to it and no others: bandwidth-only
//! perftest flags on the bandwidth personas, latency-only ones on the latency personas, `-o` on
//! the read tests, `-r` on the Send tests, and the MPA flags only on commands that connect.

use std::collections::BTreeSet;
use std::process::Command;

mod common;

use common::ND;

/// The flags (`-x`, `--long`) `nd <args> --help` lists.
fn flags(args: &[&str]) -> BTreeSet<String> {
    let out = Command::new(ND)
        .args(args)
        .arg("--help")
        .output()
        .expect("run nd");
    assert!(out.status.success(), "{args:?} --help failed");
    let text = String::from_utf8(out.stdout).expect("UTF-8 help");
    let mut set = BTreeSet::new();
    for line in text.lines() {
        let t = line.trim_start();
        if !t.starts_with('-') {
            continue;
        }
        // "-s, --size <SIZE>  Size…" or "--json  Print…": the flag names come first.
        for word in t.split_whitespace() {
            let w = word.trim_end_matches(',');
            if !w.starts_with('-') {
                break;
            }
            set.insert(w.split('=').next().unwrap_or(w).to_string());
        }
    }
    set
}

fn check(cmd: &str, present: &[&str], absent: &[&str]) {
    let got = flags(&[cmd]);
    for f in present {
        assert!(got.contains(*f), "nd {cmd} --help lacks {f}: {got:?}");
    }
    for f in absent {
        assert!(!got.contains(*f), "nd {cmd} --help lists {f}: {got:?}");
    }
}

const COMMON: &[&str] = &[
    "-s",
    "-n",
    "-a",
    "-D",
    "-p",
    "-I",
    "-R",
    "--json",
    "--json-lines",
    "--out_json",
    "-d",
    "-x",
    "-c",
    "--ipv6",
    "--cpu_util",
    "--perform_warm_up",
];
const BW: &[&str] = &[
    "-q",
    "-t",
    "-b",
    "--report-both",
    "--run_infinitely",
    "--report_gbits",
    "-N",
    "-l",
];
const LAT: &[&str] = &["-H", "-U"];
const MPA: &[&str] = &["--mpa-rev", "--mpa-crc", "--mpa-p2p", "--mpa-markers"];

#[test]
fn each_perftest_persona_lists_its_own_flags() {
    for persona in [
        "write-bw",
        "read-bw",
        "send-bw",
        "write-lat",
        "read-lat",
        "send-lat",
    ] {
        let bw = persona.ends_with("-bw");
        let read = persona.starts_with("read");
        let send = persona.starts_with("send");
        let mut present: Vec<&str> = COMMON.iter().chain(MPA).copied().collect();
        let mut absent: Vec<&str> = Vec::new();
        let (mine, theirs) = if bw { (BW, LAT) } else { (LAT, BW) };
        present.extend(mine);
        absent.extend(theirs);
        if read { &mut present } else { &mut absent }.push("-o");
        if send { &mut present } else { &mut absent }.extend(["-r", "--use-srq"]);
        // write-lat watches memory: no completions to wait for by event.
        if persona == "write-lat" {
            &mut absent
        } else {
            &mut present
        }
        .push("-e");
        check(persona, &present, &absent);
    }
}

#[test]
fn mpa_flags_only_where_a_connection_is_made() {
    for cmd in [
        "ping",
        "pingpong",
        "rping",
        "rpingpong",
        "wping",
        "wpingpong",
        "rping-compat",
        "bench",
        "scale",
    ] {
        check(cmd, MPA, &[]);
    }
    for cmd in ["info", "dma"] {
        check(cmd, &["-h"], MPA);
    }
    let top = flags(&[]);
    for f in MPA {
        assert!(!top.contains(*f), "nd --help lists {f}: {top:?}");
    }
}

/// A flag of another kind of test is a usage error; MPA flags still work before the
/// subcommand, as scripts wrote them when they were global.
#[test]
fn flags_of_other_personas_are_usage_errors() {
    for (args, code) in [
        (&["write-lat", "-q", "2"][..], 2),
        (&["send-lat", "-b"][..], 2),
        (&["write-bw", "-H"][..], 2),
        (&["write-bw", "-o", "4"][..], 2),
        (&["read-bw", "-r", "4"][..], 2),
        (&["write-lat", "-e"][..], 2),
        (&["info", "--mpa-crc"][..], 2),
    ] {
        let out = Command::new(ND).args(args).output().expect("run nd");
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("unexpected argument"), "{args:?}: {err}");
    }
    let out = Command::new(ND)
        .args(["--mpa-crc", "--mpa-rev", "1", "info", "--help"])
        .output()
        .expect("run nd");
    assert!(out.status.success());
}
