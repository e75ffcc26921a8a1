//! Test inputs shared by unit tests: bytes that do not repeat or compress, so a swapped word, lane or block cannot
//! cancel out, and the seeded generator behind the never-panic property tests of every decoder.

/// xorshift64: a seeded stream of numbers, the same for the same seed.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

impl XorShift {
    /// `valid` with 1 to `max_edits` random edits (a byte overwritten, the tail cut, a byte inserted), each new byte
    /// drawn by `byte`: mutated encodings reach much deeper into a decoder than random bytes do.
    pub fn mutated(&mut self, valid: &[u8], max_edits: usize, mut byte: impl FnMut(&mut XorShift) -> u8) -> Vec<u8> {
        let mut v = valid.to_vec();
        for _ in 0..1 + self.below(max_edits) {
            if v.is_empty() {
                break;
            }
            let at = self.below(v.len());
            let b = byte(self);
            match self.below(3) {
                0 => v[at] = b,
                1 => v.truncate(at),
                _ => v.insert(at, b),
            }
        }
        v
    }
}

/// `len` pseudo-random bytes, the same for the same `seed`.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift(seed | 1);
    (0..len).map(|_| rng.next() as u8).collect()
}
