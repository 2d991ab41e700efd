//! perftest's `-b` (bidirectional), `--report-both` and `-U` (report unsorted) end to end:
//! both sides of a `-b` run move data toward each other at once and report the aggregate (or,
//! with `--report-both`, each direction), with the data checked both ways; `-U` prints every
//! latency sample in run order (text: `#, usec` then one `i, usec` line each; JSON: an array).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

mod common;

use common::{ND, free_port};

/// Starts `nd args` and waits for "listening" on stdout or stderr (a `--json` server says it
/// on stderr); returns the child, its stdout lines and its later stderr lines.
fn start(args: &[&str]) -> (Child, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    let mut child = Command::new(ND)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nd server");
    let (tx, rx) = mpsc::channel();
    let (etx, erx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let t2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = t2.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = etx.send(line);
        }
    });
    let (otx, orx) = mpsc::channel();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut ready = false;
    let mut early = Vec::new();
    while !ready {
        assert!(
            std::time::Instant::now() < deadline,
            "{args:?}: no 'listening'"
        );
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(20)) {
            ready |= l.contains("listening");
            early.push(l);
        }
        if let Ok(l) = erx.try_recv() {
            ready |= l.contains("listening");
        }
    }
    std::thread::spawn(move || {
        for l in early {
            let _ = otx.send(l);
        }
        while let Ok(l) = rx.recv() {
            if otx.send(l).is_err() {
                break;
            }
        }
    });
    (child, orx, erx)
}

/// Runs server `sargs` and client `cargs` of `persona`; both must succeed. Returns both
/// stdouts (server, client).
fn pair(persona: &str, sargs: &[&str], cargs: &[&str]) -> (String, String) {
    let mut s = vec![persona];
    s.extend_from_slice(sargs);
    let (srv, lines, _) = start(&s);
    let mut c = vec![persona];
    c.extend_from_slice(cargs);
    let out: Output = Command::new(ND).args(&c).output().expect("run nd client");
    let cli = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{c:?}: {cli}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let srv = srv.wait_with_output().expect("server exits");
    assert!(
        srv.status.success(),
        "{s:?}: {}",
        String::from_utf8_lossy(&srv.stderr)
    );
    let text: Vec<String> = lines.iter().collect();
    (text.join("\n"), cli)
}

fn args<'a>(port: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["-p", port, "-n", "200", "-s", "4096", "--timeout", "30"];
    v.extend_from_slice(extra);
    v
}

fn json(text: &str, what: &str) -> Value {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{what}: not one JSON document ({e}):\n{text}"))
}

/// The bandwidth rows of a perftest table (lines that start with the message size).
fn bw_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.trim_start().starts_with("4096 "))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn bidirectional_runs_move_data_both_ways_and_report_the_sum() {
    for persona in ["write-bw", "read-bw", "send-bw"] {
        for (host, bind) in [("127.0.0.1", "127.0.0.1"), ("::1", "::1")] {
            // JSON: both sides report one aggregate row, with the data checked both ways.
            let port = free_port().to_string();
            let s = args(&port, &["-b", "--json", "--bind", bind]);
            let mut c = vec![host];
            c.extend(args(&port, &["-b", "--json"]));
            let (srv, cli) = pair(persona, &s, &c);
            let (srv, cli) = (json(&srv, "server"), json(&cli, "client"));
            let what = format!("{persona} -b over {host}");
            assert_eq!(cli["test_info"]["data_verified"], true, "{what}: {cli}");
            assert_eq!(cli["test_info"]["bidirectional"], true, "{what}: {cli}");
            assert_eq!(srv["data_verified"], true, "{what}: {srv}");
            for (side, r) in [("client", &cli["results"]), ("server", &srv["results"])] {
                let rows = r
                    .as_array()
                    .unwrap_or_else(|| panic!("{what}: {side}: {r}"));
                assert_eq!(rows.len(), 1, "{what}: {side}: {r}");
                let row = &rows[0];
                assert_eq!(row["MsgSize"], 4096, "{what}: {side}");
                assert_eq!(row["direction"], "both", "{what}: {side}: {row}");
                // Both directions' operations: 200 each way.
                assert_eq!(row["n_iterations"], 400, "{what}: {side}: {row}");
                assert!(row["BW_average"].as_f64().unwrap() > 0.0, "{what}: {row}");
            }
        }
    }
}

