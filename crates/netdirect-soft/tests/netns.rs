//! Two hosts in network namespaces: the NDK object model over a veth pair, with and without
//! `tc netem` loss, delay and reordering.
//!
//! `netns_matrix` creates two namespaces joined by a veth pair, with private addresses that
//! exist only inside them (10.213.x.1/24 and 10.213.x.2/24, fd00:213:x::1/64 and ::2/64), and
//! runs the test binary itself in each namespace (`ip netns exec NS <this test binary> --exact
//! netns_child --ignored`) as server and client, told their role by environment variables. The
//! client RDMA-Writes a buffer of tens of MiB into the server's region, RDMA-Reads it back, and
//! sends a stream of Sends; both sides checksum (CRC32c) what they hold and compare over the
//! connection; the client prints the throughput of each phase.
//!
//! Cases: plain veth (32 MiB written and read back, 8 MiB of sends), then netem on both ends
//! (loss 1%, delay 2 ms ± 1 ms, 25% reordering; 16 MiB written and read back, 4 MiB of sends,
//! since a TCP stream with 1% loss moves a few MB/s), each over IPv4 and over IPv6; after the
//! netem cases both qdiscs must report dropped packets.
//!
//! Needs root, `ip` (iproute2) and, for the netem cases, `tc` with the `sch_netem` qdisc. Without
//! them the test prints why and passes without running, unless `ND_TEST_REQUIRE_TOOLS` is set
//! (`.ci/run` sets it, and runs as root with iproute2): then it fails. This
//! machine kind's kernel has no `sch_netem`, so `tests/interop/siw.sh` also runs this test inside
//! the siw VM (Debian's kernel) with `ND_NETNS_REQUIRE_NETEM=1`, where a missing qdisc fails.
//! Namespaces are named after the process id and removed when the test ends, however it ends.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use netdirect::{Adapter, Buffer};
use netdirect_types::{Completion, MrFlags, OpFlags, OperationType, RemoteToken, Status};
use netdirect_wire::crc::crc32c;

use support::{Endpoint, Listening, disconnect_event, fill_pattern, open, sge};

const ROLE: &str = "ND_NETNS_ROLE";
const LOCAL: &str = "ND_NETNS_LOCAL";
const PEER: &str = "ND_NETNS_PEER";
const SIZE: &str = "ND_NETNS_SIZE";
const SENDS: &str = "ND_NETNS_SENDS";
const TIMEOUT: &str = "ND_NETNS_TIMEOUT";
/// Set (to anything) to fail, rather than skip, when `sch_netem` is missing: the interop
/// stage runs this test inside the siw VM, whose kernel has it.
const REQUIRE_NETEM: &str = "ND_NETNS_REQUIRE_NETEM";
/// Prefix of the lines a child prints for the parent.
const TAG: &str = "ND_NETNS";

/// Octets per Send.
const CHUNK: usize = 256 * 1024;
/// Octets of a control message.
const CTL: usize = 64;

// ---------------------------------------------------------------------------------------------
// The children (inside a namespace)

struct ChildConfig {
    local: IpAddr,
    peer: Option<SocketAddr>,
    size: usize,
    sends: usize,
    timeout: Duration,
}

fn env<T: std::str::FromStr>(name: &str) -> T {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is set"))
        .parse()
        .unwrap_or_else(|_| panic!("{name} parses"))
}

/// The server or client side of one case, when started by [`netns_matrix`]; otherwise nothing.
#[test]
#[ignore = "helper: runs inside a network namespace when netns_matrix starts it"]
fn netns_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let config = ChildConfig {
        local: env(LOCAL),
        peer: std::env::var(PEER).ok().map(|p| p.parse().unwrap()),
        size: env(SIZE),
        sends: env(SENDS),
        timeout: Duration::from_secs(env(TIMEOUT)),
    };
    match role.as_str() {
        "server" => server(&config),
        "client" => client(&config),
        r => panic!("unknown role {r}"),
    }
}

