//! `nd stat` against live `nd write-bw` processes: `--json` octets that grow between two
//! reads, `--prometheus` that passes a strict parser of the text exposition format (and
//! `promtool check metrics` when installed), and `--counters` on both sides of a run.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ND, free_port};

fn stat(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(ND)
        .arg("stat")
        .args(args)
        .env("NETDIRECT_STAT_DIR", dir)
        .output()
        .expect("run nd stat");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `counter` of `pid`'s adapter on 127.0.0.1, from `nd stat --json`.
fn octets(dir: &std::path::Path, pid: u32, counter: &str) -> Option<u64> {
    let v: serde_json::Value =
        serde_json::from_str(&stat(dir, &["--json", "--pid", &pid.to_string()])).unwrap();
    v["adapters"]
        .as_array()?
        .iter()
        .find(|a| a["adapter"] == "127.0.0.1")
        .and_then(|a| a["counters"][counter].as_u64())
}

/// Waits until `f` gives a value above zero.
fn positive(f: impl Fn() -> Option<u64>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().filter(|v| *v > 0) {
            return v;
        }
        assert!(Instant::now() < deadline, "counter stayed at zero");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn stat_reads_live_write_bw_octets_that_grow() {
    let dir = std::env::temp_dir().join(format!("nd-stat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port().to_string();
    let server = Command::new(ND)
        .args(["write-bw", "-p", &port, "--bind", "127.0.0.1", "--counters"])
        .env("NETDIRECT_STAT_DIR", &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let server_pid = server.id();
    // The server's adapter is published once it is open.
    let deadline = Instant::now() + Duration::from_secs(20);
    while octets(&dir, server_pid, "RDMAInOctets").is_none() {
        assert!(
            Instant::now() < deadline,
            "the server's counters were not published"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let client = Command::new(ND)
        .args([
            "write-bw",
            "127.0.0.1",
            "-p",
            &port,
            "-D",
            "4",
            "--quiet",
            "--counters",
        ])
        .env("NETDIRECT_STAT_DIR", &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client_pid = client.id();

    let s1 = positive(|| octets(&dir, server_pid, "RDMAInOctets"));
    let c1 = positive(|| octets(&dir, client_pid, "RDMAOutOctets"));
    // Two publications later.
    std::thread::sleep(Duration::from_millis(1200));
    let s2 = octets(&dir, server_pid, "RDMAInOctets").unwrap();
    let c2 = octets(&dir, client_pid, "RDMAOutOctets").unwrap();
    assert!(s2 > s1, "server RDMAInOctets {s1} -> {s2}");
    assert!(c2 > c1, "client RDMAOutOctets {c1} -> {c2}");

    // Prometheus text of both live processes.
    let text = stat(&dir, &["--prometheus"]);
    let families = check_exposition(&text);
    assert!(
        families.contains("netdirect_rdma_in_octets_total"),
        "{text}"
    );
    assert!(text.contains(&format!("pid=\"{server_pid}\"")), "{text}");
    promtool(&text);
    // --watch with rates, twice.
    let w = stat(
        &dir,
        &[
            "--watch",
            "0.6",
            "--count",
            "2",
            "--pid",
            &server_pid.to_string(),
        ],
    );
    assert_eq!(w.matches("nd stat — every").count(), 2, "{w}");
    assert!(w.contains("RDMAInOctets"), "{w}");

    let client = client.wait_with_output().unwrap();
    let server = server.wait_with_output().unwrap();
    assert!(client.status.success(), "{client:?}");
    assert!(server.status.success(), "{server:?}");
    // --counters: each side's deltas on stderr.
    let cerr = String::from_utf8_lossy(&client.stderr);
    let serr = String::from_utf8_lossy(&server.stderr);
    assert!(
        cerr.contains("counters of this run") && cerr.contains("RDMAOutOctets"),
        "{cerr}"
    );
    assert!(
        serr.contains("counters of this run") && serr.contains("RDMAInOctets"),
        "{serr}"
    );
    // Both processes removed their files.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `promtool check metrics` on `text` when promtool is installed (CI installs it; without it
/// the check is skipped unless `ND_TEST_REQUIRE_TOOLS` is set).
fn promtool(text: &str) {
    use std::io::Write as _;
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        assert!(
            std::env::var_os("ND_TEST_REQUIRE_TOOLS").is_none(),
            "promtool is not installed and ND_TEST_REQUIRE_TOOLS is set"
        );
        eprintln!("promtool not installed: only the strict parser checked the exposition");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn name_ok(s: &str, colon: bool) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || colon && f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || colon && x == ':')
}

/// Parses `name{l="v",...} value` strictly; returns the name and the labels.
fn sample(line: &str) -> Result<(String, Vec<(String, String)>), String> {
    let (name, mut rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return Err("no value".into()),
    };
    if !name_ok(name, true) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=').ok_or("label without =")?;
            let lname = &rest[..eq];
            if !name_ok(lname, false) || lname.starts_with("__") {
                return Err(format!("bad label name {lname:?}"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next().ok_or("unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    (_, '\n') => return Err("newline in label value".into()),
                    (_, c) => value.push(c),
                }
            };
            if labels.iter().any(|(n, _): &(String, String)| n == lname) {
                return Err(format!("label {lname} twice"));
            }
            labels.push((lname.to_string(), value));
            rest = &rest[end + 1..];
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if !rest.starts_with('}') {
                return Err("expected , or }".into());
            }
        }
    }
    let mut parts = rest
        .strip_prefix(' ')
        .ok_or("no space before value")?
        .split(' ');
    let value = parts.next().ok_or("no value")?;
    if value.parse::<f64>().is_err() && !["NaN", "+Inf", "-Inf"].contains(&value) {
        return Err(format!("bad value {value:?}"));
    }
    if let Some(ts) = parts.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if parts.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok((name.to_string(), labels))
}

/// Checks Prometheus' text exposition format (0.0.4) strictly: HELP and TYPE once per
/// family and before its samples, families contiguous, counters named `_total`, valid names,
/// labels and values, no sample twice. Returns the families.
fn check_exposition(text: &str) -> HashSet<String> {
    let mut done: HashSet<String> = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut seen = HashSet::new();
    assert!(text.is_empty() || text.ends_with('\n'), "no final newline");
    for (i, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", i + 1);
        let mut enter = |name: &str, current: &mut Option<String>| {
            if current.as_deref() != Some(name) {
                assert!(
                    !done.contains(name),
                    "{}",
                    at("family not contiguous".into())
                );
                if let Some(c) = current.take() {
                    done.insert(c);
                }
                *current = Some(name.to_string());
            }
        };
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(name_ok(name, true), "{}", at("bad name".into()));
            assert!(
                helps.insert(name.to_string()),
                "{}",
                at("HELP twice".into())
            );
            enter(name, &mut current);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split(' ');
            let (name, kind) = (w.next().unwrap(), w.next().unwrap_or(""));
            assert!(w.next().is_none(), "{}", at("extra words".into()));
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{}",
                at("bad type".into())
            );
            enter(name, &mut current);
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "{}",
                at("TYPE twice".into())
            );
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "{}",
                    at("counter without _total".into())
                );
            }
        } else if line.starts_with('#') {
            continue;
        } else {
            assert!(!line.trim().is_empty(), "{}", at("blank line".into()));
            let (name, labels) = sample(line).unwrap_or_else(|e| panic!("{}", at(e)));
            enter(&name, &mut current);
            assert!(
                types.contains_key(&name),
                "{}",
                at("sample before its TYPE".into())
            );
            let mut key = labels.clone();
            key.sort();
            assert!(seen.insert((name, key)), "{}", at("sample twice".into()));
        }
    }
    if let Some(c) = current {
        done.insert(c);
    }
    done
}

#[test]
fn strict_parser_rejects_what_the_format_forbids() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{l=\"q\\\"\\\\\\n\"} 1\n";
    assert!(check_exposition(ok).contains("a_total"));
    for bad in [
        "# TYPE a counter\na 1\n",                         // counter without _total
        "a_total 1\n",                                     // no TYPE
        "# TYPE a gauge\na{l=\"x} 1\n",                    // unterminated
        "# TYPE a gauge\na{l=x} 1\n",                      // unquoted
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n", // not contiguous
        "# TYPE a gauge\na{l=\"1\"} 1\na{l=\"1\"} 2\n",    // twice
        "# TYPE a gauge\na{l=\"\\q\"} 1\n",                // bad escape
        "# TYPE a gauge\na one\n",                         // bad value
        "# TYPE 1a gauge\n1a 1\n",                         // bad name
    ] {
        assert!(
            std::panic::catch_unwind(|| check_exposition(bad)).is_err(),
            "accepted: {bad:?}"
        );
    }
}

/// `--counters` on the ND personas, over IPv6: each side prints its run's deltas (the Sends
/// of the ping-pong, both ways) on stderr, and `--no-publish-counters` is accepted.
#[test]
fn nd_personas_print_their_counter_deltas() {
    let port = free_port();
    let addr = format!("[::1]:{port}");
    let common = [
        "--size",
        "64",
        "--iters",
        "100",
        "--counters",
        "--no-publish-counters",
    ];
    let mut sargs = vec!["pingpong", "-s", &addr];
    sargs.extend(common);
    let (server, _stdout) = common::server(&sargs);
    let mut cargs = vec!["pingpong", "-c", &addr];
    cargs.extend(common);
    let client = Command::new(ND).args(&cargs).output().unwrap();
    let server = server.wait_with_output().unwrap();
    assert!(
        client.status.success() && server.status.success(),
        "{client:?} {server:?}"
    );
    for (side, out) in [("client", &client), ("server", &server)] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("counters of this run"), "{side}: {err}");
        assert!(err.contains("adapter ::1"), "{side}: {err}");
        let send = err
            .lines()
            .find(|l| l.trim_start().starts_with("Send "))
            .unwrap_or_else(|| panic!("{side}: no Send row: {err}"));
        let cols: Vec<u64> = send
            .split_whitespace()
            .skip(1)
            .take(4)
            .map(|x| x.parse().unwrap())
            .collect();
        // FPDUs and octets in and out: at least the 100 measured exchanges of 64 octets.
        assert!(cols[0] >= 100 && cols[2] >= 100, "{side}: {send}");
        assert!(cols[1] >= 6400 && cols[3] >= 6400, "{side}: {send}");
    }
}
