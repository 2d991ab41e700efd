//! NTSTATUS codes used by NetDMA.
//!
//! This is a deliberately small, local copy of the NTSTATUS newtype. The sibling crate
//! `netdirect-types` will own the project-wide `Status`; once it is stable this type becomes a
//! re-export of it (same representation, same names and values), so code written against
//! `netdma::Status` keeps compiling.

use core::fmt;

/// An NTSTATUS value (same names and numeric values as Windows).
///
/// The severity lives in the top two bits: `0b00` success, `0b01` informational,
/// `0b10` warning, `0b11` error. [`Status::PENDING`] is a success code, not an error.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(pub u32);

macro_rules! statuses {
    ($( $(#[$m:meta])* $name:ident = $val:expr, $text:expr; )*) => {
        impl Status {
            $( $(#[$m])* #[doc(alias = $text)] pub const $name: Status = Status($val); )*

            /// The Windows name of this code (`"STATUS_SUCCESS"`), if it is one this crate knows.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $val => Some($text), )*
                    _ => None,
                }
            }
        }
    };
}

statuses! {
    /// The operation completed successfully.
    SUCCESS = 0x0000_0000, "STATUS_SUCCESS";
    /// A wait timed out (success class: nothing failed, the work is still running).
    TIMEOUT = 0x0000_0102, "STATUS_TIMEOUT";
    /// The operation has been accepted and has not finished yet.
    PENDING = 0x0000_0103, "STATUS_PENDING";
    /// The memory is in use in a conflicting way (warning class). Not used by NetDMA itself;
    /// listed for completeness of the mapping to `netdirect-types`.
    DEVICE_BUSY = 0x8000_0011, "STATUS_DEVICE_BUSY";
    /// Generic failure; what the NetDMA documentation calls "STATUS_UNSUCCESSFUL".
    UNSUCCESSFUL = 0xC000_0001, "STATUS_UNSUCCESSFUL";
    /// A descriptor referred to memory outside its buffer (or to no buffer at all).
    ACCESS_VIOLATION = 0xC000_0005, "STATUS_ACCESS_VIOLATION";
    /// An argument (descriptor, chain, parameter block) is malformed.
    INVALID_PARAMETER = 0xC000_000D, "STATUS_INVALID_PARAMETER";
    /// A buffer is borrowed by the client or another channel in a conflicting way.
    SHARING_VIOLATION = 0xC000_0043, "STATUS_SHARING_VIOLATION";
    /// A provider's NetDMA version is newer than the interface's.
    REVISION_MISMATCH = 0xC000_0059, "STATUS_REVISION_MISMATCH";
    /// No free channel (or other resource); NetDMA's "STATUS_RESOURCES".
    INSUFFICIENT_RESOURCES = 0xC000_009A, "STATUS_INSUFFICIENT_RESOURCES";
    /// The provider is powered down (between `PowerDown` and `PowerUp`).
    DEVICE_NOT_READY = 0xC000_00A3, "STATUS_DEVICE_NOT_READY";
    /// The provider does not implement this optional handler, operation type or chain style.
    NOT_SUPPORTED = 0xC000_00BB, "STATUS_NOT_SUPPORTED";
    /// The work was discarded by abort, reset or a replacing start.
    CANCELLED = 0xC000_0120, "STATUS_CANCELLED";
    /// The call is not legal in the channel's (or provider's) current state (§10).
    INVALID_DEVICE_STATE = 0xC000_0184, "STATUS_INVALID_DEVICE_STATE";
    /// No such provider.
    NOT_FOUND = 0xC000_0225, "STATUS_NOT_FOUND";
    /// The provider was stopped; the channel no longer exists.
    DEVICE_REMOVED = 0xC000_02B6, "STATUS_DEVICE_REMOVED";
}

impl Status {
    /// True for success and informational codes (severity `0b00`/`0b01`), as `NT_SUCCESS`.
    pub const fn is_success(self) -> bool {
        self.0 < 0x8000_0000
    }

    /// True for error codes (severity `0b11`), as `NT_ERROR`.
    pub const fn is_error(self) -> bool {
        self.0 >= 0xC000_0000
    }

    /// `Ok(())` for success codes, `Err(self)` otherwise.
    pub const fn ok(self) -> Result<()> {
        if self.is_success() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} (0x{:08X})", self.0),
            None => write!(f, "NTSTATUS 0x{:08X}", self.0),
        }
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Status {}

/// `Result` with a [`Status`] error.
pub type Result<T> = core::result::Result<T, Status>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_classes() {
        assert_eq!(
            Status::INVALID_PARAMETER.to_string(),
            "STATUS_INVALID_PARAMETER (0xC000000D)"
        );
        assert_eq!(Status(0xC0DE_0001).to_string(), "NTSTATUS 0xC0DE0001");
        assert!(Status::PENDING.is_success());
        assert!(!Status::PENDING.is_error());
        assert!(Status::CANCELLED.is_error());
        assert_eq!(Status::INSUFFICIENT_RESOURCES.0, 0xC000_009A);
        assert_eq!(Status::REVISION_MISMATCH.0, 0xC000_0059);
        assert_eq!(Status::SUCCESS.ok(), Ok(()));
    }
}
