//! NTSTATUS codes used by NetDMA: the project's one [`Status`] (`netdirect-types`), so a NetDMA
//! failure and an NDK failure are the same type with the same names and values.
//!
//! The codes NetDMA returns: `SUCCESS`, `PENDING`, `TIMEOUT` (a wait that ended with work still
//! running), `UNSUCCESSFUL`, `ACCESS_VIOLATION`, `INVALID_PARAMETER`, `SHARING_VIOLATION`,
//! `REVISION_MISMATCH`, `INSUFFICIENT_RESOURCES` (the docs' "STATUS_RESOURCES"),
//! `DEVICE_NOT_READY`, `NOT_SUPPORTED`, `CANCELLED`, `INVALID_DEVICE_STATE`, `NOT_FOUND`,
//! `DEVICE_REMOVED`.

pub use netdirect_types::Status;

/// `Result` with a [`Status`] error.
pub type Result<T> = core::result::Result<T, Status>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netdma_codes_have_their_windows_names_and_values() {
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
        assert_eq!(Status::NOT_FOUND.0, 0xC000_0225);
        assert_eq!(Status::SUCCESS.into_result(), Ok(()));
    }
}
