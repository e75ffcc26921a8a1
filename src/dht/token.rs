//! Write tokens (BEP 5): a `get_peers` answer hands the requester a token, and its `announce_peer` must bring it
//! back from the same IP address. A token is a keyed hash of that address, so nothing is stored per requester; the
//! secret changes every five minutes and the previous one still counts, so a token lives five to ten minutes.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::id::Rng;

pub const ROTATE_EVERY: Duration = Duration::from_secs(5 * 60);
pub const TOKEN_LEN: usize = 8;

#[derive(Debug, Clone)]
pub struct Tokens {
    current: [u8; 16],
    previous: [u8; 16],
    rotated_at: Instant,
}

impl Tokens {
    pub fn new(now: Instant, rng: &mut Rng) -> Tokens {
        let mut current = [0; 16];
        rng.fill(&mut current);
        let mut previous = [0; 16];
        rng.fill(&mut previous);
        Tokens { current, previous, rotated_at: now }
    }

    /// The token for `ip` now.
    pub fn make(&self, ip: Ipv4Addr) -> [u8; TOKEN_LEN] {
        hash(&self.current, ip)
    }

    /// Whether `token` was made for `ip` with the current or the previous secret.
    pub fn check(&self, ip: Ipv4Addr, token: &[u8]) -> bool {
        token == hash(&self.current, ip) || token == hash(&self.previous, ip)
    }

    /// When the secret changes next.
    pub fn next_rotation(&self) -> Instant {
        self.rotated_at + ROTATE_EVERY
    }

    /// Changes the secret when it is due; after a long pause (ten minutes or more) both secrets are new.
    pub fn rotate(&mut self, now: Instant, rng: &mut Rng) {
        let elapsed = now.saturating_duration_since(self.rotated_at);
        if elapsed < ROTATE_EVERY {
            return;
        }
        self.previous = self.current;
        if elapsed >= 2 * ROTATE_EVERY {
            rng.fill(&mut self.previous);
        }
        rng.fill(&mut self.current);
        self.rotated_at = now;
    }
}

fn hash(secret: &[u8; 16], ip: Ipv4Addr) -> [u8; TOKEN_LEN] {
    let mut buf = [0u8; 20];
    buf[..16].copy_from_slice(secret);
    buf[16..].copy_from_slice(&ip.octets());
    let d = crate::sha1::digest(&buf);
    let mut t = [0; TOKEN_LEN];
    t.copy_from_slice(&d[..TOKEN_LEN]);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

    #[test]
    fn a_token_is_good_for_its_address_only() {
        let now = Instant::now();
        let t = Tokens::new(now, &mut Rng::new(1));
        let token = t.make(A);
        assert!(t.check(A, &token));
        assert!(!t.check(B, &token));
        assert!(!t.check(A, &token[..7]));
        assert!(!t.check(A, b""));
    }

    #[test]
    fn the_previous_secret_still_counts_and_the_one_before_does_not() {
        let now = Instant::now();
        let mut rng = Rng::new(2);
        let mut t = Tokens::new(now, &mut rng);
        let old = t.make(A);
        t.rotate(now + ROTATE_EVERY - Duration::from_secs(1), &mut rng);
        assert_eq!(t.make(A), old, "no rotation before it is due");
        t.rotate(now + ROTATE_EVERY, &mut rng);
        assert_ne!(t.make(A), old);
        assert!(t.check(A, &old), "a token of the previous period is accepted");
        t.rotate(now + 2 * ROTATE_EVERY, &mut rng);
        assert!(!t.check(A, &old), "two rotations later it is refused");
        assert_eq!(t.next_rotation(), now + 3 * ROTATE_EVERY);
    }

    #[test]
    fn after_a_long_pause_both_secrets_are_new() {
        let now = Instant::now();
        let mut rng = Rng::new(3);
        let mut t = Tokens::new(now, &mut rng);
        let old = t.make(A);
        t.rotate(now + 3 * ROTATE_EVERY, &mut rng);
        assert!(!t.check(A, &old));
    }
}