#[test]
fn bidirectional_text_shows_the_aggregate_on_both_sides() {
    let port = free_port().to_string();
    let (srv, cli) = pair(
        "send-bw",
        &args(&port, &["-b", "--bind", "127.0.0.1"]),
        &[&["127.0.0.1"][..], &args(&port, &["-b"])].concat(),
    );
    for (side, text) in [("client", &cli), ("server", &srv)] {
        let rows = bw_rows(text);
        assert_eq!(rows.len(), 1, "{side}: {text}");
        assert_eq!(rows[0][1], "400", "{side}: {text}");
        assert!(rows[0][3].parse::<f64>().unwrap() > 0.0, "{side}: {text}");
        assert!(text.contains("Bidirectional   : ON"), "{side}: {text}");
    }
    assert!(cli.contains("data check      : OK"), "{cli}");
    assert!(srv.contains("data check: OK"), "{srv}");
}

#[test]
fn report_both_shows_each_direction() {
    for persona in ["write-bw", "read-bw", "send-bw"] {
        let port = free_port().to_string();
        let (srv, cli) = pair(
            persona,
            &args(&port, &["-b", "--report-both", "--bind", "::1"]),
            &[&["::1"][..], &args(&port, &["-b", "--report-both"])].concat(),
        );
        for (side, text) in [("client", &cli), ("server", &srv)] {
            let rows = bw_rows(text);
            assert_eq!(rows.len(), 2, "{persona} {side}: {text}");
            let dirs: Vec<&str> = rows.iter().map(|r| r.last().unwrap().as_str()).collect();
            assert_eq!(dirs, ["TX", "RX"], "{persona} {side}: {text}");
            for r in &rows {
                assert_eq!(r[1], "200", "{persona} {side}: {text}");
            }
        }
        let port = free_port().to_string();
        let (srv, cli) = pair(
            persona,
            &args(
                &port,
                &["-b", "--report-both", "--json", "--bind", "127.0.0.1"],
            ),
            &[
                &["127.0.0.1"][..],
                &args(&port, &["-b", "--report-both", "--json"]),
            ]
            .concat(),
        );
        for (side, doc) in [
            ("client", json(&cli, "client")),
            ("server", json(&srv, "server")),
        ] {
            let rows = doc["results"].as_array().expect("results");
            let dirs: Vec<&str> = rows
                .iter()
                .map(|r| r["direction"].as_str().unwrap())
                .collect();
            assert_eq!(dirs, ["tx", "rx"], "{persona} {side}: {doc}");
            for r in rows {
                assert_eq!(r["n_iterations"], 200, "{persona} {side}: {r}");
                assert!(r["BW_average"].as_f64().unwrap() > 0.0, "{persona} {side}");
            }
        }
    }
}

