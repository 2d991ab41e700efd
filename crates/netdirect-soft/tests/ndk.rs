//! The provider-independent NDK suite (`netdirect-conformance`) over the software RNIC, end to
//! end over TCP loopback (127.0.0.1 and ::1): every case must pass here, none may skip (the soft
//! adapter declares every capability the suite asks about). Plus what only the soft provider
//! has (NetDMA placement), and the suite's own skipping by capability, driven by an adapter
//! that declares less.

use std::any::Any;
use std::net::{IpAddr, SocketAddr};

use netdirect::deviations::{DEVIATIONS_GUID, Deviations};
use netdirect::{
    Adapter, Affinity, Buffer, Connector, Cq, CqNotification, Lam, Listener, Object,
    OpenParameters, Pd, Provider, Request, SharedEndpoint,
};
use netdirect_conformance::{CASES, Verdict, must_pass};
use netdirect_soft::{Placement, SoftProvider};
use netdirect_types::{AdapterFlags, AdapterInfo, ObjectType, Status};

/// Runs each case of the suite on 127.0.0.1 and on ::1, one `#[test]` each; the list must name
/// every case ([`every_case_of_the_suite_runs_here`] checks).
macro_rules! both_families {
    ($($name:ident),* $(,)?) => {
        const LISTED: &[&str] = &[$(stringify!($name)),*];
        mod v4 {
            $(#[test]
            fn $name() {
                netdirect_conformance::must_pass(
                    stringify!($name),
                    &netdirect_soft::SoftProvider::new(),
                    "127.0.0.1".parse().unwrap(),
                );
            })*
        }
        mod v6 {
            $(#[test]
            fn $name() {
                netdirect_conformance::must_pass(
                    stringify!($name),
                    &netdirect_soft::SoftProvider::new(),
                    "::1".parse().unwrap(),
                );
            })*
        }
    };
}

both_families!(
    data_path,
    initiator_requests_need_a_connection,
    connect_refused_and_rejected,
    fast_register_over_the_wire,
    memory_windows_over_the_wire,
    write_to_invalid_token_terminates_and_cancels,
    cq_arming_solicited_and_any,
    cq_arm_on_a_non_empty_cq_fires_at_once,
    srq_feeds_two_qps_and_notifies_below_threshold,
    disconnect_event_without_flush_then_disconnect_flushes,
    receives_posted_after_the_peer_disconnected_complete_cancelled,
    sends_and_writes_behind_reads_leave_every_read_to_complete,
    fast_register_seed_rules_each_with_its_status,
    posting_limits_have_their_statuses,
    shared_endpoint_connects_twice_from_one_port,
    read_local_invalidate_and_cq_overflow,
    silent_read_local_invalidate_invalidates_the_sink,
    regular_sink_read_local_invalidate_fails_and_errors_the_qp,
    silent_regular_sink_read_local_invalidate_still_completes,
    write_named_by_the_peers_terminate_gets_its_status,
    cq_overflow_is_fatal_to_its_queue_pairs,
);

#[test]
fn every_case_of_the_suite_runs_here() {
    let mut suite: Vec<_> = CASES.iter().map(|c| c.name).collect();
    let mut here = LISTED.to_vec();
    suite.sort_unstable();
    here.sort_unstable();
    assert_eq!(
        suite, here,
        "a case of the suite is not run on the soft provider"
    );
}

#[test]
fn data_path_with_netdma_placement() {
    // Every inbound payload is copied into place by a NetDMA channel.
    let provider = SoftProvider::new().with_placement(Placement::NetDma);
    must_pass("data_path", &provider, "127.0.0.1".parse().unwrap());
}

/// A soft adapter that declares less than it has: `edit` rewrites its `NDK_ADAPTER_INFO`,
/// and it answers netdirect's deviations extension with `deviations`.
struct Declares {
    inner: SoftProvider,
    edit: fn(&mut AdapterInfo),
    deviations: Deviations,
}

struct DeclaringAdapter {
    inner: Box<dyn Adapter>,
    edit: fn(&mut AdapterInfo),
    deviations: Deviations,
}

impl Provider for Declares {
    fn name(&self) -> &str {
        "declares-less"
    }

