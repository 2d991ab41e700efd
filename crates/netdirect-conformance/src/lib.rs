//! The provider-independent NDK conformance suite: the object-level tests of the NDK model
//! (connection setup, send/receive, RDMA write and read, fast registration, memory windows,
//! CQ arming, SRQ thresholds, posting limits, shared endpoints), written against the
//! [`netdirect`] traits only, so any [`Provider`] can run them.
//!
//! Each case is a function taking the provider and the local address to use
//! (`fn(&dyn Provider, IpAddr) -> Outcome`). Connections go from that address to itself. A case
//! the adapter cannot run skips **by capability**, as its `NDK_ADAPTER_INFO` declares it, never
//! by provider name:
//!
//! | Needs | Declared by | Cases |
//! |---|---|---|
//! | connections from the address to itself | `NDK_ADAPTER_FLAG_LOOPBACK_CONNECTIONS_SUPPORTED` | every case that connects |
//! | fast register (and LAMs, which only fast register consumes) | `FRMRPageCount` ≥ [`netdirect_types::FRMR_PAGE_COUNT_MIN`] (a provider without it reports 0) | the fast-register cases |
//! | memory windows | `MaxWindowSize` ≠ 0 | [`ndk::memory_windows_over_the_wire`] |
//! | read with local invalidate | `NDK_ADAPTER_FLAG_RDMA_READ_LOCAL_INVALIDATE_SUPPORTED` | [`ndk::read_local_invalidate_and_cq_overflow`] |
//! | shared receive queues | `MaxSrqDepth` ≠ 0 | [`ndk::srq_feeds_two_qps_and_notifies_below_threshold`] |
//! | shared endpoints | `NdkCreateSharedEndpoint` answering anything but `STATUS_NOT_SUPPORTED` | [`ndk::shared_endpoint_connects_twice_from_one_port`] |
//!
//! Rules the adapter declares it cannot keep on its device (netdirect's deviations extension,
//! [`netdirect::deviations`], asked through `NdkQueryExtension`; a provider that answers
//! `STATUS_NOT_SUPPORTED` keeps them all) skip or adapt the cases that pin them:
//!
//! | Declared deviation | Cases |
//! |---|---|
//! | `no_solicited_notifications` | [`ndk::cq_arming_solicited_and_any`] skips ([`ndk::cq_arm_on_a_non_empty_cq_fires_at_once`] still runs) |
//! | `peer_disconnect_flushes` | [`ndk::disconnect_event_without_flush_then_disconnect_flushes`] skips |
//! | `no_terminate_detail` | [`completions::write_named_by_the_peers_terminate_gets_its_status`] skips; [`ndk::write_to_invalid_token_terminates_and_cancels`] leaves out the Terminate's code and lets the write fail `STATUS_CONNECTION_ABORTED` when the Terminate caught it being sent |
//! | `cq_overflow_beyond_depth` | [`completions::cq_overflow_is_fatal_to_its_queue_pairs`] posts until the device's CQ overflows and accepts at least the depth's entries before it |
//!
//! Assertions that depend on a declared behaviour follow the declaration instead of skipping:
//! the read-sink refusals only when the adapter lacks
//! `NDK_ADAPTER_FLAG_RDMA_READ_SINK_NOT_REQUIRED`, the Terminate's provider code only on an
//! iWARP adapter; on InfiniBand and RoCE (`RdmaTechnology`) a write to a bad token fails itself
//! (the responder's NAK names it) where iWARP completes it and reports the Terminate, and the
//! peer's private data may come padded with zeros to the CM message's fixed size (the NDK
//! allows a longer RDS than was sent, §7.6; IB's CM carries no length).
//!
//! A case fails by panicking (the assertions of a test); [`run`] catches that and reports it,
//! so one failure does not stop the rest. The soft provider's tests call every case directly
//! (`cargo test -p netdirect-soft --test ndk`), and `ndk-conformance --provider soft|verbs`
//! (in `netdirect-cli`) runs them against a chosen provider.

use std::fmt;
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use netdirect::{OpenParameters, Provider};
use netdirect_types::{
    AdapterFlags, AdapterInfo, FRMR_PAGE_COUNT_MIN, RdmaTechnology, Status, Version,
};

pub mod completions;
pub mod ndk;
pub mod support;

/// Why a case did not run: the capability the adapter lacks, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a case returns when it did not panic: it ran (`Ok`) or it skipped.
pub type Outcome = Result<(), Skip>;

