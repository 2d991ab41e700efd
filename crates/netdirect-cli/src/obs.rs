//! Seeing what happens: `nd`'s log (a `tracing` subscriber on stderr, `RUST_LOG` and `-v`) and
//! its packet capture (`--pcap FILE`, [`netdirect_soft::capture`]).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use clap::Args;
use netdirect_soft::capture::Capture;
use tracing_subscriber::EnvFilter;

use crate::error::{Error, Result};

/// Logging and capture flags, common to every command.
#[derive(Args, Debug, Clone, Default)]
pub struct ObsArgs {
    /// Log to stderr: -v info, -vv debug, -vvv trace (before the command: `nd -v write-bw`;
    /// RUST_LOG, when set, takes precedence, e.g. RUST_LOG=netdirect_soft=debug). Never on
    /// stdout, so --json output stays clean.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Capture every connection's bytes, both directions, into this pcap file (synthesized
    /// Ethernet/IP/TCP headers; Wireshark's iWARP dissectors decode it). No root needed.
    #[arg(long = "pcap", global = true, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Largest size of the --pcap file in MiB; later frames are dropped (and reported).
    #[arg(
        long = "pcap-limit",
        global = true,
        value_name = "MiB",
        default_value_t = 1024
    )]
    pub pcap_limit: u64,
}

static CAPTURE: OnceLock<Arc<Capture>> = OnceLock::new();

/// Installs the log subscriber and opens the capture file these flags ask for (once per
/// process).
pub fn init(args: &ObsArgs) -> Result<()> {
    let level = match args.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(level),
    };
    // Another subscriber already set (a test harness) is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    if let Some(path) = &args.pcap {
        let capture = Capture::create(path, args.pcap_limit.saturating_mul(1024 * 1024))
            .map_err(|e| Error::msg(format!("--pcap {}: {e}", path.display())))?;
        let _ = CAPTURE.set(capture);
    }
    Ok(())
}

/// The capture every adapter of this process writes to (`--pcap`), if any.
pub fn capture() -> Option<Arc<Capture>> {
    CAPTURE.get().cloned()
}

/// Flushes the capture and says on stderr what it holds: frames, and per connection the FPDUs
/// each way (the capture's own count, for checking a reader's).
pub fn finish() {
    let Some(capture) = CAPTURE.get() else {
        return;
    };
    if let Err(e) = capture.flush() {
        eprintln!("nd: --pcap {}: {e}", capture.path().display());
    }
    let s = capture.stats();
    let count = |n: Option<u64>| n.map_or_else(|| "?".to_string(), |n| n.to_string());
    eprintln!(
        "nd: pcap {}: {} frames, {} octets, {} connections{}",
        capture.path().display(),
        s.frames,
        s.octets,
        s.connections.len(),
        if s.truncated {
            format!(
                " (truncated at the {} MiB limit)",
                capture.limit() / (1024 * 1024)
            )
        } else {
            String::new()
        }
    );
    for c in &s.connections {
        eprintln!(
            "nd: pcap connection {} -> {}: fpdus sent {} received {}",
            c.local,
            c.peer,
            count(c.fpdus[0]),
            count(c.fpdus[1])
        );
    }
}
