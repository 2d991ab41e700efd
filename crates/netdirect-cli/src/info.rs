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
    /// The verbs device the adapter is on (`siw0`); none for the soft provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
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
        device: Option<String>,
        i: &AdapterInfo,
    ) -> AdapterReport {
        AdapterReport {
            name,
            provider,
            address,
            device,
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
    // The verbs devices themselves (ibv_devinfo's view), unless one adapter was asked for.
    let devices = if providers.contains(&ProviderName::Verbs) && a.device.is_none() {
        verbs_devices(&addrs)?
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for (name, p, ip) in chosen {
        match Side::open_with(p, ip, Duration::from_secs(10)) {
            Ok(side) => {
                let device = side
                    .adapter
                    .as_any()
                    .downcast_ref::<netdirect_verbs::VerbsAdapter>()
                    .map(netdirect_verbs::VerbsAdapter::device_name);
                out.push((
                    AdapterReport::new(name, p, ip, device, &side.info),
                    side.info,
                ));
            }
            // Without explicit addresses, an address that cannot be opened is skipped.
            Err(_) if !explicit && a.device.is_none() => {}
            Err(e) => return Err(e),
        }
    }
    // An address's adapter name (`verbs2`), for the devices' address lists.
    let adapter_of = |ip: IpAddr| {
        out.iter()
            .find(|(r, _)| r.provider == ProviderName::Verbs && r.address == ip)
            .map(|(r, _)| r.name.clone())
    };
    if a.json {
        let list: Vec<&AdapterReport> = out.iter().map(|(r, _)| r).collect();
        let devs: Vec<DeviceJson> = devices
            .iter()
            .map(|d| DeviceJson::new(d, &adapter_of))
            .collect();
        let text = serde_json::to_string(&InfoReport {
            devices: devs,
            adapters: list,
        })
        .map_err(|e| Error::msg(e.to_string()))?;
        outln!("{text}");
    } else {
        for d in &devices {
            outln!("{}", device_text(d, &adapter_of));
        }
        for (n, (r, i)) in out.iter().enumerate() {
            if n > 0 {
                outln!();
            }
            match &r.device {
                Some(d) => outln!(
                    "{}: provider {}, address {}, device {d}",
                    r.name,
                    r.provider,
                    r.address
                ),
                None => outln!("{}: provider {}, address {}", r.name, r.provider, r.address),
            }
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
    /// The verbs devices (absent when the verbs provider is not listed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    devices: Vec<DeviceJson>,
    adapters: Vec<&'a AdapterReport>,
}

/// The verbs provider's devices, with which of `addrs` each port serves.
fn verbs_devices(addrs: &[IpAddr]) -> Result<Vec<netdirect_verbs::DeviceReport>> {
    let why = |e: netdirect_verbs::VerbsError| {
        Error::status(
            format!(
                "the verbs provider is not available: {}",
                e.to_string().trim_start_matches("verbs provider: ")
            ),
            e.status(),
        )
    };
    netdirect_verbs::VerbsProvider::new()
        .map_err(why)?
        .device_reports(addrs)
        .map_err(why)
}

/// A device's limits under ibv_devinfo -v's names.
fn device_limits(l: &netdirect_verbs::DeviceLimits) -> Vec<(&'static str, String)> {
    vec![
        ("MaxQp", l.max_qp.to_string()),
        ("MaxQpWr", l.max_qp_wr.to_string()),
        ("MaxSge", l.max_sge.to_string()),
        ("MaxSgeRd", l.max_sge_rd.to_string()),
        ("MaxCq", l.max_cq.to_string()),
        ("MaxCqe", l.max_cqe.to_string()),
        ("MaxMr", l.max_mr.to_string()),
        ("MaxMrSize", l.max_mr_size.to_string()),
        ("MaxPd", l.max_pd.to_string()),
        ("MaxQpRdAtom", l.max_qp_rd_atom.to_string()),
        ("MaxQpInitRdAtom", l.max_qp_init_rd_atom.to_string()),
        ("MaxSrq", l.max_srq.to_string()),
        ("MaxSrqWr", l.max_srq_wr.to_string()),
        ("MaxMw", l.max_mw.to_string()),
    ]
}

/// "10.0.2.15 (verbs2), fd5a::15 (verbs3)": addresses with the adapter names `nd info` gave them.
fn address_list(addrs: &[IpAddr], adapter_of: &dyn Fn(IpAddr) -> Option<String>) -> String {
    if addrs.is_empty() {
        return "none (no local address maps to this port)".into();
    }
    addrs
        .iter()
        .map(|a| match adapter_of(*a) {
            Some(n) => format!("{a} ({n})"),
            None => a.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A verbs device as `nd info` prints it: transport, each port's state, link layer, GIDs and
/// addresses, then the device's limits (the NDK view of them follows per adapter).
fn device_text(
    d: &netdirect_verbs::DeviceReport,
    adapter_of: &dyn Fn(IpAddr) -> Option<String>,
) -> String {
    let mut s = format!(
        "{}: verbs device, transport {}, vendor {:#x} part {}, {} port(s)\n",
        d.name,
        d.transport,
        d.vendor_id,
        d.vendor_part_id,
        d.ports.len()
    );
    for p in &d.ports {
        let n = p.port;
        s += &format!(
            "    {:<24}: {}, link layer {}, MTU {}, RdmaTechnology {}\n",
            format!("Port {n}"),
            p.state,
            p.link_layer,
            p.active_mtu,
            p.technology
        );
        let gids: Vec<String> = p.gids.iter().map(ToString::to_string).collect();
        s += &format!(
            "    {:<24}: {}\n",
            format!("Port {n} GIDs"),
            if gids.is_empty() {
                "none".into()
            } else {
                gids.join(", ")
            }
        );
        s += &format!(
            "    {:<24}: {}\n",
            format!("Port {n} addresses"),
            address_list(&p.addresses, adapter_of)
        );
    }
    for (k, v) in device_limits(&d.limits) {
        s += &format!("    {k:<24}: {v}\n");
    }
    s
}

/// A verbs device in `nd info --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeviceJson {
    name: String,
    transport: &'static str,
    vendor_id: u32,
    vendor_part_id: u32,
    ports: Vec<PortJson>,
    limits: serde_json::Map<String, serde_json::Value>,
}

/// A port of a verbs device in `nd info --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct PortJson {
    port: u8,
    state: &'static str,
    link_layer: &'static str,
    active_mtu: u32,
    rdma_technology: String,
    gids: Vec<String>,
    addresses: Vec<String>,
    /// The adapters `nd info` listed on those addresses (`verbs2`).
    adapters: Vec<String>,
}

impl DeviceJson {
    fn new(
        d: &netdirect_verbs::DeviceReport,
        adapter_of: &dyn Fn(IpAddr) -> Option<String>,
    ) -> DeviceJson {
        DeviceJson {
            name: d.name.clone(),
            transport: d.transport,
            vendor_id: d.vendor_id,
            vendor_part_id: d.vendor_part_id,
            ports: d
                .ports
                .iter()
                .map(|p| PortJson {
                    port: p.port,
                    state: p.state,
                    link_layer: p.link_layer,
                    active_mtu: p.active_mtu,
                    rdma_technology: p.technology.to_string(),
                    gids: p.gids.iter().map(ToString::to_string).collect(),
                    addresses: p.addresses.iter().map(ToString::to_string).collect(),
                    adapters: p.addresses.iter().filter_map(|a| adapter_of(*a)).collect(),
                })
                .collect(),
            limits: device_limits(&d.limits)
                .into_iter()
                .map(|(k, v)| {
                    let n = v.parse::<u64>().map_or_else(
                        |_| serde_json::Value::String(v.clone()),
                        serde_json::Value::from,
                    );
                    (k.to_string(), n)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netdirect_types::RdmaTechnology;
    use netdirect_verbs::{DeviceLimits, DeviceReport, PortReport};

    fn siw0() -> DeviceReport {
        DeviceReport {
            name: "siw0".into(),
            transport: "iWARP",
            vendor_id: 0x626d74,
            vendor_part_id: 1,
            ports: vec![PortReport {
                port: 1,
                state: "ACTIVE",
                link_layer: "Ethernet",
                active_mtu: 1024,
                technology: RdmaTechnology::IWarp,
                gids: vec!["5054:ff:fe12:3456::".parse().unwrap()],
                addresses: vec!["10.0.2.15".parse().unwrap(), "fd5a::15".parse().unwrap()],
            }],
            limits: DeviceLimits {
                max_qp: 32768,
                max_qp_wr: 32768,
                max_sge: 6,
                max_sge_rd: 0,
                max_cq: 32768,
                max_cqe: 3276800,
                max_mr: 32768,
                max_mr_size: u64::MAX,
                max_pd: 32768,
                max_qp_rd_atom: 128,
                max_qp_init_rd_atom: 128,
                max_srq: 32768,
                max_srq_wr: 327680,
                max_mw: 0,
            },
        }
    }

    fn names(ip: IpAddr) -> Option<String> {
        (ip == "10.0.2.15".parse::<IpAddr>().unwrap()).then(|| "verbs2".into())
    }

    /// `nd info --provider verbs` lists each device: transport, port state, link layer, GIDs,
    /// the addresses an adapter can be opened on (with the adapter's name), and the limits.
    #[test]
    fn a_verbs_device_is_listed_with_ports_addresses_and_limits() {
        let text = device_text(&siw0(), &names);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "siw0: verbs device, transport iWARP, vendor 0x626d74 part 1, 1 port(s)"
        );
        assert_eq!(
            lines[1],
            "    Port 1                  : ACTIVE, link layer Ethernet, MTU 1024, RdmaTechnology NdkiWarp"
        );
        assert_eq!(
            lines[2],
            "    Port 1 GIDs             : 5054:ff:fe12:3456::"
        );
        assert_eq!(
            lines[3],
            "    Port 1 addresses        : 10.0.2.15 (verbs2), fd5a::15"
        );
        assert!(
            text.contains("    MaxQpWr                 : 32768\n"),
            "{text}"
        );
        assert!(
            text.contains("    MaxMrSize               : 18446744073709551615\n"),
            "{text}"
        );

        let j = serde_json::to_value(DeviceJson::new(&siw0(), &names)).unwrap();
        assert_eq!(j["Name"], "siw0");
        assert_eq!(j["Transport"], "iWARP");
        let port = &j["Ports"][0];
        assert_eq!(port["State"], "ACTIVE");
        assert_eq!(port["RdmaTechnology"], "NdkiWarp");
        assert_eq!(port["Addresses"][0], "10.0.2.15");
        assert_eq!(port["Adapters"], serde_json::json!(["verbs2"]));
        assert_eq!(j["Limits"]["MaxQpRdAtom"], 128);
        assert_eq!(j["Limits"]["MaxMrSize"], u64::MAX);
    }

    /// A port no local address maps to says so.
    #[test]
    fn a_port_without_addresses_says_none() {
        let mut d = siw0();
        d.ports[0].addresses.clear();
        d.ports[0].gids.clear();
        let text = device_text(&d, &names);
        assert!(text.contains("Port 1 GIDs             : none\n"), "{text}");
        assert!(
            text.contains("Port 1 addresses        : none (no local address maps to this port)\n"),
            "{text}"
        );
    }
}
