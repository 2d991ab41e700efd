//! A peer that dies mid-run is noticed within seconds, with `STATUS_CONNECTION_ABORTED`, on
//! either side and both address families; a client that connects and then says nothing does
//! not take a server out. Only loopback is contacted.

use std::io::Read;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netdirect::{OpenParameters, Provider, QpConfig};
use netdirect_cli::perf::Test;
use netdirect_cli::proto::Hello;
use netdirect_soft::SoftProvider;
use netdirect_types::Version;

mod common;

use common::{ND, free_port, server};

/// Waits for `child` to exit within `limit`; returns its stderr. Kills it and fails otherwise.
fn exits_within(mut child: Child, limit: Duration, who: &str) -> String {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert_eq!(status.code(), Some(1), "{who}: {err}");
            return err;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{who} still runs {limit:?} after its peer died");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until a TCP connection to local port `port` is established (/proc/net/tcp{,6}), then
/// long enough for the MPA handshake and nd's hellos, so the run is under way (a client that
/// dies before its run is dropped and the server waits for the next: a different case).
fn wait_connected(port: &str) {
    let port: u16 = port.parse().unwrap();
    let hex = format!(":{port:04X} ");
    let start = Instant::now();
    loop {
        let established = ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.len() > 3 && format!("{} ", cols[1]).ends_with(&hex) && cols[3] == "01"
                })
        });
        if established {
            std::thread::sleep(Duration::from_secs(3));
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no connection on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client(host: &str, port: &str) -> Child {
    Command::new(ND)
        .args(["write-bw", host, "-p", port, "-D", "30", "--timeout", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the client")
}

#[test]
fn a_killed_server_is_noticed_by_the_client() {
    for host in ["127.0.0.1", "::1"] {
        let port = free_port().to_string();
        let (mut srv, _) = server(&["write-bw", "-p", &port, "--bind", host, "--timeout", "60"]);
        let cli = client(host, &port);
        wait_connected(&port);
        srv.kill().unwrap();
        srv.wait().unwrap();
        let err = exits_within(cli, Duration::from_secs(5), "the client");
        assert!(err.contains("STATUS_CONNECTION_ABORTED"), "{host}: {err}");
    }
}

#[test]
fn a_killed_client_is_noticed_by_the_server() {
    for host in ["127.0.0.1", "::1"] {
        let port = free_port().to_string();
        let (mut srv, _) = server(&["write-bw", "-p", &port, "--bind", host, "--timeout", "60"]);
        let mut cli = client(host, &port);
        wait_connected(&port);
        cli.kill().unwrap();
        cli.wait().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = srv.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(5) {
                let _ = srv.kill();
                let mut err = String::new();
                srv.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                panic!("{host}: the server still runs 5 s after its client died: {err}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        srv.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(err.contains("STATUS_CONNECTION_ABORTED"), "{host}: {err}");
    }
}

/// A client that connects with a valid hello and then says nothing is dropped; the real
/// client after it runs to the end.
#[test]
fn a_silent_client_does_not_take_the_server_out() {
    for ip in [IpAddr::from([127, 0, 0, 1]), Ipv6Addr::LOCALHOST.into()] {
        let port = free_port();
        let host = ip.to_string();
        let (mut srv, _) = server(&[
            "write-bw",
            "-p",
            &port.to_string(),
            "--bind",
            &host,
            "--timeout",
            "60",
        ]);
        // The silent client: a connection with nd's hello as private data, then nothing.
        let adapter = SoftProvider::new()
            .open_adapter(OpenParameters {
                address: ip,
                version: Version::V2_1,
            })
            .unwrap();
        let pd = adapter.create_pd().wait().unwrap();
        let cq = adapter
            .create_cq(16, Arc::new(|_| {}), None)
            .wait()
            .unwrap();
        let qp = pd
            .create_qp(QpConfig {
                receive_cq: &*cq,
                initiator_cq: &*cq,
                context: 0,
                receive_queue_depth: 4,
                initiator_queue_depth: 4,
                max_receive_sge: 1,
                max_initiator_sge: 1,
                inline_data_size: 0,
            })
            .wait()
            .unwrap();
        let hello = Hello {
            test: Test::WriteBw.id(),
            qp_index: 0,
            qp_count: 1,
            max_size: 65536,
        };
        let connector = adapter.create_connector().wait().unwrap();
        connector
            .connect(
                &*qp,
                SocketAddr::new(ip, 0),
                SocketAddr::new(ip, port),
                1,
                1,
                &hello.encode(),
            )
            .wait()
            .expect("the server accepts the silent client");
        connector.complete_connect(None).wait().unwrap();
        // The real client.
        let out = Command::new(ND)
            .args(["write-bw", &host, "-p", &port.to_string(), "-n", "100"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{host}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("data check      : OK"), "{stdout}");
        assert!(srv.wait().unwrap().success());
    }
}

/// Ctrl-C during an ND sweep: the rows measured so far were already printed as they came, the
/// client says it was interrupted and disconnects cleanly, and the server ends normally.
#[test]
fn ctrl_c_prints_what_was_measured_and_disconnects() {
    use std::io::{BufRead, BufReader};
    for host in ["127.0.0.1", "::1"] {
        let port = free_port();
        let addr = SocketAddr::new(host.parse().unwrap(), port).to_string();
        let (mut srv, _) = server(&["pingpong", "-s", &addr, "--timeout", "60"]);
        let mut cli = Command::new(ND)
            .args([
                "pingpong",
                "-c",
                &addr,
                "--timeout",
                "60",
                "--iters",
                "2000",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(cli.stdout.take().unwrap()).lines();
        // Rows stream: wait for the first two measured sizes, then interrupt.
        let mut rows = 0;
        let mut seen = Vec::new();
        while rows < 2 {
            let line = lines.next().expect("a row").unwrap();
            if line.split_whitespace().count() == 5
                && line.split_whitespace().all(|w| w.parse::<f64>().is_ok())
            {
                rows += 1;
            }
            seen.push(line);
        }
        let pid = cli.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(sent.success());
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let status = cli.wait().unwrap();
        let mut err = String::new();
        cli.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_eq!(status.code(), Some(1), "{host}: {seen:?} {rest:?} {err}");
        assert!(
            rest.iter().any(|l| l.contains("interrupted (Ctrl-C)")),
            "{host}: {rest:?}"
        );
        assert!(err.contains("STATUS_CANCELLED"), "{err}");
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
