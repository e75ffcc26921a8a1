//! Who we upload to: every round (10 s) the best few interested peers by rate, plus one optimistic slot that rotates
//! every third round so a newcomer with nothing to offer yet gets a chance to prove itself (BEP 3's tit-for-tat).
//!
//! The caller picks which rate counts: while downloading, the rate a peer gives us (reciprocation); while seeding, the
//! rate it takes from us (so data spreads fastest). Plain data in, a set of keys out; time comes in as an argument.

use std::time::{Duration, Instant};

pub const ROUND: Duration = Duration::from_secs(10);
pub const OPTIMISTIC_ROUND: Duration = Duration::from_secs(30);
pub const DEFAULT_SLOTS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub key: usize,
    pub interested: bool,
    /// Bytes per second, in whichever direction the caller decided counts.
    pub rate: u64,
}

#[derive(Debug)]
pub struct Choker {
    slots: usize,
    optimistic: Option<usize>,
    next_rotation: Option<Instant>,
    rng: u64,
}

impl Choker {
    pub fn new(slots: usize, seed: u64) -> Choker {
        Choker { slots, optimistic: None, next_rotation: None, rng: seed | 1 }
    }

    /// The peers that should be unchoked from now until the next round; every other peer is choked.
    pub fn rechoke(&mut self, now: Instant, candidates: &[Candidate]) -> Vec<usize> {
        let mut interested: Vec<&Candidate> = candidates.iter().filter(|c| c.interested).collect();
        // Highest rate first; key order breaks ties so a round is deterministic for the same input.
        interested.sort_by(|a, b| b.rate.cmp(&a.rate).then(a.key.cmp(&b.key)));
        let mut unchoked: Vec<usize> = interested.iter().take(self.slots).map(|c| c.key).collect();

        let still_valid = self.optimistic.is_some_and(|k| interested.iter().any(|c| c.key == k));
        let due = self.next_rotation.is_none_or(|t| now >= t);
        if !still_valid || due {
            let others: Vec<usize> = interested.iter().map(|c| c.key).filter(|k| !unchoked.contains(k)).collect();
            self.optimistic = if others.is_empty() { None } else { Some(others[self.next_random() % others.len()]) };
            self.next_rotation = Some(now + OPTIMISTIC_ROUND);
        }
        if let Some(k) = self.optimistic
            && !unchoked.contains(&k)
        {
            unchoked.push(k);
        }
        unchoked
    }

    fn next_random(&mut self) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(key: usize, interested: bool, rate: u64) -> Candidate {
        Candidate { key, interested, rate }
    }

    #[test]
    fn unchokes_fastest_interested_peers_plus_one_optimistic() {
        let mut choker = Choker::new(2, 7);
        let peers = [c(1, true, 10), c(2, true, 50), c(3, false, 999), c(4, true, 30), c(5, true, 1)];
        let unchoked = choker.rechoke(Instant::now(), &peers);
        assert_eq!(&unchoked[..2], &[2, 4]);
        assert_eq!(unchoked.len(), 3);
        assert!([1, 5].contains(&unchoked[2]), "optimistic slot goes to an interested peer outside the top");
        assert!(!unchoked.contains(&3), "uninterested peers are never unchoked");
    }

    #[test]
    fn optimistic_slot_holds_for_its_round_then_rotates() {
        let t0 = Instant::now();
        let peers: Vec<Candidate> = (0..20).map(|k| c(k, true, if k == 0 { 100 } else { 0 })).collect();
        let mut choker = Choker::new(1, 99);
        let first = choker.rechoke(t0, &peers)[1];
        assert_eq!(choker.rechoke(t0 + ROUND, &peers)[1], first);
        assert_eq!(choker.rechoke(t0 + 2 * ROUND, &peers)[1], first);
        let mut rotated = false;
        for round in 3..30 {
            let now = t0 + ROUND * round;
            rotated |= choker.rechoke(now, &peers)[1] != first;
        }
        assert!(rotated, "the optimistic slot must move on after its 30 s");
    }

    #[test]
    fn optimistic_peer_that_loses_interest_is_replaced_at_once() {
        let t0 = Instant::now();
        let mut choker = Choker::new(0, 3);
        let first = choker.rechoke(t0, &[c(1, true, 0), c(2, true, 0)])[0];
        let other = if first == 1 { 2 } else { 1 };
        let next = choker.rechoke(t0 + ROUND, &[c(first, false, 0), c(other, true, 0)]);
        assert_eq!(next, vec![other]);
    }

    #[test]
    fn nobody_interested_means_nobody_unchoked() {
        let mut choker = Choker::new(4, 1);
        assert!(choker.rechoke(Instant::now(), &[c(1, false, 5)]).is_empty());
    }
}
