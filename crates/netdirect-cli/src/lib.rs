//! `nd`: Network Direct tools over netdirect's software iWARP RNIC.
//!
//! * `nd bench` — the one-command demo: two adapters in one process on 127.0.0.1 and ::1,
//!   RDMA write/read/send bandwidth from 4 KiB to 4 MiB, 8-byte latency percentiles, message
//!   rate and the NetDMA copy engine, each next to a peer measured in the same run (a plain TCP
//!   socket pair; memcpy for the copy engine).
//! * `nd info` — adapters and their `NDK_ADAPTER_INFO`.
//! * `nd write-bw | read-bw | send-bw | write-lat | read-lat | send-lat` — perftest personas:
//!   without a host they serve, with a host they connect; perftest's flags, columns and default
//!   port (18515). The client and server exchange buffers with the control protocol documented
//!   in [`proto`]. Each persona's `--help` lists only its own flags; [`persona`] has the table
//!   of perftest's flags: implemented, accepted and ignored (and why), refused (and why).
//! * `nd ping | pingpong | rping | rpingpong | wping | wpingpong` — the Microsoft NetworkDirect
//!   test tools (`ndping`, `ndpingpong`, `ndrping`, `ndrpingpong`, plus write variants): `-s`
//!   serves, `-c ADDR[:PORT]` connects, IPv4 and IPv6, their size sweep, table and default ports
//!   (54324…54329), with every received message checked against a known pattern; see [`nd`].
//! * `nd rping-compat` — Linux `rping` on the wire (librdmacm's example: Send the source
//!   advertisement, RDMA Read, go-ahead, sink advertisement, RDMA Write, done), to ping Linux
//!   iWARP (siw) and be pinged by it; see [`rping`].
//! * `nd scale` — 10,000 idle connected QPs between two processes: memory per idle QP on
//!   both sides and one QP's read latency with 16 vs all open, in interleaved rounds, next to
//!   a plain TCP echo with as many idle TCP connections (the kernel's share); see [`scale`].
//! * `nd stat` — the counters of running processes' adapters (`--watch`, `--json`,
//!   `--prometheus`); `--counters` prints a run's own; see [`stat`].
//! * `nd dma` — the NetDMA CPU copy engine by size (4 KiB…64 MiB) and channel count next to
//!   memcpy; see [`dma`].
//!
//! Every long run shows a progress bar on a terminal's stderr (`--quiet` drops it), every
//! result table has a `--json` form (one JSON document on stdout, built from `Serialize` types
//! in [`report`] and the commands' modules) and the personas a `--json-lines` form (JSON Lines:
//! `listening`, a `row` per size, the `report`); the MPA flags (`--mpa-rev`, `--mpa-crc`,
//! `--mpa-p2p`, `--mpa-markers`) go with the commands that connect, as does `--provider
//! soft|verbs` (default `soft`; [`provider::open`] is the one place a name becomes a provider,
//! and a provider this build lacks fails the command before it listens or connects, with
//! `STATUS_NOT_SUPPORTED` and the reason). `ndk-conformance --provider soft|verbs` runs the
//! provider-independent NDK suite (`netdirect-conformance`) against one. Under every persona is one
//! [`endpoint::Endpoint`] (CQ, QP, buffers, post/poll/wait with one error text) and the
//! measurement loops of [`meter`]. Every error is a sentence plus the NTSTATUS behind it
//! (`nd: error: cannot connect to 127.0.0.1:54324: the connection was refused (is a server
//! running there?): STATUS_CONNECTION_REFUSED (0xC0000236)`), exit status 1; usage errors
//! exit 2.
#![forbid(unsafe_code)]

pub mod bench;
pub mod conn;
pub mod copy;
pub mod cpu;
pub mod dma;
pub mod endpoint;
pub mod error;
pub mod info;
pub mod meter;
pub mod nd;
pub mod obs;
pub mod perf;
pub mod perftest_cm;
pub mod persona;
pub mod proto;
pub mod provider;
pub mod report;
pub mod rping;
pub mod scale;
pub mod stat;
pub mod tcp;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use netdirect_types::Status;

use crate::error::{Error, Result};

/// Parses an address as typed: an IP literal, `[v6]`, or `localhost`.
pub fn parse_ip(s: &str) -> Result<IpAddr> {
    let t = s.trim();
    let t = t
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(t);
    if t.eq_ignore_ascii_case("localhost") {
        return Ok(Ipv4Addr::LOCALHOST.into());
    }
    if let Ok(ip) = t.parse() {
        return Ok(ip);
    }
    resolve(t).map_err(|why| {
        Error::status(
            format!(
                "'{s}' is neither an IP address nor a host name that resolves ({why}); \
                 use a name, or an IPv4 or IPv6 literal such as 127.0.0.1 or ::1"
            ),
            Status::INVALID_ADDRESS,
        )
    })
}

