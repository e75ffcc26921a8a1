//! The picker's random numbers and its sweeps over a peer's bitfield, 64 pieces per step: the first pieces of a
//! download (any the peer has, from a random start) and the rarest when the ordered scan runs past its budget.

use crate::bitfield::Bitfield;

/// xorshift64: cheap, and seeded per run, which is all the picker's random choices need.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A number in `0..n` (`n` > 0).
pub(super) fn below(state: &mut u64, n: u32) -> u32 {
    (next_random(state) % n as u64) as u32
}

/// The candidates (pieces the peer has and we may start) in one 64-piece word.
fn candidates(bits: &Bitfield, pickable: &Bitfield, w: usize) -> u64 {
    bits.word(w) & pickable.word(w)
}

/// Up to `want` candidates, taken in index order from a random starting piece and wrapping around. Used before we
/// have any piece, when rarity does not matter yet.
pub(super) fn sweep_random(bits: &Bitfield, pickable: &Bitfield, rng: &mut u64, want: usize) -> Vec<u32> {
    let words = bits.word_count();
    let mut found = Vec::new();
    if words == 0 {
        return found;
    }
    let start = below(rng, bits.len());
    let (first, shift) = ((start / 64) as usize, start % 64);
    // One extra turn revisits the first word for the bits before `start`.
    for i in 0..=words {
        let w = (first + i) % words;
        let mut m = candidates(bits, pickable, w);
        if i == 0 {
            m &= u64::MAX >> shift;
        } else if i == words {
            m &= !(u64::MAX >> shift);
        }
        while m != 0 && found.len() < want {
            let bit = m.leading_zeros();
            m &= !(1u64 << 63 >> bit);
            found.push(w as u32 * 64 + bit);
        }
        if found.len() == want {
            break;
        }
    }
    found
}

/// The `want` rarest candidates over the whole bitfield, random among equals, leaving out `skip`.
pub(super) fn sweep_rarest(
    bits: &Bitfield,
    pickable: &Bitfield,
    avail: &[u32],
    rng: &mut u64,
    want: usize,
    skip: &[u32],
) -> Vec<u32> {
    let want = want - skip.len();
    // (availability, random tie-break, piece), sorted, at most `want` long.
    let mut best: Vec<(u32, u64, u32)> = Vec::with_capacity(want + 1);
    for w in 0..bits.word_count() {
        let mut m = candidates(bits, pickable, w);
        while m != 0 {
            let bit = m.leading_zeros();
            m &= !(1u64 << 63 >> bit);
            let p = w as u32 * 64 + bit;
            let a = avail[p as usize];
            if best.len() == want && best.last().is_some_and(|worst| a > worst.0) {
                continue;
            }
            if skip.contains(&p) {
                continue;
            }
            let entry = (a, next_random(rng), p);
            let at = best.partition_point(|e| *e < entry);
            best.insert(at, entry);
            best.truncate(want);
        }
    }
    best.into_iter().map(|(_, _, p)| p).collect()
}
