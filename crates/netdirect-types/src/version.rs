//! `NDK_VERSION` and the open-time negotiation rule.

use core::fmt;

use crate::Status;

/// `NDK_VERSION { USHORT Major; USHORT Minor; }` (spec §1). Orders by major, then minor.
///
/// ```
/// use netdirect_types::{Status, Version};
/// assert!(Version::V1_1 < Version::V1_2 && Version::V1_2 < Version::V2_0);
/// assert_eq!(Version::V2_1.to_string(), "2.1");
///
/// // A provider at 1.2 asked for "1.0 or better" runs at 1.2.
/// assert_eq!(Version::V1_2.negotiate(Version::V1_0), Ok(Version::V1_2));
/// assert_eq!(Version::V1_2.negotiate(Version::V2_0), Err(Status::NDIS_BAD_VERSION));
/// ```
#[doc(alias = "NDK_VERSION")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    /// `Major`.
    pub major: u16,
    /// `Minor`.
    pub minor: u16,
}

impl Version {
    /// 1.0: only ever requested by consumers as the lowest acceptable version.
    pub const V1_0: Version = Version::new(1, 0);
    /// 1.1: Windows Server 2012, the base interface.
    pub const V1_1: Version = Version::new(1, 1);
    /// 1.2: Windows Server 2012 R2; adds `NDK_RESULT_EX`, send-and-invalidate, `DEFER`,
    /// read-local-invalidate.
    pub const V1_2: Version = Version::new(1, 2);
    /// 2.0: known only indirectly (unconfirmed in the reference).
    pub const V2_0: Version = Version::new(2, 0);
    /// 2.1: Windows Server 2022; adds the `Ex` connector calls and `ProviderErrorCode`.
    pub const V2_1: Version = Version::new(2, 1);

    /// `{ major, minor }`.
    #[inline]
    pub const fn new(major: u16, minor: u16) -> Self {
        Version { major, minor }
    }

    /// The version an adapter opened with `requested` runs at, where `self` is the provider's
    /// highest version (spec §1).
    ///
    /// Same major and `requested.minor <= self.minor` → `Ok(self)` (the provider's highest minor,
    /// since higher minors are supersets). A different major or a higher minor →
    /// [`Status::NDIS_BAD_VERSION`].
    pub const fn negotiate(self, requested: Version) -> Result<Version, Status> {
        if requested.major == self.major && requested.minor <= self.minor {
            Ok(self)
        } else {
            Err(Status::NDIS_BAD_VERSION)
        }
    }
}

/// `major.minor`.
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_is_major_then_minor() {
        let mut v = [
            Version::V2_1,
            Version::new(1, 10),
            Version::V1_0,
            Version::V2_0,
            Version::V1_2,
            Version::V1_1,
        ];
        v.sort();
        assert_eq!(
            v,
            [
                Version::V1_0,
                Version::V1_1,
                Version::V1_2,
                Version::new(1, 10),
                Version::V2_0,
                Version::V2_1
            ]
        );
        assert!(Version::new(1, 0xFFFF) < Version::new(2, 0));
    }

    #[test]
    fn negotiation() {
        let provider = Version::V1_2;
        assert_eq!(provider.negotiate(Version::V1_0), Ok(Version::V1_2));
        assert_eq!(provider.negotiate(Version::V1_2), Ok(Version::V1_2));
        assert_eq!(
            provider.negotiate(Version::new(1, 3)),
            Err(Status::NDIS_BAD_VERSION)
        );
        assert_eq!(
            provider.negotiate(Version::V2_0),
            Err(Status::NDIS_BAD_VERSION)
        );
        assert_eq!(
            Version::V2_1.negotiate(Version::V1_1),
            Err(Status::NDIS_BAD_VERSION)
        );
    }

    #[test]
    fn consts_have_spec_numbers() {
        assert_eq!((Version::V1_1.major, Version::V1_1.minor), (1, 1));
        assert_eq!((Version::V1_2.major, Version::V1_2.minor), (1, 2));
        assert_eq!((Version::V2_0.major, Version::V2_0.minor), (2, 0));
        assert_eq!((Version::V2_1.major, Version::V2_1.minor), (2, 1));
    }
}
