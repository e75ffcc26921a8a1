//! What the tracker's front ends have served, for the `/metrics` and `/stats` views. The figures live with the
//! registry both front ends share, so one view reads them all.

use std::time::{Duration, Instant};

use super::udp::FrontStats;

/// How long a rate window runs before its figure replaces the last one.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Requests answered by one front end.
#[derive(Debug, Clone, Default)]
pub struct Served {
    pub announces: u64,
    pub scrapes: u64,
    /// Announces refused (an unserved torrent, a full tracker, a malformed query).
    pub refused: u64,
    rate: RateWindow,
}

impl Served {
    pub fn count_announce(&mut self, now: Instant) {
        self.announces += 1;
        self.rate.count(now);
    }

    /// Announces per second over the last full window (or the current one, once it has run past its length).
    pub fn announces_per_sec(&self, now: Instant) -> f64 {
        self.rate.per_sec(now)
    }
}

/// A rate over windows of [`RATE_WINDOW`], advanced by the events it counts: no timer of its own.
#[derive(Debug, Clone, Default)]
struct RateWindow {
    start: Option<Instant>,
    count: u64,
    last: f64,
}

impl RateWindow {
    fn count(&mut self, now: Instant) {
        let start = *self.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            self.last = self.count as f64 / elapsed.as_secs_f64();
            self.start = Some(now);
            self.count = 0;
        }
        self.count += 1;
    }

    fn per_sec(&self, now: Instant) -> f64 {
        let Some(start) = self.start else { return 0.0 };
        let elapsed = now.saturating_duration_since(start);
        // A window that ran out with no event since is still the best figure: it decays towards 0 while idle.
        if elapsed >= RATE_WINDOW { self.count as f64 / elapsed.as_secs_f64() } else { self.last }
    }
}

/// Everything both front ends served.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    pub http: Served,
    pub udp: Served,
    /// The UDP front end's own figures (connects, errors, drops), as it last reported them.
    pub udp_front: FrontStats,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_measured_over_windows_and_decays_when_idle() {
        let t0 = Instant::now();
        let mut s = Served::default();
        assert_eq!(s.announces_per_sec(t0), 0.0);
        // 10 announces a second for 20 s.
        for i in 0..200 {
            s.count_announce(t0 + Duration::from_millis(100 * i));
        }
        let now = t0 + Duration::from_millis(19_950);
        assert!((s.announces_per_sec(now) - 10.0).abs() < 0.2, "{}", s.announces_per_sec(now));
        // Silent for a minute: what remains of the last window is spread over the silence.
        let later = t0 + Duration::from_secs(80);
        assert!(s.announces_per_sec(later) < 2.0, "{}", s.announces_per_sec(later));
        assert_eq!(s.announces, 200);
    }
}
