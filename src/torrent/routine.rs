//! What a session does on the clock rather than on a message: the once-a-second tick (rates, time-outs, keep-alives,
//! dialling), the choker's round, announces and their answers, the resume record, and stopping cleanly.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::addr_book::AddrBook;
use super::{Action, Config, TICK, Torrent};
use crate::choker::{self, Candidate};
use crate::metainfo::Metainfo;
use crate::tracker::announce::{self, AnnounceParams, AnnounceResponse, Due, Event as AnnounceEvent, TrackerUrl};

/// A request unanswered this long goes to another peer (and back to the same one later if nobody else has it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the resume record is brought up to date while pieces arrive (and files are checked for changes made
/// under us when none arrive).
pub(super) const RESUME_EVERY: Duration = Duration::from_secs(5);
/// Files whose size and mtime are looked at per `RESUME_EVERY` when no record is due, so thousands of files cost little.
pub(super) const AUDIT_FILES: usize = 1000;
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

impl Config {
    /// Addresses from `addrs` to dial now, within the limits on connections being opened and open (`open`).
    pub(super) fn dial(&self, addrs: &mut AddrBook, now: Instant, open: usize, complete: bool) -> Vec<Action> {
        let connecting = addrs.connecting();
        let room = self.max_connecting.saturating_sub(connecting).min(self.max_peers.saturating_sub(open + connecting));
        addrs.take_due(now, room, complete).into_iter().map(Action::Connect).collect()
    }

    /// The announce to make when `due`, with the transfer figures so far (`left` unknown for a magnet download).
    pub(super) fn announce(&self, due: Due, info_hash: [u8; 20], transfer: (u64, u64, u64), stopping: bool) -> Action {
        let (uploaded, downloaded, left) = transfer;
        let params = AnnounceParams {
            info_hash,
            peer_id: self.peer_id,
            port: self.listen_port,
            uploaded,
            downloaded,
            left,
            event: due.event,
            numwant: if due.event == Some(AnnounceEvent::Stopped) { 0 } else { 50 },
            key: u32::from_le_bytes(self.peer_id[8..12].try_into().unwrap_or([0; 4])),
        };
        log::debug!("announcing to {}:{} ({:?})", due.url.host, due.url.port, due.event);
        // A stop does not wait long for a silent tracker, nor does a UDP announce (no connection to fail fast)
        // when another tracker can be tried.
        let timeout = if stopping {
            Duration::from_secs(5)
        } else if due.fallback && due.url.scheme == announce::Scheme::Udp {
            crate::tracker::udp::client::FALLBACK_TIMEOUT
        } else {
            announce::REQUEST_TIMEOUT
        };
        Action::Announce { url: due.url, params, timeout }
    }
}

impl Torrent {
    /// The next moment `handle_timeout` has work. The once-a-second tick (rates, time-outs, keep-alives, the choker,
    /// PEX, the record and the file audit) runs only while it has something to look after (`needs_tick`); an idle
    /// session waits only for what it truly waits for: its next announce, a redial, the end of its seed time, a
    /// record still to write, a stop's grace. A thousand idle seeds then cost no wake-ups between announces.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        // Each of these is moved on (or dropped) by the `handle_timeout` it causes, so none can make the loop spin.
        let idle = !self.needs_tick();
        let tick = (!idle).then_some(self.next_tick);
        let record = (idle && self.records && self.unrecorded_pieces > 0).then_some(self.next_resume);
        let redial =
            if idle && !self.stopping { self.addrs.next_dial(self.is_complete(), self.started_at) } else { None };
        let seed_end = match (self.completed_at, self.cfg.seed_time) {
            (Some(done), Some(seed_time)) if !self.stopping && self.seed_time_may_end() => Some(done + seed_time),
            _ => None,
        };
        [tick, self.throttle_wake, self.request_wake, self.schedule.poll_timeout(), seed_end, record, redial]
            .into_iter()
            .chain([self.stop_deadline])
            .flatten()
            .min()
    }

    /// The tick has work: peers connected or being dialled, or rates still to bring down to zero after the last
    /// peer left. A file changed under an idle seed is found by the audit once peers come again (before it serves
    /// them much), or by the check at the next start, which trusts the record only for files that still match it.
    fn needs_tick(&self) -> bool {
        !self.peers.is_empty()
            || self.addrs.connecting() > 0
            || !self.downloaded.is_settled()
            || !self.uploaded.is_settled()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.poll_announce(now);
        self.on_request_wake(now);
        if self.throttle_wake.is_some_and(|w| now >= w) {
            self.throttle_wake = None;
            let waiting = self.peers.iter().filter(|(_, p)| p.has_uploads_queued()).map(|(&k, _)| k);
            self.dirty.extend(waiting);
        }
        // An idle session has no tick of its own: whatever deadline woke it (a record, a redial, the seed time) is
        // handled by the tick's body at once.
        if now < self.next_tick && self.needs_tick() {
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
                // One record at a time: a slow fsync should not have records queue up behind it.
                if self.saves_in_flight.is_empty() {
                    self.save_resume();
                }
            } else if self.records && self.needs_tick() {
                self.disk.audit(AUDIT_FILES);
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
        // The one place the loop waits for the disk: the final record must list every piece queued for writing, and
        // is written before the goodbye to the trackers, as peers are closed anyway.
        self.drain_disk(now);
        self.save_resume();
        self.drain_disk(now);
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
            && self.seed_time_may_end()
        {
            info!("seed time over");
            self.stop(now);
        }
    }

    /// A leech's seed time ends only once its trackers heard it completed (`announce_done` looks again then).
    fn seed_time_may_end(&self) -> bool {
        !self.schedule.has_trackers() || !self.was_leeching || self.schedule.completed_reported()
    }

    fn poll_announce(&mut self, now: Instant) {
        let Some(due) = self.schedule.poll_due(now) else { return };
        // `left` is what is still missing of the wanted pieces, as libtorrent reports it for a partial selection.
        let transfer = (self.uploaded.total(), self.downloaded.total(), self.picker.wanted_left());
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

    /// Queues a resume record on the disk worker, behind the writes already queued (data fsynced first, see
    /// `resume::Keeper`). It lists the pieces reported written; pieces that could not be read back are left out. A
    /// failed fsync is a disk error like a failed write (see `disk_done`).
    pub(super) fn save_resume(&mut self) {
        if !self.records {
            return;
        }
        let mut pieces = self.picker.have().clone();
        for &i in &self.unreadable {
            pieces.clear(i);
        }
        self.saves_in_flight.push_back(self.unrecorded_pieces);
        self.disk.save(pieces.as_wire().to_vec());
    }
}
