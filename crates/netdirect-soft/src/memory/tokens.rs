//! Tokens (STags on the wire): the one place that knows their layout (§10.17).
//!
//! A token is `index << 8 | key`: `index` (24 bits) names a slot of the table, `key` (8 bits)
//! is the slot's current key, rotated by one on every registration, fast register, bind and
//! slot free.

/// The largest token index: tokens have 24 index bits.
pub const MAX_TOKEN_INDEX: u32 = (1 << 24) - 1;

/// A token's slot index and key.
pub(super) fn split(token: u32) -> (u32, u8) {
    (token >> 8, token as u8)
}

/// The token of slot `index` with key `key`.
pub(super) fn join(index: u32, key: u8) -> u32 {
    (index << 8) | u32::from(key)
}

/// The key after `key`.
pub(super) fn rotate(key: u8) -> u8 {
    key.wrapping_add(1)
}

/// The token `token`'s slot has after its next rotation: what a provider advertises for a
/// registration or bind it carries out later, in queue order (§7.9: the token is readable as
/// soon as the post returns).
pub(crate) fn next_token(token: u32) -> u32 {
    let (index, key) = split(token);
    join(index, rotate(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_encoding() {
        assert_eq!(split(join(0x12_3456, 0xAB)), (0x12_3456, 0xAB));
        assert_eq!(next_token(join(7, 0xFF)), join(7, 0));
        assert_eq!(
            next_token(join(MAX_TOKEN_INDEX, 1)),
            join(MAX_TOKEN_INDEX, 2)
        );
    }
}
