//! The RDMA devices as `nd info --provider verbs` lists them (ibv_devinfo's view): name,
//! transport, ports with state, link layer and GIDs, the local addresses an adapter can be
//! opened on, and the device's limits from `ibv_query_device`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use netdirect_types::RdmaTechnology;

use crate::ffi::{self, Ctx, Lib};
use crate::{VerbsError, technology};

/// GID table entries read per port at most (rxe keeps one per address; hardware has 128+).
const MAX_GIDS: i32 = 16;

/// A port of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortReport {
    /// The port number (from 1).
    pub port: u8,
    /// `ibv_port_attr.state` in ibv_devinfo's words (`ACTIVE`, `DOWN`, ...).
    pub state: &'static str,
    /// `Ethernet` or `InfiniBand` (the port's link layer).
    pub link_layer: &'static str,
    /// The active MTU in octets.
    pub active_mtu: u32,
    /// The transport of an adapter on this port.
    pub technology: RdmaTechnology,
    /// The port's non-zero GIDs, in table order.
    pub gids: Vec<Ipv6Addr>,
    /// The local addresses (of those asked about) that rdma-cm maps to this port: where an
    /// adapter of this device can be opened.
    pub addresses: Vec<IpAddr>,
}

/// A device's limits, as `ibv_query_device` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// `max_qp`.
    pub max_qp: i32,
    /// `max_qp_wr`.
    pub max_qp_wr: i32,
    /// `max_sge`.
    pub max_sge: i32,
    /// `max_sge_rd`.
    pub max_sge_rd: i32,
    /// `max_cq`.
    pub max_cq: i32,
    /// `max_cqe`.
    pub max_cqe: i32,
    /// `max_mr`.
    pub max_mr: i32,
    /// `max_mr_size`.
    pub max_mr_size: u64,
    /// `max_pd`.
    pub max_pd: i32,
    /// `max_qp_rd_atom` (IRD).
    pub max_qp_rd_atom: i32,
    /// `max_qp_init_rd_atom` (ORD).
    pub max_qp_init_rd_atom: i32,
    /// `max_srq`.
    pub max_srq: i32,
    /// `max_srq_wr`.
    pub max_srq_wr: i32,
    /// `max_mw`.
    pub max_mw: i32,
}

/// One RDMA device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceReport {
    /// The kernel device name (`siw0`, `rxe0`, `mlx5_0`).
    pub name: String,
    /// The device's transport (`iWARP` or `InfiniBand`, as ibv_devinfo says; RoCE devices
    /// have the InfiniBand transport on an Ethernet link layer).
    pub transport: &'static str,
    /// `vendor_id`.
    pub vendor_id: u32,
    /// `vendor_part_id`.
    pub vendor_part_id: u32,
    /// Its ports.
    pub ports: Vec<PortReport>,
    /// Its limits.
    pub limits: DeviceLimits,
}

/// ibv_devinfo's name of an `ibv_port_state`.
fn port_state(state: i32) -> &'static str {
    match state {
        0 => "NOP",
        1 => "DOWN",
        2 => "INIT",
        3 => "ARMED",
        4 => "ACTIVE",
        5 => "ACTIVE_DEFER",
        _ => "UNKNOWN",
    }
}

fn link_layer(l: u8) -> &'static str {
    match l {
        ffi::IBV_LINK_LAYER_INFINIBAND => "InfiniBand",
        ffi::IBV_LINK_LAYER_ETHERNET => "Ethernet",
        // IBV_LINK_LAYER_UNSPECIFIED: InfiniBand by the header's rule.
        _ => "InfiniBand",
    }
}

/// `enum ibv_mtu` (1..=5: 256..4096 octets) in octets.
fn mtu_octets(mtu: i32) -> u32 {
    if (1..=5).contains(&mtu) {
        128 << mtu
    } else {
        0
    }
}