    fn open_adapter(&self, params: OpenParameters) -> Result<Box<dyn Adapter>, Status> {
        Ok(Box::new(DeclaringAdapter {
            inner: self.inner.open_adapter(params)?,
            edit: self.edit,
            deviations: self.deviations,
        }))
    }
}

impl Object for DeclaringAdapter {
    fn object_type(&self) -> ObjectType {
        self.inner.object_type()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn query_extension(
        &self,
        id: &netdirect::Guid,
        version: netdirect_types::Version,
    ) -> Result<netdirect::Extension, Status> {
        if *id == DEVIATIONS_GUID && self.deviations != Deviations::NONE {
            return Ok(netdirect::Extension {
                dispatch: std::sync::Arc::new(self.deviations),
            });
        }
        self.inner.query_extension(id, version)
    }
}

impl Adapter for DeclaringAdapter {
    fn query_info(&self) -> AdapterInfo {
        let mut info = self.inner.query_info();
        (self.edit)(&mut info);
        info
    }

    fn create_cq(
        &self,
        depth: u32,
        notification: CqNotification,
        affinity: Option<Affinity>,
    ) -> Request<Box<dyn Cq>> {
        self.inner.create_cq(depth, notification, affinity)
    }

    fn create_pd(&self) -> Request<Box<dyn Pd>> {
        self.inner.create_pd()
    }

    fn create_shared_endpoint(&self, address: SocketAddr) -> Request<Box<dyn SharedEndpoint>> {
        self.inner.create_shared_endpoint(address)
    }

    fn create_connector(&self) -> Request<Box<dyn Connector>> {
        self.inner.create_connector()
    }

    fn create_listener(
        &self,
        connect_event: netdirect::ConnectEvent,
    ) -> Request<Box<dyn Listener>> {
        self.inner.create_listener(connect_event)
    }

    fn build_lam(&self, buffer: &Buffer, offset: usize, length: usize) -> Request<Lam> {
        self.inner.build_lam(buffer, offset, length)
    }

    fn release_lam(&self, lam: Lam) {
        self.inner.release_lam(lam)
    }

