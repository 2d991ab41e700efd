//! Socket errors to NTSTATUS (the table is in the module docs of [`super`]).

use std::io::{self, ErrorKind};

use netdirect_proto::handshake::HandshakeError;
use netdirect_types::Status;

// Linux errno values the standard library has no `ErrorKind` for.
const EHOSTDOWN: i32 = 112;
const ENOBUFS: i32 = 105;
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
const EAFNOSUPPORT: i32 = 97;

/// Out of descriptors, buffers or memory.
pub(crate) fn resources(e: &io::Error) -> bool {
    e.kind() == ErrorKind::OutOfMemory
        || matches!(e.raw_os_error(), Some(ENOBUFS | EMFILE | ENFILE))
}

/// The status of a failed `bind` (listen or connect from a given local address).
pub fn bind_status(e: &io::Error) -> Status {
    match e.kind() {
        ErrorKind::AddrInUse => Status::SHARING_VIOLATION,
        ErrorKind::AddrNotAvailable => Status::INVALID_ADDRESS,
        ErrorKind::PermissionDenied => Status::ACCESS_DENIED,
        ErrorKind::InvalidInput => Status::INVALID_ADDRESS,
        _ if e.raw_os_error() == Some(EAFNOSUPPORT) => Status::INVALID_ADDRESS,
        _ if resources(e) => Status::INSUFFICIENT_RESOURCES,
        _ => Status::UNSUCCESSFUL,
    }
}

/// The status of a failed TCP connect, inline or reported later through `SO_ERROR`.
///
/// `explicit_port`: the caller chose the local port, so `EADDRNOTAVAIL` means the 4-tuple is
/// taken; with an ephemeral port it means none is left.
pub fn connect_status(e: &io::Error, explicit_port: bool) -> Status {
    match e.kind() {
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset => Status::CONNECTION_REFUSED,
        ErrorKind::NetworkUnreachable | ErrorKind::NetworkDown => Status::NETWORK_UNREACHABLE,
        ErrorKind::HostUnreachable => Status::HOST_UNREACHABLE,
        _ if e.raw_os_error() == Some(EHOSTDOWN) => Status::HOST_UNREACHABLE,
        ErrorKind::TimedOut => Status::IO_TIMEOUT,
        ErrorKind::AddrNotAvailable | ErrorKind::AddrInUse if explicit_port => {
            Status::ADDRESS_ALREADY_EXISTS
        }
        ErrorKind::AddrNotAvailable | ErrorKind::AddrInUse => Status::TOO_MANY_ADDRESSES,
        ErrorKind::PermissionDenied => Status::ACCESS_DENIED,
        ErrorKind::InvalidInput => Status::INVALID_ADDRESS,
        _ if e.raw_os_error() == Some(EAFNOSUPPORT) => Status::INVALID_ADDRESS,
        _ if resources(e) => Status::INSUFFICIENT_RESOURCES,
        _ => Status::CONNECTION_REFUSED,
    }
}

/// The status an initiator's connect completes with when the MPA handshake fails.
pub(crate) fn handshake_status(e: &HandshakeError) -> Status {
    match e {
        HandshakeError::Timeout => Status::IO_TIMEOUT,
        HandshakeError::Local(_) => Status::INVALID_PARAMETER,
        _ => Status::CONNECTION_ABORTED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let os = io::Error::from_raw_os_error;
        // Linux: EADDRINUSE 98, EADDRNOTAVAIL 99, ENETUNREACH 101, ECONNRESET 104,
        // ETIMEDOUT 110, ECONNREFUSED 111, EHOSTDOWN 112, EHOSTUNREACH 113.
        assert_eq!(bind_status(&os(98)), Status::SHARING_VIOLATION);
        assert_eq!(bind_status(&os(99)), Status::INVALID_ADDRESS);
        assert_eq!(connect_status(&os(111), false), Status::CONNECTION_REFUSED);
        assert_eq!(connect_status(&os(104), false), Status::CONNECTION_REFUSED);
        assert_eq!(connect_status(&os(101), false), Status::NETWORK_UNREACHABLE);
        assert_eq!(connect_status(&os(113), false), Status::HOST_UNREACHABLE);
        assert_eq!(connect_status(&os(112), false), Status::HOST_UNREACHABLE);
        assert_eq!(connect_status(&os(110), false), Status::IO_TIMEOUT);
        assert_eq!(
            connect_status(&os(99), true),
            Status::ADDRESS_ALREADY_EXISTS
        );
        assert_eq!(connect_status(&os(99), false), Status::TOO_MANY_ADDRESSES);
        assert_eq!(
            connect_status(&os(105), false),
            Status::INSUFFICIENT_RESOURCES
        );
    }
}
