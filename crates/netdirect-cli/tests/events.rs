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
