//! Counter names and snapshots: the NDK's `NDIS_NDK_PERFORMANCE_COUNTERS` and the iWARP detail.
//!
//! This module only names counters and holds snapshots of their values (no state); the cells
//! a provider counts into live with the provider (`netdirect_proto::counters`), and the
//! extension that hands snapshots to a consumer is `netdirect::counters`.
//!
//! * Octets are ULP payload octets (what a Send, a Write or a Read Response carries; headers,
//!   pad, CRC and markers not included); frames are FPDUs. `RDMAInOctets`/`RDMAOutOctets` and
//!   `RDMAInFrames`/`RDMAOutFrames` are the sums of the per-opcode counts.
//! * [`Kind::Gauge`] counters are current values or high-water marks: a delta keeps the later
//!   value, an aggregate adds `ActiveConnection` and takes the maximum of a high-water mark.

use std::fmt::Write as _;

/// What a counter measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Only grows.
    Counter,
    /// A current value (`ActiveConnection`) or a high-water mark.
    Gauge,
}

macro_rules! counters {
    ($($v:ident = $name:literal, $snake:literal, $kind:ident, $help:literal;)*) => {
        /// One scalar counter. The first ten are `NDIS_NDK_PERFORMANCE_COUNTERS`, in its order
        /// (so `Counter as usize` is the bit of `MissingCounterMask`), with its names.
        #[doc(alias = "NDIS_NDK_PERFORMANCE_COUNTERS")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(clippy::upper_case_acronyms)]
        pub enum Counter {
            $(#[doc = $help] $v,)*
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Counter] = &[$(Counter::$v,)*];
            /// How many there are.
            pub const COUNT: usize = Counter::ALL.len();

            /// The name (the NDK's spelling for the NDK set).
            pub fn name(self) -> &'static str {
                match self { $(Counter::$v => $name,)* }
            }

            /// The snake_case name (Prometheus, JSON keys of tools that want them).
            pub fn snake_name(self) -> &'static str {
                match self { $(Counter::$v => $snake,)* }
            }

            /// Counter or gauge.
            pub fn kind(self) -> Kind {
                match self { $(Counter::$v => Kind::$kind,)* }
            }

            /// One line of help.
            pub fn help(self) -> &'static str {
                match self { $(Counter::$v => $help,)* }
            }

            /// The counter named `name` ([`Counter::name`]).
            pub fn from_name(name: &str) -> Option<Counter> {
                Counter::ALL.iter().copied().find(|c| c.name() == name)
            }
        }
    };
}

counters! {
    Connect = "Connect", "connect", Counter, "Connections the consumer initiated that were established.";
    Accept = "Accept", "accept", Counter, "Connections accepted from peers.";
    ConnectFailure = "ConnectFailure", "connect_failure", Counter, "Connection attempts that failed (refused, rejected, timed out, unreachable).";
    ConnectionError = "ConnectionError", "connection_error", Counter, "Established connections ended by an error (Terminate sent or received, reset, I/O error).";
    ActiveConnection = "ActiveConnection", "active_connection", Gauge, "Connections established now.";
    CQError = "CQError", "cq_error", Counter, "Completions with an error status delivered to completion queues.";
    RDMAInOctets = "RDMAInOctets", "rdma_in_octets", Counter, "Payload octets received (sum over opcodes).";
    RDMAOutOctets = "RDMAOutOctets", "rdma_out_octets", Counter, "Payload octets sent (sum over opcodes).";
    RDMAInFrames = "RDMAInFrames", "rdma_in_frames", Counter, "FPDUs received (sum over opcodes).";
    RDMAOutFrames = "RDMAOutFrames", "rdma_out_frames", Counter, "FPDUs sent (sum over opcodes).";
    CrcErrors = "CrcErrors", "crc_errors", Counter, "Inbound FPDUs whose MPA CRC did not match.";
    MpaRejectsSent = "MpaRejectsSent", "mpa_rejects_sent", Counter, "MPA Replies with the Reject bit sent (NdkReject).";
    MpaRejectsReceived = "MpaRejectsReceived", "mpa_rejects_received", Counter, "MPA Replies with the Reject bit received.";
    TerminatesSent = "TerminatesSent", "terminates_sent", Counter, "Terminate messages sent (detail by layer/type/code).";
    TerminatesReceived = "TerminatesReceived", "terminates_received", Counter, "Terminate messages received (detail by layer/type/code).";
    IrdHighWater = "IrdHighWater", "ird_high_water", Gauge, "Most inbound RDMA Reads outstanding at once (IRD used).";
    OrdHighWater = "OrdHighWater", "ord_high_water", Gauge, "Most outbound RDMA Reads outstanding at once (ORD used).";
    PlacedDirectOctets = "PlacedDirectOctets", "placed_direct_octets", Counter, "Inbound payload octets read from the socket straight into their destination.";
    PlacedBufferedOctets = "PlacedBufferedOctets", "placed_buffered_octets", Counter, "Inbound payload octets placed from the input buffer (one copy).";
    ProgressWakeups = "ProgressWakeups", "progress_wakeups", Counter, "Times a progress thread woke up.";
    InlineTransmits = "InlineTransmits", "inline_transmits", Counter, "Posts sent from the posting thread (no progress-thread hop).";
    SocketReads = "SocketReads", "socket_reads", Counter, "Reads from the connections' TCP sockets (system calls).";
    EmptyReads = "EmptyReads", "empty_reads", Counter, "Socket reads that found nothing (would block): a cost of busy polling.";
    SocketWrites = "SocketWrites", "socket_writes", Counter, "Writes to the connections' TCP sockets (system calls): several FPDUs leave in one when they are ready together.";
    LeaseReturns = "LeaseReturns", "lease_returns", Counter, "Times a connection's arrivals went back from its polling consumer to the progress thread (the consumer blocked, stopped polling for a poll lease, or found the connection idle).";
}

