//! perftest's `-e`: completions waited for by CQ notification instead of busy polling, on both
//! sides, IPv4 and IPv6; the run completes with its data checked.

use std::process::Command;

mod common;

use common::{ND, free_port, server};

#[test]
fn events_mode_runs_every_persona_that_has_it() {
    for (persona, host) in [
        ("send-lat", "127.0.0.1"),
        ("read-lat", "::1"),
        ("send-bw", "::1"),
        ("write-bw", "127.0.0.1"),
        ("read-bw", "127.0.0.1"),
    ] {
        let port = free_port().to_string();
        let opts = ["-p", port.as_str(), "-n", "200", "-e", "--timeout", "30"];
        let mut sargs = vec![persona, "--bind", host];
        sargs.extend(opts);
        let (mut srv, lines) = server(&sargs);
        let mut cargs = vec![persona, host];
        cargs.extend(opts);
        let out = Command::new(ND).args(&cargs).output().expect("run nd");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{cargs:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("data check      : OK"), "{stdout}");
        assert!(srv.wait().unwrap().success(), "{persona} server");
        assert!(
            lines.iter().any(|l| l.contains("data check: OK")),
            "{persona} server"
        );
    }
}

/// perftest's `--use-srq`: the Send personas' receives come from a shared receive queue, on
/// both sides, one QP or several, IPv4 and IPv6; refused with -R.
#[test]
fn use_srq_runs_the_send_personas() {
    for (persona, host, extra) in [
        ("send-bw", "127.0.0.1", &["-q", "2"][..]),
        ("send-lat", "::1", &[][..]),
        ("send-bw", "::1", &["-s", "300000", "-t", "8"][..]),
    ] {
        let port = free_port().to_string();
        let mut opts = vec![
            "-p",
            port.as_str(),
            "-n",
            "200",
            "--use-srq",
            "--timeout",
            "30",
        ];
        opts.extend(extra);
        let mut sargs = vec![persona, "--bind", host];
        sargs.extend(&opts);
        let (mut srv, lines) = server(&sargs);
        let mut cargs = vec![persona, host];
        cargs.extend(&opts);
        let out = Command::new(ND).args(&cargs).output().expect("run nd");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{cargs:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("Using SRQ      : ON"), "{stdout}");
        assert!(stdout.contains("data check      : OK"), "{stdout}");
        assert!(srv.wait().unwrap().success(), "{persona} server");
        assert!(
            lines.iter().any(|l| l.contains("data check: OK")),
            "{persona} server"
        );
    }
    let out = Command::new(ND)
        .args(["send-bw", "127.0.0.1", "-R", "--use-srq"])
        .output()
        .expect("run nd");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("STATUS_NOT_SUPPORTED"));
}

/// CPU time (user + system, in clock ticks) of a process's main thread so far.
fn main_thread_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A server whose QPs have nothing to do in a measurement but wait for its end sleeps on its
/// CQ's notification instead of busy polling: a read-bw target of 64 KiB reads or more (the
/// provider answers the reads without it, as perftest's server leaves them to the RNIC), and a
/// one-QP target with `-e`. Its main thread's CPU time over a second of the run stays near
/// zero; a busy poller (what both did before) took a whole CPU here.
#[test]
fn a_target_with_nothing_to_do_sleeps_through_the_measurement() {
    for (persona, extra) in [("read-bw", &[][..]), ("write-bw", &["-e"][..])] {
        let port = free_port().to_string();
        let mut opts = vec![
            "-p",
            port.as_str(),
            "-D",
            "3",
            "-s",
            "65536",
            "--timeout",
            "30",
        ];
        opts.extend(extra);
        let mut sargs = vec![persona, "--bind", "127.0.0.1"];
        sargs.extend(&opts);
        let (mut srv, _lines) = server(&sargs);
        let mut cargs = vec![persona, "127.0.0.1"];
        cargs.extend(&opts);
        let client = Command::new(ND)
            .args(&cargs)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run nd");
        // Inside the measurement (the client's -D 3 starts within a second).
        std::thread::sleep(std::time::Duration::from_millis(1200));
        let before = main_thread_ticks(srv.id());
        std::thread::sleep(std::time::Duration::from_millis(1000));
        let spent = main_thread_ticks(srv.id()) - before;
        let out = client.wait_with_output().expect("client");
        assert!(
            out.status.success(),
            "{cargs:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(srv.wait().unwrap().success(), "{persona} server");
        // Clock ticks are 10 ms: a sleeping thread spends at most a tick or two on wakeups.
        assert!(
            spent <= 3,
            "{persona} {extra:?}: the server's main thread used {spent} ticks of CPU in 1 s"
        );
    }
}
