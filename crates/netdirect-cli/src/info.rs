//! `nd info`: adapters and their `NDK_ADAPTER_INFO`, in `ndadapterinfo`'s `Key: value` form.

use std::net::IpAddr;
use std::time::Duration;

use clap::Args;

use crate::outln;
use netdirect_types::AdapterInfo;
use netdirect_types::Status;
use serde::Serialize;

use crate::conn::Side;
use crate::error::{Error, Result};
use crate::provider::{self, ProviderName};

/// `nd info` flags.
#[derive(Args, Debug, Clone)]
pub struct InfoArgs {
    /// Addresses to open adapters on (default: every local address, as `ibv_devinfo` lists
    /// every device).
    #[arg(short = 'a', long = "address")]
    address: Vec<String>,
    /// One adapter, by name (`soft0`, `soft1`, … as listed) or by address (ibv_devinfo's -d).
    #[arg(short = 'd', long = "ib-dev")]
    device: Option<String>,
    /// Print JSON (one document: `{"adapters": [...]}`, numbers as numbers).
    #[arg(long)]
    json: bool,
    /// Only this provider's adapters: `soft` or `verbs` (default: every provider available
    /// in this build; one that is not fails the command with the reason).
    #[arg(long = "provider", value_enum, value_name = "NAME")]
    provider: Option<ProviderName>,
}

/// One adapter as `nd info` reports it: `NDK_ADAPTER_INFO` with ndadapterinfo's names.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "PascalCase")]
struct AdapterReport {
    name: String,
    provider: ProviderName,
    address: IpAddr,
    info_version: String,
    vendor_id: u32,
    device_id: u32,
    max_registration_size: u64,
    max_window_size: u64,
    #[serde(rename = "FRMRPageCount")]
    frmr_page_count: u32,
    max_initiator_request_sge: u32,
    max_receive_request_sge: u32,
    max_read_request_sge: u32,
    max_transfer_length: u32,
    max_inline_data_size: u32,
    max_inbound_read_limit: u32,
    max_outbound_read_limit: u32,
    max_receive_queue_depth: u32,
    max_initiator_queue_depth: u32,
    max_srq_depth: u32,
    max_cq_depth: u32,
    large_request_threshold: u32,
    max_caller_data: u32,
    max_callee_data: u32,
    adapter_flags: u32,
    adapter_flag_names: String,
    rdma_technology: String,
}

impl AdapterReport {
    fn new(
        name: String,
        provider: ProviderName,
        address: IpAddr,
        i: &AdapterInfo,
    ) -> AdapterReport {
        AdapterReport {
            name,
            provider,
            address,
            info_version: i.version.to_string(),
            vendor_id: i.vendor_id,
            device_id: i.device_id,
            max_registration_size: i.max_registration_size,
            max_window_size: i.max_window_size,
            frmr_page_count: i.frmr_page_count,
            max_initiator_request_sge: i.max_initiator_request_sge,
            max_receive_request_sge: i.max_receive_request_sge,
            max_read_request_sge: i.max_read_request_sge,
            max_transfer_length: i.max_transfer_length,
            max_inline_data_size: i.max_inline_data_size,
            max_inbound_read_limit: i.max_inbound_read_limit,
            max_outbound_read_limit: i.max_outbound_read_limit,
            max_receive_queue_depth: i.max_receive_queue_depth,
            max_initiator_queue_depth: i.max_initiator_queue_depth,
            max_srq_depth: i.max_srq_depth,
            max_cq_depth: i.max_cq_depth,
            large_request_threshold: i.large_request_threshold,
            max_caller_data: i.max_caller_data,
            max_callee_data: i.max_callee_data,
            adapter_flags: i.adapter_flags.bits(),
            adapter_flag_names: i.adapter_flags.to_string(),
            rdma_technology: i.rdma_technology.to_string(),
        }
    }
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

/// The name `nd info` gives a provider's adapter on the `n`th local address (`soft0`,
/// `soft1`, …, `verbs0`, …).
fn adapter_name(provider: ProviderName, n: usize) -> String {
    format!("{provider}{n}")
}

/// The address of the adapter `device` names: `soft<N>` as `nd info` lists them, or an address.
pub fn adapter_address(device: &str) -> Result<IpAddr> {
    if let Some(ip) = crate::conn::local_addresses()
        .into_iter()
        .enumerate()
        .find_map(|(n, ip)| {
            ProviderName::ALL
                .iter()
                .any(|p| adapter_name(*p, n) == device)
                .then_some(ip)
        })
    {
        return Ok(ip);
    }
    crate::parse_ip(device).map_err(|_| {
        Error::status(
            format!("-d {device}: no such adapter (see `nd info` for names and addresses)"),
            Status::INVALID_PARAMETER,
        )
    })
}

/// Runs `nd info`.
pub fn run(a: &InfoArgs) -> Result<()> {
    let explicit = !a.address.is_empty();
    let addrs: Vec<IpAddr> = if explicit {
        a.address
            .iter()
            .map(|s| crate::parse_ip(s))
            .collect::<Result<_>>()?
    } else {
        crate::conn::local_addresses()
    };
    // An explicit provider must be available; without one, every provider this build has.
    let providers: Vec<ProviderName> = match a.provider {
        Some(p) => {
            provider::open(p)?;
            vec![p]
        }
        None => ProviderName::ALL
            .into_iter()
            .filter(|p| provider::open(*p).is_ok())
            .collect(),
    };
    // Names follow the listing order, so `-d soft1` names what `nd info` showed as soft1.
    let named: Vec<(String, ProviderName, IpAddr)> = providers
        .iter()
        .flat_map(|p| {
            addrs
                .iter()
                .enumerate()
                .map(|(n, ip)| (adapter_name(*p, n), *p, *ip))
        })
        .collect();
    let chosen: Vec<(String, ProviderName, IpAddr)> = match a.device.as_deref() {
        None => named,
        Some(d) => {
            let by_addr = crate::parse_ip(d).ok();
            let hit: Vec<_> = named
                .into_iter()
                .filter(|(name, _, ip)| name == d || Some(*ip) == by_addr)
                .collect();
            if hit.is_empty() {
                return Err(Error::status(
                    format!("-d {d}: no such adapter (see `nd info` for names and addresses)"),
                    Status::INVALID_PARAMETER,
                ));
            }
            hit
        }
    };
    let mut out = Vec::new();
    for (name, p, ip) in chosen {
        match Side::open_with(p, ip, Duration::from_secs(10)) {
            Ok(side) => out.push((AdapterReport::new(name, p, ip, &side.info), side.info)),
            // Without explicit addresses, an address that cannot be opened is skipped.
            Err(_) if !explicit && a.device.is_none() => {}
            Err(e) => return Err(e),
        }
    }
    if a.json {
        let list: Vec<&AdapterReport> = out.iter().map(|(r, _)| r).collect();
        let text = serde_json::to_string(&InfoReport { adapters: list })
            .map_err(|e| Error::msg(e.to_string()))?;
        outln!("{text}");
    } else {
        for (n, (r, i)) in out.iter().enumerate() {
            if n > 0 {
                outln!();
            }
            outln!("{}: provider {}, address {}", r.name, r.provider, r.address);
            for (k, v) in fields(i) {
                outln!("    {k:<24}: {v}");
            }
        }
    }
    Ok(())
}

/// `nd info --json`.
#[derive(Debug, serde::Serialize)]
struct InfoReport<'a> {
    adapters: Vec<&'a AdapterReport>,
}
