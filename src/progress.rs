//! What a person sees: transfer rates, a one-line readout (aria2c's is the model) and the closing summary.
//! Pure formatting and arithmetic; the caller decides where the text goes (a live line on a TTY, log lines otherwise).

use std::time::{Duration, Instant};

/// A smoothed bytes-per-second rate, fed byte counts as they happen and sampled on the session's tick.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    total: u64,
    sampled_total: u64,
    sampled_at: Option<Instant>,
    per_sec: f64,
}

impl Rate {
    pub fn add(&mut self, bytes: u64) {
        self.total += bytes;
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Folds the bytes since the last sample into the rate; samples closer than 200 ms are skipped as noise.
    pub fn sample(&mut self, now: Instant) {
        let Some(at) = self.sampled_at else {
            self.sampled_at = Some(now);
            self.sampled_total = self.total;
            return;
        };
        let dt = now.saturating_duration_since(at).as_secs_f64();
        if dt < 0.2 {
            return;
        }
        let instant = (self.total - self.sampled_total) as f64 / dt;
        // Weighted toward the newest second, but smooth enough that one idle tick does not read as a stall.
        self.per_sec = 0.5 * self.per_sec + 0.5 * instant;
        self.sampled_total = self.total;
        self.sampled_at = Some(now);
    }

    pub fn per_sec(&self) -> u64 {
        self.per_sec as u64
    }

    /// Nothing moved since the last sample and the rate reads zero: sampling again would change nothing, so whoever
    /// samples it may stop until bytes move again.
    pub fn is_settled(&self) -> bool {
        self.per_sec() == 0 && self.total == self.sampled_total
    }
}

/// `1.5MiB`, `320KiB`, `12B`: binary units with at most one decimal, as aria2c and transmission print them.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else if value >= 100.0 {
        format!("{value:.0}{}", UNITS[unit])
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// `1h2m`, `3m5s`, `42s`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// A moment of a session, for the readout.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub have_bytes: u64,
    pub total_bytes: u64,
    pub down_rate: u64,
    pub up_rate: u64,
    pub uploaded: u64,
    pub peers: usize,
    pub seeding: bool,
}

/// `[45% 450MiB/1.0GiB CN:3 DL:120MiB/s UL:2.0MiB/s ETA:5s]`.
pub fn readout(s: &Snapshot) -> String {
    let percent = (s.have_bytes * 100).checked_div(s.total_bytes).unwrap_or(100);
    if s.seeding {
        return format!(
            "[SEED {} CN:{} UL:{}/s uploaded {}]",
            bytes(s.total_bytes),
            s.peers,
            bytes(s.up_rate),
            bytes(s.uploaded)
        );
    }
    let eta = match s.total_bytes.saturating_sub(s.have_bytes).checked_div(s.down_rate) {
        Some(secs) => duration(Duration::from_secs(secs)),
        None => "-".to_string(),
    };
    format!(
        "[{percent}% {}/{} CN:{} DL:{}/s UL:{}/s ETA:{eta}]",
        bytes(s.have_bytes),
        bytes(s.total_bytes),
        s.peers,
        bytes(s.down_rate),
        bytes(s.up_rate)
    )
}

/// The closing line of a download: how much, how long, how fast, and how many pieces failed their hash.
pub fn summary(downloaded: u64, uploaded: u64, elapsed: Duration, hash_failures: u32) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    format!(
        "downloaded {} in {:.1}s ({}/s mean), uploaded {}, {hash_failures} hash failure(s)",
        bytes(downloaded),
        secs,
        bytes((downloaded as f64 / secs) as u64),
        bytes(uploaded)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_sizes_and_durations() {
        assert_eq!(bytes(12), "12B");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(450 * 1024 * 1024), "450MiB");
        assert_eq!(bytes(1 << 30), "1.0GiB");
        assert_eq!(duration(Duration::from_secs(42)), "42s");
        assert_eq!(duration(Duration::from_secs(185)), "3m5s");
        assert_eq!(duration(Duration::from_secs(3720)), "1h2m");
    }

    #[test]
    fn readout_shows_progress_rates_and_eta() {
        let s = Snapshot {
            have_bytes: 512 << 20,
            total_bytes: 1 << 30,
            down_rate: 128 << 20,
            up_rate: 0,
            peers: 3,
            ..Default::default()
        };
        assert_eq!(readout(&s), "[50% 512MiB/1.0GiB CN:3 DL:128MiB/s UL:0B/s ETA:4s]");
        let stalled = Snapshot { down_rate: 0, ..s };
        assert!(readout(&stalled).ends_with("ETA:-]"));
    }

    #[test]
    fn rate_follows_the_byte_flow() {
        let t0 = Instant::now();
        let mut r = Rate::default();
        r.sample(t0);
        for i in 1..=10 {
            r.add(1000);
            r.sample(t0 + Duration::from_secs(i));
        }
        assert!((990..=1000).contains(&r.per_sec()), "{}", r.per_sec());
        for i in 11..=30 {
            r.sample(t0 + Duration::from_secs(i));
        }
        assert_eq!(r.per_sec(), 0, "an idle peer's rate decays to zero");
        assert_eq!(r.total(), 10_000);
    }
}