/// RDMAP opcodes counted per opcode (RFC 5040 and RFC 7306: 0x0 to 0xB).
pub const OPCODES: usize = 12;

/// The name of RDMAP opcode `op` (`"Write"`, `"ReadRequest"`, ...), as `netdirect_wire`
/// spells its `Opcode` variants.
pub fn opcode_name(op: usize) -> &'static str {
    const NAMES: [&str; OPCODES] = [
        "Write",
        "ReadRequest",
        "ReadResponse",
        "Send",
        "SendInvalidate",
        "SendSe",
        "SendSeInvalidate",
        "Terminate",
        "ImmediateData",
        "ImmediateDataSe",
        "AtomicRequest",
        "AtomicResponse",
    ];
    NAMES.get(op).copied().unwrap_or("Unknown")
}

/// FPDUs and payload octets of one RDMAP opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OpcodeCounts {
    /// FPDUs received.
    pub fpdus_in: u64,
    /// Payload octets received.
    pub octets_in: u64,
    /// FPDUs sent.
    pub fpdus_out: u64,
    /// Payload octets sent.
    pub octets_out: u64,
}

/// Terminates of one layer/type/code in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TerminateCount {
    /// We sent them (false: received).
    pub sent: bool,
    /// Layer (0 RDMAP, 1 DDP, 2 LLP/MPA).
    pub layer: u8,
    /// Error type.
    pub error_type: u8,
    /// Error code.
    pub error_code: u8,
    /// How many.
    pub count: u64,
}

/// A snapshot of one QP's or one adapter's counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Counters {
    values: [u64; Counter::COUNT],
    /// Per RDMAP opcode (index = opcode).
    pub opcodes: [OpcodeCounts; OPCODES],
    /// Terminates by direction, layer, type and code; sorted, one entry per key.
    pub terminates: Vec<TerminateCount>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            values: [0; Counter::COUNT],
            opcodes: [OpcodeCounts::default(); OPCODES],
            terminates: Vec::new(),
        }
    }
}

/// Why a counters text did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseCountersError {
    /// 1-based line.
    pub line: usize,
    /// What was wrong.
    pub what: &'static str,
}

impl std::fmt::Display for ParseCountersError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "counters text, line {}: {}", self.line, self.what)
    }
}

impl std::error::Error for ParseCountersError {}