#[test]
fn report_unsorted_prints_every_sample() {
    for persona in ["write-lat", "send-lat", "read-lat"] {
        let port = free_port().to_string();
        let common = ["-p", port.as_str(), "-n", "37", "--timeout", "30"];
        let mut c = vec!["127.0.0.1", "-U"];
        c.extend(common);
        let (_, cli) = pair(persona, &common, &c);
        let at = cli
            .find("#, usec")
            .unwrap_or_else(|| panic!("{persona}: {cli}"));
        let samples: Vec<(u64, f64)> = cli[at..]
            .lines()
            .skip(1)
            .filter_map(|l| {
                let (i, v) = l.split_once(", ")?;
                Some((i.trim().parse().ok()?, v.trim().parse().ok()?))
            })
            .collect();
        assert_eq!(samples.len(), 37, "{persona}: {cli}");
        for (k, (i, v)) in samples.iter().enumerate() {
            assert_eq!(*i, k as u64 + 1, "{persona}: {cli}");
            assert!(*v > 0.0, "{persona}: {cli}");
        }

        let port = free_port().to_string();
        let common = ["-p", port.as_str(), "-n", "23", "--timeout", "30"];
        let mut c = vec!["::1", "-U", "--json"];
        c.extend(common);
        let mut s = vec!["--bind", "::1"];
        s.extend(common);
        let (_, cli) = pair(persona, &s, &c);
        let doc = json(&cli, persona);
        let row = &doc["results"][0];
        let samples = row["samples_usec"]
            .as_array()
            .unwrap_or_else(|| panic!("{persona}: {doc}"));
        assert_eq!(samples.len(), 23, "{persona}: {doc}");
        assert_eq!(row["n_iterations"], 23, "{persona}: {doc}");
        let max = row["t_max"].as_f64().unwrap();
        for v in samples {
            let v = v.as_f64().expect("a number");
            assert!(v > 0.0 && v <= max * 1.01, "{persona}: {v} vs t_max {max}");
        }
    }
}

/// `-b` on one side only: the server says so and both fail, instead of a run that measures
/// something else than asked.
#[test]
fn bidirectional_on_one_side_only_is_refused() {
    let port = free_port().to_string();
    let (srv, _, errs) = start(&[
        "write-bw",
        "-p",
        &port,
        "--bind",
        "127.0.0.1",
        "--timeout",
        "10",
    ]);
    let out = Command::new(ND)
        .args([
            "write-bw",
            "127.0.0.1",
            "-p",
            &port,
            "-b",
            "--timeout",
            "10",
        ])
        .output()
        .expect("run nd client");
    assert!(!out.status.success());
    let srv = srv.wait_with_output().expect("server exits");
    let err: Vec<String> = errs.iter().collect();
    let err = err.join("\n");
    assert!(!srv.status.success(), "{err}");
    assert!(
        err.contains(
            "the client runs write_bw -b, this server write_bw; pass the same flags to both"
        ),
        "{err}"
    );
    assert!(err.contains("STATUS_INVALID_PARAMETER"), "{err}");
}

/// A sweep (`-a`) of `-b` Sends: the largest sizes leave a ring of few receives, which the
/// peer's control messages after its last Send wrap around; the last message must still be
/// checked as it arrived.
#[test]
fn bidirectional_send_sweep_checks_every_size() {
    let port = free_port().to_string();
    let common = [
        "-a",
        "-n",
        "20",
        "-b",
        "-p",
        port.as_str(),
        "--timeout",
        "30",
        "--json",
    ];
    let mut s = vec!["--bind", "127.0.0.1"];
    s.extend(common);
    let mut c = vec!["127.0.0.1"];
    c.extend(common);
    let (srv, cli) = pair("send-bw", &s, &c);
    let (srv, cli) = (json(&srv, "server"), json(&cli, "client"));
    assert_eq!(cli["test_info"]["data_verified"], true, "{cli}");
    assert_eq!(srv["data_verified"], true, "{srv}");
    assert_eq!(cli["results"].as_array().map(Vec::len), Some(23), "{cli}");
    assert_eq!(srv["results"].as_array().map(Vec::len), Some(23), "{srv}");
}

/// `-U` with perftest's exchange (`-R`): as many samples as the row counts.
#[test]
fn report_unsorted_with_rdma_cm() {
    let port = free_port().to_string();
    let common = ["-R", "-n", "15", "-p", port.as_str(), "--timeout", "30"];
    let mut s = vec!["--bind", "::1"];
    s.extend(common);
    let mut c = vec!["::1", "-U", "--json"];
    c.extend(common);
    let (_, cli) = pair("send-lat", &s, &c);
    let doc = json(&cli, "send-lat -R -U");
    let row = &doc["results"][0];
    let n = row["n_iterations"].as_u64().expect("n_iterations");
    assert!(n >= 14, "{doc}");
    assert_eq!(
        row["samples_usec"].as_array().map(Vec::len),
        Some(n as usize),
        "{doc}"
    );
}
