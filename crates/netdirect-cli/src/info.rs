//! `nd info`: adapters and their `NDK_ADAPTER_INFO`, in `ndadapterinfo`'s `Key: value` form.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use clap::Args;

use crate::outln;
use netdirect_types::AdapterInfo;
use serde_json::json;

use crate::conn::Side;
use crate::error::Result;

/// `nd info` flags.
#[derive(Args, Debug, Clone)]
pub struct InfoArgs {
    /// Addresses to open adapters on (default 127.0.0.1 and ::1).
    #[arg(short = 'a', long = "address")]
    address: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn fields(i: &AdapterInfo) -> Vec<(&'static str, String)> {
    vec![
        ("InfoVersion", i.version.to_string()),
        ("VendorId", format!("{:#06x}", i.vendor_id)),
        ("DeviceId", format!("{:#06x}", i.device_id)),
        ("MaxRegistrationSize", i.max_registration_size.to_string()),
        ("MaxWindowSize", i.max_window_size.to_string()),
        ("FRMRPageCount", i.frmr_page_count.to_string()),
        (
            "MaxInitiatorRequestSge",
            i.max_initiator_request_sge.to_string(),
        ),
        (
            "MaxReceiveRequestSge",
            i.max_receive_request_sge.to_string(),
        ),
        ("MaxReadRequestSge", i.max_read_request_sge.to_string()),
        ("MaxTransferLength", i.max_transfer_length.to_string()),
        ("MaxInlineDataSize", i.max_inline_data_size.to_string()),
        ("MaxInboundReadLimit", i.max_inbound_read_limit.to_string()),
        (
            "MaxOutboundReadLimit",
            i.max_outbound_read_limit.to_string(),
        ),
        (
            "MaxReceiveQueueDepth",
            i.max_receive_queue_depth.to_string(),
        ),
        (
            "MaxInitiatorQueueDepth",
            i.max_initiator_queue_depth.to_string(),
        ),
        ("MaxSrqDepth", i.max_srq_depth.to_string()),
        ("MaxCqDepth", i.max_cq_depth.to_string()),
        (
            "LargeRequestThreshold",
            i.large_request_threshold.to_string(),
        ),
        ("MaxCallerData", i.max_caller_data.to_string()),
        ("MaxCalleeData", i.max_callee_data.to_string()),
        (
            "AdapterFlags",
            format!("{:#010x} ({})", i.adapter_flags.bits(), i.adapter_flags),
        ),
        ("RdmaTechnology", i.rdma_technology.to_string()),
    ]
}

/// Runs `nd info`.
pub fn run(a: &InfoArgs) -> Result<()> {
    let addrs: Vec<IpAddr> = if a.address.is_empty() {
        vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
    } else {
        a.address
            .iter()
            .map(|s| crate::parse_ip(s))
            .collect::<Result<_>>()?
    };
    let explicit = !a.address.is_empty();
    let mut out = Vec::new();
    for ip in addrs {
        match Side::open(ip, Duration::from_secs(10)) {
            Ok(side) => out.push((ip, side.info)),
            // Without explicit addresses, a missing IPv6 loopback is not an error.
            Err(_) if !explicit && ip.is_ipv6() => {}
            Err(e) => return Err(e),
        }
    }
    if a.json {
        let list: Vec<_> = out
            .iter()
            .map(|(ip, i)| {
                let mut m = serde_json::Map::new();
                m.insert("provider".into(), json!("soft"));
                m.insert("address".into(), json!(ip.to_string()));
                for (k, v) in fields(i) {
                    m.insert(k.into(), json!(v));
                }
                serde_json::Value::Object(m)
            })
            .collect();
        outln!("{}", json!({ "adapters": list }));
    } else {
        for (n, (ip, i)) in out.iter().enumerate() {
            if n > 0 {
                outln!();
            }
            outln!("Adapter {n}: provider soft, address {ip}");
            for (k, v) in fields(i) {
                outln!("    {k:<24}: {v}");
            }
        }
    }
    Ok(())
}
