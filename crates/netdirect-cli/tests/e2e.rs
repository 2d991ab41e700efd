//! End-to-end: the built `nd` binary as server and client on 127.0.0.1 and ::1 for every
//! perftest persona (checking the data check both sides report), `nd bench --quick --json`,
//! `nd info --json`, and the error cases with their exit codes and messages. Only loopback is
//! ever contacted.

use std::net::TcpListener;
use std::process::{Command, Output};

mod common;

use common::{ND, free_port, server};

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn nd(args: &[&str]) -> Output {
    Command::new(ND).args(args).output().expect("run nd")
}

/// Runs an `nd` server with `sargs` and a client with `cargs`; both must succeed without a
/// panic. Returns the client's stdout and the server's stdout lines.
fn run_both(sargs: &[&str], cargs: &[&str]) -> (String, Vec<String>) {
    let (mut srv, lines) = server(sargs);
    let out = nd(cargs);
    let (stdout, stderr) = text(&out);
    // The server exits after the run: its stdout reaches EOF, then collect it.
    let status = srv.wait().unwrap();
    let srv_out: Vec<String> = lines.iter().collect();
    let mut srv_err = String::new();
    std::io::Read::read_to_string(&mut srv.stderr.take().unwrap(), &mut srv_err).unwrap();
    assert!(
        out.status.success(),
        "client {cargs:?} failed: {stdout}\n{stderr}"
    );
    assert!(
        status.success(),
        "server {sargs:?} failed: {srv_out:?}\n{srv_err}"
    );
    assert!(!stderr.contains("panicked") && !srv_err.contains("panicked"));
    (stdout, srv_out)
}

/// Server and client of `persona` over `host`; both must succeed and report good data.
fn pair(persona: &str, host: &str, extra: &[&str]) -> String {
    let port = free_port().to_string();
    let mut sargs = vec![persona, "-p", &port, "--timeout", "30"];
    // The server's --json is checked in tests/json.rs (it says where it listens on stderr).
    sargs.extend(extra.iter().filter(|a| **a != "--json"));
    let mut cargs = vec![persona, host, "-p", &port, "--timeout", "30"];
    cargs.extend_from_slice(extra);
    let (stdout, srv_out) = run_both(&sargs, &cargs);
    if extra.contains(&"--json") {
        assert!(
            srv_out.iter().any(|l| l.contains("data check: OK")),
            "server output: {srv_out:?}"
        );
    } else {
        assert!(
            stdout.contains("data check      : OK"),
            "client output: {stdout}"
        );
        assert!(
            srv_out.iter().any(|l| l.contains("data check: OK")),
            "server output: {srv_out:?}"
        );
    }
    stdout
}

fn check_table(persona: &str, out: &str, rows: usize) {
    let bw = persona.ends_with("bw");
    let head = if bw {
        " #bytes     #iterations    BW peak[MiB/sec]    BW average[MiB/sec]   MsgRate[Mpps]"
    } else {
        " #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]"
    };
    assert!(out.contains(head), "{out}");
    let lines = out
        .lines()
        .skip_while(|l| !l.starts_with(" #bytes"))
        .skip(1);
    let data: Vec<_> = lines
        .take_while(|l| !l.starts_with("---"))
        .collect::<Vec<_>>();
    assert_eq!(data.len(), rows, "{out}");
    for l in data {
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert!(cols.len() >= if bw { 5 } else { 9 }, "{l}");
        for c in cols {
            c.parse::<f64>().unwrap_or_else(|_| panic!("{c} in {l}"));
        }
    }
}

macro_rules! persona_tests {
    ($($name:ident: $persona:literal, $host:literal;)*) => {$(
        #[test]
        fn $name() {
            let out = pair($persona, $host, &["-n", "20"]);
            check_table($persona, &out, 1);
        }
    )*};
}

