//! Every `--json` output is ONE valid JSON document (client and server of every persona, `-R`
//! included, and `nd info`, `nd dma`, `nd scale`), and `--json-lines` is JSON Lines: every line
//! one document, `listening` first on a server, a `row` per size on a client, the `report` last.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

mod common;

use common::{ND, free_port};

/// Starts `nd args` and waits for a line saying "listening" on stderr (where a `--json` server
/// says it, its stdout holding only the report).
fn json_server(args: &[&str]) -> Child {
    let mut child = Command::new(ND)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nd server");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{args:?}: no 'listening' on stderr"));
        if line.contains("listening") {
            break;
        }
    }
    child
}

/// Parses `text` as exactly one JSON document (serde_json refuses trailing content).
fn one_document(text: &str, what: &str) -> Value {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{what}: not one JSON document ({e}):\n{text}"))
}

/// Server and client of `persona` with `--json`: both stdouts are one document each.
fn both(persona: &str, server: &[&str], client: &[&str]) -> (Value, Value) {
    let mut s = vec![persona];
    s.extend_from_slice(server);
    let srv = json_server(&s);
    let mut c = vec![persona];
    c.extend_from_slice(client);
    let out = Command::new(ND).args(&c).output().expect("run nd client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{c:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let srv = srv.wait_with_output().expect("server exits");
    let srv_out = String::from_utf8_lossy(&srv.stdout).into_owned();
    assert!(srv.status.success(), "{s:?}: {srv_out}");
    (
        one_document(&srv_out, &format!("{s:?}")),
        one_document(&stdout, &format!("{c:?}")),
    )
}

#[test]
fn every_perftest_persona_prints_one_json_document() {
    for persona in [
        "write-bw",
        "read-bw",
        "send-bw",
        "write-lat",
        "read-lat",
        "send-lat",
    ] {
        let port = free_port().to_string();
        let common = [
            "-p",
            port.as_str(),
            "-n",
            "10",
            "-s",
            "64",
            "--timeout",
            "30",
            "--json",
        ];
        let mut cargs = vec!["127.0.0.1"];
        cargs.extend(common);
        let (srv, cli) = both(persona, &common, &cargs);
        assert_eq!(srv["role"], "server", "{persona}");
        assert_eq!(srv["data_verified"], true, "{persona}: {srv}");
        assert!(srv["listening"].as_array().is_some_and(|l| !l.is_empty()));
        assert_eq!(cli["test_info"]["data_verified"], true, "{persona}");
        assert_eq!(cli["results"][0]["MsgSize"], 64, "{persona}");
        assert!(
            cli["results"][0]["n_iterations"].is_u64(),
            "{persona}: {cli}"
        );
    }
}

#[test]
fn perftest_rdma_cm_json_is_one_document() {
    for persona in ["write-bw", "send-lat"] {
        let port = free_port().to_string();
        let common = [
            "-R",
            "-p",
            port.as_str(),
            "-n",
            "10",
            "-s",
            "64",
            "--timeout",
            "30",
            "--json",
        ];
        let mut cargs = vec!["127.0.0.1"];
        cargs.extend(common);
        let (srv, cli) = both(persona, &common, &cargs);
        assert_eq!(srv["rdma_cm"], true, "{persona}");
        assert!(srv["data_verified"].is_null(), "{persona}: {srv}");
        assert!(
            cli["test_info"]["data_verified"].is_null(),
            "{persona}: {cli}"
        );
        assert!(srv["results"][0]["MsgSize"].is_u64(), "{persona}: {srv}");
        assert!(cli["results"][0]["MsgSize"].is_u64(), "{persona}: {cli}");
    }
}

#[test]
fn every_nd_persona_prints_one_json_document() {
    for persona in [
        "ping",
        "pingpong",
        "rping",
        "rpingpong",
        "wping",
        "wpingpong",
    ] {
        let addr = format!("127.0.0.1:{}", free_port());
        let (srv, cli) = both(
            persona,
            &["-s", &addr, "--json", "--timeout", "30"],
            &[
                "-c",
                &addr,
                "--json",
                "--timeout",
                "30",
                "--iters",
                "5",
                "--max-size",
                "8",
                "--warmup",
                "2",
            ],
        );
        assert_eq!(srv["role"], "server", "{persona}");
        assert_eq!(srv["data_verified"], true, "{persona}");
        assert_eq!(cli["data_verified"], true, "{persona}");
        assert_eq!(
            cli["results"].as_array().map(Vec::len),
            Some(4),
            "{persona}: {cli}"
        );
    }
}

/// Every line of `text` is a JSON document; returns them.
fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[test]
fn json_lines_are_named_and_ordered() {
    for (persona, server, client) in [
        ("write-bw", vec![], vec!["127.0.0.1"]),
        ("ping", vec!["-s"], vec!["-c"]),
    ] {
        let port = free_port().to_string();
        let nd = persona == "ping";
        let addr = format!("127.0.0.1:{port}");
        let mut sargs = vec![persona];
        sargs.extend(server);
        if nd {
            sargs.push(&addr);
        } else {
            sargs.extend(["-p", &port]);
        }
        sargs.extend(["--json-lines", "--timeout", "30"]);
        let mut srv = Command::new(ND)
            .args(&sargs)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server");
        let mut srv_out = BufReader::new(srv.stdout.take().unwrap());
        let mut first = String::new();
        srv_out.read_line(&mut first).unwrap();
        let listening: Value = serde_json::from_str(&first).expect("a JSON line");
        assert_eq!(listening["event"], "listening", "{first}");
        let mut cargs = vec![persona];
        cargs.extend(client);
        if nd {
            cargs.extend([
                addr.as_str(),
                "--iters",
                "5",
                "--max-size",
                "4",
                "--warmup",
                "2",
            ]);
        } else {
            cargs.extend(["-p", &port, "-a", "-n", "5"]);
        }
        cargs.extend(["--json-lines", "--timeout", "30", "--quiet"]);
        let out = Command::new(ND).args(&cargs).output().expect("run client");
        assert!(out.status.success(), "{cargs:?}");
        let got = lines(&String::from_utf8_lossy(&out.stdout));
        let sizes = if nd { 3 } else { 23 };
        assert_eq!(got.len(), sizes + 1, "{persona}: {got:?}");
        for row in &got[..sizes] {
            assert_eq!(row["event"], "row", "{row}");
        }
        assert_eq!(got[sizes]["event"], "report");
        let mut rest = String::new();
        srv_out.read_to_string(&mut rest).unwrap();
        assert!(srv.wait().unwrap().success());
        let got = lines(&rest);
        assert_eq!(got.len(), 1, "{rest}");
        assert_eq!(got[0]["event"], "report");
        assert_eq!(got[0]["data_verified"], true);
    }
}

#[test]
fn info_dma_and_scale_print_one_json_document() {
    for args in [
        &["info", "--json"][..],
        &["dma", "--quick", "--json", "--max-size", "8192", "-c", "1"][..],
        &[
            "scale", "--json", "--qps", "20", "--base", "4", "--iters", "20", "--settle", "0",
        ][..],
    ] {
        let out = Command::new(ND).args(args).output().expect("run nd");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = one_document(&stdout, &format!("{args:?}"));
        assert!(v.is_object(), "{args:?}: {v}");
    }
}
