//! NTSTATUS as an open newtype, with one table for every code the NDK uses.

use core::fmt;
use core::str::FromStr;

/// `Result` whose error is an NTSTATUS ([`Status`]) unless told otherwise.
pub type Result<T, E = Status> = core::result::Result<T, E>;

/// An NTSTATUS (or NDIS_STATUS, which shares the 32-bit space) value.
///
/// The type is *open*: any `u32` is a valid `Status`, so values a peer or a provider invents pass
/// through unchanged. The codes the NDK reference uses (`docs/spec/ndkpi.md` §8.1, §8.2, §8.3) are
/// associated constants.
///
/// # Naming scheme
///
/// Constants drop the `STATUS_` prefix (`STATUS_CONNECTION_INVALID` → [`Status::CONNECTION_INVALID`]);
/// NDIS codes keep `NDIS_` and drop `STATUS_` (`NDIS_STATUS_BAD_VERSION` →
/// [`Status::NDIS_BAD_VERSION`]). Every constant carries `#[doc(alias = "<NT name>")]`, so searching
/// the docs for the Windows spelling finds it. [`Status::name`], [`Display`](fmt::Display) and
/// [`Status::from_name`] use the full Windows spelling.
///
/// # Classification
///
/// [`Status::is_success`] is `NT_SUCCESS`: `(value as i32) >= 0`. So [`Status::PENDING`] is a
/// success and warnings such as [`Status::BUFFER_OVERFLOW`] (0x8xxxxxxx) are failures.
///
/// ```
/// use netdirect_types::{Severity, Status};
///
/// let s = Status::CONNECTION_INVALID;
/// assert_eq!(s.to_string(), "STATUS_CONNECTION_INVALID (0xC000023A)");
/// assert_eq!(s.name(), Some("STATUS_CONNECTION_INVALID"));
/// assert_eq!(Status::from_name("STATUS_CONNECTION_INVALID"), Some(s));
/// assert!(s.is_error() && !s.is_success());
///
/// assert!(Status::PENDING.is_success());
/// assert_eq!(Status::BUFFER_OVERFLOW.severity(), Severity::Warning);
/// assert!(!Status::BUFFER_OVERFLOW.is_success());
///
/// // Unknown values survive and still print.
/// let odd = Status::from(0x1234_5678);
/// assert_eq!(odd.name(), None);
/// assert_eq!(odd.to_string(), "NTSTATUS 0x12345678");
/// assert_eq!(u32::from(odd), 0x1234_5678);
/// assert_eq!("NTSTATUS 0x12345678".parse::<Status>(), Ok(odd));
/// ```
#[doc(alias = "NTSTATUS")]
#[doc(alias = "NDIS_STATUS")]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct Status(pub u32);

/// The severity field of an NTSTATUS (its top two bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Severity {
    /// `STATUS_SEVERITY_SUCCESS` (0): 0x0xxxxxxx–0x3xxxxxxx.
    Success = 0,
    /// `STATUS_SEVERITY_INFORMATIONAL` (1): 0x4xxxxxxx–0x7xxxxxxx; still `NT_SUCCESS`.
    Informational = 1,
    /// `STATUS_SEVERITY_WARNING` (2): 0x8xxxxxxx–0xBxxxxxxx; *not* `NT_SUCCESS`.
    Warning = 2,
    /// `STATUS_SEVERITY_ERROR` (3): 0xCxxxxxxx–0xFxxxxxxx.
    Error = 3,
}