persona_tests! {
    write_bw_v4: "write-bw", "127.0.0.1";
    write_bw_v6: "write-bw", "::1";
    read_bw_v4: "read-bw", "127.0.0.1";
    read_bw_v6: "read-bw", "::1";
    send_bw_v4: "send-bw", "127.0.0.1";
    send_bw_v6: "send-bw", "::1";
    write_lat_v4: "write-lat", "127.0.0.1";
    write_lat_v6: "write-lat", "::1";
    read_lat_v4: "read-lat", "127.0.0.1";
    read_lat_v6: "read-lat", "::1";
    send_lat_v4: "send-lat", "127.0.0.1";
    send_lat_v6: "send-lat", "::1";
}

#[test]
fn sizes_depths_qps_and_gbits() {
    // Several sizes, two QPs, a small TX depth, Gb/s, bracketed IPv6.
    let out = pair(
        "send-bw",
        "[::1]",
        &[
            "-s",
            "300000",
            "-n",
            "10",
            "-q",
            "2",
            "-t",
            "4",
            "--report_gbits",
        ],
    );
    assert!(out.contains("BW peak[Gb/sec]"), "{out}");
    assert!(out.contains("Number of qps   : 2"), "{out}");
    let out = pair(
        "write-lat",
        "127.0.0.1",
        &["-s", "4096", "-n", "10", "-I", "0"],
    );
    check_table("write-lat", &out, 1);
    let out = pair(
        "read-bw",
        "127.0.0.1",
        &["-s", "70000", "-n", "12", "-o", "2"],
    );
    check_table("read-bw", &out, 1);
}

#[test]
fn duration_mode() {
    let out = pair("write-bw", "127.0.0.1", &["-s", "8192", "-D", "0.2"]);
    check_table("write-bw", &out, 1);
    let out = pair("send-lat", "::1", &["-D", "0.2"]);
    check_table("send-lat", &out, 1);
}

