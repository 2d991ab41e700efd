//! `nd … --pcap FILE`: captures without root, read back by Wireshark's `tshark`. For write-bw,
//! read-bw and send-bw with `--mpa-crc` over 127.0.0.1 and ::1, both the server's and the
//! client's capture must decode without a malformed frame or an expert error, every FPDU's CRC
//! must be good, tshark must see as many FPDUs as the capture writer counted, and as many
//! data FPDUs of the run's size as the run's iterations; the capture's FPDUs each way equal the
//! counters' `RDMAOutFrames`/`RDMAInFrames` (`--counters`). Only loopback is ever contacted.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{ND, free_port, server};

/// Whether tshark can run here. Without it a test prints why and passes without checking,
/// unless `ND_TEST_REQUIRE_TOOLS` is set (as `.ci/run` does): then a missing tool fails.
fn tshark_missing(test: &str) -> bool {
    let found = Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return false;
    }
    assert!(
        std::env::var_os("ND_TEST_REQUIRE_TOOLS").is_none(),
        "{test}: tshark is not installed and ND_TEST_REQUIRE_TOOLS is set \
         (apt-get install -y tshark)"
    );
    eprintln!("{test} skipped: tshark is not installed (apt-get install -y tshark)");
    true
}

/// Runs tshark on `pcap` with reassembly on and RDMA heuristics off; returns its stdout.
fn tshark(pcap: &Path, extra: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-o", "tcp.desegment_tcp_streams:TRUE"])
        .args(["--disable-heuristic", "rpcrdma_iwarp"])
        .args(["--disable-heuristic", "smb_direct_iwarp"])
        .args(extra)
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tshark prints UTF-8")
}

/// A tshark integer, decimal or 0x-hex.
fn int(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|e| panic!("tshark value {s:?}: {e}"))
}

/// Every FPDU tshark decodes: (RDMAP opcode, ULPDU length), in order.
fn fpdus(pcap: &Path) -> Vec<(u64, u64)> {
    let out = tshark(
        pcap,
        &[
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=;",
            "-e",
            "iwarp_rdma.opcode",
            "-e",
            "iwarp_mpa.ulpdulength",
        ],
    );
    let mut all = Vec::new();
    for line in out.lines() {
        let mut cols = line.split('\t');
        let (ops, lens) = (cols.next().unwrap_or(""), cols.next().unwrap_or(""));
        if lens.is_empty() {
            continue;
        }
        let ops: Vec<u64> = ops.split(';').map(int).collect();
        let lens: Vec<u64> = lens.split(';').map(int).collect();
        assert_eq!(ops.len(), lens.len(), "frame fields: {line}");
        all.extend(ops.into_iter().zip(lens));
    }
    all
}

/// The capture writer's own FPDU count, summed over connections and directions, from nd's
/// stderr summary.
fn written_fpdus(stderr: &str) -> u64 {
    let mut total = 0;
    let mut conns = 0;
    for line in stderr.lines().filter(|l| l.contains("pcap connection")) {
        conns += 1;
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = |w: &str| {
            let i = words.iter().position(|x| *x == w).expect(line);
            words[i + 1].parse::<u64>().expect(line)
        };
        total += at("sent") + at("received");
    }
    assert_eq!(conns, 1, "one connection captured: {stderr}");
    total
}

/// The capture writer's FPDUs (sent, received) and the counters' (`RDMAOutFrames`,
/// `RDMAInFrames`, summed over the adapters `--counters` printed) from nd's stderr.
fn frames_written_and_counted(stderr: &str) -> ((u64, u64), (u64, u64)) {
    let mut written = (0, 0);
    for line in stderr.lines().filter(|l| l.contains("pcap connection")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = |w: &str| {
            let i = words.iter().position(|x| *x == w).expect(line);
            words[i + 1].parse::<u64>().expect(line)
        };
        written.0 += at("sent");
        written.1 += at("received");
    }
    let counted = |name: &str| -> u64 {
        stderr
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(name)).then(|| w.next().and_then(|v| v.parse::<u64>().ok()))?
            })
            .sum()
    };
    (written, (counted("RDMAOutFrames"), counted("RDMAInFrames")))
}

/// FPDUs that reached us after our FIN (frames from the peer's port after the first FIN from
/// ours; nd's summary line is `pcap connection LOCAL -> PEER: ...`).
fn fpdus_after_our_fin(pcap: &Path, stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("pcap connection"))
        .expect("a capture summary");
    let local = line
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.rsplit(':').next())
        .expect(line)
        .to_string();
    let out = tshark(
        pcap,
        &[
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=;",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.flags.fin",
            "-e",
            "iwarp_mpa.ulpdulength",
        ],
    );
    let mut closed = false;
    let mut late = 0;
    for row in out.lines() {
        let cols: Vec<&str> = row.split('\t').collect();
        let (port, fin, lens) = (
            cols[0],
            cols.get(1).copied().unwrap_or(""),
            cols.get(2).copied().unwrap_or(""),
        );
        let fin = matches!(fin, "1" | "True" | "true");
        if port == local {
            closed |= fin;
        } else if closed && !lens.is_empty() {
            late += lens.split(';').count() as u64;
        }
    }
    late
}

struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp(tag: &str) -> Temp {
    Temp(std::env::temp_dir().join(format!("nd-pcap-{tag}-{}.pcap", std::process::id())))
}

const RDMA_WRITE: u64 = 0;
const READ_RESPONSE: u64 = 2;
const SEND: u64 = 3;
/// ULPDU header octets: tagged (RDMAP + DDP tagged), untagged (RDMAP + DDP untagged).
const TAGGED: u64 = 14;
const UNTAGGED: u64 = 18;

fn check(pcap: &Path, stderr: &str, opcode: u64, ulpdu: u64, iterations: usize) {
    let f = fpdus(pcap);
    let (mut written, counted) = frames_written_and_counted(stderr);
    // The counters count what the connection took in; the capture also shows what the peer sent
    // after our FIN (its last control message, which nobody reads any more).
    written.1 -= fpdus_after_our_fin(pcap, stderr);
    assert!(
        stderr.contains("RDMAOutFrames"),
        "--counters printed: {stderr}"
    );
    assert_eq!(
        written,
        counted,
        "{}: the capture's FPDUs (sent, received) vs the counters' frames (out, in)",
        pcap.display()
    );
    assert_eq!(
        f.len() as u64,
        written_fpdus(stderr),
        "{}: tshark's FPDUs vs the capture writer's count",
        pcap.display()
    );
    let data = f.iter().filter(|&&x| x == (opcode, ulpdu)).count();
    assert_eq!(data, iterations, "{}: data FPDUs: {f:?}", pcap.display());
    let v = tshark(pcap, &["-V"]);
    assert_eq!(v.matches("Bad CRC32").count(), 0, "{}", pcap.display());
    assert_eq!(
        v.matches("Good CRC32").count(),
        f.len(),
        "{}: every FPDU's CRC checked good",
        pcap.display()
    );
    assert!(
        !v.contains("Malformed"),
        "{}: malformed frame",
        pcap.display()
    );
    let expert = tshark(pcap, &["-q", "-z", "expert"]);
    assert!(
        !expert.contains("Errors ("),
        "{}: expert errors: {expert}",
        pcap.display()
    );
    // The TCP conversation is complete: handshake and both FINs.
    assert!(
        expert.contains("Connection establish request (SYN)"),
        "{expert}"
    );
    assert_eq!(
        tshark(
            pcap,
            &[
                "-Y",
                "tcp.flags.fin == 1",
                "-T",
                "fields",
                "-e",
                "frame.number"
            ]
        )
        .lines()
        .count(),
        2,
        "{}: one FIN each way",
        pcap.display()
    );
}

fn run(persona: &str, host: &str, opcode: u64, ulpdu_header: u64) {
    const SIZE: usize = 3000;
    const ITERS: usize = 40;
    let port = free_port().to_string();
    let tag = format!("{persona}-{}", if host.contains(':') { 6 } else { 4 });
    let (spcap, cpcap) = (temp(&format!("{tag}-s")), temp(&format!("{tag}-c")));
    let common = [
        "-p",
        &port,
        "--timeout",
        "30",
        "-s",
        "3000",
        "-n",
        "40",
        "--mpa-crc",
        "--counters",
    ];
    let mut sargs = vec![persona];
    sargs.extend_from_slice(&common);
    sargs.extend_from_slice(&["--pcap", spcap.0.to_str().unwrap()]);
    let mut cargs = vec![persona, host];
    cargs.extend_from_slice(&common);
    cargs.extend_from_slice(&["--pcap", cpcap.0.to_str().unwrap()]);
    let (mut srv, _lines) = server(&sargs);
    let out = Command::new(ND).args(&cargs).output().expect("run nd");
    let cerr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "client: {}\n{cerr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(srv.wait().unwrap().success(), "server failed");
    let mut serr = String::new();
    std::io::Read::read_to_string(&mut srv.stderr.take().unwrap(), &mut serr).unwrap();
    let ulpdu = SIZE as u64 + ulpdu_header;
    check(&cpcap.0, &cerr, opcode, ulpdu, ITERS);
    check(&spcap.0, &serr, opcode, ulpdu, ITERS);
}

#[test]
fn pcap_of_write_bw_decodes_with_good_crcs() {
    if tshark_missing("pcap_of_write_bw_decodes_with_good_crcs") {
        return;
    }
    run("write-bw", "127.0.0.1", RDMA_WRITE, TAGGED);
    run("write-bw", "::1", RDMA_WRITE, TAGGED);
}

#[test]
fn pcap_of_read_bw_decodes_with_good_crcs() {
    if tshark_missing("pcap_of_read_bw_decodes_with_good_crcs") {
        return;
    }
    run("read-bw", "127.0.0.1", READ_RESPONSE, TAGGED);
    run("read-bw", "::1", READ_RESPONSE, TAGGED);
}

#[test]
fn pcap_of_send_bw_decodes_with_good_crcs() {
    if tshark_missing("pcap_of_send_bw_decodes_with_good_crcs") {
        return;
    }
    run("send-bw", "127.0.0.1", SEND, UNTAGGED);
    run("send-bw", "::1", SEND, UNTAGGED);
}