// Declares each code once: the constant and its row in `Status::TABLE` come from the same line,
// so a name and a value cannot drift apart.
macro_rules! status_codes {
    ($( $(#[$attr:meta])* $konst:ident = $value:literal, $nt:literal; )*) => {
        impl Status {
            $(
                $(#[$attr])*
                #[doc = concat!("\n\n`", $nt, "` = `", stringify!($value), "`.")]
                #[doc(alias = $nt)]
                pub const $konst: Status = Status($value);
            )*

            /// Every named code as `(value, Windows name)`, the single source of truth for
            /// [`Status::name`] and [`Status::from_name`].
            ///
            /// Ordered §8.1, §8.2, §8.3 of the spec, then the NDIS aliases. Where two names share a
            /// value the `STATUS_` row comes first, which is why [`Status::name`] prefers it.
            pub const TABLE: &'static [(Status, &'static str)] = &[
                $( (Status::$konst, $nt), )*
            ];
        }
    };
}

status_codes! {
    // §8.1 — codes used by the NDKPI documentation.
    /// Success; the normal CQ/SRQ notification status.
    SUCCESS = 0x0000_0000, "STATUS_SUCCESS";
    /// The operation continues asynchronously; a completion callback follows. A *success* code.
    PENDING = 0x0000_0103, "STATUS_PENDING";
    /// CQ notification: CQ overrun (CQ and its QPs are dead). A warning, so not `NT_SUCCESS`.
    BUFFER_OVERFLOW = 0x8000_0005, "STATUS_BUFFER_OVERFLOW";
    /// Fast-register or bind asked for rights the MR does not allow.
    ACCESS_VIOLATION = 0xC000_0005, "STATUS_ACCESS_VIOLATION";
    /// A limit was exceeded (queue depths, SGE counts) or a range is not virtually contiguous.
    INVALID_PARAMETER = 0xC000_000D, "STATUS_INVALID_PARAMETER";
    /// The caller's buffer is too small; the size out-parameter holds the size needed.
    BUFFER_TOO_SMALL = 0xC000_0023, "STATUS_BUFFER_TOO_SMALL";
    /// Interrupt moderation: interval and count both "unbounded".
    INVALID_PARAMETER_MIX = 0xC000_0030, "STATUS_INVALID_PARAMETER_MIX";
    /// The local address and port are already in use.
    SHARING_VIOLATION = 0xC000_0043, "STATUS_SHARING_VIOLATION";
    /// Out of resources (creates, registration, connect, listen). Same value as
    /// `NDIS_STATUS_RESOURCES`.
    INSUFFICIENT_RESOURCES = 0xC000_009A, "STATUS_INSUFFICIENT_RESOURCES";
    /// Connection setup or teardown timed out (retryable for connect).
    IO_TIMEOUT = 0xC000_00B5, "STATUS_IO_TIMEOUT";
    /// Unknown extension interface, or a capability the adapter does not advertise.
    NOT_SUPPORTED = 0xC000_00BB, "STATUS_NOT_SUPPORTED";
    /// Fatal CQ or SRQ error (notification status).
    INTERNAL_ERROR = 0xC000_00E5, "STATUS_INTERNAL_ERROR";
    /// Completion status of requests flushed by `NdkFlush` or a disconnect.
    CANCELLED = 0xC000_0120, "STATUS_CANCELLED";
    /// RDMA read beyond the end of the remote region (NDSPI `ND_REMOTE_ERROR`).
    REMOTE_RESOURCES = 0xC000_013D, "STATUS_REMOTE_RESOURCES";
    /// The local address does not belong to this adapter.
    INVALID_ADDRESS = 0xC000_0141, "STATUS_INVALID_ADDRESS";
    /// Port 0 requested and the ephemeral range 49152–65535 is exhausted.
    TOO_MANY_ADDRESSES = 0xC000_0209, "STATUS_TOO_MANY_ADDRESSES";
    /// A connection with the same local/remote address and port 4-tuple exists.
    ADDRESS_ALREADY_EXISTS = 0xC000_020A, "STATUS_ADDRESS_ALREADY_EXISTS";
    /// No listener, backlog full, or the peer rejected; retryable.
    CONNECTION_REFUSED = 0xC000_0236, "STATUS_CONNECTION_REFUSED";
    /// The QP is not connected (every initiator work request), or a connector is in the wrong
    /// state. Not to be confused with [`Status::INVALID_CONNECTION`].
    CONNECTION_INVALID = 0xC000_023A, "STATUS_CONNECTION_INVALID";
    /// Connect: network unreachable; retryable.
    NETWORK_UNREACHABLE = 0xC000_023C, "STATUS_NETWORK_UNREACHABLE";
    /// Connect: host unreachable; retryable.
    HOST_UNREACHABLE = 0xC000_023D, "STATUS_HOST_UNREACHABLE";
    /// The other side gave up during connection establishment.
    CONNECTION_ABORTED = 0xC000_0241, "STATUS_CONNECTION_ABORTED";
    /// `NdkInitializeFastRegisterMr`: page count not supported.
    IMPLEMENTATION_LIMIT = 0xC000_042B, "STATUS_IMPLEMENTATION_LIMIT";

    // §8.2 — named by the project, not used by the NDKPI docs.
    /// Not used by NDKPI docs (seed text for `NdkFastRegister`; the docs use
    /// [`Status::ACCESS_VIOLATION`]).
    ACCESS_DENIED = 0xC000_0022, "STATUS_ACCESS_DENIED";
    /// Not used by NDKPI (NDSPI uses [`Status::DATA_OVERRUN`]).
    DATA_ERROR = 0xC000_003E, "STATUS_DATA_ERROR";
    /// Not used by NDKPI.
    REQUEST_NOT_ACCEPTED = 0xC000_00D0, "STATUS_REQUEST_NOT_ACCEPTED";
    /// Not used by NDKPI; candidate for "object in wrong state" inline failures.
    INVALID_DEVICE_STATE = 0xC000_0184, "STATUS_INVALID_DEVICE_STATE";
    /// NDSPI: private data longer than `MaxCallerData` / `MaxCalleeData`.
    INVALID_BUFFER_SIZE = 0xC000_0206, "STATUS_INVALID_BUFFER_SIZE";
    /// Not used by NDKPI; candidate completion status after a peer disconnect.
    CONNECTION_DISCONNECTED = 0xC000_020C, "STATUS_CONNECTION_DISCONNECTED";
    /// Not used by NDKPI; candidate for abortive teardown.
    CONNECTION_RESET = 0xC000_020D, "STATUS_CONNECTION_RESET";

    // §8.3 — NDSPI analogues in the same numeric space.
    /// Success-class timeout (not [`Status::IO_TIMEOUT`]).
    TIMEOUT = 0x0000_0102, "STATUS_TIMEOUT";
    /// NDSPI: deregister while windows are still bound. A warning.
    DEVICE_BUSY = 0x8000_0011, "STATUS_DEVICE_BUSY";
    /// NDSPI: a post would exceed the queue depth. A warning.
    NO_MORE_ENTRIES = 0x8000_001A, "STATUS_NO_MORE_ENTRIES";
    /// Generic failure.
    UNSUCCESSFUL = 0xC000_0001, "STATUS_UNSUCCESSFUL";
    /// Invalid handle.
    INVALID_HANDLE = 0xC000_0008, "STATUS_INVALID_HANDLE";
    /// NDSPI: malformed request (e.g. invalidating an unbound window), as a completion status.
    INVALID_DEVICE_REQUEST = 0xC000_0010, "STATUS_INVALID_DEVICE_REQUEST";
    /// Out of memory.
    NO_MEMORY = 0xC000_0017, "STATUS_NO_MEMORY";
    /// NDSPI: too many SGEs (inline) or a local length error (completion).
    DATA_OVERRUN = 0xC000_003C, "STATUS_DATA_OVERRUN";
    /// Device not ready.
    DEVICE_NOT_READY = 0xC000_00A3, "STATUS_DEVICE_NOT_READY";
    /// NDSPI: the QP is already connected.
    CONNECTION_ACTIVE = 0xC000_023B, "STATUS_CONNECTION_ACTIVE";
    /// NDSPI: the adapter is gone; only cleanup succeeds.
    DEVICE_REMOVED = 0xC000_02B6, "STATUS_DEVICE_REMOVED";
    /// From `ntstatus.h`; not used by ND.
    LOCAL_DISCONNECT = 0xC000_013B, "STATUS_LOCAL_DISCONNECT";
    /// From `ntstatus.h`; not used by ND.
    REMOTE_DISCONNECT = 0xC000_013C, "STATUS_REMOTE_DISCONNECT";
    /// From `ntstatus.h`. Distinct from [`Status::CONNECTION_INVALID`] (0xC000023A).
    INVALID_CONNECTION = 0xC000_0140, "STATUS_INVALID_CONNECTION";

    // NetDMA (docs/spec/netdma.md): the codes its interface returns that the NDK does not.
    /// NetDMA: a provider's NetDMA version is newer than the interface's.
    REVISION_MISMATCH = 0xC000_0059, "STATUS_REVISION_MISMATCH";
    /// NetDMA: no such provider.
    NOT_FOUND = 0xC000_0225, "STATUS_NOT_FOUND";

    // Provider decisions (the §10 table of `netdirect-soft`): codes neither the NDK nor NetDMA
    // names, from `ntstatus.h`.
    /// A blocking wait for a connect (or an accept) that only this process can answer, while
    /// the thread that waits is the one that would answer it: the soft provider's connect
    /// waited on before the server side of the same process called `accept` (or an accept
    /// waited on before the client called `complete_connect`). What to do: *start* the connect,
    /// accept, then wait for the connect (the order in `netdirect::Connector`'s docs), or
    /// answer from another thread.
    POSSIBLE_DEADLOCK = 0xC000_0194, "STATUS_POSSIBLE_DEADLOCK";

    // §8.1 — NDIS_STATUS codes of the adapter open/close handlers. Kept last: two are aliases.
    /// `OpenNDKAdapterHandler` success; same value as [`Status::SUCCESS`].
    NDIS_SUCCESS = 0x0000_0000, "NDIS_STATUS_SUCCESS";
    /// `OpenNDKAdapterHandler`: version negotiation failed.
    NDIS_BAD_VERSION = 0xC001_0004, "NDIS_STATUS_BAD_VERSION";
    /// `OpenNDKAdapterHandler`: NDK is disabled on the adapter.
    NDIS_ADAPTER_NOT_READY = 0xC001_0011, "NDIS_STATUS_ADAPTER_NOT_READY";
    /// `OpenNDKAdapterHandler`: out of resources; same value as
    /// [`Status::INSUFFICIENT_RESOURCES`].
    NDIS_RESOURCES = 0xC000_009A, "NDIS_STATUS_RESOURCES";
}

impl Status {
    /// The raw 32-bit value.
    #[inline]
    pub const fn value(self) -> u32 {
        self.0
    }

    /// The Windows name of this value (`"STATUS_CONNECTION_INVALID"`), or `None` if it is not in
    /// [`Status::TABLE`].
    ///
    /// Where an NDIS name and a `STATUS_` name share a value (`NDIS_STATUS_SUCCESS`,
    /// `NDIS_STATUS_RESOURCES`), the `STATUS_` name is returned.
    ///
    /// ```
    /// use netdirect_types::Status;
    /// assert_eq!(Status::NDIS_RESOURCES.name(), Some("STATUS_INSUFFICIENT_RESOURCES"));
    /// assert_eq!(Status::NDIS_BAD_VERSION.name(), Some("NDIS_STATUS_BAD_VERSION"));
    /// ```
    pub const fn name(self) -> Option<&'static str> {
        let mut i = 0;
        while i < Self::TABLE.len() {
            if Self::TABLE[i].0.0 == self.0 {
                return Some(Self::TABLE[i].1);
            }
            i += 1;
        }
        None
    }

    /// Looks a Windows name up in [`Status::TABLE`] (`"STATUS_PENDING"`, `"NDIS_STATUS_RESOURCES"`).
    ///
    /// Exact, case-sensitive match on the Windows spelling; the Rust constant names
    /// (`"PENDING"`) are not accepted.
    pub fn from_name(name: &str) -> Option<Status> {
        Self::TABLE
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(s, _)| *s)
    }

    /// The severity (top two bits).
    #[inline]
    pub const fn severity(self) -> Severity {
        match self.0 >> 30 {
            0 => Severity::Success,
            1 => Severity::Informational,
            2 => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// `NT_SUCCESS`: `(value as i32) >= 0`, i.e. severity success or informational.
    ///
    /// True for [`Status::PENDING`]: compare for it explicitly where it matters.
    #[doc(alias = "NT_SUCCESS")]
    #[inline]
    pub const fn is_success(self) -> bool {
        (self.0 as i32) >= 0
    }

    /// Exactly [`Status::PENDING`].
    #[inline]
    pub const fn is_pending(self) -> bool {
        self.0 == Self::PENDING.0
    }

    /// Severity informational (`NT_INFORMATION`).
    #[doc(alias = "NT_INFORMATION")]
    #[inline]
    pub const fn is_informational(self) -> bool {
        matches!(self.severity(), Severity::Informational)
    }

    /// Severity warning (`NT_WARNING`). Warnings are not `NT_SUCCESS`.
    #[doc(alias = "NT_WARNING")]
    #[inline]
    pub const fn is_warning(self) -> bool {
        matches!(self.severity(), Severity::Warning)
    }

    /// Severity error (`NT_ERROR`).
    #[doc(alias = "NT_ERROR")]
    #[inline]
    pub const fn is_error(self) -> bool {
        matches!(self.severity(), Severity::Error)
    }

    /// The facility field (bits 16..=27): 0 for plain NTSTATUS, 0x001 for the NDIS codes here.
    #[inline]
    pub const fn facility(self) -> u16 {
        ((self.0 >> 16) & 0x0FFF) as u16
    }

    /// The code field (low 16 bits).
    #[inline]
    pub const fn code(self) -> u16 {
        self.0 as u16
    }

    /// `Ok(())` for every `NT_SUCCESS` value (including [`Status::PENDING`]), `Err(self)` otherwise.
    ///
    /// ```
    /// use netdirect_types::Status;
    /// assert_eq!(Status::SUCCESS.into_result(), Ok(()));
    /// assert_eq!(Status::CANCELLED.into_result(), Err(Status::CANCELLED));
    /// ```
    #[inline]
    pub const fn into_result(self) -> Result<()> {
        if self.is_success() { Ok(()) } else { Err(self) }
    }
}

impl From<u32> for Status {
    #[inline]
    fn from(value: u32) -> Self {
        Status(value)
    }
}

impl From<Status> for u32 {
    #[inline]
    fn from(status: Status) -> Self {
        status.0
    }
}

/// `Ok(())` becomes [`Status::SUCCESS`], `Err(s)` becomes `s`.
impl From<Result<()>> for Status {
    #[inline]
    fn from(result: Result<()>) -> Self {
        match result {
            Ok(()) => Status::SUCCESS,
            Err(s) => s,
        }
    }
}

/// `STATUS_CONNECTION_INVALID (0xC000023A)` for named values, `NTSTATUS 0x12345678` otherwise.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (0x{:08X})", self.0),
            None => write!(f, "NTSTATUS 0x{:08X}", self.0),
        }
    }
}

