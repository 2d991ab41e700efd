//! Tokens, logical addresses, SGEs and page constants.

use core::fmt;

/// The page size of the model: 4096 bytes.
///
/// The NDK's `PAGE_SIZE` is the host's; a user-space model must fix one value (spec §10 item 19).
/// We use 4096 everywhere (FRMR page counts, LAM pages, fast-register offsets), independent of the
/// host's actual page size, so a run behaves the same on every machine.
pub const PAGE_SIZE: usize = 4096;

/// `MAXULONG`: the "unbounded" value of interrupt-moderation interval and count (spec §3.5).
pub const MAXULONG: u32 = u32::MAX;

/// The ephemeral ND port range used when port 0 is requested (spec §6.4).
pub const EPHEMERAL_PORTS: core::ops::RangeInclusive<u16> = 49152..=65535;

macro_rules! token {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        ///
        /// Tokens are opaque 32-bit values. Their layout (index, key, generation) and byte order
        /// are a provider decision (spec §10 item 17); this type only keeps local and remote
        /// tokens apart. Prints as `0x` and 8 hex digits.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        #[repr(transparent)]
        pub struct $name(pub u32);

        impl From<u32> for $name {
            #[inline]
            fn from(v: u32) -> Self {
                $name(v)
            }
        }

        impl From<$name> for u32 {
            #[inline]
            fn from(t: $name) -> u32 {
                t.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#010x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#010x}", self.0)
            }
        }
    };
}

token! {
    /// A local memory token (`NdkGetLocalTokenFromMr`): names a registration in local SGEs.
    ///
    /// The PD's privileged token (`NdkGetPrivilegedMemoryRegionToken`) is also a `LocalToken`;
    /// its value is chosen by the provider per PD, so there is no constant for it. An SGE carrying
    /// it holds a [`LogicalAddress`] instead of a virtual address.
    #[doc(alias = "MemoryRegionToken")]
    LocalToken
}

token! {
    /// A remote memory token (`NdkGetRemoteTokenFromMr`, `NdkGetRemoteTokenFromMw`): given to the
    /// peer, which names our memory with it in RDMA reads and writes. On the iWARP wire it is the
    /// STag.
    #[doc(alias = "STag")]
    RemoteToken
}

/// `NDK_LOGICAL_ADDRESS` (spec §5.4): an adapter-logical page address from a logical address
/// mapping.
///
/// The NDK type is a `PHYSICAL_ADDRESS` (a signed 64-bit `LARGE_INTEGER`); we hold the bits as
/// `u64`. What a logical address means in a software RNIC is the provider's decision (spec §7.12,
/// §10 item 19).
#[doc(alias = "NDK_LOGICAL_ADDRESS")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct LogicalAddress(pub u64);

impl LogicalAddress {
    /// The address is [`PAGE_SIZE`]-aligned, as every LAM page entry must be.
    #[inline]
    pub const fn is_page_aligned(self) -> bool {
        self.0 % PAGE_SIZE as u64 == 0
    }
}

/// `NDK_LOGICAL_ADDRESS_MAPPING` (spec §5.4): the adapter-logical pages that together map one
/// virtually contiguous buffer, as built by `NdkBuildLAM`.
///
/// Each entry is the start of one [`PAGE_SIZE`]-aligned, [`PAGE_SIZE`]-long page; consecutive
/// entries need not be logically contiguous. `AdapterPageCount` is the vector's length. The
/// provider-private `AdapterContext` is not part of this value: a provider keeps it in its own
/// handle type.
#[doc(alias = "NDK_LOGICAL_ADDRESS_MAPPING")]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LogicalAddressMapping {
    /// `AdapterPageArray`.
    #[doc(alias = "AdapterPageArray")]
    pub adapter_page_array: Vec<LogicalAddress>,
}

impl LogicalAddressMapping {
    /// `AdapterPageCount`: the number of pages.
    #[doc(alias = "AdapterPageCount")]
    #[inline]
    pub fn adapter_page_count(&self) -> usize {
        self.adapter_page_array.len()
    }
}

/// `NDK_SGE` (spec §5.3): one scatter/gather element of a work request.
///
/// `address` is a virtual address inside a registration named by `token`, or — when `token` is
/// the PD's privileged token — a [`LogicalAddress`] from a LAM. With
/// [`OpFlags::INLINE`](crate::OpFlags::INLINE) the token is ignored.
///
/// ```
/// use netdirect_types::{LocalToken, Sge};
/// let sges = [Sge::new(0x1000, 100, LocalToken(1)), Sge::new(0x9000, 28, LocalToken(2))];
/// assert_eq!(sges[0].end(), Some(0x1064));
/// assert_eq!(Sge::total_length(&sges), 128);
/// ```
#[doc(alias = "NDK_SGE")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sge {
    /// `VirtualAddress` or `LogicalAddress`, depending on the token (never dereferenced as a
    /// pointer by the model).
    #[doc(alias = "VirtualAddress")]
    #[doc(alias = "LogicalAddress")]
    pub address: u64,
    /// `Length` in bytes.
    #[doc(alias = "Length")]
    pub length: u32,
    /// `MemoryRegionToken`: the local token of the registration, or the privileged token.
    #[doc(alias = "MemoryRegionToken")]
    pub token: LocalToken,
}

impl Sge {
    /// An SGE over `[address, address + length)` under `token`.
    #[inline]
    pub const fn new(address: u64, length: u32, token: LocalToken) -> Self {
        Sge {
            address,
            length,
            token,
        }
    }

    /// One past the last byte, or `None` if the range wraps the 64-bit address space.
    #[inline]
    pub const fn end(&self) -> Option<u64> {
        self.address.checked_add(self.length as u64)
    }

    /// The sum of the lengths: what a request moves. Saturates rather than wraps.
    pub fn total_length(sges: &[Sge]) -> u64 {
        sges.iter()
            .fold(0u64, |acc, s| acc.saturating_add(u64::from(s.length)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_formatting() {
        assert_eq!(LocalToken(0xAB).to_string(), "0x000000ab");
        assert_eq!(
            format!("{:?}", RemoteToken(0xDEAD_BEEF)),
            "RemoteToken(0xdeadbeef)"
        );
    }

    #[test]
    fn sge_ranges() {
        assert_eq!(Sge::new(u64::MAX, 1, LocalToken(0)).end(), None);
        assert_eq!(Sge::new(u64::MAX, 0, LocalToken(0)).end(), Some(u64::MAX));
        assert_eq!(Sge::total_length(&[]), 0);
        let big = [Sge::new(0, u32::MAX, LocalToken(0)); 3];
        assert_eq!(Sge::total_length(&big), 3 * u64::from(u32::MAX));
    }

    #[test]
    fn lam_pages() {
        let lam = LogicalAddressMapping {
            adapter_page_array: vec![LogicalAddress(0x3000), LogicalAddress(0x1000)],
        };
        assert_eq!(lam.adapter_page_count(), 2);
        assert!(lam.adapter_page_array.iter().all(|a| a.is_page_aligned()));
        assert!(!LogicalAddress(0x1001).is_page_aligned());
    }

    #[test]
    fn constants() {
        assert_eq!(PAGE_SIZE, 4096);
        assert_eq!(MAXULONG, 0xFFFF_FFFF);
        assert_eq!(
            (*EPHEMERAL_PORTS.start(), *EPHEMERAL_PORTS.end()),
            (49152, 65535)
        );
    }
}
