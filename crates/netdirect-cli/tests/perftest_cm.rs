//! End-to-end: the built `nd` binary as server and client of every perftest persona with
//! `-R` (perftest's rdma_cm exchange, `src/perftest_cm.rs`) on 127.0.0.1, and a mismatched
//! pair refused with a clear error. Only loopback is ever contacted.

use std::net::TcpListener;
use std::process::Command;

mod common;

use common::{ND, server};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs server and client; returns (client ok, client stdout+stderr, server ok, server output).
fn run(sargs: &[&str], cargs: &[&str]) -> (bool, String, bool, String) {
    let mut sargs = sargs.to_vec();
    sargs.extend(["--bind_source_ip", "127.0.0.1", "--timeout", "20"]);
    let (mut srv, lines) = server(&sargs);
    let out = Command::new(ND)
        .args(cargs)
        .args(["--timeout", "20"])
        .output()
        .expect("run nd client");
    let status = srv.wait().unwrap();
    let mut srv_out: Vec<String> = lines.iter().collect();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut srv.stderr.take().unwrap(), &mut err).unwrap();
    srv_out.push(err);
    let client = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let server = srv_out.join("\n");
    assert!(!client.contains("panicked") && !server.contains("panicked"));
    (out.status.success(), client, status.success(), server)
}

/// A result row: size, then iterations.
fn has_row(out: &str, size: &str, iters: &str) -> bool {
    out.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 5 && f[0] == size && f[1] == iters
    })
}

fn pair(persona: &str) {
    let port = free_port().to_string();
    let bw = persona.ends_with("bw");
    let size = if bw { "4096" } else { "2" };
    let opts = ["-R", "-p", &port, "-n", "20", "-s", size];
    let mut sargs = vec![persona];
    sargs.extend_from_slice(&opts);
    let mut cargs = vec![persona, "127.0.0.1", "--quiet"];
    cargs.extend_from_slice(&opts);
    let (cok, client, sok, server) = run(&sargs, &cargs);
    assert!(cok, "client failed: {client}");
    assert!(sok, "server failed: {server}");
    assert!(client.contains("Data ex. method : rdma_cm"), "{client}");
    // Latency rows count intervals between posts: one fewer than the iterations.
    let iters = if bw || persona == "read-lat" {
        "20"
    } else {
        "19"
    };
    assert!(has_row(&client, size, iters), "client: {client}");
    match persona {
        // perftest's server prints nothing of its own for read_lat.
        "read-lat" => assert!(server.contains("served its RDMA reads"), "{server}"),
        // The client's report, sent over the control connection.
        "write-bw" | "read-bw" => {
            assert!(has_row(&server, size, "20"), "server: {server}");
            assert!(server.contains("the client's figures"), "{server}");
        }
        _ => assert!(has_row(&server, size, iters), "server: {server}"),
    }
}

macro_rules! personas {
    ($($name:ident => $persona:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                pair($persona);
            }
        )*
    };
}

personas! {
    write_bw => "write-bw",
    read_bw => "read-bw",
    send_bw => "send-bw",
    write_lat => "write-lat",
    read_lat => "read-lat",
    send_lat => "send-lat",
}

#[test]
fn mismatched_tests_are_refused() {
    let port = free_port().to_string();
    let (cok, client, sok, server) = run(
        &["write-bw", "-R", "-p", &port, "-n", "20"],
        &[
            "read-bw",
            "127.0.0.1",
            "-R",
            "-p",
            &port,
            "-n",
            "20",
            "--quiet",
        ],
    );
    assert!(!cok && !sok, "client: {client}\nserver: {server}");
    assert!(
        server.contains("pass the same test to both"),
        "server: {server}"
    );
}

#[test]
fn unsupported_options_are_refused() {
    let out = Command::new(ND)
        .args(["write-bw", "-R", "-a", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("-R: one message size"));
}
