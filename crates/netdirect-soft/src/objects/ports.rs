//! The ND port space (NDK §2.8): which local endpoints (address and port) are held, and where
//! port 0 lands.
//!
//! An endpoint is held by a `Port` from `NdkListen`, `NdkConnect` or
//! `NdkCreateSharedEndpoint` until the object's references are gone: a listener's port until
//! its close completes (that is, until the connectors it delivered are closed too), a shared
//! endpoint's until its close completes (the connectors connected over it closed), a
//! connector's own port until the connector is closed ([`super::lifetime`] keeps the closes
//! pending). While held, another listen, connect from that address and port, or shared
//! endpoint on it fails with `STATUS_SHARING_VIOLATION` — whatever the kernel would allow with
//! the `SO_REUSEADDR` the transport sets.
//!
//! The table is the process's, as the host's TCP port space is: two adapters on one address
//! share it. The kernel still has the last word (a port another process holds fails the bind).
//!
//! Port 0 takes a port from [`EPHEMERAL_PORTS`] (49152-65535, NDK §2.8), not the host's
//! ephemeral range: the first one, from a rotating start, that is neither held here nor
//! refused by the bind.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use netdirect_types::{EPHEMERAL_PORTS, Status};
use parking_lot::Mutex;

static HELD: Mutex<BTreeSet<SocketAddr>> = Mutex::new(BTreeSet::new());

/// Where the next search for a free ephemeral port starts (0: not seeded yet).
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A held endpoint; dropping it releases it.
#[derive(Debug)]
pub(crate) struct Port {
    address: SocketAddr,
}

impl Port {
    /// Holds `address` (a concrete address and port), or `STATUS_SHARING_VIOLATION` when an
    /// endpoint holds it already.
    fn hold(address: SocketAddr) -> Result<Port, Status> {
        if HELD.lock().insert(address) {
            Ok(Port { address })
        } else {
            Err(Status::SHARING_VIOLATION)
        }
    }

    /// Holds `address` and runs `bind` with it; with port 0, with the ephemeral ports in turn
    /// until one is free here and `bind` takes it (`STATUS_SHARING_VIOLATION` or
    /// `STATUS_ADDRESS_ALREADY_EXISTS` from `bind` mean "taken, try the next";
    /// `STATUS_TOO_MANY_ADDRESSES` when none is left). Any other failure of `bind` is returned
    /// and nothing stays held.
    pub(crate) fn bind<T>(
        address: SocketAddr,
        mut bind: impl FnMut(SocketAddr) -> Result<T, Status>,
    ) -> Result<(Port, T), Status> {
        if address.port() != 0 {
            let port = Port::hold(address)?;
            return bind(address).map(|t| (port, t));
        }
        let first = u32::from(*EPHEMERAL_PORTS.start());
        let count = u32::from(*EPHEMERAL_PORTS.end()) - first + 1;
        let start = match NEXT.load(Ordering::Relaxed) {
            0 => seed(),
            n => n,
        };
        for i in 0..count {
            let port = first + (start + i) % count;
            let mut candidate = address;
            candidate.set_port(u16::try_from(port).unwrap_or(0));
            let Ok(held) = Port::hold(candidate) else {
                continue;
            };
            match bind(candidate) {
                Ok(t) => {
                    NEXT.store((start + i) % count + 1, Ordering::Relaxed);
                    return Ok((held, t));
                }
                Err(Status::SHARING_VIOLATION | Status::ADDRESS_ALREADY_EXISTS) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Status::TOO_MANY_ADDRESSES)
    }
}

/// A start that differs between processes, so that two of them do not race for one port.
fn seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (std::process::id() ^ nanos) % 16384 + 1
}

impl Drop for Port {
    fn drop(&mut self) {
        HELD.lock().remove(&self.address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_endpoint_is_refused_until_released() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (p, ()) = Port::bind(a, |_| Ok(())).unwrap();
        assert_eq!(
            Port::bind(a, |_| Ok(())).map(drop),
            Err(Status::SHARING_VIOLATION)
        );
        drop(p);
        assert!(Port::bind(a, |_| Ok(())).is_ok());
    }

    #[test]
    fn port_zero_takes_an_ndk_ephemeral_port_and_skips_refused_ones() {
        let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut tried = Vec::new();
        let (p, port) = Port::bind(a, |c| {
            tried.push(c.port());
            if tried.len() < 3 {
                Err(Status::SHARING_VIOLATION)
            } else {
                Ok(c.port())
            }
        })
        .unwrap();
        assert_eq!(tried.len(), 3);
        assert!(EPHEMERAL_PORTS.contains(&port));
        assert_eq!(p.address.port(), port);
        assert_eq!(
            Port::bind(a, |_| Err::<(), _>(Status::ACCESS_DENIED)).map(drop),
            Err(Status::ACCESS_DENIED)
        );
    }
}
