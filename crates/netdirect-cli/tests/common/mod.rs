//! What the end-to-end tests share: starting an `nd` server and waiting for it to listen.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A port free on both 127.0.0.1 and ::1 right now, below the kernel's ephemeral range (32768
/// and up) and the NDK's (49152 and up): an outgoing connection of a test running in parallel
/// cannot take it as its source port before the server binds it. Each call of a test binary
/// gets another one.
#[allow(dead_code)]
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() % 6000 * 2;
    loop {
        let port = (20000 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 12000) as u16;
        let v4 = std::net::TcpListener::bind(("127.0.0.1", port));
        if v4.is_ok() && std::net::TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, port)).is_ok()
        {
            return port;
        }
    }
}

/// The `nd` binary under test.
pub(crate) const ND: &str = env!("CARGO_BIN_EXE_nd");

/// Starts `nd` with `args` and waits for its "listening" banner; returns the child and the
/// rest of its stdout, a line at a time.
#[allow(dead_code)]
pub(crate) fn server(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(ND)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nd server");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("server banner");
        if line.contains("listening") {
            break;
        }
    }
    (child, rx)
}
