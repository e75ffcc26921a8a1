//! The upload throttle (`--max-upload-rate`): a token bucket shared by every peer of a session.

use std::time::{Duration, Instant};

/// The token bucket behind `Config::max_upload_rate`: at most `rate` bytes a second, in bursts of a twentieth of it.
pub struct Throttle {
    rate: u64,
    tokens: u64,
    at: Instant,
}

impl Throttle {
    pub fn new(rate: u64, now: Instant) -> Throttle {
        Throttle { rate: rate.max(1), tokens: 0, at: now }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Spends `n` bytes if earned; otherwise says when they will be.
    pub fn take(&mut self, now: Instant, n: u32) -> Result<(), Instant> {
        let n = u64::from(n);
        let burst = (self.rate / 20).max(n);
        let earned = self.rate as u128 * now.saturating_duration_since(self.at).as_micros() / 1_000_000;
        if earned > 0 {
            self.tokens = (self.tokens + earned.min(u128::from(burst)) as u64).min(burst);
            self.at = now;
        }
        if self.tokens >= n {
            self.tokens -= n;
            return Ok(());
        }
        let wait_us = ((n - self.tokens) as u128 * 1_000_000).div_ceil(self.rate as u128);
        Err(now + Duration::from_micros(wait_us as u64))
    }
}