/// One case of the suite.
#[derive(Clone, Copy)]
pub struct Case {
    /// The case's name (its function's).
    pub name: &'static str,
    /// The case.
    pub run: fn(&dyn Provider, IpAddr) -> Outcome,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

macro_rules! cases {
    ($($module:ident :: $name:ident),* $(,)?) => {
        /// Every case of the suite, in the order [`run`] runs them.
        pub const CASES: &[Case] = &[$(Case { name: stringify!($name), run: $module::$name }),*];
    };
}

cases!(
    ndk::data_path,
    ndk::initiator_requests_need_a_connection,
    ndk::connect_refused_and_rejected,
    ndk::fast_register_over_the_wire,
    ndk::memory_windows_over_the_wire,
    ndk::write_to_invalid_token_terminates_and_cancels,
    ndk::cq_arming_solicited_and_any,
    ndk::cq_arm_on_a_non_empty_cq_fires_at_once,
    ndk::srq_feeds_two_qps_and_notifies_below_threshold,
    ndk::disconnect_event_without_flush_then_disconnect_flushes,
    ndk::receives_posted_after_the_peer_disconnected_complete_cancelled,
    ndk::sends_and_writes_behind_reads_leave_every_read_to_complete,
    ndk::fast_register_seed_rules_each_with_its_status,
    ndk::posting_limits_have_their_statuses,
    ndk::shared_endpoint_connects_twice_from_one_port,
    ndk::read_local_invalidate_and_cq_overflow,
    completions::silent_read_local_invalidate_invalidates_the_sink,
    completions::regular_sink_read_local_invalidate_fails_and_errors_the_qp,
    completions::silent_regular_sink_read_local_invalidate_still_completes,
    completions::write_named_by_the_peers_terminate_gets_its_status,
    completions::cq_overflow_is_fatal_to_its_queue_pairs,
);

/// The case called `name`.
pub fn case(name: &str) -> Option<&'static Case> {
    CASES.iter().find(|c| c.name == name)
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every assertion held.
    Passed,
    /// Not run: the adapter lacks a capability the case needs.
    Skipped(String),
    /// An assertion failed (its message) or the case panicked.
    Failed(String),
}

/// One line of a run's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The case.
    pub name: &'static str,
    /// The local address it ran on.
    pub address: IpAddr,
    /// What happened.
    pub verdict: Verdict,
    /// How long it took.
    pub elapsed: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        match &self.verdict {
            Verdict::Passed => write!(f, "passed  {} on {} ({secs:.2} s)", self.name, self.address),
            Verdict::Skipped(why) => {
                write!(f, "skipped {} on {}: {why}", self.name, self.address)
            }
            Verdict::Failed(why) => write!(
                f,
                "FAILED  {} on {} ({secs:.2} s): {why}",
                self.name, self.address
            ),
        }
    }
}

/// Runs one case, turning a panic into [`Verdict::Failed`] with its message.
pub fn run_case(case: &Case, provider: &dyn Provider, address: IpAddr) -> Report {
    let start = Instant::now();
    let verdict = match catch_unwind(AssertUnwindSafe(|| (case.run)(provider, address))) {
        Ok(Ok(())) => Verdict::Passed,
        Ok(Err(skip)) => Verdict::Skipped(skip.0),
        Err(payload) => Verdict::Failed(
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".to_string()),
        ),
    };
    Report {
        name: case.name,
        address,
        verdict,
        elapsed: start.elapsed(),
    }
}

/// Runs the cases whose names contain `filter` (all of them for `""`), one after the other,
/// calling `each` with every report as it is made; returns them all.
pub fn run(
    provider: &dyn Provider,
    address: IpAddr,
    filter: &str,
    mut each: impl FnMut(&Report),
) -> Vec<Report> {
    CASES
        .iter()
        .filter(|c| c.name.contains(filter))
        .map(|c| {
            let r = run_case(c, provider, address);
            each(&r);
            r
        })
        .collect()
}

/// Runs `name` and panics unless it passed: what a provider's own `#[test]` calls for a case
/// its adapters must support (a skip there is a lost test, so it fails too).
pub fn must_pass(name: &str, provider: &dyn Provider, address: IpAddr) {
    let case = case(name).unwrap_or_else(|| panic!("no case {name} in the suite"));
    match (case.run)(provider, address) {
        Ok(()) => {}
        Err(skip) => panic!("{name} skipped on {address}: {skip}"),
    }
}

/// `want` octets of inline data, or the adapter's `MaxInlineDataSize` if that is less (a QP
/// asking for more is refused `STATUS_INVALID_PARAMETER`, as the NDK requires; siw allows 80).
/// The suite's inline sends carry at most 11 octets.
pub fn inline_within(adapter: &dyn netdirect::Adapter, want: u32) -> u32 {
    want.min(adapter.query_info().max_inline_data_size)
}