#[test]
fn json_output_parses() {
    let out = pair("write-bw", "127.0.0.1", &["-n", "10", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("valid JSON");
    assert_eq!(v["test_info"]["test"], "write_bw");
    assert_eq!(v["test_info"]["data_verified"], true);
    let r = &v["results"][0];
    assert_eq!(r["MsgSize"], 65536);
    assert!(r["BW_average"].as_f64().unwrap() > 0.0);
    let out = pair("send-lat", "::1", &["-n", "10", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("valid JSON");
    assert!(v["results"][0]["percentile_99.9"].as_f64().unwrap() > 0.0);
    // --out_json writes the file next to the table.
    let dir = std::env::temp_dir().join(format!("nd-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("out.json");
    let f = file.to_str().unwrap();
    pair(
        "read-lat",
        "127.0.0.1",
        &["-n", "10", "--out_json", "--out_json_file", f],
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(v["test_info"]["test"], "read_lat");
    let _ = std::fs::remove_dir_all(dir);
}

fn failure(args: &[&str], words: &str, status: &str) {
    let out = nd(args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}\n{stderr}");
    assert!(stderr.contains(words), "{args:?}: {stderr}");
    assert!(stderr.contains(status), "{args:?}: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
}

#[test]
fn refused_without_a_server() {
    let port = free_port().to_string();
    failure(
        &["write-bw", "127.0.0.1", "-p", &port],
        "the connection was refused",
        "STATUS_CONNECTION_REFUSED (0xC0000236)",
    );
    failure(
        &["send-lat", "::1", "-p", &port],
        "the connection was refused",
        "STATUS_CONNECTION_REFUSED (0xC0000236)",
    );
}

#[test]
fn bad_address() {
    failure(
        &["write-bw", "999.1.1.1"],
        "is neither an IP address nor a host name that resolves",
        "STATUS_INVALID_ADDRESS (0xC0000141)",
    );
    failure(
        &["read-bw", "127.0.0.1", "--bind", "192.0.2.77"],
        "cannot open an adapter on 192.0.2.77",
        "STATUS_INVALID_ADDRESS (0xC0000141)",
    );
}

/// A loopback host name other than `localhost` (nd's shortcut) from /etc/hosts, with its
/// address as the system resolver returns it.
fn loopback_host_name() -> Option<(String, std::net::IpAddr)> {
    use std::net::ToSocketAddrs;
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let ip: std::net::IpAddr = words.next()?.parse().ok()?;
            ip.is_loopback().then_some(words)
        })
        .flatten()
        .filter(|name| !name.eq_ignore_ascii_case("localhost"))
        .find_map(|name| {
            let ip = (name, 0).to_socket_addrs().ok()?.next()?.ip();
            ip.is_loopback().then(|| (name.to_string(), ip))
        })
}

/// A host name, as perftest and rping take one (`nd write-bw vm`), goes through the system
/// resolver; only names that resolve to loopback are used.
#[test]
fn host_names_resolve() {
    let Some((name, ip)) = loopback_host_name() else {
        eprintln!("host_names_resolve skipped: /etc/hosts names no loopback host but localhost");
        return;
    };
    let port = free_port().to_string();
    let bind = ip.to_string();
    let (stdout, _) = run_both(
        &["write-bw", "-p", &port, "--bind", &bind, "--timeout", "30"],
        &["write-bw", &name, "-p", &port, "--timeout", "30"],
    );
    assert!(stdout.contains("data check      : OK"), "{stdout}");
    let port = free_port();
    let server = std::net::SocketAddr::new(ip, port).to_string();
    let client = format!("{name}:{port}");
    let (stdout, _) = run_both(
        &["pingpong", "-s", &server, "--size", "64", "--iters", "100"],
        &["pingpong", "-c", &client, "--size", "64", "--iters", "100"],
    );
    assert!(stdout.contains("64"), "{stdout}");
}

/// A server listens on every local address by default and for a wildcard (`0.0.0.0`: IPv4,
/// `::`: both families), so a client reaches it through 127.0.0.1 and ::1.
#[test]
fn wildcard_listen_is_reached_over_both_loopbacks() {
    for (bind, host) in [
        (Some("0.0.0.0"), "127.0.0.1"),
        (Some("::"), "::1"),
        (Some("::"), "127.0.0.1"),
        (None, "::1"),
    ] {
        let port = free_port().to_string();
        let mut sargs = vec!["send-lat", "-p", &port, "--timeout", "30", "-n", "50"];
        if let Some(b) = bind {
            sargs.extend(["--bind", b]);
        }
        let cargs = ["send-lat", host, "-p", &port, "--timeout", "30", "-n", "50"];
        let (stdout, _) = run_both(&sargs, &cargs);
        assert!(
            stdout.contains("data check      : OK"),
            "{bind:?} via {host}: {stdout}"
        );
    }
}

/// The flags perftest users type are accepted: implemented (-d, --ipv6, -N, --output,
/// --cpu_util, --perform_warm_up, -H) or ignored with a reason (-i, -x, -m, -l, -z, -F, -c RC);
/// the rest of a persona's flags are refused with a reason, never with clap's "unexpected
/// argument" (which a flag of another kind of test gets: tests/help.rs).
#[test]
fn perftest_flags_are_accepted() {
    let port = free_port().to_string();
    let common = ["-p", port.as_str(), "--timeout", "30", "-n", "200"];
    let ignored = [
        "-i", "1", "-x", "3", "-m", "4096", "-l", "4", "-z", "-F", "-c", "RC",
    ];
    let mut sargs = vec!["write-bw", "-d", "127.0.0.1"];
    sargs.extend(common);
    sargs.extend(ignored);
    let mut cargs = vec![
        "write-bw",
        "127.0.0.1",
        "-N",
        "--cpu_util",
        "--perform_warm_up",
    ];
    cargs.extend(common);
    cargs.extend(ignored);
    let (stdout, _) = run_both(&sargs, &cargs);
    assert!(stdout.contains("CPU util"), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("65536"))
        .expect("a 65536 row");
    let peak: f64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(peak, 0.0, "-N prints peak 0: {row}");

    // --output=latency: one number per size; -H a histogram; --ipv6 resolves localhost to ::1.
    let port = free_port().to_string();
    let common = ["-p", port.as_str(), "--timeout", "30", "-n", "100"];
    let mut sargs = vec!["send-lat", "--bind", "::1"];
    sargs.extend(common);
    let mut cargs = vec!["send-lat", "localhost", "--ipv6", "--output=latency"];
    cargs.extend(common);
    let (stdout, _) = run_both(&sargs, &cargs);
    let figures: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(figures.len(), 1, "{stdout}");
    figures[0].trim().parse::<f64>().expect("one number");
    let port = free_port().to_string();
    let common = ["-p", port.as_str(), "--timeout", "30", "-n", "100"];
    let mut sargs = vec!["send-lat", "--bind", "127.0.0.1"];
    sargs.extend(common);
    let mut cargs = vec!["send-lat", "127.0.0.1", "-H"];
    cargs.extend(common);
    let (stdout, _) = run_both(&sargs, &cargs);
    assert!(stdout.contains("Latency histogram"), "{stdout}");

    failure(
        &["write-bw", "127.0.0.1", "-c", "UD"],
        "iWARP has reliable connections (RC) only",
        "STATUS_NOT_SUPPORTED (0xC00000BB)",
    );
    failure(
        &["write-bw", "127.0.0.1", "-b", "-R"],
        "-b with -R: perftest's duplex exchange over rdma_cm",
        "STATUS_NOT_SUPPORTED (0xC00000BB)",
    );
    // --report-both goes with -b: alone it is a usage error.
    let out = nd(&["read-bw", "127.0.0.1", "--report-both"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--bidirectional"), "{stderr}");
}

/// An --out_json_file that cannot be written is refused before the run (no server is needed to
/// see it: without the check first, this would fail later as a refused connection).
#[test]
fn unwritable_json_file_is_refused_before_the_run() {
    let port = free_port().to_string();
    let started = std::time::Instant::now();
    failure(
        &[
            "write-bw",
            "127.0.0.1",
            "-p",
            &port,
            "--out_json",
            "--out_json_file",
            "/nonexistent-nd-dir/report.json",
        ],
        "--out_json_file /nonexistent-nd-dir/report.json cannot be written",
        "STATUS_INVALID_PARAMETER (0xC000000D)",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn size_over_the_adapter_limit() {
    failure(
        &["write-bw", "127.0.0.1", "-s", "2147483648"],
        "exceeds the adapter's MaxTransferLength 1073741824",
        "STATUS_INVALID_BUFFER_SIZE (0xC0000206)",
    );
    failure(
        &["send-lat", "-I", "4096"],
        "exceeds the adapter's MaxInlineDataSize 1024",
        "STATUS_INVALID_PARAMETER (0xC000000D)",
    );
}

#[test]
fn port_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    failure(
        &["write-bw", "-p", &port, "--bind", "127.0.0.1"],
        "the port is in use",
        "STATUS_SHARING_VIOLATION (0xC0000043)",
    );
}

#[test]
fn mismatched_tests_are_refused() {
    let port = free_port().to_string();
    let (mut srv, _lines) = server(&["write-bw", "-p", &port, "--timeout", "20"]);
    let out = nd(&["read-bw", "127.0.0.1", "-p", &port, "-n", "10"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("test mismatch"), "{stderr}");
    assert!(
        stderr.contains("STATUS_CONNECTION_REFUSED (0xC0000236)"),
        "{stderr}"
    );
    let s = srv.wait().unwrap();
    assert_eq!(s.code(), Some(1));
}

/// `--progress-threads`: several QPs over adapters with several progress threads each, as a
/// target nobody polls for (read-bw's server) and as a sender.
#[test]
fn several_progress_threads() {
    for (persona, host) in [("read-bw", "127.0.0.1"), ("write-bw", "::1")] {
        let out = pair(
            persona,
            host,
            &["-n", "20", "-q", "4", "--progress-threads", "4"],
        );
        check_table(persona, &out, 1);
        assert!(out.contains("Number of qps   : 4"), "{out}");
    }
    let out = nd(&["write-bw", "--progress-threads", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn usage_errors_exit_2() {
    let out = nd(&["write-bw", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = nd(&["write-bw", "127.0.0.1", "-n", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("iterations must be at least 5"));
}

#[test]
fn bench_quick_json_has_a_row_per_test() {
    let out = nd(&["bench", "--quick", "--json", "--quiet"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("valid JSON");
    let rows = v["tests"].as_array().unwrap();
    let families = if v["notes"].as_array().unwrap().is_empty() {
        2
    } else {
        1
    };
    // Per family: 3 sweeps x 3 sizes, 2 message rates, 2 latencies, the TCP latency; copy: 3.
    assert_eq!(rows.len(), families * (9 + 2 + 2 + 1) + 3, "{stdout}");
    for test in [
        "write_bw",
        "read_bw",
        "send_bw",
        "msg_rate_write",
        "msg_rate_send",
        "write_lat",
        "send_lat",
        "netdma_copy",
    ] {
        let r: Vec<_> = rows.iter().filter(|r| r["test"] == test).collect();
        assert!(!r.is_empty(), "no {test} row");
        for r in r {
            assert!(r["ratio"].as_f64().unwrap() > 0.0, "{r}");
        }
    }
    let lat = rows.iter().find(|r| r["test"] == "write_lat").unwrap();
    for k in ["t_min_us", "t_median_us", "p99_us", "p99_9_us"] {
        assert!(lat[k].as_f64().unwrap() > 0.0, "{k}");
    }
}

#[test]
fn bench_quick_tables() {
    let out = nd(&["bench", "--quick", "--no-ipv6"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for s in [
        "RDMA_Write BW Test over 127.0.0.1",
        "RDMA_Read BW Test over 127.0.0.1",
        "Send BW Test over 127.0.0.1",
        "vs TCP",
        "Message rate over 127.0.0.1",
        "99.9%[usec]",
        "vs memcpy",
        "nd bench finished in",
    ] {
        assert!(stdout.contains(s), "missing {s}: {stdout}");
    }
    // Aligned: no tabs, and in every table each row is as wide as its header line, so the
    // right-aligned columns line up.
    assert!(!stdout.contains('\t'), "{stdout}");
    let mut width = None;
    for line in stdout.lines() {
        if line.starts_with("---") {
            width = None;
        } else if line.contains("#bytes") {
            width = Some(line.trim_end().chars().count());
        } else if let Some(w) = width {
            if line.trim().is_empty() || line.starts_with(" nd bench") {
                continue;
            }
            assert_eq!(
                line.trim_end().chars().count(),
                w,
                "misaligned: {line:?}\n{stdout}"
            );
        }
    }
    // Rounds are counted and spread shown: "median (min-max)".
    let again = nd(&["bench", "--quick", "--no-ipv6", "--reps", "2", "--quiet"]);
    let (stdout, _) = text(&again);
    assert!(
        stdout.contains("median (min-max) of 2 round(s)"),
        "{stdout}"
    );
}

#[test]
fn info_json_lists_both_loopbacks() {
    let out = nd(&["info", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = v["adapters"].as_array().unwrap();
    assert!(!a.is_empty());
    // Every local address is an adapter, loopback first; numbers are JSON numbers.
    assert_eq!(a[0]["Address"], "127.0.0.1");
    assert_eq!(a[0]["Name"], "soft0");
    assert_eq!(a[0]["MaxTransferLength"], 1073741824);
    assert_eq!(a[0]["MaxInlineDataSize"], 1024);
    assert!(a[0]["AdapterFlags"].is_u64(), "{}", a[0]);
    assert!(
        a.iter().any(|x| x["Address"] == "::1"),
        "::1 listed too: {v}"
    );
    let out = nd(&["info"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("MaxInitiatorQueueDepth  : 16384"));
    // -d picks one adapter, by name or by address.
    for d in ["soft0", "127.0.0.1"] {
        let out = nd(&["info", "--json", "-d", d]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let a = v["adapters"].as_array().unwrap();
        assert_eq!(a.len(), 1, "{v}");
        assert_eq!(a[0]["Address"], "127.0.0.1");
    }
    failure(
        &["info", "-d", "mlx5_0"],
        "no such adapter",
        "STATUS_INVALID_PARAMETER (0xC000000D)",
    );
}

// ---------------------------------------------------------------------------------------------
// NetworkDirect personas and nd dma

/// `nd <persona> -s <server>` and `nd <persona> -c <client> <extra>`; both must succeed and
/// report good data. Returns the client's stdout.
fn nd_pair(persona: &str, server_addr: &str, client_addr: &str, extra: &[&str]) -> String {
    let sargs = vec![persona, "-s", server_addr, "--timeout", "30"];
    let mut cargs = vec![persona, "-c", client_addr, "--timeout", "30"];
    cargs.extend_from_slice(extra);
    let (stdout, srv_out) = run_both(&sargs, &cargs);
    assert!(
        srv_out.iter().any(|l| l.contains("data check: OK")),
        "server output: {srv_out:?}"
    );
    stdout
}

/// The ND table: header and `rows` numeric rows with five columns, sizes as given.
fn check_nd_table(out: &str, sizes: &[u64], iters: u64) {
    assert!(out.starts_with("Using "), "{out}");
    assert!(
        out.contains("processors. Sender Frequency is 1000000000"),
        "{out}"
    );
    let head = format!(
        " {:>9} {:>9} {:>9} {:>7} {:>11}",
        "Size", "Iter", "Latency", "CPU", "Bytes/Sec"
    );
    assert!(out.contains(&head), "{out}");
    let data: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != head)
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(data.len(), sizes.len(), "{out}");
    for (l, size) in data.iter().zip(sizes) {
        let cols: Vec<f64> = l
            .split_whitespace()
            .map(|c| c.parse().unwrap_or_else(|_| panic!("{c} in {l}")))
            .collect();
        assert_eq!(cols.len(), 5, "{l}");
        assert_eq!(cols[0], *size as f64, "{l}");
        assert_eq!(cols[1], iters as f64, "{l}");
        assert!(cols[2] > 0.0 && cols[4] > 0.0, "{l}");
        assert!((0.0..=100.0).contains(&cols[3]), "{l}");
    }
    assert!(
        out.contains("data check: OK (the receiver compared the data"),
        "{out}"
    );
}

macro_rules! nd_persona_tests {
    ($($name:ident: $persona:literal;)*) => {$(
        #[test]
        fn $name() {
            // IPv4 with a port after -c; a sweep of sizes 1..64 with ND's iteration rule capped.
            let port = free_port();
            let out = nd_pair(
                $persona,
                &format!("127.0.0.1:{port}"),
                &format!("127.0.0.1:{port}"),
                &["--iters", "8", "--max-size", "64", "--warmup", "10"],
            );
            check_nd_table(&out, &[1, 2, 4, 8, 16, 32, 64], 8);
            // IPv6 in brackets with a port; one size larger than a page, two SGEs.
            let port = free_port();
            let v6 = format!("[::1]:{port}");
            let out = nd_pair($persona, &v6, &v6, &["--size", "70000", "--iters", "6", "-n", "2"]);
            check_nd_table(&out, &[70000], 6);
        }
    )*};
}

nd_persona_tests! {
    nd_ping: "ping";
    nd_pingpong: "pingpong";
    nd_rping: "rping";
    nd_rpingpong: "rpingpong";
    nd_wping: "wping";
    nd_wpingpong: "wpingpong";
}

#[test]
fn nd_address_forms_json_and_log_file() {
    // ND's form: -s / -c without a value and the address last ([v6]:port here; plain v6
    // without a port: the unit tests and the `-c ::1` error case in nd_errors).
    let port = free_port();
    let sargs_addr = format!("[::1]:{port}");
    let (mut srv, lines) = server(&[
        "wpingpong",
        "-s",
        "--json-lines",
        "--timeout",
        "30",
        &sargs_addr,
    ]);
    let dir = std::env::temp_dir().join(format!("nd-e2e-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("wpingpong.json");
    let out = nd(&[
        "wpingpong",
        "-c",
        "--json",
        "-v",
        "--iters",
        "5",
        "--min-size",
        "16",
        "--max-size",
        "32",
        "--warmup",
        "3",
        "-l",
        log.to_str().unwrap(),
        &sargs_addr,
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(srv.wait().unwrap().success());
    let srv_lines: Vec<String> = lines.iter().collect();
    let last: serde_json::Value = serde_json::from_str(srv_lines.last().unwrap()).unwrap();
    assert_eq!(last["event"], "report");
    assert_eq!(last["role"], "server");
    assert_eq!(last["data_verified"], true);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("valid JSON");
    assert_eq!(v["test"], "wpingpong");
    assert_eq!(v["data_verified"], true);
    assert_eq!(v["remote_address"], sargs_addr);
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[1]["size"], 32);
    assert_eq!(r[1]["iterations"], 5);
    assert!(r[1]["samples"]["p99_us"].as_f64().unwrap() > 0.0);
    let logged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&log).unwrap()).unwrap();
    assert_eq!(logged, v);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn nd_errors() {
    let port = free_port();
    failure(
        &["ping", "-c", &format!("127.0.0.1:{port}")],
        "the connection was refused",
        "STATUS_CONNECTION_REFUSED (0xC0000236)",
    );
    failure(
        &["rping", "-c", &format!("[::1]:{port}")],
        "the connection was refused",
        "STATUS_CONNECTION_REFUSED (0xC0000236)",
    );
    failure(
        &["pingpong", "-c", "127.0.0.1:99999"],
        "is not a port number",
        "STATUS_INVALID_ADDRESS (0xC0000141)",
    );
    failure(
        &["wping", "-c", "999.1.1.1"],
        "is neither an IPv4/IPv6 address nor a host name that resolves",
        "STATUS_INVALID_ADDRESS (0xC0000141)",
    );
    failure(
        &["ping", "-c", "127.0.0.1", "--size", "2147483648"],
        "exceeds the adapter's MaxTransferLength 1073741824",
        "STATUS_INVALID_BUFFER_SIZE (0xC0000206)",
    );
    failure(
        &["wping", "-c", "::1", "-n", "17"],
        "the adapter's MaxInitiatorRequestSge is 16",
        "STATUS_INVALID_PARAMETER (0xC000000D)",
    );
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    failure(
        &["ping", "-s", &format!("127.0.0.1:{port}")],
        "the port is in use",
        "STATUS_SHARING_VIOLATION (0xC0000043)",
    );
    // Neither or both of -s and -c.
    let out = nd(&["ping", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out)
            .1
            .contains("exactly one of client (-c) or server (-s)")
    );
    let out = nd(&["ping", "-s", "-c", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(1));
    let out = nd(&["ping", "-c", "-b", "-p", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn nd_persona_mismatch_is_refused() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (mut srv, _lines) = server(&["ping", "-s", &addr, "--timeout", "20"]);
    let out = nd(&["wping", "-c", &addr, "--iters", "5", "--max-size", "4"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("test mismatch: this server runs ping"),
        "{stderr}"
    );
    assert!(
        stderr.contains("STATUS_CONNECTION_REFUSED (0xC0000236)"),
        "{stderr}"
    );
    assert_eq!(srv.wait().unwrap().code(), Some(1));
}

#[test]
fn dma_quick_json_and_table() {
    let out = nd(&[
        "dma",
        "--quick",
        "--json",
        "--channels",
        "2",
        "--trials",
        "1",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("valid JSON");
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.len(), 3 * 2, "{stdout}");
    for r in rows {
        assert!(r["netdma_gb_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["memcpy_gb_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!(v["data_verified"], true);
    let out = nd(&[
        "dma",
        "--min-size",
        "4096",
        "--max-size",
        "16384",
        "-c",
        "2",
        "--trial-ms",
        "2",
        "--trials",
        "1",
        "--quiet",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for h in [
        "#bytes",
        "memcpy[GB/s]",
        "1ch[GB/s]",
        "2ch[GB/s]",
        "best/memcpy",
    ] {
        assert!(stdout.contains(h), "{stdout}");
    }
    for s in ["4096", "8192", "16384"] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(s)),
            "{stdout}"
        );
    }
    let out = nd(&["dma", "--channels", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("the channel count must be 1..=64"));
}