    fn close(self: Box<Self>) {
        self.inner.close()
    }
}

fn verdicts(edit: fn(&mut AdapterInfo), ip: IpAddr) -> Vec<(&'static str, Verdict)> {
    declared(edit, Deviations::NONE, ip)
}

fn declared(
    edit: fn(&mut AdapterInfo),
    deviations: Deviations,
    ip: IpAddr,
) -> Vec<(&'static str, Verdict)> {
    let provider = Declares {
        inner: SoftProvider::new(),
        edit,
        deviations,
    };
    netdirect_conformance::run(&provider, ip, "", |_| {})
        .into_iter()
        .map(|r| (r.name, r.verdict))
        .collect()
}

#[test]
fn cases_skip_by_declared_capability_with_the_reason() {
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    // No fast register, no windows, no SRQ, no read with local invalidate.
    let v = verdicts(
        |i| {
            i.frmr_page_count = 0;
            i.max_window_size = 0;
            i.max_srq_depth = 0;
            i.adapter_flags
                .remove(AdapterFlags::RDMA_READ_LOCAL_INVALIDATE_SUPPORTED);
        },
        ip,
    );
    let skipped = |name: &str| match v.iter().find(|(n, _)| *n == name) {
        Some((_, Verdict::Skipped(why))) => why.clone(),
        other => panic!("{name}: {other:?}"),
    };
    assert!(skipped("fast_register_over_the_wire").contains("FRMRPageCount 0"));
    assert!(skipped("fast_register_seed_rules_each_with_its_status").contains("fast register"));
    assert!(skipped("memory_windows_over_the_wire").contains("MaxWindowSize 0"));
    assert!(skipped("srq_feeds_two_qps_and_notifies_below_threshold").contains("MaxSrqDepth 0"));
    assert!(skipped("read_local_invalidate_and_cq_overflow").contains("fast register"));
    assert!(skipped("silent_read_local_invalidate_invalidates_the_sink").contains("fast register"));
    for name in [
        "regular_sink_read_local_invalidate_fails_and_errors_the_qp",
        "silent_regular_sink_read_local_invalidate_still_completes",
    ] {
        assert_eq!(
            skipped(name),
            "the adapter does not declare NDK_ADAPTER_FLAG_RDMA_READ_LOCAL_INVALIDATE_SUPPORTED"
        );
    }
    // The rest still run, and pass.
    let passed = v.iter().filter(|(_, v)| *v == Verdict::Passed).count();
    assert_eq!(passed, CASES.len() - 8, "{v:?}");

    // Not iWARP, read sinks not required: the Terminate case skips, the iWARP provider codes
    // and the read-sink refusals are not asserted, everything else passes.
    let v = verdicts(
        |i| {
            i.rdma_technology = netdirect_types::RdmaTechnology::RoCEv2;
            i.adapter_flags
                .insert(AdapterFlags::RDMA_READ_SINK_NOT_REQUIRED);
        },
        ip,
    );
    for (name, verdict) in &v {
        if *name == "write_named_by_the_peers_terminate_gets_its_status" {
            assert_eq!(
                *verdict,
                Verdict::Skipped(
                    "not an iWARP adapter (RdmaTechnology NdkRoCEv2): no Terminate message"
                        .to_string()
                )
            );
        } else {
            assert_eq!(*verdict, Verdict::Passed, "{name}");
        }
    }

    // Without loopback connections only the case that never connects runs.
    let v = verdicts(
        |i| {
            i.adapter_flags
                .remove(AdapterFlags::LOOPBACK_CONNECTIONS_SUPPORTED)
        },
        ip,
    );
    for (name, verdict) in &v {
        if *name == "initiator_requests_need_a_connection" {
            assert_eq!(*verdict, Verdict::Passed);
        } else {
            assert_eq!(
                *verdict,
                Verdict::Skipped(
                    "the adapter does not declare NDK_ADAPTER_FLAG_LOOPBACK_CONNECTIONS_SUPPORTED"
                        .to_string()
                ),
                "{name}"
            );
        }
    }
}

/// Rules an adapter declares it cannot keep (netdirect's deviations extension) skip the case
/// that pins each, with the deviation in the reason, or adapt it; the soft provider declares
/// none (every case above runs in full).
#[test]
fn cases_skip_or_adapt_by_declared_deviation() {
    for ip in ["127.0.0.1", "::1"] {
        let ip: IpAddr = ip.parse().unwrap();
        let all = Deviations {
            no_solicited_notifications: true,
            peer_disconnect_flushes: true,
            no_terminate_detail: true,
            cq_overflow_beyond_depth: true,
        };
        let v = declared(|_| {}, all, ip);
        let expect = [
            ("cq_arming_solicited_and_any", "no_solicited_notifications"),
            (
                "disconnect_event_without_flush_then_disconnect_flushes",
                "peer_disconnect_flushes",
            ),
            (
                "write_named_by_the_peers_terminate_gets_its_status",
                "no_terminate_detail",
            ),
        ];
        for (name, verdict) in &v {
            match expect.iter().find(|(n, _)| n == name) {
                Some((_, deviation)) => match verdict {
                    Verdict::Skipped(why) => assert!(
                        why.starts_with(&format!("the adapter declares the deviation {deviation}")),
                        "{name}: {why}"
                    ),
                    other => panic!("{name} on {ip}: {other:?}"),
                },
                // The overflow case adapts, the invalid-token case leaves out the code.
                None => assert_eq!(*verdict, Verdict::Passed, "{name} on {ip}"),
            }
        }
        assert_eq!(
            netdirect::deviations::deviations(&*netdirect_conformance::support::open(
                &SoftProvider::new(),
                ip
            )),
            Deviations::NONE
        );
    }
}

#[test]
fn a_failing_case_is_reported_not_fatal() {
    // A provider whose adapters do not open: every case fails, each reported with why, and the
    // run goes on to the next.
    struct Closed;
    impl Provider for Closed {
        fn name(&self) -> &str {
            "closed"
        }
        fn open_adapter(&self, _: OpenParameters) -> Result<Box<dyn Adapter>, Status> {
            Err(Status::INVALID_ADDRESS)
        }
    }
    let reports = netdirect_conformance::run(&Closed, "127.0.0.1".parse().unwrap(), "", |_| {});
    assert_eq!(reports.len(), CASES.len());
    for r in &reports {
        match &r.verdict {
            Verdict::Failed(why) => assert!(why.contains("adapter"), "{}: {why}", r.name),
            other => panic!("{}: {other:?}", r.name),
        }
    }
}