/// Waits for the next completion of `kind` (other kinds must not fail meanwhile).
fn next_of(
    ep: &mut Endpoint,
    kind: OperationType,
    pending: &mut Vec<Completion>,
    timeout: Duration,
) -> Completion {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(i) = pending.iter().position(|c| c.op_type == kind) {
            return pending.remove(i);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {kind:?} completion in {timeout:?}");
        for c in ep.completions_within(1, left) {
            assert_eq!(c.status, Status::SUCCESS, "{c:?}");
            pending.push(c);
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn server(c: &ChildConfig) {
    let adapter = open(c.local);
    let n = c.sends / CHUNK;
    let mut ep = Endpoint::new(&*adapter, 0x5E, (n + 8) as u32);
    let region = Buffer::new(c.size);
    let region_mr = ep.register(
        &region,
        0,
        region.len(),
        MrFlags::ALLOW_LOCAL_WRITE | MrFlags::ALLOW_REMOTE_WRITE | MrFlags::ALLOW_REMOTE_READ,
    );
    // Receives in the order the client sends: "written", n data chunks, "sent".
    let recv = Buffer::new((n + 2) * CHUNK);
    let recv_mr = ep.register(&recv, 0, recv.len(), MrFlags::ALLOW_LOCAL_WRITE);
    for k in 0..n + 2 {
        ep.qp
            .receiver()
            .receive(k as u64, &[sge(&recv, &*recv_mr, k * CHUNK, CHUNK)])
            .unwrap();
    }
    let listening = Listening::new(&*adapter, c.local);
    println!("{TAG} LISTENING {}", listening.address.port());
    let conn = listening.next(c.timeout);
    let (event, disconnected) = disconnect_event();
    conn.accept(&*ep.qp, 4, 4, b"", Some(event))
        .wait_timeout(c.timeout)
        .expect("accept completes, and accept succeeds");
    let mut pending = Vec::new();
    let mut hello = [0u8; 20];
    hello[..8].copy_from_slice(&region.address().to_le_bytes());
    hello[8..12].copy_from_slice(&region_mr.remote_token().0.to_le_bytes());
    hello[12..20].copy_from_slice(&(c.size as u64).to_le_bytes());
    ep.qp
        .initiator()
        .send_inline(1, &[&hello], OpFlags::empty())
        .unwrap();
    next_of(&mut ep, OperationType::Send, &mut pending, c.timeout);

    // 1. The client wrote the region and tells us its checksum.
    let r = next_of(&mut ep, OperationType::Receive, &mut pending, c.timeout);
    assert_eq!((r.request_context, r.bytes_transferred), (0, 5));
    let mut m = [0u8; 5];
    recv.read_at(0, &mut m).unwrap();
    assert_eq!(m[0], b'W');
    let ours = region.with(crc32c);
    assert_eq!(ours, u32_at(&m, 1), "the written region's checksum");
    let mut reply = [b'w', 0, 0, 0, 0];
    reply[1..].copy_from_slice(&ours.to_le_bytes());
    ep.qp
        .initiator()
        .send_inline(2, &[&reply], OpFlags::empty())
        .unwrap();

    // 2. The client reads the region back (nothing to do here), then sends n chunks.
    for k in 1..=n {
        let r = next_of(&mut ep, OperationType::Receive, &mut pending, c.timeout);
        assert_eq!(
            (r.request_context, r.bytes_transferred),
            (k as u64, CHUNK as u32)
        );
    }
    let r = next_of(&mut ep, OperationType::Receive, &mut pending, c.timeout);
    assert_eq!((r.request_context, r.bytes_transferred), (n as u64 + 1, 5));
    let mut m = [0u8; 5];
    recv.read_at((n + 1) * CHUNK, &mut m).unwrap();
    assert_eq!(m[0], b'S');
    let ours = recv.with(|b| crc32c(&b[CHUNK..(n + 1) * CHUNK]));
    assert_eq!(ours, u32_at(&m, 1), "the checksum of the received sends");
    let mut reply = [b's', 0, 0, 0, 0];
    reply[1..].copy_from_slice(&ours.to_le_bytes());
    ep.qp
        .initiator()
        .send_inline(3, &[&reply], OpFlags::empty())
        .unwrap();
    next_of(&mut ep, OperationType::Send, &mut pending, c.timeout);
    next_of(&mut ep, OperationType::Send, &mut pending, c.timeout);
    // The client disconnects first.
    disconnected
        .recv_timeout(c.timeout)
        .expect("the client disconnects");
    conn.disconnect()
        .wait_timeout(c.timeout)
        .expect("disconnect completes, and disconnect succeeds");
    println!("{TAG} SERVER OK");
    drop(listening);
    // Let the progress thread drop the listener before the adapter goes (see hostile.rs).
    std::thread::sleep(Duration::from_millis(50));
}

fn mbps(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e6
}

fn client(c: &ChildConfig) {
    let adapter: Box<dyn Adapter> = open(c.local);
    let n = c.sends / CHUNK;
    let mut ep = Endpoint::new(&*adapter, 0xC1, (n + 8) as u32);
    let ctl = Buffer::new(3 * CTL);
    let ctl_mr = ep.register(&ctl, 0, ctl.len(), MrFlags::ALLOW_LOCAL_WRITE);
    for k in 0..3 {
        ep.qp
            .receiver()
            .receive(k as u64, &[sge(&ctl, &*ctl_mr, k * CTL, CTL)])
            .unwrap();
    }
    let src = Buffer::new(c.size);
    src.with_mut(|b| fill_pattern(b, 0x5EED_0001));
    let src_crc = src.with(crc32c);
    let dst = Buffer::new(c.size);
    let sends = Buffer::new(c.sends);
    sends.with_mut(|b| fill_pattern(b, 0x5EED_0002));
    let sends_crc = sends.with(crc32c);
    let flags = MrFlags::ALLOW_LOCAL_WRITE | MrFlags::RDMA_READ_SINK;
    let src_mr = ep.register(&src, 0, src.len(), MrFlags::empty());
    let dst_mr = ep.register(&dst, 0, dst.len(), flags);
    let sends_mr = ep.register(&sends, 0, sends.len(), MrFlags::empty());

    let peer = c.peer.expect("the client knows the server");
    let connector = adapter.create_connector().wait().unwrap();
    connector
        .connect(&*ep.qp, SocketAddr::new(c.local, 0), peer, 4, 4, b"netns")
        .wait_timeout(c.timeout)
        .expect("connect completes, and connect succeeds");
    connector
        .complete_connect(None)
        .wait_timeout(c.timeout)
        .expect("complete-connect completes, and complete-connect succeeds");
    let mut pending = Vec::new();
    let r = next_of(&mut ep, OperationType::Receive, &mut pending, c.timeout);
    assert_eq!((r.request_context, r.bytes_transferred), (0, 20));
    let mut hello = [0u8; 20];
    ctl.read_at(0, &mut hello).unwrap();
    let (address, token, size) = (
        u64_at(&hello, 0),
        RemoteToken(u32_at(&hello, 8)),
        u64_at(&hello, 12),
    );
    assert_eq!(size, c.size as u64);

    // 1. RDMA Write of the whole buffer, then a Send with its checksum; the server's answer
    //    (its checksum of its region) ends the phase.
    let t = Instant::now();
    ep.qp
        .initiator()
        .write(
            10,
            &[sge(&src, &*src_mr, 0, c.size)],
            address,
            token,
            OpFlags::SILENT_SUCCESS,
        )
        .unwrap();
    let mut m = [b'W', 0, 0, 0, 0];
    m[1..].copy_from_slice(&src_crc.to_le_bytes());
    ep.qp
        .initiator()
        .send_inline(11, &[&m], OpFlags::empty())
        .unwrap();
    let r = next_of(&mut ep, OperationType::Receive, &mut pending, c.timeout);
    let write_time = t.elapsed();
    assert_eq!(r.request_context, 1);
    let mut m = [0u8; 5];
    ctl.read_at(CTL, &mut m).unwrap();
    assert_eq!(m[0], b'w');
    assert_eq!(
        u32_at(&m, 1),
        src_crc,
        "the server's checksum of what we wrote"
    );

    // 2. RDMA Read of the whole region back.
    let t = Instant::now();
    ep.qp
        .initiator()
        .read(
            12,
            &[sge(&dst, &*dst_mr, 0, c.size)],
            address,
            token,
            OpFlags::empty(),
        )
        .unwrap();
    let r = next_of(&mut ep, OperationType::Read, &mut pending, c.timeout);
    let read_time = t.elapsed();
    assert_eq!(r.request_context, 12);
    assert_eq!(dst.with(crc32c), src_crc, "what we read back");

    // 3. Sends.
    let t = Instant::now();
    for k in 0..n {
        ep.qp
            .initiator()
            .send(
                100 + k as u64,
                &[sge(&sends, &*sends_mr, k * CHUNK, CHUNK)],
                OpFlags::SILENT_SUCCESS,
            )
            .unwrap();
    }
    let mut m = [b'S', 0, 0, 0, 0];
    m[1..].copy_from_slice(&sends_crc.to_le_bytes());
    ep.qp
        .initiator()
        .send_inline(13, &[&m], OpFlags::empty())
        .unwrap();
    let r = next_of(&mut ep, OperationType::Receive, &mut pending, c.timeout);
    let send_time = t.elapsed();
    assert_eq!(r.request_context, 2);
    let mut m = [0u8; 5];
    ctl.read_at(2 * CTL, &mut m).unwrap();
    assert_eq!(m[0], b's');
    assert_eq!(
        u32_at(&m, 1),
        sends_crc,
        "the server's checksum of our sends"
    );
    connector
        .disconnect()
        .wait_timeout(c.timeout)
        .expect("disconnect completes, and disconnect succeeds");
    println!(
        "{TAG} RESULT write {:.1} MB/s, read {:.1} MB/s, send {:.1} MB/s ({} MiB write/read, {} MiB sends)",
        mbps(c.size, write_time),
        mbps(c.size, read_time),
        mbps(c.sends, send_time),
        c.size >> 20,
        c.sends >> 20,
    );
}

// ---------------------------------------------------------------------------------------------
// The parent

/// Runs `cmd args…`; `Err` with its stderr when it fails.
fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why the test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok());
    if euid != Some(0) {
        return Some(format!("needs root (effective uid {euid:?})"));
    }
    if let Err(e) = run("ip", &["-V"]) {
        return Some(format!("needs iproute2's `ip`: {e}"));
    }
    None
}

/// Two namespaces joined by a veth pair; removed on drop.
struct Netns {
    names: [String; 2],
    ifaces: [String; 2],
    v4: [IpAddr; 2],
    v6: [IpAddr; 2],
}

impl Netns {
    fn create() -> Result<Netns, String> {
        let pid = std::process::id();
        let x = pid % 250 + 1;
        let y = pid % 0xFFFF;
        let ns = Netns {
            names: [format!("nd-{pid}-a"), format!("nd-{pid}-b")],
            ifaces: [format!("ndv{pid}a"), format!("ndv{pid}b")],
            v4: [
                format!("10.213.{x}.1").parse().unwrap(),
                format!("10.213.{x}.2").parse().unwrap(),
            ],
            v6: [
                format!("fd00:213:{y:x}::1").parse().unwrap(),
                format!("fd00:213:{y:x}::2").parse().unwrap(),
            ],
        };
        // From here on, Drop cleans up whatever was made.
        for name in &ns.names {
            run("ip", &["netns", "add", name])?;
        }
        let [a, b] = &ns.ifaces;
        run("ip", &["link", "add", a, "type", "veth", "peer", "name", b])?;
        for i in 0..2 {
            let (name, iface) = (&ns.names[i], &ns.ifaces[i]);
            run("ip", &["link", "set", iface, "netns", name])?;
            let v4 = format!("{}/24", ns.v4[i]);
            let v6 = format!("{}/64", ns.v6[i]);
            run("ip", &["-n", name, "addr", "add", &v4, "dev", iface])?;
            run(
                "ip",
                &["-n", name, "-6", "addr", "add", &v6, "dev", iface, "nodad"],
            )?;
            run("ip", &["-n", name, "link", "set", "lo", "up"])?;
            run("ip", &["-n", name, "link", "set", iface, "up"])?;
        }
        Ok(ns)
    }

    /// Adds netem on both ends; `Err` (with the reason) when the qdisc is not available.
    fn netem(&self, spec: &[&str]) -> Result<(), String> {
        for i in 0..2 {
            let mut args = vec![
                "-n",
                &self.names[i],
                "qdisc",
                "add",
                "dev",
                &self.ifaces[i],
                "root",
                "netem",
            ];
            args.extend_from_slice(spec);
            run("tc", &args)?;
        }
        Ok(())
    }

    /// Packets each end's netem qdisc dropped so far (`tc -s qdisc show`).
    fn netem_dropped(&self) -> [u64; 2] {
        [0, 1].map(|i| {
            let out = Command::new("tc")
                .args(["-n", &self.names[i], "-s", "qdisc", "show", "dev"])
                .arg(&self.ifaces[i])
                .output()
                .expect("tc runs");
            // "Sent 123 bytes 45 pkt (dropped 6, overlimits 0 requeues 0)"
            String::from_utf8_lossy(&out.stdout)
                .split("(dropped ")
                .nth(1)
                .and_then(|t| t.split(',').next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0)
        })
    }

    fn clear_netem(&self) {
        for i in 0..2 {
            let _ = run(
                "tc",
                &[
                    "-n",
                    &self.names[i],
                    "qdisc",
                    "del",
                    "dev",
                    &self.ifaces[i],
                    "root",
                ],
            );
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace destroys its end of the veth pair, and with it the other end.
        for name in &self.names {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// A child process, killed (by its own id) if still running when dropped.
struct Running {
    child: Child,
    stdout: Receiver<String>,
    lines: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Running {
    fn start(ns: &str, env: &[(&str, String)]) -> Running {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(exe)
            .args(["--exact", "netns_child", "--nocapture", "--ignored"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start a child in the namespace");
        let out = child.stdout.take().unwrap();
        let (tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Running {
            child,
            stdout,
            lines: Vec::new(),
            stderr,
        }
    }

    /// The next line with our tag, within `timeout`.
    fn tagged_line(&mut self, what: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    self.lines.push(line.clone());
                    if let Some(rest) = line.strip_prefix(TAG) {
                        if rest.trim_start().starts_with(what) {
                            return rest.trim_start()[what.len()..].trim().to_string();
                        }
                    }
                }
                Err(_) => panic!(
                    "no `{TAG} {what}` line in {timeout:?}; output: {:?}",
                    self.lines
                ),
            }
        }
    }

    /// Waits for the exit within `timeout`; returns stdout lines, or panics with the output.
    fn finish(mut self, name: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(l) = self.stdout.recv_timeout(Duration::from_millis(200)) {
            self.lines.push(l);
        }
        let lines = std::mem::take(&mut self.lines);
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
        let stderr = stderr.join().unwrap_or_default();
        match status {
            Some(s) if s.success() => lines,
            s => panic!(
                "{name} failed ({s:?})\nstdout:\n{}\nstderr:\n{stderr}",
                lines.join("\n")
            ),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One case: a server in namespace b, a client in namespace a.
fn run_case(ns: &Netns, name: &str, ips: [IpAddr; 2], size: usize, sends: usize, timeout: u64) {
    let start = Instant::now();
    let common = |role: &str, local: IpAddr| {
        vec![
            (ROLE, role.to_string()),
            (LOCAL, local.to_string()),
            (SIZE, size.to_string()),
            (SENDS, sends.to_string()),
            (TIMEOUT, timeout.to_string()),
        ]
    };
    let limit = Duration::from_secs(timeout + 10);
    let mut server = Running::start(&ns.names[1], &common("server", ips[1]));
    let port: u16 = server
        .tagged_line("LISTENING", limit)
        .parse()
        .expect("a port");
    let mut env = common("client", ips[0]);
    env.push((PEER, SocketAddr::new(ips[1], port).to_string()));
    let client = Running::start(&ns.names[0], &env);
    let client_lines = client.finish("client", limit);
    let server_lines = server.finish("server", limit);
    assert!(
        server_lines.iter().any(|l| l.contains("SERVER OK")),
        "{server_lines:?}"
    );
    let result = client_lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{TAG} RESULT ")))
        .expect("the client's result");
    eprintln!(
        "netns {name}: {result}; {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn netns_matrix() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    if let Some(reason) = skip_reason() {
        assert!(
            std::env::var_os("ND_TEST_REQUIRE_TOOLS").is_none(),
            "netns_matrix cannot run and ND_TEST_REQUIRE_TOOLS is set: {reason}"
        );
        eprintln!("netns_matrix skipped: {reason}");
        return;
    }
    let started = Instant::now();
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => {
            assert!(
                std::env::var_os("ND_TEST_REQUIRE_TOOLS").is_none(),
                "netns_matrix cannot set up namespaces and ND_TEST_REQUIRE_TOOLS is set: {e}"
            );
            eprintln!("netns_matrix skipped: cannot set up namespaces: {e}");
            return;
        }
    };
    const MIB: usize = 1 << 20;
    run_case(&ns, "veth IPv4", ns.v4, 32 * MIB, 8 * MIB, 30);
    run_case(&ns, "veth IPv6", ns.v6, 32 * MIB, 8 * MIB, 30);
    let netem = ["loss", "1%", "delay", "2ms", "1ms", "reorder", "25%", "50%"];
    match ns.netem(&netem) {
        Ok(()) => {
            for (family, ips) in [("IPv4", ns.v4), ("IPv6", ns.v6)] {
                let name = format!("netem {family} (loss 1%, delay 2±1 ms, reorder 25%)");
                run_case(&ns, &name, ips, 16 * MIB, 4 * MIB, 120);
            }
            // The qdisc really dropped packets: the cases above went through loss.
            let dropped = ns.netem_dropped();
            eprintln!("netns_matrix: netem dropped {dropped:?} packets");
            assert!(
                dropped.iter().all(|&d| d > 0),
                "netem dropped nothing: {dropped:?}"
            );
            ns.clear_netem();
        }
        Err(e) if std::env::var_os(REQUIRE_NETEM).is_some() => {
            panic!("{REQUIRE_NETEM} is set but netem is not available: {e}")
        }
        Err(e) => eprintln!("netns_matrix: netem case skipped: {e}"),
    }
    eprintln!("netns_matrix: {:.1} s", started.elapsed().as_secs_f64());
}
