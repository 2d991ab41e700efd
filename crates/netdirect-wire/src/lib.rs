//! The iWARP wire format: MPA (RFC 5044, RFC 6581), DDP (RFC 5041) and RDMAP (RFC 5040,
//! RFC 7306), as pure parse and emit.
//!
//! This is the lowest protocol layer of netdirect. It knows bytes and nothing else: no sockets,
//! no clocks, no queue pair state, no memory regions. The sans-I/O engine above it
//! (`netdirect-proto`) decides what a frame means for a connection; this crate only says what the
//! frame *is*, and builds frames from a description.
//!
//! # Shape
//!
//! The style is smoltcp's `wire` module. Each frame kind has
//!
//! * a **`Packet<T>` view** over a byte buffer (`T: AsRef<[u8]>` to read, `AsMut<[u8]>` to
//!   write) with one accessor per field; the field ranges live in one private `field` module per
//!   layer, so an offset is written down exactly once;
//! * a **`Repr`** struct: the frame as plain values, with `parse` (view → values, validating
//!   everything the RFC makes a protocol error), `buffer_len` and `emit` (values → bytes).
//!
//! | layer | module | views | reprs |
//! |---|---|---|---|
//! | MPA startup | [`mpa`] | [`mpa::StartupPacket`] | [`mpa::StartupRepr`], [`mpa::Enhanced`] |
//! | MPA framing | [`mpa`] | [`mpa::FpduPacket`] | [`mpa::Deframer`] (stream in, ULPDUs out), [`mpa::MarkerLayout`] |
//! | DDP | [`ddp`] | [`ddp::Packet`] | [`ddp::Repr`] |
//! | RDMAP | [`rdmap`] | [`rdmap::ReadRequestPacket`], [`rdmap::AtomicRequestPacket`], … | [`rdmap::Repr`], [`rdmap::Message`] |
//! | Terminate | [`terminate`] | [`terminate::Packet`] | [`terminate::Repr`], [`terminate::TermError`] |
//! | CRC32c | [`crc`] | | [`crc::FpduCrc`] |
//!
//! # Panic contract
//!
//! * **Parsing never panics**, whatever the input: every `new_checked`, `parse`, the
//!   [`mpa::Deframer`] and the marker code check lengths before they index. Property tests and
//!   fuzz targets (`fuzz/`, replayed by `tests/fuzz_corpus.rs`) hold this.
//! * `Packet::new_unchecked` followed by an accessor may panic if the buffer is too short: that is
//!   the point of `unchecked`. Use `new_checked` on untrusted input.
//! * **Emitting never panics either.** Every `Repr::emit` writes into a caller's buffer and
//!   returns [`Error::Truncated`] when it is shorter than `buffer_len()`, and refuses values that
//!   cannot be encoded (private data over 512 octets, a ULPDU over 65535 octets, IRD/ORD over 14
//!   bits, a marked FPDU whose FPDUPTR would not fit 16 bits) with an [`Error`] before writing.
//! * The `set_*` accessors of a view made with `new_unchecked` index directly, like the getters.
//!
//! # Where the RFCs and Linux siw differ
//!
//! We follow the RFCs when sending and accept what siw sends (see `docs/spec/iwarp.md` §7):
//!
//! * **CRC byte order.** The MPA CRC field is the one little-endian field on the wire (siw
//!   `put_unaligned_le32(~crc32c(~0, …))`, Wireshark agrees). All other fields are big-endian.
//! * **CRC off.** With CRC not negotiated the CRC field is still present; siw sends zero and we
//!   do too. [`mpa::Deframer`] ignores the field when CRC is off.
//! * **Revision 0.** siw accepts MPA revision 0 (a pre-RFC draft). We refuse it with
//!   [`Error::MpaRevision`]: nobody sends it and RFC 5044 starts at 1.
//! * **Private data limit.** RFC 5044 allows 512 octets of private data; Linux refuses more than
//!   256 (252 after the RFC 6581 IRD/ORD prefix). The wire layer enforces the RFC limit; the
//!   connection layer enforces the smaller one it advertises.
//! * **Reserved bits.** siw echoes the request's reserved flag bits in its reply. We never set
//!   reserved bits and ignore them on receive, as the RFCs say.
//! * **Terminate copies.** siw overwrites the MPA length of the copied header in a Terminate with
//!   the failing segment's payload length; we treat that field as informational.
//! * **RFC 7306** (atomics, immediate data) is parsed and emitted here, but siw implements none of
//!   it: the connection layer must not send it to a peer that did not agree to it.
//!
//! This crate has no `unsafe` and no I/O.

#![forbid(unsafe_code)]

pub mod crc;
pub mod ddp;
pub mod mpa;
pub mod rdmap;
pub mod terminate;

pub mod fuzz;

/// What can be wrong with a frame.
///
/// Each parse error names the protocol rule that was broken, so the connection layer can answer
/// with the matching Terminate (see [`Error::term_error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer is shorter than the frame it claims to hold.
    #[error("truncated frame")]
    Truncated,
    /// A value does not fit its field when emitting (private data over 512 octets, a ULPDU over
    /// 65535 octets).
    #[error("value too large for its field")]
    TooLarge,
    /// An MPA startup frame whose key is neither "MPA ID Req Frame" nor "MPA ID Rep Frame", or
    /// not the key expected.
    #[error("bad MPA key")]
    MpaKey,
    /// An MPA revision other than 1 or 2.
    #[error("unsupported MPA revision {0}")]
    MpaRevision(u8),
    /// An MPA startup frame that breaks a rule: reject flag in a request, private data over 512
    /// octets, enhanced mode without its 4-octet IRD/ORD prefix.
    #[error("invalid MPA request/reply")]
    MpaStartup,
    /// The MPA CRC does not match the frame.
    #[error("MPA CRC mismatch: received {received:#010x}, computed {computed:#010x}")]
    Crc {
        /// The CRC field as received.
        received: u32,
        /// The CRC computed over the frame.
        computed: u32,
    },
    /// A marker whose FPDU pointer does not point at the FPDU it sits in.
    #[error("MPA marker does not match the ULPDU length")]
    Marker,
    /// A DDP version other than 1.
    #[error("invalid DDP version {0}")]
    DdpVersion(u8),
    /// An RDMAP version other than 1.
    #[error("invalid RDMAP version {0}")]
    RdmapVersion(u8),
    /// An RDMAP opcode that is undefined, or defined but not valid in this DDP model
    /// (a tagged Send, an untagged Write).
    #[error("unexpected RDMAP opcode {0:#x}")]
    Opcode(u8),
    /// An untagged queue number that does not go with the opcode.
    #[error("invalid DDP queue number {0}")]
    QueueNumber(u32),
    /// A header whose length is wrong for its kind (a Read Request that is not 28 octets, a
    /// Terminate with a half-present copied header, a non-zero message offset where the RFC
    /// fixes it at zero).
    #[error("malformed RDMAP header")]
    Malformed,
}

/// Result type of this crate.
pub type Result<T> = core::result::Result<T, Error>;