/// The adapter's `NDK_ADAPTER_INFO` on `address` (a case that cannot open one fails).
pub fn adapter_info(provider: &dyn Provider, address: IpAddr) -> AdapterInfo {
    let adapter = provider
        .open_adapter(OpenParameters {
            address,
            version: Version::V1_2,
        })
        .unwrap_or_else(|s| panic!("cannot open an adapter on {address}: {s}"));
    let info = adapter.query_info();
    adapter.close();
    info
}

fn require_flag(
    provider: &dyn Provider,
    address: IpAddr,
    flag: AdapterFlags,
    name: &str,
) -> Outcome {
    if adapter_info(provider, address).adapter_flags.contains(flag) {
        Ok(())
    } else {
        Err(Skip(format!("the adapter does not declare {name}")))
    }
}

/// The adapter's declared deviations from NDK rules ([`netdirect::deviations`]).
pub fn deviations(provider: &dyn Provider, address: IpAddr) -> netdirect::deviations::Deviations {
    let adapter = provider
        .open_adapter(OpenParameters {
            address,
            version: Version::V1_2,
        })
        .unwrap_or_else(|s| panic!("cannot open an adapter on {address}: {s}"));
    let d = netdirect::deviations::deviations(&*adapter);
    adapter.close();
    d
}

/// Skips when the adapter declares it cannot keep a rule (`what` names it, `why` says which).
pub fn require_kept(deviates: bool, what: &str) -> Outcome {
    if deviates {
        Err(Skip(format!("the adapter declares the deviation {what}")))
    } else {
        Ok(())
    }
}

/// The peer's private data as `NdkGetConnectionData` reports it: exactly what was sent, or on
/// InfiniBand and RoCE (whose CM messages have a fixed-size private data field and no length)
/// what was sent followed by zeros.
pub fn assert_private_data(technology: RdmaTechnology, got: &[u8], sent: &[u8]) {
    match technology {
        RdmaTechnology::InfiniBand | RdmaTechnology::RoCE | RdmaTechnology::RoCEv2 => {
            assert!(
                got.len() >= sent.len()
                    && got[..sent.len()] == *sent
                    && got[sent.len()..].iter().all(|&b| b == 0),
                "private data {got:?}, sent {sent:?}"
            );
        }
        _ => assert_eq!(got, sent, "private data"),
    }
}

/// Skips unless connections from `address` to itself work.
pub fn require_loopback(provider: &dyn Provider, address: IpAddr) -> Outcome {
    require_flag(
        provider,
        address,
        AdapterFlags::LOOPBACK_CONNECTIONS_SUPPORTED,
        "NDK_ADAPTER_FLAG_LOOPBACK_CONNECTIONS_SUPPORTED",
    )
}

/// Skips unless the adapter fast-registers (`FRMRPageCount` at least the spec's minimum).
pub fn require_fast_register(provider: &dyn Provider, address: IpAddr) -> Outcome {
    let n = adapter_info(provider, address).frmr_page_count;
    if n >= FRMR_PAGE_COUNT_MIN {
        Ok(())
    } else {
        Err(Skip(format!(
            "no fast register (FRMRPageCount {n}, below the minimum {FRMR_PAGE_COUNT_MIN})"
        )))
    }
}

/// Skips unless the adapter has memory windows (`MaxWindowSize` ≠ 0).
pub fn require_memory_windows(provider: &dyn Provider, address: IpAddr) -> Outcome {
    if adapter_info(provider, address).max_window_size != 0 {
        Ok(())
    } else {
        Err(Skip("no memory windows (MaxWindowSize 0)".to_string()))
    }
}

/// Skips unless the adapter honours `NDK_OP_FLAG_RDMA_READ_LOCAL_INVALIDATE`.
pub fn require_read_local_invalidate(provider: &dyn Provider, address: IpAddr) -> Outcome {
    require_flag(
        provider,
        address,
        AdapterFlags::RDMA_READ_LOCAL_INVALIDATE_SUPPORTED,
        "NDK_ADAPTER_FLAG_RDMA_READ_LOCAL_INVALIDATE_SUPPORTED",
    )
}

/// Skips unless the adapter has shared receive queues (`MaxSrqDepth` ≠ 0).
pub fn require_srq(provider: &dyn Provider, address: IpAddr) -> Outcome {
    if adapter_info(provider, address).supports_srq() {
        Ok(())
    } else {
        Err(Skip("no shared receive queues (MaxSrqDepth 0)".to_string()))
    }
}

/// Turns a `STATUS_NOT_SUPPORTED` answer to `what` into a skip; other results pass through.
pub fn supported<T>(result: Result<T, Status>, what: &str) -> Result<Result<T, Status>, Skip> {
    match result {
        Err(Status::NOT_SUPPORTED) => Err(Skip(format!(
            "the provider answers {what} with STATUS_NOT_SUPPORTED"
        ))),
        other => Ok(other),
    }
}