/// The device and port rdma-cm maps `address` to (binding a scratch id there), if any.
fn device_of(lib: &Lib, address: IpAddr) -> Option<(Ctx, u8)> {
    let ch = lib.create_event_channel()?;
    let found = lib.create_id(ch).ok().and_then(|id| {
        let dev = if lib.bind_addr(id, SocketAddr::new(address, 0)) == 0 {
            lib.id_device(id)
        } else {
            None
        };
        lib.destroy_id(id);
        dev
    });
    lib.destroy_event_channel(ch);
    found
}

/// Every device with its ports; `addresses` are the local addresses to map to ports.
pub(crate) fn reports(lib: &Lib, addresses: &[IpAddr]) -> Result<Vec<DeviceReport>, VerbsError> {
    if lib.device_names().is_empty() {
        return Err(VerbsError::NoDevice);
    }
    let ctxs = lib.cm_devices();
    // Which (device, port) serves each address: rdma-cm's own answer, as an open would get.
    let served: Vec<(IpAddr, String, u8)> = addresses
        .iter()
        .filter_map(|a| {
            device_of(lib, *a).map(|(ctx, port)| (*a, lib.ctx_device_name(ctx), port.max(1)))
        })
        .collect();
    let mut out = Vec::new();
    for ctx in ctxs {
        let name = lib.ctx_device_name(ctx);
        let transport = lib.ctx_transport(ctx);
        let dev = lib
            .query_device(ctx)
            .map_err(|e| VerbsError::Status(crate::errno_status(e)))?;
        let mut ports = Vec::new();
        for port in 1..=dev.phys_port_cnt.max(1) {
            let Ok(pa) = lib.query_port(ctx, port) else {
                continue;
            };
            let gids = (0..pa.gid_tbl_len.clamp(0, MAX_GIDS))
                .filter_map(|i| lib.query_gid(ctx, port, i).ok())
                .filter(|g| g.iter().any(|b| *b != 0))
                .map(Ipv6Addr::from)
                .collect();
            ports.push(PortReport {
                port,
                state: port_state(pa.state),
                link_layer: link_layer(pa.link_layer),
                active_mtu: mtu_octets(pa.active_mtu),
                technology: technology(transport, pa.link_layer),
                gids,
                addresses: served
                    .iter()
                    .filter(|(_, d, p)| *d == name && *p == port)
                    .map(|(a, _, _)| *a)
                    .collect(),
            });
        }
        out.push(DeviceReport {
            name,
            transport: if transport == ffi::IBV_TRANSPORT_IWARP {
                "iWARP"
            } else {
                "InfiniBand"
            },
            vendor_id: dev.vendor_id,
            vendor_part_id: dev.vendor_part_id,
            ports,
            limits: DeviceLimits {
                max_qp: dev.max_qp,
                max_qp_wr: dev.max_qp_wr,
                max_sge: dev.max_sge,
                max_sge_rd: dev.max_sge_rd,
                max_cq: dev.max_cq,
                max_cqe: dev.max_cqe,
                max_mr: dev.max_mr,
                max_mr_size: dev.max_mr_size,
                max_pd: dev.max_pd,
                max_qp_rd_atom: dev.max_qp_rd_atom,
                max_qp_init_rd_atom: dev.max_qp_init_rd_atom,
                max_srq: dev.max_srq,
                max_srq_wr: dev.max_srq_wr,
                max_mw: dev.max_mw,
            },
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_words_are_ibv_devinfos() {
        assert_eq!(port_state(4), "ACTIVE");
        assert_eq!(port_state(1), "DOWN");
        assert_eq!(port_state(99), "UNKNOWN");
        assert_eq!(link_layer(ffi::IBV_LINK_LAYER_ETHERNET), "Ethernet");
        assert_eq!(link_layer(0), "InfiniBand");
        assert_eq!(mtu_octets(3), 1024);
        assert_eq!(mtu_octets(5), 4096);
        assert_eq!(mtu_octets(0), 0);
    }
}