/// `Status(STATUS_CANCELLED, 0xC0000120)`, or `Status(0x12345678)` for unnamed values.
impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "Status({name}, 0x{:08X})", self.0),
            None => write!(f, "Status(0x{:08X})", self.0),
        }
    }
}

impl std::error::Error for Status {}

/// Why a string did not parse as a [`Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseStatusError;

impl fmt::Display for ParseStatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an NTSTATUS name or 0x-prefixed hex value")
    }
}

impl std::error::Error for ParseStatusError {}

/// Parses what [`Display`](fmt::Display) prints, a bare Windows name, or a `0x` hex value.
///
/// Accepted: `STATUS_PENDING`, `STATUS_PENDING (0x00000103)` (name and value must agree),
/// `NTSTATUS 0x12345678`, `0x12345678`.
impl FromStr for Status {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> core::result::Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("NTSTATUS ") {
            return parse_hex(rest.trim());
        }
        if s.starts_with("0x") || s.starts_with("0X") {
            return parse_hex(s);
        }
        match s.split_once(' ') {
            None => Status::from_name(s).ok_or(ParseStatusError),
            Some((name, value)) => {
                let named = Status::from_name(name).ok_or(ParseStatusError)?;
                let value = value
                    .trim()
                    .strip_prefix('(')
                    .and_then(|v| v.strip_suffix(')'))
                    .ok_or(ParseStatusError)?;
                if parse_hex(value)? == named {
                    Ok(named)
                } else {
                    Err(ParseStatusError)
                }
            }
        }
    }
}

