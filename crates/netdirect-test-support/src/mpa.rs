//! A raw MPA peer: a blocking `std::net::TcpStream` that writes startup frames and FPDUs built
//! here and reads back what our side sends, for tests that play a hostile or minimal peer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use netdirect_wire::mpa::{self, StartupRepr};
use netdirect_wire::rdmap::{self, Message};

/// Connects to `to` (every read and write with `timeout`, Nagle off) and sends `request`, the
/// MPA Request frame.
pub fn connect(to: SocketAddr, request: &StartupRepr<'_>, timeout: Duration) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&to, timeout).expect("TCP connect");
    s.set_read_timeout(Some(timeout)).expect("read timeout");
    s.set_write_timeout(Some(timeout)).expect("write timeout");
    s.set_nodelay(true).expect("TCP_NODELAY");
    let mut frame = vec![0u8; request.buffer_len()];
    request.emit(&mut frame).expect("an MPA Request to emit");
    s.write_all(&frame).expect("the MPA Request sent");
    s
}

/// Reads one MPA startup frame (header and private data); parse it with
/// [`StartupRepr::parse`].
pub fn read_startup(s: &mut TcpStream) -> Vec<u8> {
    let mut frame = vec![0u8; mpa::HEADER_LEN];
    s.read_exact(&mut frame).expect("an MPA startup frame");
    let pd = usize::from(u16::from_be_bytes([frame[18], frame[19]]));
    frame.resize(mpa::HEADER_LEN + pd, 0);
    s.read_exact(&mut frame[mpa::HEADER_LEN..])
        .expect("the startup frame's private data");
    frame
}

/// The RDMAP ULPDU of `message` with `payload` (`last`: the DDP L bit).
pub fn ulpdu(message: Message<'_>, payload: &[u8], last: bool) -> Vec<u8> {
    let repr = rdmap::Repr {
        last,
        message,
        payload,
    };
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut out).expect("a ULPDU to emit");
    out
}

/// `ulpdu` framed as an FPDU (pad, CRC when `crc`, else a zero CRC field).
pub fn fpdu(ulpdu: &[u8], crc: bool) -> Vec<u8> {
    let mut out = vec![0u8; mpa::fpdu_len(ulpdu.len())];
    mpa::emit_fpdu(ulpdu, crc, &mut out).expect("an FPDU to emit");
    out
}

/// The FPDU of one whole (last) RDMAP message.
pub fn rdmap_fpdu(message: Message<'_>, payload: &[u8], crc: bool) -> Vec<u8> {
    fpdu(&ulpdu(message, payload, true), crc)
}