impl Counters {
    /// The value of `c`.
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize]
    }

    /// Sets `c`.
    pub fn set(&mut self, c: Counter, v: u64) {
        self.values[c as usize] = v;
    }

    /// The opcode counts of opcode `op` (zero for an unknown one).
    pub fn opcode(&self, op: usize) -> OpcodeCounts {
        self.opcodes.get(op).copied().unwrap_or_default()
    }

    /// Terminates sent (`sent`) or received with this layer/type/code.
    pub fn terminate(&self, sent: bool, layer: u8, error_type: u8, error_code: u8) -> u64 {
        self.terminates
            .iter()
            .filter(|t| {
                (t.sent, t.layer, t.error_type, t.error_code)
                    == (sent, layer, error_type, error_code)
            })
            .map(|t| t.count)
            .sum()
    }

    /// Adds `n` Terminates of a key (kept sorted, one entry per key).
    pub fn add_terminate(&mut self, sent: bool, layer: u8, error_type: u8, error_code: u8, n: u64) {
        let key = (sent, layer, error_type, error_code);
        match self
            .terminates
            .binary_search_by(|t| (t.sent, t.layer, t.error_type, t.error_code).cmp(&key))
        {
            Ok(i) => self.terminates[i].count += n,
            Err(i) => self.terminates.insert(
                i,
                TerminateCount {
                    sent,
                    layer,
                    error_type,
                    error_code,
                    count: n,
                },
            ),
        }
    }

    /// Sets the sums the detail determines: `RDMAIn/OutOctets/Frames` from the opcodes,
    /// `TerminatesSent/Received` from the Terminates.
    pub fn derive_totals(&mut self) {
        let sum = |f: fn(&OpcodeCounts) -> u64| self.opcodes.iter().map(f).sum::<u64>();
        let (fi, oi, fo, oo) = (
            sum(|o| o.fpdus_in),
            sum(|o| o.octets_in),
            sum(|o| o.fpdus_out),
            sum(|o| o.octets_out),
        );
        let term = |sent: bool| {
            self.terminates
                .iter()
                .filter(|t| t.sent == sent)
                .map(|t| t.count)
                .sum::<u64>()
        };
        let (ts, tr) = (term(true), term(false));
        self.set(Counter::RDMAInFrames, fi);
        self.set(Counter::RDMAInOctets, oi);
        self.set(Counter::RDMAOutFrames, fo);
        self.set(Counter::RDMAOutOctets, oo);
        self.set(Counter::TerminatesSent, ts);
        self.set(Counter::TerminatesReceived, tr);
    }

    /// Adds `other` into `self` (an aggregate): counters and `ActiveConnection` add,
    /// high-water marks take the maximum.
    pub fn merge(&mut self, other: &Counters) {
        for &c in Counter::ALL {
            let (a, b) = (self.get(c), other.get(c));
            let v = match c {
                Counter::IrdHighWater | Counter::OrdHighWater => a.max(b),
                _ => a.wrapping_add(b),
            };
            self.set(c, v);
        }
        for (a, b) in self.opcodes.iter_mut().zip(other.opcodes.iter()) {
            a.fpdus_in += b.fpdus_in;
            a.octets_in += b.octets_in;
            a.fpdus_out += b.fpdus_out;
            a.octets_out += b.octets_out;
        }
        for t in &other.terminates {
            self.add_terminate(t.sent, t.layer, t.error_type, t.error_code, t.count);
        }
    }

    /// What happened since `earlier`: counters subtract (saturating), gauges keep their
    /// current value.
    pub fn delta(&self, earlier: &Counters) -> Counters {
        let mut d = self.clone();
        for &c in Counter::ALL {
            if c.kind() == Kind::Counter {
                d.set(c, self.get(c).saturating_sub(earlier.get(c)));
            }
        }
        for (a, b) in d.opcodes.iter_mut().zip(earlier.opcodes.iter()) {
            a.fpdus_in = a.fpdus_in.saturating_sub(b.fpdus_in);
            a.octets_in = a.octets_in.saturating_sub(b.octets_in);
            a.fpdus_out = a.fpdus_out.saturating_sub(b.fpdus_out);
            a.octets_out = a.octets_out.saturating_sub(b.octets_out);
        }
        for t in &mut d.terminates {
            t.count = t.count.saturating_sub(earlier.terminate(
                t.sent,
                t.layer,
                t.error_type,
                t.error_code,
            ));
        }
        d.terminates.retain(|t| t.count > 0);
        d
    }

    /// The snapshot as text, one item a line: `<Name> <value>` for every counter,
    /// `opcode <Name> <fpdus_in> <octets_in> <fpdus_out> <octets_out>` for every opcode seen,
    /// `terminate <sent|received> <layer> <type> <code> <count>`. [`Counters::parse`] reads it.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for &c in Counter::ALL {
            let _ = writeln!(s, "{} {}", c.name(), self.get(c));
        }
        for (op, o) in self.opcodes.iter().enumerate() {
            if *o != OpcodeCounts::default() {
                let _ = writeln!(
                    s,
                    "opcode {} {} {} {} {}",
                    opcode_name(op),
                    o.fpdus_in,
                    o.octets_in,
                    o.fpdus_out,
                    o.octets_out
                );
            }
        }
        for t in &self.terminates {
            let _ = writeln!(
                s,
                "terminate {} {} {} {} {}",
                if t.sent { "sent" } else { "received" },
                t.layer,
                t.error_type,
                t.error_code,
                t.count
            );
        }
        s
    }

    /// Reads [`Counters::to_text`]. Lines with an unknown first word are skipped (a newer
    /// writer's additions); a known line that does not parse is an error.
    pub fn parse(text: &str) -> Result<Counters, ParseCountersError> {
        let mut c = Counters::default();
        for (i, line) in text.lines().enumerate() {
            let err = |what| ParseCountersError { line: i + 1, what };
            let mut w = line.split_ascii_whitespace();
            let Some(first) = w.next() else { continue };
            let mut num = || -> Result<u64, ParseCountersError> {
                w.next()
                    .and_then(|x| x.parse().ok())
                    .ok_or(err("expected a number"))
            };
            if let Some(k) = Counter::from_name(first) {
                let v = num()?;
                c.set(k, v);
            } else if first == "opcode" {
                let name = line.split_ascii_whitespace().nth(1).unwrap_or("");
                let op = (0..OPCODES)
                    .find(|&o| opcode_name(o) == name)
                    .ok_or(err("unknown opcode"))?;
                let mut w = line.split_ascii_whitespace().skip(2);
                let mut n = || -> Result<u64, ParseCountersError> {
                    w.next()
                        .and_then(|x| x.parse().ok())
                        .ok_or(err("expected a number"))
                };
                c.opcodes[op] = OpcodeCounts {
                    fpdus_in: n()?,
                    octets_in: n()?,
                    fpdus_out: n()?,
                    octets_out: n()?,
                };
            } else if first == "terminate" {
                let mut w = line.split_ascii_whitespace().skip(1);
                let sent = match w.next() {
                    Some("sent") => true,
                    Some("received") => false,
                    _ => return Err(err("expected sent or received")),
                };
                let mut byte = || -> Result<u8, ParseCountersError> {
                    w.next()
                        .and_then(|x| x.parse().ok())
                        .ok_or(err("expected a byte"))
                };
                let (l, t, k) = (byte()?, byte()?, byte()?);
                let n = w
                    .next()
                    .and_then(|x| x.parse().ok())
                    .ok_or(err("expected a number"))?;
                c.add_terminate(sent, l, t, k, n);
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndk_set_in_ndk_order_with_ndk_names() {
        let ndk = [
            "Connect",
            "Accept",
            "ConnectFailure",
            "ConnectionError",
            "ActiveConnection",
            "CQError",
            "RDMAInOctets",
            "RDMAOutOctets",
            "RDMAInFrames",
            "RDMAOutFrames",
        ];
        for (i, n) in ndk.iter().enumerate() {
            assert_eq!(Counter::ALL[i].name(), *n);
            assert_eq!(Counter::ALL[i] as usize, i);
        }
    }

    #[test]
    fn text_round_trips_and_rejects_bad_lines() {
        let mut c = Counters::default();
        c.set(Counter::Connect, 3);
        c.set(Counter::OrdHighWater, 7);
        c.opcodes[3] = OpcodeCounts {
            fpdus_in: 1,
            octets_in: 2,
            fpdus_out: 3,
            octets_out: 4,
        };
        c.add_terminate(true, 1, 0, 2, 1);
        c.add_terminate(false, 0, 2, 5, 2);
        c.derive_totals();
        assert_eq!(c.get(Counter::RDMAOutOctets), 4);
        assert_eq!(c.get(Counter::TerminatesReceived), 2);
        let back = Counters::parse(&format!("future 1 2\n{}", c.to_text())).unwrap();
        assert_eq!(back, c);
        assert!(Counters::parse("Connect x").is_err());
        assert!(Counters::parse("opcode Nope 1 2 3 4").is_err());
        assert!(Counters::parse("terminate maybe 1 2 3 4").is_err());
    }

    #[test]
    fn merge_adds_and_takes_max_delta_keeps_gauges() {
        let mut a = Counters::default();
        a.set(Counter::Accept, 2);
        a.set(Counter::IrdHighWater, 4);
        a.set(Counter::ActiveConnection, 1);
        let mut b = a.clone();
        b.set(Counter::IrdHighWater, 2);
        b.add_terminate(true, 2, 0, 1, 1);
        a.merge(&b);
        assert_eq!(a.get(Counter::Accept), 4);
        assert_eq!(a.get(Counter::IrdHighWater), 4);
        assert_eq!(a.get(Counter::ActiveConnection), 2);
        let d = a.delta(&b);
        assert_eq!(d.get(Counter::Accept), 2);
        assert_eq!(d.get(Counter::ActiveConnection), 2);
        assert!(d.terminates.is_empty());
    }
}
