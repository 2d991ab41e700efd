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
//!   in [`proto`].
#![forbid(unsafe_code)]

pub mod bench;
pub mod conn;
pub mod copy;
pub mod error;
pub mod info;
pub mod perf;
pub mod proto;
pub mod report;
pub mod tcp;

use std::net::{IpAddr, Ipv4Addr};

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
    t.parse().map_err(|_| {
        Error::status(
            format!(
                "'{s}' is not an IP address (use an IPv4 or IPv6 literal, e.g. 127.0.0.1 or ::1)"
            ),
            Status::INVALID_ADDRESS,
        )
    })
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