fn parse_hex(s: &str) -> core::result::Result<Status, ParseStatusError> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or(ParseStatusError)?;
    // from_str_radix accepts a leading '+', which is not hex.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ParseStatusError);
    }
    u32::from_str_radix(digits, 16)
        .map(Status)
        .map_err(|_| ParseStatusError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_are_unique_per_value_except_ndis_aliases() {
        for (i, (a, an)) in Status::TABLE.iter().enumerate() {
            for (b, bn) in &Status::TABLE[i + 1..] {
                assert_ne!(an, bn, "duplicate name");
                if a == b {
                    // The only shared values are NDIS aliases of a STATUS_ code listed earlier.
                    assert!(an.starts_with("STATUS_"), "{an} / {bn}");
                    assert!(bn.starts_with("NDIS_STATUS_"), "{an} / {bn}");
                }
            }
        }
    }

    #[test]
    fn aliases_name_the_status_spelling() {
        assert_eq!(Status::NDIS_SUCCESS, Status::SUCCESS);
        assert_eq!(Status::NDIS_RESOURCES, Status::INSUFFICIENT_RESOURCES);
        assert_eq!(Status::NDIS_SUCCESS.name(), Some("STATUS_SUCCESS"));
        assert_eq!(
            Status::NDIS_RESOURCES.name(),
            Some("STATUS_INSUFFICIENT_RESOURCES")
        );
        assert_eq!(
            Status::from_name("NDIS_STATUS_RESOURCES"),
            Some(Status(0xC000_009A))
        );
    }

    #[test]
    fn fields() {
        assert_eq!(Status::NDIS_BAD_VERSION.facility(), 0x001);
        assert_eq!(Status::NDIS_BAD_VERSION.code(), 0x0004);
        assert_eq!(Status::CONNECTION_INVALID.facility(), 0);
        assert_eq!(Status::CONNECTION_INVALID.code(), 0x023A);
    }

    #[test]
    fn parse() {
        assert_eq!("STATUS_PENDING".parse(), Ok(Status::PENDING));
        assert_eq!("STATUS_PENDING (0x00000103)".parse(), Ok(Status::PENDING));
        assert_eq!(
            "STATUS_PENDING (0x00000104)".parse::<Status>(),
            Err(ParseStatusError)
        );
        assert_eq!("0xc000023a".parse(), Ok(Status::CONNECTION_INVALID));
        assert_eq!("NTSTATUS 0x00000001".parse(), Ok(Status(1)));
        assert_eq!("0x+1".parse::<Status>(), Err(ParseStatusError));
        assert_eq!("0x".parse::<Status>(), Err(ParseStatusError));
        assert_eq!("0x100000000".parse::<Status>(), Err(ParseStatusError));
        assert_eq!("PENDING".parse::<Status>(), Err(ParseStatusError));
        assert_eq!("".parse::<Status>(), Err(ParseStatusError));
    }

    #[test]
    fn result_conversions() {
        assert_eq!(Status::PENDING.into_result(), Ok(()));
        assert_eq!(
            Status::NO_MORE_ENTRIES.into_result(),
            Err(Status::NO_MORE_ENTRIES)
        );
        assert_eq!(Status::from(Ok(())), Status::SUCCESS);
        assert_eq!(Status::from(Err(Status::CANCELLED)), Status::CANCELLED);
    }

    #[test]
    fn debug_names_the_code() {
        assert_eq!(
            format!("{:?}", Status::CANCELLED),
            "Status(STATUS_CANCELLED, 0xC0000120)"
        );
        assert_eq!(format!("{:?}", Status(7)), "Status(0x00000007)");
    }
}
