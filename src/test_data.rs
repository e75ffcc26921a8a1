//! Test inputs shared by unit tests: bytes that do not repeat or compress, so a swapped word, lane or block cannot
//! cancel out.

/// `len` pseudo-random bytes (xorshift64), the same for the same `seed`.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
