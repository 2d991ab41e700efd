//! A perftest persona's `-a` sweep prints each row as its size completes (as perftest does),
//! and Ctrl-C ends it with the rows measured so far on stdout, `STATUS_CANCELLED`, and a clean
//! disconnect the server ends normally on. (The ND personas' streaming and Ctrl-C are in
//! tests/dead_peer.rs.)

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{ND, free_port, server};

fn is_row(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.len() == 5 && words.iter().all(|w| w.parse::<f64>().is_ok())
}

#[test]
fn perftest_rows_stream_and_ctrl_c_keeps_them() {
    for host in ["127.0.0.1", "::1"] {
        let port = free_port().to_string();
        let opts = ["-p", port.as_str(), "-a", "-D", "0.3", "--timeout", "60"];
        let mut sargs = vec!["write-bw", "--bind", host];
        sargs.extend(opts);
        let (mut srv, _) = server(&sargs);
        let mut cargs = vec!["write-bw", host];
        cargs.extend(opts);
        let started = Instant::now();
        let mut cli = Command::new(ND)
            .args(&cargs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(cli.stdout.take().unwrap()).lines();
        // 23 sizes of 0.3 s each: the first two rows come long before the end.
        let mut seen = Vec::new();
        while seen.iter().filter(|l: &&String| is_row(l)).count() < 2 {
            seen.push(lines.next().expect("a row").unwrap());
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{host}: rows came only after {:?}: {seen:?}",
            started.elapsed()
        );
        assert!(
            seen.iter().any(|l| l.contains("BW peak[MiB/sec]")),
            "{host}: the header comes first: {seen:?}"
        );
        let pid = cli.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(sent.success());
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let status = cli.wait().unwrap();
        let mut err = String::new();
        cli.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_eq!(status.code(), Some(1), "{host}: {seen:?} {rest:?} {err}");
        assert!(err.contains("interrupted (Ctrl-C)"), "{host}: {err}");
        assert!(err.contains("STATUS_CANCELLED"), "{host}: {err}");
        let rows = seen.iter().chain(&rest).filter(|l| is_row(l)).count();
        assert!(
            (2..23).contains(&rows),
            "{host}: {rows} rows: {seen:?} {rest:?}"
        );
        let start = Instant::now();
        let srv_status = loop {
            if let Some(s) = srv.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{host}: the server still runs after the client's Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(srv_status.success(), "{host}: the server ends normally");
    }
}

/// `--run_infinitely`: the one size again and again, a row every -D seconds, until Ctrl-C,
/// which is then the run's normal end (exit status 0), and the server ends normally too.
#[test]
fn run_infinitely_prints_rows_until_ctrl_c() {
    let port = free_port().to_string();
    let opts = [
        "-p",
        port.as_str(),
        "--run_infinitely",
        "-D",
        "0.2",
        "-s",
        "4096",
        "--timeout",
        "60",
    ];
    let mut sargs = vec!["send-bw", "--bind", "127.0.0.1"];
    sargs.extend(opts);
    let (mut srv, _) = server(&sargs);
    let mut cargs = vec!["send-bw", "127.0.0.1"];
    cargs.extend(opts);
    let mut cli = Command::new(ND)
        .args(&cargs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(cli.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while seen.iter().filter(|l: &&String| is_row(l)).count() < 3 {
        seen.push(lines.next().expect("a row").unwrap());
    }
    for row in seen.iter().filter(|l| is_row(l)) {
        assert_eq!(row.split_whitespace().next(), Some("4096"), "{row}");
    }
    let pid = cli.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = cli.wait().unwrap();
    let mut err = String::new();
    cli.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{seen:?} {rest:?} {err}");
    assert!(
        rest.iter().any(|l| l.contains("data check      : OK")),
        "{rest:?}"
    );
    let start = Instant::now();
    let srv_status = loop {
        if let Some(s) = srv.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the server still runs after the client's Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(srv_status.success(), "the server ends normally");
}
