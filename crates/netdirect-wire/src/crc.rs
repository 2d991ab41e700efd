//! CRC32c as MPA uses it (RFC 5044 §6.5).
//!
//! CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, initial value all ones, result
//! complemented): the check value over `"123456789"` is `0xE3069283`. The `crc32c` crate picks
//! the CPU's CRC instructions (SSE 4.2 on x86_64, the CRC extension on aarch64) at run time.
//!
//! The CRC covers the FPDU from the first octet of ULPDU_Length through the last pad octet,
//! markers included, and goes on the wire **least significant octet first** — the one MPA field
//! that is not big-endian.

/// A running FPDU CRC, for frames whose parts are not contiguous in memory (a header in one
/// buffer, the payload straight from a registered region).
///
/// ```
/// use netdirect_wire::crc::{self, FpduCrc};
/// let mut c = FpduCrc::new();
/// c.update(b"1234");
/// c.update(b"56789");
/// assert_eq!(c.finish(), 0xE306_9283);
/// assert_eq!(c.finish(), crc::crc32c(b"123456789"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FpduCrc(u32);

impl FpduCrc {
    /// A CRC over no bytes yet.
    pub const fn new() -> Self {
        FpduCrc(0)
    }

    /// Adds `bytes` to the CRC.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0 = crc32c::crc32c_append(self.0, bytes);
    }

    /// Adds `n` zero octets (the FPDU pad).
    pub fn update_zeros(&mut self, n: usize) {
        const ZEROS: [u8; 4] = [0; 4];
        let mut left = n;
        while left > 0 {
            let k = left.min(ZEROS.len());
            self.update(&ZEROS[..k]);
            left -= k;
        }
    }

    /// The CRC value of everything added so far.
    pub const fn finish(&self) -> u32 {
        self.0
    }
}

/// CRC32c of one contiguous buffer.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// The CRC field as it goes on the wire (little-endian).
pub const fn to_wire(crc: u32) -> [u8; 4] {
    crc.to_le_bytes()
}

/// A CRC field read off the wire (little-endian).
pub const fn from_wire(field: [u8; 4]) -> u32 {
    u32::from_le_bytes(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn siw_fpdu_crc_is_little_endian() {
        // A 36-octet FPDU seen from siw with CRC on (docs/spec/iwarp.md §1.5): the CRC field's first
        // octet on the wire is the least significant one.
        let mut c = FpduCrc::new();
        c.update(&[0x12, 0x34]);
        c.update_zeros(2);
        let mut d = FpduCrc::new();
        d.update(&[0x12, 0x34, 0, 0]);
        assert_eq!(c, d);
        assert_eq!(from_wire(to_wire(0xA1B2_C3D4)), 0xA1B2_C3D4);
        assert_eq!(to_wire(0xA1B2_C3D4)[0], 0xD4);
    }
}
