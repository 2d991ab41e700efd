//! MPA (RFC 5044, RFC 6581): the startup frames, FPDU framing, markers, and a deframer.
//!
//! | piece | module |
//! |---|---|
//! | Request / Reply and the RFC 6581 IRD/ORD prefix | [`StartupPacket`], [`StartupRepr`], [`Enhanced`] |
//! | `[ULPDU_Length][ULPDU][pad][CRC]` | [`FpduPacket`], [`emit_fpdu`], [`header`], [`trailer`], [`mulpdu`], [`gso_seglen`] |
//! | markers every 512 octets | [`MarkerLayout`] |
//! | byte stream → ULPDUs | [`Deframer`] |
//! | frames → FPDUs (pieces, pad, CRC, markers) | [`FpduWriter`] |

mod deframer;
mod fpdu;
mod marker;
mod startup;
mod writer;

pub use deframer::{Deframer, DeframerConfig, READ_MAX, READ_MIN};
pub use fpdu::{
    CRC_LEN, FpduPacket, GSO_SIZE, LENGTH_LEN, MAX_ULPDU, Trailer, emit_fpdu, fpdu_len, gso_seglen,
    header, mulpdu, pad_len, trailer,
};
pub use marker::{MARKER_INTERVAL, MARKER_LEN, MarkerLayout};
pub use startup::{
    ENHANCED_LEN, Enhanced, HEADER_LEN, MAX_IRD_ORD, MAX_PRIVATE_DATA, REPLY_KEY, REQUEST_KEY, Rtr,
    StartupKind, StartupPacket, StartupRepr,
};
pub use writer::FpduWriter;
