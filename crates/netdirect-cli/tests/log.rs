//! `nd`'s log: `-v`/`-vv` and `RUST_LOG` turn on the provider's `tracing` events, written to
//! stderr only, so `--json` output on stdout still parses; without either, nothing is logged.
//! 127.0.0.1 and ::1.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

mod common;

use common::{ND, free_port};

/// Starts `nd` with `args` and `RUST_LOG` as `rust_log` says (unset: `None`), waits for its
/// "listening" banner (a `--json` server says where it listens on stderr, so that stdout holds
/// only the report); returns the child and the lines of stderr read so far plus a thread that
/// collects the rest.
fn server(
    args: &[&str],
    rust_log: Option<&str>,
) -> (Child, String, std::thread::JoinHandle<String>) {
    let mut cmd = Command::new(ND);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    match rust_log {
        Some(v) => cmd.env("RUST_LOG", v),
        None => cmd.env_remove("RUST_LOG"),
    };
    let mut child = cmd.spawn().expect("spawn nd server");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server banner: {seen}"
        );
        seen.push_str(&line);
    }
    // The rest of stdout (the server's report) drains in the background.
    let mut stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    (child, seen, rest)
}

/// Runs a write-bw server and client with `pre` before the command and `RUST_LOG` as
/// `rust_log` says on both; returns the client's stdout and stderr and the server's stderr.
fn run(pre: &[&str], rust_log: Option<&str>, host: &str) -> (String, String, String) {
    let port = free_port().to_string();
    let tail = ["-p", port.as_str(), "-n", "10", "--timeout", "30", "--json"];
    let mut sargs: Vec<&str> = pre.to_vec();
    sargs.push("write-bw");
    sargs.extend_from_slice(&tail);
    let mut cargs: Vec<&str> = pre.to_vec();
    cargs.extend_from_slice(&["write-bw", host]);
    cargs.extend_from_slice(&tail);
    let (mut srv, mut serr, rest) = server(&sargs, rust_log);
    let mut client = Command::new(ND);
    client.args(&cargs);
    match rust_log {
        Some(v) => client.env("RUST_LOG", v),
        None => client.env_remove("RUST_LOG"),
    };
    let out = client.output().expect("run nd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(srv.wait().unwrap().success());
    serr.push_str(&rest.join().expect("stderr reader"));
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        serr,
    )
}

fn json_only(stdout: &str) {
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is one JSON document ({e}): {stdout}"));
    assert!(v.is_object(), "{v}");
}

#[test]
fn verbose_logs_to_stderr_and_json_stays_clean() {
    for host in ["127.0.0.1", "::1"] {
        let (out, err, serr) = run(&["-vv"], None, host);
        json_only(&out);
        for e in [&err, &serr] {
            assert!(e.contains("adapter opened"), "{e}");
            assert!(e.contains("MPA established"), "{e}");
            assert!(e.contains("mpa_rev=2"), "{e}");
            // -vv is debug: the TCP connect is there too (on the active side).
        }
        assert!(err.contains("TCP connected"), "{err}");
        assert!(serr.contains("MPA request received"), "{serr}");
    }
}

#[test]
fn rust_log_alone_turns_the_log_on_and_nothing_logs_without_it() {
    let (out, err, _) = run(&[], Some("netdirect_soft=info"), "127.0.0.1");
    json_only(&out);
    assert!(err.contains("MPA established"), "{err}");
    assert!(!err.contains("TCP connected"), "info only: {err}");
    let (out, err, serr) = run(&[], Some(""), "::1");
    json_only(&out);
    assert!(!err.contains("MPA established"), "{err}");
    assert!(!serr.contains("MPA established"), "{serr}");
}