/// [`parse_ip`] for `--ipv6`: `localhost` is ::1 and a host name takes its first IPv6
/// address.
pub fn parse_ip_v6(s: &str) -> Result<IpAddr> {
    use std::net::ToSocketAddrs;
    let t = s.trim().trim_start_matches('[').trim_end_matches(']');
    if t.eq_ignore_ascii_case("localhost") {
        return Ok(std::net::Ipv6Addr::LOCALHOST.into());
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(ip);
    }
    (t, 0u16)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.find(|a| a.is_ipv6()))
        .map(|a| a.ip())
        .ok_or_else(|| {
            Error::status(
                format!("--ipv6: '{s}' has no IPv6 address"),
                Status::INVALID_ADDRESS,
            )
        })
}

/// A host name's first address, as the system resolver (getaddrinfo: /etc/hosts, DNS) gives
/// them, the way perftest and rping take a server name.
fn resolve(host: &str) -> std::result::Result<IpAddr, String> {
    use std::net::ToSocketAddrs;
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err("not a host name".into());
    }
    let mut addrs = (host, 0u16).to_socket_addrs().map_err(|e| e.to_string())?;
    addrs
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| "no address".into())
}

/// Parses `<ip>[:<port>]` as the NetworkDirect tools take it, plus IPv6: `v4`, `v4:port`,
/// `[v6]`, `[v6]:port`, a plain v6 literal (no port: its colons are the address's),
/// `localhost[:port]`. A missing port is `default_port`.
pub fn parse_endpoint(s: &str, default_port: u16) -> Result<SocketAddr> {
    let t = s.trim();
    let bad = |why: &str| {
        Error::status(
            format!(
                "'{s}' is not an address: {why} (use <ip>[:<port>], e.g. 127.0.0.1:54324, [::1]:54324 or ::1)"
            ),
            Status::INVALID_ADDRESS,
        )
    };
    let port_of = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| bad(&format!("'{p}' is not a port number (0-65535)")))
    };
    let (host, port) = if let Some(rest) = t.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return Err(bad("'[' without ']'"));
        };
        let port = match after {
            "" => default_port,
            p => port_of(
                p.strip_prefix(':')
                    .ok_or_else(|| bad("expected ':<port>' after ']'"))?,
            )?,
        };
        (h, port)
    } else if t.matches(':').count() == 1 {
        let (h, p) = t.split_once(':').unwrap_or((t, ""));
        (h, port_of(p)?)
    } else {
        (t, default_port)
    };
    let ip = if host.eq_ignore_ascii_case("localhost") {
        Ipv4Addr::LOCALHOST.into()
    } else {
        match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => resolve(host).map_err(|why| {
                bad(&format!(
                    "'{host}' is neither an IPv4/IPv6 address nor a host name that resolves ({why})"
                ))
            })?,
        }
    };
    if t.starts_with('[') && ip.is_ipv4() {
        return Err(bad("brackets are for IPv6 addresses"));
    }
    Ok(SocketAddr::new(ip, port))
}

/// A progress bar on stderr, drawn only on a terminal and when not quiet.
pub fn progress(len: u64, quiet: bool) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        Some(len),
        if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
    {
        pb.set_style(style);
    }
    pb
}

/// `println!` that ignores a closed stdout (`nd … | head`) instead of panicking.
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// `print!` that ignores a closed stdout.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($t)*);
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let p = |s: &str| parse_endpoint(s, 54324).map(|a| a.to_string());
        assert_eq!(p("127.0.0.1").unwrap(), "127.0.0.1:54324");
        assert_eq!(p("127.0.0.1:7").unwrap(), "127.0.0.1:7");
        assert_eq!(p("[::1]:9").unwrap(), "[::1]:9");
        assert_eq!(p("[::1]").unwrap(), "[::1]:54324");
        assert_eq!(p("::1").unwrap(), "[::1]:54324");
        assert_eq!(p("fe80::1:2").unwrap(), "[fe80::1:2]:54324");
        assert_eq!(p("localhost:5").unwrap(), "127.0.0.1:5");
        // Host names go through the resolver (/etc/hosts has "localhost" on every Linux; only
        // loopback results are accepted here, so the test never depends on the network).
        let resolved = super::resolve("localhost").expect("localhost resolves");
        assert!(resolved.is_loopback(), "{resolved}");
        assert!(super::resolve("no-such-host.invalid").is_err());
        assert!(p("no-such-host.invalid:5").is_err());
        for bad in [
            "999.1.1.1",
            "1.2.3.4:x",
            "1.2.3.4:70000",
            "[::1",
            "[::1]x",
            "[1.2.3.4]",
            "",
        ] {
            let e = parse_endpoint(bad, 1).unwrap_err();
            assert_eq!(e.status, Some(Status::INVALID_ADDRESS), "{bad}");
            assert!(e.message.contains("is not an address"), "{bad}: {e}");
        }
    }
}
