//! Counters through the NDK's extension mechanism: [`COUNTERS_GUID`] asked of an adapter or a
//! QP with [`Object::query_extension`] returns an [`Extension`] whose `dispatch` is a
//! [`CountersInterface`].
//!
//! ```ignore
//! use netdirect::counters::{Counter, CountersInterface, COUNTERS_GUID, COUNTERS_VERSION};
//! let ext = adapter.query_extension(&COUNTERS_GUID, COUNTERS_VERSION)?; // NdkQueryExtension
//! let counters = ext.dispatch.downcast::<CountersInterface>().expect("netdirect counters");
//! println!("{} octets out", counters.query().get(Counter::RDMAOutOctets));
//! ```
//!
//! The names are `NDIS_NDK_PERFORMANCE_COUNTERS`' plus the iWARP detail
//! ([`Counter`], [`Counters`]). An adapter's counters include those of its closed QPs.
//!
//! # Another process's counters
//!
//! A provider that publishes (the soft provider with `EngineConfig::publish_counters`, on in
//! `nd`) writes one [`Published`] text file per open adapter, `netdirect.<pid>.<n>.counters`
//! in [`publish_dir`], about every 500 ms from a thread of its own (never from the data path),
//! atomically (a temporary file renamed over it), and removes it when the adapter closes.
//! `nd stat` reads these files; files of processes that no longer run are ignored.

use std::path::PathBuf;
use std::sync::Arc;

use netdirect_types::Version;
pub use netdirect_types::counters::{
    Counter, Counters, Kind, OPCODES, OpcodeCounts, ParseCountersError, TerminateCount, opcode_name,
};

#[allow(unused_imports)] // doc links
use crate::{Extension, Object};

/// The netdirect counters extension: `{6e657464-6972-6563-7400-636f756e7472}` ("netdirect",
/// "countr").
pub const COUNTERS_GUID: crate::Guid = crate::Guid([
    0x6e, 0x65, 0x74, 0x64, 0x69, 0x72, 0x65, 0x63, 0x74, 0x00, 0x63, 0x6f, 0x75, 0x6e, 0x74, 0x72,
]);

/// The extension's version: 1.0.
pub const COUNTERS_VERSION: Version = Version::new(1, 0);

/// The counters interface an [`Extension`] for [`COUNTERS_GUID`] holds (downcast its
/// `dispatch` to this type).
#[derive(Clone)]
pub struct CountersInterface {
    query: Arc<dyn Fn() -> Counters + Send + Sync>,
    counting: bool,
}

impl std::fmt::Debug for CountersInterface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CountersInterface")
    }
}

impl CountersInterface {
    /// An interface answering with `query` (for providers).
    pub fn new(query: impl Fn() -> Counters + Send + Sync + 'static) -> CountersInterface {
        CountersInterface {
            query: Arc::new(query),
            counting: true,
        }
    }

    /// Says whether the provider counts (for providers: `false` for a build that compiled its
    /// counters out, whose interface answers zeros).
    pub fn with_counting(mut self, counting: bool) -> CountersInterface {
        self.counting = counting;
        self
    }

    /// Whether the provider counts; `false`: every counter reads zero by design (the soft
    /// provider built without its `counters` feature), not for want of traffic.
    pub fn counting(&self) -> bool {
        self.counting
    }

    /// The counters now.
    pub fn query(&self) -> Counters {
        (self.query)()
    }

    /// This interface as the [`Extension`] `NdkQueryExtension` returns.
    pub fn into_extension(self) -> Extension {
        Extension {
            dispatch: Arc::new(self),
        }
    }
}

/// Where published counters live: `$NETDIRECT_STAT_DIR` if set, else `/dev/shm` if it is a
/// directory, else the temporary directory.
pub fn publish_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("NETDIRECT_STAT_DIR") {
        return PathBuf::from(d);
    }
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// One adapter's counters as another process sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The publishing process.
    pub pid: u32,
    /// The adapter (its address).
    pub adapter: String,
    /// When written, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The adapter's counters.
    pub counters: Counters,
}

impl Published {
    /// The file's text: `netdirect-counters 1`, `pid`, `adapter`, `time_ms` lines, then
    /// [`Counters::to_text`].
    pub fn to_text(&self) -> String {
        format!(
            "netdirect-counters 1\npid {}\nadapter {}\ntime_ms {}\n{}",
            self.pid,
            self.adapter,
            self.time_ms,
            self.counters.to_text()
        )
    }

    /// Reads [`Published::to_text`].
    pub fn parse(text: &str) -> Result<Published, ParseCountersError> {
        let mut lines = text.lines();
        if lines.next() != Some("netdirect-counters 1") {
            return Err(ParseCountersError {
                line: 1,
                what: "not a netdirect-counters 1 file",
            });
        }
        let mut field = |line: usize, key: &str| -> Result<String, ParseCountersError> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(key))
                .and_then(|v| v.strip_prefix(' '))
                .map(str::to_owned)
                .ok_or(ParseCountersError {
                    line,
                    what: "missing header line",
                })
        };
        let bad = |line| ParseCountersError {
            line,
            what: "expected a number",
        };
        let pid = field(2, "pid")?.parse().map_err(|_| bad(2))?;
        let adapter = field(3, "adapter")?;
        let time_ms = field(4, "time_ms")?.parse().map_err(|_| bad(4))?;
        let body: Vec<&str> = text.lines().skip(4).collect();
        let counters = Counters::parse(&body.join("\n")).map_err(|e| ParseCountersError {
            line: e.line + 4,
            what: e.what,
        })?;
        Ok(Published {
            pid,
            adapter,
            time_ms,
            counters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_round_trips() {
        let mut counters = Counters::default();
        counters.set(Counter::Accept, 9);
        let p = Published {
            pid: 42,
            adapter: "::1".into(),
            time_ms: 7,
            counters,
        };
        assert_eq!(Published::parse(&p.to_text()).unwrap(), p);
        assert!(Published::parse("netdirect-counters 2\n").is_err());
        assert!(Published::parse("netdirect-counters 1\npid x\n").is_err());
    }

    #[test]
    fn interface_downcasts_from_extension() {
        let ext = CountersInterface::new(|| {
            let mut c = Counters::default();
            c.set(Counter::Connect, 1);
            c
        })
        .into_extension();
        let i = ext.dispatch.downcast::<CountersInterface>().unwrap();
        assert_eq!(i.query().get(Counter::Connect), 1);
    }
}
