//! What a session does on the clock rather than on a message: the once-a-second tick (rates, time-outs, keep-alives,
//! dialling), the choker's round, announces and their answers, the resume record, and stopping cleanly.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::{TICK, Torrent};
use crate::choker::{self, Candidate};
use crate::metainfo::Metainfo;
use crate::resume;
use crate::tracker::announce::{AnnounceResponse, TrackerUrl};

/// A request unanswered this long goes to another peer (and back to the same one later if nobody else has it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the resume record is brought up to date while pieces arrive (and files are checked for changes made
/// under us when none arrive).
pub(super) const RESUME_EVERY: Duration = Duration::from_secs(5);
/// Files whose size and mtime are looked at per `RESUME_EVERY` when no record is due, so thousands of files cost little.
const AUDIT_FILES: usize = 1000;
/// The most a stop waits for trackers to take our `stopped` (an announce already in flight to a silent tracker would
/// otherwise hold the exit for its whole time-out).
const STOP_GRACE: Duration = Duration::from_secs(6);

/// The torrent's tracker tiers, with `extra` (say the tracker this process runs) as a first tier of their own.
pub(super) fn tracker_tiers(meta: &Metainfo, extra: &[String]) -> Vec<Vec<TrackerUrl>> {
    let mut tier_urls = meta.tracker_tiers();
    let extra: Vec<String> = extra.iter().filter(|u| !tier_urls.iter().flatten().any(|t| t == *u)).cloned().collect();
    if !extra.is_empty() {
        tier_urls.insert(0, extra);
    }
    tier_urls
        .iter()
        .map(|tier| {
            tier.iter()
                .filter_map(|u| match TrackerUrl::parse(u) {
                    Ok(url) => Some(url),
                    Err(e) => {
                        warn!("skipping tracker: {e}");
                        None
                    }
                })
                .collect()
        })
        .collect()
}

