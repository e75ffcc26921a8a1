//! The per-address packet budget: each source address may send a burst, then about five packets a second; past
//! that it is ignored for five minutes (libtorrent's rule). A real client's lookup sends us one or two packets, so
//! only floods hit the limit. The table of addresses is bounded: when full, addresses that have been quiet long
//! enough to have their whole burst back are forgotten first (nothing is lost), then any.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

pub const RATE_PER_SEC: u64 = 5;
pub const BURST: u64 = 25;
pub const BAN: Duration = Duration::from_secs(5 * 60);
pub const MAX_SENDERS: usize = 4096;

/// One packet costs this many budget units; an address earns `RATE_PER_SEC` packets' worth a second.
const UNIT: u64 = 1000;

#[derive(Debug, Clone, Copy)]
struct Budget {
    units: u64,
    at: Instant,
    banned_until: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Limiter {
    senders: HashMap<SocketAddrV4, Budget>,
    last_sweep: Option<Instant>,
}

impl Limiter {
    /// Whether a packet from `from` at `now` is within its budget (and charges it).
    pub fn allow(&mut self, now: Instant, from: SocketAddrV4) -> bool {
        if !self.senders.contains_key(&from) && self.senders.len() >= MAX_SENDERS {
            self.make_room(now);
        }
        let b = self.senders.entry(from).or_insert(Budget { units: BURST * UNIT, at: now, banned_until: None });
        if let Some(until) = b.banned_until {
            if now < until {
                return false;
            }
            *b = Budget { units: BURST * UNIT, at: now, banned_until: None };
        }
        let earned = now.saturating_duration_since(b.at).as_millis() as u64 * RATE_PER_SEC * UNIT / 1000;
        b.units = (b.units + earned).min(BURST * UNIT);
        b.at = now;
        if b.units < UNIT {
            b.banned_until = Some(now + BAN);
            return false;
        }
        b.units -= UNIT;
        true
    }

    fn make_room(&mut self, now: Instant) {
        // A full sweep at most once a second, so a flood of new addresses costs O(1) per packet on average.
        if self.last_sweep.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1)) {
            self.last_sweep = Some(now);
            self.forget_idle(now);
        }
        if self.senders.len() >= MAX_SENDERS
            && let Some(any) = self.senders.keys().next().copied()
        {
            self.senders.remove(&any);
        }
    }

    /// Forgets addresses that are not banned and have earned back their whole burst: they are as good as new.
    pub fn forget_idle(&mut self, now: Instant) {
        let full_after = Duration::from_millis(BURST * 1000 / RATE_PER_SEC);
        self.senders.retain(|_, b| match b.banned_until {
            Some(until) => now < until,
            None => now.saturating_duration_since(b.at) < full_after,
        });
    }

    /// Addresses remembered (for bounds in tests and stats).
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u32) -> SocketAddrV4 {
        SocketAddrV4::new((0x7f00_0000 + n).into(), 6881)
    }

    #[test]
    fn a_burst_passes_then_a_flood_is_banned_for_five_minutes() {
        let now = Instant::now();
        let mut l = Limiter::default();
        for i in 0..BURST {
            assert!(l.allow(now, addr(1)), "packet {i} of the burst");
        }
        assert!(!l.allow(now, addr(1)));
        assert!(l.allow(now, addr(2)), "other addresses have their own budget");
        assert!(!l.allow(now + Duration::from_secs(60), addr(1)), "still banned a minute later");
        assert!(l.allow(now + BAN, addr(1)), "the ban ends");
    }

    #[test]
    fn a_steady_five_per_second_is_fine() {
        let now = Instant::now();
        let mut l = Limiter::default();
        for i in 0..1000 {
            assert!(l.allow(now + Duration::from_millis(200 * i), addr(1)), "packet {i}");
        }
        for i in 0..100 {
            let t = now + Duration::from_secs(200) + Duration::from_millis(100 * i);
            if !l.allow(t, addr(1)) {
                assert!(i > BURST, "ten a second is banned only after the burst is spent ({i})");
                return;
            }
        }
        panic!("ten packets a second never hit the limit");
    }

    #[test]
    fn many_addresses_stay_bounded_and_new_ones_still_pass() {
        let now = Instant::now();
        let mut l = Limiter::default();
        for n in 0..20_000 {
            assert!(l.allow(now, addr(n)));
        }
        assert!(l.len() <= MAX_SENDERS);
        assert!(l.allow(now, addr(99_999)));
        l.forget_idle(now + Duration::from_secs(10));
        assert!(l.is_empty());
    }
}
