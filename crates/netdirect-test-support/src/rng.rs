//! A tiny deterministic PRNG (xorshift64*), so that a test's random choices repeat exactly
//! from its seed.

/// xorshift64*; the state is public so a test can start from an exact state.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// A generator whose state is `seed` spread over the word (never zero).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` (0 when `n` is 0; a step is taken either way).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// One element of `v` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize]
    }

    /// Fills `out` with the next words, little-endian, the last one cut.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// `n` random octets.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// A deterministic pseudo-random fill from `seed`, fast enough in debug builds.
pub fn fill_pattern(out: &mut [u8], seed: u64) {
    Rng(seed | 1).fill(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_the_ones_the_tests_were_written_with() {
        // xorshift64* from state 1, as the copies this replaces computed it.
        let mut r = Rng(1);
        assert_eq!(r.next_u64(), 0x47E4_CE4B_896C_DD1D);
        let mut a = [0u8; 11];
        fill_pattern(&mut a, 0);
        assert_eq!(a[..8], 0x47E4_CE4B_896C_DD1Du64.to_le_bytes());
        assert_eq!(Rng::new(0).0, 1);
        assert_eq!(Rng(5).bytes(11), {
            let mut b = [0u8; 11];
            Rng(5).fill(&mut b);
            b.to_vec()
        });
        assert_eq!(Rng(9).below(0), 0);
        assert_eq!(Rng(9).pick(&[7]), 7);
    }
}
