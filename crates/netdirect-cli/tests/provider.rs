//! `--provider`: `soft` runs every kind of command (a perftest persona on 127.0.0.1 and ::1, an
//! nd persona, `nd info`); `verbs`, which this build does not include, fails every command
//! that opens an adapter with one line naming why and `STATUS_NOT_SUPPORTED`, exit status 1;
//! a name that is neither is a usage error (exit 2). The same for `ndk-conformance`, which
//! runs the provider-independent NDK suite and must pass it whole on soft.

use std::process::{Command, Output};

mod common;

use common::{ND, free_port, server};

const CONFORMANCE: &str = env!("CARGO_BIN_EXE_ndk-conformance");

fn run(bin: &str, args: &[&str]) -> (Output, String, String) {
    run_env(bin, args, &[])
}

/// [`run`] with environment variables set.
fn run_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> (Output, String, String) {
    let o = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    (o, stdout, stderr)
}

/// Server and client of `persona` on `host` with `--provider soft`; both report good data.
fn soft_pair(persona: &str, host: &str) {
    let port = free_port().to_string();
    let common = [
        "-p",
        &port,
        "--timeout",
        "30",
        "-n",
        "20",
        "--provider",
        "soft",
    ];
    let mut sargs = vec![persona];
    sargs.extend(common);
    let (mut srv, lines) = server(&sargs);
    let mut cargs = vec![persona, host];
    cargs.extend(common);
    let (o, stdout, stderr) = run(ND, &cargs);
    assert!(srv.wait().unwrap().success());
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("data check      : OK"), "{stdout}");
    let srv_out: Vec<String> = lines.iter().collect();
    assert!(
        srv_out.iter().any(|l| l.contains("data check: OK")),
        "{srv_out:?}"
    );
}

#[test]
fn provider_soft_runs_personas_on_both_families() {
    soft_pair("write-bw", "127.0.0.1");
    soft_pair("read-lat", "::1");
}

#[test]
fn provider_soft_runs_an_nd_persona() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let common = ["--size", "4096", "--iters", "4", "--provider", "soft"];
    let mut sargs = vec!["ping", "-s", &addr, "--timeout", "30"];
    sargs.extend(common);
    let (mut srv, _lines) = server(&sargs);
    let mut cargs = vec!["ping", "-c", &addr];
    cargs.extend(common);
    let (o, stdout, stderr) = run(ND, &cargs);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(srv.wait().unwrap().success());
}

/// The one-line refusal of the verbs provider where it cannot run: rdma-core missing (forced
/// here by pointing the provider at a library that does not exist: `STATUS_NOT_SUPPORTED`
/// naming the file) and, as this machine is (no RDMA device; or no rdma-core at all), without
/// the override. Nothing listens or connects first.
fn assert_verbs_refused(bin: &str, args: &[&str]) {
    let missing = [("NETDIRECT_VERBS_LIBIBVERBS", "/nonexistent/libibverbs.so.1")];
    let (o, stdout, stderr) = run_env(bin, args, &missing);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {stdout}\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(
        stderr.contains("the verbs provider is not available")
            && stderr.contains("/nonexistent/libibverbs.so.1")
            && stderr.ends_with("STATUS_NOT_SUPPORTED (0xC00000BB)\n"),
        "{args:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"));
    if std::path::Path::new("/sys/class/infiniband").exists() {
        return; // an RDMA device may exist here: the provider would open
    }
    let (o, stdout, stderr) = run(bin, args);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {stdout}\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(
        stderr.contains("the verbs provider is not available")
            && (stderr.ends_with("STATUS_NOT_SUPPORTED (0xC00000BB)\n")
                || (stderr.contains("no RDMA device")
                    && stderr.ends_with("STATUS_INVALID_ADDRESS (0xC0000141)\n"))),
        "{args:?}: {stderr}"
    );
}

#[test]
fn provider_verbs_without_rdma_core_or_device_is_refused_with_the_reason() {
    let port = free_port().to_string();
    assert_verbs_refused(ND, &["info", "--provider", "verbs"]);
    assert_verbs_refused(ND, &["write-bw", "--provider", "verbs", "-p", &port]);
    assert_verbs_refused(
        ND,
        &["send-bw", "127.0.0.1", "--provider", "verbs", "-p", &port],
    );
    assert_verbs_refused(
        ND,
        &[
            "rping-compat",
            "-s",
            "-a",
            "127.0.0.1",
            "-p",
            &port,
            "--provider",
            "verbs",
        ],
    );
    assert_verbs_refused(
        ND,
        &[
            "ping",
            "-s",
            &format!("127.0.0.1:{port}"),
            "--provider",
            "verbs",
        ],
    );
    assert_verbs_refused(CONFORMANCE, &["--provider", "verbs", "-a", "127.0.0.1"]);
}

#[test]
fn unknown_provider_is_a_usage_error() {
    for (bin, args) in [
        (ND, &["write-bw", "127.0.0.1", "--provider", "bogus"][..]),
        (ND, &["info", "--provider", "bogus"][..]),
        (CONFORMANCE, &["--provider", "bogus"][..]),
    ] {
        let (o, _, stderr) = run(bin, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("invalid value 'bogus' for '--provider <NAME>'")
                && stderr.contains("[possible values: soft, verbs]"),
            "{stderr}"
        );
    }
}

#[test]
fn info_names_the_provider_of_each_adapter() {
    let (o, stdout, stderr) = run(ND, &["info", "-a", "127.0.0.1", "-a", "::1", "--json"]);
    assert!(o.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let adapters = v["adapters"].as_array().unwrap();
    assert_eq!(adapters.len(), 2);
    for a in adapters {
        assert_eq!(a["Provider"], "soft", "{a}");
    }
    let (o, stdout, _) = run(ND, &["info", "--provider", "soft", "-a", "::1"]);
    assert!(o.status.success());
    assert!(
        stdout.starts_with("soft0: provider soft, address ::1\n"),
        "{stdout}"
    );
}

#[test]
fn ndk_conformance_passes_whole_on_soft() {
    let (o, stdout, stderr) = run(CONFORMANCE, &["--provider", "soft"]);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    let n = netdirect_conformance::CASES.len();
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("passed  ")).count(),
        2 * n,
        "{stdout}"
    );
    assert!(
        stdout.ends_with(&format!(
            "ndk-conformance: provider soft: {} passed, 0 skipped, 0 failed\n",
            2 * n
        )),
        "{stdout}"
    );
    // A filter runs the matching cases only; --list names them all.
    let (o, stdout, _) = run(CONFORMANCE, &["-a", "::1", "data_path"]);
    assert!(o.status.success());
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.starts_with("passed  data_path on ::1 "), "{stdout}");
    let (_, stdout, _) = run(CONFORMANCE, &["--list"]);
    assert_eq!(stdout.lines().count(), n);
}
