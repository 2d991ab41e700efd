//! `nd rping-compat -s` and `-c` talk to each other on 127.0.0.1 and ::1 with `-V`: rping's
//! protocol (advertise, read, go ahead, advertise, write, done) and its data. Loopback only.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;

use common::{ND, free_port};

/// Server and client over `addr`; returns (client stdout, server stdout).
fn pair(addr: &str, size: &str, count: &str) -> (String, String) {
    pair_at(addr, addr, size, count)
}

/// Server listening on `listen` (maybe a wildcard), client connecting to `addr`.
fn pair_at(listen: &str, addr: &str, size: &str, count: &str) -> (String, String) {
    let port = free_port().to_string();
    let common = ["-p", &port, "-v", "-V", "--timeout", "30"];
    let mut srv = Command::new(ND)
        .args(["rping-compat", "-s", "-a", listen, "-d"])
        .args(common)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let stderr = srv.stderr.take().unwrap();
    // Read stdout while the server runs: -v lines of 64 KiB would fill the pipe.
    let mut stdout = srv.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server's 'listening' line");
        if line.contains("listening on") {
            break;
        }
    }
    let out = Command::new(ND)
        .args(["rping-compat", "-c", "-a", addr, "-S", size, "-C", count])
        .args(common)
        .output()
        .expect("run the client");
    let status = srv.wait().unwrap();
    let srv_out = reader.join().unwrap();
    // The server has exited, but its last stderr lines may still be on their way through the
    // forwarding thread: read until it hangs up (EOF), not just what has arrived so far (that
    // lost the final "DISCONNECT EVENT" line about one run in five under load).
    let mut srv_err = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => srv_err.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("the server's stderr stays open"),
        }
    }
    let cli_out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "client failed: {}\n{cli_out}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.success(), "server failed: {srv_err:?}\n{srv_out}");
    assert!(
        srv_err
            .iter()
            .any(|l| l.contains("server DISCONNECT EVENT")),
        "{srv_err:?}"
    );
    (cli_out, srv_out)
}

fn check(addr: &str, size: usize, count: usize) {
    let (cli, srv) = pair(addr, &size.to_string(), &count.to_string());
    let lines: Vec<&str> = cli.lines().collect();
    assert_eq!(lines.len(), count, "{cli}");
    let slines: Vec<&str> = srv.lines().collect();
    assert_eq!(slines.len(), count, "{srv}");
    for (i, (c, s)) in lines.iter().zip(&slines).enumerate() {
        let head = format!("rdma-ping-{i}: ");
        let start = b'A' + (i % 58) as u8;
        assert!(
            c.starts_with(&format!("ping data: {head}{}", start as char)),
            "{c}"
        );
        assert_eq!(c.len(), "ping data: ".len() + size - 1, "{c}");
        assert_eq!(s.strip_prefix("server ").unwrap(), *c);
    }
}

#[test]
fn rping_compat_v4() {
    check("127.0.0.1", 64, 10);
    check("127.0.0.1", 65535, 3);
}

/// rping's `-a ::0` (and `0.0.0.0`) listens on every local address: reached over ::1 and
/// 127.0.0.1.
#[test]
fn rping_compat_wildcard_listen() {
    for (listen, addr) in [
        ("::0", "::1"),
        ("::", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),
    ] {
        let (cli, _) = pair_at(listen, addr, "64", "2");
        assert_eq!(cli.lines().count(), 2, "{listen} via {addr}: {cli}");
    }
}

#[test]
fn rping_compat_v6() {
    check("::1", 64, 60);
    check("::1", 4000, 3);
}

#[test]
fn rping_compat_bad_size() {
    let out = Command::new(ND)
        .args(["rping-compat", "-c", "-a", "127.0.0.1", "-S", "25"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Invalid size 25 (valid range is 26 to 65535)")
    );
}
