//! Node ids and info hashes: 160-bit numbers compared by XOR distance (BEP 5), and the seeded random source the node
//! draws ids, transaction ids and token secrets from (so a simulation with fixed seeds replays exactly).

/// A node id or an info hash, big-endian.
pub type Id = [u8; 20];

/// XOR distance; byte arrays compare lexicographically, which is the numeric order of big-endian numbers.
pub fn distance(a: &Id, b: &Id) -> Id {
    let mut d = [0; 20];
    for (i, x) in d.iter_mut().enumerate() {
        *x = a[i] ^ b[i];
    }
    d
}

/// How many leading bits `a` and `b` share (160 when they are equal).
pub fn common_prefix_len(a: &Id, b: &Id) -> usize {
    for i in 0..20 {
        let x = a[i] ^ b[i];
        if x != 0 {
            return i * 8 + x.leading_zeros() as usize;
        }
    }
    160
}

/// An id whose first `prefix_len` bits are `base`'s and the rest random; with `flip`, bit `prefix_len` is the
/// opposite of `base`'s, so the id shares exactly `prefix_len` bits with it (a random id inside one bucket).
pub fn random_with_prefix(base: &Id, prefix_len: usize, flip: bool, rng: &mut Rng) -> Id {
    let mut id = rng.id();
    let prefix_len = prefix_len.min(160);
    for bit in 0..prefix_len {
        set_bit(&mut id, bit, bit_of(base, bit));
    }
    if flip && prefix_len < 160 {
        set_bit(&mut id, prefix_len, !bit_of(base, prefix_len));
    }
    id
}

fn bit_of(id: &Id, bit: usize) -> bool {
    id[bit / 8] & (0x80 >> (bit % 8)) != 0
}

fn set_bit(id: &mut Id, bit: usize, value: bool) {
    let mask = 0x80 >> (bit % 8);
    if value {
        id[bit / 8] |= mask;
    } else {
        id[bit / 8] &= !mask;
    }
}

/// SplitMix64: small, seeded, and good enough for ids and secrets of a toy node (processes seed it from the OS).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let r = self.next_u64().to_be_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }

    pub fn id(&mut self) -> Id {
        let mut id = [0; 20];
        self.fill(&mut id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_is_xor_and_orders_numerically() {
        let a = [0u8; 20];
        let mut b = [0u8; 20];
        b[19] = 0xff;
        let mut c = [0u8; 20];
        c[0] = 0x01;
        assert_eq!(distance(&a, &b), b);
        assert!(distance(&a, &b) < distance(&a, &c), "a difference in the first byte is farther");
        assert_eq!(distance(&b, &b), [0; 20]);
    }

    #[test]
    fn common_prefix_counts_leading_equal_bits() {
        let a = [0u8; 20];
        let mut b = [0u8; 20];
        assert_eq!(common_prefix_len(&a, &b), 160);
        b[0] = 0x80;
        assert_eq!(common_prefix_len(&a, &b), 0);
        b[0] = 0;
        b[2] = 0x10;
        assert_eq!(common_prefix_len(&a, &b), 19);
    }

    #[test]
    fn random_ids_with_a_prefix_land_in_the_asked_bucket() {
        let mut rng = Rng::new(7);
        let base = rng.id();
        for len in [0, 1, 7, 8, 9, 100, 159] {
            for _ in 0..20 {
                let id = random_with_prefix(&base, len, true, &mut rng);
                assert_eq!(common_prefix_len(&base, &id), len);
                let id = random_with_prefix(&base, len, false, &mut rng);
                assert!(common_prefix_len(&base, &id) >= len);
            }
        }
        assert_eq!(random_with_prefix(&base, 160, true, &mut rng), base);
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let (mut a, mut b) = (Rng::new(1), Rng::new(1));
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), Rng::new(2).id());
        assert!((0..100).all(|_| a.below(3) < 3));
        assert_eq!(a.below(0), 0);
    }
}