impl Torrent {
    /// The next moment `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.throttle_wake.map_or(self.next_tick, |w| w.min(self.next_tick));
        if let Some(a) = self.schedule.poll_timeout() {
            t = t.min(a);
        }
        Some(t)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.poll_announce(now);
        if self.throttle_wake.is_some_and(|w| now >= w) {
            self.throttle_wake = None;
            let waiting = self.peers.iter().filter(|(_, p)| p.has_uploads_queued()).map(|(&k, _)| k);
            self.dirty.extend(waiting);
        }
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        self.downloaded.sample(now);
        self.uploaded.sample(now);
        let keys: Vec<usize> = self.peers.keys().copied().collect();
        for &k in &keys {
            let Some(p) = self.peers.get_mut(&k) else { continue };
            if let Err(why) = p.handle_timeout(now) {
                self.close(now, k, why);
                continue;
            }
            if p.has_output() {
                self.dirty.push(k);
            }
        }
        for (k, b) in self.picker.requests_timed_out(now, REQUEST_TIMEOUT) {
            if let Some(p) = self.peers.get_mut(&k) {
                debug!("{}: request {}+{} timed out", p.addr(), b.index, b.begin);
                p.cancel_request(b);
                self.dirty.push(k);
            }
        }
        for &k in &keys {
            self.request_more(now, k);
        }
        if now >= self.next_choke {
            self.next_choke = now + choker::ROUND;
            self.rechoke(now);
        }
        if now >= self.next_resume {
            self.next_resume = now + RESUME_EVERY;
            if self.unrecorded_pieces > 0 {
                self.save_resume();
            } else if let Some(keeper) = &mut self.resume {
                keeper.audit(&self.storage, AUDIT_FILES);
            }
        }
        self.exchange_peers(now);
        self.dial(now);
        self.check_finished(now);
    }

    pub fn announce_done(&mut self, now: Instant, result: Result<AnnounceResponse, String>) {
        match result {
            Ok(resp) => {
                if let Some(w) = &resp.warning {
                    warn!("tracker warning: {w}");
                }
                info!(
                    "tracker: {} peer(s), {} seed(s), {} leecher(s)",
                    resp.peers.len(),
                    resp.complete.map_or("?".into(), |n| n.to_string()),
                    resp.incomplete.map_or("?".into(), |n| n.to_string())
                );
                self.schedule.on_success(now, &resp);
                if !self.stopping {
                    self.add_peer_addrs(resp.peers);
                    self.dial(now);
                }
            }
            Err(e) => {
                warn!("announce failed: {e}");
                self.schedule.on_failure(now);
            }
        }
        self.check_finished(now);
        self.poll_announce(now);
    }

    /// Every tracker URL the session may announce to, for the caller to resolve before the loop starts.
    pub fn tracker_urls(&self) -> Vec<TrackerUrl> {
        self.schedule.urls()
    }

    /// Begin a clean stop: tell the tracker, close peers, end once the tracker answered (or failed).
    pub fn stop(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.stop_deadline = Some(now + STOP_GRACE);
        self.save_resume();
        let keys: Vec<usize> = self.peers.keys().copied().collect();
        for k in keys {
            self.close(now, k, "shutting down");
        }
        self.schedule.stop(now);
        self.poll_announce(now);
        self.check_finished(now);
    }

    pub(super) fn check_finished(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        let tracker_done = !self.schedule.has_trackers() || self.schedule.is_stopped();
        if self.stopping && tracker_done {
            self.finished = true;
            return;
        }
        if self.stop_deadline.is_some_and(|d| now >= d) {
            warn!("the tracker did not take our `stopped` within {}s; stopping anyway", STOP_GRACE.as_secs());
            self.finished = true;
            return;
        }
        if let (Some(done_at), Some(seed_time)) = (self.completed_at, self.cfg.seed_time)
            && !self.stopping
            && now.saturating_duration_since(done_at) >= seed_time
            && (!self.schedule.has_trackers() || !self.was_leeching || self.schedule.completed_reported())
        {
            info!("seed time over");
            self.stop(now);
        }
    }

    fn poll_announce(&mut self, now: Instant) {
        let Some(due) = self.schedule.poll_due(now) else { return };
        let transfer = (self.uploaded.total(), self.downloaded.total(), self.meta.total_length - self.have_bytes);
        let action = self.cfg.announce(due, self.meta.info_hash, transfer, self.stopping);
        self.actions.push_back(action);
    }

    /// An upload slot was given up (its peer left, lost interest, or we changed from leeching to seeding): choose
    /// again at the next tick rather than leave the slot empty until the round ends, which in a fast swarm is long
    /// enough for a whole download, and is what kept late joiners waiting on peers that had finished.
    pub(super) fn slot_freed(&mut self, now: Instant) {
        self.next_choke = self.next_choke.min(now);
    }

    fn rechoke(&mut self, now: Instant) {
        let seeding = self.is_complete();
        let candidates: Vec<Candidate> = self
            .peers
            .iter()
            .filter(|(_, p)| p.is_active())
            .map(|(&key, p)| Candidate {
                key,
                interested: p.is_interested(),
                rate: match (seeding, p.is_snubbing(now)) {
                    (true, _) => p.upload_rate(),
                    (false, true) => 0,
                    (false, false) => p.download_rate(),
                },
            })
            .collect();
        let unchoke: HashSet<usize> = self.choker.rechoke(now, &candidates).into_iter().collect();
        for c in candidates {
            let Some(p) = self.peers.get_mut(&c.key) else { continue };
            if unchoke.contains(&c.key) {
                p.unchoke();
            } else {
                p.choke();
            }
            if p.has_output() {
                self.dirty.push(c.key);
            }
        }
    }

    /// Starts connections while below the limits.
    pub(super) fn dial(&mut self, now: Instant) {
        if !self.stopping {
            let complete = self.is_complete();
            let dials = self.cfg.dial(&mut self.addrs, now, self.peers.len(), complete);
            self.actions.extend(dials);
        }
    }

    /// Brings the resume record up to date (data fsynced first, see `resume::Keeper`). Pieces that could not be read
    /// back are left out. A failed fsync is a disk error like a failed write.
    pub(super) fn save_resume(&mut self) {
        let Some(keeper) = &mut self.resume else { return };
        let mut pieces = self.picker.have().clone();
        for &i in &self.unreadable {
            pieces.clear(i);
        }
        match keeper.save(&mut self.storage, pieces.as_wire()) {
            Ok(()) => self.unrecorded_pieces = 0,
            Err(e @ resume::SaveError::Sync(_)) => self.stop_downloading(e.to_string()),
            Err(e) => warn!("{e}"),
        }
    }
}
